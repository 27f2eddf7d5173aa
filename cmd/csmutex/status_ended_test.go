package main

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/csmutex/csmutex/cloudshell"
)

// status classifies a reservation as run does: an ended or unknown one is a bad
// reservation (65) with a message saying so, not "no locks" and 0.
func TestStatusEndedReservation(t *testing.T) {
	clearEnv(t)
	host, port, res := inProcessMock(t)
	conn := []string{"--host", host, "--port", strconv.Itoa(port), "--user", "admin", "--password", "admin"}
	status := func(args ...string) (int, string, string) {
		return runMain(t, append(append([]string{"status"}, conn...), args...)...)
	}
	if code, stdout, stderr := status("-r", res); code != exitOK || strings.TrimSpace(stdout) != "no locks" {
		t.Fatalf("live reservation: exit %d %q\n%s", code, stdout, stderr)
	}

	c, err := cloudshell.Dial(context.Background(), cloudshell.Config{Host: host, Port: port, Username: "admin", Password: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EndReservation(context.Background(), res, false); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-r", res}, {"-r", res, "--json"}} {
		code, stdout, stderr := status(args...)
		if code != exitDataErr || stdout != "" || !strings.Contains(stderr, "has ended") || !strings.Contains(stderr, res) {
			t.Errorf("status %v of an ended reservation: exit %d, want 65 saying it has ended\nstdout: %s\nstderr: %s", args, code, stdout, stderr)
		}
	}
	code, stdout, stderr := status("-r", "no-such-reservation")
	if code != exitDataErr || stdout != "" || !strings.Contains(stderr, "no-such-reservation") {
		t.Errorf("status of an unknown reservation: exit %d, want 65\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}
