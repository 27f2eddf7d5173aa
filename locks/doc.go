// Package locks builds lock shapes on the exclusive reservation lock of package mutex:
// a semaphore (at most n holders), a shared/exclusive lock (many readers or one writer), a
// lock set (all of several names, or none), a K-of-N pool (any k free members of a list),
// and atomic sandbox state (counters and allocations from a range, read-modified-written
// under a lock).
//
// Every shape is made only of exclusive mutex locks, taken through mutex's public API
// (mutex.New, Lock, TryLock, Unlock), so each of its parts has the exclusive lock's
// guarantees unchanged: leases, stale-holder recovery, break locks, interoperability with the
// public Python snippet, and one error taxonomy (errors.Is with mutex.ErrTimeout,
// mutex.ErrLocked, mutex.ErrLost, ...). A shape's acquisition returns a *Hold: which slots or
// members it holds (Info), Done and Err (the lost-lock signal: closed when any part is lost),
// and Release. Each shape has a With method that runs a function while holding it and
// releases on every path, like mutex.With.
//
// How each shape is built on the alias primitive, its invariant and why it holds are in
// docs/PROTOCOL.md ("Lock shapes").
//
// Priorities: MutexOptions(mutex.WithPriority(p)) gives every wait a shape makes through
// mutex.Lock that priority in the lock's waiting room (mutex.WithPriority, with ageing). A
// shape's own polling for a free slot or member is not queued.
package locks
