package mockapi

import (
	"bytes"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Request bodies are written by hand (not with package cloudshell) so the tests pin the
// wire format independently of the client.

// el builds an element with child markup; tx an element with escaped text.
func el(name string, kids ...string) string {
	if len(kids) == 0 {
		return "<" + name + " />"
	}
	return "<" + name + ">" + strings.Join(kids, "") + "</" + name + ">"
}

func tx(name, text string) string {
	if text == "" {
		return "<" + name + " />"
	}
	var b bytes.Buffer
	// Only & < > are escaped, and non-ASCII goes out as numeric references, exactly
	// like the reference client (ElementTree, us-ascii, xmlcharrefreplace).
	for _, r := range text {
		switch {
		case r == '&':
			b.WriteString("&amp;")
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r > 127:
			b.WriteString("&#" + itoa(int(r)) + ";")
		default:
			b.WriteRune(r)
		}
	}
	return "<" + name + ">" + b.String() + "</" + name + ">"
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for n > 0 {
		d = append([]byte{byte('0' + n%10)}, d...)
		n /= 10
	}
	return string(d)
}

func strList(name string, items ...string) string {
	var kids []string
	for _, it := range items {
		kids = append(kids, tx("string", it))
	}
	return el(name, kids...)
}

func attrList(name string, pairs ...string) string {
	var kids []string
	for i := 0; i+1 < len(pairs); i += 2 {
		kids = append(kids, el("AttributeNameValue", tx("Name", pairs[i]), tx("Value", pairs[i+1])))
	}
	return el(name, kids...)
}

func addServiceBody(resID, model, alias string, attrs ...string) string {
	return el("AddServiceToReservation", tx("reservationId", resID), tx("serviceName", model),
		tx("alias", alias), attrList("attributes", attrs...))
}

func removeServicesBody(resID string, aliases ...string) string {
	return el("RemoveServicesFromReservation", tx("reservationId", resID), strList("services", aliases...))
}

func detailsBody(resID string, disableCache bool) string {
	dc := "false"
	if disableCache {
		dc = "true"
	}
	return el("GetReservationDetails", tx("reservationId", resID), tx("disableCache", dc))
}

func logonBody(user, password, domain string) string {
	return el("Logon", tx("username", user), tx("password", password), tx("domainName", domain))
}

// elem is a generic response tree for assertions.
type elem struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Kids    []elem     `xml:",any"`
	Text    string     `xml:",chardata"`
}

func (e *elem) attr(name string) string {
	for _, a := range e.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func (e *elem) hasAttr(name string) bool {
	for _, a := range e.Attrs {
		if a.Name.Local == name {
			return true
		}
	}
	return false
}

// find follows a path of child names; nil if absent.
func (e *elem) find(path ...string) *elem {
	cur := e
	for _, p := range path {
		var next *elem
		for i := range cur.Kids {
			if cur.Kids[i].XMLName.Local == p {
				next = &cur.Kids[i]
				break
			}
		}
		if next == nil {
			return nil
		}
		cur = next
	}
	return cur
}

type envelope struct {
	raw  []byte
	root elem
}

func (e *envelope) success() bool { return e.root.attr("Success") == "true" }
func (e *envelope) errMsg() string {
	if x := e.root.find("Error"); x != nil {
		return x.Text
	}
	return ""
}
func (e *envelope) errCode() string {
	if x := e.root.find("ErrorCode"); x != nil {
		return x.Text
	}
	return ""
}
func (e *envelope) info() *elem { return e.root.find("ResponseInfo") }

type harness struct {
	t       testing.TB
	s       *Server
	ts      *httptest.Server
	url     string
	token   string
	machine string
}

func newHarness(t testing.TB, opts ...Option) *harness {
	t.Helper()
	s := New(opts...)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	h := &harness{t: t, s: s, ts: ts, url: ts.URL, machine: "test-host:8029"}
	if s.Err() == nil {
		env := h.call("Logon", logonBody("admin", "admin", "Global"))
		if env.success() {
			h.token = env.info().find("Token").attr("Token")
		}
	}
	return h
}

// with returns a copy that sends another machine name / token.
func (h *harness) with(machine, token string) *harness {
	c := *h
	c.machine, c.token = machine, token
	return &c
}

func (h *harness) post(method, body string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, h.url+apiPrefix+method, strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "text/xml")
	req.Header.Set("Accept", "*/*")
	req.Header.Set("ClientTimeZoneId", "UTC")
	req.Header.Set("DateTimeFormat", "MM/dd/yyyy HH:mm")
	req.Header.Set("Authorization", "MachineName="+h.machine+";Token="+h.token)
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// call expects an HTTP 200 XML envelope.
func (h *harness) call(method, body string) *envelope {
	h.t.Helper()
	resp, b, err := h.post(method, body)
	if err != nil {
		h.t.Fatalf("%s: %v", method, err)
	}
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("%s: HTTP %d: %s", method, resp.StatusCode, b)
	}
	return mustEnvelope(h.t, method, b)
}

func mustEnvelope(t testing.TB, method string, b []byte) *envelope {
	t.Helper()
	env := &envelope{raw: b}
	if err := xml.Unmarshal(b, &env.root); err != nil {
		t.Fatalf("%s: response is not XML: %v\n%s", method, err, b)
	}
	if env.root.XMLName.Local != "Response" || env.root.XMLName.Space != resultNS {
		t.Fatalf("%s: root %v", method, env.root.XMLName)
	}
	if got := env.root.attr("CommandName"); got != method {
		t.Fatalf("CommandName = %q, want %q", got, method)
	}
	return env
}

// ok expects Success="true".
func (h *harness) ok(method, body string) *envelope {
	h.t.Helper()
	env := h.call(method, body)
	if !env.success() {
		h.t.Fatalf("%s failed: %s (%s)", method, env.errMsg(), env.errCode())
	}
	return env
}

// fail expects Success="false" with a message containing want.
func (h *harness) fail(method, body, want string) *envelope {
	h.t.Helper()
	env := h.call(method, body)
	if env.success() {
		h.t.Fatalf("%s succeeded, want failure %q", method, want)
	}
	if !strings.Contains(env.errMsg(), want) {
		h.t.Fatalf("%s: error %q does not contain %q", method, env.errMsg(), want)
	}
	if env.info() != nil {
		h.t.Fatalf("%s: failure envelope carries ResponseInfo", method)
	}
	return env
}

func (h *harness) details(resID string, disableCache bool) *elem {
	h.t.Helper()
	return h.ok("GetReservationDetails", detailsBody(resID, disableCache)).info().find("ReservationDescription")
}

func services(d *elem) map[string]map[string]string {
	out := map[string]map[string]string{}
	if s := d.find("Services"); s != nil {
		for _, sv := range s.Kids {
			attrs := map[string]string{}
			if a := sv.find("Attributes"); a != nil {
				for _, at := range a.Kids {
					attrs[at.attr("Name")] = at.attr("Value")
				}
			}
			out[sv.attr("Alias")] = attrs
		}
	}
	return out
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 14, 15, 9, 26, 535000000, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
