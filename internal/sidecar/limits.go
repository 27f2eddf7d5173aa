package sidecar

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

// Accepted ranges of the durations a request (or the serve command) names.
const (
	// MinTTL: a token-mode client must get a keepalive across HTTP before its ttl passes,
	// and expiry is checked every DefaultSweep (250ms). Anything under a second expires,
	// and releases the lock, before a client could renew it ("1ns" was accepted and the
	// lock let go at once).
	MinTTL = time.Second
	// MaxTTL: a crashed token-mode client keeps the reservation locked for up to its ttl.
	// A day is already far longer than any critical section should be; a client that
	// wants to hold longer sends keepalives, or uses stream mode.
	MaxTTL = 24 * time.Hour
	// MaxTimeout: 0 is a single attempt. Waiting more than a day for a lock means a stuck
	// holder that a person must look at; failing with the holder's name says so. It also
	// keeps every duration far from time.Duration's overflow (about 292 years).
	MaxTimeout = 24 * time.Hour
	// DefaultSandboxMessageEvery is the interval of "sandbox_messages": true, as of
	// `csmutex run --sandbox-messages`: the first line comes at once, so a person watching
	// the Output window learns at once that the command waits and for whom; after that a
	// line a minute says it still does, and a five-minute wait writes six lines, not a
	// screenful.
	DefaultSandboxMessageEvery = time.Minute
	// MinSandboxMessageEvery, as csmutex run's: the Output window belongs to the sandbox's
	// end user and shows the driver's own output too; lines every second or two would
	// scroll that away, each one more CloudShell call per waiting driver.
	MinSandboxMessageEvery = 5 * time.Second
	// MaxSandboxMessageEvery: no wait lasts longer than MaxTimeout, so a longer interval
	// means the same as MaxTimeout (one line when the wait starts, one when it ends).
	MaxSandboxMessageEvery = MaxTimeout
)

// parseDurationIn is parseDuration with a range: a value outside [lo, hi], including one
// too large to represent, is refused with a message naming the range. note explains lo,
// e.g. " (0 = a single attempt)".
func parseDurationIn(field string, raw json.RawMessage, lo, hi time.Duration, note string) (time.Duration, bool, error) {
	d, set, err := parseDuration(field, raw)
	if err != nil {
		if errors.Is(err, errOutOfRange) {
			return 0, false, rangeError(field, raw, lo, hi, note)
		}
		return 0, false, err
	}
	if set && (d < lo || d > hi) {
		return 0, false, rangeError(field, raw, lo, hi, note)
	}
	return d, set, nil
}

// parseSandboxMessages reads an acquire request's "sandbox_messages": absent, null, false
// or 0 is off; true is DefaultSandboxMessageEvery; a duration (as parseDuration reads it)
// is the interval, within [MinSandboxMessageEvery, MaxSandboxMessageEvery].
func parseSandboxMessages(raw json.RawMessage) (time.Duration, error) {
	const field = "sandbox_messages"
	switch strings.TrimSpace(string(raw)) {
	case "", "null", "false":
		return 0, nil
	case "true":
		return DefaultSandboxMessageEvery, nil
	}
	const note = " (or false, 0: off)"
	d, _, err := parseDuration(field, raw)
	switch {
	case errors.Is(err, errOutOfRange), err == nil && d != 0 && (d < MinSandboxMessageEvery || d > MaxSandboxMessageEvery):
		return 0, rangeError(field, raw, MinSandboxMessageEvery, MaxSandboxMessageEvery, note)
	case err != nil:
		return 0, fieldErrorf(field, `%s must be true, false or an interval such as "30s" (a number is seconds)`, field)
	}
	return d, nil
}

// noPriority is the priority of a request that names none: the server's mutex options
// (serve --priority) decide, else mutex's default, 0.
const noPriority = -1

// parsePriority reads a request's "priority": absent or null is noPriority; otherwise an
// integer from 0 to mutex.MaxPriority, written as a JSON number (a string, a fraction or
// true is refused rather than guessed at: a priority decides who goes first).
func parsePriority(raw json.RawMessage) (int, error) {
	const field = "priority"
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return noPriority, nil
	}
	bad := func() error {
		if len(s) > 40 {
			s = s[:40] + "..."
		}
		return fieldErrorf(field, "priority %s is not allowed: it must be an integer between 0 and %d (higher goes first)", s, mutex.MaxPriority)
	}
	if s[0] != '-' && (s[0] < '0' || s[0] > '9') {
		return 0, bad()
	}
	p, err := strconv.Atoi(s)
	if err != nil || p < 0 || p > mutex.MaxPriority {
		return 0, bad()
	}
	return p, nil
}

func rangeError(field string, raw json.RawMessage, lo, hi time.Duration, note string) error {
	got := strings.TrimSpace(string(raw))
	if len(got) > 40 {
		got = got[:40] + "..."
	}
	return fieldErrorf(field, "%s %s is out of range: it must be between %s%s and %s", field, got, fmtDuration(lo), note, fmtDuration(hi))
}

// fmtDuration writes whole hours, minutes or seconds plainly ("24h", "1s", "0s").
func fmtDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}

// fieldError is a request refused for one field: the 400 answer names it in "field" as well
// as in words, so that a client can point at what to fix without parsing the message.
type fieldError struct {
	field string
	msg   string
}

func (e *fieldError) Error() string { return e.msg }

func fieldErrorf(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// CheckTTL checks a default ttl (the serve command's --ttl) against the request range.
func CheckTTL(d time.Duration) error {
	if d < MinTTL || d > MaxTTL {
		return fmt.Errorf("ttl %s is out of range: it must be between %s and %s", d, fmtDuration(MinTTL), fmtDuration(MaxTTL))
	}
	return nil
}
