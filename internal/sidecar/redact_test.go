package sidecar

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/csmutex/csmutex/mutex"
)

// A secret that contains another must be masked whole. Replacing the shorter one first
// would leave the longer one's tail in the message (with "abc" and "abcdef", replacing
// "abc" first leaks "def"): the sidecar must mask the longest secret first, as the
// cloudshell client does.
func TestRedactsLongestSecretFirst(t *testing.T) {
	const (
		password = "Sh0rt-pass"
		tail     = "-and-the-token-tail"
		token    = password + tail
	)
	// A dial whose error quotes what it was given, as a careless transport might.
	echo := func(context.Context, Credentials) (mutex.API, error) {
		return nil, fmt.Errorf("logon refused: token %s, password %s", token, password)
	}
	e := newEnv(t, WithDial(echo))
	code, out := e.post("/v1/acquire", map[string]any{"reservation_id": e.resID, "timeout": "1s",
		"cloudshell": map[string]any{"user": "driver", "password": password, "token": token}})
	msg := fmt.Sprint(out["error"])
	if code == http.StatusOK || !strings.Contains(msg, "[REDACTED]") {
		t.Fatalf("acquire with echoing dial: %d %v", code, out)
	}
	for where, s := range map[string]string{"response": msg, "logs": e.logs.String()} {
		if strings.Contains(s, tail) || strings.Contains(s, password) {
			t.Errorf("a secret leaked into the %s: %s", where, s)
		}
	}
}
