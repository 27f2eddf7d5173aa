package mutex

import (
	"reflect"
	"sync"
)

// The read-back after a successful add does one thing the add cannot: it shows whether the
// server kept the "Mutex Owner" attribute (a server with the public package's latest model
// silently drops it). That is a property of the installed model, so it is checked once per
// API client, reservation and model, not on every acquisition: an uncontended Lock+Unlock
// then costs 3 calls (add; read, remove) instead of 4. What else the read-back caught is
// caught later anyway: a lock removed behind our back by the first renewal or by Unlock's
// read, dead break locks by Unlock's read.

// maxVerified bounds the memory of a long-running process (a sidecar serving many
// reservations): past it, everything is forgotten and checked again once.
const maxVerified = 10000

type verifiedKey struct {
	api          any
	resID, model string
}

var verified struct {
	sync.Mutex
	m map[verifiedKey]bool
}

func (m *Mutex) verifiedKey() (verifiedKey, bool) {
	if t := reflect.TypeOf(m.api); t == nil || !t.Comparable() {
		return verifiedKey{}, false // cannot be a map key: always read back
	}
	return verifiedKey{api: m.api, resID: m.resID, model: m.cfg.model}, true
}

// modelVerified reports whether a read-back already showed the owner attribute kept.
func (m *Mutex) modelVerified() bool {
	k, ok := m.verifiedKey()
	if !ok {
		return false
	}
	verified.Lock()
	defer verified.Unlock()
	return verified.m[k]
}

func (m *Mutex) markModelVerified() {
	k, ok := m.verifiedKey()
	if !ok {
		return
	}
	verified.Lock()
	defer verified.Unlock()
	if verified.m == nil || len(verified.m) >= maxVerified {
		verified.m = map[verifiedKey]bool{}
	}
	verified.m[k] = true
}
