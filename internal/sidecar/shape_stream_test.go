package sidecar

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mutex"
)

// fastShapes makes shapes poll as fast as the env's mutexes (locks overrides their retry).
var fastShapes = WithLocksOptions(locks.WithRetry(mutex.Jitter(time.Millisecond, 5*time.Millisecond)))

// Every field of a shape request is checked before anything is sent, and the answer names
// the field and its range.
func TestShapeBadRequests(t *testing.T) {
	e := newEnv(t)
	r := `"reservation_id":"r",`
	long := `"` + strings.Repeat("N", mutex.MaxShapeNameLength+1) + `"`
	many := func(n int) string {
		var s []string
		for i := range n {
			s = append(s, fmt.Sprintf(`"M-%d"`, i))
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	cases := []struct {
		name, path, body, want string
	}{
		{"unknown shape", "/v1/acquire", `{` + r + `"shape":"mutex"}`, `unknown shape "mutex": want "exclusive", "semaphore", "shared", "set" or "pool"`},
		{"semaphore without slots", "/v1/acquire", `{` + r + `"shape":"semaphore","name":"SW"}`, `slots is required for shape "semaphore"`},
		{"zero slots", "/v1/acquire", `{` + r + `"shape":"semaphore","name":"SW","slots":0}`, "slots 0 is out of range: it must be between 1 and 9999"},
		{"too many slots", "/v1/acquire", `{` + r + `"shape":"semaphore","name":"SW","slots":10000}`, "slots 10000 is out of range"},
		{"slots as string", "/v1/acquire", `{` + r + `"shape":"semaphore","name":"SW","slots":"2"}`, `field "slots" must be a int`},
		{"slots without semaphore", "/v1/acquire", `{` + r + `"slots":2}`, `slots applies only to shape "semaphore", not "exclusive"`},
		{"shape name too long", "/v1/acquire", `{` + r + `"shape":"semaphore","slots":2,"name":` + long + `}`, "the limit for a lock shape"},
		{"slot name", "/v1/acquire", `{` + r + `"shape":"semaphore","slots":2,"name":"SW.slot.1"}`, "reserved for the slots"},
		{"zero readers", "/v1/acquire", `{` + r + `"shape":"shared","name":"T","readers":0}`, "readers 0 is out of range: it must be between 1 and 9999"},
		{"readers on a pool", "/v1/acquire", `{` + r + `"shape":"pool","members":["A"],"readers":2}`, `readers applies only to shape "shared" or "exclusive", not "pool"`},
		{"set without names", "/v1/acquire", `{` + r + `"shape":"set"}`, `names is required for shape "set"`},
		{"set with a name", "/v1/acquire", `{` + r + `"shape":"set","name":"X","names":["A"]}`, `name applies only to shape "exclusive", "semaphore" or "shared", not "set"`},
		{"set too large", "/v1/acquire", `{` + r + `"shape":"set","names":` + many(MaxSetNames+1) + `}`, "names lists 33 locks: a set takes 1 to 32"},
		{"bad set name", "/v1/acquire", `{` + r + `"shape":"set","names":["A","B.break.x"]}`, "names[1]:"},
		{"level missing a name", "/v1/acquire", `{` + r + `"shape":"set","names":["A","B"],"levels":[{"level":"dev","names":["A"]}]}`, `names: "B" is at no level`},
		{"level twice", "/v1/acquire", `{` + r + `"shape":"set","names":["A"],"levels":[{"level":"dev","names":["A"]},{"level":"dev","names":[]}]}`, `levels: locks: invalid levels: level "dev" is declared twice`},
		{"empty levels", "/v1/acquire", `{` + r + `"shape":"set","names":["A"],"levels":[]}`, "levels lists 0 levels: want 1 to 16"},
		{"inside without levels", "/v1/acquire", `{` + r + `"shape":"set","names":["A"],"inside":"tok"}`, "inside needs levels"},
		{"pool without members", "/v1/acquire", `{` + r + `"shape":"pool","count":1}`, `members is required for shape "pool"`},
		{"pool count too high", "/v1/acquire", `{` + r + `"shape":"pool","members":["A","B"],"count":3}`, "count 3 is out of range: it must be between 1 and 2 (the number of members)"},
		{"pool duplicate", "/v1/acquire", `{` + r + `"shape":"pool","members":["A","B","A"]}`, `members[2]: "A" is listed twice`},
		{"pool too large", "/v1/acquire", `{` + r + `"shape":"pool","members":` + many(MaxPoolMembers+1) + `}`, "members lists 65 locks: a pool has 1 to 64"},
		{"messages on a semaphore", "/v1/acquire", `{` + r + `"shape":"semaphore","name":"S","slots":2,"sandbox_messages":true}`, `sandbox_messages applies only to shape "exclusive"`},
		{"state without key", "/v1/state/add", `{` + r + `"delta":1}`, "key is required"},
		{"state bad key", "/v1/state/add", `{` + r + `"key":"a b","delta":1}`, "key must be 1 to 64 letters"},
		{"state without delta", "/v1/state/add", `{` + r + `"key":"k"}`, "delta is required"},
		{"state delta not integer", "/v1/state/add", `{` + r + `"key":"k","delta":1.5}`, `field "delta" must be a int64`},
		{"state zero timeout", "/v1/state/add", `{` + r + `"key":"k","delta":1,"timeout":0}`, "timeout 0 is out of range: it must be between 1ms and 24h"},
		{"state unknown field", "/v1/state/add", `{` + r + `"key":"k","delta":1,"range":"1-2"}`, `unknown field "range"`},
		{"allocate without range", "/v1/state/allocate", `{` + r + `"key":"k"}`, "range is required"},
		{"allocate bad range", "/v1/state/allocate", `{` + r + `"key":"k","range":"a-b"}`, `range must be "lo-hi"`},
		{"allocate reversed range", "/v1/state/allocate", `{` + r + `"key":"k","range":{"lo":5,"hi":1}}`, "range 5-1 is out of range"},
		{"allocate huge range", "/v1/state/allocate", `{` + r + `"key":"k","range":"0-4096"}`, "spans at most 4096 values"},
	}
	// The field a client should fix, named apart from the words.
	fields := map[string]string{"zero slots": "slots", "slots without semaphore": "slots", "bad set name": "names[1]",
		"pool count too high": "count", "pool duplicate": "members[2]", "state bad key": "key",
		"state zero timeout": "timeout", "allocate reversed range": "range", "unknown shape": "shape"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := e.post(c.path, c.body)
			if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(out["error"]), c.want) || out["kind"] != "bad_request" {
				t.Fatalf("%d %v, want 400 mentioning %q", code, out, c.want)
			}
			if f, ok := fields[c.name]; ok && out["field"] != f {
				t.Errorf("field %v, want %q", out["field"], f)
			}
		})
	}
	if n := e.mock.Calls("AddServiceToReservation"); n != 0 {
		t.Errorf("%d adds after bad requests, want none", n)
	}
}

// Stream mode holds a shape as long as the response stays open: the first line says what
// was obtained, closing releases every lock of the shape, and a lost part ends the stream
// with a lost line.
func TestShapeStreamMode(t *testing.T) {
	e := newEnv(t, fastShapes, WithLease(time.Second))
	h, code, out := e.openStream(map[string]any{"reservation_id": e.resID, "owner": "driver-p",
		"shape": "pool", "members": []string{"TG-1", "TG-2", "TG-3"}, "count": 2})
	if code != http.StatusOK {
		t.Fatalf("acquire: %d %v", code, out)
	}
	if h.first["status"] != "acquired" || h.first["shape"] != "pool" || fmt.Sprint(h.first["members"]) != "[TG-1 TG-2]" {
		t.Fatalf("first line %v, want the pool's members TG-1 and TG-2", h.first)
	}
	if e.lockOwner("TG-1") != "driver-p" || e.lockOwner("TG-2") != "driver-p" {
		t.Fatalf("members not held in CloudShell")
	}
	if hb := h.next(t); hb["status"] != "held" {
		t.Fatalf("heartbeat %v", hb)
	}
	h.resp.Body.Close()
	// Wide margin: the release is a few local round trips; the machine may be loaded.
	e.waitFor("the pool's members to be released", 10*time.Second, func() bool {
		return e.lockOwner("TG-1") == "" && e.lockOwner("TG-2") == ""
	})

	h, code, out = e.openStream(map[string]any{"reservation_id": e.resID, "owner": "driver-r", "shape": "shared", "name": "TOPO"})
	if code != http.StatusOK || h.first["access"] != "shared" || h.first["slot"] != 1.0 {
		t.Fatalf("reader: %d %v", code, out)
	}
	cl, err := cloudshell.Dial(context.Background(), cloudshell.Config{Host: e.creds.Host, Port: e.creds.Port,
		Username: "admin", Password: "admin", Domain: "Global"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.RemoveServicesFromReservation(context.Background(), e.resID, []string{"TOPO.read.1"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second) // a lease is 1 s: wide margin
	for time.Now().Before(deadline) {
		line := h.next(t)
		if line["status"] == "held" {
			continue
		}
		if line["status"] != "lost" || !strings.Contains(fmt.Sprint(line["error"]), "TOPO.read.1") {
			t.Fatalf("final line %v, want lost naming the reader slot", line)
		}
		h.resp.Body.Close()
		return
	}
	t.Fatal("no lost line")
}
