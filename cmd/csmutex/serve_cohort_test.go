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
			select {
			case tok := <-second:
				t.Fatalf("the second client got the lock (%q) while the first held it", tok)
			default:
			}
			if resp, body := r.post(t, "/v1/release", `{"token":"`+first+`"}`); resp.StatusCode != 200 {
				t.Fatalf("release a: %d %s", resp.StatusCode, body)
			}
			tok := <-second
			if resp, body := r.post(t, "/v1/release", `{"token":"`+tok+`"}`); resp.StatusCode != 200 {
				t.Fatalf("release b: %d %s", resp.StatusCode, body)
			}
			// Applied adds of the lock (failed attempts change nothing and are not listed):
			// one acquisition shared by both clients, or one each.
			applied := 0
			for _, m := range mock.History(res) {
				if m.Method == "AddServiceToReservation" {
					applied++
				}
			}
			if want := map[bool]int{true: 1, false: 2}[cohort]; applied != want {
				t.Errorf("%d applied adds of the lock for two clients, want %d", applied, want)
			}
			if mockHas(t, mock, res, "MUTEX") {
				t.Error("the lock is still in the reservation after both released")
			}
		})
	}
}
