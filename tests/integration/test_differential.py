#!/usr/bin/env python3
"""Differential test: the same random command stream, pipelined, to two servers; their replies
must be the same, byte for byte once normalized.

A seeded generator writes text and meta commands (storage, cas, get/gets/gat/gats, incr/decr,
touch, delete, mg/ms/md/ma/mn, flush_all) over a few keys, with bad numbers, bad flags, bad
data blocks, too-long keys and unknown commands mixed in; three in ten sends carry 2–10
commands at once (pipelining). Each send ends with `mn` and is read up to its MN.

Pairs compared:
  - against memcached: memcached with memcached (proves the normalization, no false alarms),
    and memcached with the server under test (bifrost: its single node);
  - against bifrost only: a lone bifrostd with a 3-node cluster reached through one node, the
    cluster inside its ring change's warming window (the joins are seconds old and the window
    is long), keys loaded on the first node before the others joined, so that the moved keys'
    ops take the window's extra steps (a look at the previous owner, warm copies, an update run
    again, a delete at the previous owners). R=1 with one I/O thread; R=2 with two; R=2 with the
    members reached by RPC only (no data links); R=2 and R=3 with new owners that warm keys only
    when they are read (--rereplicate off: a previous owner is an owner still), R=3 with the
    RPC on the I/O loop's thread.

Normalized: CAS values (each server numbers its own: they map to the order they first appear in
among the key's, as a CAS only has to be unique per key; a meta line's without `k`: just `#`),
the meta `t` of an item with a TTL (seconds left: timing) and `l` (seconds since last access),
`me`'s CAS and times (its exp: memcached 1.6.18 prints now - exptime, so an item with a TTL
shows minus the seconds left, counted on each server's own clock tick; -1, no TTL, is kept).
Against memcached, the stream leaves out what makes two memcached disagree with each other:
numbers that get shorter (decr, incr past 2^64, "007" or " 5" incremented, or a leading zero
appended or prepended: memcached may keep the old length padded with spaces, as protocol.txt
allows, depending on the item's references, and what follows on that item differs from then
on), and a get line with a key over 250 bytes (memcached then drops the replies of the requests
before it in the same read, seen with 1.6.18). memcached prints a TTL already past (mg T-1 t)
as a negative number cast to unsigned; bifrost prints t0. Every relative TTL in the stream is
far above `mg R30`'s limit (an item with 30 s left wins R30 after one clock tick, which each
server takes at its own phase), and memcached runs without its LRU maintainer (which at random
makes an incr build a new, unfetched item: see test_meta's IncrFetchTest). Against memcached
the stream also leaves out an incr, decr or ma of a key that a command before it in the same
send names: memcached changes a counter in place (it keeps its fetched, stale and token state)
unless something holds the item, as the earlier command's reply does until it is written; then
it makes a new item. bifrostd answers as in place (as memcached does for the same commands in
separate sends).

Run as the other integration scripts:
    python3 tests/integration/test_differential.py --against bifrost --bifrostd build/bin/bifrostd
"""

import os
import random
import re
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

KEYS = [b"k%d" % i for i in range(8)]
LONG_KEYS = [b"x" * 250, b"y" * 251]  # the longest key, and one byte too long
BOGUS_CAS = b"18000000000000000007"  # neither server hands this out
SEND_LIMIT = 3.0  # seconds for one send's replies (a send that hangs fails the test)
TEST_LIMIT = 240.0  # seconds for one stream, whatever its length


# ---------------------------------------------------------------------------------------------
# the command stream


def rand_value(r, quirks):
    if r.random() < 0.3:
        return r.choice([b"0", b"1", b"9", b"10", b"99", b"100", b"12a", b"-1", b"4294967296"] +
                        ([b"18446744073709551615", b"18446744073709551614", b" 5", b"007"]
                         if quirks else []))
    n = r.choice([0, 1, 3, 10, 20, 100, 1500])
    return bytes(r.choice(b"abcdefghij") for _ in range(n))


def concat_data(v, quirks):
    """Data to append or prepend. Without `quirks` it never starts with a digit: "0" put
    before "5", or after "0", makes a number with a leading zero, which an incr shortens
    (memcached pads it with spaces in place, and the padding then stays inside the value)."""
    return b"x" + v if not quirks and v[:1].isdigit() else v


def rand_flags(r):
    return r.choice([b"0", b"1", b"42", b"4294967295", b"4294967296", b"-1", b"x", b"01"])


def rand_exptime(r):
    return r.choice([b"0", b"0", b"1000", b"-1", b"99999999", b"x", b"2592000"])


def rand_delta(r, quirks):
    return r.choice([b"1", b"0", b"7", b"100", b"18446744073709551616", b"-1", b"abc", b"5x",
                     b"00"] + ([b"18446744073709551615"] if quirks else []))


def cas_of(key):
    """A placeholder each server's stream fills with the CAS it last showed for `key`."""
    return b"{CAS:" + key + b"}"


def command(r, quirks):
    """One command (bytes, with CAS placeholders). Without `quirks`, none that make two
    memcached answer differently (see the module's docstring)."""
    c = r.random()
    key = r.choice(KEYS) if r.random() < 0.95 else r.choice(KEYS + LONG_KEYS)
    nr = b" noreply" if r.random() < 0.1 else b""
    if c < 0.25:
        cmd = r.choice([b"set", b"add", b"replace", b"append", b"prepend", b"cas"])
        v = rand_value(r, quirks)
        if cmd in (b"append", b"prepend"):
            v = concat_data(v, quirks)
        n = len(v)
        if r.random() < 0.03 and n > 0:
            n -= 1  # a data block longer than its length says (shorter: the server waits)
        line = b"%s %s %s %s %d" % (cmd, key, rand_flags(r) if r.random() < 0.2 else
                                    r.choice([b"0", b"3"]),
                                    rand_exptime(r) if r.random() < 0.2 else b"0", n)
        if cmd == b"cas":
            line += b" " + (cas_of(key) if r.random() < 0.7 else
                            r.choice([BOGUS_CAS, b"0", b"x"]))
        return line + nr + b"\r\n" + v + b"\r\n"
    if c < 0.45:
        cmd = r.choice([b"get", b"gets", b"gat", b"gats"])
        ks = b" ".join(r.choice(KEYS) for _ in range(r.randint(1, 4)))
        if r.random() < 0.05:
            ks = r.choice([b"", LONG_KEYS[1], b"k1 " + LONG_KEYS[1]] if quirks else [b""])
        if cmd in (b"gat", b"gats"):
            return b"%s %s %s\r\n" % (cmd, r.choice([b"0", b"1000", b"-1", b"x"]), ks)
        return b"%s %s\r\n" % (cmd, ks)
    if c < 0.55:
        cmd = r.choice([b"incr", b"decr"]) if quirks else b"incr"
        return b"%s %s %s%s\r\n" % (cmd, key, rand_delta(r, quirks), nr)
    if c < 0.6:
        return b"touch %s %s%s\r\n" % (key, rand_exptime(r), nr)
    if c < 0.66:
        return b"delete %s%s\r\n" % (key, r.choice([b"", b"", b" 0", b" 5", b" noreply", b" x y"]))
    if c < 0.76:
        # (No E: memcached 1.6.18 has no such flag, newer ones and bifrost do; and in a
        # cluster's warming window a CAS that is no clock value orders nothing, by design:
        # docs/ARCHITECTURE.md. test_meta.py covers E on one node.)
        flags = r.sample([b"v", b"k", b"c", b"f", b"s", b"t", b"Oab", b"q", b"T500", b"N300",
                          b"R30", b"h", b"l", b"u", b"Ix", b"T-1", b"zz"], r.randint(0, 5))
        return b"mg %s %s\r\n" % (key, b" ".join(flags))
    if c < 0.86:
        v = rand_value(r, quirks)
        flags = r.sample([b"F7", b"T0", b"T-1", b"T100", b"I", b"q", b"Oxy", b"k", b"c", b"MS",
                          b"ME", b"MA", b"MP", b"MR", b"MX", b"C" + cas_of(key),
                          b"C" + BOGUS_CAS, b"F-1", b"Fx", b"b"]
                         + ([b"Ex"] if quirks else []), r.randint(0, 4))  # (a bad E token)
        if b"MA" in flags or b"MP" in flags:
            v = concat_data(v, quirks)
        n = len(v) - (1 if r.random() < 0.03 and v else 0)
        size = b"%d" % n if r.random() > 0.03 else r.choice([b"x", b"-1", b""])
        return b"ms %s %s %s\r\n%s\r\n" % (key, size, b" ".join(flags), v)
    if c < 0.9:
        flags = r.sample([b"q", b"C" + cas_of(key), b"C1", b"I", b"T300", b"Oz", b"k", b"x"],
                         r.randint(0, 3))
        return b"md %s %s\r\n" % (key, b" ".join(flags))
    if c < 0.96:
        more = [b"MD", b"M-", b"J18446744073709551615"] if quirks else []
        flags = r.sample([b"N0", b"N100", b"J5", b"D3", b"D0", b"q", b"Ow", b"k", b"t", b"c",
                          b"v", b"Dx", b"C" + cas_of(key), b"C7", b"MI", b"M+", b"MX"] + more,
                         r.randint(0, 4))
        return b"ma %s %s\r\n" % (key, b" ".join(flags))
    if c < 0.97:
        return r.choice([b"flush_all\r\n", b"flush_all noreply\r\n", b"flush_all x\r\n"])
    return r.choice([b"\r\n", b"foo bar\r\n", b"get\r\n", b"GET k1\r\n", b"set k1\r\n",
                     b"set k1 0 0\r\n", b"incr k1\r\n", b"touch k1\r\n", b"mg\r\n", b"ms k1\r\n",
                     b"md\r\n", b"ma\r\n", b"me k1\r\n", b"verbosity 1\r\n", b"verbosity\r\n",
                     b"cas k1 0 0 1\r\nx\r\n", b"mn\r\n", b"quit2\r\n",
                     b"set k1 0 0 1 2 3\r\nx\r\n", b"get " + b"k1 " * 30 + b"\r\n"])


COUNTER_COMMANDS = (b"incr", b"decr", b"ma")


def counts_after_use(cmd, earlier):
    """Whether `cmd` changes a counter whose key a command before it in the same send names:
    memcached then still holds the item for that command's reply and makes the counter a new
    item (not fetched, not stale, no token), where it changes it in place otherwise."""
    words = cmd.split(b"\r\n", 1)[0].split(b" ")
    if words[0] not in COUNTER_COMMANDS or len(words) < 2:
        return False
    return any(words[1] in re.split(rb"[ \r\n]", c) for c in earlier)


def stream(seed, count, quirks=True):
    """`count` sends, each one command or (three in ten) 2-10 of them. Without `quirks`, a
    counter change on a key named earlier in the same send is left out (counts_after_use)."""
    r = random.Random(seed)
    for _ in range(count):
        cmds = [command(r, quirks)]
        if r.random() < 0.3:
            for _ in range(r.randint(1, 9)):
                c = command(r, quirks)
                if quirks or not counts_after_use(c, cmds):
                    cmds.append(c)
        yield b"".join(cmds)


# ---------------------------------------------------------------------------------------------
# one server's side

CAS_SLOT = re.compile(rb"\{CAS:([^}]*)\}")
PADDED = re.compile(rb"^(\d+) +$")


class Side:
    """A connection to one server, the CAS values it showed, and its reply normalization."""

    def __init__(self, port):
        self.port = port
        self.cas = {}  # key -> the CAS this server last showed for it
        self.order = {}  # (key, CAS) -> the order it first appeared in, per key
        self.connect()

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=SEND_LIMIT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        self.sock.close()

    def run(self, template):
        data = CAS_SLOT.sub(lambda m: self.cas.get(m.group(1), BOGUS_CAS), template)
        reply = self.exchange(data)
        self.learn(data, reply)
        return self.normalize(reply)

    def exchange(self, data):
        """Sends `data` and `mn`; the replies up to the MN of that `mn` (or what came before
        the connection closed, or the time ran out: then `<closed>` or `<timeout>`, and a new
        connection)."""
        # (lines, not substrings: "mn\r\nmn\r\n" holds two; no value holds "mn")
        want = data.split(b"\r\n").count(b"mn") + 1
        try:
            self.sock.sendall(data + b"mn\r\n")
        except OSError:
            self.close()
            self.connect()
            return b"<send failed>"
        buf = b""
        deadline = time.monotonic() + SEND_LIMIT
        for _ in range(10000):  # bounded in count and time
            if buf.endswith(b"MN\r\n") and buf.count(b"MN\r\n") >= want:
                return buf
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.close()
                self.connect()
                return buf + b"<closed>"
            buf += chunk
        self.close()
        self.connect()
        return buf + b"<timeout>"

    def learn(self, data, reply):
        for m in re.finditer(rb"^VALUE (\S+) \d+ \d+ (\d+)\r\n", reply, re.M):
            self.cas[m.group(1)] = m.group(2)
        parts = data.split(b" ", 2)
        if len(parts) > 1 and parts[0] in (b"mg", b"ms", b"ma", b"md"):
            key = parts[1].split(b"\r\n")[0]
            m = re.search(rb"^(?:VA \d+|HD|EX|NS|NF|EN)((?: \S+)*)\r\n", reply, re.M)
            if m:
                for tok in m.group(1).split():
                    if tok[:1] == b"c" and tok[1:].isdigit():
                        self.cas[key] = tok[1:]

    def cas_name(self, key, value):
        """A CAS value as the order it first appeared in among the key's: a CAS only has to be
        unique per key (two nodes' clocks can give two keys the same one in one microsecond).
        `key` None (a meta line without `k`): not numbered."""
        if key is None:
            return b"#"
        known = self.order.setdefault(key, {})
        return b"#%d" % known.setdefault(value, len(known))

    def normalize(self, reply):
        reply = unpad(reply)

        def value_line(m):
            return b"VALUE %s %s %s %s\r\n" % (m.group(1), m.group(2), m.group(3),
                                              self.cas_name(m.group(1), m.group(4)))
        reply = re.sub(rb"^VALUE (\S+) (\d+) (\d+) (\d+)\r\n", value_line, reply, flags=re.M)

        def meta_line(m):
            out = []
            toks = m.group(2).split(b" ")
            key = next((t[1:] for t in toks if t[:1] == b"k" and len(t) > 1), None)
            for t in toks:
                if t[:1] == b"c" and t[1:].isdigit():
                    t = b"c" + self.cas_name(key, t[1:])
                elif t[:1] == b"t" and t[1:].isdigit():
                    n = int(t[1:])
                    t = b"t0" if n >= 1 << 31 else (b"t+" if n > 0 else t)
                elif t[:1] == b"l" and t[1:].isdigit():
                    t = b"l*"
                out.append(t)
            return m.group(1) + b" ".join(out) + b"\r\n"
        reply = re.sub(rb"^((?:VA \d+|HD|EX|NS|NF|EN) )([^\r\n]*)\r\n", meta_line, reply,
                       flags=re.M)

        def me_line(m):
            key = m.group(0).split(b" ")[1]
            line = re.sub(rb"cas=(\d+)", lambda c: b"cas=" + self.cas_name(key, c.group(1)),
                          m.group(0))
            line = re.sub(rb"la=\d+", b"la=*", line)
            line = re.sub(rb"exp=-(?:[2-9]|\d\d+)\b", b"exp=-*", line)  # seconds left
            return re.sub(rb"exp=(\d+)", b"exp=+", line)
        return re.sub(rb"^ME \S+ [^\r\n]*", me_line, reply, flags=re.M)


def unpad(reply):
    """A number memcached's decr left padded with spaces (`VALUE`/`VA` blocks): unpadded."""
    out = []
    pos = 0
    while pos < len(reply):
        eol = reply.find(b"\r\n", pos)
        if eol < 0:
            out.append(reply[pos:])
            break
        line = reply[pos:eol]
        pos = eol + 2
        parts = line.split(b" ")
        n = at = None
        if parts[0] == b"VALUE" and len(parts) >= 4 and parts[3].isdigit():
            n, at = int(parts[3]), 3
        elif parts[0] == b"VA" and len(parts) >= 2 and parts[1].isdigit():
            n, at = int(parts[1]), 1
        if n is None or pos + n + 2 > len(reply):
            out.append(line + b"\r\n")
            continue
        data = reply[pos:pos + n]
        pos += n + 2
        m = PADDED.match(data)
        if m:
            data = m.group(1)
            parts[at] = b"%d" % len(data)
        out.append(b" ".join(parts) + b"\r\n" + data + b"\r\n")
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# tests


class Base(unittest.TestCase):
    """Servers started by the test (stopped by pid), and the comparison of two of them."""

    def setUp(self):
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            alive = s.alive()
            s.stop()
            output = s.output()
            s.close_log()
            if not alive:
                self.fail("a server died during the test:\n" + output)

    def start(self, command):
        server = harness.Server(command=command)
        self.servers.append(server)
        return server.start()

    def memcached(self):
        user = ["-u", "root"] if os.geteuid() == 0 else []
        return self.start(lambda port: [harness.MEMCACHED, "-l", "127.0.0.1", "-p", str(port),
                                        "-U", "0", "-t", "2", "-m", "64",
                                        "-o", "no_lru_maintainer"] + user)

    def bifrostd(self, *args):
        return self.start(lambda port: [harness.BIFROSTD, "-l", "127.0.0.1", "-p", str(port),
                                        "-m", "64", "--rpc-port", "0"] + list(args))

    def compare(self, reference, subject, seed, count, quirks=True, what="", event=None):
        """`event`: (send number, callable), called just before that send."""
        a, b = Side(reference.port), Side(subject.port)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        deadline = time.monotonic() + TEST_LIMIT
        before = []  # the last sends and their replies (reference, subject)
        for i, send in enumerate(stream(seed, count, quirks)):
            self.assertLess(time.monotonic(), deadline, "the stream took too long")
            if event and i == event[0]:
                event[1]()
            want, got = a.run(send), b.run(send)
            if want != got:
                history = "".join("  #%d %r\n    -> %r\n    -> %r\n" % (j, s[:200], w[:200], g[:200])
                                  for j, s, w, g in before)
                at = next((k for k in range(min(len(want), len(got))) if want[k] != got[k]),
                          min(len(want), len(got)))
                start = want.rfind(b"\r\n", 0, at) + 2 if b"\r\n" in want[:at] else 0  # its line
                self.fail("%s seed %d, send #%d differs:\n  sent:     %r\n  expected: %r\n"
                          "  got:      %r\n  from byte %d: expected %r\n                 got %r\n"
                          "the sends before it:\n%s"
                          % (what, seed, i, send[:400], want[:600], got[:600], start,
                             want[start:start + 200], got[start:start + 200], history))
            before = (before + [(i, send, want, got)])[-12:]

    @staticmethod
    def flush(server):
        side = Side(server.port)
        try:
            side.exchange(b"flush_all\r\n")
        finally:
            side.close()


class SingleNode(Base):
    def test_memcached_answers_as_memcached(self):
        if not harness.is_memcached():
            self.skipTest("the normalization's own check runs against memcached")
        for seed in (1, 2):
            self.compare(self.memcached(), self.memcached(), seed, 1500, quirks=False,
                         what="memcached pair")

    def test_the_server_answers_as_memcached(self):
        reference = self.memcached()
        subject = self.memcached() if harness.is_memcached() else self.bifrostd("-t", "2")
        for seed in (3, 4, 5):
            self.flush(reference)
            self.flush(subject)
            self.compare(reference, subject, seed, 2000, quirks=False, what="vs memcached")


class ClusterNodes(Base):
    """Starts a lone bifrostd's peer: a 3-node cluster inside its warming window."""

    def setUp(self):
        super().setUp()
        if not harness.is_bifrost():
            self.skipTest("a cluster of bifrost nodes")

    def preload(self, server):
        c = Side(server.port)
        try:
            for i, k in enumerate(KEYS):
                set_k = b"set %s %d 0 %d\r\n%s\r\n" % (k, i, 3 + i, b"9" * (3 + i))
                self.assertEqual(c.exchange(set_k), b"STORED\r\nMN\r\n")
        finally:
            c.close()

    def cluster(self, *args):
        """n1 alone with the keys loaded, then n2 and n3 join; returns the three servers once
        every node has all three alive."""
        nodes = []
        for name in ("n1", "n2", "n3"):
            rpc = harness.free_port()
            join = ["--join", "127.0.0.1:%d" % nodes[0][1]] if nodes else []
            server = self.start(lambda port, name=name, rpc=rpc, join=join: [
                harness.BIFROSTD, "-l", "127.0.0.1", "-p", str(port), "--rpc-port", str(rpc),
                "--node-name", name, "-m", "64", "--warm-window", "600000"] + list(args) + join)
            nodes.append((server, rpc))
            if name == "n1":
                self.preload(server)
        if not harness.all_alive([rpc for _, rpc in nodes], 3):
            self.fail("membership did not converge")
        self.rpc_ports = [rpc for _, rpc in nodes]
        return [s for s, _ in nodes]


class Cluster(ClusterNodes):
    """A lone bifrostd against a 3-node cluster inside its warming window."""

    def check(self, args, through, seeds):
        lone = self.bifrostd("-t", "1")
        self.preload(lone)
        nodes = self.cluster(*args)
        for seed in seeds:
            self.compare(lone, nodes[through], seed, 1500, what="cluster %s" % " ".join(args))

    def test_one_replica_one_thread(self):
        self.check(["-t", "1"], 1, (21, 22, 25))

    def test_two_replicas_two_threads(self):
        self.check(["-t", "2", "--replicas", "2"], 0, (23, 24, 26))

    def test_members_reached_by_rpc_only(self):
        self.check(["-t", "2", "--cluster-links", "off", "--replicas", "2"], 2, (27, 28))

    def test_two_replicas_whose_new_owners_warm_on_read(self):
        self.check(["-t", "2", "--replicas", "2", "--rereplicate", "off"], 1, (804, 30))

    def test_new_owners_that_warm_on_read(self):
        self.check(["-t", "1", "--replicas", "3", "--rereplicate", "off", "--rpc-thread", "loop"],
                   2, (728, 29))


class RingChange(ClusterNodes):
    """A sweep, not part of `make test`: the stream goes on while the ring changes under it (a
    fourth node joins, or n2 or n3 drains, at a send chosen by the seed). Where the change
    lands in the stream depends on timing, so a seed that finds a fault may not find it again;
    `make test` runs the fixed cases above. Run it with the environment naming the sweep:
      BIFROST_RING_CHANGE="join4|drain2|drain3|none FIRST-LAST THROUGH [bifrostd args...]"
      python3 test_differential.py --against bifrost --bifrostd build/bin/bifrostd RingChange
    e.g. "drain2 500-540 2" or "join4 200-240 1 --replicas 2" (session 34 found four faults
    this way: tests/integration/test_cluster.cpp names them). "none" changes nothing: whether
    a divergence needs the change."""

    def test_sweep(self):
        spec = os.environ.get("BIFROST_RING_CHANGE", "").split()
        if len(spec) < 3:
            self.skipTest("a sweep: set BIFROST_RING_CHANGE to run it")
        mode, seeds, through, args = spec[0], spec[1].split("-"), int(spec[2]), spec[3:]
        for seed in range(int(seeds[0]), int(seeds[1])):
            lone = self.bifrostd("-t", "1")
            self.preload(lone)
            nodes = self.cluster(*args)
            at = random.Random(seed).randrange(20, 1500)
            self.compare(lone, nodes[through], seed, 3000,
                         what="%s at send %d, %s" % (mode, at, " ".join(args)),
                         event=(at, lambda: self.change(mode, args)))
            for server in self.servers:
                server.stop()
            self.servers = []

    def change(self, mode, args):
        if mode == "none":
            return
        if mode == "join4":
            seed_rpc = self.rpc_ports[0]
            self.start(lambda port, rpc=harness.free_port(): [
                harness.BIFROSTD, "-l", "127.0.0.1", "-p", str(port), "--rpc-port", str(rpc),
                "--node-name", "n4", "-m", "64", "--warm-window", "600000"] + list(args) +
                ["--join", "127.0.0.1:%d" % seed_rpc])
        else:  # (bifrostctl drain returns at once; the node leaves meanwhile)
            rc, out = harness.bifrostctl(self.rpc_ports[{"drain2": 1, "drain3": 2}[mode]], "drain")
            self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    harness.main()
