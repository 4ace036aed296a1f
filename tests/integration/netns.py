"""Bifrost nodes in network namespaces of their own, joined by a bridge, and cuts between them
(root only). Used by test_partition.py, partition_heal.py and partition_churn.py.

The process that uses it must itself run in a network namespace it made (`unshare -n`; see
reexec_in_private_netns): the bridge is created there, so nothing outside is touched. Node i
lives in a namespace held by a `sleep` process, with address 10.0.0.i on a veth whose other
end is on the bridge (the caller's side is 10.0.0.254). Egress of each veth goes through an
htb qdisc with a class whose pfifo holds nothing: a tc filter sending one destination there
drops that traffic silently (as a cable cut does), and removing it heals. (netem is not in
this kernel.) Everything started here is stopped by pid in close().
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time

MARK = "BIFROST_PRIVATE_NETNS"
MEMCACHE_PORT = 21001
RPC_PORT = 22001


def ip(i):
    return "10.0.0.%d" % i


def mc(i, line, data=None, timeout=5.0):
    """One memcached op on a fresh connection to node i (a text line, and a value for a
    store): its reply line, or a get's whole reply up to END (at most 64 KiB; less when the
    node closes the connection)."""
    with socket.create_connection((ip(i), MEMCACHE_PORT), timeout=timeout) as s:
        s.sendall(line.encode() + b"\r\n" + (data.encode() + b"\r\n" if data is not None else b""))
        buf = b""
        done = (lambda b: b.endswith(b"END\r\n")) if line.startswith("get") else \
            (lambda b: b.endswith(b"\r\n"))
        while not done(buf) and len(buf) < 65536:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf.decode("utf-8", "replace")


def sh(cmd):
    r = subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError("`%s` failed (exit %d): %s" % (cmd, r.returncode, r.stderr.strip()))


def reexec_in_private_netns():
    """Runs this script again inside a new network namespace (same pid: `unshare` execs), once.
    Returns the reason it cannot (not root, no unshare, namespaces refused), or None when the
    process already runs in one."""
    if os.environ.get(MARK):
        return None
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, tc)"
    try:
        r = subprocess.run(["unshare", "-n", "sh", "-c",
                            "command -v nsenter >/dev/null && "
                            "ip link add b0 type bridge && ip link add va type veth peer name vb "
                            "&& tc qdisc add dev lo root handle 1: htb && tc class add dev lo "
                            "parent 1: classid 1:2 htb rate 10gbit && tc qdisc add dev lo "
                            "parent 1:2 handle 2: pfifo limit 0 && tc filter add dev lo parent 1: "
                            "protocol ip prio 10 u32 match ip dst 10.9.9.9/32 flowid 1:2"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unshare -n failed: %s" % e
    if r.returncode != 0:
        return ("network namespaces, nsenter, bridges, veth or tc (htb, u32) unavailable here: "
                "%s" % (r.stderr.strip() or "exit %d" % r.returncode))
    env = dict(os.environ, **{MARK: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("unshare", ["unshare", "-n", sys.executable] + sys.argv, env)


def _die_with_parent():
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Net:
    """`n` namespaces on a bridge; nodes in them; cuts between them."""

    def __init__(self, bifrostd, n=3, log_dir=None):
        self.bifrostd = bifrostd
        self.n = n
        self.log_dir = log_dir
        self.holders = {}
        self.nodes = {}
        self.logs = {}
        self.cuts = set()
        try:
            sh("ip link set lo up; ip link add br0 type bridge; "
               "ip addr add 10.0.0.254/24 dev br0; ip link set br0 up")
            # (The tools connect afresh for every op: 28,232 ephemeral ports in TIME_WAIT for
            # 60 s ran out after about 40 s of a writer at 700 ops/s, and every connect to
            # that node then failed, EADDRNOTAVAIL; partition_churn.py read it as no answer.
            # This namespace's settings only; without them a short run works as before.)
            for path, value in (("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535"),
                                ("/proc/sys/net/ipv4/tcp_tw_reuse", "1")):
                try:
                    with open(path, "w") as f:
                        f.write(value)
                except OSError:
                    pass
            for i in range(1, n + 1):
                self.remove_veth(i)
                self.holders[i] = subprocess.Popen(["unshare", "-n", "sleep", "3600"],
                                                   preexec_fn=_die_with_parent)
            deadline = time.monotonic() + 5
            for i, h in self.holders.items():  # each holder has its namespace once it sleeps
                while (os.readlink("/proc/%d/ns/net" % h.pid) == os.readlink("/proc/self/ns/net")
                       and time.monotonic() < deadline):
                    time.sleep(0.02)
                sh("ip link add v{i} type veth peer name p{i}; ip link set p{i} master br0 up; "
                   "ip link set v{i} netns {pid}".format(i=i, pid=h.pid))
                self.ns(i, "ip link set lo up; ip addr add {a}/24 dev v{i}; ip link set v{i} up; "
                           "tc qdisc add dev v{i} root handle 1: htb; "
                           "tc class add dev v{i} parent 1: classid 1:2 htb rate 10gbit; "
                           "tc qdisc add dev v{i} parent 1:2 handle 2: pfifo limit 0"
                        .format(a=ip(i), i=i))
            self.wait_reachable()
        except BaseException:
            self.close()
            raise

    def ns(self, i, cmd):
        sh("nsenter -t %d -n sh -c '%s'" % (self.holders[i].pid, cmd))

    def wait_reachable(self, limit=10.0):
        """Until the bridge forwards (its ports leave the listening state): a TCP connect from
        here to a closed port of each namespace is refused, not left unanswered."""
        deadline = time.monotonic() + limit
        for i in self.holders:
            while True:
                try:
                    socket.create_connection((ip(i), 9), timeout=0.3).close()
                    break
                except ConnectionRefusedError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("namespace %d not reachable over the bridge" % i)
                    time.sleep(0.1)

    def start(self, i, args, join=None):
        """bifrostd as node `n<i>` in namespace i (memcached port 21001, RPC port 22001), with
        `args`; joins node `join` if given. Waits until it answers `version`."""
        cmd = ["-l", ip(i), "-p", str(MEMCACHE_PORT), "--rpc-port", str(RPC_PORT),
               "--node-name", "n%d" % i] + list(args)
        if join:
            cmd += ["--join", "%s:%d" % (ip(join), RPC_PORT)]
        log = open(os.path.join(self.log_dir, "n%d.stderr" % i), "wb") if self.log_dir \
            else subprocess.DEVNULL
        self.logs[i] = log
        self.nodes[i] = subprocess.Popen(["nsenter", "-t", str(self.holders[i].pid), "-n"] +
                                         [self.bifrostd] + cmd, stdout=log, stderr=log,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((ip(i), MEMCACHE_PORT), timeout=1) as s:
                    s.sendall(b"version\r\n")
                    if s.recv(64).startswith(b"VERSION"):
                        return
            except OSError:
                pass
            if self.nodes[i].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("n%d did not start (exit %s)" % (i, self.nodes[i].poll()))
            time.sleep(0.05)

    def ctl(self, i, *args, timeout=10):
        """`bifrostctl --json ARGS` (the one beside bifrostd) against node i's RPC port, with
        `--timeout` `timeout` s: the parsed answer, or None when it exits non-zero."""
        ctl = os.path.join(os.path.dirname(self.bifrostd), "bifrostctl")
        r = subprocess.run([ctl, "--node", "%s:%d" % (ip(i), RPC_PORT), "--timeout", str(timeout),
                            "--json"] + list(args), capture_output=True, timeout=timeout + 5)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def cut(self, a, b, kind="drop"):
        """Traffic from node a to node b is lost (`drop`: silently, by tc) or refused at once
        (`prohibit`: a route that answers EACCES)."""
        self.ns(a, "tc filter add dev v{a} parent 1: protocol ip prio {p} u32 match ip dst "
                   "{d}/32 flowid 1:2".format(a=a, p=10 + b, d=ip(b)) if kind == "drop"
                else "ip route add prohibit %s/32" % ip(b))
        self.cuts.add((a, b, kind))

    def heal(self, a, b):
        for c in [c for c in self.cuts if c[:2] == (a, b)]:
            self.ns(a, "tc filter del dev v{a} parent 1: prio {p}".format(a=a, p=10 + b)
                    if c[2] == "drop" else "ip route del prohibit %s/32" % ip(b))
            self.cuts.discard(c)

    def stop(self, i, limit=15.0):
        """SIGTERM, then SIGKILL after `limit` s; the exit status (None: killed)."""
        p = self.nodes.pop(i, None)
        if p is None:
            return None
        p.terminate()
        try:
            return p.wait(limit)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None
        finally:
            log = self.logs.pop(i, None)
            if log not in (None, subprocess.DEVNULL):
                log.close()

    @staticmethod
    def remove_veth(i):
        """Deletes the pair `p<i>`/`v<i>` if it is still here. Deleting a namespace (its holder
        gone) frees its veth, and so this side's end, only later, in the kernel's own time (a
        CI run found `p2` still there when the next test made its own: "File exists"). Deleting
        it here removes both ends at once."""
        subprocess.run("ip link del p%d" % i, shell=True, stderr=subprocess.DEVNULL)

    def close(self):
        for i in list(self.nodes):
            self.stop(i, 5.0)
        for i in self.holders:
            self.remove_veth(i)
        for h in self.holders.values():
            h.terminate()
            h.wait()
        self.holders.clear()
        subprocess.run("ip link del br0", shell=True, stderr=subprocess.DEVNULL)
