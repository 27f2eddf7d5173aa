//go:build unix

package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/syncbuf"
	"github.com/csmutex/csmutex/internal/testenv"
)

// announceWriter collects stdout and closes listening once "listening on ADDR\n" is
// written, so that a test waits for that event rather than for time to pass.
type announceWriter struct {
	syncbuf.Buffer
	once      sync.Once
	listening chan struct{}
}

func (w *announceWriter) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if s := w.Buffer.String(); strings.Contains(s, "listening on ") && strings.HasSuffix(s, "\n") {
		w.once.Do(func() { close(w.listening) })
	}
	return n, err
}

// tryServe runs serveCmd with args until it either announces its address (it returns the
// running sidecar; the test stops it) or exits (it returns nil and the exit code).
func tryServe(t *testing.T, args ...string) (r *serveRun, code int, stderr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &announceWriter{listening: make(chan struct{})}
	r = &serveRun{stdout: &out.Buffer, stderr: &syncbuf.Buffer{}, cancel: cancel, done: make(chan int, 1)}
	go func() { r.done <- serveCmd(ctx, args, out, r.stderr) }()
	select {
	case <-out.listening:
		t.Cleanup(func() { r.stop(t) })
		r.addr = strings.TrimSpace(strings.TrimPrefix(out.String(), "listening on "))
		return r, 0, ""
	case code := <-r.done:
		cancel()
		if strings.Contains(out.String()+r.stderr.String(), secretPassword) {
			t.Errorf("the password was printed: %s %s", out.String(), r.stderr.String())
		}
		return nil, code, r.stderr.String()
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatalf("serve neither listened nor exited: %s", r.stderr.String())
		return nil, -1, ""
	}
}

func (r *serveRun) do(t *testing.T, method, path, body string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, r.url(path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := r.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// With credentials, serve logs on at start: a wrong password or an unreachable server is
// exit 77 or 69 with the reason, not a sidecar that looks healthy and fails every request.
func TestServeLogsOnAtStart(t *testing.T) {
	clearEnv(t)
	mock, conn, _ := serveMock(t)
	host, port := mock.Addr()
	addr := net.JoinHostPort(host, strconv.Itoa(port))

	t.Setenv("CLOUDSHELL_PASSWORD", secretPassword+"-wrong")
	r, code, stderr := tryServe(t, append([]string{"--listen", "127.0.0.1:0"}, conn...)...)
	if r != nil {
		t.Fatal("serve started listening with a wrong password")
	}
	if code != exitNoPerm || !strings.Contains(stderr, "refused to log on user \"driver\"") || !strings.Contains(stderr, addr) {
		t.Fatalf("wrong password: exit %d, stderr %s", code, stderr)
	}

	t.Setenv("CLOUDSHELL_PASSWORD", secretPassword)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	r, code, stderr = tryServe(t, "--listen", "127.0.0.1:0", "--host", "127.0.0.1", "--port", strconv.Itoa(closed), "--user", "driver")
	if r != nil {
		t.Fatal("serve started listening with an unreachable CloudShell")
	}
	if code != exitUnavailable || !strings.Contains(stderr, "cannot reach CloudShell at 127.0.0.1:"+strconv.Itoa(closed)) {
		t.Fatalf("unreachable: exit %d, stderr %s", code, stderr)
	}

	// The right password: serving, logged on, and /healthz says so, then says when
	// CloudShell goes away.
	r, code, stderr = tryServe(t, append([]string{"--listen", "127.0.0.1:0"}, conn...)...)
	if r == nil {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	status, body := r.do(t, "GET", "/healthz", "", nil)
	var h struct {
		Status     string
		CloudShell struct {
			Configured, Reachable bool
			LoggedOn              bool `json:"logged_on"`
		}
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil || status != 200 || h.Status != "ok" ||
		!h.CloudShell.Configured || !h.CloudShell.Reachable || !h.CloudShell.LoggedOn {
		t.Fatalf("healthz: %d %s", status, body)
	}
	_ = mock.Close()
	status, body = r.do(t, "GET", "/healthz", "", nil)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"status":"unavailable"`) || !strings.Contains(body, `"reachable":false`) {
		t.Fatalf("healthz with CloudShell down: %d %s", status, body)
	}
	if status, body := r.do(t, "GET", "/livez", "", nil); status != 200 || body != "ok" {
		t.Fatalf("livez: %d %q", status, body)
	}
	if code := r.stop(t); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(r.stdout.String()+r.stderr.String(), secretPassword) {
		t.Fatal("the password was printed")
	}
}

// The web-page defences, through the command: on by default, and --allow-origin and
// --allow-host let chosen origins and names through.
func TestServeRefusesWebPages(t *testing.T) {
	clearEnv(t)
	type check struct {
		name, method, path string
		header             map[string]string
		status             int
		want               string
	}
	run := func(r *serveRun, checks []check) {
		t.Helper()
		for _, c := range checks {
			status, body := r.do(t, c.method, c.path, `{"reservation_id":"r","mode":"token"}`, c.header)
			if status != c.status || !strings.Contains(body, c.want) {
				t.Errorf("%s: %d %s, want %d mentioning %q", c.name, status, body, c.status, c.want)
			}
		}
	}

	r, code, stderr := tryServe(t, "--listen", "127.0.0.1:0")
	if r == nil {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	_, port, _ := net.SplitHostPort(r.addr)
	run(r, []check{
		{"the report's curl", "POST", "/v1/acquire", map[string]string{"Host": "evil.example.com", "Origin": "http://evil.example.com", "Content-Type": "text/plain"}, 403, `Host \"evil.example.com\"`},
		{"rebound name", "POST", "/v1/acquire", map[string]string{"Host": "evil.example.com:" + port}, 403, "--allow-host"},
		{"healthz, rebound", "GET", "/healthz", map[string]string{"Host": "evil.example.com:" + port}, 403, "not the sidecar's address"},
		{"metrics, rebound", "GET", "/metrics", map[string]string{"Host": "evil.example.com:" + port}, 403, "not the sidecar's address"},
		{"foreign origin", "POST", "/v1/acquire", map[string]string{"Origin": "http://evil.example.com"}, 403, "--allow-origin"},
		{"text/plain", "POST", "/v1/acquire", map[string]string{"Content-Type": "text/plain"}, 415, "Content-Type must be application/json"},
		{"preflight", "OPTIONS", "/v1/acquire", map[string]string{"Origin": "http://tool.example:8080", "Access-Control-Request-Method": "POST"}, 403, "--allow-origin"},
		{"own address", "GET", "/v1/locks", map[string]string{"Host": "localhost:" + port}, 200, "held"},
	})
	if !strings.Contains(r.stderr.String(), "request refused") {
		t.Errorf("refusals are not logged: %s", r.stderr.String())
	}
	r.stop(t)

	r, code, stderr = tryServe(t, "--listen", "127.0.0.1:0", "--allow-origin", "http://tool.example:8080",
		"--allow-host", "sidecar.example", "--allow-host", "localhost:9000")
	if r == nil {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	_, port, _ = net.SplitHostPort(r.addr)
	run(r, []check{
		{"allowed origin", "GET", "/v1/locks", map[string]string{"Origin": "http://tool.example:8080"}, 200, "held"},
		{"allowed origin, preflight", "OPTIONS", "/v1/acquire", map[string]string{"Origin": "http://tool.example:8080", "Access-Control-Request-Method": "POST"}, 405, "CORS"},
		{"allowed origin, text/plain", "POST", "/v1/acquire", map[string]string{"Origin": "http://tool.example:8080", "Content-Type": "text/plain"}, 415, "application/json"},
		{"other origin", "GET", "/v1/locks", map[string]string{"Origin": "http://tool.example:8081"}, 403, "--allow-origin"},
		{"allowed host", "GET", "/v1/locks", map[string]string{"Host": "sidecar.example:" + port}, 200, "held"},
		{"allowed host:port", "GET", "/v1/locks", map[string]string{"Host": "localhost:9000"}, 200, "held"},
		{"other host", "GET", "/v1/locks", map[string]string{"Host": "other.example:" + port}, 403, "--allow-host"},
	})
}

func TestServeSecurityFlagErrors(t *testing.T) {
	clearEnv(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--allow-origin", "null"}, `--allow-origin: origin "null" cannot be allowed`},
		{[]string{"--allow-origin", "*"}, `--allow-origin: origin "*" cannot be allowed`},
		{[]string{"--allow-origin", "evil.example"}, "not of the form scheme://host[:port]"},
		{[]string{"--allow-host", "a/b"}, "--allow-host: host \"a/b\""},
		{[]string{"--ttl", "1ns"}, "--ttl: ttl 1ns is out of range: it must be between 1s and 24h"},
		{[]string{"--ttl", "25h"}, "between 1s and 24h"},
	} {
		r, code, stderr := tryServe(t, append([]string{"--listen", "127.0.0.1:0"}, c.args...)...)
		if r != nil {
			t.Errorf("%v: serve started", c.args)
			continue
		}
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d %s, want 64 mentioning %q", c.args, code, stderr, c.want)
		}
	}
}

// --auth-token-file: created 0600 with a random token, required from clients, read again
// on restart, never printed.
func TestServeAuthTokenFile(t *testing.T) {
	clearEnv(t)
	dir := testenv.TempDir(t)
	path := filepath.Join(dir, "csmutex.token")
	r, code, stderr := tryServe(t, "--listen", "127.0.0.1:0", "--auth-token-file", path, "-v")
	if r == nil {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	raw, _ := os.ReadFile(path)
	tok := strings.TrimSpace(string(raw))
	if len(tok) != 64 {
		t.Fatalf("token of %d characters", len(tok))
	}
	var bodies []string
	expect := func(what string, status int, header map[string]string, path string) {
		t.Helper()
		method := "GET"
		if path == "/v1/acquire" {
			method = "POST"
		}
		got, body := r.do(t, method, path, `{"reservation_id":"r"}`, header)
		bodies = append(bodies, body)
		if got != status {
			t.Errorf("%s: %d %s, want %d", what, got, body, status)
		}
	}
	expect("no token", 401, nil, "/v1/locks")
	expect("wrong token", 401, map[string]string{"Authorization": "Bearer " + tok[:63]}, "/v1/locks")
	expect("acquire without token", 401, nil, "/v1/acquire")
	expect("healthz without token", 401, nil, "/healthz")
	expect("livez without token", 200, nil, "/livez")
	expect("the token", 200, map[string]string{"Authorization": "Bearer " + tok}, "/v1/locks")
	// Through the token, the request reaches the API (no CloudShell configured: 400).
	expect("acquire with the token", 400, map[string]string{"Authorization": "Bearer " + tok}, "/v1/acquire")
	if code := r.stop(t); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	out := r.stdout.String() + r.stderr.String()
	if strings.Contains(out, tok) || strings.Contains(out, tok[:16]) {
		t.Fatalf("the token was printed:\n%s", out)
	}
	for _, b := range bodies {
		if strings.Contains(b, tok[:16]) {
			t.Fatalf("an answer holds the token: %s", b)
		}
	}
	if !strings.Contains(out, path) {
		t.Errorf("the log does not say where the token is:\n%s", out)
	}

	// Restarted, it reads the same token.
	r, code, stderr = tryServe(t, "--listen", "127.0.0.1:0", "--auth-token-file", path)
	if r == nil {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	expect("the token after a restart", 200, map[string]string{"Authorization": "Bearer " + tok}, "/v1/locks")
	r.stop(t)

	// A token file others can read is refused.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	r, code, stderr = tryServe(t, "--listen", "127.0.0.1:0", "--auth-token-file", path)
	if r != nil || code != exitUsage || !strings.Contains(stderr, "chmod 600") || strings.Contains(stderr, tok) {
		t.Fatalf("a readable token file: exit %d %s", code, stderr)
	}
}
