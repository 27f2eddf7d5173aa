package cloudshell

import (
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/sethvargo/go-retry"
)

const (
	defaultPort           = 8029
	defaultScheme         = "http"
	defaultTimeout        = 60 * time.Second
	defaultDomain         = "Global"
	defaultTimeZone       = "UTC"
	defaultDateTimeFormat = "MM/dd/yyyy HH:mm"
)

// Config configures a Client. Only Host is required.
type Config struct {
	Host string // required
	Port int    // 0 -> 8029
	// Scheme is "http" (default) or "https".
	Scheme string
	// InsecureSkipVerify turns off TLS certificate verification. Unlike the reference
	// client, which never verifies, verification is on unless this opts out.
	InsecureSkipVerify bool
	// Timeout bounds each HTTP exchange, body included; 0 -> 60s.
	Timeout time.Duration

	// Username and Password are used by Connect (Logon).
	Username, Password string
	// Domain is the CloudShell domain name; "" -> "Global".
	Domain string
	// Token is an admin token for SecureLogon, an alternative to Username/Password. When
	// both are set Token wins, as in the reference client.
	Token string
	// SessionToken is an already-issued session token, used as-is without logging on.
	// A 401 then cannot be repaired and returns ErrUnauthorized.
	SessionToken string

	// MachineName goes into the Authorization header; "" -> os.Hostname().
	MachineName string
	// TimeZone is sent as ClientTimeZoneId; "" -> "UTC".
	TimeZone string
	// DateTimeFormat is sent as DateTimeFormat; "" -> "MM/dd/yyyy HH:mm".
	DateTimeFormat string

	// Logger receives one debug line per call (method, duration, outcome); nil -> no-op.
	// Secrets are never logged.
	Logger *zerolog.Logger
	// ReadRetry makes the backoff for one read or logon call; nil -> exponential from
	// 100ms, capped at 2s, 20% jitter, at most 3 retries.
	ReadRetry func() retry.Backoff
	// Transport replaces the HTTP transport (tests, proxies). InsecureSkipVerify does not
	// apply to a custom transport.
	Transport http.RoundTripper
}

func normalise(cfg Config) (Config, error) {
	bad := func(field, reason string) error {
		return &ArgumentError{Method: "New", Field: "Config." + field, Reason: reason}
	}
	cfg.Host = strings.TrimSpace(cfg.Host)
	if strings.HasPrefix(cfg.Host, "[") && strings.HasSuffix(cfg.Host, "]") {
		cfg.Host = cfg.Host[1 : len(cfg.Host)-1]
	}
	switch {
	case cfg.Host == "":
		return cfg, bad("Host", "is required")
	case strings.ContainsAny(cfg.Host, "/@?#[] \t\r\n") || (strings.Contains(cfg.Host, ":") && net.ParseIP(cfg.Host) == nil):
		return cfg, bad("Host", "must be a bare host name or IP address (no scheme, port or path)")
	}
	if cfg.Port == 0 {
		cfg.Port = defaultPort
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return cfg, bad("Port", "must be between 1 and 65535")
	}
	cfg.Scheme = strings.ToLower(strings.TrimSpace(cfg.Scheme))
	if cfg.Scheme == "" {
		cfg.Scheme = defaultScheme
	}
	if cfg.Scheme != "http" && cfg.Scheme != "https" {
		return cfg, bad("Scheme", `must be "http" or "https"`)
	}
	if cfg.Timeout < 0 {
		return cfg, bad("Timeout", "must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Domain == "" {
		cfg.Domain = defaultDomain
	}
	if cfg.MachineName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		cfg.MachineName = h
	}
	if cfg.TimeZone == "" {
		cfg.TimeZone = defaultTimeZone
	}
	if cfg.DateTimeFormat == "" {
		cfg.DateTimeFormat = defaultDateTimeFormat
	}
	// These end up in headers; a ';' in MachineName would also corrupt the
	// Authorization header's own syntax. Reasons never quote the value: it may be secret.
	for _, f := range []struct {
		name, value, forbidden string
	}{
		{"MachineName", cfg.MachineName, ";"},
		{"TimeZone", cfg.TimeZone, ""},
		{"DateTimeFormat", cfg.DateTimeFormat, ""},
		{"SessionToken", cfg.SessionToken, ";"},
		{"Token", cfg.Token, ""},
	} {
		if hasControl(f.value) || (f.forbidden != "" && strings.ContainsAny(f.value, f.forbidden)) {
			return cfg, bad(f.name, "contains characters not allowed in an HTTP header")
		}
	}
	return cfg, nil
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7F {
			return true
		}
	}
	return false
}
