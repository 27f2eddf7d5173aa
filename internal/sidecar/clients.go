package sidecar

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/redact"
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

// Bounds of the client cache, each with its reason.
const (
	// clientIdleLimit: a client no request has used for this long is dropped and logged
	// off. Every driver command's context carries a new admin token, so without a limit the
	// cache would gain a client (and CloudShell a session) per command for as long as the
	// sidecar runs. Half an hour keeps the session of a driver that locks every few minutes
	// (no logon per lock) and drops those of commands long finished.
	clientIdleLimit = 30 * time.Minute
	// maxClients bounds the cache when many credential sets arrive within clientIdleLimit
	// (a burst of commands, each with its own token): beyond it the longest-idle clients
	// go first. Clients in use are never dropped, so the bound is exceeded only while more
	// than maxClients credential sets have a request waiting or a lock held.
	maxClients = 64
	// logoffTimeout bounds the logoff of a dropped client, which runs in the background.
	logoffTimeout = 10 * time.Second
)

// clientCache keeps one CloudShell client per credential set, created on first use.
// Concurrent first requests for the same set share one dial; a failed dial is not cached,
// so the next request tries again. Each user of a client holds a reference from get until
// it calls the release function get returned (a lock request: until its lock is
// released); clients without references are dropped after clientIdleLimit, or sooner,
// longest-idle first, beyond maxClients.
type clientCache struct {
	dial    DialFunc
	wrap    func(mutex.API) mutex.API
	now     func() time.Time
	dropped func(raw mutex.API, c Credentials) // called with cc.mu held: must not block

	mu      sync.Mutex
	entries map[string]*clientEntry
	dials   int
}

type clientEntry struct {
	creds Credentials
	done  chan struct{} // closed when the dial finished
	api   mutex.API     // as requests use it (wrapped)
	raw   mutex.API     // as dialed, for logging off
	err   error

	// guarded by clientCache.mu
	refs      int       // requests using the client now (dialing, waiting, holding)
	idleSince time.Time // when refs last fell to zero, or the dial finished
}

func newClientCache(dial DialFunc, wrap func(mutex.API) mutex.API, now func() time.Time,
	dropped func(mutex.API, Credentials)) *clientCache {
	return &clientCache{dial: dial, wrap: wrap, now: now, dropped: dropped, entries: map[string]*clientEntry{}}
}

// get returns the client for c, dialing it if this is the first request for c, and the
// function that gives the caller's reference back (call it once the client is no longer
// needed; it may be called more than once). On error there is nothing to give back.
func (cc *clientCache) get(ctx context.Context, c Credentials) (mutex.API, func(), error) {
	k := c.key()
	cc.mu.Lock()
	e, ok := cc.entries[k]
	if !ok {
		e = &clientEntry{creds: c, done: make(chan struct{}), idleSince: cc.now()}
		cc.entries[k] = e
		cc.dials++
		go cc.run(context.WithoutCancel(ctx), k, e, c)
	}
	e.refs++
	cc.evictLocked(cc.now())
	cc.mu.Unlock()
	var once sync.Once
	release := func() { once.Do(func() { cc.put(e) }) }
	select {
	case <-e.done:
		if e.err != nil {
			release()
			return nil, func() {}, e.err
		}
		return e.api, release, nil
	case <-ctx.Done():
		release()
		return nil, func() {}, context.Cause(ctx)
	}
}

// put gives back one reference to e.
func (cc *clientCache) put(e *clientEntry) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		e.idleSince = cc.now()
	}
}

func (cc *clientCache) run(ctx context.Context, k string, e *clientEntry, c Credentials) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	api, err := cc.dial(ctx, c)
	if err == nil && api == nil {
		err = errNilClient
	}
	raw := api
	if err == nil && cc.wrap != nil {
		api = cc.wrap(api)
	}
	cc.mu.Lock()
	e.api, e.raw, e.err = api, raw, err
	// Its requests may all have given up while it dialed: it is idle from now, not from
	// when the dial began.
	e.idleSince = cc.now()
	if err != nil {
		delete(cc.entries, k)
	}
	cc.mu.Unlock()
	close(e.done)
}

// evict drops the clients idle for longer than clientIdleLimit, then the longest-idle ones
// beyond maxClients. The sidecar's sweeper calls it; get does too.
func (cc *clientCache) evict() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.evictLocked(cc.now())
}

func (cc *clientCache) evictLocked(now time.Time) {
	var idle []string
	for k, e := range cc.entries {
		if e.refs > 0 || !isClosed(e.done) {
			continue
		}
		if now.Sub(e.idleSince) >= clientIdleLimit {
			cc.dropLocked(k, e)
			continue
		}
		idle = append(idle, k)
	}
	over := len(cc.entries) - maxClients
	if over <= 0 {
		return
	}
	sort.Slice(idle, func(i, j int) bool { return cc.entries[idle[i]].idleSince.Before(cc.entries[idle[j]].idleSince) })
	for _, k := range idle[:min(over, len(idle))] {
		cc.dropLocked(k, cc.entries[k])
	}
}

func (cc *clientCache) dropLocked(k string, e *clientEntry) {
	delete(cc.entries, k)
	if cc.dropped != nil && e.raw != nil {
		cc.dropped(e.raw, e.creds)
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// size reports how many clients are cached (tests).
func (cc *clientCache) size() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.entries)
}

// dialCount reports how many dials were started (tests).
func (cc *clientCache) dialCount() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.dials
}

// dropClient logs off a client the cache dropped, in the background: its session is of no
// use to anyone any more. Only the endpoint and user are logged, never a secret.
func (s *Server) dropClient(raw mutex.API, c Credentials) {
	s.log.Debug().Str("cloudshell", c.String()).Msg("dropping an idle CloudShell client")
	lo, ok := raw.(interface{ Logoff(context.Context) error })
	if !ok {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(s.base, logoffTimeout)
		defer cancel()
		if err := lo.Logoff(ctx); err != nil {
			s.log.Debug().Str("cloudshell", c.String()).Str("error", s.scrub(redact.String(err.Error(), c.secrets()...))).
				Msg("logging off an idle CloudShell client failed")
		}
	}()
}

var errNilClient = errors.New("sidecar: dial returned no client")
