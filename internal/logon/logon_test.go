package logon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/csmutex/csmutex/cloudshell"
)

func TestError(t *testing.T) {
	refused := &cloudshell.APIError{Method: "Logon", Code: 100, Message: "Login failed"}
	unauthorized := fmt.Errorf("cloudshell: Logon: %w", cloudshell.ErrUnauthorized)
	unreachable := cloudshell.NewTransportError(context.Background(), "Logon", false, errors.New("connection refused"))
	for _, c := range []struct {
		err  error
		want string
	}{
		{refused, `CloudShell at h:8029 refused to log on user "u": CloudShell API error 100: Login failed`},
		{unauthorized, `CloudShell at h:8029 refused to log on user "u": cloudshell: Logon: cloudshell: unauthorized`},
		{unreachable, `cannot reach CloudShell at h:8029: cloudshell: Logon: transport: connection refused`},
	} {
		e := &Error{Addr: Addr("h", 8029), As: Who("u", ""), Err: c.err}
		if got := e.Error(); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
		if !errors.Is(e, c.err) {
			t.Errorf("%v does not unwrap to its cause", e)
		}
	}
}

func TestWhoAndAddr(t *testing.T) {
	if got := Who("svc", ""); got != `user "svc"` {
		t.Error(got)
	}
	if got := Who("svc", "tok-secret"); got != "with the admin token" || strings.Contains(got, "secret") {
		t.Error(got)
	}
	for host, want := range map[string]string{"h": "h:1", " h ": "h:1", "::1": "[::1]:1", "[::1]": "[::1]:1"} {
		if got := Addr(host, 1); got != want {
			t.Errorf("Addr(%q) = %q, want %q", host, got, want)
		}
	}
}
