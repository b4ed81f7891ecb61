"""Profiles, scoring and the end-to-end job on synthetic customers."""

import shutil
import tempfile


import segone
from segone.synth import SEGMENTS, write_dataset

from .common import scaled, synth_data


class Profiles:
    timeout = 300

    def setup(self):
        self.data = synth_data(scaled(50_000, 1_000_000))

    def time_build_profiles(self):
        segone.build_profiles(self.data.transactions, events=self.data.events, attributes=self.data.customers)

    def peakmem_build_profiles(self):
        segone.build_profiles(self.data.transactions, events=self.data.events, attributes=self.data.customers)


class Score:
    def setup(self):
        d = synth_data(scaled(50_000, 1_000_000))
        self.profiles = segone.build_profiles(d.transactions, events=d.events, attributes=d.customers)
        self.scorer = segone.FeatureScorer().fit(self.profiles)

    def time_fit(self):
        segone.FeatureScorer().fit(self.profiles)

    def time_transform(self):
        self.scorer.transform(self.profiles)


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
        segone.run(path + "/data", self.out + "/o", clusters=len(SEGMENTS), overwrite=True)

    def peakmem_run(self, path):
        segone.run(path + "/data", self.out + "/o", clusters=len(SEGMENTS), overwrite=True)

    def track_ari(self, path):
        import pyarrow.parquet as pq

        from segone.cli import _adjusted_rand

        res = segone.run(path + "/data", self.out + "/o", clusters=len(SEGMENTS), overwrite=True)
        truth = pq.read_table(path + "/data/truth").sort_by("customer_id").column("segment").to_numpy()
        found = res.assignments.sort_by("customer_id").column("segment").to_numpy()
        return _adjusted_rand(truth, found)
