package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/csmutex/csmutex/mutex"
	"github.com/rs/zerolog"
)

var testHolder = mutex.Owner{Name: "driver-x", Host: "exec-7", PID: 4242, Token: "t1", Lease: time.Minute}

// Off a terminal, a long wait logs one line per waitLogEvery of waiting (by the wait's own
// clock, the events' Waited: virtual here), with the holder's fields, not one per attempt.
func TestWaitStatusLogsPeriodically(t *testing.T) {
	var buf bytes.Buffer
	s := newWaitStatus(&buf, false, func() int { return 80 })
	s.setLogger(zerolog.New(&buf))
	now := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	h := testHolder
	h.Since = now.Add(-80 * time.Second)
	for i := 0; i <= 95; i += 3 { // an attempt every 3 s for 95 s
		s.observe(mutex.WaitEvent{Name: "MUTEX", Holder: h, HolderFor: time.Duration(i) * time.Second,
			Waited: time.Duration(i) * time.Second, Tries: i/3 + 1})
	}
	lines := jsonLinesOf(t, buf.String())
	if len(lines) != 3 {
		t.Fatalf("want 3 lines (at 30s, 60s, 90s), got %d:\n%s", len(lines), buf.String())
	}
	for i, l := range lines {
		w := l["waited_ms"].(float64)
		if w < float64((i+1)*30000) || w >= float64((i+1)*30000+3000) {
			t.Errorf("line %d logged at waited_ms=%v", i, w)
		}
		if l["holder"] != "driver-x" || l["holder_host"] != "exec-7" || l["holder_pid"] != float64(4242) || l["held_ms"] != float64(80000) {
			t.Errorf("line %d: %v", i, l)
		}
		if msg := l["message"].(string); !strings.Contains(msg, "held by driver-x (host exec-7, pid 4242) for 1m20s") {
			t.Errorf("line %d message: %q", i, msg)
		}
	}
}

// On a terminal the status line is rewritten in place; a log line written meanwhile erases
// it and redraws it below; done erases it for good.
func TestWaitStatusLiveLine(t *testing.T) {
	var buf bytes.Buffer
	s := newWaitStatus(&buf, true, func() int { return 200 })
	now := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	s.observe(mutex.WaitEvent{Name: "MUTEX", Holder: testHolder, HolderFor: 40 * time.Second, Waited: 41 * time.Second, Tries: 9})
	first := clearLine + `waiting 41s (9 tries) for lock "MUTEX": held by driver-x (host exec-7, pid 4242), seen for at least 40s; lease 1m0s`
	if buf.String() != first {
		t.Fatalf("first line:\n%q\nwant\n%q", buf.String(), first)
	}
	buf.Reset()
	s.Writer().Write([]byte("a log line\n"))
	if want := clearLine + "a log line\n" + first[len(clearLine):]; buf.String() != want {
		t.Errorf("log while waiting:\n%q\nwant\n%q", buf.String(), want)
	}
	buf.Reset()
	s.observe(mutex.WaitEvent{Name: "MUTEX", Holder: testHolder, HolderFor: 70 * time.Second, Waited: 71 * time.Second, Tries: 15})
	if !strings.HasPrefix(buf.String(), clearLine) || !strings.Contains(buf.String(), "waiting 1m11s (15 tries)") || !strings.HasSuffix(buf.String(), "; lease 1m0s alive (renewing)") {
		t.Errorf("second line: %q", buf.String())
	}
	buf.Reset()
	s.observe(mutex.WaitEvent{Name: "MUTEX", Holder: testHolder, Waited: 72 * time.Second, Tries: 16, Position: 2})
	if !strings.HasPrefix(buf.String(), clearLine+`waiting 1m12s (16 tries, 2 in line) for lock "MUTEX"`) {
		t.Errorf("queued line: %q", buf.String())
	}
	buf.Reset()
	s.done()
	s.Writer().Write([]byte("after\n"))
	if buf.String() != clearLine+"after\n" {
		t.Errorf("after done: %q", buf.String())
	}

	// A narrow terminal gets a truncated line: a wrapped one could not be rewritten.
	buf.Reset()
	narrow := newWaitStatus(&buf, true, func() int { return 40 })
	narrow.observe(mutex.WaitEvent{Name: "MUTEX", Holder: testHolder, Waited: time.Second, Tries: 1})
	if got := strings.TrimPrefix(buf.String(), clearLine); len([]rune(got)) != 39 || !strings.HasSuffix(got, "…") {
		t.Errorf("narrow line: %q", got)
	}
}

func TestHolderState(t *testing.T) {
	now := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	legacy := mutex.Owner{Legacy: true, Raw: "Thread-3"}
	since := testHolder
	since.Since = now.Add(-90 * time.Second)
	noLease := testHolder
	noLease.Lease = 0
	cases := []struct {
		ev   mutex.WaitEvent
		want string
	}{
		{mutex.WaitEvent{}, "holder not read yet"},
		{mutex.WaitEvent{Holder: legacy, HolderFor: 5 * time.Second}, `held by legacy holder "Thread-3", seen for at least 5s; legacy: no lease`},
		{mutex.WaitEvent{Holder: since, HolderFor: 5 * time.Second}, "held by driver-x (host exec-7, pid 4242) for 1m30s; lease 1m0s"},
		{mutex.WaitEvent{Holder: noLease}, "held by driver-x (host exec-7, pid 4242), seen for at least 0s; no lease (never expires)"},
		{mutex.WaitEvent{Err: errors.New("503")}, "holder not read yet; CloudShell failing: 503"},
	}
	for _, c := range cases {
		if got := holderState(c.ev, now); got != c.want {
			t.Errorf("holderState(%+v) =\n%q, want\n%q", c.ev, got, c.want)
		}
	}
}
