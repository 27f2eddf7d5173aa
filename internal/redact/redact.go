// Package redact masks secrets (passwords, tokens) in text that leaves the process:
// error messages, log lines, HTTP answers. The cloudshell client, the sidecar and the
// command all mask through it, so they agree on what is masked and how.
package redact

import (
	"cmp"
	"slices"
	"strings"
)

// MinLen is the shortest secret that is masked. Shorter strings occur everywhere by
// chance: masking every "ab" would garble each message while protecting nothing.
const MinLen = 3

// Mask replaces each secret.
const Mask = "[REDACTED]"

// String returns s with every occurrence of each secret of at least MinLen bytes replaced
// by Mask. Longer secrets are replaced first, so that a secret containing another is
// masked whole: with "abc" and "abcdef", replacing "abc" first would leave "def" visible.
// secrets is not modified.
func String(s string, secrets ...string) string {
	if s == "" {
		return s
	}
	todo := make([]string, 0, len(secrets))
	for _, sec := range secrets {
		if len(sec) >= MinLen {
			todo = append(todo, sec)
		}
	}
	slices.SortStableFunc(todo, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, sec := range todo {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, Mask)
		}
	}
	return s
}
