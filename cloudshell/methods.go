package cloudshell

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Typed wrappers. Parameter names and order are the reference client's (2024.1); every
// parameter is sent, defaults included, because that is what the server has been seen with.

// Call invokes any API method with the given parameters and returns the ResponseInfo
// element (nil when the answer has none; Node methods are nil-safe). Methods other than
// GetReservationDetails, GetSandboxData and GetServerDateAndTime are treated as writes:
// sent once, never retried. Calling Logon or SecureLogon here does not change the client's
// session; use the dedicated methods for that.
func (c *Client) Call(ctx context.Context, method string, params ...Param) (*Node, error) {
	if method == "" {
		return nil, &ArgumentError{Method: "Call", Field: "method", Reason: "is empty"}
	}
	if !validXMLName(method) {
		return nil, &ArgumentError{Method: "Call", Field: "method", Reason: "is not a valid method name"}
	}
	kind := kindWrite
	if readMethods[method] {
		kind = kindRead
	}
	return c.invoke(ctx, method, kind, nil, params...)
}

// Logon starts a session with a username and password. On success the credentials are kept
// so that a later HTTP 401 can be answered by logging on again. domain "" means the
// configured domain.
func (c *Client) Logon(ctx context.Context, username, password, domain string) (*LogonResult, error) {
	const method = "Logon"
	if username == "" {
		return nil, &ArgumentError{Method: method, Field: "username", Reason: "is empty"}
	}
	if domain == "" {
		domain = c.cfg.Domain
	}
	n, err := c.invoke(ctx, method, kindLogon, []string{password},
		Param{"username", username}, Param{"password", password}, Param{"domainName", domain})
	if err != nil {
		return nil, err
	}
	res, token, err := c.parseLogon(method, n)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.mode, c.username, c.password, c.adminToken, c.domain = authPassword, username, password, "", domain
	c.setTokenLocked(token)
	c.mu.Unlock()
	return res, nil
}

// SecureLogon starts a session from an admin token (drivers receive one in their context).
// The server answers with a session token, which is what later calls use; the admin token
// is kept for logging on again after a 401. domain "" means the configured domain.
func (c *Client) SecureLogon(ctx context.Context, token, domain string) (*LogonResult, error) {
	const method = "SecureLogon"
	if token == "" {
		return nil, &ArgumentError{Method: method, Field: "token", Reason: "is empty"}
	}
	if domain == "" {
		domain = c.cfg.Domain
	}
	n, err := c.invoke(ctx, method, kindLogon, []string{token},
		Param{"token", token}, Param{"domainName", domain})
	if err != nil {
		return nil, err
	}
	res, sessionToken, err := c.parseLogon(method, n)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.mode, c.username, c.password, c.adminToken, c.domain = authToken, "", "", token, domain
	c.setTokenLocked(sessionToken)
	c.mu.Unlock()
	return res, nil
}

func (c *Client) parseLogon(method string, n *Node) (*LogonResult, string, error) {
	token := n.Child("Token").Field("Token")
	if token == "" {
		return nil, "", &badResponseError{method: method, reason: "no Token in the logon answer"}
	}
	if hasControl(token) || strings.ContainsRune(token, ';') {
		// It would corrupt the Authorization header of every later call.
		return nil, "", &badResponseError{method: method, reason: "the returned token is not usable in a header"}
	}
	d, u := n.Child("Domain"), n.Child("User")
	return &LogonResult{
		DomainName: d.Field("Name"),
		DomainID:   d.Field("DomainId"),
		UserName:   u.Field("Name"),
		IsAdmin:    parseBool(u.Field("IsAdmin")),
	}, token, nil
}

// Logoff ends the session. The stored credentials are kept, so a later call logs on again.
// A 401 counts as success: there is no session left to end.
func (c *Client) Logoff(ctx context.Context) error {
	if _, err := c.invoke(ctx, "Logoff", kindLogoff, nil); err != nil {
		return err
	}
	c.mu.Lock()
	if c.mode != authSession {
		c.setTokenLocked("")
	}
	c.mu.Unlock()
	return nil
}

// CreateImmediateReservation creates a reservation starting now.
func (c *Client) CreateImmediateReservation(ctx context.Context, req CreateReservationRequest) (*Reservation, error) {
	const method = "CreateImmediateReservation"
	switch {
	case req.Name == "":
		return nil, &ArgumentError{Method: method, Field: "reservationName", Reason: "is empty"}
	case req.DurationMinutes <= 0:
		return nil, &ArgumentError{Method: method, Field: "durationInMinutes", Reason: "must be positive"}
	case req.NotificationMinutesBeforeEnd < 0:
		return nil, &ArgumentError{Method: method, Field: "notificationMinutesBeforeEnd", Reason: "must not be negative"}
	}
	n, err := c.invoke(ctx, method, kindWrite, nil,
		Param{"reservationName", req.Name},
		Param{"owner", req.Owner},
		Param{"durationInMinutes", req.DurationMinutes},
		Param{"notifyOnStart", req.NotifyOnStart},
		Param{"notifyOnEnd", req.NotifyOnEnd},
		Param{"notificationMinutesBeforeEnd", req.NotificationMinutesBeforeEnd},
		Param{"isTerminationProtectionEnabled", req.TerminationProtection},
		Param{"approvalSid", req.ApprovalSID},
	)
	if err != nil {
		return nil, err
	}
	r := n.Child("Reservation")
	if r == nil || r.Field("Id") == "" {
		// Success="true" without an id: the reservation probably exists but cannot be named.
		return nil, &ambiguousError{cause: &badResponseError{method: method, reason: "no Reservation Id in the answer"}}
	}
	res := parseReservation(r)
	return &res, nil
}

// EndReservation ends a reservation; unmap asks the server to unmap its resources.
func (c *Client) EndReservation(ctx context.Context, reservationID string, unmap bool) error {
	const method = "EndReservation"
	if reservationID == "" {
		return &ArgumentError{Method: method, Field: "reservationId", Reason: "is empty"}
	}
	_, err := c.invoke(ctx, method, kindWrite, nil,
		Param{"reservationId", reservationID}, Param{"unmap", unmap})
	return err
}

// GetReservationDetails reads a reservation. The server caches details for about five
// seconds; disableCache asks for fresh data, which any check-after-write needs.
func (c *Client) GetReservationDetails(ctx context.Context, reservationID string, disableCache bool) (*ReservationDetails, error) {
	const method = "GetReservationDetails"
	if reservationID == "" {
		return nil, &ArgumentError{Method: method, Field: "reservationId", Reason: "is empty"}
	}
	n, err := c.invoke(ctx, method, kindRead, nil,
		Param{"reservationId", reservationID}, Param{"disableCache", disableCache})
	if err != nil {
		return nil, err
	}
	rd := n.Child("ReservationDescription")
	if rd == nil {
		return nil, &badResponseError{method: method, reason: "no ReservationDescription in the answer"}
	}
	return parseReservationDetails(rd), nil
}

// AddServiceToReservation adds a service instance under alias. An alias that is taken
// fails with an *APIError for which IsAliasCollision is true.
func (c *Client) AddServiceToReservation(ctx context.Context, reservationID, serviceName, alias string, attributes []AttributeNameValue) error {
	const method = "AddServiceToReservation"
	switch {
	case reservationID == "":
		return &ArgumentError{Method: method, Field: "reservationId", Reason: "is empty"}
	case serviceName == "":
		return &ArgumentError{Method: method, Field: "serviceName", Reason: "is empty"}
	case alias == "":
		return &ArgumentError{Method: method, Field: "alias", Reason: "is empty"}
	}
	if err := checkAttributes(method, "attributes", attributes); err != nil {
		return err
	}
	_, err := c.invoke(ctx, method, kindWrite, nil,
		Param{"reservationId", reservationID},
		Param{"serviceName", serviceName},
		Param{"alias", alias},
		Param{"attributes", attributes},
	)
	return err
}

// RemoveServicesFromReservation removes services (or apps) by alias.
func (c *Client) RemoveServicesFromReservation(ctx context.Context, reservationID string, aliases []string) error {
	const method = "RemoveServicesFromReservation"
	if reservationID == "" {
		return &ArgumentError{Method: method, Field: "reservationId", Reason: "is empty"}
	}
	if err := checkStrings(method, "services", aliases); err != nil {
		return err
	}
	_, err := c.invoke(ctx, method, kindWrite, nil,
		Param{"reservationId", reservationID}, Param{"services", aliases})
	return err
}

// SetServiceAttributesValues sets attributes of the service with the given alias.
func (c *Client) SetServiceAttributesValues(ctx context.Context, reservationID, serviceAlias string, attributes []AttributeNameValue) error {
	const method = "SetServiceAttributesValues"
	switch {
	case reservationID == "":
		return &ArgumentError{Method: method, Field: "reservationId", Reason: "is empty"}
	case serviceAlias == "":
		return &ArgumentError{Method: method, Field: "serviceAlias", Reason: "is empty"}
	}
	if err := checkAttributes(method, "attributeRequests", attributes); err != nil {
		return err
	}
	_, err := c.invoke(ctx, method, kindWrite, nil,
		Param{"reservationId", reservationID},
		Param{"serviceAlias", serviceAlias},
		Param{"attributeRequests", attributes},
	)
	return err
}

// GetSandboxData reads a reservation's sandbox data (a string map, in server order).
func (c *Client) GetSandboxData(ctx context.Context, reservationID string) ([]SandboxDataKeyValue, error) {
	const method = "GetSandboxData"
	if reservationID == "" {
		return nil, &ArgumentError{Method: method, Field: "reservationId", Reason: "is empty"}
	}
	n, err := c.invoke(ctx, method, kindRead, nil, Param{"reservationId", reservationID})
	if err != nil {
		return nil, err
	}
	items := n.List("SandboxDataKeyValues")
	out := make([]SandboxDataKeyValue, 0, len(items))
	for _, it := range items {
		out = append(out, SandboxDataKeyValue{Key: it.Field("Key"), Value: it.Field("Value")})
	}
	return out, nil
}

// SetSandboxData creates or overwrites sandbox data keys.
func (c *Client) SetSandboxData(ctx context.Context, reservationID string, values []SandboxDataKeyValue) error {
	const method = "SetSandboxData"
	if reservationID == "" {
		return &ArgumentError{Method: method, Field: "reservationId", Reason: "is empty"}
	}
	for i, kv := range values {
		if kv.Key == "" {
			return &ArgumentError{Method: method, Field: fmt.Sprintf("sandboxDataKeyValues[%d].Key", i), Reason: "is empty"}
		}
	}
	_, err := c.invoke(ctx, method, kindWrite, nil,
		Param{"reservationId", reservationID}, Param{"sandboxDataKeyValues", values})
	return err
}

// AddResourcesToReservation adds resources by full path and reports conflicts.
func (c *Client) AddResourcesToReservation(ctx context.Context, reservationID string, resourcesFullPath []string, shared bool) ([]Conflict, error) {
	return c.resources(ctx, "AddResourcesToReservation", reservationID, resourcesFullPath, Param{"shared", shared})
}

// RemoveResourcesFromReservation removes resources by full path and reports conflicts.
func (c *Client) RemoveResourcesFromReservation(ctx context.Context, reservationID string, resourcesFullPath []string, deleteDeployedApps bool) ([]Conflict, error) {
	return c.resources(ctx, "RemoveResourcesFromReservation", reservationID, resourcesFullPath, Param{"deleteDeployedApps", deleteDeployedApps})
}

// resources is the shape both resource calls share: a reservation, a list of full paths, one
// boolean, and a conflict list back.
func (c *Client) resources(ctx context.Context, method, reservationID string, paths []string, flag Param) ([]Conflict, error) {
	if reservationID == "" {
		return nil, &ArgumentError{Method: method, Field: "reservationId", Reason: "is empty"}
	}
	if err := checkStrings(method, "resourcesFullPath", paths); err != nil {
		return nil, err
	}
	n, err := c.invoke(ctx, method, kindWrite, nil,
		Param{"reservationId", reservationID}, Param{"resourcesFullPath", paths}, flag)
	if err != nil {
		return nil, err
	}
	return parseConflicts(n), nil
}

// SetConnectorsInReservation creates or updates connectors. Any payload is ignored: the
// reference client declares none although old servers send one.
func (c *Client) SetConnectorsInReservation(ctx context.Context, reservationID string, connectors []SetConnectorRequest) error {
	const method = "SetConnectorsInReservation"
	if reservationID == "" {
		return &ArgumentError{Method: method, Field: "reservationId", Reason: "is empty"}
	}
	for i, cr := range connectors {
		switch {
		case cr.SourceResourceFullName == "":
			return &ArgumentError{Method: method, Field: fmt.Sprintf("connectors[%d].SourceResourceFullName", i), Reason: "is empty"}
		case cr.TargetResourceFullName == "":
			return &ArgumentError{Method: method, Field: fmt.Sprintf("connectors[%d].TargetResourceFullName", i), Reason: "is empty"}
		}
	}
	_, err := c.invoke(ctx, method, kindWrite, nil,
		Param{"reservationId", reservationID}, Param{"connectors", connectors})
	return err
}

// RemoveConnectorsFromReservation removes connectors by endpoint full names (callers
// usually pass the pair [source, target]).
func (c *Client) RemoveConnectorsFromReservation(ctx context.Context, reservationID string, endpoints []string) error {
	const method = "RemoveConnectorsFromReservation"
	if reservationID == "" {
		return &ArgumentError{Method: method, Field: "reservationId", Reason: "is empty"}
	}
	if err := checkStrings(method, "endpoints", endpoints); err != nil {
		return err
	}
	_, err := c.invoke(ctx, method, kindWrite, nil,
		Param{"reservationId", reservationID}, Param{"endpoints", endpoints})
	return err
}

// GetServerDateAndTime reads the server clock.
func (c *Client) GetServerDateAndTime(ctx context.Context) (*ServerTime, error) {
	const method = "GetServerDateAndTime"
	n, err := c.invoke(ctx, method, kindRead, nil)
	if err != nil {
		return nil, err
	}
	raw := n.Field("ServerDateTime")
	if raw == "" {
		return nil, &badResponseError{method: method, reason: "no ServerDateTime in the answer"}
	}
	st := &ServerTime{Raw: raw}
	if t, err := time.Parse(time.RFC3339Nano, raw); err == nil {
		st.Time = t
	}
	return st, nil
}

// WriteMessageToReservationOutput appends a line to the reservation's output window.
func (c *Client) WriteMessageToReservationOutput(ctx context.Context, reservationID, message string) error {
	const method = "WriteMessageToReservationOutput"
	if reservationID == "" {
		return &ArgumentError{Method: method, Field: "reservationId", Reason: "is empty"}
	}
	_, err := c.invoke(ctx, method, kindWrite, nil,
		Param{"reservationId", reservationID}, Param{"message", message})
	return err
}

func checkStrings(method, field string, items []string) error {
	for i, s := range items {
		if s == "" {
			return &ArgumentError{Method: method, Field: fmt.Sprintf("%s[%d]", field, i), Reason: "is empty"}
		}
	}
	return nil
}

func checkAttributes(method, field string, attrs []AttributeNameValue) error {
	for i, a := range attrs {
		if a.Name == "" {
			return &ArgumentError{Method: method, Field: fmt.Sprintf("%s[%d].Name", field, i), Reason: "is empty"}
		}
	}
	return nil
}

// Response payload decoding. Field names are the server's; see doc section 4.3.

func parseReservation(r *Node) Reservation {
	live := r.Field("ReservationLiveStatusName")
	if live == "" {
		live = r.Child("ReservationLiveStatus").Field("ReservationLiveStatusName")
	}
	return Reservation{
		ID:                 r.Field("Id"),
		Name:               r.Field("Name"),
		Description:        r.Field("Description"),
		Owner:              r.Field("Owner"),
		DomainName:         r.Field("DomainName"),
		StartTime:          r.Field("StartTime"),
		EndTime:            r.Field("EndTime"),
		Status:             r.Field("Status"),
		ProvisioningStatus: r.Field("ProvisioningStatus"),
		Booked:             parseBool(r.Field("Booked")),
		LiveStatusName:     live,
	}
}

func parseReservationDetails(rd *Node) *ReservationDetails {
	d := &ReservationDetails{
		Reservation: parseReservation(rd),
		SetupStage:  rd.Field("SetupStage"),
	}
	for _, s := range rd.List("Services") {
		d.Services = append(d.Services, Service{
			ServiceName: s.Field("ServiceName"),
			Alias:       s.Field("Alias"),
			Attributes:  parseAttributes(s),
		})
	}
	for _, r := range rd.List("Resources") {
		d.Resources = append(d.Resources, ReservedResource{
			Name:               r.Field("Name"),
			FolderFullPath:     r.Field("FolderFullPath"),
			FullAddress:        r.Field("FullAddress"),
			ResourceFamilyName: r.Field("ResourceFamilyName"),
			ResourceModelName:  r.Field("ResourceModelName"),
			Shared:             parseBool(r.Field("Shared")),
			Locked:             parseBool(r.Field("Locked")),
			Released:           parseBool(r.Field("Released")),
		})
	}
	for _, cn := range rd.List("Connectors") {
		dir := cn.Field("Direction")
		if dir == "" {
			// Older servers name it ResourceMappingType.
			dir = cn.Field("ResourceMappingType")
		}
		d.Connectors = append(d.Connectors, Connector{
			Alias:      cn.Field("Alias"),
			Type:       cn.Field("Type"),
			Direction:  dir,
			Source:     cn.Field("Source"),
			Target:     cn.Field("Target"),
			State:      cn.Field("State"),
			Attributes: parseAttributes(cn),
		})
	}
	return d
}

func parseAttributes(n *Node) []Attribute {
	items := n.List("Attributes")
	if len(items) == 0 {
		return nil
	}
	out := make([]Attribute, 0, len(items))
	for _, a := range items {
		out = append(out, Attribute{Name: a.Field("Name"), Value: a.Field("Value")})
	}
	return out
}

func parseConflicts(n *Node) []Conflict {
	var out []Conflict
	for _, it := range n.List("Conflicts") {
		out = append(out, Conflict{
			ResourceName:           it.Field("ResourceName"),
			ConflictType:           it.Field("ConflictType"),
			Topology:               it.Field("Topology"),
			ConflictWith:           it.Field("ConflictWith"),
			ConflictWithUser:       it.Field("ConflictWithUser"),
			ConflictStarted:        it.Field("ConflictStarted"),
			ConflictPlannedEndTime: it.Field("ConflictPlannedEndTime"),
		})
	}
	return out
}
