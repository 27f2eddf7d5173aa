package mockapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/csmutex/csmutex/mutexpkg"
)

// Option configures a Server.
type Option func(*config)

type config struct {
	users         []user
	noDefaultUser bool
	dataModels    [][]byte
	cacheTTL      time.Duration
	now           func() time.Time
	seed          int64
	log           zerolog.Logger
	resources     []knownResource
}

// WithUser adds a user who may Logon with these credentials (domain "" = Global).
func WithUser(username, password, domain string) Option {
	return func(c *config) {
		if domain == "" {
			domain = defaultDomain
		}
		c.users = append(c.users, user{name: username, password: password, domain: domain})
	}
}

// WithoutDefaultUser removes the built-in admin/admin user of domain Global.
func WithoutDefaultUser() Option { return func(c *config) { c.noDefaultUser = true } }

// WithDataModel loads the service models of a DataModelInfo XML. It may be given several
// times (a later model of the same name replaces an earlier one); without it the server
// loads mutexpkg.DataModel. An invalid data model does not make New fail: Err reports it
// and every API request answers Success="false" naming the problem, so a misconfigured
// test fails loudly at its first call. Check Err after New to fail earlier.
func WithDataModel(xml []byte) Option {
	return func(c *config) { c.dataModels = append(c.dataModels, xml) }
}

// WithCacheTTL sets how old a GetReservationDetails rendering may be when served to a
// disableCache=false read (default 5s, like the real server); 0 disables the cache.
func WithCacheTTL(d time.Duration) Option { return func(c *config) { c.cacheTTL = d } }

// withClock replaces time.Now for reservation times, history and the details cache.
func withClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithSeed seeds the fault RNG and the reservation id generator.
func WithSeed(seed int64) Option { return func(c *config) { c.seed = seed } }

// WithLogger sets the request logger (default: discard). Tokens, passwords and the
// Authorization header are never logged.
func WithLogger(l zerolog.Logger) Option { return func(c *config) { c.log = l } }

// WithResource adds a resource that AddResourcesToReservation accepts.
func WithResource(fullPath, family, model string) Option {
	return func(c *config) {
		c.resources = append(c.resources, knownResource{path: fullPath, family: family, model: model})
	}
}

// Server is an in-memory CloudShell Automation API. All state sits behind one mutex and
// every call applies atomically, so concurrent clients observe a linearizable server.
type Server struct {
	cfg      config
	models   map[string]*serviceModel
	modelErr error
	faults   *Faults
	admin    http.Handler

	callsMu sync.Mutex
	calls   map[string]int
	byCli   map[[2]string]int // (client, method) → requests

	mu           sync.Mutex
	users        map[string]*user
	sessions     map[string]*session
	reservations map[string]*reservation
	known        map[string]knownResource
	history      []Mutation
	seq          int64
	idRNG        *rand.Rand

	httpMu sync.Mutex
	srv    *http.Server
	ln     net.Listener
}

// New builds a server; it does not listen (use Start, or mount it as an http.Handler).
func New(opts ...Option) *Server {
	cfg := config{cacheTTL: 5 * time.Second, now: time.Now, log: zerolog.Nop()}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	s := &Server{
		cfg:          cfg,
		models:       map[string]*serviceModel{},
		faults:       newFaults(cfg.seed),
		calls:        map[string]int{},
		byCli:        map[[2]string]int{},
		users:        map[string]*user{},
		sessions:     map[string]*session{},
		reservations: map[string]*reservation{},
		known:        map[string]knownResource{},
		idRNG:        rand.New(rand.NewPCG(uint64(cfg.seed), 0x1d5_0f_4e5e)),
	}
	if !cfg.noDefaultUser {
		s.users["admin"] = &user{name: "admin", password: "admin", domain: defaultDomain, admin: true}
	}
	for _, u := range cfg.users {
		u := u
		s.users[u.name] = &u
	}
	dms := cfg.dataModels
	if len(dms) == 0 {
		dms = [][]byte{mutexpkg.DataModel}
	}
	for i, dm := range dms {
		models, err := parseDataModel(dm)
		if err != nil {
			s.modelErr = fmt.Errorf("mockapi: data model #%d: %w", i+1, err)
			break
		}
		for _, m := range models {
			m := m
			s.models[m.Name] = &m
		}
	}
	for _, r := range cfg.resources {
		s.addKnownLocked(r.path, r.family, r.model)
	}
	s.admin = s.adminHandler()
	return s
}

// Err reports a configuration problem (an invalid data model), or nil.
func (s *Server) Err() error { return s.modelErr }

// Faults returns the fault configuration, which may be changed at any time.
func (s *Server) Faults() *Faults { return s.faults }

// loadedModels returns the loaded service models, sorted by name.
func (s *Server) loadedModels() []serviceModel {
	out := make([]serviceModel, 0, len(s.models))
	for _, m := range s.models {
		mm := *m
		mm.Attributes = append([]modelAttribute(nil), m.Attributes...)
		out = append(out, mm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Server) now() time.Time { return s.cfg.now() }

// Calls returns how many requests for method were received, from all clients and
// whatever their outcome ("" = all methods).
func (s *Server) Calls(method string) int {
	s.callsMu.Lock()
	defer s.callsMu.Unlock()
	if method != "" {
		return s.calls[method]
	}
	n := 0
	for _, c := range s.calls {
		n += c
	}
	return n
}

// CallsBy returns how many requests for method ("" = all methods) client sent, whatever
// their outcome. The client is the MachineName the caller logged on with, without the
// ":port" suffix the reference client appends.
func (s *Server) CallsBy(client, method string) int {
	s.callsMu.Lock()
	defer s.callsMu.Unlock()
	n := 0
	for k, c := range s.byCli {
		if k[0] == client && (method == "" || k[1] == method) {
			n += c
		}
	}
	return n
}

func (s *Server) countCall(client, method string) {
	s.callsMu.Lock()
	s.calls[method]++
	s.byCli[[2]string{client, method}]++
	s.callsMu.Unlock()
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background.
func (s *Server) Start(addr string) (string, error) {
	s.httpMu.Lock()
	defer s.httpMu.Unlock()
	if s.srv != nil {
		return "", errors.New("mockapi: server already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), nil
}

// Addr returns the host and port Start listens on (zero values before Start).
func (s *Server) Addr() (string, int) {
	s.httpMu.Lock()
	defer s.httpMu.Unlock()
	if s.ln == nil {
		return "", 0
	}
	host, port, err := net.SplitHostPort(s.ln.Addr().String())
	if err != nil {
		return "", 0
	}
	p, _ := strconv.Atoi(port)
	return host, p
}

// Close stops serving and drops open connections. It is a no-op if Start was not called.
func (s *Server) Close() error {
	s.httpMu.Lock()
	defer s.httpMu.Unlock()
	if s.srv == nil {
		return nil
	}
	err := s.srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Shutdown stops serving gracefully, waiting for in-flight calls until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.httpMu.Lock()
	srv := s.srv
	s.httpMu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// ServeHTTP routes API calls, the admin endpoint, and 404s everything else.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case strings.HasPrefix(p, apiPrefix):
		s.serveAPI(w, r)
	case p == "/admin" || strings.HasPrefix(p, "/admin/"):
		s.admin.ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}

// serveAPI handles one call. Fault order: latency (outside any lock), then the faults
// that leave state untouched, then the call, then drop-after-commit.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	method := strings.TrimPrefix(r.URL.Path, apiPrefix)
	auth := parseAuthorization(r.Header.Get("Authorization"))
	s.countCall(auth.client(), method)
	ev := func(outcome string, status int) {
		s.cfg.log.Info().
			Str("method", method).
			Str("client", auth.machine).
			Str("outcome", outcome).
			Int("status", status).
			Dur("duration_ms", time.Since(start)).
			Msg("request")
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed: use POST", http.StatusMethodNotAllowed)
		ev("bad-http-method", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeXML(w, renderFailure(method, failf("Could not read the request body: %v", err)))
		ev("bad-request", http.StatusOK)
		return
	}
	spec, known := apiMethods[method]
	if !known {
		writeXML(w, renderFailure(method, failf("Unknown method '%s'", method)))
		ev("unknown-method", http.StatusOK)
		return
	}
	if s.modelErr != nil {
		writeXML(w, renderFailure(method, &apiError{code: 100, msg: s.modelErr.Error()}))
		ev("misconfigured", http.StatusOK)
		return
	}
	c := &call{auth: auth}
	if !spec.noAuth {
		sess, ok := s.authenticate(auth.token)
		if !ok {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, "401 Unauthorized: the token is missing, invalid or expired. Log on again.\n")
			ev("unauthorized", http.StatusUnauthorized)
			return
		}
		c.sess = sess
	}

	d := s.faults.decide(method, auth)
	if d.latency > 0 {
		t := time.NewTimer(d.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			ev("canceled", 0)
			return
		}
	}
	switch {
	case d.http500:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, http500Page)
		ev("fault-http500", http.StatusInternalServerError)
		return
	case d.failBefore:
		ev("fault-fail-before-commit", 0)
		abortConnection(w)
		return
	case d.err != nil:
		writeXML(w, renderFailure(method, d.err))
		ev("fault-error", http.StatusOK)
		return
	}

	var out []byte
	outcome := "ok"
	req, perr := parseRequest(method, body)
	if perr != nil {
		out = renderFailure(method, asAPIError(perr))
		outcome = "bad-request"
	} else {
		c.req = req
		res, aerr := spec.fn(s, c)
		if aerr != nil {
			out = renderFailure(method, aerr)
			outcome = "failed"
		} else {
			out = renderSuccess(method, res)
		}
	}
	if d.dropAfter {
		ev("fault-drop-after-commit("+outcome+")", 0)
		abortConnection(w)
		return
	}
	writeXML(w, out)
	ev(outcome, http.StatusOK)
}

func writeXML(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// abortConnection closes the client connection without writing a response. Hijacking is
// the clean way on HTTP/1; elsewhere ErrAbortHandler makes net/http drop the connection.
func abortConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// http500Page imitates the HTML an IIS front end returns when the service behind it fails.
const http500Page = `<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head><title>500 - Internal server error.</title></head>
<body><div id="header"><h1>Server Error</h1></div>
<div id="content"><fieldset><h2>500 - Internal server error.</h2>
<h3>There is a problem with the resource you are looking for, and it cannot be displayed.</h3>
</fieldset></div></body></html>
`
