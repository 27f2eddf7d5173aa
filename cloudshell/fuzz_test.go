package cloudshell

import (
	"encoding/xml"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse feeds arbitrary bytes to the response parser and every typed decoder: whatever
// a server or proxy sends, parsing must return, never panic.
func FuzzParse(f *testing.F) {
	seeds := []string{
		docLogonSample,
		docFailureSample,
		okEnvelope("GetReservationDetails", docDetailsPayload),
		okEnvelope("GetSandboxData", `<ResponseInfo><SandboxDataKeyValues><SandboxDataKeyValue Key="k" Value="v"/></SandboxDataKeyValues></ResponseInfo>`),
		okEnvelope("AddResourcesToReservation", `<ResponseInfo><Conflicts><Conflict ResourceName="r"/></Conflicts></ResponseInfo>`),
		`<Response Success="true"><ResponseInfo ServerDateTime="2012-06-21T10:52:43Z"/></Response>`,
		`<Response Success="true"><ResponseInfo><Items>1</Items><Items>2</Items></ResponseInfo></Response>`,
		`<Response Success="true"><ResponseInfo><X V="a&#x0;b">c&#0;d</X></ResponseInfo></Response>`,
		`<?xml version="1.0" encoding="utf-16"?><Response Success="true"/>`,
		"\xFF\xFE<\x00R\x00/\x00>\x00",
		"\xEF\xBB\xBF<Response Success=\"on\"/>",
		`<Response Success="true"><ResponseInfo>`,
		`<html><body>502</body></html>`,
		`<!DOCTYPE x [<!ENTITY a "aaaa">]><Response Success="true">&a;</Response>`,
		`<Response Success="false"><Error>&#xD800;</Error><ErrorCode>99999999999999999999</ErrorCode></Response>`,
		"",
		"<",
		"&#",
		"&#x110000;",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := parseEnvelope("M", data)
		if err != nil {
			if n != nil {
				t.Fatal("node returned with an error")
			}
			_ = err.Error()
			return
		}
		if rd := n.Child("ReservationDescription"); rd != nil {
			_ = parseReservationDetails(rd)
		}
		_ = parseReservation(n.Child("Reservation"))
		_ = parseConflicts(n)
		_ = n.List("SandboxDataKeyValues")
		_ = n.Field("ServerDateTime")
		for _, name := range []string{"Items", "Services", "ResponseInfo", ""} {
			for _, it := range n.List(name) {
				_ = it.Field(name)
			}
		}
		checkUTF8(t, n, 0)
	})
}

// checkUTF8: whatever came in, the tree holds valid UTF-8 only.
func checkUTF8(t *testing.T, n *Node, depth int) {
	if n == nil || depth > 64 {
		return
	}
	if !utf8.ValidString(n.Text) || !utf8.ValidString(n.Name) {
		t.Fatalf("invalid UTF-8 in node %q", n.Name)
	}
	for k, v := range n.Attrs {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			t.Fatalf("invalid UTF-8 in attribute %q", k)
		}
	}
	for _, c := range n.Children {
		checkUTF8(t, c, depth+1)
	}
}

// FuzzEncodeText checks that any string parameter survives the trip through the request
// serializer and a standard XML parser, and that the body stays pure ASCII.
func FuzzEncodeText(f *testing.F) {
	for _, s := range []string{"", "MUTEX", "ci-runner-7 & friends", `"q" <t> 'x'`, "Grüße €😀", "]]>", "&amp;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		body, err := encodeRequest("AddServiceToReservation", []Param{{"alias", s}, {"services", []string{s}}})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(body); i++ {
			if body[i] >= utf8.RuneSelf {
				t.Fatalf("non-ASCII byte in body %q", body)
			}
		}
		if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return !isXMLChar(r) }) {
			return // not representable in XML 1.0; the reference sends it unfiltered too
		}
		var v struct {
			Alias    string   `xml:"alias"`
			Services []string `xml:"services>string"`
		}
		if err := xml.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("body does not parse: %v\n%s", err, body)
		}
		// XML parsers normalise CR and CRLF to LF.
		want := strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
		if v.Alias != want || len(v.Services) != 1 || v.Services[0] != want {
			t.Fatalf("round trip: got %q / %q, want %q", v.Alias, v.Services, want)
		}
	})
}
