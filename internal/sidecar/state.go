package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/csmutex/csmutex/internal/logon"
	"github.com/csmutex/csmutex/internal/redact"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

// Atomic sandbox state through the sidecar (locks.State): one request takes the lock, reads,
// modifies and writes one value in the reservation's sandbox data, and releases the lock.

// shapeState is the shape label of state requests in GET /v1/locks and the metrics.
const shapeState = "state"

// stateCommon is what every state request names: the reservation, the lock that guards the
// state (default MUTEX: the reservation's own lock), and how to take it.
type stateCommon struct {
	ReservationID string          `json:"reservation_id"`
	Name          string          `json:"name"`
	Owner         string          `json:"owner"`
	Key           string          `json:"key"`
	Timeout       json.RawMessage `json:"timeout"`
	Lease         json.RawMessage `json:"lease"`
	// Priority: as an acquire request's (parsePriority, limits.go).
	Priority   json.RawMessage `json:"priority"`
	CloudShell *cloudshellJSON `json:"cloudshell"`
}

// stateAddRequest is the body of POST /v1/state/add.
type stateAddRequest struct {
	stateCommon
	Delta *int64 `json:"delta"`
}

// stateAllocateRequest is the body of POST /v1/state/allocate.
type stateAllocateRequest struct {
	stateCommon
	// Range is "lo-hi" (non-negative) or {"lo": lo, "hi": hi}, inclusive.
	Range json.RawMessage `json:"range"`
}

// stateAnswer is the answer of a state request.
type stateAnswer struct {
	ReservationID string  `json:"reservation_id"`
	Name          string  `json:"name"`
	Key           string  `json:"key"`
	Value         int64   `json:"value"`
	Range         string  `json:"range,omitempty"`
	Waited        string  `json:"waited"`
	WaitedMS      float64 `json:"waited_ms"`
}

// parseState validates what every state request shares, as parseAcquire does for an
// acquisition. A state request always waits (timeout above zero): the read-modify-write
// needs the lock.
func (s *Server) parseState(r *http.Request, c stateCommon) (acquireParams, error) {
	p := acquireParams{resID: c.ReservationID, name: c.Name, owner: c.Owner, mode: ModeToken,
		timeout: DefaultTimeout, lease: s.lease, shape: shapeParams{kind: shapeState}}
	switch {
	case strings.TrimSpace(p.resID) == "":
		return p, errors.New("reservation_id is required")
	case len(p.resID) > maxLabelLen || strings.ContainsAny(p.resID, "\x00\r\n"):
		return p, errors.New("reservation_id is malformed")
	}
	if p.name == "" {
		p.name = mutex.DefaultName
	}
	if err := mutex.ValidateName(p.name); err != nil {
		return p, err
	}
	if c.Key == "" {
		return p, fieldErrorf("key", "key is required")
	}
	if !validStateKey(c.Key) {
		return p, fieldErrorf("key", "key must be 1 to %d letters, digits, '.', '_' or '-'", locks.MaxStateKeyLength)
	}
	if len(p.owner) > maxLabelLen || strings.ContainsAny(p.owner, "\x00\r\n") {
		return p, errors.New("owner is malformed")
	}
	if p.owner == "" {
		p.owner = defaultOwner(r)
	}
	timeout, set, err := parseDurationIn("timeout", c.Timeout, time.Millisecond, MaxTimeout, "")
	switch {
	case err != nil:
		return p, err
	case set:
		p.timeout = timeout
	}
	if err := parseLease(c.Lease, &p.lease); err != nil {
		return p, err
	}
	if p.priority, err = parsePriority(c.Priority); err != nil {
		return p, err
	}
	if p.creds, err = resolveCredentials(s.defaults, c.CloudShell); err != nil {
		return p, err
	}
	return p, nil
}

// validStateKey is locks' rule for keys, checked here so that the answer names the field.
func validStateKey(k string) bool {
	if len(k) > locks.MaxStateKeyLength {
		return false
	}
	for _, c := range k {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// parseRange reads "lo-hi" or {"lo": lo, "hi": hi}.
func parseRange(raw json.RawMessage) (locks.Range, error) {
	const want = `range must be "lo-hi" (such as "100-199") or {"lo": 100, "hi": 199}`
	var r locks.Range
	if len(raw) == 0 || string(raw) == "null" {
		return r, fieldErrorf("range", "range is required: %s", strings.TrimPrefix(want, "range "))
	}
	var str string
	var obj struct {
		Lo *int64 `json:"lo"`
		Hi *int64 `json:"hi"`
	}
	switch {
	case json.Unmarshal(raw, &str) == nil:
		lo, hi, ok := strings.Cut(strings.TrimSpace(str), "-")
		a, err1 := strconv.ParseInt(strings.TrimSpace(lo), 10, 64)
		b, err2 := strconv.ParseInt(strings.TrimSpace(hi), 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return r, fieldErrorf("range", "%s", want)
		}
		r = locks.Range{Lo: a, Hi: b}
	case json.Unmarshal(raw, &obj) == nil && obj.Lo != nil && obj.Hi != nil:
		r = locks.Range{Lo: *obj.Lo, Hi: *obj.Hi}
	default:
		return r, fieldErrorf("range", "%s", want)
	}
	if r.Lo > r.Hi || uint64(r.Hi-r.Lo) >= locks.MaxRangeSize {
		return r, fieldErrorf("range", "range %s is out of range: lo must not exceed hi, and it spans at most %d values", r, locks.MaxRangeSize)
	}
	return r, nil
}

func (s *Server) handleStateAdd(w http.ResponseWriter, r *http.Request) {
	var req stateAddRequest
	if err := readJSON(w, r, &req); err != nil {
		s.invalid(w, err)
		return
	}
	p, err := s.parseState(r, req.stateCommon)
	if err == nil && req.Delta == nil {
		err = fieldErrorf("delta", "delta is required: an integer to add (negative subtracts)")
	}
	if err != nil {
		s.invalid(w, err)
		return
	}
	s.stateCall(w, r, p, req.Key, "", func(ctx context.Context, st *locks.State) (int64, error) {
		return st.Add(ctx, req.Key, *req.Delta)
	})
}

func (s *Server) handleStateAllocate(w http.ResponseWriter, r *http.Request) {
	var req stateAllocateRequest
	if err := readJSON(w, r, &req); err != nil {
		s.invalid(w, err)
		return
	}
	p, err := s.parseState(r, req.stateCommon)
	var rg locks.Range
	if err == nil {
		rg, err = parseRange(req.Range)
	}
	if err != nil {
		s.invalid(w, err)
		return
	}
	s.stateCall(w, r, p, req.Key, rg.String(), func(ctx context.Context, st *locks.State) (int64, error) {
		return st.Allocate(ctx, req.Key, rg)
	})
}

// stateCall runs one read-modify-write under the lock p names, and answers with its value.
func (s *Server) stateCall(w http.ResponseWriter, r *http.Request, p acquireParams, key, rng string,
	call func(context.Context, *locks.State) (int64, error)) {
	if s.base.Err() != nil {
		writeError(w, http.StatusServiceUnavailable, errorBody{Error: "the sidecar is shutting down", Kind: "shutting_down"})
		return
	}
	secrets := append(p.creds.secrets(), s.defaults.secrets()...)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.base, cancel)
	defer stop()
	log := s.log.With().Str("reservation", p.resID).Str("lock", p.name).Str("key", key).Str("owner", p.owner).Logger()

	start := time.Now()
	value, err := s.runState(ctx, p, call)
	waited := time.Since(start)
	s.metrics.usage.waited(p.name, shapeState, waited, err == nil)
	if err != nil {
		status, body, result := s.classify(err, r)
		body.Error = redact.String(body.Error, secrets...)
		s.metrics.acquisitions.WithLabelValues(result).Inc()
		if result == resultCanceled && r.Context().Err() != nil {
			return
		}
		log.Info().Int("status", status).Str("kind", body.Kind).Str("error", body.Error).Msg("state not changed")
		writeError(w, status, body)
		return
	}
	s.metrics.acquisitions.WithLabelValues(resultAcquired).Inc()
	log.Info().Int64("value", value).Dur("waited_ms", waited).Msg("state changed")
	writeJSON(w, http.StatusOK, stateAnswer{ReservationID: p.resID, Name: p.name, Key: key, Value: value, Range: rng,
		Waited: waited.Round(time.Millisecond).String(), WaitedMS: ms(waited)})
}

func (s *Server) runState(ctx context.Context, p acquireParams, call func(context.Context, *locks.State) (int64, error)) (int64, error) {
	api, doneWithClient, err := s.clients.get(ctx, p.creds)
	if err != nil {
		return 0, clientError(p, err)
	}
	defer doneWithClient()
	wt := &waiting{resID: p.resID, name: p.name, owner: p.owner, shape: p.shape, priority: p.priority, since: s.now()}
	done := s.reg.wait(wt)
	defer done()
	return call(ctx, locks.NewState(api, p.resID, p.name, s.shapeOptions(p, wt)...))
}

// clientError is a failure to get a CloudShell client for p, as lock reports it.
func clientError(p acquireParams, err error) error {
	return &logon.Error{Addr: p.creds.addr(), As: logon.Who(p.creds.User, p.creds.Token), Err: err}
}
