package mutex

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/sethvargo/go-retry"
)

// The waiting room: a queue of csmutex waiters kept in the reservation's sandbox data, so that
// waiters take turns in arrival order and most of them poll slowly.
//
// It is advisory. Only the add of the lock service ever grants the lock, so nothing here can
// put two holders in the lock, and legacy drivers (which do not queue) keep competing by
// adding as they always did. The room decides only who tries: the waiter at its head polls
// the lock with adds, quickly while the holder is new and more slowly as the hold grows; the
// others read the room at an interval that grows with their position, and never add. A waiter
// that cannot use the room (it is full, or sandbox data fails) polls as if there were none.
//
// Each waiter writes one entry, "t=<ticket> id=<id> seq=<n> ttl=<d>", under one of
// queueSlots keys of its lock, and clears it (writes "") when it stops waiting. Tickets are one
// more than the largest seen when joining, ties broken by slot, so order is arrival order as
// the server saw it, give or take concurrent joins. An entry that a reader has seen at the
// front, unchanged, for longer than its ttl is dead (its waiter crashed): it is skipped, and its slot
// may be reused. Only the entry at the front is timed, so only the head rewrites its entry
// (every ttl/3) to stay alive.
const (
	// maxTicket bounds the tickets a reader accepts: far more joins than a reservation will
	// ever see, and far from where place's arithmetic overflows.
	maxTicket = 1 << 40
	// queueSlots bounds what the room can leave behind: at most this many sandbox-data keys
	// per lock name, whatever happens. Waiters beyond it poll without the room.
	queueSlots  = 64
	queuePrefix = "csmutex.queue."
)

// WithQueue turns the waiting room on or off (default on). Off, waiters poll by adding at
// every retry interval, as the public snippet does: no sandbox data is written while waiting,
// and turns are taken at random.
func WithQueue(enabled bool) Option { return func(c *config) { c.noQueue = !enabled } }

func queueKey(lock string, slot int) string { return fmt.Sprintf("%s%s.%02d", queuePrefix, lock, slot) }

// roomEntry is one waiter's entry as read.
type roomEntry struct {
	slot     int
	ticket   int64
	priority int
	floor    int64 // in half places; see place
	id       string
	ttl      time.Duration
	raw      string
}

// Priorities (WithPriority) order the room by place, counted in half places:
// 2*(ticket - priorityStep*priority), but never ahead of the entry that was at the front
// when the waiter joined (floor, one half place behind it: the head keeps its turn, since it
// polls the lock and no longer reads the room). A waiter of priority p so goes in as if it
// had arrived priorityStep*p joins earlier. That is ageing without any clock: every later
// join takes a larger ticket, so a waiter can be overtaken only by higher-priority waiters
// that join within priorityStep*(their priority - its priority) joins after it, and is never
// starved. Ties go to the earlier ticket, then the lower slot.
const (
	priorityStep = 16
	// MaxPriority is the highest priority WithPriority accepts.
	MaxPriority = 9
)

func (e roomEntry) place() int64 {
	return max(2*(e.ticket-priorityStep*int64(e.priority)), e.floor)
}

func (e roomEntry) before(o roomEntry) bool {
	if e.place() != o.place() {
		return e.place() < o.place()
	}
	if e.ticket != o.ticket {
		return e.ticket < o.ticket
	}
	// Equal tickets come from joins at the same time. Each slot holds one entry, so the slot
	// orders them the same way for every reader; ids are random, and would make the order
	// (and a seeded simulation) differ from run to run.
	if e.slot != o.slot {
		return e.slot < o.slot
	}
	return e.id < o.id
}

// WithPriority gives this Mutex's waiters a priority in the waiting room, 0 (the default)
// to MaxPriority: a setup orchestration ahead of routine health checks. A waiter of priority
// p goes in as if it had arrived 16·p waiters earlier, so lower priorities age ahead of later
// arrivals and are never starved. Priorities order csmutex waiters only: legacy drivers do
// not queue.
func WithPriority(p int) Option { return func(c *config) { c.priority = p } }

// parseRoom reads the entries of lock's room from sandbox data, and which slots exist.
func parseRoom(lock string, data []cloudshell.SandboxDataKeyValue) (entries []roomEntry, used [queueSlots]bool) {
	prefix := queuePrefix + lock + "."
	for _, kv := range data {
		rest, ok := strings.CutPrefix(kv.Key, prefix)
		if !ok || len(rest) != 2 {
			continue
		}
		slot, err := strconv.Atoi(rest)
		if err != nil || slot < 0 || slot >= queueSlots {
			continue
		}
		if kv.Value == "" {
			continue
		}
		used[slot] = true
		e := roomEntry{slot: slot, raw: kv.Value}
		for _, f := range strings.Fields(kv.Value) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "t":
				e.ticket, _ = strconv.ParseInt(v, 10, 64)
			case "id":
				e.id = v
			case "ttl":
				e.ttl, _ = time.ParseDuration(v)
			case "p":
				if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= MaxPriority {
					e.priority = n
				}
			case "f":
				e.floor, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		if e.id == "" || e.ttl <= 0 || e.ticket < 1 || e.ticket > maxTicket || e.floor < 0 || e.floor > 2*maxTicket {
			// Not an entry anyone refreshes, or numbers no waiter writes (a ticket near the
			// int64 limit would make the next joiner's overflow and put it in front): ignore
			// it, and its slot may be reused.
			continue
		}
		used[slot] = true
		entries = append(entries, e)
	}
	return entries, used
}

// room is one Lock call's place in the waiting room.
type room struct {
	m        *Mutex
	id       string
	slot     int // -1: not in the room
	ticket   int64
	floor    int64
	seq      int
	ttl      time.Duration
	wrote    time.Time            // when our entry was last written
	pos      int                  // our position when last read; 1 is the head
	headAt   time.Time            // when we became the head
	seen     map[string]time.Time // the front entry's value → when we first saw it at the front
	dead     map[string]bool      // entry values judged dead (their slots may be reused)
	buried   []int                // slots of entries just judged dead, to clear for everyone
	frontFor time.Duration        // how long the current front entry has been seen unchanged
	frontTTL time.Duration        // and its ttl
	off      bool                 // the room is full or failing: poll without it
	failures int
	// unconfirmed: we joined a room that looked empty, so we think we head it; others who
	// found the lock held at the same moment think so too. One read settles it (confirmHead).
	unconfirmed bool
	spread      int // where our search for a free slot starts (slotSpread)
}

// maxRoomFailures: after this many failed room calls in a row, a waiter polls without the
// room for the rest of its wait; the room is an optimisation, never a dependency.
const maxRoomFailures = 3

func (m *Mutex) newRoom() *room {
	if m.cfg.noQueue {
		return nil
	}
	ttl := m.cfg.lease
	if ttl <= 0 {
		ttl = DefaultLease
	}
	return &room{m: m, id: newToken(), slot: -1, ttl: ttl, seen: map[string]time.Time{}, dead: map[string]bool{},
		spread: m.slotSpread()}
}

// behind reports whether this waiter is in the room and not at its head: it reads the room
// instead of adding.
func (q *room) behind() bool { return q != nil && !q.off && q.slot >= 0 && q.pos > 1 }

// stuck reports whether the entry at the front has stayed unchanged for half its ttl: a
// live head rewrites it every third of it, so the room may be wedged (its head gone, or
// unable to reach CloudShell). Waiters behind then try the lock themselves, once per look
// at the holder, until the front is judged dead: the room never stops anyone for long.
func (q *room) stuck() bool { return q.frontTTL > 0 && q.frontFor >= q.frontTTL/2 }

// position is this waiter's place in the room (0: not queued).
func (q *room) position() int {
	if q == nil || q.off || q.slot < 0 {
		return 0
	}
	return q.pos
}

func (q *room) value() string {
	v := fmt.Sprintf("t=%d id=%s seq=%d ttl=%s", q.ticket, q.id, q.seq, q.ttl)
	if p := q.m.cfg.priority; p > 0 {
		v += fmt.Sprintf(" p=%d f=%d", p, q.floor)
	}
	return v
}

func (q *room) write(ctx context.Context, value string) error {
	m := q.m
	err := m.api.SetSandboxData(ctx, m.resID, []cloudshell.SandboxDataKeyValue{{Key: queueKey(m.cfg.name, q.slot), Value: value}})
	if err == nil {
		q.wrote = m.cfg.clock.Now()
	}
	return err
}

func (q *room) failed(err error) {
	q.failures++
	if q.failures >= maxRoomFailures {
		q.m.cfg.log.Debug().Err(err).Str("lock", q.m.cfg.name).Msg("waiting room unusable; polling without it")
		q.off = true
	}
}

// join enters the room after the lock was found held.
func (q *room) join(ctx context.Context) {
	if q == nil || q.off || q.slot >= 0 {
		return
	}
	data, err := q.m.api.GetSandboxData(ctx, q.m.resID)
	if err != nil {
		q.failed(err)
		return
	}
	q.enter(ctx, data)
}

// enter takes a free slot, and the next ticket unless it has one: a waiter whose entry was
// overwritten by a concurrent joiner (or cleared while it was paused) keeps its place.
func (q *room) enter(ctx context.Context, data []cloudshell.SandboxDataKeyValue) {
	entries, used := parseRoom(q.m.cfg.name, data)
	live := q.alive(entries)
	if q.ticket == 0 {
		for _, e := range entries {
			q.ticket = max(q.ticket, e.ticket)
		}
		q.ticket++
		if q.m.cfg.priority > 0 && len(live) > 0 {
			sortRoom(live)
			q.floor = live[0].place() + 1 // never ahead of the front: the head keeps its turn
		}
	}
	for _, e := range entries {
		if !slices.ContainsFunc(live, func(l roomEntry) bool { return l.slot == e.slot }) {
			used[e.slot] = false // dead: its slot may be reused
		}
	}
	// The first free slot from where our search starts (slotSpread): waiters that join at
	// once, seeing the same room, so rarely pick the same slot. One that was overwritten all
	// the same finds its entry gone at its next read (confirmHead, if it thought it headed
	// the room) and joins again, keeping its ticket.
	q.slot = -1
	for i := range queueSlots {
		if s := (q.spread + i) % queueSlots; !used[s] {
			q.slot = s
			break
		}
	}
	if q.slot < 0 {
		q.off = true // full: more than queueSlots waiters
		return
	}
	q.seq++
	if err := q.write(ctx, q.value()); err != nil {
		// It may have landed: keep the slot so that leaving clears it.
		q.failed(err)
		q.pos = 0
		return
	}
	q.failures = 0
	q.place(append(live, roomEntry{slot: q.slot, ticket: q.ticket, priority: q.m.cfg.priority, floor: q.floor, id: q.id, ttl: q.ttl}))
	q.unconfirmed = q.pos == 1
	q.bury(ctx)
}

// confirmHead reads the room once after we joined it as its head: waiters that found the
// lock held at the same moment all saw an empty room, so each thinks it heads it, and a head
// polls the lock and never reads the room. Without this read they would all poll, and take
// their turns at random. It costs one read per wait that starts in an empty room.
func (q *room) confirmHead(ctx context.Context) {
	if q == nil || q.off || !q.unconfirmed {
		return
	}
	_ = q.read(ctx) // a failed read counts towards giving up the room; we stay head meanwhile
}

// alive drops dead entries. Only the entry at the front of the room (ahead of us) is timed:
// from when this waiter first saw it there, it must change within its ttl, which the head
// does by refreshing its entry every ttl/3. Waiters further back need not write anything
// while they wait; a crashed one is found out once it reaches the front, one ttl later.
func (q *room) alive(entries []roomEntry) []roomEntry {
	sortRoom(entries)
	now := q.m.cfg.clock.Now()
	q.frontFor, q.frontTTL = 0, 0
	var live []roomEntry
	front := true
	seen, dead := map[string]time.Time{}, map[string]bool{}
	for _, e := range entries {
		switch {
		case e.id == q.id:
			front = false
		case q.dead[e.raw]:
			dead[e.raw] = true
			continue
		case front:
			since, ok := q.seen[e.raw]
			if !ok {
				since = now
			}
			if now.Sub(since) > e.ttl {
				dead[e.raw] = true
				q.buried = append(q.buried, e.slot)
				continue // its waiter is gone: the next entry is the front
			}
			seen[e.raw] = since
			q.frontFor, q.frontTTL = now.Sub(since), e.ttl
			front = false
		}
		live = append(live, e)
	}
	q.seen, q.dead = seen, dead
	return live
}

func sortRoom(entries []roomEntry) {
	slices.SortFunc(entries, func(a, b roomEntry) int {
		if a.before(b) {
			return -1
		}
		if b.before(a) {
			return 1
		}
		return 0
	})
}

// place sets our position among live entries.
func (q *room) place(live []roomEntry) {
	sortRoom(live)
	was := q.pos
	q.pos = 0
	for i, e := range live {
		if e.id == q.id {
			q.pos = i + 1
		}
	}
	if q.pos == 1 && was != 1 {
		q.headAt = q.m.cfg.clock.Now()
	}
}

// read refreshes our position; it rejoins if our entry is gone (overwritten by a concurrent
// joiner, or cleared as dead after a long pause of ours).
func (q *room) read(ctx context.Context) error {
	data, err := q.m.api.GetSandboxData(ctx, q.m.resID)
	if err != nil {
		q.failed(err)
		return err
	}
	q.failures = 0
	entries, _ := parseRoom(q.m.cfg.name, data)
	if !slices.ContainsFunc(entries, func(e roomEntry) bool { return e.id == q.id && e.slot == q.slot }) {
		q.slot = -1
		q.spread++ // not where the waiter that overwrote us searched from
		q.enter(ctx, data)
		return nil
	}
	q.unconfirmed = false
	q.place(q.alive(entries))
	q.bury(ctx)
	return nil
}

// bury clears the entries this waiter just judged dead, so that no other waiter has to wait
// out their ttl again. Without compare-and-set, a clearing may hit an entry whose waiter was
// only paused and has just refreshed it: that waiter finds its entry gone and joins again,
// at the back: fairness lost, nothing else.
func (q *room) bury(ctx context.Context) {
	slots := q.buried
	q.buried = nil
	for _, slot := range slots {
		err := q.m.api.SetSandboxData(ctx, q.m.resID, []cloudshell.SandboxDataKeyValue{{Key: queueKey(q.m.cfg.name, slot), Value: ""}})
		if err != nil {
			q.m.cfg.log.Debug().Err(err).Str("lock", q.m.cfg.name).Msg("could not clear a dead waiting-room entry")
		}
	}
}

// refresh rewrites the head's entry when a third of its ttl has passed, so that nobody
// judges it dead (only the front entry is timed, see alive).
func (q *room) refresh(ctx context.Context) {
	if q == nil || q.off || q.slot < 0 || q.pos != 1 || q.m.cfg.clock.Now().Sub(q.wrote) < q.ttl/3 {
		return
	}
	q.seq++
	if err := q.write(ctx, q.value()); err != nil {
		q.failed(err)
	}
}

// leave clears our entry. It runs however the wait ended, and retries failures within the
// release timeout: clearing is idempotent, so a retry is safe, and an entry left behind
// would hold up the room's front for its ttl.
func (q *room) leave(ctx context.Context) {
	if q == nil || q.slot < 0 {
		return
	}
	lctx, cancel := q.m.cleanupContext(ctx)
	defer cancel()
	// No jitter: one waiter's cleanup herds nobody, and a seeded simulation stays reproducible.
	backoff := retry.WithCappedDuration(q.ttl/6, retry.NewExponential(q.ttl/60))
	err := retry.Do(lctx, backoff, func(ctx context.Context) error {
		if err := q.write(ctx, ""); err != nil {
			return retry.RetryableError(err)
		}
		return nil
	})
	if err != nil {
		q.m.cfg.log.Debug().Err(err).Str("lock", q.m.cfg.name).Msg("could not leave the waiting room; the entry expires")
	}
	q.slot = -1
}

// interval is how long to wait before the next attempt, given the retry strategy's base.
// The head polls at a quarter of it while the holder is new, backing off to the base as the
// hold grows long (a long hold gains little from a fast handoff); a waiter at position k
// reads the room every k-1 bases (the next in line every base, so that it is polling by
// the time its turn comes), so the total load grows with the logarithm of the number of
// waiters, not with it.
func (q *room) interval(base time.Duration) time.Duration {
	switch p := q.position(); {
	case p == 0:
		return base
	case p == 1:
		held := q.m.cfg.clock.Now().Sub(q.headAt)
		return min(max(base/4, held/8), base)
	default:
		return min(base*time.Duration(p-1), q.ttl/3)
	}
}

// Waiter is one entry of a lock's waiting room, as Waiters reports it.
type Waiter struct {
	Ticket   int64
	Priority int
	// ID names the waiting Lock call (not its owner: the lock record, once it holds, does).
	ID string
	// TTL is how long the entry may stay unchanged at the front before waiters skip it.
	TTL time.Duration
	// Raw is the entry as stored; it changes only when the head refreshes it.
	Raw string
}

// Waiters reads the waiting rooms of every lock from a reservation's sandbox data
// (GetSandboxData): by lock name, each in the order its waiters take turns (priorities
// included). Dead entries cannot be told from live ones by one reading: an entry that stays
// unchanged at the front for longer than its TTL is one.
func Waiters(data []cloudshell.SandboxDataKeyValue) map[string][]Waiter {
	locks := map[string]bool{}
	for _, kv := range data {
		rest, ok := strings.CutPrefix(kv.Key, queuePrefix)
		if i := strings.LastIndexByte(rest, '.'); ok && i > 0 && len(rest)-i == 3 {
			locks[rest[:i]] = true
		}
	}
	out := map[string][]Waiter{}
	for lock := range locks {
		entries, _ := parseRoom(lock, data)
		sortRoom(entries)
		for _, e := range entries {
			out[lock] = append(out[lock], Waiter{Ticket: e.ticket, Priority: e.priority, ID: e.id, TTL: e.ttl, Raw: e.raw})
		}
		if len(out[lock]) == 0 {
			delete(out, lock)
		}
	}
	return out
}
