// Package topology is the example driver's edit: replace a resource in a reservation and
// move its connectors to the replacement. It is the sequence from the public
// Reservation-Mutex-Lock README that fails when two drivers interleave: every call is atomic,
// the sequence is not.
package topology

import (
	"context"
	"fmt"
	"strings"

	"github.com/csmutex/csmutex/cloudshell"
)

// API is what Replace needs from CloudShell.
type API interface {
	GetReservationDetails(ctx context.Context, reservationID string, disableCache bool) (*cloudshell.ReservationDetails, error)
	RemoveResourcesFromReservation(ctx context.Context, reservationID string, resources []string, deleteDeployedApps bool) ([]cloudshell.Conflict, error)
	AddResourcesToReservation(ctx context.Context, reservationID string, resources []string, shared bool) ([]cloudshell.Conflict, error)
	SetConnectorsInReservation(ctx context.Context, reservationID string, connectors []cloudshell.SetConnectorRequest) error
}

// Replace swaps resource old for replacement and reconnects replacement wherever old was
// connected. It reads the reservation first, so it must run under the reservation's lock:
// a concurrent edit between the read and the writes makes the reconnection fail or lose
// connectors.
func Replace(ctx context.Context, api API, reservationID, old, replacement string) error {
	d, err := api.GetReservationDetails(ctx, reservationID, true)
	if err != nil {
		return fmt.Errorf("read reservation: %w", err)
	}
	var moved []cloudshell.SetConnectorRequest
	for _, c := range d.Connectors {
		src, dst := rename(c.Source, old, replacement), rename(c.Target, old, replacement)
		if src != c.Source || dst != c.Target {
			moved = append(moved, cloudshell.SetConnectorRequest{
				SourceResourceFullName: src, TargetResourceFullName: dst, Direction: c.Direction, Alias: c.Alias})
		}
	}
	if _, err := api.RemoveResourcesFromReservation(ctx, reservationID, []string{old}, true); err != nil {
		return fmt.Errorf("remove %s: %w", old, err)
	}
	if _, err := api.AddResourcesToReservation(ctx, reservationID, []string{replacement}, false); err != nil {
		return fmt.Errorf("add %s: %w", replacement, err)
	}
	if len(moved) > 0 {
		if err := api.SetConnectorsInReservation(ctx, reservationID, moved); err != nil {
			return fmt.Errorf("reconnect %s: %w", replacement, err)
		}
	}
	return nil
}

// rename moves an endpoint ("A/Port 1") of resource old to resource replacement.
func rename(endpoint, old, replacement string) string {
	if endpoint == old {
		return replacement
	}
	if rest, ok := strings.CutPrefix(endpoint, old+"/"); ok {
		return replacement + "/" + rest
	}
	return endpoint
}

// Describe renders a reservation's connectors as "A/Port 1 -- B/Port 1" lines, sorted
// as the server returns them.
func Describe(d *cloudshell.ReservationDetails) []string {
	var out []string
	for _, c := range d.Connectors {
		out = append(out, c.Source+" -- "+c.Target)
	}
	return out
}
