package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/duration"
	"github.com/csmutex/csmutex/internal/logon"
	"github.com/csmutex/csmutex/internal/redact"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/acquire", s.handleAcquire)
	mux.HandleFunc("POST /v1/keepalive", s.handleKeepalive)
	mux.HandleFunc("POST /v1/release", s.handleRelease)
	mux.HandleFunc("GET /v1/locks", s.handleLocks)
	mux.HandleFunc("POST /v1/state/add", s.handleStateAdd)
	mux.HandleFunc("POST /v1/state/allocate", s.handleStateAllocate)
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /livez", handleLivez)
	mux.Handle("GET /metrics", s.metrics.handler())
	allowed := map[string]string{"/v1/acquire": "POST", "/v1/keepalive": "POST", "/v1/release": "POST",
		"/v1/state/add": "POST", "/v1/state/allocate": "POST",
		"/v1/locks": "GET, HEAD", "/healthz": "GET, HEAD", "/livez": "GET, HEAD", "/metrics": "GET, HEAD"}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if methods, ok := allowed[r.URL.Path]; ok {
			w.Header().Set("Allow", methods)
			writeError(w, http.StatusMethodNotAllowed, errorBody{Error: r.Method + " is not allowed on " + r.URL.Path + " (use " + methods + ")", Kind: "bad_request"})
			return
		}
		writeError(w, http.StatusNotFound, errorBody{Error: "no such endpoint: " + r.Method + " " + r.URL.Path, Kind: "not_found"})
	})
	return mux
}

// errorBody is every error response.
type errorBody struct {
	Error string `json:"error"`
	// Kind: bad_request, not_found, timeout, locked, unauthorized, setup, permanent,
	// unavailable, shutting_down, lost; from the guard (guard.go): forbidden,
	// unauthenticated, unsupported_media_type.
	Kind string `json:"kind"`
	// The holder fields (holderFields) name who holds the lock when the lock was not
	// obtained (409, and 503 unavailable after waiting), when it could be read.
	holderFields
	// Waited (a Go duration string, kept for older clients) and WaitedMS (milliseconds)
	// say how long the request waited; Tries how many attempts it made. Set when the lock
	// was not obtained.
	Waited   string   `json:"waited,omitempty"`
	WaitedMS *float64 `json:"waited_ms,omitempty"`
	Tries    int      `json:"tries,omitempty"`
	// Holders are the owner records, verbatim, of what kept a shape's single attempt from
	// succeeding (its slots, members or names).
	Holders []string `json:"holders,omitempty"`
	// Field names the request field a 400 refused, when it was one field ("slots",
	// "names[2]", "timeout").
	Field string `json:"field,omitempty"`
}

// holderFields describe a lock's holder, as its owner record in CloudShell says: the
// owner label, host and pid, the acquisition's token (not a capability: it is readable by
// anyone who can see the reservation) and when it took the lock by its own clock.
type holderFields struct {
	Holder      string     `json:"holder,omitempty"`
	HolderHost  string     `json:"holder_host,omitempty"`
	HolderPID   int        `json:"holder_pid,omitempty"`
	HolderToken string     `json:"holder_token,omitempty"`
	HeldSince   *time.Time `json:"held_since,omitempty"`
}

func holderOf(o mutex.Owner) holderFields {
	return holderFields{Holder: holderLabel(o), HolderHost: o.Host, HolderPID: o.PID, HolderToken: o.Token,
		HeldSince: since(o)}
}

// since is o.Since in UTC, or nil when the record carries none (legacy holders, older
// csmutex), so that the field is left out rather than shown as year 1.
func since(o mutex.Owner) *time.Time {
	if o.Since.IsZero() {
		return nil
	}
	t := o.Since.UTC()
	return &t
}

// ms is d in milliseconds, as the logs' *_ms fields carry it.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, e errorBody) { writeJSON(w, status, e) }

func badRequest(w http.ResponseWriter, format string, args ...any) {
	writeError(w, http.StatusBadRequest, errorBody{Error: fmt.Sprintf(format, args...), Kind: "bad_request"})
}

// invalid answers 400 for a request that failed validation, naming the field when the
// error does (fieldError).
func (s *Server) invalid(w http.ResponseWriter, err error) {
	body := errorBody{Error: s.scrub(err.Error()), Kind: "bad_request"}
	var fe *fieldError
	if errors.As(err, &fe) {
		body.Field = fe.field
	}
	writeError(w, http.StatusBadRequest, body)
}

// readJSON decodes a whole, size-limited body strictly: unknown fields and trailing data
// are errors, so a typo ("timout") is reported instead of silently ignored. Reading the body
// to its end also lets the server notice at once when the client goes away.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body larger than %d bytes", MaxBodyBytes)
		}
		return fmt.Errorf("reading the request body: %w", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("empty request body: want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %s", jsonErrorText(err))
	}
	if dec.More() {
		return errors.New("invalid JSON: trailing data after the object")
	}
	return nil
}

// jsonErrorText describes a decoding error without echoing the request (which may
// carry a password).
func jsonErrorText(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		if te.Field != "" {
			// Embedded request parts are no part of the JSON a client writes.
			field := strings.TrimPrefix(strings.TrimPrefix(te.Field, "shapeRequest."), "stateCommon.")
			return fmt.Sprintf("field %q must be a %s", field, te.Type)
		}
		return "want a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated"
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "json: unknown field ") {
		return "unknown field " + strings.TrimPrefix(msg, "json: unknown field ")
	}
	if strings.Contains(msg, "password") || strings.Contains(msg, "token") {
		return "malformed value"
	}
	return strings.TrimPrefix(msg, "json: ")
}

// maxDurationSeconds bounds a number of seconds (about 116 days), far from overflow.
const maxDurationSeconds = 1e7

// errOutOfRange: a well-formed duration too large to use (parseDurationIn names the range).
var errOutOfRange = errors.New("out of range")

// parseLease sets *lease from a request's "lease" field when it is given.
func parseLease(raw json.RawMessage, lease *time.Duration) error {
	d, set, err := parseDuration("lease", raw)
	switch {
	case err != nil:
		return err
	case set && d < 0:
		return errors.New("lease must not be negative (0 means the lock never expires)")
	case set:
		*lease = d
	}
	return nil
}

// defaultOwner labels a request that names no owner by where it came from.
func defaultOwner(r *http.Request) string {
	if r.RemoteAddr == "" || r.RemoteAddr == "@" {
		return "sidecar-client@unix"
	}
	return "sidecar-client@" + r.RemoteAddr
}

// parseDuration reads a Go duration string ("300s", "1m30s") or a number of seconds (300,
// 0.5, "300"), as internal/duration (and so the command's flags) reads them. set is false
// when the field is absent or null.
func parseDuration(field string, raw json.RawMessage) (d time.Duration, set bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	bad := fmt.Errorf(`%s must be a duration such as "30s" or a number of seconds`, field)
	s := strings.TrimSpace(string(raw)) // a JSON number, as written
	var str string
	switch {
	case json.Unmarshal(raw, &str) == nil:
		s = str
	case s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')):
		return 0, false, bad // true, an object, ...
	}
	d, err = duration.Parse(s)
	seconds := duration.IsSeconds(s)
	switch {
	case errors.Is(err, duration.ErrRange) || (seconds && math.Abs(d.Seconds()) > maxDurationSeconds):
		return 0, false, fmt.Errorf("%s is %w", field, errOutOfRange)
	case err != nil:
		return 0, false, bad
	}
	return d, true, nil
}

// acquireRequest is the body of POST /v1/acquire.
type acquireRequest struct {
	ReservationID string          `json:"reservation_id"`
	Name          string          `json:"name"`
	Owner         string          `json:"owner"`
	Timeout       json.RawMessage `json:"timeout"`
	Mode          string          `json:"mode"`
	TTL           json.RawMessage `json:"ttl"`
	Lease         json.RawMessage `json:"lease"`
	// SandboxMessages: false/true or an interval (parseSandboxMessages, limits.go).
	SandboxMessages json.RawMessage `json:"sandbox_messages"`
	// Priority: the place in each lock's waiting room, 0 to mutex.MaxPriority
	// (parsePriority, limits.go).
	Priority   json.RawMessage `json:"priority"`
	CloudShell *cloudshellJSON `json:"cloudshell"`
	// The shape and its parameters (shape.go).
	shapeRequest
}

const maxLabelLen = 256

// acquireParams is a validated acquire request.
type acquireParams struct {
	resID, name, owner, mode string
	timeout, ttl, lease      time.Duration
	messages                 time.Duration // sandbox message interval; 0: none
	priority                 int           // waiting-room priority (mutex.WithPriority); noPriority: none named
	creds                    Credentials
	shape                    shapeParams
}

func (s *Server) parseAcquire(w http.ResponseWriter, r *http.Request) (acquireParams, error) {
	var req acquireRequest
	if err := readJSON(w, r, &req); err != nil {
		return acquireParams{}, err
	}
	p := acquireParams{resID: req.ReservationID, name: req.Name, owner: req.Owner, mode: req.Mode,
		timeout: DefaultTimeout, ttl: s.defaultTTL, lease: s.lease}
	switch {
	case strings.TrimSpace(p.resID) == "":
		return p, errors.New("reservation_id is required")
	case len(p.resID) > maxLabelLen || strings.ContainsAny(p.resID, "\x00\r\n"):
		return p, errors.New("reservation_id is malformed")
	}
	shape, err := parseShape(req.shapeRequest, req.Name != "")
	if err != nil {
		return p, err
	}
	p.shape = shape
	if p.name == "" {
		p.name = mutex.DefaultName
	}
	validate := mutex.ValidateName
	if !shape.plain() {
		validate = mutex.ValidateShapeName
	}
	if err := validate(p.name); err != nil {
		return p, err
	}
	if k := shape.kind; k == ShapeSet || k == ShapePool {
		p.name = usageName(p)
	}
	if len(p.owner) > maxLabelLen || strings.ContainsAny(p.owner, "\x00\r\n") {
		return p, errors.New("owner is malformed")
	}
	if p.owner == "" {
		p.owner = defaultOwner(r)
	}
	switch p.mode {
	case "":
		p.mode = ModeStream
	case ModeStream, ModeToken:
	default:
		return p, fmt.Errorf(`unknown mode %q: want "stream" or "token"`, p.mode)
	}
	// Ranges and their reasons: limits.go.
	timeout, set, err := parseDurationIn("timeout", req.Timeout, 0, MaxTimeout, " (a single attempt)")
	switch {
	case err != nil:
		return p, err
	case set:
		p.timeout = timeout
	}
	if raw := req.TTL; len(raw) > 0 && string(raw) != "null" && p.mode != ModeToken {
		return p, errors.New(`ttl applies only to mode "token"`)
	}
	ttl, set, err := parseDurationIn("ttl", req.TTL, MinTTL, MaxTTL, "")
	switch {
	case err != nil:
		return p, err
	case set:
		p.ttl = ttl
	}
	if err := parseLease(req.Lease, &p.lease); err != nil {
		return p, err
	}
	if p.messages, err = parseSandboxMessages(req.SandboxMessages); err != nil {
		return p, err
	}
	if p.priority, err = parsePriority(req.Priority); err != nil {
		return p, err
	}
	if p.messages > 0 && shape.kind != ShapeExclusive {
		// A waiting semaphore, pool or reader watches several locks at once, each of which
		// would write its own lines to the Output window.
		return p, fmt.Errorf(`sandbox_messages applies only to shape "exclusive", not %q`, shape.kind)
	}
	creds, err := resolveCredentials(s.defaults, req.CloudShell)
	if err != nil {
		return p, err
	}
	p.creds = creds
	return p, nil
}

// Durations in responses: a "_ms" field is the number of milliseconds (a float, as the
// logs' *_ms fields); the field without a suffix is the same duration as a Go duration
// string for people ("1m30.5s"); "_seconds" fields are kept for older clients.

// acquired is the answer to a successful acquire: the body in token mode, the first line
// in stream mode.
type acquired struct {
	Status        string     `json:"status"`
	Token         string     `json:"token"`
	Mode          string     `json:"mode"`
	Owner         string     `json:"owner"`
	Name          string     `json:"name"`
	ReservationID string     `json:"reservation_id"`
	Waited        string     `json:"waited"`
	WaitedMS      float64    `json:"waited_ms"`
	TTL           string     `json:"ttl,omitempty"`
	TTLMS         float64    `json:"ttl_ms,omitempty"`
	TTLSeconds    float64    `json:"ttl_seconds,omitempty"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	// What was obtained: shape, access, slot, set names, pool members, aliases.
	Obtained
}

// streamLine is every later line of a stream-mode response.
type streamLine struct {
	Status  string   `json:"status"` // held, lost, released
	HeldFor string   `json:"held_for,omitempty"`
	HeldMS  *float64 `json:"held_ms,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func (s *Server) handleAcquire(w http.ResponseWriter, r *http.Request) {
	if s.base.Err() != nil {
		writeError(w, http.StatusServiceUnavailable, errorBody{Error: "the sidecar is shutting down", Kind: "shutting_down"})
		return
	}
	p, err := s.parseAcquire(w, r)
	if err != nil {
		s.invalid(w, err)
		return
	}
	secrets := append(p.creds.secrets(), s.defaults.secrets()...)
	start := s.now()
	realStart := time.Now()
	// The acquisition ends when the client goes away or the sidecar shuts down.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.base, cancel)
	defer stop()

	log := s.log.With().Str("reservation", p.resID).Str("lock", p.name).Str("shape", p.shape.kind).
		Str("owner", p.owner).Str("mode", p.mode).Logger()

	lock, doneWithClient, err := s.lock(ctx, p)
	waited := time.Since(realStart)
	s.metrics.wait.Observe(waited.Seconds())
	s.metrics.usage.waited(p.name, p.shape.kind, waited, err == nil)
	if err != nil {
		status, body, result := s.classify(err, r)
		body.Error = redact.String(body.Error, secrets...)
		s.metrics.acquisitions.WithLabelValues(result).Inc()
		if result == resultCanceled && r.Context().Err() != nil {
			log.Info().Dur("waited_ms", waited).Msg("client went away while waiting")
			return
		}
		if body.Tries > 0 {
			body.Waited = waited.Round(time.Millisecond).String()
			waitedMS := ms(waited)
			body.WaitedMS = &waitedMS
		}
		ev := log.Info().Int("status", status).Str("kind", body.Kind).Str("error", body.Error)
		if body.Tries > 0 {
			ev = ev.Str("holder", body.Holder).Dur("waited_ms", waited).Int("tries", body.Tries)
		}
		ev.Msg("lock not obtained")
		writeError(w, status, body)
		return
	}
	s.metrics.acquisitions.WithLabelValues(resultAcquired).Inc()
	h := &hold{token: newHoldToken(), resID: p.resID, name: p.name, owner: p.owner, mode: p.mode,
		shape: p.shape, lock: lock, got: obtainedOf(p.shape, p.name, lock), acquired: start, ttl: p.ttl,
		doneWithClient: doneWithClient, ended: make(chan struct{})}
	if p.mode == ModeToken {
		h.expires = s.now().Add(p.ttl)
	}
	if !s.reg.add(h) {
		_ = s.finish(h, "lost", "the sidecar is shutting down")
		writeError(w, http.StatusServiceUnavailable, errorBody{Error: "the sidecar is shutting down", Kind: "shutting_down"})
		return
	}
	log.Info().Dur("waited_ms", waited).Msg("lock acquired")
	if r.Context().Err() != nil {
		// The client left just as the lock came: nobody will ever use or release it.
		s.release(h, "released", "the client went away")
		return
	}
	resp := acquired{Status: "acquired", Token: h.token, Mode: h.mode, Owner: h.owner, Name: h.name,
		ReservationID: h.resID, Waited: waited.Round(time.Millisecond).String(), WaitedMS: ms(waited), Obtained: h.got}
	if p.mode == ModeToken {
		exp := h.expires.UTC()
		resp.TTL, resp.TTLMS, resp.TTLSeconds, resp.ExpiresAt = p.ttl.String(), ms(p.ttl), p.ttl.Seconds(), &exp
		go s.watchToken(h)
		writeJSON(w, http.StatusOK, resp)
		return
	}
	s.stream(w, r, h, resp, secrets)
}

// lock makes the acquisition: one attempt for a zero timeout, else waits up to it. With
// the lock comes the function that gives back its CloudShell client once the lock is
// released; the client stays cached (clients.go) at least until then.
func (s *Server) lock(ctx context.Context, p acquireParams) (heldLock, func(), error) {
	ctx, err := s.insideContext(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	api, doneWithClient, err := s.clients.get(ctx, p.creds)
	if err != nil {
		return nil, nil, &logon.Error{Addr: p.creds.addr(), As: logon.Who(p.creds.User, p.creds.Token), Err: err}
	}
	w := &waiting{resID: p.resID, name: p.name, owner: p.owner, shape: p.shape, priority: p.priority, since: s.now()}
	done := s.reg.wait(w)
	defer done()
	if !p.shape.plain() {
		h, err := s.acquireShape(ctx, api, p, w)
		if err != nil {
			doneWithClient()
			return nil, nil, err
		}
		return shapeLock{h}, doneWithClient, nil
	}
	var (
		m     *mutex.Mutex
		leave = func() {}
	)
	if s.cohorts != nil {
		// A member's wait is bounded by its own context: the cohort's Mutex has no limit.
		m, leave = s.cohorts.mutex(p, func() *mutex.Mutex { return s.newCohortMutex(api, p) })
		if p.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, p.timeout)
			defer cancel()
		}
	} else {
		m = s.newMutex(api, p, w)
	}
	var lock *mutex.Lock
	if p.timeout == 0 {
		lock, err = m.TryLock(ctx)
	} else {
		lock, err = m.Lock(ctx)
	}
	if err != nil {
		leave()
		doneWithClient()
		return nil, nil, err
	}
	return exclusiveLock{lock}, func() { leave(); doneWithClient() }, nil
}

// newMutex is the one place a request's mutex is made: the request's name, owner, lease,
// wait limit, sandbox messages and priority over the server's options, and an observer that
// keeps w's view of the holder current for GET /v1/locks.
func (s *Server) newMutex(api mutex.API, p acquireParams, w *waiting) *mutex.Mutex {
	opts := append([]mutex.Option{mutex.WithLogger(s.log)}, s.mutexOpts...)
	opts = append(opts, mutex.WithName(p.name), mutex.WithOwner(p.owner), mutex.WithLease(p.lease),
		mutex.WithWaitLimit(p.timeout), mutex.WithObserver(func(ev mutex.WaitEvent) { s.reg.observe(w, ev) }))
	if p.messages > 0 {
		opts = append(opts, mutex.WithSandboxMessages(p.messages))
	}
	if p.priority != noPriority {
		opts = append(opts, mutex.WithPriority(p.priority))
	}
	return mutex.New(api, p.resID, opts...)
}

// classify maps an acquisition failure to the response. The choices:
//
//	409 timeout/locked   not obtained in time; holder named when it could be read (a
//	                     shape's single attempt also lists the records in the way)
//	409 exhausted        state: every value of the range is allocated
//	409 conflict         state: the value changed under the lock; nothing was written
//	400 bad_request      CloudShell rejected an argument before anything was sent, or a
//	                     shape refused its request (a name, a level order, an overflow)
//	502 corrupt          state: the stored value is unreadable; nothing was written
//	502 unauthorized     CloudShell refused the credentials
//	502 setup            CloudShell lacks the Mutex Service model or its attribute
//	502 permanent        any other permanent CloudShell failure (unknown or ended
//	                     reservation, ...): retrying will not help
//	503 unavailable      CloudShell unreachable or failing transiently (retry later)
//	503 shutting_down    the sidecar is stopping
//
// 502 rather than 424: the sidecar is a gateway to CloudShell, and 502 is the status every
// HTTP client and proxy understands as "the upstream said no".
func (s *Server) classify(err error, r *http.Request) (int, errorBody, string) {
	var le *mutex.LockedError
	var te *mutex.TimeoutError
	var de *logon.Error
	var be *locks.BusyError
	var ce *locks.ConflictError
	switch {
	case errors.As(err, &be):
		// A shape's single attempt found it full or contended.
		body := errorBody{Error: err.Error(), Kind: "locked", Holders: be.Holders, Tries: 1}
		if owners := be.Owners(); len(owners) > 0 {
			body.holderFields = busyHolder(owners[0])
		}
		return http.StatusConflict, body, resultTimeout
	case isRequestError(err):
		body := errorBody{Error: err.Error(), Kind: "bad_request"}
		var fe *fieldError
		if errors.As(err, &fe) {
			body.Field = fe.field
		}
		return http.StatusBadRequest, body, resultError
	case errors.Is(err, locks.ErrExhausted):
		return http.StatusConflict, errorBody{Error: err.Error(), Kind: "exhausted"}, resultError
	case errors.As(err, &ce):
		return http.StatusConflict, errorBody{Error: err.Error(), Kind: "conflict"}, resultError
	case errors.Is(err, locks.ErrCorrupt):
		return http.StatusBadGateway, errorBody{Error: err.Error(), Kind: "corrupt"}, resultError
	case errors.As(err, &le):
		// TryLock: one attempt.
		return http.StatusConflict, errorBody{Error: err.Error(), Kind: "locked", holderFields: holderOf(le.Holder), Tries: 1}, resultTimeout
	case errors.As(err, &te) && te.Unavailable:
		return http.StatusServiceUnavailable, errorBody{Error: err.Error(), Kind: "unavailable", holderFields: holderOf(te.Holder), Tries: te.Tries}, resultError
	case errors.As(err, &te):
		return http.StatusConflict, errorBody{Error: err.Error(), Kind: "timeout", holderFields: holderOf(te.Holder), Tries: te.Tries}, resultTimeout
	case s.base.Err() != nil:
		return http.StatusServiceUnavailable, errorBody{Error: "the sidecar is shutting down", Kind: "shutting_down"}, resultCanceled
	case r.Context().Err() != nil || errors.Is(err, context.Canceled):
		return 499, errorBody{Error: "canceled", Kind: "canceled"}, resultCanceled
	case errors.Is(err, cloudshell.ErrInvalidArgument):
		return http.StatusBadRequest, errorBody{Error: err.Error(), Kind: "bad_request"}, resultError
	case errors.As(err, &de) && !errors.Is(err, cloudshell.ErrUnauthorized) && mutex.CallClass(err) == mutex.ClassUnavailable:
		return http.StatusServiceUnavailable, errorBody{Error: err.Error(), Kind: "unavailable"}, resultError
	case errors.As(err, &de):
		// A logon refused (401, or an API error envelope).
		return http.StatusBadGateway, errorBody{Error: err.Error(), Kind: "unauthorized"}, resultError
	}
	// Everything else is the mutex's classification, translated.
	switch mutex.ClassOf(err) {
	case mutex.ClassAuth:
		return http.StatusBadGateway, errorBody{Error: err.Error(), Kind: "unauthorized"}, resultError
	case mutex.ClassSetup:
		return http.StatusBadGateway, errorBody{Error: err.Error(), Kind: "setup"}, resultError
	case mutex.ClassUnavailable, mutex.ClassTimeout:
		return http.StatusServiceUnavailable, errorBody{Error: err.Error(), Kind: "unavailable"}, resultError
	case mutex.ClassCanceled:
		return 499, errorBody{Error: "canceled", Kind: "canceled"}, resultCanceled
	default: // Invalid (unknown or ended reservation, ...), and anything unexpected
		return http.StatusBadGateway, errorBody{Error: err.Error(), Kind: "permanent"}, resultError
	}
}

func holderLabel(o mutex.Owner) string {
	switch {
	case o.IsZero():
		return ""
	case o.Legacy:
		return o.String()
	default:
		return o.Name
	}
}

// stream holds the lock for as long as the response stays open: the first line says it is
// acquired, a heartbeat line follows every few seconds, and when the client closes the
// connection the lock is released at once. A lost lock gets a final "lost" line.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, h *hold, first acquired, secrets []string) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(v any) error {
		if err := enc.Encode(v); err != nil {
			return err
		}
		return rc.Flush()
	}
	ended := func() {
		<-h.ended
		_ = send(streamLine{Status: h.endStatus, Error: h.endReason})
	}
	if err := send(first); err != nil {
		s.release(h, "released", "the client went away")
		return
	}
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			s.release(h, "released", "the client closed the connection")
			return
		case <-h.ended:
			ended()
			return
		case <-h.lock.Done():
			msg := "lock lost"
			if err := h.lock.Err(); err != nil {
				msg = redact.String(err.Error(), secrets...)
			}
			if took, _ := s.release(h, "lost", msg); took {
				_ = send(streamLine{Status: "lost", Error: msg})
				return
			}
			ended()
			return
		case <-t.C:
			held := s.now().Sub(h.acquired)
			heldMS := ms(held)
			if err := send(streamLine{Status: "held", HeldFor: held.Round(time.Second).String(), HeldMS: &heldMS}); err != nil {
				s.release(h, "released", "writing to the client failed")
				return
			}
		}
	}
}

// tokenRequest is the body of keepalive and release.
type tokenRequest struct {
	Token string `json:"token"`
}

func (s *Server) readToken(w http.ResponseWriter, r *http.Request) (string, bool) {
	var req tokenRequest
	if err := readJSON(w, r, &req); err != nil {
		badRequest(w, "%s", err.Error())
		return "", false
	}
	if req.Token == "" {
		badRequest(w, "token is required")
		return "", false
	}
	return req.Token, true
}

// tokenGone answers for a token that is not held: 410 with the reason if the sidecar let
// go of it by itself, else 404. Nothing is released either way.
func (s *Server) tokenGone(w http.ResponseWriter, token string) {
	if reason, ok := s.forget(token); ok {
		writeError(w, http.StatusGone, errorBody{Error: reason, Kind: "lost"})
		return
	}
	writeError(w, http.StatusNotFound, errorBody{Error: "unknown token: no lock is held with it (nothing was released)", Kind: "not_found"})
}

type keepaliveResponse struct {
	Mode       string     `json:"mode"`
	TTL        string     `json:"ttl,omitempty"`
	TTLMS      float64    `json:"ttl_ms,omitempty"`
	TTLSeconds float64    `json:"ttl_seconds,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
}

func (s *Server) handleKeepalive(w http.ResponseWriter, r *http.Request) {
	token, ok := s.readToken(w, r)
	if !ok {
		return
	}
	h, exp, ok := s.reg.extend(token, s.now())
	if !ok {
		s.tokenGone(w, token)
		return
	}
	resp := keepaliveResponse{Mode: h.mode}
	if h.mode == ModeToken {
		e := exp.UTC()
		resp.TTL, resp.TTLMS, resp.TTLSeconds, resp.ExpiresAt = h.ttl.String(), ms(h.ttl), h.ttl.Seconds(), &e
	}
	writeJSON(w, http.StatusOK, resp)
}

type releaseResponse struct {
	Released bool    `json:"released"`
	HeldFor  string  `json:"held_for"`
	HeldMS   float64 `json:"held_ms"`
}

func (s *Server) handleRelease(w http.ResponseWriter, r *http.Request) {
	token, ok := s.readToken(w, r)
	if !ok {
		return
	}
	h, ok := s.reg.get(token)
	if !ok {
		s.tokenGone(w, token)
		return
	}
	heldFor := s.now().Sub(h.acquired)
	took, err := s.release(h, "released", "released by POST /v1/release")
	switch {
	case !took:
		s.tokenGone(w, token) // released concurrently
	case errors.Is(err, mutex.ErrNotHeld):
		writeError(w, http.StatusGone, errorBody{Error: s.scrub(err.Error()), Kind: "lost"})
	case err != nil:
		writeError(w, http.StatusBadGateway, errorBody{Error: s.scrub(err.Error()), Kind: "unavailable"})
	default:
		writeJSON(w, http.StatusOK, releaseResponse{Released: true, HeldFor: heldFor.Round(time.Millisecond).String(), HeldMS: ms(heldFor)})
	}
}

func (s *Server) handleLocks(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.reg.snapshot(s.now()))
}
