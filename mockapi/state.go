package mockapi

import (
	"fmt"
	"strings"
	"time"
)

// Snapshot is a deep copy of a reservation's state.
type Snapshot struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Owner       string            `json:"owner"`
	Status      string            `json:"status"`
	Ended       bool              `json:"ended"`
	Services    []ServiceState    `json:"services"`
	Resources   []string          `json:"resources"`
	Connectors  []ConnectorState  `json:"connectors"`
	SandboxData map[string]string `json:"sandboxData"`
}

// ServiceState is a service in a reservation. Attributes hold every attribute of the
// service's model, defaults included.
type ServiceState struct {
	Alias       string            `json:"alias"`
	ServiceName string            `json:"serviceName"`
	Attributes  map[string]string `json:"attributes"`
}

// ConnectorState is a connector in a reservation.
type ConnectorState struct {
	Source    string `json:"source"`
	Target    string `json:"target"`
	Direction string `json:"direction"`
	Alias     string `json:"alias"`
}

// Mutation is one applied state change, in the order the server applied it. Seq is
// global across reservations, so histories of several reservations can be merged.
type Mutation struct {
	Seq           int64     `json:"seq"`
	At            time.Time `json:"at"`
	Method        string    `json:"method"`
	ReservationID string    `json:"reservationId"`
	// Client is the MachineName of the Authorization header without its ":port".
	Client string `json:"client"`
	Detail string `json:"detail"`
}

const (
	statusStarted   = "Started"
	statusCompleted = "Completed"
	// Dates go out in the reference client's default DateTimeFormat (MM/dd/yyyy HH:mm);
	// clients must treat them as opaque strings anyway.
	dateLayout = "01/02/2006 15:04"
)

type reservation struct {
	id, name, owner, domain string
	created, start, end     time.Time
	actualEnd, modified     time.Time
	ended                   bool

	services   []*service
	resources  []*reservedResource
	connectors []*connector
	sandboxKey []string // insertion order of sandbox keys
	sandbox    map[string]string
	messages   []string

	// cached is the last GetReservationDetails rendering served with disableCache=false.
	cached   []byte
	cachedAt time.Time
}

type service struct {
	alias string
	model *serviceModel
	attrs []attrValue // model order
}

type attrValue struct{ name, value string }

type reservedResource struct {
	path   string
	shared bool
}

type connector struct {
	source, target, direction, alias string
}

// knownResource is a resource in the mock's inventory.
type knownResource struct {
	path, family, model, address string
}

func (r *reservation) service(alias string) *service {
	for _, sv := range r.services {
		if sv.alias == alias {
			return sv
		}
	}
	return nil
}

func (r *reservation) hasResource(path string) bool {
	for _, rr := range r.resources {
		if rr.path == path {
			return true
		}
	}
	return false
}

// rootResource is the resource an endpoint belongs to: "SW-1/Port 3" is a port of "SW-1".
func rootResource(endpoint string) string {
	root, _, _ := strings.Cut(endpoint, "/")
	return root
}

func (r *reservation) status() string {
	if r.ended {
		return statusCompleted
	}
	return statusStarted
}

func (r *reservation) snapshot() Snapshot {
	snap := Snapshot{
		ID:          r.id,
		Name:        r.name,
		Owner:       r.owner,
		Status:      r.status(),
		Ended:       r.ended,
		Services:    make([]ServiceState, 0, len(r.services)),
		Resources:   make([]string, 0, len(r.resources)),
		Connectors:  make([]ConnectorState, 0, len(r.connectors)),
		SandboxData: make(map[string]string, len(r.sandbox)),
	}
	for _, sv := range r.services {
		st := ServiceState{Alias: sv.alias, ServiceName: sv.model.Name, Attributes: map[string]string{}}
		for _, a := range sv.attrs {
			st.Attributes[a.name] = a.value
		}
		snap.Services = append(snap.Services, st)
	}
	for _, rr := range r.resources {
		snap.Resources = append(snap.Resources, rr.path)
	}
	for _, c := range r.connectors {
		snap.Connectors = append(snap.Connectors, ConnectorState{Source: c.source, Target: c.target, Direction: c.direction, Alias: c.alias})
	}
	for k, v := range r.sandbox {
		snap.SandboxData[k] = v
	}
	return snap
}

// newReservationLocked creates a started reservation. Callers hold s.mu.
func (s *Server) newReservationLocked(name, owner, domain string, minutes int) *reservation {
	now := s.now()
	r := &reservation{
		id:       s.newGUIDLocked(),
		name:     name,
		owner:    owner,
		domain:   domain,
		created:  now,
		start:    now,
		end:      now.Add(time.Duration(minutes) * time.Minute),
		modified: now,
		sandbox:  map[string]string{},
	}
	s.reservations[r.id] = r
	return r
}

// newGUIDLocked draws ids from the seeded RNG so a seeded run produces the same ids.
func (s *Server) newGUIDLocked() string {
	hi, lo := s.idRNG.Uint64(), s.idRNG.Uint64()
	hi = hi&^0xf000 | 0x4000         // version 4
	lo = lo&^(0xc<<60) | (0x8 << 60) // RFC 4122 variant
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x",
		hi>>32, (hi>>16)&0xffff, hi&0xffff, lo>>48, lo&0xffffffffffff)
}

// reservationLocked finds a reservation, ended or not.
func (s *Server) reservationLocked(id string) (*reservation, *apiError) {
	r := s.reservations[id]
	if r == nil {
		return nil, failf("Reservation '%s' was not found", id)
	}
	return r, nil
}

// recordLocked appends an applied mutation to the history.
func (s *Server) recordLocked(c *call, reservationID, detail string) {
	s.seq++
	now := s.now()
	if r := s.reservations[reservationID]; r != nil {
		r.modified = now
	}
	s.history = append(s.history, Mutation{
		Seq:           s.seq,
		At:            now,
		Method:        c.req.method,
		ReservationID: reservationID,
		Client:        c.auth.client(),
		Detail:        detail,
	})
}

// CreateReservation creates a started reservation directly, as test setup. It is not
// recorded in the history. An empty owner means "admin".
func (s *Server) CreateReservation(name, owner string) string {
	if owner == "" {
		owner = "admin"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newReservationLocked(name, owner, "Global", 120).id
}

// Snapshot returns a deep copy of a reservation's current state.
func (s *Server) Snapshot(reservationID string) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.reservationLocked(reservationID)
	if err != nil {
		return Snapshot{}, fmt.Errorf("mockapi: %s", err.msg)
	}
	return r.snapshot(), nil
}

// History returns the applied mutations of a reservation in apply order ("" = all
// reservations). Rejected, faulted and read-only calls are not in it.
func (s *Server) History(reservationID string) []Mutation {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Mutation
	for _, m := range s.history {
		if reservationID == "" || m.ReservationID == reservationID {
			out = append(out, m)
		}
	}
	return out
}

// Messages returns the texts written with WriteMessageToReservationOutput, in order.
func (s *Server) Messages(reservationID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.reservations[reservationID]; r != nil {
		return append([]string(nil), r.messages...)
	}
	return nil
}

// addKnownResource adds a resource to the inventory AddResourcesToReservation accepts.
func (s *Server) addKnownResource(fullPath, family, model string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addKnownLocked(fullPath, family, model)
}

func (s *Server) addKnownLocked(fullPath, family, model string) {
	addr := ""
	if old, ok := s.known[fullPath]; ok {
		addr = old.address
	} else {
		n := len(s.known) + 1
		addr = fmt.Sprintf("10.%d.%d.%d", n>>16&0xff, n>>8&0xff, n&0xff)
	}
	s.known[fullPath] = knownResource{path: fullPath, family: family, model: model, address: addr}
}
