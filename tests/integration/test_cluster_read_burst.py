"""A burst of pipelined reads of large values through one node of a cluster.

Fifty clients each pipeline twenty `get`s of 512 KiB values (about 500 MiB asked for at once)
through a node that owns none of the keys. Every read must answer its value: the keys exist.

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
import subprocess
import threading
import time
import unittest

import harness

SIZE = 512 * 1024
CLIENTS = 50
PER_CLIENT = 20
KEYS = 150
BURST_LIMIT = 120.0  # seconds: every client's socket reads are bounded by this, too


def value_of(key):
    return (hashlib.sha256(key).hexdigest().encode() * (SIZE // 64 + 1))[:SIZE]


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


class ReadBurst(unittest.TestCase):
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

    def ctl(self, rpc_port, *args):
        ctl = os.path.join(os.path.dirname(harness.BIFROSTD), "bifrostctl")
        r = subprocess.run([ctl, "--node", "127.0.0.1:%d" % rpc_port] + list(args),
                           capture_output=True, timeout=20)
        return r.returncode, r.stdout.decode("utf-8", "replace")

    def start_cluster(self, links):
        nodes = []
        for name in ("n1", "n2", "n3"):
            rpc = harness.free_port()
            join = ["--join", "127.0.0.1:%d" % nodes[0]["rpc"]] if nodes else []
            server = self.start(lambda port, name=name, rpc=rpc, join=join: [
                harness.BIFROSTD, "-l", "127.0.0.1", "-p", str(port), "--rpc-port", str(rpc),
                "--node-name", name, "-t", "1", "-m", "256", "-I", "8m", "--warm-window", "1000",
                "--cluster-links", links] + join)
            nodes.append({"name": name, "port": server.port, "rpc": rpc, "server": server})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            views = [self.ctl(n["rpc"], "--json", "members") for n in nodes]
            if all(rc == 0 and sum(m["state"] == "alive" for m in json.loads(out)) == 3
                   for rc, out in views):
                break
            time.sleep(0.2)
        else:
            self.fail("membership did not converge")
        return nodes

    def keys_not_owned_by_n1(self, n1):
        candidates = ["burst-%d" % i for i in range(600)]
        keys = []
        for i in range(0, len(candidates), 100):
            args = ["--json", "ring"]
            for k in candidates[i:i + 100]:
                args += ["--key", k]
            rc, out = self.ctl(n1["rpc"], *args)
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
                hit = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (k, SIZE, value_of(k))
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

    def load(self, port, keys):
        for i in range(0, len(keys), 20):
            batch = keys[i:i + 20]
            out = round_trip(port, b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, SIZE, value_of(k))
                                            for k in batch))
            self.assertEqual(out.count(b"STORED\r\n"), len(batch), out[:200])

    def check(self, counts, what):
        total = CLIENTS * PER_CLIENT
        print("%s: %d reads of 512 KiB: %r" % (what, total, counts), flush=True)
        counts.pop("seconds")
        self.assertEqual(counts, {"hits": total, "misses": 0, "bad": 0, "failed": 0}, what)

    def test_every_read_of_a_burst_answers_its_value(self):
        if harness.is_memcached():
            user = ["-u", "root"] if os.geteuid() == 0 else []
            port = self.start(lambda port: [
                harness.MEMCACHED, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1",
                "-m", "256", "-I", "8m"] + user).port
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


if __name__ == "__main__":
    harness.main()
