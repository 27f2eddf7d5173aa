package sidecar

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
)

// occupancy counts the clients inside a critical section, from outside the sidecar: what a
// shape promises is checked on what its clients do, not on what the sidecar reports.
type occupancy struct {
	mu       sync.Mutex
	in, peak int
	inside   map[string]string // what each client inside holds (a slot, a member, ...) → client
	clash    []string
}

func newOccupancy() *occupancy { return &occupancy{inside: map[string]string{}} }

// enter records client holding items; an item already held by another client inside is a
// clash.
func (o *occupancy) enter(client string, items ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.in++
	o.peak = max(o.peak, o.in)
	for _, it := range items {
		if other, ok := o.inside[it]; ok {
			o.clash = append(o.clash, fmt.Sprintf("%s and %s both hold %s", other, client, it))
		}
		o.inside[it] = client
	}
}

func (o *occupancy) leave(items ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.in--
	for _, it := range items {
		delete(o.inside, it)
	}
}

func strs(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// release gives a token back and fails the test unless it was held.
func (v *vEnv) release(token any) {
	v.t.Helper()
	if code, out := v.do("POST", "/v1/release", map[string]any{"token": token}); code != http.StatusOK {
		v.t.Errorf("release: %d %v", code, out)
	}
}

// crowd runs clients concurrently, each rounds times: take (nil if it did not get in),
// 20 s inside, give back.
func crowd(clients, rounds int, take func(client string) (items []string, giveBack func())) {
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := fmt.Sprintf("driver-%d", i)
			for range rounds {
				_, giveBack := take(client)
				if giveBack == nil {
					return
				}
				time.Sleep(20 * time.Second)
				giveBack()
				time.Sleep(time.Second)
			}
		}()
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
}

// A semaphore of 2 admits at most 2 of 4 clients, each in a slot of its own; without the
// lock (the control) the same clients are 4 inside at once, which the check sees.
func TestSemaphoreOccupancyOverHTTP(t *testing.T) {
	for _, locked := range []bool{true, false} {
		t.Run(map[bool]string{true: "semaphore", false: "control"}[locked], func(t *testing.T) {
			virtualSidecar(t, func(t *testing.T, v *vEnv) {
				occ := newOccupancy()
				crowd(4, 3, func(client string) ([]string, func()) {
					if !locked {
						occ.enter(client)
						return nil, func() { occ.leave() }
					}
					code, out := v.acquire(client, map[string]any{"shape": "semaphore", "name": "SWITCH", "slots": 2, "timeout": "30m"})
					if code != http.StatusOK {
						t.Errorf("acquire %s: %d %v", client, code, out)
						return nil, nil
					}
					slot := fmt.Sprint(out["slot"])
					if out["shape"] != "semaphore" || out["slots"] != 2.0 || (slot != "1" && slot != "2") {
						t.Errorf("answer %v, want shape semaphore, slots 2 and slot 1 or 2", out)
					}
					if a := strs(out["aliases"]); len(a) != 1 || a[0] != "SWITCH.slot."+slot {
						t.Errorf("aliases %v, want [SWITCH.slot.%s]", a, slot)
					}
					occ.enter(client, "slot "+slot)
					return nil, func() { occ.leave("slot " + slot); v.release(out["token"]) }
				})
				switch {
				case locked && (occ.peak != 2 || len(occ.clash) > 0):
					t.Errorf("peak %d inside (want 2), clashes %v", occ.peak, occ.clash)
				case !locked && occ.peak <= 2:
					t.Errorf("control: peak %d inside; the check cannot see a violation", occ.peak)
				}
			})
		})
	}
}

// Readers of a shared/exclusive lock are inside together; a writer ("exclusive" with
// "readers") is alone: with no reader, no other writer, and no legacy driver taking the plain
// lock of the same name. The control's writer asks for the plain lock (no "readers"), which
// does not wait for readers: the check sees it inside with them.
func TestSharedExclusiveOverHTTP(t *testing.T) {
	for _, writerSide := range []bool{true, false} {
		t.Run(map[bool]string{true: "writer", false: "control"}[writerSide], func(t *testing.T) {
			sharedExclusive(t, writerSide)
		})
	}
}

func sharedExclusive(t *testing.T, writerSide bool) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		var mu sync.Mutex
		readers, writers, peakReaders := 0, 0, 0
		var bad []string
		check := func(what string) {
			if writers > 1 || (writers == 1 && readers > 0) {
				bad = append(bad, fmt.Sprintf("%s: %d writers with %d readers", what, writers, readers))
			}
		}
		var wg sync.WaitGroup
		run := func(client string, body map[string]any, reader bool) {
			defer wg.Done()
			for range 3 {
				code, out := v.acquire(client, body)
				if code != http.StatusOK {
					t.Errorf("acquire %s: %d %v", client, code, out)
					return
				}
				want := "exclusive"
				if reader {
					want = "shared"
				}
				if out["access"] != want {
					t.Errorf("%s: access %v, want %s", client, out["access"], want)
				}
				mu.Lock()
				if reader {
					readers++
					peakReaders = max(peakReaders, readers)
				} else {
					writers++
				}
				check(client + " in")
				mu.Unlock()
				time.Sleep(15 * time.Second)
				mu.Lock()
				if reader {
					readers--
				} else {
					writers--
				}
				mu.Unlock()
				v.release(out["token"])
				time.Sleep(2 * time.Second)
			}
		}
		for i := range 3 {
			wg.Add(1)
			go run(fmt.Sprintf("reader-%d", i), map[string]any{"shape": "shared", "name": "TOPO", "timeout": "1h"}, true)
		}
		time.Sleep(time.Second)
		wg.Add(2)
		writer := map[string]any{"shape": "exclusive", "name": "TOPO", "readers": 16, "timeout": "1h"}
		if !writerSide {
			delete(writer, "readers")
		}
		go run("writer", writer, false)
		// A legacy driver takes the plain lock: the writer excludes it and is excluded by it.
		// (It does not wait for readers already in, as the public snippet does not: it counts
		// as a writer only against writers.)
		go func() {
			defer wg.Done()
			for range 3 {
				code, out := v.acquire("legacy", map[string]any{"name": "TOPO", "timeout": "1h"})
				if code != http.StatusOK {
					t.Errorf("legacy: %d %v", code, out)
					return
				}
				mu.Lock()
				writers++
				if writers > 1 {
					bad = append(bad, "the legacy driver is in with the writer")
				}
				mu.Unlock()
				time.Sleep(10 * time.Second)
				mu.Lock()
				writers--
				mu.Unlock()
				v.release(out["token"])
				time.Sleep(3 * time.Second)
			}
		}()
		wg.Wait()
		switch {
		case writerSide && len(bad) > 0:
			t.Errorf("exclusion broken: %v", bad)
		case !writerSide && len(bad) == 0:
			t.Errorf("control: the plain lock never met a reader; the check cannot see a violation")
		}
		if peakReaders < 2 {
			t.Errorf("at most %d reader inside at once: readers did not share", peakReaders)
		}
	})
}

// A set is held whole or not at all: a single attempt that finds one name taken leaves
// nothing behind; two sets over the same names, listed in opposite orders, never deadlock
// and never overlap.
func TestSetAllOrNothingOverHTTP(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		tok := v.mustAcquire("holder", map[string]any{"name": "SWITCH-2"})
		code, out := v.acquire("setter", map[string]any{"shape": "set", "names": []string{"SWITCH-3", "SWITCH-2", "SWITCH-1"}, "timeout": 0})
		if code != http.StatusConflict || out["kind"] != "locked" {
			t.Fatalf("set over a held name: %d %v, want 409 locked", code, out)
		}
		snap, err := v.env.Server.Snapshot(v.env.ReservationID)
		if err != nil {
			t.Fatal(err)
		}
		for _, svc := range snap.Services {
			if svc.Alias != "SWITCH-2" {
				t.Errorf("a failed set left %q behind", svc.Alias)
			}
		}
		v.release(tok)

		occ := newOccupancy()
		orders := [][]string{{"SWITCH-1", "SWITCH-2"}, {"SWITCH-2", "SWITCH-1"}, {"SWITCH-2", "SWITCH-1"}}
		crowd(3, 3, func(client string) ([]string, func()) {
			i := int(client[len(client)-1] - '0')
			code, out := v.acquire(client, map[string]any{"shape": "set", "names": orders[i], "timeout": "1h"})
			if code != http.StatusOK {
				t.Errorf("acquire %s: %d %v", client, code, out)
				return nil, nil
			}
			names := strs(out["names"])
			if !slices.Equal(names, []string{"SWITCH-1", "SWITCH-2"}) {
				t.Errorf("names %v, want both, in canonical order", names)
			}
			occ.enter(client, names...)
			return names, func() { occ.leave(names...); v.release(out["token"]) }
		})
		if len(occ.clash) > 0 || occ.peak != 1 {
			t.Errorf("peak %d, clashes %v", occ.peak, occ.clash)
		}
	})
}

// Levels over HTTP: a set taken "inside" a held set must be at a finer level.
func TestSetLevelsOverHTTP(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		levels := []map[string]any{{"level": "device", "names": []string{"SW-1", "SW-2"}}, {"level": "port", "names": []string{"P-1"}}}
		outer := v.mustAcquire("d", map[string]any{"shape": "set", "names": []string{"SW-1"}, "levels": levels})
		inner := v.mustAcquire("d", map[string]any{"shape": "set", "names": []string{"P-1"}, "levels": levels, "inside": outer})
		v.release(inner)
		portTok := v.mustAcquire("d", map[string]any{"shape": "set", "names": []string{"P-1"}, "levels": levels})
		code, out := v.acquire("d", map[string]any{"shape": "set", "names": []string{"SW-2"}, "levels": levels, "inside": portTok})
		if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(out["error"]), "level") {
			t.Errorf("a device inside a port: %d %v, want 400 naming the levels", code, out)
		}
		code, out = v.acquire("d", map[string]any{"shape": "set", "names": []string{"SW-2"}, "levels": levels, "inside": "nope"})
		if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(out["error"]), "inside") {
			t.Errorf("inside an unknown token: %d %v, want 400 naming inside", code, out)
		}
		v.release(portTok)
		v.release(outer)
	})
}

// A pool hands out distinct members: 3 clients taking 2 of 4 are never more than 2 inside,
// and no member is held by two.
func TestPoolDistinctMembersOverHTTP(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		members := []string{"TG-1", "TG-2", "TG-3", "TG-4"}
		occ := newOccupancy()
		crowd(3, 3, func(client string) ([]string, func()) {
			code, out := v.acquire(client, map[string]any{"shape": "pool", "members": members, "count": 2, "timeout": "1h"})
			if code != http.StatusOK {
				t.Errorf("acquire %s: %d %v", client, code, out)
				return nil, nil
			}
			got := strs(out["members"])
			if len(got) != 2 || got[0] == got[1] || !slices.Contains(members, got[0]) || !slices.Contains(members, got[1]) {
				t.Errorf("%s got members %v, want 2 distinct of %v", client, got, members)
			}
			occ.enter(client, got...)
			return got, func() { occ.leave(got...); v.release(out["token"]) }
		})
		if len(occ.clash) > 0 || occ.peak != 2 {
			t.Errorf("peak %d (want 2), clashes %v", occ.peak, occ.clash)
		}
	})
}

// Concurrent increments through /v1/state/add are never lost, and each caller sees its own
// new value; without the lock (the control: the same read-modify-write straight on sandbox
// data) increments are lost.
func TestStateAddOverHTTP(t *testing.T) {
	const clients, rounds = 4, 3
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		var mu sync.Mutex
		seen := map[float64]bool{}
		var wg sync.WaitGroup
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					code, out := v.do("POST", "/v1/state/add", map[string]any{"reservation_id": v.env.ReservationID,
						"owner": fmt.Sprint("driver-", i), "key": "runs", "delta": 1, "timeout": "1h"})
					if code != http.StatusOK {
						t.Errorf("add: %d %v", code, out)
						return
					}
					mu.Lock()
					if seen[out["value"].(float64)] {
						t.Errorf("value %v returned twice", out["value"])
					}
					seen[out["value"].(float64)] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		code, out := v.do("POST", "/v1/state/add", map[string]any{"reservation_id": v.env.ReservationID, "key": "runs", "delta": 0})
		if code != http.StatusOK || out["value"] != float64(clients*rounds) {
			t.Errorf("final counter: %d %v, want %d", code, out, clients*rounds)
		}
	})
	t.Run("control", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			env := testenv.NewInProcess(t)
			var wg sync.WaitGroup
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := env.Client(fmt.Sprint("driver-", i))
					for range rounds {
						n := readCounter(t, c, env.ReservationID)
						time.Sleep(time.Second) // the read-modify-write's round trips
						err := c.SetSandboxData(context.Background(), env.ReservationID,
							[]cloudshell.SandboxDataKeyValue{{Key: "runs", Value: strconv.Itoa(n + 1)}})
						if err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			if n := readCounter(t, env.Client("check"), env.ReservationID); n >= clients*rounds {
				t.Errorf("control: counter %d, no increment lost without the lock; the check cannot see a violation", n)
			}
		})
	})
}

// Allocations from a range are unique under concurrency, and an exhausted range says so.
func TestStateAllocateOverHTTP(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		var mu sync.Mutex
		got := map[float64]string{}
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := fmt.Sprint("app-", i)
				code, out := v.do("POST", "/v1/state/allocate", map[string]any{"reservation_id": v.env.ReservationID,
					"owner": client, "key": "vlan", "range": "100-104", "timeout": "1h"})
				if code != http.StatusOK {
					t.Errorf("allocate: %d %v", code, out)
					return
				}
				val := out["value"].(float64)
				mu.Lock()
				defer mu.Unlock()
				if other, dup := got[val]; dup {
					t.Errorf("VLAN %v allocated to %s and %s", val, other, client)
				}
				got[val] = client
				if val < 100 || val > 104 || out["range"] != "100-104" {
					t.Errorf("answer %v outside 100-104", out)
				}
			}()
		}
		wg.Wait()
		code, out := v.do("POST", "/v1/state/allocate", map[string]any{"reservation_id": v.env.ReservationID,
			"key": "vlan", "range": map[string]any{"lo": 100, "hi": 104}})
		if code != http.StatusConflict || out["kind"] != "exhausted" {
			t.Errorf("sixth allocation: %d %v, want 409 exhausted", code, out)
		}
	})
}

// Token and stream modes hold every shape: a lost slot ends a token hold (its keepalive gets
// 410 lost), and shutting down releases every shape's locks.
func TestShapeLostAndShutdown(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		tok := v.mustAcquire("a", map[string]any{"shape": "semaphore", "name": "SW", "slots": 3, "lease": "30s"})
		intruder := v.env.Client("intruder")
		if err := intruder.RemoveServicesFromReservation(context.Background(), v.env.ReservationID, []string{"SW.slot.1"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute) // past the lease: the renewal finds the slot gone
		code, out := v.do("POST", "/v1/keepalive", map[string]any{"token": tok})
		if code != http.StatusGone || out["kind"] != "lost" {
			t.Errorf("keepalive after the slot was removed: %d %v, want 410 lost", code, out)
		}
		// A token hold of a shape without keepalive expires like the exclusive lock's, and
		// every lock of the shape is released.
		v.mustAcquire("e", map[string]any{"shape": "set", "names": []string{"E1", "E2"}, "ttl": "2s"})
		time.Sleep(5 * time.Second)
		synctest.Wait()
		snap, err := v.env.Server.Snapshot(v.env.ReservationID)
		if err != nil {
			t.Fatal(err)
		}
		for _, svc := range snap.Services {
			if strings.HasPrefix(svc.Alias, "E") {
				t.Errorf("%s still held after the set's ttl passed", svc.Alias)
			}
		}
		v.mustAcquire("b", map[string]any{"shape": "pool", "members": []string{"X", "Y"}, "count": 2})
		v.mustAcquire("c", map[string]any{"shape": "shared", "name": "TOPO"})
		v.mustAcquire("d", map[string]any{"shape": "set", "names": []string{"S1", "S2"}})
		if err := v.s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		snap, err = v.env.Server.Snapshot(v.env.ReservationID)
		if err != nil {
			t.Fatal(err)
		}
		for _, svc := range snap.Services {
			t.Errorf("service %q left after shutdown", svc.Alias)
		}
	})
}

// GET /v1/locks shows what each hold has and what each waiter wants; /metrics counts usage
// per lock name and shape.
func TestShapesListedAndMetered(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		v.mustAcquire("a", map[string]any{"shape": "semaphore", "name": "SW", "slots": 1})
		v.mustAcquire("b", map[string]any{"shape": "pool", "members": []string{"X", "Y", "Z"}, "count": 2})
		go v.acquire("c", map[string]any{"shape": "semaphore", "name": "SW", "slots": 1, "timeout": "10m"})
		time.Sleep(30 * time.Second)
		l := v.locks()
		if len(l.Held) != 2 || len(l.Waiting) != 1 {
			t.Fatalf("locks %+v, want 2 held, 1 waiting", l)
		}
		// Both were taken at the same virtual instant: find them by owner, not by order.
		sem, pool := l.Held[0], l.Held[1]
		if sem.Owner != "a" {
			sem, pool = pool, sem
		}
		if sem.Shape != "semaphore" || sem.Slot != 1 || sem.Slots != 1 || sem.Name != "SW" {
			t.Errorf("semaphore listed as %+v", sem)
		}
		if pool.Shape != "pool" || len(pool.Members) != 2 || pool.Name != "X,Y,Z" {
			t.Errorf("pool listed as %+v", pool)
		}
		w := l.Waiting[0]
		if w.Shape != "semaphore" || w.Slots != 1 || w.Holder != "a" || w.WaitingMS < 25000 {
			t.Errorf("waiter listed as %+v", w)
		}

		code, out := v.acquire("d", map[string]any{"shape": "semaphore", "name": "SW", "slots": 1, "timeout": 0})
		if code != http.StatusConflict || out["kind"] != "locked" || out["holder"] != "a" || len(strs(out["holders"])) != 1 {
			t.Errorf("a full semaphore's single try: %d %v, want 409 locked naming holder a", code, out)
		}

		req := httptest.NewRequest("GET", "/metrics", nil)
		req.Host = "localhost"
		rec := httptest.NewRecorder()
		v.s.Handler().ServeHTTP(rec, req)
		body, _ := io.ReadAll(rec.Body)
		for _, want := range []string{
			`csmutex_lock_acquisitions_total{name="SW",shape="semaphore"} 1`,
			`csmutex_lock_acquisitions_total{name="X,Y,Z",shape="pool"} 1`,
			`csmutex_lock_wait_seconds_total{name="SW",shape="semaphore"}`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}

func readCounter(t *testing.T, c *cloudshell.Client, resID string) int {
	kv, err := c.GetSandboxData(context.Background(), resID)
	if err != nil {
		t.Error(err)
	}
	for _, e := range kv {
		if e.Key == "runs" {
			n, _ := strconv.Atoi(e.Value)
			return n
		}
	}
	return 0
}
