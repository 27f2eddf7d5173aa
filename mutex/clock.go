package mutex

import "time"

// Clock is the mutex's source of time. Every duration the algorithm measures is the
// difference of two readings of the same Clock in the same process, so the offset of a
// host's clock (skew) never matters; only the rate does.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
