// Command csmutex locks a CloudShell (Quali) reservation for exclusive use, in the lineage
// of flock(1) and `consul lock`:
//
//	csmutex run -r RESERVATION [flags] [--] COMMAND [ARGS...]
//	csmutex run -r RESERVATION [flags] -c 'COMMAND LINE'
//
// runs COMMAND while holding the reservation's lock (or a lock shape: -s/--shared, --slots
// N, a repeated --name, --pool; see run --help) (the same "MUTEX" service the public
// Reservation-Mutex-Lock snippet uses, so both exclude each other), renews the lock's lease
// while COMMAND runs, and releases the lock on every path. Other subcommands: status
// (list the locks in a reservation), release (break a lock, with --force), state (counters
// and allocations in sandbox data, updated under a lock), serve (a lock
// sidecar for drivers), version and help.
//
// Connection settings come from flags or, when a flag is not given, from the environment:
// CLOUDSHELL_HOST, CLOUDSHELL_PORT, CLOUDSHELL_SCHEME, CLOUDSHELL_USER,
// CLOUDSHELL_PASSWORD, CLOUDSHELL_DOMAIN, CLOUDSHELL_TOKEN, CLOUDSHELL_RESERVATION_ID.
// Passwords and tokens are never printed, --help included. Exit codes are listed in
// exitcode.go and by `csmutex --help`.
//
// Flags follow the GNU conventions (spf13/pflag): -qn, -w5m, --timeout=5m; see flags.go.
//
// Testing only: CSMUTEX_TEST_JITTER=MIN,MAX (e.g. "5ms,20ms") replaces --poll-interval,
// below its 500ms floor. It exists so tests need not sleep; never set it in production,
// where it would hammer the shared CloudShell server.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
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
	args, err := globalOptions(args)
	if err != nil {
		fmt.Fprintf(stderr, "csmutex: %v\n", err)
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
	case "state":
		return stateCmd(ctx, rest, stdout, stderr)
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

// globalOptions moves the connection and logging options given before the command word
// (csmutex --log-format json run ...) after it, where the command parses them with its
// own: every command has them, so they may come on either side. It returns args unchanged
// when they start with the command word or with help or version.
func globalOptions(args []string) ([]string, error) {
	switch args[0] {
	case "-h", "-help", "--help", "-version", "--version":
		return args, nil
	}
	if !strings.HasPrefix(args[0], "-") {
		return args, nil
	}
	fs := newFlagSet("csmutex")
	stopAtCommandWord(fs)
	defer commandWordSets.Delete(fs)
	addConnFlags(fs)
	addLogFlags(fs)
	addReservationFlag(fs)
	addShortAliases(fs)
	norm := legacySpellings(fs, args)
	if err := fs.Parse(norm); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return []string{"help"}, nil
		}
		return nil, fmt.Errorf("%v (before the command, only connection and logging options are allowed)", flagError(err))
	}
	rest := fs.Args()
	if fs.ArgsLenAtDash() >= 0 || len(rest) == 0 {
		return nil, errors.New("missing command after the options")
	}
	global := norm[:len(norm)-len(rest)]
	return append(append([]string{rest[0]}, global...), rest[1:]...), nil
}

const shortUsage = `usage: csmutex run|status|release|state|serve|version|help [flags]
run 'csmutex --help' for details.
`

const longUsage = `csmutex locks a CloudShell reservation for exclusive use.

Usage:
  csmutex run -r ID [flags] [--] COMMAND [ARGS...] run COMMAND while holding the lock
  csmutex run -r ID [flags] -c 'COMMAND LINE'      the same, through sh -c (cmd /c)
      lock shapes: -s (shared), --slots N (semaphore), --name A --name B (set),
      --pool A,B,C --count K (any K members); see 'csmutex run --help'
  csmutex status -r ID [--json] [--name NAME]      list the locks in a reservation
  csmutex release -r ID [--name NAME] --force      break a lock, whoever holds it
  csmutex state add|allocate|free|get -r ID NAME KEY ...
                                                   counters and allocations kept in the
                                                   reservation, updated under lock NAME
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
Logging flags (every command): -q/--quiet, -v/--verbose, --log-format console|json.
Connection and logging flags may also come before the command:
  csmutex --log-format json run -r ID -- COMMAND

Flags: combined short flags (-qn), attached values (-w5m, -w 5m, --timeout=5m).

` + exitCodesHelp
