// Command driver is the csmutex example: two CloudShell drivers edit one reservation at the
// same time, each replacing a resource and moving its connectors, under mutex.With.
//
// With no CLOUDSHELL_HOST it starts an in-process mock CloudShell, creates a reservation
// holding A--B, runs both drivers concurrently and prints a timeline and the final topology
// (A2--B2). With CLOUDSHELL_HOST, CLOUDSHELL_USER, CLOUDSHELL_PASSWORD, CLOUDSHELL_DOMAIN and
// CLOUDSHELL_RESERVATION_ID (or -reservation) it runs against a real server.
//
// Run it with -no-lock to watch the same drivers without the mutex corrupt the topology.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/examples/driver/topology"
	"github.com/csmutex/csmutex/mockapi"
	"github.com/csmutex/csmutex/mutex"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("driver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	resID := fs.String("reservation", os.Getenv("CLOUDSHELL_RESERVATION_ID"), "reservation id (real server only; `$CLOUDSHELL_RESERVATION_ID`)")
	xOld := fs.String("x-old", "A", "resource driver X replaces")
	xNew := fs.String("x-new", "A2", "driver X's replacement")
	yOld := fs.String("y-old", "B", "resource driver Y replaces")
	yNew := fs.String("y-new", "B2", "driver Y's replacement")
	noLock := fs.Bool("no-lock", false, "run the drivers without the mutex, to see the race")
	if err := fs.Parse(args); err != nil {
		return 64
	}

	tl := newTimeline(stdout)
	var newClient func(machine string) (*cloudshell.Client, error)
	opts := []mutex.Option{}
	if host := os.Getenv("CLOUDSHELL_HOST"); host != "" {
		if *resID == "" {
			fmt.Fprintln(stderr, "driver: CLOUDSHELL_HOST is set: give the reservation with -reservation or CLOUDSHELL_RESERVATION_ID")
			return 64
		}
		port, _ := strconv.Atoi(os.Getenv("CLOUDSHELL_PORT"))
		newClient = func(machine string) (*cloudshell.Client, error) {
			return cloudshell.Dial(ctx, cloudshell.Config{
				Host: host, Port: port, Scheme: os.Getenv("CLOUDSHELL_SCHEME"),
				Username: os.Getenv("CLOUDSHELL_USER"), Password: os.Getenv("CLOUDSHELL_PASSWORD"),
				Domain: os.Getenv("CLOUDSHELL_DOMAIN"), Token: os.Getenv("CLOUDSHELL_TOKEN"),
			})
		}
		tl.say("setup", "using CloudShell at %s, reservation %s", host, *resID)
	} else {
		s, id, err := startMock(ctx, *xOld, *xNew, *yOld, *yNew)
		if err != nil {
			fmt.Fprintln(stderr, "driver:", err)
			return 1
		}
		defer s.Close()
		host, port := s.Addr()
		*resID = id
		newClient = func(machine string) (*cloudshell.Client, error) {
			return cloudshell.Dial(ctx, cloudshell.Config{Host: host, Port: port, Username: "admin", Password: "admin", MachineName: machine})
		}
		// The mock answers in microseconds; poll faster than the real-server default (2-5 s)
		// so the demo takes a moment, not a minute.
		opts = append(opts, mutex.WithRetry(mutex.Jitter(40*time.Millisecond, 120*time.Millisecond)))
		tl.say("setup", "embedded mock CloudShell at %s:%d, reservation %s holds %s -- %s", host, port, id, *xOld, *yOld)
	}

	drivers := []struct{ name, old, repl string }{{"driver-x", *xOld, *xNew}, {"driver-y", *yOld, *yNew}}
	clients := make([]*cloudshell.Client, len(drivers))
	for i, d := range drivers {
		c, err := newClient(d.name)
		if err != nil {
			fmt.Fprintln(stderr, "driver:", err)
			return 69
		}
		clients[i] = c
	}
	// Both drivers start at the same moment, as two jobs triggered together would.
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, len(drivers))
	for i, d := range drivers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = drive(ctx, clients[i], *resID, d.name, d.old, d.repl, *noLock, tl, opts)
		}()
	}
	close(start)
	wg.Wait()

	reader, err := newClient("driver-report")
	if err != nil {
		fmt.Fprintln(stderr, "driver:", err)
		return 69
	}
	details, err := reader.GetReservationDetails(ctx, *resID, true)
	if err != nil {
		fmt.Fprintln(stderr, "driver:", err)
		return 1
	}
	fmt.Fprintln(stdout, "\nfinal topology:")
	conns := topology.Describe(details)
	if len(conns) == 0 {
		fmt.Fprintln(stdout, "  (no connectors)")
	}
	for _, c := range conns {
		fmt.Fprintln(stdout, "  "+c)
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(stdout, "\nresult: FAILED:", err)
		return 1
	}
	fmt.Fprintln(stdout, "\nresult: both drivers succeeded")
	return 0
}

// drive is one driver's job: replace old with repl under the reservation's lock.
func drive(ctx context.Context, c *cloudshell.Client, resID, name, old, repl string, noLock bool, tl *timeline, opts []mutex.Option) error {
	edit := func(ctx context.Context) error {
		tl.say(name, "replacing %s with %s", old, repl)
		if err := topology.Replace(ctx, c, resID, old, repl); err != nil {
			tl.say(name, "FAILED: %v", err)
			return fmt.Errorf("%s: %w", name, err)
		}
		tl.say(name, "done: %s replaced by %s, connectors moved", old, repl)
		return nil
	}
	if noLock {
		return edit(ctx)
	}
	tl.say(name, "requesting the reservation lock")
	opts = append(opts, mutex.WithOwner(name), mutex.WithLogger(tl.logger(name)))
	return mutex.With(ctx, c, resID, edit, opts...)
}

func startMock(ctx context.Context, names ...string) (*mockapi.Server, string, error) {
	var opts []mockapi.Option
	for _, n := range names {
		opts = append(opts, mockapi.WithResource(n, "Switch", "Generic Switch"))
	}
	s := mockapi.New(opts...)
	if _, err := s.Start("127.0.0.1:0"); err != nil {
		return nil, "", err
	}
	id := s.CreateReservation("csmutex demo", "admin")
	host, port := s.Addr()
	c, err := cloudshell.Dial(ctx, cloudshell.Config{Host: host, Port: port, Username: "admin", Password: "admin", MachineName: "setup"})
	if err == nil {
		_, err = c.AddResourcesToReservation(ctx, id, []string{names[0], names[2]}, false)
	}
	if err == nil {
		err = c.SetConnectorsInReservation(ctx, id, []cloudshell.SetConnectorRequest{{
			SourceResourceFullName: names[0] + "/Port 1", TargetResourceFullName: names[2] + "/Port 1", Direction: "bi"}})
	}
	if err != nil {
		s.Close()
		return nil, "", err
	}
	return s, id, nil
}
