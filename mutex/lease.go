package mutex

import "time"

// LossMargin is the safety margin of a lease: a holder gives up this long before any waiter
// may break its lock (lease/6, about 10 s with the default lease). Every write that is only
// safe while the lock is held is sent and answered before the holder's loss point, and a
// process pause or a request delayed by more than this margin is outside what the protocol
// can protect against (docs/PROTOCOL.md, known limits).
func LossMargin(lease time.Duration) time.Duration { return lease / 6 }

// LossAfter is how long a holder may go without a confirmed renewal before it must consider
// the lock lost: the lease less its margin, so that a live holder (one not paused) stops
// strictly before any waiter, timing the same lease on its own clock, may break it.
func LossAfter(lease time.Duration) time.Duration { return lease - LossMargin(lease) }

func lossAfter(lease time.Duration) time.Duration { return LossAfter(lease) }
