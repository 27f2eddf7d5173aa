package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// Legacy locks (the public Python snippet) and records from csmutex before owner records
// carried since= say nothing about when they were taken. `csmutex status` therefore
// remembers, on this machine, when it first saw each lock, and says "observed for at least
// …": exactly what an administrator weighs before `release --force`. The memory is a small
// JSON file in the user's cache directory, keyed by server, reservation, service model,
// alias and the raw owner record (a new holder is a new record, so a new sighting). It is
// bounded: entries for locks that are gone from a reservation just listed are dropped,
// entries not seen for sightingTTL expire, and at most maxSightings are kept.
const (
	sightingTTL  = 7 * 24 * time.Hour
	maxSightings = 1000
	sightingFile = "status-sightings.json"
)

// cacheDir is os.UserCacheDir, replaceable by tests.
var cacheDir = os.UserCacheDir

// sighting is one remembered lock.
type sighting struct {
	Server      string    `json:"server"`
	Reservation string    `json:"reservation"`
	Model       string    `json:"model"`
	Alias       string    `json:"alias"`
	Raw         string    `json:"raw"`
	First       time.Time `json:"first"`
	Last        time.Time `json:"last"`
}

// lockKey identifies a lock holder within one listing of a reservation.
type lockKey struct{ alias, raw string }

// sightingsPath is where sightings live, or an error if the machine has no cache directory.
func sightingsPath() (string, error) {
	dir, err := cacheDir()
	if err != nil {
		return "", err
	}
	if dir == "" {
		return "", errors.New("no cache directory")
	}
	return filepath.Join(dir, "csmutex", sightingFile), nil
}

// recordSightings notes that the locks in current (every lock of the reservation, as just
// listed) were seen at now, and returns when each was first seen. Failing to read or write
// the file only loses the memory: the result then says "first seen now".
func recordSightings(server, reservation, model string, current []lockKey, now time.Time) (map[lockKey]time.Time, error) {
	first := make(map[lockKey]time.Time, len(current))
	for _, k := range current {
		first[k] = now
	}
	path, err := sightingsPath()
	if err != nil {
		return first, err
	}
	var all []sighting
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &all) // a damaged file is replaced
	}
	here := func(s sighting) bool {
		return s.Server == server && s.Reservation == reservation && s.Model == model
	}
	var kept []sighting
	for _, s := range all {
		switch {
		case now.Sub(s.Last) > sightingTTL:
		case here(s):
			k := lockKey{s.Alias, s.Raw}
			if _, still := first[k]; still && s.First.Before(now) {
				first[k] = s.First
			}
			// Locks of this reservation are re-added below, gone ones dropped.
		default:
			kept = append(kept, s)
		}
	}
	for _, k := range current {
		kept = append(kept, sighting{Server: server, Reservation: reservation, Model: model, Alias: k.alias, Raw: k.raw,
			First: first[k], Last: now})
	}
	if len(kept) > maxSightings {
		sort.SliceStable(kept, func(i, j int) bool { return kept[i].Last.After(kept[j].Last) })
		kept = kept[:maxSightings]
	}
	return first, writeFileAtomic(path, kept)
}

// writeFileAtomic writes v as JSON to path through a temporary file and a rename, so a
// concurrent status never reads half a file.
func writeFileAtomic(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), sightingFile+".*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
