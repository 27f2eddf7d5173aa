package mutex

import (
	"context"
	"fmt"
	"strings"

	"github.com/csmutex/csmutex/cloudshell"
)

// LockState is one lock found in a reservation, as Inspect reports it.
type LockState struct {
	// Name is the lock's alias. Break locks are named "<lock>.break.<token>".
	Name   string
	Holder Owner
	// Heartbeat is the holder's last heartbeat ("" if it has written none yet: holders
	// renew only after lease/3). It includes how long the holder has held the lock by its
	// own clock.
	Heartbeat string
	// BreakOf is set for a break lock: the name of the lock being broken.
	BreakOf string
}

// Inspect lists every lock in the reservation: each service of the mutex's service model,
// with its holder and last heartbeat. Only WithServiceModel is used from opts. An unknown
// or ended reservation is an error of class Invalid, as it is for Lock: a lock there can
// neither be taken nor matter.
func Inspect(ctx context.Context, api API, reservationID string, opts ...Option) ([]LockState, error) {
	m := New(api, reservationID, opts...)
	if m.err != nil {
		return nil, m.err
	}
	d, err := api.GetReservationDetails(ctx, reservationID, true)
	if err != nil {
		return nil, m.callFailure(ctx, err)
	}
	if reservationEnded(d.Reservation) {
		return nil, &classError{ErrInvalid, fmt.Errorf("mutex: reservation %s has ended (status %q, live status %q)",
			reservationID, d.Status, d.LiveStatusName)}
	}
	var states []LockState
	for _, svc := range d.Services {
		if svc.ServiceName != m.cfg.model {
			continue
		}
		raw, _ := svc.Attribute(OwnerAttribute)
		st := LockState{Name: svc.Alias, Holder: parseOwner(raw)}
		if i := strings.Index(svc.Alias, ".break."); i > 0 {
			st.BreakOf = svc.Alias[:i]
		}
		states = append(states, st)
	}
	if len(states) == 0 {
		return nil, nil
	}
	values, err := api.GetSandboxData(ctx, reservationID)
	if err != nil {
		return states, m.callFailure(ctx, err) // the locks are known; heartbeats are not
	}
	beats := map[string]string{}
	for _, kv := range values {
		beats[kv.Key] = kv.Value
	}
	for i := range states {
		if !states[i].Holder.Legacy {
			states[i].Heartbeat = beats[heartbeatKey(states[i].Holder.Token)]
		}
	}
	return states, nil
}

// reservationEnded reports whether a reservation is over, by the fields CloudShell (and the
// mock) set when it ends: Status "Completed", ReservationLiveStatusName "Ended". SetupStage
// is left out: it tracks the sandbox's setup orchestration, not the reservation's life.
func reservationEnded(r cloudshell.Reservation) bool {
	return strings.EqualFold(r.Status, "Completed") || strings.EqualFold(r.LiveStatusName, "Ended")
}

// ForceRelease removes the lock named by WithName (default "MUTEX") whoever holds it, and
// returns the holder it removed. It is the administrator's tool for a lock that leases cannot
// free (a legacy holder, or a lease of zero); the holder, if alive, learns of the loss at its
// next renewal. It logs, at warn level, who broke which owner: the breaker is WithOwner's
// label, or host:pid.
func ForceRelease(ctx context.Context, api API, reservationID string, opts ...Option) (Owner, error) {
	m := New(api, reservationID, opts...)
	if m.err != nil {
		return Owner{}, m.err
	}
	w := newWaiter(m)
	holder, present, err := w.holderOf(ctx, m.cfg.name)
	if err != nil {
		return Owner{}, err
	}
	if !present {
		return Owner{}, fmt.Errorf("%w: reservation %s has no lock named %q", ErrNotHeld, reservationID, m.cfg.name)
	}
	if err := api.RemoveServicesFromReservation(ctx, reservationID, []string{m.cfg.name}); err != nil {
		// Classified like every other failure: an ended reservation is Invalid (exit 65),
		// CloudShell trouble Unavailable (69).
		return holder, m.callFailure(ctx, fmt.Errorf("force-releasing lock %q: %w", m.cfg.name, err))
	}
	m.cfg.log.Warn().Str("lock", m.cfg.name).Str("reservation", reservationID).Str("holder", holder.String()).
		Str("broken_by", m.newOwner().Name).Msg("lock force-released")
	return holder, nil
}
