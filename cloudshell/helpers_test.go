package cloudshell

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
	"github.com/sethvargo/go-retry"
)

const (
	testHost    = "cs01.example"
	testBaseURL = "http://cs01.example:8029/ResourceManagerApiService/"
	testMachine = "build-agent-3"
	testResID   = "5d2c9a10-1f3e-4b7a-8e21-6c0d4f9b2a11"
	// A base64-like session token with the characters that must not be URL-encoded.
	testSessionToken = "Q2xvdWRTaGVsbFRva2Vu+x/="
)

const nsAttrs = ` xmlns="http://schemas.qualisystems.com/ResourceManagement/ApiCommandResult.xsd" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"`

// okEnvelope is a success envelope as the server writes it (namespaced, declared utf-8).
func okEnvelope(method, responseInfo string) string {
	return `<?xml version="1.0" encoding="utf-8"?>` + "\n" +
		`<Response CommandName="` + method + `" Success="true"` + nsAttrs + ">\n" +
		"  <ErrorCode>0</ErrorCode>\n" + responseInfo + "\n</Response>"
}

func failEnvelope(method, code, message string) string {
	return `<?xml version="1.0" encoding="utf-8"?>` + "\n" +
		`<Response CommandName="` + method + `" Success="false"` + nsAttrs + ">\n" +
		"  <Error>" + message + "</Error>\n  <ErrorCode>" + code + "</ErrorCode>\n</Response>"
}

func logonEnvelope(token string) string {
	return okEnvelope("Logon", `  <ResponseInfo xsi:type="LogonResponseInfo">
    <Domain Name="Global" Description="all resources" DomainId="7e0c3b8a-2d4f-4c61-9a0e-5b1f2c3d4e5f"/>
    <User Name="svc-lock" IsAdmin="false" IsActive="true" IsDomainAdmin="false"/>
    <Token Token="`+token+`"/>
  </ResponseInfo>`)
}

var emptyOK = func(method string) string { return okEnvelope(method, "  <ResponseInfo/>") }

// recorded is one request as the transport saw it.
type recorded struct {
	Method string // API method (last path segment)
	URL    string
	Host   string
	Header http.Header
	Body   string
}

// fakeServer answers through httpmock and records every request.
type fakeServer struct {
	mt *httpmock.MockTransport
	mu sync.Mutex
	// reqs in arrival order
	reqs []recorded
}

func newFakeServer() *fakeServer {
	return &fakeServer{mt: httpmock.NewMockTransport()}
}

func (f *fakeServer) record(r *http.Request) recorded {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
	}
	rec := recorded{
		Method: r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:],
		URL:    r.URL.String(),
		Host:   r.Host,
		Header: r.Header.Clone(),
		Body:   string(body),
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, rec)
	f.mu.Unlock()
	return rec
}

// on registers fn for an API method; fn sees the recorded request.
func (f *fakeServer) on(method string, fn func(rec recorded) (*http.Response, error)) {
	f.mt.RegisterResponder(http.MethodPost, testBaseURL+method, func(r *http.Request) (*http.Response, error) {
		return fn(f.record(r))
	})
}

// reply registers a fixed answer.
func (f *fakeServer) reply(method string, status int, body string) {
	f.on(method, func(recorded) (*http.Response, error) {
		return httpmock.NewStringResponse(status, body), nil
	})
}

func (f *fakeServer) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

func (f *fakeServer) count(method string) int {
	n := 0
	for _, r := range f.requests() {
		if r.Method == method {
			n++
		}
	}
	return n
}

// zeroRetry retries up to n times without sleeping.
func zeroRetry(n uint64) func() retry.Backoff {
	return func() retry.Backoff {
		return retry.WithMaxRetries(n, retry.BackoffFunc(func() (time.Duration, bool) { return 0, false }))
	}
}

func newTestClient(t testing.TB, f *fakeServer, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		Host:        testHost,
		MachineName: testMachine,
		Transport:   f.mt,
		ReadRetry:   zeroRetry(3),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// loggedOnClient returns a client whose session token is testSessionToken after a Logon.
func loggedOnClient(t testing.TB, f *fakeServer, mod func(*Config)) *Client {
	t.Helper()
	f.reply("Logon", 200, logonEnvelope(testSessionToken))
	c := newTestClient(t, f, func(cfg *Config) {
		cfg.Username, cfg.Password = "svc-lock", "pa55word-top-secret"
		if mod != nil {
			mod(cfg)
		}
	})
	if err := c.Connect(t.Context()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return c
}
