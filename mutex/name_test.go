package mutex_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

func TestValidateName(t *testing.T) {
	for _, good := range []string{"MUTEX", "SWITCH-1 ports", "Schalter-Ä", "a.break", "break.", "x(1)[2]#3+4@5:6", strings.Repeat("x", mutex.MaxNameLength)} {
		if err := mutex.ValidateName(good); err != nil {
			t.Errorf("ValidateName(%q) = %v", good, err)
		}
	}
	for bad, why := range map[string]string{
		"":                             "empty",
		"   ":                          "white space",
		" MUTEX":                       "white space",
		"MU\nTEX":                      "control character",
		"MU\u2028TEX":                  "control character",
		"MUTEX<x>&":                    "none of",
		"MUTEX.break.0123456789abcdef": "reserved",
		strings.Repeat("x", 101):       "limit is 100",
		"\xff":                         "UTF-8",
	} {
		err := mutex.ValidateName(bad)
		var ne *mutex.NameError
		if !errors.As(err, &ne) || !errors.Is(err, mutex.ErrInvalid) || !strings.Contains(err.Error(), why) {
			t.Errorf("ValidateName(%q) = %v, want a NameError saying %q", bad, err, why)
		}
	}
	// The option is checked with the same rules, before anything is sent.
	_, err := mutex.New(newFakeAPI(), "R", mutex.WithName("MUTEX.break.abc")).Lock(context.Background())
	if !errors.Is(err, mutex.ErrInvalid) || !mutex.IsPermanent(err) {
		t.Errorf("Lock with a reserved name = %v, want a permanent invalid-name error", err)
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"MUTEX", "", " a", "a.break.b", "\x00", "é", strings.Repeat("ü", 101)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := mutex.ValidateName(name)
		derived := strings.Contains(name, ".slot.") || strings.Contains(name, ".read.")
		if err == nil && derived && mutex.ValidateShapeName(name) == nil {
			t.Fatalf("ValidateName accepted %q and so did ValidateShapeName", name)
		}
		if err == nil && (!utf8.ValidString(name) || strings.Contains(name, ".break.") || strings.TrimSpace(name) != name ||
			name == "" || utf8.RuneCountInString(name) > mutex.MaxNameLength || strings.ContainsAny(name, "<>&\"'\n\r\x00")) {
			t.Fatalf("ValidateName accepted %q", name)
		}
		if err != nil && !errors.Is(err, mutex.ErrInvalid) {
			t.Fatalf("ValidateName(%q) = %v: not classed Invalid", name, err)
		}
	})
}

// ForceRelease classifies its failures like Lock does: a removal CloudShell refuses is Invalid
// (csmutex release exits 65), not an unclassified error (which exited 69).
func TestForceReleaseClassifiesRefusals(t *testing.T) {
	api := newFakeAPI()
	ctx := context.Background()
	if _, err := mutex.New(api, "R").Lock(ctx); err != nil {
		t.Fatal(err)
	}
	api.setBefore(func(_ context.Context, method string) error {
		if method == "RemoveServicesFromReservation" {
			return &cloudshell.APIError{Code: 100, Message: "Reservation 'R' has ended"}
		}
		return nil
	})
	_, err := mutex.ForceRelease(ctx, api, "R")
	if mutex.ClassOf(err) != mutex.ClassInvalid || !strings.Contains(err.Error(), "has ended") {
		t.Fatalf("ForceRelease on a refused removal = %v (class %s), want class Invalid naming the cause", err, mutex.ClassOf(err))
	}
}

// Lock shapes derive "<name>.slot.<i>" and "<name>.read.<i>" from a shape's name: a lock name
// may not collide with them by accident, yet the exact derived alias is that slot's lock.
func TestValidateNameReservesShapeInfixes(t *testing.T) {
	longest := strings.Repeat("s", mutex.MaxShapeNameLength)
	for _, good := range []string{"SW.slot.1", "SW.read.16", "a b.slot.9999", longest + ".slot.9999", "slot.", "x.slotted", "x.reader"} {
		if err := mutex.ValidateName(good); err != nil {
			t.Errorf("ValidateName(%q) = %v", good, err)
		}
	}
	for _, bad := range []string{"SW.slot.", "SW.slot.0", "SW.slot.01", "SW.slot.10000", "SW.slot.x", "SW.read.1.x",
		"SW.slot.1.slot.1", ".slot.1", "a.read.b", "SW.read.1.break.0123456789abcdef", longest + "x.slot.1"} {
		err := mutex.ValidateName(bad)
		var ne *mutex.NameError
		if !errors.As(err, &ne) || !errors.Is(err, mutex.ErrInvalid) || !strings.Contains(err.Error(), "reserved") && !strings.Contains(err.Error(), "limit") {
			t.Errorf("ValidateName(%q) = %v, want a NameError saying why", bad, err)
		}
	}
	if err := mutex.ValidateShapeName(longest); err != nil {
		t.Errorf("ValidateShapeName(%d characters) = %v", len(longest), err)
	}
	for bad, why := range map[string]string{longest + "x": "limit for a lock shape", "SW.slot.1": "reserved", "": "empty"} {
		if err := mutex.ValidateShapeName(bad); !errors.Is(err, mutex.ErrInvalid) || !strings.Contains(err.Error(), why) {
			t.Errorf("ValidateShapeName(%q) = %v, want an invalid-name error saying %q", bad, err, why)
		}
	}
	// Every derived alias of the longest shape name is itself a valid lock name.
	if utf8.RuneCountInString(longest+mutex.SlotInfix+"9999") != mutex.MaxNameLength {
		t.Errorf("MaxShapeNameLength %d leaves the longest derived alias short of or beyond MaxNameLength", mutex.MaxShapeNameLength)
	}
}
