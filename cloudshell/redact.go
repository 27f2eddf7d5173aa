package cloudshell

import (
	"strings"
	"unicode/utf8"

	"github.com/csmutex/csmutex/internal/redact"
)

// redact removes every secret the client knows of from s.
func (c *Client) redact(s string, extra []string) string {
	if s == "" {
		return s
	}
	c.mu.Lock()
	secrets := make([]string, 0, 8+len(c.oldTokens)+len(extra))
	secrets = append(secrets, c.cfg.Password, c.cfg.Token, c.cfg.SessionToken, c.password, c.adminToken, c.token)
	secrets = append(secrets, c.oldTokens...)
	c.mu.Unlock()
	secrets = append(secrets, extra...)
	// The header minus its token is not secret, but echoing it is never useful either.
	secrets = append(secrets, c.authPrefix)
	// Longest first, so a secret containing another is not left half-visible; secrets
	// shorter than redact.MinLen are left alone.
	return redact.String(s, secrets...)
}

// redactedSnippet returns at most limit bytes of b with secrets masked. It redacts before
// cutting, with some slack, so that a secret straddling the cut is still masked whole.
func (c *Client) redactedSnippet(b []byte, limit int, extra []string) string {
	const slack = 256
	if len(b) > limit+slack {
		b = b[:limit+slack]
	}
	s := c.redact(strings.ToValidUTF8(string(b), "\uFFFD"), extra)
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}
