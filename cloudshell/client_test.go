package cloudshell

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/syncbuf"
	"github.com/jarcoal/httpmock"
	"github.com/rs/zerolog"
	"github.com/sethvargo/go-retry"
)

func TestNewConfigValidation(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"no host", Config{}, "Config.Host"},
		{"scheme in host", Config{Host: "http://cs01"}, "Config.Host"},
		{"port in host", Config{Host: "cs01:8029"}, "Config.Host"},
		{"path in host", Config{Host: "cs01/x"}, "Config.Host"},
		{"bad port", Config{Host: "cs01", Port: 70000}, "Config.Port"},
		{"negative port", Config{Host: "cs01", Port: -1}, "Config.Port"},
		{"bad scheme", Config{Host: "cs01", Scheme: "ftp"}, "Config.Scheme"},
		{"negative timeout", Config{Host: "cs01", Timeout: -time.Second}, "Config.Timeout"},
		{"machine with ;", Config{Host: "cs01", MachineName: "a;b"}, "Config.MachineName"},
		{"token with newline", Config{Host: "cs01", SessionToken: "abc\r\nX-Evil: 1"}, "Config.SessionToken"},
	}
	for _, tc := range cases {
		_, err := New(tc.cfg)
		var ae *ArgumentError
		if !errors.As(err, &ae) || ae.Field != tc.field {
			t.Errorf("%s: err = %v, want field %s", tc.name, err, tc.field)
		}
		if err != nil && strings.Contains(err.Error(), "abc") {
			t.Errorf("%s: error quotes the secret value: %v", tc.name, err)
		}
	}
	for _, cfg := range []Config{
		{Host: "cs01"},
		{Host: "10.0.0.1", Scheme: "HTTPS", Port: 443},
		{Host: "::1"},
		{Host: "[fe80::1]"},
	} {
		if _, err := New(cfg); err != nil {
			t.Errorf("New(%+v): %v", cfg, err)
		}
	}
}

func TestConnectModes(t *testing.T) {
	t.Run("none", func(t *testing.T) {
		f := newFakeServer()
		c := newTestClient(t, f, nil)
		err := c.Connect(t.Context())
		var ae *ArgumentError
		if !errors.As(err, &ae) || !strings.Contains(ae.Field, "Username") || !strings.Contains(ae.Field, "Token") {
			t.Errorf("err = %v", err)
		}
		if _, err := Dial(t.Context(), Config{Host: "cs01", Transport: f.mt}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Dial: %v", err)
		}
	})
	t.Run("session token", func(t *testing.T) {
		f := newFakeServer()
		f.reply("EndReservation", 200, emptyOK("EndReservation"))
		c, err := Dial(t.Context(), Config{Host: testHost, MachineName: testMachine, Transport: f.mt, SessionToken: testSessionToken})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.EndReservation(t.Context(), "r", false); err != nil {
			t.Fatal(err)
		}
		reqs := f.requests()
		if len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "MachineName=build-agent-3:8029;Token="+testSessionToken {
			t.Errorf("requests %+v", reqs)
		}
	})
	t.Run("secure logon uses returned token", func(t *testing.T) {
		f := newFakeServer()
		f.reply("SecureLogon", 200, logonEnvelope("session-from-server"))
		f.reply("EndReservation", 200, emptyOK("EndReservation"))
		c := newTestClient(t, f, func(cfg *Config) { cfg.Token = "admin-token-xyz"; cfg.Username = "ignored" })
		if err := c.Connect(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := c.EndReservation(t.Context(), "r", false); err != nil {
			t.Fatal(err)
		}
		reqs := f.requests()
		if reqs[0].Method != "SecureLogon" || reqs[0].Body != "<SecureLogon><token>admin-token-xyz</token><domainName>Global</domainName></SecureLogon>" {
			t.Errorf("first request %s %s", reqs[0].Method, reqs[0].Body)
		}
		if got := reqs[1].Header.Get("Authorization"); got != "MachineName=build-agent-3:8029;Token=session-from-server" {
			t.Errorf("Authorization %q", got)
		}
	})
}

func TestGoldenHeaders(t *testing.T) {
	f := newFakeServer()
	f.reply("Logon", 200, logonEnvelope(testSessionToken))
	f.reply("GetServerDateAndTime", 200, okEnvelope("GetServerDateAndTime", `<ResponseInfo ServerDateTime="2012-06-21T10:52:43Z"/>`))
	c := newTestClient(t, f, func(cfg *Config) { cfg.Username, cfg.Password = "u", "p" })
	if err := c.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetServerDateAndTime(t.Context()); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	for i, wantAuth := range []string{
		"MachineName=build-agent-3:8029;Token=",
		"MachineName=build-agent-3:8029;Token=" + testSessionToken,
	} {
		r := reqs[i]
		if r.URL != testBaseURL+r.Method {
			t.Errorf("URL %s", r.URL)
		}
		if r.Host != "cs01.example:8029" || r.Header.Get("Host") != "cs01.example:8029" {
			t.Errorf("Host %q / %q", r.Host, r.Header.Get("Host"))
		}
		// Wire-exact names: read the map directly, Header.Get would canonicalise.
		want := map[string]string{
			"Content-Type":     "text/xml",
			"Accept":           "*/*",
			"Accept-Encoding":  "identity",
			"ClientTimeZoneId": "UTC",
			"DateTimeFormat":   "MM/dd/yyyy HH:mm",
			"Authorization":    wantAuth,
		}
		for k, v := range want {
			if got := r.Header[k]; len(got) != 1 || got[0] != v {
				t.Errorf("request %d header %s = %q, want %q", i, k, got, v)
			}
		}
		if ua := r.Header.Get("User-Agent"); ua != "" {
			t.Errorf("User-Agent %q", ua)
		}
	}
}

func TestHeadersCustomConfig(t *testing.T) {
	f := newFakeServer()
	f.mt.RegisterResponder(http.MethodPost, "https://[fe80::1]:9443/ResourceManagerApiService/GetSandboxData", func(r *http.Request) (*http.Response, error) {
		f.record(r)
		return httpmock.NewStringResponse(200, okEnvelope("GetSandboxData", "<ResponseInfo/>")), nil
	})
	c := newTestClient(t, f, func(cfg *Config) {
		cfg.Host, cfg.Port, cfg.Scheme = "fe80::1", 9443, "https"
		cfg.TimeZone, cfg.DateTimeFormat, cfg.MachineName = "Europe/Berlin", "dd/MM/yyyy HH:mm", "runner"
		cfg.SessionToken = "tok"
	})
	if _, err := c.GetSandboxData(t.Context(), "r"); err != nil {
		t.Fatal(err)
	}
	r := f.requests()[0]
	if r.Host != "[fe80::1]:9443" || r.Header["ClientTimeZoneId"][0] != "Europe/Berlin" ||
		r.Header["DateTimeFormat"][0] != "dd/MM/yyyy HH:mm" || r.Header.Get("Authorization") != "MachineName=runner:9443;Token=tok" {
		t.Errorf("got %+v", r)
	}
}

func TestAPIErrorMapping(t *testing.T) {
	f := newFakeServer()
	f.reply("AddServiceToReservation", 200, failEnvelope("AddServiceToReservation", "100", "Service with given alias already exists"))
	f.reply("CheckoutFromPool", 200, failEnvelope("CheckoutFromPool", "100", "Error occurred in CheckoutFromPool. Error: Could not find available IP."))
	c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })

	err := c.AddServiceToReservation(t.Context(), "r", "Mutex Service", "MUTEX", nil)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != 100 || ae.Method != "AddServiceToReservation" {
		t.Fatalf("err = %#v", err)
	}
	if err.Error() != "CloudShell API error 100: Service with given alias already exists" {
		t.Errorf("Error() = %q", err.Error())
	}
	if !IsAliasCollision(err) || IsTransient(err) || errors.Is(err, ErrAmbiguous) {
		t.Errorf("collision classification wrong")
	}

	_, err = c.Call(t.Context(), "CheckoutFromPool", Param{"selectionCriteriaJson", "{}"})
	if !errors.As(err, &ae) || ae.Code != 100 {
		t.Fatalf("err = %v", err)
	}
	if IsAliasCollision(err) {
		t.Error("IsAliasCollision true for another code-100 failure")
	}
	if f.count("AddServiceToReservation") != 1 {
		t.Error("API failure was resent")
	}
}

func TestHTTPErrors(t *testing.T) {
	html502 := "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>" + strings.Repeat("x", 2000) + "</body></html>"

	t.Run("502 on read is retried then HTTPError", func(t *testing.T) {
		f := newFakeServer()
		f.reply("GetReservationDetails", 502, html502)
		c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
		_, err := c.GetReservationDetails(t.Context(), "r", true)
		var he *HTTPError
		if !errors.As(err, &he) || he.StatusCode != 502 || he.Status != "Bad Gateway" || he.Method != "GetReservationDetails" {
			t.Fatalf("err = %#v", err)
		}
		if len(he.Body) > 512 || !strings.HasPrefix(he.Body, "<html>") {
			t.Errorf("body snippet len %d", len(he.Body))
		}
		if !strings.Contains(err.Error(), "GetReservationDetails") || !strings.Contains(err.Error(), "502") {
			t.Errorf("Error() = %q", err.Error())
		}
		if errors.Is(err, ErrAmbiguous) || !IsTransient(err) {
			t.Error("read 502 classification wrong")
		}
		if n := f.count("GetReservationDetails"); n != 4 {
			t.Errorf("%d attempts, want 1 + 3 retries", n)
		}
	})
	t.Run("502 on write is ambiguous and not resent", func(t *testing.T) {
		f := newFakeServer()
		f.reply("AddServiceToReservation", 502, html502)
		c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
		err := c.AddServiceToReservation(t.Context(), "r", "S", "A", nil)
		var he *HTTPError
		if !errors.Is(err, ErrAmbiguous) || !errors.As(err, &he) || he.StatusCode != 502 {
			t.Fatalf("err = %v", err)
		}
		if f.count("AddServiceToReservation") != 1 {
			t.Error("write resent")
		}
	})
	t.Run("404 is permanent", func(t *testing.T) {
		f := newFakeServer()
		f.reply("GetSandboxData", 404, "not found")
		c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
		_, err := c.GetSandboxData(t.Context(), "r")
		var he *HTTPError
		if !errors.As(err, &he) || he.StatusCode != 404 || IsTransient(err) || errors.Is(err, ErrAmbiguous) {
			t.Fatalf("err = %v", err)
		}
		if f.count("GetSandboxData") != 1 {
			t.Error("404 retried")
		}
	})
	t.Run("429 on write is transient, not ambiguous", func(t *testing.T) {
		f := newFakeServer()
		f.reply("EndReservation", 429, "slow down")
		c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
		err := c.EndReservation(t.Context(), "r", false)
		if !IsTransient(err) || errors.Is(err, ErrAmbiguous) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("redirect is not followed", func(t *testing.T) {
		f := newFakeServer()
		f.on("EndReservation", func(recorded) (*http.Response, error) {
			r := httpmock.NewStringResponse(307, "")
			r.Header.Set("Location", testBaseURL+"Elsewhere")
			return r, nil
		})
		c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
		err := c.EndReservation(t.Context(), "r", false)
		var he *HTTPError
		if !errors.As(err, &he) || he.StatusCode != 307 || len(f.requests()) != 1 {
			t.Fatalf("err = %v, %d requests", err, len(f.requests()))
		}
	})
}

func TestBadResponses(t *testing.T) {
	cases := map[string]struct {
		contentType, body string
	}{
		"empty body":         {"text/xml", ""},
		"truncated XML":      {"text/xml", `<?xml version="1.0" encoding="utf-8"?><Response CommandName="GetSandboxData" Success="true"><ResponseInfo>`},
		"wrong content type": {"application/json", `{"Success": true}`},
		"html 200":           {"text/html", "<html><body>maintenance</body></html>"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFakeServer()
			respond := func(string) func(recorded) (*http.Response, error) {
				return func(recorded) (*http.Response, error) {
					r := httpmock.NewStringResponse(200, tc.body)
					r.Header.Set("Content-Type", tc.contentType)
					return r, nil
				}
			}
			f.on("GetSandboxData", respond("GetSandboxData"))
			f.on("SetSandboxData", respond("SetSandboxData"))
			c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })

			_, err := c.GetSandboxData(t.Context(), "r")
			if !errors.Is(err, ErrBadResponse) || errors.Is(err, ErrAmbiguous) || !IsTransient(err) {
				t.Fatalf("read err = %v", err)
			}
			if !strings.Contains(err.Error(), "GetSandboxData") || !strings.Contains(err.Error(), "HTTP 200") {
				t.Errorf("Error() = %q", err.Error())
			}
			if n := f.count("GetSandboxData"); n != 4 {
				t.Errorf("read attempts %d", n)
			}

			err = c.SetSandboxData(t.Context(), "r", []SandboxDataKeyValue{{Key: "k", Value: "v"}})
			if !errors.Is(err, ErrBadResponse) || !errors.Is(err, ErrAmbiguous) {
				t.Fatalf("write err = %v", err)
			}
			if n := f.count("SetSandboxData"); n != 1 {
				t.Errorf("write attempts %d", n)
			}
		})
	}
	t.Run("valid envelope with a wrong content type is accepted", func(t *testing.T) {
		f := newFakeServer()
		f.on("GetSandboxData", func(recorded) (*http.Response, error) {
			r := httpmock.NewStringResponse(200, okEnvelope("GetSandboxData", "<ResponseInfo/>"))
			r.Header.Set("Content-Type", "text/plain")
			return r, nil
		})
		c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
		if _, err := c.GetSandboxData(t.Context(), "r"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("non-Response root", func(t *testing.T) {
		f := newFakeServer()
		f.reply("GetReservationDetails", 200, `<?xml version="1.0"?><Fault><Reason>x</Reason></Fault>`)
		c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
		if _, err := c.GetReservationDetails(t.Context(), "r", false); !errors.Is(err, ErrBadResponse) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("logon without token", func(t *testing.T) {
		f := newFakeServer()
		f.reply("Logon", 200, okEnvelope("Logon", "<ResponseInfo/>"))
		c := newTestClient(t, f, nil)
		if _, err := c.Logon(t.Context(), "u", "p", ""); !errors.Is(err, ErrBadResponse) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestReloginOn401(t *testing.T) {
	f := newFakeServer()
	var logons atomic.Int32
	f.on("Logon", func(recorded) (*http.Response, error) {
		n := logons.Add(1)
		return httpmock.NewStringResponse(200, logonEnvelope("token-"+string(rune('0'+n)))), nil
	})
	f.on("AddServiceToReservation", func(r recorded) (*http.Response, error) {
		if r.Header.Get("Authorization") != "MachineName=build-agent-3:8029;Token=token-2" {
			return httpmock.NewStringResponse(401, "expired"), nil
		}
		return httpmock.NewStringResponse(200, emptyOK("AddServiceToReservation")), nil
	})
	c := newTestClient(t, f, func(cfg *Config) { cfg.Username, cfg.Password = "svc", "pw" })
	if err := c.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.AddServiceToReservation(t.Context(), "r", "S", "A", nil); err != nil {
		t.Fatalf("after re-logon: %v", err)
	}
	var seq []string
	for _, r := range f.requests() {
		seq = append(seq, r.Method)
	}
	if got := strings.Join(seq, ","); got != "Logon,AddServiceToReservation,Logon,AddServiceToReservation" {
		t.Errorf("sequence %s", got)
	}
	reqs := f.requests()
	if reqs[1].Body != reqs[3].Body {
		t.Error("resent body differs")
	}
	if reqs[2].Body != "<Logon><username>svc</username><password>pw</password><domainName>Global</domainName></Logon>" {
		t.Errorf("re-logon body %s", reqs[2].Body)
	}
}

func TestSecureLogonRelogin(t *testing.T) {
	f := newFakeServer()
	var logons atomic.Int32
	f.on("SecureLogon", func(r recorded) (*http.Response, error) {
		logons.Add(1)
		if !strings.Contains(r.Body, "<token>admin-tok</token>") {
			t.Errorf("SecureLogon body %s", r.Body)
		}
		return httpmock.NewStringResponse(200, logonEnvelope("s"+string(rune('0'+logons.Load())))), nil
	})
	f.on("GetSandboxData", func(r recorded) (*http.Response, error) {
		if !strings.HasSuffix(r.Header.Get("Authorization"), "Token=s2") {
			return httpmock.NewStringResponse(401, ""), nil
		}
		return httpmock.NewStringResponse(200, okEnvelope("GetSandboxData", "<ResponseInfo/>")), nil
	})
	c := newTestClient(t, f, func(cfg *Config) { cfg.Token = "admin-tok" })
	if err := c.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSandboxData(t.Context(), "r"); err != nil {
		t.Fatal(err)
	}
	if logons.Load() != 2 {
		t.Errorf("%d SecureLogons", logons.Load())
	}
}

func TestDouble401(t *testing.T) {
	f := newFakeServer()
	f.reply("Logon", 200, logonEnvelope("tok"))
	f.reply("EndReservation", 401, "")
	c := newTestClient(t, f, func(cfg *Config) { cfg.Username, cfg.Password = "u", "p" })
	if err := c.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := c.EndReservation(t.Context(), "r", false)
	if !errors.Is(err, ErrUnauthorized) || IsTransient(err) || errors.Is(err, ErrAmbiguous) {
		t.Fatalf("err = %v", err)
	}
	if f.count("EndReservation") != 2 || f.count("Logon") != 2 {
		t.Errorf("EndReservation %d, Logon %d", f.count("EndReservation"), f.count("Logon"))
	}
}

func TestSessionToken401(t *testing.T) {
	f := newFakeServer()
	f.reply("GetReservationDetails", 401, "")
	f.reply("Logon", 200, logonEnvelope("tok"))
	c := newTestClient(t, f, func(cfg *Config) {
		cfg.SessionToken = "given"
		cfg.Username, cfg.Password = "u", "p" // present but SessionToken mode must not use them
	})
	if err := c.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err := c.GetReservationDetails(t.Context(), "r", true)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v", err)
	}
	if f.count("Logon") != 0 || f.count("GetReservationDetails") != 1 {
		t.Errorf("logons %d, details %d", f.count("Logon"), f.count("GetReservationDetails"))
	}
}

func TestLogon401IsFinal(t *testing.T) {
	f := newFakeServer()
	f.reply("Logon", 401, "")
	f.reply("SecureLogon", 401, "")
	c := newTestClient(t, f, nil)
	if _, err := c.Logon(t.Context(), "u", "p", ""); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v", err)
	}
	if _, err := c.SecureLogon(t.Context(), "t", ""); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v", err)
	}
	if f.count("Logon") != 1 || f.count("SecureLogon") != 1 {
		t.Errorf("logon attempts %d/%d", f.count("Logon"), f.count("SecureLogon"))
	}
}

func TestReloginWithBadCredentials(t *testing.T) {
	f := newFakeServer()
	var logons atomic.Int32
	f.on("Logon", func(recorded) (*http.Response, error) {
		if logons.Add(1) == 1 {
			return httpmock.NewStringResponse(200, logonEnvelope("tok")), nil
		}
		return httpmock.NewStringResponse(200, failEnvelope("Logon", "100", "Login failed")), nil
	})
	f.reply("EndReservation", 401, "")
	c := newTestClient(t, f, func(cfg *Config) { cfg.Username, cfg.Password = "u", "p" })
	if err := c.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := c.EndReservation(t.Context(), "r", false)
	var ae *APIError
	if !errors.Is(err, ErrUnauthorized) || !errors.As(err, &ae) || IsTransient(err) {
		t.Fatalf("err = %v", err)
	}
	if f.count("EndReservation") != 1 {
		t.Error("request resent although re-logon failed")
	}
}

func TestLogoff(t *testing.T) {
	f := newFakeServer()
	f.reply("Logon", 200, logonEnvelope("tok"))
	f.reply("Logoff", 401, "")
	c := newTestClient(t, f, func(cfg *Config) { cfg.Username, cfg.Password = "u", "p" })
	if err := c.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Logoff(t.Context()); err != nil {
		t.Fatalf("Logoff on a dead session: %v", err)
	}
	if f.count("Logon") != 1 {
		t.Error("Logoff logged on again")
	}
}

func TestConcurrent401sCoalesce(t *testing.T) {
	f := newFakeServer()
	var logons atomic.Int32
	release := make(chan struct{})
	f.on("Logon", func(recorded) (*http.Response, error) {
		n := logons.Add(1)
		if n == 2 {
			<-release // hold the re-logon until every caller has seen its 401
		}
		return httpmock.NewStringResponse(200, logonEnvelope("tok-"+string(rune('0'+n)))), nil
	})
	var unauthorized atomic.Int32
	f.on("GetSandboxData", func(r recorded) (*http.Response, error) {
		if strings.HasSuffix(r.Header.Get("Authorization"), "Token=tok-1") {
			unauthorized.Add(1)
			return httpmock.NewStringResponse(401, ""), nil
		}
		return httpmock.NewStringResponse(200, okEnvelope("GetSandboxData", "<ResponseInfo/>")), nil
	})
	c := newTestClient(t, f, func(cfg *Config) { cfg.Username, cfg.Password = "u", "p" })
	if err := c.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	const workers = 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.GetSandboxData(t.Context(), "r")
			errs <- err
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for unauthorized.Load() < workers && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := logons.Load(); n != 2 {
		t.Errorf("%d logons, want 1 initial + 1 shared re-logon", n)
	}
}

// errRoundTripper fails every request with err and counts attempts.
type errRoundTripper struct {
	err   error
	calls atomic.Int32
}

func (e *errRoundTripper) RoundTrip(*http.Request) (*http.Response, error) {
	e.calls.Add(1)
	return nil, e.err
}

func TestAmbiguousWriteOnConnectionReset(t *testing.T) {
	for name, cause := range map[string]error{
		"ECONNRESET":        syscall.ECONNRESET,
		"unexpected EOF":    io.ErrUnexpectedEOF,
		"read op error":     &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET},
		"timeout (no dial)": &timeoutErr{},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeServer()
			f.mt.RegisterResponder(http.MethodPost, testBaseURL+"AddServiceToReservation", func(r *http.Request) (*http.Response, error) {
				f.record(r)
				return nil, cause
			})
			c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
			err := c.AddServiceToReservation(t.Context(), "r", "Mutex Service", "MUTEX", nil)
			if !errors.Is(err, ErrAmbiguous) {
				t.Fatalf("err = %v, want ErrAmbiguous", err)
			}
			if !errors.Is(err, cause) {
				t.Errorf("cause not wrapped: %v", err)
			}
			if !IsTransient(err) {
				t.Error("ambiguous error not transient")
			}
			if n := len(f.requests()); n != 1 {
				t.Errorf("%d requests sent, want exactly 1", n)
			}
			if !strings.Contains(err.Error(), "AddServiceToReservation") {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

type timeoutErr struct{}

func (*timeoutErr) Error() string   { return "i/o timeout" }
func (*timeoutErr) Timeout() bool   { return true }
func (*timeoutErr) Temporary() bool { return true }

func TestBodyReadFailureOnWriteIsAmbiguous(t *testing.T) {
	f := newFakeServer()
	f.on("EndReservation", func(recorded) (*http.Response, error) {
		return &http.Response{
			StatusCode: 200, Status: "200 OK", Header: http.Header{},
			Body: io.NopCloser(io.MultiReader(strings.NewReader("<Response Success="), &failingReader{})),
		}, nil
	})
	c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
	err := c.EndReservation(t.Context(), "r", false)
	if !errors.Is(err, ErrAmbiguous) || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("err = %v", err)
	}
	if f.count("EndReservation") != 1 {
		t.Error("resent")
	}
}

type failingReader struct{}

func (*failingReader) Read([]byte) (int, error) { return 0, syscall.ECONNRESET }

func TestDialErrorIsNotAmbiguous(t *testing.T) {
	for name, cause := range map[string]error{
		"refused": &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED},
		"dns":     &net.DNSError{Err: "no such host", Name: "cs01.example", IsNotFound: true},
	} {
		t.Run(name, func(t *testing.T) {
			rt := &errRoundTripper{err: cause}
			c, err := New(Config{Host: testHost, Transport: rt, SessionToken: "t", ReadRetry: zeroRetry(3)})
			if err != nil {
				t.Fatal(err)
			}
			err = c.AddServiceToReservation(t.Context(), "r", "S", "A", nil)
			if err == nil || errors.Is(err, ErrAmbiguous) || !IsTransient(err) || !errors.Is(err, cause) {
				t.Fatalf("err = %v", err)
			}
			if rt.calls.Load() != 1 {
				t.Errorf("write attempted %d times", rt.calls.Load())
			}
		})
	}
}

func TestRealDialRefused(t *testing.T) {
	// A listener that is closed again: connecting is refused, nothing can have been sent.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	c, err := New(Config{Host: "127.0.0.1", Port: port, SessionToken: "t", ReadRetry: zeroRetry(1)})
	if err != nil {
		t.Fatal(err)
	}
	err = c.EndReservation(t.Context(), "r", false)
	if err == nil || errors.Is(err, ErrAmbiguous) || !IsTransient(err) {
		t.Fatalf("err = %v", err)
	}
}

func TestReadRetriedOnTransportError(t *testing.T) {
	f := newFakeServer()
	var calls atomic.Int32
	f.on("GetReservationDetails", func(recorded) (*http.Response, error) {
		if calls.Add(1) <= 2 {
			return nil, syscall.ECONNRESET
		}
		return httpmock.NewStringResponse(200, okEnvelope("GetReservationDetails", `<ResponseInfo><ReservationDescription Id="r"/></ResponseInfo>`)), nil
	})
	c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
	d, err := c.GetReservationDetails(t.Context(), "r", true)
	if err != nil || d.ID != "r" {
		t.Fatalf("d=%v err=%v", d, err)
	}
	if calls.Load() != 3 {
		t.Errorf("%d calls", calls.Load())
	}
}

func TestReadNotRetriedOnAPIError(t *testing.T) {
	f := newFakeServer()
	f.reply("GetReservationDetails", 200, failEnvelope("GetReservationDetails", "100", "Reservation not found"))
	c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
	if _, err := c.GetReservationDetails(t.Context(), "r", true); !isAPIError(err) {
		t.Fatalf("err = %v", err)
	}
	if f.count("GetReservationDetails") != 1 {
		t.Error("API error retried")
	}
}

func TestLogonRetriedOnTransportError(t *testing.T) {
	f := newFakeServer()
	var calls atomic.Int32
	f.on("Logon", func(recorded) (*http.Response, error) {
		if calls.Add(1) == 1 {
			return nil, io.ErrUnexpectedEOF
		}
		return httpmock.NewStringResponse(200, logonEnvelope("tok")), nil
	})
	c := newTestClient(t, f, func(cfg *Config) { cfg.Username = "u" })
	if err := c.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 {
		t.Errorf("%d logon attempts", calls.Load())
	}
}

func TestContextCancellation(t *testing.T) {
	f := newFakeServer()
	ctx, cancel := context.WithCancel(t.Context())
	f.on("GetSandboxData", func(recorded) (*http.Response, error) {
		cancel()
		return nil, syscall.ECONNRESET
	})
	f.on("EndReservation", func(recorded) (*http.Response, error) {
		return nil, context.Canceled
	})
	c := newTestClient(t, f, func(cfg *Config) {
		cfg.SessionToken = "t"
		cfg.ReadRetry = func() retry.Backoff { return retry.NewConstant(time.Hour) }
	})
	_, err := c.GetSandboxData(ctx, "r")
	if err == nil || IsTransient(err) {
		t.Fatalf("err = %v, transient=%v", err, IsTransient(err))
	}
	if f.count("GetSandboxData") != 1 {
		t.Errorf("%d attempts after cancel", f.count("GetSandboxData"))
	}
	// The caller's context is already done: a write is refused by the transport.
	err = c.EndReservation(ctx, "r", false)
	if err == nil || IsTransient(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("write err = %v", err)
	}
}

func TestPerRequestTimeout(t *testing.T) {
	f := newFakeServer()
	f.on("GetServerDateAndTime", func(recorded) (*http.Response, error) {
		time.Sleep(200 * time.Millisecond)
		return httpmock.NewStringResponse(200, okEnvelope("GetServerDateAndTime", `<ResponseInfo ServerDateTime="x"/>`)), nil
	})
	f.on("EndReservation", func(recorded) (*http.Response, error) {
		time.Sleep(200 * time.Millisecond)
		return httpmock.NewStringResponse(200, emptyOK("EndReservation")), nil
	})
	c := newTestClient(t, f, func(cfg *Config) {
		cfg.SessionToken = "t"
		cfg.Timeout = 20 * time.Millisecond
		cfg.ReadRetry = zeroRetry(1)
	})
	_, err := c.GetServerDateAndTime(t.Context())
	if err == nil || !IsTransient(err) || errors.Is(err, ErrAmbiguous) {
		t.Fatalf("read err = %v", err)
	}
	err = c.EndReservation(t.Context(), "r", false)
	if !errors.Is(err, ErrAmbiguous) || !IsTransient(err) {
		t.Fatalf("write err = %v", err)
	}
}

func TestIsTransient(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&APIError{Code: 100}, false},
		{ErrUnauthorized, false},
		{&ArgumentError{}, false},
		{context.Canceled, false},
		{context.DeadlineExceeded, false},
		{&HTTPError{StatusCode: 500}, true},
		{&HTTPError{StatusCode: 503}, true},
		{&HTTPError{StatusCode: 429}, true},
		{&HTTPError{StatusCode: 400}, false},
		{ErrAmbiguous, true},
		{ErrBadResponse, true},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{errors.New("something else"), false},
	}
	for _, tc := range cases {
		if got := IsTransient(tc.err); got != tc.want {
			t.Errorf("IsTransient(%v) = %v", tc.err, got)
		}
	}
}

// TestSecretsNeverLeak drives every error path with debug logging on and checks that no
// password or token shows up in the log or in any error string.
func TestSecretsNeverLeak(t *testing.T) {
	const (
		password     = "Pa55-very-secret-pw"
		adminToken   = "ADMIN-tok-3f9a+/="
		sessionToken = "SESSION-tok-77c1+/="
		newToken     = "SESSION-tok-88d2+/="
	)
	var logBuf syncbuf.Buffer
	logger := zerolog.New(&logBuf).Level(zerolog.DebugLevel)

	f := newFakeServer()
	var logons atomic.Int32
	f.on("Logon", func(r recorded) (*http.Response, error) {
		switch logons.Add(1) {
		case 1:
			return httpmock.NewStringResponse(200, logonEnvelope(sessionToken)), nil
		case 2:
			return httpmock.NewStringResponse(200, logonEnvelope(newToken)), nil
		default:
			// A server that echoes the request in its error.
			return httpmock.NewStringResponse(200, failEnvelope("Logon", "100", "Login failed for "+strings.ReplaceAll(r.Body, "<", "&lt;"))), nil
		}
	})
	f.on("SecureLogon", func(r recorded) (*http.Response, error) {
		return httpmock.NewStringResponse(500, "crash while handling "+r.Body+" with "+r.Header.Get("Authorization")), nil
	})
	var details atomic.Int32
	f.on("GetReservationDetails", func(r recorded) (*http.Response, error) {
		if details.Add(1) == 1 {
			return httpmock.NewStringResponse(401, "token "+sessionToken+" expired"), nil
		}
		return httpmock.NewStringResponse(200, okEnvelope("GetReservationDetails", `<ResponseInfo><ReservationDescription Id="r"/></ResponseInfo>`)), nil
	})
	f.reply("AddServiceToReservation", 200, failEnvelope("AddServiceToReservation", "100", "Service with given alias already exists"))
	f.on("EndReservation", func(r recorded) (*http.Response, error) {
		return nil, errors.New("connection reset; auth was " + r.Header.Get("Authorization"))
	})
	f.on("GetSandboxData", func(r recorded) (*http.Response, error) {
		return httpmock.NewStringResponse(200, "garbage "+r.Header.Get("Authorization")), nil
	})

	c := newTestClient(t, f, func(cfg *Config) {
		cfg.Username, cfg.Password = "svc", password
		cfg.Logger = &logger
	})
	ctx := t.Context()
	var errs []error
	errs = append(errs, c.Connect(ctx))
	_, err := c.GetReservationDetails(ctx, "r", true) // 401 -> re-logon -> success
	errs = append(errs, err)
	errs = append(errs, c.AddServiceToReservation(ctx, "r", "S", "MUTEX", nil)) // API error
	errs = append(errs, c.EndReservation(ctx, "r", false))                      // transport error echoing the header
	_, err = c.GetSandboxData(ctx, "r")                                         // bad response echoing the header
	errs = append(errs, err)
	_, err = c.SecureLogon(ctx, adminToken, "") // 5xx echoing body and header
	errs = append(errs, err)
	_, err = c.Logon(ctx, "svc", password, "") // API error echoing the body
	errs = append(errs, err)

	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("setup failed: %v %v", errs[0], errs[1])
	}
	for i, e := range errs[2:] {
		if e == nil {
			t.Fatalf("call %d unexpectedly succeeded", i+2)
		}
	}
	var he *HTTPError
	if !errors.As(errs[5], &he) {
		t.Fatalf("SecureLogon err = %v", errs[5])
	}
	texts := []string{logBuf.String(), he.Body}
	for _, e := range errs {
		if e != nil {
			texts = append(texts, e.Error())
		}
	}
	for _, secret := range []string{password, adminToken, sessionToken, newToken, "Authorization", "MachineName="} {
		for _, s := range texts {
			if strings.Contains(s, secret) {
				t.Errorf("secret %q leaked in %q", secret, s)
			}
		}
	}
	if testing.Verbose() {
		t.Log(logBuf.String())
		for _, e := range errs {
			t.Log(e)
		}
	}
	for _, m := range []string{"GetReservationDetails", "AddServiceToReservation", "EndReservation", "api_error", "relogon"} {
		if !strings.Contains(logBuf.String(), m) {
			t.Errorf("log lacks %q:\n%s", m, logBuf.String())
		}
	}
	if n := strings.Count(logBuf.String(), `"message":"cloudshell call"`); n < 7 {
		t.Errorf("%d call log lines", n)
	}
}

func TestConcurrentUseIsRaceFree(t *testing.T) {
	f := newFakeServer()
	f.reply("Logon", 200, logonEnvelope("tok"))
	f.reply("GetSandboxData", 200, okEnvelope("GetSandboxData", `<ResponseInfo><SandboxDataKeyValues><SandboxDataKeyValue Key="k" Value="v"/></SandboxDataKeyValues></ResponseInfo>`))
	f.reply("SetSandboxData", 200, emptyOK("SetSandboxData"))
	var logBuf syncbuf.Buffer
	logger := zerolog.New(&logBuf).Level(zerolog.DebugLevel)
	c := newTestClient(t, f, func(cfg *Config) { cfg.Username, cfg.Password = "u", "p"; cfg.Logger = &logger })
	if err := c.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if i%2 == 0 {
					if _, err := c.GetSandboxData(t.Context(), "r"); err != nil {
						t.Error(err)
					}
				} else if err := c.SetSandboxData(t.Context(), "r", []SandboxDataKeyValue{{Key: "k", Value: "v"}}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
}

// TestWireBytes checks the request as it leaves the real net/http stack: header names in
// the reference's case, Host with port, no User-Agent, Content-Length = body length.
func TestWireBytes(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip(err)
	}
	defer l.Close()
	raw := make(chan string, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		var buf bytes.Buffer
		tmp := make([]byte, 4096)
		for {
			n, err := conn.Read(tmp)
			buf.Write(tmp[:n])
			if i := bytes.Index(buf.Bytes(), []byte("\r\n\r\n")); i >= 0 && bytes.HasSuffix(buf.Bytes(), []byte("</EndReservation>")) {
				break
			}
			if err != nil {
				break
			}
		}
		raw <- buf.String()
		body := emptyOK("EndReservation")
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nConnection: close\r\nContent-Length: "+
			strconv.Itoa(len(body))+"\r\n\r\n"+body)
	}()
	port := l.Addr().(*net.TCPAddr).Port
	c, err := New(Config{Host: "127.0.0.1", Port: port, MachineName: testMachine, SessionToken: testSessionToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EndReservation(t.Context(), testResID, false); err != nil {
		t.Fatal(err)
	}
	req := <-raw
	if testing.Verbose() {
		t.Logf("raw request:\n%s", req)
	}
	body := "<EndReservation><reservationId>" + testResID + "</reservationId><unmap>false</unmap></EndReservation>"
	hp := "127.0.0.1:" + strconv.Itoa(port)
	for _, line := range []string{
		"POST /ResourceManagerApiService/EndReservation HTTP/1.1\r\n",
		"\r\nHost: " + hp + "\r\n",
		"\r\nContent-Type: text/xml\r\n",
		"\r\nAccept: */*\r\n",
		"\r\nAccept-Encoding: identity\r\n",
		"\r\nClientTimeZoneId: UTC\r\n",
		"\r\nDateTimeFormat: MM/dd/yyyy HH:mm\r\n",
		"\r\nAuthorization: MachineName=build-agent-3:" + strconv.Itoa(port) + ";Token=" + testSessionToken + "\r\n",
		"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n",
		"\r\n\r\n" + body,
	} {
		if !strings.Contains(req, line) {
			t.Errorf("request lacks %q:\n%s", line, req)
		}
	}
	if strings.Contains(req, "gzip") {
		t.Errorf("request asks for gzip; the reference client asks for identity:\n%s", req)
	}
	if strings.Contains(strings.ToLower(req), "user-agent") {
		t.Errorf("request has a User-Agent:\n%s", req)
	}
}
