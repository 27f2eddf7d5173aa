package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// legacyGaveUp runs nSnippet snippet emulators and nCsmutex csmutex contenders together and
// counts how often a snippet ran out of its 100 tries (the real one would then proceed
// without the lock), out of how many acquisitions it attempted.
func (b *bench) legacyGaveUp(nSnippet, nCsmutex int) (gaveUp, attempts int, err error) {
	e, err := b.newEnv()
	if err != nil {
		return 0, 0, err
	}
	defer e.mock.Close()
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for i := range nSnippet + nCsmutex {
		c, err := e.client(fmt.Sprintf("c%d", i))
		if err != nil {
			return 0, 0, err
		}
		lock, snippet := b.csmutex, i < nSnippet
		if snippet {
			lock = b.snippet
		}
		wg.Go(func() {
			// Longer and more critical sections than the other rows: enough queueing that
			// the snippet's 100 tries (3.5 s at the default scale) can run out at all.
			for range 3 * b.rounds {
				err := lock(context.Background(), c, e.res, fmt.Sprintf("c%d", i), func() { time.Sleep(2 * b.hold) })
				if snippet {
					mu.Lock()
					attempts++
					if errors.Is(err, errGaveUp) {
						gaveUp++
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return gaveUp, attempts, nil
}

// legacy: target 6, snippet drivers are not starved by csmutex contenders.
func (b *bench) legacy() ([]row, error) {
	mg, ma, err := b.legacyGaveUp(2, 8)
	if err != nil {
		return nil, err
	}
	ag, aa, err := b.legacyGaveUp(10, 0)
	if err != nil {
		return nil, err
	}
	return []row{{"snippet drivers running out of tries: 2 snippets + 8 csmutex vs 10 snippets",
		fmt.Sprintf("%d of %d", mg, ma), fmt.Sprintf("%d of %d", ag, aa), "",
		"target: no more often than among snippets only (the real snippet then proceeds without the lock); physical limit 0"}}, nil
}
