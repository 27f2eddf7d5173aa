package cloudshell

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sethvargo/go-retry"
)

// defaultReadRetry keeps the reference client's spirit (a few quick resends on connection
// trouble) without its fixed 1s/2s sleeps.
func defaultReadRetry() retry.Backoff {
	b := retry.NewExponential(100 * time.Millisecond)
	b = retry.WithJitterPercent(20, b)
	b = retry.WithCappedDuration(2*time.Second, b)
	return retry.WithMaxRetries(3, b)
}

// withReadRetry runs fn until it succeeds, fails permanently, the backoff gives up or ctx
// ends. Only reads and logons come here: resending them cannot change server state.
func (c *Client) withReadRetry(ctx context.Context, method string, fn func(context.Context) (*Node, error)) (*Node, int, error) {
	var (
		b        retry.Backoff
		attempts int
		lastErr  error
	)
	if c.readRetry != nil {
		b = c.readRetry()
	}
	if b == nil {
		b = retry.BackoffFunc(func() (time.Duration, bool) { return 0, true })
	}
	n, err := retry.DoValue(ctx, b, func(ctx context.Context) (*Node, error) {
		attempts++
		n, err := fn(ctx)
		if err != nil {
			lastErr = err
			if IsTransient(err) && ctx.Err() == nil {
				return nil, retry.RetryableError(err)
			}
		}
		return n, err
	})
	if err != nil && (lastErr == nil || !errors.Is(err, lastErr)) {
		// DoValue gave up because the caller's context ended (possibly between attempts).
		err = fmt.Errorf("cloudshell: %s: %w", method, err)
		if lastErr != nil {
			err = &joinedError{primary: err, last: lastErr}
		}
	}
	return n, attempts, err
}
