// Package testenv starts an in-process mock CloudShell for tests, benchmarks and the demo,
// and hands out real clients that talk to it over HTTP.
package testenv

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/sethvargo/go-retry"
)

// Env is a running mock CloudShell with one reservation.
type Env struct {
	Server        *mockapi.Server
	Host          string
	Port          int
	ReservationID string
	tb            testing.TB
	// transport, when set, carries requests to the mock in-process (NewInProcess).
	transport http.RoundTripper
}

// New starts a mock on a free loopback port and creates a reservation. The mock is closed
// when the test ends.
func New(tb testing.TB, opts ...mockapi.Option) *Env {
	tb.Helper()
	s := mockapi.New(opts...)
	if _, err := s.Start("127.0.0.1:0"); err != nil {
		tb.Fatalf("start mock: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	host, port := s.Addr()
	return &Env{Server: s, Host: host, Port: port, ReservationID: s.CreateReservation("test", "admin"), tb: tb}
}

// NewInProcess is New without a listener: clients reach the mock through an in-process
// transport that calls its handler directly. Nothing touches the network, so the whole
// exchange (client timeouts, the mock's latency faults and details cache) runs on virtual
// time inside a testing/synctest bubble: lease tests take milliseconds and do not depend on
// how loaded the machine is.
func NewInProcess(tb testing.TB, opts ...mockapi.Option) *Env {
	tb.Helper()
	s := mockapi.New(opts...)
	return &Env{Server: s, Host: "mock.invalid", Port: 8029, ReservationID: s.CreateReservation("test", "admin"), tb: tb,
		transport: handlerTransport{s}}
}

// handlerTransport serves each request with the mock's handler, in the caller's goroutine.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (resp *http.Response, err error) {
	defer func() {
		// The mock drops the connection (drop-after-commit) by aborting the handler.
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			resp, err = nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
		}
	}()
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err // the caller gave up while the handler ran (a latency fault)
	}
	resp = rec.Result()
	resp.Request = r
	return resp, nil
}

// Config is a client configuration for the mock. The machine name identifies the client to
// the mock's per-client faults and in its history.
func (e *Env) Config(machine string) cloudshell.Config {
	return cloudshell.Config{
		Host: e.Host, Port: e.Port, Username: "admin", Password: "admin", Domain: "Global",
		MachineName: machine, Timeout: 5 * time.Second, Transport: e.transport,
		// Reads retry quickly: tests must not sleep.
		ReadRetry: func() retry.Backoff { return retry.WithMaxRetries(3, retry.NewConstant(time.Millisecond)) },
	}
}

// Client returns a logged-on client.
func (e *Env) Client(machine string) *cloudshell.Client {
	e.tb.Helper()
	c, err := cloudshell.Dial(context.Background(), e.Config(machine))
	if err != nil {
		e.tb.Fatalf("dial mock: %v", err)
	}
	return c
}
