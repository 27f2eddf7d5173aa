package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// The waiting room is advisory, so no bug in it can put two holders in the lock; what one
// can do is leave the lock free while live waiters wait behind each other (behind a dead
// front entry, or a head that never polls). The final acquisition would not notice a stall
// that ended before it. So the checker also measures idle time: the spans during which the
// lock service is absent from the reservation while at least one csmutex party is inside
// With, waiting for it (from its call to its critical section, or to With's return).
//
// The bound (idleBound) is what the room promises when nothing excuses a delay. With the
// lock free and every waiter live and undisturbed:
//   - a waiter outside the room (not joined yet, or the room full or failing) adds at every
//     retry interval (base: at most lease/8 in the simulator);
//   - the head adds at least every base;
//   - when nobody takes itself for the head (the front entry's waiter has just stopped
//     waiting), the next in line reads the room within its read interval, at most ttl/3
//     (its own lease/3), then adds at once;
//   - a cohort that released the lock for its bound leaves it free for its Yield (at most
//     lease/8) before adding again, while the room's head goes on polling.
//
// The lock is taken by the first add that lands while it is free, so at worst a read
// interval and a retry interval follow each other: lease/3 + lease/8 of the longest lease,
// plus the round trips of one poll cycle (an add, two reads and a room write, at most 80 ms
// each without faults), rounded up to 400 ms.
//
// Excused (idleExcuses) is whatever legitimately delays everyone: a csmutex call that met a
// fault (5xx, refused, dropped, slow, 401, timed out, or sent across a partition) from its
// send to its answer; a process's pause or partition; a crash (for its lease); a lock taken
// from under its holder by a legacy driver's unconditional remove or by a remove landing
// after its sender gave up (for the holder's lease: the holder, and its cohort's members
// waiting for a pass, learn of it at its next renewal); and a dead entry at the front of the
// room, one whose waiter crashed or stopped waiting without clearing it (a late refresh or
// join, a clearing that failed). Waiters skip such an entry once they have seen it at the
// front, unchanged, for its ttl; so it is excused for its ttl plus a read interval after it
// reached the front, or after the latest join, or after the latest call that met a fault
// (each waiter times the front from its own first look at it, which a slow call of its own
// postpones), and an uncleared run of them for the sum of their ttls. The bound is measured
// from the end of the last excuse: it already allows the retry that follows a failed call.
// Legacy drivers are not waiters (they poll with their own sleeps, outside the room); while
// one holds, the lock is not free.

// idleLog records, as the run goes, what the idle check needs; judgeIdle reads it once
// everyone has stopped. It only observes: nothing in it changes what a process does.
type idleLog struct {
	lock  []lockEvent    // the lock service appearing and disappearing, in apply order
	waits []waitSpan     // csmutex parties inside With without the lock
	open  map[string]int // party → its open span in waits
	room  []roomWrite    // waiting-room writes of the lock, in apply order
	// calls are csmutex calls that met a fault, from send to answer (or to when their
	// sender stopped waiting), and locks taken from under their holders.
	calls []window
}

type lockEvent struct {
	at      time.Time
	present bool
}

type waitSpan struct {
	party    string
	proc     *Process
	from, to time.Time // to: zero while waiting
}

type roomWrite struct {
	at, sent   time.Time
	proc       *Process
	key, value string
}

// idleBound is the longest idle stretch the room allows when nothing excuses it (see above).
func idleBound(sc Scenario) time.Duration {
	l := sc.maxLease()
	return l/3 + l/8 + 400*time.Millisecond
}

// idleSpan is a span of time during which the lock was free while waiters waited.
type idleSpan struct{ from, to time.Time }

func (k *Checker) watchIdle() {
	k.idle = &idleLog{open: map[string]int{}}
}

// waitStart and waitEnd bracket a party's wait: from its call of With to its critical
// section's start, or to With's return when it got no lock.
func (k *Checker) waitStart(p *Process, party string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.idle == nil {
		return
	}
	k.idle.open[party] = len(k.idle.waits)
	k.idle.waits = append(k.idle.waits, waitSpan{party: party, proc: p, from: time.Now()})
}

func (k *Checker) waitEnd(party string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.idle == nil {
		return
	}
	if i, ok := k.idle.open[party]; ok {
		k.idle.waits[i].to = time.Now()
		delete(k.idle.open, party)
	}
}

// idleApply sees each write as it lands (k.mu held): the lock's presence, and the room.
func (k *Checker) idleApply(m Mutation) {
	if k.idle == nil {
		return
	}
	switch m.Method {
	case "AddServiceToReservation":
		if slices.Contains(m.Aliases, mutex.DefaultName) {
			k.idle.lock = append(k.idle.lock, lockEvent{at: m.At, present: true})
		}
	case "RemoveServicesFromReservation":
		if !slices.Contains(m.Aliases, mutex.DefaultName) {
			return
		}
		k.idle.lock = append(k.idle.lock, lockEvent{at: m.At})
		// A lock taken from under its holder (a legacy driver's unconditional remove, or a
		// remove landing after its sender gave up): the holder believes it holds until its
		// next renewal, and its cohort's members wait for a pass meanwhile.
		for _, sv := range m.Removed {
			if sv.alias != mutex.DefaultName {
				continue
			}
			if (m.call.proc.legacy && sv.addedBy != m.Proc) || m.call.abandonedBefore(m.At) {
				k.idle.calls = append(k.idle.calls, window{m.At, m.At.Add(k.procLease(sv.addedBy))})
			}
		}
	case "SetSandboxData":
		for _, kv := range m.Data {
			if strings.HasPrefix(kv.Key, roomPrefix) {
				k.idle.room = append(k.idle.room, roomWrite{at: m.At, sent: m.call.sent, proc: m.call.proc, key: kv.Key, value: kv.Value})
			}
		}
	}
}

// roomPrefix starts the sandbox-data keys of the default lock's waiting room.
var roomPrefix = "csmutex.queue." + mutex.DefaultName + "."

// idleCall records a csmutex call that met a fault, from its send to its answer (or to
// when its sender stopped waiting).
func (k *Checker) idleCall(c *callState, faulted bool) {
	if c.proc.legacy || !faulted {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.idle != nil {
		k.idle.calls = append(k.idle.calls, window{c.sent, time.Now()})
	}
}

// judgeIdle measures the idle spans of the run up to end and judges their unexcused
// stretches against the bound. Called once every process has stopped (k.mu not held).
func (k *Checker) judgeIdle(end time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.idle == nil {
		return
	}
	sc := k.w.sc
	bound := idleBound(sc)
	spans := k.idleSpans(end)
	excuses := k.idleExcuses(end)
	for _, g := range spans {
		length := g.to.Sub(g.from)
		unexcused := longestUncovered(g.from, g.to, excuses)
		k.stats.IdleWaiting += length
		k.stats.IdleLongest = max(k.stats.IdleLongest, length)
		k.stats.IdleUnexcused = max(k.stats.IdleUnexcused, unexcused)
		if unexcused > bound {
			k.violate(g.from, "idle", fmt.Sprintf("the lock stayed free for %s while csmutex waiters waited (%s of it unexcused; the bound is %s)",
				length.Round(time.Millisecond), unexcused.Round(time.Millisecond), bound.Round(time.Millisecond)))
		}
	}
	k.stats.IdleSpans = len(spans)
	k.stats.IdleBound = bound
}

// idleSpans are the spans, before end, during which the lock was absent and a live csmutex
// party waited for it. A crashed party stops waiting when it crashes.
func (k *Checker) idleSpans(end time.Time) []idleSpan {
	type edge struct {
		at    time.Time
		delta int // waiting parties
		lock  int // 1: present, -1: absent
	}
	var edges []edge
	for _, s := range k.idle.waits {
		to := s.to
		if to.IsZero() || to.After(end) {
			to = end
		}
		if !s.proc.crashAt.IsZero() && s.proc.crashAt.Before(to) {
			to = s.proc.crashAt
		}
		if to.After(s.from) {
			edges = append(edges, edge{at: s.from, delta: 1}, edge{at: to, delta: -1})
		}
	}
	for _, e := range k.idle.lock {
		l := -1
		if e.present {
			l = 1
		}
		edges = append(edges, edge{at: e.at, lock: l})
	}
	// Stable: lock events keep their apply order at equal times.
	slices.SortStableFunc(edges, func(a, b edge) int { return a.at.Compare(b.at) })
	var (
		spans   []idleSpan
		waiting int
		present bool
		from    time.Time
	)
	for i, e := range edges {
		waiting += e.delta
		switch e.lock {
		case 1:
			present = true
		case -1:
			present = false
		}
		if i+1 < len(edges) && edges[i+1].at.Equal(e.at) {
			continue // judge the state once every edge of this instant is in
		}
		idle := !present && waiting > 0
		switch {
		case idle && from.IsZero():
			from = e.at
		case !idle && !from.IsZero():
			spans = append(spans, idleSpan{from, e.at})
			from = time.Time{}
		}
	}
	if !from.IsZero() && end.After(from) {
		spans = append(spans, idleSpan{from, end})
	}
	return spans
}

// idleExcuses are the windows of the run whose delays the room cannot help (see above).
func (k *Checker) idleExcuses(end time.Time) []window {
	ws := slices.Clone(k.idle.calls)
	for _, p := range k.w.sc.Procs {
		if p.Legacy {
			continue
		}
		ws = append(ws, p.Pauses...)
		ws = append(ws, p.Partitions...)
		if p.CrashAt > 0 {
			at := epoch.Add(p.CrashAt)
			ws = append(ws, window{at, at.Add(p.Lease)})
		}
	}
	return append(ws, k.deadFront(end)...)
}

// deadFront replays the room and returns the windows during which a dead entry stood at its
// front, each cut off once waiters must have skipped it: the entry's ttl (the ttls of the
// whole dead run at the front) after it reached the front, after the latest join or after
// the latest call that met a fault, whichever was last, plus one read interval. A waiter
// times the front from its own first look at it, and a failed or slow call of its own
// postpones that look.
func (k *Checker) deadFront(end time.Time) []window {
	readEvery := k.w.sc.maxLease() / 3
	// Every instant at which an entry's liveness may change: room writes, and the starts
	// and ends of waits (a crash ends one too).
	type event struct {
		at   time.Time
		room *roomWrite
		wait *waitSpan
		end  bool
		look bool // a call that failed or was slow ended: its waiter may look only now
	}
	var evs []event
	for _, c := range k.idle.calls {
		evs = append(evs, event{at: c.to, look: true})
	}
	for i := range k.idle.room {
		evs = append(evs, event{at: k.idle.room[i].at, room: &k.idle.room[i]})
	}
	for i := range k.idle.waits {
		s := &k.idle.waits[i]
		evs = append(evs, event{at: s.from, wait: s})
		to := s.to
		if to.IsZero() {
			to = end
		}
		if !s.proc.crashAt.IsZero() && s.proc.crashAt.Before(to) {
			to = s.proc.crashAt
		}
		evs = append(evs, event{at: to, wait: s, end: true})
	}
	slices.SortStableFunc(evs, func(a, b event) int { return a.at.Compare(b.at) })

	data := map[string]string{}    // the room as the server holds it
	owner := map[string]*Process{} // entry id → the process that wrote it
	// A process waits in one room at a time: its current one is the last it joined since
	// its wait began; an entry it sent before that (landing late) is an old room's.
	current := map[*Process]string{}
	since := map[*Process]time.Time{}
	waiting := map[*Process]int{}
	var (
		lastJoin   time.Time // a joiner times the front from its first look
		lastLook   time.Time // a failed or slow call postpones its waiter's first look
		front      string    // raw value of the front entry
		frontSince time.Time
		out        []window
	)
	for i, e := range evs {
		switch {
		case e.look:
			lastLook = e.at
		case e.room != nil:
			data[e.room.key] = e.room.value
			if id := entryID(e.room.value); id != "" {
				if _, seen := owner[id]; !seen {
					owner[id] = e.room.proc
					if !e.room.sent.Before(since[e.room.proc]) {
						current[e.room.proc] = id
					}
					lastJoin = e.at
				}
			}
		case e.end:
			waiting[e.wait.proc]--
			current[e.wait.proc], since[e.wait.proc] = "", e.at // its room ended with its wait (or a member's did)
		default:
			if waiting[e.wait.proc] == 0 {
				current[e.wait.proc], since[e.wait.proc] = "", e.at // a new Lock call: a new room
			}
			waiting[e.wait.proc]++
		}
		next := end
		if i+1 < len(evs) {
			next = evs[i+1].at
		}
		if !next.After(e.at) {
			continue
		}
		var kvs []cloudshell.SandboxDataKeyValue
		for key, v := range data {
			kvs = append(kvs, cloudshell.SandboxDataKeyValue{Key: key, Value: v})
		}
		entries := mutex.Waiters(kvs)[mutex.DefaultName]
		var (
			ttls time.Duration
			dead int
		)
		for _, w := range entries {
			p := owner[w.ID]
			if p != nil && current[p] == w.ID && waiting[p] > 0 && !p.crashed(e.at) {
				break
			}
			ttls += w.TTL
			dead++
		}
		raw := ""
		if len(entries) > 0 {
			raw = entries[0].Raw
		}
		if raw != front {
			front, frontSince = raw, e.at
		}
		if dead == 0 {
			continue
		}
		until := later(frontSince, later(lastJoin, lastLook)).Add(ttls + readEvery)
		if until.After(next) {
			until = next
		}
		if until.After(e.at) {
			out = append(out, window{e.at, until})
		}
	}
	return out
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// entryID is the waiter id in a room entry ("" for a cleared one).
func entryID(value string) string {
	for _, f := range strings.Fields(value) {
		if id, ok := strings.CutPrefix(f, "id="); ok {
			return id
		}
	}
	return ""
}

// longestUncovered is the longest stretch of [from, to) outside every window.
func longestUncovered(from, to time.Time, ws []window) time.Duration {
	var cover []window
	for _, w := range ws {
		if w.to.After(from) && w.from.Before(to) {
			cover = append(cover, w)
		}
	}
	slices.SortFunc(cover, func(a, b window) int { return a.from.Compare(b.from) })
	longest, at := time.Duration(0), from
	for _, w := range cover {
		if w.from.After(at) {
			longest = max(longest, w.from.Sub(at))
		}
		if w.to.After(at) {
			at = w.to
		}
	}
	if to.After(at) {
		longest = max(longest, to.Sub(at))
	}
	return longest
}
