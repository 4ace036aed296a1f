#!/usr/bin/env python3
"""Connection limit (-c N): the connection over the limit is told so and closed; earlier
ones keep working; after some close, new connections are accepted again. And a graceful stop
(SIGTERM) ends a connection at a reply boundary, without a reset."""

import os
import signal
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ServerTestCase, raw_stats  # noqa: E402

LIMIT = 20
TOO_MANY = b"ERROR Too many open connections\r\n"


class ConnectionLimitTest(ServerTestCase):
    conns = LIMIT

    def open_until_refused(self, max_count):
        """Opens connections one by one; returns (working clients, refused client or None)."""
        ok = []
        for _ in range(max_count):
            c = self.server.client(timeout=3)
            self.addCleanup(c.close)
            try:
                r = c.call(b"version\r\n")
            except (ConnectionError, OSError) as e:
                self.fail("connection %d failed without the error line: %r" % (len(ok) + 1, e))
            if r == TOO_MANY:
                return ok, c
            self.assertTrue(r.startswith(b"VERSION "), r)
            ok.append(c)
        return ok, None

    def test_limit(self):
        with self.server.client() as c:
            self.assertEqual(int(raw_stats(c, b"settings")["maxconns"]), LIMIT)
        time.sleep(0.1)  # let the server see the stats connection close

        ok, refused = self.open_until_refused(LIMIT + 1)
        # memcached counts its own file descriptors against -c, so it refuses well before N
        # (4 clients with -c 20, -t 2); see README. Required: refused at or before N+1.
        self.assertIsNotNone(refused, "no refusal within %d connections" % (LIMIT + 1))
        self.assertGreaterEqual(len(ok), 1)
        sys.stderr.write("[%s refused connection %d with -c %d] " % (harness.AGAINST, len(ok) + 1, LIMIT))
        self.assertEqual(refused.expect_closed(timeout=5), b"")

        # the earlier connections still work
        for i, c in enumerate(ok):
            self.assertEqual(c.call(b"set conn_%d 0 0 1\r\n%d\r\n" % (i, i % 10)), b"STORED\r\n")
        for i, c in enumerate(ok):
            self.assertEqual(c.get_value(b"conn_%d" % ((i + 1) % len(ok))), b"%d" % (((i + 1) % len(ok)) % 10))

        # close some; new connections are accepted again (closing is asynchronous: retry)
        n_close = max(1, len(ok) // 2)
        for c in ok[:n_close]:
            c.close()
        deadline = time.monotonic() + 5
        accepted = 0
        for _ in range(200):
            if accepted >= n_close or time.monotonic() > deadline:
                break
            c = self.server.client(timeout=3)
            self.addCleanup(c.close)
            r = c.call(b"version\r\n")
            if r.startswith(b"VERSION "):
                accepted += 1
            else:
                self.assertEqual(r, TOO_MANY)
                time.sleep(0.05)
        self.assertGreaterEqual(accepted, 1)
        for c in ok[n_close:]:
            self.assertTrue(c.call(b"version\r\n").startswith(b"VERSION "))


class DrainTest(unittest.TestCase):
    """SIGTERM: bifrostd stops accepting and reading, answers what it read, and closes each
    connection at a reply boundary (memcached exits at once: bifrost only).

    A client with 20 000 pipelined gets in flight got ECONNRESET: the connection was closed
    with its unread input in the kernel, which sends a reset, and the client's kernel dropped
    the replies it had not read yet. Now bifrostd ends its side (FIN) and drops the client's
    input until the client closes (or the drain's deadline)."""

    def test_sigterm_ends_a_pipelining_connection_cleanly(self):
        if not harness.is_bifrost():
            self.skipTest("memcached exits on SIGTERM without a drain")
        server = harness.Server(extra=("-m", "64"))
        self.addCleanup(server.close_log)
        self.addCleanup(server.stop)  # (cleanups run last first)
        server.start()
        value = b"d" * 1000
        reply = b"VALUE drain 0 1000\r\n" + value + b"\r\nEND\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"set drain 0 0 %d\r\n%s\r\n" % (len(value), value))
            self.assertEqual(s.recv(100), b"STORED\r\n")
            s.sendall(b"get drain\r\n" * 20000)  # 20 MB of replies, not read yet
            time.sleep(0.5)
            os.kill(server.pid, signal.SIGTERM)
            buf = bytearray()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                chunk = s.recv(1 << 20)  # (ConnectionResetError fails the test)
                if not chunk:
                    break
                buf += chunk
        answered = len(buf) // len(reply)
        print("\n  %d of 20000 answered before the end" % answered, file=sys.stderr)
        self.assertGreater(answered, 0)
        self.assertEqual(bytes(buf), reply * answered, "a reply was cut")
        self.assertEqual(server.proc.wait(10), 0)


if __name__ == "__main__":
    harness.main()
