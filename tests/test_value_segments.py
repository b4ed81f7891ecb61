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


# -- through segone.run ------------------------------------------------------------------------------------------
def test_run_value_model_auto_records_the_choice_and_value_by_segment_writes_parameters(tmp_path):
    import segone
    from segone.synth import generate

    d = generate(4000, seed=2)
    r = segone.run(d.transactions, tmp_path / "a", 4, value_model="auto", value_by="segment")
    vm = r.summary["clv"]["value_model"]
    assert vm["requested"] == "auto" and vm["used"] in ("bgnbd", "pareto", "mbgnbd")
    maes = {m: f["mae_purchases"] for m, f in vm["figures"].items() if f["mae_purchases"] is not None}
    assert vm["used"] == min((m for m in maes if m not in ("naive", "segment_mean")), key=maes.get)
    cols = [c for c in r.segments.column_names if c.startswith("purchase_")]
    assert "purchase_own_fit" in cols and len(cols) == 5
    own = r.segments.column("purchase_own_fit").to_pylist()
    assert any(own), "no segment of 4,000 synthetic customers got its own fit"
    by = r.summary["clv"]["by_segment"]["segments"]
    for s, fitted in zip(by, own):  # a segment with its own fit keeps its purchase rate r / alpha (within 10%)
        if fitted:
            o, sh = s["bg_nbd"]["own"], s["bg_nbd"]["shrunk"]
            assert abs(sh["r"] / sh["alpha"] / (o["r"] / o["alpha"]) - 1) < 0.1


@pytest.mark.parametrize("kw, match", [({"value_model": "nope"}, "value_model"), ({"value_by": "region"}, "value_by")])
def test_bad_value_options_fail_before_any_work(tmp_path, kw, match):
    import segone
    from segone.errors import ParameterError

    with pytest.raises(ParameterError, match=match):
        segone.run("no/such/input", tmp_path / "o", 4, **kw)
