package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPortTaken: a taken port is "service unavailable", 69, as for csmutex serve.
func TestPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code := run(ctx, []string{"-listen", ln.Addr().String(), "-reservations", "1"}, &stdout, &stderr); code != exitUnavailable {
		t.Fatalf("exit %d, want %d; stderr %s", code, exitUnavailable, stderr.String())
	}
	if !strings.Contains(stderr.String(), "mockapi: cannot listen: ") || !strings.Contains(stderr.String(), ln.Addr().String()) {
		t.Errorf("stderr %q", stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q: nothing may be announced when it cannot listen", stdout.String())
	}
}

// TestPortTakenProcess checks the code the process itself exits with.
func TestPortTakenProcess(t *testing.T) {
	if addr := os.Getenv("MOCKAPI_CHILD_LISTEN"); addr != "" {
		os.Args = []string{"mockapi", "-listen", addr}
		main()
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPortTakenProcess$")
	cmd.Env = append(os.Environ(), "MOCKAPI_CHILD_LISTEN="+ln.Addr().String())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUnavailable {
		t.Fatalf("child: %v, want exit %d; output:\n%s", err, exitUnavailable, out)
	}
}

func TestExitCodesMatchCsmutex(t *testing.T) {
	// cmd/csmutex/exitcode.go is package main of another command: compare the source.
	src, err := os.ReadFile("../csmutex/exitcode.go")
	if err != nil {
		t.Skip(err)
	}
	for name, code := range map[string]int{"exitUsage": exitUsage, "exitUnavailable": exitUnavailable} {
		re := regexp.MustCompile(`(?m)^\s*` + name + `\s*=\s*(\d+)`)
		m := re.FindSubmatch(src)
		if m == nil || string(m[1]) != strconv.Itoa(code) {
			t.Errorf("%s = %d here, csmutex has %q", name, code, m)
		}
	}
}

// adminRoutes returns the routes mockapi/admin.go registers, e.g. "PUT /admin/faults".
func adminRoutes(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("../../mockapi/admin.go")
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, m := range regexp.MustCompile(`HandleFunc\("([A-Z]+) (/admin/[^"]*)"`).FindAllSubmatch(src, -1) {
		routes = append(routes, string(m[1])+" "+string(m[2]))
	}
	if len(routes) < 5 {
		t.Fatalf("found only %v in mockapi/admin.go", routes)
	}
	return routes
}

// normalize squeezes runs of spaces so "GET    /admin/faults" matches "GET /admin/faults".
func normalize(s string) string { return strings.Join(strings.Fields(s), " ") }

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{arg}, &stdout, &stderr); code != exitOK {
			t.Fatalf("%s: exit %d", arg, code)
		}
		if stderr.Len() != 0 {
			t.Errorf("%s: stderr %q; help goes to stdout", arg, stderr.String())
		}
		help := normalize(stdout.String())
		want := []string{"usage: mockapi", "-listen", "-fault", "-reservations", "-legacy-model", "-expire-tokens-after",
			"Admin API", "EndReservation", "Authorization: MachineName=shell;Token=$TOKEN", "has ended",
			"Exit codes", "64 usage error", "69 cannot listen", "70 "}
		want = append(want, adminRoutes(t)...)
		for _, w := range want {
			if !strings.Contains(help, w) {
				t.Errorf("%s: help lacks %q", arg, w)
			}
		}
	}
}

// TestReadmeDocumentsAdminAPI keeps the README's "The mock CloudShell" section in step
// with mockapi/admin.go.
func TestReadmeDocumentsAdminAPI(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "## The mock CloudShell")
	if start < 0 {
		t.Fatal(`README has no "## The mock CloudShell" section`)
	}
	section := readme[start+2:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	section = normalize(strings.ReplaceAll(section, "`", " "))
	for _, w := range append(adminRoutes(t), "EndReservation", "69") {
		if !strings.Contains(section, w) {
			t.Errorf("README's mock section lacks %q", w)
		}
	}
}

// TestEndReservationAsDocumented follows the help's recipe: Logon, then EndReservation
// with "MachineName=...;Token=..." in the Authorization header.
func TestEndReservationAsDocumented(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-reservations", "1", "-log-format", "json"}, pw, &stderr)
		pw.Close()
	}()
	base, ids := readBanner(t, pr)
	api := base + "/ResourceManagerApiService/"
	out := post(t, api+"Logon", "", "<Logon><username>admin</username><password>admin</password><domainName>Global</domainName></Logon>")
	m := regexp.MustCompile(`Token Token="([^"]*)"`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("logon: %s", out)
	}
	end := "<EndReservation><reservationId>" + ids[0] + "</reservationId></EndReservation>"
	if out := post(t, api+"EndReservation", "MachineName=shell;Token="+m[1], end); !strings.Contains(out, `Success="true"`) {
		t.Fatalf("EndReservation: %s", out)
	}
	if out := post(t, api+"EndReservation", "MachineName=shell;Token="+m[1], end); !strings.Contains(out, "has ended") {
		t.Errorf("second EndReservation: %s", out)
	}
	resp, err := http.Get(base + "/admin/reservations/" + ids[0])
	if err != nil {
		t.Fatal(err)
	}
	var snap struct {
		Status string
		Ended  bool
	}
	_ = json.NewDecoder(resp.Body).Decode(&snap)
	resp.Body.Close()
	if snap.Status != "Completed" || !snap.Ended {
		t.Errorf("after EndReservation: %+v", snap)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("exit %d; stderr %s", code, stderr.String())
	}
}
