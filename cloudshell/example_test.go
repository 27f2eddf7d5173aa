package cloudshell_test

import (
	"context"
	"fmt"
	"log"

	"github.com/csmutex/csmutex/cloudshell"
	"github.com/csmutex/csmutex/mockapi"
)

// A client logs on to a CloudShell server (here the in-process mock) and reads a
// reservation.
func ExampleDial() {
	mock := mockapi.New()
	if _, err := mock.Start("127.0.0.1:0"); err != nil {
		log.Fatal(err)
	}
	defer mock.Close()
	host, port := mock.Addr()
	resID := mock.CreateReservation("nightly", "admin")

	ctx := context.Background()
	client, err := cloudshell.Dial(ctx, cloudshell.Config{
		Host: host, Port: port, // a real server: Port 0 means 8029
		Username: "admin", Password: "admin", Domain: "Global",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Logoff(ctx)

	details, err := client.GetReservationDetails(ctx, resID, true)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(details.Name, details.Status, len(details.Services), "services")
	// Output: nightly Started 0 services
}

// Code 100 is CloudShell's generic error code: recognise an alias collision by its message.
func ExampleIsAliasCollision() {
	mock := mockapi.New()
	if _, err := mock.Start("127.0.0.1:0"); err != nil {
		log.Fatal(err)
	}
	defer mock.Close()
	host, port := mock.Addr()
	resID := mock.CreateReservation("nightly", "admin")
	ctx := context.Background()
	client, err := cloudshell.Dial(ctx, cloudshell.Config{Host: host, Port: port, Username: "admin", Password: "admin"})
	if err != nil {
		log.Fatal(err)
	}

	for i := 0; i < 2; i++ {
		err := client.AddServiceToReservation(ctx, resID, "Mutex Service", "MUTEX", nil)
		fmt.Println(err, cloudshell.IsAliasCollision(err))
	}
	// Output:
	// <nil> false
	// CloudShell API error 100: Service with given alias already exists true
}
