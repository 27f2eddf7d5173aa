package mockapi

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// call is one API request being handled.
type call struct {
	req  *request
	auth authHeader
	sess *session // nil for Logon/SecureLogon
}

type handler func(*Server, *call) (*result, *apiError)

type methodSpec struct {
	noAuth bool
	fn     handler
}

// apiMethods are the methods the mock implements (the ones the SDK uses, API doc 4.2).
var apiMethods = map[string]methodSpec{
	"Logon":                           {noAuth: true, fn: (*Server).logon},
	"SecureLogon":                     {noAuth: true, fn: (*Server).secureLogon},
	"Logoff":                          {fn: (*Server).logoff},
	"CreateImmediateReservation":      {fn: (*Server).createImmediateReservation},
	"EndReservation":                  {fn: (*Server).endReservation},
	"GetReservationDetails":           {fn: (*Server).getReservationDetails},
	"AddServiceToReservation":         {fn: (*Server).addServiceToReservation},
	"RemoveServicesFromReservation":   {fn: (*Server).removeServicesFromReservation},
	"SetServiceAttributesValues":      {fn: (*Server).setServiceAttributesValues},
	"GetSandboxData":                  {fn: (*Server).getSandboxData},
	"SetSandboxData":                  {fn: (*Server).setSandboxData},
	"AddResourcesToReservation":       {fn: (*Server).addResourcesToReservation},
	"RemoveResourcesFromReservation":  {fn: (*Server).removeResourcesFromReservation},
	"SetConnectorsInReservation":      {fn: (*Server).setConnectorsInReservation},
	"RemoveConnectorsFromReservation": {fn: (*Server).removeConnectorsFromReservation},
	"GetServerDateAndTime":            {fn: (*Server).getServerDateAndTime},
	"WriteMessageToReservationOutput": {fn: (*Server).writeMessageToReservationOutput},
}

// withReservation runs fn under the server lock with reservation id, or fails as
// CloudShell does when there is no such reservation: the opening of every method that
// reads a reservation.
func (s *Server) withReservation(id string, fn func(r *reservation) (*result, *apiError)) (*result, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, aerr := s.reservationLocked(id)
	if aerr != nil {
		return nil, aerr
	}
	return fn(r)
}

// withLiveReservation is withReservation for methods that change a reservation: one that
// has ended fails, as on CloudShell.
func (s *Server) withLiveReservation(id string, fn func(r *reservation) (*result, *apiError)) (*result, *apiError) {
	return s.withReservation(id, func(r *reservation) (*result, *apiError) {
		if r.ended {
			return nil, failf("Reservation '%s' has ended", id)
		}
		return fn(r)
	})
}

func asAPIError(err error) *apiError {
	if err == nil {
		return nil
	}
	return &apiError{code: 100, msg: err.Error()}
}

func (s *Server) createImmediateReservation(c *call) (*result, *apiError) {
	name := c.req.str("reservationName", "")
	owner := c.req.str("owner", "")
	minutes, err := c.req.integer("durationInMinutes", 0)
	if err != nil {
		return nil, asAPIError(err)
	}
	for _, b := range []string{"notifyOnStart", "notifyOnEnd", "isTerminationProtectionEnabled"} {
		if _, err := c.req.boolean(b, false); err != nil {
			return nil, asAPIError(err)
		}
	}
	if _, err := c.req.integer("notificationMinutesBeforeEnd", 0); err != nil {
		return nil, asAPIError(err)
	}
	if strings.TrimSpace(name) == "" {
		return nil, failf("Reservation name must not be empty")
	}
	if minutes <= 0 {
		return nil, failf("Reservation duration must be greater than 0 minutes (got %d)", minutes)
	}
	if owner == "" {
		owner = c.sess.user.name
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.newReservationLocked(name, owner, c.sess.domain, minutes)
	s.recordLocked(c, r.id, fmt.Sprintf("create reservation %q owner=%s duration=%dm", name, owner, minutes))
	return r.renderCreated(), nil
}

func (s *Server) endReservation(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	unmap, err := c.req.boolean("unmap", false)
	if err != nil {
		return nil, asAPIError(err)
	}
	return s.withLiveReservation(id, func(r *reservation) (*result, *apiError) {
		r.ended = true
		r.actualEnd = s.now()
		s.recordLocked(c, id, fmt.Sprintf("end reservation unmap=%t", unmap))
		return nil, nil
	})
}

// getReservationDetails serves a cached rendering like the real server (5 s by default),
// so code that verifies a write without disableCache=true reads stale data in tests too.
// A disableCache=true read renders fresh and leaves the cache alone.
func (s *Server) getReservationDetails(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	disable, err := c.req.boolean("disableCache", false)
	if err != nil {
		return nil, asAPIError(err)
	}
	return s.withReservation(id, func(r *reservation) (*result, *apiError) {
		ttl := s.cfg.cacheTTL
		now := s.now()
		var body []byte
		switch {
		case disable || ttl <= 0:
			body = s.renderDetails(r)
		case r.cached != nil && now.Sub(r.cachedAt) < ttl:
			body = r.cached
		default:
			body = s.renderDetails(r)
			r.cached, r.cachedAt = body, now
		}
		return &result{typ: "GetReservationDescriptionResponseInfo", body: body}, nil
	})
}

func (s *Server) addServiceToReservation(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	modelName := c.req.str("serviceName", "")
	alias := c.req.str("alias", "")
	items, err := c.req.objects("attributes")
	if err != nil {
		return nil, asAPIError(err)
	}
	if alias == "" {
		// CloudShell names an unaliased service after its model.
		alias = modelName
	}
	return s.withLiveReservation(id, func(r *reservation) (*result, *apiError) {
		m := s.models[modelName]
		if m == nil {
			return nil, failf("Service model '%s' was not found", modelName)
		}
		sv := &service{alias: alias, model: m}
		for _, a := range m.Attributes {
			sv.attrs = append(sv.attrs, attrValue{name: a.Name, value: a.Default})
		}
		if aerr := setAttributes(sv, items); aerr != nil {
			return nil, aerr
		}
		if r.service(alias) != nil {
			return nil, &apiError{code: 100, msg: "Service with given alias already exists"}
		}
		r.services = append(r.services, sv)
		s.recordLocked(c, id, fmt.Sprintf("add service %s (%s)%s", alias, m.Name, attrDetail(items)))
		return nil, nil
	})
}

// setAttributes validates every attribute before changing any, so a bad request leaves
// the service as it was.
func setAttributes(sv *service, items []map[string]string) *apiError {
	for _, it := range items {
		if _, ok := sv.model.attribute(it["Name"]); !ok {
			return failf("Attribute '%s' is not defined on service model '%s'", it["Name"], sv.model.Name)
		}
	}
	for _, it := range items {
		for i := range sv.attrs {
			if sv.attrs[i].name == it["Name"] {
				sv.attrs[i].value = it["Value"]
			}
		}
	}
	return nil
}

func attrDetail(items []map[string]string) string {
	var b strings.Builder
	for _, it := range items {
		fmt.Fprintf(&b, " %s=%s", it["Name"], it["Value"])
	}
	return b.String()
}

func (s *Server) removeServicesFromReservation(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	aliases, err := c.req.strings("services")
	if err != nil {
		return nil, asAPIError(err)
	}
	return s.withLiveReservation(id, func(r *reservation) (*result, *apiError) {
		drop := map[string]bool{}
		for _, a := range aliases {
			if r.service(a) == nil {
				return nil, failf("Service with alias '%s' was not found in reservation '%s'", a, id)
			}
			drop[a] = true
		}
		r.services = slices.DeleteFunc(slices.Clone(r.services), func(sv *service) bool { return drop[sv.alias] })
		s.recordLocked(c, id, "remove services "+strings.Join(aliases, ", "))
		return nil, nil
	})
}

func (s *Server) setServiceAttributesValues(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	alias := c.req.str("serviceAlias", "")
	items, err := c.req.objects("attributeRequests")
	if err != nil {
		return nil, asAPIError(err)
	}
	return s.withLiveReservation(id, func(r *reservation) (*result, *apiError) {
		sv := r.service(alias)
		if sv == nil {
			return nil, failf("Service with alias '%s' was not found in reservation '%s'", alias, id)
		}
		if aerr := setAttributes(sv, items); aerr != nil {
			return nil, aerr
		}
		s.recordLocked(c, id, fmt.Sprintf("set attributes of %s%s", alias, attrDetail(items)))
		return nil, nil
	})
}

func (s *Server) getSandboxData(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	return s.withReservation(id, func(r *reservation) (*result, *apiError) {
		return r.renderSandboxData(), nil
	})
}

func (s *Server) setSandboxData(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	items, err := c.req.objects("sandboxDataKeyValues")
	if err != nil {
		return nil, asAPIError(err)
	}
	for _, it := range items {
		if it["Key"] == "" {
			return nil, failf("Sandbox data key must not be empty")
		}
	}
	return s.withLiveReservation(id, func(r *reservation) (*result, *apiError) {
		keys := make([]string, 0, len(items))
		for _, it := range items {
			k := it["Key"]
			if _, ok := r.sandbox[k]; !ok {
				r.sandboxKey = append(r.sandboxKey, k)
			}
			r.sandbox[k] = it["Value"]
			keys = append(keys, k)
		}
		s.recordLocked(c, id, "set sandbox data "+strings.Join(keys, ", "))
		return nil, nil
	})
}

func (s *Server) addResourcesToReservation(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	paths, err := c.req.strings("resourcesFullPath")
	if err != nil {
		return nil, asAPIError(err)
	}
	shared, err := c.req.boolean("shared", false)
	if err != nil {
		return nil, asAPIError(err)
	}
	return s.withLiveReservation(id, func(r *reservation) (*result, *apiError) {
		for _, p := range paths {
			if _, ok := s.known[p]; !ok {
				return nil, failf("Resource '%s' was not found", p)
			}
		}
		for _, p := range paths {
			if !r.hasResource(p) {
				r.resources = append(r.resources, &reservedResource{path: p, shared: shared})
			}
		}
		s.recordLocked(c, id, "add resources "+strings.Join(paths, ", "))
		return noConflicts(), nil
	})
}

func (s *Server) removeResourcesFromReservation(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	paths, err := c.req.strings("resourcesFullPath")
	if err != nil {
		return nil, asAPIError(err)
	}
	if _, err := c.req.boolean("deleteDeployedApps", true); err != nil {
		return nil, asAPIError(err)
	}
	return s.withLiveReservation(id, func(r *reservation) (*result, *apiError) {
		drop := map[string]bool{}
		for _, p := range paths {
			if !r.hasResource(p) {
				return nil, failf("Resource '%s' is not in reservation '%s'", p, id)
			}
			drop[p] = true
		}
		r.resources = slices.DeleteFunc(slices.Clone(r.resources), func(rr *reservedResource) bool { return drop[rr.path] })
		// A connector cannot outlive either of its resources.
		r.connectors = slices.DeleteFunc(slices.Clone(r.connectors), func(cn *connector) bool {
			return drop[rootResource(cn.source)] || drop[rootResource(cn.target)]
		})
		s.recordLocked(c, id, "remove resources "+strings.Join(paths, ", "))
		return noConflicts(), nil
	})
}

func (s *Server) setConnectorsInReservation(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	items, err := c.req.objects("connectors")
	if err != nil {
		return nil, asAPIError(err)
	}
	return s.withLiveReservation(id, func(r *reservation) (*result, *apiError) {
		conns := make([]*connector, 0, len(items))
		for _, it := range items {
			cn := &connector{
				source:    it["SourceResourceFullName"],
				target:    it["TargetResourceFullName"],
				direction: it["Direction"],
				alias:     it["Alias"],
			}
			for _, ep := range []string{cn.source, cn.target} {
				if ep == "" {
					return nil, failf("Connector endpoints must not be empty")
				}
				if !r.hasResource(rootResource(ep)) {
					return nil, failf("Resource '%s' of endpoint '%s' is not in reservation '%s'", rootResource(ep), ep, id)
				}
			}
			conns = append(conns, cn)
		}
		details := make([]string, 0, len(conns))
		for _, cn := range conns {
			replaced := false
			for i, old := range r.connectors {
				if sameEndpoints(old, cn) {
					r.connectors[i] = cn
					replaced = true
					break
				}
			}
			if !replaced {
				r.connectors = append(r.connectors, cn)
			}
			details = append(details, fmt.Sprintf("%s -> %s (%s)", cn.source, cn.target, cn.direction))
		}
		s.recordLocked(c, id, "set connectors "+strings.Join(details, ", "))
		return nil, nil
	})
}

// sameEndpoints: a connector joins two endpoints regardless of which one is the source.
func sameEndpoints(a, b *connector) bool {
	return (a.source == b.source && a.target == b.target) || (a.source == b.target && a.target == b.source)
}

func (s *Server) removeConnectorsFromReservation(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	endpoints, err := c.req.strings("endpoints")
	if err != nil {
		return nil, asAPIError(err)
	}
	return s.withLiveReservation(id, func(r *reservation) (*result, *apiError) {
		in := map[string]bool{}
		for _, e := range endpoints {
			in[e] = true
		}
		before := len(r.connectors)
		r.connectors = slices.DeleteFunc(slices.Clone(r.connectors), func(cn *connector) bool { return in[cn.source] && in[cn.target] })
		removed := before - len(r.connectors)
		s.recordLocked(c, id, fmt.Sprintf("remove connectors between %s (%d removed)", strings.Join(endpoints, ", "), removed))
		return nil, nil
	})
}

func (s *Server) getServerDateAndTime(c *call) (*result, *apiError) {
	now := s.now().UTC()
	return &result{typ: "ServerTimeInfo", attrs: []string{
		"ServerDateTime", now.Format(time.RFC3339Nano),
		"ServerDateTimeString", now.Format(dateLayout),
	}}, nil
}

// writeMessageToReservationOutput is output, not state: it is kept for Messages() but not
// recorded in the history, and works on ended reservations (drivers log on teardown).
func (s *Server) writeMessageToReservationOutput(c *call) (*result, *apiError) {
	id := c.req.str("reservationId", "")
	msg := c.req.str("message", "")
	return s.withReservation(id, func(r *reservation) (*result, *apiError) {
		r.messages = append(r.messages, msg)
		return nil, nil
	})
}
