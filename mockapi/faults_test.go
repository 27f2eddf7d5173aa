package mockapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// outcomes runs n identical GetServerDateAndTime calls and reports "ok"/"err" per call.
func outcomes(t *testing.T, h *harness, n int) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < n; i++ {
		if h.call("GetServerDateAndTime", "<GetServerDateAndTime />").success() {
			b.WriteByte('.')
		} else {
			b.WriteByte('E')
		}
	}
	return b.String()
}

func TestErrorRateDeterministic(t *testing.T) {
	run := func(seed int64) string {
		h := newHarness(t, WithSeed(seed))
		h.s.Faults().Set("GetServerDateAndTime", Fault{ErrorRate: 0.5, ErrorCode: 42, ErrorMessage: "injected"})
		return outcomes(t, h, 64)
	}
	a, b, c := run(7), run(7), run(8)
	if a != b {
		t.Fatalf("same seed, different faults:\n%s\n%s", a, b)
	}
	if a == c {
		t.Errorf("different seeds gave identical sequences (possible but unlikely): %s", a)
	}
	if n := strings.Count(a, "E"); n < 16 || n > 48 {
		t.Errorf("rate 0.5 gave %d/64 errors: %s", n, a)
	}

	h := newHarness(t)
	h.s.Faults().Set("GetServerDateAndTime", Fault{ErrorRate: 1, ErrorCode: 42, ErrorMessage: "injected"})
	env := h.fail("GetServerDateAndTime", "<GetServerDateAndTime />", "injected")
	if env.errCode() != "42" {
		t.Errorf("code %s", env.errCode())
	}
	// Default code/message when not configured; state is untouched.
	id := h.s.CreateReservation("r", "")
	h.s.Faults().Set("AddServiceToReservation", Fault{ErrorRate: 1})
	env = h.fail("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M"), "Injected fault")
	if env.errCode() != "100" {
		t.Errorf("default code %s", env.errCode())
	}
	if snap, _ := h.s.Snapshot(id); len(snap.Services) != 0 || len(h.s.History(id)) != 0 {
		t.Error("error fault changed state")
	}
	// Other methods are unaffected; Clear removes faults.
	h.ok("GetReservationDetails", detailsBody(id, true))
	h.s.Faults().Clear()
	h.ok("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M"))
}

func TestWildcardAndPrecedence(t *testing.T) {
	h := newHarness(t)
	h.s.Faults().Set("*", Fault{ErrorRate: 1, ErrorMessage: "everything fails"})
	h.s.Faults().Set("GetServerDateAndTime", Fault{})
	h.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
	h.fail("GetSandboxData", el("GetSandboxData", tx("reservationId", "x")), "everything fails")
	h.fail("Logon", logonBody("admin", "admin", "Global"), "everything fails")
}

func TestLatencyFault(t *testing.T) {
	h := newHarness(t)
	h.s.Faults().Set("GetServerDateAndTime", Fault{Latency: 30 * time.Millisecond, LatencyJitter: 10 * time.Millisecond})
	start := time.Now()
	h.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("latency not applied: %v", d)
	}

	// A cancelled request stops waiting, and nothing is applied.
	id := h.s.CreateReservation("r", "")
	h.s.Faults().Set("AddServiceToReservation", Fault{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.url+apiPrefix+"AddServiceToReservation",
		strings.NewReader(addServiceBody(id, "Mutex Service", "M")))
	req.Header.Set("Authorization", "MachineName=x;Token="+h.token)
	start = time.Now()
	_, err := h.ts.Client().Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	// Were the cancellation ignored, the handler would sleep for an hour and the test
	// server's Close would hang; the state must not change either way.
	if snap, _ := h.s.Snapshot(id); len(snap.Services) != 0 {
		t.Fatal("cancelled call was applied")
	}

	// Latency is outside the lock: a slow call does not block other calls.
	h.s.Faults().Set("GetSandboxData", Fault{Latency: 300 * time.Millisecond})
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.post("GetSandboxData", el("GetSandboxData", tx("reservationId", id)))
	}()
	time.Sleep(10 * time.Millisecond)
	start = time.Now()
	h.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("a delayed call blocked another for %v", d)
	}
	<-done
}

func TestHTTP500Fault(t *testing.T) {
	h := newHarness(t)
	id := h.s.CreateReservation("r", "")
	h.s.Faults().Set("AddServiceToReservation", Fault{HTTP500Rate: 1})
	resp, body, err := h.post("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 500 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "<html") {
		t.Fatalf("HTTP %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if snap, _ := h.s.Snapshot(id); len(snap.Services) != 0 {
		t.Fatal("HTTP 500 fault changed state")
	}
}

func TestDropAfterCommitFault(t *testing.T) {
	h := newHarness(t)
	id := h.s.CreateReservation("r", "")
	h.s.Faults().Set("AddServiceToReservation", Fault{DropAfterCommitRate: 1, Count: 1})
	_, _, err := h.post("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M"))
	if err == nil {
		t.Fatal("want a broken connection")
	}
	snap, _ := h.s.Snapshot(id)
	if len(snap.Services) != 1 || len(h.s.History(id)) != 1 {
		t.Fatalf("drop-after-commit must apply the call: %+v", snap)
	}
	// The naive resend of the reference client now reports a collision.
	h.fail("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M"), "Service with given alias already exists")
}

func TestFailBeforeCommitFault(t *testing.T) {
	h := newHarness(t)
	id := h.s.CreateReservation("r", "")
	h.s.Faults().Set("AddServiceToReservation", Fault{FailBeforeCommitRate: 1})
	if _, _, err := h.post("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M")); err == nil {
		t.Fatal("want a broken connection")
	}
	if snap, _ := h.s.Snapshot(id); len(snap.Services) != 0 || len(h.s.History(id)) != 0 {
		t.Fatal("fail-before-commit applied the call")
	}
}

func TestClientFilterAndCount(t *testing.T) {
	h := newHarness(t)
	h.s.Faults().Set("GetServerDateAndTime", Fault{Client: "victim", ErrorRate: 1, Count: 2})
	other := h.with("bystander:8029", h.token)
	victim := h.with("victim:8029", h.token)
	if got := outcomes(t, other, 3); got != "..." {
		t.Errorf("other client faulted: %s", got)
	}
	if got := outcomes(t, victim, 4); got != "EE.." {
		t.Errorf("victim: %s, want EE..", got)
	}
	entries, _ := h.s.Faults().list()
	if len(entries) != 1 || entries[0].Matched != 2 {
		t.Errorf("list %+v", entries)
	}
	// The full MachineName matches too.
	h.s.Faults().Set("GetServerDateAndTime", Fault{Client: "victim:8029", ErrorRate: 1})
	if got := outcomes(t, victim, 1); got != "E" {
		t.Errorf("full machine name: %s", got)
	}
}

func TestTokenExpiry(t *testing.T) {
	h := newHarness(t)
	h.s.Faults().ExpireTokensAfter(3)
	for i := 0; i < 3; i++ {
		h.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
	}
	for i := 0; i < 2; i++ {
		resp, _, err := h.post("GetServerDateAndTime", "<GetServerDateAndTime />")
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("call %d after expiry: %v %v", 4+i, resp.StatusCode, err)
		}
	}
	// Re-logon gives a fresh budget; turning expiry off does not revive the old token.
	tok := h.ok("Logon", logonBody("admin", "admin", "Global")).info().find("Token").attr("Token")
	h2 := h.with(h.machine, tok)
	h2.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
	h.s.Faults().ExpireTokensAfter(0)
	if resp, _, _ := h.post("GetServerDateAndTime", "<GetServerDateAndTime />"); resp.StatusCode != http.StatusUnauthorized {
		t.Error("expired token revived")
	}
	for i := 0; i < 10; i++ {
		h2.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
	}
}

func TestFaultValidate(t *testing.T) {
	for _, f := range []Fault{{ErrorRate: 1.5}, {HTTP500Rate: -0.1}, {Count: -1}, {Latency: -time.Second}} {
		if f.Validate() == nil {
			t.Errorf("%+v should be invalid", f)
		}
	}
	if (Fault{ErrorRate: 1, Latency: time.Second}).Validate() != nil {
		t.Error("valid fault rejected")
	}
}
