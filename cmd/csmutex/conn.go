package main

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/internal/logon"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
)

// envBinding ties a flag to the environment variable read when the flag is not given.
type envBinding struct {
	flag string
	env  string
}

// connFlags are the CloudShell connection flags every command shares. Each falls back to
// its CLOUDSHELL_* environment variable when not given on the command line. The fallback
// is applied after parsing, never as the flag's default, so help never shows an
// environment value (a password, say).
type connFlags struct {
	fs *pflag.FlagSet

	host, scheme, user, password, domain, token string
	port                                        int
	insecure                                    bool

	envs     []envBinding
	resolved bool
	err      error
}

// addConnFlags registers the connection flags on fs. Call dial (or validate) after
// fs.Parse.
func addConnFlags(fs *pflag.FlagSet) *connFlags {
	c := &connFlags{fs: fs}
	str := func(p *string, name, def, usage, env string) {
		fs.StringVar(p, name, def, usage+" [$"+env+"]")
		c.envs = append(c.envs, envBinding{name, env})
	}
	str(&c.host, "host", "", "CloudShell server `HOST` name or IP address", "CLOUDSHELL_HOST")
	fs.IntVar(&c.port, "port", 8029, "CloudShell Automation API `PORT` [$CLOUDSHELL_PORT]")
	c.envs = append(c.envs, envBinding{"port", "CLOUDSHELL_PORT"})
	str(&c.scheme, "scheme", "http", "`SCHEME`: http or https", "CLOUDSHELL_SCHEME")
	str(&c.user, "user", "", "CloudShell `USER` name", "CLOUDSHELL_USER")
	// No default and no echo: the value may only come from the flag or the environment.
	str(&c.password, "password", "", "`PASSWORD` of --user (prefer the environment variable:\ncommand lines are visible to other users)", "CLOUDSHELL_PASSWORD")
	str(&c.domain, "domain", "Global", "CloudShell `DOMAIN`", "CLOUDSHELL_DOMAIN")
	str(&c.token, "token", "", "admin `TOKEN` to log on with (SecureLogon) instead of --user", "CLOUDSHELL_TOKEN")
	fs.BoolVar(&c.insecure, "insecure-skip-verify", false, "do not verify the server's TLS certificate (https)")
	return c
}

// resolve applies the environment fallbacks, once.
func (c *connFlags) resolve() error {
	if c.resolved {
		return c.err
	}
	c.resolved = true
	c.err = applyEnv(c.fs, c.envs)
	return c.err
}

// applyEnv sets every flag in envs that was not given on the command line from its
// environment variable, if that is set and not empty. A flag counts as given when any of
// its aliases (flags sharing its variable, like -r and --reservation) was.
func applyEnv(fs *pflag.FlagSet, envs []envBinding) error {
	var given []pflag.Value
	fs.Visit(func(f *pflag.Flag) { given = append(given, f.Value) })
	isGiven := func(name string) bool {
		f := fs.Lookup(name)
		for _, v := range given {
			if f != nil && v == f.Value {
				return true
			}
		}
		return false
	}
	for _, b := range envs {
		if isGiven(b.flag) {
			continue
		}
		v, ok := os.LookupEnv(b.env)
		if !ok || v == "" {
			continue
		}
		if err := fs.Set(b.flag, v); err != nil {
			// Only non-secret flags can fail to parse (port, durations), so quoting is safe.
			return usageErrorf("$%s=%q is not a valid --%s", b.env, v, b.flag)
		}
	}
	return nil
}

// config returns the client configuration, after the environment fallbacks and the
// checks that need no network. Errors are *usageError and never quote a secret.
func (c *connFlags) config(log zerolog.Logger) (cloudshell.Config, error) {
	if err := c.resolve(); err != nil {
		return cloudshell.Config{}, err
	}
	switch {
	case strings.TrimSpace(c.host) == "":
		return cloudshell.Config{}, usageErrorf("no CloudShell host: pass --host or set CLOUDSHELL_HOST")
	case c.token == "" && c.user == "":
		return cloudshell.Config{}, usageErrorf("no credentials: pass --user and --password (or set CLOUDSHELL_USER and CLOUDSHELL_PASSWORD), or --token (CLOUDSHELL_TOKEN)")
	}
	cfg := cloudshell.Config{
		Host: c.host, Port: c.port, Scheme: c.scheme, InsecureSkipVerify: c.insecure,
		Username: c.user, Password: c.password, Domain: c.domain, Token: c.token,
		Timeout: 30 * time.Second,
	}
	if log.GetLevel() <= zerolog.DebugLevel {
		l := log.With().Str("component", "cloudshell").Logger()
		cfg.Logger = &l
	}
	// New checks host, port and scheme without touching the network. Its messages name
	// the field, never the value.
	if _, err := cloudshell.New(cfg); err != nil {
		return cloudshell.Config{}, usageErrorf("invalid connection settings: %v", err)
	}
	return cfg, nil
}

// validate runs every check dial would run before the network. Commands call it with
// their other checks so that all usage errors come before the first call.
func (c *connFlags) validate() error {
	_, err := c.config(zerolog.Nop())
	return err
}

// addr is host:port, for messages.
func (c *connFlags) addr() string { return logon.Addr(c.host, c.port) }

// who names the credentials, for messages; never a secret.
func (c *connFlags) who() string { return logon.Who(c.user, c.token) }

// dial logs on to CloudShell. Configuration problems come back as *usageError (exit 64),
// an unreachable server or refused credentials as *logon.Error (exit 69, 77) naming host:port.
// Neither ever contains the password or token.
func (c *connFlags) dial(ctx context.Context, log zerolog.Logger) (*cloudshell.Client, error) {
	cfg, err := c.config(log)
	if err != nil {
		return nil, err
	}
	client, err := cloudshell.New(cfg)
	if err != nil {
		return nil, usageErrorf("invalid connection settings: %v", err)
	}
	start := time.Now()
	if err := client.Connect(ctx); err != nil {
		return nil, &logon.Error{Addr: c.addr(), As: c.who(), Err: err}
	}
	log.Debug().Str("addr", c.addr()).Str("domain", c.domain).Dur("took_ms", time.Since(start)).Msg("logged on to CloudShell")
	return client, nil
}

// reservationFlag is -r/--reservation with its CLOUDSHELL_RESERVATION_ID fallback.
type reservationFlag struct {
	fs *pflag.FlagSet
	id string
}

func addReservationFlag(fs *pflag.FlagSet) *reservationFlag {
	r := &reservationFlag{fs: fs}
	fs.StringVarP(&r.id, "reservation", "r", "", "reservation `ID` [$CLOUDSHELL_RESERVATION_ID]")
	return r
}

// get returns the reservation id from the flag or the environment, or a usage error.
func (r *reservationFlag) get() (string, error) {
	if err := applyEnv(r.fs, []envBinding{{"reservation", "CLOUDSHELL_RESERVATION_ID"}}); err != nil {
		return "", err
	}
	id := strings.TrimSpace(r.id)
	if id == "" {
		return "", usageErrorf("no reservation: pass -r/--reservation or set CLOUDSHELL_RESERVATION_ID")
	}
	return id, nil
}
