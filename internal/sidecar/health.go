package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

// healthProbeTimeout bounds the TCP connection /healthz opens to CloudShell: long enough
// for a slow network, short enough for a probe (Kubernetes' default probe timeout is 1s;
// callers that probe with a shorter timeout see a timeout, which is the right answer for
// an unreachable server anyway).
const healthProbeTimeout = 2 * time.Second

// healthState remembers the outcome of the logons to the sidecar's own CloudShell (the
// WithCredentials one). Requests naming another CloudShell do not count: their failures
// say nothing about the sidecar.
type healthState struct {
	mu        sync.Mutex
	lastOK    time.Time
	lastErr   string
	lastErrAt time.Time
}

func (h *healthState) record(at time.Time, err error, scrub func(string) string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.lastErr, h.lastErrAt = scrub(err.Error()), at
		return
	}
	h.lastOK = at
}

// hasDefaults reports whether the sidecar has its own CloudShell (serve's --host).
func (s *Server) hasDefaults() bool { return strings.TrimSpace(s.defaults.Host) != "" }

// trackDial records the logons to the sidecar's own CloudShell for /healthz.
func (s *Server) trackDial(dial DialFunc) DialFunc {
	return func(ctx context.Context, c Credentials) (mutex.API, error) {
		api, err := dial(ctx, c)
		if s.hasDefaults() && c.key() == s.defaults.key() {
			s.health.record(s.now(), err, s.scrub)
		}
		return api, err
	}
}

// LogOn logs on to the sidecar's own CloudShell (WithCredentials) now, so that a wrong
// password or an unreachable server is reported at start rather than by the first
// request, and /healthz knows the outcome. The session is kept: the first request for
// these credentials reuses it. Without credentials it does nothing and returns nil. The
// error never contains a secret; it wraps the client's error, so errors.Is and errors.As
// see through it.
func (s *Server) LogOn(ctx context.Context) error {
	if !s.hasDefaults() {
		return nil
	}
	_, done, err := s.clients.get(ctx, s.defaults)
	done()
	if err != nil {
		return &scrubbedError{msg: s.scrub(err.Error()), err: err}
	}
	return nil
}

// scrubbedError is an error whose message had the secrets removed.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// Health is the body of GET /healthz.
type Health struct {
	// Status: ok (200); unavailable (503): the sidecar's CloudShell cannot be reached, or
	// its last logon failed; shutting_down (503).
	Status     string            `json:"status"`
	CloudShell *CloudShellHealth `json:"cloudshell"`
}

// CloudShellHealth describes the sidecar's own CloudShell.
type CloudShellHealth struct {
	// Configured is false when the sidecar has no CloudShell of its own (every request
	// names its own); nothing else is reported then.
	Configured bool `json:"configured"`
	// Server: scheme://host:port, domain and user (never a secret).
	Server string `json:"server,omitempty"`
	// Reachable: a TCP connection to host:port succeeded just now; ReachError says why not.
	Reachable  *bool  `json:"reachable,omitempty"`
	ReachError string `json:"reach_error,omitempty"`
	// LoggedOn: the latest logon succeeded (false before the first one).
	LoggedOn    bool       `json:"logged_on"`
	LastLogonAt *time.Time `json:"last_logon_at,omitempty"`
	// LastLogonError is the latest failed logon's reason, even if a later one succeeded
	// (LastLogonErrorAt tells which came last). A failed logon is tried again by the next
	// request that needs it, never by /healthz (retrying a wrong password on every probe
	// could lock the account).
	LastLogonError   string     `json:"last_logon_error,omitempty"`
	LastLogonErrorAt *time.Time `json:"last_logon_error_at,omitempty"`
}

// handleHealthz reports whether the sidecar can do its job: 200 when its CloudShell is
// reachable and the latest logon (if any) succeeded, 503 otherwise. /livez is the trivial
// liveness check.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	out := Health{Status: "ok", CloudShell: &CloudShellHealth{}}
	if s.hasDefaults() {
		ch := out.CloudShell
		ch.Configured = true
		ch.Server = s.defaults.String()

		s.health.mu.Lock()
		lastOK, lastErr, lastErrAt := s.health.lastOK, s.health.lastErr, s.health.lastErrAt
		s.health.mu.Unlock()
		if !lastOK.IsZero() {
			t := lastOK.UTC()
			ch.LastLogonAt = &t
		}
		if lastErr != "" {
			t := lastErrAt.UTC()
			ch.LastLogonError, ch.LastLogonErrorAt = lastErr, &t
		}
		ch.LoggedOn = !lastOK.IsZero() && (lastErr == "" || lastOK.After(lastErrAt))

		reachable := true
		if err := s.probe(r.Context()); err != nil {
			reachable, ch.ReachError = false, s.scrub(err.Error())
		}
		ch.Reachable = &reachable
		if !reachable || (lastErr != "" && !ch.LoggedOn) {
			out.Status = "unavailable"
		}
	}
	if s.base.Err() != nil {
		out.Status = "shutting_down"
	}
	code := http.StatusOK
	if out.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, out)
}

// probe opens (and closes) a TCP connection to the sidecar's CloudShell.
func (s *Server) probe(ctx context.Context) error {
	n := s.defaults.normalised()
	ctx, cancel := context.WithTimeout(ctx, healthProbeTimeout)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(strings.Trim(n.Host, "[]"), strconv.Itoa(n.Port)))
	if err != nil {
		return err
	}
	return c.Close()
}

// handleLivez says the process is serving HTTP, and nothing else.
func handleLivez(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, "ok")
}
