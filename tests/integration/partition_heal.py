#!/usr/bin/env python3
"""Partition heal check (a manual tool, not part of `make test`): three nodes with R=2 (or R),
each in a network namespace of its own joined by a bridge; n3 is cut off both ways (silent
drops with tc, or `prohibit` routes) for CUT seconds (default 12); once both sides have the
other dead, every key is written once on one side (half through n1, half through n3: no
conflicting writes), then the cut heals and every key is read through every node at READ_AT seconds
(default 6,40). It prints how many keys do not return their last acknowledged write. With
CONFLICT=1 each key is then written again on the other side: the later write must win.
Session 45 (docs/ARCHITECTURE.md, "hand-back"): 34-39 of 60 wrong at +40 s before handed-back
deletes spared newer items, 0 of 60 after. Session 47: with a 10 s cut, 17-23 of 60 wrong at
+1..3 s and 1-14 for good in 3 runs of 4 while the hand-backs were deletes; 0 of 60 from +1 s
on once they carried copies of the items.

Run as root; it runs itself in a network namespace of its own, where everything lives
(netns.py; nothing outside is touched):
    BIN=build/bin python3 tests/integration/partition_heal.py [CUT [R [drop|prohibit]]]
"""
import os, sys, tempfile, time

import netns

BIN = os.environ.get("BIN", "build/bin")
LOGS = tempfile.mkdtemp(prefix="bifrost-partition-")
CUT = float(sys.argv[1]) if len(sys.argv) > 1 else 12.0
R = sys.argv[2] if len(sys.argv) > 2 else "2"
KIND = sys.argv[3] if len(sys.argv) > 3 else "drop"  # drop: tc silent drop; prohibit: EACCES route
IP = {i: netns.ip(i) for i in (1, 2, 3)}


def get(i, k):
    r = netns.mc(i, f"get {k}")
    return r.split("\r\n")[1] if r.startswith("VALUE") else None


def put(i, k, v):
    return netns.mc(i, f"set {k} 0 0 {len(v)}", v).strip()


missing = netns.reexec_in_private_netns()
if missing:
    sys.exit("partition_heal: " + missing)
net = netns.Net(os.path.abspath(BIN + "/bifrostd"), 3, LOGS)
try:
    for i in IP:
        net.start(i, ["--replicas", R, "-t", "2"], join=1 if i != 1 else None)
    while not all((m := net.ctl(i, "members", timeout=2)) and sum(x["state"] == "alive" for x in m) == 3 for i in IP):
        time.sleep(0.2)
    keys = [f"k{j}" for j in range(60)]
    rows = net.ctl(1, "ring", *sum((["--key", k] for k in keys), []), timeout=2)
    owners = {r["key"]: [o["name"] for o in r["owners"]] for r in rows}
    for k in keys:
        assert put(1, k, "v1-before-cut") == "STORED"
    time.sleep(float(os.environ.get("PRE_WAIT", "1")))  # quiet time between the v1 writes and the cut
    t = time.time()
    for a, b in [(1, 3), (3, 1), (2, 3), (3, 2)]:  # isolate n3: silent drops both ways
        net.cut(a, b, KIND)
    while not ((m1 := net.ctl(1, "members", timeout=2)) and {x["name"]: x["state"] for x in m1}.get("n3") == "dead" and
               (m3 := net.ctl(3, "members", timeout=2)) and {x["name"]: x["state"] for x in m3}.get("n1") == "dead"):
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
        net.heal(a, b)
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
    print("members:", [(x["name"], x["state"], x["incarnation"]) for x in net.ctl(1, "members", timeout=2)])
finally:
    for i in IP:
        status = net.stop(i)
        print(f"n{i} exit {status}" if status is not None else f"n{i} killed (no exit within 15 s of SIGTERM)")
    net.close()
