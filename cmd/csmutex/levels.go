package main

import (
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/spf13/pflag"
)

// Lock levels across nested runs. Go's locks.Levels checks the holds of one call chain (a
// context); a chain of `csmutex run` processes has no context in common, so a levelled run
// tells its command, and so any csmutex run the command starts, what it holds:
//
//	CSMUTEX_LEVELS  the declared levels, coarse to fine, comma-separated ("reservation,device,port")
//	CSMUTEX_LEVEL   the level held by the innermost levelled run ("device")
//
// A nested run that takes a level (--at-level) must take a finer one than CSMUTEX_LEVEL,
// and declare the same levels if it declares any. It checks this before logging on, as
// every usage error is: a nested run at the wrong level would wait for a lock its own
// ancestors may need to finish, which is the deadlock levels exist to rule out.
const (
	levelsEnv = "CSMUTEX_LEVELS"
	levelEnv  = "CSMUTEX_LEVEL"
)

// Bounds of a level declaration, as the sidecar's: levels are a handful of words.
const (
	maxLevels       = 16
	maxLevelNameLen = 64
)

// levelFlags are run's --levels and --at-level. Not --level: one letter from --levels, and
// a typo between them would declare a single level named after the one meant.
type levelFlags struct {
	fs     *pflag.FlagSet
	levels []string
	at     string
}

func addLevelFlags(fs *pflag.FlagSet) *levelFlags {
	l := &levelFlags{fs: fs}
	fs.StringSliceVar(&l.levels, "levels", nil,
		"declare lock levels `LEVEL,...`, coarse to fine, for --at-level\n(default: the enclosing csmutex run's, "+levelsEnv+")")
	fs.StringVar(&l.at, "at-level", "",
		"the `LEVEL` of this run's lock: a csmutex run inside COMMAND may\nthen take only finer levels ("+levelsEnv+", "+levelEnv+")")
	return l
}

// levelSpec is a checked level request. at is "" when the run takes no level: it is then
// not checked, and passes on the levels it runs under unchanged.
type levelSpec struct {
	order []string
	at    string
}

// spec checks the level flags against the environment the run was started in (getenv):
// the levels declared, and the level held, by the runs around it. what names the lock(s)
// to be taken, for the message.
func (l *levelFlags) spec(getenv func(string) string, what string) (levelSpec, error) {
	declared := given(l.fs, "levels")
	if !given(l.fs, "at-level") {
		if declared {
			return levelSpec{}, usageErrorf("--levels needs --at-level LEVEL: the level of this run's lock")
		}
		return levelSpec{}, nil
	}
	outer := getenv(levelsEnv)
	var order []string
	switch {
	case declared:
		if err := checkLevelNames("--levels", l.levels); err != nil {
			return levelSpec{}, err
		}
		order = l.levels
		if outer != "" && outer != strings.Join(order, ",") {
			return levelSpec{}, usageErrorf("--levels %s differs from the levels of the csmutex run this one runs under (%s=%s): every run of a nested chain must declare the same levels, or none",
				strings.Join(order, ","), levelsEnv, outer)
		}
	case outer != "":
		order = strings.Split(outer, ",")
		if err := checkLevelNames("$"+levelsEnv, order); err != nil {
			return levelSpec{}, err
		}
	default:
		return levelSpec{}, usageErrorf("--at-level needs --levels LEVEL,LEVEL,... (coarse to fine), or a csmutex run with --levels around this one")
	}
	at := l.at
	i := slices.Index(order, at)
	if i < 0 {
		return levelSpec{}, usageErrorf("--at-level %q is not a declared level (levels: %s)", l.at, strings.Join(order, ","))
	}
	if held := getenv(levelEnv); held != "" {
		j := slices.Index(order, held)
		switch {
		case j < 0:
			return levelSpec{}, usageErrorf("$%s %q is not one of $%s (%s): it was not set by csmutex run", levelEnv, held, levelsEnv, strings.Join(order, ","))
		case i <= j:
			return levelSpec{}, usageErrorf("cannot take %s at level %q inside a csmutex run that holds level %q (%s): levels are taken coarse to fine (%s), each at most once in a chain of nested runs; %s",
				what, at, held, levelEnv, strings.Join(order, ","), finerThan(order, j))
		}
	}
	return levelSpec{order: slices.Clone(order), at: at}, nil
}

// finerThan says which levels may still be taken under level j.
func finerThan(order []string, j int) string {
	if j == len(order)-1 {
		return fmt.Sprintf("%q is the finest: nothing more may be taken here", order[j])
	}
	return "only " + strings.Join(order[j+1:], ",") + " may be taken here"
}

// checkLevelNames checks a declaration: 1 to maxLevels distinct levels, each a word that
// fits in the comma-separated variable.
func checkLevelNames(what string, levels []string) error {
	if len(levels) == 0 || len(levels) > maxLevels {
		return usageErrorf("%s declares %d levels: want 1 to %d", what, len(levels), maxLevels)
	}
	for i, lv := range levels {
		if lv == "" || len(lv) > maxLevelNameLen || strings.ContainsFunc(lv, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == ',' }) {
			return usageErrorf("%s: level %d (%q) must be 1 to %d characters without spaces or commas", what, i+1, lv, maxLevelNameLen)
		}
		if slices.Index(levels, lv) < i {
			return usageErrorf("%s: level %q is declared twice", what, lv)
		}
	}
	return nil
}

// env is what the command learns of the levels: none when the run takes no level (what it
// inherited passes through), else the declaration and the level now held.
func (s levelSpec) env() []string {
	if s.at == "" {
		return nil
	}
	return []string{levelsEnv + "=" + strings.Join(s.order, ","), levelEnv + "=" + s.at}
}
