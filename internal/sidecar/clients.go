package sidecar

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
	"github.com/rs/zerolog"
)

// DialFunc connects to CloudShell with a credential set. The default is cloudshell.Dial.
type DialFunc func(ctx context.Context, c Credentials) (mutex.API, error)

// dialTimeout bounds one logon. It is detached from the request that triggered it: other
// requests for the same credentials wait on the same dial, so one caller giving up must
// not fail it for all.
const dialTimeout = 60 * time.Second

// CloudShellDialer returns the DialFunc the sidecar uses by default: cloudshell.Dial, with
// the client's per-call debug log going to log (it never contains secrets).
func CloudShellDialer(log zerolog.Logger) DialFunc {
	return func(ctx context.Context, c Credentials) (mutex.API, error) {
		l := log
		cl, err := cloudshell.Dial(ctx, cloudshell.Config{
			Host: c.Host, Port: c.Port, Scheme: c.Scheme,
			Username: c.User, Password: c.Password, Domain: c.Domain, Token: c.Token,
			InsecureSkipVerify: c.InsecureSkipVerify, Logger: &l,
		})
		if err != nil {
			return nil, err
		}
		return cl, nil
	}
}

// clientCache keeps one CloudShell client per credential set, created on first use.
// Concurrent first requests for the same set share one dial; a failed dial is not cached,
// so the next request tries again.
type clientCache struct {
	dial DialFunc
	wrap func(mutex.API) mutex.API

	mu      sync.Mutex
	entries map[string]*clientEntry
	dials   int
}

type clientEntry struct {
	done chan struct{} // closed when the dial finished
	api  mutex.API
	err  error
}

func newClientCache(dial DialFunc, wrap func(mutex.API) mutex.API) *clientCache {
	return &clientCache{dial: dial, wrap: wrap, entries: map[string]*clientEntry{}}
}

// get returns the client for c, dialing it if this is the first request for c.
func (cc *clientCache) get(ctx context.Context, c Credentials) (mutex.API, error) {
	k := c.key()
	cc.mu.Lock()
	e, ok := cc.entries[k]
	if !ok {
		e = &clientEntry{done: make(chan struct{})}
		cc.entries[k] = e
		cc.dials++
		go cc.run(context.WithoutCancel(ctx), k, e, c)
	}
	cc.mu.Unlock()
	select {
	case <-e.done:
		return e.api, e.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (cc *clientCache) run(ctx context.Context, k string, e *clientEntry, c Credentials) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	api, err := cc.dial(ctx, c)
	if err == nil && api == nil {
		err = errNilClient
	}
	if err == nil && cc.wrap != nil {
		api = cc.wrap(api)
	}
	cc.mu.Lock()
	e.api, e.err = api, err
	if err != nil {
		delete(cc.entries, k)
	}
	cc.mu.Unlock()
	close(e.done)
}

// dialCount reports how many dials were started (tests).
func (cc *clientCache) dialCount() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.dials
}

var errNilClient = errors.New("sidecar: dial returned no client")
