package cloudshell

import (
	"context"
	"errors"
	"time"
)

func (c *Client) logCall(cl *call, d time.Duration, err error) {
	ev := c.log.Debug()
	if !ev.Enabled() {
		return
	}
	ev = ev.Str("method", cl.method).Dur("duration_ms", d).Int("attempts", cl.attempts)
	if cl.status != 0 {
		ev = ev.Int("status", cl.status)
	}
	if cl.relogon {
		ev = ev.Bool("relogon", true)
	}
	ev = ev.Str("outcome", outcome(err))
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			ev = ev.Int("code", ae.Code)
		}
		ev = ev.Str("error", c.redact(err.Error(), cl.secrets))
	}
	ev.Msg("cloudshell call")
}

func outcome(err error) string {
	var (
		ae *APIError
		he *HTTPError
	)
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ae):
		return "api_error"
	case errors.Is(err, ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, ErrInvalidArgument):
		return "invalid_argument"
	case errors.Is(err, ErrAmbiguous):
		return "ambiguous"
	case errors.Is(err, ErrBadResponse):
		return "bad_response"
	case errors.As(err, &he):
		return "http_error"
	case !IsTransient(err) && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return "canceled"
	}
	return "transport_error"
}
