package locks

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// A state value is read from sandbox data that anyone with access to the reservation can
// write. Whatever it holds, reading it must fail with ErrCorrupt or a ConfigError, never
// panic or blow up; what it accepts must survive a write and a read unchanged.
func FuzzParseStored(f *testing.F) {
	for _, seed := range []string{
		statePrefix + " g=3 v=41",
		statePrefix + " g=1 range=1-100 used=1-3,7",
		statePrefix + " g=9 range=-5-5 used=-5,-3--1",
		statePrefix + " g=18446744073709551615",
		statePrefix + " g=2 range=0-4095 used=0-4095",
		statePrefix + " g=2 range=0-10 used=0-4095,5000-9095",
		statePrefix + " v=1",
		"v=1 g=1",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := parseStored("k", raw)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("parseStored(%q): %v is not ErrCorrupt", raw, err)
			}
			return
		}
		again, err := parseStored("k", v.encode(v.gen))
		if err != nil || again.gen != v.gen || len(again.fields) != len(v.fields) {
			t.Fatalf("%q does not survive a write: %q, %v", raw, v.encode(v.gen), err)
		}
		for k, val := range v.fields {
			if again.fields[k] != val {
				t.Fatalf("%q: field %q changed from %q to %q", raw, k, val, again.fields[k])
			}
		}
		if _, err := v.counter(); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("counter of %q: %v", raw, err)
		}
		for _, r := range []Range{{Lo: 1, Hi: 100}, {Lo: -5, Hi: 5}, {Lo: 0, Hi: MaxRangeSize - 1}} {
			used, err := v.allocation("k", r)
			var ce *ConfigError
			switch {
			case err != nil && !errors.Is(err, ErrCorrupt) && !errors.As(err, &ce):
				t.Fatalf("allocation of %q in %s: %v", raw, r, err)
			case err == nil:
				if len(used) > MaxRangeSize || !slices.IsSorted(used) {
					t.Fatalf("allocation of %q in %s: %d values, sorted %v", raw, r, len(used), slices.IsSorted(used))
				}
				back, err := decodeSet(encodeSet(used))
				if err != nil || !slices.Equal(back, used) {
					t.Fatalf("allocation of %q: %v does not survive a write (%v)", raw, used, err)
				}
			}
		}
	})
}

// A list that claims more values than any range holds is damage, refused without decoding
// it whole.
func TestDecodeSetBounded(t *testing.T) {
	var runs []string
	for i := range int64(100) {
		runs = append(runs, encodeRun(i*MaxRangeSize, i*MaxRangeSize+MaxRangeSize-1))
	}
	if _, err := decodeSet(strings.Join(runs, ",")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("100 full runs: %v, want ErrCorrupt", err)
	}
	if got, err := decodeSet(runs[0]); err != nil || len(got) != MaxRangeSize {
		t.Fatalf("one full range: %d values, %v", len(got), err)
	}
}

func encodeRun(lo, hi int64) string {
	vs := make([]int64, 0, hi-lo+1)
	for v := lo; v <= hi; v++ {
		vs = append(vs, v)
	}
	return encodeSet(vs)
}
