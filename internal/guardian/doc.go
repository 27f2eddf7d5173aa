// Package guardian runs a command on behalf of a parent process (csmutex run) and kills
// the command's whole process tree as soon as that parent dies, however it dies (SIGKILL
// and the OOM killer included). Unix only; on Windows csmutex uses a Job Object instead.
//
// Why a process of its own. csmutex renews a lock while the command runs; once csmutex is
// dead nothing renews it, waiters break it after the lease, and any process of the command
// still running would then edit the reservation alongside the next holder. Linux's
// parent-death signal reaches only the direct child (`sh -c 'sleep 300; edit'` loses sh
// and keeps sleep), and macOS and the BSDs have none. Killing a tree needs a live process
// that knows the tree, so csmutex starts the guardian, and the guardian starts the command:
//
//	csmutex ──lifeline pipe──▶ guardian (process group leader) ──▶ command ──▶ …
//
// How:
//
//   - Parent death is seen through a pipe, the lifeline: csmutex holds its only write end,
//     the guardian reads the other. When csmutex dies the kernel closes the write end and
//     the read returns EOF at once, on every Unix, with no polling and without the pitfalls
//     of PR_SET_PDEATHSIG (Linux only, and sent when the forking *thread* exits). csmutex
//     also closes it on purpose to kill the tree after a lost lock.
//   - The guardian leads the command's process group (csmutex starts it with Setpgid), so
//     signals csmutex sends to the group reach every process that stays in it, and the
//     guardian's last act is to SIGKILL the group, itself included.
//   - On Linux the guardian is also a child subreaper (PR_SET_CHILD_SUBREAPER): orphans of
//     the tree are re-parented to it instead of init, so the tree stays connected even when
//     a process leaves the group (setsid, daemons). Before the group kill it walks /proc for
//     its descendants and SIGKILLs them until none is left. The command also gets
//     PR_SET_PDEATHSIG(SIGKILL), in case the guardian itself is killed.
//
// On macOS and the BSDs the group kill covers the tree, except processes that left the
// group (setsid) and, with a terminal on stdin (no group of its own, see Config.Group),
// the command's descendants: only the command itself is killed then.
package guardian
