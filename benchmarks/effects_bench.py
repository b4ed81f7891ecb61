"""Benchmark EFFECT: campaign effects of two runs against plain tracking and a pandas peer.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/effects_bench.py -n 1000000 [--rounds 2]

Makes two synthetic periods with a campaign over half of the customers
(``segone synth --periods 2 --campaign``), runs segone on both (not timed),
then times, each contender in its own process, interleaved round by round:

* ``track``: ``segone.track.compare_outputs(OLD, NEW)`` (the plain TRACK of the two runs);
* ``effects``: ``segone.effects.effects_from_outputs`` on the same outputs (read moves, the value
  changes, the bootstrap, the table);
* ``pandas``: the same effect table by hand: pandas merges of moves, the treatment and the two runs'
  assignments, a groupby per (group, previous segment, outcome), and a loop of 200 Poisson-bootstrap
  replicates (numpy weights, ``np.bincount``), as an analyst would write it.

Prints the median seconds per contender and the ratio effects / track.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _child(kind, root):
    import numpy  # noqa: F401  (imports are not timed: each contender pays only its work)
    import pandas  # noqa: F401

    import segone
    from segone.effects import effects_from_outputs

    t0 = time.perf_counter()
    if kind == "track":
        segone.track.compare_outputs(os.path.join(root, "o0"), os.path.join(root, "o1"),
                                     os.path.join(root, f"t-{os.getpid()}"))  # fmt: skip
    elif kind == "effects":
        effects_from_outputs(os.path.join(root, "o0"), os.path.join(root, "o1"),
                             os.path.join(root, "data", "period-1", "treatment.parquet"))  # fmt: skip
    else:
        _pandas(root)
    return time.perf_counter() - t0


def _pandas(root, n_boot=200):
    import numpy as np
    import pandas as pd

    moves = pd.read_parquet(os.path.join(root, "o1", "moves.parquet"))
    treat = pd.read_parquet(os.path.join(root, "data", "period-1", "treatment.parquet"))
    a0 = pd.read_parquet(os.path.join(root, "o0", "assignments.parquet"), columns=["customer_id", "spend_total", "clv"])
    a1 = pd.read_parquet(os.path.join(root, "o1", "assignments.parquet"), columns=["customer_id", "spend_total", "clv"])
    m = moves.dropna(subset=["previous_segment"]).merge(treat, on="customer_id", how="inner")
    v = a1.merge(a0, on="customer_id", suffixes=("_new", "_old"))
    v["spend_change"] = v["spend_total_new"] - v["spend_total_old"]
    v["clv_change"] = v["clv_new"] - v["clv_old"]
    m = m.merge(v[["customer_id", "spend_change", "clv_change"]], on="customer_id", how="left")
    m["outcome"] = m["segment"].fillna(-1).astype("int64")
    counts = m.groupby(["campaign", "group", "previous_segment", "outcome"]).size()
    means = m.groupby(["campaign", "group", "previous_segment"])[["spend_change", "clv_change"]].mean()
    g = m.groupby(["campaign", "group", "previous_segment", "outcome"]).ngroup().to_numpy()
    gv = m.groupby(["campaign", "group", "previous_segment"]).ngroup().to_numpy()
    rng = np.random.default_rng(0)
    sp = m["spend_change"].fillna(0).to_numpy()
    cl = m["clv_change"].fillna(0).to_numpy()
    boot = np.empty((n_boot, g.max() + 1))
    bval = np.empty((n_boot, gv.max() + 1, 3))
    for b in range(n_boot):
        w = rng.poisson(1.0, len(m)).astype(float)
        boot[b] = np.bincount(g, weights=w)
        bval[b, :, 0] = np.bincount(gv, weights=w)
        bval[b, :, 1] = np.bincount(gv, weights=w * sp)
        bval[b, :, 2] = np.bincount(gv, weights=w * cl)
    return counts, means, boot, bval


def _setup(root, n):
    import segone

    data = os.path.join(root, "data")
    if not os.path.exists(os.path.join(root, "o1", "run.json")):
        segone.synth.write_periods(data, n, periods=2, seed=1, overwrite=True,
                                   campaign={"effect": 0.3, "name": "bench"})  # fmt: skip
        segone.run(os.path.join(data, "period-0"), os.path.join(root, "o0"), 8, overwrite=True)
        segone.run(os.path.join(data, "period-1"), os.path.join(root, "o1"), 8, previous=os.path.join(root, "o0"),
                   overwrite=True)  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--root", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    root = args.root or os.path.join(tempfile.gettempdir(), f"segone-effect-bench-{args.n}")
    if args.child:
        print(json.dumps({"seconds": _child(args.child, root)}))
        return
    os.makedirs(root, exist_ok=True)
    t0 = time.perf_counter()
    _setup(root, args.n)
    print(f"setup (synth + two runs) {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    times = {k: [] for k in ("track", "effects", "pandas")}
    for r in range(args.rounds):
        for kind in times:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "-n", str(args.n), "--root", root,
                                  "--child", kind], capture_output=True, text=True, check=True)  # fmt: skip
            times[kind].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
            print(f"round {r + 1} {kind}: {times[kind][-1]:.2f} s", file=sys.stderr)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"| customers | track (s) | effects (s) | pandas peer (s) | effects / track | pandas / effects |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.n:,} | {med['track']:.2f} | {med['effects']:.2f} | {med['pandas']:.2f} | "
          f"{med['effects'] / med['track']:.2f} | {med['pandas'] / med['effects']:.2f} |")  # fmt: skip
    print(json.dumps({"customers": args.n, "seconds": times}))


if __name__ == "__main__":
    main()
