//go:build unix

package main

import (
	"encoding/json"
	"testing"
	"time"
)

// serve --cohort: clients of one lock pass one CloudShell acquisition among themselves. The
// control (without the flag) takes the lock in CloudShell once per client.
func TestServeCohort(t *testing.T) {
	for _, cohort := range []bool{true, false} {
		t.Run(map[bool]string{true: "cohort", false: "control"}[cohort], func(t *testing.T) {
			clearEnv(t)
			mock, conn, res := serveMock(t)
			args := append([]string{"--listen", "127.0.0.1:0"}, conn...)
			if cohort {
				args = append(args, "--cohort")
			}
			r := startServe(t, args...)
			acquire := func(owner string) string {
				// A wide timeout: the second request waits for the first's release below.
				resp, body := r.post(t, "/v1/acquire", `{"reservation_id":"`+res+`","mode":"token","owner":"`+owner+`","timeout":"1m"}`)
				if resp.StatusCode != 200 {
					t.Errorf("acquire %s: %d %s", owner, resp.StatusCode, body)
					return ""
				}
				var out struct{ Token string }
				_ = json.Unmarshal(body, &out)
				return out.Token
			}
			first := acquire("a")
			second := make(chan string, 1)
			go func() { second <- acquire("b") }()
			// Real time and real HTTP: wait, with a wide margin for a loaded machine, until the
			// sidecar lists b as waiting, then a little longer for it to queue behind a.
			deadline := time.Now().Add(20 * time.Second)
			for {
				resp, err := r.client().Get(r.url("/v1/locks"))
				if err != nil {
					t.Fatal(err)
				}
				var locks struct{ Waiting []json.RawMessage }
				_ = json.NewDecoder(resp.Body).Decode(&locks)
				resp.Body.Close()
				if len(locks.Waiting) > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the second client never showed as waiting")
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
			adds := mock.Calls("AddServiceToReservation")
			if resp, body := r.post(t, "/v1/release", `{"token":"`+first+`"}`); resp.StatusCode != 200 {
				t.Fatalf("release a: %d %s", resp.StatusCode, body)
			}
			tok := <-second
			if resp, body := r.post(t, "/v1/release", `{"token":"`+tok+`"}`); resp.StatusCode != 200 {
				t.Fatalf("release b: %d %s", resp.StatusCode, body)
			}
			later := mock.Calls("AddServiceToReservation") - adds
			if cohort && later != 0 {
				t.Errorf("--cohort: %d adds after the first client released, want 0 (passed within the sidecar)", later)
			}
			if !cohort && later == 0 {
				t.Errorf("control: no add after the first client released")
			}
			if mockHas(t, mock, res, "MUTEX") {
				t.Error("the lock is still in the reservation after both released")
			}
		})
	}
}
