package mockapi

// Payload rendering for the ResponseInfo types of the API doc, section 4.3. Attribute
// form vs element form follows what real servers send (and the reference parser reads
// both), e.g. Status as an attribute but SetupStage as an element.

import "time"

func fmtTime(t time.Time) string { return t.UTC().Format(dateLayout) }

// shortInfoAttrs renders ReservationShortInfo's attributes.
func (r *reservation) shortInfoAttrs() []string {
	live, liveDesc := "InProgress", "The reservation is active"
	actualEnd := ""
	if r.ended {
		live, liveDesc = "Ended", "The reservation has ended"
		actualEnd = fmtTime(r.actualEnd)
	}
	return []string{
		"Id", r.id,
		"Name", r.name,
		"Description", "",
		"StartTime", fmtTime(r.start),
		"EndTime", fmtTime(r.end),
		"TeardownTime", "",
		"RecurrenceType", "None",
		"Owner", r.owner,
		"Booked", "true",
		"Status", r.status(),
		"ProvisioningStatus", "Ready",
		"ActualEndTime", actualEnd,
		"CreateDate", fmtTime(r.created),
		"ModificationDate", fmtTime(r.modified),
		"DomainName", r.domain,
		"ReservationLiveStatusName", live,
		"ReservationLiveStatusDescription", liveDesc,
	}
}

func (r *reservation) shortInfoLists(w *xw) {
	w.leaf("Topologies")
	w.leaf("TopologiesInfo")
	w.open("PermittedUsers")
	w.text("PermittedUser", r.owner)
	w.close("PermittedUsers")
}

func (r *reservation) renderCreated() *result {
	w := payload()
	w.open("Reservation", r.shortInfoAttrs()...)
	r.shortInfoLists(w)
	w.close("Reservation")
	return &result{typ: "CreateReservationResponseInfo", body: w.b.Bytes()}
}

// renderDetails renders GetReservationDescriptionResponseInfo's content.
func (s *Server) renderDetails(r *reservation) []byte {
	w := payload()
	w.open("ReservationDescription", r.shortInfoAttrs()...)
	r.shortInfoLists(w)

	if len(r.resources) == 0 {
		w.leaf("Resources")
	} else {
		w.open("Resources")
		for _, rr := range r.resources {
			k := s.known[rr.path]
			w.leaf("ReservedResource",
				"Name", rr.path,
				"FolderFullPath", "",
				"FullAddress", k.address,
				"Shared", boolStr(rr.shared),
				"Availability", "Available",
				"Locked", "false",
				"Released", "false",
				"ResourceFamilyName", k.family,
				"ResourceModelName", k.model,
				"CreatedByUser", "",
				"CreatedInDomain", r.domain,
				"CreatedInReservation", "",
				"AppTemplateName", "")
		}
		w.close("Resources")
	}
	for _, empty := range []string{"TopologiesReservedResources", "Conflicts", "TopologiesRouteInfo",
		"TopologiesResourcesAttributeInfo", "TopologiesInstructionsInfo", "ActiveRoutesInfo", "RequestedRoutesInfo"} {
		w.leaf(empty)
	}
	if len(r.connectors) == 0 {
		w.leaf("Connectors")
	} else {
		w.open("Connectors")
		for _, c := range r.connectors {
			w.open("Connector", "Alias", c.alias, "Type", "Default", "Direction", c.direction,
				"Source", c.source, "Target", c.target, "State", "Connected")
			w.leaf("Attributes")
			w.close("Connector")
		}
		w.close("Connectors")
	}
	w.leaf("Apps")
	live := "InProgress"
	stage := "None"
	if r.ended {
		live, stage = "Ended", "Ended"
	}
	w.leaf("ReservationLiveStatus", "ReservationId", r.id, "ReservationLiveStatusName", live,
		"ReservationLiveStatusDescription", "")
	w.text("SetupStage", stage)
	if len(r.services) == 0 {
		w.leaf("Services")
	} else {
		w.open("Services")
		for _, sv := range r.services {
			w.open("Service", "ServiceName", sv.model.Name, "Alias", sv.alias, "Address", "",
				"ResourceLiveStatusName", "", "ResourceLiveStatusDescription", "")
			if len(sv.attrs) == 0 {
				w.leaf("Attributes")
			} else {
				w.open("Attributes")
				for _, a := range sv.attrs {
					w.leaf("Attribute", "Name", a.name, "Value", a.value)
				}
				w.close("Attributes")
			}
			w.close("Service")
		}
		w.close("Services")
	}
	w.close("ReservationDescription")
	return w.b.Bytes()
}

func (r *reservation) renderSandboxData() *result {
	w := payload()
	if len(r.sandboxKey) == 0 {
		w.leaf("SandboxDataKeyValues")
	} else {
		w.open("SandboxDataKeyValues")
		for _, k := range r.sandboxKey {
			w.leaf("SandboxDataKeyValue", "Key", k, "Value", r.sandbox[k])
		}
		w.close("SandboxDataKeyValues")
	}
	return &result{typ: "GetSandboxDataInfo", body: w.b.Bytes()}
}

// noConflicts is ReserveResourcesResponseInfo with an empty Conflicts list: the mock has
// no cross-reservation resource scheduling.
func noConflicts() *result {
	w := payload()
	w.leaf("Conflicts")
	return &result{typ: "ReserveResourcesResponseInfo", body: w.b.Bytes()}
}
