package mutex_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

// portalAPI is a fakeAPI whose reservation has an Output window.
type portalAPI struct {
	*fakeAPI
	mu       sync.Mutex
	messages []string
}

func (p *portalAPI) WriteMessageToReservationOutput(_ context.Context, _, message string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.messages = append(p.messages, message)
	return nil
}

// A waiting driver is visible: to Go code through WithObserver, and to the sandbox's end
// user through the reservation's Output window, rate-limited, with the holder named and the
// end of the wait announced. On virtual time: a 75 s wait takes no real time.
func TestWaitingIsVisible(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := &portalAPI{fakeAPI: newFakeAPI()}
		ctx := context.Background()
		holder, err := mutex.New(api, "R", mutex.WithOwner("driver-x")).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(75*time.Second, func() { holder.Unlock(ctx) })

		var events []mutex.WaitEvent
		l, err := mutex.New(api, "R", mutex.WithOwner("driver-y"), mutex.WithSandboxMessages(30*time.Second),
			mutex.WithObserver(func(ev mutex.WaitEvent) { events = append(events, ev) })).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock(ctx)

		if len(events) < 10 {
			t.Fatalf("%d wait events in 75 s of 2–5 s polling", len(events))
		}
		lastEv := events[len(events)-1]
		synctest.Wait() // the "acquired" message is written in the background
		if lastEv.Holder.Name != "driver-x" || lastEv.Tries != len(events) || lastEv.Waited < 70*time.Second ||
			lastEv.HolderFor < 70*time.Second || lastEv.Err != nil {
			t.Errorf("last wait event %+v: want driver-x held for ~75s, tries counted, no error", lastEv)
		}
		api.mu.Lock()
		defer api.mu.Unlock()
		if n := len(api.messages); n < 3 || n > 5 {
			t.Fatalf("%d Output-window messages for a 75 s wait at most every 30 s (plus the end): %q", n, api.messages)
		}
		if !strings.Contains(api.messages[0], `Waiting for the reservation lock "MUTEX" held by driver-x`) {
			t.Errorf("first message %q", api.messages[0])
		}
		// Released at 75 s; by then the head polls at the full interval (2–5 s), so the
		// acquisition comes 75 to 80 s in ("1m20s" when the last poll came late: once in
		// about a hundred runs).
		end := api.messages[len(api.messages)-1]
		waited, err := time.ParseDuration(strings.TrimPrefix(end, `Lock "MUTEX" acquired after `))
		if err != nil || waited < 75*time.Second || waited > 80*time.Second {
			t.Errorf("last message %q, want the acquisition 75 to 80 s in", end)
		}
	})
}
