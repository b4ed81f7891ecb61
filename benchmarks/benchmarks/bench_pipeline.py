"""Profiles, scoring and the end-to-end job on synthetic customers."""

import shutil
import tempfile

import segone
from segone.synth import SEGMENTS, write_dataset

from .common import THREADS, scaled, synth_data


class Profiles:
    timeout = 300

    def setup(self):
        self.data = synth_data(scaled(50_000, 1_000_000))

    def time_build_profiles(self):
        segone.build_profiles(self.data.transactions, events=self.data.events, attributes=self.data.customers)

    def peakmem_build_profiles(self):
        segone.build_profiles(self.data.transactions, events=self.data.events, attributes=self.data.customers)


class ProfileKernel:
    """The grouped profile kernel alone (CSR scatter + per-customer pass), per backend."""

    params = ["cython", "numba"]
    param_names = ["backend"]
    timeout = 300

    def setup(self, backend):
        import numpy as np

        from segone._backend import get_kernels

        rng = np.random.default_rng(0)
        n_cust = scaled(50_000, 1_000_000)
        n = 20 * n_cust
        self.kern = get_kernels(backend, "group")
        self.args = (
            rng.integers(0, n_cust, n), n_cust, rng.integers(0, 400 * 86_400 * 10**6, n),
            np.round(rng.lognormal(3, 1, n), 2), rng.integers(-1, 20, n).astype(np.int32), 20,
            rng.integers(0, 4, n).astype(np.int32), 4, np.array([300, 200, 100]) * 86_400 * 10**6, 86_400 * 10**6,
        )  # fmt: skip
        self.kern.profile_pass(*self.args, THREADS)  # JIT warm-up

    def time_profile_pass(self, backend):
        self.kern.profile_pass(*self.args, THREADS)

    def peakmem_profile_pass(self, backend):
        self.kern.profile_pass(*self.args, THREADS)


class Score:
    """Scorer fit and the fused transform kernel, per scaling and backend."""

    params = (["standard", "robust", "quantile"], ["cython", "numba"])
    param_names = ["scaling", "backend"]

    def setup(self, scaling, backend):
        d = synth_data(scaled(50_000, 1_000_000))
        self.profiles = segone.build_profiles(d.transactions, events=d.events, attributes=d.customers)
        self.scorer = segone.FeatureScorer(scaling=scaling, backend=backend, n_threads=THREADS).fit(self.profiles)
        self.scorer.transform(self.profiles)  # JIT warm-up

    def time_fit(self, scaling, backend):
        segone.FeatureScorer(scaling=scaling, backend=backend).fit(self.profiles)

    def time_transform(self, scaling, backend):
        self.scorer.transform(self.profiles)


class RFM:
    def setup(self):
        d = synth_data(scaled(50_000, 1_000_000))
        self.profiles = segone.build_profiles(d.transactions)

    def time_rfm_scores(self):
        segone.rfm_scores(self.profiles)


class Pipeline:
    timeout = 600

    def setup_cache(self):
        path = tempfile.mkdtemp(prefix="segone-asv-")
        write_dataset(path + "/data", scaled(50_000, 1_000_000), seed=0)
        return path

    def setup(self, path):
        self.path = path
        self.out = tempfile.mkdtemp(prefix="segone-asv-out-")

    def teardown(self, path):
        shutil.rmtree(self.out, ignore_errors=True)

    def time_run(self, path):
        segone.run(path + "/data", self.out + "/o", n_clusters=len(SEGMENTS), overwrite=True)

    def peakmem_run(self, path):
        segone.run(path + "/data", self.out + "/o", n_clusters=len(SEGMENTS), overwrite=True)

    def track_ari(self, path):
        import pyarrow.parquet as pq

        from segone.cli import _adjusted_rand

        res = segone.run(path + "/data", self.out + "/o", n_clusters=len(SEGMENTS), overwrite=True)
        truth = pq.read_table(path + "/data/truth").sort_by("customer_id").column("segment").to_numpy()
        found = res.assignments.sort_by("customer_id").column("segment").to_numpy()
        return _adjusted_rand(truth, found)


class DaskPipeline:
    """segone.dask.run on a LocalCluster of 2 worker processes (the same job as Pipeline)."""

    timeout = 900

    def setup_cache(self):
        path = tempfile.mkdtemp(prefix="segone-asv-dask-")
        write_dataset(path + "/data", scaled(50_000, 1_000_000), seed=0)
        return path

    def setup(self, path):
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
        self.client = Client(self.cluster)
        self.out = tempfile.mkdtemp(prefix="segone-asv-dask-out-")

    def teardown(self, path):
        self.client.close()
        self.cluster.close()
        shutil.rmtree(self.out, ignore_errors=True)

    def time_run(self, path):
        import segone.dask

        with segone.dask.DaskEngine(self.client) as eng:
            segone.run(path + "/data", self.out + "/o", n_clusters=len(SEGMENTS), overwrite=True, engine=eng)

    def track_ari(self, path):
        import pyarrow.parquet as pq

        import segone.dask
        from segone.cli import _adjusted_rand

        with segone.dask.DaskEngine(self.client) as eng:
            segone.run(path + "/data", self.out + "/o", n_clusters=len(SEGMENTS), overwrite=True, engine=eng)
        truth = pq.read_table(path + "/data/truth").sort_by("customer_id").column("segment").to_numpy()
        found = pq.read_table(self.out + "/o/assignments.parquet").sort_by("customer_id").column("segment").to_numpy()
        return _adjusted_rand(truth, found)
