package cloudshell

import (
	"context"
	"fmt"
	"time"
)

// callKind decides retry and re-logon policy.
type callKind int

const (
	kindWrite  callKind = iota // sent exactly once; failures after sending are ambiguous
	kindRead                   // retried on transient failures
	kindLogon                  // retried like a read; a 401 is final
	kindLogoff                 // a write for which a 401 means "already logged off"
)

// readMethods are the methods safe to resend: they do not change server state.
var readMethods = map[string]bool{
	"GetReservationDetails": true,
	"GetSandboxData":        true,
	"GetServerDateAndTime":  true,
}

// call is one logical API call.
type call struct {
	method string
	body   string
	kind   callKind
	// secrets in this request's body that may not be stored yet (a new password).
	secrets []string
	// gen is the session generation of the token the last attempt carried; a 401 is only
	// worth a re-logon if nobody has replaced that token yet.
	gen uint64
	// filled in for the log line
	attempts int
	relogon  bool
	status   int
}

// invoke serialises and sends one API call with the policy of its kind and logs it.
func (c *Client) invoke(ctx context.Context, method string, kind callKind, secrets []string, params ...Param) (*Node, error) {
	if ctx == nil {
		return nil, &ArgumentError{Method: method, Field: "ctx", Reason: "is nil"}
	}
	body, err := encodeRequest(method, params)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		// Nothing is sent, so even a write is not ambiguous.
		return nil, fmt.Errorf("cloudshell: %s: %w", method, err)
	}
	cl := &call{method: method, body: body, kind: kind, secrets: secrets}
	start := time.Now()
	n, err := c.invokeAuth(ctx, cl)
	c.logCall(cl, time.Since(start), err)
	return n, err
}

// attempt sends the request once (writes) or with read retries (reads, logons).
func (c *Client) attempt(ctx context.Context, cl *call) (*Node, error) {
	if cl.kind == kindRead || cl.kind == kindLogon {
		n, tries, err := c.withReadRetry(ctx, cl.method, func(ctx context.Context) (*Node, error) { return c.post(ctx, cl) })
		cl.attempts += tries
		return n, err
	}
	cl.attempts++
	return c.post(ctx, cl)
}
