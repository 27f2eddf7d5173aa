package cloudshell

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// docLogonSample is the Logon envelope of doc section 3.1, verbatim.
const docLogonSample = `<?xml version="1.0" encoding="utf-8"?>
<Response CommandName="Logon" Success="true"
    xmlns="http://schemas.qualisystems.com/ResourceManagement/ApiCommandResult.xsd"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <ErrorCode>0</ErrorCode>
  <ResponseInfo xsi:type="LogonResponseInfo">
    <Domain Name="Global" Description="all resources" DomainId="7e0c3b8a-2d4f-4c61-9a0e-5b1f2c3d4e5f"/>
    <User Name="svc-lock" IsAdmin="false" IsActive="true" IsDomainAdmin="false"/>
    <Token Token="Q2xvdWRTaGVsbFRva2Vu+x/="/>
  </ResponseInfo>
</Response>`

// docFailureSample is the failure envelope of doc section 3.1, verbatim.
const docFailureSample = `<Response CommandName="AddServiceToReservation" Success="false"
    xmlns="http://schemas.qualisystems.com/ResourceManagement/ApiCommandResult.xsd">
  <Error>Service with given alias already exists</Error>
  <ErrorCode>100</ErrorCode>
</Response>`

// docDetailsPayload is the GetReservationDetails payload of doc section 4.3 (the "…"
// placeholders filled in).
const docDetailsPayload = `<ResponseInfo xsi:type="GetReservationDescriptionResponseInfo">
  <ReservationDescription Id="5d2c9a10-1f3e-4b7a-8e21-6c0d4f9b2a11" Name="nightly" Owner="svc-ci" Booked="true"
      Status="Started" ProvisioningStatus="Ready" DomainName="Global" StartTime="03/02/2015 18:21:00" EndTime="03/02/2015 20:21:00">
    <Resources><ReservedResource Name="SW-1" FullAddress="10.1.1.5" Shared="false"
        Locked="false" Released="false" ResourceFamilyName="Switch" ResourceModelName="L2 Switch"/></Resources>
    <Connectors><Connector Alias="uplink" Type="Default" Direction="bi"
        Source="SW-1/Port 3" Target="SW-2/Port 3"><Attributes/></Connector></Connectors>
    <Services>
      <Service ServiceName="Mutex Service" Alias="MUTEX">
        <Attributes><Attribute Name="Mutex Owner" Value="ci-runner-7"/></Attributes>
      </Service>
    </Services>
    <SetupStage>Ended</SetupStage>
  </ReservationDescription>
</ResponseInfo>`

func wantDocDetails() *ReservationDetails {
	return &ReservationDetails{
		Reservation: Reservation{
			ID: "5d2c9a10-1f3e-4b7a-8e21-6c0d4f9b2a11", Name: "nightly", Owner: "svc-ci", DomainName: "Global",
			StartTime: "03/02/2015 18:21:00", EndTime: "03/02/2015 20:21:00",
			Status: "Started", ProvisioningStatus: "Ready", Booked: true,
		},
		Services:   []Service{{ServiceName: "Mutex Service", Alias: "MUTEX", Attributes: []Attribute{{Name: "Mutex Owner", Value: "ci-runner-7"}}}},
		Resources:  []ReservedResource{{Name: "SW-1", FullAddress: "10.1.1.5", ResourceFamilyName: "Switch", ResourceModelName: "L2 Switch"}},
		Connectors: []Connector{{Alias: "uplink", Type: "Default", Direction: "bi", Source: "SW-1/Port 3", Target: "SW-2/Port 3"}},
		SetupStage: "Ended",
	}
}

func TestParseDocLogonSample(t *testing.T) {
	f := newFakeServer()
	f.reply("Logon", 200, docLogonSample)
	f.reply("EndReservation", 200, emptyOK("EndReservation"))
	c := newTestClient(t, f, nil)
	res, err := c.Logon(t.Context(), "svc-lock", "pw", "")
	if err != nil {
		t.Fatal(err)
	}
	want := &LogonResult{DomainName: "Global", DomainID: "7e0c3b8a-2d4f-4c61-9a0e-5b1f2c3d4e5f", UserName: "svc-lock"}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("got %+v want %+v", res, want)
	}
	if err := c.EndReservation(t.Context(), "r", false); err != nil {
		t.Fatal(err)
	}
	if got := f.requests()[1].Header.Get("Authorization"); got != "MachineName=build-agent-3:8029;Token=Q2xvdWRTaGVsbFRva2Vu+x/=" {
		t.Errorf("Authorization after logon = %q", got)
	}
}

func TestParseFailureSample(t *testing.T) {
	_, err := parseEnvelope("AddServiceToReservation", []byte(docFailureSample))
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v", err)
	}
	if ae.Code != 100 || ae.Message != "Service with given alias already exists" || ae.Method != "AddServiceToReservation" {
		t.Errorf("got %+v", ae)
	}
	if got := ae.Error(); got != "CloudShell API error 100: Service with given alias already exists" {
		t.Errorf("Error() = %q", got)
	}
	if !IsAliasCollision(err) {
		t.Error("IsAliasCollision false for the collision message")
	}
}

func TestParseReservationDetailsForms(t *testing.T) {
	want := wantDocDetails()
	unNamespaced := strings.ReplaceAll(okEnvelope("GetReservationDetails", docDetailsPayload), nsAttrs, "")
	unNamespaced = strings.ReplaceAll(unNamespaced, "xsi:type=", "type=")
	prefixed := `<?xml version="1.0"?><cs:Response xmlns:cs="http://schemas.qualisystems.com/ResourceManagement/ApiCommandResult.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" cs:CommandName="GetReservationDetails" Success="true"><cs:ErrorCode>0</cs:ErrorCode>` +
		strings.NewReplacer("<R", "<cs:R", "</R", "</cs:R", "<S", "<cs:S", "</S", "</cs:S", "<C", "<cs:C", "</C", "</cs:C", "<A", "<cs:A", "</A", "</cs:A").Replace(docDetailsPayload) +
		`</cs:Response>`
	// Child-element form of every scalar, unknown item tags, and the older
	// ResourceMappingType name.
	elementForm := okEnvelope("GetReservationDetails", `<ResponseInfo>
  <ReservationDescription>
    <Id>5d2c9a10-1f3e-4b7a-8e21-6c0d4f9b2a11</Id><Name>nightly</Name><Owner>svc-ci</Owner><Booked>True</Booked>
    <Status>Started</Status><ProvisioningStatus>Ready</ProvisioningStatus><DomainName>Global</DomainName>
    <StartTime>03/02/2015 18:21:00</StartTime><EndTime>03/02/2015 20:21:00</EndTime>
    <Resources><Whatever><Name>SW-1</Name><FullAddress>10.1.1.5</FullAddress><Shared>no</Shared>
      <ResourceFamilyName>Switch</ResourceFamilyName><ResourceModelName>L2 Switch</ResourceModelName></Whatever></Resources>
    <Connectors><Conn Alias="uplink" Type="Default" ResourceMappingType="bi" Source="SW-1/Port 3" Target="SW-2/Port 3"/></Connectors>
    <Services>
      <ServiceInstance><ServiceName>Mutex Service</ServiceName><Alias>MUTEX</Alias>
        <Attributes><AttributeValueInfo><Name>Mutex Owner</Name><Value>ci-runner-7</Value></AttributeValueInfo></Attributes>
      </ServiceInstance>
    </Services>
    <SetupStage>Ended</SetupStage>
  </ReservationDescription>
</ResponseInfo>`)

	for name, body := range map[string]string{
		"namespaced":    okEnvelope("GetReservationDetails", docDetailsPayload),
		"un-namespaced": unNamespaced,
		"prefixed":      prefixed,
		"element form":  elementForm,
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeServer()
			f.reply("GetReservationDetails", 200, body)
			c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })
			got, err := c.GetReservationDetails(t.Context(), testResID, true)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("\n got %+v\nwant %+v", got, want)
			}
			svc, ok := got.Service("MUTEX")
			if !ok {
				t.Fatal("no MUTEX service")
			}
			if v, ok := svc.Attribute("Mutex Owner"); !ok || v != "ci-runner-7" {
				t.Errorf("owner %q %v", v, ok)
			}
		})
	}
}

func TestParseLiveStatusAndEmptyLists(t *testing.T) {
	body := okEnvelope("GetReservationDetails", `<ResponseInfo><ReservationDescription Id="r" Booked="1">
		<Services/><Resources></Resources><Connectors>  </Connectors>
		<ReservationLiveStatus ReservationId="r" ReservationLiveStatusName="Ended" ReservationLiveStatusDescription="over"/>
	</ReservationDescription></ResponseInfo>`)
	rd, err := parseEnvelope("GetReservationDetails", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	d := parseReservationDetails(rd.Child("ReservationDescription"))
	if d.LiveStatusName != "Ended" || !d.Booked {
		t.Errorf("got %+v", d.Reservation)
	}
	if len(d.Services)+len(d.Resources)+len(d.Connectors) != 0 {
		t.Errorf("empty wrappers produced items: %+v", d)
	}
}

func TestParseSandboxConflictsServerTime(t *testing.T) {
	f := newFakeServer()
	f.reply("GetSandboxData", 200, okEnvelope("GetSandboxData", `<ResponseInfo xsi:type="GetSandboxDataInfo"><SandboxDataKeyValues>
		<SandboxDataKeyValue Key="mutex.owner" Value="ci-runner-7"/>
		<SandboxDataKeyValue><Key>k2</Key><Value>v &amp; w</Value></SandboxDataKeyValue>
	</SandboxDataKeyValues></ResponseInfo>`))
	f.reply("AddResourcesToReservation", 200, okEnvelope("AddResourcesToReservation", `<ResponseInfo xsi:type="ReserveResourcesResponseInfo"><Conflicts>
		<Conflict ResourceName="SW-1" ConflictType="Reserved" Topology="" ConflictWith="nightly" ConflictWithUser="bob" ConflictStarted="s" ConflictPlannedEndTime="e"/>
	</Conflicts></ResponseInfo>`))
	f.reply("GetServerDateAndTime", 200, okEnvelope("GetServerDateAndTime",
		`<ResponseInfo xsi:type="ServerTimeInfo" ServerDateTime="2012-06-21T10:52:43.4464527Z" ServerDateTimeString="21/06/2012 10:52"/>`))
	c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = "t" })

	kv, err := c.GetSandboxData(t.Context(), "r")
	if err != nil {
		t.Fatal(err)
	}
	if want := []SandboxDataKeyValue{{"mutex.owner", "ci-runner-7"}, {"k2", "v & w"}}; !reflect.DeepEqual(kv, want) {
		t.Errorf("sandbox %+v", kv)
	}
	conf, err := c.AddResourcesToReservation(t.Context(), "r", []string{"SW-1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(conf) != 1 || conf[0] != (Conflict{"SW-1", "Reserved", "", "nightly", "bob", "s", "e"}) {
		t.Errorf("conflicts %+v", conf)
	}
	st, err := c.GetServerDateAndTime(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Raw != "2012-06-21T10:52:43.4464527Z" || !st.Time.Equal(time.Date(2012, 6, 21, 10, 52, 43, 446452700, time.UTC)) {
		t.Errorf("time %+v", st)
	}
}

func TestParseTolerance(t *testing.T) {
	cases := map[string]string{
		"NUL hex char ref":     `<Response Success="true"><ResponseInfo><X V="a&#x0;b">c&#x0;d</X></ResponseInfo></Response>`,
		"NUL dec char ref":     `<Response Success="true"><ResponseInfo><X V="a&#0;b">c&#00;d</X></ResponseInfo></Response>`,
		"utf-16 declaration":   `<?xml version="1.0" encoding="utf-16"?><Response Success="true"><ResponseInfo><X V="a&#xFFFD;b">c&#xFFFD;d</X></ResponseInfo></Response>`,
		"unknown charset":      `<?xml version="1.0" encoding="x-klingon"?><Response Success="true"><ResponseInfo><X V="a&#xFFFD;b">c&#xFFFD;d</X></ResponseInfo></Response>`,
		"utf-8 BOM":            "\xEF\xBB\xBF" + `<?xml version="1.0" encoding="utf-8"?><Response Success="true"><ResponseInfo><X V="a&#xFFFD;b">c&#xFFFD;d</X></ResponseInfo></Response>`,
		"raw control char":     "<Response Success=\"true\"><ResponseInfo><X V=\"a\x01b\">c\x00d</X></ResponseInfo></Response>",
		"success YES, trailer": `<Response Success="YES"><ResponseInfo><X V="a&#xFFFD;b">c&#xFFFD;d</X></ResponseInfo></Response><!-- trailing -->junk`,
		"success as element":   `<Response><Success>on</Success><ResponseInfo><X V="a&#xFFFD;b">c&#xFFFD;d</X></ResponseInfo></Response>`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			n, err := parseEnvelope("M", []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			x := n.Child("X")
			if x.Field("V") != "a\uFFFDb" || x.Text != "c\uFFFDd" {
				t.Errorf("got V=%q text=%q", x.Field("V"), x.Text)
			}
		})
	}
}

func TestParseUTF16AndLatin1(t *testing.T) {
	doc := `<?xml version="1.0" encoding="utf-16"?><Response Success="true"><ResponseInfo V="Grüße"/></Response>`
	var le []byte
	le = append(le, 0xFF, 0xFE)
	for _, r := range doc {
		le = append(le, byte(r), byte(r>>8))
	}
	n, err := parseEnvelope("M", le)
	if err != nil {
		t.Fatal(err)
	}
	if n.Field("V") != "Grüße" {
		t.Errorf("utf-16: %q", n.Field("V"))
	}
	latin := []byte("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><Response Success=\"true\"><ResponseInfo V=\"Gr\xfc\xdfe\"/></Response>")
	n, err = parseEnvelope("M", latin)
	if err != nil {
		t.Fatal(err)
	}
	if n.Field("V") != "Grüße" {
		t.Errorf("latin-1: %q", n.Field("V"))
	}
}

func TestParseSuccessValues(t *testing.T) {
	for _, s := range []string{"true", "True", "TRUE", "yes", "on", " true "} {
		if _, err := parseEnvelope("M", []byte(`<Response Success="`+s+`"/>`)); err != nil {
			t.Errorf("Success=%q: %v", s, err)
		}
	}
	for _, s := range []string{"false", "1", "", "no", "truthy"} {
		_, err := parseEnvelope("M", []byte(`<Response Success="`+s+`"><ErrorCode>x</ErrorCode></Response>`))
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != 0 {
			t.Errorf("Success=%q: err=%v", s, err)
		}
	}
}

func TestParseBadBodies(t *testing.T) {
	for name, body := range map[string]string{
		"empty":      "",
		"whitespace": " \n ",
		"html":       "<html><body>Bad Gateway</body></html>",
		"json":       `{"Success":true}`,
		"truncated":  `<?xml version="1.0"?><Response Success="true"><ResponseInfo><Token Token="x"/>`,
		"text":       "OK",
		"mismatched": `<Response Success="true"></Respons>`,
		"decl only":  `<?xml version="1.0"?>`,
	} {
		_, err := parseEnvelope("M", []byte(body))
		var ee *errEnvelope
		if !errors.As(err, &ee) {
			t.Errorf("%s: err = %v, want envelope error", name, err)
		}
	}
}

func TestNodeNilSafety(t *testing.T) {
	var n *Node
	if n.Field("x") != "" || n.Child("x") != nil || n.List("x") != nil {
		t.Error("nil node not empty")
	}
	if n.Child("a").Child("b").Field("c") != "" {
		t.Error("chain on nil")
	}
}

func TestNodeFieldRules(t *testing.T) {
	n, err := decodeTree([]byte(`<R A="attr" Empty=""><A>child</A><B>only child</B><Empty>child</Empty><L><x>1</x><y>2</y></L></R>`))
	if err != nil {
		t.Fatal(err)
	}
	if n.Field("A") != "attr" || n.Field("B") != "only child" || n.Field("Empty") != "" || n.Field("Missing") != "" {
		t.Errorf("fields: %q %q %q", n.Field("A"), n.Field("B"), n.Field("Empty"))
	}
	if l := n.List("L"); len(l) != 2 || l[0].Name != "x" || l[1].Text != "2" {
		t.Errorf("list: %+v", l)
	}
}

func TestParseBoolAndInt(t *testing.T) {
	for _, s := range []string{"true", "1", "yes", "on", "TRUE", "On"} {
		if !parseBool(s) {
			t.Errorf("parseBool(%q) false", s)
		}
	}
	for _, s := range []string{"false", "0", "", "no", "y"} {
		if parseBool(s) {
			t.Errorf("parseBool(%q) true", s)
		}
	}
	if parseInt("100") != 100 || parseInt(" 7 ") != 7 || parseInt("x") != 0 || parseInt("1.5") != 0 {
		t.Error("parseInt")
	}
}
