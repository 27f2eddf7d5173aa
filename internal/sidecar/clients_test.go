package sidecar

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

// fakeClient stands in for a logged-on client.
type fakeClient struct {
	mutex.API
	id string
}

// cacheFixture is a client cache on a settable clock whose dials succeed at once.
type cacheFixture struct {
	cc  *clientCache
	clk *testClock

	mu      sync.Mutex
	dropped []string // ids, in order
}

func newCacheFixture() *cacheFixture {
	f := &cacheFixture{clk: &testClock{now: time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)}}
	dial := func(_ context.Context, c Credentials) (mutex.API, error) { return &fakeClient{id: c.User}, nil }
	f.cc = newClientCache(dial, nil, f.clk.Now, func(raw mutex.API, c Credentials) {
		f.dropped = append(f.dropped, raw.(*fakeClient).id) // under cc.mu
	})
	return f
}

func (f *cacheFixture) get(t *testing.T, user string) func() {
	t.Helper()
	api, done, err := f.cc.get(context.Background(), Credentials{Host: "cs", User: user, Password: "pw-" + user})
	if err != nil || api.(*fakeClient).id != user {
		t.Fatalf("get %s: %v, %v", user, api, err)
	}
	return done
}

func (f *cacheFixture) droppedIDs() []string {
	f.cc.mu.Lock()
	defer f.cc.mu.Unlock()
	return append([]string(nil), f.dropped...)
}

// A client unused for clientIdleLimit is dropped; one in use (a waiting request, a held
// lock) never is, however long; and idleness counts from the last release, not the dial.
func TestClientCacheDropsIdleClients(t *testing.T) {
	f := newCacheFixture()
	doneA := f.get(t, "a") // a lock held for hours
	doneB := f.get(t, "b")
	doneB()
	f.clk.Add(clientIdleLimit - time.Second)
	doneB = f.get(t, "b") // used again: idle from its next release
	doneB()
	f.clk.Add(2 * time.Second)
	f.cc.evict()
	if f.cc.size() != 2 || len(f.droppedIDs()) != 0 {
		t.Fatalf("dropped %v after %s of use", f.droppedIDs(), clientIdleLimit)
	}
	f.clk.Add(clientIdleLimit)
	f.cc.evict()
	if got := f.droppedIDs(); len(got) != 1 || got[0] != "b" {
		t.Fatalf("dropped %v, want the idle b only (a is in use)", got)
	}
	f.clk.Add(10 * clientIdleLimit)
	f.cc.evict()
	if f.cc.size() != 1 {
		t.Fatalf("the in-use client was dropped: %v", f.droppedIDs())
	}
	doneA()
	doneA() // a second call gives nothing back twice
	f.cc.evict()
	if f.cc.size() != 1 {
		t.Fatal("dropped at once on release")
	}
	f.clk.Add(clientIdleLimit)
	f.cc.evict()
	if f.cc.size() != 0 || f.cc.dialCount() != 2 {
		t.Fatalf("%d clients left, %d dials", f.cc.size(), f.cc.dialCount())
	}
	f.get(t, "a")()
	if f.cc.dialCount() != 3 {
		t.Fatal("a dropped client was reused")
	}
}

// Beyond maxClients the longest-idle clients go first; clients in use stay even beyond it.
func TestClientCacheBoundsTheCount(t *testing.T) {
	f := newCacheFixture()
	inUse := map[string]func(){}
	for i := range maxClients + 10 {
		id := fmt.Sprint("u", i)
		done := f.get(t, id)
		if i%10 == 0 {
			inUse[id] = done // never dropped
		} else {
			done()
		}
		f.clk.Add(time.Second)
	}
	if n := f.cc.size(); n != maxClients {
		t.Fatalf("%d clients cached, want the bound %d", n, maxClients)
	}
	got := f.droppedIDs()
	want := []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9", "u11"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("dropped %v, want the longest-idle ones not in use %v", got, want)
	}
	// Every cached client in use: the bound gives way rather than drop one.
	var idle []string
	for _, e := range f.cc.entries {
		if _, ok := inUse[e.creds.User]; !ok {
			idle = append(idle, e.creds.User)
		}
	}
	for _, id := range idle {
		inUse[id] = f.get(t, id)
	}
	for i := range 5 {
		inUse[fmt.Sprint("extra", i)] = f.get(t, fmt.Sprint("extra", i))
	}
	if n := f.cc.size(); n != maxClients+5 {
		t.Fatalf("%d clients cached while all are in use, want %d", n, maxClients+5)
	}
	for _, done := range inUse {
		done()
	}
	f.cc.evict()
	if n := f.cc.size(); n != maxClients {
		t.Fatalf("%d clients cached after release, want %d", n, maxClients)
	}
}

// Through the sidecar: a client stays while its lock is held (and while a request waits
// with it), then is dropped and logged off once idle, and the next request logs on anew.
// On virtual time: hours pass in no time.
func TestServeDropsIdleClients(t *testing.T) {
	virtualSidecar(t, func(t *testing.T, v *vEnv) {
		tok := v.mustAcquire("driver-x", map[string]any{"ttl": "24h"})
		time.Sleep(2 * clientIdleLimit)
		if v.s.clients.size() != 1 {
			t.Fatal("the client of a held lock was dropped")
		}
		if code, out := v.do("POST", "/v1/release", map[string]any{"token": tok}); code != http.StatusOK {
			t.Fatalf("release: %d %v", code, out)
		}
		time.Sleep(clientIdleLimit - time.Second)
		if v.s.clients.size() != 1 {
			t.Fatal("dropped before the idle limit")
		}
		time.Sleep(2 * time.Second)
		if v.s.clients.size() != 0 {
			t.Fatal("an idle client was kept past the limit")
		}
		if !strings.Contains(v.logs.String(), "dropping an idle CloudShell client") {
			t.Errorf("no log of the drop:\n%s", v.logs)
		}
		v.mustAcquire("driver-x", nil)
		if n := v.s.clients.dialCount(); n != 2 {
			t.Fatalf("%d dials, want a new logon after the drop", n)
		}
		if strings.Contains(v.logs.String(), "logging off an idle") {
			t.Errorf("the logoff failed:\n%s", v.logs)
		}
	})
}
