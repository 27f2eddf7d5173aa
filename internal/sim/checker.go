package sim

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// counterKey is the sandbox-data key every critical section read-modify-writes. Its value
// is "n=<new> prev=<what the writer read> cs=<critical section>", so the checker can tell,
// as each write lands, whether anyone wrote in between.
const counterKey = "sim.counter"

// Violation is one broken property.
type Violation struct {
	At     time.Duration // since the start of the run
	Kind   string
	Detail string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s %s: %s", v.At.Round(time.Microsecond), v.Kind, v.Detail)
}

// csState is one critical section as the checker follows it.
type csState struct {
	id       string
	proc     *Process
	legacy   bool
	token    string // the lock record's token when it started (csmutex)
	start    time.Time
	end      time.Time
	lost     bool
	aliveEnd bool // at its end, a loss would have been a false alarm
}

// Checker judges a run as it happens (see the package documentation).
type Checker struct {
	w  *World
	mu sync.Mutex

	cs           map[string]*csState
	heartbeats   map[string][]*callState // token → its heartbeat writes, as sent
	adds         map[string]*callState   // token → the add that carried it
	lastAdd      map[string]time.Time    // process → when it last sent an add of the lock
	removedBy    map[string]string       // token → the process whose remove took it away
	removedLate  map[string]bool         // token → a flagged remove took it away
	flagged      []time.Time             // when writes outside the protocol's reach landed
	flaggedAlias map[string]time.Time
	revoked      []revocation // alias → when a flagged remove last took it

	idle *idleLog // nil: idle time is not judged (the shapes' runs)

	violations []Violation
	excused    []Violation
	stats      Stats
}

// Stats are a run's counts.
type Stats struct {
	Acquisitions int            // successful mutex.With calls
	Sections     int            // critical sections entered (csmutex and legacy)
	Lost         int            // critical sections told that their lock was lost
	Timeouts     int            // With calls that gave up waiting
	Failed       int            // With calls that failed otherwise
	LegacyGaveUp int            // legacy drivers that ran out of tries (without proceeding)
	Calls        int            // API calls sent
	Faults       map[string]int // faults injected, by kind
	Late         int            // writes applied long after their sender gave up
	Excused      int            // violations the protocol documents as outside its reach
	RoomLeft     int            // waiting-room entries left non-empty at the end (crashed waiters, late writes)
	// The lock free while csmutex parties waited for it (see idle.go): in all, the longest
	// span, the longest stretch of any span that no fault, pause, partition, crash or dead
	// room entry explains (judged against IdleBound), and how many spans there were.
	IdleWaiting   time.Duration
	IdleLongest   time.Duration
	IdleUnexcused time.Duration
	IdleBound     time.Duration
	IdleSpans     int
}

func newChecker(w *World) *Checker {
	return &Checker{w: w, cs: map[string]*csState{}, heartbeats: map[string][]*callState{},
		adds: map[string]*callState{}, lastAdd: map[string]time.Time{}, flaggedAlias: map[string]time.Time{}, removedBy: map[string]string{}, removedLate: map[string]bool{}, stats: Stats{Faults: map[string]int{}}}
}

func (k *Checker) since(t time.Time) time.Duration { return t.Sub(k.w.start) }

func (k *Checker) fault(kind string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stats.Faults[kind]++
}

// recordToken returns the token of a csmutex owner record ("" for a legacy one).
func recordToken(raw string) string {
	if !strings.HasPrefix(raw, "csmutex/") {
		return ""
	}
	for _, f := range strings.Fields(raw) {
		if t, ok := strings.CutPrefix(f, "token="); ok {
			return t
		}
	}
	return ""
}

func (k *Checker) sent(c *callState) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stats.Calls++
	switch c.method {
	case "AddServiceToReservation":
		if len(c.attrs) > 0 {
			if t := recordToken(c.attrs[0].Value); t != "" {
				k.adds[t] = c
			}
		}
		if len(c.aliases) == 1 && c.aliases[0] == mutex.DefaultName {
			k.lastAdd[c.proc.name] = c.sent
		}
	case "SetSandboxData":
		for _, kv := range c.data {
			if t, ok := strings.CutPrefix(kv.Key, "csmutex.heartbeat."); ok {
				k.heartbeats[t] = append(k.heartbeats[t], c)
			}
		}
	}
}

// paused reports whether p was paused for longer than lease/6 at some time in [from, to]:
// the documented limit of any lease protocol without fencing.
func (p *Process) paused(from, to time.Time) bool {
	for _, w := range p.pauses {
		if w.to.Sub(w.from) > mutex.LossMargin(p.lease) && w.from.Before(to) && w.to.After(from) {
			return true
		}
	}
	return false
}

func (p *Process) disturbed(from, to time.Time) bool {
	if p.paused(from, to) {
		return true
	}
	for _, w := range p.partitions {
		if w.from.Before(to) && w.to.After(from) {
			return true
		}
	}
	return false
}

// onApply sees each write as it lands, under the server's lock, before it changes state.
func (k *Checker) onApply(s *Server, m Mutation) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.idleApply(m)
	late := m.call.late(m.At)
	if late {
		k.stats.Late++
	}
	switch m.Method {
	case "RemoveServicesFromReservation":
		for _, a := range m.Aliases {
			// A remove decided on a read served before a flagged write changed the same
			// lock lands on a different instance than the one its sender read: the
			// consequence of the flagged write, not a fault of its own.
			if t, ok := k.flaggedAlias[a]; ok && m.call.basedOn.Before(t) {
				late = true
			}
			// So is a breaker's remove made under a break lock that a flagged write took
			// away from it: another breaker may have been let in meanwhile.
			for _, tr := range k.revoked {
				if tr.proc == m.Proc && tr.alias == a && !m.call.sent.Before(tr.from) && m.call.sent.Before(tr.until) {
					late = true
				}
			}
		}
		if late {
			for _, sv := range m.Removed {
				if i := strings.LastIndex(sv.alias, ".break."); i > 0 && !sv.addedAt.IsZero() {
					k.revoked = append(k.revoked, revocation{proc: sv.addedBy, alias: sv.alias[:i],
						from: sv.addedAt, until: sv.addedAt.Add(mutex.LossAfter(k.procLease(sv.addedBy)))})
				}
			}
			k.w.traceLocked("late: %s's remove of %v, sent at %s, lands after its sender gave up", m.Proc, m.Aliases, k.since(m.call.sent).Round(time.Microsecond))
			k.flagged = append(k.flagged, m.At)
			for _, a := range m.Aliases {
				k.flaggedAlias[a] = m.At
			}
		}
		for _, sv := range m.Removed {
			if raw, _ := ownerOf(sv); sv.alias == mutex.DefaultName && sv.addedBy != m.Proc {
				k.removedByOther(m, sv, raw, late)
			}
			if raw, _ := ownerOf(sv); m.call.proc.legacy && sv.addedBy != m.Proc {
				// The snippet removes MUTEX whoever holds it: a legacy driver whose own lock
				// was taken from it deletes the next holder's. Outside the protocol's reach.
				k.flagged = append(k.flagged, m.At)
				k.w.traceLocked("legacy %s removed a lock it does not hold (%q)", m.Proc, raw)
			}
			for _, a := range sv.attrs {
				if t := recordToken(a.Value); a.Name == mutex.OwnerAttribute && t != "" && !isBreakAlias(sv.alias) {
					if late {
						k.removedLate[t] = true
					} else {
						k.removedBy[t] = m.Proc
					}
				}
			}
		}
	case "SetSandboxData":
		for _, kv := range m.Data {
			if kv.Key == counterKey {
				k.counterWrite(s, m, kv.Value, late)
			}
		}
	}
}

func parseCounter(v string) (n, prev int, cs string) {
	for _, f := range strings.Fields(v) {
		key, val, _ := strings.Cut(f, "=")
		switch key {
		case "n":
			n, _ = strconv.Atoi(val)
		case "prev":
			prev, _ = strconv.Atoi(val)
		case "cs":
			cs = val
		}
	}
	return n, prev, cs
}

func (k *Checker) counterWrite(s *Server, m Mutation, value string, late bool) {
	_, prev, id := parseCounter(value)
	cur, _, lastID := parseCounter(s.valueLocked(counterKey))
	me := k.cs[id]
	if me == nil {
		k.violate(m.At, "unknown", fmt.Sprintf("counter write by unknown critical section %q", id))
		return
	}
	excused := late || me.proc.paused(me.start, m.At)
	if late || me.proc.paused(me.start, m.At) {
		k.flagged = append(k.flagged, m.At)
	}
	raw, held := s.ownerLocked(mutex.DefaultName)
	switch {
	case !me.legacy && (!held || recordToken(raw) != me.token):
		k.judge(m.At, excused, []*csState{me}, "unprotected write",
			fmt.Sprintf("%s wrote while the lock record was %q (its own token %s)", id, raw, me.token))
	case me.legacy && (!held || raw != ""):
		k.judge(m.At, excused, []*csState{me}, "unprotected write",
			fmt.Sprintf("legacy %s wrote while the lock record was %q (held=%v)", id, raw, held))
	}
	if cur != prev {
		k.judge(m.At, excused, []*csState{me, k.cs[lastID]}, "lost update",
			fmt.Sprintf("%s read %d, but %s wrote %d in between", id, prev, lastID, cur))
	}
}

// judge records a violation, or an excused one when a write outside the protocol's reach
// (a pause, or a write landing long after its sender gave up) happened while any critical
// section involved was running.
func (k *Checker) judge(at time.Time, excused bool, involved []*csState, kind, detail string) {
	from := at
	for _, c := range involved {
		if c == nil {
			continue
		}
		if c.start.Before(from) {
			from = c.start
		}
		if c.proc.paused(c.start, at) {
			excused = true
		}
	}
	for _, f := range k.flagged {
		if !f.Before(from) {
			excused = true
		}
	}
	v := Violation{At: k.since(at), Kind: kind, Detail: detail}
	if excused {
		k.stats.Excused++
		k.excused = append(k.excused, v)
		k.w.traceLocked("EXCUSED %s", v)
		return
	}
	k.violations = append(k.violations, v)
	k.w.traceLocked("VIOLATION %s", v)
}

func (k *Checker) violate(at time.Time, kind, detail string) {
	v := Violation{At: k.since(at), Kind: kind, Detail: detail}
	k.violations = append(k.violations, v)
	k.w.traceLocked("VIOLATION %s", v)
}

// csStart registers a critical section and takes its lock record from the server.
func (k *Checker) csStart(p *Process, id string, legacy bool, token string) {
	raw, held := k.w.server.owner()
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	// A critical section's trouble can start with the add that took its lock: a remove
	// landing late may delete the lock between the add and the section's first step.
	c := &csState{id: id, proc: p, legacy: legacy, start: now}
	if t, ok := k.lastAdd[p.name]; ok && t.Before(now) {
		c.start = t
	}
	k.cs[id] = c
	k.stats.Sections++
	if legacy {
		return
	}
	c.token = token
	if !held || recordToken(raw) != token {
		c.token = "" // entered without its lock: no loss of it can be judged
		k.judge(now, false, []*csState{c}, "entered without the lock",
			fmt.Sprintf("%s started its critical section while the lock record was %q (held=%v)", id, raw, held))
	}
}

// leaseAlive reports whether a loss of c's lock, noticed at time at, would be a false
// alarm, and why: its record is intact (or was removed by its own process) and its lease
// had not run out. A pause or partition of the process explains any loss.
func (k *Checker) leaseAlive(c *csState, at time.Time, raw string, held bool) (bool, string) {
	p := c.proc
	if c.token == "" || p.crashed(at) || p.disturbed(c.start.Add(-p.lease), at) {
		return false, ""
	}
	if !held || recordToken(raw) != c.token {
		if k.removedBy[c.token] == p.name {
			return true, "its own process removed the lock record"
		}
		return false, ""
	}
	beats := k.heartbeats[c.token]
	if len(beats) == 0 {
		return true, "the record was intact and no renewal was ever attempted"
	}
	last := time.Time{}
	if a := k.adds[c.token]; a != nil {
		last = a.sent
	}
	for _, b := range beats {
		b.mu.Lock()
		if b.answered && b.sent.After(last) {
			last = b.sent
		}
		b.mu.Unlock()
	}
	if !last.IsZero() && at.Sub(last) < mutex.LossAfter(p.lease)-time.Millisecond {
		return true, fmt.Sprintf("the record was intact and the last confirmed renewal was sent only %s before", at.Sub(last).Round(time.Millisecond))
	}
	return false, ""
}

// lost is called when a critical section's context is canceled because its lock was lost.
func (k *Checker) lost(p *Process, id string) {
	raw, held := k.w.server.owner()
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.cs[id]
	now := time.Now()
	if c == nil || k.w.isOver() {
		return
	}
	c.lost = true
	k.stats.Lost++
	if alive, why := k.leaseAlive(c, now, raw, held); alive {
		k.violate(now, "false alarm", fmt.Sprintf("%s was told its lock was lost although %s", id, why))
	}
}

func (k *Checker) csEnd(p *Process, id string) {
	raw, held := k.w.server.owner()
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.cs[id]
	c.end = time.Now()
	c.aliveEnd, _ = k.leaseAlive(c, c.end, raw, held)
}

// withDone judges what mutex.With returned.
func (k *Checker) withDone(p *Process, id string, runs int, fnErr, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	if k.w.isOver() {
		return
	}
	switch {
	case err == nil:
		k.stats.Acquisitions++
	case errors.Is(err, mutex.ErrTimeout):
		k.stats.Timeouts++
	default:
		k.stats.Failed++
	}
	if runs > 1 || (err == nil && runs != 1) {
		k.violate(now, "fn runs", fmt.Sprintf("%s: With returned %v after running its function %d times", id, err, runs))
	}
	c := k.cs[id]
	takenAway := c != nil && k.removedBy[c.token] != p.name && k.removedBy[c.token] != ""
	if c != nil && k.removedLate[c.token] {
		takenAway = true
	}
	if c != nil && !c.lost && fnErr == nil && errors.Is(err, mutex.ErrLost) && c.aliveEnd && !takenAway {
		k.violate(now, "false alarm", fmt.Sprintf("%s: its critical section completed inside the lease, yet With reported: %v", id, err))
	}
	if err != nil && !errors.Is(err, errCrashed) && !errors.Is(err, mutex.ErrTimeout) && !errors.Is(err, mutex.ErrLost) && !errors.Is(err, cloudshell.ErrAmbiguous) && !cloudshell.IsTransient(err) && fnErr == nil {
		k.w.traceLocked("%s: With failed: %v", id, err)
	}
}

func ownerOf(sv service) (string, bool) {
	for _, a := range sv.attrs {
		if a.Name == mutex.OwnerAttribute {
			return a.Value, true
		}
	}
	return "", false
}

// removedByOther checks a removal of someone else's lock: it must not take the lock of a
// holder whose lease is still running by the holder's own reckoning (its last confirmed
// renewal, or the add, sent less than lossAfter before). The protocol's promise is that a
// holder learns of the loss before anyone else acts on it: breakers wait a whole lease, and
// a former holder's remove is sent and answered inside its own lease.
func (k *Checker) removedByOther(m Mutation, sv service, raw string, late bool) {
	t := recordToken(raw)
	add := k.adds[t]
	if t == "" || add == nil {
		return // a legacy lock: it has no lease
	}
	last := add.sent
	for _, b := range k.heartbeats[t] {
		b.mu.Lock()
		if b.answered && b.sent.After(last) {
			last = b.sent
		}
		b.mu.Unlock()
	}
	h := add.proc
	if loss := last.Add(mutex.LossAfter(h.lease)); m.At.Before(loss) {
		k.judge(m.At, late, nil, "broke a live holder",
			fmt.Sprintf("%s removed %s's lock (token %s) %s before the holder's loss point", m.Proc, h.name, t, loss.Sub(m.At).Round(time.Microsecond)))
	}
}

// revocation: a flagged write removed proc's break lock on alias, which proc had added at
// from; proc's removals of alias until that break lock's loss point are its consequences.
type revocation struct {
	proc, alias string
	from, until time.Time
}

func (k *Checker) procLease(name string) time.Duration {
	for _, p := range k.w.sc.Procs {
		if p.Name == name {
			return p.Lease
		}
	}
	return k.w.sc.maxLease()
}
