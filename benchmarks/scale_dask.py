"""Scale test: segone.run on a segone.dask.DaskEngine, on a synthetic dataset through a LocalCluster.

    python benchmarks/scale_dask.py DATA_DIR OUT_DIR --workers 2 --memory-limit 6GiB

DATA_DIR is written by `segone synth` (e.g. 10M customers: `segone synth DATA_DIR -n 10000000`).
Reports the time per stage, the peak RSS of every worker process (sampled every 0.25 s) as a
share of its memory limit, the bytes distributed spilled to disk, every pause (sampled status
and the workers' own "Pausing worker" log lines), and the client's peak RSS; checks that
every customer is in the output exactly once.  Exits 1 if a customer is lost or duplicated or
a worker paused, and says whether every worker stayed at or under half its limit.
"""

import argparse
import json
import os
import resource
import sys
import threading
import time


def _worker_state(dask_worker):
    import psutil

    spilled = 0
    try:
        spilled = int(dask_worker.data.spilled_total.disk)
    except AttributeError:  # no spill buffer (spilling disabled)
        pass
    return {"rss": psutil.Process().memory_info().rss, "status": dask_worker.status.name, "spilled": spilled,
            "limit": dask_worker.memory_manager.memory_limit or 0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="6GiB")
    ap.add_argument("--clusters", type=int, default=32)
    ap.add_argument("--partitions", type=int, default=None)
    ap.add_argument("--shuffle", action="store_true", help="shuffle by customer even if the data is partitioned so")
    ap.add_argument("--no-spill", action="store_true", help="keep persisted parts in worker memory (spill=False)")
    ap.add_argument("--stall-timeout", type=float, default=300.0)
    ap.add_argument("--json", help="write the report here too")
    args = ap.parse_args(argv)

    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from distributed import Client, LocalCluster

    import segone.dask

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit=args.memory_limit,
                      dashboard_address=":0") as cluster, Client(cluster) as client:  # fmt: skip
        peaks, spilled, paused, limits = {}, {}, {}, {}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    for w, v in client.run(_worker_state).items():
                        peaks[w] = max(peaks.get(w, 0), v["rss"])
                        spilled[w] = max(spilled.get(w, 0), v["spilled"])
                        limits[w] = v["limit"]
                        paused[w] = paused.get(w, 0) + (v["status"] == "paused")
                except Exception:  # noqa: BLE001 - a worker may be restarting
                    pass
                stop.wait(0.25)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t = time.perf_counter()
        with segone.dask.DaskEngine(client, npartitions=args.partitions, verbose=True, spill=not args.no_spill,
                                    stall_timeout=args.stall_timeout) as engine:  # fmt: skip
            info = segone.run(args.data, args.out, args.clusters, overwrite=True, engine=engine, verbose=True,
                              partitioned_by_customer=False if args.shuffle else None).summary  # fmt: skip
        wall = time.perf_counter() - t
        stop.set()
        th.join()
        logs = client.get_worker_logs()
        pause_lines = {w: sum("Pausing worker" in line for _, line in lines) for w, lines in logs.items()}
    asg = ds.dataset(os.path.join(args.out, "assignments.parquet")).to_table(columns=["customer_id"])
    ids = asg.column("customer_id")
    with open(os.path.join(args.data, "manifest.json")) as f:
        expected = json.load(f)["rows"]["customers"]
    report = {
        "customers_expected": expected,
        "rows_out": asg.num_rows,
        "distinct_customers_out": pc.count_distinct(ids).as_py(),
        "wall_s": round(wall, 2),
        "timings_s": info["timings_s"],
        "shuffled": info["engine"]["shuffled"],
        "partitions": info["engine"]["partitions"],
        "memory_limit_per_worker": args.memory_limit,
        "peak_rss_per_worker_gib": {w: round(v / 2**30, 2) for w, v in sorted(peaks.items())},
        "peak_share_of_limit": {w: round(v / limits[w], 3) for w, v in sorted(peaks.items()) if limits.get(w)},
        "spilled_by_distributed_gib": {w: round(v / 2**30, 3) for w, v in sorted(spilled.items())},
        "paused_samples": paused,
        "pause_log_lines": pause_lines,
        "spill": not args.no_spill,
        "peak_rss_client_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "rows_read": info["rows_read"],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    ok = report["rows_out"] == report["distinct_customers_out"] == expected
    never_paused = not any(paused.values()) and not any(pause_lines.values())
    half = all(v <= 0.5 for v in report["peak_share_of_limit"].values())
    print("every customer exactly once:", ok)
    print("no worker paused:", never_paused)
    print("every worker at or under half its limit:", half)
    return 0 if ok and never_paused else 1


if __name__ == "__main__":
    sys.exit(main())
