package cloudshell

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-resty/resty/v2"
)

const (
	servicePath = "/ResourceManagerApiService/"

	// maxResponseBytes bounds memory on a hostile or broken server; real reservation
	// details are far smaller.
	maxResponseBytes = 64 << 20
	// errBodyLimit is how much of a non-2xx body an HTTPError keeps for diagnosis.
	errBodyLimit = 512
	// badBodyLimit is how much of an unusable 2xx body an ErrBadResponse error quotes.
	badBodyLimit = 128
)

// newHTTPClient builds the HTTP side of a Client: one exchange per call (no retries of its
// own, no redirects), bounded bodies, and nothing printed.
func newHTTPClient(cfg Config) *resty.Client {
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
	return resty.NewWithClient(hc).
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

// nopRestyLogger keeps resty from printing anything (its warnings could include request
// details) to stderr.
type nopRestyLogger struct{}

func (nopRestyLogger) Errorf(string, ...any) {}
func (nopRestyLogger) Warnf(string, ...any)  {}
func (nopRestyLogger) Debugf(string, ...any) {}
