package mockapi

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func adminDo(t *testing.T, h *harness, method, path, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, h.url+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestAdminEndpoint(t *testing.T) {
	h := newHarness(t)
	code, b := adminDo(t, h, "POST", "/admin/reservations", `{"name":"demo","owner":"alice"}`)
	var created struct{ ID string }
	if code != 201 || json.Unmarshal(b, &created) != nil || created.ID == "" {
		t.Fatalf("create: %d %s", code, b)
	}
	h.ok("AddServiceToReservation", addServiceBody(created.ID, "Mutex Service", "MUTEX", "Mutex Owner", "me"))

	code, b = adminDo(t, h, "GET", "/admin/reservations/"+created.ID, "")
	var snap map[string]any
	if code != 200 || json.Unmarshal(b, &snap) != nil || snap["owner"] != "alice" || snap["status"] != "Started" {
		t.Fatalf("snapshot: %d %s", code, b)
	}
	if svcs := snap["services"].([]any); len(svcs) != 1 || svcs[0].(map[string]any)["serviceName"] != "Mutex Service" {
		t.Errorf("services %v", snap["services"])
	}
	code, b = adminDo(t, h, "GET", "/admin/reservations/"+created.ID+"/history", "")
	var hist []map[string]any
	if code != 200 || json.Unmarshal(b, &hist) != nil || len(hist) != 1 || hist[0]["method"] != "AddServiceToReservation" || hist[0]["client"] != "test-host" {
		t.Fatalf("history: %d %s", code, b)
	}
	if code, _ := adminDo(t, h, "GET", "/admin/reservations/nope", ""); code != 404 {
		t.Errorf("unknown reservation: %d", code)
	}

	code, b = adminDo(t, h, "PUT", "/admin/faults", `{"method":"GetServerDateAndTime","errorRate":1,"errorMessage":"via admin","latency":"1ms","latencyJitter":"2ms","count":5}`)
	if code != 204 {
		t.Fatalf("put: %d %s", code, b)
	}
	h.fail("GetServerDateAndTime", "<GetServerDateAndTime />", "via admin")
	entries, _ := h.s.Faults().list()
	if len(entries) != 1 || entries[0].Fault.Latency != time.Millisecond || entries[0].Fault.Count != 5 {
		t.Errorf("entries %+v", entries)
	}
	code, b = adminDo(t, h, "PUT", "/admin/faults", `{"expireTokensAfter":7}`)
	if code != 204 {
		t.Fatalf("put expiry: %d %s", code, b)
	}
	code, b = adminDo(t, h, "GET", "/admin/faults", "")
	var doc faultsDoc
	if code != 200 || json.Unmarshal(b, &doc) != nil || len(doc.Faults) != 1 || doc.ExpireTokensAfter != 7 ||
		doc.Faults[0].Latency != "1ms" || doc.Faults[0].Matched != 1 || !strings.Contains(string(b), `"errorRate": 1`) {
		t.Fatalf("get: %d %s", code, b)
	}
	for _, bad := range []string{`{}`, `{"method":"X","errorRate":2}`, `{"method":"X","latency":"soon"}`, `{"method":"X","bogus":1}`, `not json`} {
		if code, b := adminDo(t, h, "PUT", "/admin/faults", bad); code != 400 {
			t.Errorf("%s: %d %s", bad, code, b)
		}
	}
	if code, _ := adminDo(t, h, "DELETE", "/admin/faults", ""); code != 204 {
		t.Fatal("delete")
	}
	h.ok("GetServerDateAndTime", "<GetServerDateAndTime />")
	if entries, exp := h.s.Faults().list(); len(entries) != 0 || exp != 0 {
		t.Error("not cleared")
	}
}
