package mockapi_test

import (
	"context"
	"testing"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mockapi"
)

// CallsBy counts each client's requests by method, failed ones included, under the machine
// name the client logged on with (the reference client's ":port" suffix stripped).
func TestCallsBy(t *testing.T) {
	s := mockapi.New()
	addr, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = addr
	host, port := s.Addr()
	res := s.CreateReservation("r", "admin")
	dial := func(machine string) *cloudshell.Client {
		c, err := cloudshell.Dial(context.Background(), cloudshell.Config{Host: host, Port: port,
			Username: "admin", Password: "admin", MachineName: machine})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := dial("a"), dial("b")
	ctx := context.Background()
	for range 2 {
		_, _ = a.GetSandboxData(ctx, res)
	}
	_, _ = a.GetSandboxData(ctx, "no-such-reservation")
	_, _ = b.GetSandboxData(ctx, res)
	if got := s.CallsBy("a", "GetSandboxData"); got != 3 {
		t.Errorf("a: %d GetSandboxData calls, want 3", got)
	}
	if got := s.CallsBy("b", "GetSandboxData"); got != 1 {
		t.Errorf("b: %d GetSandboxData calls, want 1", got)
	}
	if got, all := s.CallsBy("a", ""), s.CallsBy("a", "GetSandboxData"); got <= all {
		t.Errorf("a: %d calls in all, want its logon counted too (%d reads)", got, all)
	}
}
