package sidecar

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The guard stands in front of every endpoint and refuses what a web browser could be
// tricked into sending. The threat: the driver's user opens a web page (any site) while the
// sidecar runs on 127.0.0.1. That page can make the browser
//
//   - send a cross-origin "simple" request (POST with Content-Type text/plain, or an HTML
//     form): the browser sends it without asking first and merely hides the answer, so the
//     lock would be taken and held (token mode) with no CORS at all;
//   - rebind its own host name to 127.0.0.1 (DNS rebinding), after which its requests are
//     same-origin for the browser and it may even read the answers.
//
// The defences, in the order they are checked:
//
//  1. Host (403): on TCP, the Host header must name the address the client connected to:
//     localhost, 127.0.0.1 or [::1] (or the listening IP itself, for --allow-remote) at the
//     listening port, or a name allowed with WithAllowedHosts. A rebound name fails. On a
//     unix socket any Host is accepted: browsers cannot connect to one.
//  2. Origin (403): a request carrying an Origin header (browsers add one to every
//     cross-origin request and to every POST) is refused unless that origin was allowed with
//     WithAllowedOrigins (none by default). Programs (the Python helper, curl) send none.
//  3. OPTIONS (405): a CORS preflight is never granted; no Access-Control-Allow-* header is
//     ever sent, so a browser never lets a page make a non-simple cross-origin request.
//  4. Bearer token (401), when configured (WithBearerToken): for hosts shared by several
//     users, where anyone on the machine can connect to 127.0.0.1. /livez is exempt.
//  5. Content-Type (415): a POST must be application/json, which no simple request can
//     carry: a browser must preflight it, and the preflight is refused (3).
//
// Every refusal is a JSON error body naming what was refused and why.

// WithAllowedOrigins lets requests carrying one of these Origin header values through
// (each "scheme://host[:port]", as NormalizeOrigin accepts). Default: none, so any request
// with an Origin header is refused. It never grants CORS: a browser page at an allowed
// origin can still only send simple requests, which the Content-Type check refuses.
// Invalid entries are ignored: check them with NormalizeOrigin first.
func WithAllowedOrigins(origins ...string) Option {
	return func(s *Server) {
		for _, o := range origins {
			if n, err := NormalizeOrigin(o); err == nil {
				s.sec.origins[n] = true
			}
		}
	}
}

// WithAllowedHosts accepts these Host header values besides the listening loopback
// address: "name" (at the listening port) or "name:port" (exactly; for an ssh tunnel or a
// proxy that forwards another port). For a sidecar reached by name with --allow-remote.
// Invalid entries are ignored: check them with NormalizeHost first.
func WithAllowedHosts(hosts ...string) Option {
	return func(s *Server) {
		for _, h := range hosts {
			if n, err := NormalizeHost(h); err == nil {
				s.sec.hosts[n] = true
			}
		}
	}
}

// WithBearerToken requires "Authorization: Bearer <token>" on every request but /livez.
// An empty token turns the check off (the default). The token is never logged or echoed.
func WithBearerToken(token string) Option {
	return func(s *Server) {
		if token == "" {
			s.sec.tokenSum = nil
			return
		}
		sum := sha256.Sum256([]byte(token))
		s.sec.tokenSum = sum[:]
	}
}

// security is the guard's configuration.
type security struct {
	origins  map[string]bool // normalised origins let through
	hosts    map[string]bool // normalised "name" or "name:port" accepted as Host
	tokenSum []byte          // SHA-256 of the bearer token; nil: no token required
}

func newSecurity() security {
	return security{origins: map[string]bool{}, hosts: map[string]bool{}}
}

// NormalizeOrigin checks and normalises an origin for WithAllowedOrigins and the
// --allow-origin flag: "scheme://host[:port]", lower case, without a default port (80 for
// http, 443 for https), as browsers send it. "null" and "*" are refused: "null" is what
// sandboxed frames, file: pages and data: URLs send, so allowing it would allow them all.
func NormalizeOrigin(o string) (string, error) {
	o = strings.TrimSpace(o)
	switch o {
	case "":
		return "", errors.New("empty origin")
	case "null":
		return "", errors.New(`origin "null" cannot be allowed: sandboxed frames, file: pages and data: URLs all send it`)
	case "*":
		return "", errors.New(`origin "*" cannot be allowed: list each origin`)
	}
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("origin %q is not of the form scheme://host[:port]", o)
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		return scheme + "://" + host + ":" + port, nil
	}
	return scheme + "://" + host, nil
}

// NormalizeHost checks and normalises a WithAllowedHosts entry: "name" or "name:port",
// lower case, IPv6 in brackets.
func NormalizeHost(h string) (string, error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return "", errors.New("empty host")
	}
	name, port := splitHostHeader(h)
	if name == "" || strings.ContainsAny(name, "/@ ") {
		return "", fmt.Errorf("host %q is not of the form name or name:port", h)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("host %q: bad port", h)
		}
		return joinHost(name, port), nil
	}
	return joinHost(name, ""), nil
}

// splitHostHeader splits a Host header into lower-case name (without brackets) and port
// ("" when absent).
func splitHostHeader(h string) (name, port string) {
	if n, p, err := net.SplitHostPort(h); err == nil {
		return strings.ToLower(n), p
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")), ""
}

func joinHost(name, port string) string {
	if strings.Contains(name, ":") {
		name = "[" + name + "]"
	}
	if port == "" {
		return name
	}
	return name + ":" + port
}

// guard wraps the API with the checks described at the top of this file.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := s.badHost(r); why != "" {
			s.refuse(w, r, http.StatusForbidden, "forbidden", why)
			return
		}
		if why := s.badOrigin(r); why != "" {
			s.refuse(w, r, http.StatusForbidden, "forbidden", why)
			return
		}
		if r.Method == http.MethodOptions {
			// No Access-Control-Allow-* header, ever: the browser then never sends the
			// actual request.
			s.refuse(w, r, http.StatusMethodNotAllowed, "bad_request",
				"OPTIONS is not supported: the sidecar grants no cross-origin (CORS) access")
			return
		}
		if s.sec.tokenSum != nil && r.URL.Path != "/livez" && !s.tokenOK(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="csmutex"`)
			s.refuse(w, r, http.StatusUnauthorized, "unauthenticated",
				"missing or wrong bearer token: send \"Authorization: Bearer <token>\" with the token from the sidecar's --auth-token-file")
			return
		}
		if r.Method == http.MethodPost {
			if why := badContentType(r); why != "" {
				w.Header().Set("Accept-Post", "application/json")
				s.refuse(w, r, http.StatusUnsupportedMediaType, "unsupported_media_type", why)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers a request the guard turned away, and logs it (never its Authorization).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, kind, why string) {
	s.log.Warn().Int("status", status).Str("method", r.Method).Str("path", r.URL.Path).
		Str("remote", r.RemoteAddr).Str("host", r.Host).Str("origin", r.Header.Get("Origin")).
		Str("why", why).Msg("request refused")
	writeError(w, status, errorBody{Error: why, Kind: kind})
}

// badHost returns why r's Host header is refused, or "".
func (s *Server) badHost(r *http.Request) string {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	tcp, isTCP := local.(*net.TCPAddr)
	if local != nil && !isTCP {
		return "" // a unix socket: no browser can connect to it
	}
	if r.Host == "" {
		return "refused: the request has no Host header (the sidecar answers only requests addressed to its own loopback address)"
	}
	name, port := splitHostHeader(r.Host)
	atListenPort := tcp == nil || port == strconv.Itoa(tcp.Port) || (port == "" && tcp.Port == 80)
	if atListenPort {
		switch {
		case name == "localhost", name == "127.0.0.1", name == "::1":
			return ""
		case tcp != nil && net.ParseIP(name) != nil && net.ParseIP(name).Equal(tcp.IP):
			return "" // the listening IP itself (--allow-remote)
		case s.sec.hosts[joinHost(name, "")]:
			return ""
		}
	}
	if port != "" && s.sec.hosts[joinHost(name, port)] {
		return ""
	}
	return fmt.Sprintf("refused: Host %q is not the sidecar's address. Only localhost, 127.0.0.1 or [::1] at the listening port are accepted "+
		"(a web page that rebinds its own name to 127.0.0.1 sends its own name); allow other names with --allow-host", r.Host)
}

// badOrigin returns why r's Origin header is refused, or "".
func (s *Server) badOrigin(r *http.Request) string {
	vals, ok := r.Header["Origin"]
	if !ok {
		return ""
	}
	if len(vals) == 1 {
		if n, err := NormalizeOrigin(vals[0]); err == nil && s.sec.origins[n] {
			return ""
		}
	}
	return fmt.Sprintf("refused: requests from web pages (Origin %q) are not accepted; allow an origin with --allow-origin",
		strings.Join(vals, ", "))
}

// tokenOK checks the bearer token in constant time (comparing digests, so that not even
// the length is revealed).
func (s *Server) tokenOK(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], s.sec.tokenSum) == 1
}

// badContentType returns why a POST's Content-Type is refused, or "".
func badContentType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
		return ""
	}
	if ct == "" {
		ct = "none"
	} else {
		ct = strconv.Quote(ct)
	}
	return "refused: Content-Type must be application/json (got " + ct + "); the sidecar accepts only JSON bodies, " +
		"which a web page cannot send to it without a CORS preflight, and the sidecar grants none"
}
