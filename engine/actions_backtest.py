"""The backtest of the next best offers (issue 29 item 5), in one process.

:func:`backtest_actions` cuts the history at ``cutoff = end - H`` (the
holdout is the last ``H = holdout_days`` days, ``(cutoff, end]``), runs the
ACT stage as ``segone run`` would at ``as_of = cutoff`` (profiles, segments
learnt on them, the per-category propensity models trained on
``(cutoff - H, cutoff]``, scores at the cutoff) and compares the scores with
the categories each customer bought in the holdout.

Scored customers: those with a purchase at or before the cutoff.  Measures:

* ``hit_rate_at_k``: among the scored customers who bought a kept category in
  the holdout, the share whose top ``k`` offers hold one of them;
* ``precision_at_k``: among the same customers, the mean share of their top
  ``k`` offers that they bought;
* per category, ``auc`` (ROC AUC over every scored customer) and ``brier``
  (mean squared error of the probability); the metrics table gives their
  means over the categories with a fitted model and a holdout buyer.

Predictors: ``segone`` (the propensity model), ``popularity`` (every
customer gets the share of customers who bought the category in the last H
days before the cutoff), ``segment_top`` (the same share within the
customer's segment), and the peers ``sklearn_logistic``
(``LogisticRegression(C=1/penalty)`` per category on the same standardised
features and rows) and ``sklearn_hgb`` (``HistGradientBoostingClassifier``
per category on the same features).  Fit times of segone and the peers are
in the info (seconds of this process).
"""

import time

import numpy as np
import pyarrow as pa

from segone import actions as _act
from segone import profile as _profile
from segone._engine import LocalEngine
from segone._validation import check_int
from segone.errors import ParameterError

PREDICTORS = ("segone", "popularity", "segment_top", "sklearn_logistic", "sklearn_hgb")


def _segments(profiles, n_segments, random_state):
    from segone.score import FeatureScorer
    from segone.segment import Segmenter

    scorer = FeatureScorer()
    X = scorer.fit(profiles).transform(profiles)
    k = min(n_segments, profiles.num_rows)
    seg = Segmenter(k, random_state=random_state).fit(X)
    return seg.predict(X).astype(np.int64), k


def _ranking_metrics(scores, bought, k):
    """(hit rate@k, precision@k, customers with a holdout purchase) of a score matrix."""
    rows = bought.any(axis=1)
    if not rows.any():
        return None, None, 0
    s = np.where(np.isfinite(scores[rows]), scores[rows], -np.inf)
    b = bought[rows]
    # ties broken by the category order (stable), as the offers are
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(b, top, axis=1)
    return float(hits.any(axis=1).mean()), float(hits.sum(axis=1).mean() / k), int(rows.sum())


def backtest_actions(transactions, *, holdout_days=30, attributes=None, schema=None, n_segments=8, k=3,
                     penalty=1.0, top_categories=20, random_state=0, peers=("sklearn_logistic", "sklearn_hgb")):  # fmt: skip
    """Backtest the category propensities and the offers on the data's own last ``holdout_days`` days.

    Parameters
    ----------
    transactions : Arrow table, data frame or path
        As :func:`segone.run` reads them (with a category column).
    holdout_days : int, default 30
        H: the holdout and the propensity horizon (the training window is the H days before the cutoff).
    attributes, schema :
        As :func:`segone.run`.
    n_segments : int, default 8
        Segments learnt on the profiles at the cutoff (for the group-leverage
        feature and the ``segment_top`` baseline).
    k : int, default 3
        Offers per customer for hit rate and precision.
    penalty : float, default 1.0
        The L2 penalty (scikit-learn's ``C = 1 / penalty`` for the peer).
    top_categories : int, default 20
    random_state : int
    peers : tuple of str
        Which scikit-learn peers to fit (``"sklearn_logistic"``, ``"sklearn_hgb"``).

    Returns
    -------
    (metrics, per_category, info)
        ``metrics``: one row per predictor (``predictor``, ``customers``,
        ``hit_rate_at_k``, ``precision_at_k``, ``mean_auc``, ``mean_brier``);
        ``per_category``: one row per predictor and category (``auc``,
        ``brier``, ``holdout_buyers``); ``info``: cutoff, end, customers,
        skipped categories, fit seconds.

    Examples
    --------
    >>> from segone.synth import generate
    >>> d = generate(1500, seed=3)
    >>> m, per_cat, info = backtest_actions(d.transactions, n_segments=4, peers=())
    >>> m.column("predictor").to_pylist()
    ['segone', 'popularity', 'segment_top']
    """
    from sklearn.metrics import roc_auc_score

    from segone import pipeline as _pipe
    from segone.backtesting import TimeRange

    H = check_int(holdout_days, "holdout_days", low=1)
    k = check_int(k, "k", low=1)
    bad = [p for p in peers if p not in PREDICTORS[3:]]
    if bad:
        raise ParameterError(f"peers={list(peers)!r}: unknown peer {bad[0]!r}; use {list(PREDICTORS[3:])}.")
    eng = LocalEngine()
    rng = TimeRange.of(transactions, schema=schema)
    if rng.max_ts is None:
        raise ParameterError("transactions: no row with a customer id and a timestamp; nothing to backtest.")
    end = int(rng.max_ts)
    cutoff = end - H * _profile.US_PER_DAY
    pp, summary, _ = _pipe.profile_stage(eng, {"transactions": transactions, "events": None, "attributes": attributes},
                                         as_of=np.datetime64(cutoff, "us"), schema=schema, piece=_act.keep_piece,
                                         top_categories=top_categories)  # fmt: skip
    (profiles, piece), = pp
    cats = [str(c) for c in summary.get("categories") or []]
    if not cats:
        raise ParameterError("transactions: no category column; the offers backtest needs categories.")
    C = len(cats)
    seg, kseg = _segments(profiles, n_segments, random_state)
    asg = pa.table({"segment": seg})
    part = _act.category_piece(piece, profiles, asg, categories=cats, as_of_us=cutoff, horizon_days=H, schema=schema)
    stats = _act.CategoryStats.of(part, n_segments=kseg, n_categories=C)
    _act.check_history(stats, H)
    info = {"cutoff": _act._iso(cutoff), "end": _act._iso(end), "holdout_days": H, "categories": cats,
            "segments": kseg, "penalty": penalty, "fit_seconds": {}}  # fmt: skip
    t0 = time.perf_counter()
    model, calibration = _act.fit_propensity(eng, [part], stats=stats, categories=cats, penalty=penalty)
    info["fit_seconds"]["segone"] = time.perf_counter() - t0
    info["skipped"] = {cats[g]: r for g, r in model.skipped_.items()}
    info["calibration_train"] = {c: v["ece"] for c, v in calibration.items()}
    log_lift1 = np.log(np.maximum(stats.lift(1), 1e-3))
    t0 = time.perf_counter()
    P = _act.propensities(part, model=model, log_lift=log_lift1, n_categories=C)
    info["score_seconds_segone"] = time.perf_counter() - t0
    # the holdout: orders per category in (cutoff, end]
    hold = _act.category_piece(piece, profiles, asg, categories=cats, as_of_us=end, horizon_days=H, schema=schema)
    bought = _act._matrix(hold, "recent1", C) > 0
    scored = part.column("c_orders1").to_numpy(zero_copy_only=False) > 0
    recent = _act._matrix(part, "recent1", C) > 0  # bought in (cutoff - H, cutoff]
    scores = {"segone": P}
    rate = recent[scored].mean(axis=0)
    scores["popularity"] = np.broadcast_to(rate, P.shape).copy()
    segc = np.where((seg >= 0) & (seg < kseg), seg, kseg)
    seg_rate = np.zeros((kseg + 1, C))
    for s in range(kseg + 1):
        m = scored & (segc == s)
        seg_rate[s] = recent[m].mean(axis=0) if m.any() else rate
    scores["segment_top"] = seg_rate[segc]
    if peers:
        design = _act.TrainingDesign(np.log(np.maximum(stats.lift(0), 1e-3)), C)
        train = list(design(part))
        q1 = _act._quantities(part, 1, C)
        score_X = [_act._features(q1, c, log_lift1) for c in range(C)]
        for peer in peers:
            out = np.full(P.shape, np.nan)
            t0 = time.perf_counter()
            for c, X, y in train:
                if c in model.skipped_:
                    continue
                out[:, c] = _peer_fit_predict(peer, X, y, score_X[c], model, c, penalty, random_state)
            info["fit_seconds"][peer] = time.perf_counter() - t0
            scores[peer] = out
    rows = {"predictor": [], "customers": [], "hit_rate_at_k": [], "precision_at_k": [], "mean_auc": [],
            "mean_brier": []}  # fmt: skip
    per = {"predictor": [], "category": [], "holdout_buyers": [], "auc": [], "brier": []}
    for name, S in scores.items():
        S = S[scored]
        b = bought[scored]
        hit, prec, n_buy = _ranking_metrics(S, b, k)
        aucs, briers = [], []
        for c in range(C):
            ok = np.isfinite(S[:, c])
            auc = brier = None
            if c not in model.skipped_ and ok.all() and 0 < b[:, c].sum() < b.shape[0]:
                auc = float(roc_auc_score(b[:, c], S[:, c]))
                brier = float(np.mean((S[:, c] - b[:, c]) ** 2))
                aucs.append(auc), briers.append(brier)
            for key, v in zip(per, (name, cats[c], int(b[:, c].sum()), auc, brier)):
                per[key].append(v)
        for key, v in zip(rows, (name, n_buy, hit, prec, float(np.mean(aucs)) if aucs else None,
                                 float(np.mean(briers)) if briers else None)):  # fmt: skip
            rows[key].append(v)
    info["customers_scored"] = int(scored.sum())
    info["customers"] = int(part.num_rows)
    info["k"] = k
    return pa.table(rows), pa.table(per), info


def _peer_fit_predict(peer, X, y, Xs, model, c, penalty, random_state):
    if peer == "sklearn_logistic":
        from sklearn.linear_model import LogisticRegression

        mean, scale = model.mean_[c], model.scale_[c]
        m = LogisticRegression(C=1.0 / penalty, max_iter=1000).fit((X - mean) / scale, y)
        return m.predict_proba((Xs - mean) / scale)[:, 1]
    from sklearn.ensemble import HistGradientBoostingClassifier

    m = HistGradientBoostingClassifier(random_state=random_state).fit(X, y)
    return m.predict_proba(Xs)[:, 1]


__all__ = ["PREDICTORS", "backtest_actions"]
