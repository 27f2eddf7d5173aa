package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

const stateSynopsis = "csmutex state add|allocate|free|get -r ID [flags] NAME KEY [DELTA | LOW-HIGH [VALUE]]"

// exitExhausted is state allocate's answer when every value of the range is allocated: a
// definite "no", like release's "no such lock", not a failure to get the lock.
const exitExhausted = exitNotHeld

// stateVerb is one state subcommand: its arguments after NAME and KEY.
type stateVerb struct {
	args string // for messages: "DELTA"
	n    int
}

var stateVerbs = map[string]stateVerb{
	"add":      {"DELTA", 1},
	"allocate": {"LOW-HIGH", 1},
	"free":     {"LOW-HIGH VALUE", 2},
	"get":      {"", 0},
}

// stateKeyRe is locks' rule for state keys (checked here too so that a bad key is a usage
// error before any network call).
var stateKeyRe = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// rangeRe is LOW-HIGH; either may be negative ("-5--1").
var rangeRe = regexp.MustCompile(`^(-?[0-9]+)-(-?[0-9]+)$`)

func stateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fail0 := func(err error) int { return usageFail(stderr, "state", err, stateSynopsis) }
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" {
		return fail0(errors.New("missing subcommand: add, allocate, free or get"))
	}
	verbName := args[0]
	verb, known := stateVerbs[verbName]
	switch {
	case verbName == "-h" || verbName == "--help" || verbName == "help":
		verbName, args = "add", []string{"--help"}
	case !known:
		return fail0(fmt.Errorf("unknown subcommand %q: want add, allocate, free or get", verbName))
	default:
		args = args[1:]
	}

	fs := newFlagSet("state")
	// Options come before NAME: after it, "-1" is a DELTA, not a flag.
	stopAtCommandWord(fs)
	defer commandWordSets.Delete(fs)
	conn := addConnFlags(fs)
	logf := addLogFlags(fs)
	res := addReservationFlag(fs)
	lockf := addLockFlags(fs)
	var owner string
	var timeout, lease = mutex.DefaultWaitLimit, mutex.DefaultLease
	fs.StringVar(&owner, "owner", "", "`LABEL` recorded as the lock's owner while it is held (default HOST:PID)")
	fs.VarP(newDurationValue(&timeout, mutex.DefaultWaitLimit), "timeout", "w", "wait at most `DURATION` for the lock NAME")
	fs.Var(newDurationValue(&lease, mutex.DefaultLease), "lease", "lease `DURATION` of the lock while the value is updated")
	help := func(w io.Writer) {
		fmt.Fprintf(w, `usage: %s

Read-modify-write a value in the reservation's sandbox data under the lock NAME, in one call
(the lock is taken and released around it): every driver that updates KEY under NAME, here,
through the sidecar or Go's locks.State, sees every other's update.

  add NAME KEY DELTA          add DELTA (may be negative) to the counter KEY; print its new value
  allocate NAME KEY LOW-HIGH  allocate the lowest free value of the range (e.g. 100-199) under
                              KEY and print it; exit %d when every value is allocated
  free NAME KEY LOW-HIGH VALUE
                              return VALUE to the range
  get NAME KEY                print the counter KEY, read without the lock

Options come before NAME. Each stored value carries a generation checked before every write:
if the lock was lost, or the value changed under it, nothing is written and state exits 70.
CloudShell has no compare-and-set, so this narrows but cannot close the window in which a
writer that lost its lock unknowingly overwrites newer state (docs/PROTOCOL.md).
Exit codes as for run: 75 when the lock was not obtained within -w, 65 for a stored value
or range that does not fit (corrupt, overflow, another range, VALUE not allocated).

`, stateSynopsis, exitExhausted)
		printFlags(w, fs)
		fmt.Fprint(w, exitCodesHelp)
	}
	if done, code := parseFlags(fs, args, stdout, stderr, help, stateSynopsis); done {
		return code
	}
	fail := func(err error) int { return usageFail(stderr, "state "+verbName, err, stateSynopsis) }
	pos := fs.Args()
	if want := 2 + verb.n; len(pos) != want {
		return fail(fmt.Errorf("want %s (%d arguments), got %d", strings.TrimSpace("NAME KEY "+verb.args), want, len(pos)))
	}
	name, key := pos[0], pos[1]
	if err := mutex.ValidateName(name); err != nil {
		return fail(fmt.Errorf("NAME: %w", err))
	}
	if len(key) > locks.MaxStateKeyLength || !stateKeyRe.MatchString(key) {
		return fail(fmt.Errorf("KEY %q must be 1 to %d letters, digits, '.', '_' or '-'", key, locks.MaxStateKeyLength))
	}
	var (
		delta, value int64
		r            locks.Range
		err          error
	)
	switch verbName {
	case "add":
		if delta, err = strconv.ParseInt(pos[2], 10, 64); err != nil {
			return fail(fmt.Errorf("DELTA %q is not an integer", pos[2]))
		}
	case "allocate", "free":
		if r, err = parseRange(pos[2]); err != nil {
			return fail(err)
		}
		if verbName == "free" {
			if value, err = strconv.ParseInt(pos[3], 10, 64); err != nil || value < r.Lo || value > r.Hi {
				return fail(fmt.Errorf("VALUE %q is not an integer in %s", pos[3], r))
			}
		}
	}
	if lease > 0 && lease < minLease {
		return fail(fmt.Errorf("--lease must be 0 (never expires) or at least %s, not %s", minLease, lease))
	}
	resID, err := res.get()
	if err != nil {
		return fail(err)
	}
	if err := lockf.validate(); err != nil {
		return fail(err)
	}
	mopts, err := lockf.options()
	if err != nil {
		return fail(err)
	}
	strategy, err := lockf.retry()
	if err != nil {
		return fail(err)
	}
	if err := logf.validate(); err != nil {
		return fail(err)
	}
	if err := conn.validate(); err != nil {
		return fail(err)
	}
	log := logf.logger(stderr).With().Str("reservation", resID).Str("lock", name).Str("key", key).Logger()

	client, err := conn.dial(ctx, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot log on to CloudShell")
		return exitCodeFor(err)
	}
	mopts = append(mopts, mutex.WithLease(lease), mutex.WithLogger(log))
	if owner != "" {
		mopts = append(mopts, mutex.WithOwner(owner))
	}
	st := locks.NewState(client, resID, name, locks.MutexOptions(mopts...), locks.WithRetry(strategy), locks.WithWaitLimit(timeout))
	var out int64
	switch verbName {
	case "add":
		out, err = st.Add(ctx, key, delta)
	case "allocate":
		out, err = st.Allocate(ctx, key, r)
	case "free":
		err = st.Free(ctx, key, r, value)
	case "get":
		out, err = st.Get(ctx, key)
	}
	if err != nil {
		code := stateFailureCode(err)
		log.Error().Err(err).Int("exit_code", code).Msg("state " + verbName + " failed")
		return code
	}
	if verbName != "free" {
		fmt.Fprintln(stdout, out)
	}
	return exitOK
}

// stateFailureCode maps a State error to an exit code: run's codes, plus exitExhausted.
func stateFailureCode(err error) int {
	if errors.Is(err, locks.ErrExhausted) {
		return exitExhausted
	}
	return lockFailureCode(err, exitConflict)
}

// parseRange reads LOW-HIGH, ascending, at most locks.MaxRangeSize values.
func parseRange(s string) (locks.Range, error) {
	m := rangeRe.FindStringSubmatch(s)
	if m == nil {
		return locks.Range{}, usageErrorf("range %q: want LOW-HIGH, e.g. 100-199", s)
	}
	lo, err1 := strconv.ParseInt(m[1], 10, 64)
	hi, err2 := strconv.ParseInt(m[2], 10, 64)
	switch {
	case err1 != nil || err2 != nil:
		return locks.Range{}, usageErrorf("range %q: LOW and HIGH must be 64-bit integers", s)
	case hi < lo:
		return locks.Range{}, usageErrorf("range %q: HIGH is below LOW", s)
	case uint64(hi-lo) >= locks.MaxRangeSize:
		return locks.Range{}, usageErrorf("range %q spans more than %d values", s, locks.MaxRangeSize)
	}
	return locks.Range{Lo: lo, Hi: hi}, nil
}
