package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/csmutex/csmutex/mutex"
	"github.com/rs/zerolog"
)

// waitLogEvery is how often `csmutex run` logs that it is still waiting when stderr is not
// a terminal: often enough that a CI log shows progress, rarely enough that a long wait
// does not flood it.
const waitLogEvery = 30 * time.Second

// clearLine returns the cursor to the start of the line and erases it (CR, EL).
const clearLine = "\r\x1b[K"

// waitStatus shows a waiting run what it waits for. On a terminal it keeps one status line
// rewritten in place after every attempt; logs written meanwhile (through Writer) erase
// it first and redraw it after, so the two never mix. Elsewhere it logs a line every
// waitLogEvery. It is the observer of the run's mutex (mutex.WithObserver).
type waitStatus struct {
	mu      sync.Mutex
	out     io.Writer // stderr
	live    bool
	width   func() int
	log     zerolog.Logger
	now     func() time.Time
	shown   string // the status line on screen, "" when none
	nextLog time.Duration
}

// newWaitStatus returns the reporter writing to stderr: a live line if live, else log
// lines through log (set it later with setLogger when the logger writes through Writer).
func newWaitStatus(stderr io.Writer, live bool, width func() int) *waitStatus {
	return &waitStatus{out: stderr, live: live, width: width, now: time.Now, nextLog: waitLogEvery, log: zerolog.Nop()}
}

func (s *waitStatus) setLogger(l zerolog.Logger) { s.log = l }

// Writer is where logs go while the status line may be shown.
func (s *waitStatus) Writer() io.Writer { return statusWriter{s} }

type statusWriter struct{ s *waitStatus }

func (w statusWriter) Write(p []byte) (int, error) {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shown == "" {
		return s.out.Write(p)
	}
	io.WriteString(s.out, clearLine)
	n, err := s.out.Write(p)
	io.WriteString(s.out, s.shown)
	return n, err
}

// observe is the mutex's observer: called after every attempt that did not get the lock.
func (s *waitStatus) observe(ev mutex.WaitEvent) {
	if s.live {
		line := waitLine(ev, s.now())
		if w := s.width(); w > 1 {
			line = truncate(line, w-1) // a wrapped line could not be rewritten in place
		}
		s.mu.Lock()
		s.shown = line
		io.WriteString(s.out, clearLine+line)
		s.mu.Unlock()
		return
	}
	if ev.Waited < s.nextLog {
		return
	}
	for s.nextLog <= ev.Waited {
		s.nextLog += waitLogEvery
	}
	e := s.log.Info()
	holderFields(e, ev.Holder, s.now())
	e.Dur("waited_ms", ev.Waited).Int("tries", ev.Tries)
	if ev.Position > 0 {
		e.Int("position", ev.Position)
	}
	if !ev.Holder.IsZero() && ev.Holder.Since.IsZero() {
		e.Dur("seen_ms", ev.HolderFor)
	}
	if ev.Err != nil {
		e.AnErr("last_error", ev.Err)
	}
	e.Msg("still waiting for the lock: " + holderState(ev, s.now()))
}

// done erases the status line, before the command (or the give-up message) writes.
func (s *waitStatus) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shown != "" {
		io.WriteString(s.out, clearLine)
		s.shown = ""
	}
}

// waitLine is the live status line: who holds the lock, since when, the lease, our wait.
func waitLine(ev mutex.WaitEvent, now time.Time) string {
	// Our wait first: a narrow terminal truncates the end.
	queue := ""
	if ev.Position > 0 {
		queue = fmt.Sprintf(", %d in line", ev.Position)
	}
	return fmt.Sprintf("waiting %s (%d %s%s) for lock %q: %s", ev.Waited.Round(time.Second), ev.Tries,
		plural(ev.Tries, "try", "tries"), queue, ev.Name, holderState(ev, now))
}

// holderState describes the holder for a person: who, where, for how long, and whether
// the lock can expire.
func holderState(ev mutex.WaitEvent, now time.Time) string {
	h := ev.Holder
	var b strings.Builder
	switch {
	case h.IsZero():
		b.WriteString("holder not read yet")
	case h.Legacy:
		b.WriteString("held by " + holderText(h))
	default:
		fmt.Fprintf(&b, "held by %s (host %s, pid %d)", h.Name, h.Host, h.PID)
	}
	switch {
	case h.IsZero():
	case !h.Since.IsZero():
		fmt.Fprintf(&b, " for %s", heldFor(h.Since, now))
	default:
		fmt.Fprintf(&b, ", seen for at least %s", ev.HolderFor.Round(time.Second))
	}
	switch {
	case h.IsZero():
	case h.Legacy:
		b.WriteString("; legacy: no lease")
	case h.Lease == 0:
		b.WriteString("; no lease (never expires)")
	case ev.HolderFor > h.Lease:
		// Waiters break a holder whose heartbeat stood still for a lease; this one has
		// been watched for longer than that and is still there, so it renews.
		fmt.Fprintf(&b, "; lease %s alive (renewing)", h.Lease)
	default:
		fmt.Fprintf(&b, "; lease %s", h.Lease)
	}
	if ev.Err != nil {
		b.WriteString("; CloudShell failing: " + ev.Err.Error())
	}
	return b.String()
}

// heldFor is how long ago since was, by the holder's clock: never negative, rounded to the
// second (the clocks of two hosts agree no better).
func heldFor(since, now time.Time) time.Duration {
	return max(now.Sub(since), 0).Round(time.Second)
}

// holderFields adds the holder's structured fields to a log event.
func holderFields(e *zerolog.Event, h mutex.Owner, now time.Time) *zerolog.Event {
	if h.IsZero() {
		return e
	}
	if h.Legacy {
		e.Str("holder", h.Raw).Bool("holder_legacy", true)
	} else {
		e.Str("holder", h.Name).Str("holder_host", h.Host).Int("holder_pid", h.PID).Str("holder_token", h.Token)
	}
	if !h.Since.IsZero() {
		e.Time("held_since", h.Since).Dur("held_ms", max(now.Sub(h.Since), 0))
	}
	return e
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// truncate shortens s to at most n runes, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
