"""Who moved where between two runs: segone.track against pandas, side by side.

The task, for each contender: join the assignments of two runs by customer
id (full outer), build the per-customer moves table (previous segment,
segment, status stayed / moved / new / gone, spend) and the migration
contingency (customers and spend per previous x new segment).

Data: two assignments tables as ``segone run`` writes them (int64 customer
ids in increasing order, int32 segment, float64 spend), ``--n`` customers
each (10M by default) drawn from a universe of ``1.05 * n`` sparse ids, so
that ~95% of the customers are in both runs; 32 segments, 90% of the common
customers keep theirs.  The ``unsorted`` case (``--ids unsorted`` or
``both``, the default) shuffles the rows of both tables first, as tables
written by another tool or gathered from many partitions are: segone then
radix-sorts the ids (an O(n) Numba kernel) before the merge.

Contenders:

* ``pandas``: ``prev.merge(new, on="customer_id", how="outer")``, the
  status from the two segment columns (``np.select`` into a Categorical),
  the spend (new, else previous), ``pd.crosstab`` of the segments (counts)
  and a ``groupby(...).sum()`` of the spend per cell.  The inputs are
  DataFrames made before the timing (not counted).
* ``segone``: :func:`segone.track.moves_and_contingency` on the two pyarrow
  tables (sort-merge join, statuses, spend and the contingency in one pass);
  the moves table is a pyarrow Table.

Timing: one process, interleaved (pandas, segone, pandas, segone, ...), one
untimed warm-up call of each, ``--pairs`` timed pairs; the speed-up is the
median of the per-pair ratios.

Memory: each contender runs once more in a forked child of the process
holding the data; the child reports its peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``) minus its resident size at the start
of the call (``/proc/self/statm``), i.e. the memory the call itself added
on top of the shared inputs.  (segone's kernel is single-threaded Numba, so
forking after its warm-up is safe.)

Usage (from the repository root):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/track_compare.py
    python benchmarks/track_compare.py --n 1000000 --pairs 3        # quick
"""

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
import traceback

THREADS = 2
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, str(THREADS))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from segone.track import moves_and_contingency  # noqa: E402

N_SEGMENTS = 32


def make_runs(n, seed=0, overlap=0.95, stay=0.9):
    """Two assignments tables (previous, new) as segone writes them: ids sorted, ~``overlap`` shared."""
    rng = np.random.default_rng(seed)
    u = int(round(n * (2 - overlap)))  # each run misses (1 - overlap) * n of the universe
    universe = np.unique(rng.integers(1, 2**40, size=int(u * 1.01)))[:u]  # sparse, sorted
    k = u - n  # customers missing from each run
    missing = rng.permutation(u)
    in_prev = np.ones(u, dtype=bool)
    in_prev[missing[:k]] = False
    in_new = np.ones(u, dtype=bool)
    in_new[missing[k : 2 * k]] = False
    seg_u = rng.integers(0, N_SEGMENTS, u).astype(np.int32)
    seg_new_u = np.where(rng.random(u) < stay, seg_u, rng.integers(0, N_SEGMENTS, u)).astype(np.int32)
    spend_u = np.round(rng.lognormal(4, 1, u), 2)
    prev = pa.table({"customer_id": universe[in_prev], "segment": seg_u[in_prev],
                     "spend": spend_u[in_prev] * rng.uniform(0.8, 1.2, int(in_prev.sum()))})  # fmt: skip
    new = pa.table({"customer_id": universe[in_new], "segment": seg_new_u[in_new], "spend": spend_u[in_new]})
    return prev, new


def run_segone(prev, new):
    def fn():
        moves, cont = moves_and_contingency(prev, new, spend="spend")
        return {"rows": moves.num_rows, "counts": cont.counts, "prev_ids": cont.prev_ids, "new_ids": cont.new_ids,
                "spend": cont.spend, "status": moves.column("status").value_counts().to_pylist()}  # fmt: skip

    return fn


def run_pandas(prev_df, new_df):
    import pandas as pd

    def fn():
        m = prev_df.merge(new_df, on="customer_id", how="outer", suffixes=("_prev", "_new"))
        p, q = m["segment_prev"], m["segment_new"]
        pn, qn = p.isna().to_numpy(), q.isna().to_numpy()
        codes = np.select([pn, qn, (p == q).to_numpy()], [2, 3, 0], 1).astype(np.int8)
        m["status"] = pd.Categorical.from_codes(codes, ["stayed", "moved", "new", "gone"])
        m["spend"] = m["spend_new"].fillna(m["spend_prev"])
        pf, qf = p.fillna(-1).astype(np.int64), q.fillna(-1).astype(np.int64)
        counts = pd.crosstab(pf, qf)
        spend = m["spend"].groupby([pf, qf]).sum()
        return {"rows": len(m), "counts": counts, "spend": spend}

    return fn


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(conn, fn):
    try:
        base = _rss_mib()
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        conn.send(("ok", dt, peak, base))
    except Exception:  # noqa: BLE001
        conn.send(("error", traceback.format_exc(), None, None))
    finally:
        conn.close()


def peak_memory(fn):
    """(added MiB, peak RSS MiB, time) of one call of ``fn`` in a forked child."""
    ctx = mp.get_context("fork")
    a, b = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(b, fn))
    p.start()
    b.close()
    status, dt, peak, base = a.recv()
    p.join()
    if status != "ok":
        raise RuntimeError(dt)
    return peak - base, peak, dt


def check_agreement(out_s, out_p):
    """The two contenders' contingencies must be the same."""
    c = out_p["counts"]
    rows = np.append(out_s["prev_ids"], -1)
    cols = np.append(out_s["new_ids"], -1)
    dense = c.reindex(index=rows, columns=cols, fill_value=0).to_numpy()
    same_counts = bool(np.array_equal(dense, out_s["counts"]))
    sp = out_p["spend"].unstack(fill_value=0.0).reindex(index=rows, columns=cols, fill_value=0.0).to_numpy()
    rel = float(np.max(np.abs(sp - out_s["spend"]) / np.maximum(np.abs(sp), 1e-9)))
    return same_counts and out_s["rows"] == out_p["rows"], rel


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="customers per run")
    ap.add_argument("--pairs", type=int, default=3, help="timed (pandas, segone) pairs after the warm-ups")
    ap.add_argument("--ids", choices=("sorted", "unsorted", "both"), default="both",
                    help="customer id order of the inputs (unsorted: the rows of both tables shuffled)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.pairs < 1:
        ap.error("--pairs must be >= 1")
    import numba
    import pandas as pd

    versions = {"python": platform.python_version(), "numpy": np.__version__, "pyarrow": pa.__version__,
                "pandas": pd.__version__, "numba": numba.__version__}  # fmt: skip
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    t = time.perf_counter()
    prev, new = make_runs(args.n)
    common = len(np.intersect1d(prev.column("customer_id").to_numpy(), new.column("customer_id").to_numpy()))
    print(f"{args.n:,} customers per run, {common / args.n:.1%} in both, {N_SEGMENTS} segments; "
          f"data made in {time.perf_counter() - t:.1f} s")  # fmt: skip
    results = {}
    for ids in ("sorted", "unsorted") if args.ids == "both" else (args.ids,):
        if ids == "unsorted":
            rng = np.random.default_rng(1)
            prev = prev.take(pa.array(rng.permutation(prev.num_rows)))
            new = new.take(pa.array(rng.permutation(new.num_rows)))
        print(f"\n== {ids} customer ids ==")
        results[ids] = compare(prev, new, args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"versions": versions, "n": args.n, "common": common, **results}, fh, indent=2)


def compare(prev, new, args):
    """Warm-up, memory and the timed pairs of one input; returns the figures."""
    prev_df, new_df = prev.to_pandas(), new.to_pandas()
    seg, peer = run_segone(prev, new), run_pandas(prev_df, new_df)

    tp, out_p = timed(peer)
    ts, out_s = timed(seg)
    same, rel = check_agreement(out_s, out_p)
    print(f"warm-up: pandas {tp:.3f} s, segone {ts:.3f} s; same contingency and rows: {same}, "
          f"spend sums max relative difference {rel:.1e}")  # fmt: skip
    if not same:
        sys.exit("the contenders disagree")
    del out_p, out_s

    mem = {}
    for name, fn in (("pandas", peer), ("segone", seg)):
        added, peak, dt = peak_memory(fn)
        mem[name] = {"added_mib": round(added, 1), "peak_rss_mib": round(peak, 1), "time_s": round(dt, 3)}
        print(f"memory {name}: +{added:,.0f} MiB over the inputs (peak RSS {peak:,.0f} MiB) in a forked child")

    pairs = []
    for i in range(args.pairs):
        tp, _ = timed(peer)
        ts, _ = timed(seg)
        pairs.append((tp, ts))
        print(f"pair {i + 1}: pandas {tp:.3f} s  segone {ts:.3f} s  ratio {tp / ts:.1f}x")
    ratios = [p / s for p, s in pairs]
    tp_med = statistics.median(p for p, _ in pairs)
    ts_med = statistics.median(s for _, s in pairs)
    speedup = statistics.median(ratios)
    print(f"{args.n:,} customers per run, join + moves table + contingency: pandas {tp_med:.3f} s, "
          f"segone {ts_med:.3f} s; speed-up (median of {len(pairs)} per-pair ratios) {speedup:.1f}x; "
          f"memory added: pandas {mem['pandas']['added_mib']:,.0f} MiB, segone {mem['segone']['added_mib']:,.0f} MiB")  # fmt: skip
    return {"pairs": pairs, "pandas_median_s": tp_med, "segone_median_s": ts_med, "speedup_median_ratio": speedup,
            "memory": mem, "spend_max_rel_diff": rel}  # fmt: skip


if __name__ == "__main__":
    main()
