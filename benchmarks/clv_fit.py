"""Purchase-model fit alone: segone.clv against lifetimes, each contender in its own process.

The WORKLOADS.md CLV row "BG/NBD fit on 1M customers drawn from the BG/NBD
process (about 331k distinct patterns)", and the same data for Pareto/NBD.

Data: ``clv_compare.make_data`` (``segone.clv.sample_bgnbd`` with r=0.27,
alpha=42, a=0.48, b=2.1; T uniform over 1..730 whole days; recency floored
to whole days), regenerated from the same seed in every process.

Contenders (the timed call only; data generation and imports are outside):

* ``lifetimes-bgnbd``: pandas groups the customers into distinct
  (frequency, recency, T) patterns and ``BetaGeoFitter().fit(..., weights=counts)``
  fits on them (the weights trick, grouping included in the time);
* ``segone-bgnbd``: ``segone.clv.BetaGeo().fit(frequency, recency, T)`` on the
  customer rows (its pattern histogram included in the time);
* ``lifetimes-pareto`` / ``segone-pareto``: the same with ``ParetoNBDFitter``
  (Nelder-Mead from lifetimes' random start, seeded with ``np.random.seed(0)``)
  and ``segone.clv.ParetoNBD``.

Timing: every (round, contender) is a fresh ``python`` process; the
contenders are interleaved within each round (``--rounds``, at least two);
the table shows the median per contender and the ratio of the medians
(lifetimes / segone).  The largest relative difference of the fitted
parameters between the two is printed too.

Usage (from the repository root):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/clv_fit.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/clv_fit.py --models bgnbd --rounds 3
    python benchmarks/clv_fit.py --n 100000 --rounds 2        # quick
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

THREADS = 2
HERE = os.path.dirname(os.path.abspath(__file__))
CONTENDERS = {
    "bgnbd": ("lifetimes-bgnbd", "segone-bgnbd"),
    "pareto": ("lifetimes-pareto", "segone-pareto"),
}


def _worker(name, n):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, str(THREADS))
    import warnings

    import numpy as np

    sys.path.insert(0, HERE)
    from clv_compare import make_data

    x, tx, T, _ = make_data(n)
    if name.startswith("lifetimes"):
        import pandas as pd
        from lifetimes import BetaGeoFitter, ParetoNBDFitter

        fitter = BetaGeoFitter if name.endswith("bgnbd") else ParetoNBDFitter
        np.random.seed(0)

        def fit():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                df = pd.DataFrame({"frequency": x, "recency": tx, "T": T})
                pat = df.groupby(["frequency", "recency", "T"], sort=False).size().reset_index(name="weights")
                m = fitter().fit(pat["frequency"], pat["recency"], pat["T"], weights=pat["weights"])
            return {k: float(v) for k, v in m.params_.items()}, len(pat)
    else:
        from segone.clv import BetaGeo, ParetoNBD

        model = BetaGeo if name.endswith("bgnbd") else ParetoNBD

        def fit():
            m = model().fit(x, tx, T)
            return dict(m.params_), m.n_patterns_

    t = time.perf_counter()
    params, patterns = fit()
    seconds = time.perf_counter() - t
    print(json.dumps({"name": name, "seconds": seconds, "params": params, "patterns": patterns}))


def _run(name, n):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name, "--n", str(n)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="customers")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (each contender once per round)")
    ap.add_argument("--models", default="bgnbd,pareto", help="comma-separated: bgnbd, pareto")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.n)
        return
    if args.rounds < 2:
        ap.error("--rounds must be >= 2")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in CONTENDERS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(CONTENDERS)}")
    import lifetimes
    import numpy as np
    import scipy

    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"lifetimes {lifetimes.__version__}; {args.n:,} customers; {args.rounds} interleaved rounds, "
          "each contender in its own process")  # fmt: skip
    results = {m: {c: [] for c in CONTENDERS[m]} for m in models}
    for rnd in range(args.rounds):
        for m in models:
            order = CONTENDERS[m] if rnd % 2 == 0 else CONTENDERS[m][::-1]
            for c in order:
                res = _run(c, args.n)
                results[m][c].append(res)
                print(f"round {rnd + 1}: {c:17s} {res['seconds']:8.3f} s  ({res['patterns']:,} patterns)", flush=True)
    print("\n| model | patterns | lifetimes (s) | segone (s) | speed-up | max rel. param diff |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for m in models:
        peer, seg = CONTENDERS[m]
        tp = statistics.median(r["seconds"] for r in results[m][peer])
        ts = statistics.median(r["seconds"] for r in results[m][seg])
        pp, ps = results[m][peer][-1]["params"], results[m][seg][-1]["params"]
        diff = max(abs(ps[k] / pp[k] - 1) for k in pp)
        summary[m] = {"lifetimes_s": tp, "segone_s": ts, "speedup": tp / ts, "param_rel_diff": diff,
                      "runs": results[m]}  # fmt: skip
        print(f"| {m} | {results[m][seg][-1]['patterns']:,} | {tp:.3f} | {ts:.3f} | {tp / ts:.1f}x | {diff:.1e} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n": args.n, "rounds": args.rounds, "results": summary}, fh, indent=2)


if __name__ == "__main__":
    main()
