package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// timeline prints what each driver and its lock do, with the time since the start, so that
// who waited for whom, and for how long, reads top to bottom.
type timeline struct {
	mu    sync.Mutex
	out   io.Writer
	start time.Time
}

func newTimeline(out io.Writer) *timeline { return &timeline{out: out, start: time.Now()} }

func (t *timeline) say(who, format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.out, "%7s  %-9s %s\n", time.Since(t.start).Round(time.Millisecond), who, fmt.Sprintf(format, args...))
}

// logger turns the mutex's structured log events into timeline lines.
func (t *timeline) logger(who string) zerolog.Logger {
	return zerolog.New(lineWriter{t: t, who: who}).Level(zerolog.InfoLevel)
}

type lineWriter struct {
	t   *timeline
	who string
}

// Fields worth showing, in this order; the rest (reservation id, level) is noise here.
// Durations come as "<name>_ms" (milliseconds) and are shown with units, as the command's
// console does: waited=1.2s.
var shown = []string{"holder", "owner", "tries", "waited_ms", "held_ms", "stale_holder", "error"}

func (w lineWriter) Write(p []byte) (int, error) {
	var ev map[string]any
	if err := json.Unmarshal(p, &ev); err != nil {
		w.t.say(w.who, "%s", strings.TrimSpace(string(p)))
		return len(p), nil
	}
	parts := []string{fmt.Sprint(ev["message"])}
	keys := make([]string, 0, len(shown))
	for _, k := range shown {
		if _, ok := ev[k]; ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		v := ev[k]
		if name, ok := strings.CutSuffix(k, "_ms"); ok {
			if f, isNum := v.(float64); isNum {
				k, v = name, time.Duration(f*float64(time.Millisecond)).Round(time.Millisecond)
			}
		}
		parts = append(parts, fmt.Sprintf("%s=%v", k, v))
	}
	w.t.say(w.who, "%s", strings.Join(parts, " "))
	return len(p), nil
}
