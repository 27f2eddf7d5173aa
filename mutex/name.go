package mutex

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameLength is the longest lock name accepted, in characters. Break locks append
// ".break.<token>" (23 characters) per level to the name, and CloudShell's own alias limit
// is not documented, so names are kept well below anything a server could refuse.
const MaxNameLength = 100

// Lock shapes (package locks) derive one exclusive lock per slot from a shape's name:
// "<name>.slot.<i>" for a semaphore's slots, "<name>.read.<i>" for a shared/exclusive lock's
// reader slots. The infixes are reserved so that no lock name collides with a derived alias
// by accident; the exact derived form is accepted, because it is that one slot's lock.
const (
	// SlotInfix joins a semaphore's name and a slot number.
	SlotInfix = ".slot."
	// ReadInfix joins a shared/exclusive lock's name and a reader slot number.
	ReadInfix = ".read."
	// MaxSlots is the most slots a shape may derive from one name (slots are numbered from 1).
	MaxSlots = 9999
	// MaxShapeNameLength is the longest name of a lock shape, in characters: its longest
	// derived alias, "<name>.slot.9999", must still fit MaxNameLength.
	MaxShapeNameLength = MaxNameLength - len(SlotInfix) - 4
)

// forbiddenNameChars are refused in lock names: markup characters that CloudShell's portal
// and XML payloads treat specially, so a name containing them may not come back as sent.
const forbiddenNameChars = `<>&"'`

// NameError says why a lock name was refused. errors.Is(err, ErrInvalid) holds.
type NameError struct {
	Name   string
	Reason string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("mutex: invalid lock name %q: %s", e.Name, e.Reason)
}

func (e *NameError) Is(target error) bool { return target == ErrInvalid }

// ValidateName checks a lock name (the alias of the lock service) before anything is sent.
// The Go API, the command, the sidecar and the Python helper apply the same rules: not
// empty, at most MaxNameLength characters, no leading or trailing white space, no control
// or line-separator characters, none of <>&"', not containing ".break." (reserved for
// break locks), and not containing ".slot." or ".read." (reserved for lock shapes) unless it
// is exactly a derived alias "<shape name>.slot.<i>" or "<shape name>.read.<i>" (1 <= i <=
// MaxSlots, no leading zeros) of a valid shape name (ValidateShapeName).
func ValidateName(name string) error {
	bad := func(reason string) error { return &NameError{Name: name, Reason: reason} }
	switch {
	case name == "":
		return bad(fmt.Sprintf("it is empty (the default is %q)", DefaultName))
	case !utf8.ValidString(name):
		return bad("it is not valid UTF-8")
	case strings.TrimSpace(name) == "":
		return bad("it is only white space")
	case strings.TrimSpace(name) != name:
		return bad("it starts or ends with white space")
	case utf8.RuneCountInString(name) > MaxNameLength:
		return bad(fmt.Sprintf("it is %d characters long; the limit is %d", utf8.RuneCountInString(name), MaxNameLength))
	case strings.Contains(name, breakInfix):
		return bad(fmt.Sprintf("%q is reserved for break locks", breakInfix))
	case strings.Contains(name, SlotInfix) || strings.Contains(name, ReadInfix):
		if !isDerivedName(name) {
			return bad(fmt.Sprintf("%q and %q are reserved for the slots of lock shapes (only \"<name>%s<1-%d>\" names one)",
				SlotInfix, ReadInfix, SlotInfix, MaxSlots))
		}
	}
	for i, r := range name {
		switch {
		case unicode.IsControl(r), r == '\u2028', r == '\u2029':
			return bad(fmt.Sprintf("control character %U at byte %d", r, i))
		case strings.ContainsRune(forbiddenNameChars, r):
			return bad(fmt.Sprintf("character %q at byte %d (none of %s is allowed)", r, i, forbiddenNameChars))
		}
	}
	return nil
}

// ValidateShapeName checks the name of a lock shape (a semaphore, a shared/exclusive lock):
// a valid lock name, without any reserved infix, short enough (MaxShapeNameLength) that
// every alias derived from it is a valid lock name too.
func ValidateShapeName(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	switch n := utf8.RuneCountInString(name); {
	case strings.Contains(name, SlotInfix) || strings.Contains(name, ReadInfix):
		return &NameError{Name: name, Reason: fmt.Sprintf("%q and %q are reserved for the slots of lock shapes", SlotInfix, ReadInfix)}
	case n > MaxShapeNameLength:
		return &NameError{Name: name, Reason: fmt.Sprintf("it is %d characters long; the limit for a lock shape is %d (its slots append %q and a number)",
			n, MaxShapeNameLength, SlotInfix)}
	}
	return nil
}

// isDerivedName reports whether name is exactly "<shape>.slot.<i>" or "<shape>.read.<i>"
// for a valid shape name and slot number.
func isDerivedName(name string) bool {
	for _, infix := range []string{SlotInfix, ReadInfix} {
		i := strings.LastIndex(name, infix)
		if i <= 0 {
			continue
		}
		num := name[i+len(infix):]
		if num == "" || len(num) > 4 || num[0] == '0' || strings.Trim(num, "0123456789") != "" {
			continue
		}
		return ValidateShapeName(name[:i]) == nil
	}
	return false
}
