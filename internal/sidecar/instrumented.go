package sidecar

import (
	"context"
	"errors"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mutex"
)

// instrumentedAPI is a mutex.API that counts every CloudShell call the mutex makes, and
// classifies the failures, into the sidecar's metrics. It changes nothing else: errors
// are returned as they are, so the mutex classifies them exactly as without it.
type instrumentedAPI struct {
	next mutex.API
	m    *metrics
}

var (
	_ mutex.API           = (*instrumentedAPI)(nil)
	_ mutex.MessageWriter = (*instrumentedAPI)(nil)
)

func (m *metrics) instrument(api mutex.API) mutex.API { return &instrumentedAPI{next: api, m: m} }

// Error kinds of csmutex_cloudshell_errors_total.
const (
	kindCollision    = "collision"
	kindAmbiguous    = "ambiguous"
	kindTransient    = "transient"
	kindPermanent    = "permanent"
	kindUnauthorized = "unauthorized"
)

var errorKinds = []string{kindCollision, kindAmbiguous, kindTransient, kindPermanent, kindUnauthorized}

// classifyCallError names the kind of a failed call, or "" for the end of the caller's own
// context (a client that went away is not a CloudShell error).
func classifyCallError(err error) string {
	// The mutex's classes, translated; an ambiguous write is told apart (it is Unavailable
	// to the mutex, but worth its own count: it is what the lock settles by reading).
	if errors.Is(err, cloudshell.ErrAmbiguous) {
		return kindAmbiguous
	}
	switch mutex.CallClass(err) {
	case mutex.ClassContended:
		return kindCollision
	case mutex.ClassAuth:
		return kindUnauthorized
	case mutex.ClassUnavailable:
		if errors.Is(err, context.Canceled) {
			return "" // the caller gave up: not the server's failure
		}
		return kindTransient
	default:
		return kindPermanent
	}
}

func (a *instrumentedAPI) observe(method string, err error) {
	if err == nil {
		a.m.calls.WithLabelValues(method, "ok").Inc()
		return
	}
	kind := classifyCallError(err)
	if kind == "" {
		a.m.calls.WithLabelValues(method, "canceled").Inc()
		return
	}
	a.m.calls.WithLabelValues(method, "error").Inc()
	a.m.errors.WithLabelValues(kind).Inc()
}

func (a *instrumentedAPI) AddServiceToReservation(ctx context.Context, reservationID, serviceName, alias string, attributes []cloudshell.AttributeNameValue) error {
	err := a.next.AddServiceToReservation(ctx, reservationID, serviceName, alias, attributes)
	a.observe("AddServiceToReservation", err)
	return err
}

func (a *instrumentedAPI) RemoveServicesFromReservation(ctx context.Context, reservationID string, aliases []string) error {
	err := a.next.RemoveServicesFromReservation(ctx, reservationID, aliases)
	a.observe("RemoveServicesFromReservation", err)
	return err
}

func (a *instrumentedAPI) GetReservationDetails(ctx context.Context, reservationID string, disableCache bool) (*cloudshell.ReservationDetails, error) {
	d, err := a.next.GetReservationDetails(ctx, reservationID, disableCache)
	a.observe("GetReservationDetails", err)
	return d, err
}

func (a *instrumentedAPI) GetSandboxData(ctx context.Context, reservationID string) ([]cloudshell.SandboxDataKeyValue, error) {
	v, err := a.next.GetSandboxData(ctx, reservationID)
	a.observe("GetSandboxData", err)
	return v, err
}

func (a *instrumentedAPI) SetSandboxData(ctx context.Context, reservationID string, values []cloudshell.SandboxDataKeyValue) error {
	err := a.next.SetSandboxData(ctx, reservationID, values)
	a.observe("SetSandboxData", err)
	return err
}

// errNoOutputWindow: the client cannot write to the Output window (a DialFunc's own API
// without the method). The mutex only logs a failed message.
var errNoOutputWindow = errors.New("sidecar: this CloudShell client cannot write to the reservation's Output window")

// WriteMessageToReservationOutput passes sandbox messages (mutex.WithSandboxMessages)
// through: without it the wrapper would hide the client's mutex.MessageWriter.
func (a *instrumentedAPI) WriteMessageToReservationOutput(ctx context.Context, reservationID, message string) error {
	mw, ok := a.next.(mutex.MessageWriter)
	if !ok {
		return errNoOutputWindow
	}
	err := mw.WriteMessageToReservationOutput(ctx, reservationID, message)
	a.observe("WriteMessageToReservationOutput", err)
	return err
}
