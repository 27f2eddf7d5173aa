package mutex

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// recordPrefix marks an owner record written by csmutex. Anything else in "Mutex Owner"
// (an empty string, or a thread name from the public Python snippet) is a legacy holder.
// The version lets a future format coexist with this one.
const recordPrefix = "csmutex/1"

// sinceLayout is the "since" field's format: UTC to the millisecond, short enough that the
// record stays readable in the CloudShell UI.
const sinceLayout = "2006-01-02T15:04:05.000Z"

// Owner describes who holds a lock, as read from its "Mutex Owner" record.
type Owner struct {
	// Name is the owner's label: WithOwner, or host:pid by default.
	Name string
	Host string
	PID  int
	// Token is unique to one acquisition; it is what tells two holders apart.
	Token string
	// Lease is how long the holder may go without a heartbeat before waiters may break it.
	// Zero means the holder never expires (it is only released or force-released).
	Lease time.Duration
	// Since is when the holder sent the add that took the lock, by the holder's own clock
	// (so it is only as right as that clock). It is for people (status, logs), never for
	// deciding staleness, which uses only the observer's clock. Zero when the record has
	// none: legacy holders, and csmutex before the field existed.
	Since time.Time
	// Legacy is true for a record csmutex did not write (the public Python snippet, or a
	// service added by hand). Raw holds it verbatim.
	Legacy bool
	Raw    string
}

// IsZero reports whether o describes no holder at all.
func (o Owner) IsZero() bool { return o == Owner{} }

func (o Owner) String() string {
	switch {
	case o.IsZero():
		return "nobody"
	case o.Legacy && o.Raw == "":
		return "a legacy holder (no owner recorded)"
	case o.Legacy:
		return fmt.Sprintf("legacy holder %q", o.Raw)
	default:
		return fmt.Sprintf("%s (token %s)", o.Name, o.Token)
	}
}

// record is the "Mutex Owner" value: the prefix and space-separated key=value fields with
// query-escaped values, readable in the CloudShell UI and parseable without ambiguity
// whatever the owner name contains.
func (o Owner) record() string {
	var b strings.Builder
	b.WriteString(recordPrefix)
	field := func(k, v string) {
		b.WriteString(" ")
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(url.QueryEscape(v))
	}
	field("owner", o.Name)
	field("host", o.Host)
	field("pid", strconv.Itoa(o.PID))
	field("token", o.Token)
	field("lease", o.Lease.String())
	if !o.Since.IsZero() {
		field("since", o.Since.UTC().Format(sinceLayout))
	}
	return b.String()
}

// ParseOwner reads a "Mutex Owner" value as the mutex reads it: a csmutex record's fields,
// or a legacy holder (Legacy set, Raw verbatim) for anything else, a damaged csmutex record
// included. Use it on records that other APIs give verbatim (locks.BusyError.Holders,
// sandbox exports), so that every reader agrees on who holds a lock.
func ParseOwner(raw string) Owner { return parseOwner(raw) }

// parseOwner reads a "Mutex Owner" value. It never fails: what is not a csmutex record is a
// legacy holder, and a damaged csmutex record is treated as legacy too, so it is never
// broken automatically on the strength of fields we could not read.
func parseOwner(raw string) Owner {
	legacy := Owner{Legacy: true, Raw: raw}
	rest, ok := strings.CutPrefix(raw, recordPrefix+" ")
	if !ok {
		return legacy
	}
	o := Owner{Raw: raw}
	for _, f := range strings.Fields(rest) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return legacy
		}
		v, err := url.QueryUnescape(v)
		if err != nil {
			return legacy
		}
		switch k {
		case "owner":
			o.Name = v
		case "host":
			o.Host = v
		case "pid":
			o.PID, _ = strconv.Atoi(v)
		case "token":
			o.Token = v
		case "since":
			// Informational: an unreadable time is dropped, not a reason to call the
			// record damaged.
			if t, err := time.Parse(sinceLayout, v); err == nil {
				o.Since = t
			}
		case "lease":
			if o.Lease, err = time.ParseDuration(v); err != nil || o.Lease < 0 {
				return legacy
			}
		}
		// Unknown keys are ignored: a newer csmutex may add fields.
	}
	if o.Token == "" {
		return legacy
	}
	return o
}

// newToken returns 64 random bits in hex: enough that two acquisitions never share one.
func newToken() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("mutex: crypto/rand failed: " + err.Error()) // the OS has no entropy: nothing is safe
	}
	return hex.EncodeToString(b[:])
}
