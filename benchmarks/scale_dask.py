"""Scale test: segone.dask.run on a synthetic dataset through a LocalCluster.

    python benchmarks/scale_dask.py DATA_DIR OUT_DIR --workers 2 --memory-limit 6GiB

DATA_DIR is written by `segone synth` (e.g. 10M customers: `segone synth DATA_DIR -n 10000000`).
Reports the time per stage, the peak RSS of every worker process (sampled every 0.25 s)
and of the client, and checks that every customer is in the output exactly once.
"""

import argparse
import json
import os
import resource
import sys
import threading
import time


def _rss():
    import psutil

    return psutil.Process().memory_info().rss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="6GiB")
    ap.add_argument("--clusters", type=int, default=32)
    ap.add_argument("--partitions", type=int, default=None)
    ap.add_argument("--shuffle", action="store_true", help="shuffle by customer even if the data is partitioned so")
    args = ap.parse_args(argv)

    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from distributed import Client, LocalCluster

    import segone.dask

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit=args.memory_limit,
                      dashboard_address=":0") as cluster, Client(cluster) as client:  # fmt: skip
        peaks = {}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    for w, v in client.run(_rss).items():
                        peaks[w] = max(peaks.get(w, 0), v)
                except Exception:  # noqa: BLE001 - a worker may be restarting
                    pass
                stop.wait(0.25)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t = time.perf_counter()
        info = segone.dask.run(args.data, args.out, args.clusters, npartitions=args.partitions, overwrite=True,
                               client=client, verbose=True,
                               partitioned_by_customer=False if args.shuffle else None).summary  # fmt: skip
        wall = time.perf_counter() - t
        stop.set()
        th.join()
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
        "peak_rss_client_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "rows_read": info["rows_read"],
    }
    print(json.dumps(report, indent=2))
    ok = report["rows_out"] == report["distinct_customers_out"] == expected
    print("every customer exactly once:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
