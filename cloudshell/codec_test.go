package cloudshell

import (
	"context"
	"errors"
	"math"
	"strconv"
	"testing"
)

// Golden request bodies. The expected strings are what the reference client's ElementTree
// serialisation produces for the same arguments.
func TestGoldenRequestBodies(t *testing.T) {
	const rid = testResID
	tests := []struct {
		name   string
		method string
		reply  string
		call   func(ctx context.Context, c *Client) error
		want   string
	}{
		{
			name:   "Logon",
			method: "Logon",
			reply:  logonEnvelope("tok"),
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Logon(ctx, "admin", "p&ss<w>rd", "")
				return err
			},
			want: `<Logon><username>admin</username><password>p&amp;ss&lt;w&gt;rd</password><domainName>Global</domainName></Logon>`,
		},
		{
			name:   "Logon empty password",
			method: "Logon",
			reply:  logonEnvelope("tok"),
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Logon(ctx, "admin", "", "Lab")
				return err
			},
			want: `<Logon><username>admin</username><password /><domainName>Lab</domainName></Logon>`,
		},
		{
			name:   "SecureLogon",
			method: "SecureLogon",
			reply:  logonEnvelope("tok"),
			call: func(ctx context.Context, c *Client) error {
				_, err := c.SecureLogon(ctx, "YWRtaW4=+/", "")
				return err
			},
			want: `<SecureLogon><token>YWRtaW4=+/</token><domainName>Global</domainName></SecureLogon>`,
		},
		{
			name:   "Logoff",
			method: "Logoff",
			reply:  emptyOK("Logoff"),
			call:   func(ctx context.Context, c *Client) error { return c.Logoff(ctx) },
			want:   `<Logoff />`,
		},
		{
			name:   "CreateImmediateReservation doc example",
			method: "CreateImmediateReservation",
			reply:  okEnvelope("CreateImmediateReservation", `<ResponseInfo><Reservation Id="r1"/></ResponseInfo>`),
			call: func(ctx context.Context, c *Client) error {
				_, err := c.CreateImmediateReservation(ctx, CreateReservationRequest{Name: "lock-test", Owner: "admin", DurationMinutes: 30})
				return err
			},
			want: `<CreateImmediateReservation><reservationName>lock-test</reservationName><owner>admin</owner><durationInMinutes>30</durationInMinutes><notifyOnStart>false</notifyOnStart><notifyOnEnd>false</notifyOnEnd><notificationMinutesBeforeEnd>0</notificationMinutesBeforeEnd><isTerminationProtectionEnabled>false</isTerminationProtectionEnabled><approvalSid /></CreateImmediateReservation>`,
		},
		{
			name:   "CreateImmediateReservation all set",
			method: "CreateImmediateReservation",
			reply:  okEnvelope("CreateImmediateReservation", `<ResponseInfo><Reservation Id="r1"/></ResponseInfo>`),
			call: func(ctx context.Context, c *Client) error {
				_, err := c.CreateImmediateReservation(ctx, CreateReservationRequest{
					Name: "Prüfung", Owner: "", DurationMinutes: 120, NotifyOnStart: true, NotifyOnEnd: true,
					NotificationMinutesBeforeEnd: 5, TerminationProtection: true, ApprovalSID: "S-1-5",
				})
				return err
			},
			want: `<CreateImmediateReservation><reservationName>Pr&#252;fung</reservationName><owner /><durationInMinutes>120</durationInMinutes><notifyOnStart>true</notifyOnStart><notifyOnEnd>true</notifyOnEnd><notificationMinutesBeforeEnd>5</notificationMinutesBeforeEnd><isTerminationProtectionEnabled>true</isTerminationProtectionEnabled><approvalSid>S-1-5</approvalSid></CreateImmediateReservation>`,
		},
		{
			name:   "EndReservation",
			method: "EndReservation",
			reply:  emptyOK("EndReservation"),
			call:   func(ctx context.Context, c *Client) error { return c.EndReservation(ctx, rid, true) },
			want:   `<EndReservation><reservationId>` + rid + `</reservationId><unmap>true</unmap></EndReservation>`,
		},
		{
			name:   "GetReservationDetails",
			method: "GetReservationDetails",
			reply:  okEnvelope("GetReservationDetails", `<ResponseInfo><ReservationDescription Id="x"/></ResponseInfo>`),
			call: func(ctx context.Context, c *Client) error {
				_, err := c.GetReservationDetails(ctx, rid, false)
				return err
			},
			want: `<GetReservationDetails><reservationId>` + rid + `</reservationId><disableCache>false</disableCache></GetReservationDetails>`,
		},
		{
			name:   "AddServiceToReservation doc example",
			method: "AddServiceToReservation",
			reply:  emptyOK("AddServiceToReservation"),
			call: func(ctx context.Context, c *Client) error {
				return c.AddServiceToReservation(ctx, rid, "Mutex Service", "MUTEX",
					[]AttributeNameValue{{Name: "Mutex Owner", Value: "ci-runner-7 & friends"}})
			},
			want: `<AddServiceToReservation><reservationId>5d2c9a10-1f3e-4b7a-8e21-6c0d4f9b2a11</reservationId><serviceName>Mutex Service</serviceName><alias>MUTEX</alias><attributes><AttributeNameValue><Name>Mutex Owner</Name><Value>ci-runner-7 &amp; friends</Value></AttributeNameValue></attributes></AddServiceToReservation>`,
		},
		{
			name:   "AddServiceToReservation no attributes, escaping and non-ASCII",
			method: "AddServiceToReservation",
			reply:  emptyOK("AddServiceToReservation"),
			call: func(ctx context.Context, c *Client) error {
				return c.AddServiceToReservation(ctx, rid, "Mutex Service", `Grüße "q" <t> 'x' €😀`, nil)
			},
			want: `<AddServiceToReservation><reservationId>` + rid + `</reservationId><serviceName>Mutex Service</serviceName><alias>Gr&#252;&#223;e "q" &lt;t&gt; 'x' &#8364;&#128512;</alias><attributes /></AddServiceToReservation>`,
		},
		{
			name:   "AddServiceToReservation empty attribute value",
			method: "AddServiceToReservation",
			reply:  emptyOK("AddServiceToReservation"),
			call: func(ctx context.Context, c *Client) error {
				return c.AddServiceToReservation(ctx, rid, "Mutex Service", "MUTEX",
					[]AttributeNameValue{{Name: "Mutex Owner"}, {Name: "B", Value: "2"}})
			},
			want: `<AddServiceToReservation><reservationId>` + rid + `</reservationId><serviceName>Mutex Service</serviceName><alias>MUTEX</alias><attributes><AttributeNameValue><Name>Mutex Owner</Name><Value /></AttributeNameValue><AttributeNameValue><Name>B</Name><Value>2</Value></AttributeNameValue></attributes></AddServiceToReservation>`,
		},
		{
			name:   "RemoveServicesFromReservation doc example",
			method: "RemoveServicesFromReservation",
			reply:  emptyOK("RemoveServicesFromReservation"),
			call: func(ctx context.Context, c *Client) error {
				return c.RemoveServicesFromReservation(ctx, rid, []string{"MUTEX"})
			},
			want: `<RemoveServicesFromReservation><reservationId>5d2c9a10-1f3e-4b7a-8e21-6c0d4f9b2a11</reservationId><services><string>MUTEX</string></services></RemoveServicesFromReservation>`,
		},
		{
			name:   "RemoveServicesFromReservation empty list",
			method: "RemoveServicesFromReservation",
			reply:  emptyOK("RemoveServicesFromReservation"),
			call: func(ctx context.Context, c *Client) error {
				return c.RemoveServicesFromReservation(ctx, rid, nil)
			},
			want: `<RemoveServicesFromReservation><reservationId>` + rid + `</reservationId><services /></RemoveServicesFromReservation>`,
		},
		{
			name:   "SetServiceAttributesValues",
			method: "SetServiceAttributesValues",
			reply:  emptyOK("SetServiceAttributesValues"),
			call: func(ctx context.Context, c *Client) error {
				return c.SetServiceAttributesValues(ctx, rid, "MUTEX", []AttributeNameValue{{Name: "Mutex Owner", Value: "a<b"}})
			},
			want: `<SetServiceAttributesValues><reservationId>` + rid + `</reservationId><serviceAlias>MUTEX</serviceAlias><attributeRequests><AttributeNameValue><Name>Mutex Owner</Name><Value>a&lt;b</Value></AttributeNameValue></attributeRequests></SetServiceAttributesValues>`,
		},
		{
			name:   "GetSandboxData",
			method: "GetSandboxData",
			reply:  okEnvelope("GetSandboxData", `<ResponseInfo/>`),
			call: func(ctx context.Context, c *Client) error {
				_, err := c.GetSandboxData(ctx, rid)
				return err
			},
			want: `<GetSandboxData><reservationId>` + rid + `</reservationId></GetSandboxData>`,
		},
		{
			name:   "SetSandboxData doc example",
			method: "SetSandboxData",
			reply:  emptyOK("SetSandboxData"),
			call: func(ctx context.Context, c *Client) error {
				return c.SetSandboxData(ctx, "5d2c…", []SandboxDataKeyValue{{Key: "mutex.owner", Value: "ci-runner-7"}})
			},
			// The doc writes "5d2c…" literally; on the wire the ellipsis is a char ref.
			want: `<SetSandboxData><reservationId>5d2c&#8230;</reservationId><sandboxDataKeyValues><SandboxDataKeyValue><Key>mutex.owner</Key><Value>ci-runner-7</Value></SandboxDataKeyValue></sandboxDataKeyValues></SetSandboxData>`,
		},
		{
			name:   "AddResourcesToReservation",
			method: "AddResourcesToReservation",
			reply:  okEnvelope("AddResourcesToReservation", `<ResponseInfo><Conflicts/></ResponseInfo>`),
			call: func(ctx context.Context, c *Client) error {
				_, err := c.AddResourcesToReservation(ctx, rid, []string{"SW-1", "SW-1/Port 3"}, false)
				return err
			},
			want: `<AddResourcesToReservation><reservationId>` + rid + `</reservationId><resourcesFullPath><string>SW-1</string><string>SW-1/Port 3</string></resourcesFullPath><shared>false</shared></AddResourcesToReservation>`,
		},
		{
			name:   "RemoveResourcesFromReservation",
			method: "RemoveResourcesFromReservation",
			reply:  okEnvelope("RemoveResourcesFromReservation", `<ResponseInfo/>`),
			call: func(ctx context.Context, c *Client) error {
				_, err := c.RemoveResourcesFromReservation(ctx, rid, []string{"SW-1"}, true)
				return err
			},
			want: `<RemoveResourcesFromReservation><reservationId>` + rid + `</reservationId><resourcesFullPath><string>SW-1</string></resourcesFullPath><deleteDeployedApps>true</deleteDeployedApps></RemoveResourcesFromReservation>`,
		},
		{
			name:   "SetConnectorsInReservation doc example",
			method: "SetConnectorsInReservation",
			reply:  emptyOK("SetConnectorsInReservation"),
			call: func(ctx context.Context, c *Client) error {
				return c.SetConnectorsInReservation(ctx, "5d2c…", []SetConnectorRequest{{
					SourceResourceFullName: "SW-1/Port 3", TargetResourceFullName: "SW-2/Port 3", Direction: "bi", Alias: "uplink",
				}})
			},
			want: `<SetConnectorsInReservation><reservationId>5d2c&#8230;</reservationId><connectors><SetConnectorRequest><Alias>uplink</Alias><Direction>bi</Direction><SourceResourceFullName>SW-1/Port 3</SourceResourceFullName><TargetResourceFullName>SW-2/Port 3</TargetResourceFullName></SetConnectorRequest></connectors></SetConnectorsInReservation>`,
		},
		{
			name:   "SetConnectorsInReservation empty alias",
			method: "SetConnectorsInReservation",
			reply:  emptyOK("SetConnectorsInReservation"),
			call: func(ctx context.Context, c *Client) error {
				return c.SetConnectorsInReservation(ctx, rid, []SetConnectorRequest{{
					SourceResourceFullName: "A", TargetResourceFullName: "B", Direction: "uni",
				}})
			},
			want: `<SetConnectorsInReservation><reservationId>` + rid + `</reservationId><connectors><SetConnectorRequest><Alias /><Direction>uni</Direction><SourceResourceFullName>A</SourceResourceFullName><TargetResourceFullName>B</TargetResourceFullName></SetConnectorRequest></connectors></SetConnectorsInReservation>`,
		},
		{
			name:   "RemoveConnectorsFromReservation",
			method: "RemoveConnectorsFromReservation",
			reply:  emptyOK("RemoveConnectorsFromReservation"),
			call: func(ctx context.Context, c *Client) error {
				return c.RemoveConnectorsFromReservation(ctx, rid, []string{"SW-1/Port 3", "SW-2/Port 3"})
			},
			want: `<RemoveConnectorsFromReservation><reservationId>` + rid + `</reservationId><endpoints><string>SW-1/Port 3</string><string>SW-2/Port 3</string></endpoints></RemoveConnectorsFromReservation>`,
		},
		{
			name:   "GetServerDateAndTime",
			method: "GetServerDateAndTime",
			reply:  okEnvelope("GetServerDateAndTime", `<ResponseInfo xsi:type="ServerTimeInfo" ServerDateTime="2012-06-21T10:52:43.4464527Z"/>`),
			call: func(ctx context.Context, c *Client) error {
				_, err := c.GetServerDateAndTime(ctx)
				return err
			},
			want: `<GetServerDateAndTime />`,
		},
		{
			name:   "WriteMessageToReservationOutput",
			method: "WriteMessageToReservationOutput",
			reply:  emptyOK("WriteMessageToReservationOutput"),
			call: func(ctx context.Context, c *Client) error {
				return c.WriteMessageToReservationOutput(ctx, rid, "lock \"MUTEX\" acquired > 5s & ok\r\n")
			},
			want: `<WriteMessageToReservationOutput><reservationId>` + rid + `</reservationId><message>lock "MUTEX" acquired &gt; 5s &amp; ok` + "\r\n" + `</message></WriteMessageToReservationOutput>`,
		},
		{
			name:   "WriteMessageToReservationOutput empty message",
			method: "WriteMessageToReservationOutput",
			reply:  emptyOK("WriteMessageToReservationOutput"),
			call: func(ctx context.Context, c *Client) error {
				return c.WriteMessageToReservationOutput(ctx, rid, "")
			},
			want: `<WriteMessageToReservationOutput><reservationId>` + rid + `</reservationId><message /></WriteMessageToReservationOutput>`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeServer()
			f.reply(tc.method, 200, tc.reply)
			c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = testSessionToken })
			if err := tc.call(t.Context(), c); err != nil {
				t.Fatalf("call: %v", err)
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("got %d requests, want 1", len(reqs))
			}
			if reqs[0].Body != tc.want {
				t.Errorf("body mismatch\n got: %s\nwant: %s", reqs[0].Body, tc.want)
			}
			if got := reqs[0].Header.Get("Content-Length"); got != "" && got != strconv.Itoa(len(tc.want)) {
				t.Errorf("Content-Length %s, want %d", got, len(tc.want))
			}
			for i := 0; i < len(reqs[0].Body); i++ {
				if reqs[0].Body[i] >= 0x80 {
					t.Fatalf("body is not pure ASCII at %d", i)
				}
			}
		})
	}
}

func TestEncodeCallParams(t *testing.T) {
	got, err := encodeRequest("DoThing", []Param{
		{"s", "x"}, {"e", ""}, {"n", nil}, {"b", true}, {"i", -7}, {"i64", int64(1) << 40},
		{"f1", 1.5}, {"f2", 30.0}, {"f3", 1e16}, {"f4", 1.5e-5}, {"f5", math.Copysign(0, -1)},
		{"l", []string{"a", ""}}, {"le", []string{}},
		{"sd", []SandboxDataKeyValue{{Key: "k", Value: ""}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `<DoThing><s>x</s><e /><n /><b>true</b><i>-7</i><i64>1099511627776</i64>` +
		`<f1>1.5</f1><f2>30.0</f2><f3>1e+16</f3><f4>1.5e-05</f4><f5>-0.0</f5>` +
		`<l><string>a</string><string /></l><le />` +
		`<sd><SandboxDataKeyValue><Key>k</Key><Value /></SandboxDataKeyValue></sd></DoThing>`
	if got != want {
		t.Errorf("\n got: %s\nwant: %s", got, want)
	}
}

func TestEncodeRejects(t *testing.T) {
	cases := []struct {
		method string
		params []Param
		field  string
	}{
		{"Bad Method", nil, "method"},
		{"", nil, "method"},
		{"M", []Param{{"x", int32(1)}}, "x"},
		{"M", []Param{{"x", map[string]string{}}}, "x"},
		{"M", []Param{{"x", []int{1}}}, "x"},
		{"M", []Param{{"bad name", "v"}}, "params[0].Name"},
		{"M", []Param{{"", "v"}}, "params[0].Name"},
	}
	for _, tc := range cases {
		_, err := encodeRequest(tc.method, tc.params)
		var ae *ArgumentError
		if !errors.As(err, &ae) || !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%q %v: err = %v, want ArgumentError", tc.method, tc.params, err)
			continue
		}
		if ae.Field != tc.field {
			t.Errorf("%q: field %q, want %q", tc.method, ae.Field, tc.field)
		}
	}
}

func TestCallSendsGenericRequest(t *testing.T) {
	f := newFakeServer()
	f.reply("CheckoutFromPool", 200, okEnvelope("CheckoutFromPool", `<ResponseInfo><Items>12</Items><Items>13</Items></ResponseInfo>`))
	c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = testSessionToken })
	n, err := c.Call(t.Context(), "CheckoutFromPool", Param{"selectionCriteriaJson", `{"a":"b"}`})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.requests()[0].Body; got != `<CheckoutFromPool><selectionCriteriaJson>{"a":"b"}</selectionCriteriaJson></CheckoutFromPool>` {
		t.Errorf("body %s", got)
	}
	items := n.List("Items")
	if len(items) != 2 || items[0].Text != "12" || items[1].Text != "13" {
		t.Errorf("items %+v", items)
	}

	if _, err := c.Call(t.Context(), ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("empty method: %v", err)
	}
	if _, err := c.Call(t.Context(), "X/../Y"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("path method: %v", err)
	}
	if _, err := c.Call(t.Context(), "X", Param{"p", struct{}{}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("bad type: %v", err)
	}
	if len(f.requests()) != 1 {
		t.Errorf("invalid calls reached the server")
	}
}

func TestArgumentValidation(t *testing.T) {
	f := newFakeServer()
	c := newTestClient(t, f, func(cfg *Config) { cfg.SessionToken = testSessionToken })
	ctx := t.Context()
	cases := []struct {
		name, method, field string
		err                 error
	}{
		{"Logon user", "Logon", "username", func() error { _, err := c.Logon(ctx, "", "p", ""); return err }()},
		{"SecureLogon token", "SecureLogon", "token", func() error { _, err := c.SecureLogon(ctx, "", ""); return err }()},
		{"Create name", "CreateImmediateReservation", "reservationName", func() error {
			_, err := c.CreateImmediateReservation(ctx, CreateReservationRequest{DurationMinutes: 1})
			return err
		}()},
		{"Create duration", "CreateImmediateReservation", "durationInMinutes", func() error {
			_, err := c.CreateImmediateReservation(ctx, CreateReservationRequest{Name: "x"})
			return err
		}()},
		{"End", "EndReservation", "reservationId", c.EndReservation(ctx, "", false)},
		{"Details", "GetReservationDetails", "reservationId", func() error { _, err := c.GetReservationDetails(ctx, "", true); return err }()},
		{"Add id", "AddServiceToReservation", "reservationId", c.AddServiceToReservation(ctx, "", "S", "A", nil)},
		{"Add service", "AddServiceToReservation", "serviceName", c.AddServiceToReservation(ctx, "r", "", "A", nil)},
		{"Add alias", "AddServiceToReservation", "alias", c.AddServiceToReservation(ctx, "r", "S", "", nil)},
		{"Add attr", "AddServiceToReservation", "attributes[0].Name", c.AddServiceToReservation(ctx, "r", "S", "A", []AttributeNameValue{{Value: "v"}})},
		{"Remove id", "RemoveServicesFromReservation", "reservationId", c.RemoveServicesFromReservation(ctx, "", []string{"A"})},
		{"Remove alias", "RemoveServicesFromReservation", "services[1]", c.RemoveServicesFromReservation(ctx, "r", []string{"A", ""})},
		{"SetAttr id", "SetServiceAttributesValues", "reservationId", c.SetServiceAttributesValues(ctx, "", "A", nil)},
		{"SetAttr alias", "SetServiceAttributesValues", "serviceAlias", c.SetServiceAttributesValues(ctx, "r", "", nil)},
		{"GetSandbox", "GetSandboxData", "reservationId", func() error { _, err := c.GetSandboxData(ctx, ""); return err }()},
		{"SetSandbox id", "SetSandboxData", "reservationId", c.SetSandboxData(ctx, "", nil)},
		{"SetSandbox key", "SetSandboxData", "sandboxDataKeyValues[0].Key", c.SetSandboxData(ctx, "r", []SandboxDataKeyValue{{Value: "v"}})},
		{"AddRes", "AddResourcesToReservation", "reservationId", func() error { _, err := c.AddResourcesToReservation(ctx, "", nil, false); return err }()},
		{"RemoveRes", "RemoveResourcesFromReservation", "resourcesFullPath[0]", func() error {
			_, err := c.RemoveResourcesFromReservation(ctx, "r", []string{""}, false)
			return err
		}()},
		{"SetConn id", "SetConnectorsInReservation", "reservationId", c.SetConnectorsInReservation(ctx, "", nil)},
		{"SetConn src", "SetConnectorsInReservation", "connectors[0].SourceResourceFullName", c.SetConnectorsInReservation(ctx, "r", []SetConnectorRequest{{TargetResourceFullName: "b"}})},
		{"RemoveConn", "RemoveConnectorsFromReservation", "reservationId", c.RemoveConnectorsFromReservation(ctx, "", nil)},
		{"Write", "WriteMessageToReservationOutput", "reservationId", c.WriteMessageToReservationOutput(ctx, "", "m")},
		{"nil ctx", "EndReservation", "ctx", c.EndReservation(nilContext(), "r", false)},
	}
	for _, tc := range cases {
		var ae *ArgumentError
		if !errors.As(tc.err, &ae) || !errors.Is(tc.err, ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want *ArgumentError", tc.name, tc.err)
			continue
		}
		if ae.Method != tc.method || ae.Field != tc.field {
			t.Errorf("%s: got %s/%s, want %s/%s", tc.name, ae.Method, ae.Field, tc.method, tc.field)
		}
		if IsTransient(tc.err) {
			t.Errorf("%s: argument error reported transient", tc.name)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests sent for invalid arguments", n)
	}
}

// nilContext hides the nil from vet: the client must refuse it without panicking.
func nilContext() context.Context { return nil }
