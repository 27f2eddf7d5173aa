package mockapi

import (
	"math/rand/v2"
	"sort"
	"sync"
	"time"
)

// Fault describes misbehaviour injected into requests of one method (or all, "*").
// Rates are probabilities in [0,1] drawn from the server's seeded RNG, so a given seed and
// request sequence reproduce the same faults.
type Fault struct {
	// Client limits the fault to requests whose MachineName equals this, with or
	// without the ":port" suffix the reference client appends; "" = all clients.
	Client string
	// Count limits the fault to that many matching requests (whether or not a rate
	// fired for them); 0 = unlimited.
	Count int

	// ErrorRate answers Success="false" with ErrorCode/ErrorMessage, state untouched.
	// ErrorCode 0 becomes 100 and an empty message a generic one, because a failure
	// envelope with code 0 is not something a real server sends.
	ErrorRate    float64
	ErrorCode    int
	ErrorMessage string

	// Latency + uniform[0, LatencyJitter) is waited before the call is handled, outside
	// any lock, so concurrent calls get reordered; a cancelled request stops waiting.
	Latency, LatencyJitter time.Duration

	// HTTP500Rate answers HTTP 500 with an HTML body, state untouched (an IIS/proxy
	// failure rather than an API one).
	HTTP500Rate float64
	// DropAfterCommitRate applies the call, then closes the connection without a
	// response: the outcome is unknown to the client although the write happened.
	DropAfterCommitRate float64
	// FailBeforeCommitRate closes the connection without applying the call.
	FailBeforeCommitRate float64
}

// Faults is the fault configuration of a server. It is safe for concurrent use and may
// be changed while requests are in flight.
type Faults struct {
	mu          sync.Mutex
	rng         *rand.Rand
	byKey       map[string]*faultState
	expireAfter int
}

type faultState struct {
	Fault
	matched int
}

func newFaults(seed int64) *Faults {
	return &Faults{
		rng:   rand.New(rand.NewPCG(uint64(seed), 0x5eed_c10d_5e11)),
		byKey: map[string]*faultState{},
	}
}

// Set installs the fault for method ("*" = every method), replacing the previous one for
// that key and restarting its Count. A method-specific fault takes precedence over "*"
// for requests it matches.
func (f *Faults) Set(method string, fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byKey[method] = &faultState{Fault: fault}
}

// Clear removes every fault and disables token expiry.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byKey = map[string]*faultState{}
	f.expireAfter = 0
}

// ExpireTokensAfter makes every token (already issued or not) answer 401 once it has
// been used for n authenticated calls; 0 = tokens never expire.
func (f *Faults) ExpireTokensAfter(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n < 0 {
		n = 0
	}
	f.expireAfter = n
}

func (f *Faults) tokenLimit() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.expireAfter
}

// faultEntry is a configured fault as reported by list.
type faultEntry struct {
	Method  string
	Fault   Fault
	Matched int // requests the fault has matched so far (compare with Count)
}

// list returns the configured faults sorted by method, and the token expiry setting.
func (f *Faults) list() ([]faultEntry, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]faultEntry, 0, len(f.byKey))
	for k, st := range f.byKey {
		out = append(out, faultEntry{Method: k, Fault: st.Fault, Matched: st.matched})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Method < out[j].Method })
	return out, f.expireAfter
}

// decision is what the faults do to one request, drawn all at once so that concurrent
// requests cannot interleave their draws.
type decision struct {
	latency    time.Duration
	http500    bool
	failBefore bool
	dropAfter  bool
	err        *apiError
}

func (f *Faults) decide(method string, a authHeader) decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	var d decision
	for _, key := range [2]string{method, "*"} {
		st := f.byKey[key]
		if st == nil {
			continue
		}
		if st.Client != "" && st.Client != a.machine && st.Client != a.client() {
			continue
		}
		if st.Count > 0 && st.matched >= st.Count {
			continue
		}
		st.matched++
		d.latency = st.Latency
		if st.LatencyJitter > 0 {
			d.latency += time.Duration(f.rng.Int64N(int64(st.LatencyJitter)))
		}
		// Every configured rate draws, in a fixed order, so the RNG stream depends only
		// on the configuration and the request sequence.
		d.http500 = f.roll(st.HTTP500Rate)
		d.failBefore = f.roll(st.FailBeforeCommitRate)
		if f.roll(st.ErrorRate) {
			code, msg := st.ErrorCode, st.ErrorMessage
			if code == 0 {
				code = 100
			}
			if msg == "" {
				msg = "Injected fault: the server could not complete " + method
			}
			d.err = &apiError{code: code, msg: msg}
		}
		d.dropAfter = f.roll(st.DropAfterCommitRate)
		return d
	}
	return d
}

func (f *Faults) roll(rate float64) bool {
	if rate <= 0 {
		return false
	}
	return f.rng.Float64() < rate
}
