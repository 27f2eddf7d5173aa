package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/csmutex/csmutex/mutex"
)

const statusSynopsis = "csmutex status -r ID [--json] [--name NAME]"

// lockStatus is one lock as `csmutex status --json` prints it.
type lockStatus struct {
	Name string `json:"name"`
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
	// BreakOf is set on a break lock: the lock a waiter is breaking.
	BreakOf string `json:"break_of,omitempty"`
	// Raw is the "Mutex Owner" attribute verbatim.
	Raw string `json:"raw"`
}

func toStatus(s mutex.LockState) lockStatus {
	h := s.Holder
	st := lockStatus{Name: s.Name, Kind: "csmutex", Owner: h.Name, Host: h.Host, PID: h.PID, Token: h.Token,
		Heartbeat: s.Heartbeat, BreakOf: s.BreakOf, Raw: h.Raw}
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

func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status")
	conn := addConnFlags(fs)
	logf := addLogFlags(fs)
	res := addReservationFlag(fs)
	var asJSON bool
	var name string
	fs.BoolVar(&asJSON, "json", false, "print a JSON array (one object per lock) instead of a table")
	fs.StringVar(&name, "name", "", "show only the lock `NAME` (and the break locks aimed at it)")
	help := func(w io.Writer) {
		fmt.Fprintf(w, `usage: %s

List every lock in the reservation: its name, owner label, host, pid, token, how long it
has been held (as the holder reported at its last heartbeat), its lease and lease state;
whether a csmutex or a legacy (Python snippet) driver took it; and, for a break lock, which
lock is being broken.
Prints "no locks" (or [] with --json) when there are none; that is not an error. An
unknown or ended reservation is one (exit 65), as for run.

`, statusSynopsis)
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
	states, err := mutex.Inspect(ctx, client, resID, mutex.WithLogger(log))
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
	out := []lockStatus{}
	for _, s := range states {
		if name == "" || s.Name == name || s.BreakOf == name {
			out = append(out, toStatus(s))
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
	fmt.Fprintln(tw, "NAME\tKIND\tOWNER\tHOST\tPID\tTOKEN\tHELD\tLEASE\tSTATE\tBREAK-OF")
	for _, s := range out {
		owner, pid, lease := s.Owner, "-", s.Lease
		if s.PID != 0 {
			pid = strconv.Itoa(s.PID)
		}
		if s.Kind == "legacy" && owner == "" {
			owner = "(none recorded)"
		}
		if s.Kind == "csmutex" && s.LeaseSeconds == 0 {
			lease = "0s"
		}
		// HELD is the holder's own figure from its last heartbeat: "-" for holds younger
		// than lease/3, which write none.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			cell(s.Name), s.Kind, cell(owner), cell(s.Host), pid, cell(s.Token), cell(s.Held), cell(lease), cell(s.State), cell(s.BreakOf))
	}
	if err := tw.Flush(); err != nil {
		return exitUnavailable
	}
	return exitOK
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
