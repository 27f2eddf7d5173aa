package mockapi

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"hash/fnv"
)

const defaultDomain = "Global"

type user struct {
	name, password, domain string
	admin                  bool
}

// session is an issued token. uses counts authenticated calls for token expiry.
type session struct {
	user   *user
	domain string
	uses   int
}

// newToken returns a base64 token that always contains '+', '/' and '=' so that clients
// which URL-encode, quote or trim the token fail against the mock as they would in
// production, where such characters show up sooner or later.
func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	// 0xfb 0xff encode to "+/" as the first two base64 digits; 16 bytes pad with "==".
	b[0], b[1] = 0xfb, 0xff
	return base64.StdEncoding.EncodeToString(b)
}

// domainID derives a stable GUID-shaped id, so repeated logons report the same DomainId.
func domainID(name string) string {
	h := fnv.New128a()
	h.Write([]byte(name))
	s := h.Sum(nil)
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

// domainKnownLocked: a domain exists when a user was configured in it.
func (s *Server) domainKnownLocked(name string) bool {
	if name == defaultDomain {
		return true
	}
	for _, u := range s.users {
		if u.domain == name {
			return true
		}
	}
	return false
}

// canEnterLocked: admins may log on to any domain; other users only to their own.
func (s *Server) canEnterLocked(u *user, domain string) *apiError {
	if !s.domainKnownLocked(domain) {
		return failf("Domain '%s' was not found", domain)
	}
	if !u.admin && u.domain != domain {
		return failf("User '%s' is not a member of domain '%s'", u.name, domain)
	}
	return nil
}

// authenticate validates a token for a call that needs one and counts the use. A token
// past its expiry is forgotten, so it keeps answering 401 even if expiry is turned off.
func (s *Server) authenticate(token string) (*session, bool) {
	limit := s.faults.tokenLimit()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[token]
	if token == "" || sess == nil {
		return nil, false
	}
	if limit > 0 && sess.uses >= limit {
		delete(s.sessions, token)
		return nil, false
	}
	sess.uses++
	return sess, true
}

func (s *Server) issueLocked(u *user, domain string) *result {
	tok := newToken()
	s.sessions[tok] = &session{user: u, domain: domain}
	w := payload()
	w.leaf("Domain", "Name", domain, "Description", "", "DomainId", domainID(domain))
	w.leaf("User", "Name", u.name, "IsAdmin", boolStr(u.admin), "IsActive", "true",
		"IsDomainAdmin", boolStr(u.admin), "DomainName", domain, "Email", "")
	w.leaf("Token", "Token", tok)
	return &result{typ: "LogonResponseInfo", body: w.b.Bytes()}
}

func (s *Server) logon(c *call) (*result, *apiError) {
	name := c.req.str("username", "")
	password := c.req.str("password", "")
	domain := c.req.str("domainName", defaultDomain)
	if domain == "" {
		domain = defaultDomain
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[name]
	if u == nil || u.password != password {
		// Same text for unknown user and wrong password; the password is never echoed.
		return nil, failf("Logon failed for user '%s': wrong username or password", name)
	}
	if err := s.canEnterLocked(u, domain); err != nil {
		return nil, err
	}
	return s.issueLocked(u, domain), nil
}

// secureLogon exchanges a valid token for a new one in the requested domain. Tokens the
// mock issued through Logon stand in for the portal/admin tokens real callers pass.
func (s *Server) secureLogon(c *call) (*result, *apiError) {
	tok := c.req.str("token", "")
	domain := c.req.str("domainName", defaultDomain)
	if domain == "" {
		domain = defaultDomain
	}
	limit := s.faults.tokenLimit()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[tok]
	if tok == "" || sess == nil || (limit > 0 && sess.uses >= limit) {
		return nil, failf("SecureLogon failed: the token is invalid or has expired")
	}
	if err := s.canEnterLocked(sess.user, domain); err != nil {
		return nil, err
	}
	return s.issueLocked(sess.user, domain), nil
}

func (s *Server) logoff(c *call) (*result, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, c.auth.token)
	return nil, nil
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
