package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"sync"
	"time"

	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

// Hold modes.
const (
	ModeStream = "stream"
	ModeToken  = "token"
)

// heldLock is what a hold holds: the exclusive lock (a *mutex.Lock) or a lock shape (a
// *locks.Hold). Release, expiry, the lost-lock signal and shutdown treat both alike.
type heldLock interface {
	// Done is closed when the lock is lost (or released); Err then says why.
	Done() <-chan struct{}
	Err() error
	Release(ctx context.Context) error
	// Owner is the owner record of the first lock taken: who holds it, as CloudShell says.
	Owner() mutex.Owner
}

// exclusiveLock is the plain exclusive lock as a heldLock.
type exclusiveLock struct{ *mutex.Lock }

func (l exclusiveLock) Release(ctx context.Context) error { return l.Unlock(ctx) }

// shapeLock is a lock shape as a heldLock.
type shapeLock struct{ *locks.Hold }

func (l shapeLock) Owner() mutex.Owner {
	if o := l.Info().Owners; len(o) > 0 {
		return o[0]
	}
	return mutex.Owner{}
}

// hold is a lock the sidecar holds for a client.
type hold struct {
	token    string // the client's capability: only it releases the hold
	resID    string
	name     string // the lock's name; for sets and pools, their label (usageName)
	owner    string
	mode     string
	shape    shapeParams
	lock     heldLock
	got      Obtained // what was obtained, as the acquire answer says it
	acquired time.Time
	ttl      time.Duration // token mode
	// doneWithClient gives back the hold's reference to its CloudShell client (clients.go)
	// once the lock is released.
	doneWithClient func()

	// guarded by registry.mu
	expires time.Time // token mode: released when the sidecar's clock passes it

	// ended is closed once the sidecar has let go of the hold (released, expired, lost, or
	// shut down); endStatus and endReason are set before.
	ended     chan struct{}
	endStatus string // "released" or "lost"
	endReason string
}

// waiting is an acquire request still waiting for its lock.
type waiting struct {
	resID, name, owner string
	shape              shapeParams
	priority           int // noPriority: the request named none
	since              time.Time

	// guarded by registry.mu: what the latest attempt learned (observe)
	holder mutex.Owner
	tries  int
}

// registry tracks holds by token and waiting requests. A hold leaves the registry exactly
// once, and whoever removes it is the one who releases it: so nothing is released twice,
// and nothing is released by a caller without the token.
type registry struct {
	mu      sync.Mutex
	holds   map[string]*hold
	waits   map[uint64]*waiting
	nextID  uint64
	closing bool
}

func newRegistry() *registry {
	return &registry{holds: map[string]*hold{}, waits: map[uint64]*waiting{}}
}

// newHoldToken returns 128 random bits in hex.
func newHoldToken() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("sidecar: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// add registers h, unless the sidecar is shutting down (then the caller must release it).
func (r *registry) add(h *hold) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.holds[h.token] = h
	return true
}

// get returns the hold with token, if any.
func (r *registry) get(token string) (*hold, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.holds[token]
	return h, ok
}

// remove takes h out of the registry and reports whether it was there: true for exactly
// one caller.
func (r *registry) remove(h *hold) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.holds[h.token]; ok && cur == h {
		delete(r.holds, h.token)
		return true
	}
	return false
}

// extend pushes a token hold's expiry to now+ttl. It reports the new expiry, and false if
// the token is unknown.
func (r *registry) extend(token string, now time.Time) (*hold, time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.holds[token]
	if !ok {
		return nil, time.Time{}, false
	}
	if h.mode == ModeToken {
		h.expires = now.Add(h.ttl)
	}
	return h, h.expires, true
}

// expired lists token holds whose expiry has passed.
func (r *registry) expired(now time.Time) []*hold {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*hold
	for _, h := range r.holds {
		if h.mode == ModeToken && !h.expires.IsZero() && now.After(h.expires) {
			out = append(out, h)
		}
	}
	return out
}

// close refuses new holds from now on, and takes every current one out of the registry
// for the caller to release.
func (r *registry) close() []*hold {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closing = true
	out := make([]*hold, 0, len(r.holds))
	for k, h := range r.holds {
		out = append(out, h)
		delete(r.holds, k)
	}
	return out
}

func (r *registry) wait(w *waiting) (done func()) {
	r.mu.Lock()
	r.nextID++
	id := r.nextID
	r.waits[id] = w
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.waits, id)
		r.mu.Unlock()
	}
}

// observe records what a waiting request's latest attempt learned (mutex.WithObserver).
func (r *registry) observe(w *waiting, ev mutex.WaitEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !ev.Holder.IsZero() {
		w.holder = ev.Holder
	}
	w.tries = ev.Tries
}

func (r *registry) counts() (held, waiting int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.holds), len(r.waits)
}

// HeldLock is a lock the sidecar holds, in GET /v1/locks. Tokens (the sidecar's hold
// tokens and the lock's owner token) are never listed.
type HeldLock struct {
	ReservationID string    `json:"reservation_id"`
	Name          string    `json:"name"`
	Owner         string    `json:"owner"`
	Mode          string    `json:"mode"`
	Since         time.Time `json:"since"` // when the sidecar got the lock, by its clock
	HeldFor       string    `json:"held_for"`
	HeldMS        float64   `json:"held_ms"`
	// HeldSeconds is HeldMS in seconds, kept for older clients.
	HeldSeconds float64 `json:"held_seconds"`
	// HeldSince, HolderHost and HolderPID are as the lock's owner record in CloudShell
	// says, as a waiter elsewhere sees them.
	HeldSince  *time.Time `json:"held_since,omitempty"`
	HolderHost string     `json:"holder_host,omitempty"`
	HolderPID  int        `json:"holder_pid,omitempty"`
	// ExpiresAt is set in token mode: the sidecar releases the lock then unless kept alive.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// What is held: shape, access, slot, set names, pool members and aliases.
	Obtained
}

// WaitingLock is an acquire request still waiting, in GET /v1/locks.
type WaitingLock struct {
	ReservationID string    `json:"reservation_id"`
	Name          string    `json:"name"`
	Owner         string    `json:"owner"`
	Since         time.Time `json:"since"`
	WaitingFor    string    `json:"waiting_for"`
	WaitingMS     float64   `json:"waiting_ms"`
	// WaitingSeconds is WaitingMS in seconds, kept for older clients.
	WaitingSeconds float64 `json:"waiting_seconds"`
	// Holder, HolderHost, HolderPID and HeldSince name whom it waits for, from its latest
	// attempt's reading of the owner record (absent until it has read one); Tries counts
	// its attempts so far.
	Holder     string     `json:"holder,omitempty"`
	HolderHost string     `json:"holder_host,omitempty"`
	HolderPID  int        `json:"holder_pid,omitempty"`
	HeldSince  *time.Time `json:"held_since,omitempty"`
	Tries      int        `json:"tries,omitempty"`
	// Priority is the waiting-room priority the request named (absent: it named none, and
	// the sidecar's own, serve --priority, applies).
	Priority *int `json:"priority,omitempty"`
	// What it asks for: shape, slots, readers, names, members, count.
	Wanted
}

// Locks is the body of GET /v1/locks.
type Locks struct {
	Held    []HeldLock    `json:"held"`
	Waiting []WaitingLock `json:"waiting"`
}

func (r *registry) snapshot(now time.Time) Locks {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Locks{Held: []HeldLock{}, Waiting: []WaitingLock{}}
	for _, h := range r.holds {
		d := now.Sub(h.acquired)
		o := h.lock.Owner()
		e := HeldLock{ReservationID: h.resID, Name: h.name, Owner: h.owner, Mode: h.mode,
			Since: h.acquired.UTC(), HeldFor: d.Round(time.Millisecond).String(), HeldMS: ms(d), HeldSeconds: d.Seconds(),
			HeldSince: since(o), HolderHost: o.Host, HolderPID: o.PID, Obtained: h.got}
		if h.mode == ModeToken {
			t := h.expires.UTC()
			e.ExpiresAt = &t
		}
		out.Held = append(out.Held, e)
	}
	for _, w := range r.waits {
		d := now.Sub(w.since)
		e := WaitingLock{ReservationID: w.resID, Name: w.name, Owner: w.owner,
			Since: w.since.UTC(), WaitingFor: d.Round(time.Millisecond).String(), WaitingMS: ms(d), WaitingSeconds: d.Seconds(),
			Holder: holderLabel(w.holder), HolderHost: w.holder.Host, HolderPID: w.holder.PID, HeldSince: since(w.holder),
			Tries: w.tries, Wanted: w.shape.wanted()}
		if w.priority != noPriority {
			e.Priority = &w.priority
		}
		out.Waiting = append(out.Waiting, e)
	}
	sort.Slice(out.Held, func(i, j int) bool { return out.Held[i].Since.Before(out.Held[j].Since) })
	sort.Slice(out.Waiting, func(i, j int) bool { return out.Waiting[i].Since.Before(out.Waiting[j].Since) })
	return out
}
