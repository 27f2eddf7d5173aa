package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/csmutex/csmutex/internal/sidecar"
	"github.com/csmutex/csmutex/mutex"
)

const serveSynopsis = "csmutex serve [--listen ADDR] [--allow-remote] [flags]"

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
  GET  /healthz, GET /metrics (Prometheus)

docs/sidecar-openapi.yaml describes the API; examples/python has a client.

The API has no authentication: whoever can connect can take locks. The sidecar therefore
listens on loopback (default %s) or on a unix socket (--listen unix:/path,
created with mode 0600), and refuses other addresses unless --allow-remote.

Requests use the connection flags below unless they name their own "cloudshell" object.
SIGINT or SIGTERM stops accepting connections, releases every held lock, then exits 0.

`, serveSynopsis, sidecar.DefaultAddr)
}

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve")
	conn := addConnFlags(fs)
	logf := addLogFlags(fs)
	var (
		listen      string
		allowRemote bool
		lease       time.Duration
		heartbeat   time.Duration
		ttl         time.Duration
	)
	fs.StringVar(&listen, "listen", sidecar.DefaultAddr,
		"listen on `ADDR`: HOST:PORT (loopback unless --allow-remote; port 0 picks one)\nor unix:/path/to/socket (created with mode 0600)")
	fs.BoolVar(&allowRemote, "allow-remote", false,
		"allow a non-loopback --listen address. The API has no authentication:\nanyone who can connect can take and hold locks")
	fs.Var(newDurationValue(&lease, mutex.DefaultLease), "lease",
		"default lease `DURATION` of locks taken through the sidecar (a request may set\nits own); 0 = never expires")
	fs.Var(newDurationValue(&heartbeat, sidecar.DefaultHeartbeat), "heartbeat",
		"write a heartbeat line to stream-mode clients every `DURATION`")
	fs.Var(newDurationValue(&ttl, sidecar.DefaultTTL), "ttl",
		"default keepalive expiry `DURATION` of token-mode holds")

	help := func(w io.Writer) {
		serveUsage(w)
		printFlags(w, fs)
		fmt.Fprint(w, `Exit codes:
  0       stopped by SIGINT/SIGTERM after releasing every held lock
  64      usage error (bad flag, non-loopback address without --allow-remote)
  69      cannot listen (address in use, socket path taken)

Testing only: CSMUTEX_TEST_JITTER=MIN,MAX (e.g. "1ms,5ms") replaces the 2-5 s wait between
lock attempts, as for run. Never set it in production.
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
	if ttl <= 0 {
		return fail(errors.New("--ttl must be positive"))
	}
	jitter, err := testJitter()
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
		sidecar.WithMutexOptions(jitter...),
	)

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
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
