#!/usr/bin/env python3
"""noreply on every command, pipelining, and commands split at every byte."""

import os
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ServerTestCase  # noqa: E402


def value_reply(key, value, flags=0):
    return b"VALUE %s %d %d\r\n%s\r\nEND\r\n" % (key, flags, len(value), value)


class NoreplyTest(ServerTestCase):
    """Each command with noreply, then a get: the only bytes back are the get's reply."""

    def check(self, c, commands, key, want_value, flags=0):
        c.send(commands + b"get %s\r\n" % key)
        want = value_reply(key, want_value, flags) if want_value is not None else b"END\r\n"
        got = c.recv_until(b"END\r\n")
        self.assertEqual(got, want)
        self.assertEqual(c.recv_idle(0.05), b"")

    def test_set(self):
        c, k = self.client(), self.key()
        self.check(c, b"set %s 3 0 2 noreply\r\nhi\r\n" % k, k, b"hi", 3)

    def test_add(self):
        c, k = self.client(), self.key()
        self.check(c, b"add %s 0 0 1 noreply\r\nA\r\n" % k, k, b"A")
        self.check(c, b"add %s 0 0 1 noreply\r\nB\r\n" % k, k, b"A")  # NOT_STORED, silent

    def test_replace(self):
        c, k = self.client(), self.key()
        self.check(c, b"replace %s 0 0 1 noreply\r\nR\r\n" % k, k, None)
        c.call(b"set %s 0 0 1\r\nA\r\n" % k)
        self.check(c, b"replace %s 0 0 1 noreply\r\nR\r\n" % k, k, b"R")

    def test_append_prepend(self):
        c, k = self.client(), self.key()
        self.check(c, b"append %s 0 0 1 noreply\r\nX\r\n" % k, k, None)
        c.call(b"set %s 0 0 1\r\nM\r\n" % k)
        self.check(c, b"append %s 0 0 1 noreply\r\nZ\r\nprepend %s 0 0 1 noreply\r\nA\r\n" % (k, k), k, b"AMZ")

    def test_cas(self):
        c, k = self.client(), self.key()
        self.check(c, b"cas %s 0 0 1 1 noreply\r\nX\r\n" % k, k, None)  # NOT_FOUND, silent
        c.call(b"set %s 0 0 1\r\nA\r\n" % k)
        c.send(b"gets %s\r\n" % k)
        cas = int(c.line().split()[4])
        c.recv_until(b"END\r\n")
        self.check(c, b"cas %s 0 0 1 %d noreply\r\nB\r\n" % (k, cas + 1), k, b"A")  # EXISTS
        self.check(c, b"cas %s 0 0 1 %d noreply\r\nC\r\n" % (k, cas), k, b"C")

    def test_delete(self):
        c, k = self.client(), self.key()
        c.call(b"set %s 0 0 1\r\nA\r\n" % k)
        self.check(c, b"delete %s noreply\r\n" % k, k, None)
        self.check(c, b"delete %s noreply\r\n" % k, k, None)

    def test_incr_decr(self):
        c, k = self.client(), self.key()
        self.check(c, b"incr %s 1 noreply\r\n" % k, k, None)
        c.call(b"set %s 0 0 2\r\n10\r\n" % k)
        self.check(c, b"incr %s 5 noreply\r\n" % k, k, b"15")
        self.check(c, b"decr %s 3 noreply\r\n" % k, k, b"12")

    def test_touch(self):
        c, k = self.client(), self.key()
        c.call(b"set %s 0 0 1\r\nA\r\n" % k)
        self.check(c, b"touch %s 100 noreply\r\n" % k, k, b"A")
        ttl = int(c.call(b"mg %s t\r\n" % k).split()[1][1:])
        self.assertTrue(95 <= ttl <= 100, ttl)

    def test_flush_all_noreply(self):
        c, k = self.client(), self.key()
        c.call(b"set %s 0 0 1\r\nA\r\n" % k)
        self.check(c, b"flush_all noreply\r\n", k, None)
        c.call(b"set %s 0 0 1\r\nA\r\n" % k)
        self.check(c, b"flush_all 0 noreply\r\n", k, None)

    def test_verbosity(self):
        c, k = self.client(), self.key()
        self.check(c, b"verbosity 0 noreply\r\n", k, None)

    def test_noreply_pymemcache(self):
        mc = self.pymc(default_noreply=True)
        k = self.key()
        self.assertTrue(mc.set(k, b"v"))  # noreply: pymemcache returns True without reading
        self.assertTrue(mc.add(k, b"w"))
        self.assertTrue(mc.append(k, b"x"))
        self.assertEqual(mc.get(k), b"vx")
        mc.delete(k, noreply=True)
        self.assertIsNone(mc.get(k))


class PipelineTest(ServerTestCase):
    def test_hundred_mixed_commands(self):
        """100 mixed commands in one sendall; replies modelled here, in order, byte-exact."""
        c = self.client()
        p = self.key()
        version = c.call(b"version\r\n")
        store = {}  # key -> (flags, value): the model
        cmds, out = [], []
        for i in range(100):
            k = b"%s_%d" % (p, (i * 7) % 13)
            kind = i % 10
            if kind in (0, 5):
                v = b"%d" % (i * 3)
                cmds.append(b"set %s %d 0 %d\r\n%s\r\n" % (k, i, len(v), v))
                store[k] = (i, v)
                out.append(b"STORED\r\n")
            elif kind == 1:
                keys = (k, b"%s_0" % p, b"%s_nope" % p)
                cmds.append(b"get " + b" ".join(keys) + b"\r\n")
                r = b""
                for kk in keys:
                    if kk in store:
                        f, v = store[kk]
                        r += b"VALUE %s %d %d\r\n%s\r\n" % (kk, f, len(v), v)
                out.append(r + b"END\r\n")
            elif kind == 2:
                v = b"%d" % (i + 10)  # no leading zero: incr never shortens a value
                cmds.append(b"add %s 0 0 %d\r\n%s\r\n" % (k, len(v), v))
                if k in store:
                    out.append(b"NOT_STORED\r\n")
                else:
                    store[k] = (0, v)
                    out.append(b"STORED\r\n")
            elif kind == 3:
                cmds.append(b"incr %s 1\r\n" % k)
                if k not in store:
                    out.append(b"NOT_FOUND\r\n")
                else:
                    f, v = store[k]
                    nv = b"%d" % (int(v) + 1)
                    self.assertGreaterEqual(len(nv), len(v))  # clear of memcached's space padding
                    store[k] = (f, nv)
                    out.append(nv + b"\r\n")
            elif kind == 4:
                cmds.append(b"version\r\n")
                out.append(version)
            elif kind == 6:
                cmds.append(b"delete %s\r\n" % k)
                out.append(b"DELETED\r\n" if store.pop(k, None) else b"NOT_FOUND\r\n")
            elif kind == 7:
                cmds.append(b"bogus_command\r\n")
                out.append(b"ERROR\r\n")
            elif kind == 8:
                cmds.append(b"append %s 0 0 1\r\n7\r\n" % k)
                if k in store:
                    f, v = store[k]
                    store[k] = (f, v + b"7")
                    out.append(b"STORED\r\n")
                else:
                    out.append(b"NOT_STORED\r\n")
            else:
                cmds.append(b"mn\r\n")
                out.append(b"MN\r\n")
        expected = b"".join(out)
        c.send(b"".join(cmds))
        got = c.recv_exact(len(expected), timeout=10)
        if got != expected:  # show the first differing reply
            for i, o in enumerate(out):
                self.assertEqual(got[: len(o)], o, "reply %d to %r" % (i, cmds[i]))
                got = got[len(o):]
        self.assertEqual(c.recv_idle(0.1), b"")

    def test_many_gets_in_one_send(self):
        c = self.client()
        k = self.key()
        c.call(b"set %s 0 0 5\r\nhello\r\n" % k)
        n = 500
        c.send(b"get %s\r\n" % k * n)
        want = value_reply(k, b"hello") * n
        self.assertEqual(c.recv_exact(len(want), timeout=10), want)

    def test_pipelined_pymemcache_many(self):
        mc = self.pymc(default_noreply=False)
        values = {self.key(str(i)): b"x" * i for i in range(100)}
        self.assertEqual(mc.set_many(values), [])
        self.assertEqual(mc.get_many(list(values)), values)


class SplitBytesTest(ServerTestCase):
    """Commands that arrive one byte at a time give the same replies."""

    def trickle(self, c, data, pause=0.002):
        deadline = time.monotonic() + 20
        for i in range(len(data)):
            self.assertLess(time.monotonic(), deadline, "trickle took too long")
            c.send(data[i:i + 1])
            time.sleep(pause)

    def test_set_get_one_byte_at_a_time(self):
        c = self.client()
        k = self.key()
        data = b"set %s 5 0 6\r\nhe\r\nlo\r\nget %s\r\n" % (k, k)
        self.trickle(c, data)
        self.assertEqual(c.recv_until(b"END\r\n"), b"STORED\r\n" + value_reply(k, b"he\r\nlo", 5))

    def test_meta_and_noreply_one_byte_at_a_time(self):
        c = self.client()
        k = self.key()
        data = b"set %s 0 0 1 noreply\r\nA\r\nms %s 2 T0 O7\r\nhi\r\nmg %s v k\r\nincr nope_%s 1\r\n" % (k, k, k, k)
        self.trickle(c, data)
        want = b"HD O7\r\nVA 2 k%s\r\nhi\r\nNOT_FOUND\r\n" % k
        self.assertEqual(c.recv_exact(len(want)), want)

    def test_every_split_point(self):
        """The same request split in two at every byte position (one connection)."""
        k = self.key()
        data = b"set %s 0 0 3\r\nabc\r\nget %s\r\n" % (k, k)
        want = b"STORED\r\n" + value_reply(k, b"abc")
        c = self.client()
        for i in range(1, len(data)):
            c.send(data[:i])
            time.sleep(0.002)
            c.send(data[i:])
            self.assertEqual(c.recv_exact(len(want)), want, "split at %d" % i)


if __name__ == "__main__":
    harness.main()
