"""Customer value (BG/NBD + Gamma-Gamma): segone.clv against lifetimes, side by side.

The task, for each contender: fit BG/NBD and Gamma-Gamma on the BTYD columns
of every customer, then predict each customer's expected purchases over the
horizon (12 months = 360 days), probability alive and CLV (12 months, 1 %
monthly discount, daily periods).

Data: customers drawn from the BG/NBD process (``segone.clv.sample_bgnbd``,
r=0.27, alpha=42, a=0.48, b=2.1; T uniform over 1..730 whole days; recency
floored to whole days) and their mean repeat order value from Gamma-Gamma
(p=6, q=4, v=15).

Contenders:

* ``lifetimes`` with the weights trick, as favourable to it as its API
  allows: pandas groups the customers into distinct (frequency, recency, T)
  patterns, ``BetaGeoFitter.fit(..., weights=counts)`` fits on the patterns,
  and the purchase predictions and the discounted purchase sums of
  ``customer_lifetime_value`` (``lifetimes.utils._customer_lifetime_value``
  with unit monetary values) are computed once per pattern and broadcast to
  the customers; ``GammaGammaFitter`` fits on the repeat customers and
  ``conditional_expected_average_profit`` scales the discounted sums.
* ``segone``: ``segone.clv.predict_value`` on a pyarrow table of the same
  columns (pattern histogram, both fits, all predictions).

Timing: one process, interleaved (peer, segone, peer, segone, ...), one
untimed warm-up call of each, ``--pairs`` timed pairs; the speed-up is the
median of the per-pair ratios.  Then segone alone on ``--big`` customers.
The agreement of the two contenders' results is reported too.

Usage (from the repository root):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/clv_compare.py
    python benchmarks/clv_compare.py --n 200000 --big 0 --pairs 3     # quick
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

THREADS = 2
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, str(THREADS))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from segone.clv import predict_value, sample_bgnbd, sample_gamma_gamma  # noqa: E402

TRUE_BG = {"r": 0.27, "alpha": 42.0, "a": 0.48, "b": 2.1}
TRUE_GG = {"p": 6.0, "q": 4.0, "v": 15.0}
HORIZON_MONTHS = 12
DISCOUNT = 0.01


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    T = rng.integers(1, 731, n).astype(np.float64)
    x, tx, T = sample_bgnbd(n, T=T, seed=seed + 1, **TRUE_BG)
    m = sample_gamma_gamma(x, seed=seed + 2, **TRUE_GG)
    return x, np.floor(tx), T, m


def run_segone(x, tx, T, m):
    table = pa.table({"frequency": x, "recency": tx, "T": T, "monetary_value": m})

    def fn():
        out, info = predict_value(table, horizon_months=HORIZON_MONTHS, discount_rate=DISCOUNT, freq="D")
        return {
            "params": {**info["bg_nbd"]["params"], **info["gamma_gamma"]["params"]},
            "expected_purchases": out.column("expected_purchases").to_numpy(),
            "p_alive": out.column("p_alive").to_numpy(),
            "clv": out.column("clv").to_numpy(),
            "patterns": info["bg_nbd"]["n_patterns"],
        }

    return fn


def run_lifetimes(x, tx, T, m):
    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import _customer_lifetime_value

    def fn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = pd.DataFrame({"frequency": x, "recency": tx, "T": T})
            g = df.groupby(["frequency", "recency", "T"], sort=False)
            codes = g.ngroup().to_numpy()
            pat = g.size().reset_index(name="weights")
            bgf = BetaGeoFitter().fit(pat["frequency"], pat["recency"], pat["T"], weights=pat["weights"])
            use = (x > 0) & (m > 0)
            ggf = GammaGammaFitter().fit(x[use], m[use])
            f, r, t = pat["frequency"], pat["recency"], pat["T"]
            exp_p = bgf.conditional_expected_number_of_purchases_up_to_time(HORIZON_MONTHS * 30, f, r, t).to_numpy()
            p_alive = np.asarray(bgf.conditional_probability_alive(f.to_numpy(), r.to_numpy(), t.to_numpy()))
            disc = _customer_lifetime_value(
                bgf, f, r, t, pd.Series(np.ones(len(pat))), time=HORIZON_MONTHS, discount_rate=DISCOUNT, freq="D"
            ).to_numpy()
            clv = np.asarray(ggf.conditional_expected_average_profit(x, m)) * disc[codes]
        return {
            "params": {**bgf.params_.to_dict(), **ggf.params_.to_dict()},
            "expected_purchases": exp_p[codes],
            "p_alive": p_alive[codes],
            "clv": clv,
            "patterns": len(pat),
        }

    return fn


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="customers for the side-by-side run")
    ap.add_argument("--big", type=int, default=10_000_000, help="customers for the segone-only run (0: skip)")
    ap.add_argument("--pairs", type=int, default=5, help="timed (peer, segone) pairs after the warm-ups")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.pairs < 1:
        ap.error("--pairs must be >= 1")

    import scipy

    versions = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                "pyarrow": pa.__version__}  # fmt: skip
    try:
        import lifetimes
        import pandas

        versions.update(lifetimes=lifetimes.__version__, pandas=pandas.__version__)
        have_peer = True
    except Exception as exc:  # noqa: BLE001
        print(f"lifetimes not available ({exc}); segone only", file=sys.stderr)
        have_peer = False
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    results = {"versions": versions, "threads": THREADS}

    t = time.perf_counter()
    data = make_data(args.n)
    print(f"\n{args.n:,} customers drawn in {time.perf_counter() - t:.1f} s "
          f"(BG/NBD {TRUE_BG}, Gamma-Gamma {TRUE_GG}, T uniform 1..730 days)")  # fmt: skip
    seg = run_segone(*data)
    if have_peer:
        peer = run_lifetimes(*data)
        tp, out_p = timed(peer)
        ts, out_s = timed(seg)
        print(f"warm-up: lifetimes {tp:.3f} s, segone {ts:.3f} s ({out_s['patterns']:,} patterns)")
        pairs = []
        for i in range(args.pairs):
            tp, out_p = timed(peer)
            ts, out_s = timed(seg)
            pairs.append((tp, ts))
            print(f"pair {i + 1}: lifetimes {tp:.3f} s  segone {ts:.3f} s  ratio {tp / ts:.1f}x")
        ratios = [p / s for p, s in pairs]
        tp_med = statistics.median(p for p, _ in pairs)
        ts_med = statistics.median(s for _, s in pairs)
        agree = {k: rel(out_s[k], out_p[k]) for k in ("expected_purchases", "p_alive", "clv")}
        agree["params"] = max(abs(out_s["params"][k] / v - 1) for k, v in out_p["params"].items())
        print(f"\n{args.n:,} customers, fit + predictions: lifetimes (weights trick) {tp_med:.3f} s, "
              f"segone {ts_med:.3f} s; speed-up (median of {len(pairs)} per-pair ratios) "
              f"{statistics.median(ratios):.1f}x")  # fmt: skip
        print("segone vs lifetimes, max relative difference: "
              + ", ".join(f"{k} {v:.1e}" for k, v in agree.items()))  # fmt: skip
        print("fitted:", {k: round(v, 4) for k, v in out_s["params"].items()})
        results["side_by_side"] = {
            "n": args.n, "patterns": out_s["patterns"], "pairs": pairs, "lifetimes_median_s": tp_med,
            "segone_median_s": ts_med, "speedup_median_ratio": statistics.median(ratios), "agreement": agree,
        }  # fmt: skip
    else:
        ts, out_s = timed(seg)
        times = [timed(seg)[0] for _ in range(args.pairs)]
        print(f"segone {statistics.median(times):.3f} s (median of {len(times)})")
        results["segone_only"] = {"n": args.n, "times": times}
    del data, seg

    if args.big:
        t = time.perf_counter()
        data = make_data(args.big, seed=100)
        print(f"\n{args.big:,} customers drawn in {time.perf_counter() - t:.1f} s")
        seg = run_segone(*data)
        ts, out_s = timed(seg)
        print(f"warm-up: segone {ts:.3f} s ({out_s['patterns']:,} patterns)")
        times = []
        for i in range(args.pairs):
            ts, out_s = timed(seg)
            times.append(ts)
            print(f"run {i + 1}: segone {ts:.3f} s")
        med = statistics.median(times)
        print(f"{args.big:,} customers, fit + predictions: segone {med:.3f} s (median of {len(times)})")
        print("fitted:", {k: round(v, 4) for k, v in out_s["params"].items()})
        results["big"] = {"n": args.big, "patterns": out_s["patterns"], "times": times,
                          "median_s": statistics.median(times)}  # fmt: skip

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
