package mutex

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"time"
)

// A party that just released a contended lock and asks for it again would find it free
// (the waiters have not polled yet) and take it back: the waiting room would be fair only to
// those already in it. So a process remembers, per API client, reservation and lock, that it
// recently had to wait; its next Lock call then looks at the room before adding, and queues
// behind the waiters it finds. Without that memory, Lock adds at once: an uncontended lock
// costs no read of the room.

// maxContended bounds the memory, as maxVerified does.
const maxContended = 10000

type contendedKey struct {
	api         any
	resID, name string
}

// contended is what a process remembers of each lock, per API client and reservation.
var contended struct {
	sync.Mutex
	m map[contendedKey]*lockMemory
}

type lockMemory struct {
	until time.Time // it had waiters until then, as far as we know (sawContention)
	calls int       // Lock calls that made a waiting room (slotSpread)
}

// memory returns k's memory, to use with contended held.
func memory(k contendedKey) *lockMemory {
	if contended.m == nil || len(contended.m) >= maxContended {
		contended.m = map[contendedKey]*lockMemory{}
	}
	mem := contended.m[k]
	if mem == nil {
		mem = &lockMemory{}
		contended.m[k] = mem
	}
	return mem
}

func (m *Mutex) contendedKey() (contendedKey, bool) {
	v, ok := m.verifiedKey()
	return contendedKey{api: v.api, resID: m.resID, name: m.cfg.name}, ok
}

// sawContention remembers, for a lease, that this lock had waiters.
func (m *Mutex) sawContention() {
	k, ok := m.contendedKey()
	if !ok {
		return
	}
	ttl := m.cfg.lease
	if ttl <= 0 {
		ttl = DefaultLease
	}
	contended.Lock()
	defer contended.Unlock()
	memory(k).until = m.cfg.clock.Now().Add(ttl)
}

func (m *Mutex) expectContention() bool {
	k, ok := m.contendedKey()
	if !ok {
		return false
	}
	contended.Lock()
	defer contended.Unlock()
	mem := contended.m[k]
	return mem != nil && m.cfg.clock.Now().Before(mem.until)
}

// queueFirst is a Lock call's first step when the lock was recently contended: join the room
// if others wait in it (then the first add waits for our turn), else add at once.
func (q *room) queueFirst(ctx context.Context) {
	if q == nil || !q.m.expectContention() {
		return
	}
	data, err := q.m.api.GetSandboxData(ctx, q.m.resID)
	if err != nil {
		q.failed(err)
		return
	}
	entries, _ := parseRoom(q.m.cfg.name, data)
	if len(q.alive(entries)) > 0 {
		q.enter(ctx, data)
	}
}

// slotSpread is where a waiter starts its search for a free waiting-room slot: a hash of
// its owner name (by default host:pid, distinct per process; or the name WithOwner gives)
// plus how many Lock calls this API client made on the lock before (distinct among the calls
// of one process, a sidecar's for instance). Waiters that join at the same moment see the
// same room; starting from different slots they rarely overwrite each other (two processes
// given the same owner name may, and then sort it out by reading the room). It is derived,
// not random, and from the owner name alone, so that a seeded simulation, whose parties are
// named, replays the same slots in any process.
func (m *Mutex) slotSpread() int {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s\x00%s", m.ownerName(), m.cfg.name)
	n := 0
	if k, ok := m.contendedKey(); ok {
		contended.Lock()
		mem := memory(k)
		n = mem.calls
		mem.calls++
		contended.Unlock()
	}
	return int((h.Sum32() + uint32(n)) % queueSlots)
}
