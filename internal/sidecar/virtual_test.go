package sidecar

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/syncbuf"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mutex"
	"github.com/rs/zerolog"
)

// vEnv is a sidecar on virtual time: inside a testing/synctest bubble, its clients reach an
// in-process mock CloudShell (testenv.NewInProcess) and requests are served without a
// listener, so waits of minutes take no real time and no timing depends on the machine.
// Only token mode fits: a stream-mode answer lasts as long as the hold.
type vEnv struct {
	t    *testing.T
	env  *testenv.Env
	s    *Server
	logs *syncbuf.Buffer
}

// virtualSidecar runs f in a bubble with a sidecar whose mutexes keep their default retry
// (2–5 s) and lease, as in production.
func virtualSidecar(t *testing.T, f func(t *testing.T, v *vEnv), opts ...Option) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		env := testenv.NewInProcess(t)
		v := &vEnv{t: t, env: env, logs: &syncbuf.Buffer{}}
		dial := func(ctx context.Context, _ Credentials) (mutex.API, error) {
			return cloudshell.Dial(ctx, env.Config("sidecar"))
		}
		base := []Option{
			WithCredentials(Credentials{Host: env.Host, Port: env.Port, User: "admin", Password: "admin"}),
			WithDial(dial),
			WithLogger(zerolog.New(v.logs)),
		}
		v.s = New(append(base, opts...)...)
		defer func() {
			if err := v.s.Shutdown(context.Background()); err != nil {
				t.Errorf("shutdown: %v", err)
			}
			synctest.Wait()
		}()
		f(t, v)
	})
}

// do serves one request and decodes its JSON answer.
func (v *vEnv) do(method, path string, body any) (int, map[string]any) {
	v.t.Helper()
	var rd *strings.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = strings.NewReader(string(raw))
	} else {
		rd = strings.NewReader("")
	}
	req := httptest.NewRequest(method, path, rd)
	req.Host = "localhost"
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	v.s.Handler().ServeHTTP(rec, req)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		v.t.Fatalf("%s %s: %d, body not JSON: %q", method, path, rec.Code, rec.Body.String())
	}
	return rec.Code, out
}

// acquire asks for a token-mode hold of the reservation's lock.
func (v *vEnv) acquire(owner string, extra map[string]any) (int, map[string]any) {
	v.t.Helper()
	body := map[string]any{"reservation_id": v.env.ReservationID, "owner": owner, "mode": "token", "ttl": "1h"}
	for k, val := range extra {
		body[k] = val
	}
	return v.do("POST", "/v1/acquire", body)
}

func (v *vEnv) mustAcquire(owner string, extra map[string]any) string {
	v.t.Helper()
	code, out := v.acquire(owner, extra)
	if code != http.StatusOK {
		v.t.Fatalf("acquire %s: %d %v", owner, code, out)
	}
	return out["token"].(string)
}

// locks is GET /v1/locks, decoded.
func (v *vEnv) locks() Locks {
	v.t.Helper()
	req := httptest.NewRequest("GET", "/v1/locks", nil)
	req.Host = "localhost"
	rec := httptest.NewRecorder()
	v.s.Handler().ServeHTTP(rec, req)
	var l Locks
	if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
		v.t.Fatal(err)
	}
	return l
}

// num reads a JSON number field.
func num(t *testing.T, m map[string]any, k string) float64 {
	t.Helper()
	f, ok := m[k].(float64)
	if !ok {
		t.Fatalf("%s is %#v, want a number (in %v)", k, m[k], m)
	}
	return f
}
