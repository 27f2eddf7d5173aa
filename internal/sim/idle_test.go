package sim

import (
	"strings"
	"testing"
	"time"
)

// idleRun is a hand-made history for the idle check: two csmutex processes with 4 s leases
// (bound 4/3 + 1/2 + 0.4 s ≈ 2.23 s), the lock released at 10 s, p1 waiting from 9 s.
type idleRun struct {
	k      *Checker
	p1, p2 *Process
}

func at(s float64) time.Time { return epoch.Add(time.Duration(s * float64(time.Second))) }

func newIdleRun() *idleRun {
	sc := Scenario{Seed: 1, Procs: []ProcSpec{{Name: "p1", Lease: 4 * time.Second}, {Name: "p2", Lease: 4 * time.Second}}}
	w := &World{sc: sc, start: epoch, tokens: map[string]string{}, calls: map[string]int{}}
	k := newChecker(w)
	k.watchIdle()
	r := &idleRun{k: k, p1: &Process{name: "p1", world: w, lease: 4 * time.Second}, p2: &Process{name: "p2", world: w, lease: 4 * time.Second}}
	k.idle.lock = []lockEvent{{at: at(1), present: true}, {at: at(10)}}
	return r
}

// freeUntil has the lock added again at s, and p1 stop waiting then.
func (r *idleRun) freeUntil(s float64) {
	r.k.idle.lock = append(r.k.idle.lock, lockEvent{at: at(s), present: true})
	r.k.idle.waits = append(r.k.idle.waits, waitSpan{party: "p1", proc: r.p1, from: at(9), to: at(s)})
}

func (r *idleRun) judge(t *testing.T) []Violation {
	t.Helper()
	r.k.judgeIdle(at(100))
	return r.k.violations
}

func TestIdleCheck(t *testing.T) {
	t.Run("a long idle span while a waiter waits is a violation", func(t *testing.T) {
		r := newIdleRun()
		r.freeUntil(13)
		v := r.judge(t)
		if len(v) != 1 || v[0].Kind != "idle" || !strings.Contains(v[0].Detail, "3s") {
			t.Fatalf("violations = %v, want one idle violation of 3s", v)
		}
		if s := r.k.stats; s.IdleLongest != 3*time.Second || s.IdleUnexcused != 3*time.Second || s.IdleSpans != 1 {
			t.Fatalf("stats = %+v, want one 3s span, all of it unexcused", s)
		}
	})
	t.Run("a span within the bound is not", func(t *testing.T) {
		r := newIdleRun()
		r.freeUntil(12)
		if v := r.judge(t); len(v) != 0 {
			t.Fatalf("violations = %v, want none for a 2s span", v)
		}
	})
	t.Run("nobody waiting: the lock may stay free", func(t *testing.T) {
		r := newIdleRun()
		r.k.idle.lock = append(r.k.idle.lock, lockEvent{at: at(30), present: true})
		r.k.idle.waits = append(r.k.idle.waits, waitSpan{party: "p1", proc: r.p1, from: at(29), to: at(30)})
		if v := r.judge(t); len(v) != 0 || r.k.stats.IdleWaiting != time.Second {
			t.Fatalf("violations = %v, idle %s: want none, and 1s of idle time", v, r.k.stats.IdleWaiting)
		}
	})
	t.Run("a faulted call excuses what it covers", func(t *testing.T) {
		r := newIdleRun()
		r.freeUntil(13)
		r.k.idle.calls = append(r.k.idle.calls, window{at(10.5), at(11.5)})
		if v := r.judge(t); len(v) != 0 || r.k.stats.IdleUnexcused != 1500*time.Millisecond {
			t.Fatalf("violations = %v, unexcused %s: want none, and 1.5s unexcused", v, r.k.stats.IdleUnexcused)
		}
	})
	t.Run("a dead front entry excuses its ttl and a read interval, no more", func(t *testing.T) {
		for _, tc := range []struct {
			until float64
			fails bool
		}{{until: 16}, {until: 19, fails: true}} {
			r := newIdleRun()
			// p2 joined at 2 s and stopped waiting at 5 s without clearing its entry; p1 joined
			// behind it at 9 s. Waiters skip p2's entry by 9 + 4 + 4/3 s.
			r.k.idle.waits = append(r.k.idle.waits, waitSpan{party: "p2", proc: r.p2, from: at(1.5), to: at(5)})
			r.k.idle.room = append(r.k.idle.room,
				roomWrite{at: at(2), sent: at(2), proc: r.p2, key: roomPrefix + "00", value: "t=1 id=aaaaaaaaaaaaaaaa seq=1 ttl=4s"},
				roomWrite{at: at(9.1), sent: at(9.1), proc: r.p1, key: roomPrefix + "01", value: "t=2 id=bbbbbbbbbbbbbbbb seq=1 ttl=4s"})
			r.freeUntil(tc.until)
			if v := r.judge(t); (len(v) > 0) != tc.fails {
				t.Fatalf("free until %vs: violations = %v, want a violation: %v", tc.until, v, tc.fails)
			}
		}
	})
	t.Run("an entry sent before its wait began is an old room's", func(t *testing.T) {
		r := newIdleRun()
		// p1 joins at 9.2 s; its join from an earlier wait lands after that, at 9.5 s, ahead
		// of it: that entry is dead, and excused like any dead front entry.
		r.k.idle.room = append(r.k.idle.room,
			roomWrite{at: at(9.2), sent: at(9.2), proc: r.p1, key: roomPrefix + "01", value: "t=2 id=dddddddddddddddd seq=1 ttl=4s"},
			roomWrite{at: at(9.5), sent: at(4), proc: r.p1, key: roomPrefix + "00", value: "t=1 id=cccccccccccccccc seq=1 ttl=4s"})
		r.freeUntil(14)
		if v := r.judge(t); len(v) != 0 {
			t.Fatalf("violations = %v, want none: the late entry is dead", v)
		}
	})
}

func TestLongestUncovered(t *testing.T) {
	ws := []window{{at(2), at(3)}, {at(2.5), at(4)}, {at(7), at(8)}}
	for _, tc := range []struct {
		from, to float64
		want     time.Duration
	}{
		{0, 10, 3 * time.Second},    // 4..7
		{2, 4, 0},                   // covered
		{3.5, 7.5, 3 * time.Second}, // 4..7
		{7.5, 9, time.Second},       // 8..9
	} {
		if got := longestUncovered(at(tc.from), at(tc.to), ws); got != tc.want {
			t.Errorf("longestUncovered(%v, %v) = %s, want %s", tc.from, tc.to, got, tc.want)
		}
	}
}
