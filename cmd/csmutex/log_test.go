package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func jsonLinesOf(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// Durations are logged as *_ms: float milliseconds in JSON, a duration with units on the
// console (waited=13.9s, not waited_ms=13948.28).
func TestDurationFieldsWithUnits(t *testing.T) {
	const waited = 13948284865 * time.Nanosecond
	var console, js bytes.Buffer
	l := &logFlags{format: "console"}
	cl := l.loggerTo(&console, false)
	cl.Info().Dur("waited_ms", waited).Dur("took_ms", 1234*time.Microsecond).
		Dur("held_ms", 91*time.Second+400*time.Millisecond).Int("tries", 3).Str("note_ms", "text").Msg("lock acquired")
	out := console.String()
	for _, want := range []string{"waited=13.9s", "took=1.23ms", "held=1m31s", "tries=3", "note_ms=text"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q: %s", want, out)
		}
	}
	if strings.Contains(out, "waited_ms") || strings.Contains(out, "13948") {
		t.Errorf("console shows raw milliseconds: %s", out)
	}

	l = &logFlags{format: "json"}
	jl := l.loggerTo(&js, false)
	jl.Info().Dur("waited_ms", waited).Msg("lock acquired")
	ev := jsonLinesOf(t, js.String())[0]
	if ms, ok := ev["waited_ms"].(float64); !ok || ms < 13948.28 || ms > 13948.29 {
		t.Errorf("JSON waited_ms = %v, want 13948.28...: %s", ev["waited_ms"], js.String())
	}
}

func TestReadableDuration(t *testing.T) {
	cases := map[time.Duration]string{
		13948284865: "13.9s", 91400 * time.Millisecond: "1m31s", 1234567 * time.Nanosecond: "1.23ms",
		250 * time.Millisecond: "250ms", 2500 * time.Millisecond: "2.5s", 42 * time.Microsecond: "42µs",
	}
	for d, want := range cases {
		if got := readableDuration(d).String(); got != want {
			t.Errorf("readableDuration(%v) = %s, want %s", d, got, want)
		}
	}
}
