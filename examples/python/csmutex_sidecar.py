"""Lock a CloudShell reservation from a Python driver through csmutex.

Two ways, both standard library only (Python 3.8+):

* ``SidecarMutex`` talks to a running ``csmutex serve`` sidecar over HTTP (loopback TCP or
  a unix socket). The lock is held while the ``with`` block runs and released the moment
  the connection closes, even if the driver process dies::

      from csmutex_sidecar import SidecarMutex, LockNotObtained

      with SidecarMutex(reservation_id, timeout=300) as lock:
          ...                 # re-read the reservation, then edit it
          lock.check()        # raises LockLost if the lock was lost meanwhile

* ``run_locked`` / ``run_command`` run under ``csmutex run`` (no sidecar needed, just the
  csmutex binary and CLOUDSHELL_* settings in the environment)::

      result = run_locked(reservation_id, edit_reservation, api, timeout=300)

Neither ever prints or logs a password or token.
"""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

__all__ = [
    "DEFAULT_ADDRESS",
    "EXIT_NOT_OBTAINED",
    "EXIT_LOCK_LOST",
    "SidecarError",
    "LockNotObtained",
    "LockLost",
    "SidecarMutex",
    "run_locked",
    "run_command",
]

#: Where ``csmutex serve`` listens by default. ``CSMUTEX_SIDECAR`` overrides it
#: (``127.0.0.1:7369`` or ``unix:/path/to/socket``).
DEFAULT_ADDRESS = "127.0.0.1:7369"

#: ``csmutex run`` exits 75 (EX_TEMPFAIL) when the lock was not obtained in time...
EXIT_NOT_OBTAINED = 75
#: ...and 70 when the lock was lost while the command ran (the command was terminated).
EXIT_LOCK_LOST = 70

# How long after the acquire timeout to keep waiting for the sidecar's answer: it answers
# 409 itself when the timeout passes; this only guards against a hung sidecar.
_ANSWER_GRACE = 30.0


class SidecarError(Exception):
    """The lock could not be taken (or kept) for a reason other than contention.

    ``status`` is the sidecar's HTTP status (None if it was not reached) and ``kind`` its
    error kind: bad_request, unauthorized, setup, permanent, unavailable, shutting_down...
    """

    def __init__(self, message, status=None, kind=None):
        super().__init__(message)
        self.status = status
        self.kind = kind


class LockNotObtained(SidecarError):
    """Someone else held the lock for the whole timeout. ``holder`` names them if known."""

    def __init__(self, message, holder=None, status=409, kind="timeout"):
        super().__init__(message, status=status, kind=kind)
        self.holder = holder


class LockLost(SidecarError):
    """The lock was lost while held: the critical section is no longer protected."""

    def __init__(self, message):
        super().__init__(message, kind="lost")


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTPConnection over a unix socket."""

    def __init__(self, path, timeout=None):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if isinstance(self.timeout, (int, float)):
                sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _connection(address, timeout):
    """An HTTP connection to ``host:port``, ``[v6]:port`` or ``unix:/path``."""
    if address.startswith("unix:"):
        return _UnixHTTPConnection(address[len("unix:"):], timeout=timeout)
    if address.startswith("http://"):
        address = address[len("http://"):].rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("sidecar address must be HOST:PORT or unix:/path, not %r" % (address,))
    return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)


def _seconds(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number of seconds" % what)
    return float(value)


def _default_owner():
    return "%s:%d/%s" % (socket.gethostname(), os.getpid(), threading.current_thread().name)


def _error_from(status, raw):
    """The exception for a non-200 answer of the sidecar."""
    try:
        body = json.loads(raw.decode("utf-8", "replace"))
        message, kind, holder = body.get("error", ""), body.get("kind"), body.get("holder")
    except ValueError:
        message, kind, holder = raw.decode("utf-8", "replace")[:500], None, None
    message = message or "HTTP %d" % status
    if status == 409:
        return LockNotObtained(message, holder=holder or None, status=status, kind=kind or "timeout")
    return SidecarError("sidecar: %s (HTTP %d)" % (message, status), status=status, kind=kind)


class SidecarMutex:
    """A reservation lock held through the csmutex sidecar, in stream mode.

    ``acquire`` (or entering the ``with`` block) asks the sidecar for the lock and waits up
    to ``timeout`` seconds (0 = a single try); the HTTP response then stays open, and the
    sidecar holds the lock until the connection closes. ``release`` (or leaving the block)
    closes it, and the sidecar releases the lock at once; if this process dies, the OS
    closes it, with the same effect.

    A daemon thread reads the sidecar's heartbeat lines. If the sidecar reports the lock
    lost, or goes away, ``lost`` becomes True and ``check()`` raises ``LockLost``: call it
    before each step that must not run without the lock.

    Arguments:
        reservation_id: the CloudShell reservation (sandbox) id.
        name: the lock name (the alias of the lock service); "MUTEX" matches the public
            Reservation-Mutex-Lock snippet.
        timeout: seconds to wait for the lock.
        address: "127.0.0.1:7369" (default, or $CSMUTEX_SIDECAR) or "unix:/path".
        owner: label recorded as the lock's owner (default host:pid/thread).
        cloudshell: optional dict (host, port, scheme, user, password, domain, token) when
            the sidecar should use another CloudShell or other credentials than its own.
        lease: optional lease in seconds (see csmutex docs); default: the sidecar's.
        heartbeat_timeout: seconds without any line from the sidecar after which the lock
            is considered lost (the sidecar writes one every 5 s by default).

    One instance is one acquisition at a time; use one instance per thread.
    """

    def __init__(self, reservation_id, name="MUTEX", timeout=300, address=None, owner=None,
                 cloudshell=None, lease=None, heartbeat_timeout=30.0):
        if not reservation_id or not str(reservation_id).strip():
            raise ValueError("reservation_id is required")
        self.reservation_id = str(reservation_id)
        self.name = name
        self.timeout = _seconds(timeout, "timeout")
        if self.timeout < 0:
            raise ValueError("timeout must not be negative")
        self.address = address or os.environ.get("CSMUTEX_SIDECAR") or DEFAULT_ADDRESS
        self.owner = owner or _default_owner()
        self._cloudshell = dict(cloudshell) if cloudshell else None
        self.lease = None if lease is None else _seconds(lease, "lease")
        self.heartbeat_timeout = heartbeat_timeout
        self.token = None
        self._conn = None
        self._sock = None
        self._resp = None
        self._reader = None
        self._state = threading.Lock()
        self._closing = False
        self._lost_reason = None

    def __repr__(self):
        # Never the cloudshell dict: it may hold a password.
        return "SidecarMutex(reservation_id=%r, name=%r, address=%r, held=%r)" % (
            self.reservation_id, self.name, self.address, self.held)

    # -- state -----------------------------------------------------------------------

    @property
    def held(self):
        """True between a successful acquire and release, unless the lock was lost."""
        return self._resp is not None and not self.lost

    @property
    def lost(self):
        """True if the lock was lost (or the sidecar went away) while held."""
        with self._state:
            return self._lost_reason is not None

    @property
    def lost_reason(self):
        with self._state:
            return self._lost_reason

    def check(self):
        """Raise LockLost if the lock is no longer held."""
        reason = self.lost_reason
        if reason is not None:
            raise LockLost("lock %r in reservation %s was lost: %s" % (self.name, self.reservation_id, reason))
        if self._resp is None:
            raise LockLost("lock %r in reservation %s is not held" % (self.name, self.reservation_id))

    # -- acquire / release -----------------------------------------------------------

    def acquire(self):
        """Take the lock, waiting up to ``timeout``. Raises LockNotObtained or SidecarError."""
        if self._resp is not None:
            raise RuntimeError("SidecarMutex is already held; use one instance per acquisition")
        body = {"reservation_id": self.reservation_id, "name": self.name, "owner": self.owner,
                "timeout": self.timeout, "mode": "stream"}
        if self.lease is not None:
            body["lease"] = self.lease
        if self._cloudshell:
            body["cloudshell"] = self._cloudshell
        payload = json.dumps(body).encode("utf-8")
        del body  # holds the password, if any

        conn = _connection(self.address, timeout=self.timeout + _ANSWER_GRACE)
        try:
            try:
                conn.connect()
                sock = conn.sock
                conn.request("POST", "/v1/acquire", body=payload,
                             headers={"Content-Type": "application/json", "Accept": "application/x-ndjson"})
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                raise SidecarError("cannot reach the csmutex sidecar at %s: %s" % (self.address, e)) from None
            if resp.status != 200:
                raise _error_from(resp.status, resp.read())
            try:
                first = json.loads(resp.readline().decode("utf-8"))
            except (OSError, ValueError, http.client.HTTPException) as e:
                raise SidecarError("bad answer from the sidecar: %s" % (e,)) from None
            if first.get("status") != "acquired":
                raise SidecarError("sidecar: lock not acquired: %s" % (first.get("error") or first,))
        except BaseException:
            conn.close()
            raise

        self.token = first.get("token")
        self._conn, self._sock, self._resp = conn, sock, resp
        with self._state:
            self._closing = False
            self._lost_reason = None
        try:
            sock.settimeout(self.heartbeat_timeout)
        except OSError:
            pass
        self._reader = threading.Thread(target=self._read, name="csmutex-sidecar-reader", daemon=True)
        self._reader.start()
        return self

    def _read(self):
        resp = self._resp
        try:
            while True:
                line = resp.readline()
                if not line:
                    self._mark_lost("the sidecar closed the connection")
                    return
                try:
                    msg = json.loads(line.decode("utf-8"))
                except ValueError:
                    continue
                status = msg.get("status")
                if status == "held":
                    continue
                self._mark_lost(msg.get("error") or status or "unknown status")
                return
        except socket.timeout:
            self._mark_lost("no heartbeat from the sidecar for %ss" % (self.heartbeat_timeout,))
        except Exception as e:  # noqa: BLE001 - OSError, HTTPException, or http.client's own
            # errors when release() closes the response under this thread: all mean the
            # connection is gone (ignored if we closed it ourselves).
            self._mark_lost("connection to the sidecar failed: %s" % (e,))

    def _mark_lost(self, reason):
        with self._state:
            if not self._closing and self._lost_reason is None:
                self._lost_reason = reason

    def release(self):
        """Release the lock: close the connection; the sidecar releases at once."""
        if self._resp is None:
            return
        with self._state:
            self._closing = True
        conn, sock, resp, reader = self._conn, self._sock, self._resp, self._reader
        self._conn = self._sock = self._resp = self._reader = None
        # shutdown() sends the FIN now and wakes the reader thread, whatever other
        # references to the socket remain.
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for c in (resp, conn, sock):
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing must not fail the caller
                pass
        if reader is not None and reader is not threading.current_thread():
            reader.join(1.0)

    close = release

    def __enter__(self):
        return self.acquire()

    def __exit__(self, exc_type, exc, tb):
        self.release()
        return False

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001
            pass


# -- csmutex run ---------------------------------------------------------------------

# The child csmutex run starts: says READY once running (so the lock is held), then
# blocks until its stdin closes.
_READY_SCRIPT = "import sys\nsys.stdout.write('READY\\n')\nsys.stdout.flush()\nsys.stdin.read()\n"

# csmutex run logs "... held by LABEL (token 0123abcd) ..." when it gives up.
_HOLDER_RES = (re.compile(r"held by (.+?) \(token [0-9a-f]+\)"), re.compile(r"held by (\S+)"))


def _run_argv(csmutex, reservation_id, name, timeout, csmutex_args):
    if not reservation_id:
        raise ValueError("reservation_id is required")
    timeout = _seconds(timeout, "timeout")
    if timeout < 0:
        raise ValueError("timeout must not be negative")
    return [csmutex, "run", "-r", str(reservation_id), "--name", name, "-w", repr(timeout)] + list(csmutex_args) + ["--"]


def _env(env):
    full = dict(os.environ)
    if env:
        full.update(env)
    return full


def _holder_from(stderr_text):
    for line in reversed(stderr_text.splitlines()):
        for pattern in _HOLDER_RES:
            m = pattern.search(line)
            if m:
                return m.group(1)
    return None


def _tail(text, lines=5):
    return "\n".join(text.strip().splitlines()[-lines:])


def run_locked(reservation_id, func, *args, csmutex="csmutex", name="MUTEX", timeout=300, env=None,
               csmutex_args=(), **kwargs):
    """Call ``func(*args, **kwargs)`` while ``csmutex run`` holds the reservation's lock.

    csmutex starts a tiny child process once it holds the lock; the child says READY, then
    waits on its stdin. ``func`` runs here, in this process; then the child's stdin is
    closed, it exits, and csmutex releases the lock. Returns func's value and propagates
    its exception.

    Raises LockNotObtained if csmutex gives up waiting (exit 75), LockLost if the lock was
    lost while func ran (csmutex terminated the child), SidecarError for anything else.

    ``env`` is added to this process's environment for csmutex (e.g. CLOUDSHELL_HOST,
    CLOUDSHELL_USER, CLOUDSHELL_PASSWORD); ``csmutex_args`` are extra ``csmutex run`` flags
    such as ``["--lease", "90s"]``. The keyword names csmutex, name, timeout, env and
    csmutex_args are taken by this function and never passed to func.
    """
    argv = _run_argv(csmutex, reservation_id, name, timeout, csmutex_args) + [sys.executable, "-c", _READY_SCRIPT]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_env(env))
    except OSError as e:
        raise SidecarError("cannot start %s: %s" % (csmutex, e)) from None

    try:
        return _locked_call(proc, reservation_id, name, func, args, kwargs)
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            try:
                pipe.close()
            except (OSError, ValueError):
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _locked_call(proc, reservation_id, name, func, args, kwargs):
    err_chunks = []

    def read_stderr():
        try:
            err_chunks.append(proc.stderr.read())
        except (OSError, ValueError):
            pass

    err_reader = threading.Thread(target=read_stderr, daemon=True)
    err_reader.start()

    def stderr_text():
        err_reader.join(5.0)
        return b"".join(err_chunks).decode("utf-8", "replace")

    ready = False
    try:
        for line in iter(proc.stdout.readline, b""):
            if line.strip() == b"READY":
                ready = True
                break
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if not ready:
        code = proc.wait()
        text = stderr_text()
        if code == EXIT_NOT_OBTAINED:
            raise LockNotObtained("lock %r in reservation %s not obtained: %s" % (name, reservation_id, _tail(text, 2)),
                                  holder=_holder_from(text))
        raise SidecarError("csmutex run exited %d before the lock was held: %s" % (code, _tail(text)))

    # Notice if csmutex ends the child early (lock lost) while func runs.
    ended_early = threading.Event()
    finished = threading.Event()

    def watch():
        try:
            proc.stdout.read()  # EOF when the child exits
        except (OSError, ValueError):
            return
        if not finished.is_set():
            ended_early.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    try:
        result = func(*args, **kwargs)
    except BaseException:
        finished.set()
        _end(proc)
        watcher.join(5.0)
        raise
    finished.set()
    code = _end(proc)
    watcher.join(5.0)
    if code == EXIT_LOCK_LOST or ended_early.is_set() and code != 0:
        raise LockLost("lock %r in reservation %s was lost while the function ran (csmutex exit %d): %s"
                       % (name, reservation_id, code, _tail(stderr_text())))
    if code != 0:
        raise SidecarError("csmutex run exited %d after the function ran: %s" % (code, _tail(stderr_text())))
    return result


def _end(proc):
    """Close the child's stdin so it exits and csmutex releases the lock; return csmutex's code."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def run_command(reservation_id, argv, csmutex="csmutex", name="MUTEX", timeout=300, env=None, csmutex_args=(),
                **popen_kwargs):
    """Run ``argv`` under ``csmutex run`` and return the exit code.

    The code is the command's own, or csmutex's: 75 lock not obtained, 70 lock lost (the
    command was terminated), 64-69 usage/CloudShell errors (see ``csmutex --help``).
    ``popen_kwargs`` go to subprocess.call (stdin, stdout, stderr, cwd...).
    """
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a list of arguments, not a string")
    full = _run_argv(csmutex, reservation_id, name, timeout, csmutex_args) + list(argv)
    return subprocess.call(full, env=_env(env), **popen_kwargs)
