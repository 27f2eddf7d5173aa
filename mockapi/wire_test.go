package mockapi

import (
	"encoding/xml"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseRequest(t *testing.T) {
	body := "\xEF\xBB\xBF" + `<?xml version="1.0" encoding="us-ascii"?>
<AddServiceToReservation xmlns:x="urn:ignored">
  <alias>M &amp; &#252;</alias>
  <reservationId> r1 </reservationId>
  <serviceName />
  <attributes>
    <AttributeNameValue><Value>v1</Value><Name>n1</Name></AttributeNameValue>
    <x:Item><Name>n2</Name></x:Item>
  </attributes>
  <unknownExtra>ignored</unknownExtra>
</AddServiceToReservation>`
	r, err := parseRequest("AddServiceToReservation", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.str("alias", "d"); got != "M & ü" {
		t.Errorf("alias %q", got)
	}
	if got := r.str("reservationId", ""); got != " r1 " {
		t.Errorf("string values are not trimmed: %q", got)
	}
	if got := r.str("serviceName", "d"); got != "" {
		t.Errorf("empty element is an empty string: %q", got)
	}
	if got := r.str("missing", "def"); got != "def" {
		t.Errorf("missing takes default: %q", got)
	}
	objs, err := r.objects("attributes")
	if err != nil || len(objs) != 2 || objs[0]["Name"] != "n1" || objs[0]["Value"] != "v1" || objs[1]["Name"] != "n2" {
		t.Errorf("objects %v %v", objs, err)
	}
	if b, err := r.boolean("missing", true); !b || err != nil {
		t.Error("bool default")
	}

	for _, bad := range []string{
		`<?xml version="1.0" encoding="utf-16"?><X/>`,
		`<X>&nbsp;</X>`,
		`<X><a></X>`,
		`text<X/>`,
		strings.Repeat("<a>", 40) + strings.Repeat("</a>", 40),
	} {
		if _, err := parseRequest("X", []byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestAuthorizationHeader(t *testing.T) {
	a := parseAuthorization("MachineName=build-agent-3:8029;Token=Zm9v+/YmFy==")
	if a.machine != "build-agent-3:8029" || a.token != "Zm9v+/YmFy==" || a.client() != "build-agent-3" {
		t.Errorf("%+v %q", a, a.client())
	}
	if a := parseAuthorization("MachineName=host;Token="); a.client() != "host" || a.token != "" {
		t.Errorf("%+v", a)
	}
}

// The writer escapes attribute values so any string survives a round trip, including
// quotes, line breaks and characters XML cannot carry (replaced, never emitted raw).
func TestWriterEscaping(t *testing.T) {
	for _, v := range []string{`a"b'c`, "x<y>&z", "line1\nline2\r\n\tend", "grün €"} {
		w := payload()
		w.leaf("A", "V", v)
		w.text("T", v)
		var got struct {
			A struct {
				V string `xml:"V,attr"`
			}
			T string
		}
		if err := xml.Unmarshal([]byte("<R>"+w.b.String()+"</R>"), &got); err != nil {
			t.Fatal(err)
		}
		if got.A.V != v || got.T != v {
			t.Errorf("round trip %q -> attr %q text %q", v, got.A.V, got.T)
		}
	}
	w := payload()
	w.leaf("A", "V", "nul\x00here\xff")
	w.text("T", "it's \"quoted\"")
	out := w.b.String()
	if strings.Contains(out, "\x00") || strings.Contains(out, "\xff") || !strings.Contains(out, "nul\uFFFDhere\uFFFD") {
		t.Errorf("invalid characters must be replaced: %q", out)
	}
	if !strings.Contains(out, `<T>it's "quoted"</T>`) {
		t.Errorf("text escapes only what XML requires: %q", out)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		addServiceBody("5d2c9a10-1f3e-4b7a-8e21-6c0d4f9b2a11", "Mutex Service", "MUTEX", "Mutex Owner", "ci-runner-7 & friends"),
		removeServicesBody("r", "MUTEX"),
		`<SetConnectorsInReservation><reservationId>r</reservationId><connectors><SetConnectorRequest><Alias>uplink</Alias><Direction>bi</Direction><SourceResourceFullName>SW-1/Port 3</SourceResourceFullName><TargetResourceFullName>SW-2/Port 3</TargetResourceFullName></SetConnectorRequest></connectors></SetConnectorsInReservation>`,
		`<Logoff />`,
		`<?xml version="1.0" encoding="utf-8"?><AddServiceToReservation><attributes>text</attributes></AddServiceToReservation>`,
		"\xEF\xBB\xBF<AddServiceToReservation>&#252;&#x0;</AddServiceToReservation>",
		`<AddServiceToReservation><durationInMinutes>12x</durationInMinutes><disableCache>TRUE</disableCache></AddServiceToReservation>`,
		``,
		`<`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		// The writer must produce well-formed XML for any value, and round-trip every
		// value XML can carry.
		w := payload()
		w.leaf("A", "V", body)
		w.text("T", body)
		var back struct {
			A struct {
				V string `xml:"V,attr"`
			}
			T string
		}
		if err := xml.Unmarshal([]byte("<R>"+w.b.String()+"</R>"), &back); err != nil {
			t.Fatalf("writer produced invalid XML for %q: %v", body, err)
		}
		if utf8.ValidString(body) && !strings.ContainsFunc(body, func(r rune) bool { return !xmlChar(r) }) &&
			(back.A.V != body || back.T != body) {
			t.Fatalf("round trip of %q: attr %q text %q", body, back.A.V, back.T)
		}

		r, err := parseRequest("AddServiceToReservation", []byte(body))
		if err != nil {
			return
		}
		_ = r.str("alias", "")
		_, _ = r.boolean("disableCache", false)
		_, _ = r.integer("durationInMinutes", 0)
		_, _ = r.strings("services")
		_, _ = r.objects("attributes")
		// Whatever was parsed must render back as well-formed XML.
		out := renderFailure("AddServiceToReservation", &apiError{code: 100, msg: r.str("alias", "")})
		if err := xml.Unmarshal(out, new(elem)); err != nil {
			t.Fatalf("rendered invalid XML: %v", err)
		}
	})
}
