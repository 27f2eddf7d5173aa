package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mutex"
)

// useCacheDir points the sightings file at a fresh directory for the test.
func useCacheDir(t *testing.T) string {
	t.Helper()
	dir := testenv.TempDir(t)
	old := cacheDir
	cacheDir = func() (string, error) { return dir, nil }
	t.Cleanup(func() { cacheDir = old })
	return dir
}

// setStatusNow puts status on a virtual clock.
func setStatusNow(t *testing.T, now *time.Time) {
	t.Helper()
	old := statusNow
	statusNow = func() time.Time { return *now }
	t.Cleanup(func() { statusNow = old })
}

// status says how long every lock has been held: a csmutex lock from the since= of its
// record, a legacy lock from when this machine first saw its holder, remembered across
// invocations; a new holder (or the same record after the lock went away) starts afresh.
func TestStatusHeldSinceAndObserved(t *testing.T) {
	clearEnv(t)
	useCacheDir(t)
	host, port, res := inProcessMock(t)
	ctx := context.Background()
	c, err := cloudshell.Dial(ctx, cloudshell.Config{Host: host, Port: port, Username: "admin", Password: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	conn := []string{"--host", host, "--port", strconv.Itoa(port), "--user", "admin", "--password", "admin", "-r", res}
	status := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := runMain(t, append(append([]string{"status"}, conn...), args...)...)
		if code != 0 {
			t.Fatalf("status: exit %d\n%s", code, stderr)
		}
		return stdout
	}
	addLegacy := func(alias, raw string) {
		t.Helper()
		if err := c.AddServiceToReservation(ctx, res, mutex.DefaultServiceModel, alias,
			[]cloudshell.AttributeNameValue{{Name: mutex.OwnerAttribute, Value: raw}}); err != nil {
			t.Fatal(err)
		}
	}
	addLegacy("MUTEX", "Thread-1")
	lock, err := mutex.New(c, res, mutex.WithName("CSM"), mutex.WithOwner("drv"), mutex.WithLease(0)).TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock(ctx)
	since := lock.Owner().Since

	now := time.Now()
	setStatusNow(t, &now)
	out := status()
	if !strings.Contains(out, "first seen now") {
		t.Errorf("first listing of a legacy lock:\n%s", out)
	}
	now = now.Add(3*time.Minute + 10*time.Second)
	out = status()
	held := heldFor(since, now)
	for _, want := range []string{"observed for at least 3m10s",
		fmt.Sprintf("%s (since %s UTC, holder's clock)", held, since.UTC().Format(time.TimeOnly))} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	var locks []lockStatus
	if err := json.Unmarshal([]byte(status("--json")), &locks); err != nil {
		t.Fatal(err)
	}
	for _, l := range locks {
		switch l.Name {
		case "MUTEX":
			if l.ObservedSeconds != 190 || l.ObservedSince == "" || l.HeldSince != "" {
				t.Errorf("legacy lock: %+v", l)
			}
		case "CSM":
			if got, err := time.Parse(time.RFC3339Nano, l.HeldSince); err != nil || !got.Equal(since) || l.HeldSeconds != held.Seconds() || l.ObservedSince != "" {
				t.Errorf("csmutex lock: %+v (since %s)", l, since)
			}
		}
	}

	// The legacy holder leaves and a driver with the same thread name takes the lock: a new
	// holder, observed from now.
	if err := c.RemoveServicesFromReservation(ctx, res, []string{"MUTEX"}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	status()
	addLegacy("MUTEX", "Thread-1")
	now = now.Add(20 * time.Second)
	if out := status(); !strings.Contains(out, "first seen now") {
		t.Errorf("a returning record must be a new sighting:\n%s", out)
	}
}

// The sightings file stays small: entries expire, gone locks are dropped, and the count is
// bounded.
func TestSightingsBounded(t *testing.T) {
	dir := useCacheDir(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < maxSightings+50; i++ {
		if _, err := recordSightings("h:1", "res-"+strconv.Itoa(i), "M", []lockKey{{"MUTEX", "x"}}, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	read := func() []sighting {
		b, err := os.ReadFile(filepath.Join(dir, "csmutex", sightingFile))
		if err != nil {
			t.Fatal(err)
		}
		var all []sighting
		if err := json.Unmarshal(b, &all); err != nil {
			t.Fatal(err)
		}
		return all
	}
	if all := read(); len(all) != maxSightings || all[0].Reservation != "res-"+strconv.Itoa(maxSightings+49) {
		t.Errorf("kept %d entries (newest first: %v), want the newest %d", len(all), all[0].Reservation, maxSightings)
	}
	// A week later every old entry has expired.
	later := t0.Add(sightingTTL + time.Hour + 2*time.Hour)
	first, err := recordSightings("h:1", "res-new", "M", []lockKey{{"MUTEX", "y"}}, later)
	if err != nil || !first[lockKey{"MUTEX", "y"}].Equal(later) {
		t.Fatal(first, err)
	}
	if all := read(); len(all) != 1 {
		t.Errorf("after expiry: %d entries, want 1", len(all))
	}
	// A damaged file is replaced, not an error.
	os.WriteFile(filepath.Join(dir, "csmutex", sightingFile), []byte("{garbage"), 0o600)
	if _, err := recordSightings("h:1", "r", "M", nil, later); err != nil {
		t.Errorf("damaged file: %v", err)
	}
}
