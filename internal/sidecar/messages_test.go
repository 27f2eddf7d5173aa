package sidecar

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// The sandbox's end user sees a waiting driver: with "sandbox_messages", the sidecar's
// waiting request writes to the reservation's Output window (the mock's message log),
// naming the holder, at most once per interval, and says when the lock came.
func TestSandboxMessagesInTheOutputWindow(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		tok := v.mustAcquire("driver-x", nil)
		time.AfterFunc(75*time.Second, func() {
			if code, out := v.do("POST", "/v1/release", map[string]any{"token": tok}); code != http.StatusOK {
				t.Errorf("release: %d %v", code, out)
			}
		})
		code, out := v.acquire("driver-y", map[string]any{"timeout": "5m", "sandbox_messages": true})
		if code != http.StatusOK {
			t.Fatalf("waiter: %d %v", code, out)
		}
		if w := num(t, out, "waited_ms"); w < 75000 || w > 81000 {
			t.Errorf("waited_ms %v, want about 75000", w)
		}
		// The acquired message is written beside the hold, not before it is handed over
		// (mutex): let it land.
		synctest.Wait()
		msgs := v.env.Server.Messages(v.env.ReservationID)
		// 75 s at most once a minute: at 0 and about 60 s, then the acquisition.
		if len(msgs) != 3 {
			t.Fatalf("%d Output-window messages, want 2 waiting + 1 acquired: %q", len(msgs), msgs)
		}
		for _, m := range msgs[:2] {
			if !strings.HasPrefix(m, `Waiting for the reservation lock "MUTEX" held by driver-x`) {
				t.Errorf("message %q does not name the holder", m)
			}
		}
		if !strings.HasPrefix(msgs[2], `Lock "MUTEX" acquired after 1m1`) {
			t.Errorf("last message %q, want the acquisition after about 75s", msgs[2])
		}
	})
}

// Without the parameter (or with false) the Output window stays the end user's alone, and an
// interval sets the rate.
func TestSandboxMessagesOptIn(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value any // nil: absent
		// messages in a 45 s wait that times out: one at the first try, then one at the
		// first try at least an interval after the last (tries are 2–5 s apart); no
		// acquisition line after a timeout
		min, max int
	}{
		{"absent", nil, 0, 0},
		{"false", false, 0, 0},
		{"zero", 0, 0, 0},
		{"every 20s", "20s", 2, 3},
		{"seconds", 15, 3, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			virtualSidecar(t, func(t *testing.T, v *vEnv) {
				v.mustAcquire("driver-x", nil)
				extra := map[string]any{"timeout": "45s"}
				if tc.value != nil {
					extra["sandbox_messages"] = tc.value
				}
				if code, out := v.acquire("driver-y", extra); code != http.StatusConflict {
					t.Fatalf("waiter: %d %v", code, out)
				}
				if msgs := v.env.Server.Messages(v.env.ReservationID); len(msgs) < tc.min || len(msgs) > tc.max {
					t.Fatalf("%d messages, want %d to %d: %q", len(msgs), tc.min, tc.max, msgs)
				}
			})
		})
	}
}

func TestSandboxMessagesBadValues(t *testing.T) {
	for raw, want := range map[string]string{
		`"1s"`:    `sandbox_messages "1s" is out of range: it must be between 5s (or false, 0: off) and 24h`,
		`4.9`:     `sandbox_messages 4.9 is out of range`,
		`"-30s"`:  `out of range`,
		`"48h"`:   `out of range`,
		`"yes"`:   `sandbox_messages must be true, false or an interval such as "30s"`,
		`{}`:      `sandbox_messages must be true, false or an interval`,
		`"true"`:  `sandbox_messages must be true, false or an interval`,
		`1e300`:   `out of range`,
		`[true]`:  `sandbox_messages must be true, false or an interval`,
		`"1e3ms"`: `sandbox_messages must be true, false or an interval`,
	} {
		p, err := parseSandboxMessages(json.RawMessage(raw))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("sandbox_messages %s: %v (%v), want an error containing %q", raw, p, err, want)
		}
	}
	for raw, want := range map[string]time.Duration{
		``: 0, `null`: 0, `false`: 0, `0`: 0, `"0s"`: 0, `true`: DefaultSandboxMessageEvery,
		`"5s"`: 5 * time.Second, `90`: 90 * time.Second, `"24h"`: 24 * time.Hour,
	} {
		if got, err := parseSandboxMessages(json.RawMessage(raw)); err != nil || got != want {
			t.Errorf("sandbox_messages %s: %v, %v; want %v", raw, got, err, want)
		}
	}
}
