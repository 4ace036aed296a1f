#!/usr/bin/env python3
"""A second real client: libmemcached-tools (memccp, memccat, memctouch, memcrm, memcstat,
memcflush, memcping; Debian names them memc*, upstream mem*)."""

import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ServerTestCase  # noqa: E402

TOOL_TIMEOUT = 20


def tool(name):
    """Debian's libmemcached-tools installs memccp; older packages install memcp."""
    for candidate in ("memc" + name, "mem" + name):
        path = shutil.which(candidate)
        if path:
            return path
    return None


class LibmemcachedToolsTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="bifrost_memc_")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def run_tool(self, name, *args, check=True):
        path = tool(name)
        if path is None:
            self.fail("libmemcached-tools %s not installed (apt-get install libmemcached-tools)" % name)
        cmd = [path, "--servers=127.0.0.1:%d" % self.server.port] + list(args)
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=TOOL_TIMEOUT)
        if check:
            self.assertEqual(p.returncode, 0, "%s failed: %r %r" % (cmd, p.stdout, p.stderr))
        return p

    def write_file(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_cp_cat_roundtrip(self):
        data = bytes(range(256)) * 40 + b"\r\nEND\r\n"
        path = self.write_file("tools_file.bin", data)
        self.run_tool("cp", "--flags=42", path)
        out = os.path.join(self.tmp, "out.bin")
        self.run_tool("cat", "--file=" + out, "tools_file.bin")
        with open(out, "rb") as f:
            self.assertEqual(f.read(), data)
        # the same item seen by a raw client: memcp keys by basename
        c = self.client()
        c.send(b"get tools_file.bin\r\n")
        self.assertEqual(c.line(), b"VALUE tools_file.bin 42 %d\r\n" % len(data))
        self.assertEqual(c.recv_exact(len(data) + 2), data + b"\r\n")
        self.assertEqual(c.line(), b"END\r\n")
        p = self.run_tool("cat", "--flags", "tools_file.bin")
        self.assertTrue(p.stdout.startswith(b"42"), p.stdout[:20])

    def test_cp_add_replace_modes(self):
        path = self.write_file("tools_modes.txt", b"first")
        self.run_tool("cp", "--add", path)
        self.write_file("tools_modes.txt", b"second")
        self.run_tool("cp", "--add", path, check=False)  # exists: not stored
        c = self.client()
        self.assertEqual(c.get_value(b"tools_modes.txt"), b"first")
        self.run_tool("cp", "--replace", path)
        self.assertEqual(c.get_value(b"tools_modes.txt"), b"second")

    def test_cat_missing_fails(self):
        p = self.run_tool("cat", "tools_no_such_key", check=False)
        self.assertNotEqual(p.returncode, 0)

    def test_rm(self):
        c = self.client()
        c.call(b"set tools_rm 0 0 1\r\nx\r\n")
        self.run_tool("rm", "tools_rm")
        self.assertIsNone(c.get_value(b"tools_rm"))
        self.assertNotEqual(self.run_tool("cat", "tools_rm", check=False).returncode, 0)

    def test_touch(self):
        c = self.client()
        c.call(b"set tools_touch 0 0 1\r\nx\r\n")
        self.run_tool("touch", "--expire=500", "tools_touch")
        ttl = int(c.call(b"mg tools_touch t\r\n").split()[1][1:])
        self.assertTrue(490 <= ttl <= 500, ttl)

    def test_stat(self):
        p = self.run_tool("stat")
        text = p.stdout.decode("utf-8", "replace")
        for name in ("pid", "uptime", "curr_items", "get_hits", "limit_maxbytes"):
            self.assertIn("\t%s: " % name, text)
        self.assertIn("pid: %d" % self.server.pid, text)
        p = self.run_tool("stat", "--args=settings")
        self.assertIn("tcpport: %d" % self.server.port, p.stdout.decode("utf-8", "replace"))

    def test_ping(self):
        self.run_tool("ping")

    def test_zz_flush(self):
        c = self.client()
        c.call(b"set tools_flush 0 0 1\r\nx\r\n")
        self.run_tool("flush")
        self.assertIsNone(c.get_value(b"tools_flush"))


if __name__ == "__main__":
    harness.main()
