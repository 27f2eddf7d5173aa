// Command csmutex locks a CloudShell (Quali) reservation for exclusive use, in the lineage
// of flock(1) and `consul lock`:
//
//	csmutex run -r RESERVATION [flags] -- COMMAND [ARGS...]
//
// runs COMMAND while holding the reservation's lock (the same "MUTEX" service the public
// Reservation-Mutex-Lock snippet uses, so both exclude each other), renews the lock's lease
// while COMMAND runs, and releases the lock on every path. Other subcommands: status
// (list the locks in a reservation), release (break a lock, with --force), serve (a lock
// sidecar for drivers), version and help.
//
// Connection settings come from flags or, when a flag is not given, from the environment:
// CLOUDSHELL_HOST, CLOUDSHELL_PORT, CLOUDSHELL_SCHEME, CLOUDSHELL_USER,
// CLOUDSHELL_PASSWORD, CLOUDSHELL_DOMAIN, CLOUDSHELL_TOKEN, CLOUDSHELL_RESERVATION_ID.
// Passwords and tokens are never printed, --help included. Exit codes are listed in
// exitcode.go and by `csmutex --help`.
//
// Testing only: CSMUTEX_TEST_JITTER=MIN,MAX (e.g. "5ms,20ms") replaces the 2-5 s wait
// between lock attempts. It exists so tests need not sleep; never set it in production,
// where it would hammer the shared CloudShell server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/csmutex/csmutex/internal/duration"
	"github.com/csmutex/csmutex/internal/term"
	"github.com/rs/zerolog"
)

func main() {
	zerolog.TimeFieldFormat = time.RFC3339Nano // sub-second times: lock waits are short
	os.Exit(Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Main runs csmutex with args (without the program name) and returns the exit code. It
// is the whole command, callable in-process by tests; only run starts a real process.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "csmutex: missing command")
		fmt.Fprint(stderr, shortUsage)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return runCmd(ctx, rest, stdin, stdout, stderr)
	case "serve":
		return serveCmd(ctx, rest, stdout, stderr)
	case "service":
		return serviceCmd(ctx, rest, stdout, stderr)
	case "status":
		return statusCmd(ctx, rest, stdout, stderr)
	case "release":
		return releaseCmd(ctx, rest, stdout, stderr)
	case "version", "-version", "--version":
		return versionCmd(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && rest[0] != "help" && !strings.HasPrefix(rest[0], "-") {
			return Main(ctx, []string{rest[0], "--help"}, stdin, stdout, stderr)
		}
		fmt.Fprint(stdout, longUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "csmutex: unknown command %q\n", cmd)
		fmt.Fprint(stderr, shortUsage)
		return exitUsage
	}
}

const shortUsage = `usage: csmutex run|status|release|serve|version|help [flags]
run 'csmutex --help' for details.
`

const longUsage = `csmutex locks a CloudShell reservation for exclusive use.

Usage:
  csmutex run -r ID [flags] -- COMMAND [ARGS...]   run COMMAND while holding the lock
  csmutex status -r ID [--json] [--name NAME]      list the locks in a reservation
  csmutex release -r ID [--name NAME] --force      break a lock, whoever holds it
  csmutex serve [flags]                            run the lock sidecar
  csmutex service install|uninstall|start|stop     Windows: run the sidecar as a service
  csmutex version                                  print version, commit, Go version, os/arch
  csmutex help [COMMAND]                           show help (also COMMAND --help)

Connection flags (every command; a flag wins over its environment variable):
  --host HOST, --port PORT (8029), --scheme http|https, --user USER,
  --password PASSWORD, --domain DOMAIN (Global), --token TOKEN (admin token),
  --insecure-skip-verify, -r/--reservation ID
  environment: CLOUDSHELL_HOST, CLOUDSHELL_PORT, CLOUDSHELL_SCHEME, CLOUDSHELL_USER,
  CLOUDSHELL_PASSWORD, CLOUDSHELL_DOMAIN, CLOUDSHELL_TOKEN, CLOUDSHELL_RESERVATION_ID

` + exitCodesHelp

// newFlagSet returns a flag set that reports errors to its caller instead of printing or
// exiting: each command prints one line and its own usage.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args. It returns done=true with the exit code when the command must
// stop: 0 after printing help to stdout, 64 after printing the error and synopsis.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer, help func(io.Writer), synopsis string) (done bool, code int) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return false, 0
	case errors.Is(err, flag.ErrHelp):
		help(stdout)
		return true, exitOK
	default:
		return true, usageFail(stderr, fs.Name(), err, synopsis)
	}
}

// usageFail prints a one-line reason and the synopsis, and returns exitUsage.
func usageFail(stderr io.Writer, cmd string, err error, synopsis string) int {
	fmt.Fprintf(stderr, "csmutex %s: %v\n", cmd, err)
	fmt.Fprintf(stderr, "usage: %s\nrun 'csmutex %s --help' for the flags.\n", synopsis, cmd)
	return exitUsage
}

// printFlags prints fs's flags, aliases (flags sharing one variable, such as -w and
// --timeout) on one line, in two groups: the command's own flags, then the connection
// and logging flags every command shares. Hidden flags are skipped. Defaults are shown
// from the flag definitions only, never from the environment, so no secret can appear.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	type entry struct {
		names []string
		f     *flag.Flag
	}
	var groups []*entry
	fs.VisitAll(func(f *flag.Flag) {
		for _, g := range groups {
			if g.f.Value == f.Value {
				g.names = append(g.names, f.Name)
				return
			}
		}
		groups = append(groups, &entry{names: []string{f.Name}, f: f})
	})
	for _, g := range groups {
		sort.Slice(g.names, func(i, j int) bool {
			if len(g.names[i]) != len(g.names[j]) {
				return len(g.names[i]) < len(g.names[j])
			}
			return g.names[i] < g.names[j]
		})
	}
	long := func(e *entry) string { return e.names[len(e.names)-1] }
	sort.SliceStable(groups, func(i, j int) bool { return long(groups[i]) < long(groups[j]) })

	line := func(e *entry) {
		var b strings.Builder
		b.WriteString("  ")
		for i, n := range e.names {
			if i > 0 {
				b.WriteString(", ")
			}
			if len(n) == 1 {
				b.WriteString("-" + n)
			} else {
				b.WriteString("--" + n)
			}
		}
		arg, usage := flag.UnquoteUsage(e.f)
		if arg != "" {
			b.WriteString(" " + arg)
		}
		if b.Len() < 30 {
			b.WriteString(strings.Repeat(" ", 30-b.Len()))
		} else {
			b.WriteString("\n" + strings.Repeat(" ", 30))
		}
		b.WriteString(strings.ReplaceAll(usage, "\n", "\n"+strings.Repeat(" ", 30)))
		if d := e.f.DefValue; d != "" && d != "0" && d != "false" && d != "0s" && !strings.Contains(usage, "(default") {
			fmt.Fprintf(&b, " (default %s)", d)
		}
		fmt.Fprintln(w, b.String())
	}
	var own, shared []*entry
	for _, g := range groups {
		switch {
		case strings.HasPrefix(g.f.Usage, hiddenFlag):
		case sharedFlags[long(g)]:
			shared = append(shared, g)
		default:
			own = append(own, g)
		}
	}
	if len(own) > 0 {
		fmt.Fprintln(w, "Flags:")
		for _, g := range own {
			line(g)
		}
		fmt.Fprintln(w)
	}
	if len(shared) > 0 {
		fmt.Fprintln(w, "Connection and logging flags:")
		for _, g := range shared {
			line(g)
		}
		fmt.Fprintln(w)
	}
}

// hiddenFlag starts the usage of a flag that help does not list.
const hiddenFlag = "HIDDEN "

// sharedFlags are the flags of conn.go and logFlags, listed apart in help.
var sharedFlags = map[string]bool{
	"host": true, "port": true, "scheme": true, "user": true, "password": true,
	"domain": true, "token": true, "insecure-skip-verify": true, "reservation": true,
	"quiet": true, "verbose": true, "log-format": true,
}

// durationValue is a flag.Value for a non-negative duration given either as a Go
// duration ("90s", "1m30s") or as plain seconds like flock -w ("30", "1.5").
type durationValue time.Duration

func newDurationValue(p *time.Duration, def time.Duration) *durationValue {
	*p = def
	return (*durationValue)(p)
}

func (d *durationValue) String() string {
	if d == nil {
		return "0s"
	}
	return time.Duration(*d).String()
}

func (d *durationValue) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}

// parseDuration accepts a Go duration or a plain number of seconds (internal/duration, as
// the sidecar does); negative values are refused.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	d, err := duration.Parse(s)
	switch {
	case duration.IsSeconds(s) && (err != nil || d < 0):
		return 0, fmt.Errorf("%q is not a valid number of seconds", s)
	case err != nil:
		return 0, fmt.Errorf("%q is not a duration (want e.g. 30, 90s, 5m or 1h30m)", s)
	case d < 0:
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

// logFlags are -q/--quiet, -v/--verbose and --log-format, shared by every command.
type logFlags struct {
	quiet, verbose bool
	format         string
}

func addLogFlags(fs *flag.FlagSet) *logFlags {
	l := &logFlags{}
	for _, n := range []string{"q", "quiet"} {
		fs.BoolVar(&l.quiet, n, false, "log errors only")
	}
	for _, n := range []string{"v", "verbose"} {
		fs.BoolVar(&l.verbose, n, false, "log debug detail: lock attempts and waits, API calls and their timings")
	}
	fs.StringVar(&l.format, "log-format", "console", "log `FORMAT` on stderr: console or json")
	return l
}

func (l *logFlags) validate() error {
	switch {
	case l.format != "console" && l.format != "json":
		return usageErrorf("--log-format must be console or json, not %q", l.format)
	case l.quiet && l.verbose:
		return usageErrorf("-q/--quiet and -v/--verbose are mutually exclusive")
	}
	return nil
}

// logger returns the logger for w (stderr): info by default, errors only with -q, debug
// with -v; human-readable unless --log-format json.
func (l *logFlags) logger(w io.Writer) zerolog.Logger {
	level := zerolog.InfoLevel
	switch {
	case l.quiet:
		level = zerolog.ErrorLevel
	case l.verbose:
		level = zerolog.DebugLevel
	}
	if l.format == "json" {
		return zerolog.New(w).Level(level).With().Timestamp().Str("cmd", "csmutex").Logger()
	}
	cw := zerolog.ConsoleWriter{Out: w, NoColor: !term.IsTerminal(w), TimeFormat: "15:04:05.000"}
	return zerolog.New(cw).Level(level).With().Timestamp().Logger()
}
