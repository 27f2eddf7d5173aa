// Package duration reads the durations csmutex accepts on its command line and in sidecar
// requests: a Go duration ("90s", "1m30s") or a plain number of seconds ("30", "1.5"), as
// flock -w takes them. The command and the sidecar parse through it, so a value means the
// same in both.
package duration

import (
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrSyntax: the value is neither a number of seconds nor a Go duration.
	ErrSyntax = errors.New("not a duration or a number of seconds")
	// ErrRange: the value is well formed but too large for a time.Duration (about 292
	// years).
	ErrRange = errors.New("duration out of range")
)

// goDuration matches the syntax of time.ParseDuration, so that a well-formed value it
// refuses ("9999999h") is reported as out of range rather than as not a duration.
var goDuration = regexp.MustCompile(`^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$`)

// IsSeconds reports whether s, blanks around it aside, is a plain decimal number ("30",
// "1.5", "1e1", "-2"): what Parse reads as seconds. The other forms strconv.ParseFloat
// accepts (hex "0x10", "Inf", "NaN", digit separators "1_000") are not numbers of seconds.
func IsSeconds(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" || strings.ContainsAny(s, "xXpPiInN_") {
		return false
	}
	_, err := strconv.ParseFloat(s, 64)
	return err == nil || errors.Is(err, strconv.ErrRange)
}

// Parse reads s, blanks around it aside, as a number of seconds (see IsSeconds) or else as a
// Go duration. Negative values are returned as they are: callers that refuse them say so in
// their own words. The error is ErrSyntax or ErrRange.
func Parse(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if IsSeconds(s) {
		f, _ := strconv.ParseFloat(s, 64) // ±Inf when it overflows a float64
		ns := f * float64(time.Second)
		// float64(math.MaxInt64) is 2^63, one past the largest Duration.
		if math.IsInf(ns, 0) || ns >= math.MaxInt64 || ns < math.MinInt64 {
			return 0, ErrRange
		}
		return time.Duration(ns), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if goDuration.MatchString(s) {
			return 0, ErrRange
		}
		return 0, ErrSyntax
	}
	return d, nil
}
