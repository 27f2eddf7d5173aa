package mutexpkg_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/csmutex/csmutex/internal/testenv"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
	"github.com/csmutex/csmutex/mutexpkg"
)

// "Mutex Service" and "Mutex Owner" are defined once, as this package's constants, and
// written once more in its data model (what customers import, and what the mock CloudShell
// loads). Package mutex's defaults (what drivers add and read) must be those constants and
// the data model must define them: otherwise csmutex would add a service the imported
// package does not define, or read its owner from an attribute the model does not have.
func TestNamesAgreeWithMutex(t *testing.T) {
	if mutexpkg.ModelName != mutex.DefaultServiceModel {
		t.Errorf("ModelName %q, mutex.DefaultServiceModel %q", mutexpkg.ModelName, mutex.DefaultServiceModel)
	}
	if mutexpkg.OwnerAttrName != mutex.OwnerAttribute {
		t.Errorf("OwnerAttrName %q, mutex.OwnerAttribute %q", mutexpkg.OwnerAttrName, mutex.OwnerAttribute)
	}
	m := parseModel(t, mutexpkg.DataModel)
	if len(m.Families) != 1 || len(m.Families[0].Models) != 1 || m.Families[0].Models[0].Name != mutex.DefaultServiceModel {
		t.Fatalf("the data model's models %+v, want only %q", m.Families, mutex.DefaultServiceModel)
	}
	if a := m.Families[0].Models[0].Attached; len(a) != 1 || a[0].Name != mutex.OwnerAttribute {
		t.Fatalf("the model's attributes %+v, want only %q", a, mutex.OwnerAttribute)
	}
}

// The mock loads this package's data model. A lock taken with mutex's defaults must be
// accepted by it and carry its owner in the attribute mutex reads; with the public
// package's latest model (no owner attribute) mutex must refuse, as on a real server.
func TestMockAcceptsMutexDefaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	env := testenv.NewInProcess(t)
	lock, err := mutex.New(env.Client("names"), env.ReservationID, mutex.WithOwner("names-test")).Lock(ctx)
	if err != nil {
		t.Fatalf("lock with mutex's defaults against the packaged model: %v", err)
	}
	snap, err := env.Server.Snapshot(env.ReservationID)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, sv := range snap.Services {
		if sv.Alias != mutex.DefaultName {
			continue
		}
		found = true
		if sv.ServiceName != mutex.DefaultServiceModel || sv.Attributes[mutex.OwnerAttribute] == "" {
			t.Errorf("lock service %+v, want model %q with %q set", sv, mutex.DefaultServiceModel, mutex.OwnerAttribute)
		}
	}
	if !found {
		t.Errorf("no service %q in %+v", mutex.DefaultName, snap.Services)
	}
	if err := lock.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	legacy := testenv.NewInProcess(t, mockapi.WithDataModel(mutexpkg.LegacyDataModel))
	_, err = mutex.New(legacy.Client("names"), legacy.ReservationID).Lock(ctx)
	if !errors.Is(err, mutex.ErrOwnerAttributeMissing) {
		t.Fatalf("lock against the legacy model: %v, want ErrOwnerAttributeMissing", err)
	}
}
