package main

import (
	"strconv"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// Waiters queue in the reservation's sandbox data (mutex/queue.go, read by mutex.Waiters).
// status shows them for each lock. An entry records no time, so its age is how long this
// machine has seen it (sightings.go), as for legacy holders.

// waiterStatus is one queued waiter, as `csmutex status --json` prints it.
type waiterStatus struct {
	ID       string `json:"id"`
	Ticket   int64  `json:"ticket"`
	Priority int    `json:"priority,omitempty"`
	// TTL is how long the entry may stay unchanged at the front before others skip it as dead.
	TTL string `json:"ttl,omitempty"`
	// ObservedSince is when status on this machine first saw this waiter; ObservedSeconds
	// how long ago (0: first seen by this listing).
	ObservedSince   string  `json:"observed_since"`
	ObservedSeconds float64 `json:"observed_seconds"`

	key lockKey
}

// parseWaiters returns the queued waiters of every lock, by lock name, each lock's in the
// order they take turns.
func parseWaiters(data []cloudshell.SandboxDataKeyValue) map[string][]waiterStatus {
	out := map[string][]waiterStatus{}
	for lock, ws := range mutex.Waiters(data) {
		for _, w := range ws {
			st := waiterStatus{ID: w.ID, Ticket: w.Ticket, Priority: w.Priority}
			if w.TTL > 0 {
				st.TTL = w.TTL.String()
			}
			// The head rewrites its entry to stay alive: the waiter is its ticket and id.
			st.key = lockKey{alias: "csmutex.queue." + lock, raw: "t=" + strconv.FormatInt(w.Ticket, 10) + " id=" + w.ID}
			out[lock] = append(out[lock], st)
		}
	}
	return out
}

// observeWaiters fills in the waiters' ages from first sightings.
func observeWaiters(ws []waiterStatus, firstSeen map[lockKey]time.Time, now time.Time) {
	for i := range ws {
		first, ok := firstSeen[ws[i].key]
		if !ok || first.IsZero() {
			first = now
		}
		ws[i].ObservedSince = first.UTC().Format(time.RFC3339Nano)
		ws[i].ObservedSeconds = heldFor(first, now).Seconds()
	}
}

// waitersCell is the WAITERS column: how many, and how long the longest-seen has waited.
func waitersCell(ws []waiterStatus) string {
	if len(ws) == 0 {
		return ""
	}
	oldest := 0.0
	for _, w := range ws {
		oldest = max(oldest, w.ObservedSeconds)
	}
	if oldest == 0 {
		return strconv.Itoa(len(ws)) + " (first seen now)"
	}
	return strconv.Itoa(len(ws)) + " (oldest seen " + secondsText(oldest) + ")"
}
