package mutex

import (
	"context"

	"github.com/csmutex/csmutex/cloudshell"
)

// API is the part of the CloudShell Automation API the mutex uses. *cloudshell.Client
// satisfies it; tests and other transports can supply their own.
//
// Implementations must report an alias collision so that cloudshell.IsAliasCollision
// recognises it, and a write whose outcome is unknown with cloudshell.ErrAmbiguous:
// the algorithm resolves both by reading the reservation, never by blind retries.
type API interface {
	AddServiceToReservation(ctx context.Context, reservationID, serviceName, alias string, attributes []cloudshell.AttributeNameValue) error
	RemoveServicesFromReservation(ctx context.Context, reservationID string, aliases []string) error
	GetReservationDetails(ctx context.Context, reservationID string, disableCache bool) (*cloudshell.ReservationDetails, error)
	GetSandboxData(ctx context.Context, reservationID string) ([]cloudshell.SandboxDataKeyValue, error)
	SetSandboxData(ctx context.Context, reservationID string, values []cloudshell.SandboxDataKeyValue) error
}
