package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// The build's identity, stamped at link time by the release build (go run ./internal/release):
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=0123abc..." ./cmd/csmutex
//
// Left empty, they are filled from the build info (see buildIdentity).
var (
	version = ""
	commit  = ""
)

// identity is what `csmutex version` prints.
type identity struct {
	Version, Commit, Go, OS, Arch string
}

// buildIdentity resolves the identity of this binary: the stamped values first; else the
// module version from the build info (set by `go install module@v1.2.3`, or a VCS
// pseudo-version) and its vcs.revision (with "-dirty" when the tree was modified); else
// "dev" and "unknown".
func buildIdentity() identity {
	bi, _ := debug.ReadBuildInfo()
	return resolveIdentity(version, commit, bi)
}

func resolveIdentity(stampedVersion, stampedCommit string, bi *debug.BuildInfo) identity {
	id := identity{Version: stampedVersion, Commit: stampedCommit, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if id.Version == "" && bi != nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		id.Version = bi.Main.Version
	}
	if id.Commit == "" && bi != nil {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" && modified == "true" {
			rev += "-dirty"
		}
		id.Commit = rev
	}
	if id.Version == "" {
		id.Version = "dev"
	}
	if id.Commit == "" {
		id.Commit = "unknown"
	}
	return id
}

func (id identity) String() string {
	return fmt.Sprintf("csmutex %s\ncommit:  %s\ngo:      %s\nos/arch: %s/%s\n", id.Version, id.Commit, id.Go, id.OS, id.Arch)
}

const versionSynopsis = "csmutex version"

// versionCmd is `csmutex version` (also --version): it prints the version, the commit,
// the Go version and the platform on stdout.
func versionCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version")
	help := func(w io.Writer) {
		fmt.Fprintf(w, "usage: %s\n\nPrint the version, the commit it was built from, the Go version and os/arch.\nRelease builds stamp version and commit; other builds say \"dev\" and the commit from\nthe build's VCS information, or \"unknown\".\n", versionSynopsis)
	}
	if done, code := parseFlags(fs, args, stdout, stderr, help, versionSynopsis); done {
		return code
	}
	if fs.NArg() > 0 {
		return usageFail(stderr, "version", fmt.Errorf("unexpected argument %q", fs.Arg(0)), versionSynopsis)
	}
	fmt.Fprint(stdout, buildIdentity())
	return exitOK
}
