"""The report of a ``segone backtest`` output: how good the value prediction was on the data's own past.

One self-contained page, like the segments report: the table of every model
and baseline, the calibration chart (mean predicted against mean actual
purchases by decile of the prediction) and the repurchase share by decile of
``p_alive``.  Built by :func:`segone.report.write_report` when the directory's
run.json says ``"format": "segone-backtest"``.
"""

import os

import pyarrow.parquet as pq

from segone import outputs
from segone.report._html import CSS, EMBED_JS, PROBE_JS, esc, script_json, script_text
from segone.report._names import fmt_int, fmt_num

NAMES = {"bgnbd": "BG/NBD", "pareto": "Pareto/NBD", "mbgnbd": "MBG/NBD", "bgbb": "BG/BB",
         "naive": "Own last window (naive)", "segment_mean": "Segment mean"}  # fmt: skip
MODEL_COLOR = "#2366b8"
BASELINE_COLORS = {"naive": "#9a6700", "segment_mean": "#7b8794"}


def _name(m):
    return NAMES.get(m, m)


def calibration_chart(deciles):
    """Mean predicted against mean actual holdout purchases, per decile of the prediction (one line each)."""
    from segone.report._charts import _alt, _finish

    alt = _alt()
    rows = [{"model": _name(r["model"]), "decile": r["decile"], "predicted": r["predicted_purchases"],
             "actual": r["actual_purchases"], "customers": r["customers"]}
            for r in deciles if r["by"] == "predicted_purchases"]  # fmt: skip
    if not rows:
        return None
    top = max(max(r["predicted"], r["actual"]) for r in rows)
    diag = [{"x": 0.0, "y": 0.0}, {"x": top, "y": top}]
    base = alt.Chart(alt.Data(name="rows"))
    line = base.mark_line(point=True).encode(
        x=alt.X("predicted:Q", title="Predicted purchases in the holdout (mean per decile)"),
        y=alt.Y("actual:Q", title="Actual purchases (mean)"),
        color=alt.Color("model:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["model:N", "decile:O", alt.Tooltip("predicted:Q", format=".3f"),
                 alt.Tooltip("actual:Q", format=".3f"), alt.Tooltip("customers:Q", format=",")],
    )  # fmt: skip
    ref = alt.Chart(alt.Data(name="diag")).mark_line(color="#bbb", strokeDash=[4, 4]).encode(x="x:Q", y="y:Q")
    return _finish(alt.layer(ref, line).properties(width=560, height=360), rows=rows, diag=diag)


def alive_chart(deciles):
    """Share of customers who bought in the holdout, per decile of the model's ``p_alive``."""
    from segone.report._charts import _alt, _finish

    alt = _alt()
    rows = [{"model": _name(r["model"]), "decile": r["decile"], "p_alive": r["p_alive"],
             "bought": r["repurchased_share"], "customers": r["customers"]}
            for r in deciles if r["by"] == "p_alive"]  # fmt: skip
    if not rows:
        return None
    chart = alt.Chart(alt.Data(name="rows")).mark_line(point=True).encode(
        x=alt.X("p_alive:Q", title="Probability alive at the cutoff (mean per decile)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("bought:Q", title="Bought again in the holdout", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("model:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["model:N", "decile:O", alt.Tooltip("p_alive:Q", format=".2f"), alt.Tooltip("bought:Q", format=".1%"),
                 alt.Tooltip("customers:Q", format=",")],
    )  # fmt: skip
    return _finish(chart.properties(width=560, height=300), rows=rows)


def _cell(v, fmt=".3f"):
    return "–" if v is None else format(v, fmt)


def backtest_page(out_dir, info, bundle_js, title=None):
    """The HTML of a backtest output directory."""
    metrics = pq.read_table(os.path.join(out_dir, outputs.BACKTEST)).to_pylist()
    deciles = pq.read_table(os.path.join(out_dir, outputs.BACKTEST_DECILES)).to_pylist()
    title = title or "How good is the value prediction?"
    specs = {}

    def chart(cid, spec, alt_text):
        if spec is None:
            return "<p>No decile table: every model was skipped or its cells were below the minimum size.</p>"
        specs[cid] = spec
        return (f'<div class="chart" id="{cid}" role="img" aria-label="{esc(alt_text)}">'
                '<p class="fallback">This chart needs JavaScript; the table has the same figures.</p></div>')

    rows = []
    for r in metrics:
        name = esc(_name(r["model"])) + (" <span class='muted'>(baseline)</span>" if r["kind"] == "baseline" else "")
        if r["skipped"]:
            rows.append(f"<tr><td>{name}</td><td colspan='7' class='bad'>skipped: {esc(r['skipped'])}</td></tr>")
            continue
        ratio = r["predicted_purchases"] / r["actual_purchases"] if r["actual_purchases"] else None
        rows.append(f"<tr><td>{name}</td><td>{_cell(r['mae_purchases'])}</td><td>{_cell(r['rmse_purchases'])}</td>"
                    f"<td>{_cell(r['pearson_purchases'])}</td><td>{_cell(r['spearman_purchases'])}</td>"
                    f"<td>{_cell(ratio)}</td><td>{_cell(r['mae_spend'], ',.2f')}</td>"
                    f"<td>{_cell(r['pearson_spend'])}</td></tr>")  # fmt: skip
    best = info.get("best") or {}
    verdict = ""
    if best:
        beat = best.get("model_beats_baselines")
        verdict = (f"<p class='{'good' if beat else 'bad'}'>Lowest error on purchases: <b>{esc(_name(best['by_mae_purchases']))}</b>. "
                   + ("A model beats both baselines." if beat else
                      "No model beats the simple baselines on this data: use the baselines' ranking, or a longer history.")
                   + "</p>")  # fmt: skip
    spend_note = ""
    if (info.get("fitted") or {}).get("spend_skipped"):
        spend_note = f"<p class='muted'>Spend model skipped: {esc(info['fitted']['spend_skipped'])}</p>"
    facts = (f"<p>Calibration up to <b>{esc(info['cutoff'][:10])}</b>, holdout to <b>{esc(info['end'][:10])}</b> "
             f"({info['duration_holdout']:g} {esc(info['unit'])}); {fmt_int(info['customers_scored'])} customers "
             f"scored, {fmt_int(info['customers_without_purchase_before_cutoff'])} without a purchase before the cutoff "
             "(not scored).</p>")  # fmt: skip
    table = ("<table><thead><tr><th>Model</th><th>MAE purchases</th><th>RMSE</th><th>Pearson</th><th>Spearman</th>"
             "<th>Predicted / actual</th><th>MAE spend</th><th>Pearson spend</th></tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")  # fmt: skip
    body = (
        f"<header><h1>{esc(title)}</h1>{facts}</header>"
        f"<section id='backtest'><h2>Models against baselines</h2>{verdict}{table}{spend_note}"
        "<p class='muted'>Purchases count the periods with a purchase, as lifetimes does. The naive baseline predicts "
        "each customer's own purchases in the window of the same length before the cutoff; the segment mean predicts "
        "their segment's average of that.</p></section>"
        "<section id='calibration'><h2>Calibration: predicted against actual</h2>"
        "<p>Customers grouped by decile of the prediction; on the dashed line the prediction is right on average.</p>"
        + chart("chart-calibration", calibration_chart(deciles), "Predicted against actual purchases by decile")
        + "</section><section id='alive'><h2>Who came back, by probability alive</h2>"
        + chart("chart-alive", alive_chart(deciles), "Share who bought again by decile of p_alive")
        + "</section>"
    )  # fmt: skip
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · segone backtest</title><style>{CSS}</style>"
        f"<script>{PROBE_JS}</script><script type=\"module\">{script_text(bundle_js)}</script>"
        f"</head><body><div class=\"page\">{body}"
        f"<footer>Made by segone from <code>{esc(out_dir)}</code>. This file works offline.</footer></div>"
        f'<script type="module">{script_text(EMBED_JS % script_json(specs))}</script></body></html>\n'
    )
