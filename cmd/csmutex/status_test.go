package main

import (
	"testing"
	"time"

	"github.com/csmutex/csmutex/mutex"
)

func TestStatusState(t *testing.T) {
	cases := []struct {
		state mutex.LockState
		want  string
		held  string
	}{
		{mutex.LockState{Name: "MUTEX", Holder: mutex.Owner{Legacy: true, Raw: "py-7"}}, "legacy: never broken automatically", ""},
		{mutex.LockState{Name: "MUTEX", Holder: mutex.Owner{Name: "d", Token: "t"}}, "never expires", ""},
		{mutex.LockState{Name: "MUTEX", Holder: mutex.Owner{Name: "d", Token: "t", Lease: time.Minute}}, "no heartbeat yet", ""},
		{mutex.LockState{Name: "MUTEX", Holder: mutex.Owner{Name: "d", Token: "t", Lease: time.Minute}, Heartbeat: "7 held=2m20s"},
			"renewing (heartbeat 7)", "2m20s"},
	}
	for _, tc := range cases {
		got := toStatus(tc.state, time.Now(), time.Time{})
		if got.State != tc.want || got.Held != tc.held {
			t.Errorf("%+v: state %q held %q, want %q %q", tc.state, got.State, got.Held, tc.want, tc.held)
		}
	}
	if got := toStatus(cases[0].state, time.Now(), time.Time{}); got.Kind != "legacy" || got.Owner != "py-7" {
		t.Errorf("legacy lock shown as %+v", got)
	}
}
