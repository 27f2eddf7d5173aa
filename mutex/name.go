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
// or line-separator characters, none of <>&"', and not containing ".break." (reserved for
// break locks).
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
