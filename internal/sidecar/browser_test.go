package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/testenv"
)

// chromiumPath is the Debian package's browser (apt-get install chromium).
const chromiumPath = "/usr/bin/chromium"

// seenRequest is one request that reached the sidecar, and the status it got.
type seenRequest struct {
	method, path, contentType, origin string
	status                            int
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// The attack the guard exists for, run by a real browser: a page from another origin (any
// web site the driver's user opens) tries to take a lock through fetch(). A "simple"
// text/plain POST is sent by the browser without asking anyone; before the guard it took
// and held the lock. A JSON POST needs a CORS preflight, which the sidecar never grants.
// Skipped where Chromium is not installed (CI).
func TestBrowserCrossOriginCannotAcquire(t *testing.T) {
	// LookPath, not Stat: a Windows test binary (under Wine) sees the Linux browser's file
	// but cannot run it.
	if _, err := exec.LookPath(chromiumPath); err != nil {
		t.Skipf("needs a headless browser: %s not found (apt-get install chromium)", chromiumPath)
	}
	e := newEnv(t)

	var mu sync.Mutex
	var seen []seenRequest
	sidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		e.s.Handler().ServeHTTP(rec, r)
		mu.Lock()
		seen = append(seen, seenRequest{r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Origin"), rec.status})
		mu.Unlock()
	}))
	defer sidecar.Close()

	body, _ := json.Marshal(map[string]any{"reservation_id": e.resID, "owner": "web-page", "mode": "token", "timeout": 0, "ttl": "1h"})
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		// JSON-encoded JavaScript string literals (json.Marshal escapes <, > and &).
		url, _ := json.Marshal(sidecar.URL)
		js, _ := json.Marshal(string(body))
		fmt.Fprintf(w, attackPage, url, js)
	}))
	defer page.Close()
	if sidecar.URL == page.URL {
		t.Fatal("the page must come from another origin")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromiumPath, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--user-data-dir="+testenv.TempDir(t), "--virtual-time-budget=10000", "--dump-dom", page.URL+"/")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	m := regexp.MustCompile(`(?s)<pre id="result">(.*?)</pre>`).FindSubmatch(out)
	if m == nil || !strings.Contains(string(m[1]), "done") {
		t.Fatalf("the page did not finish (%s):\n%s\nstderr:\n%s", time.Since(start), out, stderr.String())
	}
	t.Logf("chromium took %s; the page saw: %s", time.Since(start).Round(time.Millisecond), html.UnescapeString(string(m[1])))

	// Nothing was taken: not in CloudShell, not in the sidecar.
	if got := e.lockOwner("MUTEX"); got != "" {
		t.Errorf("a web page took the lock: held by %q", got)
	}
	if l := e.locks(); len(l.Held) != 0 {
		t.Errorf("the sidecar holds %+v for a web page", l.Held)
	}

	// And the browser did send its requests: they were refused, not lost on the way.
	mu.Lock()
	defer mu.Unlock()
	var simple, preflight int
	for _, r := range seen {
		t.Logf("sidecar saw %s %s Content-Type=%q Origin=%q -> %d", r.method, r.path, r.contentType, r.origin, r.status)
		if r.path == "/v1/acquire" && r.status == http.StatusOK {
			t.Errorf("%s /v1/acquire from the page was answered 200", r.method)
		}
		switch {
		case r.method == http.MethodPost && strings.HasPrefix(r.contentType, "text/plain"):
			simple++
			if r.status != http.StatusForbidden || r.origin != page.URL {
				t.Errorf("simple POST with Origin %q: status %d, want 403", r.origin, r.status)
			}
		case r.method == http.MethodPost:
			t.Errorf("the browser sent a %q POST: its preflight must have been refused", r.contentType)
		case r.method == http.MethodOptions:
			preflight++
			if r.status == http.StatusOK || r.status == http.StatusNoContent {
				t.Errorf("preflight answered %d", r.status)
			}
		}
	}
	if simple < 2 || preflight < 1 {
		t.Errorf("the sidecar saw %d simple POSTs and %d preflights; want 2 and 1", simple, preflight)
	}

	// Control: the very same body, sent by a program, does take the lock, so the page's
	// attempts failed for being from a web page, not for a bad body.
	if code, out := e.post("/v1/acquire", string(body)); code != http.StatusOK || e.lockOwner("MUTEX") != "web-page" {
		t.Errorf("the page's body sent by a program: %d %v", code, out)
	}
}

// attackPage tries three ways to acquire and writes what it saw into <pre id="result">.
// %[1]s is the sidecar's URL, %[2]s the JSON body, both as JavaScript string literals.
const attackPage = `<!doctype html>
<html><head><title>not the sidecar</title></head><body>
<pre id="result">running</pre>
<script>
const sidecar = %[1]s;
const body = %[2]s;
const out = [];
async function attempt(name, init) {
  try {
    const r = await fetch(sidecar + "/v1/acquire", init);
    let text = "";
    try { text = await r.text(); } catch (e) {}
    out.push(name + ": " + r.type + " " + r.status + " " + text.slice(0, 120));
  } catch (e) {
    out.push(name + ": refused (" + e.name + ")");
  }
}
(async () => {
  await attempt("simple text/plain", {method: "POST", headers: {"Content-Type": "text/plain"}, body: body});
  await attempt("no-cors text/plain", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: body});
  await attempt("json (preflighted)", {method: "POST", headers: {"Content-Type": "application/json"}, body: body});
  out.push("done");
  document.getElementById("result").textContent = out.join("\n");
})();
</script>
</body></html>
`
