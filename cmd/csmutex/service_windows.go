package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"
)

// The Windows service that runs `csmutex serve` unattended.
const (
	serviceName        = "csmutex-sidecar"
	serviceDisplayName = "csmutex lock sidecar"
	serviceDescription = "Reservation locks for CloudShell drivers (csmutex serve)."
	serviceSynopsis    = "csmutex service install [--log-file PATH] [serve flags...] | uninstall | start | stop"
)

func serviceUsage(w io.Writer) {
	fmt.Fprintf(w, `usage: %s

Run the lock sidecar (csmutex serve) as the Windows service %q: started at boot
by the Service Control Manager, as LocalSystem. Every subcommand needs an elevated prompt.

  install [--log-file PATH] [serve flags...]
            register the service (automatic start, restarted on failure) to run this
            executable with the serve flags given; it logs to the Application event log
            (source %q), or to PATH with --log-file. Does not start it.
  uninstall stop the service if it runs and remove it
  start     start the service
  stop      stop the service: it stops accepting connections, releases every held lock,
            then exits, as serve does on SIGTERM

The service's arguments are readable by local users (sc qc %s): never put a
password or token in them. Give the sidecar no CloudShell credentials (drivers send their
own in each request), or set CLOUDSHELL_* in the service's environment (the REG_MULTI_SZ
value "Environment" of HKLM\SYSTEM\CurrentControlSet\Services\%s; local users can
read that key by default: restrict it to SYSTEM and Administrators).
Use absolute paths (--auth-token-file, --log-file): a service starts in System32.

Exit codes: 0 done, 64 usage error, 69 the Service Control Manager refused (not elevated,
already installed, not installed, ...).
`, serviceSynopsis, serviceName, serviceName, serviceName, serviceName)
}

func serviceCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fail := func(err error) int { return usageFail(stderr, "service", err, serviceSynopsis) }
	if len(args) == 0 {
		return fail(errors.New("missing subcommand"))
	}
	sub, rest := args[0], args[1:]
	if sub == "run" { // the Service Control Manager starts the service with these arguments
		return serviceRun(rest, stderr)
	}
	switch sub {
	case "-h", "-help", "--help", "help":
		serviceUsage(stdout)
		return exitOK
	case "install", "uninstall", "start", "stop":
	default:
		return fail(fmt.Errorf("unknown subcommand %q", sub))
	}
	var err error
	if sub == "install" {
		var svcArgs []string
		if svcArgs, err = serviceInstallArgs(rest); err != nil {
			return fail(err)
		}
		err = serviceInstall(svcArgs)
	} else if len(rest) > 0 {
		return fail(fmt.Errorf("%s takes no arguments, got %q", sub, rest[0]))
	} else {
		err = serviceControl(ctx, sub)
	}
	if err != nil {
		fmt.Fprintf(stderr, "csmutex service %s: %v\n", sub, err)
		return exitUnavailable
	}
	fmt.Fprintf(stdout, "csmutex service %s: %s done\n", sub, serviceName)
	return exitOK
}

// serviceInstallArgs returns the arguments the service is registered with:
// "service run", then --log-file PATH (made absolute) if given, then the serve flags.
func serviceInstallArgs(args []string) ([]string, error) {
	logFile, serveArgs, err := splitLogFile(args)
	if err != nil {
		return nil, err
	}
	out := []string{"service", "run"}
	if logFile != "" {
		abs, err := filepath.Abs(logFile)
		if err != nil {
			return nil, fmt.Errorf("--log-file: %w", err)
		}
		out = append(out, "--log-file", abs)
	}
	for _, a := range serveArgs {
		switch a {
		case "-h", "-help", "--help":
			return nil, errors.New("--help is not a serve flag to install; see csmutex serve --help")
		}
	}
	return append(out, serveArgs...), nil
}

// splitLogFile takes -log-file/--log-file PATH (or =PATH) out of args, anywhere before a
// "--"; the rest are serve's flags.
func splitLogFile(args []string) (logFile string, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return logFile, append(rest, args[i:]...), nil
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "log-file" {
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return "", nil, errors.New("--log-file needs a PATH")
			}
			i++
			val = args[i]
		}
		if val == "" {
			return "", nil, errors.New("--log-file needs a PATH")
		}
		logFile = val
	}
	return logFile, rest, nil
}

func serviceInstall(args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return err
	}
	m, err := mgr.Connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	if s, err := m.OpenService(serviceName); err == nil {
		s.Close()
		return fmt.Errorf("%s is already installed (csmutex service uninstall first)", serviceName)
	}
	s, err := m.CreateService(serviceName, exe, mgr.Config{
		DisplayName: serviceDisplayName,
		Description: serviceDescription,
		StartType:   mgr.StartAutomatic,
	}, args...)
	if err != nil {
		return err
	}
	defer s.Close()
	// Restart after a crash or a failed start (CloudShell unreachable at boot): 5 s, 30 s,
	// then every minute; the count resets after a day without failure. A failed start is a
	// service that stops with a non-zero exit code, which Windows treats as a failure only
	// with the non-crash flag set; without it only a crash would be restarted. Windows cannot
	// exempt exit codes (systemd's RestartPreventExitStatus), so refused credentials (77) are
	// retried every minute too, each attempt logged in the event log.
	_ = s.SetRecoveryActions([]mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 30 * time.Second},
		{Type: mgr.ServiceRestart, Delay: time.Minute},
	}, 24*60*60)
	_ = s.SetRecoveryActionsOnNonCrashFailures(true)
	if err := eventlog.InstallAsEventCreate(serviceName, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil &&
		!strings.Contains(err.Error(), "exists") {
		_ = s.Delete()
		return fmt.Errorf("registering the event log source: %w", err)
	}
	return nil
}

// serviceControl uninstalls, starts or stops the service, waiting for a stop to finish.
func serviceControl(ctx context.Context, sub string) error {
	m, err := mgr.Connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := m.OpenService(serviceName)
	if err != nil {
		return fmt.Errorf("%s: %w", serviceName, err)
	}
	defer s.Close()
	switch sub {
	case "start":
		return s.Start()
	case "stop":
		return serviceStop(ctx, s)
	default: // uninstall
		if st, err := s.Query(); err == nil && st.State != svc.Stopped {
			if err := serviceStop(ctx, s); err != nil {
				return err
			}
		}
		if err := s.Delete(); err != nil {
			return err
		}
		_ = eventlog.Remove(serviceName)
		return nil
	}
}

// serviceStop asks the service to stop and waits until it has released its locks and
// exited, or serve's shutdown bound has passed.
func serviceStop(ctx context.Context, s *mgr.Service) error {
	st, err := s.Control(svc.Stop)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(serveShutdownTimeout + 15*time.Second)
	for st.State != svc.Stopped {
		if time.Now().After(deadline) {
			return errors.New("still stopping; check the event log or the log file")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
		if st, err = s.Query(); err != nil {
			return err
		}
	}
	return nil
}

// serviceRun is what the Service Control Manager starts: serve under svc.Run, logging to
// the event log or to --log-file.
func serviceRun(args []string, stderr io.Writer) int {
	if is, err := svc.IsWindowsService(); err != nil || !is {
		fmt.Fprintln(stderr, "csmutex service run: only the Service Control Manager runs this; in a console, use csmutex serve")
		return exitUsage
	}
	logFile, serveArgs, err := splitLogFile(args)
	if err != nil {
		return exitUsage
	}
	var logw io.Writer
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return exitUnavailable
		}
		defer f.Close()
		logw = f
	} else {
		el, err := eventlog.Open(serviceName)
		if err != nil {
			return exitUnavailable
		}
		defer el.Close()
		logw = eventLogWriter{el}
	}
	h := &serviceHandler{serve: func(ctx context.Context, stdout io.Writer) int {
		return serveCmd(ctx, serveArgs, stdout, logw)
	}, log: logw}
	if err := svc.Run(serviceName, h); err != nil {
		fmt.Fprintf(logw, "csmutex service: %v\n", err)
		return exitUnavailable
	}
	return h.code
}

// serviceHandler runs serve as a svc.Handler: Running once serve listens, and Stop or
// Shutdown cancels serve's context, the graceful shutdown serve does on SIGTERM.
type serviceHandler struct {
	serve func(ctx context.Context, stdout io.Writer) int
	log   io.Writer // serve's stdout ("listening on ADDR") goes here too
	code  int       // serve's exit code
}

func (h *serviceHandler) Execute(_ []string, r <-chan svc.ChangeRequest, s chan<- svc.Status) (bool, uint32) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan int, 1)
	stdout := &readyWriter{w: h.log, ready: ready}
	go func() { done <- h.serve(ctx, stdout) }()

	status := svc.Status{State: svc.StartPending, WaitHint: 60_000}
	s <- status
	exit := func(code int) (bool, uint32) {
		h.code = code
		return code != exitOK, uint32(code) // a service-specific exit code, as serve's
	}
	for {
		select {
		case <-ready:
			ready = nil
			status = svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
			s <- status
		case code := <-done: // serve failed on its own: cannot listen, cannot log on
			return exit(code)
		case c := <-r:
			switch c.Cmd {
			case svc.Interrogate:
				s <- status
			case svc.Stop, svc.Shutdown:
				s <- svc.Status{State: svc.StopPending, WaitHint: uint32((serveShutdownTimeout + 5*time.Second).Milliseconds())}
				cancel()
				return exit(<-done)
			}
		}
	}
}

// readyWriter passes serve's stdout on to w and closes ready at its first write, the
// "listening on ADDR" line.
type readyWriter struct {
	w     io.Writer
	ready chan struct{}
	once  sync.Once
}

func (r *readyWriter) Write(p []byte) (int, error) {
	r.once.Do(func() { close(r.ready) })
	if r.w == nil {
		return len(p), nil
	}
	return r.w.Write(p)
}

// eventLogWriter writes each log line as one event: errors and warnings as such.
type eventLogWriter struct{ l *eventlog.Log }

func (e eventLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\r\n")
	var err error
	switch {
	case strings.Contains(msg, " ERR ") || strings.Contains(msg, " FTL ") || strings.Contains(msg, `"level":"error"`):
		err = e.l.Error(1, msg)
	case strings.Contains(msg, " WRN ") || strings.Contains(msg, `"level":"warn"`):
		err = e.l.Warning(1, msg)
	default:
		err = e.l.Info(1, msg)
	}
	return len(p), err
}
