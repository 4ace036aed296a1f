"""Shared harness for Bifrost's black-box compatibility suite.

Every test script is run as
    python3 tests/integration/test_X.py --against {memcached|bifrost} --bifrostd PATH [unittest args]
and runs the same assertions against either server. This module parses those arguments,
finds free ports, starts and stops a server process by pid, and offers a tiny raw-socket
client whose every read is bounded in time (no loop here can spin forever).
"""

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

# pymemcache comes from Debian's python3-pymemcache (/usr/lib/python3/dist-packages). When
# `python3` is another interpreter of the same minor version (pyenv, venv), that directory is
# not on its path: append it as a fallback (pymemcache is pure Python).
try:
    import pymemcache  # noqa: F401
except ImportError:  # pragma: no cover - depends on the machine
    for _p in ("/usr/lib/python3/dist-packages",):
        if os.path.isdir(os.path.join(_p, "pymemcache")) and _p not in sys.path:
            sys.path.append(_p)

MEMCACHED = "/usr/bin/memcached"
HERE = os.path.dirname(os.path.abspath(__file__))
HOSTILE_DIR = os.path.join(HERE, "hostile")

# Filled in by main() before unittest runs.
AGAINST = "memcached"
BIFROSTD = None

READY_TIMEOUT = 10.0  # seconds to answer "version" (bifrostd: and to say it serves)
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
IO_TIMEOUT = 5.0  # default bound of one raw-client read
MAX_READS = 200000  # bound on recv() calls within one raw-client read


def is_memcached():
    return AGAINST == "memcached"


def is_bifrost():
    return AGAINST == "bifrost"


def sanitized():
    """True against a bifrostd built with ASan (its quarantine keeps freed memory in the RSS,
    so bounds on the RSS do not apply)."""
    if not is_bifrost():
        return False
    with open(BIFROSTD, "rb") as f:
        return b"__asan_init" in f.read()


def non_reading_clients(port, n):
    """`n` non-blocking connections with 4 KiB receive buffers, for clients that never read."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        socks.append(s)
    return socks


def keep_sending(socks, data, seconds, each_round=None):
    """Sends `data` on every socket (what fits) every 10 ms for `seconds` (bounded), calling
    `each_round()` after each round."""
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        for s in socks:
            try:
                s.send(data)
            except OSError:
                pass
        time.sleep(0.01)
        if each_round:
            each_round()


def rss_mib(pid, field="VmRSS"):
    """A process's resident memory in MiB: now (VmRSS), or the most it ever held (VmHWM)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return -1


# ---------------------------------------------------------------------------------------------
# ports and processes


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def server_command(port, item_size=None, conns=None, extra=()):
    """The command line for the server under test; the same meaning for both servers."""
    if is_memcached():
        cmd = [MEMCACHED, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "2", "-m", "64"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
    else:
        # --rpc-port 0: the cluster/bifrostctl port on any free port (never port+1000 by chance taken)
        cmd = [BIFROSTD, "-l", "127.0.0.1", "-p", str(port), "-t", "2", "-m", "64", "--rpc-port", "0"]
    if item_size is not None:
        cmd += ["-I", str(item_size)]
    if conns is not None:
        cmd += ["-c", str(conns)]
    cmd += list(extra)
    return cmd


def die_with_parent():
    """In a started server, before exec: SIGKILL when this test process dies (a runner's
    timeout kills it without its tearDown)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Server:
    """One server process started by this test run; stopped by its own pid only.
    `command(port)`, if given, is its command line instead of server_command's; `preexec`, if
    given, runs in the child before exec (after die_with_parent)."""

    def __init__(self, item_size=None, conns=None, extra=(), command=None, preexec=None):
        self.item_size = item_size
        self.conns = conns
        self.extra = tuple(extra)
        self.command = command
        self.preexec = preexec
        self.proc = None
        self.port = None
        self.log = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self):
        last_error = "not started"
        for _attempt in range(3):  # a free port can be taken by someone else in between
            self.port = free_port()
            self.log = tempfile.TemporaryFile()
            if self.command:
                cmd = self.command(self.port)
            else:
                cmd = server_command(self.port, self.item_size, self.conns, self.extra)
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                preexec_fn=self._preexec,
            )
            is_bifrostd = BIFROSTD is not None and os.path.abspath(cmd[0]) == BIFROSTD
            ok, last_error = self._wait_ready(is_bifrostd)
            if ok:
                return self
            self.stop()
            output = self.output()
            self.close_log()
        raise RuntimeError(
            "server %s did not become ready: %s\ncommand: %s\noutput:\n%s"
            % (AGAINST, last_error, " ".join(cmd), output)
        )

    def _preexec(self):
        die_with_parent()
        if self.preexec:
            self.preexec()

    def _log_bytes(self):
        # (pread: the server writes through the same open file, whose offset a seek would move)
        if not self.log:
            return b""
        try:
            fd = self.log.fileno()
            return os.pread(fd, os.fstat(fd).st_size, 0)
        except (OSError, ValueError):
            return b""

    def _wait_ready(self, bifrostd=False):
        """Ready: the port answers "version", and a bifrostd said it serves (it prints that once
        its cluster RPC, which takes descriptors of its own, has started too)."""
        deadline = time.monotonic() + READY_TIMEOUT
        last = "timeout"
        for _ in range(1000):  # bounded in count and time
            if time.monotonic() > deadline:
                break
            if self.proc.poll() is not None:
                return False, "exited with status %s" % self.proc.returncode
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                    s.settimeout(1.0)
                    s.sendall(b"version\r\n")
                    buf = b""
                    for _ in range(100):
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                        if b"\r\n" in buf:
                            break
                    if buf.startswith(b"VERSION "):
                        if not bifrostd or b"bifrostd: serving" in self._log_bytes():
                            return True, ""
                        last = "answered, but printed no 'bifrostd: serving' line"
                    else:
                        last = "answered %r" % buf
            except OSError as e:
                last = str(e)
            time.sleep(0.05)
        return False, last

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def output(self):
        return self._log_bytes()[-4000:].decode("utf-8", "replace")

    def stop(self):
        """SIGTERM our own pid, wait at most STOP_TIMEOUT, then SIGKILL it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=STOP_TIMEOUT)

    def close_log(self):
        if self.log:
            self.log.close()
            self.log = None

    def client(self, timeout=IO_TIMEOUT):
        return RawClient(self.port, timeout)

    def pymc(self, **kw):
        from pymemcache.client.base import Client

        kw.setdefault("connect_timeout", 5)
        kw.setdefault("timeout", 5)
        return Client(("127.0.0.1", self.port), **kw)


def bifrostctl(rpc_port, *args):
    """Runs the bifrostctl next to BIFROSTD against 127.0.0.1:`rpc_port` (at most 20 s):
    (exit status, stdout)."""
    ctl = os.path.join(os.path.dirname(BIFROSTD), "bifrostctl")
    r = subprocess.run([ctl, "--node", "127.0.0.1:%d" % rpc_port] + list(args),
                       capture_output=True, timeout=20)
    return r.returncode, r.stdout.decode("utf-8", "replace")


def all_alive(rpc_ports, n, limit=20.0):
    """True once `bifrostctl members` through every one of `rpc_ports` shows `n` members
    alive; False after `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        views = [bifrostctl(p, "--json", "members") for p in rpc_ports]
        if all(rc == 0 and sum(m["state"] == "alive" for m in json.loads(out)) == n
               for rc, out in views):
            return True
        time.sleep(0.2)
    return False


# ---------------------------------------------------------------------------------------------
# raw client


class RawClient:
    """A socket with bounded reads: exactly N bytes, up to a terminator, or until closed."""

    def __init__(self, port, timeout=IO_TIMEOUT, host="127.0.0.1"):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Read one chunk into buf; False on EOF. Raises TimeoutError past the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no reply in time; have %r" % self.buf[:200])
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no reply in time; have %r" % self.buf[:200])
        if not chunk:
            return False
        self.buf += chunk
        return True

    def recv_exact(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(MAX_READS):
            if len(self.buf) >= n:
                break
            if not self._fill(deadline):
                raise ConnectionError("closed after %d of %d bytes: %r" % (len(self.buf), n, self.buf[:200]))
        else:
            raise TimeoutError("too many reads")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_until(self, term=b"\r\n", timeout=None):
        """Bytes up to and including `term`."""
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(MAX_READS):
            if term in self.buf:
                break
            if not self._fill(deadline):
                raise ConnectionError("closed before %r: %r" % (term, self.buf[:200]))
        else:
            raise TimeoutError("too many reads")
        i = self.buf.index(term) + len(term)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def line(self, timeout=None):
        return self.recv_until(b"\r\n", timeout)

    def call(self, data, term=b"\r\n", timeout=None):
        """Send `data`, return the reply up to and including `term`."""
        self.send(data)
        return self.recv_until(term, timeout)

    def recv_idle(self, wait=0.3):
        """Whatever arrives within `wait` seconds (b'' when nothing; EOF is not an error)."""
        deadline = time.monotonic() + wait
        try:
            for _ in range(MAX_READS):
                if not self._fill(deadline):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        out, self.buf = self.buf, b""
        return out

    def expect_closed(self, timeout=None):
        """Read until the server closes. Returns the bytes received before EOF; raises
        TimeoutError when the connection is still open after `timeout`."""
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(MAX_READS):
            try:
                if not self._fill(deadline):
                    break
            except ConnectionResetError:
                break
        else:
            raise TimeoutError("too many reads")
        out, self.buf = self.buf, b""
        return out

    def get_value(self, key, timeout=None):
        """Classic `get key`: the value bytes, or None on a miss."""
        if isinstance(key, str):
            key = key.encode()
        self.send(b"get " + key + b"\r\n")
        head = self.line(timeout)
        if head == b"END\r\n":
            return None
        parts = head.split()
        if parts[0] != b"VALUE":
            raise AssertionError("unexpected reply %r" % head)
        n = int(parts[3])
        data = self.recv_exact(n + 2, timeout)
        end = self.line(timeout)
        if data[-2:] != b"\r\n" or end != b"END\r\n":
            raise AssertionError("bad get framing %r %r" % (data[-2:], end))
        return data[:-2]


def raw_stats(client, arg=b""):
    """`stats [arg]` over a RawClient: dict name -> value (bytes -> str)."""
    client.send(b"stats" + ((b" " + arg) if arg else b"") + b"\r\n")
    return read_stats(client)


def read_stats(client):
    """The next stats reply (STAT lines, then END) on a RawClient: dict name -> value."""
    out = {}
    for _ in range(10000):
        line = client.line()
        if line == b"END\r\n":
            return out
        parts = line.decode().split(" ", 2)
        if parts[0] != "STAT":
            raise AssertionError("unexpected stats line %r" % line)
        out[parts[1]] = parts[2].rstrip("\r\n") if len(parts) > 2 else ""
    raise AssertionError("stats did not end")


# ---------------------------------------------------------------------------------------------
# test case base


class ServerTestCase(unittest.TestCase):
    """Starts one server per class (setUpClass); stops it by pid in tearDownClass, after
    checking it is still alive (no crash on anything the class sent)."""

    item_size = None
    conns = None
    extra = ()
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server(cls.item_size, cls.conns, cls.extra).start()

    @classmethod
    def tearDownClass(cls):
        server = cls.server
        if server is None:
            return
        alive = server.alive()
        status = server.proc.returncode if not alive else None
        server.stop()
        output = server.output()
        server.close_log()
        cls.server = None
        if not alive:
            raise AssertionError(
                "%s died during %s (status %s); output:\n%s" % (AGAINST, cls.__name__, status, output)
            )

    def client(self, timeout=IO_TIMEOUT):
        c = self.server.client(timeout)
        self.addCleanup(c.close)
        return c

    def pymc(self, **kw):
        c = self.server.pymc(**kw)
        self.addCleanup(c.close)
        return c

    def assertAlive(self):
        self.assertTrue(self.server.alive(), "server process died")
        with self.server.client() as c:
            self.assertTrue(c.call(b"version\r\n").startswith(b"VERSION "))

    def key(self, suffix=""):
        """A key unique to the running test (classes share one server)."""
        return ("%s_%s" % (self._testMethodName, suffix)).encode()


# ---------------------------------------------------------------------------------------------
# entry point


def main(argv=None):
    global AGAINST, BIFROSTD
    argv = list(sys.argv if argv is None else argv)
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--against", choices=("memcached", "bifrost"), default="memcached")
    ap.add_argument("--bifrostd", default=None)
    ns, rest = ap.parse_known_args(argv[1:])
    AGAINST = ns.against
    BIFROSTD = os.path.abspath(ns.bifrostd) if ns.bifrostd else None
    if AGAINST == "bifrost":
        if not BIFROSTD or not (os.path.isfile(BIFROSTD) and os.access(BIFROSTD, os.X_OK)):
            sys.stderr.write(
                "FAIL: --against bifrost but bifrostd is missing or not executable: %r\n"
                "      build it first (cmake --build build; it lands in build/bin/bifrostd)\n"
                % BIFROSTD
            )
            sys.stderr.write("0 passed, 1 failed\n")
            sys.exit(2)
    else:
        if not os.access(MEMCACHED, os.X_OK):
            sys.stderr.write("FAIL: %s not found (apt-get install memcached)\n" % MEMCACHED)
            sys.exit(2)
    sys.stderr.write("integration: against %s\n" % AGAINST)
    prog = argv[0]
    result = unittest.main(argv=[prog] + rest, exit=False, verbosity=2).result
    ok = result.wasSuccessful() and result.testsRun > 0
    sys.exit(0 if ok else 1)
