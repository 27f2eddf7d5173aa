package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
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

// With is all most drivers need: the function runs while this driver, and only this
// driver, holds the reservation's lock; it is released however the function ends.
func ExampleWith() {
	api, reservationID, stop := connect()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // how long to wait
	defer cancel()

	err := mutex.With(ctx, api, reservationID, func(ctx context.Context) error {
		// Re-read the reservation inside the lock: anything read before may be stale.
		details, err := api.GetReservationDetails(ctx, reservationID, true)
		if err != nil {
			return err
		}
		lock, _ := details.Service("MUTEX")
		fmt.Println("editing while", lock.ServiceName, "is held")
		return nil
	})
	fmt.Println("released, err =", err)
	// Output:
	// editing while Mutex Service is held
	// released, err = <nil>
}

// Lock and Unlock for finer control. Done closes if the lock is lost while held.
func ExampleMutex_Lock() {
	api, reservationID, stop := connect()
	defer stop()
	ctx := context.Background()

	m := mutex.New(api, reservationID, mutex.WithName("MUTEX"), mutex.WithOwner("deploy-driver"))
	lock, err := m.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// Someone else trying now is told who holds it.
	_, err = mutex.New(api, reservationID).TryLock(ctx)
	var locked *mutex.LockedError
	if errors.As(err, &locked) {
		fmt.Println("held by", locked.Holder.Name)
	}
	select {
	case <-lock.Done():
		log.Fatal("lost:", lock.Err())
	default:
	}
	if err := lock.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("released")
	// Output:
	// held by deploy-driver
	// released
}

// WithObserver shows a driver's user that it is waiting, and for whom; WithSandboxMessages
// tells the sandbox's end user the same in the reservation's Output window.
func ExampleWithObserver() {
	api, reservationID, stop := connect()
	defer stop()
	ctx := context.Background()

	holder, err := mutex.New(api, reservationID, mutex.WithOwner("deploy-driver")).Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	time.AfterFunc(500*time.Millisecond, func() { holder.Unlock(ctx) }) // wide: examples run on the real clock

	reported := false
	l, err := mutex.New(api, reservationID,
		mutex.WithRetry(mutex.Jitter(10*time.Millisecond, 20*time.Millisecond)), // a real driver keeps the default 2–5 s
		mutex.WithSandboxMessages(time.Minute),
		mutex.WithObserver(func(ev mutex.WaitEvent) {
			if !reported { // a status line would be redrawn on every event
				fmt.Printf("waiting for %s (try %d)\n", ev.Holder.Name, ev.Tries)
				reported = true
			}
		})).Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Unlock(ctx)
	fmt.Println("acquired")
	// Output:
	// waiting for deploy-driver (try 1)
	// acquired
}

// A cohort: goroutines of one process share one Mutex, so they pass the CloudShell lock
// among themselves without calling CloudShell, and release it for others after the bound.
func ExampleWithCohort() {
	api, reservationID, stop := connect()
	defer stop()
	ctx := context.Background()

	m := mutex.New(api, reservationID, mutex.WithCohort(mutex.DefaultCohortBound))
	done := make(chan int)
	for worker := range 4 {
		go func() {
			err := m.With(ctx, func(ctx context.Context) error {
				// Exclusive against the other workers and against every other driver.
				return nil
			})
			if err != nil {
				log.Print(err)
			}
			done <- worker
		}()
	}
	for range 4 {
		<-done
	}
	fmt.Println("4 critical sections, one after another")
	// Output: 4 critical sections, one after another
}
