package duration

import (
	"errors"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	good := map[string]time.Duration{
		"30": 30 * time.Second, "0": 0, "1.5": 1500 * time.Millisecond, " 2 ": 2 * time.Second,
		"1e1": 10 * time.Second, "-2": -2 * time.Second, "0.001": time.Millisecond,
		"90s": 90 * time.Second, "5m": 5 * time.Minute, "1h30m": 90 * time.Minute, "300ms": 300 * time.Millisecond,
		"-5s": -5 * time.Second, "\t1m\n": time.Minute,
	}
	for in, want := range good {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]error{
		"": ErrSyntax, "abc": ErrSyntax, "5 minutes": ErrSyntax, "1s2": ErrSyntax,
		// Numbers to strconv, not to a person writing seconds.
		"0x10": ErrSyntax, "0x1p4": ErrSyntax, "inf": ErrSyntax, "+Inf": ErrSyntax, "NaN": ErrSyntax, "1_000": ErrSyntax,
		// Well formed, too large.
		"1e30": ErrRange, "1e400": ErrRange, "-1e30": ErrRange, "9999999h": ErrRange, "9223372036.854775808": ErrRange,
	} {
		if got, err := Parse(in); !errors.Is(err, want) {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestIsSeconds(t *testing.T) {
	for in, want := range map[string]bool{
		"30": true, " 1.5 ": true, "1e1": true, "-2": true, "1e400": true,
		"30s": false, "": false, "0x10": false, "Inf": false, "NaN": false, "1_0": false,
	} {
		if got := IsSeconds(in); got != want {
			t.Errorf("IsSeconds(%q) = %v, want %v", in, got, want)
		}
	}
}
