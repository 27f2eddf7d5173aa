# -*- coding: utf-8 -*-
"""Tests of csmutex_sidecar against the real binaries: a mock CloudShell (cmd/mockapi) and
`csmutex serve` / `csmutex run`. Python 2.7 and 3.6+, standard library only.

    python3 -m unittest discover -s examples/python -v

The binaries are built with `go build` from this repository, unless CSMUTEX_BIN and
MOCKAPI_BIN name prebuilt ones. The tests set CSMUTEX_TEST_JITTER (testing only: it makes
csmutex retry every few milliseconds instead of every 2-5 s) so they run in seconds.
The packaging test builds a wheel (with the interpreter in CSMUTEX_BUILD_PYTHON, or this
one) and installs it with this interpreter's pip, offline; CSMUTEX_WHEEL names a wheel
built beforehand. It is skipped when setuptools and wheel are not importable.
"""

from __future__ import absolute_import, division, print_function

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

try:
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen
except ImportError:  # Python 2
    from urllib2 import HTTPError, Request, urlopen

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import csmutex_sidecar  # noqa: E402
from csmutex_sidecar import (  # noqa: E402
    MAX_NAME_LENGTH,
    LockLost,
    LockNotObtained,
    SidecarError,
    SidecarMutex,
    exclusive,
    lock_set,
    pool,
    run_command,
    run_command_from_context,
    run_locked,
    run_locked_from_context,
    semaphore,
    shared,
)

REPO = os.path.dirname(os.path.dirname(HERE))
PASSWORD = "Py-s3cret-Passw0rd"
JITTER = "1ms,5ms"
PY2 = sys.version_info[0] == 2
monotonic = getattr(time, "monotonic", time.time)

# subprocess.DEVNULL (Python 3), or one file kept open for the whole run (Python 2).
DEVNULL = getattr(subprocess, "DEVNULL", None)
if DEVNULL is None:  # pragma: no cover
    DEVNULL = open(os.devnull, "r+b")

_tmp = None
_bins = {}
_mock = None
_mock_host = _mock_port = None
_reservation = None
_counter = [0]


def _which(name):
    for d in os.environ.get("PATH", "").split(os.pathsep):
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def _unique(prefix):
    _counter[0] += 1
    return "%s-%d-%d" % (prefix, os.getpid(), _counter[0])


def _wait_proc(proc, timeout):
    deadline = monotonic() + timeout
    while proc.poll() is None:
        if monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("process %d did not exit within %ss" % (proc.pid, timeout))
        time.sleep(0.01)
    return proc.returncode


def _build(name):
    env_var = {"csmutex": "CSMUTEX_BIN", "mockapi": "MOCKAPI_BIN"}[name]
    if os.environ.get(env_var):
        return os.environ[env_var]
    go = _which("go")
    if go is None:
        raise unittest.SkipTest("go is not installed and %s is not set" % env_var)
    out = os.path.join(_tmp, name)
    subprocess.check_call([go, "build", "-o", out, "./cmd/" + name], cwd=REPO)
    return out


def _read_lines_until(proc, wanted, timeout=20.0):
    """Read proc's stdout lines until every prefix in wanted was seen; return them."""
    found = {}
    result = {}

    def reader():
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").strip()
            for prefix in wanted:
                if line.startswith(prefix) and prefix not in found:
                    found[prefix] = line[len(prefix):].strip()
            if all(p in found for p in wanted):
                result.update(found)
                return

    t = threading.Thread(target=reader)
    t.daemon = True
    t.start()
    t.join(timeout)
    if not result:
        proc.kill()
        raise RuntimeError("process did not print %s (saw %s)" % (wanted, found))
    return result


def setUpModule():
    global _tmp, _mock, _mock_host, _mock_port, _reservation
    _tmp = tempfile.mkdtemp(prefix="csmutex-py-")
    _bins["csmutex"] = _build("csmutex")
    _bins["mockapi"] = _build("mockapi")
    _mock = subprocess.Popen(
        [_bins["mockapi"], "-listen", "127.0.0.1:0", "-reservations", "1", "-user", "driver", "-password", PASSWORD],
        stdout=subprocess.PIPE, stderr=DEVNULL)
    got = _read_lines_until(_mock, ["listening on", "reservation"])
    hostport = got["listening on"].split("://", 1)[-1].rstrip("/")
    _mock_host, _, port = hostport.rpartition(":")
    _mock_port = int(port)
    _reservation = got["reservation"]


def tearDownModule():
    if _mock is not None:
        _mock.terminate()
        _wait_proc(_mock, 10)
        _mock.stdout.close()
    if _tmp:
        shutil.rmtree(_tmp, ignore_errors=True)


def _cs_env(**extra):
    env = dict(os.environ)
    env.update({
        "CLOUDSHELL_HOST": _mock_host, "CLOUDSHELL_PORT": str(_mock_port), "CLOUDSHELL_USER": "driver",
        "CLOUDSHELL_PASSWORD": PASSWORD, "CLOUDSHELL_DOMAIN": "Global", "CSMUTEX_TEST_JITTER": JITTER,
    })
    env.update(extra)
    return env


def _no_cs_env():
    """This environment without any CloudShell settings: only a context can supply them."""
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("CLOUDSHELL_"))
    env["CSMUTEX_TEST_JITTER"] = JITTER
    return env


def _http(url_or_address, path, body=None, timeout=5):
    url = url_or_address if url_or_address.startswith("http") else "http://%s%s" % (url_or_address, path)
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode("utf-8"))
    req = Request(url, data=data, headers={"Content-Type": "application/json"})
    with contextlib.closing(urlopen(req, timeout=timeout)) as r:
        return r.read()


def _admin_token():
    """A token from the mock's Logon: it stands in for the admin token CloudShell puts in
    the command context (the mock's SecureLogon accepts tokens it issued)."""
    body = ("<Logon><username>driver</username><password>%s</password><domainName>Global</domainName></Logon>"
            % PASSWORD).encode("ascii")
    url = "http://%s:%d/ResourceManagerApiService/Logon" % (_mock_host, _mock_port)
    req = Request(url, data=body, headers={"Content-Type": "text/xml"})
    with contextlib.closing(urlopen(req, timeout=10)) as r:
        xml = r.read().decode("utf-8")
    m = re.search(r'<Token Token="([^"]+)"', xml)
    assert m, xml
    return m.group(1)


def _messages():
    """The reservation's Output window, as the mock recorded it."""
    url = "http://%s:%d/admin/reservations/%s/messages" % (_mock_host, _mock_port, _reservation)
    with contextlib.closing(urlopen(url, timeout=10)) as r:
        return json.loads(r.read().decode("utf-8"))


def _services(prefix):
    """The aliases of the reservation's services that start with prefix, as the mock has
    them (what CloudShell holds, not what the sidecar believes)."""
    url = "http://%s:%d/admin/reservations/%s" % (_mock_host, _mock_port, _reservation)
    with contextlib.closing(urlopen(url, timeout=10)) as r:
        snap = json.loads(r.read().decode("utf-8"))
    return sorted(s["alias"] for s in snap.get("services") or [] if s["alias"].startswith(prefix))


class Sidecar(object):
    """A `csmutex serve` process."""

    def __init__(self, listen="127.0.0.1:0", extra=(), env=None):
        self.stderr_path = os.path.join(_tmp, _unique("serve") + ".log")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [_bins["csmutex"], "serve", "--listen", listen, "--heartbeat", "100ms", "--lease", "3s"] + list(extra),
            stdout=subprocess.PIPE, stderr=self._stderr, env=env if env is not None else _cs_env())
        self.address = _read_lines_until(self.proc, ["listening on"])["listening on"]

    def locks(self):
        return json.loads(_http(self.address, "/v1/locks").decode("utf-8"))

    def held(self, name):
        return [h for h in self.locks()["held"] if h["name"] == name]

    def release_token(self, token):
        return json.loads(_http(self.address, "/v1/release", {"token": token}).decode("utf-8"))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = _wait_proc(self.proc, 30)
        if not self._stderr.closed:
            self._stderr.close()
            self.proc.stdout.close()
        return code

    def logs(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def _wait_until(cond, timeout=3.0, what="condition"):
    deadline = monotonic() + timeout
    while not cond():
        if monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


# -- stand-in CloudShell command contexts ----------------------------------------------------


class Obj(object):
    def __init__(self, **kw):
        self.__dict__.update(kw)


def make_context(token, reservation_id=None, domain="Global", remote=False, resource_name="SW-1", port=None,
                 host=None):
    """Shaped like cloudshell-shell-core's ResourceCommandContext (or, with remote=True,
    ResourceRemoteCommandContext): only the fields csmutex_sidecar reads, and a few more."""
    connectivity = Obj(server_address=host or _mock_host,
                       cloudshell_api_port=str(port if port is not None else _mock_port),
                       quali_api_port="9000", admin_auth_token=token, cloudshell_version="2024.1")
    reservation = Obj(reservation_id=reservation_id or _reservation, domain=domain, environment_name="env",
                      owner_user="admin", owner_email="", environment_path="", description="",
                      saved_sandbox_name="", saved_sandbox_id="", running_user="admin")
    resource = Obj(name=resource_name, fullname=resource_name, address="10.0.0.1", family="Switch",
                   model="Generic Switch", attributes={})
    if remote:
        return Obj(connectivity=connectivity, resource=resource, remote_reservation=reservation, remote_endpoints=[])
    return Obj(connectivity=connectivity, resource=resource, reservation=reservation, connectors=[])


_CLEAN_MESSAGE = re.compile(r"^lock \"[^\"]+\" in reservation \S+ not obtained after [0-9.]+m?s: held by .+$")


# -- tests without any process -------------------------------------------------------------


class ArgumentTest(unittest.TestCase):
    """Names and arguments csmutex could not send are refused before anything runs."""

    BAD_NAMES = [
        ("", "empty"),
        ("   ", "only whitespace"),
        ("\t", "only whitespace"),
        (" MUTEX", "start or end with whitespace"),
        ("MUTEX ", "start or end with whitespace"),
        ("MU\nTEX", "control characters"),
        ("MU\x00TEX", "control characters"),
        ("MU\x7fTEX", "control characters"),
        ("MU\rTEX", "control characters"),
        (u"MU\u2028TEX", "control characters"),
        ("MUTEX.break.0123abcd", ".break."),
        ("x" * (MAX_NAME_LENGTH + 1), "characters long"),
        ("MUTEX<x>&", "none of <>&"),
        ('MU"TEX', "none of <>&"),
    ]

    def assert_bad_name(self, call):
        for name, problem in self.BAD_NAMES:
            try:
                call(name)
            except ValueError as e:
                self.assertIn(problem, str(e), "name %r: %s" % (name, e))
                self.assertIn("lock name", str(e))
            else:
                self.fail("name %r was accepted" % (name,))

    def test_sidecar_mutex_rejects_bad_names(self):
        self.assert_bad_name(lambda n: SidecarMutex("res-1", name=n, address="127.0.0.1:1"))
        self.assertIn('"MUTEX"', str(self.assertRaises_(ValueError, SidecarMutex, "r", name="")))
        with self.assertRaises(ValueError):
            SidecarMutex("r", name=None)
        if not PY2:
            with self.assertRaises(TypeError):
                SidecarMutex("r", name=b"MUTEX")
        with self.assertRaises(TypeError):
            SidecarMutex("r", name=7)

    def assertRaises_(self, exc, fn, *args, **kw):
        try:
            fn(*args, **kw)
        except exc as e:
            return e
        self.fail("%s not raised" % exc.__name__)

    def test_run_helpers_reject_bad_names_before_starting_csmutex(self):
        missing = os.path.join(HERE, "no-such-csmutex")  # would fail with SidecarError if started
        self.assert_bad_name(lambda n: run_locked("res-1", lambda: None, name=n, csmutex=missing))
        self.assert_bad_name(lambda n: run_command("res-1", ["true"], name=n, csmutex=missing))
        ctx = make_context("tok-tok-tok", reservation_id="res-1", host="127.0.0.1", port=1)
        self.assert_bad_name(lambda n: run_locked_from_context(ctx, lambda: None, name=n, csmutex=missing))
        self.assert_bad_name(lambda n: SidecarMutex.from_context(ctx, name=n))

    def test_good_names(self):
        for name in ["MUTEX", "x" * MAX_NAME_LENGTH, "SWITCH-1 ports", u"Schalter-\u00c4", "a.break", "break."]:
            m = SidecarMutex("res-1", name=name, address="127.0.0.1:1")
            self.assertEqual(m.name, name if not isinstance(name, bytes) else name.decode("utf-8"))

    def test_other_arguments(self):
        for rid in ["", "  ", None, "a\nb"]:
            with self.assertRaises(ValueError):
                SidecarMutex(rid)
        with self.assertRaises(ValueError):
            SidecarMutex("r", timeout=-1)
        with self.assertRaises(TypeError):
            SidecarMutex("r", timeout="10")
        with self.assertRaises(ValueError):
            SidecarMutex("r", owner="a\nb")
        with self.assertRaises(ValueError):
            SidecarMutex("r", address="nonsense")
        with self.assertRaises(TypeError):
            run_command("r", "echo hi")

    def test_sandbox_messages_and_poll_interval(self):
        for value, want in [(None, None), (False, None), (0, None), (True, True), (30, 30.0), (12.5, 12.5),
                            ("1m", "1m"), (u" 45s ", u"45s")]:
            self.assertEqual(SidecarMutex("r", sandbox_messages=value).sandbox_messages, want, value)
        for bad, exc in [(-1, ValueError), ("", ValueError), ("1m\n", ValueError), ([30], TypeError),
                         (float("nan"), ValueError)]:
            with self.assertRaises(exc):
                SidecarMutex("r", sandbox_messages=bad)
        ctx = make_context("tok-123456", reservation_id="res-9", host="127.0.0.1", port=1)
        self.assertEqual(SidecarMutex.from_context(ctx, sandbox_messages="2m").sandbox_messages, "2m")

        def argv(**kw):
            o = csmutex_sidecar._run_options(dict(kw))
            return [a.decode("utf-8") if isinstance(a, bytes) else a
                    for a in csmutex_sidecar._run_argv("res-1", o, json_logs=False)]

        self.assertEqual([a for a in argv() if "sandbox" in a or "poll" in a], [])
        self.assertIn("--sandbox-messages", argv(sandbox_messages=True))
        self.assertIn("--sandbox-messages=45s", argv(sandbox_messages=45))
        self.assertIn("--sandbox-messages=2.5s", argv(sandbox_messages=2.5))
        self.assertIn("--sandbox-messages=1m", argv(sandbox_messages="1m"))
        self.assertIn("--poll-interval=2s-5s", argv(poll_interval=(2, 5)))
        self.assertIn("--poll-interval=2s-5s", argv(poll_interval="2s-5s"))
        self.assertIn("--poll-interval=0.5s", argv(poll_interval=0.5))
        self.assertEqual(argv(poll_interval=3)[-1], "--")  # flags go before the command
        for bad, exc in [(0, ValueError), (-2, ValueError), ((5, 2), ValueError), ((1, 2, 3), ValueError),
                         ("", ValueError), ("-1s", ValueError), (("2", 5), TypeError), (True, TypeError)]:
            with self.assertRaises(exc, msg=repr(bad)):
                argv(poll_interval=bad)
        missing = os.path.join(HERE, "no-such-csmutex")
        with self.assertRaises(ValueError):  # checked before csmutex is started
            run_command("res-1", ["true"], csmutex=missing, poll_interval=(5, 2))
        with self.assertRaises(ValueError):
            run_locked("res-1", lambda: None, csmutex=missing, sandbox_messages=-5)

    def test_priority_is_checked_before_anything_is_sent(self):
        self.assertIsNone(SidecarMutex("r").priority)  # not sent: the sidecar's default, 0
        for good in (0, 4, csmutex_sidecar.MAX_PRIORITY):
            self.assertEqual(SidecarMutex("r", priority=good).priority, good)
        self.assertEqual(semaphore("r", "S", 2, priority=9).priority, 9)
        self.assertEqual(lock_set("r", ["A", "B"], priority=3).priority, 3)
        ctx = make_context("tok-123456", reservation_id="res-9", host="127.0.0.1", port=1)
        self.assertEqual(SidecarMutex.from_context(ctx, priority=7).priority, 7)
        self.assertEqual(SidecarMutex.from_context(ctx, shape="pool", members=["A"], priority=2).priority, 2)

        def argv(**kw):
            o = csmutex_sidecar._run_options(dict(kw))
            return [a.decode("utf-8") if isinstance(a, bytes) else a
                    for a in csmutex_sidecar._run_argv("res-1", o, json_logs=False)]

        self.assertEqual([a for a in argv() if "priority" in a], [])
        self.assertIn("--priority=9", argv(priority=9))
        self.assertIn("--priority=0", argv(priority=0))
        self.assertEqual(argv(priority=5)[-1], "--")

        missing = os.path.join(HERE, "no-such-csmutex")
        # Nothing listens at port 1: a value that got through would fail differently.
        nowhere = "127.0.0.1:1"
        for bad in (-1, 10, True, False, 2.5, "3", [1]):
            calls = [
                lambda: SidecarMutex("r", priority=bad),
                lambda: semaphore("r", "S", 2, priority=bad),
                lambda: pool("r", ["A", "B"], priority=bad),
                lambda: SidecarMutex.from_context(ctx, priority=bad),
                lambda: csmutex_sidecar.state_add("r", "k", 1, address=nowhere, priority=bad),
                lambda: csmutex_sidecar.state_allocate("r", "k", (1, 2), address=nowhere, priority=bad),
                lambda: run_command("res-1", ["true"], csmutex=missing, priority=bad),
                lambda: run_locked("res-1", lambda: None, csmutex=missing, priority=bad),
            ]
            for i, call in enumerate(calls):
                with self.assertRaises(ValueError, msg="call %d, priority %r" % (i, bad)) as cm:
                    call()
                self.assertIn("priority must be an integer from 0 to 9", str(cm.exception))

    def test_from_context_reads_the_context(self):
        m = SidecarMutex.from_context(make_context("tok-123456", reservation_id="res-9", domain="Lab"),
                                      address="127.0.0.1:1")
        self.assertEqual(m.reservation_id, "res-9")
        self.assertEqual(m._cloudshell, {"host": _mock_host, "port": _mock_port, "token": "tok-123456",
                                         "domain": "Lab"})
        self.assertTrue(m.owner.startswith("SW-1@"), m.owner)
        self.assertNotIn("tok-123456", repr(m))
        remote = SidecarMutex.from_context(make_context("t" * 8, reservation_id="res-r", remote=True),
                                           address="127.0.0.1:1", port=8029, scheme="HTTPS", owner="me")
        self.assertEqual(remote.reservation_id, "res-r")
        self.assertEqual(remote._cloudshell["port"], 8029)
        self.assertEqual(remote._cloudshell["scheme"], "https")
        self.assertEqual(remote.owner, "me")

    def test_from_context_explains_what_is_missing(self):
        ctx = make_context("tok")
        cases = [
            (None, "context is required"),
            (Obj(resource=ctx.resource), "no connectivity"),
            (Obj(connectivity=ctx.connectivity), "no reservation"),
            (Obj(connectivity=ctx.connectivity, reservation=Obj(reservation_id="", domain="G")), "reservation_id"),
            (Obj(connectivity=Obj(server_address="h"), reservation=ctx.reservation), "admin_auth_token"),
            (Obj(connectivity=Obj(admin_auth_token="t"), reservation=ctx.reservation), "server_address"),
        ]
        for context, problem in cases:
            try:
                SidecarMutex.from_context(context)
            except ValueError as e:
                self.assertIn(problem, str(e))
            else:
                self.fail("accepted a context without " + problem)


class NotObtainedFieldsTest(unittest.TestCase):
    """LockNotObtained takes the holder and the wait from csmutex's structured fields, and
    from its words when they are absent (an older sidecar or csmutex)."""

    def error_from(self, body, elapsed=0.5):
        m = SidecarMutex("res-1", name="LK", timeout=20, address="127.0.0.1:1")
        return m._error_from(409, json.dumps(body).encode("utf-8"), elapsed)

    def test_sidecar_structured_fields(self):
        e = self.error_from({"error": "mutex: timed out ... held by driver-x (token 0a1b2c3d)", "kind": "timeout",
                             "holder": "driver-x", "holder_host": "es-01", "holder_pid": 4242,
                             "holder_token": "0a1b2c3d", "held_since": "2026-11-26T07:58:02.113Z",
                             "waited": "20.001s", "waited_ms": 20001.5, "tries": 7})
        self.assertIsInstance(e, LockNotObtained)
        self.assertEqual((e.holder, e.holder_host, e.holder_pid, e.holder_token, e.held_since, e.tries),
                         ("driver-x", "es-01", 4242, "0a1b2c3d", "2026-11-26T07:58:02.113Z", 7))
        self.assertAlmostEqual(e.waited, 20.0015)
        self.assertEqual(str(e), 'lock "LK" in reservation res-1 not obtained after 20s: held by driver-x')

    def test_sidecar_without_structured_fields(self):
        e = self.error_from({"error": "mutex: timed out after 20s (7 tries) waiting for lock \"LK\" held by "
                                      "driver-x (token 0a1b2c3d)", "kind": "timeout", "holder": "driver-x",
                             "waited": "20.001s"})
        self.assertEqual((e.holder, e.holder_token, e.holder_host, e.holder_pid, e.held_since, e.tries),
                         ("driver-x", "0a1b2c3d", None, None, None, None))
        self.assertAlmostEqual(e.waited, 20.001)
        e = self.error_from({"error": "busy", "kind": "locked"}, elapsed=0.25)
        self.assertEqual((e.holder, e.waited, e.kind), (None, 0.25, "locked"))
        legacy = self.error_from({"error": "held by legacy holder \"Thread-7\"", "kind": "locked",
                                  "holder": "legacy holder \"Thread-7\"", "waited_ms": 3.5, "tries": 1})
        self.assertEqual((legacy.holder, legacy.holder_token, legacy.tries), ('legacy holder "Thread-7"', None, 1))
        # Wrongly typed fields are ignored, not trusted.
        odd = self.error_from({"error": "x", "kind": "timeout", "holder_pid": "12", "waited_ms": True, "tries": -1})
        self.assertEqual((odd.holder_pid, odd.tries, odd.waited), (None, None, 0.5))

    def test_csmutex_run_json_event(self):
        event = {"level": "error", "message": "lock not obtained", "error": "held by drv (token ab12)",
                 "holder": "drv", "holder_host": "es-02", "holder_pid": 99, "holder_token": "ab12",
                 "held_since": "2026-11-26T08:00:00.000Z", "waited_ms": 1500.5, "tries": 3}
        lines = [json.dumps({"level": "info", "message": "waiting for lock", "holder": "other"}), json.dumps(event)]
        detail, f = csmutex_sidecar._csmutex_report("\n".join(lines), [])
        self.assertEqual(detail, "lock not obtained: held by drv (token ab12)")
        self.assertEqual(f, {"holder": "drv", "holder_host": "es-02", "holder_pid": 99, "holder_token": "ab12",
                             "held_since": "2026-11-26T08:00:00.000Z", "waited": 1.5005, "tries": 3})

    def test_csmutex_run_without_structured_fields(self):
        old = json.dumps({"level": "error", "message": 'lock not obtained: gave up after 1.2s waiting for lock "X" '
                                                       'in reservation r, held by drv (token ab12)'})
        detail, f = csmutex_sidecar._csmutex_report(old, ["s3cret"])
        self.assertEqual((f["holder"], f["holder_token"], f["waited"], f["holder_host"], f["tries"]),
                         ("drv", "ab12", 1.2, None, None))
        console = "08:00:01.5 ERR lock not obtained: lock \"X\" in reservation r is held by drv (token ab12) (-n)"
        detail, f = csmutex_sidecar._csmutex_report(console, [])
        self.assertEqual((f["holder"], f["holder_token"]), ("drv", "ab12"))
        self.assertTrue(detail.startswith("lock not obtained"), detail)


# -- the sidecar ---------------------------------------------------------------------------


class SidecarMutexTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sidecar = Sidecar()

    @classmethod
    def tearDownClass(cls):
        code = cls.sidecar.stop()
        logs = cls.sidecar.logs()
        assert code == 0, "csmutex serve exited %d: %s" % (code, logs)
        assert PASSWORD not in logs, "the password appears in the sidecar's logs"

    def mutex(self, name, **kw):
        kw.setdefault("address", self.sidecar.address)
        return SidecarMutex(_reservation, name=name, **kw)

    def test_with_acquires_and_releases(self):
        with self.mutex("PY-WITH", owner="driver-with") as m:
            self.assertTrue(m.held)
            self.assertTrue(m.token)
            self.assertIsInstance(m.waited, float)
            m.check()
            self.assertEqual([(h["name"], h["owner"], h["mode"]) for h in self.sidecar.held("PY-WITH")],
                             [("PY-WITH", "driver-with", "stream")])
            time.sleep(0.35)  # a few heartbeats
            self.assertFalse(m.lost)
        self.assertFalse(m.held)
        _wait_until(lambda: not self.sidecar.held("PY-WITH"), what="the sidecar to release")
        self.assertNotIn(PASSWORD, repr(m))
        with self.assertRaises(LockLost):
            m.check()

    def test_unicode_name_round_trips(self):
        name = u"Schalter-\u00c4-\u2603"
        with self.mutex(name, owner=u"f\u00fchrer"):
            self.assertEqual([h["name"] for h in self.sidecar.held(name)], [name])
            with self.assertRaises(LockNotObtained) as cm:
                self.mutex(name, timeout=0).acquire()
            self.assertEqual(cm.exception.holder, u"f\u00fchrer")
            str(cm.exception)  # printable on Python 2 as well

    def test_threads_never_overlap(self):
        events = []
        guard = threading.Lock()
        errors = []

        def worker(i):
            try:
                for _ in range(2):
                    with self.mutex("PY-THREADS", owner="thread-%d" % i, timeout=30):
                        with guard:
                            events.append(("enter", i))
                        time.sleep(0.02)
                        with guard:
                            events.append(("exit", i))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(events), 16)
        for k in range(0, len(events), 2):
            self.assertEqual(events[k][0], "enter", events)
            self.assertEqual(events[k + 1], ("exit", events[k][1]), events)

    def test_timeout_raises_lock_not_obtained_with_fields(self):
        with self.mutex("PY-BUSY", owner="first-holder") as first:
            start = monotonic()
            with self.assertRaises(LockNotObtained) as cm:
                with self.mutex("PY-BUSY", owner="second", timeout=0.2):
                    self.fail("entered a held lock")
            elapsed = monotonic() - start
            e = cm.exception
            self.assertEqual(e.holder, "first-holder")
            self.assertTrue(re.match(r"^[0-9a-f]+$", e.holder_token or ""), e.holder_token)
            self.assertEqual(e.status, 409)
            self.assertEqual(e.kind, "timeout")
            self.assertEqual((e.name, e.reservation_id, e.timeout), ("PY-BUSY", _reservation, 0.2))
            self.assertTrue(0.15 <= e.waited < 3, e.waited)
            self.assertTrue(_CLEAN_MESSAGE.match(str(e)), str(e))
            self.assertIn("first-holder", e.detail)
            self.assertGreaterEqual(elapsed, 0.15)
            self.assertLess(elapsed, 3)
            # The holder's record, as fields: here the sidecar itself holds for "first-holder".
            self.assertEqual((e.holder_host, e.holder_pid), (socket.gethostname(), self.sidecar.proc.pid))
            self.assertTrue(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", e.held_since or ""),
                            e.held_since)
            self.assertGreaterEqual(e.tries, 1)
            with self.assertRaises(LockNotObtained) as cm:
                self.mutex("PY-BUSY", timeout=0).acquire()
            self.assertEqual(cm.exception.kind, "locked")
            self.assertEqual(cm.exception.holder, "first-holder")
            self.assertEqual((cm.exception.tries, cm.exception.holder_token), (1, e.holder_token))
            self.assertEqual(cm.exception.held_since, e.held_since)
            self.assertTrue(first.held)

    def test_sandbox_messages_reach_the_output_window(self):
        before = len(_messages())
        with self.mutex("PY-MSG", owner="msg-holder"):
            with self.assertRaises(LockNotObtained):
                self.mutex("PY-MSG", owner="msg-waiter", timeout=0.3, sandbox_messages=True).acquire()
            with self.assertRaises(LockNotObtained):
                self.mutex("PY-MSG", owner="quiet-waiter", timeout=0.3).acquire()
        new = [m for m in _messages()[before:] if '"PY-MSG"' in m]
        self.assertEqual(len(new), 1, new)  # the first try's; none from the quiet waiter
        self.assertIn("held by msg-holder", new[0])
        with self.assertRaises(SidecarError) as cm:
            self.mutex("PY-MSG", sandbox_messages=1).acquire()  # under the 5 s minimum
        self.assertEqual((cm.exception.status, cm.exception.kind), (400, "bad_request"))
        self.assertIn("sandbox_messages", str(cm.exception))

    def test_closing_releases_at_once(self):
        m = self.mutex("PY-CLOSE")
        m.acquire()
        m.release()
        start = monotonic()
        with self.mutex("PY-CLOSE", timeout=2):
            pass
        self.assertLess(monotonic() - start, 2.0)  # a lease (3 s) would take longer

    def test_killed_process_releases(self):
        script = (
            "import sys; sys.path.insert(0, %r)\n"
            "from csmutex_sidecar import SidecarMutex\n"
            "m = SidecarMutex(%r, name='PY-KILL', address=%r, owner='doomed').acquire()\n"
            "sys.stdout.write('HELD\\n'); sys.stdout.flush()\n"
            "import time; time.sleep(60)\n"
        ) % (HERE, _reservation, self.sidecar.address)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        try:
            self.assertEqual(child.stdout.readline().strip(), b"HELD")
            with self.assertRaises(LockNotObtained) as cm:
                self.mutex("PY-KILL", timeout=0).acquire()
            self.assertEqual(cm.exception.holder, "doomed")
            child.kill()
            child.wait()
            start = monotonic()
            with self.mutex("PY-KILL", timeout=2):
                pass
            self.assertLess(monotonic() - start, 2.0)  # a lease (3 s) would take longer
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()

    def test_lost_lock_is_reported(self):
        with self.mutex("PY-LOST") as m:
            self.sidecar.release_token(m.token)
            _wait_until(lambda: m.lost, what="the client to notice")
            self.assertFalse(m.held)
            with self.assertRaises(LockLost) as cm:
                m.check()
            self.assertTrue(cm.exception.reason)
            self.assertEqual(cm.exception.name, "PY-LOST")
        # Without interrupt=True, leaving the block after a loss raises nothing.

    def test_errors(self):
        with self.assertRaises(SidecarError) as cm:
            self.mutex("PY-ERR", timeout=1, lease=-1).acquire()
        self.assertEqual(cm.exception.status, 400)
        with self.assertRaises(SidecarError) as cm:
            SidecarMutex("no-such-reservation", address=self.sidecar.address, timeout=1).acquire()
        self.assertEqual(cm.exception.status, 502)
        self.assertNotIsInstance(cm.exception, LockNotObtained)
        with self.assertRaises(SidecarError) as cm:
            self.mutex("PY-ERR", timeout=1, cloudshell={"user": "driver", "password": "wrong-" + PASSWORD}).acquire()
        self.assertEqual(cm.exception.kind, "unauthorized")
        self.assertNotIn(PASSWORD, str(cm.exception))
        with self.assertRaises(SidecarError) as cm:
            SidecarMutex(_reservation, address="127.0.0.1:1", timeout=1).acquire()
        self.assertIsNone(cm.exception.status)


class ShapeArgumentTest(unittest.TestCase):
    """Shape parameters csmutex could not use are refused before anything is sent."""

    def test_bad_shape_arguments(self):
        r = "res-1"
        cases = [
            (lambda: SidecarMutex(r, shape="mutex"), ValueError, "shape must be one of"),
            (lambda: SidecarMutex(r, shape="semaphore", name="S"), TypeError, "needs slots"),
            (lambda: semaphore(r, "S", 0), ValueError, "slots must be between 1 and 9999"),
            (lambda: semaphore(r, "S", True), TypeError, "slots must be an integer"),
            (lambda: semaphore(r, "S", 2.5), TypeError, "slots must be an integer"),
            (lambda: SidecarMutex(r, slots=2), TypeError, "slots applies only to shape 'semaphore'"),
            (lambda: shared(r, "T", readers=0), ValueError, "readers must be between"),
            (lambda: lock_set(r, "SW-1"), TypeError, "names must be a list"),
            (lambda: lock_set(r, []), ValueError, "names must not be empty"),
            (lambda: lock_set(r, ["A", "B.break.x"]), ValueError, "names[1]"),
            (lambda: lock_set(r, ["A"], levels={"dev": ["A"]}), TypeError, "(level, [names]) pairs"),
            (lambda: lock_set(r, ["A"], inside="tok"), TypeError, "inside needs levels"),
            (lambda: pool(r, ["A", "B"], count=3), ValueError, "count must be between 1 and 2"),
            (lambda: pool(r, ["A", "A"]), ValueError, "twice"),
            (lambda: SidecarMutex(r, shape="pool", members=["A"], slots=1), TypeError, "slots applies only"),
            (lambda: csmutex_sidecar.state_add(r, "a b", 1), ValueError, "key must be 1 to 64"),
            (lambda: csmutex_sidecar.state_add(r, "k", 1.5), TypeError, "delta must be an integer"),
            (lambda: csmutex_sidecar.state_add(r, "k", 1, timeout=0), ValueError, "timeout must be positive"),
            (lambda: csmutex_sidecar.state_allocate(r, "k", "x-y"), ValueError, "value_range"),
            (lambda: csmutex_sidecar.state_allocate(r, "k", (5, 1)), ValueError, "ascending"),
        ]
        for call, exc, text in cases:
            with self.assertRaises(exc) as cm:
                call()
            self.assertIn(text, str(cm.exception))

    def test_shape_request_fields(self):
        m = lock_set("res-1", ["SW-2", "SW-1", "SW-2"])
        self.assertEqual(m.name, "SW-1,SW-2")
        self.assertEqual(m.shape, "set")
        self.assertEqual(exclusive("res-1", "T")._shape_fields, {"shape": "exclusive", "readers": 16})
        self.assertEqual(SidecarMutex("res-1")._shape_fields, {})  # the plain lock, as before
        self.assertEqual(pool("res-1", ["A", "B"])._shape_fields, {"shape": "pool", "members": ["A", "B"], "count": 1})
        m = SidecarMutex.from_context(make_context("tok", reservation_id="res-2"), shape="semaphore", name="SW", slots=2)
        self.assertEqual((m.reservation_id, m.name, m._shape_fields), ("res-2", "SW", {"shape": "semaphore", "slots": 2}))


class ShapesTest(unittest.TestCase):
    """Each shape through a real sidecar: what was obtained, and who is kept out. Waits are
    single tries (timeout=0): the shapes' own polling is csmutex's 2-5 s."""

    @classmethod
    def setUpClass(cls):
        cls.sidecar = Sidecar()

    @classmethod
    def tearDownClass(cls):
        code = cls.sidecar.stop()
        logs = cls.sidecar.logs()
        assert code == 0, "csmutex serve exited %d: %s" % (code, logs)
        assert PASSWORD not in logs, "the password appears in the sidecar's logs"

    def kw(self, **kw):
        kw.setdefault("address", self.sidecar.address)
        kw.setdefault("timeout", 0)
        return kw

    def test_semaphore(self):
        with semaphore(_reservation, "PY-SEM", 2, owner="a", **self.kw()) as a:
            with semaphore(_reservation, "PY-SEM", 2, owner="b", **self.kw()) as b:
                self.assertEqual(sorted([a.slot, b.slot]), [1, 2])
                self.assertEqual((a.shape, a.access, a.obtained["slots"]), ("semaphore", "exclusive", 2))
                self.assertEqual(a.aliases, ["PY-SEM.slot.%d" % a.slot])
                with self.assertRaises(LockNotObtained) as cm:
                    semaphore(_reservation, "PY-SEM", 2, owner="c", **self.kw()).acquire()
                e = cm.exception
                self.assertEqual((e.status, e.kind, e.name), (409, "locked", "PY-SEM"))
                self.assertEqual(len(e.holders), 2, e.holders)
                self.assertIn(e.holder, ("a", "b"))
            # b's slot is released as its connection closes: c may have to wait for it.
            with semaphore(_reservation, "PY-SEM", 2, owner="c", **self.kw(timeout=30)) as c:
                self.assertEqual(c.slot, 3 - a.slot)
        _wait_until(lambda: not _services("PY-SEM"), what="the slots to be released")

    def test_shared_and_exclusive(self):
        with shared(_reservation, "PY-TOPO", **self.kw(owner="r1")) as r1:
            with shared(_reservation, "PY-TOPO", **self.kw(owner="r2")) as r2:
                self.assertEqual((r1.access, r2.access), ("shared", "shared"))
                self.assertEqual(sorted([r1.slot, r2.slot]), [1, 2])
                with self.assertRaises(LockNotObtained):
                    exclusive(_reservation, "PY-TOPO", **self.kw(owner="w")).acquire()
        with exclusive(_reservation, "PY-TOPO", **self.kw(owner="w", timeout=30)) as w:
            # The plain lock first; then any reader slot it waited for (readers just leaving).
            self.assertEqual((w.shape, w.access, w.aliases[0]), ("exclusive", "exclusive", "PY-TOPO"))
            # The writer holds the plain lock: a legacy driver taking "PY-TOPO" is kept out,
            # and so is a reader.
            with self.assertRaises(LockNotObtained) as cm:
                SidecarMutex(_reservation, name="PY-TOPO", **self.kw(owner="legacy")).acquire()
            self.assertEqual(cm.exception.holder, "w")
            with self.assertRaises(LockNotObtained):
                shared(_reservation, "PY-TOPO", **self.kw(owner="r3")).acquire()

    def test_lock_set(self):
        with SidecarMutex(_reservation, name="PY-SW-2", **self.kw(owner="holder")):
            with self.assertRaises(LockNotObtained):
                lock_set(_reservation, ["PY-SW-3", "PY-SW-2", "PY-SW-1"], **self.kw(owner="s")).acquire()
            # All or nothing: the names taken before the busy one were given back.
            self.assertEqual(_services("PY-SW-"), ["PY-SW-2"])
        with lock_set(_reservation, ["PY-SW-2", "PY-SW-1"], **self.kw(owner="s", timeout=30)) as s:
            self.assertEqual(s.names, ["PY-SW-1", "PY-SW-2"])
            self.assertEqual(_services("PY-SW-"), ["PY-SW-1", "PY-SW-2"])

    def test_lock_set_levels(self):
        levels = [("device", ["PY-D-1", "PY-D-2"]), ("port", ["PY-P-1"])]
        with lock_set(_reservation, ["PY-D-1"], levels=levels, **self.kw()) as outer:
            with lock_set(_reservation, ["PY-P-1"], levels=levels, inside=outer, **self.kw()) as inner:
                self.assertEqual(inner.names, ["PY-P-1"])
                with self.assertRaises(SidecarError) as cm:
                    lock_set(_reservation, ["PY-D-2"], levels=levels, inside=inner, **self.kw()).acquire()
                self.assertEqual((cm.exception.status, cm.exception.kind), (400, "bad_request"))
                self.assertIn("level", str(cm.exception))
        with self.assertRaises(SidecarError) as cm:
            semaphore(_reservation, "PY-SEM.read.1", 2, **self.kw()).acquire()
        self.assertEqual((cm.exception.status, cm.exception.kind), (400, "bad_request"))
        with self.assertRaises(SidecarError) as cm:
            lock_set(_reservation, ["PY-A", "PY-B"], levels=[("dev", ["PY-A"])], **self.kw()).acquire()
        self.assertEqual((cm.exception.status, cm.exception.field), (400, "levels"))
        self.assertIn('"PY-B" is at no level', str(cm.exception))

    def test_pool(self):
        members = ["PY-TG-1", "PY-TG-2", "PY-TG-3"]
        with pool(_reservation, members, count=2, **self.kw(owner="p1")) as p1:
            self.assertEqual(len(p1.members), 2)
            self.assertEqual(len(set(p1.members)), 2)
            with self.assertRaises(LockNotObtained):
                pool(_reservation, members, count=2, **self.kw(owner="p2")).acquire()
            with pool(_reservation, members, **self.kw(owner="p3")) as p3:
                self.assertEqual(p3.members, [m for m in members if m not in p1.members])

    def test_state_add_and_allocate(self):
        kw = dict(address=self.sidecar.address, timeout=60)
        key = _unique("runs").replace("-", "_")
        self.assertEqual(csmutex_sidecar.state_add(_reservation, key, 5, **kw), 5)
        self.assertEqual(csmutex_sidecar.state_add(_reservation, key, -2, **kw), 3)
        got, errors = [], []

        def add():
            try:
                got.append(csmutex_sidecar.state_add(_reservation, key, 1, **kw))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=add) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(sorted(got), [4, 5])
        vlan = _unique("vlan")
        values = [csmutex_sidecar.state_allocate(_reservation, vlan, (10, 12), **kw) for _ in range(3)]
        self.assertEqual(values, [10, 11, 12])
        with self.assertRaises(SidecarError) as cm:
            csmutex_sidecar.state_allocate(_reservation, vlan, "10-12", **kw)
        self.assertEqual((cm.exception.status, cm.exception.kind), (409, "exhausted"))
        self.assertNotIsInstance(cm.exception, LockNotObtained)
        with SidecarMutex(_reservation, name="PY-STATE", **self.kw(owner="holder")):
            with self.assertRaises(LockNotObtained) as cm:
                csmutex_sidecar.state_add(_reservation, key, 1, name="PY-STATE", address=self.sidecar.address,
                                          timeout=0.5)
            self.assertEqual(cm.exception.holder, "holder")


class PriorityTest(unittest.TestCase):
    """Priorities through a real sidecar: a priority-9 waiter that comes last goes ahead of
    the priority-0 waiters before it, though not of the one next in line."""

    @classmethod
    def setUpClass(cls):
        cls.sidecar = Sidecar()

    @classmethod
    def tearDownClass(cls):
        code = cls.sidecar.stop()
        logs = cls.sidecar.logs()
        assert code == 0, "csmutex serve exited %d: %s" % (code, logs)

    def waiting(self, owner):
        """owner has tried at least twice: it found the lock held, so it is in the room."""
        return any(w["owner"] == owner and w.get("tries", 0) >= 2 for w in self.sidecar.locks()["waiting"])

    def test_urgent_waiter_goes_first(self):
        name = _unique("PY-PRIO")
        order, errors = [], []

        def wait(owner, priority):
            try:
                with SidecarMutex(_reservation, name=name, owner=owner, timeout=60, priority=priority,
                                  address=self.sidecar.address):
                    order.append(owner)
                    time.sleep(0.05)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        holder = SidecarMutex(_reservation, name=name, owner="holder", timeout=0, address=self.sidecar.address)
        holder.acquire()
        threads = []
        try:
            for owner, priority in (("next", 0), ("low-1", 0), ("low-2", None), ("urgent", 9)):
                t = threading.Thread(target=wait, args=(owner, priority))
                t.start()
                threads.append(t)
                # Generous: the waiter polls every few milliseconds (CSMUTEX_TEST_JITTER).
                _wait_until(lambda: self.waiting(owner), timeout=20, what=owner + " to queue")
        finally:
            holder.release()
            for t in threads:
                t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(order, ["next", "urgent", "low-1", "low-2"])

    def test_priority_reaches_every_shape_and_state(self):
        kw = dict(address=self.sidecar.address, timeout=0, priority=9)
        with semaphore(_reservation, _unique("PY-PS"), 2, **kw) as s:
            self.assertEqual(s.slot, 1)
        with lock_set(_reservation, [_unique("PY-PA"), _unique("PY-PB")], **kw) as s:
            self.assertEqual(len(s.names), 2)
        key = _unique("prio").replace("-", "_")
        self.assertEqual(csmutex_sidecar.state_add(_reservation, key, 2, address=self.sidecar.address, timeout=30,
                                                   priority=9), 2)
        # The sidecar checks it too, and names the field: a client that skips the check.
        body = {"reservation_id": _reservation, "priority": 10, "mode": "token"}
        try:
            _http(self.sidecar.address, "/v1/acquire", body)
            self.fail("priority 10 accepted")
        except HTTPError as e:
            answer = json.loads(e.read().decode("utf-8"))
            self.assertEqual((e.code, answer.get("field")), (400, "priority"), answer)
            self.assertIn("between 0 and 9", answer["error"])


class FromContextTest(unittest.TestCase):
    """A driver's context is enough: the sidecar knows no CloudShell and no credentials of
    its own, and logs on with the context's admin token."""

    @classmethod
    def setUpClass(cls):
        cls.sidecar = Sidecar(env=_no_cs_env())
        cls.token = _admin_token()

    @classmethod
    def tearDownClass(cls):
        cls.sidecar.stop()
        assert cls.token not in cls.sidecar.logs(), "the admin token appears in the sidecar's logs"

    def test_sidecar_mutex_from_context(self):
        ctx = make_context(self.token)
        with SidecarMutex.from_context(ctx, name="PY-CTX", address=self.sidecar.address) as m:
            self.assertTrue(m.held)
            held = self.sidecar.held("PY-CTX")
            self.assertEqual(len(held), 1)
            self.assertTrue(held[0]["owner"].startswith("SW-1@"), held[0])
            with self.assertRaises(LockNotObtained) as cm:
                SidecarMutex.from_context(make_context(self.token, remote=True), name="PY-CTX",
                                          address=self.sidecar.address, timeout=0).acquire()
            self.assertEqual(cm.exception.holder, m.owner)

    def test_bad_token_is_refused_without_showing_it(self):
        bad = "not-a-valid-admin-token-1234"
        with self.assertRaises(SidecarError) as cm:
            SidecarMutex.from_context(make_context(bad), name="PY-CTX-BAD", address=self.sidecar.address,
                                      timeout=1).acquire()
        self.assertEqual(cm.exception.kind, "unauthorized")
        self.assertNotIn(bad, str(cm.exception))

    def test_run_locked_from_context(self):
        if not _csmutex_run_ready():
            self.skipTest("`csmutex run` is not available in this build")
        ctx = make_context(self.token)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(_no_cs_env())  # only the context can tell csmutex where and how
        try:
            def critical(x):
                with self.assertRaises(LockNotObtained) as cm:
                    SidecarMutex.from_context(ctx, name="PY-CTX-RUN", address=self.sidecar.address,
                                              timeout=0).acquire()
                self.assertTrue(cm.exception.holder.startswith("SW-1@"), cm.exception.holder)
                return x * 2

            self.assertEqual(run_locked_from_context(ctx, critical, 21, name="PY-CTX-RUN", csmutex=_bins["csmutex"]),
                             42)
            code = run_command_from_context(
                ctx, [sys.executable, "-c", "import os, sys; sys.exit(int(os.environ['CSMUTEX_LOCK_HELD']) + 6)"],
                name="PY-CTX-RUN", csmutex=_bins["csmutex"], stderr=DEVNULL)
            self.assertEqual(code, 7)
            with self.assertRaises(SidecarError) as cm:
                run_locked_from_context(make_context("bad-token-5678"), critical, 1, name="PY-CTX-RUN",
                                        csmutex=_bins["csmutex"])
            self.assertEqual((cm.exception.exit_code, cm.exception.kind), (77, "unauthorized"))
            self.assertNotIn("bad-token-5678", str(cm.exception))
            self.assertIn("admin token", str(cm.exception))
            self.assertFalse(re.search(r"\d\d:\d\d:\d\d", str(cm.exception)), str(cm.exception))
        finally:
            os.environ.clear()
            os.environ.update(saved)


class InterruptTest(unittest.TestCase):
    """interrupt=True: a lost lock interrupts the thread that holds it."""

    @classmethod
    def setUpClass(cls):
        cls.sidecar = Sidecar()

    @classmethod
    def tearDownClass(cls):
        cls.sidecar.stop()

    def main_thread_child(self, name, sigint):
        """A child process that takes the lock in its main thread, as a driver does, with
        SIGINT's handler set up as sigint says; returns what it printed."""
        script = (
            "import signal, sys, time; sys.path.insert(0, %r)\n"
            "from csmutex_sidecar import SidecarMutex, LockLost\n"
            "def custom(signum, frame):\n"
            "    sys.stdout.write('CUSTOM HANDLER RAN\\n')\n"
            "signal.signal(signal.SIGINT, %s)\n"
            "try:\n"
            "    with SidecarMutex(%r, name=%r, address=%r, interrupt=True) as m:\n"
            "        sys.stdout.write('HELD %%s\\n' %% m.token); sys.stdout.flush()\n"
            "        deadline = time.time() + 20\n"
            "        while time.time() < deadline:\n"
            "            time.sleep(0.01)\n"
            "    sys.stdout.write('NOT INTERRUPTED\\n')\n"
            "except LockLost as e:\n"
            "    sys.stdout.write('LOST %%s %%s\\n' %% (type(e.__cause__).__name__, e.reason))\n"
            "time.sleep(0.1)  # no stray KeyboardInterrupt may arrive after the block\n"
            "sys.stdout.write('DONE\\n')\n"
        ) % (HERE, sigint, _reservation, name, self.sidecar.address)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        try:
            line = child.stdout.readline().decode()
            self.assertTrue(line.startswith("HELD "), line)
            start = monotonic()
            self.sidecar.release_token(line.split()[1])
            out = child.stdout.read().decode()
            self.assertEqual(_wait_proc(child, 10), 0, out)
            self.assertLess(monotonic() - start, 5, out)
            return out
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()

    def test_main_thread_is_interrupted(self):
        for sigint in ("signal.default_int_handler", "signal.SIG_IGN", "custom"):
            out = self.main_thread_child("PY-INT-MAIN", sigint)
            self.assertIn("LOST KeyboardInterrupt released", out, sigint)
            self.assertIn("DONE", out, sigint)
            # A driver host's own SIGINT handler is never run by the helper.
            self.assertNotIn("CUSTOM HANDLER RAN", out, sigint)

    def test_worker_thread_is_interrupted(self):
        got = {}
        held = threading.Event()

        def worker():
            try:
                with SidecarMutex(_reservation, name="PY-INT-THREAD", address=self.sidecar.address,
                                  interrupt=True) as m:
                    got["token"] = m.token
                    held.set()
                    deadline = monotonic() + 20
                    while monotonic() < deadline:
                        time.sleep(0.01)
                got["result"] = "not interrupted"
            except LockLost as e:
                got["result"] = e
            except BaseException as e:  # noqa: BLE001
                got["result"] = e
            got["after"] = monotonic()

        t = threading.Thread(target=worker)
        t.start()
        self.assertTrue(held.wait(10))
        start = monotonic()
        self.sidecar.release_token(got["token"])
        t.join(10)
        self.assertFalse(t.is_alive())
        self.assertIsInstance(got["result"], LockLost)
        self.assertLess(got["after"] - start, 3)

    def test_no_interrupt_when_released_normally(self):
        def worker(out):
            try:
                for _ in range(3):
                    with SidecarMutex(_reservation, name="PY-INT-OK", address=self.sidecar.address, interrupt=True):
                        time.sleep(0.05)
                time.sleep(0.2)
                out.append("ok")
            except BaseException as e:  # noqa: BLE001
                out.append(e)

        out = []
        t = threading.Thread(target=worker, args=(out,))
        t.start()
        t.join(10)
        self.assertEqual(out, ["ok"])

    def test_run_locked_interrupts_func(self):
        if not _csmutex_run_ready():
            self.skipTest("`csmutex run` is not available in this build")
        got = {}
        started = threading.Event()

        def long_edit():
            started.set()
            deadline = monotonic() + 20
            while monotonic() < deadline:
                time.sleep(0.01)
            return "finished"

        def worker():
            try:
                got["result"] = run_locked(_reservation, long_edit, name="PY-INT-RUN", interrupt=True,
                                           csmutex=_bins["csmutex"], env=_cs_env(),
                                           csmutex_args=["--lease", "1s", "--kill-grace", "50ms"])
            except BaseException as e:  # noqa: BLE001
                got["result"] = e

        t = threading.Thread(target=worker)
        t.start()
        self.assertTrue(started.wait(20), got)
        start = monotonic()
        subprocess.check_call([_bins["csmutex"], "release", "-r", _reservation, "--name", "PY-INT-RUN", "--force", "-q"],
                              env=_cs_env(), stdout=DEVNULL)
        t.join(15)
        self.assertFalse(t.is_alive())
        self.assertIsInstance(got["result"], LockLost)
        self.assertEqual(got["result"].exit_code, 70)
        self.assertLess(monotonic() - start, 5)


def _serve_has(flag):
    p = subprocess.Popen([_bins["csmutex"], "serve", "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.communicate()[0].decode("utf-8", "replace")
    return flag in out


class AuthTokenFileTest(unittest.TestCase):
    def test_bearer_token_from_the_sidecars_file(self):
        if not _serve_has("--auth-token-file"):
            self.skipTest("this csmutex serve has no --auth-token-file")
        path = os.path.join(_tmp, _unique("auth") + ".token")
        sidecar = Sidecar(extra=["--auth-token-file", path])
        try:
            with self.assertRaises(SidecarError) as cm:
                SidecarMutex(_reservation, name="PY-AUTH", address=sidecar.address, timeout=0).acquire()
            self.assertEqual(cm.exception.status, 401)
            with SidecarMutex(_reservation, name="PY-AUTH", address=sidecar.address, timeout=1,
                              auth_token_file=path) as m:
                self.assertTrue(m.held)
            os.environ["CSMUTEX_SIDECAR_TOKEN_FILE"] = path
            try:
                with SidecarMutex(_reservation, name="PY-AUTH", address=sidecar.address, timeout=1):
                    pass
            finally:
                del os.environ["CSMUTEX_SIDECAR_TOKEN_FILE"]
            with open(path) as f:
                token = f.read().strip()
            with self.assertRaises(SidecarError) as cm:
                SidecarMutex(_reservation, address=sidecar.address, auth_token_file=path + ".missing").acquire()
            self.assertEqual(cm.exception.kind, "unauthenticated")
        finally:
            sidecar.stop()
        self.assertNotIn(token, sidecar.logs())


class SidecarLifecycleTest(unittest.TestCase):
    @unittest.skipUnless(hasattr(socket, "AF_UNIX"), "no unix sockets")
    def test_unix_socket_and_shutdown_reports_lost(self):
        path = os.path.join(_tmp, "sidecar.sock")
        sidecar = Sidecar(listen="unix:" + path)
        try:
            self.assertEqual(sidecar.address, "unix:" + path)
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
            m = SidecarMutex(_reservation, name="PY-UNIX", address=sidecar.address).acquire()
            self.assertTrue(m.held)
            self.assertEqual(sidecar.stop(), 0)  # SIGTERM: releases every lock, then exits
            _wait_until(lambda: m.lost, what="the client to notice")
            self.assertIn("shutting down", m.lost_reason)
            with self.assertRaises(LockLost):
                m.check()
            m.release()
            self.assertFalse(os.path.exists(path))
        finally:
            sidecar.stop()
        # The lock really was released in CloudShell: another sidecar takes it at once.
        other = Sidecar()
        try:
            with SidecarMutex(_reservation, name="PY-UNIX", address=other.address, timeout=0):
                pass
        finally:
            other.stop()
        self.assertNotIn(PASSWORD, sidecar.logs())


_run_ready = []


def _csmutex_run_ready():
    """csmutex run exists and accepts our flags (it may be work in progress)."""
    if not _run_ready:
        try:
            p = subprocess.Popen([_bins["csmutex"], "run", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = p.communicate()
            text = (out + err).decode("utf-8", "replace")
            _run_ready.append(p.returncode == 0 and "--timeout" in text and "--name" in text
                              and "--log-format" in text)
        except OSError:
            _run_ready.append(False)
    return _run_ready[0]


def _run_has(flag):
    p = subprocess.Popen([_bins["csmutex"], "run", "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.communicate()[0].decode("utf-8", "replace")
    return flag in out


class RunLockedTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not _csmutex_run_ready():
            raise unittest.SkipTest("`csmutex run` is not available in this build")
        cls.sidecar = Sidecar()

    @classmethod
    def tearDownClass(cls):
        cls.sidecar.stop()

    def kw(self, **kw):
        kw.setdefault("csmutex", _bins["csmutex"])
        kw.setdefault("env", _cs_env())
        return kw

    def test_runs_callable_under_lock_and_returns_value(self):
        def critical(a, b, scale=1):
            # While csmutex run holds the lock, nobody else gets it.
            with self.assertRaises(LockNotObtained):
                SidecarMutex(_reservation, name="PY-RUN", address=self.sidecar.address, timeout=0).acquire()
            return (a + b) * scale

        self.assertEqual(run_locked(_reservation, critical, 2, 3, name="PY-RUN", scale=10, **self.kw()), 50)
        # Released afterwards.
        with SidecarMutex(_reservation, name="PY-RUN", address=self.sidecar.address, timeout=2):
            pass

    def test_propagates_exception_and_releases(self):
        def boom():
            raise KeyError("inside")

        with self.assertRaises(KeyError):
            run_locked(_reservation, boom, name="PY-RUN-EXC", **self.kw())
        with SidecarMutex(_reservation, name="PY-RUN-EXC", address=self.sidecar.address, timeout=2):
            pass

    def test_not_obtained_is_clean_and_structured(self):
        with SidecarMutex(_reservation, name="PY-RUN-BUSY", address=self.sidecar.address, owner="sidecar-holder"):
            called = []
            for timeout in (0.3, 0):
                with self.assertRaises(LockNotObtained) as cm:
                    run_locked(_reservation, called.append, 1, name="PY-RUN-BUSY", timeout=timeout, **self.kw())
                e = cm.exception
                self.assertEqual(called, [])
                self.assertEqual(e.holder, "sidecar-holder")
                self.assertTrue(re.match(r"^[0-9a-f]+$", e.holder_token or ""), e.holder_token)
                self.assertEqual((e.name, e.reservation_id, e.timeout, e.exit_code), ("PY-RUN-BUSY", _reservation,
                                                                                       timeout, 75))
                self.assertIsInstance(e.waited, float)
                if timeout:
                    self.assertTrue(0.2 <= e.waited < 3, e.waited)
                self.assertTrue(_CLEAN_MESSAGE.match(str(e)), str(e))
                self.assertNotIn("ERR", str(e))
                self.assertNotIn(PASSWORD, str(e))
                self.assertIn("sidecar-holder", e.detail)

    def test_not_obtained_carries_the_holders_record(self):
        with SidecarMutex(_reservation, name="PY-RUN-FIELDS", address=self.sidecar.address, owner="rec-holder"):
            with self.assertRaises(LockNotObtained) as cm:
                run_locked(_reservation, lambda: None, name="PY-RUN-FIELDS", timeout=0.3, **self.kw())
        e = cm.exception
        if e.holder_host is None:
            self.skipTest("this csmutex run's \"lock not obtained\" event has no holder_host field yet "
                          "(the fallback to its text is tested above)")
        self.assertEqual((e.holder, e.holder_host, e.holder_pid), ("rec-holder", socket.gethostname(),
                                                                   self.sidecar.proc.pid))
        self.assertTrue(e.held_since and e.tries >= 1 and 0.2 <= e.waited < 3, (e.held_since, e.tries, e.waited))

    def test_sandbox_messages_and_poll_interval_flags(self):
        missing = [f for f in ("--sandbox-messages", "--poll-interval") if not _run_has(f)]
        if missing:
            self.skipTest("this csmutex run has no %s yet (see `csmutex run --help`)" % " or ".join(missing))
        before = len(_messages())
        with SidecarMutex(_reservation, name="PY-RUN-MSG", address=self.sidecar.address, owner="run-holder"):
            code = run_command(_reservation, [sys.executable, "-c", "pass"], name="PY-RUN-MSG", timeout=0.3,
                               sandbox_messages=True, poll_interval=(0.5, 1), stderr=DEVNULL, **self.kw())
        self.assertEqual(code, 75)
        new = [m for m in _messages()[before:] if '"PY-RUN-MSG"' in m]
        self.assertTrue(new and "held by run-holder" in new[0], new)
        code = run_command(_reservation, [sys.executable, "-c", "pass"], name="PY-RUN-MSG", timeout=5,
                           sandbox_messages="30s", poll_interval="1s-2s", stderr=DEVNULL, **self.kw())
        self.assertEqual(code, 0)

    def test_console_logs_are_parsed_too(self):
        with SidecarMutex(_reservation, name="PY-RUN-CONSOLE", address=self.sidecar.address, owner="console-holder"):
            with self.assertRaises(LockNotObtained) as cm:
                run_locked(_reservation, lambda: None, name="PY-RUN-CONSOLE", timeout=0.2,
                           csmutex_args=["--log-format", "console"], **self.kw())
        self.assertEqual(cm.exception.holder, "console-holder")
        self.assertTrue(_CLEAN_MESSAGE.match(str(cm.exception)), str(cm.exception))
        self.assertFalse(re.match(r"\d\d:", cm.exception.detail), cm.exception.detail)

    def test_other_failures(self):
        with self.assertRaises(SidecarError) as cm:
            run_locked("no-such-reservation", lambda: None, name="PY-RUN-ERR", **self.kw())
        e = cm.exception
        self.assertNotIsInstance(e, LockNotObtained)
        self.assertEqual((e.exit_code, e.kind), (65, "permanent"))
        self.assertIn("not found", str(e))
        self.assertFalse(re.search(r"\d\d:\d\d:\d\d", str(e)), str(e))
        with self.assertRaises(SidecarError) as cm:
            run_locked(_reservation, lambda: None, csmutex=os.path.join(_tmp, "missing"), env=_cs_env())
        self.assertEqual(cm.exception.kind, "usage")

    def test_run_command_returns_exit_code(self):
        code = run_command(_reservation, [sys.executable, "-c", "import sys; sys.exit(3)"], name="PY-CMD",
                           stderr=DEVNULL, **self.kw())
        self.assertEqual(code, 3)
        with SidecarMutex(_reservation, name="PY-CMD", address=self.sidecar.address, owner="holder"):
            code = run_command(_reservation, [sys.executable, "-c", "pass"], name="PY-CMD", timeout=0.2,
                               stderr=DEVNULL, **self.kw())
            self.assertEqual(code, 75)


# -- the example driver -------------------------------------------------------------------


class FakeReservationAPI(object):
    """The two Automation API calls example_driver makes, on an in-memory reservation.

    Each call records whether the reservation's MUTEX lock was held at the time (probed
    with a one-shot acquire through the probe sidecar). GetReservationDetails waits
    ``delay`` after reading, to widen the window in which unlocked drivers interleave.
    """

    def __init__(self, probe=None, delay=0.0):
        self.connectors = {}
        self.calls = []
        self._probe = probe
        self._delay = delay
        self._mu = threading.Lock()

    def _held(self):
        if self._probe is None:
            return None
        try:
            self._probe().acquire().release()
        except LockNotObtained:
            return True
        return False

    def GetReservationDetails(self, reservationId, disableCache=False):  # noqa: N802,N803
        self.calls.append(("GetReservationDetails", self._held()))
        with self._mu:
            connectors = [Obj(Source=s, Target=t, Direction="bi", Alias="") for s, t in self.connectors]
        time.sleep(self._delay)
        return Obj(ReservationDescription=Obj(Id=reservationId, Connectors=connectors))

    def SetConnectorsInReservation(self, reservationId, connectors):  # noqa: N802,N803
        self.calls.append(("SetConnectorsInReservation", self._held()))
        with self._mu:
            for c in connectors:
                self.connectors[(c.SourceResourceFullName, c.TargetResourceFullName)] = c.Direction


class ExampleDriverTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sidecar = Sidecar(env=_no_cs_env())
        cls.token = _admin_token()

    @classmethod
    def tearDownClass(cls):
        cls.sidecar.stop()

    def test_connect_ports_serialises_read_modify_write(self):
        import example_driver

        ctx0 = make_context(self.token)
        api = FakeReservationAPI(delay=0.05, probe=lambda: SidecarMutex.from_context(
            ctx0, address=self.sidecar.address, timeout=0, owner="probe"))
        # Two commands of two drivers race for the same port: exactly one may connect it.
        results, errors = [], []

        def command(port):
            driver = example_driver.ConnectPortsDriver(sidecar_address=self.sidecar.address,
                                                       api_factory=lambda context: api)
            ctx = make_context(self.token, resource_name="SW-%s" % port)
            try:
                results.append(driver.connect_ports(ctx, "SW-1/Port 1", "SW-%s/Port 1" % port))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=command, args=(p,)) for p in (2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(len(results) + len(errors), 2, (results, errors))
        self.assertEqual(len(api.connectors), 1, api.connectors)
        self.assertEqual(len(results), 1, (results, errors))
        self.assertIn("connected", results[0])
        self.assertEqual(len(errors), 1)
        self.assertIn("already connected", str(errors[0]))
        # Every read and write happened under the held lock.
        self.assertEqual(len(api.calls), 3, api.calls)
        self.assertTrue(all(held for _, held in api.calls), api.calls)

    def test_busy_reservation_gives_a_clear_message(self):
        import example_driver

        api = FakeReservationAPI()
        driver = example_driver.ConnectPortsDriver(sidecar_address=self.sidecar.address,
                                                   api_factory=lambda context: api, timeout=0.2)
        ctx = make_context(self.token)
        with SidecarMutex.from_context(ctx, address=self.sidecar.address, owner="another-driver"):
            with self.assertRaises(Exception) as cm:
                driver.connect_ports(ctx, "SW-1/Port 2", "SW-2/Port 2")
        self.assertIn("another-driver", str(cm.exception))
        self.assertEqual(api.connectors, {})

    def test_without_sidecar(self):
        if not _csmutex_run_ready():
            self.skipTest("`csmutex run` is not available in this build")
        import example_driver

        ctx = make_context(self.token)
        api = FakeReservationAPI(probe=lambda: SidecarMutex.from_context(
            ctx, address=self.sidecar.address, timeout=0, owner="probe"))
        driver = example_driver.ConnectPortsDriver(api_factory=lambda context: api, csmutex=_bins["csmutex"])
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(_no_cs_env())
        try:
            out = driver.connect_ports_without_sidecar(ctx, "SW-1/Port 4", "SW-2/Port 4")
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.assertIn("connected", out)
        self.assertEqual(list(api.connectors), [("SW-1/Port 4", "SW-2/Port 4")])
        self.assertEqual([held for _, held in api.calls], [True, True])


# -- packaging ------------------------------------------------------------------------------


def _has_module(name):
    """Whether this interpreter can import name (without importing it: setuptools is slow)."""
    try:
        import importlib.util
        return importlib.util.find_spec(name) is not None
    except ImportError:  # Python 2
        import imp
        try:
            imp.find_module(name)
            return True
        except ImportError:
            return False


def _can_import(python, modules):
    if python == sys.executable:
        return all(_has_module(m) for m in modules)
    try:
        return subprocess.call([python, "-c", "import " + ", ".join(modules)], stdout=DEVNULL,
                               stderr=subprocess.STDOUT) == 0
    except OSError:
        return False


class PackagingTest(unittest.TestCase):
    """`pip install ./examples/python` works: a wheel builds offline and installs with this
    interpreter's pip."""

    def test_setup_py_compiles_and_names_the_module(self):
        # The Go wrapper builds the wheel once; here setup.py must at least be valid
        # Python for every interpreter whose pip may run it.
        with open(os.path.join(HERE, "setup.py")) as f:
            setup_py = f.read()
        compile(setup_py, "setup.py", "exec")
        self.assertIn('py_modules=["csmutex_sidecar"]', setup_py)
        with open(os.path.join(HERE, "pyproject.toml")) as f:
            pyproject = f.read()
        self.assertIn("[build-system]", pyproject)
        # A build-backend line would make Python 2.7's pip refuse --no-use-pep517, the only
        # way to install offline there without the wheel package.
        self.assertFalse(re.search(r"^\s*build-backend\s*=", pyproject, re.M), pyproject)

    def _wheel(self, work):
        wheel = os.environ.get("CSMUTEX_WHEEL")
        if wheel == "skip":
            self.skipTest("CSMUTEX_WHEEL=skip: the Go test installs the wheel under the oldest and the newest "
                          "interpreter only (pip is slow to start; the CPU budget is small)")
        if wheel:
            return wheel
        builder = os.environ.get("CSMUTEX_BUILD_PYTHON") or sys.executable
        if not _can_import(builder, ["setuptools", "wheel", "pip"]):
            self.skipTest("cannot build a wheel offline: setuptools, wheel or pip is missing for %s "
                          "(set CSMUTEX_BUILD_PYTHON to an interpreter that has them)" % builder)
        src = os.path.join(work, "src")
        os.mkdir(src)
        for f in ("setup.py", "pyproject.toml", "csmutex_sidecar.py", "README.md"):
            shutil.copy(os.path.join(HERE, f), src)
        out = os.path.join(work, "dist")
        subprocess.check_call([builder, "-m", "pip", "wheel", "--no-build-isolation", "--no-index", "--no-deps",
                               "-q", "-w", out, src], stdout=DEVNULL)
        wheels = [f for f in os.listdir(out) if f.endswith(".whl")]
        self.assertEqual(len(wheels), 1, wheels)
        return os.path.join(out, wheels[0])

    def test_wheel_builds_and_installs(self):
        if not _can_import(sys.executable, ["pip"]):
            self.skipTest("pip is not installed for %s" % sys.executable)
        work = tempfile.mkdtemp(prefix="csmutex-wheel-", dir=_tmp)
        wheel = self._wheel(work)
        self.assertTrue(os.path.basename(wheel).endswith("-py2.py3-none-any.whl"), wheel)
        target = os.path.join(work, "site")
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q",
                               "--disable-pip-version-check", "--target", target, wheel],
                              stdout=DEVNULL)
        code = ("import sys; sys.path.insert(0, %r); import csmutex_sidecar as m; "
                "sys.stdout.write(m.__version__ + ' ' + m.__file__)" % target)
        out = subprocess.check_output([sys.executable, "-c", code], cwd=work).decode()
        version, path = out.split(" ", 1)
        self.assertEqual(version, csmutex_sidecar.__version__)
        self.assertTrue(path.startswith(target), path)
        with open(os.path.join(HERE, "csmutex_sidecar.py"), "rb") as a:
            with open(os.path.join(target, "csmutex_sidecar.py"), "rb") as b:
                self.assertEqual(a.read(), b.read())


if __name__ == "__main__":
    unittest.main()
