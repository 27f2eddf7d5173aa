package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
)

const runSynopsis = "csmutex run -r ID [flags] [--] COMMAND [ARGS...]  |  csmutex run -r ID [flags] -c 'COMMAND LINE'"

// releaseTimeout bounds the release after the command exits. The mutex retries a failing
// release within it; past it the lease (if any) frees the lock.
const releaseTimeout = 30 * time.Second

// minLease is the shortest lease accepted: the lock renews every lease/3, and a shorter
// lease would turn renewal into a busy loop against the server. Production leases are
// seconds to minutes; sub-second leases are for tests.
const minLease = 100 * time.Millisecond

// Sandbox messages: --sandbox-messages alone writes at most one a minute; EVERY may not be
// shorter than a few seconds, for the Output window is the sandbox user's to read, nor
// longer than a day (a longer one is surely a typo).
const (
	defaultSandboxEvery = time.Minute
	minSandboxEvery     = 5 * time.Second
	maxSandboxEvery     = 24 * time.Hour
)

// runOptions is a checked `csmutex run` command line.
type runOptions struct {
	conn        *connFlags
	log         *logFlags
	lock        *lockFlags
	shapeFlags  *shapeFlags
	levelFlags  *levelFlags
	reservation string
	// name labels what is locked in logs: the lock's name, or a set's or pool's names.
	name         string
	shape        shapeSpec
	levels       levelSpec
	owner        string
	timeout      time.Duration
	nonblock     bool
	conflict     int
	lease        time.Duration
	killGrace    time.Duration
	sandboxEvery time.Duration
	shellLine    string
	mutexOpts    []mutex.Option
	lockOpts     []locks.Option
	command      []string
	// path is command[0] resolved (exec.LookPath), before any lock is requested.
	path string
}

func runHelp(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, `usage: %s

Acquire the reservation's lock, run COMMAND while holding it, release it, and exit with
COMMAND's exit code. The lock is a "Mutex Service" with the lock name as its alias: the
same lock the public Reservation-Mutex-Lock snippet takes, so both exclude each other.

Options come before COMMAND: everything from the first word that is not an option (or
after "--") is the command and its arguments, so 'csmutex run -r R sh -c "x -n"' passes
-n to x. -c 'COMMAND LINE' runs the line through sh -c (cmd /c on Windows), like flock -c.

COMMAND is looked up in PATH first: if it cannot be found or executed, csmutex exits 127
or 126 at once, without waiting for the lock. It inherits stdin, stdout, stderr and the
environment, minus CloudShell credentials (CLOUDSHELL_PASSWORD, CLOUDSHELL_TOKEN), plus
CSMUTEX_LOCK_HELD=1, CSMUTEX_RESERVATION_ID, CSMUTEX_LOCK_NAME, CSMUTEX_OWNER,
CSMUTEX_SHAPE and CSMUTEX_ALIASES (the lock services held), and per shape CSMUTEX_SLOT,
CSMUTEX_SLOTS, CSMUTEX_READERS, CSMUTEX_NAMES, CSMUTEX_MEMBERS, CSMUTEX_POOL (below). SIGINT,
SIGTERM and SIGHUP are forwarded to it (on Windows, Ctrl-C reaches it through the console).
While it runs the lock's lease is renewed; if the lock (any part of a shape) is lost
anyway, COMMAND gets SIGTERM, then SIGKILL (its whole process tree) after --kill-grace (on
Windows its whole Job Object is terminated at once), and csmutex exits 70. If csmutex itself is killed,
COMMAND's whole process tree is killed with it.

Lock shapes (CSMUTEX_SHAPE; one shape per run, others are usage errors):
  exclusive  the default: --name alone. It also waits for, and then excludes, shared
             runs of the name (it takes the writer side of the shared/exclusive lock).
  shared     -s/--shared: many runs at once (at most --readers, default 16), none while
             an exclusive run (or a legacy snippet driver) holds the name. CSMUTEX_SLOT.
  semaphore  --slots N: at most N runs hold --name at once. CSMUTEX_SLOT, CSMUTEX_SLOTS.
  set        --name A --name B ...: every name or none, taken in sorted order, so two
             sets never deadlock. CSMUTEX_NAMES (sorted, comma-separated).
  pool       --pool A,B,C --count K: any K free members. CSMUTEX_MEMBERS: those held.
Every party of a semaphore or shared lock must use the same N. For a set or pool,
CSMUTEX_LOCK_NAME lists the names held, comma-separated, as CSMUTEX_NAMES and
CSMUTEX_MEMBERS do; CSMUTEX_POOL lists all of the pool's members.

Lock levels across nested runs: --levels reservation,device,port --at-level device says
this run's lock (any shape) is at level "device". COMMAND gets CSMUTEX_LEVELS (the levels,
coarse to fine, comma-separated) and CSMUTEX_LEVEL (the level held), and a csmutex run it
starts with --at-level must take a finer level (port) and declare the same --levels, or
none (it inherits them); otherwise it exits 64 before contacting CloudShell. A run
without --at-level is not checked and passes the variables on unchanged.

While it waits, csmutex shows who holds the lock, for how long, and how long it has
waited: a status line rewritten in place when stderr is a terminal, else a log line every
%s. -q hides both. --sandbox-messages tells the sandbox's user, in the reservation's
Output window.

`, runSynopsis, waitLogEvery)
	printFlags(w, fs)
	fmt.Fprint(w, exitCodesHelp)
}

// defaultKillGrace is how long a command that lost its lock gets between SIGTERM and
// SIGKILL, unless the lease's margin demands less (see parseRun).
const defaultKillGrace = 5 * time.Second

// parseRun checks the command line completely, touching no network. It returns nil and
// the exit code when the command must stop (help, or a usage error).
func parseRun(args []string, stdout, stderr io.Writer) (*runOptions, int) {
	fs := newFlagSet("run")
	stopAtCommandWord(fs)
	o := &runOptions{conn: addConnFlags(fs), log: addLogFlags(fs), lock: addLockFlags(fs)}
	res := addReservationFlag(fs)
	o.shapeFlags = addShapeFlags(fs)
	o.levelFlags = addLevelFlags(fs)
	// No -o: flock's -o closes the lock's descriptor, a different thing.
	fs.StringVar(&o.owner, "owner", "", "`LABEL` recorded as the lock's owner (default HOST:PID)")
	fs.VarP(newDurationValue(&o.timeout, mutex.DefaultWaitLimit), "timeout", "w",
		"wait at most `DURATION` for the lock (e.g. 90s, 5m, or plain seconds: 30);\n0 means a single try, like -n")
	fs.BoolVarP(&o.nonblock, "nonblock", "n", false, "try once; if the lock is held, fail at once (exit 75 or -E)")
	fs.IntVarP(&o.conflict, "conflict-exit-code", "E", exitConflict,
		"exit `CODE` when the lock is not obtained (held, or still held after -w),\nto tell that from COMMAND's own exit 75")
	fs.Var(newDurationValue(&o.lease, mutex.DefaultLease), "lease",
		"`DURATION` after which waiters may break the lock if csmutex stops renewing it\n(killed, host down); 0 = never expires")
	fs.Var(newDurationValue(&o.killGrace, defaultKillGrace), "kill-grace",
		"after a lost lock, wait `DURATION` between SIGTERM and SIGKILL; at most half the lease's\nloss margin (lease/12), which is also the default when that is shorter than 5s")
	fs.StringVarP(&o.shellLine, "command", "c", "",
		"run `LINE` through sh -c (cmd /c on Windows) instead of\nCOMMAND [ARGS...]")
	sandbox := fs.VarPF(newDurationValue(&o.sandboxEvery, 0), "sandbox-messages", "",
		"write to the reservation's Output window that this driver waits for the\n"+
			"lock and for whom, at most every `EVERY` ("+minSandboxEvery.String()+" to 24h; without =EVERY,\n"+
			defaultSandboxEvery.String()+"), and when it got the lock")
	sandbox.NoOptDefVal = defaultSandboxEvery.String()

	help := func(w io.Writer) { runHelp(w, fs) }
	defer commandWordSets.Delete(fs)
	if done, code := parseFlags(fs, args, stdout, stderr, help, runSynopsis); done {
		return nil, code
	}
	fail := func(err error) (*runOptions, int) { return nil, usageFail(stderr, "run", err, runSynopsis) }

	rest := fs.Args()
	switch {
	case len(rest) > 0 && slices.Contains(args, "--sandbox-messages") && isDuration(rest[0]):
		// Its value is optional, so a separate word is the command's.
		return fail(fmt.Errorf("write --sandbox-messages=%s: after --sandbox-messages, %q would be the command", rest[0], rest[0]))
	case given(fs, "command") && len(rest) > 0:
		return fail(fmt.Errorf("-c/--command and a COMMAND (%q) are mutually exclusive: give one", rest[0]))
	case given(fs, "command") && strings.TrimSpace(o.shellLine) == "":
		return fail(errors.New("-c/--command needs a command LINE"))
	case given(fs, "command"):
		rest = shellCommand(o.shellLine)
	case len(rest) == 0 || rest[0] == "":
		return fail(errors.New("missing COMMAND (after the options, or after \"--\"), or -c 'COMMAND LINE'"))
	}
	o.command = rest

	var err error
	if o.reservation, err = res.get(); err != nil {
		return fail(err)
	}
	if o.shape, err = o.shapeFlags.spec(); err != nil {
		return fail(err)
	}
	o.name = strings.Join(o.shape.names, ",")
	// The runs around this one set the levels' variables (levels.go).
	if o.levels, err = o.levelFlags.spec(os.Getenv, o.shape.label()); err != nil {
		return fail(err)
	}
	switch {
	case o.lease > 0 && o.lease < minLease:
		return fail(fmt.Errorf("--lease must be 0 (never expires) or at least %s, not %s", minLease, o.lease))
	case o.conflict < 0 || o.conflict > 255:
		return fail(fmt.Errorf("-E/--conflict-exit-code must be between 0 and 255, not %d", o.conflict))
	case given(fs, "sandbox-messages") && (o.sandboxEvery < minSandboxEvery || o.sandboxEvery > maxSandboxEvery):
		return fail(fmt.Errorf("--sandbox-messages=EVERY must be between %s (the Output window is the sandbox user's) and %s, not %s",
			minSandboxEvery, maxSandboxEvery, o.sandboxEvery))
	}
	if o.lease > 0 {
		// The holder declares the lock lost at its loss point; waiters may break it only
		// the loss margin (lease/6) later. SIGKILL must land well inside that margin, or the
		// command may still be editing when the next holder starts: half of it is the
		// grace, the other half is slack for the kill and a busy machine.
		limit := mutex.LossMargin(o.lease) / 2
		switch {
		case !given(fs, "kill-grace"):
			o.killGrace = min(o.killGrace, limit)
		case o.killGrace > limit:
			return fail(fmt.Errorf("--kill-grace %s is too long for --lease %s: a command that ignores SIGTERM could still run when another driver may take the lock; use at most %s (lease/12), or a longer lease",
				o.killGrace, o.lease, limit))
		}
	}
	if err := o.lock.validate(); err != nil {
		return fail(err)
	}
	if o.mutexOpts, err = o.lock.options(); err != nil {
		return fail(err)
	}
	if o.sandboxEvery > 0 {
		o.mutexOpts = append(o.mutexOpts, mutex.WithSandboxMessages(o.sandboxEvery))
	}
	strategy, err := o.lock.retry()
	if err != nil {
		return fail(err)
	}
	o.lockOpts = []locks.Option{locks.WithRetry(strategy), locks.WithWaitLimit(o.timeout)}
	if err := o.log.validate(); err != nil {
		return fail(err)
	}
	if err := o.conn.validate(); err != nil {
		return fail(err)
	}
	return o, 0
}

func runCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, code := parseRun(args, stdout, stderr)
	if o == nil {
		return code
	}
	// While waiting, logs go through the status reporter, which keeps them apart from the
	// live status line. -q shows neither.
	tty := isTerminal(stderr)
	logw := stderr
	var status *waitStatus
	if !o.log.quiet {
		f, _ := stderr.(*os.File)
		live := tty && o.log.format == "console" && enableLiveLine(f)
		status = newWaitStatus(stderr, live, func() int { return termWidth(f) })
		logw = status.Writer()
	}
	// The mutex adds lock and reservation to its own messages; ours carry them too.
	base := o.log.loggerTo(logw, tty)
	log := base.With().Str("reservation", o.reservation).Str("lock", o.name).Logger()
	if status != nil {
		status.setLogger(log)
	}

	// A command that cannot run fails now, not after waiting for the lock (up to -w).
	path, err := exec.LookPath(o.command[0])
	if err != nil {
		code := commandFailureCode(err)
		what := "command cannot be executed"
		if code == exitNotFound {
			what = "command not found"
		}
		log.Error().Err(err).Msg(what + "; the lock was not requested")
		return code
	}
	o.path = path

	// Signals are ours from here on: before the command starts they abandon the wait,
	// afterwards they are forwarded to it.
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, forwardSignals...)
	defer signal.Stop(sigc)

	lock, info, sig, code := acquire(ctx, o, base, log, sigc, status)
	if lock == nil {
		return code
	}
	if sig != nil {
		release(lock, log)
		log.Error().Str("signal", sig.String()).Msg("interrupted before the command started; lock released")
		return exitSignalBase + signalNumber(sig)
	}
	return runLocked(ctx, o, log, lock, info, sigc, stdin, stdout, stderr)
}

// acquire logs on and takes the lock shape. A signal meanwhile abandons the attempt. It
// returns what it holds (and any signal that arrived as it was obtained), or nil and the exit
// code.
func acquire(ctx context.Context, o *runOptions, base, log zerolog.Logger, sigc <-chan os.Signal, status *waitStatus) (holding, heldInfo, os.Signal, int) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan os.Signal, 1)
	stop := make(chan struct{})
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		select {
		case s := <-sigc:
			got <- s
			cancel()
		case <-stop:
		}
	}()
	interrupted := func() os.Signal {
		close(stop)
		<-watching
		select {
		case s := <-got:
			return s
		default:
			return nil
		}
	}

	client, err := o.conn.dial(wctx, base)
	if err != nil {
		if s := interrupted(); s != nil {
			log.Error().Str("signal", s.String()).Msg("interrupted while logging on")
			return nil, heldInfo{}, nil, exitSignalBase + signalNumber(s)
		}
		log.Error().Err(err).Msg("cannot log on to CloudShell")
		return nil, heldInfo{}, nil, exitCodeFor(err)
	}

	// The shape overrides name, retry and wait limit with its own (o.lockOpts); the plain
	// lock (a name no shape can have) uses these.
	opts := []mutex.Option{
		mutex.WithLease(o.lease), mutex.WithWaitLimit(o.timeout), mutex.WithLogger(base),
	}
	if o.owner != "" {
		opts = append(opts, mutex.WithOwner(o.owner))
	}
	opts = append(opts, o.mutexOpts...)
	if status != nil {
		// A shape may wait on several locks at once (a pool's members, a semaphore's slots),
		// each reporting from its own goroutine: one report at a time.
		var observing sync.Mutex
		opts = append(opts, mutex.WithObserver(func(ev mutex.WaitEvent) {
			observing.Lock()
			defer observing.Unlock()
			status.observe(ev)
		}))
	}
	start := time.Now()
	lock, info, err := o.shape.take(wctx, client, o.reservation, o.nonblock || o.timeout == 0, opts, o.lockOpts)
	if status != nil {
		status.done()
	}
	s := interrupted()
	if err != nil {
		if s != nil {
			log.Error().Str("signal", s.String()).Msg("interrupted while waiting for the lock")
			return nil, heldInfo{}, nil, exitSignalBase + signalNumber(s)
		}
		code := lockFailureCode(err, o.conflict)
		var le *mutex.LockedError
		var te *mutex.TimeoutError
		// Scripts (and the Python helper) read who holds the lock from the fields, not
		// from the message.
		notObtained := func(h mutex.Owner, waited time.Duration, tries int) *zerolog.Event {
			return holderFields(log.Error(), h, time.Now()).Dur("waited_ms", waited).Int("tries", tries).Int("exit_code", code)
		}
		var be *locks.BusyError
		switch {
		case errors.As(err, &le) && o.shape.kind == shapeExclusive:
			notObtained(le.Holder, time.Since(start), 1).
				Msgf("lock not obtained: lock %q in reservation %s is held by %s (-n: not waiting)", o.name, o.reservation, le.Holder)
		case errors.As(err, &le):
			notObtained(le.Holder, time.Since(start), 1).
				Msgf("lock not obtained: %s in reservation %s: lock %q is held by %s (-n: not waiting)", o.shape.label(), o.reservation, le.Name, le.Holder)
		case errors.As(err, &be):
			log.Error().Strs("holders", be.Holders).Dur("waited_ms", time.Since(start)).Int("tries", 1).Int("exit_code", code).
				Msgf("lock not obtained: %s in reservation %s is %s (-n: not waiting)", o.shape.label(), o.reservation, busyText(err))
		case errors.As(err, &te) && code == o.conflict && o.shape.kind == shapeExclusive:
			notObtained(te.Holder, te.Waited, te.Tries).
				Msgf("lock not obtained: gave up after %s waiting for lock %q in reservation %s, held by %s",
					te.Waited.Round(time.Millisecond), o.name, o.reservation, holderText(te.Holder))
		case errors.As(err, &te) && code == o.conflict:
			notObtained(te.Holder, te.Waited, te.Tries).
				Msgf("lock not obtained: gave up after %s waiting for %s in reservation %s%s",
					te.Waited.Round(time.Millisecond), o.shape.label(), o.reservation, shapeHolderText(te))
		case code == exitDataErr:
			log.Error().Err(err).Msg("lock not obtained: bad reservation or CloudShell setup")
		default:
			log.Error().Err(err).Msg("lock not obtained")
		}
		return nil, heldInfo{}, nil, code
	}
	return lock, info, s, 0
}

// shapeHolderText says what a shape's wait was last held up by, when the timeout knows.
func shapeHolderText(te *mutex.TimeoutError) string {
	if te.Holder.IsZero() {
		return ""
	}
	if te.Name != "" {
		return fmt.Sprintf(": lock %q held by %s", te.Name, te.Holder)
	}
	return ", held by " + te.Holder.String()
}

func holderText(o mutex.Owner) string {
	if o.IsZero() {
		return "an unknown holder"
	}
	return o.String()
}

// release unlocks with a fresh, bounded context: it must run whatever happened to the
// caller's. It returns the error, already logged.
func release(lock holding, log zerolog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	err := lock.Release(ctx)
	switch {
	case err == nil:
		log.Debug().Msg("lock released")
	case errors.Is(err, mutex.ErrLost):
		// Reported by the caller as a lost lock.
	default:
		log.Error().Err(err).Msg("could not release the lock; its lease will free it")
	}
	return err
}

// commandFailureCode is the shell's code for a command that cannot run: 127 when it does
// not exist, 126 otherwise (not executable, a directory, found only in "." through PATH).
func commandFailureCode(err error) int {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return exitNotFound
	}
	return exitCannotExec
}

// runLocked runs the command while lock is held and releases the lock afterwards.
func runLocked(ctx context.Context, o *runOptions, log zerolog.Logger, lock holding, info heldInfo, sigc <-chan os.Signal,
	stdin io.Reader, stdout, stderr io.Writer) int {
	owner := info.owner
	env := commandEnv(os.Environ(), append(info.env(o.reservation), o.levels.env()...)...)
	// An interactive command stays in our process group so that it keeps the terminal;
	// otherwise it gets its own group, so that signals reach its whole process tree
	// (a shell script's children too) and nothing it leaves behind outlives a lost lock.
	// Either way it dies with its whole tree if csmutex dies (run_unix.go, run_windows.go).
	group := !isTerminal(stdin)
	// If the command exits but a grandchild keeps our stdout/stderr pipes open (only when
	// they are not files), stop waiting for them after this long.
	const waitDelay = 2 * time.Second

	c, err := startChild(o.path, o.command, env, stdin, stdout, stderr, group, waitDelay)
	if err != nil {
		log.Error().Err(err).Msg("cannot run the command")
		release(lock, log)
		return commandFailureCode(err)
	}
	defer c.close()
	c.logStart(log.Debug()).Str("owner", owner.String()).Str("shape", info.spec.kind).Strs("aliases", info.aliases).Msg("command started")

	waitc := make(chan error, 1)
	go func() { waitc <- c.wait() }()

	var (
		lostErr error
		grace   <-chan time.Time
		killed  bool
		lostc   = lock.Done()
		ctxDone = ctx.Done()
		waitErr error
	)
	terminate := func() {
		if err := c.terminate(); err != nil {
			log.Debug().Err(err).Msg("terminating the command")
		}
		if grace == nil && !killed {
			grace = time.After(o.killGrace)
		}
	}
wait:
	for {
		select {
		case s := <-sigc:
			log.Debug().Str("signal", s.String()).Msg("forwarding signal to the command")
			if err := c.signal(s); err != nil {
				log.Debug().Err(err).Msg("forwarding signal")
			}
		case <-ctxDone:
			ctxDone = nil
			log.Warn().Msg("canceled; terminating the command")
			terminate()
		case <-lostc:
			lostc = nil
			lostErr = lock.Err()
			log.Error().Err(lostErr).Dur("kill_grace_ms", o.killGrace).
				Msg("lock lost while the command ran; terminating the command: it is no longer protected")
			terminate()
		case <-grace:
			if !killed {
				killed = true
				log.Warn().Msg("the command is still running after --kill-grace; killing it and its whole process tree")
				if err := c.kill(); err != nil {
					log.Debug().Err(err).Msg("killing the command")
				}
				// The kill is the guardian's (Unix); should that not end it, kill directly.
				grace = time.After(o.killGrace)
				continue
			}
			grace = nil
			log.Warn().Msg("the command's tree is still running after being killed; killing its process group directly")
			if err := c.forceKill(); err != nil {
				log.Debug().Err(err).Msg("killing the command")
			}
		case waitErr = <-waitc:
			break wait
		}
	}

	code := c.exitStatus()
	if code < 0 { // no process state: Wait failed oddly
		log.Error().Err(waitErr).Msg("waiting for the command")
		code = exitLockLost
	}
	if lostErr == nil {
		select {
		case <-lock.Done():
			lostErr = lock.Err() // lost just as the command finished
		default:
		}
	}
	if lostErr == nil {
		if err := release(lock, log); errors.Is(err, mutex.ErrLost) {
			lostErr = err
		}
	} else {
		_ = lock.Release(context.Background()) // stops renewals; removes only the parts still held
	}
	if lostErr != nil {
		c.cleanup() // whatever the command left running in its group (job on Windows)
		log.Error().Int("command_exit_code", code).
			Msgf("%s in reservation %s was lost while the command ran (%v); exiting %d", o.shape.label(), o.reservation, lostErr, exitLockLost)
		return exitLockLost
	}
	log.Debug().Int("exit_code", code).Msg("command finished")
	return code
}

// isDuration reports whether s reads as a duration ("30s", "30"): a command word that is
// one was most likely meant as a flag's value.
func isDuration(s string) bool {
	_, err := parseDuration(s)
	return err == nil
}
