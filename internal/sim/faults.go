package sim

import (
	"math/rand/v2"
	"time"
)

// FaultRates are per-call probabilities. Every call draws its own faults from the seed, the
// process, the method and its virtual send time, so a decision never depends on which
// goroutine happened to reach the transport first.
type FaultRates struct {
	Slow       float64 // one leg (request or response) takes 10–90% of the process's lease
	Stall      float64 // one leg takes 1–2 leases: longer than any lease-bounded wait
	DropAfter  float64 // a write is applied and its answer lost (ambiguous to the client)
	FailBefore float64 // a write answers HTTP 500 without being applied (also ambiguous)
	Refused    float64 // the connection is refused: nothing is sent (transient)
	Err5xx     float64 // a read answers HTTP 500
	Unauth     float64 // a 401: the client logs on again, one extra round trip
}

// window is a span of virtual time [from, to).
type window struct{ from, to time.Time }

func (w window) contains(t time.Time) bool { return !t.Before(w.from) && t.Before(w.to) }

// decision is what the transport does to one call.
type decision struct {
	reqDelay, respDelay time.Duration
	dropAfter           bool
	failBefore          bool
	refused             bool
	err5xx              bool
	relogon             bool
}

// mix is splitmix64's finaliser: a cheap, well-spread hash for seeding per-call streams.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return h
}

// decide draws one call's faults.
func (p *Process) decide(method string, write bool, sent time.Time) decision {
	w := p.world
	h := mix(w.seed ^ mix(uint64(p.index)+1) ^ mix(hashString(method)) ^ mix(uint64(sent.UnixNano())))
	r := rand.New(rand.NewPCG(h, mix(h)))
	f := p.faults
	leg := func() time.Duration {
		// Ordinary latency: 1–40 ms, in nanoseconds, so two events rarely share an instant.
		d := time.Millisecond + time.Duration(r.Int64N(int64(39*time.Millisecond)))
		switch x := r.Float64(); {
		case x < f.Stall:
			d += p.lease + time.Duration(r.Int64N(int64(p.lease)))
		case x < f.Stall+f.Slow:
			d += p.lease/10 + time.Duration(r.Int64N(int64(p.lease*8/10)))
		}
		return d
	}
	d := decision{reqDelay: leg(), respDelay: leg()}
	x := r.Float64()
	switch {
	case x < f.Refused:
		d.refused = true
	case !write:
		d.err5xx = x < f.Refused+f.Err5xx
	case x < f.Refused+f.DropAfter:
		d.dropAfter = true
	case x < f.Refused+f.DropAfter+f.FailBefore:
		d.failBefore = true
	}
	d.relogon = r.Float64() < f.Unauth
	return d
}
