package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// readBanner reads stdout up to the "listening on" line.
func readBanner(t *testing.T, r io.Reader) (base string, ids []string) {
	t.Helper()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "reservation "); ok {
			ids = append(ids, id)
		}
		if u, ok := strings.CutPrefix(line, "listening on "); ok {
			// Keep draining so later writes never block.
			go func() { _, _ = io.Copy(io.Discard, r) }()
			return u, ids
		}
	}
	t.Fatalf("no listening line (scan err %v)", sc.Err())
	return "", nil
}

func post(t *testing.T, url, auth, body string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestRunServesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-reservations", "2", "-user", "svc", "-password", "pw",
			"-log-format", "json", "-cache-ttl", "0", "-resource", "SW-1=Switch/L2 Switch",
			"-fault", "GetServerDateAndTime:errorRate=1,errorMessage=from flag"}, pw, &stderr)
		pw.Close()
	}()
	base, ids := readBanner(t, pr)
	if !strings.HasPrefix(base, "http://127.0.0.1:") || len(ids) != 2 || len(ids[0]) != 36 {
		t.Fatalf("banner %q %q", base, ids)
	}

	api := base + "/ResourceManagerApiService/"
	out := post(t, api+"Logon", "", "<Logon><username>admin</username><password>admin</password><domainName>Global</domainName></Logon>")
	if !strings.Contains(out, `Success="false"`) {
		t.Errorf("default admin should be replaced by -user: %s", out)
	}
	out = post(t, api+"Logon", "", "<Logon><username>svc</username><password>pw</password><domainName>Global</domainName></Logon>")
	i := strings.Index(out, `Token Token="`)
	if i < 0 {
		t.Fatalf("logon: %s", out)
	}
	tok := out[i+len(`Token Token="`):]
	tok = tok[:strings.IndexByte(tok, '"')]
	auth := "MachineName=cmd-test:8029;Token=" + tok
	out = post(t, api+"AddResourcesToReservation", auth, "<AddResourcesToReservation><reservationId>"+ids[0]+"</reservationId><resourcesFullPath><string>SW-1</string></resourcesFullPath></AddResourcesToReservation>")
	if !strings.Contains(out, `Success="true"`) {
		t.Errorf("add resource: %s", out)
	}
	if out := post(t, api+"GetServerDateAndTime", auth, "<GetServerDateAndTime />"); !strings.Contains(out, "<Error>from flag</Error>") {
		t.Errorf("fault flag: %s", out)
	}
	resp, err := http.Get(base + "/admin/reservations/" + ids[1])
	if err != nil {
		t.Fatal(err)
	}
	var snap struct{ Owner, Name string }
	_ = json.NewDecoder(resp.Body).Decode(&snap)
	resp.Body.Close()
	if snap.Owner != "svc" || snap.Name != "mock-reservation-2" {
		t.Errorf("snapshot %+v", snap)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	logs := stderr.String()
	if !strings.Contains(logs, `"method":"AddResourcesToReservation"`) || strings.Contains(logs, tok) || strings.Contains(logs, `"pw"`) {
		t.Errorf("logs:\n%s", logs)
	}
}

func TestRunBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-nope"},
		{"-reservations", "x"},
		{"-fault", "NoColon"},
		{"-fault", "M:errorRate=2"},
		{"-fault", "M:bogus=1"},
		{"-fault", "M:latency=soon"},
		{"-resource", "SW-1"},
		{"-log-format", "xml"},
		{"extra-arg"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
		if !strings.Contains(stderr.String(), "usage: mockapi") && !strings.Contains(stderr.String(), "Usage") {
			t.Errorf("%v: no usage on stderr: %s", args, stderr.String())
		}
		if stdout.Len() != 0 {
			t.Errorf("%v: stdout %q", args, stdout.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &stdout, &stderr); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
}

func TestParseFault(t *testing.T) {
	m, f, err := parseFault("*:client=ci-1,count=3,errorRate=0.25,errorCode=7,errorMessage=boom,latency=5ms,latencyJitter=1ms,http500Rate=0.1,dropAfterCommitRate=0.2,failBeforeCommitRate=0.3")
	if err != nil || m != "*" || f.Client != "ci-1" || f.Count != 3 || f.ErrorRate != 0.25 || f.ErrorCode != 7 || f.ErrorMessage != "boom" ||
		f.Latency != 5*time.Millisecond || f.LatencyJitter != time.Millisecond || f.HTTP500Rate != 0.1 || f.DropAfterCommitRate != 0.2 || f.FailBeforeCommitRate != 0.3 {
		t.Fatalf("%q %+v %v", m, f, err)
	}
}

// TestSIGTERM runs the real main in a child process (this test binary re-executed) and
// checks that SIGTERM shuts it down cleanly.
func TestSIGTERM(t *testing.T) {
	if os.Getenv("MOCKAPI_CHILD") == "1" {
		os.Args = []string{"mockapi", "-listen", "127.0.0.1:0", "-reservations", "1"}
		main()
		return
	}
	if runtime.GOOS == "windows" {
		t.Skip("Windows has no SIGTERM to send a process (os.Process.Signal supports only Kill there)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGTERM$")
	cmd.Env = append(os.Environ(), "MOCKAPI_CHILD=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	base, ids := readBanner(t, stdout)
	if len(ids) != 1 {
		t.Fatalf("ids %v", ids)
	}
	if out := post(t, base+"/ResourceManagerApiService/GetServerDateAndTime", "", "<GetServerDateAndTime />"); out == "" {
		t.Fatal("no answer")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("child exited with %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("child did not exit on SIGTERM")
	}
	if !strings.Contains(stderr.String(), "shut down") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}
