package cloudshell

import "testing"

func BenchmarkEncodeAddService(b *testing.B) {
	params := []Param{
		{"reservationId", testResID},
		{"serviceName", "Mutex Service"},
		{"alias", "MUTEX"},
		{"attributes", []AttributeNameValue{{Name: "Mutex Owner", Value: "ci-runner-7 & friends"}}},
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeRequest("AddServiceToReservation", params); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseReservationDetails(b *testing.B) {
	body := []byte(okEnvelope("GetReservationDetails", docDetailsPayload))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		n, err := parseEnvelope("GetReservationDetails", body)
		if err != nil {
			b.Fatal(err)
		}
		if d := parseReservationDetails(n.Child("ReservationDescription")); len(d.Services) != 1 {
			b.Fatal("no service")
		}
	}
}
