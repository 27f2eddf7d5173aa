package sidecar

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
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

func rangeError(field string, raw json.RawMessage, lo, hi time.Duration, note string) error {
	got := strings.TrimSpace(string(raw))
	if len(got) > 40 {
		got = got[:40] + "..."
	}
	return fmt.Errorf("%s %s is out of range: it must be between %s%s and %s", field, got, fmtDuration(lo), note, fmtDuration(hi))
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

// CheckTTL checks a default ttl (the serve command's --ttl) against the request range.
func CheckTTL(d time.Duration) error {
	if d < MinTTL || d > MaxTTL {
		return fmt.Errorf("ttl %s is out of range: it must be between %s and %s", d, fmtDuration(MinTTL), fmtDuration(MaxTTL))
	}
	return nil
}
