"""Customer value: BG/NBD + Gamma-Gamma (segone.clv) on customers drawn from the models.

Daily periods, T uniform over 1..730 days, r=0.27, alpha=42, a=0.48, b=2.1
(the data of ``benchmarks/clv_compare.py``), Gamma-Gamma p=6, q=4, v=15.
"""

import numpy as np

from .common import scaled

TRUE_BG = {"r": 0.27, "alpha": 42.0, "a": 0.48, "b": 2.1}
TRUE_GG = {"p": 6.0, "q": 4.0, "v": 15.0}


class CLV:
    timeout = 300

    def setup_cache(self):
        from segone.clv import sample_bgnbd, sample_gamma_gamma

        n = scaled(100_000, 1_000_000)
        rng = np.random.default_rng(0)
        T = rng.integers(1, 731, n).astype(np.float64)
        x, tx, T = sample_bgnbd(n, T=T, seed=1, **TRUE_BG)
        m = sample_gamma_gamma(x, seed=2, **TRUE_GG)
        return {"frequency": x, "recency": np.floor(tx), "T": T, "monetary_value": m}

    def setup(self, data):
        import pyarrow as pa

        from segone.clv import BetaGeo, GammaGamma, PatternHistogram

        self.d = data
        self.table = pa.table(data)
        self.cols = (data["frequency"], data["recency"], data["T"])
        self.hist = PatternHistogram.of(*self.cols)
        n = data["T"].size
        cuts = np.linspace(0, n, 9).astype(int)
        self.pieces = [PatternHistogram.of(*(c[a:b] for c in self.cols)) for a, b in zip(cuts[:-1], cuts[1:])]
        self.bg = BetaGeo().fit_histogram(self.hist)
        self.gg = GammaGamma().fit(data["frequency"], data["monetary_value"])

    def time_pattern_histogram(self, data):
        from segone.clv import PatternHistogram

        PatternHistogram.of(*self.cols)

    def time_merge_8_pieces(self, data):
        from segone._state import merge_all

        merge_all(self.pieces)

    def time_fit_bgnbd_histogram(self, data):
        from segone.clv import BetaGeo

        BetaGeo().fit_histogram(self.hist)

    def time_fit_gamma_gamma(self, data):
        from segone.clv import GammaGamma

        GammaGamma().fit(self.d["frequency"], self.d["monetary_value"])

    def time_expected_purchases(self, data):
        self.bg.expected_purchases(360.0, *self.cols)

    def time_customer_lifetime_value(self, data):
        self.gg.customer_lifetime_value(self.bg, *self.cols, self.d["monetary_value"], time=12, freq="D")

    def time_predict_value(self, data):
        from segone.clv import predict_value

        predict_value(self.table)

    def peakmem_predict_value(self, data):
        from segone.clv import predict_value

        predict_value(self.table)

    def track_bgnbd_max_relative_param_error(self, data):
        return max(abs(self.bg.params_[k] / v - 1) for k, v in TRUE_BG.items())

    track_bgnbd_max_relative_param_error.unit = "relative error"
