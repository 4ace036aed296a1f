#!/usr/bin/env python3
"""Expiry (relative, absolute, negative TTLs; touch, gat, ms T) and flush_all with a delay.

Every check that needs time to pass shares one bounded sleep (SLEEP seconds)."""

import os
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Server, ServerTestCase, raw_stats  # noqa: E402

SLEEP = 2.3  # > 2 s: a TTL of 1 s has passed whatever the server's clock granularity (1 s)
THIRTY_DAYS = 60 * 60 * 24 * 30


class ExpiryTest(ServerTestCase):
    flush_server = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # A second server for flush_all <delay>, so that its delay shares the one sleep.
        cls.flush_server = Server().start()

    @classmethod
    def tearDownClass(cls):
        fs = cls.flush_server
        alive = fs.alive()
        fs.stop()
        fs.close_log()
        super().tearDownClass()
        if not alive:
            raise AssertionError("flush server died")

    def set(self, c, key, exptime, value=b"v"):
        self.assertEqual(
            c.call(b"set %s 0 %d %d\r\n%s\r\n" % (key, exptime, len(value), value)), b"STORED\r\n", key
        )

    def test_expiry_and_delayed_flush(self):
        c = self.client()
        f = self.flush_server.client()
        self.addCleanup(f.close)
        mc = self.pymc(default_noreply=False)
        now = int(raw_stats(c)["time"])  # the server's own clock

        # --- before the sleep
        gone_later, kept_later = [], []
        self.set(c, b"ttl1", 1)
        gone_later.append(b"ttl1")
        self.set(c, b"abs_soon", now + 1)
        gone_later.append(b"abs_soon")
        self.set(c, b"touched_short", 0)
        self.assertEqual(c.call(b"touch touched_short 1\r\n"), b"TOUCHED\r\n")
        gone_later.append(b"touched_short")
        self.set(c, b"gat_short", 0)
        self.assertEqual(c.call(b"gat 1 gat_short\r\n", b"END\r\n"), b"VALUE gat_short 0 1\r\nv\r\nEND\r\n")
        gone_later.append(b"gat_short")
        self.assertEqual(c.call(b"ms ms_short 1 T1\r\nv\r\n"), b"HD\r\n")
        gone_later.append(b"ms_short")
        self.assertTrue(mc.set(b"pym_short", b"v", expire=1))
        gone_later.append(b"pym_short")
        self.set(c, b"thirty_days", THIRTY_DAYS)  # the largest relative TTL
        kept_later.append(b"thirty_days")
        # (2 s, not 1: a 1 s TTL may end at a clock tick before the touch arrives; without the
        # touch these two would still be gone after the sleep below)
        self.set(c, b"touched_long", 2)
        self.assertEqual(c.call(b"touch touched_long 0\r\n"), b"TOUCHED\r\n")
        kept_later.append(b"touched_long")
        self.set(c, b"gat_long", 2)
        c.call(b"gat 100 gat_long\r\n", b"END\r\n")
        kept_later.append(b"gat_long")
        self.set(c, b"abs_later", now + 100)
        kept_later.append(b"abs_later")
        self.set(c, b"no_ttl", 0)
        kept_later.append(b"no_ttl")
        # (a TTL of 1 s may end at the server's next 1 s clock tick, which can come at once:
        # only the long-lived keys are checked before the sleep)
        for k in kept_later:
            self.assertEqual(c.get_value(k), b"v", k)

        # gone at once: negative TTL, absolute time in the past, 30 days + 1 s (= absolute 1970)
        for k, exptime in ((b"negative", -1), (b"abs_past", now - 1000), (b"thirty_days_1", THIRTY_DAYS + 1)):
            self.set(c, k, exptime)
            self.assertIsNone(c.get_value(k), k)
        self.assertEqual(c.call(b"ms ms_negative 1 T-1\r\nv\r\nmg ms_negative v\r\n", b"EN\r\n"), b"HD\r\nEN\r\n")
        self.set(c, b"touch_negative", 0)
        self.assertEqual(c.call(b"touch touch_negative -1\r\n"), b"TOUCHED\r\n")
        self.assertIsNone(c.get_value(b"touch_negative"))

        # TTL as seen by meta get
        self.assertEqual(c.call(b"mg no_ttl t\r\n"), b"HD t-1\r\n")
        ttl = int(c.call(b"mg abs_later t\r\n").split()[1][1:])
        self.assertTrue(98 <= ttl <= 100, ttl)

        # flush_all with a delay: items stay until the delay has passed
        for k in (b"p1", b"p2"):
            self.set(f, k, 0)
        self.assertEqual(f.call(b"flush_all 2\r\nget p1\r\n", b"END\r\n"), b"OK\r\nVALUE p1 0 1\r\nv\r\nEND\r\n")

        # --- the one sleep
        time.sleep(SLEEP)

        for k in gone_later:
            self.assertIsNone(c.get_value(k), k)
        for k in kept_later:
            self.assertEqual(c.get_value(k), b"v", k)
        self.assertIsNone(mc.get(b"pym_short"))
        self.assertEqual(c.call(b"mg ttl1 v\r\n"), b"EN\r\n")
        self.assertEqual(c.call(b"touch ttl1 10\r\n"), b"NOT_FOUND\r\n")
        self.assertEqual(c.call(b"incr ttl1 1\r\n"), b"NOT_FOUND\r\n")
        self.assertEqual(c.call(b"add ttl1 0 0 1\r\nn\r\n"), b"STORED\r\n")  # expired: add works
        self.assertEqual(c.get_value(b"ttl1"), b"n")

        self.assertEqual(f.call(b"get p1 p2\r\n", b"END\r\n"), b"END\r\n")
        self.set(f, b"p3", 0)  # stored after the flush time: kept
        self.assertEqual(f.get_value(b"p3"), b"v")


if __name__ == "__main__":
    harness.main()
