package mutex

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
)

// maxBreakDepth bounds how many break locks deep a waiter goes. Depth 1 breaks a breaker
// that died mid-break; deeper needs breakers dying in a chain, and a waiter that gives up
// just tries again on its next attempt.
const maxBreakDepth = 3

// waiter is one Lock call's memory across attempts: what it has seen of each holder and
// since when (by its own clock), and the tokens of its adds whose outcome was unknown.
type waiter struct {
	m       *Mutex
	pending map[string]time.Time
	seen    map[string]sighting
}

// sighting is an observation of a lock: the holder's record and heartbeat as last read, and
// when this waiter first saw exactly that pair. A holder is stale when the pair has not
// changed for longer than its lease, timed from that first sighting. Heartbeat values never
// repeat (they carry a sequence number), so an unchanged pair means no renewal happened
// in between, even if reads failed meanwhile.
type sighting struct {
	raw, heartbeat string
	since          time.Time
}

func newWaiter(m *Mutex) *waiter {
	return &waiter{m: m, pending: map[string]time.Time{}, seen: map[string]sighting{}}
}

// contended handles a collision: read who holds the lock, and break it if it is stale.
func (w *waiter) contended(ctx context.Context, wait bool) (outcome, error) {
	m := w.m
	holder, present, err := w.holderOf(ctx, m.cfg.name)
	if err != nil {
		return outcome{}, err
	}
	if !present {
		return outcome{retryNow: true}, nil // released between our add and our read
	}
	if sent, ok := w.pending[holder.Token]; ok && !holder.Legacy {
		// An earlier add of ours whose answer was lost did land: the token is ours alone.
		delete(w.pending, holder.Token)
		if m.withinLease(sent) {
			return outcome{lock: m.held(holder, sent)}, nil
		}
		// Too old to adopt safely: waiters may already be breaking it. Let it expire.
	}
	if wait && w.stale(ctx, m.cfg.name, holder) {
		broke := w.breakLock(ctx, m.cfg.name, holder, 0)
		return outcome{holder: holder, retryNow: broke}, nil
	}
	return outcome{holder: holder}, nil
}

func (w *waiter) holderOf(ctx context.Context, alias string) (Owner, bool, error) {
	d, err := w.m.api.GetReservationDetails(ctx, w.m.resID, true)
	if err != nil {
		return Owner{}, false, w.m.readFailure(err)
	}
	svc, ok := d.Service(alias)
	if !ok {
		return Owner{}, false, nil
	}
	raw, _ := svc.Attribute(OwnerAttribute)
	return parseOwner(raw), true, nil
}

// stale reports whether this waiter has watched holder of alias for longer than its lease
// without seeing a heartbeat. Nothing but this process's own clock is consulted.
func (w *waiter) stale(ctx context.Context, alias string, holder Owner) bool {
	m := w.m
	limit := holder.Lease
	heartbeat := ""
	now := m.cfg.clock.Now()
	s, seen := w.seen[alias]
	seen = seen && s.raw == holder.Raw
	switch {
	case holder.Legacy && m.cfg.legacyMaxAge <= 0:
		return false // legacy holders send no heartbeat; breaking them is opt-in
	case holder.Legacy:
		limit = m.cfg.legacyMaxAge
	case holder.Lease <= 0:
		return false // the holder asked never to expire
	case seen && now.Sub(s.since) <= limit:
		// Within a lease of the first sighting the heartbeat cannot prove anything yet, and
		// since heartbeat values never repeat, reading it later tells whether it changed in
		// between. Skipping the read keeps waiters to one heartbeat read per lease.
		return false
	default:
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
		w.seen[alias] = sighting{raw: holder.Raw, heartbeat: heartbeat, since: now}
		return false
	}
	return now.Sub(s.since) > limit
}

// breakLock removes the stale holder of alias, and only that holder. Breakers serialise on
// a second lock whose alias names the stale token ("<alias>.break.<token>"): exactly one
// waiter wins it, and because that alias only ever targets this one instance, a break lock
// left by a crashed breaker is itself broken the same way, one level deeper, and a late
// break-lock holder finds the instance gone and does nothing. Reports whether the lock was
// freed, so the caller retries at once.
func (w *waiter) breakLock(ctx context.Context, alias string, stale Owner, depth int) bool {
	m := w.m
	if depth >= maxBreakDepth {
		return false
	}
	id := stale.Token
	if stale.Legacy {
		sum := sha256.Sum256([]byte(stale.Raw))
		id = "legacy-" + hex.EncodeToString(sum[:4])
	}
	breakAlias := alias + ".break." + id
	me := m.newOwner()
	sent := m.cfg.clock.Now()
	err := m.api.AddServiceToReservation(ctx, m.resID, m.cfg.model, breakAlias,
		[]cloudshell.AttributeNameValue{{Name: OwnerAttribute, Value: me.record()}})
	switch {
	case err == nil:
	case cloudshell.IsAliasCollision(err):
		// Another waiter is breaking it, or a breaker died holding the break lock.
		if b, ok, rerr := w.holderOf(ctx, breakAlias); rerr == nil && ok && w.stale(ctx, breakAlias, b) {
			w.breakLock(ctx, breakAlias, b, depth+1)
		}
		return false
	case errors.Is(err, cloudshell.ErrAmbiguous):
		b, ok, rerr := w.holderOf(ctx, breakAlias)
		if rerr != nil || !ok || b.Token != me.Token {
			return false
		}
	default:
		m.cfg.log.Debug().Err(err).Str("lock", breakAlias).Msg("could not take the break lock")
		return false
	}
	defer w.release(ctx, breakAlias, me)

	// Re-read right before removing: only the instance judged stale may go.
	current, present, err := w.holderOf(ctx, alias)
	switch {
	case err != nil:
		return false
	case !present:
		return true
	case current.Raw != stale.Raw:
		return true // it changed hands meanwhile: nothing to break
	case !m.withinLease(sent):
		// We held the break lock too long to be sure nobody broke it in turn.
		return false
	}
	observed := m.cfg.clock.Now().Sub(w.seen[alias].since)
	if err := m.api.RemoveServicesFromReservation(ctx, m.resID, []string{alias}); err != nil && !errors.Is(err, cloudshell.ErrAmbiguous) {
		m.cfg.log.Warn().Err(err).Str("lock", alias).Msg("could not remove a stale lock")
		return false
	}
	m.cfg.log.Warn().Str("lock", alias).Str("reservation", m.resID).Str("stale_holder", stale.String()).
		Str("broken_by", me.String()).Dur("unchanged_for", observed).Msg("broke a stale lock")
	delete(w.seen, alias)
	return true
}

// release removes a lock we hold, after checking the record is still ours. Used for break
// locks; a held *Lock has its own, retrying Unlock.
func (w *waiter) release(ctx context.Context, alias string, me Owner) {
	ctx, cancel := w.m.cleanupContext(ctx)
	defer cancel()
	cur, ok, err := w.holderOf(ctx, alias)
	if err != nil || !ok || cur.Token != me.Token {
		return
	}
	if err := w.m.api.RemoveServicesFromReservation(ctx, w.m.resID, []string{alias}); err != nil {
		w.m.cfg.log.Warn().Err(err).Str("lock", alias).Msg("could not remove our break lock; it expires with its lease")
	}
}

// heartbeatKey is the sandbox-data key a holder renews its lease under. It is named after
// the holder's token, so no other holder ever writes it: a paused holder that wakes up
// cannot overwrite a newer holder's heartbeat.
func heartbeatKey(token string) string { return "csmutex.heartbeat." + token }

// lossAfter is how long a holder may go without a confirmed renewal before it must consider
// the lock lost. It is shorter than the lease by a margin, so that a holder that is alive
// (not paused) gives up strictly before any waiter, timing the same lease, may break it.
func lossAfter(lease time.Duration) time.Duration { return lease - lease/6 }

// withinLease reports whether a lease that started at sent is still safely ours.
func (m *Mutex) withinLease(sent time.Time) bool {
	return m.cfg.lease <= 0 || m.cfg.clock.Now().Sub(sent) < lossAfter(m.cfg.lease)
}
