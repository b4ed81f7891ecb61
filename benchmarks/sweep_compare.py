"""SWEEP: how many segments?  segone.sweep against a scikit-learn loop, k = 2..20, in one process.

The data are the blobs of shared/WORKLOADS.md (``benchmarks/benchmarks/common.py``:
32 centres in [-10, 10]^16, spreads 0.5..2.5, float32), 1,000,000 rows by default.

* segone: ``segone.sweep(X, ks=range(2, 21), random_state=0)``: fits
  on a uniform sample of 200,000 rows, inertia / Calinski-Harabasz /
  Davies-Bouldin over all rows (two rounds of mergeable states), silhouette on
  a uniform sample of 4,000 rows with its standard error, stability (3 random
  splits in halves of 20,000 rows) and the Gaussian null of the automatic
  choice;
* peer: for every k, ``MiniBatchKMeans(n_clusters=k, random_state=0).fit(X)``
  (scikit-learn's defaults) and ``silhouette_score(X, labels,
  sample_size=4000, random_state=0)``.

Timing protocol: both contenders run in this process with 2 threads,
interleaved (peer, segone, peer, segone, ...), after one untimed warm-up
call of each (on the first ``--warmup-n`` rows; default all of them);
``--pairs`` timed pairs (default 3); the figure is the median of the
per-pair ratios peer / segone.

Quality (untimed, after the timing): for every k, scikit-learn's own
``silhouette_score(X, labels, sample_size=4000, random_state=0)``,
``calinski_harabasz_score`` and ``davies_bouldin_score`` on segone's labels
(all rows), to show that segone's columns agree within their stated sampling
error (silhouette: |difference| <= 2 combined standard errors, the two
samples being independent and of the same size) or to float precision (CH,
DB); and the peer's columns on its own fits, side by side.

Usage (from the repository root; unset the OpenBLAS overrides of this machine
so that BLAS runs at its best):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/sweep_compare.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/sweep_compare.py --n 100000 --json sweep.json

Note: scikit-learn 1.9's MiniBatchKMeans draws every mini-batch with
``RandomState.choice(n, p=...)``, which costs O(n) per step, so at 1M rows a
single fit takes from a second (early stop) to about a minute; the per-k fit
times and steps are printed.
"""

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time

THREADS = 2
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, str(THREADS))

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks"))
from common import blobs  # noqa: E402

import segone  # noqa: E402
from segone import sweep  # noqa: E402

KS = range(2, 21)
SIL_SAMPLE = 4000


def run_segone(X):
    return sweep(X, ks=KS, random_state=0, silhouette_sample=SIL_SAMPLE, n_threads=THREADS)


def run_peer(X):
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import silhouette_score

    out = []
    for k in KS:
        t = time.perf_counter()
        m = MiniBatchKMeans(n_clusters=k, random_state=0).fit(X)
        t_fit = time.perf_counter() - t
        sil = silhouette_score(X, m.labels_, sample_size=SIL_SAMPLE, random_state=0)
        out.append({"k": k, "inertia": float(m.inertia_), "silhouette": float(sil), "labels": m.labels_,
                    "fit_s": t_fit, "total_s": time.perf_counter() - t, "steps": int(m.n_steps_)})  # fmt: skip
    return out


def timed(fn, X):
    t = time.perf_counter()
    out = fn(X)
    return time.perf_counter() - t, out


def compare(n, pairs, warmup_n, log):
    X = blobs(n, 16)[0]
    W = X[:warmup_n]
    log(f"N={n:,} D=16 float32, k={KS.start}..{KS.stop - 1}; warm-up on {len(W):,} rows")
    t, _ = timed(run_peer, W)
    log(f"  warm-up peer {t:.2f}s")
    t, _ = timed(run_segone, W)
    log(f"  warm-up segone {t:.2f}s")
    t_peer, t_seg, ratios = [], [], []
    peer = res = None
    for i in range(pairs):
        tp, peer = timed(run_peer, X)
        ts, res = timed(run_segone, X)
        t_peer.append(tp)
        t_seg.append(ts)
        ratios.append(tp / ts)
        log(f"  pair {i + 1}: peer {tp:.2f}s, segone {ts:.2f}s, ratio {tp / ts:.1f}x  (segone stages: {res.timings_s})")
    return X, {"n": n, "pairs": pairs, "warmup_n": len(W), "peer_s": t_peer, "segone_s": t_seg, "ratios": ratios,
               "median_ratio": statistics.median(ratios), "peer_median_s": statistics.median(t_peer),
               "segone_median_s": statistics.median(t_seg)}, peer, res  # fmt: skip


def quality(X, peer, res, log):
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    rows = []
    tab = {r["k"]: r for r in res.table.to_pylist()}
    for p in peer:
        k = p["k"]
        r = tab[k]
        lab = res.labels(X, k)
        sk_sil = float(silhouette_score(X, lab, sample_size=SIL_SAMPLE, random_state=0))
        sk_ch = float(calinski_harabasz_score(X, lab))
        sk_db = float(davies_bouldin_score(X, lab))
        peer_ch = float(calinski_harabasz_score(X, p["labels"]))
        peer_db = float(davies_bouldin_score(X, p["labels"]))
        comb = math.sqrt(2.0) * r["silhouette_se"]  # two independent samples of the same size
        rows.append({
            "k": k, "segone_inertia": r["inertia"], "segone_silhouette": r["silhouette"],
            "segone_silhouette_se": r["silhouette_se"], "segone_ch": r["calinski_harabasz"],
            "segone_db": r["davies_bouldin"], "segone_stability": r["stability"],
            "segone_gaussian_gap": r["gaussian_gap"],
            "sklearn_silhouette_on_segone_labels": sk_sil, "sklearn_ch_on_segone_labels": sk_ch,
            "sklearn_db_on_segone_labels": sk_db,
            "silhouette_within_2se": abs(r["silhouette"] - sk_sil) <= 2 * comb,
            "ch_rel_diff": abs(r["calinski_harabasz"] - sk_ch) / sk_ch,
            "db_rel_diff": abs(r["davies_bouldin"] - sk_db) / sk_db,
            "peer_inertia": p["inertia"], "peer_silhouette": p["silhouette"], "peer_ch": peer_ch,
            "peer_db": peer_db, "peer_fit_s": p["fit_s"], "peer_steps": p["steps"],
            "peer_silhouette_within_2se": abs(r["silhouette"] - p["silhouette"]) <= 2 * comb,
            "inertia_ratio_segone_over_peer": r["inertia"] / p["inertia"],
        })  # fmt: skip
    head = (f"{'k':>3} | {'segone inertia':>14} {'silhouette':>16} {'CH':>10} {'DB':>6} {'stab':>5} | "
            f"{'sk sil(our lab)':>15} {'ok':>3} {'CH rel':>8} {'DB rel':>8} | "
            f"{'peer inertia':>13} {'silhouette':>10} {'ok':>3} {'CH':>10} {'DB':>6} {'fit s':>6} "
            f"{'steps':>6}")  # fmt: skip
    log(head)
    log("-" * len(head))
    for q in rows:
        seg = (f"{q['segone_inertia']:>14.5e} {q['segone_silhouette']:>8.4f} ± {q['segone_silhouette_se']:.4f}"
               f" {q['segone_ch']:>10.1f} {q['segone_db']:>6.3f} {q['segone_stability']:>5.2f}")  # fmt: skip
        chk = (f"{q['sklearn_silhouette_on_segone_labels']:>15.4f} {'yes' if q['silhouette_within_2se'] else 'NO':>3}"
               f" {q['ch_rel_diff']:>8.1e} {q['db_rel_diff']:>8.1e}")  # fmt: skip
        ok = "yes" if q["peer_silhouette_within_2se"] else "no"
        peer = (f"{q['peer_inertia']:>13.5e} {q['peer_silhouette']:>10.4f} {ok:>3} {q['peer_ch']:>10.1f}"
                f" {q['peer_db']:>6.3f} {q['peer_fit_s']:>6.2f} {q['peer_steps']:>6}")  # fmt: skip
        log(f"{q['k']:>3} | {seg} | {chk} | {peer}")
    log(f"segone's automatic choice: best_k={res.best_k} ({res.reason})")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="rows (default 1,000,000)")
    ap.add_argument("--pairs", type=int, default=3, help="timed (peer, segone) pairs (default 3)")
    ap.add_argument("--warmup-n", type=int, default=None, help="rows of the untimed warm-up calls (default: --n)")
    ap.add_argument("--also-n", type=int, default=None, help="also time this smaller N (same protocol, full warm-up)")
    ap.add_argument("--no-quality", action="store_true", help="skip the untimed quality columns")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, flush=True)

    import sklearn

    log(f"segone {segone.__version__}, scikit-learn {sklearn.__version__}, numpy {np.__version__}, "
        f"{THREADS} threads, {platform.platform()}")  # fmt: skip
    out = {"workload": "SWEEP", "created": dt.datetime.now(dt.timezone.utc).isoformat(), "threads": THREADS,
           "sklearn": sklearn.__version__, "segone": segone.__version__, "runs": []}  # fmt: skip
    sizes = [(args.n, args.warmup_n or args.n)]
    if args.also_n:
        sizes.append((args.also_n, args.also_n))
    for n, wn in sizes:
        X, timing, peer, res = compare(n, args.pairs, min(wn, n), log)
        log(f"SWEEP N={n:,} D=16 k=2..20: segone {timing['segone_median_s']:.2f}s, scikit-learn loop "
            f"{timing['peer_median_s']:.2f}s (medians); median per-pair ratio {timing['median_ratio']:.1f}x "
            f"(pairs: {', '.join(f'{r:.1f}x' for r in timing['ratios'])})")  # fmt: skip
        run = {**timing, "best_k": res.best_k, "reason": res.reason, "segone_stage_s": res.timings_s}
        if not args.no_quality:
            run["quality"] = quality(X, peer, res, log)
            ok = sum(q["silhouette_within_2se"] for q in run["quality"])
            log(f"silhouette within 2 combined standard errors of scikit-learn's on the same labels: "
                f"{ok}/{len(run['quality'])} k; CH max rel diff {max(q['ch_rel_diff'] for q in run['quality']):.1e}, "
                f"DB max rel diff {max(q['db_rel_diff'] for q in run['quality']):.1e}")  # fmt: skip
        out["runs"].append(run)
        del X
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return out


if __name__ == "__main__":
    main()
