"""A burst of pipelined reads of large values through one node of a cluster.

Fifty clients each pipeline twenty `get`s of 512 KiB values (about 500 MiB asked for at once)
through a node that owns none of the keys. Every read must answer its value: the keys exist.

SlowReaders: clients that pipeline gets of 60 KiB values and never read their replies, while
the others read through the same node. LongGet: one get line of 10 000 such keys (see their
docstrings).

Against bifrost: three nodes (R=1), data links on and off; the reads cross to the two owners,
whose answers queue behind each other on one RPC connection per owner. (Calls that waited
there for the values before theirs were failed after --rpc-timeout without progress of their
own, although the connection was busy with the other calls' values: the read failed over to
a node without the key, and the client got END for a key that exists, 20–45 % of the reads on
this 2-core machine.) Against memcached: the same burst on one memcached, which proves the
client side of the test.

Run as the other integration scripts:
    python3 tests/integration/test_cluster_read_burst.py --against bifrost --bifrostd build/bin/bifrostd
"""

import hashlib
import json
import os
import random
import socket
import threading
import time
import unittest

import harness

SIZE = 512 * 1024
CLIENTS = 50
PER_CLIENT = 20
KEYS = 150
BURST_LIMIT = 120.0  # seconds: every client's socket reads are bounded by this, too


def value_of(key, size=SIZE):
    return (hashlib.sha256(key).hexdigest().encode() * (size // 64 + 1))[:size]


def round_trip(port, data, limit=30.0):
    """Sends `data` and a meta no-op; the reply up to the no-op's MN (bounded in time).
    (Not harness.RawClient: it grows its buffer by concatenation and searches all of it after
    every read, quadratic in a 10 MiB reply.)"""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        s.sendall(data + b"mn\r\n")
        buf = bytearray()
        deadline = time.monotonic() + limit
        while not buf.endswith(b"MN\r\n") and time.monotonic() < deadline:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
        return bytes(buf)


class BurstBase(unittest.TestCase):
    """A cluster (or a memcached), its keys, their loading and a burst of reads."""
    size = SIZE  # of every value

    def setUp(self):
        self.servers = []

    def tearDown(self):
        for server in self.servers:
            server.stop()
            server.close_log()

    def start(self, command):
        """A server (harness.Server) on a free port, started with `command(port)`; waits until
        it answers `version`."""
        server = harness.Server(command=command)
        self.servers.append(server)
        return server.start()

    def start_memcached(self, extra=()):
        """The real memcached (one thread, 256 MiB) on a free port, for the test's client side."""
        user = ["-u", "root"] if os.geteuid() == 0 else []
        return self.start(lambda port: [
            harness.MEMCACHED, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1",
            "-m", "256"] + list(extra) + user)

    def start_cluster(self, links):
        nodes = []
        # Under the sanitizers the burst (500 MiB through n1) can stall n1's loop past the
        # default failure detection: the others take it for dead and back, and n1 answers
        # some reads as misses (4 to 18 of 1000 in 3 runs of 4; the release build: none).
        # Not what this test is about: a suspect gets 5 s to refute there. (Why the misses
        # is not established: a release n1 stopped by SIGSTOP for 3 or 6 s, or for 200 ms of
        # every 220 ms for 8 s, during the burst answered all 1000, session 48.) A loaded
        # machine can stall a release build as long, so every build gets the 5 s.
        slow = ["--swim-suspicion-timeout", "5000"]
        for name in ("n1", "n2", "n3"):
            rpc = harness.free_port()
            join = ["--join", "127.0.0.1:%d" % nodes[0]["rpc"]] if nodes else []
            server = self.start(lambda port, name=name, rpc=rpc, join=join: [
                harness.BIFROSTD, "-l", "127.0.0.1", "-p", str(port), "--rpc-port", str(rpc),
                "--node-name", name, "-t", "1", "-m", "256", "-I", "8m", "--warm-window", "1000",
                "--cluster-links", links] + slow + join)
            nodes.append({"name": name, "port": server.port, "rpc": rpc, "server": server})
        if not harness.all_alive([n["rpc"] for n in nodes], 3):
            self.fail("membership did not converge")
        return nodes

    def keys_not_owned_by_n1(self, n1):
        candidates = ["burst-%d" % i for i in range(600)]
        keys = []
        for i in range(0, len(candidates), 100):
            args = ["--json", "ring"]
            for k in candidates[i:i + 100]:
                args += ["--key", k]
            rc, out = harness.bifrostctl(n1["rpc"], *args)
            self.assertEqual(rc, 0, out)
            keys += [e["key"] for e in json.loads(out) if e["owners"][0]["name"] != "n1"]
        self.assertGreaterEqual(len(keys), KEYS)
        return [k.encode() for k in keys[:KEYS]]

    def burst(self, port, keys):
        """CLIENTS connections, each pipelining PER_CLIENT gets of distinct keys; returns
        (hits, misses, bad replies, clients that failed)."""
        counts = {"hits": 0, "misses": 0, "bad": 0, "failed": 0}
        lock = threading.Lock()

        def client(i):
            ks = random.Random(i).sample(keys, PER_CLIENT)
            try:
                out = round_trip(port, b"".join(b"get %s\r\n" % k for k in ks), BURST_LIMIT)
            except OSError:
                with lock:
                    counts["failed"] += 1
                return
            pos, hits, misses, bad = 0, 0, 0, 0
            for k in ks:
                hit = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (k, self.size, value_of(k, self.size))
                if out.startswith(hit, pos):
                    hits += 1
                    pos += len(hit)
                elif out.startswith(b"END\r\n", pos):
                    misses += 1
                    pos += 5
                else:
                    bad += 1
                    break
            with lock:
                counts["hits"] += hits
                counts["misses"] += misses
                counts["bad"] += bad + (0 if bad or out[pos:] == b"MN\r\n" else 1)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        deadline = t0 + 2 * BURST_LIMIT + 10  # a client's reads end by 2 x BURST_LIMIT
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.assertFalse(any(t.is_alive() for t in threads), "a client did not finish")
        counts["seconds"] = round(time.monotonic() - t0, 1)
        return counts

    def load(self, port, keys, size=None):
        size = size or self.size
        for i in range(0, len(keys), 20):
            batch = keys[i:i + 20]
            out = round_trip(port, b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, size, value_of(k, size))
                                            for k in batch))
            self.assertEqual(out.count(b"STORED\r\n"), len(batch), out[:200])

    def check(self, counts, what):
        total = CLIENTS * PER_CLIENT
        print("%s: %d reads of %d KiB: %r" % (what, total, self.size >> 10, counts), flush=True)
        counts.pop("seconds")
        self.assertEqual(counts, {"hits": total, "misses": 0, "bad": 0, "failed": 0}, what)


class ReadBurst(BurstBase):
    def test_every_read_of_a_burst_answers_its_value(self):
        if harness.is_memcached():
            port = self.start_memcached(["-I", "8m"]).port
            keys = [b"burst-%d" % i for i in range(KEYS)]
            self.load(port, keys)
            self.check(self.burst(port, keys), "memcached")
            return
        for links in ("on", "off"):
            nodes = self.start_cluster(links)
            keys = self.keys_not_owned_by_n1(nodes[0])
            self.load(nodes[0]["port"], keys)
            time.sleep(1.5)  # past the joins' warming windows: a failed read then misses
            counts = self.burst(nodes[0]["port"], keys)
            for n in nodes:
                self.assertTrue(n["server"].alive(), "%s died: %s" % (n["name"], n["server"].output()))
            self.check(counts, "bifrost, 3 nodes, links " + links)
            for n in nodes:
                n["server"].stop()


class SlowReaders(BurstBase):
    """Clients that pipeline gets of remote 60 KiB values and do not read their replies, while
    the others read the same keys through the same node.

    A node holds a copy of each value a member answered until its client reads it. It asked
    for up to 4096 requests per connection at once, about 1000 values (60 MiB) each here: 20
    such clients grew n1 past 1.2 GB, and their calls, queued on the one link to each owner,
    delayed the other clients' calls past --rpc-timeout; the link was then failed with every
    call in flight, and the other clients' reads answered END (1000 of 1000, links on and
    off). A connection then had at most 256 ops at other members unwritten, and a link call
    behind other calls' replies waited while they came: 20 such clients grew n1 by 260 MiB,
    100 by 1.3–2.6 GB. Now a connection starts with 16 such ops and earns more only while the
    kernel holds little of its output, and stops reading while its socket is blocked with
    256 KiB queued: 100 clients grow n1 by about 125 MiB."""
    size = 60 * 1024
    SLOW = 100
    RSS_GROWTH_LIMIT_MIB = 400  # 100 x (256 KiB + 16 values) is 120; with 256 values 1300+

    def slow_clients(self, port, keys, seconds):
        """SLOW connections that each keep sending 200-key pipelines and never read, for
        `seconds`; returns the thread and the sockets (to close)."""
        req = b"".join(b"get %s\r\n" % k for k in keys[:200])
        socks = harness.non_reading_clients(port, self.SLOW)
        th = threading.Thread(target=harness.keep_sending, args=(socks, req, seconds), daemon=True)
        th.start()
        return th, socks

    def run_with_slow_readers(self, port, pid, keys):
        before = harness.rss_mib(pid)
        th, socks = self.slow_clients(port, keys, 6)
        try:
            time.sleep(2)  # they have asked for all they may
            counts = self.burst(port, keys)
            grown = harness.rss_mib(pid) - before
            th.join(10)
        finally:
            for s in socks:
                s.close()
        return counts, grown

    def test_slow_readers_do_not_starve_the_others(self):
        if harness.is_memcached():
            server = self.start_memcached()
            keys = [b"slow-%d" % i for i in range(KEYS)]
            self.load(server.port, keys)
            counts, grown = self.run_with_slow_readers(server.port, server.pid, keys)
            print("memcached: RSS grew %d MiB" % grown, flush=True)
            self.check(counts, "memcached, %d slow readers" % self.SLOW)
            return
        for links in ("on", "off"):
            nodes = self.start_cluster(links)
            n1 = nodes[0]
            keys = self.keys_not_owned_by_n1(n1)
            self.load(n1["port"], keys)
            time.sleep(1.5)  # past the joins' warming windows: a failed read then misses
            counts, grown = self.run_with_slow_readers(n1["port"], n1["server"].pid, keys)
            for n in nodes:
                self.assertTrue(n["server"].alive(), "%s died: %s" % (n["name"], n["server"].output()))
            print("links %s: n1's RSS grew %d MiB" % (links, grown), flush=True)
            self.check(counts, "bifrost, 3 nodes, links %s, %d slow readers" % (links, self.SLOW))
            if not harness.sanitized():  # (ASan's quarantine holds what was freed)
                self.assertLess(grown, self.RSS_GROWTH_LIMIT_MIB, "links " + links)
            for n in nodes:
                n["server"].stop()


class LongGet(BurstBase):
    """One get line of many keys of 60 KiB values owned elsewhere, through one node.

    A node held every value a member answered until the whole request was answered: one get
    line of 10 000 keys (95 KB) made n1 hold 650 MiB while the client had not read yet. Such
    a line now goes in parts of 64 keys, each sent as the backpressure allows; the reply is
    the same bytes, with one END."""
    size = 60 * 1024
    KEYS_PER_LINE = 10000
    RSS_GROWTH_LIMIT_MIB = 200  # by design a few tens; before: 650

    def expected_reply(self, line_keys, present, size=None):
        """memcached's reply to a get of line_keys when the keys in `present` hold value_of."""
        size = size or self.size
        out = bytearray()
        for k in line_keys:
            if k in present:
                out += b"VALUE %s 0 %d\r\n%s\r\n" % (k, size, value_of(k, size))
        return bytes(out + b"END\r\n")

    def read_reply(self, sock, total):
        buf = bytearray()
        deadline = time.monotonic() + 60
        while len(buf) < total and time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    def long_get(self, port, pid, keys):
        # Some keys of the line were never stored: their misses come in the parts too.
        line_keys = [keys[i % len(keys)] if i % 7 else b"absent-%d" % i
                     for i in range(self.KEYS_PER_LINE)]
        expected = self.expected_reply(line_keys, set(keys))
        before = harness.rss_mib(pid)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(b"get " + b" ".join(line_keys) + b"\r\n")
            peak = before
            for _ in range(20):  # the client reads nothing for 2 s
                peak = max(peak, harness.rss_mib(pid))
                time.sleep(0.1)
            reply = self.read_reply(s, len(expected))
            s.sendall(b"mn\r\n")  # nothing more came before this
            after = s.recv(16)
        self.assertEqual(len(reply), len(expected))
        self.assertTrue(reply == expected, "the reply differs from memcached's")
        self.assertEqual(after, b"MN\r\n")
        return peak - before

    def mixed_lines(self, ports):
        """get (1000 keys) and gat (200: a longer gat line is closed, protocol/memcache.hpp) of
        keys on every node, some absent, some repeated, through each port: memcached's bytes."""
        keys = [b"mix-%d" % i for i in range(300)]
        self.load(ports[0], keys, 3000)
        for cmd, n in ((b"get", 1000), (b"gat 100", 200)):
            line_keys = [keys[(i * 7) % 300] if i % 5 else b"no-%d" % i for i in range(n)]
            expected = self.expected_reply(line_keys, set(keys), 3000) + b"MN\r\n"
            for port in ports:
                got = round_trip(port, cmd + b" " + b" ".join(line_keys) + b"\r\n")
                self.assertTrue(got == expected, "%s of %d keys via port %d: %d bytes, %d expected"
                                % (cmd, n, port, len(got), len(expected)))

    def test_a_long_get_line_is_not_held_whole(self):
        if harness.is_memcached():
            server = self.start_memcached()
            keys = [b"long-%d" % i for i in range(KEYS)]
            self.load(server.port, keys)
            grown = self.long_get(server.port, server.pid, keys)
            print("memcached: RSS grew %d MiB" % grown, flush=True)
            self.mixed_lines([server.port])
            return
        nodes = self.start_cluster("on")
        n1 = nodes[0]
        keys = self.keys_not_owned_by_n1(n1)
        self.load(n1["port"], keys)
        time.sleep(1.5)  # past the joins' warming windows
        grown = self.long_get(n1["port"], n1["server"].pid, keys)
        print("bifrost: n1's RSS grew %d MiB" % grown, flush=True)
        if not harness.sanitized():
            self.assertLess(grown, self.RSS_GROWTH_LIMIT_MIB)
        self.mixed_lines([n["port"] for n in nodes])


if __name__ == "__main__":
    harness.main()
