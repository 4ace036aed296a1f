#!/usr/bin/env python3
"""Values: binary bytes, sizes from 0 B to 1 MiB, and the maximum item size (-I)."""

import os
import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ServerTestCase, raw_stats  # noqa: E402

KiB = 1024
MiB = 1024 * 1024
ALL_BYTES = bytes(range(256))


class ValuesTest(ServerTestCase):
    # memcached's -I bounds the whole item (header + key + value): 2m leaves room for 1 MiB.
    item_size = "2m"

    def roundtrip_raw(self, c, k, v, flags=0):
        self.assertEqual(c.call(b"set %s %d 0 %d\r\n" % (k, flags, len(v)) + v + b"\r\n"), b"STORED\r\n")
        c.send(b"get %s\r\n" % k)
        self.assertEqual(c.line(), b"VALUE %s %d %d\r\n" % (k, flags, len(v)))
        self.assertEqual(c.recv_exact(len(v) + 2, timeout=10), v + b"\r\n")
        self.assertEqual(c.line(), b"END\r\n")

    def test_sizes_raw(self):
        c = self.client()
        for size in (0, 1, 2, 16 * KiB, 100 * KiB, MiB):
            v = bytes((i * 31 + size) % 256 for i in range(size))
            self.roundtrip_raw(c, self.key(str(size)), v)

    def test_sizes_pymemcache(self):
        mc = self.pymc(default_noreply=False, timeout=10)
        for size in (0, 1, 16 * KiB, MiB):
            k = self.key(str(size))
            v = bytes((i * 7) % 256 for i in range(size))
            self.assertTrue(mc.set(k, v))
            self.assertEqual(mc.get(k), v)

    def test_all_byte_values(self):
        c = self.client()
        self.roundtrip_raw(c, self.key(), ALL_BYTES, 12345)
        self.roundtrip_raw(c, self.key("rev"), ALL_BYTES[::-1] * 4)
        mc = self.pymc(default_noreply=False)
        self.assertTrue(mc.set(self.key("pym"), ALL_BYTES))
        self.assertEqual(mc.get(self.key("pym")), ALL_BYTES)

    def test_embedded_protocol_bytes(self):
        c = self.client()
        for i, v in enumerate(
            (
                b"\r\n",
                b"\r\n\r\n",
                b"a\r\nb",
                b"END\r\n",
                b"\r\nEND\r\nVALUE x 0 1\r\n",
                b"set k 0 0 1\r\nx\r\n",
                b"\n",
                b"\r",
                b"\x00",
                b"\x00\r\n\x00",
            )
        ):
            self.roundtrip_raw(c, self.key(str(i)), v)

    def test_append_binary(self):
        c = self.client()
        k = self.key()
        self.roundtrip_raw(c, k, ALL_BYTES[:128])
        self.assertEqual(c.call(b"append %s 0 0 128\r\n" % k + ALL_BYTES[128:] + b"\r\n"), b"STORED\r\n")
        self.assertEqual(c.get_value(k), ALL_BYTES)

    def test_item_size_setting(self):
        c = self.client()
        self.assertEqual(int(raw_stats(c, b"settings")["item_size_max"]), 2 * MiB)


class MaxItemSizeTest(ServerTestCase):
    item_size = "1m"

    def test_item_size_setting(self):
        c = self.client()
        self.assertEqual(int(raw_stats(c, b"settings")["item_size_max"]), MiB)

    def test_largest_value_fits(self):
        c = self.client()
        k = self.key()
        v = b"L" * (MiB - 512)
        self.assertEqual(c.call(b"set %s 0 0 %d\r\n" % (k, len(v)) + v + b"\r\n", timeout=10), b"STORED\r\n")
        self.assertEqual(c.get_value(k, timeout=10), v)

    def test_too_large_is_swallowed_and_old_value_removed(self):
        c = self.client()
        k = self.key()
        self.assertEqual(c.call(b"set %s 0 0 3\r\nold\r\n" % k), b"STORED\r\n")
        v = b"T" * (MiB + 1)
        # The data block is swallowed: the next command on the same connection is answered.
        # (memcached answers only once the whole block has been read; we read after sending.)
        c.send(b"set %s 0 0 %d\r\n" % (k, len(v)) + v + b"\r\n" + b"get %s\r\n" % k)
        self.assertEqual(c.line(timeout=10), b"SERVER_ERROR object too large for cache\r\n")
        # memcached unlinks the old value when a set fails as too large
        self.assertEqual(c.line(), b"END\r\n")
        self.assertEqual(c.recv_idle(0.1), b"")
        self.assertEqual(c.call(b"set %s 0 0 3\r\nnew\r\n" % k), b"STORED\r\n")
        self.assertEqual(c.get_value(k), b"new")

    def test_too_large_noreply(self):
        c = self.client()
        k = self.key()
        c.call(b"set %s 0 0 3\r\nold\r\n" % k)
        v = b"N" * (2 * MiB)
        c.send(b"set %s 0 0 %d noreply\r\n" % (k, len(v)) + v + b"\r\nget %s\r\n" % k)
        self.assertEqual(c.recv_until(b"END\r\n", timeout=10), b"END\r\n")

    def test_too_large_in_pieces(self):
        """The swallowed block arrives in many pieces; the connection stays in sync."""
        c = self.client()
        k = self.key()
        n = MiB + 100
        c.send(b"set %s 0 0 %d\r\n" % (k, n))
        sent = 0
        for _ in range(100):
            if sent >= n:
                break
            piece = min(64 * KiB, n - sent)
            c.send(b"p" * piece)
            sent += piece
        c.send(b"\r\nversion\r\n")
        self.assertEqual(c.line(timeout=10), b"SERVER_ERROR object too large for cache\r\n")
        self.assertTrue(c.line().startswith(b"VERSION "))

    def test_too_large_pymemcache(self):
        mc = self.pymc(default_noreply=False, timeout=10)
        k = self.key()
        from pymemcache.exceptions import MemcacheServerError

        with self.assertRaises(MemcacheServerError) as cm:
            mc.set(k, b"x" * (MiB + 1))
        self.assertIn(b"object too large for cache", cm.exception.args[0])
        self.assertTrue(mc.set(k, b"ok"))
        self.assertEqual(mc.get(k), b"ok")

    def test_append_beyond_max(self):
        """Appending past the item size limit is refused; the value stays usable."""
        c = self.client()
        k = self.key()
        q = b"q" * (MiB // 4)
        self.assertEqual(c.call(b"set %s 0 0 %d\r\n" % (k, len(q)) + q + b"\r\n"), b"STORED\r\n")
        self.assertEqual(c.call(b"append %s 0 0 %d\r\n" % (k, len(q)) + q + b"\r\n"), b"STORED\r\n")
        big = b"b" * (MiB // 2 + MiB // 8)
        for cmd in (b"append", b"prepend"):
            r = c.call(b"%s %s 0 0 %d\r\n" % (cmd, k, len(big)) + big + b"\r\n")
            self.assertEqual(r, b"NOT_STORED\r\n")
        self.assertEqual(c.call(b"ms %s %d MA\r\n" % (k, len(big)) + big + b"\r\n"), b"NS\r\n")
        self.assertEqual(c.get_value(k, timeout=10), q + q)


if __name__ == "__main__":
    harness.main()
