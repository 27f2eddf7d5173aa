package mutex

import (
	"context"
)

// Abandon simulates a holder that crashed: renewals stop and nothing is released.
func (l *Lock) Abandon() {
	l.mu.Lock()
	l.unlocked = true
	l.mu.Unlock()
	close(l.stop)
	l.renewing.Wait()
}

// Record exposes the owner record format to tests that plant records by hand.
func (o Owner) Record() string { return o.record() }

func HeartbeatKey(token string) string { return heartbeatKey(token) }

// RenewNow runs one renewal as the lease loop would: tests use it to play a holder that
// wakes up after it was broken.
func (l *Lock) RenewNow(ctx context.Context) error { return l.renew(ctx) }
