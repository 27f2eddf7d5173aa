// Command mockapi serves the in-memory CloudShell Automation API mock (package mockapi)
// for demos, manual testing and tests of other languages.
//
//	go run ./cmd/mockapi -reservations 1 -fault 'AddServiceToReservation:latency=50ms,errorRate=0.1'
//
// It prints one "reservation <id>" line per pre-created reservation, then
// "listening on http://HOST:PORT" once it accepts connections; request logs go to stderr.
// SIGINT/SIGTERM shut it down gracefully. `mockapi -help` documents the flags, the admin
// API (/admin/faults, /admin/reservations) and how to end a reservation.
//
// Exit codes follow csmutex's (sysexits(3)): 0 after SIGINT/SIGTERM, 64 usage error,
// 69 cannot listen (address in use) or serving failed, 70 the built-in data model does
// not load (a bug).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/csmutex/csmutex/internal/term"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutexpkg"
)

// Exit codes, as csmutex's (cmd/csmutex/exitcode.go), from sysexits.h.
const (
	exitOK          = 0
	exitUsage       = 64 // EX_USAGE: bad flag or argument
	exitUnavailable = 69 // EX_UNAVAILABLE: cannot listen (address in use), or serving failed
	exitSoftware    = 70 // EX_SOFTWARE: the built-in data model does not load
)

const synopsis = "usage: mockapi [flags]"

// helpText follows the flags in -help: the admin API, how to end a reservation, the
// exit codes. Keep it in step with mockapi/admin.go and the README.
const helpText = `
Admin API (JSON over HTTP, unauthenticated, on the same address):
  GET    /admin/faults                       the faults in force and how often each matched:
                                             {"faults":[...],"expireTokensAfter":N}
  PUT    /admin/faults                       set one method's fault, replacing the previous one:
                                             {"method":"AddServiceToReservation","errorRate":0.5,"latency":"20ms"}
                                             "method" may be "*"; the other keys are those of
                                             -fault; {"expireTokensAfter":N} alone sets only that
  DELETE /admin/faults                       clear every fault and the token expiry
  POST   /admin/reservations                 create a reservation: {"name":"...","owner":"..."}
                                             answers 201 {"id":"..."}
  GET    /admin/reservations/{id}            the reservation: status, ended, services,
                                             resources, connectors, sandbox data
  GET    /admin/reservations/{id}/history    every change made to it, in order
  GET    /admin/reservations/{id}/messages   the texts written to its output
  Example: curl -X PUT -d '{"method":"*","latency":"50ms"}' http://127.0.0.1:8029/admin/faults

Ending a reservation (there is no admin call: use the Automation API, as on CloudShell):
  log on, then call EndReservation with the token in the Authorization header:
    TOKEN=$(curl -s -d '<Logon><username>admin</username><password>admin</password><domainName>Global</domainName></Logon>' \
      http://127.0.0.1:8029/ResourceManagerApiService/Logon | sed -n 's/.*Token Token="\([^"]*\)".*/\1/p')
    curl -s -H "Authorization: MachineName=shell;Token=$TOKEN" \
      -d '<EndReservation><reservationId>ID</reservationId></EndReservation>' \
      http://127.0.0.1:8029/ResourceManagerApiService/EndReservation
  From then on its status is "Completed" and every call that would change it fails with
  "Reservation 'ID' has ended" (csmutex: exit 65).

Exit codes (as csmutex's):
  0       stopped by SIGINT or SIGTERM
  64      usage error: bad flag or value
  69      cannot listen (address in use, bad address) or serving failed
  70      the built-in Mutex Service data model does not load (a bug)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, " ") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

// run is main without process globals, so tests can drive it in-process: it serves until
// ctx is cancelled and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mockapi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		listen       = fs.String("listen", "127.0.0.1:8029", "address to listen on")
		username     = fs.String("user", "admin", "user name accepted by Logon")
		password     = fs.String("password", "admin", "password of -user")
		domain       = fs.String("domain", "Global", "domain of -user")
		reservations = fs.Int("reservations", 0, "pre-create N reservations and print their ids")
		legacy       = fs.Bool("legacy-model", false, "load the Mutex Service model without the \"Mutex Owner\" attribute")
		cacheTTL     = fs.Duration("cache-ttl", 5*time.Second, "GetReservationDetails cache TTL (0 disables)")
		seed         = fs.Int64("seed", 1, "seed of the fault RNG and reservation ids")
		expireAfter  = fs.Int("expire-tokens-after", 0, "tokens answer 401 after N authenticated calls (0 = never)")
		logFormat    = fs.String("log-format", "console", "request log format: console or json")
		faults       repeated
		resources    repeated
	)
	fs.Var(&faults, "fault", "fault `Method:key=value,...` (repeatable; Method may be *); keys: client, count, errorRate, errorCode, errorMessage, latency, latencyJitter, http500Rate, dropAfterCommitRate, failBeforeCommitRate")
	fs.Var(&resources, "resource", "known resource `path=family/model` (repeatable)")
	shortUsage := func() {
		fmt.Fprintf(stderr, "%s\nrun 'mockapi -help' for the flags, the admin API and the exit codes.\n", synopsis)
	}
	fs.Usage = func() {} // the flag package prints the error; run prints the usage
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "%s\n\nServes an in-memory mock of the CloudShell Automation API (XML over HTTP POST at\n/ResourceManagerApiService/<Method>). It prints \"reservation ID\" for each of\n-reservations, then \"listening on http://ADDR\". SIGINT or SIGTERM shuts it down.\n\nFlags:\n", synopsis)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			fmt.Fprint(stdout, helpText)
			return exitOK
		}
		shortUsage()
		return exitUsage
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "mockapi: "+format+"\n", a...)
		shortUsage()
		return exitUsage
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *reservations < 0 || *expireAfter < 0 {
		return usageErr("-reservations and -expire-tokens-after must not be negative")
	}

	var logger zerolog.Logger
	switch *logFormat {
	case "console":
		logger = zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly, NoColor: !term.IsTerminal(stderr)}).
			With().Timestamp().Logger()
	case "json":
		logger = zerolog.New(stderr).With().Timestamp().Logger()
	default:
		return usageErr("-log-format must be console or json, got %q", *logFormat)
	}

	opts := []mockapi.Option{
		mockapi.WithoutDefaultUser(),
		mockapi.WithUser(*username, *password, *domain),
		mockapi.WithCacheTTL(*cacheTTL),
		mockapi.WithSeed(*seed),
		mockapi.WithLogger(logger),
	}
	if *legacy {
		opts = append(opts, mockapi.WithDataModel(mutexpkg.LegacyDataModel))
	}
	for _, r := range resources {
		path, fm, ok := strings.Cut(r, "=")
		family, model, ok2 := strings.Cut(fm, "/")
		if !ok || !ok2 || path == "" || family == "" || model == "" {
			return usageErr("-resource %q: want path=family/model", r)
		}
		opts = append(opts, mockapi.WithResource(path, family, model))
	}
	type methodFault struct {
		method string
		fault  mockapi.Fault
	}
	var parsed []methodFault
	for _, spec := range faults {
		m, f, err := parseFault(spec)
		if err != nil {
			return usageErr("-fault %q: %v", spec, err)
		}
		parsed = append(parsed, methodFault{m, f})
	}

	srv := mockapi.New(opts...)
	if err := srv.Err(); err != nil {
		fmt.Fprintf(stderr, "mockapi: %v\n", err)
		return exitSoftware
	}
	for _, p := range parsed {
		srv.Faults().Set(p.method, p.fault)
	}
	srv.Faults().ExpireTokensAfter(*expireAfter)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "mockapi: cannot listen: %v\n", err)
		return exitUnavailable
	}
	for i := 1; i <= *reservations; i++ {
		id := srv.CreateReservation(fmt.Sprintf("mock-reservation-%d", i), *username)
		fmt.Fprintf(stdout, "reservation %s\n", id)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	fmt.Fprintf(stdout, "listening on http://%s\n", ln.Addr())

	select {
	case err := <-served:
		fmt.Fprintf(stderr, "mockapi: %v\n", err)
		return exitUnavailable
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		// In-flight calls held by long injected latency: cut them off.
		_ = hs.Close()
	}
	logger.Info().Msg("shut down")
	return exitOK
}

// parseFault reads "Method:key=value,key=value".
func parseFault(spec string) (string, mockapi.Fault, error) {
	var f mockapi.Fault
	method, rest, ok := strings.Cut(spec, ":")
	if !ok || method == "" {
		return "", f, errors.New("want Method:key=value,...")
	}
	if rest == "" {
		return "", f, errors.New("no fault settings")
	}
	for _, kv := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return "", f, fmt.Errorf("%q is not key=value", kv)
		}
		var err error
		switch k {
		case "client":
			f.Client = v
		case "count":
			f.Count, err = strconv.Atoi(v)
		case "errorRate":
			f.ErrorRate, err = strconv.ParseFloat(v, 64)
		case "errorCode":
			f.ErrorCode, err = strconv.Atoi(v)
		case "errorMessage":
			f.ErrorMessage = v
		case "latency":
			f.Latency, err = time.ParseDuration(v)
		case "latencyJitter":
			f.LatencyJitter, err = time.ParseDuration(v)
		case "http500Rate":
			f.HTTP500Rate, err = strconv.ParseFloat(v, 64)
		case "dropAfterCommitRate":
			f.DropAfterCommitRate, err = strconv.ParseFloat(v, 64)
		case "failBeforeCommitRate":
			f.FailBeforeCommitRate, err = strconv.ParseFloat(v, 64)
		default:
			return "", f, fmt.Errorf("unknown key %q", k)
		}
		if err != nil {
			return "", f, fmt.Errorf("%s: %v", k, err)
		}
	}
	return method, f, f.Validate()
}
