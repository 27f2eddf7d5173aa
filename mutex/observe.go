package mutex

import (
	"context"
	"fmt"
	"time"
)

// WaitEvent is what a waiting Lock knows after each attempt that did not get the lock: enough
// for a live status line ("held by driver-x for at least 40s; waited 1m12s, 9 tries").
type WaitEvent struct {
	Name   string
	Holder Owner // zero until the holder has been read
	// HolderFor is how long this waiter has seen the same holder: at least that long held.
	HolderFor time.Duration
	Waited    time.Duration // since Lock was called
	Tries     int
	// Position is this waiter's place in the waiting room (1: next to try), 0 when it is not
	// queued (WithQueue(false), the room full or failing, or before the first collision).
	Position int
	// Err is the last attempt's failure when CloudShell was failing (class Unavailable),
	// nil when the lock was simply held.
	Err error
}

// WithObserver calls fn after every attempt of Lock that did not get the lock, from the
// goroutine that called Lock; fn must return quickly. Drivers use it to show that they are
// waiting and for whom.
func WithObserver(fn func(WaitEvent)) Option { return func(c *config) { c.observer = fn } }

// MessageWriter is the optional part of an API that writes to the reservation's Output
// window in the CloudShell portal. *cloudshell.Client has it.
type MessageWriter interface {
	WriteMessageToReservationOutput(ctx context.Context, reservationID, message string) error
}

// WithSandboxMessages tells the sandbox's end user, in the reservation's Output window, that
// this driver is waiting for the lock and for whom (at most once per every), and when it got
// it after waiting. Off by default: the Output window belongs to the sandbox's user. The API
// must implement MessageWriter; messages that fail are only logged.
func WithSandboxMessages(every time.Duration) Option {
	return func(c *config) { c.messageEvery = every }
}

// messageTimeout bounds one Output-window message: a progress note must never hold up the lock.
const messageTimeout = 10 * time.Second

// progress follows one Lock call's waiting for the observer and the Output window.
type progress struct {
	m           *Mutex
	start       time.Time
	holder      Owner
	holderSince time.Time
	lastMessage time.Time
	messaged    bool
}

func (m *Mutex) newProgress(start time.Time) *progress { return &progress{m: m, start: start} }

// waiting reports an attempt that did not get the lock.
func (p *progress) waiting(ctx context.Context, holder Owner, tries, position int, err error) {
	m := p.m
	now := m.cfg.clock.Now()
	if !holder.IsZero() && holder.Raw != p.holder.Raw {
		p.holder, p.holderSince = holder, now
	}
	ev := WaitEvent{Name: m.cfg.name, Holder: p.holder, Waited: now.Sub(p.start), Tries: tries, Position: position, Err: err}
	if !p.holder.IsZero() {
		ev.HolderFor = now.Sub(p.holderSince)
	}
	if m.cfg.observer != nil {
		m.cfg.observer(ev)
	}
	if m.cfg.messageEvery > 0 && (!p.messaged || now.Sub(p.lastMessage) >= m.cfg.messageEvery) {
		who := "another driver"
		if !p.holder.IsZero() {
			who = p.holder.Name
			if p.holder.Legacy {
				who = "a driver using the Reservation-Mutex-Lock snippet"
			}
		}
		if p.message(ctx, fmt.Sprintf("Waiting for the reservation lock %q held by %s (waited %s so far)",
			m.cfg.name, who, ev.Waited.Round(time.Second))) {
			p.messaged, p.lastMessage = true, now
		}
	}
}

// acquired tells the Output window the wait is over, if it was told about the wait.
func (p *progress) acquired(ctx context.Context) {
	if p.messaged {
		p.message(ctx, fmt.Sprintf("Lock %q acquired after %s", p.m.cfg.name, p.m.cfg.clock.Now().Sub(p.start).Round(time.Second)))
	}
}

func (p *progress) message(ctx context.Context, text string) bool {
	mw, ok := p.m.api.(MessageWriter)
	if !ok {
		return false
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), messageTimeout)
	defer cancel()
	if err := mw.WriteMessageToReservationOutput(mctx, p.m.resID, text); err != nil {
		p.m.cfg.log.Debug().Err(err).Msg("could not write to the reservation's Output window")
		return false
	}
	return true
}
