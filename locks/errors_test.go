package locks_test

import (
	"errors"
	"testing"
	"time"

	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

// A BusyError's owners are read as mutex reads them: a csmutex record's fields, anything
// else (the public snippet's thread name, an empty value, a damaged record) a legacy holder
// named by its record.
func TestBusyErrorOwners(t *testing.T) {
	be := &locks.BusyError{Shape: "semaphore", Name: "S", Holders: []string{
		"csmutex/1 owner=drv+one host=h1 pid=42 token=ab12 lease=1m0s since=2026-01-02T03:04:05.000Z",
		"Thread-3",
		"",
		"csmutex/1 owner=x host=h pid=1", // no token: damaged
	}}
	got := be.Owners()
	if len(got) != 4 {
		t.Fatalf("Owners = %v, want 4", got)
	}
	want0 := mutex.Owner{Name: "drv one", Host: "h1", PID: 42, Token: "ab12", Lease: time.Minute,
		Since: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Raw: be.Holders[0]}
	if got[0] != want0 {
		t.Errorf("Owners[0] = %#v, want %#v", got[0], want0)
	}
	for i := 1; i < 4; i++ {
		if !got[i].Legacy || got[i].Raw != be.Holders[i] {
			t.Errorf("Owners[%d] = %#v, want a legacy holder with its record %q", i, got[i], be.Holders[i])
		}
	}
	if !errors.Is(be, mutex.ErrLocked) {
		t.Error("BusyError is not ErrLocked")
	}
	if n := len((&locks.BusyError{}).Owners()); n != 0 {
		t.Errorf("no holders: %d owners", n)
	}
}
