package cloudshell

import "time"

// Request objects. Their wire form is an element named after the type, with the fields as
// child elements in alphabetical order (the reference client sorts them).

// AttributeNameValue sets one attribute, as in AddServiceToReservation.
type AttributeNameValue struct {
	Name  string
	Value string
}

// SandboxDataKeyValue is one entry of a reservation's sandbox data (a string map).
type SandboxDataKeyValue struct {
	Key   string
	Value string
}

// SetConnectorRequest asks for a connector between two resource endpoints.
type SetConnectorRequest struct {
	SourceResourceFullName string
	TargetResourceFullName string
	// Direction is passed through as given; servers have been seen to answer "bi"/"uni".
	Direction string
	Alias     string
}

// LogonResult is what Logon and SecureLogon report. The session token itself is kept
// inside the Client and never exposed here, so a result can be logged safely.
type LogonResult struct {
	DomainName string
	DomainID   string
	UserName   string
	IsAdmin    bool
}

// CreateReservationRequest holds the parameters of CreateImmediateReservation.
type CreateReservationRequest struct {
	Name                         string
	Owner                        string
	DurationMinutes              int
	NotifyOnStart                bool
	NotifyOnEnd                  bool
	NotificationMinutesBeforeEnd int
	TerminationProtection        bool
	ApprovalSID                  string
}

// Reservation is CloudShell's ReservationShortInfo. Status strings are passed through as
// the server sends them ("Started", "Active", "Completed", ...): the full set is not
// documented, so nothing here interprets them.
type Reservation struct {
	ID                 string
	Name               string
	Description        string
	Owner              string
	DomainName         string
	StartTime          string
	EndTime            string
	Status             string
	ProvisioningStatus string
	Booked             bool
	// LiveStatusName is ReservationLiveStatusName (e.g. "Ended" when it is over).
	LiveStatusName string
}

// ReservationDetails is the payload of GetReservationDetails.
type ReservationDetails struct {
	Reservation
	Services   []Service
	Resources  []ReservedResource
	Connectors []Connector
	SetupStage string
}

// Service is a service instance in a reservation.
type Service struct {
	ServiceName string
	Alias       string
	Attributes  []Attribute
}

// Attribute is a name/value pair as the server reports it.
type Attribute struct {
	Name  string
	Value string
}

// Attribute returns the value of the named attribute and whether it is present.
func (s Service) Attribute(name string) (string, bool) {
	for _, a := range s.Attributes {
		if a.Name == name {
			return a.Value, true
		}
	}
	return "", false
}

// Service returns the service with the given alias, if the reservation has one.
func (d *ReservationDetails) Service(alias string) (Service, bool) {
	if d == nil {
		return Service{}, false
	}
	for _, s := range d.Services {
		if s.Alias == alias {
			return s, true
		}
	}
	return Service{}, false
}

// ReservedResource is a resource in a reservation.
type ReservedResource struct {
	Name               string
	FolderFullPath     string
	FullAddress        string
	ResourceFamilyName string
	ResourceModelName  string
	Shared             bool
	Locked             bool
	Released           bool
}

// Connector is a connection between two endpoints in a reservation.
type Connector struct {
	Alias      string
	Type       string
	Direction  string // Direction, or ResourceMappingType on older servers
	Source     string
	Target     string
	State      string
	Attributes []Attribute
}

// Conflict is a resource conflict reported by Add/RemoveResourcesFromReservation.
type Conflict struct {
	ResourceName           string
	ConflictType           string
	Topology               string
	ConflictWith           string
	ConflictWithUser       string
	ConflictStarted        string
	ConflictPlannedEndTime string
}

// ServerTime is GetServerDateAndTime's answer. Raw is the server's string; Time is set when
// it parses as RFC 3339 (the documented form) and is zero otherwise.
type ServerTime struct {
	Raw  string
	Time time.Time
}
