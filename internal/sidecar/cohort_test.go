package sidecar

import (
	"net/http"
	"testing"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

// With WithCohort, drivers that ask this sidecar for the same lock pass one CloudShell
// acquisition among themselves; without it (the control), each acquires on its own.
func TestCohortSharesOneAcquisition(t *testing.T) {
	for _, cohort := range []bool{true, false} {
		name := map[bool]string{true: "cohort", false: "control"}[cohort]
		t.Run(name, func(t *testing.T) {
			var opts []Option
			if cohort {
				opts = append(opts, WithCohort(mutex.DefaultCohortBound))
			}
			virtualSidecar(t, func(t *testing.T, v *vEnv) {
				adds := func() int { return v.env.Server.CallsBy("sidecar", "AddServiceToReservation") }
				first := v.mustAcquire("driver-a", nil)
				got := make(chan map[string]any, 2)
				for _, owner := range []string{"driver-b", "driver-c"} {
					go func() {
						code, out := v.acquire(owner, map[string]any{"timeout": "10m"})
						if code != http.StatusOK {
							t.Errorf("acquire %s: %d %v", owner, code, out)
						}
						got <- out
					}()
					time.Sleep(time.Second)
				}
				before := adds()
				if code, out := v.do("POST", "/v1/release", map[string]any{"token": first}); code != http.StatusOK {
					t.Fatalf("release: %d %v", code, out)
				}
				for range 2 {
					out := <-got
					if code, rel := v.do("POST", "/v1/release", map[string]any{"token": out["token"]}); code != http.StatusOK {
						t.Fatalf("release %v: %d %v", out["owner"], code, rel)
					}
				}
				if cohort {
					// Both waiters got the lock passed to them: no add at all after the first.
					if n := adds() - before; n != 0 {
						t.Errorf("%d adds after the first member released, want 0 (passed locally)", n)
					}
				} else if n := adds() - before; n < 2 {
					t.Errorf("control: %d adds after the first release, want at least 2", n)
				}
				time.Sleep(time.Minute) // background cleanup (leaving the waiting room) ends
				snap, err := v.env.Server.Snapshot(v.env.ReservationID)
				if err != nil {
					t.Fatal(err)
				}
				for _, svc := range snap.Services {
					t.Errorf("service %q left in the reservation", svc.Alias)
				}
				if cohort && len(v.s.cohorts.shared) != 0 {
					t.Errorf("%d cohort mutexes kept after every member left", len(v.s.cohorts.shared))
				}
			}, opts...)
		})
	}
}
