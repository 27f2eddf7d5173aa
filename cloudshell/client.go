package cloudshell

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-resty/resty/v2"
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
	servicePath           = "/ResourceManagerApiService/"

	// maxResponseBytes bounds memory on a hostile or broken server; real reservation
	// details are far smaller.
	maxResponseBytes = 64 << 20
	// errBodyLimit is how much of a non-2xx body an HTTPError keeps for diagnosis.
	errBodyLimit = 512
	// badBodyLimit is how much of an unusable 2xx body an ErrBadResponse error quotes.
	badBodyLimit = 128
	// minRedactLen is the shortest secret that redaction masks.
	minRedactLen = 3
	// maxOldTokens bounds the list of superseded session tokens kept only for redaction.
	maxOldTokens = 8
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

type authMode int

const (
	authNone     authMode = iota
	authPassword          // Logon with username/password
	authToken             // SecureLogon with an admin token
	authSession           // a given session token; cannot be renewed
)

// callKind decides retry and re-logon policy.
type callKind int

const (
	kindWrite  callKind = iota // sent exactly once; failures after sending are ambiguous
	kindRead                   // retried on transient failures
	kindLogon                  // retried like a read; a 401 is final
	kindLogoff                 // a write for which a 401 means "already logged off"
)

// readMethods are the methods safe to resend: they do not change server state.
var readMethods = map[string]bool{
	"GetReservationDetails": true,
	"GetSandboxData":        true,
	"GetServerDateAndTime":  true,
}

// Client is a CloudShell Automation API client. It is safe for concurrent use.
type Client struct {
	cfg        Config // normalised
	http       *resty.Client
	baseURL    string
	hostHeader string
	authPrefix string // "MachineName=<name>:<port>;Token="
	log        zerolog.Logger
	readRetry  func() retry.Backoff

	mu         sync.Mutex
	token      string
	gen        uint64 // bumped whenever token changes; lets concurrent 401s coalesce
	mode       authMode
	username   string
	password   string
	adminToken string
	domain     string
	oldTokens  []string
	relog      *relogonCall
}

type relogonCall struct {
	done chan struct{}
	err  error
}

// errStatus401 travels from a single attempt to the re-logon logic; it never escapes.
var errStatus401 = errors.New("cloudshell: HTTP 401")

// errNoCredentials: a 401 arrived but there is nothing to log on again with.
var errNoCredentials = errors.New("cloudshell: no stored credentials")

// New validates cfg and builds a Client. It does not touch the network.
func New(cfg Config) (*Client, error) {
	cfg, err := normalise(cfg)
	if err != nil {
		return nil, err
	}
	hostPort := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))

	transport := cfg.Transport
	if transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: cfg.InsecureSkipVerify, //nolint:gosec // explicit opt-out
		}
		transport = t
	}
	hc := &http.Client{
		Transport: transport,
		Timeout:   cfg.Timeout,
		// A followed redirect would resend a POST, i.e. possibly repeat a write.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	rc := resty.NewWithClient(hc).
		SetRetryCount(0).
		SetDebug(false).
		SetDisableWarn(true).
		SetLogger(nopRestyLogger{}).
		SetResponseBodyLimit(maxResponseBytes).
		SetPreRequestHook(func(_ *resty.Client, r *http.Request) error {
			// resty insists on its own User-Agent; the reference sends none of ours.
			r.Header["User-Agent"] = []string{""}
			return nil
		})

	c := &Client{
		cfg:        cfg,
		http:       rc,
		baseURL:    cfg.Scheme + "://" + hostPort + servicePath,
		hostHeader: hostPort,
		authPrefix: "MachineName=" + cfg.MachineName + ":" + strconv.Itoa(cfg.Port) + ";Token=",
		readRetry:  cfg.ReadRetry,
		domain:     cfg.Domain,
	}
	if c.readRetry == nil {
		c.readRetry = defaultReadRetry
	}
	if cfg.Logger != nil {
		c.log = *cfg.Logger
	} else {
		c.log = zerolog.Nop()
	}
	if cfg.SessionToken != "" {
		c.token = cfg.SessionToken
		c.mode = authSession
	}
	return c, nil
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

// Dial is New followed by Connect.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Connect starts a session from the Config: nothing to do with a SessionToken, SecureLogon
// with Token, else Logon with Username and Password.
func (c *Client) Connect(ctx context.Context) error {
	switch {
	case c.cfg.SessionToken != "":
		return nil
	case c.cfg.Token != "":
		_, err := c.SecureLogon(ctx, c.cfg.Token, c.cfg.Domain)
		return err
	case c.cfg.Username != "":
		_, err := c.Logon(ctx, c.cfg.Username, c.cfg.Password, c.cfg.Domain)
		return err
	}
	return &ArgumentError{Method: "Connect", Field: "Config.Username/Token/SessionToken",
		Reason: "are all empty: set Username and Password, Token, or SessionToken"}
}

// call is one logical API call.
type call struct {
	method string
	body   string
	kind   callKind
	// secrets in this request's body that may not be stored yet (a new password).
	secrets []string
	// gen is the session generation of the token the last attempt carried; a 401 is only
	// worth a re-logon if nobody has replaced that token yet.
	gen uint64
	// filled in for the log line
	attempts int
	relogon  bool
	status   int
}

// invoke serialises and sends one API call with the policy of its kind and logs it.
func (c *Client) invoke(ctx context.Context, method string, kind callKind, secrets []string, params ...Param) (*Node, error) {
	if ctx == nil {
		return nil, &ArgumentError{Method: method, Field: "ctx", Reason: "is nil"}
	}
	body, err := encodeRequest(method, params)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		// Nothing is sent, so even a write is not ambiguous.
		return nil, fmt.Errorf("cloudshell: %s: %w", method, err)
	}
	cl := &call{method: method, body: body, kind: kind, secrets: secrets}
	start := time.Now()
	n, err := c.invokeAuth(ctx, cl)
	c.logCall(cl, time.Since(start), err)
	return n, err
}

// invokeAuth adds the 401 policy: log on again once, resend once.
func (c *Client) invokeAuth(ctx context.Context, cl *call) (*Node, error) {
	n, err := c.attempt(ctx, cl)
	if !errors.Is(err, errStatus401) {
		return n, err
	}
	switch cl.kind {
	case kindLogon:
		// The reference recurses into logon here; a rejected logon is simply final.
		return nil, unauthorized(cl.method, "logon rejected with HTTP 401", nil)
	case kindLogoff:
		return nil, nil // the session is gone, which is what Logoff wants
	}
	cl.relogon = true
	if err := c.relogon(ctx, cl.method, cl.gen); err != nil {
		switch {
		case errors.Is(err, errNoCredentials):
			return nil, unauthorized(cl.method, "HTTP 401 and no stored credentials to log on again", nil)
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			return nil, fmt.Errorf("cloudshell: %s: waiting for re-logon: %w", cl.method, err)
		case errors.Is(err, ErrUnauthorized) || isAPIError(err):
			return nil, unauthorized(cl.method, "HTTP 401 and re-logon failed", err)
		default:
			// A transport failure while logging on: the original request was refused
			// (401), so this is not ambiguous, only transient.
			return nil, fmt.Errorf("cloudshell: %s: HTTP 401 and re-logon failed: %w", cl.method, err)
		}
	}
	n, err = c.attempt(ctx, cl)
	if errors.Is(err, errStatus401) {
		return nil, unauthorized(cl.method, "HTTP 401 again after re-logon", nil)
	}
	return n, err
}

func unauthorized(method, reason string, cause error) error {
	if cause != nil {
		return fmt.Errorf("cloudshell: %s: %s: %w: %w", method, reason, ErrUnauthorized, cause)
	}
	return fmt.Errorf("cloudshell: %s: %s: %w", method, reason, ErrUnauthorized)
}

func isAPIError(err error) bool {
	var ae *APIError
	return errors.As(err, &ae)
}

// attempt sends the request once (writes) or with read retries (reads, logons).
func (c *Client) attempt(ctx context.Context, cl *call) (*Node, error) {
	if cl.kind == kindRead || cl.kind == kindLogon {
		n, tries, err := c.withReadRetry(ctx, cl.method, func(ctx context.Context) (*Node, error) { return c.post(ctx, cl) })
		cl.attempts += tries
		return n, err
	}
	cl.attempts++
	return c.post(ctx, cl)
}

// post performs exactly one HTTP exchange and classifies its outcome.
func (c *Client) post(ctx context.Context, cl *call) (*Node, error) {
	token, gen := c.session()
	cl.gen = gen
	write := cl.kind == kindWrite || cl.kind == kindLogoff
	resp, err := c.http.R().
		SetContext(ctx).
		SetHeader("Content-Type", "text/xml").
		SetHeader("Accept", "*/*").
		// urllib3 (the reference client) asks for identity; left alone, Go would ask for gzip.
		SetHeader("Accept-Encoding", "identity").
		// Verbatim: the reference sends these names in this case; Go would canonicalise
		// them to Clienttimezoneid / Datetimeformat.
		SetHeaderVerbatim("ClientTimeZoneId", c.cfg.TimeZone).
		SetHeaderVerbatim("DateTimeFormat", c.cfg.DateTimeFormat).
		SetHeader("Host", c.hostHeader).
		SetHeader("Authorization", c.authPrefix+token).
		SetBody(cl.body).
		Post(c.baseURL + cl.method)
	if err != nil {
		return nil, c.transportFailure(ctx, cl, write, err)
	}
	status := resp.StatusCode()
	cl.status = status
	body := resp.Body()
	switch {
	case status == http.StatusUnauthorized:
		return nil, errStatus401
	case status < 200 || status > 299:
		he := &HTTPError{
			Method:     cl.method,
			StatusCode: status,
			Status:     reasonPhrase(resp.Status(), status),
			Body:       c.redactedSnippet(body, errBodyLimit, cl.secrets),
		}
		// A 5xx may come from a proxy after the server applied the write.
		if write && status >= 500 {
			return nil, &ambiguousError{cause: he}
		}
		return nil, he
	}
	n, err := parseEnvelope(cl.method, body)
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			if cl.kind == kindLogon {
				ae.Message = c.redact(ae.Message, cl.secrets)
			}
			return nil, ae
		}
		return nil, c.badResponse(cl, status, err.Error()+"; body starts "+strconv.Quote(c.redactedSnippet(body, badBodyLimit, cl.secrets)))
	}
	return n, nil
}

// badResponse builds the ErrBadResponse error; for a write the server has answered 2xx, so
// it most likely applied it, but that cannot be confirmed from this body.
func (c *Client) badResponse(cl *call, status int, reason string) error {
	var err error = &badResponseError{method: cl.method, status: status, reason: c.redact(reason, cl.secrets)}
	if cl.kind == kindWrite {
		err = &ambiguousError{cause: err}
	}
	return err
}

func (c *Client) transportFailure(ctx context.Context, cl *call, write bool, err error) error {
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		// Unwrapped because its text only repeats the POST URL, i.e. the method name.
		cause = ue.Err
	}
	te := NewTransportError(ctx, cl.method, write, cause).(*transportError)
	te.msg = c.redact(te.msg, cl.secrets)
	return te
}

func reasonPhrase(status string, code int) string {
	if s, ok := strings.CutPrefix(status, strconv.Itoa(code)); ok && strings.TrimSpace(s) != "" {
		return strings.TrimSpace(s)
	}
	return http.StatusText(code)
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

// session returns the current token and its generation.
func (c *Client) session() (string, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token, c.gen
}

// setTokenLocked installs a new session token, remembering the old one for redaction.
// Callers hold c.mu.
func (c *Client) setTokenLocked(token string) {
	if c.token != "" && c.token != token {
		c.oldTokens = append(c.oldTokens, c.token)
		if len(c.oldTokens) > maxOldTokens {
			c.oldTokens = c.oldTokens[len(c.oldTokens)-maxOldTokens:]
		}
	}
	c.token = token
	c.gen++
}

// relogon logs on again after a 401 seen with session generation gen. Concurrent callers
// that saw the same generation share one logon; a caller whose generation is already
// outdated just resends with the newer token.
func (c *Client) relogon(ctx context.Context, method string, gen uint64) error {
	c.mu.Lock()
	if c.gen != gen {
		c.mu.Unlock()
		return nil
	}
	rc := c.relog
	if rc == nil {
		mode, user, pass, admin, domain := c.mode, c.username, c.password, c.adminToken, c.domain
		if mode != authPassword && mode != authToken {
			c.mu.Unlock()
			return errNoCredentials
		}
		rc = &relogonCall{done: make(chan struct{})}
		c.relog = rc
		// The logon serves every waiter, so one caller giving up must not cancel it; the
		// HTTP timeout and the read retry bound it.
		lctx := context.WithoutCancel(ctx)
		go func() {
			var err error
			if mode == authPassword {
				_, err = c.Logon(lctx, user, pass, domain)
			} else {
				_, err = c.SecureLogon(lctx, admin, domain)
			}
			c.mu.Lock()
			rc.err = err
			c.relog = nil
			c.mu.Unlock()
			close(rc.done)
		}()
	}
	c.mu.Unlock()
	c.log.Debug().Str("method", method).Msg("cloudshell: HTTP 401, logging on again")
	select {
	case <-rc.done:
		return rc.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

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
	// Longest first, so a secret containing another is not left half-visible.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, sec := range secrets {
		// Shorter strings occur everywhere by chance; masking them would garble every
		// message while protecting nothing.
		if len(sec) >= minRedactLen && strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, "[REDACTED]")
		}
	}
	return s
}

func (c *Client) logCall(cl *call, d time.Duration, err error) {
	ev := c.log.Debug()
	if !ev.Enabled() {
		return
	}
	ev = ev.Str("method", cl.method).Dur("duration", d).Int("attempts", cl.attempts)
	if cl.status != 0 {
		ev = ev.Int("status", cl.status)
	}
	if cl.relogon {
		ev = ev.Bool("relogon", true)
	}
	ev = ev.Str("outcome", outcome(err))
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			ev = ev.Int("code", ae.Code)
		}
		ev = ev.Str("error", c.redact(err.Error(), cl.secrets))
	}
	ev.Msg("cloudshell call")
}

func outcome(err error) string {
	var (
		ae *APIError
		he *HTTPError
	)
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ae):
		return "api_error"
	case errors.Is(err, ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, ErrInvalidArgument):
		return "invalid_argument"
	case errors.Is(err, ErrAmbiguous):
		return "ambiguous"
	case errors.Is(err, ErrBadResponse):
		return "bad_response"
	case errors.As(err, &he):
		return "http_error"
	case !IsTransient(err) && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return "canceled"
	}
	return "transport_error"
}

// nopRestyLogger keeps resty from printing anything (its warnings could include request
// details) to stderr.
type nopRestyLogger struct{}

func (nopRestyLogger) Errorf(string, ...any) {}
func (nopRestyLogger) Warnf(string, ...any)  {}
func (nopRestyLogger) Debugf(string, ...any) {}
