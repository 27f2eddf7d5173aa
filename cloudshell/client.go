package cloudshell

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"sync"

	"github.com/go-resty/resty/v2"
	"github.com/rs/zerolog"
	"github.com/sethvargo/go-retry"
)

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
