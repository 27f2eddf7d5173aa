# -*- coding: utf-8 -*-
"""Lock a CloudShell reservation from a Python driver through csmutex.

One file, standard library only, Python 2.7 and 3.6+. Two ways:

* ``SidecarMutex`` talks to a running ``csmutex serve`` sidecar over HTTP (loopback TCP or
  a unix socket). The lock is held while the ``with`` block runs and released the moment
  the connection closes, even if the driver process dies. In a driver command, one line::

      from csmutex_sidecar import SidecarMutex

      def rewire(self, context):
          with SidecarMutex.from_context(context, timeout=300) as lock:
              ...                 # re-read the reservation, then edit it
              lock.check()        # raises LockLost if the lock was lost meanwhile

* Lock shapes through the sidecar: ``semaphore`` (at most N holders), ``shared`` /
  ``exclusive`` (many readers or one writer), ``lock_set`` (several names, all or none) and
  ``pool`` (any K free members of a list) return a SidecarMutex for that shape; after
  ``acquire`` its ``slot``, ``names``, ``members`` and ``access`` say what was obtained::

      with semaphore(reservation_id, "SWITCH", slots=3) as s:
          ...                     # at most 3 drivers here; s.slot is 1, 2 or 3

  ``state_add`` and ``state_allocate`` change sandbox data atomically under the lock, in
  one call: a counter, or a unique value (a VLAN id) from a range.

* ``run_locked`` / ``run_command`` (and their ``*_from_context`` forms) run under
  ``csmutex run``: no sidecar needed, just the csmutex binary::

      result = run_locked_from_context(context, edit_reservation, api)

Neither ever prints or logs a password or token.
"""

from __future__ import absolute_import, division, print_function

import json
import numbers
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unicodedata

try:  # Python 3
    import _thread
except ImportError:  # Python 2
    import thread as _thread

__version__ = "0.3.0"

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_NAME",
    "MAX_NAME_LENGTH",
    "EXIT_NOT_OBTAINED",
    "EXIT_LOCK_LOST",
    "SidecarError",
    "LockNotObtained",
    "LockLost",
    "SidecarMutex",
    "DEFAULT_READERS",
    "MAX_PRIORITY",
    "semaphore",
    "shared",
    "exclusive",
    "lock_set",
    "pool",
    "state_add",
    "state_allocate",
    "run_locked",
    "run_command",
    "run_locked_from_context",
    "run_command_from_context",
]

#: Where ``csmutex serve`` listens by default. ``CSMUTEX_SIDECAR`` overrides it
#: (``127.0.0.1:7369`` or ``unix:/path/to/socket``).
DEFAULT_ADDRESS = "127.0.0.1:7369"

#: The lock name (alias of the lock service) of the public Reservation-Mutex-Lock snippet.
DEFAULT_NAME = "MUTEX"

#: The longest lock name accepted. csmutex adds suffixes to it for break locks
#: ("<name>.break.<token>"), so names are kept well below CloudShell's alias limits.
MAX_NAME_LENGTH = 100

#: How many readers a shared/exclusive lock admits at once unless ``readers`` says
#: otherwise (csmutex's default). Every party using the lock must use the same number.
DEFAULT_READERS = 16

#: The highest waiting-room priority (``priority``); 0, the default, is the lowest.
MAX_PRIORITY = 9

#: The lock shapes the sidecar offers (``shape`` of SidecarMutex).
SHAPES = ("exclusive", "semaphore", "shared", "set", "pool")

#: ``csmutex run`` exits 75 (EX_TEMPFAIL) when the lock was not obtained in time...
EXIT_NOT_OBTAINED = 75
#: ...and 70 when the lock was lost while the command ran (the command was terminated).
EXIT_LOCK_LOST = 70

# csmutex run's other exit codes, as SidecarError.kind.
_EXIT_KINDS = {64: "usage", 65: "permanent", 69: "unavailable", EXIT_LOCK_LOST: "lost",
               EXIT_NOT_OBTAINED: "timeout", 77: "unauthorized"}

# How long after the acquire timeout to keep waiting for the sidecar's answer: it answers
# 409 itself when the timeout passes; this only guards against a hung sidecar.
_ANSWER_GRACE = 30.0

# The largest error body or header block read from the sidecar.
_MAX_READ = 1 << 16

_PY2 = sys.version_info[0] == 2
if _PY2:  # pragma: no cover - exercised by the Python 2.7 test run
    _text_type = unicode  # noqa: F821
    _string_types = (str, unicode)  # noqa: F821
else:
    _text_type = str
    _string_types = (str,)

# On Python 2, socket.error and IOError are not OSError; on Python 3 all three are one.
_OS_ERRORS = (OSError, IOError, socket.error)

_monotonic = getattr(time, "monotonic", time.time)


# -- errors ----------------------------------------------------------------------------


class SidecarError(Exception):
    """The lock could not be taken (or kept) for a reason other than contention.

    ``status`` is the sidecar's HTTP status (None if it was not reached, or for
    ``csmutex run``), ``kind`` the error kind (bad_request, unauthorized, setup, permanent,
    unavailable, shutting_down, usage...), ``exit_code`` csmutex run's exit code (None for
    the sidecar), ``detail`` the raw text csmutex gave, if any (never a secret), ``field``
    the request field the sidecar refused (400; "slots", "names[2]", ...) when it names one.
    """

    def __init__(self, message, status=None, kind=None, detail=None, exit_code=None):
        super(SidecarError, self).__init__(message)
        self.message = message
        self.status = status
        self.kind = kind
        self.detail = detail
        self.exit_code = exit_code
        self.field = None

    if _PY2:  # pragma: no cover
        def __str__(self):
            m = self.message
            return m.encode("utf-8") if isinstance(m, _text_type) else m

        def __unicode__(self):
            m = self.message
            return m if isinstance(m, _text_type) else m.decode("utf-8", "replace")
    else:
        def __str__(self):
            return self.message


class LockNotObtained(SidecarError):
    """Someone else held the lock for the whole timeout.

    Attributes (None when unknown): ``holder`` (the holder's owner label, or a description
    of a legacy holder), ``holder_host`` and ``holder_pid`` (where the holder runs),
    ``holder_token`` (the holder's lock token), ``held_since`` (when the holder took the
    lock, by its clock: an RFC 3339 string such as "2026-11-26T07:58:02.113Z"),
    ``waited`` (seconds waited, float), ``tries`` (attempts made), ``timeout`` (seconds
    asked for), ``name``, ``reservation_id``, ``holders`` (a shape's single try: the owner
    records of the slots, members or names in the way, verbatim), and SidecarError's. The holder's host, pid
    and held_since come from csmutex versions that report them (the sidecar's 409 body,
    ``csmutex run``'s JSON log); older ones give the label and token only.
    """

    def __init__(self, message, holder=None, status=409, kind="timeout", holder_token=None, waited=None,
                 timeout=None, name=None, reservation_id=None, detail=None, exit_code=None, holder_host=None,
                 holder_pid=None, held_since=None, tries=None, holders=None):
        super(LockNotObtained, self).__init__(message, status=status, kind=kind, detail=detail,
                                              exit_code=exit_code)
        self.holders = holders
        self.holder = holder
        self.holder_host = holder_host
        self.holder_pid = holder_pid
        self.holder_token = holder_token
        self.held_since = held_since
        self.waited = waited
        self.tries = tries
        self.timeout = timeout
        self.name = name
        self.reservation_id = reservation_id


class LockLost(SidecarError):
    """The lock was lost while held: the critical section is no longer protected.

    ``reason`` says why (when known), with ``name`` and ``reservation_id``.
    """

    def __init__(self, message="the reservation lock was lost", reason=None, name=None, reservation_id=None,
                 detail=None, exit_code=None):
        super(LockLost, self).__init__(message, kind="lost", detail=detail, exit_code=exit_code)
        self.reason = reason
        self.name = name
        self.reservation_id = reservation_id


# -- argument checks -------------------------------------------------------------------


def _as_text(value, what):
    """value as text (unicode on Python 2); TypeError if it is not a string."""
    if not isinstance(value, _string_types):
        raise TypeError("%s must be a string, not %s" % (what, type(value).__name__))
    if isinstance(value, bytes):  # Python 2 str
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("%s is not valid UTF-8" % what)
    return value


def _control_char(text):
    """The first control character in text, or None."""
    for i, c in enumerate(text):
        if unicodedata.category(c) in ("Cc", "Zl", "Zp"):
            return i, c
    return None


def _check_name(name):
    """Return the lock name as text, or raise ValueError naming the problem.

    csmutex sends the name to CloudShell as a service alias; these names could not be
    sent faithfully, or would not mean what the caller thinks.
    """
    if name is None:
        raise ValueError('lock name must not be None (the default is "%s")' % DEFAULT_NAME)
    text = _as_text(name, "lock name")
    if text == u"":
        raise ValueError('lock name must not be empty (the default is "%s"; pass name="%s" or leave it out)'
                         % (DEFAULT_NAME, DEFAULT_NAME))
    if not text.strip():
        raise ValueError("lock name must not be only whitespace: %r" % (text,))
    bad = _control_char(text)
    if bad is not None:
        raise ValueError("lock name must not contain control characters: %r at position %d of %r"
                         % (bad[1], bad[0], text))
    if text != text.strip():
        raise ValueError("lock name must not start or end with whitespace: %r" % (text,))
    for c in u"<>&\"'":
        if c in text:
            raise ValueError("lock name must not contain %r (none of <>&\"' is allowed): %r" % (c, text))
    if u".break." in text:
        raise ValueError('lock name must not contain ".break." (reserved for csmutex\'s break locks): %r'
                         % (text,))
    if len(text) > MAX_NAME_LENGTH:
        raise ValueError("lock name is %d characters long; the limit is %d" % (len(text), MAX_NAME_LENGTH))
    return text


def _check_reservation_id(reservation_id):
    if reservation_id is None:
        raise ValueError("reservation_id is required")
    text = _as_text(reservation_id, "reservation_id").strip()
    if not text:
        raise ValueError("reservation_id is required")
    if _control_char(text) is not None or len(text) > 256:
        raise ValueError("reservation_id is malformed: %r" % (text,))
    return text


def _check_owner(owner):
    text = _as_text(owner, "owner")
    bad = _control_char(text)
    if bad is not None:
        raise ValueError("owner must not contain control characters: %r at position %d" % (bad[1], bad[0]))
    if len(text) > 256:
        raise ValueError("owner is %d characters long; the limit is 256" % len(text))
    return text


def _seconds(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError("%s must be a number of seconds" % what)
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("%s must be a finite number of seconds" % what)
    return value


def _go_seconds(seconds):
    """A number of seconds as a Go duration string ("30s", "2.5s"), for csmutex's flags."""
    text = ("%.3f" % seconds).rstrip("0").rstrip(".")
    return (text or "0") + "s"


def _check_sandbox_messages(value):
    """None (off), True (csmutex's default interval) or an interval: a number of seconds or
    a Go duration string ("30s"). False and 0 mean off. The range (5 s to 24 h) is
    csmutex's to check: its answer names it."""
    if value is None or value is False:
        return None
    if value is True:
        return True
    if isinstance(value, _string_types):
        text = _as_text(value, "sandbox_messages")
        if not text.strip() or _control_char(text) is not None:
            raise ValueError('sandbox_messages must be True, False, a number of seconds or a duration such as "30s", '
                             "not %r" % (value,))
        return text.strip()
    seconds = _seconds(value, "sandbox_messages (True, False, seconds or a duration string)")
    if seconds < 0:
        raise ValueError("sandbox_messages must not be negative (False or 0: no messages)")
    return None if seconds == 0 else seconds


def _sandbox_messages_flag(value):
    """csmutex run's flag for a checked sandbox_messages value (not None)."""
    if value is True:
        return "--sandbox-messages"
    if isinstance(value, _string_types):
        return "--sandbox-messages=" + value
    return "--sandbox-messages=" + _go_seconds(value)


def _check_poll_interval(value):
    """csmutex run's --poll-interval value (MIN[-MAX]) from a number of seconds, a (min, max)
    pair of them, or a string as csmutex takes it ("2s-5s"); None when not given."""
    if value is None:
        return None
    if isinstance(value, _string_types):
        text = _as_text(value, "poll_interval")
        if not text.strip() or _control_char(text) is not None or text.strip().startswith("-"):
            raise ValueError('poll_interval must be seconds, a (min, max) pair or a string such as "2s-5s", not %r'
                             % (value,))
        return text.strip()
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError("poll_interval as a pair must be (min, max) seconds, not %r" % (value,))
        lo, hi = _seconds(value[0], "poll_interval's min"), _seconds(value[1], "poll_interval's max")
    else:
        lo = hi = _seconds(value, "poll_interval (seconds, a (min, max) pair or a string)")
    if lo <= 0 or hi <= 0:
        raise ValueError("poll_interval must be positive, not %r" % (value,))
    if lo > hi:
        raise ValueError("poll_interval's min %s is above its max %s" % (_fmt_seconds(lo), _fmt_seconds(hi)))
    if lo == hi:
        return _go_seconds(lo)
    return "%s-%s" % (_go_seconds(lo), _go_seconds(hi))


def _check_priority(value):
    """A waiting-room priority: None (not sent: csmutex's default, 0) or an int from 0 to
    MAX_PRIORITY. Anything else is a ValueError here, before anything is sent or started:
    True is not 1, and 2.5 or "3" are not guessed at, for a priority decides who goes first."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_PRIORITY:
        raise ValueError("priority must be an integer from 0 to %d (higher goes first), not %r"
                         % (MAX_PRIORITY, value))
    return int(value)


def _native(text):
    """A str for argv and the environment: bytes on Python 2, text on Python 3."""
    if _PY2 and isinstance(text, _text_type):
        return text.encode("utf-8")
    return text


def _default_owner():
    return "%s:%d/%s" % (socket.gethostname(), os.getpid(), threading.current_thread().name)


def _redact(text, secrets):
    for s in secrets:
        if s and len(s) >= 3:
            text = text.replace(s, "[REDACTED]")
    return text


def _fmt_seconds(s):
    if s is None:
        return "?"
    if s < 10:
        return ("%.2f" % s).rstrip("0").rstrip(".") + "s"
    return "%.0fs" % s


# -- the CloudShell command context ------------------------------------------------------


def _get(obj, attr):
    """obj.attr, or obj[attr] for dict-like contexts; None when absent or empty."""
    if obj is None:
        return None
    value = getattr(obj, attr, None)
    if value is None and isinstance(obj, dict):
        value = obj.get(attr)
    if isinstance(value, _string_types) and not value.strip():
        return None
    return value


class _ContextSettings(object):
    """What a CloudShell driver command's context says about where and how to lock."""

    def __init__(self, context, port=None, scheme=None):
        if context is None:
            raise ValueError("context is required (the driver command's context argument)")
        conn = _get(context, "connectivity")
        if conn is None:
            raise ValueError("context has no connectivity: pass the context CloudShell gives the driver command")
        res = _get(context, "reservation") or _get(context, "remote_reservation")
        if res is None:
            raise ValueError("context has no reservation (nor remote_reservation): this command does not run in a "
                             "sandbox (an autoload or resource-only context cannot lock a reservation)")
        self.reservation_id = _get(res, "reservation_id")
        if self.reservation_id is None:
            raise ValueError("context.reservation has no reservation_id")
        self.domain = _get(res, "domain")
        self.host = _get(conn, "server_address")
        if self.host is None:
            raise ValueError("context.connectivity has no server_address")
        self.token = _get(conn, "admin_auth_token")
        if self.token is None:
            raise ValueError("context.connectivity has no admin_auth_token")
        if port is None:
            port = _get(conn, "cloudshell_api_port")
        if port is not None:
            try:
                port = int(port)
            except (TypeError, ValueError):
                raise ValueError("the CloudShell API port must be a number, not %r" % (port,))
        self.port = port
        if scheme is None:
            scheme = _get(conn, "cloudshell_api_scheme")
        self.scheme = scheme.strip().lower() if isinstance(scheme, _string_types) else None
        resource = _get(context, "resource")
        self.resource_name = _get(resource, "name")

    def cloudshell(self):
        """The sidecar's "cloudshell" request object: admin token logon (SecureLogon)."""
        c = {"host": self.host, "token": self.token}
        if self.domain:
            c["domain"] = self.domain
        if self.port:
            c["port"] = self.port
        if self.scheme:
            c["scheme"] = self.scheme
        return c

    def env(self):
        """The CLOUDSHELL_* settings for csmutex run (token logon)."""
        e = {"CLOUDSHELL_HOST": self.host, "CLOUDSHELL_TOKEN": self.token}
        if self.domain:
            e["CLOUDSHELL_DOMAIN"] = self.domain
        if self.port:
            e["CLOUDSHELL_PORT"] = str(self.port)
        if self.scheme:
            e["CLOUDSHELL_SCHEME"] = self.scheme
        return e

    def owner(self):
        if self.resource_name:
            return "%s@%s" % (self.resource_name, _default_owner())
        return None


# -- interrupting the thread that holds the lock -----------------------------------------


def _async_raiser():
    """PyThreadState_SetAsyncExc through ctypes (CPython), or None."""
    try:
        import ctypes
        fn = ctypes.pythonapi.PyThreadState_SetAsyncExc
    except (ImportError, AttributeError):
        return None
    id_type = ctypes.c_ulong if sys.version_info >= (3, 7) else ctypes.c_long

    def raise_in(ident, exc_type):
        return fn(id_type(ident), ctypes.py_object(exc_type) if exc_type is not None else None)

    return raise_in


def _is_main_thread(t):
    main = getattr(threading, "main_thread", None)
    if main is not None:
        return t is main()
    return isinstance(t, getattr(threading, "_MainThread", ()))  # Python 2


def _default_sigint():
    """True if SIGINT has Python's default handler (the one that raises KeyboardInterrupt)."""
    try:
        import signal
        return signal.getsignal(signal.SIGINT) is signal.default_int_handler
    except Exception:  # noqa: BLE001 - no signal module, or no SIGINT
        return False


class _Interrupter(object):
    """Raises KeyboardInterrupt in the thread that took the lock, once, when it is lost.

    In the main thread through ``_thread.interrupt_main`` (``thread.interrupt_main`` on
    Python 2) while SIGINT has Python's default handler; otherwise (SIGINT ignored, as in
    processes started in the background, or a handler of the driver host's own, which must
    not run) and in other threads through CPython's PyThreadState_SetAsyncExc. Either way
    the exception arrives when that thread next runs Python code: a blocking call (a
    sleep, a socket read) finishes first. KeyboardInterrupt, because ``except Exception``
    does not swallow it; the with statement and run_locked turn it into LockLost.
    """

    def __init__(self):
        self.thread = threading.current_thread()
        self.main = _is_main_thread(self.thread)
        self._raise_in = _async_raiser()
        if self._raise_in is None and not (self.main and _default_sigint()):
            raise ValueError("interrupt=True needs CPython, or the main thread with the default SIGINT handler")
        self._lock = threading.Lock()
        self._armed = True
        self._async = False
        self.fired = False

    def fire(self):
        with self._lock:
            if not self._armed or self.fired:
                return
            self.fired = True
            self._async = not (self.main and _default_sigint()) and self._raise_in is not None
        if self._async:
            self._raise_in(self.thread.ident, KeyboardInterrupt)
        elif self.main and _default_sigint():
            _thread.interrupt_main()
        # else: the handler changed since acquire and there is no safe way: check() reports it

    def disarm(self):
        """No more interrupts from now on; returns whether one was sent."""
        with self._lock:
            self._armed = False
            return self.fired

    def absorb(self):
        """Take a sent interrupt that has not arrived yet, so that it cannot hit later code.

        Called in the interrupted thread, after disarm, when the interrupt did not show.
        """
        if not self.fired or threading.current_thread() is not self.thread:
            return
        if self._async:
            self._raise_in(self.thread.ident, None)  # cancels a pending one
        deadline = _monotonic() + (0.05 if self._async else 0.5)
        try:
            while _monotonic() < deadline:
                time.sleep(0.005)
        except KeyboardInterrupt:
            pass


# -- a minimal HTTP/1.1 client (http.client differs too much between 2.7 and 3.x) ---------


def _parse_address(address):
    """("unix", path) or ("tcp", (host, port)) for HOST:PORT, [V6]:PORT, http://... or unix:/path."""
    if not isinstance(address, _string_types):
        raise TypeError("sidecar address must be a string")
    if address.startswith("unix:"):
        path = address[len("unix:"):]
        if not path:
            raise ValueError("sidecar address unix: needs a path, e.g. unix:/run/csmutex.sock")
        return "unix", path
    if address.startswith("http://"):
        address = address[len("http://"):].rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("sidecar address must be HOST:PORT or unix:/path, not %r" % (address,))
    return "tcp", (host.strip("[]"), int(port))


def _connect(address, timeout):
    kind, target = _parse_address(address)
    if kind == "tcp":
        return socket.create_connection(target, timeout=timeout)
    if not hasattr(socket, "AF_UNIX"):
        raise SidecarError("unix sockets are not available on this platform: use HOST:PORT")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


class _HTTPError(Exception):
    pass


class _Response(object):
    """The status, headers and a line reader over the (possibly chunked) body."""

    def __init__(self, sock):
        self._f = sock.makefile("rb")
        status_line = self._f.readline(_MAX_READ)
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise _HTTPError("not an HTTP answer: %r" % (status_line[:80],))
        self.status = int(parts[1])
        self.headers = {}
        while True:
            line = self._f.readline(_MAX_READ)
            if not line:
                raise _HTTPError("connection closed in the headers")
            line = line.strip()
            if not line:
                break
            key, _, value = line.partition(b":")
            self.headers[key.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self._left = int(length) if length and length.isdigit() else None
        self._buf = b""
        self._eof = False

    def _fill(self):
        """Read more of the body into the buffer; False at its end."""
        if self._eof:
            return False
        if self._chunked:
            line = self._f.readline(_MAX_READ)
            if not line:
                raise _HTTPError("connection closed in the body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _HTTPError("bad chunk size %r" % (line[:40],))
            if size == 0:
                self._eof = True
                return False
            data = self._f.read(size)
            if len(data) < size or self._f.read(2) != b"\r\n":
                raise _HTTPError("connection closed in the body")
        elif self._left is not None:
            if self._left == 0:
                self._eof = True
                return False
            data = self._f.read(min(self._left, _MAX_READ))
            if not data:
                raise _HTTPError("connection closed in the body")
            self._left -= len(data)
        else:
            data = self._f.readline(_MAX_READ)
            if not data:
                self._eof = True
                return False
        self._buf += data
        return True

    def readline(self):
        """One line of the body (with its newline); b"" at the end."""
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line, self._buf = self._buf[:i + 1], self._buf[i + 1:]
                return line
            if len(self._buf) > _MAX_READ or not self._fill():
                line, self._buf = self._buf, b""
                return line

    def read(self):
        """The rest of the body (at most _MAX_READ bytes)."""
        try:
            while len(self._buf) < _MAX_READ and self._fill():
                pass
        except _HTTPError:
            pass
        return self._buf[:_MAX_READ]

    def close(self):
        self._f.close()


def _post(sock, address, path, payload, bearer=None):
    kind, target = _parse_address(address)
    host = "localhost" if kind == "unix" else ("[%s]:%d" % target if ":" in target[0] else "%s:%d" % target)
    head = ("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            "Accept: application/x-ndjson\r\nContent-Length: %d\r\n" % (path, host, len(payload)))
    if bearer:
        head += "Authorization: Bearer %s\r\n" % bearer
    sock.sendall((head + "\r\n").encode("ascii") + payload)
    return _Response(sock)


def _read_token_file(path):
    """The bearer token in the sidecar's --auth-token-file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4097)
    except _OS_ERRORS as e:
        raise SidecarError("cannot read the sidecar's token file %s: %s" % (path, getattr(e, "strerror", e) or e),
                           kind="unauthenticated")
    token = raw.decode("utf-8", "replace").strip()
    if not token or len(raw) > 4096 or any(c.isspace() or ord(c) < 33 or ord(c) > 126 for c in token):
        raise SidecarError("the sidecar's token file %s does not hold one token" % path, kind="unauthenticated")
    return token


def _json(raw):
    value = json.loads(raw.decode("utf-8", "replace"))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


# -- holder and wait time, from the sidecar's or csmutex's words -------------------------

_TOKEN_RE = re.compile(r"^(.*?) \(token ([0-9A-Fa-f]+)\)$")
_DURATION_PART = re.compile(u"(\\d+(?:\\.\\d*)?|\\.\\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_DURATION_UNITS = {u"ns": 1e-9, u"us": 1e-6, u"\u00b5s": 1e-6, u"\u03bcs": 1e-6, u"ms": 1e-3, u"s": 1.0,
                   u"m": 60.0, u"h": 3600.0}


def _go_duration(text):
    """Seconds in a Go duration string ("301ms", "1m30.5s"), or None."""
    if not isinstance(text, _string_types):
        return None
    text = text.strip()
    if not text:
        return None
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) else None


def _split_holder(text):
    """(label, token) from csmutex's "label (token 0123abcd)"; (None, None) if unknown."""
    if not text:
        return None, None
    text = text.strip()
    if text in ("nobody", "an unknown holder"):
        return None, None
    m = _TOKEN_RE.match(text)
    if m:
        return m.group(1), m.group(2)
    return text, None


# "... held by LABEL (token 0123abcd)" in csmutex's and the sidecar's messages.
_HELD_BY_RE = re.compile(r"held by (.+? \(token [0-9A-Fa-f]+\)|legacy holder \".*?\"|a legacy holder \(no owner "
                         r"recorded\)|an unknown holder|\S+)")
_WAITED_RE = re.compile(u"(?:gave up|timed out) after ([0-9][0-9a-z.\u00b5\u03bc]*)")


def _holder_from_text(text):
    m = _HELD_BY_RE.search(text or "")
    return _split_holder(m.group(1)) if m else (None, None)


def _waited_from_text(text):
    m = _WAITED_RE.search(text or "")
    return _go_duration(m.group(1)) if m else None


def _holder_fields(rec):
    """The structured "lock not obtained" fields of a sidecar answer or a csmutex run JSON
    log record: holder, holder_host, holder_pid, holder_token, held_since, waited (seconds,
    from waited_ms) and tries; None for each one absent (older csmutex) or of a wrong type."""
    def text(k):
        v = rec.get(k)
        return v if isinstance(v, _string_types) and v.strip() else None

    def number(k):
        v = rec.get(k)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != v or v < 0:
            return None
        return v

    pid, waited_ms, tries = number("holder_pid"), number("waited_ms"), number("tries")
    return {"holder": text("holder"), "holder_host": text("holder_host"),
            "holder_pid": int(pid) if pid is not None else None, "holder_token": text("holder_token"),
            "held_since": text("held_since"), "waited": waited_ms / 1000.0 if waited_ms is not None else None,
            "tries": int(tries) if tries is not None else None}


def _merge_holder(fields, text):
    """fields with holder and holder_token completed from csmutex's words ("held by LABEL
    (token 0123abcd)") where the structured fields lack them, and the label stripped of a
    "(token ...)" suffix."""
    f = dict(fields)
    label, token = _split_holder(f["holder"]) if f["holder"] else (None, None)
    text_label, text_token = _holder_from_text(text)
    f["holder"] = label or text_label
    f["holder_token"] = f["holder_token"] or token or (text_token if f["holder"] == text_label else None)
    return f


def _not_obtained_message(name, reservation_id, holder, waited):
    msg = 'lock "%s" in reservation %s not obtained' % (name, reservation_id)
    if waited is not None:
        msg += " after %s" % _fmt_seconds(waited)
    return msg + ": held by %s" % (holder or "an unknown holder")


# -- lock shapes -----------------------------------------------------------------------------


def _count(value, what, lo, hi):
    """value as an int within [lo, hi]; TypeError or ValueError naming what."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError("%s must be an integer, not %s" % (what, type(value).__name__))
    if not lo <= value <= hi:
        raise ValueError("%s must be between %d and %d, not %d" % (what, lo, hi, value))
    return int(value)


def _names(value, what):
    """A list of lock names (each checked as _check_name does)."""
    if isinstance(value, _string_types) or not isinstance(value, (list, tuple)):
        raise TypeError("%s must be a list of lock names, not %s" % (what, type(value).__name__))
    if not value:
        raise ValueError("%s must not be empty" % what)
    out = []
    for i, n in enumerate(value):
        try:
            out.append(_check_name(n))
        except (TypeError, ValueError) as e:
            raise type(e)("%s[%d]: %s" % (what, i, e))
    return out


def _levels(value):
    """Lock levels, coarse to fine, as a list of (level, [names]) pairs (a dict would lose
    its order on Python 2), in the sidecar's form."""
    if isinstance(value, dict) or not isinstance(value, (list, tuple)) or not value:
        raise TypeError("levels must be a non-empty list of (level, [names]) pairs, coarse to fine")
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError("levels[%d] must be a (level, [names]) pair" % i)
        level = _as_text(pair[0], "levels[%d] level" % i)
        if not level.strip():
            raise ValueError("levels[%d] has an empty level name" % i)
        out.append({"level": level, "names": _names(pair[1], "levels[%d] names" % i)})
    return out


# The parameters each shape takes.
_SHAPE_FIELDS = {"exclusive": ("readers",), "semaphore": ("slots",), "shared": ("readers",),
                 "set": ("names", "levels", "inside"), "pool": ("members", "count")}


def _check_shape(shape, name, slots, readers, names, members, count, levels, inside):
    """The request fields of a shape, and its label (the name errors and GET /v1/locks use:
    a set's names or a pool's members joined by commas). Ranges are the sidecar's too: its
    400 answer names them when it disagrees."""
    shape = "exclusive" if shape is None else _as_text(shape, "shape")
    if shape not in SHAPES:
        raise ValueError("shape must be one of %s, not %r" % (", ".join(SHAPES), shape))
    given = {"slots": slots, "readers": readers, "names": names, "members": members, "count": count,
             "levels": levels, "inside": inside}
    for k in sorted(given):
        if given[k] is not None and k not in _SHAPE_FIELDS[shape]:
            raise TypeError("%s applies only to shape %s, not %r"
                            % (k, " or ".join(repr(x) for x in SHAPES if k in _SHAPE_FIELDS[x]), shape))
    fields = {}
    if shape != "exclusive" or readers is not None:
        fields["shape"] = shape
    if shape in ("exclusive", "shared") and readers is not None:
        fields["readers"] = _count(readers, "readers", 1, 9999)
    if shape == "semaphore":
        if slots is None:
            raise TypeError("a semaphore needs slots: how many may hold it at once")
        fields["slots"] = _count(slots, "slots", 1, 9999)
    if shape == "set":
        if names is None:
            raise TypeError("a lock set needs names")
        fields["names"] = _names(names, "names")
        if levels is not None:
            fields["levels"] = _levels(levels)
        if inside is not None:
            if levels is None:
                raise TypeError("inside needs levels: the levels say which sets may be taken inside which")
            token = getattr(inside, "token", inside)
            if not isinstance(token, _string_types) or not token:
                raise TypeError("inside must be a held SidecarMutex of a set, or its token")
            fields["inside"] = _as_text(token, "inside")
        return fields, u",".join(sorted(set(fields["names"])))
    if shape == "pool":
        if members is None:
            raise TypeError("a pool needs members")
        fields["members"] = _names(members, "members")
        if len(set(fields["members"])) != len(fields["members"]):
            raise ValueError("members must not list a name twice: %r" % (fields["members"],))
        fields["count"] = _count(1 if count is None else count, "count", 1, len(fields["members"]))
        return fields, u",".join(fields["members"])
    return fields, _check_name(name)


def semaphore(reservation_id, name, slots, **kwargs):
    """A semaphore of ``slots``: at most that many holders of ``name`` at once (every party
    must use the same number). After ``acquire`` (or entering ``with``), ``slot`` says which
    slot (1..slots) this holder has. Other keyword arguments are SidecarMutex's."""
    return SidecarMutex(reservation_id, name=name, shape="semaphore", slots=slots, **kwargs)


def shared(reservation_id, name=DEFAULT_NAME, readers=DEFAULT_READERS, **kwargs):
    """The shared (reader) side of the shared/exclusive lock ``name``: many readers hold it
    together, up to ``readers`` (every party must use the same number); none while a writer
    (``exclusive``) or a driver taking the plain lock ``name`` holds it."""
    return SidecarMutex(reservation_id, name=name, shape="shared", readers=readers, **kwargs)


def exclusive(reservation_id, name=DEFAULT_NAME, readers=DEFAULT_READERS, **kwargs):
    """The exclusive (writer) side of the shared/exclusive lock ``name``: it holds the plain
    lock ``name`` (so it excludes, and is excluded by, every driver that takes that name,
    the public snippet included), then waits for the readers already in."""
    return SidecarMutex(reservation_id, name=name, shape="exclusive", readers=readers, **kwargs)


def lock_set(reservation_id, names, levels=None, inside=None, **kwargs):
    """Every one of ``names``, or none: taken in one canonical (sorted) order, so two sets
    never deadlock. ``levels`` (a list of (level, [names]) pairs, coarse to fine) with
    ``inside`` (a held set, or its token) refuses a set taken inside another unless it is at
    a finer level. After ``acquire``, ``names`` lists what is held."""
    return SidecarMutex(reservation_id, shape="set", names=names, levels=levels, inside=inside, **kwargs)


def pool(reservation_id, members, count=1, **kwargs):
    """Any ``count`` free members of ``members`` (traffic-generator ports, say). After
    ``acquire``, ``members`` says which were taken."""
    return SidecarMutex(reservation_id, shape="pool", members=members, count=count, **kwargs)


# -- atomic sandbox state --------------------------------------------------------------------


def _check_key(key):
    text = _as_text(key, "key")
    if not re.match(r"^[A-Za-z0-9._-]{1,64}$", text):
        raise ValueError("key must be 1 to 64 letters, digits, '.', '_' or '-': %r" % (text,))
    return text


def _value_range(value):
    """(lo, hi) or "lo-hi" as the sidecar's {"lo", "hi"}."""
    if isinstance(value, _string_types):
        lo, sep, hi = _as_text(value, "value_range").partition("-")
        try:
            value = (int(lo), int(hi)) if sep else None
        except ValueError:
            value = None
        if value is None:
            raise ValueError('value_range must be (lo, hi) or "lo-hi", such as "100-199"')
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise TypeError('value_range must be (lo, hi) or "lo-hi", such as "100-199"')
    lo = _count(value[0], "value_range lo", -(1 << 63), (1 << 63) - 1)
    hi = _count(value[1], "value_range hi", -(1 << 63), (1 << 63) - 1)
    if lo > hi:
        raise ValueError("value_range must be ascending: %d > %d" % (lo, hi))
    return {"lo": lo, "hi": hi}


def _state_call(path, reservation_id, key, fields, name, timeout, address, owner, cloudshell, lease,
                auth_token_file, priority):
    reservation_id = _check_reservation_id(reservation_id)
    name = _check_name(name)
    timeout = _seconds(timeout, "timeout")
    if timeout <= 0:
        raise ValueError("timeout must be positive: the change needs the lock")
    address = address or os.environ.get("CSMUTEX_SIDECAR") or DEFAULT_ADDRESS
    _parse_address(address)
    if cloudshell is not None and not isinstance(cloudshell, dict):
        raise TypeError("cloudshell must be a dict (host, port, scheme, user, password, domain, token)")
    auth_token_file = auth_token_file or os.environ.get("CSMUTEX_SIDECAR_TOKEN_FILE") or None
    body = dict(fields, reservation_id=reservation_id, name=name, key=_check_key(key),
                owner=_check_owner(owner) if owner else _default_owner(), timeout=timeout)
    if lease is not None:
        body["lease"] = _seconds(lease, "lease")
    priority = _check_priority(priority)
    if priority is not None:
        body["priority"] = priority
    if cloudshell:
        body["cloudshell"] = dict(cloudshell)
    secrets = [v for v in ((cloudshell or {}).get("password"), (cloudshell or {}).get("token"))
               if isinstance(v, _string_types)]
    payload = json.dumps(body).encode("utf-8")
    del body  # holds the password or token, if any
    bearer = _read_token_file(auth_token_file) if auth_token_file else None
    start = _monotonic()
    sock = resp = None
    try:
        sock = _connect(address, timeout + _ANSWER_GRACE)
        resp = _post(sock, address, path, payload, bearer)
        status, raw = resp.status, resp.read()
    except (_OS_ERRORS + (_HTTPError,)) as e:
        raise SidecarError("cannot reach the csmutex sidecar at %s: %s" % (address, e))
    finally:
        _close_quietly(resp, sock)
    if status != 200:
        raise _answer_error(status, raw, _monotonic() - start, secrets, name, reservation_id, timeout)
    try:
        value = _json(raw).get("value")
    except ValueError:
        value = None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SidecarError("bad answer from the csmutex sidecar at %s: %r" % (address, raw[:200]))
    return int(value)


def state_add(reservation_id, key, delta, name=DEFAULT_NAME, timeout=300, address=None, owner=None,
              cloudshell=None, lease=None, auth_token_file=None, priority=None):
    """Add ``delta`` to the counter ``key`` of the reservation's sandbox data (absent: 0)
    under the lock ``name``, in one call, and return its new value. No increment is lost or
    counted twice among callers that use the lock. Raises LockNotObtained if the lock did
    not come within ``timeout`` seconds, SidecarError (kind "conflict") if the value changed
    under the lock (nothing was written), or SidecarError for anything else. ``priority``
    is the wait's, as for SidecarMutex."""
    if isinstance(delta, bool) or not isinstance(delta, numbers.Integral):
        raise TypeError("delta must be an integer, not %s" % type(delta).__name__)
    return _state_call("/v1/state/add", reservation_id, key, {"delta": int(delta)}, name, timeout, address,
                       owner, cloudshell, lease, auth_token_file, priority)


def state_allocate(reservation_id, key, value_range, name=DEFAULT_NAME, timeout=300, address=None, owner=None,
                   cloudshell=None, lease=None, auth_token_file=None, priority=None):
    """Allocate the lowest value of ``value_range`` ((lo, hi) or "lo-hi", inclusive) not yet
    allocated under ``key`` (unique VLAN ids, say), under the lock ``name``, and return it.
    Every call for a key must give the same range. SidecarError with kind "exhausted" when
    every value is taken; otherwise as ``state_add``."""
    return _state_call("/v1/state/allocate", reservation_id, key, {"range": _value_range(value_range)}, name,
                       timeout, address, owner, cloudshell, lease, auth_token_file, priority)


def _answer_error(status, raw, elapsed, secrets, name, reservation_id, timeout):
    """The exception for a non-200 answer of the sidecar."""
    try:
        body = _json(raw)
        message, kind, waited = body.get("error"), body.get("kind"), body.get("waited")
    except ValueError:
        body, message, kind, waited = {}, raw.decode("utf-8", "replace")[:500].strip(), None, None
    message = _redact(message or "HTTP %d" % status, secrets)
    if status == 409 and kind in (None, "timeout", "locked"):
        # Structured fields first (csmutex since they exist), then what older sidecars
        # said in words: the holder in "error" or "holder", the wait in "waited".
        f = _merge_holder(_holder_fields(body), message)
        if f["waited"] is None:
            f["waited"] = _go_duration(waited)
        if f["waited"] is None:
            f["waited"] = elapsed
        holders = body.get("holders")
        if isinstance(holders, list) and all(isinstance(h, _string_types) for h in holders):
            f["holders"] = holders
            if f["holder"] is None and holders:
                f["holder"] = u", ".join(holders)
        return LockNotObtained(_not_obtained_message(name, reservation_id, f["holder"], f["waited"]),
                               timeout=timeout, name=name, reservation_id=reservation_id,
                               status=status, kind=kind or "timeout", detail=message, **f)
    err = SidecarError("csmutex sidecar: %s (HTTP %d)" % (message, status), status=status, kind=kind,
                       detail=message)
    field = body.get("field")
    err.field = field if isinstance(field, _string_types) else None
    return err


# -- SidecarMutex --------------------------------------------------------------------------


class SidecarMutex(object):
    """A reservation lock held through the csmutex sidecar, in stream mode.

    ``acquire`` (or entering the ``with`` block) asks the sidecar for the lock and waits up
    to ``timeout`` seconds (0 = a single try); the HTTP response then stays open, and the
    sidecar holds the lock until the connection closes. ``release`` (or leaving the block)
    closes it, and the sidecar releases the lock at once; if this process dies, the OS
    closes it, with the same effect.

    A daemon thread reads the sidecar's heartbeat lines. If the sidecar reports the lock
    lost, or goes away, ``lost`` becomes True and ``check()`` raises ``LockLost``: call it
    before each step that must not run without the lock. With ``interrupt=True`` the
    thread that took the lock also gets a KeyboardInterrupt at once, and leaving the
    ``with`` block raises LockLost.

    Arguments:
        reservation_id: the CloudShell reservation (sandbox) id.
        name: the lock name (the alias of the lock service); "MUTEX" matches the public
            Reservation-Mutex-Lock snippet. ValueError if csmutex could not send it.
        timeout: seconds to wait for the lock.
        address: "127.0.0.1:7369" (default, or $CSMUTEX_SIDECAR) or "unix:/path".
        owner: label recorded as the lock's owner (default host:pid/thread).
        cloudshell: optional dict (host, port, scheme, user, password, domain, token) when
            the sidecar should use another CloudShell or other credentials than its own.
        lease: optional lease in seconds (see csmutex docs); default: the sidecar's.
        heartbeat_timeout: seconds without any line from the sidecar after which the lock
            is considered lost (the sidecar writes one every 5 s by default).
        interrupt: on loss, raise KeyboardInterrupt in the thread that took the lock
            instead of waiting for it to call check().
        auth_token_file: the file of a sidecar started with --auth-token-file (default
            $CSMUTEX_SIDECAR_TOKEN_FILE); its token is sent as "Authorization: Bearer".
        sandbox_messages: tell the sandbox's end user in the reservation's Output window
            that this driver waits for the lock and for whom, and when it got it. True:
            at most once a minute; a number of seconds or a duration string ("30s"): at
            most that often (5 s to 24 h); None or False (default): no messages. For
            the exclusive shape only.
        priority: place in the waiting room of every lock this waits on, 0 (the
            default) to MAX_PRIORITY: a waiter of priority p goes in as if it had come 16*p
            waiters earlier, never ahead of the one next in line (so low priorities still
            get their turn). For every shape. ValueError unless an int in that range.
        shape: "exclusive" (default: the plain lock ``name``), "semaphore" (with
            ``slots``), "shared" (with ``readers``), "set" (with ``names``, optional
            ``levels`` and ``inside``) or "pool" (with ``members`` and ``count``); the
            module's ``semaphore``, ``shared``, ``exclusive``, ``lock_set`` and ``pool``
            say what each means. "exclusive" with ``readers`` is the writer side of the
            shared/exclusive lock ``name``. A set or pool ignores ``name``.

    After ``acquire``, what was obtained: ``shape``, ``access`` ("exclusive" or
    "shared"), ``slot`` (a semaphore's or reader's slot, else None), ``names`` (a set's),
    ``members`` (the pool members taken), ``aliases`` (the lock services held), and
    ``obtained``, the sidecar's whole answer about it.

    ``SidecarMutex.from_context(context, ...)`` takes all of it from a driver command's
    context. One instance is one acquisition at a time; use one instance per thread.
    """

    def __init__(self, reservation_id, name=DEFAULT_NAME, timeout=300, address=None, owner=None,
                 cloudshell=None, lease=None, heartbeat_timeout=30.0, interrupt=False, auth_token_file=None,
                 sandbox_messages=None, shape=None, slots=None, readers=None, names=None, members=None, count=None,
                 levels=None, inside=None, priority=None):
        self.reservation_id = _check_reservation_id(reservation_id)
        self._shape_fields, self.name = _check_shape(shape, name, slots, readers, names, members, count, levels,
                                                     inside)
        self.shape = self._shape_fields.get("shape", "exclusive")
        self.obtained = None
        self.access = self.slot = self.names = self.members = self.aliases = None
        self.timeout = _seconds(timeout, "timeout")
        if self.timeout < 0:
            raise ValueError("timeout must not be negative")
        self.address = address or os.environ.get("CSMUTEX_SIDECAR") or DEFAULT_ADDRESS
        _parse_address(self.address)
        self.owner = _check_owner(owner) if owner else _default_owner()
        if cloudshell is not None and not isinstance(cloudshell, dict):
            raise TypeError("cloudshell must be a dict (host, port, scheme, user, password, domain, token)")
        self._cloudshell = dict(cloudshell) if cloudshell else None
        self.lease = None if lease is None else _seconds(lease, "lease")
        self.heartbeat_timeout = _seconds(heartbeat_timeout, "heartbeat_timeout")
        if self.heartbeat_timeout <= 0:
            raise ValueError("heartbeat_timeout must be positive")
        self.interrupt = bool(interrupt)
        self.sandbox_messages = _check_sandbox_messages(sandbox_messages)
        self.priority = _check_priority(priority)
        self.auth_token_file = auth_token_file or os.environ.get("CSMUTEX_SIDECAR_TOKEN_FILE") or None
        self.token = None
        self.waited = None
        self._sock = None
        self._resp = None
        self._reader = None
        self._interrupter = None
        self._state = threading.Lock()
        self._closing = False
        self._lost_reason = None

    @classmethod
    def from_context(cls, context, name=DEFAULT_NAME, timeout=300, address=None, owner=None, lease=None,
                     heartbeat_timeout=30.0, interrupt=False, port=None, scheme=None, auth_token_file=None,
                     sandbox_messages=None, priority=None, **shape):
        """The lock of the reservation a CloudShell driver command runs in.

        Reads ``context.connectivity.server_address`` and ``.admin_auth_token`` (and
        ``.cloudshell_api_port`` / ``.cloudshell_api_scheme`` when present; ``port`` and
        ``scheme`` override them), the reservation id and domain from
        ``context.reservation`` (``context.remote_reservation`` for resource remote
        commands). The sidecar logs on with the admin token (SecureLogon) in that domain.
        The owner label defaults to ``<resource name>@host:pid/thread``. ``shape`` and its
        parameters (``slots``, ``readers``, ``names``, ...) are as for SidecarMutex.
        """
        s = _ContextSettings(context, port=port, scheme=scheme)
        return cls(s.reservation_id, name=name, timeout=timeout, address=address, owner=owner or s.owner(),
                   cloudshell=s.cloudshell(), lease=lease, heartbeat_timeout=heartbeat_timeout,
                   interrupt=interrupt, auth_token_file=auth_token_file, sandbox_messages=sandbox_messages,
                   priority=priority, **shape)

    def __repr__(self):
        # Never the cloudshell dict: it may hold a password or token.
        return "SidecarMutex(reservation_id=%r, name=%r, shape=%r, address=%r, held=%r)" % (
            self.reservation_id, self.name, self.shape, self.address, self.held)

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

    def _lost_error(self, reason):
        return LockLost('lock "%s" in reservation %s was lost: %s' % (self.name, self.reservation_id, reason),
                        reason=reason, name=self.name, reservation_id=self.reservation_id)

    def check(self):
        """Raise LockLost if the lock is no longer held."""
        reason = self.lost_reason
        if reason is not None:
            raise self._lost_error(reason)
        if self._resp is None:
            raise LockLost('lock "%s" in reservation %s is not held' % (self.name, self.reservation_id),
                           reason="not held", name=self.name, reservation_id=self.reservation_id)

    # -- acquire / release -----------------------------------------------------------

    def _secrets(self):
        c = self._cloudshell or {}
        return [v for v in (c.get("password"), c.get("token")) if isinstance(v, _string_types)]

    def acquire(self):
        """Take the lock, waiting up to ``timeout``. Raises LockNotObtained or SidecarError."""
        if self._resp is not None:
            raise RuntimeError("SidecarMutex is already held; use one instance per acquisition")
        interrupter = _Interrupter() if self.interrupt else None
        bearer = _read_token_file(self.auth_token_file) if self.auth_token_file else None
        body = {"reservation_id": self.reservation_id, "owner": self.owner, "timeout": self.timeout,
                "mode": "stream"}
        body.update(self._shape_fields)
        if self.shape not in ("set", "pool"):
            body["name"] = self.name
        if self.lease is not None:
            body["lease"] = self.lease
        if self.sandbox_messages is not None:
            body["sandbox_messages"] = self.sandbox_messages
        if self.priority is not None:
            body["priority"] = self.priority
        if self._cloudshell:
            body["cloudshell"] = self._cloudshell
        payload = json.dumps(body).encode("utf-8")
        del body  # holds the password or token, if any

        start = _monotonic()
        sock = resp = None
        failure = None
        try:
            sock = _connect(self.address, self.timeout + _ANSWER_GRACE)
            resp = _post(sock, self.address, "/v1/acquire", payload, bearer)
            if resp.status != 200:
                failure = self._error_from(resp.status, resp.read(), _monotonic() - start)
            else:
                line = resp.readline()
                try:
                    first = _json(line)
                except ValueError:
                    first = None
                if first is None:
                    failure = SidecarError("bad answer from the csmutex sidecar at %s: %r" % (self.address, line[:200]))
                elif first.get("status") != "acquired":
                    failure = SidecarError("csmutex sidecar: lock not acquired: %s"
                                           % (first.get("error") or first.get("status"),), kind=first.get("kind"))
        except (_OS_ERRORS + (_HTTPError,)) as e:
            failure = SidecarError("cannot reach the csmutex sidecar at %s: %s" % (self.address, e))
        except BaseException:
            _close_quietly(resp, sock)
            raise
        if failure is not None:
            _close_quietly(resp, sock)
            raise failure

        self.token = first.get("token")
        self._obtained(first)
        waited_ms = _holder_fields(first)["waited"]
        self.waited = waited_ms if waited_ms is not None else _go_duration(first.get("waited"))
        self._sock, self._resp = sock, resp
        with self._state:
            self._closing = False
            self._lost_reason = None
        self._interrupter = interrupter
        try:
            sock.settimeout(self.heartbeat_timeout)
        except _OS_ERRORS:
            pass
        self._reader = threading.Thread(target=self._read, name="csmutex-sidecar-reader")
        self._reader.daemon = True
        self._reader.start()
        return self

    def _error_from(self, status, raw, elapsed):
        """The exception for a non-200 answer of the sidecar."""
        return _answer_error(status, raw, elapsed, self._secrets(), self.name, self.reservation_id, self.timeout)

    def _obtained(self, first):
        """Record what the acquisition got, from the sidecar's first line (older sidecars say
        nothing: the plain lock name)."""
        def texts(k):
            v = first.get(k)
            return list(v) if isinstance(v, list) and all(isinstance(x, _string_types) for x in v) else None

        slot = first.get("slot")
        self.obtained = dict((k, first[k]) for k in ("shape", "access", "slot", "slots", "names", "members",
                                                     "aliases") if k in first)
        self.access = first.get("access") if isinstance(first.get("access"), _string_types) else "exclusive"
        self.slot = slot if isinstance(slot, numbers.Integral) and not isinstance(slot, bool) else None
        self.names, self.members = texts("names"), texts("members")
        self.aliases = texts("aliases") or [self.name]

    def _read(self):
        resp = self._resp
        try:
            while True:
                line = resp.readline()
                if not line:
                    self._mark_lost("the sidecar closed the connection")
                    return
                try:
                    msg = _json(line)
                except ValueError:
                    continue
                status = msg.get("status")
                if status == "held":
                    continue
                self._mark_lost(msg.get("error") or status or "unknown status")
                return
        except socket.timeout:
            self._mark_lost("no heartbeat from the sidecar for %s" % _fmt_seconds(self.heartbeat_timeout))
        except Exception as e:  # noqa: BLE001 - OSError, ValueError when release() closes the
            # file under this thread, _HTTPError: all mean the connection is gone (ignored
            # if we closed it ourselves).
            self._mark_lost("connection to the sidecar failed: %s" % (e,))

    def _mark_lost(self, reason):
        with self._state:
            if self._closing or self._lost_reason is not None:
                return
            self._lost_reason = reason
            interrupter = self._interrupter
        if interrupter is not None:
            interrupter.fire()

    def release(self):
        """Release the lock: close the connection; the sidecar releases at once."""
        self._release()

    def _release(self):
        """Release; returns the interrupter if it sent an interrupt. Safe to call again if an
        interrupt lands in it: each step is idempotent until the fields are cleared."""
        sock = self._sock
        if sock is None:
            return None
        with self._state:
            self._closing = True  # from here on, no loss is reported and no interrupt sent
        interrupter = self._interrupter
        fired = interrupter is not None and interrupter.disarm()
        # shutdown() sends the FIN now and wakes the reader thread, whatever other
        # references to the socket remain: the sidecar releases the lock at once.
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except _OS_ERRORS:
            pass
        resp, reader = self._resp, self._reader
        self._sock = self._resp = self._reader = self._interrupter = None
        _close_quietly(resp, sock)
        if reader is not None and reader is not threading.current_thread():
            reader.join(1.0)
        return interrupter if fired else None

    close = release

    def __enter__(self):
        return self.acquire()

    def __exit__(self, exc_type, exc, tb):
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        interrupter = self._interrupter
        try:
            fired = self._release()
            if fired is not None and not interrupted:
                fired.absorb()  # sent, but the block ended before it arrived
        except KeyboardInterrupt as e:
            if interrupter is None or not interrupter.fired:
                raise  # a real Ctrl-C
            self._release()  # it landed in release: finish
            interrupted, exc = True, e
        if interrupter is None or not interrupter.fired:
            return False
        if exc_type is not None and not interrupted:
            return False  # the block's own exception goes on
        err = self._lost_error(self.lost_reason or "interrupted")
        err.__cause__ = exc
        raise err

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001
            pass


def _close_quietly(*things):
    for t in things:
        if t is None:
            continue
        try:
            t.close()
        except Exception:  # noqa: BLE001 - closing must not fail the caller
            pass


# -- csmutex run -----------------------------------------------------------------------

# The child csmutex run starts: says READY once running (so the lock is held), then
# blocks until its stdin closes.
_READY_SCRIPT = "import sys\nsys.stdout.write('READY\\n')\nsys.stdout.flush()\nsys.stdin.read()\n"

def _run_options(kwargs, context_settings=None):
    """Pop run_locked's own keyword arguments from kwargs; the rest go to func / Popen."""
    o = {"csmutex": kwargs.pop("csmutex", "csmutex"), "name": kwargs.pop("name", DEFAULT_NAME),
         "timeout": kwargs.pop("timeout", 300), "env": kwargs.pop("env", None),
         "csmutex_args": kwargs.pop("csmutex_args", ()), "interrupt": kwargs.pop("interrupt", False),
         "sandbox_messages": _check_sandbox_messages(kwargs.pop("sandbox_messages", None)),
         "poll_interval": _check_poll_interval(kwargs.pop("poll_interval", None)),
         "priority": _check_priority(kwargs.pop("priority", None))}
    o["name"] = _check_name(o["name"])
    o["timeout"] = _seconds(o["timeout"], "timeout")
    if o["timeout"] < 0:
        raise ValueError("timeout must not be negative")
    if isinstance(o["csmutex_args"], _string_types):
        raise TypeError("csmutex_args must be a list of arguments, not a string")
    env = dict(os.environ)
    if context_settings is not None:
        # The context says where and how to log on: no user or password of this process's
        # environment goes along (the token would win anyway).
        for k in ("CLOUDSHELL_USER", "CLOUDSHELL_PASSWORD"):
            env.pop(k, None)
        env.update(context_settings.env())
    if o["env"]:
        env.update(o["env"])
    o["full_env"] = dict((_native(k), _native(v)) for k, v in env.items())
    o["secrets"] = [env.get("CLOUDSHELL_PASSWORD"), env.get("CLOUDSHELL_TOKEN")]
    return o


def _run_argv(reservation_id, o, json_logs):
    argv = [o["csmutex"], "run", "--reservation=" + reservation_id, "--name=" + o["name"],
            "--timeout=" + repr(o["timeout"])]
    if o["sandbox_messages"] is not None:
        argv.append(_sandbox_messages_flag(o["sandbox_messages"]))
    if o["poll_interval"] is not None:
        argv.append("--poll-interval=" + o["poll_interval"])
    if o["priority"] is not None:
        argv.append("--priority=%d" % o["priority"])
    if json_logs:
        argv.append("--log-format=json")  # structured, so failures can be reported cleanly
    return [_native(a) for a in argv + list(o["csmutex_args"]) + ["--"]]


_CONSOLE_PREFIX = re.compile(r"^\d\d:\d\d:\d\d(?:\.\d+)? +(?:TRC|DBG|INF|WRN|ERR|FTL|PNC|\?\?\?) +")


def _csmutex_report(stderr_text, secrets):
    """(detail, fields) from csmutex run's stderr: fields as _holder_fields gives them.

    csmutex logs JSON lines (--log-format json); the last error line says why it stopped,
    and its "lock not obtained" event carries the holder and the wait as fields. Console
    lines (if csmutex_args chose them), and csmutex versions without those fields, are read
    too: the holder and the wait then come from the text.
    """
    detail, holder_field = None, None
    fallback = None
    structured = None
    for line in stderr_text.splitlines():
        line = line.strip()
        if not line:
            continue
        rec = None
        if line.startswith("{"):
            try:
                rec = _json(line.encode("utf-8"))
            except ValueError:
                rec = None
        if rec is None:
            text = _CONSOLE_PREFIX.sub("", line)
            if (text != line and " ERR " in line[:20]) or text.startswith("lock not obtained"):
                detail = text
            fallback = text
            continue
        if isinstance(rec.get("holder"), _string_types):
            holder_field = rec["holder"]
        if rec.get("level") in ("error", "fatal", "panic"):
            detail = rec.get("message") or ""
            if rec.get("error"):
                detail = "%s: %s" % (detail, rec["error"]) if detail else rec["error"]
            fields = _holder_fields(rec)
            if any(v is not None for v in fields.values()):
                structured = fields
    detail = _redact((detail or fallback or "").strip(), secrets)
    if structured is None:
        structured = _holder_fields({"holder": holder_field}) if _holder_from_text(detail)[0] is None else \
            _holder_fields({})
    fields = _merge_holder(structured, detail)
    if fields["waited"] is None:
        fields["waited"] = _waited_from_text(detail)
    return detail, fields


def _strip_prefix(detail, prefix="lock not obtained: "):
    return detail[len(prefix):] if detail.startswith(prefix) else detail


def _popen_kwargs():
    return {"close_fds": os.name != "nt"}


def run_locked(reservation_id, func, *args, **kwargs):
    """Call ``func(*args, **kwargs)`` while ``csmutex run`` holds the reservation's lock.

    Keyword arguments taken by run_locked itself (never passed to func): ``csmutex``
    (path of the binary, default "csmutex"), ``name`` (default "MUTEX"), ``timeout``
    (seconds, default 300), ``env`` (added to this process's environment for csmutex,
    e.g. CLOUDSHELL_HOST, CLOUDSHELL_USER, CLOUDSHELL_PASSWORD or CLOUDSHELL_TOKEN),
    ``csmutex_args`` (extra ``csmutex run`` flags such as ``["--lease", "90s"]``),
    ``interrupt`` (on loss, raise KeyboardInterrupt in this thread at once),
    ``sandbox_messages`` (as for SidecarMutex: ``csmutex run --sandbox-messages[=EVERY]``)
    ``poll_interval`` (how often csmutex tries while the lock is held: seconds, a
    ``(min, max)`` pair of them, or a string such as ``"2s-5s"``; ``--poll-interval``)
    and ``priority`` (as for SidecarMutex: ``--priority``).

    csmutex starts a tiny child process once it holds the lock; the child says READY, then
    waits on its stdin. ``func`` runs here, in this process; then the child's stdin is
    closed, it exits, and csmutex releases the lock. Returns func's value and propagates
    its exception.

    Raises LockNotObtained if csmutex gives up waiting (exit 75), LockLost if the lock was
    lost while func ran (csmutex terminated the child), SidecarError for anything else.
    """
    rid = _check_reservation_id(reservation_id)
    return _run_locked(rid, _run_options(kwargs), func, args, kwargs)


def run_locked_from_context(context, func, *args, **kwargs):
    """run_locked for the reservation a CloudShell driver command runs in.

    csmutex logs on with ``context.connectivity.admin_auth_token`` (CLOUDSHELL_TOKEN) to
    ``context.connectivity.server_address`` in the reservation's domain; ``port`` and
    ``scheme`` keywords override the context's API port and scheme.
    """
    s = _ContextSettings(context, port=kwargs.pop("port", None), scheme=kwargs.pop("scheme", None))
    o = _run_options(kwargs, s)
    owner = s.owner()
    if owner and not any(str(a).lstrip("-").startswith("owner") for a in o["csmutex_args"]):
        o["csmutex_args"] = ["--owner=" + owner] + list(o["csmutex_args"])
    return _run_locked(_check_reservation_id(s.reservation_id), o, func, args, kwargs)


def _run_locked(reservation_id, o, func, args, kwargs):
    argv = _run_argv(reservation_id, o, json_logs=True) + [sys.executable, "-c", _READY_SCRIPT]
    interrupter = _Interrupter() if o["interrupt"] else None
    start = _monotonic()
    proc = failure = None
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=o["full_env"], **_popen_kwargs())
    except _OS_ERRORS as e:
        failure = SidecarError("cannot start %s: %s" % (o["csmutex"], e), kind="usage")
    if failure is not None:
        raise failure  # outside the except block: no chained OSError traceback
    try:
        return _locked_call(proc, reservation_id, o, func, args, kwargs, interrupter, start)
    finally:
        _close_quietly(proc.stdin, proc.stdout, proc.stderr)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _locked_call(proc, reservation_id, o, func, args, kwargs, interrupter, start):
    name = o["name"]
    err_chunks = []

    def read_stderr():
        try:
            err_chunks.append(proc.stderr.read())
        except (_OS_ERRORS + (ValueError,)):
            pass

    err_reader = threading.Thread(target=read_stderr)
    err_reader.daemon = True
    err_reader.start()

    def report():
        err_reader.join(5.0)
        return _csmutex_report(b"".join(err_chunks).decode("utf-8", "replace"), o["secrets"])

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
        elapsed = _monotonic() - start
        detail, f = report()
        if code == EXIT_NOT_OBTAINED:
            if f["waited"] is None:
                f["waited"] = elapsed
            raise LockNotObtained(_not_obtained_message(name, reservation_id, f["holder"], f["waited"]),
                                  timeout=o["timeout"], name=name, reservation_id=reservation_id, status=None,
                                  kind="timeout", detail=detail, exit_code=code, **f)
        raise SidecarError('csmutex run exited %d before lock "%s" in reservation %s was held: %s'
                           % (code, name, reservation_id, _strip_prefix(detail) or "no message"),
                           kind=_EXIT_KINDS.get(code), detail=detail, exit_code=code)

    # Notice if csmutex ends the child early (lock lost) while func runs.
    ended_early = threading.Event()
    finished = threading.Event()

    def watch():
        try:
            proc.stdout.read()  # EOF when the child exits
        except (_OS_ERRORS + (ValueError,)):
            return
        if not finished.is_set():
            ended_early.set()
            if interrupter is not None:
                interrupter.fire()

    watcher = threading.Thread(target=watch)
    watcher.daemon = True
    watcher.start()

    def lost(code):
        detail = report()[0]
        return LockLost('lock "%s" in reservation %s was lost while the function ran (csmutex exit %d): %s'
                        % (name, reservation_id, code, detail or "no message"),
                        reason=detail or None, name=name, reservation_id=reservation_id, detail=detail,
                        exit_code=code)

    try:
        result = func(*args, **kwargs)
    except KeyboardInterrupt as e:
        finished.set()
        fired = interrupter is not None and interrupter.disarm()
        code = _end(proc)
        watcher.join(5.0)
        if not fired:
            raise
        err = lost(code)
        err.__cause__ = e
        raise err
    except BaseException:
        finished.set()
        if interrupter is not None and interrupter.disarm():
            interrupter.absorb()
        _end(proc)
        watcher.join(5.0)
        raise
    finished.set()
    if interrupter is not None and interrupter.disarm():
        interrupter.absorb()
    code = _end(proc)
    watcher.join(5.0)
    if code == EXIT_LOCK_LOST or ended_early.is_set() and code != 0:
        raise lost(code)
    if code != 0:
        detail = report()[0]
        raise SidecarError("csmutex run exited %d after the function ran: %s" % (code, detail or "no message"),
                           kind=_EXIT_KINDS.get(code), detail=detail, exit_code=code)
    return result


def _wait(proc, timeout):
    """proc.wait with a timeout on Python 2 too; None if it did not exit."""
    deadline = _monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None or _monotonic() >= deadline:
            return code
        time.sleep(0.01)


def _end(proc):
    """Close the child's stdin so it exits and csmutex releases the lock; return csmutex's code."""
    try:
        proc.stdin.close()
    except _OS_ERRORS:
        pass
    code = _wait(proc, 60)
    if code is None:
        proc.kill()
        code = proc.wait()
    return code


def run_command(reservation_id, argv, **kwargs):
    """Run ``argv`` under ``csmutex run`` and return the exit code.

    The code is the command's own, or csmutex's: 75 lock not obtained, 70 lock lost (the
    command was terminated), 64-77 usage/CloudShell errors (see ``csmutex --help``).
    Keywords csmutex, name, timeout, env, csmutex_args, sandbox_messages, poll_interval and
    priority are as for run_locked; the rest go to subprocess.call (stdin, stdout, stderr, cwd...).
    sandbox_messages and poll_interval need a csmutex with ``--sandbox-messages`` and
    ``--poll-interval`` (an older one exits 64, usage).
    """
    rid = _check_reservation_id(reservation_id)
    return _run_command(rid, argv, _run_options(kwargs), kwargs)


def run_command_from_context(context, argv, **kwargs):
    """run_command for the reservation a CloudShell driver command runs in (admin token logon).

    The command inherits the environment given to csmutex, CLOUDSHELL_TOKEN included.
    """
    s = _ContextSettings(context, port=kwargs.pop("port", None), scheme=kwargs.pop("scheme", None))
    return _run_command(_check_reservation_id(s.reservation_id), argv, _run_options(kwargs, s), kwargs)


def _run_command(reservation_id, argv, o, popen_kwargs):
    if isinstance(argv, _string_types) or isinstance(argv, bytes):
        raise TypeError("argv must be a list of arguments, not a string")
    if o.pop("interrupt", False):
        raise TypeError("run_command does not take interrupt: csmutex terminates the command itself")
    full = _run_argv(reservation_id, o, json_logs=False) + [_native(a) for a in argv]
    kw = _popen_kwargs()
    kw.update(popen_kwargs)
    return subprocess.call(full, env=o["full_env"], **kw)
