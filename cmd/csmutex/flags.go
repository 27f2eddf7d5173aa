package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/csmutex/csmutex/internal/duration"
	"github.com/spf13/pflag"
)

// Flags follow the GNU conventions flock(1) and consul users type: combined short flags
// (-qn), attached values (-w5m, -w 5m, --timeout=5m), options anywhere before "--" (run:
// before the command word). Two spellings of the standard library's flag package, which
// csmutex used before, keep working so that no existing script breaks: a single dash before
// a long name (-timeout 30) and a double dash before a short one (--w=30).

// newFlagSet returns a flag set that reports errors to its caller instead of printing or
// exiting: each command prints one line and its own usage.
func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	return fs
}

// parseFlags parses args. It returns done=true with the exit code when the command must
// stop: 0 after printing help to stdout, 64 after printing the error and synopsis.
func parseFlags(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer, help func(io.Writer), synopsis string) (done bool, code int) {
	addShortAliases(fs)
	err := fs.Parse(legacySpellings(fs, args))
	switch {
	case err == nil:
		return false, 0
	case errors.Is(err, pflag.ErrHelp):
		help(stdout)
		return true, exitOK
	default:
		return true, usageFail(stderr, fs.Name(), flagError(err), synopsis)
	}
}

// flagError is err without the argument pflag quotes in some messages: "-Psecret", a
// mistyped password flag, must not be echoed.
func flagError(err error) error {
	var ne *pflag.NotExistError
	var se *pflag.InvalidSyntaxError
	switch {
	case errors.As(err, &ne) && ne.GetSpecifiedShortnames() != "":
		return fmt.Errorf("unknown shorthand flag: %q", ne.GetSpecifiedName()[:1])
	case errors.As(err, &ne):
		name, _, _ := strings.Cut(ne.GetSpecifiedName(), "=")
		return fmt.Errorf("unknown flag: --%s", name)
	case errors.As(err, &se):
		name, _, _ := strings.Cut(se.GetSpecifiedFlag(), "=")
		return fmt.Errorf("bad flag syntax: %s", name)
	}
	return err
}

// usageFail prints a one-line reason and the synopsis, and returns exitUsage.
func usageFail(stderr io.Writer, cmd string, err error, synopsis string) int {
	fmt.Fprintf(stderr, "csmutex %s: %v\n", cmd, err)
	fmt.Fprintf(stderr, "usage: %s\nrun 'csmutex %s --help' for the flags.\n", synopsis, cmd)
	return exitUsage
}

// addShortAliases registers "--r" for every flag with shorthand "r", hidden: the flag
// package accepted any name after one or two dashes, and scripts wrote --w=30.
func addShortAliases(fs *pflag.FlagSet) {
	var add []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Shorthand != "" && fs.Lookup(f.Shorthand) == nil {
			add = append(add, f)
		}
	})
	for _, f := range add {
		a := fs.VarPF(f.Value, f.Shorthand, "", f.Usage)
		a.NoOptDefVal = f.NoOptDefVal
		a.Hidden = true
	}
}

// legacySpellings rewrites "-name" and "-name=value", where name is a long flag of fs, to
// "--name...": the flag package's spelling, which pflag would read as the short flags
// n, a, m, e. It follows the command line as pflag will, so that a flag's value ("-o
// -name") is never rewritten, and stops where flags stop ("--", or the first word when
// fs is not interspersed).
func legacySpellings(fs *pflag.FlagSet, args []string) []string {
	out := append([]string(nil), args...)
	takesValue := func(f *pflag.Flag) bool { return f != nil && f.NoOptDefVal == "" }
	for i := 0; i < len(out); i++ {
		a := out[i]
		switch {
		case a == "--":
			return out
		case len(a) < 2 || a[0] != '-':
			if _, words := commandWordSets.Load(fs); words {
				return out
			}
			continue
		}
		if strings.HasPrefix(a, "--") {
			name, _, hasVal := strings.Cut(a[2:], "=")
			if !hasVal && takesValue(fs.Lookup(name)) {
				i++
			}
			continue
		}
		name, _, hasVal := strings.Cut(a[1:], "=")
		if len(name) > 1 && fs.Lookup(name) != nil {
			out[i] = "-" + a
			if !hasVal && takesValue(fs.Lookup(name)) {
				i++
			}
			continue
		}
		// Short flags: the first one that takes a value ends the group; without an attached
		// value, the next argument is its value.
		for j := 1; j < len(a); j++ {
			if a[j] == '=' {
				break
			}
			if f := fs.ShorthandLookup(a[j : j+1]); takesValue(f) {
				if j == len(a)-1 {
					i++
				}
				break
			}
		}
	}
	return out
}

// commandWordSets holds the flag sets of commands whose first non-flag argument starts a
// command line of its own (run): pflag cannot be asked whether a set is interspersed.
var commandWordSets sync.Map

// stopAtCommandWord makes fs stop parsing at its first non-flag argument, which with all
// that follows belongs to a command: "csmutex run -r R sh -c 'x -n'" must not read -n.
func stopAtCommandWord(fs *pflag.FlagSet) {
	fs.SetInterspersed(false)
	commandWordSets.Store(fs, true)
}

// given reports whether the flag name, or another flag sharing its variable (its hidden
// short alias), was set on the command line.
func given(fs *pflag.FlagSet, name string) bool {
	target := fs.Lookup(name)
	found := false
	fs.Visit(func(f *pflag.Flag) { found = found || (target != nil && f.Value == target.Value) })
	return found
}

// printFlags prints fs's flags, "-w, --timeout DURATION", in two groups: the command's own
// flags, then the connection and logging flags every command shares. Hidden flags are
// skipped. Defaults are shown from the flag definitions only, never from the environment,
// so no secret can appear.
func printFlags(w io.Writer, fs *pflag.FlagSet) {
	var flags []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			flags = append(flags, f)
		}
	})
	sort.SliceStable(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })

	line := func(f *pflag.Flag) {
		var b strings.Builder
		b.WriteString("  ")
		if f.Shorthand != "" {
			b.WriteString("-" + f.Shorthand + ", ")
		}
		b.WriteString("--" + f.Name)
		arg, usage := pflag.UnquoteUsage(f)
		switch {
		case arg != "" && f.NoOptDefVal != "":
			b.WriteString("[=" + arg + "]")
		case arg != "":
			b.WriteString(" " + arg)
		}
		if b.Len() < 30 {
			b.WriteString(strings.Repeat(" ", 30-b.Len()))
		} else {
			b.WriteString("\n" + strings.Repeat(" ", 30))
		}
		b.WriteString(strings.ReplaceAll(usage, "\n", "\n"+strings.Repeat(" ", 30)))
		if d := f.DefValue; d != "" && d != "0" && d != "false" && d != "0s" && d != "[]" && !strings.Contains(usage, "(default") {
			fmt.Fprintf(&b, " (default %s)", d)
		}
		fmt.Fprintln(w, b.String())
	}
	var own, shared []*pflag.Flag
	for _, f := range flags {
		if sharedFlags[f.Name] {
			shared = append(shared, f)
		} else {
			own = append(own, f)
		}
	}
	if len(own) > 0 {
		fmt.Fprintln(w, "Flags:")
		for _, f := range own {
			line(f)
		}
		fmt.Fprintln(w)
	}
	if len(shared) > 0 {
		fmt.Fprintln(w, "Connection and logging flags:")
		for _, f := range shared {
			line(f)
		}
		fmt.Fprintln(w)
	}
}

// sharedFlags are the flags of conn.go and logFlags, listed apart in help.
var sharedFlags = map[string]bool{
	"host": true, "port": true, "scheme": true, "user": true, "password": true,
	"domain": true, "token": true, "insecure-skip-verify": true, "reservation": true,
	"quiet": true, "verbose": true, "log-format": true,
}

// durationValue is a pflag.Value for a non-negative duration given either as a Go
// duration ("90s", "1m30s") or as plain seconds like flock -w ("30", "1.5").
type durationValue time.Duration

func newDurationValue(p *time.Duration, def time.Duration) *durationValue {
	*p = def
	return (*durationValue)(p)
}

func (d *durationValue) String() string {
	if d == nil {
		return "0s"
	}
	return time.Duration(*d).String()
}

func (d *durationValue) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}

// Type names the value in help when the usage names none.
func (d *durationValue) Type() string { return "DURATION" }

// parseDuration accepts a Go duration or a plain number of seconds (internal/duration, as
// the sidecar does); negative values are refused.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	d, err := duration.Parse(s)
	switch {
	case duration.IsSeconds(s) && (err != nil || d < 0):
		return 0, fmt.Errorf("%q is not a valid number of seconds", s)
	case err != nil:
		return 0, fmt.Errorf("%q is not a duration (want e.g. 30, 90s, 5m or 1h30m)", s)
	case d < 0:
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}
