package sim

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// detailsCacheTTL is how old a GetReservationDetails answer may be when disableCache is
// false: the real server caches details for 5 seconds.
const detailsCacheTTL = 5 * time.Second

// collisionText is CloudShell's message for a duplicate alias (generic code 100).
const collisionText = "Service with given alias already exists"

type service struct {
	model, alias string
	attrs        []cloudshell.Attribute
	addedBy      string    // the process whose add created this instance (the checker's view)
	addedAt      time.Time // when that add was sent
}

// Server is one reservation on an in-memory CloudShell: services with unique aliases and
// sandbox data, with CloudShell's semantics where the lock depends on them (duplicate
// aliases refused, a model attribute defaulting to "", removing an absent alias is an
// error, a 5 s details cache). Every operation is atomic. Its state is only changed by
// requests that Process delivers, at their virtual arrival time.
type Server struct {
	mu       sync.Mutex
	services []service
	data     []cloudshell.SandboxDataKeyValue
	cache    *cloudshell.ReservationDetails
	cachedAt time.Time
	// onApply sees every applied mutation, under mu, in apply order.
	onApply func(s *Server, m Mutation)
}

// Mutation is one applied write, as the checker sees it.
type Mutation struct {
	At      time.Time
	Proc    string
	Method  string
	Aliases []string // services added or removed
	Removed []service
	Data    []cloudshell.SandboxDataKeyValue
	Attrs   []cloudshell.AttributeNameValue
	call    *callState
}

func (s *Server) find(alias string) int {
	return slices.IndexFunc(s.services, func(sv service) bool { return sv.alias == alias })
}

func (s *Server) add(c *callState, model, alias string, attrs []cloudshell.AttributeNameValue) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if model != mutex.DefaultServiceModel {
		return &cloudshell.APIError{Method: "AddServiceToReservation", Code: 100, Message: fmt.Sprintf("Service '%s' was not found", model)}
	}
	if s.find(alias) >= 0 {
		return &cloudshell.APIError{Method: "AddServiceToReservation", Code: 100, Message: collisionText}
	}
	// The model defines one attribute, "Mutex Owner", default "".
	sv := service{model: model, alias: alias, attrs: []cloudshell.Attribute{{Name: mutex.OwnerAttribute}}, addedBy: c.proc.name, addedAt: c.sent}
	for _, a := range attrs {
		if a.Name != mutex.OwnerAttribute {
			return &cloudshell.APIError{Method: "AddServiceToReservation", Code: 100, Message: fmt.Sprintf("Attribute '%s' is not defined on model '%s'", a.Name, model)}
		}
		sv.attrs[0].Value = a.Value
	}
	s.services = append(s.services, sv)
	s.record(Mutation{Proc: c.proc.name, Method: "AddServiceToReservation", Aliases: []string{alias}, Attrs: attrs, call: c})
	return nil
}

func (s *Server) remove(c *callState, aliases []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var removed []service
	for _, a := range aliases {
		i := s.find(a)
		if i < 0 {
			return &cloudshell.APIError{Method: "RemoveServicesFromReservation", Code: 100, Message: fmt.Sprintf("Service with alias '%s' was not found in reservation", a)}
		}
		removed = append(removed, s.services[i])
	}
	s.services = slices.DeleteFunc(s.services, func(sv service) bool { return slices.Contains(aliases, sv.alias) })
	s.record(Mutation{Proc: c.proc.name, Method: "RemoveServicesFromReservation", Aliases: aliases, Removed: removed, call: c})
	return nil
}

func (s *Server) details(disableCache bool) *cloudshell.ReservationDetails {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !disableCache && s.cache != nil && now.Sub(s.cachedAt) < detailsCacheTTL {
		return s.cache
	}
	d := &cloudshell.ReservationDetails{Reservation: cloudshell.Reservation{ID: ReservationID, Status: "Started"}}
	for _, sv := range s.services {
		d.Services = append(d.Services, cloudshell.Service{ServiceName: sv.model, Alias: sv.alias, Attributes: slices.Clone(sv.attrs)})
	}
	s.cache, s.cachedAt = d, now
	return d
}

func (s *Server) getData() []cloudshell.SandboxDataKeyValue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.data)
}

func (s *Server) setData(c *callState, kv []cloudshell.SandboxDataKeyValue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The checker looks before the write lands: it compares what was there with what the
	// writer expected.
	s.record(Mutation{Proc: c.proc.name, Method: "SetSandboxData", Data: kv, call: c})
	for _, e := range kv {
		if i := slices.IndexFunc(s.data, func(d cloudshell.SandboxDataKeyValue) bool { return d.Key == e.Key }); i >= 0 {
			s.data[i].Value = e.Value
		} else {
			s.data = append(s.data, e)
		}
	}
}

func (s *Server) record(m Mutation) {
	m.At = time.Now()
	if s.onApply != nil {
		s.onApply(s, m)
	}
}

// value returns a sandbox-data value; the caller holds mu.
func (s *Server) valueLocked(key string) string {
	for _, d := range s.data {
		if d.Key == key {
			return d.Value
		}
	}
	return ""
}

// ownerLocked returns the "Mutex Owner" of alias; the caller holds mu.
func (s *Server) ownerLocked(alias string) (string, bool) {
	i := s.find(alias)
	if i < 0 {
		return "", false
	}
	for _, a := range s.services[i].attrs {
		if a.Name == mutex.OwnerAttribute {
			return a.Value, true
		}
	}
	return "", true
}

// Aliases lists the services left in the reservation.
func (s *Server) Aliases() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, sv := range s.services {
		out = append(out, sv.alias)
	}
	return out
}

// isBreakAlias reports whether alias names a break lock.
func isBreakAlias(alias string) bool { return strings.Contains(alias, ".break.") }

// owner returns the lock record of the default lock.
func (s *Server) owner() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ownerLocked(mutex.DefaultName)
}
