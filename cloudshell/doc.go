// Package cloudshell is a client for the CloudShell (Quali) Automation API, the XML-over-HTTP
// "TestShell API" served on port 8029 under /ResourceManagerApiService/.
//
// It speaks the same bytes as the Python reference client cloudshell-automation-api 2024.1:
// the same URL, headers and request bodies (parameters in declared order, every parameter
// sent, objects with alphabetically ordered fields, ASCII-only bodies), and it parses
// responses with the same tolerant rules (attribute-or-child-element scalars, lists whose
// item tags are not checked, namespaces ignored). Only a handful of methods have typed
// wrappers; [Client.Call] reaches any other method.
//
// # Errors
//
// A CloudShell failure envelope (Success="false") is an [*APIError]; its Code is often the
// generic 100, so classify by message ([IsAliasCollision]). Non-2xx answers are
// [*HTTPError]s, except 401 which makes the client log on again once with the credentials
// it last logged on with and resend the request; if that is impossible or does not help the
// error wraps [ErrUnauthorized]. Unusable 2xx bodies wrap [ErrBadResponse].
//
// # Retries and writes
//
// Only reads (GetReservationDetails, GetSandboxData, GetServerDateAndTime) and logons are
// retried, and only on transient failures (transport errors, 5xx/429 answers, unusable
// bodies); never on an *APIError or a 401. Every other method
// changes server state and is sent exactly once: when its request may have reached the
// server but no usable answer came back, the error wraps [ErrAmbiguous] together with the
// cause, and the caller must read the state back to learn what happened. The reference
// client resends such writes, which turns a lost "success" into a spurious failure (for
// AddServiceToReservation: "alias already exists" although the caller owns it).
//
// # Secrets
//
// Passwords and tokens never appear in log lines or error strings; the session token is
// kept inside the Client and is not exposed.
//
// A Client is safe for concurrent use.
package cloudshell
