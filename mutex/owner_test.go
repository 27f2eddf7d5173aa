package mutex_test

import (
	"strings"
	"testing"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

func TestOwnerRecordRoundTrip(t *testing.T) {
	o := mutex.Owner{Name: "driver x & y=1 [ü]", Host: "exec-3", PID: 4711, Token: "9f2c1a7e5b3d8c40", Lease: 90 * time.Second}
	raw := o.Record()
	if !strings.HasPrefix(raw, "csmutex/1 ") || strings.Count(raw, " ") != 5 {
		t.Fatalf("record %q: want the prefix and five space-separated fields", raw)
	}
	got := mutex.ParseOwner(raw)
	o.Raw = raw
	if got != o {
		t.Fatalf("round trip: got %+v, want %+v", got, o)
	}
}

// The acquisition time travels in the record, so status can say how long any csmutex lock
// has been held; a record without it, or with a damaged one, still parses.
func TestOwnerRecordSince(t *testing.T) {
	since := time.Date(2026, 11, 26, 6, 40, 1, 234e6, time.UTC)
	o := mutex.Owner{Name: "d", Host: "h", PID: 1, Token: "ab", Lease: time.Minute, Since: since}
	raw := o.Record()
	if !strings.Contains(raw, " since=2026-11-26T06%3A40%3A01.234Z") {
		t.Fatalf("record %q lacks the since field", raw)
	}
	if got := mutex.ParseOwner(raw); !got.Since.Equal(since) || got.Legacy {
		t.Fatalf("since did not round-trip: %+v", got)
	}
	for _, damaged := range []string{"csmutex/1 token=ab since=yesterday", "csmutex/1 token=ab"} {
		if got := mutex.ParseOwner(damaged); got.Legacy || got.Token != "ab" || !got.Since.IsZero() {
			t.Errorf("%q: got %+v, want a csmutex record without since", damaged, got)
		}
	}
}

func TestLegacyRecords(t *testing.T) {
	for _, raw := range []string{
		"",                  // public snippet, latest version
		"ci-runner-7",       // public snippet, first version (thread name)
		"csmutex/1",         // prefix alone
		"csmutex/1 owner=x", // no token: cannot tell holders apart
		"csmutex/1 token=ab lease=-5s",
		"csmutex/1 token=ab lease=soon",
		"csmutex/1 token=%zz",
		"csmutex/1 token=ab junk",
		"csmutex/2 token=ab lease=1s", // a future format we cannot vouch for
	} {
		got := mutex.ParseOwner(raw)
		if !got.Legacy || got.Raw != raw || got.Token != "" {
			t.Errorf("%q: got %+v, want a legacy holder", raw, got)
		}
	}
}

func TestOwnerString(t *testing.T) {
	cases := map[string]mutex.Owner{
		"nobody":                              {},
		"a legacy holder (no owner recorded)": {Legacy: true},
		`legacy holder "thread-7"`:            {Legacy: true, Raw: "thread-7"},
		"exec-3:42 (token abc)":               {Name: "exec-3:42", Token: "abc"},
	}
	for want, o := range cases {
		if got := o.String(); got != want {
			t.Errorf("%+v: got %q, want %q", o, got, want)
		}
	}
}

// Owner records come from the reservation, which anyone can edit: parsing must never panic
// and must never invent a token.
func FuzzParseOwner(f *testing.F) {
	f.Add("")
	f.Add("csmutex/1 owner=a host=b pid=1 token=ff lease=1m0s")
	f.Add("csmutex/1 owner=%ZZ token=1")
	f.Add("csmutex/1 token== lease=1h pid=99999999999999999999")
	f.Fuzz(func(t *testing.T, raw string) {
		o := mutex.ParseOwner(raw)
		if o.Raw != raw {
			t.Fatalf("Raw = %q, want %q", o.Raw, raw)
		}
		if !o.Legacy && (o.Token == "" || !strings.HasPrefix(raw, "csmutex/1 ") || o.Lease < 0) {
			t.Fatalf("%q parsed as a csmutex record %+v", raw, o)
		}
		_ = o.String()
		if !o.Legacy {
			again := mutex.ParseOwner(o.Record())
			if again.Token != o.Token || again.Lease != o.Lease || again.Name != o.Name {
				t.Fatalf("re-encoding %+v gives %+v", o, again)
			}
		}
	})
}
