package cloudshell

import (
	"context"
	"net"
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

	c := &Client{
		cfg:        cfg,
		http:       newHTTPClient(cfg),
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
