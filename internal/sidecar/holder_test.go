package sidecar

import (
	"context"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// heldSince parses a held_since field.
func heldSince(t *testing.T, m map[string]any) time.Time {
	t.Helper()
	s, ok := m["held_since"].(string)
	if !ok {
		t.Fatalf("held_since is %#v, want an RFC 3339 time (in %v)", m["held_since"], m)
	}
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("held_since %q: %v", s, err)
	}
	return ts
}

// A request that did not get the lock learns who holds it, where, since when, and how long
// it waited over how many tries, as fields rather than text to parse: for the timeout and
// for the single try.
func TestNotObtainedNamesTheHolder(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		host, _ := os.Hostname()
		acquiredAt := time.Now()
		v.mustAcquire("driver-x", nil)
		time.Sleep(10 * time.Second)

		code, out := v.acquire("driver-y", map[string]any{"timeout": "20s"})
		if code != http.StatusConflict || out["kind"] != "timeout" {
			t.Fatalf("contended acquire: %d %v", code, out)
		}
		check := func(what string, out map[string]any) {
			t.Helper()
			if out["holder"] != "driver-x" || out["holder_host"] != host || num(t, out, "holder_pid") != float64(os.Getpid()) {
				t.Errorf("%s: holder fields %v", what, out)
			}
			if tok, _ := out["holder_token"].(string); len(tok) < 8 || !strings.Contains(out["error"].(string), tok) {
				t.Errorf("%s: holder_token %q is not the holder's token in %q", what, tok, out["error"])
			}
			if d := heldSince(t, out).Sub(acquiredAt); d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("%s: held_since %v, want the holder's acquisition at %v", what, out["held_since"], acquiredAt.UTC())
			}
		}
		check("timeout", out)
		if w := num(t, out, "waited_ms"); w < 20000 || w > 21000 {
			t.Errorf("waited_ms %v for a 20s timeout", w)
		}
		if out["waited"] != "20s" {
			t.Errorf("waited %v, want the same duration as a string", out["waited"])
		}
		// 20 s of pauses: the lone waiter heads the waiting room, so it polls at a quarter
		// of the 2–5 s interval while the hold is young, backing off to the whole of it.
		if n := num(t, out, "tries"); n < 4 || n > 40 {
			t.Errorf("tries %v in 20 s", n)
		}

		code, out = v.acquire("driver-z", map[string]any{"timeout": 0})
		if code != http.StatusConflict || out["kind"] != "locked" {
			t.Fatalf("single try: %d %v", code, out)
		}
		check("single try", out)
		if num(t, out, "tries") != 1 || num(t, out, "waited_ms") > 1000 {
			t.Errorf("single try: tries %v, waited_ms %v", out["tries"], out["waited_ms"])
		}
		if !strings.Contains(v.logs.String(), `"waited_ms":`) || strings.Contains(v.logs.String(), `"waited":`) {
			t.Errorf("logs carry durations under other keys than *_ms:\n%s", v.logs)
		}
	})
}

// A holder that is not csmutex (the public Python snippet) has only a label: the host, pid,
// token and held_since fields are left out, not sent empty or as year 1.
func TestNotObtainedLegacyHolder(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		cl := v.env.Client("snippet")
		if err := cl.AddServiceToReservation(context.Background(), v.env.ReservationID, mutex.DefaultServiceModel, "MUTEX",
			[]cloudshell.AttributeNameValue{{Name: mutex.OwnerAttribute, Value: "Thread-7"}}); err != nil {
			t.Fatal(err)
		}
		code, out := v.acquire("driver-y", map[string]any{"timeout": 0})
		if code != http.StatusConflict || out["holder"] != `legacy holder "Thread-7"` {
			t.Fatalf("legacy holder: %d %v", code, out)
		}
		for _, k := range []string{"holder_host", "holder_pid", "holder_token", "held_since"} {
			if _, ok := out[k]; ok {
				t.Errorf("%s present for a legacy holder: %v", k, out)
			}
		}
	})
}

// GET /v1/locks says, for a held lock, since when and by which host and process the owner
// record says it is held, and for a waiting request whom it waits for.
func TestLocksShowHolders(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		host, _ := os.Hostname()
		acquiredAt := time.Now()
		tok := v.mustAcquire("driver-x", nil)
		waiterDone := make(chan struct{})
		go func() {
			defer close(waiterDone)
			if code, out := v.acquire("driver-y", map[string]any{"timeout": "1m"}); code != http.StatusOK {
				t.Errorf("waiter: %d %v", code, out)
			}
		}()
		time.Sleep(30 * time.Second)
		l := v.locks()
		if len(l.Held) != 1 || len(l.Waiting) != 1 {
			t.Fatalf("locks %+v", l)
		}
		h, w := l.Held[0], l.Waiting[0]
		if h.HeldSince == nil || !h.HeldSince.Equal(acquiredAt.Truncate(time.Millisecond)) || h.HolderHost != host ||
			h.HolderPID != os.Getpid() || h.HeldMS != 30000 || h.HeldSeconds != 30 {
			t.Errorf("held entry %+v", h)
		}
		if w.Owner != "driver-y" || w.Holder != "driver-x" || w.HolderHost != host || w.HolderPID != os.Getpid() ||
			w.HeldSince == nil || !w.HeldSince.Equal(*h.HeldSince) || w.Tries < 5 || w.WaitingMS != 30000 {
			t.Errorf("waiting entry %+v", w)
		}
		if code, out := v.do("POST", "/v1/release", map[string]any{"token": tok}); code != http.StatusOK || num(t, out, "held_ms") != 30000 {
			t.Fatalf("release: %d %v", code, out)
		}
		<-waiterDone
	})
}

// A shape's single try names the first record in its way as the exclusive lock names its
// holder, read by mutex's parser: a csmutex holder by its fields, a legacy one by its record
// verbatim (as "holders" lists it), without host, pid or token.
func TestShapeBusyNamesTheHolder(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		host, _ := os.Hostname()
		v.mustAcquire("driver-x", map[string]any{"shape": "semaphore", "name": "SW", "slots": 1})
		code, out := v.acquire("driver-y", map[string]any{"shape": "semaphore", "name": "SW", "slots": 1, "timeout": 0})
		if code != http.StatusConflict || out["kind"] != "locked" || out["holder"] != "driver-x" || out["holder_host"] != host ||
			num(t, out, "holder_pid") != float64(os.Getpid()) {
			t.Fatalf("full semaphore: %d %v", code, out)
		}
		holders := strs(out["holders"])
		if tok, _ := out["holder_token"].(string); len(tok) < 8 || len(holders) != 1 || !strings.Contains(holders[0], "token="+tok) {
			t.Errorf("holder_token %v is not the token of the record in holders %v", out["holder_token"], holders)
		}

		cl := v.env.Client("snippet")
		if err := cl.AddServiceToReservation(context.Background(), v.env.ReservationID, mutex.DefaultServiceModel, "POOL-A",
			[]cloudshell.AttributeNameValue{{Name: mutex.OwnerAttribute, Value: "Thread-7"}}); err != nil {
			t.Fatal(err)
		}
		code, out = v.acquire("driver-y", map[string]any{"shape": "pool", "members": []string{"POOL-A"}, "timeout": 0})
		if code != http.StatusConflict || out["holder"] != "Thread-7" || !slices.Equal(strs(out["holders"]), []string{"Thread-7"}) {
			t.Fatalf("legacy pool member: %d %v", code, out)
		}
		for _, k := range []string{"holder_host", "holder_pid", "holder_token"} {
			if _, ok := out[k]; ok {
				t.Errorf("%s present for a legacy holder: %v", k, out)
			}
		}
	})
}
