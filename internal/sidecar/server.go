package sidecar

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/csmutex/csmutex/internal/redact"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
	"github.com/rs/zerolog"
)

// Defaults, each with its reason.
const (
	// DefaultTimeout is how long an acquire waits when the request names no timeout: the
	// mutex's own default wait limit.
	DefaultTimeout = mutex.DefaultWaitLimit
	// DefaultTTL is a token-mode hold's keepalive expiry when the request names none: long
	// enough for a driver to send a keepalive every 10 s with slack, short enough that a
	// crashed driver frees the lock within half a minute.
	DefaultTTL = 30 * time.Second
	// DefaultHeartbeat is how often a stream-mode hold writes {"status":"held"}: a write to a
	// dead peer is what finally reveals it when no FIN ever arrived (host crash, network cut).
	DefaultHeartbeat = 5 * time.Second
	// DefaultSweep is how often token-mode expiries are checked.
	DefaultSweep = 250 * time.Millisecond
	// MaxBodyBytes bounds a request body; real ones are a few hundred bytes.
	MaxBodyBytes = 64 << 10
	// goneRetention is how long a released-by-the-sidecar token is remembered, so that a late
	// keepalive learns why (410 with the reason) instead of a bare 404.
	goneRetention = 10 * time.Minute
)

// Option configures a Server.
type Option func(*Server)

// WithCredentials sets the CloudShell the sidecar uses when a request names none (the
// serve command's connection flags).
func WithCredentials(c Credentials) Option { return func(s *Server) { s.defaults = c } }

// WithDial replaces how clients are created (default CloudShellDialer).
func WithDial(d DialFunc) Option { return func(s *Server) { s.dial = d } }

// WithMutexOptions adds options to every mutex the sidecar creates (tests: fast retry
// jitter). The request's own name, owner, lease and timeout are applied after them.
func WithMutexOptions(opts ...mutex.Option) Option {
	return func(s *Server) { s.mutexOpts = append(s.mutexOpts, opts...) }
}

// WithLocksOptions adds options to every lock shape the sidecar takes (tests: a fast
// retry, since locks overrides mutex.WithRetry with its own). The request's owner, lease and
// timeout are applied before them.
func WithLocksOptions(opts ...locks.Option) Option {
	return func(s *Server) { s.locksOpts = append(s.locksOpts, opts...) }
}

// WithLease sets the default lease of locks taken through the sidecar (default
// mutex.DefaultLease); a request may override it.
func WithLease(d time.Duration) Option { return func(s *Server) { s.lease = d } }

// WithHeartbeat sets the stream-mode heartbeat interval (default DefaultHeartbeat).
func WithHeartbeat(d time.Duration) Option { return func(s *Server) { s.heartbeat = d } }

// WithSweep sets how often token-mode expiries are checked (default DefaultSweep).
func WithSweep(d time.Duration) Option { return func(s *Server) { s.sweep = d } }

// WithDefaultTTL sets the token-mode ttl used when a request names none.
func WithDefaultTTL(d time.Duration) Option { return func(s *Server) { s.defaultTTL = d } }

// WithClock replaces the clock token-mode expiry and the idleness of cached CloudShell
// clients are judged by (tests).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithLogger sets the logger (default: none). Secrets are never logged.
func WithLogger(l zerolog.Logger) Option { return func(s *Server) { s.log = l } }

// Server is the sidecar. Create it with New, serve it with Serve (or mount Handler), and
// stop it with Shutdown, which releases every lock it holds.
type Server struct {
	log        zerolog.Logger
	defaults   Credentials
	dial       DialFunc
	mutexOpts  []mutex.Option
	locksOpts  []locks.Option
	lease      time.Duration
	heartbeat  time.Duration
	sweep      time.Duration
	defaultTTL time.Duration
	now        func() time.Time

	clients *clientCache
	cohorts *cohorts    // WithCohort; nil: every request acquires in CloudShell on its own
	sec     security    // the request guard's settings (guard.go)
	health  healthState // logons to the sidecar's own CloudShell (health.go)
	reg     *registry
	metrics *metrics
	handler http.Handler

	base       context.Context // canceled by Shutdown: ends every waiting acquisition
	cancelBase context.CancelFunc

	goneMu sync.Mutex
	gone   map[string]goneHold

	srvMu     sync.Mutex
	srvs      []*http.Server
	closing   bool
	closeOnce sync.Once
	stopSweep chan struct{}
	sweepDone chan struct{}
}

// goneHold remembers a token the sidecar let go of by itself (expired or lost).
type goneHold struct {
	reason string
	until  time.Time
}

// New builds a Server.
func New(opts ...Option) *Server {
	s := &Server{
		log:        zerolog.Nop(),
		lease:      mutex.DefaultLease,
		heartbeat:  DefaultHeartbeat,
		sweep:      DefaultSweep,
		defaultTTL: DefaultTTL,
		now:        time.Now,
		reg:        newRegistry(),
		sec:        newSecurity(),
		gone:       map[string]goneHold{},
		stopSweep:  make(chan struct{}),
		sweepDone:  make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if s.dial == nil {
		s.dial = CloudShellDialer(s.log)
	}
	if s.heartbeat <= 0 {
		s.heartbeat = DefaultHeartbeat
	}
	if s.sweep <= 0 {
		s.sweep = DefaultSweep
	}
	if s.defaultTTL <= 0 {
		s.defaultTTL = DefaultTTL
	}
	s.metrics = newMetrics(s)
	s.clients = newClientCache(s.trackDial(s.dial), s.metrics.instrument, s.now, s.dropClient)
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.handler = s.guard(s.routes())
	go s.sweeper()
	return s
}

// Handler returns the HTTP API, behind the guard (guard.go): Host, Origin, bearer token
// and Content-Type checks.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves the API on ln until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		// No WriteTimeout: stream-mode responses last as long as the hold.
		IdleTimeout: 2 * time.Minute,
	}
	s.srvMu.Lock()
	if s.closing {
		s.srvMu.Unlock()
		_ = ln.Close()
		return nil
	}
	s.srvs = append(s.srvs, srv)
	s.srvMu.Unlock()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, ends waiting acquisitions, releases every held
// lock (stream clients get a final {"status":"lost"} line), then waits for the open
// requests to finish until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.cancelBase()
		close(s.stopSweep)
	})
	s.srvMu.Lock()
	s.closing = true
	srvs := append([]*http.Server(nil), s.srvs...)
	s.srvMu.Unlock()

	errc := make(chan error, len(srvs))
	for _, srv := range srvs {
		go func() { errc <- srv.Shutdown(ctx) }()
	}
	holds := s.reg.close()
	if len(holds) > 0 {
		s.log.Info().Int("locks", len(holds)).Msg("shutting down: releasing held locks")
	}
	var wg sync.WaitGroup
	for _, h := range holds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.finish(h, "lost", "the sidecar is shutting down; the lock was released")
		}()
	}
	wg.Wait()
	<-s.sweepDone
	var errs []error
	for range srvs {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

// release takes h out of the registry and releases it; false if someone else already did.
func (s *Server) release(h *hold, status, reason string) (bool, error) {
	if !s.reg.remove(h) {
		return false, nil
	}
	return true, s.finish(h, status, reason)
}

// finish unlocks a hold already taken out of the registry and tells its stream, if any.
func (s *Server) finish(h *hold, status, reason string) error {
	// Remember why before releasing: once the lock is gone from CloudShell a client may ask
	// at once, and it must hear "expired" or "lost", not an unknown token.
	if h.mode == ModeToken && status == "lost" {
		s.remember(h.token, reason)
	}
	err := h.lock.Release(context.Background())
	h.doneWithClient()
	held := s.now().Sub(h.acquired)
	s.metrics.hold.Observe(held.Seconds())
	s.metrics.usage.heldFor(h.name, h.shape.kind, held)
	ev := s.log.Info()
	if err != nil && !errors.Is(err, mutex.ErrNotHeld) {
		ev = s.log.Error().Err(err)
	}
	ev.Str("reservation", h.resID).Str("lock", h.name).Str("shape", h.shape.kind).Str("owner", h.owner).Str("mode", h.mode).
		Dur("held_ms", held).Str("why", reason).Msg("lock released")
	h.endStatus, h.endReason = status, reason
	close(h.ended)
	return err
}

func (s *Server) remember(token, reason string) {
	s.goneMu.Lock()
	s.gone[token] = goneHold{reason: reason, until: s.now().Add(goneRetention)}
	s.goneMu.Unlock()
}

func (s *Server) forget(token string) (string, bool) {
	s.goneMu.Lock()
	defer s.goneMu.Unlock()
	g, ok := s.gone[token]
	delete(s.gone, token)
	return g.reason, ok
}

// sweeper releases token-mode holds whose keepalive did not come in time, forgets old
// tokens and drops idle CloudShell clients.
func (s *Server) sweeper() {
	defer close(s.sweepDone)
	t := time.NewTicker(s.sweep)
	defer t.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-t.C:
		}
		now := s.now()
		for _, h := range s.reg.expired(now) {
			if s.reg.remove(h) {
				s.log.Warn().Str("reservation", h.resID).Str("lock", h.name).Str("owner", h.owner).
					Dur("ttl_ms", h.ttl).Msg("token hold expired without keepalive; releasing")
				_ = s.finish(h, "lost", "expired: no keepalive within the ttl ("+h.ttl.String()+"); the lock was released")
			}
		}
		s.goneMu.Lock()
		for k, g := range s.gone {
			if now.After(g.until) {
				delete(s.gone, k)
			}
		}
		s.goneMu.Unlock()
		s.clients.evict()
	}
}

// watchToken releases a token-mode hold whose lock was lost, so that its next keepalive
// learns of it.
func (s *Server) watchToken(h *hold) {
	select {
	case <-h.ended:
	case <-h.lock.Done():
		if err := h.lock.Err(); errors.Is(err, mutex.ErrLost) {
			s.release(h, "lost", "lock lost: "+s.scrub(err.Error()))
		}
	}
}

// scrub removes the sidecar's own secrets from a message.
func (s *Server) scrub(msg string) string { return redact.String(msg, s.defaults.secrets()...) }
