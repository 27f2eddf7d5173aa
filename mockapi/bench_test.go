package mockapi

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkAddRemoveService measures one lock/unlock round trip (add + remove of the
// mutex service) over real HTTP with raw XML, the mock's hottest path in SDK tests.
func BenchmarkAddRemoveService(b *testing.B) {
	h := newHarness(b)
	id := h.s.CreateReservation("bench", "")
	add := addServiceBody(id, "Mutex Service", "MUTEX", "Mutex Owner", "bench-runner")
	rm := removeServicesBody(id, "MUTEX")
	client := h.ts.Client()
	auth := "MachineName=bench:8029;Token=" + h.token
	do := func(method, body string) {
		req, _ := http.NewRequest(http.MethodPost, h.url+apiPrefix+method, strings.NewReader(body))
		req.Header.Set("Content-Type", "text/xml")
		req.Header.Set("Authorization", auth)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(out), `Success="true"`) {
			b.Fatalf("%s: %s", method, out)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		do("AddServiceToReservation", add)
		do("RemoveServicesFromReservation", rm)
	}
}
