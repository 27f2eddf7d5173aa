// Package mutex locks a CloudShell reservation for exclusive use, across processes and
// execution servers.
//
// A CloudShell reservation is edited concurrently by many driver instances. Each API call is
// atomic, but a sequence of them (read the connectors of A, remove A, connect A2) is not.
// The one component every driver shares is the CloudShell server, and it refuses to add a
// second service with an alias that already exists in a reservation: adding a "Mutex Service"
// with the alias "MUTEX" succeeds for exactly one party at a time. That is the lock.
//
// Most drivers need one call:
//
//	err := mutex.With(ctx, api, reservationID, func(ctx context.Context) error {
//		// re-read the reservation, then edit it
//	})
//
// For finer control, New returns a Mutex whose Lock and TryLock return a held *Lock with
// Unlock, Done and Err.
//
// Guarantees:
//   - Never proceeds without the lock: Lock returns a held lock or an error.
//   - Never removes a lock it does not hold: the owner record is read before every removal.
//   - Permanent failures (unknown or ended reservation, missing service model, bad
//     credentials) fail at once; contention and transient failures are retried with jitter
//     until ctx's deadline or the wait limit.
//   - A write whose answer was lost is settled by reading the reservation, never resent.
//   - A crashed holder does not block the reservation forever: holders renew a lease, and
//     waiters break a holder whose heartbeat they have seen unchanged for longer than the
//     lease, timed by their own clock. Clock skew between hosts changes nothing.
//   - Interoperates with the public Reservation-Mutex-Lock Python snippet (same service
//     model, alias and attribute). Its locks carry no heartbeat and are never broken
//     automatically unless WithLegacyMaxAge opts in.
//
// The protocol, its invariants and its limits are in docs/PROTOCOL.md.
package mutex
