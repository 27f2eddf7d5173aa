package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

const statusSynopsis = "csmutex status -r ID [--json] [--name NAME]"

// lockStatus is one lock as `csmutex status --json` prints it.
type lockStatus struct {
	Name string `json:"name"`
	// Shape is what the lock is, by its name: "lock" (a plain lock: an exclusive run, the
	// exclusive side of a shared lock, or a member of a lock set or pool, which are plain
	// locks), "semaphore" (slot Slot of the semaphore Group), "shared" (reader slot Slot of
	// the shared lock Group), or "break" (a break lock). Mode is "exclusive", "shared" or
	// "slot" accordingly ("" for a break lock).
	Shape string `json:"shape"`
	Mode  string `json:"mode,omitempty"`
	Group string `json:"group,omitempty"`
	Slot  int    `json:"slot,omitempty"`
	// Members are the locks whose holder records name the same owner, host and pid, this
	// one included, when there are several: the locks of a set or pool taken together (or
	// several holds of one process, such as a sidecar).
	Members []string `json:"members,omitempty"`
	// Waiters are the csmutex waiters queued for this lock, in the order they take turns.
	Waiters []waiterStatus `json:"waiters,omitempty"`
	// Kind is "csmutex" for a lock csmutex took, "legacy" for one taken by the public
	// Python snippet or by hand (no owner record csmutex can read).
	Kind  string `json:"kind"`
	Owner string `json:"owner"`
	Host  string `json:"host,omitempty"`
	PID   int    `json:"pid,omitempty"`
	Token string `json:"token,omitempty"`
	// Lease is a Go duration ("1m0s"); "0s" means the lock never expires.
	Lease        string  `json:"lease,omitempty"`
	LeaseSeconds float64 `json:"lease_seconds,omitempty"`
	// Heartbeat is the holder's last heartbeat, "<seq> held=<duration>", or "" if it has
	// written none yet (holders first renew after lease/3).
	Heartbeat string `json:"heartbeat"`
	// Held is the held=<duration> part of the heartbeat: how long the holder has held the
	// lock, by its own clock, when it last renewed.
	Held string `json:"held,omitempty"`
	// State says what can happen to the lock: "renewing (heartbeat N)", "no heartbeat yet"
	// (holders first renew after lease/3), "never expires" (lease 0), or for a legacy lock
	// "legacy: never broken automatically". One look cannot tell a live holder from a dead
	// one: waiters decide that by watching the heartbeat for a whole lease.
	State string `json:"state"`
	// HeldSince is when the holder took the lock, by its own clock (RFC 3339), and
	// HeldSeconds how long ago that was: csmutex locks whose record carries since=.
	HeldSince   string  `json:"held_since,omitempty"`
	HeldSeconds float64 `json:"held_seconds,omitempty"`
	// ObservedSince is when `csmutex status` on this machine first saw this holder, for
	// locks without HeldSince (legacy ones): the lock has been held for at least
	// ObservedSeconds. Zero seconds means this listing is the first sighting.
	ObservedSince   string  `json:"observed_since,omitempty"`
	ObservedSeconds float64 `json:"observed_seconds,omitempty"`
	// BreakOf is set on a break lock: the lock a waiter is breaking.
	// Kind is "free" for a row that lists only waiters: the lock itself is not held.
	BreakOf string `json:"break_of,omitempty"`
	// Raw is the "Mutex Owner" attribute verbatim.
	Raw string `json:"raw"`
}

// toStatus describes s at now; firstSeen is when this machine first saw its holder (zero:
// unknown).
func toStatus(s mutex.LockState, now, firstSeen time.Time) lockStatus {
	h := s.Holder
	st := lockStatus{Name: s.Name, Kind: "csmutex", Owner: h.Name, Host: h.Host, PID: h.PID, Token: h.Token,
		Heartbeat: s.Heartbeat, BreakOf: s.BreakOf, Raw: h.Raw}
	if !h.Since.IsZero() {
		st.HeldSince = h.Since.UTC().Format(time.RFC3339Nano)
		st.HeldSeconds = heldFor(h.Since, now).Seconds()
	} else if !firstSeen.IsZero() {
		st.ObservedSince = firstSeen.UTC().Format(time.RFC3339Nano)
		st.ObservedSeconds = heldFor(firstSeen, now).Seconds()
	}
	if h.Legacy {
		st.Kind = "legacy"
		st.Owner = h.Raw
	} else {
		st.Lease = h.Lease.String()
		st.LeaseSeconds = h.Lease.Seconds()
	}
	for _, f := range strings.Fields(s.Heartbeat) {
		if v, ok := strings.CutPrefix(f, "held="); ok {
			st.Held = v
		}
	}
	switch seq, _, _ := strings.Cut(s.Heartbeat, " "); {
	case h.Legacy:
		st.State = "legacy: never broken automatically"
	case h.Lease == 0:
		st.State = "never expires"
	case s.Heartbeat == "":
		st.State = "no heartbeat yet"
	default:
		st.State = "renewing (heartbeat " + seq + ")"
	}
	return st
}

// statusNow is the clock of status's held and observed times (tests: virtual time).
var statusNow = time.Now

func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status")
	conn := addConnFlags(fs)
	logf := addLogFlags(fs)
	res := addReservationFlag(fs)
	modelf := addModelFlag(fs)
	var asJSON bool
	var name string
	fs.BoolVar(&asJSON, "json", false, "print a JSON array (one object per lock) instead of a table")
	fs.StringVar(&name, "name", "", "show only the lock `NAME` (with the break locks aimed at it, and the\nslots of the semaphore or shared lock NAME)")
	help := func(w io.Writer) {
		fmt.Fprintf(w, `usage: %s

List every lock in the reservation: its name, owner label, host, pid, token, how long it
has been held, its lease and lease state;
whether a csmutex or a legacy (Python snippet) driver took it; and, for a break lock, which
lock is being broken. Lock shapes are grouped: the slots of a semaphore ("SW.slot.2") and
the reader slots of a shared lock ("TOPO.read.1") under a line with how many are held
(the N of a semaphore is not recorded in the reservation: every party passes it). Lock
sets and pools are plain locks: SHAPE says which other locks the same holder holds.
WAITERS counts the csmutex waiters queued for each lock and how long this machine has
seen the oldest (queue entries record no time).
Prints "no locks" (or [] with --json) when there are none; that is not an error. An
unknown or ended reservation is one (exit 65), as for run.

HELD: for a csmutex lock, since when by the holder's record ("1m20s (since 06:40:01 UTC,
holder's clock)"). A legacy lock (the Python snippet) records no time: status remembers
when this machine first saw each holder, in a small file in the user's cache directory
(%s), and shows "observed for at least 3m10s". Run status once when a driver seems
stuck and again later: the second listing says how long the same holder has held on.

`, statusSynopsis, filepath.Join("csmutex", sightingFile))
		printFlags(w, fs)
		fmt.Fprint(w, exitCodesHelp)
	}
	if done, code := parseFlags(fs, args, stdout, stderr, help, statusSynopsis); done {
		return code
	}
	fail := func(err error) int { return usageFail(stderr, "status", err, statusSynopsis) }
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	resID, err := res.get()
	if err != nil {
		return fail(err)
	}
	if err := modelf.validate(); err != nil {
		return fail(err)
	}
	if err := logf.validate(); err != nil {
		return fail(err)
	}
	if err := conn.validate(); err != nil {
		return fail(err)
	}
	log := logf.logger(stderr).With().Str("reservation", resID).Logger()

	client, err := conn.dial(ctx, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot log on to CloudShell")
		return exitCodeFor(err)
	}
	states, err := mutex.Inspect(ctx, client, resID, mutex.WithLogger(log), mutex.WithServiceModel(modelf.model))
	if err != nil {
		if states == nil {
			// Classified as run classifies it: an unknown or ended reservation is a bad
			// reservation (65), as when run tries to lock it.
			code := exitCodeFor(err)
			msg := "cannot read the reservation's locks"
			if code == exitDataErr {
				msg = "cannot list the locks: bad reservation (unknown or ended) or CloudShell setup"
			}
			log.Error().Err(err).Msg(msg)
			return code
		}
		log.Warn().Err(err).Msg("could not read the heartbeats; showing the locks without them")
	}
	now := statusNow()
	var waiters map[string][]waiterStatus
	if data, err := client.GetSandboxData(ctx, resID); err != nil {
		log.Warn().Err(err).Msg("could not read the waiting room; showing the locks without waiters")
	} else {
		waiters = parseWaiters(data)
	}
	keys := make([]lockKey, 0, len(states))
	for _, s := range states {
		keys = append(keys, lockKey{s.Name, s.Holder.Raw})
	}
	for _, ws := range waiters {
		for _, w := range ws {
			keys = append(keys, w.key)
		}
	}
	firstSeen, err := recordSightings(conn.addr(), resID, modelf.model, keys, now)
	if err != nil {
		log.Debug().Err(err).Msg("cannot remember first sightings of locks; legacy locks show only this one")
	}
	all := make([]lockStatus, 0, len(states))
	for _, s := range states {
		all = append(all, toStatus(s, now, firstSeen[lockKey{s.Name, s.Holder.Raw}]))
	}
	all = withShapes(all, waiters, firstSeen, now)
	out := []lockStatus{}
	for _, s := range all {
		if name == "" || s.Name == name || s.BreakOf == name || s.Group == name {
			out = append(out, s)
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			log.Error().Err(err).Msg("writing the output")
			return exitUnavailable
		}
		return exitOK
	}
	if len(out) == 0 {
		fmt.Fprintln(stdout, "no locks")
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSHAPE\tKIND\tOWNER\tHOST\tPID\tTOKEN\tHELD\tLEASE\tSTATE\tWAITERS\tBREAK-OF")
	group := ""
	for _, s := range out {
		if s.Group != "" && s.Group != group {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\t\t\t\n", cell(s.Group), groupSummary(s.Group, out))
		}
		group = s.Group
		owner, pid, lease, name := s.Owner, "-", s.Lease, s.Name
		if s.PID != 0 {
			pid = strconv.Itoa(s.PID)
		}
		if s.Kind == "legacy" && owner == "" {
			owner = "(none recorded)"
		}
		if s.Kind == "csmutex" && s.LeaseSeconds == 0 {
			lease = "0s"
		}
		if s.Group != "" {
			name = "  " + name
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			cell(name), cell(shapeCell(s)), s.Kind, cell(owner), cell(s.Host), pid, cell(s.Token), cell(heldCell(s)), cell(lease), cell(s.State),
			cell(waitersCell(s.Waiters)), cell(s.BreakOf))
	}
	if err := tw.Flush(); err != nil {
		return exitUnavailable
	}
	return exitOK
}

// withShapes says what shape each lock belongs to, which locks its holder holds together,
// and who waits for it; adds a row for each lock that has waiters but no holder; and orders
// the rows so that a shape's slots follow one another (and the plain lock of the same name).
func withShapes(all []lockStatus, waiters map[string][]waiterStatus, firstSeen map[lockKey]time.Time, now time.Time) []lockStatus {
	type holderID struct {
		owner, host string
		pid         int
	}
	held := map[holderID][]string{}
	present := map[string]bool{}
	for i := range all {
		s := &all[i]
		present[s.Name] = true
		switch group, kind, slot := splitSlot(s.Name); {
		case s.BreakOf != "":
			s.Shape = "break"
		case kind == mutex.SlotInfix:
			s.Shape, s.Mode, s.Group, s.Slot = "semaphore", "slot", group, slot
		case kind == mutex.ReadInfix:
			s.Shape, s.Mode, s.Group, s.Slot = "shared", "shared", group, slot
		default:
			s.Shape, s.Mode = "lock", "exclusive"
		}
		if s.Kind == "csmutex" && s.BreakOf == "" && s.PID != 0 {
			id := holderID{s.Owner, s.Host, s.PID}
			held[id] = append(held[id], s.Name)
		}
	}
	for i := range all {
		s := &all[i]
		if ms := held[holderID{s.Owner, s.Host, s.PID}]; s.Kind == "csmutex" && s.BreakOf == "" && len(ms) > 1 {
			s.Members = slices.Sorted(slices.Values(ms))
		}
	}
	for lock, ws := range waiters {
		observeWaiters(ws, firstSeen, now)
		if !present[lock] {
			st := lockStatus{Name: lock, Kind: "free", State: "not held (waiters queued)"}
			all = append(all, withShapes([]lockStatus{st}, nil, nil, now)...)
		}
		for i := range all {
			if all[i].Name == lock {
				all[i].Waiters = ws
			}
		}
	}
	// A shape's rows sort under its name: "SW", then "SW.slot.1", "SW.slot.2", ... "SW.slot.10".
	sortKey := func(s lockStatus) (string, int, int) {
		switch {
		case s.BreakOf != "":
			return s.BreakOf, 3, 0
		case s.Group != "" && s.Shape == "semaphore":
			return s.Group, 1, s.Slot
		case s.Group != "":
			return s.Group, 2, s.Slot
		}
		return s.Name, 0, 0
	}
	slices.SortStableFunc(all, func(a, b lockStatus) int {
		an, ar, as := sortKey(a)
		bn, br, bs := sortKey(b)
		return cmp.Or(strings.Compare(an, bn), cmp.Compare(ar, br), cmp.Compare(as, bs))
	})
	return all
}

// splitSlot splits a slot alias, "SW.slot.2" or "TOPO.read.1", into the shape's name, the
// infix and the slot; kind is "" for any other name.
func splitSlot(alias string) (group, kind string, slot int) {
	for _, infix := range []string{mutex.SlotInfix, mutex.ReadInfix} {
		i := strings.LastIndex(alias, infix)
		if i <= 0 {
			continue
		}
		num := alias[i+len(infix):]
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > mutex.MaxSlots || strconv.Itoa(n) != num {
			continue
		}
		return alias[:i], infix, n
	}
	return "", "", 0
}

// groupSummary is the line above a shape's slots: how many are held.
func groupSummary(group string, rows []lockStatus) string {
	slots, readers, writer := 0, 0, false
	for _, s := range rows {
		switch {
		case s.Group == group && s.Shape == "semaphore" && s.Kind != "free":
			slots++
		case s.Group == group && s.Shape == "shared" && s.Kind != "free":
			readers++
		case s.Name == group && s.Kind != "free":
			writer = true
		}
	}
	var parts []string
	if slots > 0 {
		parts = append(parts, fmt.Sprintf("semaphore: %d slots held", slots))
	}
	if readers > 0 {
		parts = append(parts, fmt.Sprintf("shared: %d readers", readers))
	}
	if readers > 0 && writer {
		parts = append(parts, "exclusive side taken (waiting for the readers)")
	}
	if len(parts) == 0 {
		return "(slots not held)"
	}
	return strings.Join(parts, "; ")
}

// shapeCell is the SHAPE column: "slot 2", "reader 1", "exclusive", or the other locks the
// same holder holds ("exclusive, with B,C": a set's or a pool's).
func shapeCell(s lockStatus) string {
	var c string
	switch s.Shape {
	case "semaphore":
		c = "slot " + strconv.Itoa(s.Slot)
	case "shared":
		c = "reader " + strconv.Itoa(s.Slot)
	case "break":
		return "break"
	default:
		c = "exclusive"
	}
	if len(s.Members) > 1 {
		var others []string
		for _, m := range s.Members {
			if m != s.Name {
				others = append(others, m)
			}
		}
		c += ", with " + strings.Join(others, ",")
	}
	return c
}

// cell makes a value safe for one table cell: "-" when empty, quoted when it holds
// control characters (tabs, newlines) that would break the table.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return strconv.Quote(s)
	}
	return s
}

// heldCell is the HELD column: since when by the holder's record, else the holder's own
// figure at its last heartbeat, else how long this machine has seen it.
func heldCell(s lockStatus) string {
	switch {
	case s.HeldSince != "":
		since, _ := time.Parse(time.RFC3339Nano, s.HeldSince)
		return fmt.Sprintf("%s (since %s UTC, holder's clock)", secondsText(s.HeldSeconds), since.UTC().Format(time.TimeOnly))
	case s.Held != "":
		return s.Held + " (at last heartbeat)"
	case s.ObservedSince != "" && s.ObservedSeconds == 0:
		return "first seen now (run status again later)"
	case s.ObservedSince != "":
		return "observed for at least " + secondsText(s.ObservedSeconds)
	}
	return ""
}

func secondsText(sec float64) string {
	return (time.Duration(sec * float64(time.Second))).Round(time.Second).String()
}
