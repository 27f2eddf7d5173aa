package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func (e *testEnv) healthz() (int, Health, string) {
	e.t.Helper()
	r := e.send(rawReq{method: "GET", path: "/healthz"})
	if strings.Contains(r.body, testPassword) {
		e.t.Errorf("/healthz shows the password: %s", r.body)
	}
	var h Health
	if err := json.Unmarshal([]byte(r.body), &h); err != nil || h.CloudShell == nil {
		e.t.Fatalf("/healthz: %d %q is not the JSON health report (%v)", r.status, r.body, err)
	}
	return r.status, h, r.body
}

// /healthz reports CloudShell: reachable or not, logged on or not.
func TestHealthzReportsCloudShell(t *testing.T) {
	e := newEnv(t)
	code, h, body := e.healthz()
	if code != http.StatusOK || h.Status != "ok" || !h.CloudShell.Configured || h.CloudShell.Reachable == nil ||
		!*h.CloudShell.Reachable || h.CloudShell.LoggedOn || !strings.Contains(h.CloudShell.Server, e.creds.Host) {
		t.Fatalf("before any logon: %d %s", code, body)
	}
	if err := e.s.LogOn(context.Background()); err != nil {
		t.Fatal(err)
	}
	code, h, body = e.healthz()
	if code != http.StatusOK || !h.CloudShell.LoggedOn || h.CloudShell.LastLogonAt == nil || h.CloudShell.LastLogonError != "" {
		t.Fatalf("after logging on: %d %s", code, body)
	}
	// The first request reuses the logon.
	tok := e.acquireToken("reuser", nil)
	if n := e.s.clients.dialCount(); n != 1 {
		t.Fatalf("%d logons, want 1", n)
	}
	if code, out := e.post("/v1/release", map[string]any{"token": tok}); code != http.StatusOK {
		t.Fatalf("release: %d %v", code, out)
	}

	// CloudShell goes away.
	_ = e.mock.Close()
	code, h, body = e.healthz()
	if code != http.StatusServiceUnavailable || h.Status != "unavailable" || h.CloudShell.Reachable == nil ||
		*h.CloudShell.Reachable || h.CloudShell.ReachError == "" {
		t.Fatalf("CloudShell down: %d %s", code, body)
	}
	// The trivial liveness check does not care.
	if r := e.send(rawReq{method: "GET", path: "/livez"}); r.status != http.StatusOK || r.body != "ok" {
		t.Fatalf("/livez: %d %q", r.status, r.body)
	}
}

// A wrong password: LogOn says so (without the password), and /healthz keeps reporting it.
func TestHealthzLastLogonError(t *testing.T) {
	e := newEnv(t)
	bad := e.creds
	bad.Password = testPassword + "-wrong"
	s := New(WithCredentials(bad), WithLogger(e.s.log))
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	err := s.LogOn(context.Background())
	if err == nil {
		t.Fatal("LogOn with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), testPassword) {
		t.Fatalf("the error shows the password: %v", err)
	}
	if errors.Unwrap(err) == nil {
		t.Errorf("the error hides the client's error (the serve command classifies it): %v", err)
	}

	srv := startHandler(t, s)
	r := sendTo(t, http.DefaultClient, srv, rawReq{method: "GET", path: "/healthz"})
	var h Health
	_ = json.Unmarshal([]byte(r.body), &h)
	if r.status != http.StatusServiceUnavailable || h.Status != "unavailable" || h.CloudShell == nil || h.CloudShell.LoggedOn ||
		h.CloudShell.LastLogonError == "" || h.CloudShell.LastLogonErrorAt == nil || !*h.CloudShell.Reachable {
		t.Fatalf("after a refused logon: %d %s", r.status, r.body)
	}
	if strings.Contains(r.body, testPassword) {
		t.Fatalf("/healthz shows the password: %s", r.body)
	}
}

// A request naming its own CloudShell and failing says nothing about the sidecar's.
func TestHealthzIgnoresRequestCredentials(t *testing.T) {
	e := newEnv(t)
	code, out := e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "mode": "token",
		"cloudshell": map[string]any{"user": "driver", "password": "not-the-password"}})
	if code != http.StatusBadGateway {
		t.Fatalf("acquire with wrong request credentials: %d %v", code, out)
	}
	code, h, body := e.healthz()
	if code != http.StatusOK || h.CloudShell.LastLogonError != "" {
		t.Fatalf("%d %s", code, body)
	}
}

// Without a CloudShell of its own, the sidecar is healthy and says so.
func TestHealthzWithoutCredentials(t *testing.T) {
	s := New()
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	if err := s.LogOn(context.Background()); err != nil {
		t.Fatalf("LogOn without credentials: %v", err)
	}
	r := sendTo(t, http.DefaultClient, startHandler(t, s), rawReq{method: "GET", path: "/healthz"})
	if r.status != http.StatusOK || !strings.Contains(r.body, `"configured":false`) || !strings.Contains(r.body, `"status":"ok"`) {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

// startHandler serves s on a loopback test server and returns its URL.
func startHandler(t *testing.T, s *Server) string {
	t.Helper()
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}
