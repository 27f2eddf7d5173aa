// Package sidecar is the HTTP server behind `csmutex serve`: a local process that holds
// CloudShell reservation locks (package mutex) on behalf of drivers written in other
// languages, chiefly the Python drivers CloudShell runs.
//
// The API is JSON over HTTP under /v1/ (docs/sidecar-openapi.yaml is the reference):
//
//	POST /v1/acquire    take a lock; mode "stream" holds it for as long as the response
//	                    stays open (like an flock'd descriptor), mode "token" returns a
//	                    token that must be kept alive with /v1/keepalive; "shape" asks
//	                    for a semaphore, a shared or writer side, a set or a pool
//	                    (package locks; shape.go)
//	POST /v1/keepalive  extend a token-mode hold by its ttl
//	POST /v1/release    release a hold by its token
//	POST /v1/state/add, /v1/state/allocate
//	                    read-modify-write sandbox data under a lock, in one request
//	                    (locks.State; state.go)
//	GET  /v1/locks      held and waiting locks
//	GET  /healthz       JSON: the sidecar's CloudShell reachable, its last logon (503 if not)
//	GET  /livez         "ok" while the process serves
//	GET  /metrics       Prometheus metrics (the sidecar's own registry)
//
// Whoever can connect can take locks in the sidecar's name. It therefore listens on
// loopback or on a unix socket of mode 0600 (see Listen), and a hold can only be released
// by its token (or, in stream mode, by closing the connection). Every request passes a
// guard (guard.go) against web pages the user opens: its Host must be the sidecar's own
// address (DNS rebinding), an Origin header must be explicitly allowed, a POST must be
// application/json, and CORS preflights are never granted. An optional bearer token
// (WithBearerToken, LoadOrCreateTokenFile) covers hosts shared by several users.
// Credentials and the bearer token never appear in responses, logs or metrics.
package sidecar
