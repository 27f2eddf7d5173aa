package mutex_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// fakeAPI is a one-reservation CloudShell in memory whose calls can be slowed or failed by
// the test, for tests that run on virtual time (testing/synctest).
type fakeAPI struct {
	mu       sync.Mutex
	services map[string]string // alias → owner record
	data     map[string]string
	// before runs before each call; a non-nil error fails the call without applying it.
	before func(ctx context.Context, method string) error
}

func newFakeAPI() *fakeAPI { return &fakeAPI{services: map[string]string{}, data: map[string]string{}} }

func (f *fakeAPI) hook(ctx context.Context, method string) error {
	f.mu.Lock()
	before := f.before
	f.mu.Unlock()
	if before == nil {
		return nil
	}
	return before(ctx, method)
}

// setBefore replaces the hook; background goroutines of earlier locks may be calling.
func (f *fakeAPI) setBefore(fn func(ctx context.Context, method string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.before = fn
}

func (f *fakeAPI) AddServiceToReservation(ctx context.Context, _, _, alias string, attrs []cloudshell.AttributeNameValue) error {
	if err := f.hook(ctx, "AddServiceToReservation"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.services[alias]; ok {
		return &cloudshell.APIError{Code: 100, Message: "Service with given alias already exists"}
	}
	f.services[alias] = ""
	for _, a := range attrs {
		f.services[alias] = a.Value
	}
	return nil
}

func (f *fakeAPI) RemoveServicesFromReservation(ctx context.Context, _ string, aliases []string) error {
	if err := f.hook(ctx, "RemoveServicesFromReservation"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range aliases {
		if _, ok := f.services[a]; !ok {
			return &cloudshell.APIError{Code: 100, Message: "Service with alias '" + a + "' was not found"}
		}
	}
	for _, a := range aliases {
		delete(f.services, a)
	}
	return nil
}

func (f *fakeAPI) GetReservationDetails(ctx context.Context, id string, _ bool) (*cloudshell.ReservationDetails, error) {
	if err := f.hook(ctx, "GetReservationDetails"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d := &cloudshell.ReservationDetails{Reservation: cloudshell.Reservation{ID: id}}
	for alias, owner := range f.services {
		d.Services = append(d.Services, cloudshell.Service{ServiceName: mutex.DefaultServiceModel, Alias: alias,
			Attributes: []cloudshell.Attribute{{Name: mutex.OwnerAttribute, Value: owner}}})
	}
	return d, nil
}

func (f *fakeAPI) GetSandboxData(ctx context.Context, _ string) ([]cloudshell.SandboxDataKeyValue, error) {
	if err := f.hook(ctx, "GetSandboxData"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []cloudshell.SandboxDataKeyValue
	for k, v := range f.data {
		out = append(out, cloudshell.SandboxDataKeyValue{Key: k, Value: v})
	}
	return out, nil
}

func (f *fakeAPI) SetSandboxData(ctx context.Context, _ string, kv []cloudshell.SandboxDataKeyValue) error {
	if err := f.hook(ctx, "SetSandboxData"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range kv {
		f.data[e.Key] = e.Value
	}
	return nil
}

// clientTimeout is net/http's Client.Timeout error: it matches context.DeadlineExceeded
// although the caller's context is live.
type clientTimeout struct{}

func (clientTimeout) Error() string   { return "Client.Timeout exceeded while awaiting headers" }
func (clientTimeout) Timeout() bool   { return true }
func (clientTimeout) Temporary() bool { return true }
func (clientTimeout) Is(target error) bool {
	return target == context.DeadlineExceeded
}

var _ net.Error = clientTimeout{}

// slowCalls makes the first n calls of the given methods wait d, then fail the way the
// client does when its HTTP timeout passes.
func slowCalls(n int, d time.Duration, methods ...string) func(ctx context.Context, method string) error {
	var mu sync.Mutex
	return func(ctx context.Context, method string) error {
		mu.Lock()
		for _, m := range methods {
			if m == method && n > 0 {
				n--
				mu.Unlock()
				time.Sleep(d)
				return cloudshell.NewTransportError(ctx, method, method != "GetReservationDetails" && method != "GetSandboxData", clientTimeout{})
			}
		}
		mu.Unlock()
		return nil
	}
}

// Defect 3: an HTTP client timeout was taken for the caller's deadline. One slow add ended
// Lock at once, and a slow read during contention became a permanent error (csmutex run
// exited 65). Only the caller's own context may end a wait: slow calls are retried.
func TestSlowCallsAreRetriedNotFatal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newFakeAPI()
		api.setBefore(slowCalls(3, 30*time.Second, "AddServiceToReservation", "GetReservationDetails"))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		l, err := mutex.New(api, "R", mutex.WithRetry(mutex.Jitter(time.Second, 2*time.Second))).Lock(ctx)
		if err != nil {
			t.Fatalf("Lock after slow calls = %v (class %s, permanent %v); want the lock", err, mutex.ClassOf(err), mutex.IsPermanent(err))
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}

		// Contended, and the read of the holder times out: still just waiting.
		api.setBefore(nil)
		holder, err := mutex.New(api, "R").Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		api.setBefore(slowCalls(2, 30*time.Second, "GetReservationDetails"))
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer wcancel()
		_, err = mutex.New(api, "R", mutex.WithRetry(mutex.Jitter(time.Second, 2*time.Second))).Lock(wctx)
		var te *mutex.TimeoutError
		if !errors.As(err, &te) || mutex.IsPermanent(err) || te.Unavailable || !te.Deadline {
			t.Fatalf("contended Lock with slow reads = %v; want a timeout at the caller's deadline, contended, not permanent", err)
		}
		_ = holder.Unlock(ctx)
	})
}

// Defect 4: a wait-limit timeout claimed to be the caller's deadline and permanent, because
// TimeoutError unwrapped to the error of the attempt that the wait limit itself cut off.
func TestWaitLimitIsNotTheCallersDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newFakeAPI()
		ctx := context.Background()
		holder, err := mutex.New(api, "R").Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Unlock(ctx)
		// Every read hangs until its context ends, so the wait limit cuts an attempt off.
		api.setBefore(func(ctx context.Context, method string) error {
			if method == "GetReservationDetails" {
				<-ctx.Done()
				return cloudshell.NewTransportError(ctx, method, false, ctx.Err())
			}
			return nil
		})
		_, err = mutex.New(api, "R", mutex.WithWaitLimit(time.Minute)).Lock(ctx)
		var te *mutex.TimeoutError
		switch {
		case !errors.As(err, &te), !errors.Is(err, mutex.ErrTimeout):
			t.Fatalf("Lock = %v, want a *TimeoutError", err)
		case errors.Is(err, context.DeadlineExceeded), te.Deadline:
			t.Errorf("a wait-limit timeout matches context.DeadlineExceeded: %v", err)
		case mutex.IsPermanent(err), mutex.ClassOf(err) != mutex.ClassTimeout:
			t.Errorf("a wait-limit timeout is classed %s (permanent %v)", mutex.ClassOf(err), mutex.IsPermanent(err))
		}

		dctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, err = mutex.New(api, "R", mutex.WithWaitLimit(time.Hour)).Lock(dctx)
		if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &te) || !te.Deadline {
			t.Errorf("at the caller's deadline Lock = %v; want it to match context.DeadlineExceeded", err)
		}
	})
}
