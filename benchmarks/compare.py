"""Side-by-side comparison of segone against the peers of shared/WORKLOADS.md.

Every contender of a workload runs in a forked process of its own, on the
same data, with 2 threads; the processes live for the whole workload and
take turns: one warm-up call each, then ``--repeat`` rounds of (segone,
peer, peer, ..., segone, peer, ...), one call at a time.  A contender's time
is the median of its rounds, and its ratio to segone is the median of the
per-round ratios, so that a machine whose speed drifts during the run (this
one's does) moves both sides of every ratio alike, while no contender
inherits another's leftovers in its process (DuckDB calls malloc_trim after
large queries, handing back the free memory of the whole process; OpenMP
runtimes keep threads spinning).  Each contender's peak RSS is that of its
own process (shared input data included, the same for all).  Peers are
imported only if installed.  The parent never runs OpenMP or
Numba-threaded code itself: an OpenMP runtime is not fork-safe once its
threads exist.  Importing segone changes no allocator setting, so every
contender runs with the allocators' defaults.

Usage (from the repository root; unset the OpenBLAS overrides of this machine
so that BLAS-based peers run at their best):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/compare.py            # full sizes
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/compare.py --quick    # small sizes
    python benchmarks/compare.py --workload assign --json results.json
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/compare.py --workload propensity  # 1M customers
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/compare.py --workload update      # 1M customers
    python benchmarks/compare.py --workload propensity --customers 20000 --repeat 2                 # a small check
"""

import argparse
import datetime as dt
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks"))
from common import blobs, inertia64  # noqa: E402

import segone  # noqa: E402


def _have(mod):
    try:
        __import__(mod)
        return True
    except Exception:  # noqa: BLE001
        return False


def _child(conn, fn, repeat, warm=True):
    try:
        if warm:
            fn()  # warm-up (JIT, page cache)
        times = []
        extra = None
        for _ in range(repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
            extra = out
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MiB
        conn.send(("ok", times, peak, extra))
    except Exception:  # noqa: BLE001
        conn.send(("error", traceback.format_exc(), None, None))
    finally:
        conn.close()


def lazy(setup, call):
    """fn() that runs setup() on its first call (the untimed warm-up, in the child)."""
    state = {}

    def fn():
        if "v" not in state:
            state["v"] = setup()
        return call(state["v"])

    return fn


def measure(fn, repeat, label="", warm=True):
    """Run fn in a forked child: (median seconds, all times, peak RSS MiB, fn's last result)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(child, fn, repeat, warm))
    p.start()
    child.close()
    status, times, peak, extra = parent.recv()
    p.join()
    if status != "ok":
        raise RuntimeError(times)
    if label:
        print(f"  {label}: {statistics.median(times):.4f} s (peak RSS {peak:.0f} MiB)", file=sys.stderr, flush=True)
    return statistics.median(times), times, peak, extra


def _worker(conn, fn):
    """A contender's own process: run ``fn(round)`` on request, reply (seconds, result); stop on None."""
    try:
        while True:
            r = conn.recv()
            if r is None:
                break
            t = time.perf_counter()
            out = fn(r)
            conn.send(("ok", time.perf_counter() - t, out))
    except Exception:  # noqa: BLE001
        conn.send(("error", traceback.format_exc(), None))
    finally:
        conn.send(("peak", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, None))
        conn.close()


def interleave(contenders, repeat, warm=True, reduce=None):
    """Rounds of ``{label: fn(round)}`` alternating between the contenders, each in its own process.

    Every contender runs in a forked process of its own that lives for the
    whole workload: one warm-up call each (round -1), then ``repeat``
    rounds calling segone, peer, peer, ..., segone, peer, ... in turn; only
    one runs at a time, the others wait.  Rounds interleave in time, so a
    machine whose speed drifts moves both sides of each per-round ratio, and
    the processes are separate, so that no contender inherits another's
    leftovers (DuckDB, for one, calls malloc_trim, which hands back the free
    memory of the whole process, and other runtimes keep threads spinning).
    Returns (times per label, peak RSS per label, results per round per label
    or ``reduce(results)``); ``fn`` gets the round number, e.g. for a seed.
    """
    from segone import _memory

    ctx = mp.get_context("fork")
    workers = {}
    try:
        for label, fn in contenders.items():
            _memory.release()  # a forked child starts from the parent's live memory only
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, fn))
            p.start()
            child.close()
            workers[label] = (p, parent)
        times = {label: [] for label in contenders}
        results = {label: [] for label in contenders}

        def call(label, r):
            workers[label][1].send(r)
            status, secs, out = workers[label][1].recv()
            if status != "ok":
                raise RuntimeError(f"{label}: {secs}")
            return secs, out

        for label in contenders if warm else ():
            call(label, -1)
        for r in range(repeat):
            for label in contenders:
                secs, out = call(label, r)
                times[label].append(secs)
                results[label].append(out)
        peaks = {}
        for label, (p, conn) in workers.items():
            conn.send(None)
            status, peak, _ = conn.recv()
            peaks[label] = peak
            p.join()
    finally:
        for p, _ in workers.values():
            if p.is_alive():
                p.kill()
    for label, ts in times.items():
        print(f"  {label}: {statistics.median(ts):.4f} s {[round(t, 4) for t in ts]} (peak RSS {peaks[label]:.0f} MiB)",
              file=sys.stderr, flush=True)  # fmt: skip
    return times, peaks, (reduce(results) if reduce else results)


def record(rows, workload, shape, times, base_label, peak=None, peaks=None, **extra):
    """One row per contender: median seconds and the median of the per-round ratios to ``base_label``."""
    if isinstance(peak, dict):
        peaks, peak = peak, None
    base = times.get(base_label)
    for label, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base)) if base else None
        rows.append(dict(workload=workload, shape=shape, contender=label, seconds=statistics.median(ts), times=ts,
                         peak_rss_mib=(peaks or {}).get(label, peak), speedup_vs_this=ratio,
                         **{k: v[label] for k, v in extra.items() if label in v}))  # fmt: skip
    if base:
        for label in times:
            if label != base_label:
                r = next(x for x in rows if x["workload"] == workload and x["shape"] == shape and x["contender"] == label)
                print(f"  {workload} {shape}: {label} / {base_label} = {r['speedup_vs_this']:.2f}x (median of per-round "
                      "ratios)", file=sys.stderr, flush=True)  # fmt: skip


def _r(fn):
    """A contender that ignores the round number."""
    return lambda r: fn()


# --------------------------------------------------------------------- ASSIGN
def assign_workloads(quick):
    n = 1_000_000 if quick else 10_000_000
    m = 200_000 if quick else 1_000_000
    return [
        ("ASSIGN", n, 16, 64, "float32"),
        ("ASSIGN", m, 16, 8, "float32"),
        ("ASSIGN", m, 64, 256, "float32"),
        ("ASSIGN", m, 8, 1024, "float32"),
        ("ASSIGN", m, 16, 50, "float32"),
        ("ASSIGN", m, 16, 64, "float64"),
    ]


def run_assign(quick, repeat, rows):
    for name, n, d, k, dtype in assign_workloads(quick):
        X = blobs(n, d, dtype=dtype)[0]
        rng = np.random.default_rng(1)
        C = np.ascontiguousarray(X[rng.choice(n, size=k, replace=False)])
        shape = f"N={n:,} D={d} K={k} {dtype}"
        c = {}
        for backend in ("cython", "numba"):
            c[f"segone {backend}"] = _r(lambda b=backend: segone.assign(X, C, backend=b, n_threads=THREADS).labels)
        c["segone cython margin=True"] = _r(lambda: segone.assign(X, C, margin=True, backend="cython").labels)
        if _have("sklearn"):

            def sk_setup(k=k):
                from sklearn.cluster import KMeans

                km = KMeans(k, n_init=1, max_iter=1, random_state=0).fit(X[: max(2 * k, 1000)])
                km.cluster_centers_ = C.copy()
                return km

            c["scikit-learn KMeans.predict"] = _r(lazy(sk_setup, lambda km: km.predict(X)))
        if _have("faiss"):

            def faiss_setup(d=d):
                import faiss

                faiss.omp_set_num_threads(THREADS)
                index = faiss.IndexFlatL2(d)
                index.add(C.astype(np.float32))
                return index, (X.astype(np.float32) if dtype != "float32" else X)

            c["faiss IndexFlatL2.search(k=1)"] = _r(lazy(faiss_setup, lambda st: st[0].search(st[1], 1)[1][:, 0]))

        def matmul_floor(_r, X=X, C=C):  # the machine's float32 GEMM on the same shapes: the floor in this run
            X @ C.T
            return None

        if dtype == "float32" and n <= 4_000_000:
            c["NumPy X @ C.T (GEMM, no argmin)"] = matmul_floor
        def agreement(results):  # labels of the last round against segone cython's, in the child
            ref = np.asarray(results["segone cython"][-1])
            return {label: (float((np.asarray(v[-1]) == ref).mean()) if v[-1] is not None and np.ndim(v[-1]) == 1
                            else None) for label, v in results.items()}  # fmt: skip

        # labels travel back from the last round only
        c = {label: (lambda r, f=fn: f(r) if r == repeat - 1 else (f(r), None)[1]) for label, fn in c.items()}
        times, peak, agree = interleave(c, repeat, reduce=agreement)
        gflops = {label: 2 * n * d * k / statistics.median(ts) / 1e9 for label, ts in times.items()}
        record(rows, name, shape, times, "segone cython", peak=peak, label_agreement=agree, gflops=gflops)


# ------------------------------------------------------------------------ FIT
def _kmeans_best3(X, n, workdir, compute):
    """Inertias of scikit-learn KMeans(64, n_init=1, max_iter=100), seeds 0, 1, 2: cached in the workdir."""
    path = os.path.join(workdir, f"kmeans_best3_{n}.json")
    if os.path.exists(path):
        with open(path) as f:
            return {int(k): v for k, v in json.load(f).items()}, path
    if not compute:
        return None, path

    def body():
        from sklearn.cluster import KMeans

        out = {}
        for seed in range(3):
            t = time.perf_counter()
            km = KMeans(64, n_init=1, max_iter=100, random_state=seed).fit(X)
            out[seed] = {"inertia": inertia64(X, km.cluster_centers_), "n_iter": int(km.n_iter_),
                         "seconds": time.perf_counter() - t}  # fmt: skip
        return out

    res = measure(body, 1, "scikit-learn KMeans x 3 seeds (quality reference)", warm=False)[3]
    with open(path, "w") as f:
        json.dump(res, f)
    return res, path


def run_fit(quick, repeat, rows, full_kmeans=False, dask_ml=False, workdir="."):
    """FIT: the default Segmenter (seeds 0, 1, 2 in turn) against faiss and MiniBatchKMeans, interleaved.

    Quality: each contender's inertia (float64, exact) per round; the reference
    is the best of three scikit-learn full KMeans runs, cached in the workdir
    (computed with ``--full-kmeans``, about 2 minutes per seed at 10M).
    """
    n = 1_000_000 if quick else 10_000_000
    X = blobs(n, 16)[0]
    shape = f"N={n:,} D=16 K=64 float32"
    seed = lambda r: max(r, 0) % 3  # noqa: E731 (rounds 0, 1, 2 -> seeds 0, 1, 2)
    c = {}
    for backend in ("cython", "numba"):
        c[f"segone {backend} (default)"] = lambda r, b=backend: segone.Segmenter(
            64, random_state=seed(r), backend=b, n_threads=THREADS).fit(X).cluster_centers_  # fmt: skip
    c["segone cython algorithm=minibatch (refine=2)"] = lambda r: segone.Segmenter(
        64, algorithm="minibatch", random_state=seed(r), backend="cython", n_threads=THREADS).fit(X).cluster_centers_  # fmt: skip
    if _have("faiss"):
        import faiss

        def faiss_fit(r):
            faiss.omp_set_num_threads(THREADS)
            km = faiss.Kmeans(16, 64, niter=20, seed=seed(r) + 1)
            km.train(X)
            return km.centroids

        c["faiss Kmeans(niter=20)"] = faiss_fit
    if _have("sklearn") and n < 5_000_000:  # at 10M it takes about a minute a call: measured once below
        from sklearn.cluster import MiniBatchKMeans

        c["scikit-learn MiniBatchKMeans"] = lambda r: MiniBatchKMeans(
            64, batch_size=4096, n_init=1, max_iter=1, random_state=seed(r)).fit(X).cluster_centers_  # fmt: skip

    def inertias(results):  # exact float64 inertia of every round's centroids, in the child
        return {label: [inertia64(X, np.asarray(cc)) for cc in v] for label, v in results.items()}

    times, peak, inert = interleave(c, repeat, reduce=inertias)
    best3, path = _kmeans_best3(X, n, workdir, full_kmeans)
    med_inertia = {label: statistics.median(v) for label, v in inert.items()}
    record(rows, "FIT", shape, times, "segone cython (default)", peak=peak, inertia=med_inertia,
           inertias={label: v for label, v in inert.items()})  # fmt: skip
    if best3:
        best = min(v["inertia"] for v in best3.values())
        for r in rows:
            if r["workload"] == "FIT" and r["shape"] == shape and "inertias" in r:
                r["inertia_over_best3"] = statistics.median(r["inertias"]) / best
                print(f"  FIT quality: {r['contender']}: median inertia / best of 3 KMeans = "
                      f"{r['inertia_over_best3']:.5f} (seeds {[round(x / best, 5) for x in r['inertias']]})",
                      file=sys.stderr, flush=True)  # fmt: skip
        rows.append(dict(workload="FIT", shape=shape, contender="scikit-learn KMeans best of 3 seeds (reference)",
                         seconds=min(v["seconds"] for v in best3.values()), times=[v["seconds"] for v in best3.values()],
                         peak_rss_mib=None, inertia=best, speedup_vs_this=None, note=f"cached in {path}"))  # fmt: skip
    else:
        print(f"  FIT quality: no KMeans reference ({path}); run with --full-kmeans once", file=sys.stderr)
    if _have("sklearn") and n >= 5_000_000:
        from sklearn.cluster import MiniBatchKMeans

        def mbk():
            return MiniBatchKMeans(64, batch_size=4096, n_init=1, max_iter=1, random_state=0).fit(X).cluster_centers_

        med, times_, pk, centers = measure(mbk, 1, "scikit-learn MiniBatchKMeans (one run)", warm=False)
        rows.append(dict(workload="FIT", shape=shape, contender="scikit-learn MiniBatchKMeans (one run)", seconds=med,
                         times=times_, peak_rss_mib=pk, inertia=inertia64(X, np.asarray(centers)), speedup_vs_this=None))  # fmt: skip
    if _have("sklearn"):
        run_fit_shapes(quick, repeat, rows)
    if dask_ml and _have("dask_ml"):

        def dask_ml_fit():
            import dask.array as da
            from dask.distributed import Client, LocalCluster
            from dask_ml.cluster import KMeans as DaskKMeans

            with LocalCluster(n_workers=THREADS, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
                dX = da.from_array(X, chunks=(max(1, len(X) // (4 * THREADS)), X.shape[1])).persist()
                return DaskKMeans(n_clusters=64, random_state=0).fit(dX).cluster_centers_

        med, times_, pk, centers = measure(dask_ml_fit, 1, "dask-ml KMeans (LocalCluster, 2 workers)")
        rows.append(dict(workload="FIT", shape=shape, contender="dask-ml KMeans (LocalCluster, 2 workers)", seconds=med,
                         times=times_, peak_rss_mib=pk, inertia=inertia64(X, np.asarray(centers)), speedup_vs_this=None))  # fmt: skip


def run_fit_shapes(quick, repeat, rows):
    """FIT on other shapes: the default Segmenter against scikit-learn MiniBatchKMeans (inertia and time)."""
    from sklearn.cluster import MiniBatchKMeans

    m = 200_000 if quick else 1_000_000
    for n, d, k in ((m, 64, 256), (m, 8, 1024), (100_000, 16, 8)):
        X = blobs(n, d)[0]
        shape = f"N={n:,} D={d} K={k} float32"
        seed = lambda r: max(r, 0) % 3  # noqa: E731
        c = {"segone cython (default)": lambda r: segone.Segmenter(k, random_state=seed(r), n_threads=THREADS).fit(X)
             .cluster_centers_,
             "scikit-learn MiniBatchKMeans": lambda r: MiniBatchKMeans(k, n_init=1, random_state=seed(r)).fit(X)
             .cluster_centers_}  # fmt: skip

        def inertias(results, X=X):
            return {label: [inertia64(X, np.asarray(cc)) for cc in v] for label, v in results.items()}

        times, peak, inert = interleave(c, repeat, reduce=inertias)
        record(rows, "FIT", shape, times, "segone cython (default)", peak=peak,
               inertia={label: statistics.median(v) for label, v in inert.items()})  # fmt: skip
        a, b = (statistics.median(v) for v in inert.values())
        print(f"  FIT {shape}: inertia segone / MiniBatchKMeans = {a / b:.4f} (medians over seeds)", file=sys.stderr)


CUSTOMERS = None  # --customers: the size of the synthetic dataset instead of 50,000 (--quick) or 1,000,000


def synth_dataset(quick, workdir):
    """(customers, path) of the synthetic dataset of the PROFILE / SCORE / PIPELINE / DASK / PERSONA / PROPENSITY
    workloads (``segone.synth.write_dataset(path, n, seed=0)``), written once."""
    n = CUSTOMERS or (50_000 if quick else 1_000_000)
    path = os.path.join(workdir, f"synth-{n}")
    if not os.path.exists(path):
        segone.synth.write_dataset(path, n, seed=0)
    return n, path


# -------------------------------------------------------------------- PROFILE
def _profile_peers(tx_path):
    """RFM + tenure + category spend shares + channel mix, per peer."""
    peers = {}
    if _have("duckdb"):
        import duckdb

        def duck():
            con = duckdb.connect()
            con.execute(f"SET threads={THREADS}")
            # DuckDB calls malloc_trim() after large tasks: that hands back the free memory of the whole process,
            # the next contender's included (it then faults in fresh pages). Not on a shared process.
            con.execute("SET allocator_flush_threshold = '1000 GiB'")
            con.execute("SET allocator_bulk_deallocation_flush_threshold = '1000 GiB'")
            cats = [r[0] for r in con.execute(f"SELECT DISTINCT category FROM read_parquet('{tx_path}/*.parquet')").fetchall()]
            chans = [r[0] for r in con.execute(f"SELECT DISTINCT channel FROM read_parquet('{tx_path}/*.parquet')").fetchall()]
            shares = ", ".join(f"sum(amount) FILTER (WHERE category = '{c}') / sum(amount) AS share_{c}" for c in cats)
            mix = ", ".join(f"count(*) FILTER (WHERE channel = '{c}') / count(*) AS channel_{c}" for c in chans)
            q = (
                f"SELECT customer_id, max(ts) AS last, min(ts) AS first, count(*) AS orders, sum(amount) AS spend, "
                f"avg(amount) AS spend_mean, {shares}, {mix} FROM read_parquet('{tx_path}/*.parquet') GROUP BY customer_id"
            )
            rel = con.sql(q)
            table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
            n_rows = table.num_rows if hasattr(table, "num_rows") else table.read_all().num_rows
            del rel, table
            con.close()  # its worker threads stop now, not when the garbage collector gets to it
            return n_rows

        peers["DuckDB SQL (FILTER sums)"] = duck
    if _have("polars"):
        import polars as pl

        def polars_fn():
            df = pl.read_parquet(f"{tx_path}/*.parquet")
            df = df.with_columns(pl.col("category").cast(pl.Utf8), pl.col("channel").cast(pl.Utf8))
            base = df.group_by("customer_id").agg(
                pl.col("ts").max().alias("last"), pl.col("ts").min().alias("first"), pl.len().alias("orders"),
                pl.col("amount").sum().alias("spend"), pl.col("amount").mean().alias("spend_mean"),
            )  # fmt: skip
            cat = df.pivot(on="category", index="customer_id", values="amount", aggregate_function="sum")
            ch = df.pivot(on="channel", index="customer_id", values="amount", aggregate_function="len")
            return base.join(cat, on="customer_id").join(ch, on="customer_id").height

        peers["polars group_by + pivot"] = polars_fn
    if _have("pandas"):
        import pandas as pd

        def pandas_fn():
            df = pd.read_parquet(tx_path)
            g = df.groupby("customer_id")
            base = g.agg(last=("ts", "max"), first=("ts", "min"), orders=("amount", "size"),
                         spend=("amount", "sum"), spend_mean=("amount", "mean"))  # fmt: skip
            cat = df.groupby(["customer_id", "category"], observed=True)["amount"].sum().unstack(fill_value=0)
            ch = df.groupby(["customer_id", "channel"], observed=True).size().unstack(fill_value=0)
            return len(base.join(cat.div(base.spend, axis=0)).join(ch.div(base.orders, axis=0)))

        peers["pandas groupby + unstack"] = pandas_fn
    return peers


def run_profile(quick, repeat, rows, workdir):
    n, path = synth_dataset(quick, workdir)
    tx = os.path.join(path, "transactions")
    import pyarrow.dataset as ds

    n_tx = ds.dataset(tx).count_rows()
    shape = f"{n_tx:,} transactions -> {n:,} customers"
    c = {"segone build_profiles (transactions only)": lambda: segone.build_profiles(tx).num_rows}
    c.update(_profile_peers(tx))
    c = {label: _r(fn) for label, fn in c.items()}
    times, peaks, nrows = interleave(c, repeat)
    record(rows, "PROFILE", shape, times, "segone build_profiles (transactions only)", peaks=peaks,
           rows_out={label: v[-1] for label, v in nrows.items()})  # fmt: skip


# ---------------------------------------------------------------------- SCORE
def run_score(quick, repeat, rows, workdir):
    """FeatureScorer.fit_transform per scaling vs the scikit-learn scaler on the same columns."""
    n, path = synth_dataset(quick, workdir)

    def profiles():  # built in the child (the parent must not run OpenMP code before forking)
        return segone.build_profiles(os.path.join(path, "transactions"), events=os.path.join(path, "events"))

    def sk_matrix(prof):
        import pyarrow.compute as pc

        feats = segone.score.default_features(prof.column_names)
        cols = []
        for name, tr in feats:
            v = pc.cast(pc.fill_null(prof.column(name), 0), "float64").to_numpy()
            cols.append(np.log1p(np.maximum(v, 0)) if tr == "log1p" else v)
        return np.column_stack(cols)

    shape = None
    c = {}
    for scaling in ("standard", "robust", "quantile"):
        c[f"segone FeatureScorer({scaling})"] = lazy(
            profiles, lambda p, s=scaling: segone.FeatureScorer(scaling=s, n_threads=THREADS).fit_transform(p).shape
        )
    if _have("sklearn"):
        from sklearn.preprocessing import QuantileTransformer, RobustScaler, StandardScaler

        peers = {"standard": StandardScaler, "robust": RobustScaler,
                 "quantile": lambda: QuantileTransformer(n_quantiles=257, subsample=None)}  # fmt: skip
        for scaling, make in peers.items():
            c[f"scikit-learn {scaling} (Arrow -> NumPy -> scaler)"] = lazy(
                profiles, lambda p, mk=make: mk().fit_transform(sk_matrix(p)).astype(np.float32).shape
            )
    times, peak, shapes = interleave({label: _r(fn) for label, fn in c.items()}, repeat)
    out_shape = next(iter(shapes.values()))[-1]
    shape = f"{out_shape[0]:,} profiles x {out_shape[1]} features"
    for scaling in ("standard", "robust", "quantile"):  # each scaler against its own segone twin
        pair = {k: v for k, v in times.items() if k == f"segone FeatureScorer({scaling})" or
                k.startswith(f"scikit-learn {scaling}")}  # fmt: skip
        record(rows, "SCORE", shape, pair, f"segone FeatureScorer({scaling})", peak=peak)


# ------------------------------------------------------------------- PIPELINE
def pipeline_peer(path, out_dir, k=8):
    """The like-for-like script a user would write instead of ``segone run`` (PIPELINE in shared/WORKLOADS.md).

    pandas groupby profiles (RFM, tenure, category spend shares, channel mix, web event counts, the BTYD
    columns, the CRM attributes joined), ``StandardScaler``, scikit-learn ``KMeans`` (K=8), lifetimes
    ``BetaGeoFitter`` and ``GammaGammaFitter`` fitted with the weights trick (one row per distinct pattern),
    predictions for every customer (expected purchases in 365 days, p_alive, expected order value, 12-month
    CLV), and one Parquet write of the per-customer table.  Returns the number of customers written.
    """
    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    tx = pd.read_parquet(os.path.join(path, "transactions"))
    ev = pd.read_parquet(os.path.join(path, "events"))
    crm = pd.read_parquet(os.path.join(path, "customers"))
    as_of = tx.ts.max()
    g = tx.groupby("customer_id")
    p = g.agg(last=("ts", "max"), first=("ts", "min"), orders=("amount", "size"), spend=("amount", "sum"))
    p["recency_days"] = (as_of - p["last"]).dt.total_seconds() / 86400
    p["tenure_days"] = (as_of - p["first"]).dt.total_seconds() / 86400
    p["spend_mean"] = p.spend / p.orders
    cat = tx.groupby(["customer_id", "category"], observed=True)["amount"].sum().unstack(fill_value=0)
    cat = cat.div(p.spend, axis=0).add_prefix("share_")
    ch = tx.groupby(["customer_id", "channel"], observed=True).size().unstack(fill_value=0)
    ch = ch.div(p.orders, axis=0).add_prefix("channel_")
    evc = ev.groupby(["customer_id", "event"], observed=True).size().unstack(fill_value=0).add_prefix("events_")
    # BTYD columns in days (lifetimes' summary_data_from_transaction_data, written with groupby)
    day = tx.ts.dt.floor("D")
    daily = tx.assign(day=day).groupby(["customer_id", "day"])["amount"].sum().reset_index()
    dg = daily.groupby("customer_id")
    b = dg.agg(first=("day", "min"), last=("day", "max"), n=("day", "size"), total=("amount", "sum"))
    first_amt = daily.drop_duplicates("customer_id").set_index("customer_id")["amount"]
    b["frequency"] = b.n - 1
    b["recency"] = (b["last"] - b["first"]).dt.days
    b["T"] = (as_of.floor("D") - b["first"]).dt.days
    b["monetary_value"] = np.where(b.frequency > 0, (b.total - first_amt) / b.frequency.clip(lower=1), 0.0)
    prof = pd.concat([p, cat, ch, evc, b[["frequency", "recency", "T", "monetary_value"]]], axis=1)
    prof = prof.join(crm.set_index("customer_id"), how="outer")
    feats = prof[["recency_days", "tenure_days", "orders", "spend", "spend_mean"] + list(cat.columns)
                 + list(ch.columns) + list(evc.columns)].fillna(0).to_numpy(dtype=np.float64)  # fmt: skip
    feats[:, :5] = np.log1p(np.maximum(feats[:, :5], 0))
    X = StandardScaler().fit_transform(feats)
    lab = KMeans(k, n_init=1, random_state=0).fit_predict(X)
    # value: BG/NBD on the distinct (frequency, recency, T) patterns, Gamma-Gamma on the repeat customers
    bt = prof[["frequency", "recency", "T", "monetary_value"]].dropna()
    pat = bt.groupby(["frequency", "recency", "T"]).size().rename("w").reset_index()
    bgf = BetaGeoFitter(penalizer_coef=0.0).fit(pat.frequency, pat.recency, pat["T"], weights=pat.w)
    rep = bt[bt.frequency > 0]
    mpat = rep.groupby(["frequency", "monetary_value"]).size().rename("w").reset_index()
    # unpenalized, Gamma-Gamma does not converge on this data (segone refits with 0.001 too)
    ggf = GammaGammaFitter(penalizer_coef=0.001).fit(mpat.frequency, mpat.monetary_value, weights=mpat.w)
    out = pd.DataFrame({"customer_id": prof.index, "segment": lab})
    f, r, T, m = (prof[c].fillna(0) for c in ("frequency", "recency", "T", "monetary_value"))
    out["expected_purchases"] = np.asarray(bgf.conditional_expected_number_of_purchases_up_to_time(365, f, r, T))
    out["p_alive"] = np.asarray(bgf.conditional_probability_alive(f, r, T))
    out["expected_order_value"] = np.asarray(ggf.conditional_expected_average_profit(f, m))
    out["clv"] = np.asarray(ggf.customer_lifetime_value(bgf, f, r, T, m, time=12, discount_rate=0.01, freq="D"))
    out.to_parquet(os.path.join(out_dir, "peer.parquet"))
    return len(out)


def run_pipeline(quick, repeat, rows, workdir):
    """PIPELINE: the whole job on transactions + web events + CRM, K=8, the default outputs, against the
    like-for-like script a user would write instead (:func:`pipeline_peer`), each in its own process."""
    n, path = synth_dataset(quick, workdir)
    shape = f"{n:,} customers + events + CRM, K=8"
    out = os.path.join(workdir, "out")

    def seg():
        return segone.run(path, out, n_clusters=8, overwrite=True).summary["customers"]

    c = {"segone run": seg}
    if _have("sklearn") and _have("pandas") and _have("lifetimes"):
        c["pandas + scikit-learn + lifetimes"] = lambda: pipeline_peer(path, workdir)
    c = {label: _r(fn) for label, fn in c.items()}
    times, peaks, nrows = interleave(c, repeat)
    record(rows, "PIPELINE", shape, times, "segone run", peaks=peaks,
           rows_out={label: v[-1] for label, v in nrows.items()})  # fmt: skip


# ---------------------------------------------------------------------- DASK
def run_dask(quick, repeat, rows, workdir):
    """segone.run in one process and on a LocalCluster of 1 and of 2 worker processes, interleaved.

    The clusters are started once (a user's cluster is already running) and
    kept for the whole measurement; after one warm-up of each contender the
    rounds alternate one process, 2 workers, 1 worker, ... in one child
    process; the ratios are medians of the per-round ratios.
    """
    n, path = synth_dataset(quick, workdir)
    shape = f"{n:,} customers (transactions, events, CRM), K=32"
    out = os.path.join(workdir, "out-dask")

    def body():
        from distributed import Client, LocalCluster

        import segone.dask

        clusters = {w: LocalCluster(n_workers=w, threads_per_worker=1, dashboard_address=":0") for w in (1, 2)}
        clients = {w: Client(c) for w, c in clusters.items()}
        try:
            c = {
                "segone run (one process)": lambda: segone.run(path, out, 32, overwrite=True).summary["customers"],
                "segone.run on Dask, 2 workers": lambda: segone.run(path, out, 32, overwrite=True, engine=(
                    segone.dask.DaskEngine(clients[2]))).summary["customers"],
                "segone.run on Dask, 1 worker": lambda: segone.run(path, out, 32, overwrite=True, engine=(
                    segone.dask.DaskEngine(clients[1]))).summary["customers"],
            }
            for fn in c.values():
                fn()  # warm-up
            times = {k: [] for k in c}
            for _ in range(repeat):
                for k, fn in c.items():
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
            return times
        finally:
            for cl in clients.values():
                cl.close()
            for cl in clusters.values():
                cl.close()

    _, _, peak, times = measure(body, 1, "", warm=False)
    one, two, single = (times[k] for k in times)
    for label, ts in times.items():
        print(f"  {label}: {statistics.median(ts):.3f} s {[round(t, 3) for t in ts]}", file=sys.stderr, flush=True)
        rows.append(dict(workload="DASK", shape=shape, contender=label, seconds=statistics.median(ts), times=ts,
                         peak_rss_mib=peak))  # fmt: skip
    r2 = statistics.median(b / a for a, b in zip(one, two))
    r21 = statistics.median(c / b for b, c in zip(two, single))
    print(f"  DASK: 2 workers / one process = {r2:.2f}x (goal <= 1.5x); 1 worker / 2 workers = {r21:.2f}x "
          "(goal >= 1.8x); medians of per-round ratios", file=sys.stderr, flush=True)  # fmt: skip
    rows[-1]["ratios"] = {"two_workers_over_one_process": r2, "one_worker_over_two_workers": r21}
    _ratios(rows, "DASK", shape, "segone.run on Dask, 2 workers")


# -------------------------------------------------------------------- PERSONA
def run_persona(quick, repeat, rows, workdir):
    """Personas (fit the percentiles, top 3 traits and a sentence per customer) next to a pandas baseline
    and to the profile stage of the same data; each contender in its own process, taking turns."""
    n, path = synth_dataset(quick, workdir)

    def profiles():
        t = time.perf_counter()
        prof = segone.build_profiles(f"{path}/transactions", events=f"{path}/events", attributes=f"{path}/customers")
        return prof, time.perf_counter() - t

    def segone_personas(state):
        from segone.describe import PersonaModel

        prof, _ = state
        return PersonaModel().fit(prof).personas(prof).num_rows

    def pandas_personas(state):  # rank(pct) per column, 3 strongest per row, an f-string per row
        from segone.describe import PersonaModel

        prof, _ = state
        num = PersonaModel.numeric_columns(prof)
        df = prof.select(num).to_pandas()
        s = (2 * df.rank(pct=True) - 1).to_numpy()
        a = np.abs(np.nan_to_num(s, nan=0.0))
        top = np.argsort(-a, axis=1)[:, :3]
        names = np.array(num)
        vals = df.to_numpy()
        rows_ = np.arange(len(df))[:, None]
        tv, tn = vals[rows_, top], names[top]
        return len([f"{tn[i, 0]} {tv[i, 0]:.1f}; {tn[i, 1]} {tv[i, 1]:.1f}; {tn[i, 2]} {tv[i, 2]:.1f}"
                    for i in range(len(df))])  # fmt: skip

    def profile_stage():  # the profile stage of the same data: personas must not cost more
        return profiles()[0].num_rows

    c = {"segone personas": _r(lazy(profiles, segone_personas)),
         "pandas rank + argsort + f-strings": _r(lazy(profiles, pandas_personas)),
         "segone build_profiles (the same data: the profile stage)": _r(profile_stage)}  # fmt: skip
    times, peaks, _ = interleave(c, repeat)
    shape = f"{n:,} customers, profiles with events and CRM, 3 traits + sentence"
    record(rows, "PERSONA", shape, times, "segone personas", peak=peaks)
    print(f"  PERSONA: segone {statistics.median(times['segone personas']):.3f} s (goal <= 1 s and <= the profile "
          "stage)", file=sys.stderr, flush=True)  # fmt: skip


# ----------------------------------------------------------------- PROPENSITY
def _propensity_data(tx_path, horizon_days=30, k=8):
    """The inputs of the PROPENSITY contenders, prepared untimed in each child: the profile stage with the pieces
    kept (as ``segone run --actions`` does), 8 segments (FeatureScorer + Segmenter on the profiles), the actions
    stage's category parts (:func:`segone.actions.category_piece`) and their sums."""
    import pyarrow as pa

    from segone import actions as A
    from segone import pipeline
    from segone._engine import LocalEngine

    eng = LocalEngine()
    pp, summary, _ = pipeline.profile_stage(eng, {"transactions": tx_path, "events": None, "attributes": None},
                                            piece=A.keep_piece)  # fmt: skip
    profiles, pieces = [p for p, _ in pp], [q for _, q in pp]
    whole = pa.concat_tables(profiles)
    X = segone.FeatureScorer().fit(whole).transform(whole)
    labels = segone.Segmenter(k, random_state=0).fit(X).predict(X).astype(np.int64)
    bounds = np.cumsum([0] + [p.num_rows for p in profiles])
    assignments = [pa.table({"segment": labels[a:b]}) for a, b in zip(bounds[:-1], bounds[1:])]
    cats = summary["categories"]
    as_of = A._profile.parse_as_of(summary["as_of"])
    parts = [A.category_piece(q, p, s, categories=cats, as_of_us=as_of, horizon_days=horizon_days)
             for q, p, s in zip(pieces, profiles, assignments)]  # fmt: skip
    stats = eng.reduce([A.CategoryStats.of(part, n_segments=k, n_categories=len(cats)) for part in parts])
    return dict(eng=eng, profiles=profiles, pieces=pieces, assignments=assignments, parts=parts, stats=stats,
                categories=cats, as_of=summary["as_of"], k=k, horizon_days=horizon_days)  # fmt: skip


def _training_rows(d):
    """Per category: the training features (at as_of - H) and labels of every part, stacked."""
    from segone import actions as A

    C = len(d["categories"])
    design = A.TrainingDesign(np.log(np.maximum(d["stats"].lift(0), 1e-3)), C)
    blocks = {c: ([], []) for c in range(C)}
    for part in d["parts"]:
        for c, X, y in design(part):
            blocks[c][0].append(X)
            blocks[c][1].append(y)
    return {c: (np.concatenate(xs), np.concatenate(ys)) for c, (xs, ys) in blocks.items() if xs}


def _scoring_rows(d, c):
    """Category ``c``'s features at as_of (the offers' scores) of every customer, stacked over the parts."""
    from segone import actions as A

    log_lift = np.log(np.maximum(d["stats"].lift(1), 1e-3))
    return np.concatenate([A.features_at(part, 1, c, log_lift, len(d["categories"])) for part in d["parts"]])


def propensity_segone(d):
    """segone's fit (Newton / IRLS on mergeable sums, 20 categories) and the scores of every customer at as_of."""
    from segone import actions as A

    C = len(d["categories"])
    model, _ = A.fit_propensity(d["eng"], d["parts"], stats=d["stats"], categories=d["categories"])
    log_lift = np.log(np.maximum(d["stats"].lift(1), 1e-3))
    scores = [A.propensities(part, model=model, log_lift=log_lift, n_categories=C) for part in d["parts"]]
    return model, scores


def propensity_sklearn(d):
    """The peer: per category, the same training features, ``StandardScaler`` + ``LogisticRegression(C=1)``
    (segone's objective: C = 1 / penalty, the intercept not penalised), then ``predict_proba`` on the same
    scoring features.  The features are built inside the timed call, as segone builds them in its passes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    models, scores = {}, {}
    for c, (X, y) in _training_rows(d).items():
        if 0 < y.sum() < y.size:  # segone skips a category without buyers (or with only buyers) likewise
            sc = StandardScaler().fit(X)
            lr = LogisticRegression(C=1.0, max_iter=1000).fit(sc.transform(X), y)
            models[c] = (sc, lr)
            scores[c] = lr.predict_proba(sc.transform(_scoring_rows(d, c)))[:, 1]
    return models, scores


def propensity_quality(d, segone_model, sk_models):
    """Mean ROC AUC over the fitted categories on the training window (features at as_of - H, label: bought in
    (as_of - H, as_of]) of both fits, and the largest difference of their probabilities there."""
    from sklearn.metrics import roc_auc_score

    auc = {"segone": [], "scikit-learn": []}
    gap = 0.0
    for c, (X, y) in _training_rows(d).items():
        if c in segone_model.skipped_ or c not in sk_models or not 0 < y.sum() < y.size:
            continue
        p = segone_model.predict_proba(c, X)
        sc, lr = sk_models[c]
        q = lr.predict_proba(sc.transform(X))[:, 1]
        auc["segone"].append(roc_auc_score(y, p))
        auc["scikit-learn"].append(roc_auc_score(y, q))
        gap = max(gap, float(np.abs(p - q).max()))
    return {k: float(np.mean(v)) if v else None for k, v in auc.items()}, gap, len(auc["segone"])


def run_propensity(quick, repeat, rows, workdir):
    """PROPENSITY: per-category propensity fit + score (n customers x 20 categories, H = 30 days).

    Contenders, each in its own process on the same synthetic transactions (the inputs prepared untimed in
    each: :func:`_propensity_data`): segone's fit + scores (the base), the scikit-learn ``LogisticRegression``
    loop per category on the same features (fit + predict_proba), segone's whole actions stage (category sums,
    fit, scores and offers, from the profile stage's pieces), and the profile stage of the same data
    (``segone.build_profiles``): the stage must be no longer than it.  Quality: the mean AUC of segone's and
    scikit-learn's models on the training window, computed in the warm-up call (untimed) and returned by the
    last round.
    """
    n, path = synth_dataset(quick, workdir)
    tx = os.path.join(path, "transactions")

    def with_quality(fit):
        state = {}

        def fn(r):
            if "d" not in state:
                state["d"] = _propensity_data(tx)
            out = fit(state["d"])
            if r == -1:  # the warm-up: keep the models for the quality figures (untimed)
                state["model"] = out[0]
            return state.get("model") if r == repeat - 1 else None

        return fn

    def stage(r, state={}):  # noqa: B006 - the child's own prepared data
        from segone import actions as A

        if "d" not in state:
            state["d"] = _propensity_data(tx)
        d = state["d"]
        parts, _ = A.actions_stage(d["eng"], d["pieces"], d["profiles"], d["assignments"], categories=d["categories"],
                                   as_of=d["as_of"], n_segments=d["k"], horizon_days=d["horizon_days"])  # fmt: skip
        return sum(p.num_rows for p in parts)

    c = {"segone propensity fit + score": with_quality(propensity_segone)}
    if _have("sklearn"):
        c["scikit-learn LogisticRegression per category (fit + predict_proba)"] = with_quality(propensity_sklearn)
    c["segone actions stage (category sums, fit, scores, offers)"] = stage
    c["segone build_profiles (the profile stage, same data)"] = _r(lambda: segone.build_profiles(tx).num_rows)
    times, peaks, results = interleave(c, repeat)
    shape = f"{n:,} customers x 20 categories, fit + score (H=30 days)"
    extra = {}
    sk_label = "scikit-learn LogisticRegression per category (fit + predict_proba)"
    if sk_label in results:
        seg_model, sk_models = results["segone propensity fit + score"][-1], results[sk_label][-1]

        def quality():
            return propensity_quality(_propensity_data(tx), seg_model, sk_models)

        (auc, gap, n_cat) = measure(quality, 1, warm=False)[3]
        extra["mean_auc"] = {"segone propensity fit + score": auc["segone"], sk_label: auc["scikit-learn"]}
        print(f"  PROPENSITY quality (training window, {n_cat} categories): mean AUC segone {auc['segone']:.5f}, "
              f"scikit-learn {auc['scikit-learn']:.5f}; largest probability difference {gap:.2e}",
              file=sys.stderr, flush=True)  # fmt: skip
    record(rows, "PROPENSITY", shape, times, "segone propensity fit + score", peaks=peaks, **extra)
    base = statistics.median(times["segone propensity fit + score"])
    prof = statistics.median(times["segone build_profiles (the profile stage, same data)"])
    whole = statistics.median(times["segone actions stage (category sums, fit, scores, offers)"])
    print(f"  PROPENSITY: fit + score {base:.2f} s, whole actions stage {whole:.2f} s, profile stage {prof:.2f} s "
          "(goal: the stage no longer than the profile stage; >= 10x scikit-learn)",
          file=sys.stderr, flush=True)  # fmt: skip


def _ratios(rows, workload, shape, base_label):
    """Time / the base's time per contender: the median of per-round ratios (the rounds were interleaved)."""
    group = [r for r in rows if r["workload"] == workload and r["shape"] == shape]
    base = next((r for r in group if r["contender"] == base_label), None)
    for r in group:
        if base and len(r.get("times", ())) == len(base.get("times", ())) > 0:
            r["speedup_vs_this"] = statistics.median(t / b for t, b in zip(r["times"], base["times"]))
        else:
            r["speedup_vs_this"] = (r["seconds"] / base["seconds"]) if base else None


def print_table(rows, out=sys.stdout):
    print("| workload | shape | contender | median s | peak RSS MiB | quality | time / segone's (median of rounds) |",
          file=out)  # fmt: skip
    print("|---|---|---|---|---|---|---|", file=out)
    for r in rows:
        q = ""
        if "inertia_over_best3" in r:
            q = f"inertia {r['inertia']:.4e} ({r['inertia_over_best3']:.4f}x best of 3 KMeans)"
        elif "inertia" in r:
            q = f"inertia {r['inertia']:.4e}"
        elif r.get("mean_auc") is not None:
            q = f"mean AUC {r['mean_auc']:.5f} (training window)"
        elif r.get("label_agreement") is not None:
            q = f"labels = segone {100 * r['label_agreement']:.4f}%"
        sp = r.get("speedup_vs_this")
        print(
            f"| {r['workload']} | {r['shape']} | {r['contender']} | {r['seconds']:.4f} | "
            f"{'' if r.get('peak_rss_mib') is None else format(r['peak_rss_mib'], '.0f')} | {q} | "
            f"{'' if sp is None else f'{sp:.2f}x'} |",
            file=out,
        )


def machine_info():
    info = {"date": dt.date.today().isoformat(), "python": platform.python_version(), "cpu": platform.processor()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpus"] = os.cpu_count()
    try:
        from segone.kernels import _cy

        info["segone_simd"] = _cy.simd_level()
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [f"{i['internal_api']} {i.get('architecture', '')} ({i['num_threads']} threads)" for i in threadpool_info()]
    except ImportError:
        pass
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    return info


# --------------------------------------------------------------------- UPDATE
def run_update(quick, repeat, rows, workdir):
    """UPDATE: fold a batch of new transactions (100k at 1M customers; a tenth of a percent of the rows at other
    sizes) into a state store, against the full ``segone.run`` of history + batch (its peer).  The same
    processes and interleaving as ``benchmarks/update_bench.py``, which this calls; the state is built untimed."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:  # update_bench's children are spawned: they import it by name
        sys.path.insert(0, here)
    import update_bench as ub
    n, data = synth_dataset(quick, workdir)
    work = os.path.join(workdir, f"update-{n}")
    info = ub.prepare(data, work, max(1000, n // 10))
    base = ub.build_state(work)
    times = {"segone update (state + batch)": [], "segone run (history + batch)": []}
    peaks = {}
    for r in range(max(1, min(repeat, 3))):  # each round: a full run, then an update of a fresh copy of the state
        ub.copy_state(base, work, r)
        full = ub._run_child("full", work, r, 0, 0)
        upd = ub._run_child("update", work, r, 0, 0)
        times["segone run (history + batch)"].append(full["seconds"])
        times["segone update (state + batch)"].append(upd["seconds"])
        peaks = {"segone run (history + batch)": full["peak_rss_mib"], "segone update (state + batch)":
                 upd["peak_rss_mib"]}  # fmt: skip
    shape = f"{n:,} customers, batch {info['batch_transactions']:,} transactions"
    record(rows, "UPDATE", shape, times, "segone update (state + batch)", peaks=peaks)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a minute or two)")
    ap.add_argument("--workload", action="append",
                    choices=["assign", "fit", "profile", "score", "pipeline", "dask", "persona", "propensity",
                             "update"],
                    help="run only these (repeatable); default all but dask, propensity and update")  # fmt: skip
    ap.add_argument("--customers", type=int, default=None,
                    help="customers of the synthetic dataset (profile, score, pipeline, dask, persona, propensity) "
                         "instead of 50,000 (--quick) or 1,000,000")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--fit-repeat", type=int, default=3, help="FIT rounds (seeds 0, 1, 2, 0, ...)")
    ap.add_argument("--full-kmeans", action="store_true", help="also run scikit-learn full KMeans (about a minute at 10M)")
    ap.add_argument("--dask-ml", action="store_true", help="also run dask-ml KMeans on a LocalCluster (slow: minutes)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache", "segone-bench"))
    args = ap.parse_args(argv)
    global CUSTOMERS
    CUSTOMERS = args.customers
    os.makedirs(args.workdir, exist_ok=True)
    todo = args.workload or ["assign", "fit", "profile", "score", "pipeline", "persona"]
    rows = []
    info = machine_info()
    print(f"# segone {segone.__version__} vs peers, {info['date']}, {info['cpu']}, {THREADS} threads", flush=True)
    if "assign" in todo:
        run_assign(args.quick, args.repeat, rows)
    if "fit" in todo:
        run_fit(args.quick, args.fit_repeat, rows, args.full_kmeans, args.dask_ml, args.workdir)
    if "profile" in todo:
        run_profile(args.quick, args.repeat, rows, args.workdir)
    if "score" in todo:
        run_score(args.quick, args.repeat, rows, args.workdir)
    if "pipeline" in todo:
        run_pipeline(args.quick, args.repeat, rows, args.workdir)
    if "dask" in todo:
        run_dask(args.quick, args.repeat, rows, args.workdir)
    if "persona" in todo:
        run_persona(args.quick, args.repeat, rows, args.workdir)
    if "propensity" in todo:
        run_propensity(args.quick, args.repeat, rows, args.workdir)
    if "update" in todo:
        run_update(args.quick, args.repeat, rows, args.workdir)
    print_table(rows)
    print(f"\nmachine: {json.dumps(info)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
