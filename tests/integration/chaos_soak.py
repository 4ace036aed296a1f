#!/usr/bin/env python3
"""Chaos soak for a bifrost cluster (a manual tool, not part of `make test`): N nodes (R=2, odd
ones with a --data-dir) on 127.0.0.1, three client threads writing, deleting and reading back
their own keys through random nodes, while a chaos thread, every 3-7 s, kills -9 and restarts,
SIGSTOPs for 1-3 s, or SIGTERMs and restarts one node (ACTIONS=kill,stop,term picks which).
Bounded by DURATION; every process is started here and stopped by its pid.

It reports: reads that did not return the last acknowledged value (with the chaos event
before them), a final read of every key through every node after 12 s of calm (a key that
holds what a later write answered with an error would have written counts apart, as
unacknowledged_write_ran: an error does not say the write did not run), errors more
than 6 s away from any event, nodes that exited by themselves or not 0 after SIGTERM, and peak
RSS. Exit status 1 on a crash, a final mismatch or an error far from any event. Reads at a
node that is still joining answer misses by design; async replication (R=2, ack after the
primary) may lose a write acknowledged just before a kill -9.

usage: chaos_soak.py BIFROSTD DURATION_S [NODES] [SEED]
  e.g. python3 tests/integration/chaos_soak.py build-asan/bin/bifrostd 100 4 5
"""
import os, random, signal, socket, subprocess, sys, tempfile, threading, time, collections

BIN = sys.argv[1]
DURATION = float(sys.argv[2])
NODES = int(sys.argv[3]) if len(sys.argv) > 3 else 4
SEED = int(sys.argv[4]) if len(sys.argv) > 4 else 1
TMP = tempfile.mkdtemp(prefix="bifrost-chaos-")
rng = random.Random(SEED)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Node:
    def __init__(self, i):
        self.i = i
        self.name = f"n{i}"
        self.port = free_port()
        self.rpc = free_port()
        self.proc = None
        self.stopped = False  # SIGSTOP
        self.log = open(f"{TMP}/{self.name}.log", "ab")
        self.datadir = f"{TMP}/{self.name}-data" if i % 2 == 1 else None

    def start(self, join):
        args = [BIN, "-l", "127.0.0.1", "-t", "1", "-m", "256", "-p", str(self.port),
                "--rpc-port", str(self.rpc), "--node-name", self.name, "--replicas", "2"]
        if join:
            args += ["--join", join]
        if self.datadir:
            os.makedirs(self.datadir, exist_ok=True)
            args += ["--data-dir", self.datadir]
        self.log.write(f"=== start {time.time():.3f} {' '.join(args)}\n".encode())
        self.log.flush()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited {self.proc.returncode} at start")
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen")

    def up(self):
        return self.proc is not None and self.proc.poll() is None


nodes = [Node(i) for i in range(NODES)]
lock = threading.Lock()
events = []  # (time, text)
crashes = []


def event(text):
    with lock:
        events.append((time.time(), text))
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def seed_of(exclude):
    for n in nodes:
        if n is not exclude and n.up() and not n.stopped:
            return f"127.0.0.1:{n.rpc}"
    return None


def stop_all():
    """SIGTERMs every node we started that still runs (also when this script fails)."""
    if getattr(stop_all, "done", False):
        return
    stop_all.done = True
    for n in nodes:
        if n.proc is not None and n.proc.poll() is None:
            n.proc.send_signal(signal.SIGCONT)
            n.proc.terminate()
    for n in nodes:
        if n.proc is None:
            continue
        try:
            rc = n.proc.wait(40)
            if rc != 0:
                print(f"{n.name} exited {rc} at the end")
        except subprocess.TimeoutExpired:
            print(f"{n.name} did not exit at the end: killed")
            n.proc.kill()
            n.proc.wait()


import atexit  # noqa: E402
atexit.register(stop_all)

nodes[0].start(None)
for n in nodes[1:]:
    n.start(f"127.0.0.1:{nodes[0].rpc}")
time.sleep(3)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), 2)
        self.s.settimeout(3)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            self.buf += d
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l

    def exact(self, n):
        while len(self.buf) < n:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            self.buf += d
        r, self.buf = self.buf[:n], self.buf[n:]
        return r

    def set(self, k, v):
        self.s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v))
        return self.line()

    def get(self, k):
        self.s.sendall(b"get %s\r\n" % k)
        l = self.line()
        if l == b"END":
            return None
        if not l.startswith(b"VALUE "):
            raise RuntimeError(f"get answered {l!r}")
        n = int(l.split()[3])
        v = self.exact(n + 2)[:-2]
        if self.line() != b"END":
            raise RuntimeError("no END")
        return v

    def delete(self, k):
        self.s.sendall(b"delete %s\r\n" % k)
        return self.line()

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


stop = threading.Event()
stats = collections.Counter()
# per key: the last acknowledged state (value or None for deleted) and when
acked = {}
# per key: the states of writes after that one that answered an error or lost their
# connection: an error does not say the write did not run (as with a memcached timeout)
unsure = collections.defaultdict(list)
errors_by_second = collections.Counter()
wrong = []


def client(t):
    r = random.Random(SEED * 100 + t)
    keys = [b"c%d-k%d" % (t, i) for i in range(300)]
    seq = 0
    conns = {}
    while not stop.is_set():
        n = r.choice(nodes)
        if not n.up() or n.stopped:
            continue
        k = r.choice(keys)
        trying = None  # (key, state) of a write on the wire
        try:
            c = conns.get(n.i)
            if c is None:
                c = conns[n.i] = Conn(n.port)
            op = r.random()
            if op < 0.45:
                seq += 1
                v = b"v%d-%d" % (seq, r.randrange(10**6)) * r.choice([1, 1, 1, 50, 2000])
                trying = (k, v)
                res = c.set(k, v)
                trying = None
                if res == b"STORED":
                    acked[k] = (v, time.time())
                    unsure.pop(k, None)
                    stats["set_ok"] += 1
                else:
                    unsure[k].append(v)
                    stats["set_" + res.decode()[:30]] += 1
                    errors_by_second[int(time.time())] += 1
            elif op < 0.5:
                trying = (k, None)
                res = c.delete(k)
                trying = None
                if res in (b"DELETED", b"NOT_FOUND"):
                    acked[k] = (None, time.time())
                    unsure.pop(k, None)
                    stats["del_ok"] += 1
                else:
                    unsure[k].append(None)
                    stats["del_" + res.decode()[:30]] += 1
                    errors_by_second[int(time.time())] += 1
            else:
                v = c.get(k)
                stats["get"] += 1
                if k in acked:
                    want = acked[k][0]
                    if v != want:
                        stats["get_mismatch"] += 1
                        with lock:
                            wrong.append((time.time(), n.name, k, (v or b"")[:20], (want or b"")[:20]))
        except (OSError, ConnectionError, RuntimeError) as e:
            if trying:
                unsure[trying[0]].append(trying[1])
            stats["exc_" + type(e).__name__] += 1
            errors_by_second[int(time.time())] += 1
            c = conns.pop(n.i, None)
            if c:
                c.close()
            time.sleep(0.01)


def chaos():
    r = random.Random(SEED * 7)
    while not stop.is_set():
        time.sleep(r.uniform(3, 7))
        if stop.is_set():
            break
        try:
            chaos_round(r)
        except Exception as e:  # (a node that cannot start again: reported, the run goes on)
            crashes.append(f"chaos round: {e!r}")
            event(f"CHAOS ROUND FAILED: {e!r}")


def chaos_round(r):
    victim = r.choice(nodes[1:] if r.random() < 0.7 else nodes)
    action = r.choice(os.environ.get("ACTIONS", "kill,kill,stop,term").split(","))
    if action == "kill":
        event(f"kill -9 {victim.name}")
        victim.proc.kill()
        victim.proc.wait()
        time.sleep(r.uniform(2, 6))
        j = seed_of(victim)
        event(f"restart {victim.name} join {j}")
        victim.start(j)
    elif action == "stop":
        d = r.uniform(1.0, 3.0)
        event(f"SIGSTOP {victim.name} {d:.1f}s")
        victim.stopped = True
        victim.proc.send_signal(signal.SIGSTOP)
        time.sleep(d)
        victim.proc.send_signal(signal.SIGCONT)
        victim.stopped = False
        event(f"SIGCONT {victim.name}")
    else:
        event(f"SIGTERM {victim.name}")
        victim.proc.terminate()
        try:
            rc = victim.proc.wait(40)
        except subprocess.TimeoutExpired:
            event(f"HANG: {victim.name} did not exit 40 s after SIGTERM")
            crashes.append(f"{victim.name} SIGTERM hang")
            victim.proc.kill()
            victim.proc.wait()
            rc = "killed"
        if rc not in (0, "killed"):
            crashes.append(f"{victim.name} exited {rc} after SIGTERM")
            event(f"{victim.name} exited {rc} after SIGTERM")
        time.sleep(r.uniform(1, 3))
        j = seed_of(victim)
        event(f"restart {victim.name} join {j}")
        victim.start(j)
    for n in nodes:  # anyone that died by itself?
        if n.proc.poll() is not None and n is not victim:
            crashes.append(f"{n.name} exited {n.proc.returncode} by itself")
            event(f"CRASH {n.name} exited {n.proc.returncode}")
            n.start(seed_of(n))


threads = [threading.Thread(target=client, args=(t,)) for t in range(3)]
ch = threading.Thread(target=chaos)
for t in threads:
    t.start()
ch.start()
t_end = time.time() + DURATION
rss_peak = collections.Counter()
while time.time() < t_end:
    time.sleep(1)
    for n in nodes:
        try:
            with open(f"/proc/{n.proc.pid}/status") as f:
                for l in f:
                    if l.startswith("VmRSS"):
                        rss_peak[n.name] = max(rss_peak[n.name], int(l.split()[1]) // 1024)
        except OSError:
            pass
stop.set()
ch.join()
for t in threads:
    t.join()
event("chaos over; converging 12 s")
last_event = max(t for t, _ in events)
time.sleep(12)
# Final check through every node: each key's value must be its last acknowledged one.
final = collections.Counter()
lost = []
for n in nodes:
    try:
        c = Conn(n.port)
    except OSError as e:
        final["exc"] += len(acked)
        print(f"final check: cannot reach {n.name}: {e}")
        continue
    for k, (want, at) in list(acked.items()):
        try:
            v = c.get(k)
        except Exception as e:
            final["exc"] += 1
            continue
        if v == want:
            final["ok"] += 1
        elif v in unsure.get(k, []):  # a later write that answered an error ran after all
            final["unacknowledged_write_ran"] += 1
        else:
            final["bad"] += 1
            lost.append((n.name, k, at - last_event, (v or b"")[:16], (want or b"")[:16]))
    c.close()
print("client stats:", dict(stats))
print("final check:", dict(final))
for l in lost[:20]:
    print("  final mismatch via %s key %s acked %.1f s rel. last event; got %r want %r" % l)
print("mismatches during the run (first 20):")
def near(t):
    best = None
    for et, txt in events:
        if et <= t and (best is None or et > best[0]):
            best = (et, txt)
    return "%.2f s after '%s'" % (t - best[0], best[1]) if best else "?"
for w in wrong[:30]:
    print("  %s: via %s key %s got %r want %r" % ((near(w[0]),) + w[1:]))
# When did errors happen relative to events?
ev_times = [t for t, _ in events]
far = sum(c for s, c in errors_by_second.items() if all(abs(s - t) > 6 for t in ev_times))
print("errors more than 6 s from any chaos event:", far)
print("crashes:", crashes)
print("rss peak MiB:", dict(rss_peak))
stop_all()
print("logs in", TMP)
sys.exit(1 if crashes or final["bad"] or final["exc"] or far else 0)
