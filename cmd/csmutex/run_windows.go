//go:build windows

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"golang.org/x/sys/windows"
)

// forwardSignals: on Windows only Ctrl-C/Ctrl-Break (os.Interrupt) can be caught. The
// console delivers it to every process attached to it, the command included, so there is
// nothing to forward: catching it only keeps csmutex alive to release the lock.
var forwardSignals = []os.Signal{os.Interrupt}

// child is the command, in a Job Object of its own with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE.
// Every process the command starts joins the job, and csmutex holds the job's only handle:
// when csmutex dies, however it dies, Windows closes the handle and kills the whole tree,
// so nothing goes on editing the reservation once nobody renews the lock. A lost lock
// terminates the job (the whole tree) at once.
type child struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	job windows.Handle // 0 once closed
}

// startChild starts argv (argv[0] resolved to path) suspended, puts it in the job, then
// lets it run: nothing it starts can escape the job. group has no meaning on Windows.
func startChild(path string, argv, env []string, stdin io.Reader, stdout, stderr io.Writer, _ bool, waitDelay time.Duration) (*child, error) {
	job, err := newKillOnCloseJob()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path)
	cmd.Args = argv
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.WaitDelay = env, stdin, stdout, stderr, waitDelay
	cmd.SysProcAttr = &windows.SysProcAttr{CreationFlags: windows.CREATE_SUSPENDED, CmdLine: shellCmdLine(argv)}
	if err := cmd.Start(); err != nil {
		windows.CloseHandle(job)
		return nil, err
	}
	c := &child{cmd: cmd, job: job}
	if err := c.assignAndResume(); err != nil {
		cmd.Process.Kill() // still suspended: it has run nothing
		cmd.Wait()
		windows.CloseHandle(job)
		return nil, err
	}
	return c, nil
}

// newKillOnCloseJob creates a job whose processes die when its last handle closes. The
// handle is not inheritable, so only csmutex holds it.
func newKillOnCloseJob() (windows.Handle, error) {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return 0, fmt.Errorf("creating a job object for the command: %w", err)
	}
	if err := setJobLimits(job, windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE); err != nil {
		windows.CloseHandle(job)
		return 0, fmt.Errorf("setting the command's job object to kill on close: %w", err)
	}
	return job, nil
}

func setJobLimits(job windows.Handle, flags uint32) error {
	var info windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	info.BasicLimitInformation.LimitFlags = flags
	_, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info)))
	return err
}

// assignAndResume puts the suspended command in the job and resumes its threads (os/exec
// does not keep the main thread's handle, so they are found by a thread snapshot).
func (c *child) assignAndResume() error {
	pid := uint32(c.cmd.Process.Pid)
	// os/exec holds a handle to the process until Wait, so the pid cannot be reused here.
	h, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, pid)
	if err != nil {
		return fmt.Errorf("opening the command's process: %w", err)
	}
	defer windows.CloseHandle(h)
	if err := windows.AssignProcessToJobObject(c.job, h); err != nil {
		return fmt.Errorf("putting the command in its job object: %w", err)
	}
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPTHREAD, 0)
	if err != nil {
		return fmt.Errorf("resuming the command: %w", err)
	}
	defer windows.CloseHandle(snap)
	resumed := 0
	te := windows.ThreadEntry32{Size: uint32(unsafe.Sizeof(windows.ThreadEntry32{}))}
	for err = windows.Thread32First(snap, &te); err == nil; err = windows.Thread32Next(snap, &te) {
		if te.OwnerProcessID != pid {
			continue
		}
		th, err := windows.OpenThread(windows.THREAD_SUSPEND_RESUME, false, te.ThreadID)
		if err != nil {
			return fmt.Errorf("resuming the command: %w", err)
		}
		_, err = windows.ResumeThread(th)
		windows.CloseHandle(th)
		if err != nil {
			return fmt.Errorf("resuming the command: %w", err)
		}
		resumed++
	}
	if resumed == 0 {
		return errors.New("resuming the command: its thread was not found")
	}
	return nil
}

func (c *child) logStart(e *zerolog.Event) *zerolog.Event { return e.Int("pid", c.cmd.Process.Pid) }

// signal does nothing: Windows cannot send a signal to another process, and the console
// has already delivered Ctrl-C to the command.
func (c *child) signal(os.Signal) error { return nil }

// terminate ends the command's whole job at once: Windows has no SIGTERM, so --kill-grace
// has no effect.
func (c *child) terminate() error { return c.terminateJob() }

func (c *child) kill() error { return c.terminateJob() }

func (c *child) forceKill() error {
	err := c.terminateJob()
	if kerr := c.cmd.Process.Kill(); err == nil {
		err = kerr
	}
	return err
}

// terminateJob kills every process in the job (exit code 1).
func (c *child) terminateJob() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.job == 0 {
		return nil
	}
	return windows.TerminateJobObject(c.job, 1)
}

func (c *child) wait() error { return c.cmd.Wait() }

func (c *child) exitStatus() int {
	if c.cmd.ProcessState == nil {
		return -1
	}
	return c.cmd.ProcessState.ExitCode()
}

// cleanup, after the command exited with its lock lost, kills whatever it left running.
func (c *child) cleanup() { c.terminateJob() }

// close lets what the command left running (after it exited, its lock released) outlive
// csmutex, as on Unix: it lifts the kill-on-close limit, then closes the job.
func (c *child) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.job == 0 {
		return
	}
	setJobLimits(c.job, 0)
	windows.CloseHandle(c.job)
	c.job = 0
}

// signalNumber is 2 (SIGINT) for Ctrl-C, the only signal Windows delivers.
func signalNumber(os.Signal) int { return 2 }
