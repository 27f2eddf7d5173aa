package mutex

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
)

// maxBreakDepth only guards the stack against a pathological chain of dead break locks: each
// level needs one more breaker to fail or die while breaking the level above, so a real
// chain is as long as the failures behind it. Break-lock aliases do not grow with the depth
// (see breakLock), and a chain is unwound in one attempt once its levels are stale.
const maxBreakDepth = 1000

// breakInfix joins a lock's name and the id of the holder instance being broken into the
// alias of its break lock: "<lock>.break.<token>". Lock names may not contain it.
const breakInfix = ".break."

// waiter is one Lock call's memory across attempts: what it has seen of each holder and
// since when (by its own clock), and the tokens of its adds whose outcome was unknown.
type waiter struct {
	m       *Mutex
	pending map[string]time.Time
	// abandoned holds tokens of our own adds that took the lock too late to be used: they
	// are treated like any other holder, and expire.
	abandoned map[string]bool
	seen      map[string]sighting
	// lastRead is when the last read of the lock returned, and lastHolder what it showed:
	// between reads a collision alone says "still held" (see contended).
	lastRead   time.Time
	lastHolder Owner
}

// sighting is an observation of a lock: the holder's record and heartbeat as last read, and
// the time by which this waiter had certainly seen exactly that pair. A holder is stale when
// a later read, sent more than its lease after that time, still shows the pair. Heartbeat
// values never repeat (they carry a sequence number), so an unchanged pair means no
// renewal landed in between, even if reads failed meanwhile.
type sighting struct {
	raw, heartbeat string
	since          time.Time
}

func newWaiter(m *Mutex) *waiter {
	return &waiter{m: m, pending: map[string]time.Time{}, abandoned: map[string]bool{}, seen: map[string]sighting{}}
}

// contended handles a collision: read who holds the lock, and break it if it is stale.
//
// The collision itself says the lock is held, so a waiter reads the holder only when the read
// can change what it does: on its first collision, while an add of its own has an unknown
// outcome (it may hold the lock itself), and once per staleness period of the holder it last
// saw (rereadAfter), which is when that holder could first be judged stale. Every other
// attempt costs one call, the add.
func (w *waiter) contended(ctx context.Context, wait bool) (outcome, error) {
	m := w.m
	if wait && len(w.pending) == 0 && !w.readDue() {
		return outcome{holder: w.lastHolder}, nil
	}
	d, err := m.api.GetReservationDetails(ctx, m.resID, true)
	if err != nil {
		return outcome{}, m.callFailure(ctx, err)
	}
	w.observeBreakLocks(d)
	holder, present := holderIn(d, m.cfg.name)
	w.lastRead, w.lastHolder = m.cfg.clock.Now(), holder
	if !present {
		w.lastRead = time.Time{}
		return outcome{retryNow: true}, nil // released between our add and our read
	}
	if sent, ok := w.pending[holder.Token]; ok && !holder.Legacy {
		// An earlier add of ours whose answer was lost did land: the token is ours alone.
		delete(w.pending, holder.Token)
		if out := m.handOver(w, holder, sent); out.lock != nil {
			out.lock.background.Go(func() { m.collectGarbage(ctx, d) })
			return out, nil
		}
	}
	if wait && w.stale(ctx, m.cfg.name, holder) {
		broke := w.breakLock(ctx, m.cfg.name, holder, 0)
		return outcome{holder: holder, retryNow: broke}, nil
	}
	return outcome{holder: holder}, nil
}

// readDue reports whether the holder should be read again (rereadAfter).
func (w *waiter) readDue() bool {
	return w.lastRead.IsZero() || w.m.cfg.clock.Now().Sub(w.lastRead) >= w.rereadAfter()
}

// rereadAfter is how long a waiter goes on trusting its last read of the holder: the
// holder's staleness period (it cannot be judged stale before a read that late), and at most
// DefaultLease, so that a holder that never expires (legacy, lease 0) is still shown as it
// changes.
func (w *waiter) rereadAfter() time.Duration {
	h := w.lastHolder
	switch {
	case h.Legacy && w.m.cfg.legacyMaxAge > 0:
		return min(w.m.cfg.legacyMaxAge, DefaultLease)
	case !h.Legacy && h.Lease > 0:
		return min(h.Lease, DefaultLease)
	}
	return DefaultLease
}

// holderIn returns the holder of alias in d, if the service is there.
func holderIn(d *cloudshell.ReservationDetails, alias string) (Owner, bool) {
	svc, ok := d.Service(alias)
	if !ok {
		return Owner{}, false
	}
	raw, _ := svc.Attribute(OwnerAttribute)
	return parseOwner(raw), true
}

func (w *waiter) holderOf(ctx context.Context, alias string) (Owner, bool, error) {
	d, err := w.m.api.GetReservationDetails(ctx, w.m.resID, true)
	if err != nil {
		return Owner{}, false, w.m.callFailure(ctx, err)
	}
	o, ok := holderIn(d, alias)
	return o, ok, nil
}

// stale reports whether this waiter has watched holder of alias for longer than its lease
// without seeing a heartbeat. Nothing but this process's own clock is consulted.
//
// Times are taken on the safe side of each read: a pair counts as seen from the moment its
// read returned (it may have become visible only just before), and as still there at the
// moment the confirming read was sent. A slow read therefore never stretches how long the
// pair seems to have been unchanged.
func (w *waiter) stale(ctx context.Context, alias string, holder Owner) bool {
	m := w.m
	limit := holder.Lease
	s, seen := w.seen[alias]
	seen = seen && s.raw == holder.Raw
	switch {
	case holder.Legacy && m.cfg.legacyMaxAge <= 0:
		return false // legacy holders send no heartbeat; breaking them is opt-in
	case holder.Legacy:
		limit = m.cfg.legacyMaxAge
	case holder.Lease <= 0:
		return false // the holder asked never to expire
	case seen && m.cfg.clock.Now().Sub(s.since) <= limit:
		// Within a lease of the first sighting the heartbeat cannot prove anything yet, and
		// since heartbeat values never repeat, reading it later tells whether it changed in
		// between. Skipping the read keeps waiters to one heartbeat read per lease.
		return false
	}
	sent := m.cfg.clock.Now()
	heartbeat := ""
	if !holder.Legacy && !strings.Contains(alias, breakInfix) { // breakers never renew
		values, err := m.api.GetSandboxData(ctx, m.resID)
		if err != nil {
			return false // no evidence either way: decide on a later attempt
		}
		for _, kv := range values {
			if kv.Key == heartbeatKey(holder.Token) {
				heartbeat = kv.Value
			}
		}
	}
	if !seen || s.heartbeat != heartbeat {
		w.seen[alias] = sighting{raw: holder.Raw, heartbeat: heartbeat, since: m.cfg.clock.Now()}
		return false
	}
	return sent.Sub(s.since) > limit
}

// observeBreakLocks starts watching every break lock of this lock that a details read shows,
// so that by the time the lock it targets is found stale, a break lock left behind by a
// breaker that failed or died has been watched for as long too: the levels of a chain of
// dead break locks expire together instead of one lease after another. Break locks carry no
// heartbeat (their holders finish within their lease), so the record alone is the pair.
func (w *waiter) observeBreakLocks(d *cloudshell.ReservationDetails) {
	now := w.m.cfg.clock.Now()
	prefix := w.m.cfg.name + breakInfix
	for _, s := range d.Services {
		if !strings.HasPrefix(s.Alias, prefix) {
			continue
		}
		raw, _ := s.Attribute(OwnerAttribute)
		if cur, ok := w.seen[s.Alias]; !ok || cur.raw != raw {
			w.seen[s.Alias] = sighting{raw: raw, since: now}
		}
	}
}

// breakID names the holder instance a break lock targets: its token, or for a legacy
// holder (which has none) a hash of its record.
func breakID(o Owner) string {
	if !o.Legacy {
		return o.Token
	}
	sum := sha256.Sum256([]byte(o.Raw))
	return "legacy-" + hex.EncodeToString(sum[:4])
}

// breakLock removes the stale holder of alias (the lock, or one of its break locks), and only
// that holder. Breakers serialise on a break lock whose alias names the stale instance
// ("<lock>.break.<id>", with <id> the stale holder's token): exactly one waiter wins it, and
// because tokens are unique that alias only ever targets this one instance, whichever alias
// the instance lives at. So a break lock left by a crashed or failed breaker is itself broken
// the same way (by "<lock>.break.<its holder's token>"), aliases stay the same length at any
// depth, and a late break-lock holder finds the instance gone and does nothing. The break lock has the lease
// of any lock we add, and every write made under it (the removal of the stale lock, the
// release of the break lock) is sent and answered before its loss point. Reports whether
// the lock was freed, so the caller retries at once.
func (w *waiter) breakLock(ctx context.Context, alias string, stale Owner, depth int) bool {
	m := w.m
	if depth >= maxBreakDepth {
		return false
	}
	breakAlias := m.cfg.name + breakInfix + breakID(stale)
	var (
		me   Owner
		sent time.Time
		err  error
	)
	// A dead break lock freed one level down is retried at once, so that a chain of them
	// unwinds in one attempt rather than one level per retry interval.
	for try := 0; try < 2; try++ {
		me = m.newOwner()
		sent = m.cfg.clock.Now()
		err = m.api.AddServiceToReservation(ctx, m.resID, m.cfg.model, breakAlias,
			[]cloudshell.AttributeNameValue{{Name: OwnerAttribute, Value: me.record()}})
		if !cloudshell.IsAliasCollision(err) {
			break
		}
		// Another waiter is breaking it, or a breaker died holding the break lock.
		b, ok, rerr := w.holderOf(ctx, breakAlias)
		if rerr != nil || !ok || !w.stale(ctx, breakAlias, b) || !w.breakLock(ctx, breakAlias, b, depth+1) {
			return false
		}
	}
	switch {
	case err == nil:
	case cloudshell.IsAliasCollision(err):
		return false
	case errors.Is(err, cloudshell.ErrAmbiguous):
		b, ok, rerr := w.holderOf(ctx, breakAlias)
		if rerr != nil || !ok || b.Token != me.Token {
			return false // if it lands later, it is garbage once the stale lock is gone
		}
	default:
		m.cfg.log.Debug().Err(err).Str("lock", breakAlias).Msg("could not take the break lock")
		return false
	}
	bctx, cancel := m.leaseContext(ctx, sent)
	defer cancel()
	// The break lock is released only once a removal made under it can no longer land
	// (shared settler); if that cannot happen within its lease, it is left to be broken.
	var settle settler
	defer w.release(bctx, breakAlias, me, &settle)

	// Re-read right before every removal: only the instance judged stale may go.
	freed := false
	err = m.removeIf(bctx, alias, &settle, func(d *cloudshell.ReservationDetails, _ bool) error {
		if current, present := holderIn(d, alias); !present || current.Raw != stale.Raw {
			freed = true // gone, or it changed hands meanwhile: nothing (more) to break
			return errSettled
		}
		return nil
	})
	if err != nil {
		m.cfg.log.Warn().Err(err).Str("lock", alias).Msg("could not remove a stale lock")
		return false
	}
	if !freed {
		m.cfg.log.Warn().Str("lock", alias).Str("reservation", m.resID).Str("stale_holder", stale.String()).
			Str("broken_by", me.String()).Dur("unchanged_for_ms", m.cfg.clock.Now().Sub(w.seen[alias].since)).Msg("broke a stale lock")
	}
	delete(w.seen, alias)
	return true
}

// leaseContext bounds writes that are only safe while a lock whose lease started at sent is
// ours: they must be sent and answered before its loss point, or not at all.
func (m *Mutex) leaseContext(ctx context.Context, sent time.Time) (context.Context, context.CancelFunc) {
	base := context.WithoutCancel(ctx)
	if m.cfg.lease <= 0 {
		return context.WithTimeout(base, m.cfg.releaseTimeout)
	}
	left := sent.Add(lossAfter(m.cfg.lease)).Sub(m.cfg.clock.Now())
	return context.WithTimeout(base, min(left, m.cfg.releaseTimeout))
}

// release removes a break lock we hold, after checking the record is still ours, retrying
// failures until ctx (its lease bound) ends. One that cannot be removed is cleaned up by the
// next acquirer once its target is gone (collectGarbage), or broken like any stale lock.
func (w *waiter) release(ctx context.Context, alias string, me Owner, settle *settler) {
	err := w.m.removeIf(ctx, alias, settle, func(d *cloudshell.ReservationDetails, _ bool) error {
		if cur, ok := holderIn(d, alias); !ok || cur.Token != me.Token {
			return errSettled
		}
		return nil
	})
	if err != nil {
		w.m.cfg.log.Warn().Err(err).Str("lock", alias).Msg("could not remove our break lock; it is cleaned up once its target is gone")
	}
}

// collectGarbage removes break locks of this lock whose target instance is gone: no service of
// this lock (the lock itself or another break lock) carries the target token any more. No
// breaker can still use such a break lock (it re-reads the target before removing anything,
// and tokens never come back), so removing it is safe without any lease; and once it is gone,
// break locks aimed at its own holder are garbage too. A break lock that targets a legacy
// holder is only collected once a csmutex holder has the lock, because legacy records can
// repeat. It runs in the background of a holder (it must not delay the critical section) and
// only ever costs calls when there is garbage.
func (m *Mutex) collectGarbage(ctx context.Context, d *cloudshell.ReservationDetails) {
	prefix := m.cfg.name + breakInfix
	type lockSvc struct {
		alias, target string // target: the id after the last ".break."
		holder        Owner
	}
	var locks []lockSvc
	for _, s := range d.Services {
		if s.ServiceName != m.cfg.model || (s.Alias != m.cfg.name && !strings.HasPrefix(s.Alias, prefix)) {
			continue
		}
		raw, _ := s.Attribute(OwnerAttribute)
		l := lockSvc{alias: s.Alias, holder: parseOwner(raw)}
		if i := strings.LastIndex(s.Alias, breakInfix); i >= 0 {
			l.target = s.Alias[i+len(breakInfix):]
		}
		locks = append(locks, l)
	}
	garbage := map[string]bool{}
	for changed := true; changed; {
		changed = false
		live := map[string]bool{} // ids of holders of the services not (yet) found garbage
		for _, l := range locks {
			if !garbage[l.alias] {
				live[breakID(l.holder)] = true
			}
		}
		main, held := holderIn(d, m.cfg.name)
		for _, l := range locks {
			if l.target == "" || garbage[l.alias] {
				continue
			}
			if strings.HasPrefix(l.target, "legacy-") {
				if held && !main.Legacy {
					garbage[l.alias], changed = true, true
				}
				continue
			}
			if !live[l.target] {
				garbage[l.alias], changed = true, true
			}
		}
	}
	gctx, cancel := m.cleanupContext(ctx)
	defer cancel()
	for _, l := range locks {
		if !garbage[l.alias] {
			continue
		}
		if err := m.api.RemoveServicesFromReservation(gctx, m.resID, []string{l.alias}); err != nil {
			m.cfg.log.Debug().Err(err).Str("lock", l.alias).Msg("could not remove a dead break lock")
			continue
		}
		m.cfg.log.Info().Str("lock", l.alias).Msg("removed a dead break lock")
	}
}

// heartbeatKey is the sandbox-data key a holder renews its lease under. It is named after
// the holder's token, so no other holder ever writes it: a paused holder that wakes up
// cannot overwrite a newer holder's heartbeat.
func heartbeatKey(token string) string { return "csmutex.heartbeat." + token }

// withinLease reports whether a lease that started at sent is still safely ours.
func (m *Mutex) withinLease(sent time.Time) bool {
	return m.cfg.lease <= 0 || m.cfg.clock.Now().Sub(sent) < lossAfter(m.cfg.lease)
}
