package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/csmutex/csmutex/internal/testenv"
)

const systemdUnit = "../../contrib/systemd/csmutex-sidecar.service"

// unitFile is a systemd unit, minimally parsed: section -> key -> values in order.
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if _, dup := u[section]; dup {
				t.Errorf("%s:%d: section [%s] twice", path, n, section)
			}
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, "\\") {
				t.Fatalf("%s:%d: not a key=value line in a section (continuations unsupported): %q", path, n, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Errorf("[%s] %s: %q, want exactly one value", section, key, v)
		return ""
	}
	return v[0]
}

// TestSystemdUnit checks contrib/systemd/csmutex-sidecar.service: it runs `csmutex serve`
// with flags serve accepts, on loopback, as its own user, credentials from a root-only
// environment file, restarted on failure, hardened; and `systemd-analyze verify` accepts
// it when systemd is installed.
func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, systemdUnit)
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Errorf("no [%s] section", s)
		}
	}

	argv := strings.Fields(u.one(t, "Service", "ExecStart"))
	// The unit's paths are Linux paths whatever OS runs the test: path, not filepath.
	if len(argv) < 2 || !path.IsAbs(argv[0]) || path.Base(argv[0]) != "csmutex" || argv[1] != "serve" {
		t.Fatalf("ExecStart %q: want /abs/path/csmutex serve ...", argv)
	}
	flags := argv[2:]
	listen := ""
	for _, f := range flags {
		// --name=value only: a separate value could be mistaken for a positional
		// argument below, and serve would then start instead of printing help.
		if !strings.HasPrefix(f, "--") || strings.ContainsAny(f, `"'$%\`) {
			t.Fatalf("ExecStart argument %q: write flags as --name=value, with no quoting or specifiers", f)
		}
		name, value, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		switch name {
		case "password", "token", "user":
			t.Errorf("ExecStart passes --%s: command lines are world-readable; use the EnvironmentFile", name)
		case "allow-remote":
			t.Error("ExecStart allows remote clients: the sidecar API has no authentication")
		case "listen":
			listen = value
		}
	}
	if listen == "" {
		t.Error("ExecStart does not pin --listen")
	} else if host, _, err := net.SplitHostPort(listen); err != nil || !net.ParseIP(host).IsLoopback() {
		t.Errorf("--listen=%s is not a loopback address", listen)
	}
	// Every flag exists and every value parses: serve parses them all before --help.
	code, stdout, stderr := runMain(t, append(append([]string{"serve"}, flags...), "--help")...)
	if code != exitOK || !strings.Contains(stdout, "usage: csmutex serve") {
		t.Errorf("csmutex serve %s --help: exit %d, stderr %q", strings.Join(flags, " "), code, stderr)
	}

	svc := u["Service"]
	envFile := u.one(t, "Service", "EnvironmentFile")
	if !strings.HasPrefix(envFile, "/etc/") {
		t.Errorf("EnvironmentFile=%s: want a file under /etc (required, not -optional)", envFile)
	}
	if user := u.one(t, "Service", "User"); user == "" || user == "root" || user == "0" {
		t.Errorf("User=%q: want a dedicated unprivileged user", user)
	}
	for k, want := range map[string]string{
		"Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
		"ProtectHome": "yes", "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	} {
		if got := svc[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	// Restart on what may pass, never on what cannot: a wrong password retried every few
	// seconds forever only hammers CloudShell (and may lock the account).
	prevent := map[string]bool{}
	for _, v := range svc["RestartPreventExitStatus"] {
		for _, code := range strings.Fields(v) {
			prevent[code] = true
		}
	}
	for code, why := range map[int]string{exitUsage: "usage error", exitDataErr: "bad input or setup", exitNoPerm: "credentials refused"} {
		if !prevent[strconv.Itoa(code)] {
			t.Errorf("RestartPreventExitStatus=%q lacks %d (%s does not heal by itself)", svc["RestartPreventExitStatus"], code, why)
		}
	}
	if prevent[strconv.Itoa(exitUnavailable)] {
		t.Errorf("RestartPreventExitStatus=%q includes %d: an unreachable CloudShell may come back", svc["RestartPreventExitStatus"], exitUnavailable)
	}
	if u.one(t, "Install", "WantedBy") != "multi-user.target" {
		t.Error("WantedBy is not multi-user.target")
	}

	// The example environment file sets only variables csmutex reads.
	b, err := os.ReadFile(filepath.Join(filepath.Dir(systemdUnit), "csmutex-sidecar.env.example"))
	if err != nil {
		t.Fatal(err)
	}
	_, help, _ := runMain(t, "serve", "--help")
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "#")
		k, _, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(k, " \t") {
			continue
		}
		if !strings.Contains(help, "[$"+k+"]") {
			t.Errorf("env example sets %s, which csmutex serve does not read", k)
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil || runtime.GOOS != "linux" {
		t.Log("systemd-analyze not installed: skipping systemd-analyze verify")
		return
	}
	// verify insists that ExecStart's program exists: point it at an executable we have.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(systemdUnit)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(testenv.TempDir(t), filepath.Base(systemdUnit))
	if err := os.WriteFile(tmp, []byte(strings.Replace(string(unit), "ExecStart="+argv[0]+" ", "ExecStart="+exe+" ", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", tmp).CombinedOutput()
	if err != nil || strings.Contains(string(out), filepath.Base(tmp)) {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
