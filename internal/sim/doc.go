// Package sim is a deterministic simulator for the csmutex lock protocol, in the spirit of
// FoundationDB's simulation testing and TigerBeetle's VOPR.
//
// One seed decides one whole run: how many processes contend, their leases, which of them
// are legacy snippet drivers, and every fault: request and response delays (some longer
// than a lease), writes dropped after they were applied or failed before, 5xx answers,
// 401s, HTTP client timeouts, process pauses longer than a lease (in-flight requests still
// land), crashes and partitions. The processes run the real mutex package against an
// in-memory CloudShell (Server) through a faulty transport (Process), on virtual time:
// Run must be called inside a testing/synctest bubble, where a simulated minute costs
// milliseconds.
//
// A Checker watches the server's history as it happens and reports:
//   - two critical sections whose writes interleave (a lost update of the protected
//     counter), or a csmutex critical-section write applied while the lock record is not
//     its writer's;
//   - a With that ran its function more or less than once;
//   - a false alarm: a lock reported lost although its record was intact and its lease had
//     not run out;
//   - a lock or break lock that survives once every process has stopped and a last
//     process has taken and released the lock;
//   - a final acquisition that does not succeed within its bound;
//   - the lock left free, while csmutex parties waited for it, for longer than the waiting
//     room's idle bound once faults, pauses, partitions, crashes and dead room entries are
//     set aside (idle.go): a room that stalls its waiters breaks no safety property, so
//     only this check sees it.
//
// Violations that the protocol documents as outside its reach (docs/PROTOCOL.md, "Known
// limits") are recognised explicitly and counted as excused, never silently: a write
// applied more than lease/6 after its sender stopped waiting for it, and a
// critical-section write sent after a process pause longer than lease/6.
package sim
