package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

// The README's main job: on the embedded mock, both drivers succeed and the topology ends
// as A2--B2. (Whether the second driver has to wait depends on timing, so it is not asserted.)
func TestMainJob(t *testing.T) {
	t.Setenv("CLOUDSHELL_HOST", "")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		"lock released",
		"final topology:\n  A2/Port 1 -- B2/Port 1\n",
		"result: both drivers succeeded",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "admin") && strings.Contains(got, "password") {
		t.Errorf("output mentions credentials:\n%s", got)
	}
	// Durations carry units, as in the command's console logs.
	if !regexp.MustCompile(`waited=[0-9.]+(ns|µs|ms|s)\b`).MatchString(got) || !regexp.MustCompile(`held=[0-9.]+(ns|µs|ms|s)\b`).MatchString(got) {
		t.Errorf("durations in the timeline lack units:\n%s", got)
	}
}

func TestRealServerNeedsReservation(t *testing.T) {
	t.Setenv("CLOUDSHELL_HOST", "cloudshell.invalid")
	t.Setenv("CLOUDSHELL_RESERVATION_ID", "")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), nil, &out, &errOut); code != 64 || !strings.Contains(errOut.String(), "reservation") {
		t.Fatalf("exit %d, stderr %q: want 64 asking for the reservation", code, errOut.String())
	}
}
