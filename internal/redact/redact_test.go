package redact

import (
	"slices"
	"testing"
)

func TestString(t *testing.T) {
	for _, c := range []struct {
		in      string
		secrets []string
		want    string
	}{
		{"", []string{"abc"}, ""},
		{"no secret here", nil, "no secret here"},
		{"pw=hunter2 again hunter2", []string{"hunter2"}, "pw=[REDACTED] again [REDACTED]"},
		// Longest first, whatever the order given: "abc" first would leak "def".
		{"token abcdef, password abc", []string{"abc", "abcdef"}, "token [REDACTED], password [REDACTED]"},
		{"token abcdef, password abc", []string{"abcdef", "abc"}, "token [REDACTED], password [REDACTED]"},
		// Too short to mask, and empty.
		{"a ab abc", []string{"", "a", "ab"}, "a ab abc"},
		{"a ab abc", []string{"ab", "abc"}, "a ab [REDACTED]"},
	} {
		if got := String(c.in, c.secrets...); got != c.want {
			t.Errorf("String(%q, %q) = %q, want %q", c.in, c.secrets, got, c.want)
		}
	}
}

func TestStringLeavesSecretsAlone(t *testing.T) {
	secrets := []string{"abc", "abcdef", "xyz"}
	String("abc abcdef xyz", secrets...)
	if !slices.Equal(secrets, []string{"abc", "abcdef", "xyz"}) {
		t.Fatalf("secrets reordered: %q", secrets)
	}
}
