package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/csmutex/csmutex/internal/logon"
	"github.com/csmutex/csmutex/internal/sidecar"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

const serveSynopsis = "csmutex serve [--listen ADDR] [--allow-remote] [--auth-token-file PATH] [flags]"

// serveShutdownTimeout bounds a graceful shutdown: releasing every held lock (each
// release is itself bounded by the mutex's release timeout) and ending open requests.
const serveShutdownTimeout = 45 * time.Second

func serveUsage(w io.Writer) {
	fmt.Fprintf(w, `usage: %s

Run the lock sidecar: a local HTTP server through which programs that cannot link the Go
library (Python CloudShell drivers, chiefly) take reservation locks. It prints
"listening on ADDR" on stdout once it accepts connections.

  POST /v1/acquire    {"reservation_id": ID, "name": "MUTEX", "owner": LABEL,
                       "timeout": "300s", "mode": "stream"|"token", "ttl": "30s"}
                      stream (default): the lock is held while the response stays open
                      and released the moment the client closes the connection.
                      token: returns a token; POST /v1/keepalive it within the ttl.
  POST /v1/keepalive  {"token": T}
  POST /v1/release    {"token": T}
  GET  /v1/locks      held and waiting locks
  GET  /healthz       JSON: is CloudShell reachable, did the last logon work (503 if not)
  GET  /livez         "ok" while the process serves
  GET  /metrics       Prometheus

docs/sidecar-openapi.yaml describes the API; examples/python has a client.

Whoever can connect can take locks. The sidecar therefore listens on loopback (default
%s) or on a unix socket (--listen unix:/path, created with mode 0600), and
refuses other addresses unless --allow-remote. Against web pages the user opens, it
refuses requests whose Host is not its own address (DNS rebinding), requests carrying an
Origin header not allowed by --allow-origin (none by default), POSTs whose Content-Type is
not application/json, and every CORS preflight. On a host shared by several users, where
any of them can connect to 127.0.0.1, --auth-token-file requires a bearer token.

Requests use the connection flags below unless they name their own "cloudshell" object.
With --host, the sidecar logs on at start and exits 69 if it cannot reach CloudShell, 77
if CloudShell refuses the credentials. SIGINT or SIGTERM stops accepting connections, releases every held
lock, then exits 0.

`, serveSynopsis, sidecar.DefaultAddr)
}

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve")
	conn := addConnFlags(fs)
	logf := addLogFlags(fs)
	lockf := addLockFlags(fs)
	var (
		listen      string
		allowRemote bool
		lease       time.Duration
		heartbeat   time.Duration
		ttl         time.Duration
		origins     stringList
		hosts       stringList
		tokenFile   string
		cohort      bool
	)
	fs.StringVar(&listen, "listen", sidecar.DefaultAddr,
		"listen on `ADDR`: HOST:PORT (loopback unless --allow-remote; port 0 picks one)\nor unix:/path/to/socket (created with mode 0600)")
	fs.BoolVar(&allowRemote, "allow-remote", false,
		"allow a non-loopback --listen address. Without --auth-token-file,\nanyone who can connect can take and hold locks")
	fs.Var(newDurationValue(&lease, mutex.DefaultLease), "lease",
		"default lease `DURATION` of locks taken through the sidecar (a request may set\nits own); 0 = never expires")
	fs.Var(newDurationValue(&heartbeat, sidecar.DefaultHeartbeat), "heartbeat",
		"write a heartbeat line to stream-mode clients every `DURATION`")
	fs.Var(newDurationValue(&ttl, sidecar.DefaultTTL), "ttl",
		"default keepalive expiry `DURATION` of token-mode holds (1s to 24h)")
	fs.Var(&origins, "allow-origin",
		"accept requests carrying Origin `ORIGIN` (scheme://host[:port];\nrepeatable). Default none: requests from web pages are refused.\nCORS is never granted")
	fs.Var(&hosts, "allow-host",
		"also accept Host `NAME[:PORT]` (repeatable; without PORT, at the\nlistening port): a name the sidecar is reached by, or a tunnel's\nport. Always accepted: localhost, 127.0.0.1, [::1] at the listening port")
	fs.BoolVar(&cohort, "cohort", false,
		"pass one CloudShell acquisition among the clients that ask for the same\nlock (same CloudShell, reservation, lease): up to 64 in a row or 60 s, then\nleave it free 5 s for others. The lock's owner record then names the first\nclient of the cohort, not each holder (GET /v1/locks shows who holds it)")
	fs.StringVar(&tokenFile, "auth-token-file", "",
		"require \"Authorization: Bearer TOKEN\" with the token kept in `PATH`\n(created with mode 0600 and a random token if absent), on every\npath but /livez: for hosts shared by several users")

	help := func(w io.Writer) {
		serveUsage(w)
		printFlags(w, fs)
		fmt.Fprint(w, `Exit codes:
  0       stopped by SIGINT/SIGTERM after releasing every held lock
  64      usage error (bad flag, non-loopback address without --allow-remote, unusable
          --auth-token-file)
  69      cannot listen (address in use, socket path taken), or, with --host, cannot
          reach CloudShell at start
  77      with --host: CloudShell refused the credentials at start (not worth a restart)

Testing only: CSMUTEX_TEST_JITTER=MIN,MAX (e.g. "1ms,5ms") replaces --poll-interval,
as for run, below its floor. Never set it in production.
`)
	}
	if done, code := parseFlags(fs, args, stdout, stderr, help, serveSynopsis); done {
		return code
	}
	fail := func(err error) int { return usageFail(stderr, "serve", err, serveSynopsis) }
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if err := logf.validate(); err != nil {
		return fail(err)
	}
	if heartbeat <= 0 {
		return fail(errors.New("--heartbeat must be positive"))
	}
	if err := sidecar.CheckTTL(ttl); err != nil {
		return fail(fmt.Errorf("--ttl: %w", err))
	}
	for _, o := range origins {
		if _, err := sidecar.NormalizeOrigin(o); err != nil {
			return fail(fmt.Errorf("--allow-origin: %w", err))
		}
	}
	for _, h := range hosts {
		if _, err := sidecar.NormalizeHost(h); err != nil {
			return fail(fmt.Errorf("--allow-host: %w", err))
		}
	}
	if err := lockf.validate(); err != nil {
		return fail(err)
	}
	// The defaults for every request: requests set name, owner, lease and timeout only.
	mutexOpts, err := lockf.options()
	if err != nil {
		return fail(err)
	}
	// Lock shapes set their own retry over the mutex options': give them the same interval.
	strategy, err := lockf.retry()
	if err != nil {
		return fail(err)
	}
	if !strings.HasPrefix(listen, "unix:") {
		if err := sidecar.CheckLoopback(listen, allowRemote); err != nil {
			return fail(err)
		}
	}
	log := logf.logger(stderr).With().Str("component", "sidecar").Logger()

	// The default CloudShell is optional: without --host every request must name its own.
	if err := conn.resolve(); err != nil {
		return fail(err)
	}
	var creds sidecar.Credentials
	if strings.TrimSpace(conn.host) != "" {
		cfg, err := conn.config(log)
		if err != nil {
			return fail(err)
		}
		creds = sidecar.Credentials{Host: cfg.Host, Port: cfg.Port, Scheme: cfg.Scheme, User: cfg.Username,
			Password: cfg.Password, Domain: cfg.Domain, Token: cfg.Token, InsecureSkipVerify: cfg.InsecureSkipVerify}
	} else {
		log.Warn().Msg("no --host (CLOUDSHELL_HOST): every acquire request must name its CloudShell in \"cloudshell\"")
	}

	var authToken string
	if tokenFile != "" {
		tok, created, err := sidecar.LoadOrCreateTokenFile(tokenFile)
		if err != nil {
			return fail(fmt.Errorf("--auth-token-file: %w", err))
		}
		authToken = tok
		verb := "using the bearer token in"
		if created {
			verb = "created a bearer token in"
		}
		log.Info().Str("file", tokenFile).Msg(verb + " --auth-token-file: clients must send \"Authorization: Bearer <token>\"")
	}
	// With --allow-remote on a name, that name is the sidecar's address too.
	if host, _, err := net.SplitHostPort(listen); err == nil && allowRemote && host != "" && net.ParseIP(host) == nil {
		hosts = append(hosts, host)
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := sidecar.Listen(listen, allowRemote)
	if err != nil {
		fmt.Fprintf(stderr, "csmutex serve: %v\n", err)
		return exitUnavailable
	}
	srv := sidecar.New(
		sidecar.WithCredentials(creds),
		sidecar.WithLogger(log),
		sidecar.WithDial(sidecar.CloudShellDialer(log.With().Str("component", "cloudshell").Logger())),
		sidecar.WithLease(lease),
		sidecar.WithHeartbeat(heartbeat),
		sidecar.WithDefaultTTL(ttl),
		sidecar.WithMutexOptions(mutexOpts...),
		sidecar.WithLocksOptions(locks.WithRetry(strategy)),
		sidecar.WithAllowedOrigins(origins...),
		sidecar.WithAllowedHosts(hosts...),
		sidecar.WithBearerToken(authToken),
		withCohort(cohort),
	)

	// Log on before announcing the address, as run does: a wrong password or an
	// unreachable server is a startup failure (77, 69), not a surprise for the first driver.
	// The session is kept for the requests.
	if creds.Host != "" {
		if err := srv.LogOn(ctx); err != nil {
			_ = ln.Close()
			_ = srv.Shutdown(context.Background())
			if ctx.Err() != nil {
				log.Info().Msg("interrupted while logging on to CloudShell; nothing was held")
				return exitOK
			}
			lerr := &logon.Error{Addr: conn.addr(), As: conn.who(), Err: err}
			fmt.Fprintf(stderr, "csmutex serve: %v\n", lerr)
			return exitCodeFor(lerr)
		}
		log.Info().Str("cloudshell", creds.String()).Msg("logged on to CloudShell")
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	addr := sidecar.ListenerAddr(ln)
	log.Info().Str("addr", addr).Str("cloudshell", creds.String()).Msg("sidecar listening")
	fmt.Fprintf(stdout, "listening on %s\n", addr)

	code := exitOK
	select {
	case <-ctx.Done():
		log.Info().Msg("shutting down")
	case err := <-serveErr:
		// Serve only returns early on a listener failure.
		log.Error().Err(err).Msg("serving failed; shutting down")
		code = exitUnavailable
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), serveShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("shutdown did not complete cleanly")
	}
	_ = ln.Close()
	log.Info().Msg("stopped")
	return code
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

// Type names the value in help when the usage names none.
func (l *stringList) Type() string { return "VALUE" }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// withCohort is serve --cohort: mutex.DefaultCohortBound, whose reasons it documents.
func withCohort(on bool) sidecar.Option {
	if !on {
		return func(*sidecar.Server) {}
	}
	return sidecar.WithCohort(mutex.DefaultCohortBound)
}
