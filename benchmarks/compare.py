"""Side-by-side comparison of segone against the peers of shared/WORKLOADS.md.

Every contender runs in a forked child of one process, on the same data, with
2 threads, one warm-up call and the median of ``--repeat`` timed calls; the
child reports its peak RSS (which includes the shared input data, the same
for every contender).  Peers are imported only if installed.  The parent never
runs OpenMP or Numba-threaded code itself: an OpenMP runtime is not fork-safe
once its threads exist, and the children would hang.

Usage (from the repository root; unset the OpenBLAS overrides of this machine
so that BLAS-based peers run at their best):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/compare.py            # full sizes
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/compare.py --quick    # small sizes
    python benchmarks/compare.py --workload assign --json results.json
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
        ref = None  # labels of the first contender (segone cython); computed in a child
        c = {}
        for backend in ("cython", "numba"):
            c[f"segone {backend}"] = lambda b=backend: segone.assign(X, C, backend=b, n_threads=THREADS).labels
        c["segone cython margin=True"] = lambda: segone.assign(X, C, margin=True, backend="cython").labels
        if _have("sklearn"):

            def sk_setup(k=k):
                from sklearn.cluster import KMeans

                km = KMeans(k, n_init=1, max_iter=1, random_state=0).fit(X[: max(2 * k, 1000)])
                km.cluster_centers_ = C.copy()
                return km

            c["scikit-learn KMeans.predict"] = lazy(sk_setup, lambda km: km.predict(X))
        if _have("faiss"):

            def faiss_setup(d=d):
                import faiss

                faiss.omp_set_num_threads(THREADS)
                index = faiss.IndexFlatL2(d)
                index.add(C.astype(np.float32))
                return index, (X.astype(np.float32) if dtype != "float32" else X)

            c["faiss IndexFlatL2.search(k=1)"] = lazy(faiss_setup, lambda st: st[0].search(st[1], 1)[1][:, 0])
        results = {}
        for label, fn in c.items():
            med, times, peak, lab = measure(fn, repeat, label)
            if ref is None:
                ref = np.asarray(lab)
            agree = float((np.asarray(lab) == ref).mean())
            results[label] = med
            rows.append(dict(workload=name, shape=shape, contender=label, seconds=med, times=times,
                             peak_rss_mib=peak, gflops=2 * n * d * k / med / 1e9, label_agreement=agree))  # fmt: skip
        _ratios(rows, name, shape, "segone cython")


# ------------------------------------------------------------------------ FIT
def run_fit(quick, repeat, rows, full_kmeans=False, dask_ml=False):
    n = 1_000_000 if quick else 10_000_000
    X = blobs(n, 16)[0]
    shape = f"N={n:,} D=16 K=64 float32"
    c = {}
    for refine in (0, 2):
        for backend in ("cython", "numba"):
            c[f"segone {backend} refine={refine}"] = lambda b=backend, r=refine: segone.Segmenter(
                64, random_state=0, refine=r, backend=b, n_threads=THREADS
            ).fit(X).cluster_centers_
    if _have("sklearn"):
        from sklearn.cluster import KMeans, MiniBatchKMeans

        c["scikit-learn MiniBatchKMeans"] = lambda: MiniBatchKMeans(
            64, batch_size=4096, n_init=1, max_iter=1, random_state=0
        ).fit(X).cluster_centers_
        if full_kmeans:
            c["scikit-learn KMeans (lloyd, 100 it)"] = lambda: KMeans(64, n_init=1, random_state=0).fit(X).cluster_centers_
    if dask_ml and _have("dask_ml"):

        def dask_ml_fit():
            import dask.array as da
            from dask.distributed import Client, LocalCluster
            from dask_ml.cluster import KMeans as DaskKMeans

            with LocalCluster(n_workers=THREADS, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
                dX = da.from_array(X, chunks=(max(1, len(X) // (4 * THREADS)), X.shape[1])).persist()
                return DaskKMeans(n_clusters=64, random_state=0).fit(dX).cluster_centers_

        c["dask-ml KMeans (LocalCluster, 2 workers)"] = dask_ml_fit

        def segone_dask_fit():
            import dask.array as da
            from dask.distributed import Client, LocalCluster

            import segone.dask

            with LocalCluster(n_workers=THREADS, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
                dX = da.from_array(X, chunks=(max(1, len(X) // (4 * THREADS)), X.shape[1])).persist()
                return segone.dask.Segmenter(64, random_state=0, refine=2).fit(dX).cluster_centers_

        c["segone.dask Segmenter (LocalCluster, 2 workers)"] = segone_dask_fit
    if _have("faiss"):
        import faiss

        def faiss_fit():
            km = faiss.Kmeans(16, 64, niter=20, seed=1)
            km.train(X)
            return km.centroids

        c["faiss Kmeans(niter=20)"] = faiss_fit
    for label, fn in c.items():
        r = 1 if ("KMeans (lloyd" in label or "dask-ml" in label or "LocalCluster" in label) else repeat
        med, times, peak, centers = measure(fn, r, label)
        rows.append(dict(workload="FIT", shape=shape, contender=label, seconds=med, times=times, peak_rss_mib=peak,
                         inertia=inertia64(X, np.asarray(centers))))  # fmt: skip
    _ratios(rows, "FIT", shape, "segone cython refine=0")


def synth_dataset(quick, workdir):
    """(customers, path) of the synthetic dataset of the PROFILE / SCORE / PIPELINE / DASK workloads, written once."""
    n = 50_000 if quick else 1_000_000
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
            return table.num_rows

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
    for label, fn in c.items():
        med, times, peak, nrows = measure(fn, repeat, label)
        rows.append(dict(workload="PROFILE", shape=shape, contender=label, seconds=med, times=times,
                         peak_rss_mib=peak, rows_out=nrows))  # fmt: skip
    _ratios(rows, "PROFILE", shape, "segone build_profiles (transactions only)")


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
    for label, fn in c.items():
        med, times, peak, out_shape = measure(fn, repeat, label)
        shape = shape or f"{out_shape[0]:,} profiles x {out_shape[1]} features"
        rows.append(dict(workload="SCORE", shape=shape, contender=label, seconds=med, times=times, peak_rss_mib=peak))
    for scaling in ("standard", "robust", "quantile"):
        base = next(r for r in rows if r["contender"] == f"segone FeatureScorer({scaling})")
        for r in rows:
            if r["workload"] == "SCORE" and r["contender"].startswith(f"scikit-learn {scaling}"):
                r["speedup_vs_this"] = r["seconds"] / base["seconds"]
        base["speedup_vs_this"] = 1.0


# ------------------------------------------------------------------- PIPELINE
def run_pipeline(quick, repeat, rows, workdir):
    n, path = synth_dataset(quick, workdir)
    shape = f"{n:,} customers, K=32"
    out = os.path.join(workdir, "out")

    def seg():
        return segone.run(os.path.join(path, "transactions"), out, clusters=32, overwrite=True).summary["customers"]

    c = {"segone run (transactions only)": seg}
    if _have("sklearn") and _have("pandas"):
        import pandas as pd
        from sklearn.cluster import MiniBatchKMeans
        from sklearn.preprocessing import StandardScaler

        def pandas_sklearn():
            df = pd.read_parquet(os.path.join(path, "transactions"))
            as_of = df.ts.max()
            g = df.groupby("customer_id")
            p = g.agg(last=("ts", "max"), first=("ts", "min"), orders=("amount", "size"), spend=("amount", "sum"))
            p["recency"] = (as_of - p["last"]).dt.total_seconds() / 86400
            p["tenure"] = (as_of - p["first"]).dt.total_seconds() / 86400
            cat = df.groupby(["customer_id", "category"], observed=True)["amount"].sum().unstack(fill_value=0)
            feats = pd.concat([np.log1p(p[["recency", "tenure", "orders", "spend"]]), cat.div(p.spend, axis=0)], axis=1)
            X = StandardScaler().fit_transform(feats.to_numpy(dtype=np.float64)).astype(np.float32)
            lab = MiniBatchKMeans(32, batch_size=4096, n_init=1, random_state=0).fit_predict(X)
            pd.DataFrame({"customer_id": p.index, "segment": lab}).to_parquet(os.path.join(workdir, "pd.parquet"))
            return len(lab)

        c["pandas + scikit-learn"] = pandas_sklearn
    for label, fn in c.items():
        med, times, peak, nrows = measure(fn, repeat, label)
        rows.append(dict(workload="PIPELINE", shape=shape, contender=label, seconds=med, times=times,
                         peak_rss_mib=peak, rows_out=nrows))  # fmt: skip
    _ratios(rows, "PIPELINE", shape, "segone run (transactions only)")


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
                "segone.run on Dask, 2 workers": lambda: segone.dask.run(path, out, 32, overwrite=True,
                                                                          client=clients[2]).summary["customers"],
                "segone.run on Dask, 1 worker": lambda: segone.dask.run(path, out, 32, overwrite=True,
                                                                         client=clients[1]).summary["customers"],
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
    and to the profile stage of the same data; interleaved rounds in one child process."""
    n, path = synth_dataset(quick, workdir)

    def body():
        import pandas as pd

        from segone.describe import PersonaModel

        t = time.perf_counter()
        prof = segone.build_profiles(f"{path}/transactions", events=f"{path}/events", attributes=f"{path}/customers")
        t_profile = time.perf_counter() - t
        num = PersonaModel.numeric_columns(prof)

        def segone_personas():
            return PersonaModel().fit(prof).personas(prof).num_rows

        def pandas_personas():  # rank(pct) per column, 3 strongest per row, an f-string per row
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

        c = {"segone personas": segone_personas, "pandas rank + argsort + f-strings": pandas_personas}
        for fn in c.values():
            fn()
        times = {k: [] for k in c}
        for _ in range(repeat):
            for k, fn in c.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        return {"times": times, "profile_s": t_profile, "features": len(num)}

    _, _, peak, out = measure(body, 1, "", warm=False)
    times = out["times"]
    shape = f"{n:,} customers x {out['features']} features, 3 traits + sentence"
    a, b = (times[k] for k in times)
    ratio = statistics.median(y / x for x, y in zip(a, b))
    for label, ts in times.items():
        print(f"  {label}: {statistics.median(ts):.3f} s {[round(t, 3) for t in ts]}", file=sys.stderr, flush=True)
        rows.append(dict(workload="PERSONA", shape=shape, contender=label, seconds=statistics.median(ts), times=ts,
                         peak_rss_mib=peak))  # fmt: skip
    print(f"  PERSONA: segone {statistics.median(a):.3f} s (goal <= 1 s and <= the profile stage, "
          f"{out['profile_s']:.3f} s here); pandas / segone = {ratio:.2f}x (median of per-round ratios)",
          file=sys.stderr, flush=True)  # fmt: skip
    _ratios(rows, "PERSONA", shape, "segone personas")


def _ratios(rows, workload, shape, base_label):
    group = [r for r in rows if r["workload"] == workload and r["shape"] == shape]
    base = next((r for r in group if r["contender"] == base_label), None)
    for r in group:
        r["speedup_vs_this"] = (r["seconds"] / base["seconds"]) if base else None


def print_table(rows, out=sys.stdout):
    print("| workload | shape | contender | median s | peak RSS MiB | quality | segone speed-up |", file=out)
    print("|---|---|---|---|---|---|---|", file=out)
    for r in rows:
        q = ""
        if "inertia" in r:
            q = f"inertia {r['inertia']:.4e}"
        elif "label_agreement" in r:
            q = f"labels = segone {100 * r['label_agreement']:.4f}%"
        sp = r.get("speedup_vs_this")
        print(
            f"| {r['workload']} | {r['shape']} | {r['contender']} | {r['seconds']:.4f} | {r['peak_rss_mib']:.0f} | {q} | "
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a minute or two)")
    ap.add_argument("--workload", action="append", choices=["assign", "fit", "profile", "score", "pipeline", "dask", "persona"],
                    help="run only these (repeatable); default all")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--full-kmeans", action="store_true", help="also run scikit-learn full KMeans (about a minute at 10M)")
    ap.add_argument("--dask-ml", action="store_true", help="also run dask-ml KMeans on a LocalCluster (slow: minutes)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache", "segone-bench"))
    args = ap.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    todo = args.workload or ["assign", "fit", "profile", "score", "pipeline", "persona"]
    rows = []
    info = machine_info()
    print(f"# segone {segone.__version__} vs peers, {info['date']}, {info['cpu']}, {THREADS} threads", flush=True)
    if "assign" in todo:
        run_assign(args.quick, args.repeat, rows)
    if "fit" in todo:
        run_fit(args.quick, args.repeat, rows, args.full_kmeans, args.dask_ml)
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
    print_table(rows)
    print(f"\nmachine: {json.dumps(info)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
