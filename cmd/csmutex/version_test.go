package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	for _, arg := range []string{"version", "--version", "-version"} {
		code, stdout, stderr := runMain(t, arg)
		if code != exitOK || stderr != "" {
			t.Fatalf("%s: exit %d, stderr %q", arg, code, stderr)
		}
		id := buildIdentity()
		want := []string{
			"csmutex " + id.Version + "\n",
			"commit:  " + id.Commit + "\n",
			"go:      " + runtime.Version() + "\n",
			"os/arch: " + runtime.GOOS + "/" + runtime.GOARCH + "\n",
		}
		if got := strings.Join(want, ""); stdout != got {
			t.Errorf("%s printed\n%s\nwant\n%s", arg, stdout, got)
		}
	}
	if code, stdout, _ := runMain(t, "version", "--help"); code != exitOK || !strings.Contains(stdout, "usage: csmutex version") {
		t.Errorf("version --help: %d %q", code, stdout)
	}
	if code, stdout, _ := runMain(t, "help", "version"); code != exitOK || !strings.Contains(stdout, "usage: csmutex version") {
		t.Errorf("help version: %d %q", code, stdout)
	}
	if code, _, stderr := runMain(t, "version", "extra"); code != exitUsage || !strings.Contains(stderr, "unexpected argument") {
		t.Errorf("version extra: %d %q", code, stderr)
	}
	if code, _, _ := runMain(t, "version", "--bogus"); code != exitUsage {
		t.Errorf("version --bogus: %d", code)
	}
	if _, stdout, _ := runMain(t, "--help"); !strings.Contains(stdout, "csmutex version ") {
		t.Errorf("--help does not list version:\n%s", stdout)
	}
}

func TestResolveIdentity(t *testing.T) {
	vcs := func(rev, modified string) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Path: "github.com/csmutex/csmutex", Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}}
	}
	for _, tc := range []struct {
		name            string
		version, commit string
		bi              *debug.BuildInfo
		wantV, wantC    string
	}{
		{"no build info", "", "", nil, "dev", "unknown"},
		{"devel, no vcs", "", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev", "unknown"},
		{"empty main version", "", "", &debug.BuildInfo{}, "dev", "unknown"},
		{"vcs clean", "", "", vcs("0123abcd", "false"), "dev", "0123abcd"},
		{"vcs modified", "", "", vcs("0123abcd", "true"), "dev", "0123abcd-dirty"},
		{"go install @version", "", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, "v1.4.0", "unknown"},
		{"stamped wins", "v2.0.0", "feedface", vcs("0123abcd", "true"), "v2.0.0", "feedface"},
		{"stamped version only", "v2.0.0-3-gabc", "", vcs("0123abcd", "false"), "v2.0.0-3-gabc", "0123abcd"},
	} {
		id := resolveIdentity(tc.version, tc.commit, tc.bi)
		if id.Version != tc.wantV || id.Commit != tc.wantC {
			t.Errorf("%s: got %q %q, want %q %q", tc.name, id.Version, id.Commit, tc.wantV, tc.wantC)
		}
		if id.Go != runtime.Version() || id.OS != runtime.GOOS || id.Arch != runtime.GOARCH {
			t.Errorf("%s: platform %+v", tc.name, id)
		}
	}
}
