package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"

	"github.com/csmutex/csmutex/mutex"
)

const releaseSynopsis = "csmutex release -r ID [--name NAME] --force"

func releaseCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("release")
	conn := addConnFlags(fs)
	logf := addLogFlags(fs)
	res := addReservationFlag(fs)
	modelf := addModelFlag(fs)
	var name, owner string
	var force bool
	fs.StringVar(&name, "name", mutex.DefaultName, "`NAME` of the lock to remove")
	fs.BoolVar(&force, "force", false, "required: confirm that you mean to break a lock that someone else may hold")
	fs.StringVar(&owner, "owner", "", "`LABEL` identifying you in the log of who broke the lock (default USER@HOST)")
	help := func(w io.Writer) {
		fmt.Fprintf(w, `usage: %s

Remove the lock whoever holds it. This is the administrator's tool for a lock that its
lease cannot free: one held by a legacy (Python snippet) driver, or taken with --lease 0.
A csmutex holder that is still alive learns of it at its next renewal, terminates its
command and exits 70; a legacy holder does not, and goes on unprotected. Use
'csmutex status' first to see who holds it.

`, releaseSynopsis)
		printFlags(w, fs)
		fmt.Fprint(w, exitCodesHelp)
	}
	if done, code := parseFlags(fs, args, stdout, stderr, help, releaseSynopsis); done {
		return code
	}
	fail := func(err error) int { return usageFail(stderr, "release", err, releaseSynopsis) }
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	resID, err := res.get()
	if err != nil {
		return fail(err)
	}
	switch {
	case mutex.ValidateName(name) != nil:
		return fail(fmt.Errorf("--name: %w", mutex.ValidateName(name)))
	case !force:
		return fail(fmt.Errorf("refusing to release lock %q without --force: it removes the lock whoever holds it, "+
			"breaking someone else's lock while their work may still be running (see 'csmutex status -r %s')", name, resID))
	}
	if err := modelf.validate(); err != nil {
		return fail(err)
	}
	if err := logf.validate(); err != nil {
		return fail(err)
	}
	if err := conn.validate(); err != nil {
		return fail(err)
	}
	base := logf.logger(stderr)
	log := base.With().Str("reservation", resID).Str("lock", name).Logger()
	breaker := owner
	if breaker == "" {
		breaker = whoAmI()
	}

	client, err := conn.dial(ctx, base)
	if err != nil {
		log.Error().Err(err).Msg("cannot log on to CloudShell")
		return exitCodeFor(err)
	}
	holder, err := mutex.ForceRelease(ctx, client, resID, mutex.WithName(name), mutex.WithOwner(breaker), mutex.WithLogger(base), mutex.WithServiceModel(modelf.model))
	switch {
	case errors.Is(err, mutex.ErrNotHeld):
		log.Error().Msgf("reservation %s has no lock named %q: nothing to release", resID, name)
		return exitNotHeld
	case err != nil:
		log.Error().Err(err).Msg("cannot release the lock")
		return exitCodeFor(err)
	}
	fmt.Fprintf(stdout, "released lock %q in reservation %s, held by %s; broken by %s\n", name, resID, holder, breaker)
	return exitOK
}

// whoAmI is USER@HOST for the log of who broke a lock.
func whoAmI() string {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name = os.Getenv("USER")
	}
	if name == "" {
		name = os.Getenv("USERNAME")
	}
	if name == "" {
		name = "unknown"
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown-host"
	}
	return name + "@" + host
}
