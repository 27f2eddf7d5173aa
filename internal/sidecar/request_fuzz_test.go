package sidecar

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/csmutex/csmutex/mutex"
)

// fuzzServer is a sidecar that is never started: the fuzz targets only parse requests.
func fuzzServer() *Server {
	return New(WithCredentials(Credentials{Host: "cloudshell.invalid", Port: 8029, Scheme: "http",
		User: "driver", Password: "sidecar-own-secret", Domain: "Global"}))
}

// An acquire request is whatever a local client sends. Whatever its bytes, parsing it must
// not panic; a request it accepts must be one the lock can take as it is (a valid name,
// durations and priority in their ranges); and a refusal must never quote the password the
// request carried.
func FuzzAcquireRequest(f *testing.F) {
	f.Add("R1", "MUTEX", "", "token", `"5m"`, `"1h"`, `3`, "hunter2-password", "")
	f.Add("R1", "SW", "semaphore", "stream", `0`, `null`, `null`, "p@ss word", `"slots":3`)
	f.Add("R1", "", "set", "token", `"-1s"`, `"1ns"`, `10`, "x", `"names":["A","B"],"levels":[{"level":"l","names":["A","B"]}]`)
	f.Add("R1", "P", "pool", "", `"9999999h"`, `"25h"`, `true`, "secret-in-port", `"members":["a","b"],"count":2`)
	f.Add(" ", "MUTEX.break.x", "shared", "stream", `"1s"`, `""`, `"3"`, "", `"readers":4`)
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, res, name, shape, mode, timeout, ttl, priority, password, extra string) {
		body := `{"reservation_id":` + quote(res) + `,"name":` + quote(name) + `,"mode":` + quote(mode)
		if shape != "" {
			body += `,"shape":` + quote(shape)
		}
		for k, raw := range map[string]string{"timeout": timeout, "ttl": ttl, "priority": priority} {
			if json.Valid([]byte(raw)) {
				body += `,"` + k + `":` + raw
			}
		}
		if extra != "" && json.Valid([]byte("{"+extra+"}")) {
			body += "," + extra
		}
		body += `,"cloudshell":{"host":"other.invalid","user":"u","password":` + quote(password) + `}}`
		r := httptest.NewRequest("POST", "/v1/acquire", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		p, err := s.parseAcquire(httptest.NewRecorder(), r)
		if err != nil {
			if len(password) >= 6 && strings.Contains(err.Error(), password) && !strings.Contains(body[:strings.Index(body, `"cloudshell"`)], password) {
				t.Fatalf("the refusal quotes the request's password: %v", err)
			}
			return
		}
		validate := mutex.ValidateName
		if !p.shape.plain() {
			validate = mutex.ValidateShapeName
		}
		if p.shape.kind != ShapeSet && p.shape.kind != ShapePool {
			if verr := validate(p.name); verr != nil {
				t.Fatalf("accepted the name %q: %v", p.name, verr)
			}
		}
		switch {
		case p.timeout < 0 || p.timeout > MaxTimeout:
			t.Fatalf("accepted timeout %s", p.timeout)
		case p.mode == ModeToken && (p.ttl < MinTTL || p.ttl > MaxTTL):
			t.Fatalf("accepted ttl %s", p.ttl)
		case p.priority != noPriority && (p.priority < 0 || p.priority > mutex.MaxPriority):
			t.Fatalf("accepted priority %d", p.priority)
		case p.mode != ModeToken && p.mode != ModeStream:
			t.Fatalf("accepted mode %q", p.mode)
		case strings.TrimSpace(p.resID) == "":
			t.Fatalf("accepted an empty reservation id")
		}
	})
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
