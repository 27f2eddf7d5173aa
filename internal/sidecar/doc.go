// Package sidecar is the HTTP server behind `csmutex serve`: a local process that holds
// CloudShell reservation locks (package mutex) on behalf of drivers written in other
// languages, chiefly the Python drivers CloudShell runs.
//
// The API is JSON over HTTP under /v1/ (docs/sidecar-openapi.yaml is the reference):
//
//	POST /v1/acquire    take a lock; mode "stream" holds it for as long as the response
//	                    stays open (like an flock'd descriptor), mode "token" returns a
//	                    token that must be kept alive with /v1/keepalive
//	POST /v1/keepalive  extend a token-mode hold by its ttl
//	POST /v1/release    release a hold by its token
//	GET  /v1/locks      held and waiting locks
//	GET  /healthz       "ok"
//	GET  /metrics       Prometheus metrics (the sidecar's own registry)
//
// The sidecar has no authentication: whoever can connect can take locks in the sidecar's
// name. It therefore listens on loopback or on a unix socket of mode 0600 (see Listen), and a
// hold can only be released by its token (or, in stream mode, by closing the connection).
// Credentials never appear in responses, logs or metrics.
package sidecar
