package main

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/csmutex/csmutex/locks"
)

// Shape flags parse into the shape they name; the default stays the exclusive lock.
func TestRunShapeFlags(t *testing.T) {
	clearEnv(t)
	port, _ := countingListener(t)
	cases := []struct {
		args []string
		want shapeSpec
	}{
		{nil, shapeSpec{kind: shapeExclusive, names: []string{"MUTEX"}, readers: 16}},
		{[]string{"--name", "TOPO", "--readers", "4"}, shapeSpec{kind: shapeExclusive, names: []string{"TOPO"}, readers: 4}},
		{[]string{"-s"}, shapeSpec{kind: shapeShared, names: []string{"MUTEX"}, readers: 16}},
		{[]string{"-sn", "--name=TOPO"}, shapeSpec{kind: shapeShared, names: []string{"TOPO"}, readers: 16}},
		{[]string{"--shared", "--readers=3"}, shapeSpec{kind: shapeShared, names: []string{"MUTEX"}, readers: 3}},
		{[]string{"--slots", "3", "--name", "SW"}, shapeSpec{kind: shapeSemaphore, names: []string{"SW"}, slots: 3}},
		{[]string{"--name", "B", "--name", "A", "--name", "B"}, shapeSpec{kind: shapeSet, names: []string{"A", "B"}}},
		{[]string{"--name", "A", "--name", "A"}, shapeSpec{kind: shapeExclusive, names: []string{"A"}, readers: 16}},
		{[]string{"--pool", "P1,P2", "--pool", "P3", "--count", "2"}, shapeSpec{kind: shapePool, names: []string{"P1", "P2", "P3"}, count: 2}},
		{[]string{"--pool", "P1,P2"}, shapeSpec{kind: shapePool, names: []string{"P1", "P2"}, count: 1}},
		// Names no shape may have are the plain lock: nothing changes for them.
		{[]string{"--name", "X.slot.1"}, shapeSpec{kind: shapeExclusive, names: []string{"X.slot.1"}, readers: 16, plain: true}},
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		o, code := parseRun(append(append(baseArgs(port), "-r", "R"), append(c.args, "--", "x")...), io.Discard, &stderr)
		if o == nil {
			t.Errorf("%v: exit %d: %s", c.args, code, stderr.String())
			continue
		}
		if !reflect.DeepEqual(o.shape, c.want) {
			t.Errorf("%v: shape %+v, want %+v", c.args, o.shape, c.want)
		}
	}
}

// Every conflicting or bad shape flag is a usage error (64) naming what is wrong, before
// anything is contacted.
func TestRunShapeUsageErrors(t *testing.T) {
	clearEnv(t)
	port, contacted := countingListener(t)
	cases := map[string]struct {
		args []string
		want string
	}{
		"shared and slots":       {[]string{"-s", "--slots", "2"}, "-s/--shared and --slots are mutually exclusive"},
		"shared and pool":        {[]string{"--shared", "--pool", "A,B"}, "-s/--shared and --pool are mutually exclusive"},
		"slots and pool":         {[]string{"--slots", "2", "--pool", "A,B"}, "--slots and --pool are mutually exclusive"},
		"pool and name":          {[]string{"--name", "X", "--pool", "A,B"}, "--pool and --name are mutually exclusive"},
		"count without pool":     {[]string{"--count", "2"}, "--count needs --pool"},
		"shared set":             {[]string{"-s", "--name", "A", "--name", "B"}, "-s/--shared and a repeated --name"},
		"semaphore set":          {[]string{"--slots", "2", "--name", "A", "--name", "B"}, "--slots and a repeated --name"},
		"readers with slots":     {[]string{"--readers", "2", "--slots", "2"}, "--readers applies to one --name"},
		"readers with set":       {[]string{"--readers", "2", "--name", "A", "--name", "B"}, "--readers applies to one --name"},
		"readers zero":           {[]string{"-s", "--readers", "0"}, "--readers must be 1 to 9999"},
		"slots zero":             {[]string{"--slots", "0"}, "--slots must be 1 to 9999, not 0"},
		"slots too many":         {[]string{"--slots", "10000"}, "--slots must be 1 to 9999"},
		"slots not a number":     {[]string{"--slots", "three"}, "--slots"},
		"count too many":         {[]string{"--pool", "A,B", "--count", "3"}, "--count must be 1 to 2 (the --pool members), not 3"},
		"count zero":             {[]string{"--pool", "A,B", "--count", "0"}, "--count must be 1 to 2"},
		"pool duplicate":         {[]string{"--pool", "A,B,A"}, `member "A" is listed twice`},
		"pool empty member":      {[]string{"--pool", "A,,B"}, "--pool: empty member"},
		"pool bad member":        {[]string{"--pool", "A,B<c>"}, "--pool:"},
		"set bad name":           {[]string{"--name", "A", "--name", "B<c>"}, "--name:"},
		"semaphore derived name": {[]string{"--slots", "2", "--name", "X.slot.1"}, "--name (a semaphore):"},
		"shared derived name":    {[]string{"-s", "--name", "X.read.1"}, "--name (shared):"},
	}
	for name, c := range cases {
		var stderr bytes.Buffer
		args := append(append(baseArgs(port), "-r", "R"), append(c.args, "--", "true")...)
		code := Main(t.Context(), append([]string{"run"}, args...), nil, io.Discard, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%s: exit %d, want 64 with %q:\n%s", name, code, c.want, stderr.String())
		}
	}
	if n := contacted(); n != 0 {
		t.Errorf("usage errors contacted the server %d times", n)
	}
}

// run --help documents every shape flag and variable.
func TestRunHelpShapes(t *testing.T) {
	_, stdout, _ := runMain(t, "run", "--help")
	for _, want := range []string{"-s, --shared", "--slots N", "--readers N", "--pool MEMBER,MEMBER,...", "--count K",
		"CSMUTEX_SHAPE", "CSMUTEX_SLOT", "CSMUTEX_NAMES", "CSMUTEX_MEMBERS"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("run --help lacks %q", want)
		}
	}
}

// A shape that was busy names its holders as the exclusive lock does (mutex's reading of the
// owner record), not as raw records.
func TestBusyTextNamesHolders(t *testing.T) {
	err := fmt.Errorf("taking it: %w", &locks.BusyError{Shape: "semaphore", Name: "SW", Holders: []string{
		"csmutex/1 owner=build%20x host=h1 pid=42 token=abc123", "Thread-7"}})
	got := busyText(err)
	want := `held by build x (token abc123), legacy holder "Thread-7"`
	if got != want {
		t.Errorf("busyText = %q, want %q", got, want)
	}
	if busyText(&locks.BusyError{Shape: "pool", Name: "P"}) != "busy" || busyText(io.EOF) != "" {
		t.Error("busyText without holders, or of another error")
	}
}
