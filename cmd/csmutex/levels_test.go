package main

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// The level flags are checked against the enclosing runs' variables before anything else
// happens: every refusal is a usage error that says what to change.
func TestLevelSpec(t *testing.T) {
	const lv = "reservation,device,port"
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want levelSpec // when err is ""
		err  string
	}{
		{name: "no levels", want: levelSpec{}},
		{name: "outermost", args: []string{"--levels", lv, "--at-level", "device"},
			want: levelSpec{order: []string{"reservation", "device", "port"}, at: "device"}},
		{name: "finer, inherited", args: []string{"--at-level", "port"}, env: map[string]string{levelsEnv: lv, levelEnv: "device"},
			want: levelSpec{order: []string{"reservation", "device", "port"}, at: "port"}},
		{name: "finer, declared alike", args: []string{"--levels", lv, "--at-level", "port"}, env: map[string]string{levelsEnv: lv, levelEnv: "reservation"},
			want: levelSpec{order: []string{"reservation", "device", "port"}, at: "port"}},
		{name: "unlevelled inside", env: map[string]string{levelsEnv: lv, levelEnv: "port"}, want: levelSpec{}},
		{name: "same level", args: []string{"--at-level", "device"}, env: map[string]string{levelsEnv: lv, levelEnv: "device"},
			err: `cannot take lock "MUTEX" at level "device" inside a csmutex run that holds level "device" (CSMUTEX_LEVEL): levels are taken coarse to fine (reservation,device,port), each at most once in a chain of nested runs; only port may be taken here`},
		{name: "coarser level", args: []string{"--at-level", "reservation"}, env: map[string]string{levelsEnv: lv, levelEnv: "port"},
			err: `at level "reservation" inside a csmutex run that holds level "port" (CSMUTEX_LEVEL): levels are taken coarse to fine (reservation,device,port), each at most once in a chain of nested runs; "port" is the finest`},
		{name: "other declaration", args: []string{"--levels", "device,port", "--at-level", "port"}, env: map[string]string{levelsEnv: lv, levelEnv: "device"},
			err: "--levels device,port differs from the levels of the csmutex run this one runs under (CSMUTEX_LEVELS=reservation,device,port)"},
		{name: "levels alone", args: []string{"--levels", lv}, err: "--levels needs --at-level LEVEL"},
		{name: "at-level alone", args: []string{"--at-level", "port"}, err: "--at-level needs --levels"},
		{name: "undeclared level", args: []string{"--levels", lv, "--at-level", "slot"}, err: `--at-level "slot" is not a declared level (levels: reservation,device,port)`},
		{name: "level twice", args: []string{"--levels", "a,b,a", "--at-level", "a"}, err: `--levels: level "a" is declared twice`},
		{name: "empty level", args: []string{"--levels", "a,,b", "--at-level", "a"}, err: `--levels: level 2 ("") must be 1 to 64 characters`},
		{name: "spaced level", args: []string{"--levels", "a,b c", "--at-level", "a"}, err: "without spaces or commas"},
		{name: "too many", args: []string{"--levels", strings.Repeat("x,", 16) + "y", "--at-level", "y"}, err: "--levels declares 17 levels: want 1 to 16"},
		{name: "bad inherited held", args: []string{"--at-level", "port"}, env: map[string]string{levelsEnv: lv, levelEnv: "rack"},
			err: `$CSMUTEX_LEVEL "rack" is not one of $CSMUTEX_LEVELS (reservation,device,port)`},
		{name: "bad inherited levels", args: []string{"--at-level", "port"}, env: map[string]string{levelsEnv: "port,,x"}, err: "$CSMUTEX_LEVELS: level 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
			fs.SetOutput(io.Discard)
			l := addLevelFlags(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			got, err := l.spec(func(k string) string { return c.env[k] }, `lock "MUTEX"`)
			var ue *usageError
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.err == "" && (!slices.Equal(got.order, c.want.order) || got.at != c.want.at):
				t.Fatalf("spec %+v, want %+v", got, c.want)
			case c.err != "" && (err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want a usage error containing %q", err, c.err)
			}
		})
	}
}

// A levelled run's command sees one value of each level variable, the run's own, and an
// unlevelled run passes on what it inherited.
func TestLevelEnv(t *testing.T) {
	environ := []string{"PATH=/bin", levelsEnv + "=a,b,c", levelEnv + "=a", "CSMUTEX_LEVELSX=1"}
	s := levelSpec{order: []string{"a", "b", "c"}, at: "b"}
	got := commandEnv(environ, s.env()...)
	want := []string{"PATH=/bin", "CSMUTEX_LEVELSX=1", levelsEnv + "=a,b,c", levelEnv + "=b"}
	if !slices.Equal(got, want) {
		t.Errorf("levelled: %v, want %v", got, want)
	}
	if got := commandEnv(environ, levelSpec{}.env()...); !slices.Equal(got, environ) {
		t.Errorf("unlevelled: %v, want %v unchanged", got, environ)
	}
	if environ[1] != levelsEnv+"=a,b,c" {
		t.Errorf("environ modified in place: %v", environ)
	}
}

// Every variable a run tells its command about its lock is one a nested run drops from what
// it inherited (heldEnv): otherwise a nested run's command could read the outer run's slot
// or pool as its own.
func TestHeldEnvCoversEveryShape(t *testing.T) {
	for _, kind := range []string{shapeExclusive, shapeShared, shapeSemaphore, shapeSet, shapePool} {
		info := heldInfo{spec: shapeSpec{kind: kind, names: []string{"A", "B"}, slots: 2, readers: 2}, members: []string{"A"}}
		for _, kv := range info.env("R") {
			if !hasEnvKey(kv, heldEnv) {
				t.Errorf("shape %s sets %s, which heldEnv does not list", kind, kv)
			}
		}
	}
}
