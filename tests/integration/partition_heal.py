#!/usr/bin/env python3
"""Partition heal check (a manual tool, not part of `make test`): three nodes with R=2 (or R),
each in a network namespace of its own joined by a bridge; n3 is cut off both ways (silent
drops with tc, or `prohibit` routes) for CUT seconds (default 12); once both sides have the
other dead, every key is written once on one side (half through n1, half through n3: no
conflicting writes), then the cut heals and every key is read through every node at READ_AT seconds
(default 6,40). It prints how many keys do not return their last acknowledged write. With
CONFLICT=1 each key is then written again on the other side: the later write must win.
Session 45 (docs/ARCHITECTURE.md, "hand-back"): 34-39 of 60 wrong at +40 s before handed-back
deletes spared newer items, 0 of 60 after.

Run as root; everything lives in namespaces it creates (nothing outside them is touched):
    BIN=build/bin unshare -n python3 tests/integration/partition_heal.py [CUT [R [drop|prohibit]]]
"""
import json, os, socket, subprocess, sys, tempfile, time

BIN = os.environ.get("BIN", "build/bin")
LOGS = tempfile.mkdtemp(prefix="bifrost-partition-")
CUT = float(sys.argv[1]) if len(sys.argv) > 1 else 12.0
R = sys.argv[2] if len(sys.argv) > 2 else "2"
KIND = sys.argv[3] if len(sys.argv) > 3 else "drop"  # drop: tc silent drop; prohibit: EACCES route
IP = {1: "10.0.0.1", 2: "10.0.0.2", 3: "10.0.0.3"}


def sh(c):
    subprocess.run(c, shell=True, check=True)


def ns(h, c):
    sh(f"nsenter -t {h.pid} -n sh -c '{c}'")


def ctl(i, *a):
    r = subprocess.run([BIN + "/bifrostctl", "--node", f"{IP[i]}:22001", "--timeout", "2", "--json"] + list(a),
                       capture_output=True, text=True, timeout=5)
    return json.loads(r.stdout) if r.returncode == 0 else None


def mc(i, line, data=None):
    s = socket.create_connection((IP[i], 21001), timeout=5)
    s.sendall(line.encode() + b"\r\n" + (data.encode() + b"\r\n" if data is not None else b""))
    buf = b""
    while not (buf.endswith(b"END\r\n") or (not line.startswith("get") and buf.endswith(b"\r\n"))):
        buf += s.recv(4096)
    s.close()
    return buf.decode()


def get(i, k):
    r = mc(i, f"get {k}")
    return r.split("\r\n")[1] if r.startswith("VALUE") else None


def put(i, k, v):
    return mc(i, f"set {k} 0 0 {len(v)}", v).strip()


holders, nodes = {}, {}
try:
    sh("ip link set lo up; ip link add br0 type bridge; ip addr add 10.0.0.254/24 dev br0; ip link set br0 up")
    for i in IP:
        holders[i] = subprocess.Popen(["unshare", "-n", "sleep", "1000"])
    time.sleep(0.3)
    for i, h in holders.items():
        sh(f"ip link add v{i} type veth peer name p{i}; ip link set p{i} master br0 up; ip link set v{i} netns {h.pid}")
        ns(h, f"ip link set lo up; ip addr add {IP[i]}/24 dev v{i}; ip link set v{i} up; "
              f"tc qdisc add dev v{i} root handle 1: htb; tc class add dev v{i} parent 1: classid 1:2 htb rate 10gbit; "
              f"tc qdisc add dev v{i} parent 1:2 handle 2: pfifo limit 0")
    time.sleep(1)
    for i in IP:
        args = [BIN + "/bifrostd", "-l", IP[i], "-p", "21001", "--node-name", f"n{i}", "--replicas", R, "-t", "2"]
        if i != 1:
            args += ["--join", f"{IP[1]}:22001"]
        nodes[i] = subprocess.Popen(["nsenter", "-t", str(holders[i].pid), "-n"] + args,
                                    stderr=open(f"{LOGS}/n{i}.stderr", "w"))
        time.sleep(0.5)
    while not all((m := ctl(i, "members")) and sum(x["state"] == "alive" for x in m) == 3 for i in IP):
        time.sleep(0.2)
    keys = [f"k{j}" for j in range(60)]
    rows = ctl(1, "ring", *sum((["--key", k] for k in keys), []))
    owners = {r["key"]: [o["name"] for o in r["owners"]] for r in rows}
    for k in keys:
        assert put(1, k, "v1-before-cut") == "STORED"
    time.sleep(float(os.environ.get("PRE_WAIT", "1")))  # quiet time between the v1 writes and the cut
    t = time.time()
    for a, b in [(1, 3), (3, 1), (2, 3), (3, 2)]:  # isolate n3: silent drops both ways
        ns(holders[a], f"tc filter add dev v{a} parent 1: protocol ip prio {10 + b} u32 match ip dst {IP[b]}/32 flowid 1:2"
           if KIND == "drop" else f"ip route add prohibit {IP[b]}/32")
    while not ((m1 := ctl(1, "members")) and {x["name"]: x["state"] for x in m1}.get("n3") == "dead" and
               (m3 := ctl(3, "members")) and {x["name"]: x["state"] for x in m3}.get("n1") == "dead"):
        time.sleep(0.1)
    print(f"both sides have the other dead {time.time() - t:.1f}s after the cut")
    expect = {}
    for n, k in enumerate(keys):  # one write per key, on one side only
        via = 1 if n % 2 == 0 else 3
        r = put(via, k, f"v2-during-cut-via-n{via}")
        assert r == "STORED", r
        expect[k] = (f"v2-during-cut-via-n{via}", via)
    if os.environ.get("CONFLICT"):  # then each key again on the other side: the later write wins
        time.sleep(0.05)
        for n, k in enumerate(keys):
            via = 3 if n % 2 == 0 else 1
            r = put(via, k, f"v3-later-via-n{via}")
            assert r == "STORED", r
            expect[k] = (f"v3-later-via-n{via}", via)
    time.sleep(max(0, CUT - (time.time() - t)))
    for a, b in [(1, 3), (3, 1), (2, 3), (3, 2)]:
        ns(holders[a], f"tc filter del dev v{a} parent 1: prio {10 + b}" if KIND == "drop" else f"ip route del prohibit {IP[b]}/32")
    print(f"healed after {time.time() - t:.1f}s; reading every key through every node at +{os.environ.get('READ_AT', '6,40')} s")
    th = time.time()
    for when in [float(x) for x in os.environ.get("READ_AT", "6,40").split(",")]:
        time.sleep(max(0, th + when - time.time()))
        bad = 0
        for k in keys:
            got = {i: get(i, k) for i in IP}
            if any(v != expect[k][0] for v in got.values()):
                bad += 1
                if bad <= int(os.environ.get("SHOW", "12")):
                    print(f"  +{when}s {k} owners={owners[k]} written via n{expect[k][1]} (STORED) expected {expect[k][0]!r} got {got}")
        print(f"+{when}s after heal: {bad} of {len(keys)} keys do not return their last acknowledged write through every node")
    print("members:", [(x["name"], x["state"], x["incarnation"]) for x in ctl(1, "members")])
finally:
    for p in nodes.values():
        p.terminate()
    for i, p in nodes.items():
        try:
            print(f"n{i} exit {p.wait(15)}")
        except subprocess.TimeoutExpired:
            p.kill()
            print(f"n{i} killed (no exit within 15 s of SIGTERM)")
    for h in holders.values():
        h.terminate()
        h.wait()
