"""The whole job on a Dask cluster (segone.dask mirrors the single-process API).

Run on a local cluster of 2 worker processes:
    python examples/dask_cluster.py /tmp/segone-data /tmp/segone-out
Run on an existing cluster (data and output on storage every worker can read):
    python examples/dask_cluster.py /shared/data /shared/out tcp://scheduler:8786
"""

import sys

from distributed import Client, LocalCluster

import segone
import segone.dask

data_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/segone-data"
out_dir = sys.argv[2] if len(sys.argv) > 2 else "/tmp/segone-out"
address = sys.argv[3] if len(sys.argv) > 3 else None

if __name__ == "__main__":  # LocalCluster starts worker processes: keep the entry point guarded
    if address is None:
        segone.synth.write_dataset(data_dir, 200_000, seed=0, overwrite=True, progress=True)
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="4GiB", dashboard_address=":0")
        client = Client(cluster)
    else:
        cluster, client = None, Client(address)
    try:
        # step by step: every stage returns Dask collections, computed on the cluster
        profiles = segone.dask.build_profiles(
            f"{data_dir}/transactions", events=f"{data_dir}/events", attributes=f"{data_dir}/customers"
        ).persist()
        scorer = segone.dask.FeatureScorer().fit(profiles)  # per-partition states, tree-reduced
        X = scorer.transform(profiles).persist()  # a Dask Array, one block per partition
        seg = segone.dask.Segmenter(6, n_init=5, random_state=0).fit(X)  # sample fit + distributed Lloyd passes
        print("inertia", seg.inertia_, "segment sizes", seg.counts_.astype(int).tolist())

        # or the whole job, outputs written atomically (same as `segone run --scheduler ADDRESS`):
        # the same segone.run as in one process, on the Dask engine
        with segone.dask.DaskEngine(client) as engine:  # the client stays open: the engine closes only what it starts
            res = segone.run(data_dir, out_dir, n_clusters=6, engine=engine, overwrite=True, verbose=True)
        print("customers", res.summary["customers"], "timings", res.summary["timings_s"])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
