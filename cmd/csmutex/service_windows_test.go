package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/windows/svc"
)

func TestServiceArgs(t *testing.T) {
	abs, err := filepath.Abs("sidecar.log")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in, want []string
	}{
		{nil, []string{"service", "run"}},
		{[]string{"--listen", "127.0.0.1:7400", "--auth-token-file", `C:\csmutex\token`},
			[]string{"service", "run", "--listen", "127.0.0.1:7400", "--auth-token-file", `C:\csmutex\token`}},
		{[]string{"--listen", "127.0.0.1:7400", "--log-file", "sidecar.log", "-v"},
			[]string{"service", "run", "--log-file", abs, "--listen", "127.0.0.1:7400", "-v"}},
		{[]string{"-log-file=sidecar.log"}, []string{"service", "run", "--log-file", abs}},
	} {
		got, err := serviceInstallArgs(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("serviceInstallArgs(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range [][]string{{"--log-file"}, {"--log-file="}, {"--help"}} {
		if got, err := serviceInstallArgs(in); err == nil {
			t.Errorf("serviceInstallArgs(%q) = %q, want an error", in, got)
		}
	}
}

func TestServiceUsage(t *testing.T) {
	for _, args := range [][]string{{"service"}, {"service", "bogus"}, {"service", "start", "extra"},
		{"service", "install", "--log-file"}} {
		if code, _, stderr := runMain(t, args...); code != exitUsage || !strings.Contains(stderr, "usage: csmutex service") {
			t.Errorf("%q: exit %d, stderr %q; want 64 and the synopsis", args, code, stderr)
		}
	}
	if code, stdout, _ := runMain(t, "help", "service"); code != exitOK || !strings.Contains(stdout, serviceName) {
		t.Errorf("help service: exit %d, stdout %q", code, stdout)
	}
}

// execute runs h.Execute with fake channels, as svc.Run would.
func execute(h *serviceHandler) (r chan svc.ChangeRequest, s chan svc.Status, ret chan [2]uint32) {
	r, s, ret = make(chan svc.ChangeRequest), make(chan svc.Status, 10), make(chan [2]uint32, 1)
	go func() {
		ssec, code := h.Execute(nil, r, s)
		b := uint32(0)
		if ssec {
			b = 1
		}
		ret <- [2]uint32{b, code}
	}()
	return r, s, ret
}

func nextStatus(t *testing.T, s chan svc.Status, want svc.State) svc.Status {
	t.Helper()
	select {
	case st := <-s:
		if st.State != want {
			t.Fatalf("status %d, want %d", st.State, want)
		}
		return st
	case <-time.After(10 * time.Second):
		t.Fatalf("no status %d", want)
	}
	return svc.Status{}
}

func TestServiceHandlerStop(t *testing.T) {
	stopped := make(chan struct{})
	h := &serviceHandler{log: io.Discard, serve: func(ctx context.Context, stdout io.Writer) int {
		fmt.Fprintln(stdout, "listening on 127.0.0.1:7369")
		<-ctx.Done() // as serve's signal context: shut down gracefully, exit 0
		close(stopped)
		return exitOK
	}}
	r, s, ret := execute(h)
	nextStatus(t, s, svc.StartPending)
	if st := nextStatus(t, s, svc.Running); st.Accepts&svc.AcceptStop == 0 || st.Accepts&svc.AcceptShutdown == 0 {
		t.Errorf("Running accepts %b, want Stop and Shutdown", st.Accepts)
	}
	r <- svc.ChangeRequest{Cmd: svc.Interrogate}
	nextStatus(t, s, svc.Running)
	r <- svc.ChangeRequest{Cmd: svc.Stop}
	nextStatus(t, s, svc.StopPending)
	select {
	case got := <-ret:
		if got != [2]uint32{0, 0} {
			t.Errorf("Execute returned %v, want (false, 0)", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Execute did not return after Stop")
	}
	select {
	case <-stopped:
	default:
		t.Error("serve's context was not cancelled")
	}
}

func TestServiceHandlerServeFails(t *testing.T) {
	h := &serviceHandler{serve: func(context.Context, io.Writer) int { return exitUnavailable }}
	_, s, ret := execute(h)
	nextStatus(t, s, svc.StartPending)
	select {
	case got := <-ret:
		if got != [2]uint32{1, exitUnavailable} || h.code != exitUnavailable {
			t.Errorf("Execute returned %v (code %d), want a service-specific exit 69", got, h.code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Execute did not return when serve failed")
	}
}
