package locks

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// Limits of State, so that what it stores in sandbox data stays small.
const (
	// MaxStateKeyLength is the longest state key, in bytes (letters, digits, '.', '_', '-').
	MaxStateKeyLength = 64
	// MaxRangeSize is the most values an allocation range may span (4094 VLAN IDs fit).
	MaxRangeSize = 4096
	// MaxValueLength bounds one stored value: an allocation that would make it longer is
	// refused (ErrExhausted) rather than written.
	MaxValueLength = 16 << 10
)

// statePrefix marks a value written by State; the version lets a future format coexist.
const statePrefix = "csmutex-state/1"

// State reads, modifies and writes values in the reservation's sandbox data atomically with
// respect to everyone who takes the lock name: counters (Add) and allocations of unique
// values from a range (Allocate, Free). Each call takes the lock, unless it runs under one
// (Under), and every stored value carries a generation, incremented by each write.
//
// Before writing, a call checks that the lock is still held within its lease (its Done is
// open, and a fresh read shows its record), and that the value's generation is still the one
// it read; otherwise it writes nothing (ErrConflict, or the loss). CloudShell has no
// compare-and-set, so this narrows, but cannot close, the window in which a writer that lost
// its lock without knowing it (paused longer than the loss margin) overwrites newer state:
// docs/PROTOCOL.md says exactly what it does and does not guarantee.
type State struct {
	api   mutex.API
	resID string
	name  string
	cfg   config
	held  *mutex.Lock
	err   error
}

// Range is an inclusive range of values to allocate from, such as VLAN IDs 100-199.
type Range struct{ Lo, Hi int64 }

// String is "lo-hi", as stored.
func (r Range) String() string { return fmt.Sprintf("%d-%d", r.Lo, r.Hi) }

// NewState returns the state guarded by the lock name (mutex.DefaultName guards it with the
// reservation's lock). Configuration errors are reported by every call (class Invalid).
func NewState(api mutex.API, reservationID, name string, opts ...Option) *State {
	s := &State{api: api, resID: reservationID, name: name, cfg: newConfig(opts)}
	s.err = s.cfg.validate("state", api, reservationID)
	if s.err == nil {
		s.err = mutex.ValidateName(name)
	}
	return s
}

// Under returns a State that uses l, a lock on the same name that the caller holds (inside
// mutex.With, from mutex.HeldLock), instead of taking the lock for each call. A call checks
// that l's record is on the lock name before writing.
func (s *State) Under(l *mutex.Lock) *State {
	c := *s
	c.held = l
	if l == nil && c.err == nil {
		c.err = &ConfigError{Shape: "state", Reason: "Under(nil)"}
	}
	return &c
}

// StateKey is the sandbox-data key under which State keeps key for the lock name.
func StateKey(name, key string) string { return "csmutex.state." + name + "." + key }

func validateKey(key string) error {
	if key == "" || len(key) > MaxStateKeyLength || strings.Trim(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
		return &ConfigError{Shape: "state", Reason: fmt.Sprintf("key %q must be 1 to %d letters, digits, '.', '_' or '-'", key, MaxStateKeyLength)}
	}
	return nil
}

// Add adds delta to the counter key (absent: 0) and returns its new value.
func (s *State) Add(ctx context.Context, key string, delta int64) (int64, error) {
	var result int64
	err := s.update(ctx, key, func(v stored) (stored, error) {
		cur, err := v.counter()
		if err != nil {
			return v, err
		}
		if (delta > 0 && cur > math.MaxInt64-delta) || (delta < 0 && cur < math.MinInt64-delta) {
			return v, &ConfigError{Shape: "state", Reason: fmt.Sprintf("adding %d to %q (%d) overflows", delta, key, cur)}
		}
		result = cur + delta
		v.fields = map[string]string{"v": strconv.FormatInt(result, 10)}
		return v, nil
	})
	return result, err
}

// Allocate takes the lowest value of r not allocated under key and returns it; ErrExhausted
// when none is left. Every call for key must give the same range.
func (s *State) Allocate(ctx context.Context, key string, r Range) (int64, error) {
	var result int64
	err := s.update(ctx, key, func(v stored) (stored, error) {
		used, err := v.allocation(key, r)
		if err != nil {
			return v, err
		}
		result = r.Lo
		for _, u := range used {
			if u != result {
				break
			}
			result++
		}
		if result > r.Hi {
			return v, fmt.Errorf("%w: %q has all of %s", ErrExhausted, key, r)
		}
		used = append(used, result)
		slices.Sort(used)
		v.fields = map[string]string{"range": r.String(), "used": encodeSet(used)}
		if len(v.encode(0)) > MaxValueLength {
			return v, fmt.Errorf("%w: %q would exceed %d characters", ErrExhausted, key, MaxValueLength)
		}
		return v, nil
	})
	return result, err
}

// Free returns value to the range of key. Freeing a value that is not allocated is an error
// of class Invalid, and nothing is written.
func (s *State) Free(ctx context.Context, key string, r Range, value int64) error {
	return s.update(ctx, key, func(v stored) (stored, error) {
		used, err := v.allocation(key, r)
		if err != nil {
			return v, err
		}
		i, ok := slices.BinarySearch(used, value)
		if !ok {
			return v, &ConfigError{Shape: "state", Reason: fmt.Sprintf("%d is not allocated in %q", value, key)}
		}
		v.fields = map[string]string{"range": r.String(), "used": encodeSet(slices.Delete(used, i, i+1))}
		return v, nil
	})
}

// Get reads the counter key without the lock: the value of the last write that landed.
func (s *State) Get(ctx context.Context, key string) (int64, error) {
	v, err := s.read(ctx, key)
	if err != nil {
		return 0, err
	}
	return v.counter()
}

// Allocated reads the values allocated under key without the lock.
func (s *State) Allocated(ctx context.Context, key string) ([]int64, error) {
	v, err := s.read(ctx, key)
	if err != nil {
		return nil, err
	}
	if v.fields["used"] == "" {
		return nil, nil
	}
	return decodeSet(v.fields["used"])
}

func (s *State) read(ctx context.Context, key string) (stored, error) {
	if s.err != nil {
		return stored{}, s.err
	}
	if err := validateKey(key); err != nil {
		return stored{}, err
	}
	data, err := s.api.GetSandboxData(ctx, s.resID)
	if err != nil {
		return stored{}, classify(ctx, fmt.Errorf("locks: state %q: reading sandbox data: %w", key, err), err)
	}
	return find(data, StateKey(s.name, key))
}

// update runs one read-modify-write of key under the lock.
func (s *State) update(ctx context.Context, key string, modify func(stored) (stored, error)) error {
	if s.err != nil {
		return s.err
	}
	if err := validateKey(key); err != nil {
		return err
	}
	if s.held != nil {
		lctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		go func() {
			select {
			case <-s.held.Done():
				cancel(s.held.Err())
			case <-lctx.Done():
			}
		}()
		return s.modify(lctx, s.held, key, modify)
	}
	t := taker{cfg: s.cfg}
	bctx, cancel := t.bound(ctx)
	defer cancel()
	return mutex.With(bctx, s.api, s.resID, func(ctx context.Context) error {
		l, _ := mutex.HeldLock(ctx)
		return s.modify(ctx, l, key, modify)
	}, s.cfg.mutexOptions(s.name)...)
}

// modify is the read, the check and the write. ctx ends when the lock is lost.
func (s *State) modify(ctx context.Context, l *mutex.Lock, key string, modify func(stored) (stored, error)) error {
	skey := StateKey(s.name, key)
	fail := func(what string, err error) error {
		if cause := context.Cause(ctx); errors.Is(cause, mutex.ErrLost) {
			return fmt.Errorf("locks: state %q: %s: %w", key, what, cause)
		}
		return classify(ctx, fmt.Errorf("locks: state %q: %s: %w", key, what, err), err)
	}
	data, err := s.api.GetSandboxData(ctx, s.resID)
	if err != nil {
		return fail("reading", err)
	}
	cur, err := find(data, skey)
	if err != nil {
		return err
	}
	next, err := modify(cur)
	if err != nil {
		return err
	}
	// Check before write: our record is on the lock (a fresh read), the lease has not run
	// out by our own clock (Done is open), and nobody wrote the value since we read it.
	d, err := s.api.GetReservationDetails(ctx, s.resID, true)
	if err != nil {
		return fail("checking the lock", err)
	}
	if err := holds(d, s.name, l); err != nil {
		return fmt.Errorf("locks: state %q: %w", key, err)
	}
	data, err = s.api.GetSandboxData(ctx, s.resID)
	if err != nil {
		return fail("re-reading", err)
	}
	now, err := find(data, skey)
	if err != nil {
		return err
	}
	if now.gen != cur.gen {
		return &ConflictError{Key: key, Read: cur.gen, Now: now.gen}
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("locks: state %q: %w", key, err)
	}
	value := next.encode(cur.gen + 1)
	if err := s.api.SetSandboxData(ctx, s.resID, []cloudshell.SandboxDataKeyValue{{Key: skey, Value: value}}); err != nil {
		return fail("writing", err)
	}
	return nil
}

// holds checks that d shows l's record on the lock name.
func holds(d *cloudshell.ReservationDetails, name string, l *mutex.Lock) error {
	svc, ok := d.Service(name)
	if !ok {
		return fmt.Errorf("%w: the lock %q is gone; nothing was written", mutex.ErrLost, name)
	}
	raw, _ := svc.Attribute(mutex.OwnerAttribute)
	if !slices.Contains(strings.Fields(raw), "token="+l.Owner().Token) {
		return fmt.Errorf("%w: the lock %q is not held by this lock (record %q); nothing was written", mutex.ErrLost, name, raw)
	}
	return nil
}

// stored is a parsed state value: "csmutex-state/1 g=<generation> <field>=<value>...".
type stored struct {
	gen    uint64
	fields map[string]string
}

func find(data []cloudshell.SandboxDataKeyValue, key string) (stored, error) {
	for _, kv := range data {
		if kv.Key == key {
			return parseStored(key, kv.Value)
		}
	}
	return stored{fields: map[string]string{}}, nil
}

func parseStored(key, raw string) (stored, error) {
	bad := func() (stored, error) {
		return stored{}, fmt.Errorf("%w: %s = %q", ErrCorrupt, key, raw)
	}
	rest, ok := strings.CutPrefix(raw, statePrefix+" ")
	if !ok {
		return bad()
	}
	v := stored{fields: map[string]string{}}
	seenGen := false
	for _, f := range strings.Fields(rest) {
		k, val, ok := strings.Cut(f, "=")
		if !ok {
			return bad()
		}
		if k == "g" {
			g, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return bad()
			}
			v.gen, seenGen = g, true
			continue
		}
		v.fields[k] = val
	}
	if !seenGen {
		return bad()
	}
	return v, nil
}

func (v stored) encode(gen uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s g=%d", statePrefix, gen)
	keys := make([]string, 0, len(v.fields))
	for k := range v.fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, v.fields[k])
	}
	return b.String()
}

func (v stored) counter() (int64, error) {
	raw, ok := v.fields["v"]
	if !ok {
		if len(v.fields) > 0 {
			return 0, fmt.Errorf("%w: not a counter (%v)", ErrCorrupt, v.fields)
		}
		return 0, nil
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: counter %q", ErrCorrupt, raw)
	}
	return n, nil
}

func (v stored) allocation(key string, r Range) ([]int64, error) {
	if r.Lo > r.Hi || r.Hi-r.Lo >= MaxRangeSize || r.Hi-r.Lo < 0 {
		return nil, &ConfigError{Shape: "state", Reason: fmt.Sprintf("range %s must be ascending and span at most %d values", r, MaxRangeSize)}
	}
	if len(v.fields) == 0 {
		return nil, nil
	}
	if got := v.fields["range"]; got != r.String() {
		return nil, &ConfigError{Shape: "state", Reason: fmt.Sprintf("%q allocates from %s, not %s", key, got, r)}
	}
	used, err := decodeSet(v.fields["used"])
	if err != nil {
		return nil, err
	}
	for _, u := range used {
		if u < r.Lo || u > r.Hi {
			return nil, fmt.Errorf("%w: %q holds %d, outside %s", ErrCorrupt, key, u, r)
		}
	}
	return used, nil
}

// encodeSet writes sorted values as runs: "1-3,7".
func encodeSet(vs []int64) string {
	var parts []string
	for i := 0; i < len(vs); {
		j := i
		for j+1 < len(vs) && vs[j+1] == vs[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.FormatInt(vs[i], 10))
		} else {
			parts = append(parts, strconv.FormatInt(vs[i], 10)+"-"+strconv.FormatInt(vs[j], 10))
		}
		i = j + 1
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func decodeSet(s string) ([]int64, error) {
	if s == "-" || s == "" {
		return nil, nil
	}
	var out []int64
	for _, p := range strings.Split(s, ",") {
		lo, hi, isRun := strings.Cut(p[min(1, len(p)):], "-")
		lo = p[:min(1, len(p))] + lo // a leading '-' is a sign, not a run
		a, err := strconv.ParseInt(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: allocation %q", ErrCorrupt, s)
		}
		b := a
		if isRun {
			if b, err = strconv.ParseInt(hi, 10, 64); err != nil || b < a || b-a >= MaxRangeSize {
				return nil, fmt.Errorf("%w: allocation %q", ErrCorrupt, s)
			}
		}
		for v := a; v <= b; v++ {
			if len(out) > 0 && v <= out[len(out)-1] {
				return nil, fmt.Errorf("%w: allocation %q is not ascending", ErrCorrupt, s)
			}
			if len(out) == MaxRangeSize {
				// No range holds more: a longer list is damage (or hostile), and decoding it
				// whole could take as much memory as its runs claim.
				return nil, fmt.Errorf("%w: allocation of more than %d values", ErrCorrupt, MaxRangeSize)
			}
			out = append(out, v)
		}
	}
	return out, nil
}
