//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/syncbuf"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mockapi"
)

// serveRun is `csmutex serve` running in-process.
type serveRun struct {
	addr           string
	stdout, stderr *syncbuf.Buffer
	cancel         context.CancelFunc
	done           chan int
}

// startServe runs serveCmd with args until the test ends (or stop), and waits for its
// "listening on" line.
func startServe(t *testing.T, args ...string) *serveRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &serveRun{stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, cancel: cancel, done: make(chan int, 1)}
	go func() { r.done <- serveCmd(ctx, args, r.stdout, r.stderr) }()
	t.Cleanup(func() { r.stop(t) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if line, ok := strings.CutPrefix(r.stdout.String(), "listening on "); ok {
			r.addr = strings.TrimSpace(line)
			return r
		}
		select {
		case code := <-r.done:
			r.done <- code
			t.Fatalf("serve exited %d before listening: %s", code, r.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not print its address: %s", r.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop cancels serve (as SIGINT would) and returns its exit code.
func (r *serveRun) stop(t *testing.T) int {
	t.Helper()
	r.cancel()
	select {
	case code := <-r.done:
		r.done <- code
		return code
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
		return -1
	}
}

func (r *serveRun) client() *http.Client {
	if path, ok := strings.CutPrefix(r.addr, "unix:"); ok {
		return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
	}
	return &http.Client{Transport: &http.Transport{}}
}

func (r *serveRun) url(path string) string {
	if strings.HasPrefix(r.addr, "unix:") {
		return "http://sidecar" + path
	}
	return "http://" + r.addr + path
}

func (r *serveRun) post(t *testing.T, path, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := r.client().Post(r.url(path), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// serveMock is an in-process mock CloudShell whose user "driver" has secretPassword.
func serveMock(t *testing.T) (*mockapi.Server, []string, string) {
	t.Helper()
	s := mockapi.New(mockapi.WithUser("driver", secretPassword, "Global"))
	if _, err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	host, port := s.Addr()
	res := s.CreateReservation("serve-test", "driver")
	t.Setenv("CLOUDSHELL_PASSWORD", secretPassword)
	t.Setenv(testJitterEnv, "1ms,5ms")
	return s, []string{"--host", host, "--port", strconv.Itoa(port), "--user", "driver"}, res
}

func mockHas(t *testing.T, s *mockapi.Server, res, alias string) bool {
	t.Helper()
	snap, err := s.Snapshot(res)
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range snap.Services {
		if svc.Alias == alias {
			return true
		}
	}
	return false
}

func TestServeRefusesNonLoopback(t *testing.T) {
	clearEnv(t)
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:7369", "example.com:7369"} {
		code, stdout, stderr := runMain(t, "serve", "--listen", addr)
		if code != exitUsage || !strings.Contains(stderr, "--allow-remote") || stdout != "" {
			t.Errorf("--listen %s: exit %d, stderr %q", addr, code, stderr)
		}
	}
	// Loopback needs no flag.
	r := startServe(t, "--listen", "127.0.0.1:0")
	if !strings.HasPrefix(r.addr, "127.0.0.1:") || strings.HasSuffix(r.addr, ":0") {
		t.Fatalf("address %q", r.addr)
	}
	if code := r.stop(t); code != exitOK {
		t.Fatalf("exit %d", code)
	}
}

func TestServeUnixSocket0600(t *testing.T) {
	clearEnv(t)
	path := filepath.Join(testenv.TempDir(t), "csmutex.sock")
	r := startServe(t, "--listen", "unix:"+path)
	if r.addr != "unix:"+path {
		t.Fatalf("address %q", r.addr)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v", fi.Mode())
	}
	resp, err := r.client().Get(r.url("/livez"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("livez %q", b)
	}
	// Without --host there is no CloudShell of its own to report on.
	resp, err = r.client().Get(r.url("/healthz"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"status":"ok"`)) || !bytes.Contains(b, []byte(`"configured":false`)) {
		t.Fatalf("healthz %d %s", resp.StatusCode, b)
	}
	// Without --host, a request must name its CloudShell.
	if resp, body := r.post(t, "/v1/acquire", `{"reservation_id":"r"}`); resp.StatusCode != 400 || !bytes.Contains(body, []byte("no CloudShell host")) {
		t.Fatalf("acquire without a CloudShell: %d %s", resp.StatusCode, body)
	}
	if code := r.stop(t); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}

	// A path that is not a socket is never replaced.
	if err := os.WriteFile(path, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runMain(t, "serve", "--listen", "unix:"+path)
	if code != exitUnavailable || !strings.Contains(stderr, "not a socket") {
		t.Fatalf("over a regular file: exit %d %s", code, stderr)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep" {
		t.Fatal("the file was replaced")
	}
}

func TestServeUsageErrors(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{
		{"--heartbeat", "0"}, {"--ttl", "0"}, {"--listen", "nonsense"}, {"extra-arg"}, {"--bogus"},
		{"--host", "h"}, // a host without credentials
	} {
		code, _, stderr := runMain(t, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
		if args[0] == "--listen" {
			code, _, stderr = runMain(t, append([]string{"serve"}, args...)...)
		}
		if code != exitUsage {
			t.Errorf("%v: exit %d %s", args, code, stderr)
		}
	}
	code, stdout, _ := runMain(t, "serve", "--help")
	if code != exitOK || !strings.Contains(stdout, "127.0.0.1:7369") || !strings.Contains(stdout, "--allow-remote") {
		t.Fatalf("help: %d %s", code, stdout)
	}
}

// Shutdown (SIGINT/SIGTERM, here the context) releases every held lock, tells stream
// clients, and exits 0; no secret is ever printed.
func TestServeGracefulShutdownReleasesLocks(t *testing.T) {
	clearEnv(t)
	mock, conn, res := serveMock(t)
	r := startServe(t, append([]string{"--listen", "127.0.0.1:0", "-v", "--heartbeat", "50ms"}, conn...)...)

	resp, body := r.post(t, "/v1/acquire", `{"reservation_id":"`+res+`","name":"TOK","mode":"token","owner":"tok"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("token acquire: %d %s", resp.StatusCode, body)
	}
	stream, err := r.client().Post(r.url("/v1/acquire"), "application/json",
		strings.NewReader(`{"reservation_id":"`+res+`","name":"STREAM","owner":"str"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	lines := bufio.NewScanner(stream.Body)
	if !lines.Scan() || !strings.Contains(lines.Text(), `"acquired"`) {
		t.Fatalf("stream: %d %s", stream.StatusCode, lines.Text())
	}
	// Contended: a timeout names the holder.
	resp, body = r.post(t, "/v1/acquire", `{"reservation_id":"`+res+`","name":"TOK","timeout":"100ms"}`)
	if resp.StatusCode != 409 || !bytes.Contains(body, []byte(`"holder":"tok"`)) {
		t.Fatalf("contended: %d %s", resp.StatusCode, body)
	}
	if !mockHas(t, mock, res, "TOK") || !mockHas(t, mock, res, "STREAM") {
		t.Fatal("locks not taken")
	}

	if code := r.stop(t); code != exitOK {
		t.Fatalf("exit %d: %s", code, r.stderr.String())
	}
	if mockHas(t, mock, res, "TOK") || mockHas(t, mock, res, "STREAM") {
		t.Fatal("locks still held after shutdown")
	}
	var last map[string]any
	for lines.Scan() {
		_ = json.Unmarshal(lines.Bytes(), &last)
	}
	if last["status"] != "lost" {
		t.Fatalf("stream's last line %v", last)
	}
	if _, err := http.Get(r.url("/healthz")); err == nil {
		t.Fatal("still accepting connections after shutdown")
	}
	out := r.stdout.String() + r.stderr.String()
	if strings.Contains(out, secretPassword) {
		t.Fatalf("the password was printed:\n%s", out)
	}
	if !strings.Contains(r.stderr.String(), "lock released") {
		t.Fatalf("no release logged:\n%s", r.stderr.String())
	}
}

// The real binary, stopped by a real SIGTERM, releases what it holds.
func TestServeSIGTERMReleasesLocks(t *testing.T) {
	m := startMock(t)
	p := m.start(t, "serve", "--listen", "127.0.0.1:0")
	var addr string
	deadline := time.Now().Add(20 * time.Second)
	for addr == "" {
		if v, ok := strings.CutPrefix(p.stdout.String(), "listening on "); ok {
			addr = strings.TrimSpace(v)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no address: %s", p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Post("http://"+addr+"/v1/acquire", "application/json",
		strings.NewReader(`{"reservation_id":"`+m.res+`","mode":"token","ttl":"1h"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !m.hasService(t, "MUTEX") {
		t.Fatalf("acquire: %d", resp.StatusCode)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
	if m.hasService(t, "MUTEX") {
		t.Fatal("lock still held after SIGTERM")
	}
}
