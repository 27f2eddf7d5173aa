package mockapi_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-retry"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutexpkg"
)

// These tests run package cloudshell against the mock over real HTTP. The two were written
// independently from the same protocol notes, so agreement here is evidence that both
// follow the wire format, not that one copies the other.

func startMock(t *testing.T, opts ...mockapi.Option) (*mockapi.Server, string) {
	t.Helper()
	s := mockapi.New(opts...)
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, base
}

func clientConfig(s *mockapi.Server) cloudshell.Config {
	host, port := s.Addr()
	return cloudshell.Config{
		Host: host, Port: port,
		Username: "admin", Password: "admin", Domain: "Global",
		MachineName: "it-runner",
		Timeout:     5 * time.Second,
		ReadRetry: func() retry.Backoff {
			return retry.WithMaxRetries(2, retry.NewConstant(time.Millisecond))
		},
	}
}

func dial(t *testing.T, s *mockapi.Server) *cloudshell.Client {
	t.Helper()
	c, err := cloudshell.Dial(context.Background(), clientConfig(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientEveryMethod(t *testing.T) {
	ctx := context.Background()
	s, base := startMock(t, mockapi.WithResource("SW-1", "Switch", "L2 Switch"), mockapi.WithResource("SW-2", "Switch", "L2 Switch"))
	c := dial(t, s)

	st, err := c.GetServerDateAndTime(ctx)
	if err != nil || st.Time.IsZero() || time.Since(st.Time) > time.Minute {
		t.Fatalf("server time %+v %v", st, err)
	}

	res, err := c.CreateImmediateReservation(ctx, cloudshell.CreateReservationRequest{Name: "it", DurationMinutes: 30})
	if err != nil {
		t.Fatal(err)
	}
	if res.ID == "" || res.Name != "it" || res.Owner != "admin" || res.Status != "Started" || res.ProvisioningStatus != "Ready" || !res.Booked {
		t.Fatalf("reservation %+v", res)
	}
	id := res.ID

	owner := `Jürgen & <co> "q" 'x'`
	if err := c.AddServiceToReservation(ctx, id, mutexpkg.ModelName, "MUTEX",
		[]cloudshell.AttributeNameValue{{Name: mutexpkg.OwnerAttrName, Value: owner}}); err != nil {
		t.Fatal(err)
	}
	err = c.AddServiceToReservation(ctx, id, mutexpkg.ModelName, "MUTEX", nil)
	if !cloudshell.IsAliasCollision(err) {
		t.Fatalf("collision: %v", err)
	}
	var ae *cloudshell.APIError
	if !errors.As(err, &ae) || ae.Code != 100 || errors.Is(err, cloudshell.ErrAmbiguous) {
		t.Fatalf("collision error %#v", err)
	}
	if err := c.AddServiceToReservation(ctx, id, mutexpkg.ModelName, "OTHER", nil); err != nil {
		t.Fatal(err)
	}

	d, err := c.GetReservationDetails(ctx, id, true)
	if err != nil {
		t.Fatal(err)
	}
	sv, ok := d.Service("MUTEX")
	if v, _ := sv.Attribute(mutexpkg.OwnerAttrName); !ok || v != owner || sv.ServiceName != mutexpkg.ModelName {
		t.Fatalf("service %+v", sv)
	}
	if sv, _ := d.Service("OTHER"); len(sv.Attributes) != 1 {
		t.Fatalf("default attribute missing: %+v", sv)
	}

	if err := c.SetServiceAttributesValues(ctx, id, "OTHER", []cloudshell.AttributeNameValue{{Name: mutexpkg.OwnerAttrName, Value: "b"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetSandboxData(ctx, id, []cloudshell.SandboxDataKeyValue{{Key: "z", Value: "1"}, {Key: "a", Value: "ü2"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetSandboxData(ctx, id, []cloudshell.SandboxDataKeyValue{{Key: "z", Value: "3"}}); err != nil {
		t.Fatal(err)
	}
	kv, err := c.GetSandboxData(ctx, id)
	if err != nil || len(kv) != 2 || kv[0] != (cloudshell.SandboxDataKeyValue{Key: "z", Value: "3"}) || kv[1].Value != "ü2" {
		t.Fatalf("sandbox %+v %v", kv, err)
	}

	conf, err := c.AddResourcesToReservation(ctx, id, []string{"SW-1", "SW-2"}, false)
	if err != nil || len(conf) != 0 {
		t.Fatalf("add resources %v %v", conf, err)
	}
	if err := c.SetConnectorsInReservation(ctx, id, []cloudshell.SetConnectorRequest{{
		SourceResourceFullName: "SW-1/Port 3", TargetResourceFullName: "SW-2/Port 3", Direction: "bi", Alias: "uplink"}}); err != nil {
		t.Fatal(err)
	}
	d, err = c.GetReservationDetails(ctx, id, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Resources) != 2 || d.Resources[0].Name != "SW-1" || d.Resources[0].ResourceModelName != "L2 Switch" {
		t.Errorf("resources %+v", d.Resources)
	}
	if len(d.Connectors) != 1 || d.Connectors[0].Direction != "bi" || d.Connectors[0].Source != "SW-1/Port 3" || d.Connectors[0].State != "Connected" {
		t.Errorf("connectors %+v", d.Connectors)
	}
	if v, _ := mustService(t, d, "OTHER").Attribute(mutexpkg.OwnerAttrName); v != "b" {
		t.Errorf("attribute after set: %q", v)
	}
	if err := c.RemoveConnectorsFromReservation(ctx, id, []string{"SW-1/Port 3", "SW-2/Port 3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemoveResourcesFromReservation(ctx, id, []string{"SW-2"}, true); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessageToReservationOutput(ctx, id, "hello & grüße"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveServicesFromReservation(ctx, id, []string{"MUTEX", "OTHER"}); err != nil {
		t.Fatal(err)
	}
	snap, _ := s.Snapshot(id)
	if len(snap.Services) != 0 || len(snap.Connectors) != 0 || strings.Join(snap.Resources, ",") != "SW-1" {
		t.Errorf("snapshot %+v", snap)
	}
	if m := s.Messages(id); len(m) != 1 || m[0] != "hello & grüße" {
		t.Errorf("messages %q", m)
	}

	if err := c.EndReservation(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	d, err = c.GetReservationDetails(ctx, id, true)
	if err != nil || d.Status != "Completed" || d.LiveStatusName != "Ended" || d.SetupStage != "Ended" {
		t.Fatalf("ended details %+v %v", d, err)
	}
	err = c.AddServiceToReservation(ctx, id, mutexpkg.ModelName, "MUTEX", nil)
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, "has ended") || cloudshell.IsAliasCollision(err) {
		t.Fatalf("add to ended: %v", err)
	}
	_, err = c.GetReservationDetails(ctx, "no-such-id", true)
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, "was not found") {
		t.Fatalf("unknown reservation: %v", err)
	}

	for _, h := range s.History(id) {
		if h.Client != "it-runner" {
			t.Errorf("history client %q", h.Client)
		}
	}

	// Logoff, then the next call logs on again with the stored credentials.
	logons := s.Calls("Logon")
	if err := c.Logoff(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetServerDateAndTime(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Calls("Logon") != logons+1 {
		t.Errorf("logons %d -> %d", logons, s.Calls("Logon"))
	}

	// SecureLogon with a token issued by Logon (standing in for an admin token).
	tok := rawLogonToken(t, base)
	cfg := clientConfig(s)
	cfg.Username, cfg.Password, cfg.Token = "", "", tok
	c2, err := cloudshell.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.GetServerDateAndTime(ctx); err != nil {
		t.Fatal(err)
	}
	if lr, err := c2.SecureLogon(ctx, tok, "Global"); err != nil || lr.UserName != "admin" || lr.DomainName != "Global" || lr.DomainID == "" {
		t.Fatalf("SecureLogon %+v %v", lr, err)
	}
	if lr, err := c2.Logon(ctx, "admin", "admin", ""); err != nil || !lr.IsAdmin {
		t.Fatalf("Logon %+v %v", lr, err)
	}
	if _, err := c2.Logon(ctx, "admin", "wrong-pw", ""); !errors.As(err, &ae) || strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("bad password: %v", err)
	}
}

func mustService(t *testing.T, d *cloudshell.ReservationDetails, alias string) cloudshell.Service {
	t.Helper()
	sv, ok := d.Service(alias)
	if !ok {
		t.Fatalf("no service %q in %+v", alias, d.Services)
	}
	return sv
}

var tokenRE = regexp.MustCompile(`<Token Token="([^"]+)"`)

func rawLogonToken(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Post(base+"/ResourceManagerApiService/Logon", "text/xml",
		strings.NewReader("<Logon><username>admin</username><password>admin</password><domainName>Global</domainName></Logon>"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := tokenRE.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no token in %s", b)
	}
	return string(m[1])
}

func TestClientCacheAndLegacyModel(t *testing.T) {
	ctx := context.Background()
	s, _ := startMock(t, mockapi.WithDataModel(mutexpkg.LegacyDataModel), mockapi.WithCacheTTL(time.Hour))
	c := dial(t, s)
	id := s.CreateReservation("r", "")
	if _, err := c.GetReservationDetails(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	err := c.AddServiceToReservation(ctx, id, mutexpkg.ModelName, "MUTEX", []cloudshell.AttributeNameValue{{Name: mutexpkg.OwnerAttrName, Value: "me"}})
	var ae *cloudshell.APIError
	if !errors.As(err, &ae) || ae.Message != "Attribute 'Mutex Owner' is not defined on service model 'Mutex Service'" || cloudshell.IsAliasCollision(err) {
		t.Fatalf("legacy model: %v", err)
	}
	if err := c.AddServiceToReservation(ctx, id, mutexpkg.ModelName, "MUTEX", nil); err != nil {
		t.Fatal(err)
	}
	stale, _ := c.GetReservationDetails(ctx, id, false)
	fresh, _ := c.GetReservationDetails(ctx, id, true)
	if _, ok := stale.Service("MUTEX"); ok {
		t.Error("cached read should not see the new service")
	}
	if _, ok := fresh.Service("MUTEX"); !ok {
		t.Error("disableCache read must see the new service")
	}
}

func TestClientFaultMapping(t *testing.T) {
	ctx := context.Background()
	s, _ := startMock(t, mockapi.WithSeed(3))
	c := dial(t, s)
	id := s.CreateReservation("r", "")
	add := func(alias string) error {
		return c.AddServiceToReservation(ctx, id, mutexpkg.ModelName, alias, nil)
	}
	services := func() int {
		snap, _ := s.Snapshot(id)
		return len(snap.Services)
	}
	f := s.Faults()

	t.Run("http500 on a write is ambiguous", func(t *testing.T) {
		f.Set("AddServiceToReservation", mockapi.Fault{HTTP500Rate: 1, Count: 1})
		err := add("A")
		var he *cloudshell.HTTPError
		if !errors.As(err, &he) || he.StatusCode != 500 || !errors.Is(err, cloudshell.ErrAmbiguous) {
			t.Fatalf("err = %v", err)
		}
		if services() != 0 {
			t.Fatal("state changed")
		}
	})
	t.Run("http500 on a read is retried", func(t *testing.T) {
		f.Set("GetServerDateAndTime", mockapi.Fault{HTTP500Rate: 1, Count: 2})
		before := s.Calls("GetServerDateAndTime")
		if _, err := c.GetServerDateAndTime(ctx); err != nil {
			t.Fatal(err)
		}
		if n := s.Calls("GetServerDateAndTime") - before; n != 3 {
			t.Errorf("%d attempts, want 3", n)
		}
		f.Set("GetServerDateAndTime", mockapi.Fault{HTTP500Rate: 1})
		_, err := c.GetServerDateAndTime(ctx)
		var he *cloudshell.HTTPError
		if !errors.As(err, &he) || he.StatusCode != 500 || errors.Is(err, cloudshell.ErrAmbiguous) {
			t.Fatalf("persistent 500 on a read: %v", err)
		}
		f.Clear()
	})
	t.Run("drop after commit", func(t *testing.T) {
		f.Set("AddServiceToReservation", mockapi.Fault{DropAfterCommitRate: 1, Count: 1})
		before := s.Calls("AddServiceToReservation")
		err := add("B")
		if !errors.Is(err, cloudshell.ErrAmbiguous) {
			t.Fatalf("err = %v", err)
		}
		if s.Calls("AddServiceToReservation")-before != 1 {
			t.Error("a write was resent")
		}
		snap, _ := s.Snapshot(id)
		if len(snap.Services) != 1 || snap.Services[0].Alias != "B" {
			t.Fatalf("the write must have been applied: %+v", snap.Services)
		}
	})
	t.Run("fail before commit", func(t *testing.T) {
		f.Set("AddServiceToReservation", mockapi.Fault{FailBeforeCommitRate: 1, Count: 1})
		if err := add("C"); !errors.Is(err, cloudshell.ErrAmbiguous) {
			t.Fatalf("a lost connection on a write must be ambiguous: %v", err)
		}
		if services() != 1 {
			t.Fatal("fail-before-commit applied the write")
		}
		f.Set("GetSandboxData", mockapi.Fault{FailBeforeCommitRate: 1, Count: 1})
		if _, err := c.GetSandboxData(ctx, id); err != nil {
			t.Fatalf("read not retried over a dropped connection: %v", err)
		}
	})
	t.Run("success=false", func(t *testing.T) {
		f.Set("AddServiceToReservation", mockapi.Fault{ErrorRate: 1, ErrorCode: 123, ErrorMessage: "Database is busy", Count: 1})
		err := add("D")
		var ae *cloudshell.APIError
		if !errors.As(err, &ae) || ae.Code != 123 || ae.Message != "Database is busy" || errors.Is(err, cloudshell.ErrAmbiguous) || cloudshell.IsAliasCollision(err) {
			t.Fatalf("err = %#v", err)
		}
		if err := add("D"); err != nil {
			t.Fatalf("Count 1 fault fired twice: %v", err)
		}
	})
	t.Run("client filter", func(t *testing.T) {
		f.Set("*", mockapi.Fault{Client: "someone-else", ErrorRate: 1})
		if err := add("E"); err != nil {
			t.Fatal(err)
		}
		f.Set("*", mockapi.Fault{Client: "it-runner", ErrorRate: 1, Count: 1})
		if err := add("F"); err == nil {
			t.Fatal("filter on own machine name did not fire")
		}
		f.Clear()
	})
	t.Run("latency and deadline", func(t *testing.T) {
		f.Set("AddServiceToReservation", mockapi.Fault{Latency: 10 * time.Second, Count: 1})
		cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		err := c.AddServiceToReservation(cctx, id, mutexpkg.ModelName, "G", nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
		f.Clear()
	})
	t.Run("token expiry re-logs on transparently", func(t *testing.T) {
		f.ExpireTokensAfter(2)
		before := s.Calls("Logon")
		for i := 0; i < 7; i++ {
			if _, err := c.GetSandboxData(ctx, id); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		if err := add("H"); err != nil {
			t.Fatal(err)
		}
		if n := s.Calls("Logon") - before; n < 3 {
			t.Errorf("%d re-logons, want >= 3", n)
		}
		f.ExpireTokensAfter(0)
	})
	t.Run("session token cannot re-logon", func(t *testing.T) {
		cfg := clientConfig(s)
		cfg.Username, cfg.Password, cfg.SessionToken = "", "", "bm90LWEtdG9rZW4="
		c3, err := cloudshell.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c3.GetServerDateAndTime(ctx); !errors.Is(err, cloudshell.ErrUnauthorized) {
			t.Fatalf("err = %v", err)
		}
	})
}
