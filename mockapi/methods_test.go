package mockapi

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csmutex/csmutex/mutexpkg"
)

func createBody(name, owner string, minutes int) string {
	return el("CreateImmediateReservation", tx("reservationName", name), tx("owner", owner),
		tx("durationInMinutes", itoa(minutes)), tx("notifyOnStart", "false"), tx("notifyOnEnd", "false"),
		tx("notificationMinutesBeforeEnd", "0"), tx("isTerminationProtectionEnabled", "false"), tx("approvalSid", ""))
}

func TestReservationLifecycle(t *testing.T) {
	clk := newFakeClock()
	h := newHarness(t, withClock(clk.Now))
	env := h.ok("CreateImmediateReservation", createBody("lock-test", "", 30))
	if !strings.Contains(string(env.raw), `xsi:type="CreateReservationResponseInfo"`) {
		t.Errorf("type: %s", env.raw)
	}
	r := env.info().find("Reservation")
	id := r.attr("Id")
	if len(id) != 36 || r.attr("Name") != "lock-test" || r.attr("Owner") != "admin" ||
		r.attr("Status") != "Started" || r.attr("ProvisioningStatus") != "Ready" || r.attr("Booked") != "true" ||
		r.attr("DomainName") != "Global" || r.attr("StartTime") != "03/14/2026 15:09" || r.attr("EndTime") != "03/14/2026 15:39" {
		t.Fatalf("reservation: %+v", r.Attrs)
	}
	h.fail("CreateImmediateReservation", createBody("x", "", 0), "greater than 0")
	h.fail("CreateImmediateReservation", createBody("", "", 5), "name must not be empty")
	// Old clients send only the first six parameters.
	h.ok("CreateImmediateReservation", el("CreateImmediateReservation", tx("reservationName", "old"), tx("owner", "bob"), tx("durationInMinutes", "5")))

	d := h.details(id, true)
	if d.attr("Status") != "Started" || d.find("SetupStage").Text == "Ended" || d.attr("ReservationLiveStatusName") == "Ended" {
		t.Fatalf("live details: %+v", d.Attrs)
	}
	h.ok("EndReservation", el("EndReservation", tx("reservationId", id), tx("unmap", "true")))
	d = h.details(id, true)
	if d.attr("Status") != "Completed" || d.attr("ReservationLiveStatusName") != "Ended" || d.find("SetupStage").Text != "Ended" {
		t.Fatalf("ended details: %+v %s", d.Attrs, d.find("SetupStage").Text)
	}
	snap, _ := h.s.Snapshot(id)
	if !snap.Ended || snap.Status != "Completed" {
		t.Fatalf("snapshot %+v", snap)
	}
	want := fmt.Sprintf("Reservation '%s' has ended", id)
	h.fail("EndReservation", el("EndReservation", tx("reservationId", id)), want)
	h.fail("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M"), want)
	h.fail("SetSandboxData", el("SetSandboxData", tx("reservationId", id), el("sandboxDataKeyValues")), want)
	// Reads and output still work on an ended reservation.
	h.ok("GetSandboxData", el("GetSandboxData", tx("reservationId", id)))
	h.ok("WriteMessageToReservationOutput", el("WriteMessageToReservationOutput", tx("reservationId", id), tx("message", "bye")))

	for _, m := range []string{"GetReservationDetails", "EndReservation", "GetSandboxData", "AddServiceToReservation"} {
		h.fail(m, el(m, tx("reservationId", "nope")), "Reservation 'nope' was not found")
	}
	if _, err := h.s.Snapshot("nope"); err == nil {
		t.Error("Snapshot of unknown id")
	}
}

func TestAddService(t *testing.T) {
	h := newHarness(t)
	id := h.s.CreateReservation("r", "")
	h.ok("AddServiceToReservation", addServiceBody(id, "Mutex Service", "MUTEX"))
	h.ok("AddServiceToReservation", addServiceBody(id, "Mutex Service", "MUTEX2", "Mutex Owner", `ci-runner-7 & "friends" <ü>`))
	env := h.fail("AddServiceToReservation", addServiceBody(id, "Mutex Service", "MUTEX", "Mutex Owner", "late"), "")
	if env.errMsg() != "Service with given alias already exists" || env.errCode() != "100" {
		t.Fatalf("collision: %q %s", env.errMsg(), env.errCode())
	}
	h.fail("AddServiceToReservation", addServiceBody(id, "Nope Service", "X"), "Service model 'Nope Service' was not found")
	h.fail("AddServiceToReservation", addServiceBody(id, "Mutex Service", "X", "Color", "red"),
		"Attribute 'Color' is not defined on service model 'Mutex Service'")
	// Empty alias: CloudShell names the service after its model.
	h.ok("AddServiceToReservation", addServiceBody(id, "Mutex Service", ""))

	svcs := services(h.details(id, true))
	if v, ok := svcs["MUTEX"]["Mutex Owner"]; !ok || v != "" {
		t.Errorf("default attribute: %q %v", v, ok)
	}
	if v := svcs["MUTEX2"]["Mutex Owner"]; v != `ci-runner-7 & "friends" <ü>` {
		t.Errorf("escaping round trip: %q", v)
	}
	if _, ok := svcs["Mutex Service"]; !ok || len(svcs) != 3 {
		t.Errorf("services %v", svcs)
	}
	d := h.details(id, true)
	if sv := d.find("Services").Kids[0]; sv.XMLName.Local != "Service" || sv.attr("ServiceName") != "Mutex Service" {
		t.Errorf("service element %+v", sv)
	}

	snap, _ := h.s.Snapshot(id)
	if len(snap.Services) != 3 || snap.Services[1].Attributes["Mutex Owner"] != `ci-runner-7 & "friends" <ü>` {
		t.Errorf("snapshot %+v", snap.Services)
	}
	hist := h.s.History(id)
	if len(hist) != 3 || hist[1].Detail != `add service MUTEX2 (Mutex Service) Mutex Owner=ci-runner-7 & "friends" <ü>` ||
		hist[1].Client != "test-host" || hist[1].Method != "AddServiceToReservation" || hist[1].Seq <= hist[0].Seq {
		t.Errorf("history %+v", hist)
	}
}

func TestLegacyModelRejectsOwner(t *testing.T) {
	h := newHarness(t, WithDataModel(mutexpkg.LegacyDataModel))
	id := h.s.CreateReservation("r", "")
	h.fail("AddServiceToReservation", addServiceBody(id, "Mutex Service", "MUTEX", "Mutex Owner", "me"),
		"Attribute 'Mutex Owner' is not defined on service model 'Mutex Service'")
	h.ok("AddServiceToReservation", addServiceBody(id, "Mutex Service", "MUTEX"))
	d := h.details(id, true)
	sv := d.find("Services").Kids[0]
	if a := sv.find("Attributes"); a == nil || len(a.Kids) != 0 {
		t.Errorf("legacy service should have no attributes: %+v", sv)
	}
}

func TestRemoveServicesAllOrNothing(t *testing.T) {
	h := newHarness(t)
	id := h.s.CreateReservation("r", "")
	for _, a := range []string{"A", "B", "C"} {
		h.ok("AddServiceToReservation", addServiceBody(id, "Mutex Service", a))
	}
	h.fail("RemoveServicesFromReservation", removeServicesBody(id, "A", "Z"), "Service with alias 'Z' was not found")
	if snap, _ := h.s.Snapshot(id); len(snap.Services) != 3 {
		t.Fatalf("partial removal: %+v", snap.Services)
	}
	h.ok("RemoveServicesFromReservation", removeServicesBody(id, "A", "C"))
	snap, _ := h.s.Snapshot(id)
	if len(snap.Services) != 1 || snap.Services[0].Alias != "B" {
		t.Fatalf("after removal: %+v", snap.Services)
	}
	// The alias is free again.
	h.ok("AddServiceToReservation", addServiceBody(id, "Mutex Service", "A"))
	// Item tags other than <string> are accepted.
	h.ok("RemoveServicesFromReservation", el("RemoveServicesFromReservation", tx("reservationId", id), el("services", tx("item", "A"))))
}

func TestSetServiceAttributesValues(t *testing.T) {
	h := newHarness(t)
	id := h.s.CreateReservation("r", "")
	h.ok("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M", "Mutex Owner", "a"))
	body := func(alias string, pairs ...string) string {
		return el("SetServiceAttributesValues", tx("reservationId", id), tx("serviceAlias", alias), attrList("attributeRequests", pairs...))
	}
	h.ok("SetServiceAttributesValues", body("M", "Mutex Owner", "b"))
	h.fail("SetServiceAttributesValues", body("X", "Mutex Owner", "c"), "Service with alias 'X' was not found")
	h.fail("SetServiceAttributesValues", body("M", "Mutex Owner", "c", "Nope", "d"), "Attribute 'Nope' is not defined on service model 'Mutex Service'")
	if v := services(h.details(id, true))["M"]["Mutex Owner"]; v != "b" {
		t.Errorf("owner = %q", v)
	}
	// Fields in declared order (Value before Name is also tolerated).
	h.ok("SetServiceAttributesValues", el("SetServiceAttributesValues", tx("reservationId", id), tx("serviceAlias", "M"),
		el("attributeRequests", el("AttributeNameValue", tx("Value", "z"), tx("Name", "Mutex Owner")))))
	if v := services(h.details(id, true))["M"]["Mutex Owner"]; v != "z" {
		t.Errorf("owner = %q", v)
	}
}

func TestSandboxData(t *testing.T) {
	h := newHarness(t)
	id := h.s.CreateReservation("r", "")
	set := func(pairs ...string) string {
		var kids []string
		for i := 0; i+1 < len(pairs); i += 2 {
			kids = append(kids, el("SandboxDataKeyValue", tx("Key", pairs[i]), tx("Value", pairs[i+1])))
		}
		return el("SetSandboxData", tx("reservationId", id), el("sandboxDataKeyValues", kids...))
	}
	env := h.ok("GetSandboxData", el("GetSandboxData", tx("reservationId", id)))
	if !strings.Contains(string(env.raw), `xsi:type="GetSandboxDataInfo"`) || env.info().find("SandboxDataKeyValues") == nil {
		t.Fatalf("empty sandbox data: %s", env.raw)
	}
	h.ok("SetSandboxData", set("zeta", "1", "alpha", "2"))
	h.ok("SetSandboxData", set("mid", "3", "zeta", "updated"))
	h.fail("SetSandboxData", set("", "x"), "key must not be empty")
	env = h.ok("GetSandboxData", el("GetSandboxData", tx("reservationId", id)))
	var got []string
	for _, kv := range env.info().find("SandboxDataKeyValues").Kids {
		if kv.XMLName.Local != "SandboxDataKeyValue" {
			t.Errorf("item tag %s", kv.XMLName.Local)
		}
		got = append(got, kv.attr("Key")+"="+kv.attr("Value"))
	}
	if strings.Join(got, ",") != "zeta=updated,alpha=2,mid=3" {
		t.Errorf("sandbox data %v", got)
	}
	snap, _ := h.s.Snapshot(id)
	if len(snap.SandboxData) != 3 || snap.SandboxData["zeta"] != "updated" {
		t.Errorf("snapshot %v", snap.SandboxData)
	}
}

func TestResourcesAndConnectors(t *testing.T) {
	h := newHarness(t, WithResource("SW-1", "Switch", "L2 Switch"), WithResource("SW-2", "Switch", "L2 Switch"))
	h.s.addKnownResource("SRV-1", "Server", "Generic Server")
	id := h.s.CreateReservation("r", "")
	add := func(paths ...string) string {
		return el("AddResourcesToReservation", tx("reservationId", id), strList("resourcesFullPath", paths...), tx("shared", "false"))
	}
	rm := func(paths ...string) string {
		return el("RemoveResourcesFromReservation", tx("reservationId", id), strList("resourcesFullPath", paths...), tx("deleteDeployedApps", "true"))
	}
	conn := func(src, dst, dir, alias string) string {
		return el("SetConnectorRequest", tx("Alias", alias), tx("Direction", dir), tx("SourceResourceFullName", src), tx("TargetResourceFullName", dst))
	}
	setConns := func(items ...string) string {
		return el("SetConnectorsInReservation", tx("reservationId", id), el("connectors", items...))
	}

	h.fail("AddResourcesToReservation", add("SW-1", "GHOST"), "Resource 'GHOST' was not found")
	if snap, _ := h.s.Snapshot(id); len(snap.Resources) != 0 {
		t.Fatal("partial add")
	}
	env := h.ok("AddResourcesToReservation", add("SW-1", "SW-2"))
	if !strings.Contains(string(env.raw), `xsi:type="ReserveResourcesResponseInfo"`) || env.info().find("Conflicts") == nil {
		t.Errorf("add resources payload: %s", env.raw)
	}
	h.ok("AddResourcesToReservation", add("SW-1")) // idempotent

	h.fail("SetConnectorsInReservation", setConns(conn("SW-1/Port 3", "SW-2/Port 3", "bi", "uplink"), conn("SW-1/Port 4", "SRV-1/eth0", "uni", "x")),
		"Resource 'SRV-1' of endpoint 'SRV-1/eth0' is not in reservation")
	if snap, _ := h.s.Snapshot(id); len(snap.Connectors) != 0 {
		t.Fatal("partial connectors")
	}
	h.ok("SetConnectorsInReservation", setConns(conn("SW-1/Port 3", "SW-2/Port 3", "bi", "uplink")))
	h.ok("AddResourcesToReservation", add("SRV-1"))
	h.ok("SetConnectorsInReservation", setConns(conn("SW-1/Port 4", "SRV-1/eth0", "uni", "srv")))
	// Same endpoints (either way round) replace the connector.
	h.ok("SetConnectorsInReservation", setConns(conn("SW-2/Port 3", "SW-1/Port 3", "uni", "uplink2")))

	d := h.details(id, true)
	res := d.find("Resources")
	if len(res.Kids) != 3 || res.Kids[0].XMLName.Local != "ReservedResource" || res.Kids[0].attr("Name") != "SW-1" ||
		res.Kids[0].attr("ResourceFamilyName") != "Switch" || res.Kids[0].attr("ResourceModelName") != "L2 Switch" ||
		res.Kids[0].attr("Shared") != "false" || !res.Kids[0].hasAttr("FolderFullPath") || res.Kids[0].attr("FullAddress") == "" {
		t.Fatalf("resources %+v", res)
	}
	conns := d.find("Connectors").Kids
	if len(conns) != 2 {
		t.Fatalf("connectors %+v", conns)
	}
	c0 := conns[0]
	if c0.attr("Alias") != "uplink2" || c0.attr("Direction") != "uni" || c0.attr("Source") != "SW-2/Port 3" ||
		c0.attr("Target") != "SW-1/Port 3" || c0.attr("Type") != "Default" || c0.attr("State") != "Connected" || c0.find("Attributes") == nil {
		t.Errorf("connector %+v", c0.Attrs)
	}

	// RemoveConnectors removes only connectors with both endpoints listed.
	h.ok("RemoveConnectorsFromReservation", el("RemoveConnectorsFromReservation", tx("reservationId", id), strList("endpoints", "SW-1/Port 4", "SW-2/Port 3")))
	if snap, _ := h.s.Snapshot(id); len(snap.Connectors) != 2 {
		t.Fatalf("removed too much: %+v", snap.Connectors)
	}
	h.ok("RemoveConnectorsFromReservation", el("RemoveConnectorsFromReservation", tx("reservationId", id), strList("endpoints", "SW-1/Port 3", "SW-2/Port 3")))
	snap, _ := h.s.Snapshot(id)
	if len(snap.Connectors) != 1 || snap.Connectors[0] != (ConnectorState{Source: "SW-1/Port 4", Target: "SRV-1/eth0", Direction: "uni", Alias: "srv"}) {
		t.Fatalf("connectors %+v", snap.Connectors)
	}

	// Removing a resource takes its connectors with it.
	h.fail("RemoveResourcesFromReservation", rm("SRV-1", "GHOST"), "Resource 'GHOST' is not in reservation")
	h.ok("RemoveResourcesFromReservation", rm("SRV-1"))
	snap, _ = h.s.Snapshot(id)
	if strings.Join(snap.Resources, ",") != "SW-1,SW-2" || len(snap.Connectors) != 0 {
		t.Fatalf("after remove: %+v", snap)
	}
}

func TestDetailsCache(t *testing.T) {
	clk := newFakeClock()
	h := newHarness(t, withClock(clk.Now), WithCacheTTL(5*time.Second))
	id := h.s.CreateReservation("r", "")
	if n := len(services(h.details(id, false))); n != 0 {
		t.Fatal(n)
	}
	h.ok("AddServiceToReservation", addServiceBody(id, "Mutex Service", "M"))
	clk.Advance(4 * time.Second)
	if n := len(services(h.details(id, false))); n != 0 {
		t.Fatalf("cached read within TTL should be stale, saw %d services", n)
	}
	if n := len(services(h.details(id, true))); n != 1 {
		t.Fatalf("disableCache read saw %d services", n)
	}
	// A fresh read does not refresh the cache.
	if n := len(services(h.details(id, false))); n != 0 {
		t.Fatalf("cache refreshed by disableCache read")
	}
	clk.Advance(time.Second)
	if n := len(services(h.details(id, false))); n != 1 {
		t.Fatalf("expired cache still served")
	}
	h.ok("RemoveServicesFromReservation", removeServicesBody(id, "M"))
	if n := len(services(h.details(id, false))); n != 1 {
		t.Fatalf("new cache entry not served")
	}
	// An absent disableCache takes the default, false.
	if n := len(services(h.ok("GetReservationDetails", el("GetReservationDetails", tx("reservationId", id))).info().find("ReservationDescription"))); n != 1 {
		t.Fatal("default disableCache")
	}

	h0 := newHarness(t, withClock(clk.Now), WithCacheTTL(0))
	id0 := h0.s.CreateReservation("r", "")
	h0.details(id0, false)
	h0.ok("AddServiceToReservation", addServiceBody(id0, "Mutex Service", "M"))
	if n := len(services(h0.details(id0, false))); n != 1 {
		t.Fatal("TTL 0 must disable the cache")
	}
}

func TestServerTimeAndMessages(t *testing.T) {
	clk := newFakeClock()
	h := newHarness(t, withClock(clk.Now))
	env := h.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
	info := env.info()
	if info.attr("type") != "ServerTimeInfo" {
		t.Errorf("type %q", info.attr("type"))
	}
	ts, err := time.Parse(time.RFC3339, info.attr("ServerDateTime"))
	if err != nil || !ts.Equal(clk.Now()) {
		t.Errorf("ServerDateTime %q: %v", info.attr("ServerDateTime"), err)
	}
	id := h.s.CreateReservation("r", "")
	for _, m := range []string{"first", "zweite Nachricht: grün & <ok>"} {
		h.ok("WriteMessageToReservationOutput", el("WriteMessageToReservationOutput", tx("reservationId", id), tx("message", m)))
	}
	if got := h.s.Messages(id); len(got) != 2 || got[1] != "zweite Nachricht: grün & <ok>" {
		t.Errorf("messages %q", got)
	}
	if len(h.s.History(id)) != 0 {
		t.Error("messages are not mutations")
	}
	h.fail("WriteMessageToReservationOutput", el("WriteMessageToReservationOutput", tx("reservationId", "nope"), tx("message", "x")), "was not found")
}

func TestHistoryAcrossReservations(t *testing.T) {
	h := newHarness(t)
	a, b := h.s.CreateReservation("a", ""), h.s.CreateReservation("b", "")
	h.with("agent-1:8029", h.token).ok("AddServiceToReservation", addServiceBody(a, "Mutex Service", "M"))
	h.with("agent-2", h.token).ok("AddServiceToReservation", addServiceBody(b, "Mutex Service", "M"))
	h.ok("RemoveServicesFromReservation", removeServicesBody(a, "M"))
	all := h.s.History("")
	if len(all) != 3 || all[0].Client != "agent-1" || all[1].Client != "agent-2" || all[1].ReservationID != b {
		t.Fatalf("history %+v", all)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq != all[i-1].Seq+1 {
			t.Errorf("seq gap %+v", all)
		}
	}
	if len(h.s.History(a)) != 2 {
		t.Error("filter by reservation")
	}
}

// TestAliasRace is the property the reservation mutex depends on: concurrent adds of one
// alias admit exactly one winner.
func TestAliasRace(t *testing.T) {
	h := newHarness(t)
	id := h.s.CreateReservation("race", "")
	const n = 64
	tr := &http.Transport{MaxIdleConnsPerHost: n}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for round := 0; round < 5; round++ {
		var wg sync.WaitGroup
		start := make(chan struct{})
		results := make([]string, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-start
				body := addServiceBody(id, "Mutex Service", "MUTEX", "Mutex Owner", fmt.Sprintf("runner-%d", i))
				req, _ := http.NewRequest(http.MethodPost, h.url+apiPrefix+"AddServiceToReservation", strings.NewReader(body))
				req.Header.Set("Authorization", fmt.Sprintf("MachineName=runner-%d:8029;Token=%s", i, h.token))
				resp, err := client.Do(req)
				if err != nil {
					results[i] = "transport: " + err.Error()
					return
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				results[i] = string(raw)
			}(i)
		}
		close(start)
		wg.Wait()
		wins, losses := 0, 0
		winner := -1
		for i, r := range results {
			switch {
			case strings.Contains(r, `Success="true"`):
				wins++
				winner = i
			case strings.Contains(r, "<Error>Service with given alias already exists</Error>"):
				losses++
			default:
				t.Fatalf("round %d: unexpected response %q", round, r)
			}
		}
		if wins != 1 || losses != n-1 {
			t.Fatalf("round %d: %d wins, %d collisions", round, wins, losses)
		}
		snap, _ := h.s.Snapshot(id)
		if len(snap.Services) != 1 || snap.Services[0].Attributes["Mutex Owner"] != fmt.Sprintf("runner-%d", winner) {
			t.Fatalf("round %d: state %+v, winner %d", round, snap.Services, winner)
		}
		h.ok("RemoveServicesFromReservation", removeServicesBody(id, "MUTEX"))
	}
}
