"""Value per segment: each segment's BG/NBD shrunk toward the pooled fit (random-effects), predictions by segment."""

import numpy as np
import pyarrow as pa
import pytest

from segone import value_segments as V
from segone.clv import ValueState, fit_value, sample_bgnbd

TRUTH = [(0.3, 5.0, 0.6, 2.5), (0.8, 3.0, 0.3, 3.0), (0.2, 8.0, 1.0, 2.0)]


@pytest.fixture(scope="module")
def segmented():
    sizes = [20_000, 8_000, 150]
    parts, segs = [], []
    for i, (p, n) in enumerate(zip(TRUTH, sizes)):
        x, tx, T = sample_bgnbd(n, *p, T=52.0, seed=i)
        parts.append(np.c_[x, tx, T])
        segs.append(np.full(n, i))
    X = np.vstack(parts)
    prof = pa.table({"frequency": X[:, 0], "recency": X[:, 1], "T": X[:, 2]})
    return prof, np.concatenate(segs)


def test_large_segments_keep_their_own_fit_and_small_ones_take_the_pooled(segmented):
    prof, seg = segmented
    bg, gg, _ = fit_value(ValueState.of(prof))
    models, desc, tau2 = V.fit_by_segment(V.SegmentValueState.of(prof, seg, k=3), bg, gg)
    for s in (0, 1):  # r is the parameter that differs most: the segment's own value, nearly unshrunk
        own, shrunk = desc[s]["bg_nbd"]["own"]["r"], desc[s]["bg_nbd"]["shrunk"]["r"]
        assert abs(shrunk - TRUTH[s][0]) < abs(bg.params_["r"] - TRUTH[s][0])
        assert abs(shrunk - own) < 0.05 * own
    assert desc[2]["bg_nbd"]["own"] is None and "< 200" in desc[2]["bg_nbd"]["pooled_because"]
    assert models[2][0].params_ == pytest.approx(bg.params_)
    assert tau2["bg_nbd"]["r"] > 0


def test_no_between_segment_variance_gives_the_pooled_values():
    est = np.array([[1.0, 2.0], [1.01, 1.98], [0.99, 2.02]])
    shrunk, tau2 = V.shrink(est, np.full(est.shape, 0.04), [1.0, 2.0])  # differences well inside the noise
    np.testing.assert_allclose(tau2, 0.0)
    np.testing.assert_allclose(shrunk, [[1.0, 2.0]] * 3)
    shrunk, tau2 = V.shrink(est * [[1], [3], [9]], np.full(est.shape, 1e-4), [1.0, 2.0])  # precise, far apart
    np.testing.assert_allclose(shrunk, est * [[1], [3], [9]], rtol=1e-3)


def test_predictions_use_each_customers_segment(segmented):
    prof, seg = segmented
    bg, gg, _ = fit_value(ValueState.of(prof))
    models, _, _ = V.fit_by_segment(V.SegmentValueState.of(prof, seg, k=3), bg, gg)
    out = V.value_piece_by_segment(prof, seg, models=models)
    rows = np.flatnonzero(seg == 1)[:50]
    direct = models[1][0].p_alive(prof.column("frequency").to_numpy()[rows], prof.column("recency").to_numpy()[rows],
                                  prof.column("T").to_numpy()[rows])  # fmt: skip
    np.testing.assert_allclose(out.column("p_alive").to_numpy()[rows], direct)
    assert out.column("clv").null_count == prof.num_rows  # no spend: no CLV, null (never NaN)


def test_without_a_pooled_fit_it_refuses():
    from segone.errors import ParameterError

    with pytest.raises(ParameterError, match="pooled BG/NBD"):
        V.fit_by_segment(V.SegmentValueState.empty(2), None)
