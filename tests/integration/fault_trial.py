#!/usr/bin/env python3
"""Fault trial of a cluster under a pause or a network cut (written for session 54's trial of
the unreachable / dial_now / probe_now recovery; a tool, not a test: ctest does not run it).
Run from the repository: `python3 tests/integration/fault_trial.py --bin build/bin ...`.
It found an op answered `unavailable` that ran later on the paused owner (`--mode pause
--nodes 3 --R 2 --links on --rpc-timeout 1000 --fault-at 4 --fault-ms 3000 --duration 12
--readonly-from 0`: a bad read in each run before session 55, whose late-call refusal fixed
it), and acknowledged writes lost when a 4-node cluster heals an isolated member (`--mode
netns --cut iso --nodes 4 --R 2 --links off --rate 60 --rpc-timeout 2000 --fault-at 4
--fault-ms 5000 --duration 15 --readonly-after-heal`: 1-11 keys in about half the runs
before session 55, whose fix keeps the cluster's own removes out of the hand-back deletes).

Pause mode (127.0.0.1, ports 27xxx/28xxx): SIGSTOP n3 for --fault-ms, then SIGCONT.
Netns mode (root; runs itself inside `unshare -n`, uses netns.py
read-only, from this directory): --cut asym (n1->n3 dropped only) or iso (n3 cut both ways from everyone), then heal.

Client: one thread per primary-owner group, each on a persistent connection to n1, cycling
set/get (and delete+get every 7th visit) over its keys at --rate ops/s per thread. Every op is
recorded (send time, reply time, reply). n1's (and n3's) stderr lines are timestamped by a
tailer; n1's stats are polled every 250 ms. After the run + --settle s, every key is read
through every node and checked against the last acknowledged write (allowing any
unknown-outcome write after it).

Output: a JSON summary on stdout's last line and a human summary; raw records in OUT dir.
"""
import argparse, json, os, signal, socket, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--mode", default="pause", choices=["pause", "netns"])
p.add_argument("--cut", default="iso", choices=["iso", "asym"])
p.add_argument("--R", type=int, default=1)
p.add_argument("--links", default="off")
p.add_argument("--nodes", type=int, default=3)
p.add_argument("--rpc-timeout", type=int, default=1000)
p.add_argument("--swim", default="", help="extra bifrostd args, space separated")
p.add_argument("--fault-at", type=float, default=5.0)
p.add_argument("--fault-ms", type=int, default=3000)
p.add_argument("--duration", type=float, default=16.0)
p.add_argument("--rate", type=float, default=80.0)
p.add_argument("--keys", type=int, default=90)
p.add_argument("--settle", type=float, default=3.0)
p.add_argument("--out", default="/tmp/bifrost-fault-trial")
p.add_argument("--bin", default="build/bin", help="where bifrostd and bifrostctl are")
p.add_argument("--base", type=int, default=27000, help="memcached port base (pause mode)")
p.add_argument("--threads", default="2")
p.add_argument("--readonly-after-heal", action="store_true",
               help="clients only read once the fault has ended (so a stale value is not overwritten)")
p.add_argument("--readonly-from", type=float, default=None,
               help="clients only read from this many s after the fault ended")
p.add_argument("--final-isolate", action="store_true",
               help="netns: after the final check, isolate n3 again until n1 has it dead and read "
                    "every key through n1 and n2 (the other owners' copies)")
a = p.parse_args()

BIN = os.path.abspath(a.bin)
N = a.nodes
NAMES = ["n%d" % i for i in range(1, N + 1)]
VICTIM = "n3"

if a.mode == "netns":
    import netns
    why = netns.reexec_in_private_netns()
    if why:
        sys.exit("netns: " + why)

os.makedirs(a.out, exist_ok=True)
T0 = time.monotonic()


def now():
    return time.monotonic() - T0


# ---- nodes -----------------------------------------------------------------------------
if a.mode == "pause":
    def mc_addr(i):
        return ("127.0.0.1", a.base + i)

    def rpc_addr(i):
        return "127.0.0.1:%d" % (a.base + 1000 + i)
else:
    def mc_addr(i):
        return (netns.ip(i), netns.MEMCACHE_PORT)

    def rpc_addr(i):
        return "%s:%d" % (netns.ip(i), netns.RPC_PORT)

node_args = ["-t", a.threads, "-m", "32", "--replicas", str(a.R), "--rpc-timeout",
             str(a.rpc_timeout), "--cluster-links", a.links] + a.swim.split()
procs = {}
net = None


def start_nodes():
    global net
    if a.mode == "pause":
        for i in range(1, N + 1):
            cmd = [BIN + "/bifrostd", "-p", str(a.base + i), "--rpc-port", str(a.base + 1000 + i),
                   "--node-name", "n%d" % i] + node_args
            if i != 1:
                cmd += ["--join", rpc_addr(1)]
            log = open(os.path.join(a.out, "n%d.stderr" % i), "wb")
            procs[i] = subprocess.Popen(cmd, stdout=log, stderr=log)
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(mc_addr(i), timeout=1) as s:
                        s.sendall(b"version\r\n")
                        if s.recv(64).startswith(b"VERSION"):
                            break
                except OSError:
                    pass
                if procs[i].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("n%d did not start" % i)
                time.sleep(0.05)
    else:
        net = netns.Net(BIN + "/bifrostd", N, a.out)
        for i in range(1, N + 1):
            net.start(i, node_args, join=1 if i != 1 else None)
            procs[i] = net.nodes[i]


def victim_pid():
    # netns: Popen runs nsenter, which execs bifrostd (same pid)
    return procs[3].pid


def ctl(i, *args, timeout=2):
    try:
        r = subprocess.run([BIN + "/bifrostctl", "--node", rpc_addr(i), "--timeout", str(timeout),
                            "--json"] + list(args), capture_output=True, timeout=timeout + 3)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return None
    try:
        return json.loads(r.stdout)
    except ValueError:
        return None


def stop_nodes():
    for i, pr in list(procs.items()):
        if pr.poll() is None:
            try:
                os.kill(pr.pid, signal.SIGCONT)
            except OSError:
                pass
    if a.mode == "netns" and net is not None:
        net.close()
        return
    for i, pr in list(procs.items()):
        if pr.poll() is None:
            pr.terminate()
    for i, pr in list(procs.items()):
        try:
            pr.wait(10)
        except subprocess.TimeoutExpired:
            pr.kill()
            pr.wait()


# ---- memcached client ------------------------------------------------------------------
class Conn:
    """A memcached connection (harness.RawClient), opened on first use and again after an
    error."""

    def __init__(self, addr, timeout=15.0):
        self.addr, self.timeout = addr, timeout
        self.c = None

    def close(self):
        if self.c:
            self.c.close()
        self.c = None

    def op(self, kind, key, val=None):
        """-> reply string: STORED, DELETED, NOT_FOUND, MISS, VAL:<v>, SERVER_ERROR..., ERR:..."""
        try:
            if self.c is None:
                self.c = harness.RawClient(self.addr[1], timeout=self.timeout, host=self.addr[0])
            line = lambda: self.c.line()[:-2].decode("utf-8", "replace")
            if kind == "set":
                self.c.send(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(val), val.encode()))
                return line()
            if kind == "delete":
                self.c.send(b"delete %s\r\n" % key.encode())
                return line()
            self.c.send(b"get %s\r\n" % key.encode())
            l = line()
            if l == "END":
                return "MISS"
            if l.startswith("VALUE"):
                v = self.c.recv_exact(int(l.split()[3]) + 2)[:-2].decode()
                return "VAL:" + v if line() == "END" else "ERR:noend"
            return l
        except (OSError, ValueError, IndexError) as e:
            self.close()
            return "ERR:" + type(e).__name__ + ":" + str(e)[:40]


def one_shot(i, kind, key, val=None):
    c = Conn(mc_addr(i), timeout=5)
    try:
        return c.op(kind, key, val)
    finally:
        c.close()


# ---- recording threads -----------------------------------------------------------------
records = []  # (group, key, op, val, t_send, t_recv, reply)
rec_lock = threading.Lock()
stop_flag = threading.Event()
events = []  # (t, source, text)


def client(group, keys):
    c = Conn(mc_addr(1))
    period = 1.0 / a.rate
    visit = 0
    seq = 0
    next_t = time.monotonic()
    end = T0 + a.duration
    ops_max = int(a.rate * a.duration * 2) + 10
    done = 0
    while not stop_flag.is_set() and time.monotonic() < end and done < ops_max:
        k = keys[visit % len(keys)]
        visit += 1
        plan = [("delete", None), ("get", None)] if visit % 7 == 0 else [("set", None), ("get", None)]
        if a.readonly_after_heal and "end" in fault:
            plan = [("get", None)]
        if a.readonly_from is not None and "end" in fault and now() > fault["end"] + a.readonly_from:
            plan = [("get", None)]
        for kind, _ in plan:
            seq += 1
            val = "%s-%d" % (k, seq) if kind == "set" else None
            t1 = now()
            r = c.op(kind, k, val)
            t2 = now()
            done += 1
            with rec_lock:
                records.append((group, k, kind, val, t1, t2, r))
            next_t += period
            d = next_t - time.monotonic()
            if d > 0:
                time.sleep(d)
            else:
                next_t = time.monotonic()
    c.close()


def tailer():
    files = {}
    pos = {}
    while not stop_flag.is_set() or files:
        for i in (1, 3):
            fn = os.path.join(a.out, "n%d.stderr" % i)
            if i not in files and os.path.exists(fn):
                files[i] = open(fn, "rb")
                pos[i] = b""
            if i in files:
                d = files[i].read()
                if d:
                    pos[i] += d
                    *lines, pos[i] = pos[i].split(b"\n")
                    t = now()
                    for l in lines:
                        events.append((t, "n%d" % i, l.decode("utf-8", "replace")))
        if stop_flag.is_set():
            for f in files.values():
                f.close()
            files = {}
            break
        time.sleep(0.01)


stats_series = []  # (t, {stat: value})
WANT = ("cluster_rpc_unreachable", "cluster_rpc_calls_failed_fast", "cluster_links_unreachable",
        "cluster_link_calls_failed_fast")


def poller():
    end = T0 + a.duration + 1
    while not stop_flag.is_set() and time.monotonic() < end:
        t = now()
        st = ctl(1, "stats", timeout=1)
        if st:
            d = {}
            sd = st.get("stats", {}) if isinstance(st, dict) else {}
            for k in WANT:
                if k in sd:
                    d[k] = sd[k]
            stats_series.append((t, d))
        time.sleep(0.25)


sockmon = []  # (t, [ss lines of n1's sockets to n3's RPC port])


def socket_monitor():
    """netns only: n1's TCP sockets to n3's RPC and memcached ports, every 50 ms, from 1.5 s
    before the heal to 2 s after (ss in n1's namespace)."""
    if a.mode != "netns":
        return
    t_from = a.fault_at + a.fault_ms / 1000 - 1.5
    t_to = a.fault_at + a.fault_ms / 1000 + 2.0
    time.sleep(max(0, T0 + t_from - time.monotonic()))
    n = 0
    while time.monotonic() < T0 + t_to and n < 200 and not stop_flag.is_set():
        n += 1
        try:
            r = subprocess.run(["nsenter", "-t", str(net.holders[1].pid), "-n", "ss", "-tnoH", "dst",
                                netns.ip(3)], capture_output=True, text=True, timeout=2)
            sockmon.append((now(), [" ".join(l.split()) for l in r.stdout.splitlines()]))
        except (OSError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.05)


# ---- fault -----------------------------------------------------------------------------
fault = {}


def injector():
    time.sleep(max(0, T0 + a.fault_at - time.monotonic()))
    if a.mode == "pause":
        os.kill(victim_pid(), signal.SIGSTOP)
        fault["start"] = now()
        time.sleep(a.fault_ms / 1000)
        os.kill(victim_pid(), signal.SIGCONT)
        fault["end"] = now()
    else:
        pairs = [(1, 3)] if a.cut == "asym" else [(x, 3) for x in range(1, N + 1) if x != 3] + \
            [(3, x) for x in range(1, N + 1) if x != 3]
        for x, y in pairs:
            net.cut(x, y)
        fault["start"] = now()
        time.sleep(a.fault_ms / 1000)
        for x, y in pairs:
            net.heal(x, y)
        fault["end"] = now()


# ---- analysis --------------------------------------------------------------------------
def analyse(owners, final):
    res = {"fault_start": fault.get("start"), "fault_end": fault.get("end")}
    te = fault["end"]
    # n1's view of n3
    n3ev = [(t, s, l) for t, s, l in events if s == "n1" and ("'n3'" in l or "n3" in l.split("'")[1:2] or
                                                              rpc_addr(3) in l or
                                                              ("%s:%d" % mc_addr(3)) in l)]
    res["n1_events_n3"] = [("%.3f" % t, l[:160]) for t, s, l in n3ev]
    alive = [t for t, s, l in n3ev if t >= te - 0.05 and ("alive again" in l or "restarted" in l)]
    down = [t for t, s, l in n3ev if fault["start"] <= t and ("suspected" in l or "is dead" in l)]
    res["n1_saw_n3_down"] = bool(down)
    # "alive" moment: n1's alive-again line if n3 was suspected/dead, else the resume itself
    t_alive = alive[0] if alive else te
    res["t_alive"] = t_alive
    res["alive_after_resume_ms"] = round((t_alive - te) * 1000)
    # errors by group
    groups = {}
    for g, k, op, v, t1, t2, r in records:
        bad = r.startswith("SERVER_ERROR") or r.startswith("ERR") or r.startswith("CLIENT_ERROR") or r == "ERROR"
        G = groups.setdefault(g, {"ops": 0, "errors": 0, "err_during": 0, "err_after_resume": 0,
                                  "err_after_alive_100ms": 0, "last_err_recv_after_resume_ms": None,
                                  "last_err_send_after_alive_ms": None, "err_kinds": {},
                                  "max_latency_ms": 0, "first_ok_write_after_resume_ms": None})
        G["ops"] += 1
        G["max_latency_ms"] = max(G["max_latency_ms"], round((t2 - t1) * 1000))
        if not bad and op == "set" and t1 >= te and G["first_ok_write_after_resume_ms"] is None:
            G["first_ok_write_after_resume_ms"] = round((t2 - te) * 1000)
        if not bad:
            continue
        G["errors"] += 1
        kk = r[:40]
        G["err_kinds"][kk] = G["err_kinds"].get(kk, 0) + 1
        if t2 < te:
            G["err_during"] += 1
        else:
            G["err_after_resume"] += 1
            G["last_err_recv_after_resume_ms"] = round((t2 - te) * 1000)
        if t1 > t_alive + 0.1:
            G["err_after_alive_100ms"] += 1
            G["last_err_send_after_alive_ms"] = round((t1 - t_alive) * 1000)
    res["groups"] = groups
    # consistency during the run: a get must return the last acked state (or an unknown write's)
    hist = {}
    anomalies = {"stale": [], "resurrected": [], "miss_after_ack": 0, "miss_after_ack_after_resume": 0}
    for g, k, op, v, t1, t2, r in sorted(records, key=lambda x: x[4]):
        h = hist.setdefault(k, {"acked": None, "unknown": [], "known": False})
        if op == "set":
            if r == "STORED":
                h.update(acked=v, unknown=[], known=True)
            else:
                h["unknown"].append(v)
        elif op == "delete":
            if r in ("DELETED", "NOT_FOUND"):
                h.update(acked=None, unknown=[], known=True)
            else:
                h["unknown"].append(None)
        else:
            if not h["known"] or not (r.startswith("VAL:") or r == "MISS"):
                continue
            got = r[4:] if r.startswith("VAL:") else None
            ok = [h["acked"]] + h["unknown"]
            if got in ok:
                continue
            if got is None:
                anomalies["miss_after_ack"] += 1
                if t1 >= te:
                    anomalies["miss_after_ack_after_resume"] += 1
                continue
            item = (round(t1, 3), g, k, "expected %r (+unknown %r) got %r" % (h["acked"], h["unknown"], got))
            (anomalies["resurrected"] if h["acked"] is None else anomalies["stale"]).append(item)
    res["during_run"] = {"stale_n": len(anomalies["stale"]), "resurrected_n": len(anomalies["resurrected"]),
                         "stale": anomalies["stale"][:8], "resurrected": anomalies["resurrected"][:8],
                         "miss_after_ack": anomalies["miss_after_ack"],
                         "miss_after_ack_after_resume": anomalies["miss_after_ack_after_resume"]}
    # final check
    bad = []
    for k, h in hist.items():
        ok = [h["acked"]] + h["unknown"]
        for i, got in final[k].items():
            if got == "ERR":
                bad.append((k, i, "read error"))
            elif got not in ok:
                bad.append((k, i, owners.get(k), "expected %r (+unknown %r) got %r" % (h["acked"], h["unknown"], got)))
    res["final_bad_n"] = len(bad)
    res["final_bad"] = bad[:12]
    # stats around resume
    ser = [(round(t - te, 2), d) for t, d in stats_series if te - 1.0 <= t <= te + 4.0]
    res["stats_around_resume"] = ser
    return res


def main():
    try:
        start_nodes()
        deadline = time.monotonic() + 20
        while True:
            m = [ctl(i, "members") for i in range(1, N + 1)]
            if all(x and sum(y["state"] == "alive" for y in x) == N for x in m):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not form")
            time.sleep(0.2)
        keys = ["t%d" % j for j in range(a.keys)]
        rows = ctl(1, "ring", *sum((["--key", k] for k in keys), []))
        owners = {r["key"]: [o["name"] for o in r["owners"]] for r in rows}
        groups = {}
        for k in keys:
            g = owners[k][0] if a.R == 1 else "+".join(owners[k])
            # group by primary; tag R>1 groups containing n3 specially
            prim = owners[k][0]
            gname = prim if a.R == 1 else (prim + ("(n3 rep)" if "n3" in owners[k][1:] else ""))
            groups.setdefault(gname, []).append(k)
        global T0
        T0 = time.monotonic()
        ths = [threading.Thread(target=tailer, daemon=True)]
        for g, ks in sorted(groups.items()):
            ths.append(threading.Thread(target=client, args=(g, ks), daemon=True))
        ths.append(threading.Thread(target=poller, daemon=True))
        ths.append(threading.Thread(target=socket_monitor, daemon=True))
        inj = threading.Thread(target=injector, daemon=True)
        for t in ths:
            t.start()
        inj.start()
        inj.join(a.fault_at + a.fault_ms / 1000 + 30)
        for t in ths[1:]:
            t.join(a.duration + 40)
        time.sleep(a.settle)
        final = {}
        for k in keys:
            final[k] = {}
            for i in range(1, N + 1):
                r = one_shot(i, "get", k)
                final[k]["n%d" % i] = r[4:] if r.startswith("VAL:") else (None if r == "MISS" else "ERR")
        mem = ctl(1, "members")
        with open(os.path.join(a.out, "stats_end.json"), "w") as f:
            json.dump({"n%d" % i: (ctl(i, "stats") or {}).get("stats") for i in range(1, N + 1)}, f, indent=0)
        final2 = None
        if a.final_isolate and a.mode == "netns":
            pairs = [(x, 3) for x in range(1, N + 1) if x != 3] + [(3, x) for x in range(1, N + 1) if x != 3]
            for x, y in pairs:
                net.cut(x, y)
            dl = time.monotonic() + 15
            while time.monotonic() < dl:
                m = ctl(1, "members")
                if m and {x["name"]: x["state"] for x in m}.get("n3") == "dead":
                    break
                time.sleep(0.1)
            time.sleep(0.3)
            final2 = {}
            for k in keys:
                final2[k] = {}
                for i in (1, 2):
                    r = one_shot(i, "get", k)
                    final2[k]["n%d" % i] = r[4:] if r.startswith("VAL:") else (None if r == "MISS" else "ERR")
            for x, y in pairs:
                net.heal(x, y)
        stop_flag.set()
        ths[0].join(2)
        res = analyse(owners, final)
        if final2 is not None:
            res2 = analyse(owners, final2)
            res["final_n3_away_bad_n"] = res2["final_bad_n"]
            res["final_n3_away_bad"] = res2["final_bad"]
        res["args"] = vars(a)
        res["groups_keys"] = {g: len(v) for g, v in groups.items()}
        res["members_end"] = [(x["name"], x["state"], x["incarnation"]) for x in mem] if mem else None
        with open(os.path.join(a.out, "records.json"), "w") as f:
            json.dump({"records": records, "events": events, "stats": stats_series, "owners": owners,
                       "sockmon": sockmon}, f)
        with open(os.path.join(a.out, "summary.json"), "w") as f:
            json.dump(res, f, indent=1)
        print_summary(res)
    finally:
        stop_flag.set()
        stop_nodes()


def print_summary(res):
    print("== %s" % a.out)
    print("fault %.3f..%.3f  n1 saw n3 down: %s  alive %+d ms after resume" % (
        res["fault_start"], res["fault_end"], res["n1_saw_n3_down"], res["alive_after_resume_ms"]))
    for t, l in res["n1_events_n3"]:
        print("   n1 %s %s" % (t, l))
    for g, G in sorted(res["groups"].items()):
        print("  group %-12s ops %5d err %4d (during %d, after resume %d, sent >alive+100ms %d) "
              "last err recv %s ms after resume; last err sent %s ms after alive; first ok write %s ms; max lat %d ms; %s" % (
                  g, G["ops"], G["errors"], G["err_during"], G["err_after_resume"], G["err_after_alive_100ms"],
                  G["last_err_recv_after_resume_ms"], G["last_err_send_after_alive_ms"],
                  G["first_ok_write_after_resume_ms"], G["max_latency_ms"], G["err_kinds"]))
    d = res["during_run"]
    print("  during run: stale %d resurrected %d miss-after-ack %d (after resume %d)" % (
        d["stale_n"], d["resurrected_n"], d["miss_after_ack"], d["miss_after_ack_after_resume"]))
    for x in d["stale"][:4] + d["resurrected"][:4]:
        print("    ", x)
    print("  final: %d bad reads" % res["final_bad_n"])
    for x in res["final_bad"][:6]:
        print("    ", x)
    print("  stats (t rel resume):")
    last = None
    for t, dd in res["stats_around_resume"]:
        if dd != last:
            print("    %+.2f %s" % (t, dd))
            last = dd
    if "final_n3_away_bad_n" in res:
        print("  final with n3 isolated again (n1/n2 copies): %d bad reads" % res["final_n3_away_bad_n"])
        for x in res["final_n3_away_bad"][:6]:
            print("    ", x)
    print("  members at end:", res["members_end"])


if __name__ == "__main__":
    main()
