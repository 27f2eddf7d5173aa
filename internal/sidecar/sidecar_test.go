package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/syncbuf"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

const testPassword = "s3cret-Passw0rd"

type testEnv struct {
	t     *testing.T
	mock  *mockapi.Server
	creds Credentials
	resID string
	s     *Server
	ts    *httptest.Server
	logs  *syncbuf.Buffer
}

// newEnv starts an in-process mock CloudShell (user "driver" with testPassword), a sidecar
// using the real cloudshell client, and an httptest server for it.
func newEnv(t *testing.T, opts ...Option) *testEnv {
	t.Helper()
	mock := mockapi.New(mockapi.WithUser("driver", testPassword, "Global"))
	if err := mock.Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := mock.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	host, port := mock.Addr()
	e := &testEnv{t: t, mock: mock, logs: &syncbuf.Buffer{},
		creds: Credentials{Host: host, Port: port, Scheme: "http", User: "driver", Password: testPassword, Domain: "Global"}}
	e.resID = mock.CreateReservation("sidecar-test", "driver")
	base := []Option{
		WithCredentials(e.creds),
		WithMutexOptions(mutex.WithRetry(mutex.Jitter(time.Millisecond, 5*time.Millisecond))),
		WithLease(3 * time.Second),
		WithHeartbeat(50 * time.Millisecond),
		WithSweep(10 * time.Millisecond),
		WithLogger(zerolog.New(e.logs).Level(zerolog.DebugLevel)),
	}
	e.s = New(append(base, opts...)...)
	e.ts = httptest.NewServer(e.s.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		e.ts.Close()
		_ = mock.Close()
		if strings.Contains(e.logs.String(), testPassword) {
			t.Errorf("the password appears in the logs")
		}
	})
	return e
}

// post sends a JSON body and returns the status and decoded body.
func (e *testEnv) post(path string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	resp, err := http.Post(e.ts.URL+path, "application/json", rd)
	if err != nil {
		e.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(raw), testPassword) {
		e.t.Errorf("POST %s: the password appears in the response: %s", path, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("POST %s: %d, body not JSON: %q", path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func (e *testEnv) acquireToken(owner string, extra map[string]any) string {
	e.t.Helper()
	body := map[string]any{"reservation_id": e.resID, "owner": owner, "mode": "token", "timeout": "5s"}
	for k, v := range extra {
		body[k] = v
	}
	code, out := e.post("/v1/acquire", body)
	if code != http.StatusOK {
		e.t.Fatalf("acquire %s: %d %v", owner, code, out)
	}
	tok, _ := out["token"].(string)
	if tok == "" || out["owner"] != owner {
		e.t.Fatalf("acquire %s: bad answer %v", owner, out)
	}
	return tok
}

// stream opens a stream-mode acquisition and returns the response after its first line.
type streamHold struct {
	resp  *http.Response
	lines *bufio.Scanner
	first map[string]any
}

func (e *testEnv) openStream(body map[string]any) (*streamHold, int, map[string]any) {
	e.t.Helper()
	raw, _ := json.Marshal(body)
	tr := &http.Transport{DisableKeepAlives: true}
	e.t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Post(e.ts.URL+"/v1/acquire", "application/json", bytes.NewReader(raw))
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return nil, resp.StatusCode, out
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		e.t.Errorf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		e.t.Fatalf("no first line: %v", sc.Err())
	}
	var first map[string]any
	if err := json.Unmarshal(sc.Bytes(), &first); err != nil {
		e.t.Fatal(err)
	}
	return &streamHold{resp: resp, lines: sc, first: first}, http.StatusOK, first
}

func (h *streamHold) next(t *testing.T) map[string]any {
	t.Helper()
	if !h.lines.Scan() {
		t.Fatalf("stream ended: %v", h.lines.Err())
	}
	var m map[string]any
	if err := json.Unmarshal(h.lines.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// lockOwner returns the owner label recorded on the MUTEX service, or "" if there is none.
func (e *testEnv) lockOwner(name string) string {
	e.t.Helper()
	snap, err := e.mock.Snapshot(e.resID)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, svc := range snap.Services {
		if svc.Alias == name {
			raw := svc.Attributes[mutex.OwnerAttribute]
			for _, f := range strings.Fields(raw) {
				if v, ok := strings.CutPrefix(f, "owner="); ok {
					return v
				}
			}
			return "?" + raw
		}
	}
	return ""
}

func (e *testEnv) waitFor(what string, d time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *testEnv) locks() Locks {
	e.t.Helper()
	resp, err := http.Get(e.ts.URL + "/v1/locks")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var l Locks
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		e.t.Fatal(err)
	}
	return l
}

func TestServeStreamReleasedOnDisconnect(t *testing.T) {
	e := newEnv(t)
	h, code, out := e.openStream(map[string]any{"reservation_id": e.resID, "owner": "driver-x"})
	if code != http.StatusOK {
		t.Fatalf("acquire: %d %v", code, out)
	}
	if h.first["status"] != "acquired" || h.first["owner"] != "driver-x" || h.first["name"] != "MUTEX" ||
		h.first["reservation_id"] != e.resID || h.first["token"] == "" {
		t.Fatalf("first line %v", h.first)
	}
	if got := e.lockOwner("MUTEX"); got != "driver-x" {
		t.Fatalf("lock owner in CloudShell = %q", got)
	}
	if hb := h.next(t); hb["status"] != "held" {
		t.Fatalf("heartbeat line %v", hb)
	}
	if l := e.locks(); len(l.Held) != 1 || l.Held[0].Mode != "stream" || l.Held[0].Owner != "driver-x" {
		t.Fatalf("locks %+v", l)
	}
	closed := time.Now()
	h.resp.Body.Close()
	e.waitFor("the lock to be released", 2*time.Second, func() bool { return e.lockOwner("MUTEX") == "" })
	t.Logf("released %s after the client closed", time.Since(closed))
	e.waitFor("the registry to empty", time.Second, func() bool { return len(e.locks().Held) == 0 })
}

func TestServeStreamLost(t *testing.T) {
	e := newEnv(t, WithLease(600*time.Millisecond))
	h, code, out := e.openStream(map[string]any{"reservation_id": e.resID, "owner": "driver-x"})
	if code != http.StatusOK {
		t.Fatalf("acquire: %d %v", code, out)
	}
	// Someone removes the lock behind the holder's back (as the public snippet may).
	cl, err := cloudshell.Dial(context.Background(), cloudshell.Config{Host: e.creds.Host, Port: e.creds.Port,
		Username: "admin", Password: "admin", Domain: "Global"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.RemoveServicesFromReservation(context.Background(), e.resID, []string{"MUTEX"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		line := h.next(t)
		if line["status"] == "held" {
			continue
		}
		if line["status"] != "lost" || !strings.Contains(fmt.Sprint(line["error"]), "lost") {
			t.Fatalf("final line %v", line)
		}
		if h.lines.Scan() {
			t.Fatalf("stream went on after lost: %s", h.lines.Text())
		}
		h.resp.Body.Close()
		return
	}
	t.Fatal("no lost line")
}

// testClock is a settable clock for the sidecar's token expiry (WithClock).
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestServeTokenKeepaliveExpiryRelease(t *testing.T) {
	clk := &testClock{now: time.Now()}
	e := newEnv(t, WithClock(clk.Now))
	tok := e.acquireToken("driver-t", map[string]any{"ttl": "1s"})
	if l := e.locks(); len(l.Held) != 1 || l.Held[0].Mode != "token" || l.Held[0].ExpiresAt == nil {
		t.Fatalf("locks %+v", l)
	}
	// Kept alive past several ttls (by the sidecar's clock).
	for i := 0; i < 6; i++ {
		clk.Add(600 * time.Millisecond)
		if code, out := e.post("/v1/keepalive", map[string]any{"token": tok}); code != http.StatusOK || out["ttl"] != "1s" {
			t.Fatalf("keepalive: %d %v", code, out)
		}
	}
	if got := e.lockOwner("MUTEX"); got != "driver-t" {
		t.Fatalf("kept-alive lock owner = %q", got)
	}
	// No keepalive: the sidecar releases it by its own clock.
	clk.Add(1100 * time.Millisecond)
	e.waitFor("expiry", 2*time.Second, func() bool { return e.lockOwner("MUTEX") == "" })
	if code, out := e.post("/v1/keepalive", map[string]any{"token": tok}); code != http.StatusGone || !strings.Contains(fmt.Sprint(out["error"]), "expired") {
		t.Fatalf("keepalive after expiry: %d %v", code, out)
	}

	// Explicit release.
	tok = e.acquireToken("driver-u", nil)
	if code, out := e.post("/v1/release", map[string]any{"token": tok}); code != http.StatusOK || out["released"] != true {
		t.Fatalf("release: %d %v", code, out)
	}
	if got := e.lockOwner("MUTEX"); got != "" {
		t.Fatalf("after release the lock is held by %q", got)
	}
	if code, _ := e.post("/v1/release", map[string]any{"token": tok}); code != http.StatusNotFound {
		t.Fatalf("second release: %d", code)
	}
}

func TestServeWrongTokenReleasesNothing(t *testing.T) {
	e := newEnv(t)
	tok := e.acquireToken("driver-a", nil)
	h, code, _ := e.openStream(map[string]any{"reservation_id": e.resID, "name": "OTHER", "owner": "driver-s"})
	if code != http.StatusOK {
		t.Fatal(code)
	}
	defer h.resp.Body.Close()
	for _, bad := range []string{"nope", tok[:len(tok)-1], strings.ToUpper(tok), tok + "0"} {
		if code, out := e.post("/v1/release", map[string]any{"token": bad}); code != http.StatusNotFound {
			t.Fatalf("release %q: %d %v", bad, code, out)
		}
		if code, _ := e.post("/v1/keepalive", map[string]any{"token": bad}); code != http.StatusNotFound {
			t.Fatalf("keepalive %q: %d", bad, code)
		}
	}
	if a, b := e.lockOwner("MUTEX"), e.lockOwner("OTHER"); a != "driver-a" || b != "driver-s" {
		t.Fatalf("locks after bad tokens: %q %q", a, b)
	}
	if l := e.locks(); len(l.Held) != 2 {
		t.Fatalf("registry %+v", l)
	}
	if code, _ := e.post("/v1/keepalive", map[string]any{"token": tok}); code != http.StatusOK {
		t.Fatalf("keepalive with the right token: %d", code)
	}
	// The stream's own token releases it too, and the stream is told.
	if code, _ := e.post("/v1/release", map[string]any{"token": h.first["token"]}); code != http.StatusOK {
		t.Fatalf("release of a stream hold by its token: %d", code)
	}
	for {
		line := h.next(t)
		if line["status"] == "held" {
			continue
		}
		if line["status"] != "released" {
			t.Fatalf("stream told %v", line)
		}
		break
	}
}

func TestServeBadRequests(t *testing.T) {
	e := newEnv(t)
	tok := e.acquireToken("holder", nil)
	big := `{"reservation_id":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	cases := []struct {
		name, path, body, want string
	}{
		{"garbage", "/v1/acquire", `{not json`, "invalid JSON"},
		{"empty", "/v1/acquire", ``, "empty request body"},
		{"array", "/v1/acquire", `[1,2]`, "invalid JSON"},
		{"trailing", "/v1/acquire", `{"reservation_id":"r"} {}`, "trailing"},
		{"missing reservation", "/v1/acquire", `{"name":"MUTEX"}`, "reservation_id is required"},
		{"blank reservation", "/v1/acquire", `{"reservation_id":"  "}`, "reservation_id is required"},
		{"unknown mode", "/v1/acquire", `{"reservation_id":"r","mode":"flock"}`, "unknown mode"},
		{"negative timeout", "/v1/acquire", `{"reservation_id":"r","timeout":-1}`, "timeout -1 is out of range: it must be between 0s"},
		{"negative timeout string", "/v1/acquire", `{"reservation_id":"r","timeout":"-5s"}`, "must be between 0s (a single attempt) and 24h"},
		{"bad timeout", "/v1/acquire", `{"reservation_id":"r","timeout":"soon"}`, "timeout must be a duration"},
		{"ttl in stream mode", "/v1/acquire", `{"reservation_id":"r","ttl":"5s"}`, "ttl applies only"},
		{"zero ttl", "/v1/acquire", `{"reservation_id":"r","mode":"token","ttl":0}`, "ttl 0 is out of range: it must be between 1s and 24h"},
		{"negative lease", "/v1/acquire", `{"reservation_id":"r","lease":"-1s"}`, "lease must not be negative"},
		{"unknown field", "/v1/acquire", `{"reservation_id":"r","timout":"5s"}`, `unknown field "timout"`},
		{"break name", "/v1/acquire", `{"reservation_id":"r","name":"MUTEX.break.x"}`, ".break."},
		{"too large", "/v1/acquire", big, "larger than"},
		{"foreign host without credentials", "/v1/acquire", `{"reservation_id":"r","cloudshell":{"host":"evil.example"}}`, "required when cloudshell.host"},
		{"bad port", "/v1/acquire", `{"reservation_id":"r","cloudshell":{"port":"http"}}`, "invalid JSON"},
		{"keepalive without token", "/v1/keepalive", `{}`, "token is required"},
		{"release garbage", "/v1/release", `tok`, "invalid JSON"},
		{"release wrong type", "/v1/release", `{"token":5}`, "invalid JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := e.post(c.path, c.body)
			if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(out["error"]), c.want) || out["kind"] != "bad_request" {
				t.Fatalf("%d %v, want 400 mentioning %q", code, out, c.want)
			}
		})
	}
	if got := e.lockOwner("MUTEX"); got != "holder" {
		t.Fatalf("after bad requests the lock is held by %q", got)
	}
	if code, _ := e.post("/v1/keepalive", map[string]any{"token": tok}); code != http.StatusOK {
		t.Fatalf("keepalive: %d", code)
	}
	// Wrong method and unknown paths.
	resp, err := http.Get(e.ts.URL + "/v1/acquire")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /v1/acquire: %d", resp.StatusCode)
	}
	if code, _ := e.post("/v2/acquire", `{}`); code != http.StatusNotFound {
		t.Fatalf("/v2: %d", code)
	}
}

func TestServeTimeoutNamesHolder(t *testing.T) {
	e := newEnv(t)
	e.acquireToken("driver-a", nil)
	start := time.Now()
	code, out := e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "owner": "driver-b", "timeout": 0.2})
	t.Logf("timeout: %v", out)
	if code != http.StatusConflict || out["holder"] != "driver-a" || out["kind"] != "timeout" {
		t.Fatalf("contended acquire: %d %v", code, out)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
		t.Fatalf("waited %s for a 0.2s timeout", d)
	}
	code, out = e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "owner": "driver-c", "timeout": "0s", "mode": "token"})
	if code != http.StatusConflict || out["holder"] != "driver-a" || out["kind"] != "locked" {
		t.Fatalf("try-lock: %d %v", code, out)
	}
	if got := testutil.ToFloat64(e.s.metrics.acquisitions.WithLabelValues(resultTimeout)); got != 2 {
		t.Fatalf("timeout counter %v", got)
	}
}

func TestServeLocksListsHeldAndWaiting(t *testing.T) {
	e := newEnv(t)
	tok := e.acquireToken("first", nil)
	type result struct {
		h    *streamHold
		code int
	}
	done := make(chan result, 1)
	go func() {
		h, code, _ := e.openStream(map[string]any{"reservation_id": e.resID, "owner": "second", "timeout": "10s"})
		done <- result{h, code}
	}()
	e.waitFor("the waiter to be listed", 2*time.Second, func() bool {
		l := e.locks()
		return len(l.Waiting) == 1 && l.Waiting[0].Owner == "second"
	})
	l := e.locks()
	if len(l.Held) != 1 || l.Held[0].Owner != "first" || l.Held[0].ReservationID != e.resID || l.Held[0].Name != "MUTEX" ||
		l.Held[0].HeldFor == "" || l.Waiting[0].WaitingFor == "" || l.Waiting[0].ReservationID != e.resID {
		t.Fatalf("locks %+v", l)
	}
	raw, _ := json.Marshal(l)
	if strings.Contains(string(raw), tok) {
		t.Fatal("/v1/locks shows a token")
	}
	if code, _ := e.post("/v1/release", map[string]any{"token": tok}); code != http.StatusOK {
		t.Fatal(code)
	}
	r := <-done
	if r.code != http.StatusOK {
		t.Fatalf("waiter: %d", r.code)
	}
	defer r.h.resp.Body.Close()
	l = e.locks()
	if len(l.Held) != 1 || l.Held[0].Owner != "second" || len(l.Waiting) != 0 {
		t.Fatalf("locks after hand-over %+v", l)
	}
}

func TestServeMetrics(t *testing.T) {
	e := newEnv(t)
	tok := e.acquireToken("m1", nil)
	// A collision: counted as a CloudShell error of kind collision.
	if code, _ := e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "timeout": 0}); code != http.StatusConflict {
		t.Fatal(code)
	}
	if code, _ := e.post("/v1/release", map[string]any{"token": tok}); code != http.StatusOK {
		t.Fatal(code)
	}
	resp, err := http.Get(e.ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	text := string(body)
	for _, want := range []string{
		`csmutex_acquisitions_total{result="acquired"} 1`,
		`csmutex_acquisitions_total{result="timeout"} 1`,
		`csmutex_acquisitions_total{result="error"} 0`,
		`csmutex_wait_seconds_count 2`,
		`csmutex_hold_seconds_count 1`,
		`csmutex_cloudshell_calls_total{method="AddServiceToReservation",outcome="ok"} 1`,
		`csmutex_cloudshell_calls_total{method="AddServiceToReservation",outcome="error"} 1`,
		`csmutex_cloudshell_calls_total{method="RemoveServicesFromReservation",outcome="ok"} 1`,
		`csmutex_cloudshell_errors_total{kind="collision"} 1`,
		`csmutex_cloudshell_errors_total{kind="permanent"} 0`,
		`csmutex_locks_held 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Log(text)
	}
	if n, err := testutil.GatherAndCount(e.s.metrics.reg, "csmutex_cloudshell_calls_total"); err != nil || n < 3 {
		t.Fatalf("call series %d %v", n, err)
	}
}

func TestServeCloudShellFailures(t *testing.T) {
	e := newEnv(t)
	code, out := e.post("/v1/acquire", map[string]any{"reservation_id": "no-such-reservation", "timeout": "2s"})
	t.Logf("unknown reservation: %v", out)
	if code != http.StatusBadGateway || out["kind"] != "permanent" {
		t.Fatalf("unknown reservation: %d %v", code, out)
	}
	// Wrong credentials given in the request: refused, and neither password is echoed.
	const wrong = "Wr0ng-pass-word"
	code, out = e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "timeout": "2s",
		"cloudshell": map[string]any{"user": "driver", "password": wrong}})
	t.Logf("bad credentials: %v", out)
	if code != http.StatusBadGateway || out["kind"] != "unauthorized" {
		t.Fatalf("bad credentials: %d %v", code, out)
	}
	raw, _ := json.Marshal(out)
	if strings.Contains(string(raw), wrong) || strings.Contains(e.logs.String(), wrong) {
		t.Fatal("a password leaked into a response or the logs")
	}
	// Same endpoint, the request's own (right) credentials, port as a string.
	code, out = e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "mode": "token",
		"cloudshell": map[string]any{"host": e.creds.Host, "port": fmt.Sprint(e.creds.Port), "user": "admin", "password": "admin"}})
	if code != http.StatusOK {
		t.Fatalf("request credentials: %d %v", code, out)
	}
	if got := testutil.ToFloat64(e.s.metrics.acquisitions.WithLabelValues(resultError)); got != 2 {
		t.Fatalf("error counter %v", got)
	}
	if strings.Contains(e.logs.String(), testPassword) {
		t.Fatal("the sidecar's password leaked into the logs")
	}
}

func TestServeOneDialPerCredentials(t *testing.T) {
	var dials atomic.Int32
	var e *testEnv
	slow := func(ctx context.Context, c Credentials) (mutex.API, error) {
		dials.Add(1)
		time.Sleep(100 * time.Millisecond) // let the concurrent first requests pile up
		return CloudShellDialer(zerolog.Nop())(ctx, c)
	}
	e = newEnv(t, WithDial(slow))
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, out := e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "name": fmt.Sprintf("L%d", i), "mode": "token"})
			if code != http.StatusOK {
				t.Errorf("acquire %d: %d %v", i, code, out)
			}
		}()
	}
	wg.Wait()
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials for one credential set", n)
	}
	// A different password is a different client.
	e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "name": "L-admin", "mode": "token",
		"cloudshell": map[string]any{"user": "admin", "password": "admin"}})
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials for two credential sets", n)
	}
	for k := range e.s.clients.entries {
		if strings.Contains(k, testPassword) || strings.Contains(k, "admin|admin") {
			t.Fatalf("cache key holds a secret: %q", k)
		}
	}
}

func TestServeContention(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var events []string
	inside := 0
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, code, out := e.openStream(map[string]any{"reservation_id": e.resID, "owner": fmt.Sprint("w", i), "timeout": "20s"})
			if code != http.StatusOK {
				t.Errorf("acquire: %d %v", code, out)
				return
			}
			mu.Lock()
			inside++
			if inside != 1 {
				t.Errorf("%d holders at once", inside)
			}
			events = append(events, "enter")
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			inside--
			events = append(events, "exit")
			mu.Unlock()
			h.resp.Body.Close()
		}()
	}
	wg.Wait()
	if len(events) != 8 {
		t.Fatalf("events %v", events)
	}
}

func TestServeShutdownReleasesAll(t *testing.T) {
	e := newEnv(t)
	e.acquireToken("tok-holder", map[string]any{"name": "A"})
	h, code, _ := e.openStream(map[string]any{"reservation_id": e.resID, "name": "B", "owner": "stream-holder"})
	if code != http.StatusOK {
		t.Fatal(code)
	}
	defer h.resp.Body.Close()
	waiter := make(chan int, 1)
	go func() {
		code, _ := e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "name": "A", "timeout": "30s"})
		waiter <- code
	}()
	e.waitFor("the waiter", 2*time.Second, func() bool { return len(e.locks().Waiting) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if a, b := e.lockOwner("A"), e.lockOwner("B"); a != "" || b != "" {
		t.Fatalf("after shutdown: A=%q B=%q", a, b)
	}
	if c := <-waiter; c != http.StatusServiceUnavailable {
		t.Fatalf("waiter got %d", c)
	}
	for {
		line := h.next(t)
		if line["status"] == "held" {
			continue
		}
		if line["status"] != "lost" || !strings.Contains(fmt.Sprint(line["error"]), "shutting down") {
			t.Fatalf("stream told %v", line)
		}
		break
	}
	// New requests are refused; nothing is taken.
	if code, _ := e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "name": "C", "mode": "token"}); code != http.StatusServiceUnavailable {
		t.Fatalf("acquire after shutdown: %d", code)
	}
	if e.lockOwner("C") != "" {
		t.Fatal("a lock was taken after shutdown")
	}
}

func TestServeLivez(t *testing.T) {
	e := newEnv(t)
	resp, err := http.Get(e.ts.URL + "/livez")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
}

func TestServeCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:7369": true, "127.0.0.2:0": true, "[::1]:7369": true, "localhost:0": true, "LOCALHOST:1": true,
		"0.0.0.0:7369": false, ":7369": false, "[::]:7369": false, "10.1.2.3:7369": false, "example.com:80": false,
	} {
		err := CheckLoopback(addr, false)
		if (err == nil) != ok {
			t.Errorf("%s: %v", addr, err)
		}
		if err != nil && !strings.Contains(err.Error(), "--allow-remote") {
			t.Errorf("%s: message does not mention --allow-remote: %v", addr, err)
		}
		if err := CheckLoopback(addr, true); err != nil {
			t.Errorf("%s with allowRemote: %v", addr, err)
		}
	}
	if err := CheckLoopback("no-port", true); err == nil {
		t.Error("an address without a port was accepted")
	}
	if _, err := Listen("0.0.0.0:0", false); err == nil {
		t.Error("Listen accepted a non-loopback address")
	}
}

func TestServeUnixSocket(t *testing.T) {
	testenv.SkipWithoutUnixSockets(t)
	dir := testenv.TempDir(t)
	path := filepath.Join(dir, "csmutex.sock")
	ln, err := Listen("unix:"+path, false)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v", fi.Mode())
	}
	if got := ListenerAddr(ln); got != "unix:"+path {
		t.Fatalf("addr %q", got)
	}
	// A live socket is not taken over.
	go func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}(ln)
	if _, err := Listen("unix:"+path, false); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket not removed on close: %v", err)
	}

	// A stale socket (its listener gone without removing it) is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err = Listen("unix:"+path, false)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	ln.Close()

	// A regular file is never replaced.
	if err := os.WriteFile(path, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix:"+path, false); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "data" {
		t.Fatal("the regular file was touched")
	}
}

// serveUnix serves e on a fresh unix socket and returns a client for it.
func serveUnix(t *testing.T, e *testEnv) *http.Client {
	t.Helper()
	path := filepath.Join(testenv.TempDir(t), "s.sock")
	ln, err := Listen("unix:"+path, false)
	if err != nil {
		t.Fatal(err)
	}
	go e.s.Serve(ln)
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
}

func TestServeOverUnixSocket(t *testing.T) {
	testenv.SkipWithoutUnixSockets(t)
	e := newEnv(t)
	c := serveUnix(t, e)
	raw, _ := json.Marshal(map[string]any{"reservation_id": e.resID, "mode": "token"})
	resp, err := c.Post("http://sidecar/v1/acquire", "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 200 || out["owner"] != "sidecar-client@unix" {
		t.Fatalf("%d %v", resp.StatusCode, out)
	}
}

func TestServeDurationParsing(t *testing.T) {
	for in, want := range map[string]time.Duration{
		`300`: 300 * time.Second, `0.5`: 500 * time.Millisecond, `"300"`: 300 * time.Second,
		`"1m30s"`: 90 * time.Second, `"250ms"`: 250 * time.Millisecond, `0`: 0,
	} {
		d, set, err := parseDuration("timeout", json.RawMessage(in))
		if err != nil || !set || d != want {
			t.Errorf("%s: %v %v %v", in, d, set, err)
		}
	}
	for _, in := range []string{`"soon"`, `true`, `{}`, `1e300`, `"1e300"`} {
		if _, _, err := parseDuration("timeout", json.RawMessage(in)); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
	if _, set, err := parseDuration("timeout", json.RawMessage(`null`)); set || err != nil {
		t.Error("null")
	}
}

// The sidecar reads a duration string as the command's flags do (internal/duration): a
// number of seconds is decimal. It used to take "0x1p4" for 16 seconds and "1_0" for 10,
// which --timeout refuses.
func TestServeDurationParsingAgreesWithCommand(t *testing.T) {
	for _, in := range []string{`"0x10"`, `"0x1p4"`, `"1_0"`} {
		d, _, err := parseDuration("timeout", json.RawMessage(in))
		if err == nil || !strings.Contains(err.Error(), `timeout must be a duration such as "30s"`) {
			t.Errorf("%s: %v, %v; want refused as not a duration", in, d, err)
		}
	}
	for _, in := range []string{`"Inf"`, `"NaN"`, `"-inf"`} {
		if d, _, err := parseDuration("timeout", json.RawMessage(in)); err == nil {
			t.Errorf("%s accepted as %v", in, d)
		}
	}
	// Numbers beyond the sidecar's bound, as JSON numbers or strings, are out of range.
	for _, in := range []string{`1e8`, `"1e8"`, `1e400`, `"9999999h"`} {
		if _, _, err := parseDuration("lease", json.RawMessage(in)); err == nil || err.Error() != "lease is out of range" {
			t.Errorf("%s: %v, want out of range", in, err)
		}
	}
}

func TestServeCredentialsNeverPrinted(t *testing.T) {
	c := Credentials{Host: "h", User: "u", Password: testPassword, Token: "tok-" + testPassword}
	for _, s := range []string{c.String(), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		if strings.Contains(s, testPassword) {
			t.Fatalf("printed: %s", s)
		}
	}
	raw, _ := json.Marshal(c)
	if strings.Contains(string(raw), testPassword) {
		t.Fatalf("marshalled: %s", raw)
	}
	if strings.Contains(c.key(), testPassword) {
		t.Fatal("key holds the password")
	}
	if c.key() == (Credentials{Host: "h", User: "u", Password: "other"}).key() {
		t.Fatal("different passwords share a key")
	}
}
