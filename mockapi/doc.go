// Package mockapi is an in-memory CloudShell (Quali) Automation API server for tests,
// benchmarks and demos. It speaks the real wire format (XML over HTTP POST at
// /ResourceManagerApiService/<Method>, see the project's cloudshell-api notes) for the
// methods the SDK uses, and injects faults deterministically.
//
// It deliberately shares no code with package cloudshell: an independent server-side
// parser and writer cross-check the client's idea of the wire format.
//
// # Fidelity choices
//
//   - Every call is atomic under one mutex, so the server is linearizable; in particular
//     AddServiceToReservation's alias check-and-insert cannot race (the property the
//     reservation mutex relies on). Injected latency is waited outside the lock, so it
//     reorders concurrent calls without serialising the server.
//   - GetReservationDetails serves a cached rendering (5 s by default, per reservation)
//     unless disableCache is true, as the real server does: a verification read that
//     forgets disableCache sees stale data.
//   - Failures are HTTP 200 envelopes with Success="false" and, like CloudShell, code 100
//     for nearly everything; clients must classify by message. Token problems are HTTP
//     401 with a plain body.
//   - Service models come from CloudShell data model XML (by default the Mutex Service
//     model of package mutexpkg), so attributes and their defaults match what customers
//     import.
//
// # Faults
//
// Faults are configured per method (or "*") with Server.Faults or the admin endpoint, and
// applied in a fixed order per request: latency, then HTTP 500 / fail-before-commit /
// Success="false" (state untouched), then the call, then drop-after-commit (the call was
// applied, the connection closes without a response). Rates draw from an RNG seeded by
// WithSeed, so a seed and a sequential request sequence reproduce the same faults.
//
// # Admin endpoint
//
//	GET    /admin/faults                      {"faults":[...], "expireTokensAfter":N}
//	PUT    /admin/faults                      {"method":"AddServiceToReservation","errorRate":0.5,"latency":"20ms",...}
//	DELETE /admin/faults                      clear all faults and token expiry
//	POST   /admin/reservations                {"name":"...","owner":"..."} -> {"id":"..."}
//	GET    /admin/reservations/{id}           Snapshot as JSON
//	GET    /admin/reservations/{id}/history   []Mutation as JSON
//	GET    /admin/reservations/{id}/messages  []string
package mockapi
