package mockapi

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/csmutex/csmutex/internal/syncbuf"
	"github.com/rs/zerolog"
)

func TestEnvelopeShape(t *testing.T) {
	h := newHarness(t)
	_, b, err := h.post("Logon", logonBody("admin", "admin", "Global"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<?xml version="1.0" encoding="utf-8"?>` + "\r\n<Response ",
		`CommandName="Logon"`,
		`Success="true"`,
		`xmlns="http://schemas.qualisystems.com/ResourceManagement/ApiCommandResult.xsd"`,
		`xmlns:xsd="http://www.w3.org/2001/XMLSchema"`,
		`xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"`,
		`<ErrorCode>0</ErrorCode>`,
		`<ResponseInfo xsi:type="LogonResponseInfo">`,
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("envelope lacks %q:\n%s", want, b)
		}
	}
	if bytes.Contains(b, []byte("<Error>")) {
		t.Errorf("success envelope has <Error>")
	}
	env := mustEnvelope(t, "Logon", b)
	info := env.info()
	if typ := info.Attrs[0]; typ.Name.Space != "http://www.w3.org/2001/XMLSchema-instance" || typ.Name.Local != "type" {
		t.Errorf("ResponseInfo type attribute = %+v", typ)
	}
	if d := info.find("Domain"); d.attr("Name") != "Global" || len(d.attr("DomainId")) != 36 {
		t.Errorf("Domain = %+v", d.Attrs)
	}
	if u := info.find("User"); u.attr("Name") != "admin" || u.attr("IsAdmin") != "true" {
		t.Errorf("User = %+v", u.Attrs)
	}
	tok := info.find("Token").attr("Token")
	if !strings.ContainsAny(tok, "+") || !strings.Contains(tok, "/") || !strings.HasSuffix(tok, "=") {
		t.Errorf("token %q should exercise + / =", tok)
	}

	// Payload-less methods answer a bare ResponseInfo.
	id := h.s.CreateReservation("r", "")
	env = h.ok("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M"))
	if !bytes.Contains(env.raw, []byte("<ResponseInfo />")) {
		t.Errorf("want bare <ResponseInfo />:\n%s", env.raw)
	}

	// Failure: Error before ErrorCode, no ResponseInfo, HTTP 200.
	env = h.fail("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M"), "Service with given alias already exists")
	if env.errCode() != "100" {
		t.Errorf("collision code = %s", env.errCode())
	}
	if i, j := bytes.Index(env.raw, []byte("<Error>")), bytes.Index(env.raw, []byte("<ErrorCode>")); i < 0 || j < i {
		t.Errorf("Error must precede ErrorCode:\n%s", env.raw)
	}
	if !bytes.Contains(env.raw, []byte(`Success="false"`)) {
		t.Errorf("no Success=false:\n%s", env.raw)
	}
}

func TestLogon(t *testing.T) {
	h := newHarness(t, WithUser("svc-lock", "s3cr&t<pw>", "Lab"))
	if h.token == "" {
		t.Fatal("default admin could not log on")
	}
	env := h.fail("Logon", logonBody("admin", "hunter2-wrong", "Global"), "wrong username or password")
	if strings.Contains(env.errMsg(), "hunter2") || bytes.Contains(env.raw, []byte("hunter2")) {
		t.Errorf("password echoed: %s", env.raw)
	}
	h.fail("Logon", logonBody("nobody", "x", "Global"), "wrong username or password")
	env = h.ok("Logon", logonBody("svc-lock", "s3cr&t<pw>", "Lab"))
	if u := env.info().find("User"); u.attr("IsAdmin") != "false" || env.info().find("Domain").attr("Name") != "Lab" {
		t.Errorf("logon info %s", env.raw)
	}
	h.fail("Logon", logonBody("svc-lock", "s3cr&t<pw>", "Global"), "is not a member of domain 'Global'")
	h.fail("Logon", logonBody("admin", "admin", "Nowhere"), "Domain 'Nowhere' was not found")
	h.ok("Logon", logonBody("admin", "admin", "Lab"))
	// Missing domainName takes the client default, Global.
	h.ok("Logon", el("Logon", tx("username", "admin"), tx("password", "admin")))

	hh := newHarness(t, WithoutDefaultUser())
	hh.fail("Logon", logonBody("admin", "admin", "Global"), "wrong username or password")
}

func TestSecureLogonAndLogoff(t *testing.T) {
	h := newHarness(t)
	env := h.ok("SecureLogon", el("SecureLogon", tx("token", h.token), tx("domainName", "Global")))
	tok2 := env.info().find("Token").attr("Token")
	if tok2 == "" || tok2 == h.token {
		t.Fatalf("SecureLogon must issue a new token, got %q", tok2)
	}
	h2 := h.with("other:8029", tok2)
	h2.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
	h.fail("SecureLogon", el("SecureLogon", tx("token", "bm9wZQ=="), tx("domainName", "Global")), "token is invalid")

	h2.ok("Logoff", "<Logoff />")
	resp, _, err := h2.post("GetServerDateAndTime", "<GetServerDateAndTime />")
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after Logoff: %v %v", resp.StatusCode, err)
	}
	// The first token is unaffected.
	h.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
	h.fail("SecureLogon", el("SecureLogon", tx("token", tok2)), "token is invalid")
}

func TestUnauthorized(t *testing.T) {
	h := newHarness(t)
	for name, hdr := range map[string]string{
		"missing":  "",
		"empty":    "MachineName=x:8029;Token=",
		"unknown":  "MachineName=x:8029;Token=Zm9vYmFy+/==",
		"garbage":  "Bearer abc",
		"no-token": "MachineName=x:8029",
	} {
		req, _ := http.NewRequest(http.MethodPost, h.url+apiPrefix+"GetServerDateAndTime", strings.NewReader("<GetServerDateAndTime />"))
		if hdr != "" {
			req.Header.Set("Authorization", hdr)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: HTTP %d", name, resp.StatusCode)
		}
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || bytes.Contains(b, []byte("<?xml")) {
			t.Errorf("%s: 401 body should be plain: %s", name, b)
		}
	}
	// A token with + / = must be taken literally, not URL-decoded.
	if !strings.ContainsAny(h.token, "+/") {
		t.Fatal("token lacks + or /")
	}
	h.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
}

func TestRoutingAndBadRequests(t *testing.T) {
	h := newHarness(t)
	env := h.fail("NoSuchMethod", "<NoSuchMethod />", "Unknown method 'NoSuchMethod'")
	if env.errCode() != "100" {
		t.Errorf("code %s", env.errCode())
	}
	h.fail("GetServerDateAndTime", "<GetServerDateAndTime>", "malformed request XML")
	h.fail("GetServerDateAndTime", "not xml at all", "malformed request XML")
	h.fail("GetServerDateAndTime", "", "empty body")
	h.fail("GetServerDateAndTime", "<Logoff />", "does not match method GetServerDateAndTime")
	h.fail("GetServerDateAndTime", "<GetServerDateAndTime /><GetServerDateAndTime />", "more than one root")
	h.fail("GetReservationDetails", el("GetReservationDetails", tx("reservationId", "x"), tx("disableCache", "maybe")), "invalid boolean value 'maybe'")
	h.fail("AddServiceToReservation", el("AddServiceToReservation", tx("reservationId", "x"), tx("serviceName", "Mutex Service"), tx("alias", "A"), tx("attributes", "oops")), "must be a list")

	for _, c := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, apiPrefix + "Logon", http.StatusMethodNotAllowed},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodPost, "/ResourceManagerApiService", http.StatusNotFound},
		{http.MethodPost, "/other/Logon", http.StatusNotFound},
	} {
		req, _ := http.NewRequest(c.method, h.url+c.path, strings.NewReader(""))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: HTTP %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
	if h.s.Calls("NoSuchMethod") != 1 || h.s.Calls("GetServerDateAndTime") != 5 {
		t.Errorf("calls: %d %d", h.s.Calls("NoSuchMethod"), h.s.Calls("GetServerDateAndTime"))
	}
	if h.s.Calls("") < 10 {
		t.Errorf("Calls(\"\") = %d", h.s.Calls(""))
	}
}

func TestInvalidDataModelFailsEveryRequest(t *testing.T) {
	h := newHarness(t, WithDataModel([]byte("<DataModelInfo><Oops")))
	if h.s.Err() == nil {
		t.Fatal("Err() = nil for a broken data model")
	}
	h.fail("Logon", logonBody("admin", "admin", "Global"), "data model")
}

func TestStartAddrClose(t *testing.T) {
	s := New()
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, port := s.Addr()
	if host != "127.0.0.1" || port == 0 || base != "http://127.0.0.1:"+itoa(port) {
		t.Fatalf("Start/Addr: %q %q %d", base, host, port)
	}
	if _, err := s.Start("127.0.0.1:0"); err == nil {
		t.Error("second Start should fail")
	}
	resp, err := http.Post(base+apiPrefix+"Logon", "text/xml", strings.NewReader(logonBody("admin", "admin", "Global")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Post(base+apiPrefix+"Logon", "text/xml", strings.NewReader("<Logon />")); err == nil {
		t.Error("still serving after Close")
	}
}

func TestRequestLogHasNoSecrets(t *testing.T) {
	var buf syncbuf.Buffer
	h := newHarness(t, WithLogger(zerolog.New(&buf)))
	h.fail("Logon", logonBody("admin", "topsecret-pw", "Global"), "wrong")
	h.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
	out := buf.String()
	for _, secret := range []string{"topsecret-pw", h.token, "Authorization", "Token="} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{`"method":"Logon"`, `"client":"test-host:8029"`, `"outcome":"failed"`, `"outcome":"ok"`, `"duration_ms"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

// Handlers must work with a plain ResponseRecorder too (no network).
func TestHandlerWithRecorder(t *testing.T) {
	s := New()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, apiPrefix+"Logon", strings.NewReader(logonBody("admin", "admin", ""))))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `Success="true"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
		t.Errorf("Content-Type %q", ct)
	}
}
