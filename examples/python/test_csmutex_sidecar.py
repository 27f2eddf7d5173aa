"""Tests of csmutex_sidecar against the real binaries: a mock CloudShell (cmd/mockapi) and
`csmutex serve` / `csmutex run`.

    python3 -m unittest discover -s examples/python -v

The binaries are built with `go build` from this repository, unless CSMUTEX_BIN and
MOCKAPI_BIN name prebuilt ones. The tests set CSMUTEX_TEST_JITTER (testing only: it makes
csmutex retry every few milliseconds instead of every 2-5 s) so they run in seconds.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from csmutex_sidecar import (  # noqa: E402
    LockLost,
    LockNotObtained,
    SidecarError,
    SidecarMutex,
    run_command,
    run_locked,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSWORD = "Py-s3cret-Passw0rd"
JITTER = "1ms,5ms"

_tmp = None
_bins = {}
_mock = None
_mock_host = _mock_port = None
_reservation = None


def _build(name):
    env_var = {"csmutex": "CSMUTEX_BIN", "mockapi": "MOCKAPI_BIN"}[name]
    if os.environ.get(env_var):
        return os.environ[env_var]
    go = shutil.which("go")
    if go is None:
        raise unittest.SkipTest("go is not installed and %s is not set" % env_var)
    out = os.path.join(_tmp, name)
    subprocess.run([go, "build", "-o", out, "./cmd/" + name], cwd=REPO, check=True)
    return out


def _read_lines_until(proc, wanted, timeout=20.0):
    """Read proc's stdout lines until every prefix in wanted was seen; return them."""
    found = {}
    deadline = time.monotonic() + timeout
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

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if not result:
        proc.kill()
        raise RuntimeError("%s did not print %s (saw %s)" % (proc.args[0], wanted, found))
    return result


def setUpModule():
    global _tmp, _mock, _mock_host, _mock_port, _reservation
    _tmp = tempfile.mkdtemp(prefix="csmutex-py-")
    _bins["csmutex"] = _build("csmutex")
    _bins["mockapi"] = _build("mockapi")
    _mock = subprocess.Popen(
        [_bins["mockapi"], "-listen", "127.0.0.1:0", "-reservations", "1", "-user", "driver", "-password", PASSWORD],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    got = _read_lines_until(_mock, ["listening on", "reservation"])
    base = got["listening on"]
    hostport = base.split("://", 1)[-1].rstrip("/")
    _mock_host, _, port = hostport.rpartition(":")
    _mock_port = int(port)
    _reservation = got["reservation"]


def tearDownModule():
    if _mock is not None:
        _mock.terminate()
        _mock.wait(10)
        _mock.stdout.close()
    if _tmp:
        shutil.rmtree(_tmp, ignore_errors=True)


def _cs_env():
    env = dict(os.environ)
    env.update({
        "CLOUDSHELL_HOST": _mock_host, "CLOUDSHELL_PORT": str(_mock_port), "CLOUDSHELL_USER": "driver",
        "CLOUDSHELL_PASSWORD": PASSWORD, "CLOUDSHELL_DOMAIN": "Global", "CSMUTEX_TEST_JITTER": JITTER,
    })
    return env


class Sidecar:
    """A `csmutex serve` process."""

    def __init__(self, listen="127.0.0.1:0", extra=()):
        self.stderr_path = os.path.join(_tmp, "serve-%d.log" % time.monotonic_ns())
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [_bins["csmutex"], "serve", "--listen", listen, "--heartbeat", "100ms", "--lease", "3s"] + list(extra),
            stdout=subprocess.PIPE, stderr=self._stderr, env=_cs_env())
        self.address = _read_lines_until(self.proc, ["listening on"])["listening on"]

    def url(self, path):
        return "http://%s%s" % (self.address, path)

    def locks(self):
        with urllib.request.urlopen(self.url("/v1/locks"), timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        if not self._stderr.closed:
            self._stderr.close()
            self.proc.stdout.close()
        return code

    def logs(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def _wait_until(cond, timeout=3.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


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
            m.check()
            held = self.sidecar.locks()["held"]
            self.assertEqual([(h["name"], h["owner"], h["mode"]) for h in held if h["name"] == "PY-WITH"],
                             [("PY-WITH", "driver-with", "stream")])
            time.sleep(0.35)  # a few heartbeats
            self.assertFalse(m.lost)
        self.assertFalse(m.held)
        _wait_until(lambda: not [h for h in self.sidecar.locks()["held"] if h["name"] == "PY-WITH"],
                    what="the sidecar to release")
        self.assertNotIn(PASSWORD, repr(m))

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

    def test_timeout_raises_lock_not_obtained(self):
        with self.mutex("PY-BUSY", owner="first-holder"):
            start = time.monotonic()
            with self.assertRaises(LockNotObtained) as cm:
                with self.mutex("PY-BUSY", owner="second", timeout=0.2):
                    self.fail("entered a held lock")
            elapsed = time.monotonic() - start
            self.assertEqual(cm.exception.holder, "first-holder")
            self.assertEqual(cm.exception.status, 409)
            self.assertGreaterEqual(elapsed, 0.15)
            self.assertLess(elapsed, 3)
            with self.assertRaises(LockNotObtained):
                self.mutex("PY-BUSY", timeout=0).acquire()

    def test_closing_releases_at_once(self):
        m = self.mutex("PY-CLOSE")
        m.acquire()
        m.release()
        start = time.monotonic()
        with self.mutex("PY-CLOSE", timeout=2):
            pass
        self.assertLess(time.monotonic() - start, 1.0)

    def test_killed_process_releases(self):
        script = (
            "import sys; sys.path.insert(0, %r)\n"
            "from csmutex_sidecar import SidecarMutex\n"
            "m = SidecarMutex(%r, name='PY-KILL', address=%r, owner='doomed').acquire()\n"
            "print('HELD', flush=True)\n"
            "import time; time.sleep(60)\n"
        ) % (os.path.dirname(os.path.abspath(__file__)), _reservation, self.sidecar.address)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        try:
            self.assertEqual(child.stdout.readline().strip(), b"HELD")
            with self.assertRaises(LockNotObtained) as cm:
                self.mutex("PY-KILL", timeout=0).acquire()
            self.assertEqual(cm.exception.holder, "doomed")
            child.kill()
            child.wait()
            start = time.monotonic()
            with self.mutex("PY-KILL", timeout=2):
                pass
            self.assertLess(time.monotonic() - start, 1.0)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()

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
        with self.assertRaises(SidecarError):
            SidecarMutex(_reservation, address="127.0.0.1:1", timeout=1).acquire()
        with self.assertRaises(ValueError):
            SidecarMutex("", address=self.sidecar.address)


class SidecarLifecycleTest(unittest.TestCase):
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


def _csmutex_run_ready():
    """csmutex run exists and accepts our flags (it may be work in progress)."""
    try:
        out = subprocess.run([_bins["csmutex"], "run", "--help"], capture_output=True, timeout=20)
    except OSError:
        return False
    text = out.stdout.decode() + out.stderr.decode()
    return out.returncode == 0 and "--timeout" in text and "--name" in text


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

    def test_not_obtained(self):
        with SidecarMutex(_reservation, name="PY-RUN-BUSY", address=self.sidecar.address, owner="sidecar-holder"):
            called = []
            with self.assertRaises(LockNotObtained) as cm:
                run_locked(_reservation, called.append, 1, name="PY-RUN-BUSY", timeout=0.3, **self.kw())
            self.assertEqual(called, [])
            self.assertEqual(cm.exception.holder, "sidecar-holder")
            self.assertNotIn(PASSWORD, str(cm.exception))

    def test_run_command_returns_exit_code(self):
        code = run_command(_reservation, [sys.executable, "-c", "import sys; sys.exit(3)"], name="PY-CMD",
                           stderr=subprocess.DEVNULL, **self.kw())
        self.assertEqual(code, 3)
        with SidecarMutex(_reservation, name="PY-CMD", address=self.sidecar.address, owner="holder"):
            code = run_command(_reservation, [sys.executable, "-c", "pass"], name="PY-CMD", timeout=0.2,
                               stderr=subprocess.DEVNULL, **self.kw())
            self.assertEqual(code, 75)


if __name__ == "__main__":
    unittest.main()
