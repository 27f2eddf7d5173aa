package sidecar

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

// "priority" is an integer from 0 to mutex.MaxPriority on every request that waits for a
// lock; anything else is a 400 naming the field and the range, before anything is sent.
func TestPriorityBadRequests(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		paths := map[string]map[string]any{
			"/v1/acquire":        {"mode": "token"},
			"/v1/acquire shape":  {"mode": "token", "shape": "semaphore", "name": "SW", "slots": 2},
			"/v1/state/add":      {"key": "k", "delta": 1},
			"/v1/state/allocate": {"key": "k", "range": "1-9"},
		}
		for _, bad := range []any{-1, 10, 1e9, 2.5, "3", true, []int{1}, map[string]int{"p": 1}} {
			for what, extra := range paths {
				body := map[string]any{"reservation_id": v.env.ReservationID, "priority": bad}
				for k, val := range extra {
					body[k] = val
				}
				code, out := v.do("POST", strings.Fields(what)[0], body)
				want := fmt.Sprintf("it must be an integer between 0 and %d", mutex.MaxPriority)
				if code != http.StatusBadRequest || out["kind"] != "bad_request" || out["field"] != "priority" ||
					!strings.Contains(fmt.Sprint(out["error"]), want) {
					t.Errorf("%s priority %v: %d %v, want 400 for field priority mentioning %q", what, bad, code, out, want)
				}
			}
		}
		if l := v.locks(); len(l.Held)+len(l.Waiting) != 0 {
			t.Errorf("refused requests left %+v", l)
		}
		// The bounds and null are accepted, for every shape and the state endpoints.
		for _, ok := range []any{0, mutex.MaxPriority, nil} {
			v.release(v.mustAcquire("edge", map[string]any{"priority": ok}))
			v.release(v.mustAcquire("edge", map[string]any{"priority": ok, "shape": "pool", "members": []string{"A", "B"}}))
			if code, out := v.do("POST", "/v1/state/add", map[string]any{"reservation_id": v.env.ReservationID,
				"key": "k", "delta": 1, "priority": ok}); code != http.StatusOK {
				t.Errorf("state add with priority %v: %d %v", ok, code, out)
			}
		}
	})
}

// A priority-9 request that joins behind waiters of priority 0 gets the lock before them,
// after the one already next in line (which keeps its turn): for the plain lock and for a
// shape, whose waits queue on each of its locks.
func TestPriorityOvertakesEarlierWaiters(t *testing.T) {
	for _, shape := range []map[string]any{nil, {"shape": "semaphore", "name": "SW", "slots": 1}} {
		t.Run(fmt.Sprint(shape["shape"]), func(t *testing.T) {
			virtualSidecar(t, func(t *testing.T, v *vEnv) {
				with := func(kv ...any) map[string]any {
					m := map[string]any{}
					for k, val := range shape {
						m[k] = val
					}
					for i := 0; i < len(kv); i += 2 {
						m[kv[i].(string)] = kv[i+1]
					}
					return m
				}
				holder := v.mustAcquire("holder", with())
				tr := &turns{t: t, v: v}
				wait := func(owner string, priority int) { tr.wait(owner, with("timeout", "1h", "priority", priority)) }
				wait("next", 0)
				wait("low-1", 0)
				wait("low-2", 0)
				wait("urgent", mutex.MaxPriority)
				// GET /v1/locks shows what each waiting request asked for.
				asked := map[string]int{}
				for _, w := range v.locks().Waiting {
					if w.Priority != nil {
						asked[w.Owner] = *w.Priority
					}
				}
				if want := map[string]int{"next": 0, "low-1": 0, "low-2": 0, "urgent": mutex.MaxPriority}; !maps.Equal(asked, want) {
					t.Errorf("GET /v1/locks shows priorities %v, want %v", asked, want)
				}
				v.release(holder)
				if order, want := tr.served(), []string{"next", "urgent", "low-1", "low-2"}; !slices.Equal(order, want) {
					t.Fatalf("served %v, want %v: priority %d goes ahead of earlier priority-0 waiters, not of the one next in line",
						order, want, mutex.MaxPriority)
				}
			})
		})
	}
}

// A request that names no priority waits at the server's (serve --priority); one that names
// a priority, 0 included, waits at its own.
func TestPriorityOverridesTheServersDefault(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		holder := v.mustAcquire("holder", nil)
		tr := &turns{t: t, v: v}
		wait := tr.wait
		wait("next", map[string]any{"timeout": "1h"})
		wait("routine", map[string]any{"timeout": "1h", "priority": 0})
		wait("default", map[string]any{"timeout": "1h"})
		v.release(holder)
		if order, want := tr.served(), []string{"next", "default", "routine"}; !slices.Equal(order, want) {
			t.Fatalf("served %v, want %v: no priority is the server's (%d), an explicit 0 is 0", order, want, mutex.MaxPriority)
		}
	}, WithMutexOptions(mutex.WithPriority(mutex.MaxPriority)))
}

// A cohort waits in the room as one waiter, so requests of different priorities are never
// one cohort: the urgent one would wait at the routine one's place.
func TestCohortsSplitByPriority(t *testing.T) {
	p := acquireParams{resID: "r", name: "MUTEX", priority: noPriority}
	keys := map[string]bool{}
	for _, pr := range []int{noPriority, 0, 1, mutex.MaxPriority} {
		p.priority = pr
		keys[cohortKey(p)] = true
	}
	if len(keys) != 4 {
		t.Fatalf("%d cohort keys for 4 priorities", len(keys))
	}
}

// turns lets waiters in one at a time, each in the room before the next comes, and records
// the order in which they are served (each holds for a second).
type turns struct {
	t     *testing.T
	v     *vEnv
	mu    sync.Mutex
	order []string
	wg    sync.WaitGroup
}

func (tr *turns) wait(owner string, body map[string]any) {
	tr.wg.Go(func() {
		code, out := tr.v.acquire(owner, body)
		if code != http.StatusOK {
			tr.t.Errorf("%s: %d %v", owner, code, out)
			return
		}
		tr.mu.Lock()
		tr.order = append(tr.order, owner)
		tr.mu.Unlock()
		time.Sleep(time.Second)
		tr.v.release(out["token"])
	})
	time.Sleep(20 * time.Second)
}

// served waits for every waiter to finish and returns the order they were served in.
func (tr *turns) served() []string {
	tr.wg.Wait()
	return tr.order
}
