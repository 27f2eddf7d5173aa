//go:build unix

package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

// status groups every shape's locks, says who holds them together, and shows the queued
// waiters with how long this machine has seen them (virtual time: statusNow).
func TestStatusShapes(t *testing.T) {
	m := newShapeMock(t)
	ctx := context.Background()
	as := func(owner string) locks.Option {
		return locks.MutexOptions(mutex.WithOwner(owner), mutex.WithLease(0))
	}
	hold := func(h *locks.Hold, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Release(ctx) })
	}
	hold(locks.NewSemaphore(m.client, m.res, "SW", 3, as("sem-a")).TryAcquire(ctx))
	hold(locks.NewSemaphore(m.client, m.res, "SW", 3, as("sem-b")).TryAcquire(ctx))
	hold(locks.NewRWMutex(m.client, m.res, "TOPO", as("reader-a")).TryRLock(ctx))
	hold(locks.NewRWMutex(m.client, m.res, "TOPO", as("reader-b")).TryRLock(ctx))
	hold(locks.NewSet(m.client, m.res, []string{"SWITCH-2", "SWITCH-1"}, as("setter")).TryAcquire(ctx))
	hold(locks.NewPool(m.client, m.res, []string{"TG-1", "TG-2", "TG-3"}, 2, as("pooler")).TryAcquire(ctx))
	m.holdAs(t, "MUTEX", "plain")
	// Two waiters queued for MUTEX, one for a lock nobody holds (mutex/queue.go's format).
	if err := m.client.SetSandboxData(ctx, m.res, []cloudshell.SandboxDataKeyValue{
		{Key: "csmutex.queue.MUTEX.00", Value: "t=2 id=w-late seq=0 ttl=30s"},
		{Key: "csmutex.queue.MUTEX.01", Value: "t=1 id=w-early seq=4 ttl=30s"},
		{Key: "csmutex.queue.MUTEX.02", Value: ""},
		{Key: "csmutex.queue.IDLE.00", Value: "t=1 id=w-idle seq=0 ttl=30s"},
	}); err != nil {
		t.Fatal(err)
	}

	t0 := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	defer func(f func() time.Time) { statusNow = f }(statusNow)
	statusNow = func() time.Time { return t0 }
	code, table, stderr := m.cmd(t, "status")
	if code != 0 {
		t.Fatalf("status: exit %d\n%s", code, stderr)
	}
	lines := strings.Split(table, "\n")
	row := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix+" ") {
				return l
			}
		}
		t.Errorf("no row %q in\n%s", prefix, table)
		return ""
	}
	for prefix, wants := range map[string][]string{
		"SW":            {"semaphore: 2 slots held"},
		"  SW.slot.1":   {"slot 1", "sem-a"},
		"  SW.slot.2":   {"slot 2", "sem-b"},
		"TOPO":          {"shared: 2 readers"},
		"  TOPO.read.1": {"reader 1", "reader-a"},
		"  TOPO.read.2": {"reader 2", "reader-b"},
		"SWITCH-1":      {"exclusive, with SWITCH-2", "setter"},
		"TG-1":          {"exclusive, with TG-2", "pooler"},
		"MUTEX":         {"exclusive", "plain", "2 (first seen now)"},
		"IDLE":          {"free", "not held (waiters queued)", "1 (first seen now)"},
	} {
		r := row(prefix)
		for _, w := range wants {
			if !strings.Contains(r, w) {
				t.Errorf("row %q lacks %q: %q", prefix, w, r)
			}
		}
	}
	if !strings.Contains(lines[0], "SHAPE") || !strings.Contains(lines[0], "WAITERS") {
		t.Errorf("header: %q", lines[0])
	}

	// Later, the same waiters have been seen for 90s; the JSON carries every shape's facts.
	statusNow = func() time.Time { return t0.Add(90 * time.Second) }
	code, table, _ = m.cmd(t, "status")
	if code != 0 || !strings.Contains(table, "2 (oldest seen 1m30s)") {
		t.Errorf("second listing: exit %d, want the waiters' age\n%s", code, table)
	}
	code, out, _ := m.cmd(t, "status", "--json")
	var got []lockStatus
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v\n%s", code, err, out)
	}
	byName := map[string]lockStatus{}
	for _, s := range got {
		byName[s.Name] = s
	}
	check := func(name string, ok func(s lockStatus) bool) {
		t.Helper()
		if s, found := byName[name]; !found || !ok(s) {
			t.Errorf("--json %s: %+v", name, s)
		}
	}
	check("SW.slot.2", func(s lockStatus) bool {
		return s.Shape == "semaphore" && s.Mode == "slot" && s.Group == "SW" && s.Slot == 2 && s.Owner == "sem-b"
	})
	check("TOPO.read.1", func(s lockStatus) bool {
		return s.Shape == "shared" && s.Mode == "shared" && s.Group == "TOPO" && s.Slot == 1
	})
	check("SWITCH-2", func(s lockStatus) bool {
		return s.Shape == "lock" && s.Mode == "exclusive" && slices.Equal(s.Members, []string{"SWITCH-1", "SWITCH-2"})
	})
	check("TG-2", func(s lockStatus) bool { return slices.Equal(s.Members, []string{"TG-1", "TG-2"}) })
	check("MUTEX", func(s lockStatus) bool {
		return len(s.Members) == 0 && len(s.Waiters) == 2 && s.Waiters[0].ID == "w-early" && s.Waiters[1].ID == "w-late" &&
			s.Waiters[0].ObservedSeconds == 90 && s.Waiters[0].TTL == "30s"
	})
	check("IDLE", func(s lockStatus) bool { return s.Kind == "free" && len(s.Waiters) == 1 })

	// --name of a shape shows its slots.
	code, out, _ = m.cmd(t, "status", "--json", "--name", "SW")
	got = nil
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got) != 2 || got[0].Name != "SW.slot.1" || got[1].Name != "SW.slot.2" {
		t.Errorf("status --name SW: exit %d %v\n%s", code, err, out)
	}
}

func TestSplitSlot(t *testing.T) {
	for alias, want := range map[string][3]any{
		"SW.slot.2":      {"SW", mutex.SlotInfix, 2},
		"A.B.read.9999":  {"A.B", mutex.ReadInfix, 9999},
		"SW.slot.02":     {"", "", 0},
		"SW.slot.0":      {"", "", 0},
		"SW.slot.x":      {"", "", 0},
		".slot.1":        {"", "", 0},
		"MUTEX":          {"", "", 0},
		"X.break.abc123": {"", "", 0},
	} {
		g, k, n := splitSlot(alias)
		if g != want[0] || k != want[1] || n != want[2] {
			t.Errorf("splitSlot(%q) = %q %q %d, want %v", alias, g, k, n, want)
		}
	}
}
