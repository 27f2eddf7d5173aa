package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// errCrashed is what a crashed process's goroutines get once the run is over and they are
// let go: nothing they do reaches the server any more.
var errCrashed = errors.New("sim: process crashed")

// Process is one simulated driver process: its own view of CloudShell (an implementation
// of mutex.API whose calls go through a faulty transport) and its own clock. A pause stops
// the process between calls (requests already sent still land); a crash stops it for good;
// a partition loses its requests on the way.
type Process struct {
	name        string
	index       int
	legacy      bool
	world       *World
	lease       time.Duration
	httpTimeout time.Duration
	faults      FaultRates
	pauses      []window
	partitions  []window
	crashAt     time.Time // zero: never

	mu       sync.Mutex
	calls    int
	lastRead time.Time // when the server served the newest details read the process has seen
}

// callState follows one call from send to answer, for the checker.
type callState struct {
	request
	proc        *Process
	sent        time.Time
	gated       time.Duration // how long a pause held the call before it was sent
	mu          sync.Mutex
	abandonedAt time.Time // when the process stopped waiting for the answer
	answered    bool      // a success answer reached the process
	servedAt    time.Time // a read: when the server served it
	basedOn     time.Time // a remove: when the read it was decided on was served
}

func (c *callState) abandon() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.abandonedAt.IsZero() {
		c.abandonedAt = time.Now()
	}
}

// abandonedBefore reports whether the call's sender had stopped waiting for it before at.
func (c *callState) abandonedBefore(at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.abandonedAt.IsZero() && c.abandonedAt.Before(at)
}

// late reports whether the call is applied longer than lease/6 after its sender gave up on
// it: outside what the protocol can control (docs/PROTOCOL.md, known limits).
func (c *callState) late(at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.abandonedAt.IsZero() && at.Sub(c.abandonedAt) > mutex.LossMargin(c.proc.lease)
}

func (p *Process) crashed(t time.Time) bool { return !p.crashAt.IsZero() && !t.Before(p.crashAt) }

// hold blocks while the process is paused. A crashed process stays blocked until the run is
// over and then gets errCrashed. Goroutines held by the same pause wake in an order set by
// key (up to a millisecond apart), not all at once, so that the run stays reproducible.
func (p *Process) hold(key uint64) error {
	for {
		now := time.Now()
		if p.crashed(now) {
			<-p.world.over
			return errCrashed
		}
		paused := false
		for _, w := range p.pauses {
			if w.contains(now) {
				time.Sleep(w.to.Sub(now) + time.Duration(mix(key)%uint64(time.Millisecond)))
				paused = true
			}
		}
		if !paused {
			return nil
		}
	}
}

// partitionedDuring reports whether a partition of p overlapped [from, to]: a call then
// may have been lost on the way, whatever its own faults.
func (p *Process) partitionedDuring(from, to time.Time) bool {
	for _, w := range p.partitions {
		if w.from.Before(to) && !w.to.Before(from) {
			return true
		}
	}
	return false
}

func (p *Process) partitioned(t time.Time) bool {
	for _, w := range p.partitions {
		if w.contains(t) {
			return true
		}
	}
	return false
}

// Now and After make Process a mutex.Clock: a timer that fires while the process is paused
// is seen when it wakes, and a crashed process's timers fire only when the run is over.
func (p *Process) Now() time.Time { return time.Now() }

func (p *Process) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	key := mix(uint64(d)) ^ uint64(time.Now().UnixNano())
	time.AfterFunc(d, func() {
		_ = p.hold(key)
		ch <- time.Now()
	})
	return ch
}

// timeoutError is what net/http reports when Client.Timeout passes: a net.Error whose
// Timeout is true and which matches context.DeadlineExceeded, although the caller's own
// context is still live.
type timeoutError struct{}

func (timeoutError) Error() string   { return "Client.Timeout exceeded while awaiting headers" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Is(target error) bool {
	return target == context.DeadlineExceeded
}

var _ net.Error = timeoutError{}

// request is what a call asks for.
type request struct {
	method  string
	write   bool
	aliases []string
	attrs   []cloudshell.AttributeNameValue
	data    []cloudshell.SandboxDataKeyValue
}

// shape describes a request without its random parts (tokens), for ordering.
func (r request) shape() string {
	shape := r.method
	for _, a := range r.aliases {
		shape += fmt.Sprintf(" alias(depth %d)", strings.Count(a, ".break."))
	}
	for _, kv := range r.data {
		shape += " " + tokenRE.ReplaceAllString(kv.Key, "t")
	}
	return shape
}

type answer struct {
	value any
	err   error
}

// do sends one call through the transport. apply runs on the server when (and if) the
// request arrives; the answer reaches the process after the response leg, unless the
// process stopped waiting (its ctx ended or the HTTP timeout passed).
func (p *Process) do(ctx context.Context, req request, apply func(c *callState) (any, error)) (any, error) {
	method, write := req.method, req.write
	// Two goroutines of one process that call at the same instant (a new holder's
	// background cleanup and its first renewal, say) are sent a few nanoseconds apart, in an
	// order set by what they send, so that the trace does not depend on the scheduler.
	time.Sleep(time.Duration(1 + mix(hashString(req.shape())^mix(uint64(p.index)))%997))
	decided := time.Now()
	key := hashString(method) ^ uint64(decided.UnixNano())
	if err := p.hold(key); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, cloudshell.NewTransportError(ctx, method, write, ctx.Err())
	}
	now := time.Now()
	c := &callState{request: req, proc: p, sent: now, gated: now.Sub(decided)}
	p.mu.Lock()
	c.basedOn = p.lastRead
	p.mu.Unlock()
	d := p.decide(method, write, now)
	p.countFaults(d)
	p.world.sent(c)
	p.mu.Lock()
	p.calls++
	p.mu.Unlock()
	p.world.countCall(method)

	done := make(chan answer, 1)
	respond := func(a answer) {
		time.AfterFunc(d.respDelay, func() {
			if !p.partitioned(time.Now()) {
				done <- a
			}
		})
	}
	reqDelay := d.reqDelay
	if d.relogon {
		// A 401 costs the client a Logon and a resend; the write was not applied the first
		// time, so resending it is safe (as the real client does).
		reqDelay += 2 * d.respDelay
	}
	switch {
	case d.refused:
		time.AfterFunc(time.Millisecond, func() {
			done <- answer{err: cloudshell.NewTransportError(context.Background(), method, write,
				&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})}
		})
	case p.partitioned(now):
		// Lost on the way: the process hears nothing until its timeout.
	default:
		time.AfterFunc(reqDelay, func() {
			if p.partitioned(time.Now()) {
				return
			}
			he := &cloudshell.HTTPError{Method: method, StatusCode: 500, Status: "Internal Server Error"}
			switch {
			case d.failBefore:
				respond(answer{err: fmt.Errorf("%w: %w", cloudshell.ErrAmbiguous, he)})
			case d.err5xx:
				respond(answer{err: he})
			default:
				v, err := apply(c)
				if d.dropAfter {
					respond(answer{err: cloudshell.NewTransportError(context.Background(), method, write, syscall.ECONNRESET)})
					return
				}
				respond(answer{value: v, err: err})
			}
		})
	}

	timer := time.NewTimer(p.httpTimeout)
	defer timer.Stop()
	var crash <-chan time.Time // a crashed process stops waiting (its requests still land)
	if !p.crashAt.IsZero() {
		crash = time.After(max(p.crashAt.Sub(now), 0))
	}
	var a answer
	faulted := d.refused || d.dropAfter || d.failBefore || d.err5xx || d.relogon ||
		d.reqDelay > p.lease/10 || d.respDelay > p.lease/10
	select {
	case <-crash:
		c.abandon()
		p.world.check.idleCall(c, faulted || p.partitionedDuring(now, time.Now()))
		<-p.world.over
		return nil, errCrashed
	case a = <-done:
	case <-ctx.Done():
		c.abandon()
		a.err = cloudshell.NewTransportError(ctx, method, write, ctx.Err())
	case <-timer.C:
		c.abandon()
		a.err = cloudshell.NewTransportError(ctx, method, write, timeoutError{})
		faulted = true // lost to a partition, or slower than the HTTP timeout
	}
	p.world.check.idleCall(c, faulted || p.partitionedDuring(now, time.Now()))
	// Answers that reach one process at the same instant (two calls that share a deadline)
	// are taken in an order set by their shape too.
	time.Sleep(time.Duration(1 + mix(hashString(req.shape())^mix(uint64(p.index))^uint64(now.UnixNano()))%997))
	if err := p.hold(key + 1); err != nil {
		c.abandon()
		return nil, err
	}
	if a.err == nil {
		c.mu.Lock()
		c.answered = true
		served := c.servedAt
		c.mu.Unlock()
		if !served.IsZero() {
			p.mu.Lock()
			p.lastRead = served
			p.mu.Unlock()
		}
		p.world.trace(p, "← %s ok", method)
	} else {
		p.world.trace(p, "← %s: %s", method, shortErr(a.err))
	}
	return a.value, a.err
}

func shortErr(err error) string {
	var ae *cloudshell.APIError
	switch {
	case cloudshell.IsAliasCollision(err):
		return "collision"
	case errors.As(err, &ae):
		return "api error: " + ae.Message
	case errors.Is(err, cloudshell.ErrAmbiguous):
		return "ambiguous (" + err.Error() + ")"
	default:
		return err.Error()
	}
}

// The mutex.API methods.

func (p *Process) AddServiceToReservation(ctx context.Context, reservationID, serviceName, alias string, attributes []cloudshell.AttributeNameValue) error {
	req := request{method: "AddServiceToReservation", write: true, aliases: []string{alias}, attrs: attributes}
	_, err := p.do(ctx, req, func(c *callState) (any, error) {
		return nil, p.world.server.add(c, serviceName, alias, attributes)
	})
	return err
}

func (p *Process) RemoveServicesFromReservation(ctx context.Context, reservationID string, aliases []string) error {
	req := request{method: "RemoveServicesFromReservation", write: true, aliases: aliases}
	_, err := p.do(ctx, req, func(c *callState) (any, error) {
		return nil, p.world.server.remove(c, aliases)
	})
	return err
}

func (p *Process) GetReservationDetails(ctx context.Context, reservationID string, disableCache bool) (*cloudshell.ReservationDetails, error) {
	v, err := p.do(ctx, request{method: "GetReservationDetails"}, func(c *callState) (any, error) {
		c.mu.Lock()
		c.servedAt = time.Now()
		c.mu.Unlock()
		return p.world.server.details(disableCache), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*cloudshell.ReservationDetails), nil
}

func (p *Process) GetSandboxData(ctx context.Context, reservationID string) ([]cloudshell.SandboxDataKeyValue, error) {
	v, err := p.do(ctx, request{method: "GetSandboxData"}, func(c *callState) (any, error) {
		return p.world.server.getData(), nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]cloudshell.SandboxDataKeyValue), nil
}

func (p *Process) SetSandboxData(ctx context.Context, reservationID string, values []cloudshell.SandboxDataKeyValue) error {
	_, err := p.do(ctx, request{method: "SetSandboxData", write: true, data: values}, func(c *callState) (any, error) {
		p.world.server.setData(c, values)
		return nil, nil
	})
	return err
}

func (p *Process) countFaults(d decision) {
	k := p.world.check
	switch {
	case d.refused:
		k.fault("refused")
	case d.dropAfter:
		k.fault("drop-after-commit")
	case d.failBefore:
		k.fault("fail-before-commit")
	case d.err5xx:
		k.fault("5xx")
	}
	if d.relogon {
		k.fault("401")
	}
	if d.reqDelay > p.lease/10 || d.respDelay > p.lease/10 {
		k.fault("slow")
	}
}
