#!/usr/bin/env python3
"""Classic text protocol: every command, through pymemcache and as exact bytes."""

import os
import sys
import re
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ServerTestCase, raw_stats, read_stats  # noqa: E402

from pymemcache.exceptions import MemcacheClientError  # noqa: E402

U64_MAX = 2**64 - 1


class PymemcacheCommandsTest(ServerTestCase):
    """A real client library (pymemcache, bytes in and out) over every ordinary command."""

    def mc(self):
        return self.pymc(default_noreply=False)

    def test_set_get(self):
        mc = self.mc()
        k = self.key()
        self.assertIsNone(mc.get(k))
        self.assertTrue(mc.set(k, b"value"))
        self.assertEqual(mc.get(k), b"value")
        self.assertTrue(mc.set(k, b"other"))
        self.assertEqual(mc.get(k), b"other")

    def test_get_many_hits_and_misses(self):
        mc = self.mc()
        keys = [self.key(str(i)) for i in range(40)]
        for i, k in enumerate(keys):
            if i % 3 == 0:
                self.assertTrue(mc.set(k, b"v%d" % i))
        got = mc.get_many(keys)
        want = {k: b"v%d" % i for i, k in enumerate(keys) if i % 3 == 0}
        self.assertEqual(got, want)

    def test_gets_many_and_cas(self):
        mc = self.mc()
        a, b, miss = self.key("a"), self.key("b"), self.key("miss")
        mc.set(a, b"1")
        mc.set(b, b"2")
        got = mc.gets_many([a, b, miss])
        self.assertEqual(set(got), {a, b})
        self.assertEqual(got[a][0], b"1")
        self.assertNotEqual(got[a][1], got[b][1])
        value, cas = mc.gets(a)
        self.assertEqual(value, b"1")
        self.assertTrue(mc.cas(a, b"new", cas))
        self.assertFalse(mc.cas(a, b"again", cas))  # EXISTS: cas changed
        self.assertEqual(mc.get(a), b"new")
        self.assertIsNone(mc.cas(miss, b"x", cas))  # NOT_FOUND
        self.assertEqual(mc.gets(miss), (None, None))

    def test_add_replace(self):
        mc = self.mc()
        k = self.key()
        self.assertFalse(mc.replace(k, b"r"))
        self.assertTrue(mc.add(k, b"a"))
        self.assertFalse(mc.add(k, b"b"))
        self.assertEqual(mc.get(k), b"a")
        self.assertTrue(mc.replace(k, b"r"))
        self.assertEqual(mc.get(k), b"r")

    def test_append_prepend(self):
        mc = self.mc()
        k = self.key()
        self.assertFalse(mc.append(k, b"x"))
        self.assertFalse(mc.prepend(k, b"x"))
        self.assertIsNone(mc.get(k))
        mc.set(k, b"mid")
        self.assertTrue(mc.append(k, b"-end"))
        self.assertTrue(mc.prepend(k, b"start-"))
        self.assertEqual(mc.get(k), b"start-mid-end")

    def test_delete(self):
        mc = self.mc()
        k = self.key()
        self.assertFalse(mc.delete(k))
        mc.set(k, b"v")
        self.assertTrue(mc.delete(k))
        self.assertIsNone(mc.get(k))
        self.assertFalse(mc.delete(k))

    def test_incr_decr(self):
        mc = self.mc()
        k = self.key()
        self.assertIsNone(mc.incr(k, 1))
        self.assertIsNone(mc.decr(k, 1))
        mc.set(k, b"10")
        self.assertEqual(mc.incr(k, 5), 15)
        self.assertEqual(mc.decr(k, 3), 12)
        self.assertEqual(mc.decr(k, 100), 0)  # floor at 0
        mc.set(k, str(U64_MAX).encode())
        self.assertEqual(mc.incr(k, 1), 0)  # wraps at 2^64
        self.assertEqual(mc.incr(k, 1), 1)

    def test_incr_non_numeric(self):
        mc = self.mc()
        k = self.key()
        mc.set(k, b"abc")
        with self.assertRaises(MemcacheClientError) as cm:
            mc.incr(k, 1)
        self.assertIn(b"cannot increment or decrement non-numeric value", cm.exception.args[0])
        self.assertEqual(mc.get(k), b"abc")

    def test_touch(self):
        mc = self.mc()
        k = self.key()
        self.assertFalse(mc.touch(k, 100))
        mc.set(k, b"v")
        self.assertTrue(mc.touch(k, 100))
        self.assertEqual(mc.get(k), b"v")

    def test_version_and_stats(self):
        mc = self.mc()
        self.assertTrue(mc.version())
        st = mc.stats()
        for name in (b"pid", b"uptime", b"curr_items", b"cmd_get"):
            self.assertIn(name, st)
        self.assertEqual(int(st[b"pid"]), self.server.pid)


class TextExactBytesTest(ServerTestCase):
    """Exact reply bytes of the classic commands over a raw socket."""

    def test_storage_replies(self):
        c = self.client()
        k = self.key()
        self.assertEqual(c.call(b"set %s 0 0 1\r\nA\r\n" % k), b"STORED\r\n")
        self.assertEqual(c.call(b"add %s 0 0 1\r\nB\r\n" % k), b"NOT_STORED\r\n")
        self.assertEqual(c.call(b"replace %s 0 0 1\r\nC\r\n" % k), b"STORED\r\n")
        self.assertEqual(c.call(b"append %s 0 0 1\r\nD\r\n" % k), b"STORED\r\n")
        self.assertEqual(c.call(b"prepend %s 0 0 1\r\nE\r\n" % k), b"STORED\r\n")
        self.assertEqual(c.call(b"get %s\r\n" % k, b"END\r\n"), b"VALUE %s 0 3\r\nECD\r\nEND\r\n" % k)
        m = self.key("missing")
        self.assertEqual(c.call(b"replace %s 0 0 1\r\nC\r\n" % m), b"NOT_STORED\r\n")
        self.assertEqual(c.call(b"append %s 0 0 1\r\nC\r\n" % m), b"NOT_STORED\r\n")
        self.assertEqual(c.call(b"prepend %s 0 0 1\r\nC\r\n" % m), b"NOT_STORED\r\n")
        self.assertEqual(c.call(b"add %s 0 0 1\r\nC\r\n" % m), b"STORED\r\n")
        self.assertEqual(c.call(b"delete %s\r\n" % m), b"DELETED\r\n")
        self.assertEqual(c.call(b"delete %s\r\n" % m), b"NOT_FOUND\r\n")
        self.assertEqual(c.call(b"touch %s 10\r\n" % m), b"NOT_FOUND\r\n")
        self.assertEqual(c.call(b"touch %s 10\r\n" % k), b"TOUCHED\r\n")

    def test_append_keeps_flags(self):
        c = self.client()
        k = self.key()
        self.assertEqual(c.call(b"set %s 7 0 1\r\nA\r\n" % k), b"STORED\r\n")
        self.assertEqual(c.call(b"append %s 99 0 1\r\nB\r\n" % k), b"STORED\r\n")
        self.assertEqual(c.call(b"get %s\r\n" % k, b"END\r\n"), b"VALUE %s 7 2\r\nAB\r\nEND\r\n" % k)

    def test_flags_roundtrip(self):
        c = self.client()
        for flags in (0, 1, 65535, 4294967295):
            k = self.key(str(flags))
            self.assertEqual(c.call(b"set %s %d 0 2\r\nab\r\n" % (k, flags)), b"STORED\r\n")
            self.assertEqual(
                c.call(b"get %s\r\n" % k, b"END\r\n"), b"VALUE %s %d 2\r\nab\r\nEND\r\n" % (k, flags)
            )

    def test_get_many_keys_mixed(self):
        c = self.client()
        keys = [self.key(str(i)) for i in range(50)]
        for i, k in enumerate(keys):
            if i % 2:
                self.assertEqual(c.call(b"set %s %d 0 %d\r\n%s\r\n" % (k, i, len(k), k)), b"STORED\r\n")
        want = b"".join(
            b"VALUE %s %d %d\r\n%s\r\n" % (k, i, len(k), k) for i, k in enumerate(keys) if i % 2
        ) + b"END\r\n"
        self.assertEqual(c.call(b"get " + b" ".join(keys) + b"\r\n", b"END\r\n"), want)
        # a key asked twice is answered twice
        k = keys[1]
        self.assertEqual(
            c.call(b"get %s %s\r\n" % (k, k), b"END\r\n"),
            (b"VALUE %s 1 %d\r\n%s\r\n" % (k, len(k), k)) * 2 + b"END\r\n",
        )

    def _gets_cas(self, c, k):
        head = c.line()
        parts = head.split()
        self.assertEqual(parts[0], b"VALUE", head)
        self.assertEqual(parts[1], k)
        n = int(parts[3])
        c.recv_exact(n + 2)
        return int(parts[4])

    def test_gets_many_keys_and_cas_commands(self):
        c = self.client()
        a, b, miss = self.key("a"), self.key("b"), self.key("miss")
        c.call(b"set %s 0 0 1\r\n1\r\n" % a)
        c.call(b"set %s 0 0 1\r\n2\r\n" % b)
        c.send(b"gets %s %s %s\r\n" % (a, miss, b))
        cas_a = self._gets_cas(c, a)
        cas_b = self._gets_cas(c, b)
        self.assertEqual(c.line(), b"END\r\n")
        self.assertNotEqual(cas_a, cas_b)
        self.assertEqual(c.call(b"cas %s 0 0 1 %d\r\nX\r\n" % (a, cas_a + 1000)), b"EXISTS\r\n")
        self.assertEqual(c.call(b"cas %s 0 0 1 %d\r\nX\r\n" % (a, cas_a)), b"STORED\r\n")
        self.assertEqual(c.call(b"cas %s 0 0 1 %d\r\nY\r\n" % (a, cas_a)), b"EXISTS\r\n")
        self.assertEqual(c.call(b"cas %s 0 0 1 %d\r\nX\r\n" % (miss, cas_a)), b"NOT_FOUND\r\n")
        self.assertEqual(c.get_value(a), b"X")
        c.send(b"gets %s\r\n" % a)
        cas_a2 = self._gets_cas(c, a)
        self.assertEqual(c.line(), b"END\r\n")
        self.assertNotEqual(cas_a2, cas_a)

    def test_gat_gats(self):
        c = self.client()
        a, b, miss = self.key("a"), self.key("b"), self.key("miss")
        c.call(b"set %s 3 0 2\r\naa\r\n" % a)
        c.call(b"set %s 4 0 2\r\nbb\r\n" % b)
        self.assertEqual(
            c.call(b"gat 100 %s %s %s\r\n" % (a, miss, b), b"END\r\n"),
            b"VALUE %s 3 2\r\naa\r\nVALUE %s 4 2\r\nbb\r\nEND\r\n" % (a, b),
        )
        self.assertEqual(c.call(b"gat 100 %s\r\n" % miss, b"END\r\n"), b"END\r\n")
        c.send(b"gats 200 %s %s\r\n" % (miss, a))
        head = c.line().split()
        self.assertEqual(head[:4], [b"VALUE", a, b"3", b"2"])
        self.assertEqual(len(head), 5)
        int(head[4])
        self.assertEqual(c.recv_exact(4), b"aa\r\n")
        self.assertEqual(c.line(), b"END\r\n")
        # the TTL was updated (meta get shows the remaining TTL)
        ttl = int(c.call(b"mg %s t\r\n" % a).split()[1][1:])
        self.assertTrue(190 <= ttl <= 200, ttl)
        # gat 0 removes the TTL again
        c.call(b"gat 0 %s\r\n" % a, b"END\r\n")
        self.assertEqual(c.call(b"mg %s t\r\n" % a), b"HD t-1\r\n")

    def test_incr_decr_exact(self):
        c = self.client()
        k = self.key()
        self.assertEqual(c.call(b"incr %s 1\r\n" % k), b"NOT_FOUND\r\n")
        self.assertEqual(c.call(b"decr %s 1\r\n" % k), b"NOT_FOUND\r\n")
        c.call(b"set %s 5 0 2\r\n99\r\n" % k)
        self.assertEqual(c.call(b"incr %s 1\r\n" % k), b"100\r\n")  # length grows 2 -> 3
        self.assertEqual(c.call(b"get %s\r\n" % k, b"END\r\n"), b"VALUE %s 5 3\r\n100\r\nEND\r\n" % k)
        self.assertEqual(c.call(b"incr %s 18446744073709551515\r\n" % k), b"18446744073709551615\r\n")
        self.assertEqual(c.call(b"incr %s 2\r\n" % k), b"1\r\n")  # wraps at 2^64
        self.assertEqual(c.call(b"decr %s 7\r\n" % k), b"0\r\n")  # floor at 0
        self.assertEqual(c.call(b"decr %s 1\r\n" % k), b"0\r\n")
        # a shorter number: memcached pads the old length with spaces (see README)
        self.assertEqual(c.get_value(k).rstrip(b" "), b"0")
        c.call(b"set %s 0 0 22\r\n0000000000000000000001\r\n" % k)
        self.assertEqual(c.call(b"incr %s 1\r\n" % k), b"2\r\n")
        self.assertEqual(c.get_value(k).rstrip(b" "), b"2")

    def test_decr_shrinking_length(self):
        c = self.client()
        k = self.key()
        c.call(b"set %s 0 0 3\r\n100\r\n" % k)
        self.assertEqual(c.call(b"decr %s 1\r\n" % k), b"99\r\n")
        # memcached rewrites the number in place and pads with spaces ("99 "): allowed both
        self.assertIn(c.get_value(k), (b"99", b"99 "))
        self.assertEqual(c.call(b"incr %s 1\r\n" % k), b"100\r\n")
        self.assertEqual(c.get_value(k), b"100")

    def test_incr_errors(self):
        c = self.client()
        k = self.key()
        c.call(b"set %s 0 0 3\r\nabc\r\n" % k)
        self.assertEqual(
            c.call(b"incr %s 1\r\n" % k),
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        )
        self.assertEqual(
            c.call(b"decr %s 1\r\n" % k),
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        )
        c.call(b"set %s 0 0 2\r\n-1\r\n" % k)
        self.assertEqual(
            c.call(b"incr %s 1\r\n" % k),
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        )
        for delta in (b"abc", b"-1", b"18446744073709551616"):
            self.assertEqual(
                c.call(b"incr %s %s\r\n" % (k, delta)), b"CLIENT_ERROR invalid numeric delta argument\r\n"
            )
        self.assertEqual(c.get_value(k), b"-1")
        # strtoull reads the value as a C string: digits up to a NUL count, as up to a space
        for value, after in ((b"1\x00", b"2"), (b"7\x00x", b"8"), (b" 4 ", b"5")):
            c.call(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(value), value))
            self.assertEqual(c.call(b"incr %s 1\r\n" % k), after + b"\r\n")
        c.call(b"set %s 0 0 2\r\n\x001\r\n" % k)
        self.assertEqual(
            c.call(b"incr %s 1\r\n" % k),
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        )

    def test_key_of_250_bytes(self):
        c = self.client()
        k = b"k" * 250
        self.assertEqual(c.call(b"set %s 0 0 1\r\nx\r\n" % k), b"STORED\r\n")
        self.assertEqual(c.get_value(k), b"x")
        self.assertEqual(c.call(b"delete %s\r\n" % k), b"DELETED\r\n")

    def test_version(self):
        c = self.client()
        r = c.call(b"version\r\n")
        self.assertTrue(r.startswith(b"VERSION ") and r.endswith(b"\r\n") and len(r) > 10, r)
        self.assertNotIn(b" ", r[8:-2])

    def test_verbosity(self):
        c = self.client()
        self.assertEqual(c.call(b"verbosity 1\r\n"), b"OK\r\n")
        self.assertEqual(c.call(b"verbosity 0\r\n"), b"OK\r\n")
        c.send(b"verbosity 1 noreply\r\nverbosity 0 noreply\r\n")
        self.assertEqual(c.call(b"version\r\n")[:8], b"VERSION ")

    def test_verbosity_shows_in_stats_settings(self):
        c = self.client()

        def level():
            lines = c.call(b"stats settings\r\n", term=b"END\r\n").split(b"\r\n")
            return [l for l in lines if l.startswith(b"STAT verbosity ")]

        # memcached keeps at most its MAX_VERBOSITY_LEVEL (2); a refused level changes nothing.
        self.assertEqual(c.call(b"verbosity 7\r\n"), b"OK\r\n")
        self.assertEqual(level(), [b"STAT verbosity 2"])
        c.send(b"verbosity 1 noreply\r\n")
        self.assertEqual(level(), [b"STAT verbosity 1"])
        self.assertEqual(c.call(b"verbosity x\r\n"), b"CLIENT_ERROR bad command line format\r\n")
        self.assertEqual(level(), [b"STAT verbosity 1"])
        self.assertEqual(c.call(b"verbosity 0\r\n"), b"OK\r\n")
        self.assertEqual(level(), [b"STAT verbosity 0"])

    def test_delete_legacy_zero_time(self):
        c = self.client()
        k = self.key()
        c.call(b"set %s 0 0 1\r\nx\r\n" % k)
        self.assertEqual(c.call(b"delete %s 0\r\n" % k), b"DELETED\r\n")
        self.assertEqual(
            c.call(b"delete %s 5\r\n" % k),
            b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
        )

    def test_bare_newline_terminator(self):
        c = self.client()
        k = self.key()
        self.assertEqual(c.call(b"set %s 0 0 2\nhi\r\n" % k), b"STORED\r\n")
        self.assertEqual(c.call(b"get %s\n" % k, b"END\r\n"), b"VALUE %s 0 2\r\nhi\r\nEND\r\n" % k)

    def test_extra_spaces(self):
        c = self.client()
        k = self.key()
        c.call(b"set %s 0 0 1\r\nx\r\n" % k)
        self.assertEqual(c.call(b"get  %s  \r\n" % k, b"END\r\n"), b"VALUE %s 0 1\r\nx\r\nEND\r\n" % k)

    def test_quit(self):
        c = self.client()
        k = self.key()
        c.send(b"get %s\r\nquit\r\nget %s\r\n" % (k, k))
        self.assertEqual(c.expect_closed(), b"END\r\n")
        self.assertAlive()

    def test_nothing_after_quit_runs(self):
        # Commands pipelined behind quit in the same write are not executed.
        c = self.client()
        k = self.key()
        c.send(b"version\r\nquit\r\nset %s 0 0 1\r\nx\r\n" % k)
        self.assertTrue(c.expect_closed().startswith(b"VERSION "))
        self.assertEqual(self.client().call(b"get %s\r\n" % k, b"END\r\n"), b"END\r\n")

    def test_quit_pymemcache(self):
        mc = self.pymc(default_noreply=False)
        mc.set(self.key(), b"v")
        mc.quit()
        self.assertAlive()


class MemlimitTest(ServerTestCase):
    """cache_memlimit N: -m changed at run time, in memcached's words."""

    def setUp(self):
        # (both tests share the server: each leaves it at -m 64 even when it fails)
        self.addCleanup(lambda: self.server.client().call(b"cache_memlimit 64\r\n"))

    def test_answers_as_memcached(self):
        c = self.client()
        small = b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m"
        for send, want in ((b"cache_memlimit 7", small),
                           (b"cache_memlimit 4294967296", small),  # (a 32-bit number: 0)
                           (b"cache_memlimit 1000000001",
                            b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes"),
                           (b"cache_memlimit abc", b"ERROR"), (b"cache_memlimit -5", b"ERROR"),
                           (b"cache_memlimit", b"ERROR"), (b"cache_memlimit 20 x y", b"ERROR"),
                           (b"cache_memlimit 18446744073709551616", b"ERROR"),
                           (b"cache_memlimit 18446744073709551615",  # (2^32 - 1 megabytes)
                            b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes"),
                           (b"cache_memlimit 4294967304", b"OK"),  # (8)
                           (b"cache_memlimit  20", b"OK"), (b"cache_memlimit 20 x", b"OK")):
            self.assertEqual(c.call(send + b"\r\n"), want + b"\r\n", send)
        self.assertEqual(int(raw_stats(c)["limit_maxbytes"]), 20 << 20)
        # noreply silences the answer, an error's too.
        self.assertEqual(c.call(b"cache_memlimit 7 noreply\r\ncache_memlimit abc noreply\r\n"
                                b"cache_memlimit 32 noreply\r\nversion\r\n")[:8], b"VERSION ")
        self.assertEqual(int(raw_stats(c)["limit_maxbytes"]), 32 << 20)
        self.assertEqual(int(raw_stats(c, b"settings")["maxbytes"]), 32 << 20)
        self.assertEqual(c.call(b"cache_memlimit 64\r\n"), b"OK\r\n")
        # Past the -m it started with: memcached grows, a node refuses (its open files limit
        # was sized for that many segments).
        more = c.call(b"cache_memlimit 128\r\n")
        if harness.is_bifrost():
            self.assertEqual(more, b"MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n")
        else:
            self.assertEqual(more, b"OK\r\n")
            c.call(b"cache_memlimit 64\r\n")

    def test_a_lower_limit_holds_less(self):
        c = self.client()
        value = b"v" * 100000
        for i in range(400):  # 40 MB into -m 64
            c.send(b"set %s 0 0 %d noreply\r\n" % (self.key(str(i)), len(value)) + value + b"\r\n")
        self.assertEqual(c.call(b"version\r\n")[:8], b"VERSION ")
        before = raw_stats(c)
        self.assertEqual(c.call(b"cache_memlimit 16\r\n"), b"OK\r\n")
        for i in range(400, 600):  # and 20 MB more
            c.send(b"set %s 0 0 %d noreply\r\n" % (self.key(str(i)), len(value)) + value + b"\r\n")
        self.assertEqual(c.call(b"version\r\n")[:8], b"VERSION ")
        after = raw_stats(c)
        self.assertEqual(c.get_value(self.key("599")), value)  # the newest is there
        if harness.is_bifrost():  # (memcached keeps the pages it has; it stops growing)
            self.assertLessEqual(int(after["storage_segment_bytes"]), 17 << 20, after)
            self.assertLess(int(after["curr_items"]), int(before["curr_items"]))
        self.assertEqual(c.call(b"cache_memlimit 64\r\n"), b"OK\r\n")


class MemlimitLargeItemsTest(ServerTestCase):
    """cache_memlimit below what a node's shards need for -I 8m (each twice -I) is refused."""

    item_size = "8m"

    def test_a_limit_below_what_the_shards_need(self):
        c = self.client()
        self.addCleanup(lambda: self.server.client().call(b"cache_memlimit 64\r\n"))
        got = c.call(b"cache_memlimit 16\r\n")
        if harness.is_bifrost():  # (-t 2: two shards of at least 16 MiB each)
            self.assertEqual(got, b"MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n")
            self.assertEqual(int(raw_stats(c)["limit_maxbytes"]), 64 << 20)
        else:
            self.assertEqual(got, b"OK\r\n")
        self.assertEqual(c.call(b"cache_memlimit 32\r\n"), b"OK\r\n")
        value = b"x" * (7 << 20)  # (a value near -I still goes in)
        self.assertEqual(c.call(b"set %s 0 0 %d\r\n" % (self.key(), len(value)) + value + b"\r\n"),
                         b"STORED\r\n")


class StatsTest(ServerTestCase):
    NAMES = (
        "pid uptime time version curr_connections total_connections cmd_get cmd_set get_hits "
        "get_misses curr_items total_items bytes evictions limit_maxbytes threads"
    ).split()

    def test_names_and_values(self):
        c = self.client()
        st = raw_stats(c)
        for name in self.NAMES:
            self.assertIn(name, st)
        self.assertEqual(int(st["pid"]), self.server.pid)
        self.assertEqual(int(st["threads"]), 2)
        self.assertEqual(int(st["limit_maxbytes"]), 64 * 1024 * 1024)
        self.assertLess(abs(int(st["time"]) - time.time()), 5)
        self.assertTrue(0 <= int(st["uptime"]) < 3600)
        self.assertGreaterEqual(int(st["curr_connections"]), 1)
        for name in self.NAMES:
            if name != "version":
                int(st[name])

    def test_counters_change(self):
        c = self.client()
        a, b, miss = self.key("a"), self.key("b"), self.key("miss")
        before = {k: int(v) for k, v in raw_stats(c).items() if v.isdigit()}
        c.call(b"set %s 0 0 1\r\n1\r\n" % a)
        c.call(b"set %s 0 0 1\r\n2\r\n" % b)
        c.call(b"get %s %s %s\r\n" % (a, b, miss), b"END\r\n")
        c.call(b"get %s\r\n" % miss, b"END\r\n")
        after = {k: int(v) for k, v in raw_stats(c).items() if v.isdigit()}
        d = {k: after[k] - before[k] for k in before if k in after}
        self.assertEqual(d["cmd_get"], 4)
        self.assertEqual(d["get_hits"], 2)
        self.assertEqual(d["get_misses"], 2)
        self.assertEqual(d["cmd_set"], 2)
        self.assertEqual(d["curr_items"], 2)
        self.assertEqual(d["total_items"], 2)
        self.assertGreater(d["bytes"], 0)
        c.call(b"delete %s\r\n" % a)
        self.assertEqual(int(raw_stats(c)["curr_items"]), after["curr_items"] - 1)

    def test_touch_and_refusal_counters(self):
        # bifrostd counted the keys of gat/gats and mg T in cmd_get (their hits and misses in
        # touch_hits/touch_misses), had no store_too_large, and left an invalid flush_all
        # out of cmd_flush.
        c = self.client()
        a, miss = self.key("a"), self.key("miss")
        c.call(b"set %s 0 0 1\r\n1\r\n" % a)
        before = {k: int(v) for k, v in raw_stats(c).items() if v.isdigit()}
        c.call(b"gat 100 %s %s\r\n" % (a, miss), b"END\r\n")
        c.call(b"gats 100 %s\r\n" % a, b"END\r\n")
        c.call(b"touch %s 100\r\n" % a)
        c.call(b"mg %s T100\r\n" % a)
        self.assertEqual(c.call(b"set %s 0 0 %d\r\n" % (a, 1100000) + b"z" * 1100000 + b"\r\n"),
                         b"SERVER_ERROR object too large for cache\r\n")
        self.assertEqual(c.call(b"flush_all abc\r\n"),
                         b"CLIENT_ERROR invalid exptime argument\r\n")
        after = {k: int(v) for k, v in raw_stats(c).items() if v.isdigit()}
        d = {k: after[k] - before[k] for k in before if k in after}
        self.assertEqual(d["cmd_touch"], 5, d)
        self.assertEqual(d["touch_hits"], 4, d)
        self.assertEqual(d["touch_misses"], 1, d)
        self.assertEqual(d["cmd_get"], 0, d)
        self.assertEqual(d["get_hits"] + d["get_misses"], 0, d)
        self.assertEqual(after.get("store_too_large", 0) - before.get("store_too_large", 0), 1)
        self.assertEqual(d["cmd_flush"], 1, d)

    def delta(self, c, data, reply, until=None):
        """Sends `data` in one packet, checks the replies are exactly `reply` (or reads them
        up to `until`), and returns how much each numeric stat moved."""
        before = {k: int(v) for k, v in raw_stats(c).items() if v.isdigit()}
        c.send(data)
        if until is not None:
            c.recv_until(until)
        else:
            self.assertEqual(c.recv_exact(len(reply)), reply)
        after = {k: int(v) for k, v in raw_stats(c).items() if v.isdigit()}
        return {k: after[k] - before[k] for k in before if k in after}

    def test_counters_as_memcached_counts_them(self):
        # An audit against memcached 1.6.18 found bifrostd counting these otherwise.
        c = self.client()
        k, n, m = self.key("k"), self.key("n"), self.key("miss")
        c.call(b"set %s 0 0 2\r\n99\r\n" % n)
        c.call(b"set %s 0 0 1\r\nx\r\n" % k)
        # cmd_meta counts `me` only; `me` counts no hit or miss.
        d = self.delta(c, b"mn\r\nmg %s\r\nmd %s\r\n" % (m, m), b"MN\r\nEN\r\nNF\r\n")
        self.assertEqual(d["cmd_meta"], 0, d)
        d = self.delta(c, b"me %s\r\nme %s\r\n" % (k, m), None, until=b"EN\r\n")
        self.assertEqual((d["cmd_meta"], d["get_hits"], d["get_misses"]), (2, 0, 0), d)
        # A request refused before it runs counts in no command counter (a bad base64 key, an
        # opaque too long, too many flags).
        for bad in (b"mg !!!! b v\r\n", b"me !!!! b\r\n", b"mg %s v O%s\r\n" % (k, b"x" * 40),
                    b"mg %s v " % k + b"v " * 30 + b"\r\n"):
            d = self.delta(c, bad, None, until=b"\r\n")
            self.assertEqual((d["cmd_get"], d["cmd_meta"]), (0, 0), (bad, d))
        # mg T: a hit counts a touch, a miss a get.
        d = self.delta(c, b"mg %s T30\r\n" % m, b"EN\r\n")
        self.assertEqual((d["cmd_get"], d["get_misses"], d["cmd_touch"], d["touch_misses"]),
                         (1, 1, 0, 0), d)
        d = self.delta(c, b"mg %s T30\r\n" % k, b"HD\r\n")
        self.assertEqual((d["cmd_get"], d["cmd_touch"], d["touch_hits"]), (0, 1, 1), d)
        # md I marks stale: no delete hit. ma N makes the counter: no incr miss.
        d = self.delta(c, b"md %s I\r\n" % k, b"HD\r\n")
        self.assertEqual(d["delete_hits"], 0, d)
        d = self.delta(c, b"md %s C1\r\n" % k, b"EX\r\n")  # (another CAS: a miss)
        self.assertEqual((d["delete_hits"], d["delete_misses"]), (0, 1), d)
        d = self.delta(c, b"ma %s N0 J13 v\r\n" % self.key("made"), b"VA 2\r\n13\r\n")
        self.assertEqual((d["incr_misses"], d["incr_hits"]), (0, 0), d)
        # A counter whose number grows is a new item (total_items); one that does not is not.
        d = self.delta(c, b"incr %s 1\r\n" % n, b"100\r\n")
        self.assertEqual((d["total_items"], d["incr_hits"]), (1, 1), d)
        d = self.delta(c, b"incr %s 1\r\n" % n, b"101\r\n")
        self.assertEqual((d["total_items"], d["incr_hits"]), (0, 1), d)
        # A set with a bad data chunk counts in cmd_set (memcached counts, then checks).
        d = self.delta(c, b"set %s 0 0 2\r\nabcd\r\n" % m,
                       b"CLIENT_ERROR bad data chunk\r\nERROR\r\n")
        self.assertEqual(d["cmd_set"], 1, d)
        # A set refused as too large removes the old value but counts no delete.
        big = 1100000
        for key in (n, m):
            d = self.delta(c, b"set %s 0 0 %d\r\n" % (key, big) + b"z" * big + b"\r\n",
                           b"SERVER_ERROR object too large for cache\r\n")
            self.assertEqual((d["delete_hits"], d["delete_misses"]), (0, 0), d)
        self.assertEqual(c.call(b"get %s\r\n" % n), b"END\r\n")

    def test_items_found_expired_count_in_get_expired(self):
        # memcached counts an item any command finds expired in get_expired; reclaimed and
        # expired_unfetched are its background reclaim's (bifrostd counted them instead).
        c = self.client()
        for cmd, reply in ((b"get %s", b"END"), (b"delete %s", b"NOT_FOUND"),
                           (b"touch %s 10", b"NOT_FOUND"), (b"incr %s 1", b"NOT_FOUND"),
                           (b"mg %s v", b"EN"), (b"add %s 0 0 1\r\ny", b"STORED")):
            k = self.key(cmd.split()[0].decode())
            d = self.delta(c, b"set %s 0 -1 1\r\n5\r\n" % k + (cmd % k) + b"\r\n",
                           b"STORED\r\n" + reply + b"\r\n")
            self.assertEqual((d["get_expired"], d.get("reclaimed", 0),
                              d.get("expired_unfetched", 0)), (1, 0, 0), (cmd, d))

    def test_connections_counted(self):
        c = self.client()
        before = raw_stats(c)
        extra = [self.client() for _ in range(3)]
        for e in extra:
            e.call(b"version\r\n")
        after = raw_stats(c)
        # curr_connections also drops as earlier tests' connections finish closing (memcached
        # closes them asynchronously), so compare it with what is surely open: c and 3 extra.
        self.assertGreaterEqual(int(after["curr_connections"]), 4)
        self.assertGreaterEqual(int(after["total_connections"]), int(before["total_connections"]) + 3)

    def test_stats_settings(self):
        c = self.client()
        st = raw_stats(c, b"settings")
        for name in ("maxbytes", "maxconns", "tcpport", "item_size_max", "num_threads"):
            self.assertIn(name, st)
        self.assertEqual(int(st["maxbytes"]), 64 * 1024 * 1024)
        self.assertEqual(int(st["tcpport"]), self.server.port)
        self.assertEqual(int(st["num_threads"]), 2)
        self.assertEqual(int(st["item_size_max"]), 1024 * 1024)
        self.assertGreater(int(st["maxconns"]), 0)

    def test_stats_reset_zeroes_counters_not_gauges(self):
        c = self.client()
        a, miss = self.key("r"), self.key("rmiss")
        c.call(b"set %s 0 0 3\r\nabc\r\n" % a)
        c.call(b"get %s %s\r\n" % (a, miss), b"END\r\n")
        before = raw_stats(c)
        self.assertGreater(int(before["get_hits"]), 0)
        self.assertEqual(c.call(b"stats reset\r\n"), b"RESET\r\n")
        st = raw_stats(c)
        for name in ("get_hits", "get_misses", "cmd_get", "cmd_set", "total_items",
                     "delete_hits", "cas_misses", "touch_hits", "evictions"):
            self.assertEqual(int(st[name]), 0, name)
        # Gauges stay: the item is still there, and so is its memory.
        self.assertEqual(st["curr_items"], before["curr_items"])
        self.assertEqual(st["bytes"], before["bytes"])
        self.assertEqual(c.call(b"get %s\r\n" % a, b"END\r\n"),
                         b"VALUE %s 0 3\r\nabc\r\nEND\r\n" % a)
        st = raw_stats(c)
        self.assertEqual((int(st["get_hits"]), int(st["cmd_get"]), int(st["get_misses"])),
                         (1, 1, 0))

    def test_pipelined_stats_count_the_requests_before_them(self):
        # One write: each stats answers for the requests before it and none after it (once,
        # a stats read the shards before the ops ahead of it had reached them).
        c = self.client()
        a = self.key("pipe")

        value = b"VALUE %s 0 1\r\nx\r\nEND\r\n" % a
        c.send(b"stats reset\r\nset %s 0 0 1\r\nx\r\nget %s\r\nstats\r\nget %s\r\n"
               b"stats reset\r\nget %s\r\nstats\r\n" % (a, a, a, a))
        self.assertEqual(c.line(), b"RESET\r\n")
        self.assertEqual(c.line(), b"STORED\r\n")
        self.assertEqual(c.recv_until(b"END\r\n"), value)
        first = read_stats(c)
        self.assertEqual(c.recv_until(b"END\r\n"), value)
        self.assertEqual(c.line(), b"RESET\r\n")
        self.assertEqual(c.recv_until(b"END\r\n"), value)
        second = read_stats(c)
        got = lambda st: tuple(int(st[n]) for n in ("cmd_set", "total_items", "cmd_get", "get_hits"))
        self.assertEqual(got(first), (1, 1, 1, 1))
        self.assertEqual(got(second), (0, 0, 1, 1))

    def test_slab_and_item_stats_groups_end(self):
        # Monitoring tools ask for these with the other groups: a list (empty for bifrostd,
        # which has no slab classes) that ends, never ERROR.
        c = self.client()
        k = self.key("slab")
        c.call(b"set %s 0 0 1\r\nx\r\n" % k)
        for group in (b"items", b"slabs"):
            st = raw_stats(c, group)  # (fails on anything but STAT lines and END)
            if harness.is_bifrost():
                self.assertEqual(st, {})
        self.assertEqual(raw_stats(c, b"sizes"), {"sizes_status": "disabled"})
        self.assertEqual(c.call(b"version\r\n")[:8], b"VERSION ")

    def test_unknown_stats_group(self):
        c = self.client()
        self.assertEqual(c.call(b"stats nonsense_group\r\n"), b"ERROR\r\n")

    def test_subcommands_read_only_their_own_words(self):
        # memcached decides by the first word after `stats`; the others count only where the
        # subcommand reads them.
        c = self.client()
        usage = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"
        for send, want in ((b"stats detail", usage), (b"stats detail ON", usage),
                           (b"stats cachedump 1", b"CLIENT_ERROR bad command line\r\n"),
                           (b"stats cachedump x 1", b"CLIENT_ERROR bad command line format\r\n"),
                           (b"stats cachedump 1 -5", b"CLIENT_ERROR bad command line format\r\n"),
                           (b"stats cachedump 64 1", b"CLIENT_ERROR Illegal slab id\r\n"),
                           (b"stats Items", b"ERROR\r\n"), (b"STATS", b"ERROR\r\n")):
            self.assertEqual(c.call(send + b"\r\n"), want, send)
        for group in (b"items foo", b"slabs x"):
            st = raw_stats(c, group)
            if harness.is_bifrost():
                self.assertEqual(st, {})
        self.assertEqual(raw_stats(c, b"sizes y"), {"sizes_status": "disabled"})
        # (memcached lists the class's items: ITEM lines; bifrostd has no slab classes)
        dump = c.call(b"stats cachedump 1 1 more\r\n", b"END\r\n")
        if harness.is_bifrost():
            self.assertEqual(dump, b"END\r\n")
        self.assertIn("maxbytes", raw_stats(c, b"settings x"))
        self.assertEqual(c.call(b"stats detail off x\r\n"), b"OK\r\n")
        self.assertEqual(c.call(b"version\r\n")[:8], b"VERSION ")

    def detail_dump(self, c):
        """`stats detail dump`: prefix -> (get, hit, set, del)."""
        c.send(b"stats detail dump\r\n")
        return self.detail_dump_reply(c)

    def detail_dump_reply(self, c):
        out = {}
        for _ in range(100000):
            line = c.line()
            if line == b"END\r\n":
                return out
            m = re.match(rb"PREFIX (.*) get (\d+) hit (\d+) set (\d+) del (\d+)\r\n$", line)
            self.assertIsNotNone(m, line)
            out[m.group(1)] = tuple(int(m.group(i)) for i in range(2, 6))
        self.fail("no END after the PREFIX lines")

    def test_detail_counts_requests_per_key_prefix(self):
        c = self.client()
        p = self.key("p")
        k = lambda s: p + b":" + s
        self.addCleanup(lambda: c.call(b"stats detail off\r\n"))
        self.assertNotIn(p, self.detail_dump(c))
        self.assertEqual(c.call(b"stats detail on\r\n"), b"OK\r\n")
        self.assertEqual(c.call(b"set %s 0 0 1\r\nx\r\n" % k(b"a")), b"STORED\r\n")
        c.call(b"get %s %s\r\n" % (k(b"a"), k(b"b")), b"END\r\n")  # a get and a hit; a get
        c.call(b"gets %s\r\n" % k(b"a"), b"END\r\n")
        c.call(b"gat 0 %s\r\n" % k(b"a"), b"END\r\n")
        self.assertEqual(c.call(b"touch %s 0\r\n" % k(b"a")), b"TOUCHED\r\n")  # (not counted)
        self.assertEqual(c.call(b"add %s 0 0 1\r\ny\r\n" % k(b"a")), b"NOT_STORED\r\n")  # a set
        self.assertEqual(c.call(b"replace %s 0 0 1\r\ny\r\n" % (p + b"x:z")), b"NOT_STORED\r\n")
        self.assertEqual(c.call(b"delete %s\r\n" % k(b"a")), b"DELETED\r\n")
        self.assertEqual(c.call(b"delete %s\r\n" % k(b"zz")), b"NOT_FOUND\r\n")
        self.assertEqual(c.call(b"mg %s v\r\n" % k(b"a")), b"EN\r\n")  # meta: not counted
        self.assertEqual(c.call(b"ms %s 1\r\nz\r\n" % k(b"m")), b"HD\r\n")
        self.assertEqual(c.call(b"md %s\r\n" % k(b"m")), b"HD\r\n")
        c.call(b"get %s\r\n" % p, b"END\r\n")  # no delimiter: not counted
        counts = self.detail_dump(c)
        self.assertEqual(counts[p], (4, 3, 2, 2))
        self.assertEqual(counts[p + b"x"], (0, 0, 1, 0))
        self.assertEqual(c.call(b"stats detail off\r\n"), b"OK\r\n")
        c.call(b"get %s\r\n" % k(b"a"), b"END\r\n")
        self.assertEqual(self.detail_dump(c)[p], (4, 3, 2, 2))
        self.assertEqual(c.call(b"stats reset\r\n"), b"RESET\r\n")  # (clears them too)
        self.assertNotIn(p, self.detail_dump(c))

    def test_detail_counts_a_pipeline_in_its_order(self):
        # Each `stats detail` counts exactly the requests before it in the pipeline.
        c = self.client()
        p = self.key("q")
        k = p + b":k"
        self.addCleanup(lambda: c.call(b"stats detail off\r\n"))
        self.assertEqual(raw_stats(c, b"settings")["detail_enabled"], "no")
        c.send(b"get %s\r\nstats detail on\r\nset %s 0 0 1\r\nx\r\nget %s %s\r\n"
               b"stats detail dump\r\ndelete %s\r\nget %s\r\nstats detail off\r\n"
               b"get %s\r\nstats detail dump\r\n" % (k, k, k, k, k, k, k))
        self.assertEqual(c.line(), b"END\r\n")
        self.assertEqual(c.line(), b"OK\r\n")
        self.assertEqual(c.line(), b"STORED\r\n")
        c.recv_until(b"END\r\n")
        first = self.detail_dump_reply(c)
        self.assertEqual(c.line(), b"DELETED\r\n")
        self.assertEqual(c.line(), b"END\r\n")
        self.assertEqual(c.line(), b"OK\r\n")
        self.assertEqual(c.line(), b"END\r\n")
        second = self.detail_dump_reply(c)
        self.assertEqual(first[p], (2, 2, 1, 0))
        self.assertEqual(second[p], (3, 2, 1, 1))
        self.assertEqual(raw_stats(c, b"settings")["detail_enabled"], "no")
        self.assertEqual(raw_stats(c, b"settings")["stat_key_prefix"], ":")

    def test_conns_shows_the_listener_and_each_connection(self):
        c, other = self.client(), self.client()
        self.assertEqual(other.call(b"version\r\n")[:8], b"VERSION ")

        def conns():
            by_fd = {}
            for name, value in raw_stats(c, b"conns").items():
                fd, field = name.split(":", 1)
                by_fd.setdefault(fd, {})[field] = value
            return list(by_fd.values())

        def addr(sock):
            return "tcp:%s:%d" % sock.getsockname()[:2]

        listen = "tcp:127.0.0.1:%d" % self.server.port
        now = conns()
        self.assertIn(listen, [e["addr"] for e in now if e["state"] == "conn_listening"])
        mine = [e for e in now if e["addr"] == addr(c.sock)]
        self.assertEqual(len(mine), 1, now)
        self.assertEqual(mine[0]["state"], "conn_parse_cmd")
        self.assertEqual(mine[0]["listen_addr"], listen)
        self.assertEqual(mine[0]["secs_since_last_cmd"], "0")
        theirs = [e for e in now if e["addr"] == addr(other.sock)]
        self.assertEqual(len(theirs), 1, now)
        self.assertTrue(theirs[0]["state"].startswith("conn_"), theirs)
        self.assertNotIn(theirs[0]["state"], ("conn_listening", "conn_parse_cmd"))
        gone = addr(other.sock)
        other.close()
        deadline = time.monotonic() + 5  # (memcached closes it on its next event)
        while any(e["addr"] == gone for e in conns()):
            self.assertLess(time.monotonic(), deadline, "a closed connection stays listed")
            time.sleep(0.05)


class FlushTest(ServerTestCase):
    def _fill(self, c, n=5):
        keys = [self.key(str(i)) for i in range(n)]
        for k in keys:
            self.assertEqual(c.call(b"set %s 0 0 1\r\nx\r\n" % k), b"STORED\r\n")
        return keys

    def test_flush_all(self):
        c = self.client()
        keys = self._fill(c)
        self.assertEqual(c.call(b"flush_all\r\n"), b"OK\r\n")
        self.assertEqual(c.call(b"get " + b" ".join(keys) + b"\r\n"), b"END\r\n")
        # storing works again right after
        self.assertEqual(c.call(b"set %s 0 0 1\r\ny\r\n" % keys[0]), b"STORED\r\n")
        self.assertEqual(c.get_value(keys[0]), b"y")

    def test_flush_all_zero(self):
        c = self.client()
        keys = self._fill(c)
        self.assertEqual(c.call(b"flush_all 0\r\n"), b"OK\r\n")
        self.assertEqual(c.call(b"get " + b" ".join(keys) + b"\r\n"), b"END\r\n")

    def test_flush_all_noreply(self):
        c = self.client()
        keys = self._fill(c)
        c.send(b"flush_all noreply\r\n")
        self.assertEqual(c.call(b"get " + b" ".join(keys) + b"\r\n"), b"END\r\n")
        self.assertEqual(c.recv_idle(0.1), b"")

    def test_flush_all_pymemcache(self):
        mc = self.pymc(default_noreply=False)
        mc.set(self.key(), b"v")
        self.assertTrue(mc.flush_all())
        self.assertIsNone(mc.get(self.key()))

    def test_flush_all_absolute_time_past(self):
        # An absolute time already past (over 30 days: a unix time) takes effect now here, as
        # such an exptime expires an item at once. memcached 1.6 flushes nothing: its
        # realtime() maps a past absolute time to 1, which leaves its oldest-live mark at 0
        # ("off"). A documented difference (README).
        c = self.client()
        keys = self._fill(c, 2)
        self.assertEqual(c.call(b"flush_all 1000000000\r\n"), b"OK\r\n")
        got = c.call(b"get " + b" ".join(keys) + b"\r\n", term=b"END\r\n")
        if harness.is_bifrost():
            self.assertEqual(got, b"END\r\n")
        else:
            self.assertEqual(got, b"".join(b"VALUE %s 0 1\r\nx\r\n" % k for k in keys) + b"END\r\n")

    def test_flush_all_bad_delay(self):
        c = self.client()
        self.assertEqual(c.call(b"flush_all abc\r\n"), b"CLIENT_ERROR invalid exptime argument\r\n")


if __name__ == "__main__":
    harness.main()
