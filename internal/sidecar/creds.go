package sidecar

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/csmutex/csmutex/internal/logon"
	"github.com/csmutex/csmutex/internal/redact"
)

// CloudShell defaults, as package cloudshell applies them; used to compare endpoints.
const (
	defaultCloudShellPort   = 8029
	defaultCloudShellScheme = "http"
	defaultCloudShellDomain = "Global"
)

// Credentials say which CloudShell to use and how to log on to it. Password and Token are
// secrets: they are never marshalled, printed or used as map keys in the clear.
type Credentials struct {
	Host               string `json:"host"`
	Port               int    `json:"port"`
	Scheme             string `json:"scheme"`
	User               string `json:"user"`
	Password           string `json:"-"`
	Domain             string `json:"domain"`
	Token              string `json:"-"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
}

// String never shows the secrets.
func (c Credentials) String() string {
	n := c.normalised()
	auth := "no credentials"
	switch {
	case c.Token != "":
		auth = "token"
	case c.User != "":
		auth = "user " + c.User
	}
	return fmt.Sprintf("%s://%s:%d (domain %s, %s)", n.Scheme, n.Host, n.Port, n.Domain, auth)
}

// GoString keeps %#v from printing the secrets too.
func (c Credentials) GoString() string { return "sidecar.Credentials{" + c.String() + "}" }

func (c Credentials) normalised() Credentials {
	c.Host = strings.TrimSpace(c.Host)
	c.Scheme = strings.ToLower(strings.TrimSpace(c.Scheme))
	if c.Scheme == "" {
		c.Scheme = defaultCloudShellScheme
	}
	if c.Port == 0 {
		c.Port = defaultCloudShellPort
	}
	if c.Domain == "" {
		c.Domain = defaultCloudShellDomain
	}
	return c
}

// addr is host:port, for messages.
func (c Credentials) addr() string {
	n := c.normalised()
	return logon.Addr(n.Host, n.Port)
}

func (c Credentials) sameEndpoint(o Credentials) bool {
	a, b := c.normalised(), o.normalised()
	return strings.EqualFold(a.Host, b.Host) && a.Port == b.Port && a.Scheme == b.Scheme
}

// secrets lists the values to scrub from any text that leaves the sidecar.
func (c Credentials) secrets() []string {
	var s []string
	for _, v := range []string{c.Password, c.Token} {
		if len(v) >= redact.MinLen {
			s = append(s, v)
		}
	}
	return s
}

// keySalt makes cache keys useless for guessing passwords offline: it is random per
// process and never leaves it.
var keySalt = func() []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("sidecar: crypto/rand failed: " + err.Error())
	}
	return b
}()

// key identifies a credential set in the client cache: the endpoint and user in the clear,
// the secrets only as a salted MAC.
func (c Credentials) key() string {
	n := c.normalised()
	mac := hmac.New(sha256.New, keySalt)
	mac.Write([]byte(c.Password))
	mac.Write([]byte{0})
	mac.Write([]byte(c.Token))
	return strings.Join([]string{n.Scheme, strings.ToLower(n.Host), strconv.Itoa(n.Port), n.User, n.Domain,
		strconv.FormatBool(n.InsecureSkipVerify), hex.EncodeToString(mac.Sum(nil)[:16])}, "|")
}

// cloudshellJSON is the optional "cloudshell" object of an acquire request.
type cloudshellJSON struct {
	Host     string  `json:"host"`
	Port     flexInt `json:"port"`
	Scheme   string  `json:"scheme"`
	User     string  `json:"user"`
	Password string  `json:"password"`
	Domain   string  `json:"domain"`
	Token    string  `json:"token"`
}

// resolveCredentials merges a request's "cloudshell" object over the sidecar's defaults.
// Endpoint fields (host, port, scheme, domain) fall back one by one. Credentials (user,
// password, token) come as a set: from the request if it gives any of them, else the
// sidecar's own, but only for the sidecar's own endpoint, so that a request can never send
// the sidecar's password to a server of its choosing.
func resolveCredentials(def Credentials, req *cloudshellJSON) (Credentials, error) {
	if req == nil {
		if strings.TrimSpace(def.Host) == "" {
			return Credentials{}, errors.New("no CloudShell host: start the sidecar with --host (or CLOUDSHELL_HOST), or pass cloudshell.host")
		}
		return def, nil
	}
	c := Credentials{Host: def.Host, Port: def.Port, Scheme: def.Scheme, Domain: def.Domain,
		InsecureSkipVerify: def.InsecureSkipVerify}
	if req.Host != "" {
		c.Host = req.Host
	}
	if req.Port != 0 {
		c.Port = int(req.Port)
	}
	if req.Scheme != "" {
		c.Scheme = req.Scheme
	}
	if req.Domain != "" {
		c.Domain = req.Domain
	}
	if strings.TrimSpace(c.Host) == "" {
		return Credentials{}, errors.New("no CloudShell host: pass cloudshell.host or start the sidecar with --host")
	}
	if s := strings.ToLower(c.Scheme); s != "" && s != "http" && s != "https" {
		return Credentials{}, fmt.Errorf(`cloudshell.scheme must be "http" or "https"`)
	}
	if c.Port < 0 || c.Port > 65535 {
		return Credentials{}, errors.New("cloudshell.port must be between 1 and 65535")
	}
	switch {
	case req.User != "" || req.Password != "" || req.Token != "":
		c.User, c.Password, c.Token = req.User, req.Password, req.Token
	case c.sameEndpoint(def):
		c.User, c.Password, c.Token = def.User, def.Password, def.Token
	default:
		return Credentials{}, errors.New("cloudshell.user and cloudshell.password (or cloudshell.token) are required when cloudshell.host, port or scheme differ from the sidecar's own")
	}
	return c, nil
}

// flexInt accepts a JSON number or a string holding one.
type flexInt int

func (f *flexInt) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		var s string
		if err2 := json.Unmarshal(b, &s); err2 != nil {
			return errors.New("must be a number")
		}
		n = json.Number(strings.TrimSpace(s))
	}
	i, err := strconv.Atoi(n.String())
	if err != nil {
		return errors.New("must be an integer")
	}
	*f = flexInt(i)
	return nil
}
