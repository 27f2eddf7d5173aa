package sidecar

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// "ttl":"1ns" was accepted and the lock let go at once; "timeout":"9999999h" was refused
// as "not a duration". Both now name the accepted range.
func TestAcquireDurationRanges(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		field string
		value any
		want  string
	}{
		{"ttl", "1ns", `ttl "1ns" is out of range: it must be between 1s and 24h`},
		{"ttl", "999ms", "between 1s and 24h"},
		{"ttl", 0.5, "ttl 0.5 is out of range"},
		{"ttl", "-1s", "between 1s and 24h"},
		{"ttl", "24h0m1s", "between 1s and 24h"},
		{"ttl", "9999999h", `ttl "9999999h" is out of range: it must be between 1s and 24h`},
		{"ttl", 1e300, "between 1s and 24h"},
		{"timeout", "9999999h", `timeout "9999999h" is out of range: it must be between 0s (a single attempt) and 24h`},
		{"timeout", "25h", "between 0s (a single attempt) and 24h"},
		{"timeout", 86401, "timeout 86401 is out of range"},
		{"timeout", "1e300", "between 0s (a single attempt) and 24h"},
		{"timeout", -0.001, "between 0s (a single attempt) and 24h"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s=%v", c.field, c.value), func(t *testing.T) {
			body := map[string]any{"reservation_id": e.resID, "owner": "ranged", "mode": "token", c.field: c.value}
			code, out := e.post("/v1/acquire", body)
			if code == http.StatusOK {
				// Accepted: let it go, so that the next case does not wait behind it.
				e.post("/v1/release", map[string]any{"token": out["token"]})
			}
			if code != http.StatusBadRequest || out["kind"] != "bad_request" || !strings.Contains(fmt.Sprint(out["error"]), c.want) {
				t.Fatalf("%d %v, want 400 mentioning %q", code, out, c.want)
			}
			if got := e.lockOwner("MUTEX"); got != "" {
				t.Fatalf("the lock was taken by %q", got)
			}
		})
	}
	// Malformed values are still reported as such, not as out of range.
	code, out := e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "mode": "token", "ttl": "soon"})
	if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(out["error"]), `ttl must be a duration such as "30s"`) {
		t.Fatalf("ttl soon: %d %v", code, out)
	}

	// The bounds themselves are accepted, and a 1s ttl is held, not let go at once.
	tok := e.acquireToken("edge", map[string]any{"ttl": "1s", "timeout": "24h"})
	if got := e.lockOwner("MUTEX"); got != "edge" {
		t.Fatalf("held by %q", got)
	}
	if code, out := e.post("/v1/release", map[string]any{"token": tok}); code != http.StatusOK {
		t.Fatalf("release: %d %v", code, out)
	}
	tok = e.acquireToken("edge", map[string]any{"ttl": "24h", "timeout": 0})
	if code, out := e.post("/v1/release", map[string]any{"token": tok}); code != http.StatusOK {
		t.Fatalf("release: %d %v", code, out)
	}
}

func TestCheckTTL(t *testing.T) {
	for d, ok := range map[time.Duration]bool{
		time.Nanosecond: false, 999 * time.Millisecond: false, time.Second: true, DefaultTTL: true,
		24 * time.Hour: true, 24*time.Hour + 1: false, 0: false, -time.Second: false,
	} {
		err := CheckTTL(d)
		if (err == nil) != ok {
			t.Errorf("CheckTTL(%s): %v", d, err)
		}
		if err != nil && !strings.Contains(err.Error(), "between 1s and 24h") {
			t.Errorf("CheckTTL(%s): %v does not name the range", d, err)
		}
	}
	if got := fmtDuration(90 * time.Second); got != "90s" {
		t.Errorf("fmtDuration(90s) = %q", got)
	}
}
