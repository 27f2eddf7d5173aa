package locks_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/locks"
	"github.com/csmutex/csmutex/mockapi"
)

// connect starts an in-process mock CloudShell with one reservation and logs on to it.
// A real driver dials its CloudShell server instead.
func connect() (*cloudshell.Client, string, func()) {
	mock := mockapi.New()
	if _, err := mock.Start("127.0.0.1:0"); err != nil {
		log.Fatal(err)
	}
	host, port := mock.Addr()
	client, err := cloudshell.Dial(context.Background(), cloudshell.Config{
		Host: host, Port: port, Username: "admin", Password: "admin", Domain: "Global"})
	if err != nil {
		log.Fatal(err)
	}
	return client, mock.CreateReservation("example", "admin"), func() { mock.Close() }
}

// At most 3 drivers reconfigure the lab's shared switch at once.
func ExampleSemaphore() {
	api, reservationID, stop := connect()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	sem := locks.NewSemaphore(api, reservationID, "SWITCH-1", 3)
	err := sem.With(ctx, func(ctx context.Context, h *locks.Hold) error {
		fmt.Println("reconfiguring in slot", h.Info().Slot, "of", sem.Slots())
		return nil
	})
	fmt.Println("released, err =", err)
	// Output:
	// reconfiguring in slot 1 of 3
	// released, err = <nil>
}

// Many drivers read the topology at once; a rewire takes it exclusively, and excludes drivers
// that lock "MUTEX" the old way too.
func ExampleRWMutex() {
	api, reservationID, stop := connect()
	defer stop()
	ctx := context.Background()

	topo := locks.NewRWMutex(api, reservationID, "MUTEX")
	_ = topo.WithShared(ctx, func(ctx context.Context, h *locks.Hold) error {
		fmt.Println("reading the topology in", h.Info().Aliases[0])
		return nil
	})
	_ = topo.WithExclusive(ctx, func(ctx context.Context, h *locks.Hold) error {
		fmt.Println("rewiring under", h.Info().Aliases[0])
		return nil
	})
	// Output:
	// reading the topology in MUTEX.read.1
	// rewiring under MUTEX
}

// Both switches, or neither; two drivers naming them in any order never deadlock.
func ExampleSet() {
	api, reservationID, stop := connect()
	defer stop()
	ctx := context.Background()

	both := locks.NewSet(api, reservationID, []string{"SWITCH-2", "SWITCH-1"})
	err := both.With(ctx, func(ctx context.Context, h *locks.Hold) error {
		fmt.Println("holding", h.Info().Members)
		return nil
	})
	fmt.Println("released, err =", err)
	// Output:
	// holding [SWITCH-1 SWITCH-2]
	// released, err = <nil>
}

// Levels make taking a coarser lock while holding a finer one an error.
func ExampleLevels() {
	api, reservationID, stop := connect()
	defer stop()
	ctx := context.Background()

	levels, _ := locks.NewLevels("reservation", "device", "port")
	_ = levels.Assign("reservation", "MUTEX")
	_ = levels.Assign("device", "SWITCH-1")
	_ = levels.Assign("port", "SWITCH-1/Port 1")
	set := func(names ...string) *locks.Set {
		return locks.NewSet(api, reservationID, names, locks.WithLevels(levels))
	}
	_ = set("SWITCH-1/Port 1").With(ctx, func(ctx context.Context, _ *locks.Hold) error {
		_, err := set("SWITCH-1").Acquire(ctx)
		fmt.Println(err)
		return nil
	})
	// Output:
	// locks: cannot take "SWITCH-1" (level "device") while holding "SWITCH-1/Port 1" (level "port"): levels are taken coarse to fine, each at most once per call chain
}

// Any 2 free traffic-generator ports of 8; the driver learns which.
func ExamplePool() {
	api, reservationID, stop := connect()
	defer stop()
	ctx := context.Background()

	var ports []string
	for i := 1; i <= 8; i++ {
		ports = append(ports, fmt.Sprintf("TG-1/Port %d", i))
	}
	pool := locks.NewPool(api, reservationID, ports, 2)
	_ = pool.With(ctx, func(ctx context.Context, h *locks.Hold) error {
		fmt.Println("sending traffic between", h.Info().Members)
		return nil
	})
	// Output:
	// sending traffic between [TG-1/Port 1 TG-1/Port 2]
}

// A counter and unique VLAN IDs kept in the reservation, each read-modified-written under
// the reservation's lock in one call.
func ExampleState() {
	api, reservationID, stop := connect()
	defer stop()
	ctx := context.Background()

	state := locks.NewState(api, reservationID, "MUTEX")
	n, _ := state.Add(ctx, "deployments", 1)
	vlan1, _ := state.Allocate(ctx, "vlans", locks.Range{Lo: 100, Hi: 199})
	vlan2, _ := state.Allocate(ctx, "vlans", locks.Range{Lo: 100, Hi: 199})
	fmt.Println("deployment", n, "uses VLANs", vlan1, vlan2)
	// Output:
	// deployment 1 uses VLANs 100 101
}
