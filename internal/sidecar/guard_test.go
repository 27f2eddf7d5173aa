package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/csmutex/csmutex/internal/testenv"
)

// rawReq describes one request for send.
type rawReq struct {
	method, path, body string
	host               string            // Host header; "" = the server's own address
	header             map[string]string // e.g. Content-Type (POSTs default to application/json)
	noContentType      bool
}

type rawResp struct {
	status int
	header http.Header
	body   string
	json   map[string]any
}

// send makes a request to the sidecar's test server and checks what no answer may hold.
func (e *testEnv) send(q rawReq) rawResp {
	e.t.Helper()
	return sendTo(e.t, http.DefaultClient, e.ts.URL, q)
}

func sendTo(t *testing.T, c *http.Client, base string, q rawReq) rawResp {
	t.Helper()
	req, err := http.NewRequest(q.method, base+q.path, strings.NewReader(q.body))
	if err != nil {
		t.Fatal(err)
	}
	if q.method == http.MethodPost && !q.noContentType {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range q.header {
		req.Header.Set(k, v)
	}
	if q.host != "" {
		req.Host = q.host
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", q.method, q.path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := rawResp{status: resp.StatusCode, header: resp.Header, body: string(raw)}
	_ = json.Unmarshal(raw, &out.json)
	for k := range resp.Header {
		if strings.HasPrefix(strings.ToLower(k), "access-control-") {
			t.Errorf("%s %s: the answer has CORS header %s: %v", q.method, q.path, k, resp.Header[k])
		}
	}
	return out
}

func (e *testEnv) port() string {
	_, p, _ := net.SplitHostPort(strings.TrimPrefix(e.ts.URL, "http://"))
	return p
}

func (e *testEnv) acquireBody(owner string) string {
	b, _ := json.Marshal(map[string]any{"reservation_id": e.resID, "owner": owner, "mode": "token", "timeout": 0})
	return string(b)
}

func wantRefused(t *testing.T, what string, r rawResp, status int, kind, mention string) {
	t.Helper()
	if r.status != status || r.json["kind"] != kind || !strings.Contains(fmt.Sprint(r.json["error"]), mention) {
		t.Errorf("%s: %d %s, want %d %s mentioning %q", what, r.status, r.body, status, kind, mention)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
}

// The report's reproduction: a foreign Host, a foreign Origin and text/plain, as curl or a
// rebound web page sends them, took and held the lock (200 acquired).
func TestGuardReportedRequestRefused(t *testing.T) {
	e := newEnv(t)
	r := e.send(rawReq{method: "POST", path: "/v1/acquire", body: e.acquireBody("evil"), host: "evil.example.com",
		header: map[string]string{"Origin": "http://evil.example.com", "Content-Type": "text/plain"}})
	wantRefused(t, "evil request", r, http.StatusForbidden, "forbidden", `Host "evil.example.com"`)
	if got := e.lockOwner("MUTEX"); got != "" {
		t.Fatalf("the lock was taken by %q", got)
	}
}

// DNS rebinding: the page's own name, now resolving to 127.0.0.1, arrives as the Host.
func TestGuardHost(t *testing.T) {
	e := newEnv(t)
	port := e.port()
	other := strconv.Itoa(mustAtoi(t, port) + 1)
	for _, host := range []string{"evil.example.com", "evil.example.com:" + port, "127.0.0.1:" + other,
		"localhost:" + other, "127.0.0.1.nip.io:" + port, "localhost.:" + port, "0.0.0.0:" + port, "[::2]:" + port, "127.0.0.1"} {
		r := e.send(rawReq{method: "POST", path: "/v1/acquire", body: e.acquireBody("rebound"), host: host})
		wantRefused(t, "POST Host "+host, r, http.StatusForbidden, "forbidden", strconv.Quote(host))
		for _, path := range []string{"/healthz", "/metrics", "/v1/locks", "/livez"} {
			r := e.send(rawReq{method: "GET", path: path, host: host})
			wantRefused(t, "GET "+path+" Host "+host, r, http.StatusForbidden, "forbidden", "is not the sidecar's address")
		}
	}
	if got := e.lockOwner("MUTEX"); got != "" {
		t.Fatalf("the lock was taken by %q", got)
	}
	// The sidecar's own address, by any of its loopback names.
	for i, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LocalHost:" + port, "[::1]:" + port} {
		if r := e.send(rawReq{method: "GET", path: "/v1/locks", host: host}); r.status != http.StatusOK {
			t.Errorf("GET Host %s: %d %s", host, r.status, r.body)
		}
		owner := "own-" + strconv.Itoa(i)
		r := e.send(rawReq{method: "POST", path: "/v1/acquire", body: e.acquireBody(owner), host: host})
		if r.status != http.StatusOK {
			t.Fatalf("POST Host %s: %d %s", host, r.status, r.body)
		}
		if r := e.send(rawReq{method: "POST", path: "/v1/release", body: `{"token":"` + fmt.Sprint(r.json["token"]) + `"}`, host: host}); r.status != http.StatusOK {
			t.Fatalf("release: %d %s", r.status, r.body)
		}
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The Host rules for other listening addresses (--allow-remote) and WithAllowedHosts, on
// the handler directly with the connection's local address set as net/http sets it.
func TestGuardHostRules(t *testing.T) {
	s := New(WithAllowedHosts("Sidecar.Corp", "localhost:9000", "[fd00::1]"))
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	local := &net.TCPAddr{IP: net.ParseIP("192.0.2.10"), Port: 7369}
	cases := map[string]bool{
		"192.0.2.10:7369": true, // the listening IP itself
		"127.0.0.1:7369":  true, "localhost:7369": true, "[::1]:7369": true,
		"sidecar.corp:7369": true, "SIDECAR.CORP:7369": true, // an allowed name, at the listening port
		"localhost:9000":  true, // an allowed name:port (an ssh tunnel)
		"[fd00::1]:7369":  true,
		"192.0.2.11:7369": false, "192.0.2.10:7370": false, "sidecar.corp:80": false, "sidecar.corp": false,
		"localhost:9001": false, "evil.example:7369": false, "": false, "[fd00::2]:7369": false,
	}
	for host, ok := range cases {
		r := httptest.NewRequest("GET", "/v1/locks", nil)
		r.Host = host
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		if (w.Code == http.StatusOK) != ok {
			t.Errorf("Host %q: %d %s", host, w.Code, w.Body)
		}
	}
	// Port 80: browsers leave the port out.
	r := httptest.NewRequest("GET", "/v1/locks", nil)
	r.Host = "localhost"
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}))
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Errorf("Host localhost on port 80: %d %s", w.Code, w.Body)
	}
	for _, bad := range []string{"", "a/b", "x@y", "h:0", "h:99999", "h:port"} {
		if _, err := NormalizeHost(bad); err == nil {
			t.Errorf("NormalizeHost(%q) accepted", bad)
		}
	}
}

// A unix socket cannot be reached by a browser: any Host is fine there.
func TestGuardHostIgnoredOnUnixSocket(t *testing.T) {
	testenv.SkipWithoutUnixSockets(t)
	e := newEnv(t)
	c := serveUnix(t, e)
	r := sendTo(t, c, "http://sidecar", rawReq{method: "POST", path: "/v1/acquire", body: e.acquireBody("unix"), host: "anything.example"})
	if r.status != http.StatusOK || e.lockOwner("MUTEX") != "unix" {
		t.Fatalf("over a unix socket: %d %s", r.status, r.body)
	}
	// Origin and Content-Type still apply.
	r = sendTo(t, c, "http://sidecar", rawReq{method: "GET", path: "/v1/locks", header: map[string]string{"Origin": "http://evil.example"}})
	wantRefused(t, "Origin over a unix socket", r, http.StatusForbidden, "forbidden", "Origin")
}

func TestGuardOrigin(t *testing.T) {
	e := newEnv(t, WithAllowedOrigins("http://Tool.Example:8080", "https://ops.example:443"))
	for _, origin := range []string{"http://evil.example.com", "null", "http://127.0.0.1:1", "http://tool.example:8081",
		"https://tool.example:8080", "http://localhost:" + e.port(), ""} {
		r := e.send(rawReq{method: "POST", path: "/v1/acquire", body: e.acquireBody("web"), header: map[string]string{"Origin": origin}})
		wantRefused(t, "POST Origin "+origin, r, http.StatusForbidden, "forbidden", "Origin "+strconv.Quote(origin))
		r = e.send(rawReq{method: "GET", path: "/v1/locks", header: map[string]string{"Origin": origin}})
		wantRefused(t, "GET Origin "+origin, r, http.StatusForbidden, "forbidden", "--allow-origin")
	}
	if got := e.lockOwner("MUTEX"); got != "" {
		t.Fatalf("the lock was taken by %q", got)
	}
	// Explicitly allowed origins, as browsers write them (default port left out).
	for _, origin := range []string{"http://tool.example:8080", "https://ops.example"} {
		if r := e.send(rawReq{method: "GET", path: "/v1/locks", header: map[string]string{"Origin": origin}}); r.status != http.StatusOK {
			t.Errorf("GET Origin %s: %d %s", origin, r.status, r.body)
		}
	}
	r := e.send(rawReq{method: "POST", path: "/v1/acquire", body: e.acquireBody("tool"), header: map[string]string{"Origin": "http://tool.example:8080"}})
	if r.status != http.StatusOK || e.lockOwner("MUTEX") != "tool" {
		t.Fatalf("allowed origin: %d %s", r.status, r.body)
	}
	for _, bad := range []string{"null", "*", "", "tool.example", "http://tool.example/path", "http://user@tool.example", "http://t.example?q"} {
		if _, err := NormalizeOrigin(bad); err == nil {
			t.Errorf("NormalizeOrigin(%q) accepted", bad)
		}
	}
}

// A preflight is never granted, whoever asks; no Access-Control-Allow-* header is ever
// sent (send checks every answer).
func TestGuardPreflightNeverGranted(t *testing.T) {
	e := newEnv(t, WithAllowedOrigins("http://tool.example"))
	pre := map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
	with := func(origin string) map[string]string {
		h := map[string]string{"Origin": origin}
		for k, v := range pre {
			h[k] = v
		}
		return h
	}
	r := e.send(rawReq{method: "OPTIONS", path: "/v1/acquire", header: with("http://evil.example")})
	wantRefused(t, "preflight from a foreign origin", r, http.StatusForbidden, "forbidden", "Origin")
	r = e.send(rawReq{method: "OPTIONS", path: "/v1/acquire", header: with("http://tool.example")})
	wantRefused(t, "preflight from an allowed origin", r, http.StatusMethodNotAllowed, "bad_request", "CORS")
	r = e.send(rawReq{method: "OPTIONS", path: "/v1/acquire"})
	wantRefused(t, "OPTIONS without Origin", r, http.StatusMethodNotAllowed, "bad_request", "OPTIONS is not supported")
}

func TestGuardContentType(t *testing.T) {
	e := newEnv(t)
	for _, ct := range []string{"text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
		"multipart/form-data; boundary=x", "application/jsonp", "application/json-patch+json", "json"} {
		r := e.send(rawReq{method: "POST", path: "/v1/acquire", body: e.acquireBody("form"), header: map[string]string{"Content-Type": ct}})
		wantRefused(t, "Content-Type "+ct, r, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json (got "+strconv.Quote(ct)+")")
		if r.header.Get("Accept-Post") != "application/json" {
			t.Errorf("Content-Type %s: Accept-Post %q", ct, r.header.Get("Accept-Post"))
		}
	}
	r := e.send(rawReq{method: "POST", path: "/v1/acquire", body: e.acquireBody("none"), noContentType: true})
	wantRefused(t, "no Content-Type", r, http.StatusUnsupportedMediaType, "unsupported_media_type", "(got none)")
	for _, path := range []string{"/v1/keepalive", "/v1/release"} {
		r := e.send(rawReq{method: "POST", path: path, body: `{"token":"x"}`, header: map[string]string{"Content-Type": "text/plain"}})
		wantRefused(t, path, r, http.StatusUnsupportedMediaType, "unsupported_media_type", "application/json")
	}
	if got := e.lockOwner("MUTEX"); got != "" {
		t.Fatalf("the lock was taken by %q", got)
	}
	r = e.send(rawReq{method: "POST", path: "/v1/acquire", body: e.acquireBody("json"), header: map[string]string{"Content-Type": "Application/JSON; charset=utf-8"}})
	if r.status != http.StatusOK || e.lockOwner("MUTEX") != "json" {
		t.Fatalf("JSON with a charset: %d %s", r.status, r.body)
	}
}

const bearerSecret = "b34r3r-T0ken-very-secret-0123456789"

// The bearer token: required everywhere but /livez, compared exactly, never logged or
// echoed.
func TestGuardBearerToken(t *testing.T) {
	e := newEnv(t, WithBearerToken(bearerSecret))
	var bodies []string
	check := func(what string, r rawResp, status int) {
		t.Helper()
		bodies = append(bodies, r.body)
		if r.status != status {
			t.Errorf("%s: %d %s, want %d", what, r.status, r.body, status)
		}
		if status == http.StatusUnauthorized {
			wantRefused(t, what, r, status, "unauthenticated", "bearer token")
			if r.header.Get("WWW-Authenticate") != `Bearer realm="csmutex"` {
				t.Errorf("%s: WWW-Authenticate %q", what, r.header.Get("WWW-Authenticate"))
			}
		}
	}
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer " + bearerSecret[:len(bearerSecret)-1],
		"Bearer " + bearerSecret + "x", "Basic " + bearerSecret, bearerSecret, "Bearer " + strings.ToUpper(bearerSecret)} {
		h := map[string]string{}
		if auth != "" {
			h["Authorization"] = auth
		}
		check("acquire with Authorization "+strconv.Quote(auth), e.send(rawReq{method: "POST", path: "/v1/acquire", body: e.acquireBody("nobody"), header: h}), http.StatusUnauthorized)
		for _, path := range []string{"/healthz", "/metrics", "/v1/locks"} {
			check("GET "+path, e.send(rawReq{method: "GET", path: path, header: h}), http.StatusUnauthorized)
		}
	}
	if got := e.lockOwner("MUTEX"); got != "" {
		t.Fatalf("the lock was taken by %q without the token", got)
	}
	check("livez without a token", e.send(rawReq{method: "GET", path: "/livez"}), http.StatusOK)

	good := map[string]string{"Authorization": "Bearer " + bearerSecret}
	r := e.send(rawReq{method: "POST", path: "/v1/acquire", body: e.acquireBody("holder"), header: good})
	check("acquire with the token", r, http.StatusOK)
	tok := fmt.Sprint(r.json["token"])
	check("keepalive with the token, scheme in lower case", e.send(rawReq{method: "POST", path: "/v1/keepalive",
		body: `{"token":"` + tok + `"}`, header: map[string]string{"Authorization": "bearer  " + bearerSecret + " "}}), http.StatusOK)
	check("release without the token", e.send(rawReq{method: "POST", path: "/v1/release", body: `{"token":"` + tok + `"}`}), http.StatusUnauthorized)
	check("GET /healthz with the token", e.send(rawReq{method: "GET", path: "/healthz", header: good}), http.StatusOK)
	check("release with the token", e.send(rawReq{method: "POST", path: "/v1/release", body: `{"token":"` + tok + `"}`, header: good}), http.StatusOK)

	for _, b := range bodies {
		if strings.Contains(b, bearerSecret[:12]) {
			t.Errorf("an answer holds the bearer token: %s", b)
		}
	}
	if logs := e.logs.String(); strings.Contains(logs, bearerSecret[:12]) {
		t.Errorf("the bearer token appears in the logs:\n%s", logs)
	} else if !strings.Contains(logs, "request refused") {
		t.Errorf("refusals are not logged:\n%s", logs)
	}
}

func TestAuthTokenFile(t *testing.T) {
	dir := testenv.TempDir(t)
	path := filepath.Join(dir, "token")
	tok, created, err := LoadOrCreateTokenFile(path)
	if err != nil || !created || len(tok) != 64 {
		t.Fatalf("create: %q %v %v", tok, created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	again, created, err := LoadOrCreateTokenFile(path)
	if err != nil || created || again != tok {
		t.Fatalf("read back: %v %v (same token: %v)", created, err, again == tok)
	}
	other, _, err := LoadOrCreateTokenFile(filepath.Join(dir, "other"))
	if err != nil || other == tok {
		t.Fatalf("a second file: %v (same token: %v)", err, other == tok)
	}

	// A file written by hand.
	hand := filepath.Join(dir, "hand")
	if err := os.WriteFile(hand, []byte("  "+bearerSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _, err := LoadOrCreateTokenFile(hand); err != nil || got != bearerSecret {
		t.Fatalf("hand-written file: %v (right token: %v)", err, got == bearerSecret)
	}

	bad := func(name, content string, mode os.FileMode, want string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		_, _, err := LoadOrCreateTokenFile(p)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error mentioning %q", name, err, want)
		}
		if err != nil && strings.TrimSpace(content) != "" && strings.Contains(err.Error(), strings.TrimSpace(content)) {
			t.Errorf("%s: the error quotes the token: %v", name, err)
		}
	}
	if runtime.GOOS != "windows" {
		bad("readable", bearerSecret, 0o644, "chmod 600")
		bad("group", bearerSecret, 0o620, "chmod 600")
	}
	bad("empty", "\n", 0o600, "is empty")
	bad("short", "abc123", 0o600, "shorter than 16")
	bad("two", bearerSecret+" "+bearerSecret, 0o600, "without blanks")
	if runtime.GOOS != "windows" {
		link := filepath.Join(dir, "link")
		if err := os.Symlink(hand, link); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreateTokenFile(link); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("symlink: %v", err)
		}
	}
	if _, _, err := LoadOrCreateTokenFile(filepath.Join(dir, "no-such-dir", "token")); err == nil {
		t.Error("a token file in a missing directory was accepted")
	}
}
