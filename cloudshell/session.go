package cloudshell

import (
	"context"
	"errors"
	"fmt"
)

// maxOldTokens bounds the list of superseded session tokens kept only for redaction.
const maxOldTokens = 8

type authMode int

const (
	authNone     authMode = iota
	authPassword          // Logon with username/password
	authToken             // SecureLogon with an admin token
	authSession           // a given session token; cannot be renewed
)

type relogonCall struct {
	done chan struct{}
	err  error
}

// errStatus401 travels from a single attempt to the re-logon logic; it never escapes.
var errStatus401 = errors.New("cloudshell: HTTP 401")

// errNoCredentials: a 401 arrived but there is nothing to log on again with.
var errNoCredentials = errors.New("cloudshell: no stored credentials")

// invokeAuth adds the 401 policy: log on again once, resend once.
func (c *Client) invokeAuth(ctx context.Context, cl *call) (*Node, error) {
	n, err := c.attempt(ctx, cl)
	if !errors.Is(err, errStatus401) {
		return n, err
	}
	switch cl.kind {
	case kindLogon:
		// The reference recurses into logon here; a rejected logon is simply final.
		return nil, unauthorized(cl.method, "logon rejected with HTTP 401", nil)
	case kindLogoff:
		return nil, nil // the session is gone, which is what Logoff wants
	}
	cl.relogon = true
	if err := c.relogon(ctx, cl.method, cl.gen); err != nil {
		switch {
		case errors.Is(err, errNoCredentials):
			return nil, unauthorized(cl.method, "HTTP 401 and no stored credentials to log on again", nil)
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			return nil, fmt.Errorf("cloudshell: %s: waiting for re-logon: %w", cl.method, err)
		case errors.Is(err, ErrUnauthorized) || isAPIError(err):
			return nil, unauthorized(cl.method, "HTTP 401 and re-logon failed", err)
		default:
			// A transport failure while logging on: the original request was refused
			// (401), so this is not ambiguous, only transient.
			return nil, fmt.Errorf("cloudshell: %s: HTTP 401 and re-logon failed: %w", cl.method, err)
		}
	}
	n, err = c.attempt(ctx, cl)
	if errors.Is(err, errStatus401) {
		return nil, unauthorized(cl.method, "HTTP 401 again after re-logon", nil)
	}
	return n, err
}

func unauthorized(method, reason string, cause error) error {
	if cause != nil {
		return fmt.Errorf("cloudshell: %s: %s: %w: %w", method, reason, ErrUnauthorized, cause)
	}
	return fmt.Errorf("cloudshell: %s: %s: %w", method, reason, ErrUnauthorized)
}

func isAPIError(err error) bool {
	var ae *APIError
	return errors.As(err, &ae)
}

// session returns the current token and its generation.
func (c *Client) session() (string, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token, c.gen
}

// setTokenLocked installs a new session token, remembering the old one for redaction.
// Callers hold c.mu.
func (c *Client) setTokenLocked(token string) {
	if c.token != "" && c.token != token {
		c.oldTokens = append(c.oldTokens, c.token)
		if len(c.oldTokens) > maxOldTokens {
			c.oldTokens = c.oldTokens[len(c.oldTokens)-maxOldTokens:]
		}
	}
	c.token = token
	c.gen++
}

// relogon logs on again after a 401 seen with session generation gen. Concurrent callers
// that saw the same generation share one logon; a caller whose generation is already
// outdated just resends with the newer token.
func (c *Client) relogon(ctx context.Context, method string, gen uint64) error {
	c.mu.Lock()
	if c.gen != gen {
		c.mu.Unlock()
		return nil
	}
	rc := c.relog
	if rc == nil {
		mode, user, pass, admin, domain := c.mode, c.username, c.password, c.adminToken, c.domain
		if mode != authPassword && mode != authToken {
			c.mu.Unlock()
			return errNoCredentials
		}
		rc = &relogonCall{done: make(chan struct{})}
		c.relog = rc
		// The logon serves every waiter, so one caller giving up must not cancel it; the
		// HTTP timeout and the read retry bound it.
		lctx := context.WithoutCancel(ctx)
		go func() {
			var err error
			if mode == authPassword {
				_, err = c.Logon(lctx, user, pass, domain)
			} else {
				_, err = c.SecureLogon(lctx, admin, domain)
			}
			c.mu.Lock()
			rc.err = err
			c.relog = nil
			c.mu.Unlock()
			close(rc.done)
		}()
	}
	c.mu.Unlock()
	c.log.Debug().Str("method", method).Msg("cloudshell: HTTP 401, logging on again")
	select {
	case <-rc.done:
		return rc.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
