"""The report's charts as Vega-Lite specs, built with Altair (validated against the Vega-Lite schema).

Every chart carries its data inline (a few hundred rows at most), so the
HTML page needs nothing but the Vega bundle inlined once.
"""

import math

from segone.report._names import (
    GROUPS,
    feature_info,
    fmt_int,
    fmt_lift,
    fmt_num,
    fmt_pct,
    lower_is_better,
    wrap_lines,
)

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
INK = "#1f2933"
MUTED = "#616e7c"
CUSTOMERS_COLOR = "#9fb3c8"
SPEND_COLOR = "#2366b8"
HIDDEN_COLOR = "#e4e7eb"
SEP = "\n"  # line separator inside axis labels (split again by labelExpr)
# validate every spec against the Vega-Lite schema (jsonschema: ~0.1 s a chart); the tests turn it on
VALIDATE = False


def _hidden(k, reason="small"):
    """Cell text of a hidden count: '< k' when it is below k, 'hidden' when the run withheld it."""
    return f"< {k:,}" if k and reason == "small" else "hidden"


def _hidden_long(k, reason="small"):
    if k and reason == "small":
        return f"fewer than {k:,} (hidden)"
    return "withheld by the run's privacy rule (too few customers, or it would reveal such a cell)"


def _alt():
    import altair as alt

    return alt


CONFIG = {
    "font": FONT,
    "padding": {"left": 4, "right": 12, "top": 6, "bottom": 4},
    "view": {"stroke": None},
    "axis": {"labelFontSize": 12, "titleFontSize": 12, "labelColor": INK, "titleColor": MUTED,
             "titleFontWeight": "normal", "gridColor": "#edf0f3", "domainColor": "#cbd2d9", "tickColor": "#cbd2d9"},
    "legend": {"labelFontSize": 12, "titleFontSize": 12, "titleColor": MUTED, "titleFontWeight": "normal",
               "orient": "top", "direction": "horizontal"},
    "header": {"labelFontSize": 13, "labelColor": INK},
}  # fmt: skip


def _finish(chart, **datasets):
    """The Vega-Lite dict of ``chart``, its data as top-level named datasets and the report's config.

    The charts refer to their data by name (``alt.Data(name=...)``) and the
    rows are put in afterwards: Altair deep-copies inline rows at every layer
    and concatenation, which would cost seconds for the heatmap.
    """
    spec = chart.to_dict(validate=VALIDATE)
    spec["datasets"] = {name: list(rows) for name, rows in datasets.items()}
    spec["config"] = CONFIG
    return spec


def seg_name(seg, width=26, max_lines=3):
    """Axis label of a segment: 'id · label' wrapped (lines joined by SEP)."""
    text = f"{seg['id']} · {seg['label']}" if seg["label"] else f"Segment {seg['id']}"
    return SEP.join(wrap_lines(text, width, max_lines))


def _multiline(axis_kwargs):
    return dict(labelExpr=f"split(datum.label, '{SEP.encode('unicode_escape').decode()}')", **axis_kwargs)


def _seg_axis():
    """The y axis of segment names: multi-line labels."""
    return _alt().Axis(**_multiline({"labelLimit": 260, "labelPadding": 8}))


def overview_chart(data):
    """Share of customers and share of spend per segment (horizontal paired bars)."""
    alt = _alt()
    rows = []
    order = []
    for s in data.shown_segments:
        name = seg_name(s, width=34, max_lines=3)
        order.append(name)
        idx = (s["value_share"] / s["share"]) if s["value_share"] is not None and s["share"] else None
        common = {"segment": name, "label": s["label"] or f"Segment {s['id']}", "id": str(s["id"]),
                  "customers": fmt_int(s["size"]), "index": fmt_lift(idx) if idx is not None else "n/a"}  # fmt: skip
        rows.append({**common, "measure": "Share of customers", "value": s["share"], "text": fmt_pct(s["share"])})
        if s["value_share"] is not None:
            rows.append({**common, "measure": "Share of spend", "value": s["value_share"],
                         "text": fmt_pct(s["value_share"])})  # fmt: skip
    measures = ["Share of customers", "Share of spend"]
    base = alt.Chart(alt.Data(name="rows")).encode(
        y=alt.Y("segment:N", sort=order, title=None, axis=_seg_axis()),
        yOffset=alt.YOffset("measure:N", sort=measures),
        tooltip=[alt.Tooltip("label:N", title="Segment"), alt.Tooltip("id:N", title="Segment id"),
                 alt.Tooltip("customers:N", title="Customers"), alt.Tooltip("measure:N", title="Measure"),
                 alt.Tooltip("text:N", title="Share"), alt.Tooltip("index:N", title="Spend per customer vs average")],
    )  # fmt: skip
    bars = base.mark_bar(cornerRadiusEnd=2, height={"band": 0.9}).encode(
        x=alt.X("value:Q", title="Share of all customers / of all spend", axis=alt.Axis(format="%", tickCount=6)),
        color=alt.Color("measure:N", title=None,
                        scale=alt.Scale(domain=measures, range=[CUSTOMERS_COLOR, SPEND_COLOR])),
    )  # fmt: skip
    text = base.mark_text(align="left", dx=4, fontSize=11, color=INK).encode(x="value:Q", text="text:N")
    chart = alt.layer(bars, text).properties(width=680, height=alt.Step(21))
    return _finish(chart, rows=rows)


def _lift_color(lift):
    """log2 of the lift, clipped to [-2, 2] (x0.25 .. x4)."""
    if lift is None or not (isinstance(lift, (int, float)) and math.isfinite(lift)):
        return None
    if lift <= 0:
        return -2.0
    return max(-2.0, min(2.0, math.log2(lift)))


def profile_heatmap(data):
    """Lift of every feature (rows, grouped under titles) in every segment (columns, labelled once on top)."""
    alt = _alt()
    feats = []
    for i, f in enumerate(data.lift_features):
        name, group = feature_info(f)
        lifts = [s["row"].get(f"lift_{f}") for s in data.shown_segments]
        if not any(isinstance(v, (int, float)) and math.isfinite(v) for v in lifts):
            continue  # nothing to compare (e.g. a column that is zero for everyone)
        feats.append((GROUPS.index(group) if group in GROUPS else len(GROUPS), i, f, name, group))
    feats.sort()
    segs = data.shown_segments
    seg_order = [str(s["id"]) for s in segs]
    rows = []
    for s in segs:
        r = s["row"]
        for g, i, f, name, group in feats:
            lift = r.get(f"lift_{f}")
            lift = None if lift is None or (isinstance(lift, float) and not math.isfinite(lift)) else float(lift)
            mean = r.get(f"mean_{f}")
            c = _lift_color(lift)
            if c is not None and lower_is_better(f):  # colour by good and bad: fewer days since a purchase is good
                c = -c
            rows.append({
                "segment": str(s["id"]), "label": s["label"] or f"Segment {s['id']}", "feature": name, "group": group,
                "order": g * 1000 + i, "color": c, "text": fmt_lift(lift),
                "mean": fmt_num(mean) if isinstance(mean, (int, float)) else "–",
                "dark": c is not None and abs(c) > 1.25,
            })  # fmt: skip
    step_x, step_y = 132, 19
    x = alt.X("segment:N", sort=seg_order, title=None, axis=None)
    head_rows = [{"segment": str(s["id"]), "text": seg_name(s, width=18, max_lines=6)} for s in segs]
    n_lines = max((r["text"].count(SEP) + 1 for r in head_rows), default=1)
    head_h = 14 * n_lines + 2
    header = alt.Chart(alt.Data(name="head")).mark_text(
        lineBreak=SEP, baseline="bottom", fontWeight="bold", fontSize=11.5, color=INK, lineHeight=14
    ).encode(x=x, y=alt.value(head_h), text="text:N").properties(width=alt.Step(step_x), height=head_h)
    legend = alt.Legend(values=[-2, -1, 0, 1, 2], gradientLength=300, titleLimit=400, orient="top",
                        labelExpr="datum.value == 0 ? 'same' : '×' + format(pow(2, datum.value), '.2~f')")  # fmt: skip
    color = alt.Color("color:Q", title="Segment vs the average customer (days since: fewer is blue)",
                      scale=alt.Scale(scheme="redblue", domain=[-2, 2], domainMid=0), legend=legend)  # fmt: skip
    tooltip = [alt.Tooltip("label:N", title="Segment"), alt.Tooltip("feature:N", title="Feature"),
               alt.Tooltip("text:N", title="Against the average customer"),
               alt.Tooltip("mean:N", title="Segment average")]  # fmt: skip
    parts = [header]
    datasets = {"head": head_rows}
    for group in [g for g in GROUPS if any(r["group"] == g for r in rows)]:
        name = f"g{len(parts)}"
        datasets[name] = [r for r in rows if r["group"] == group]
        base = alt.Chart(alt.Data(name=name)).encode(
            x=x,
            y=alt.Y("feature:N", sort=alt.EncodingSortField("order", op="min"), title=None,
                    axis=alt.Axis(labelLimit=280, ticks=False, domain=False, labelPadding=6)),
            tooltip=tooltip,
        )  # fmt: skip
        rect = base.mark_rect(stroke="white", strokeWidth=1.5).encode(color=color)
        text = base.mark_text(fontSize=11).encode(
            text="text:N", color=alt.condition("datum.dark", alt.value("white"), alt.value(INK)))
        parts.append(alt.layer(rect, text).properties(
            width=alt.Step(step_x), height=alt.Step(step_y),
            title=alt.TitleParams(group, anchor="start", frame="group", fontSize=13, fontWeight="bold", color=INK,
                                  offset=6, dx=-6)))  # fmt: skip
    chart = alt.vconcat(*parts, spacing=10).resolve_scale(x="shared", color="shared")
    return _finish(chart, **datasets)


def rfm_chart(data):
    """The R x F grid: customers per cell (R: 5 = bought most recently; F: 5 = buys most often)."""
    alt = _alt()
    total = sum(c["customers"] for c in data.rfm) or 1
    rows = []
    for c in data.rfm:
        hidden = c["hidden"]
        avg = c["spend"] / c["customers"] if c["spend"] is not None and c["customers"] else None
        rows.append({
            "r": c["r"], "f": c["f"],
            "customers": 0 if hidden else c["customers"], "hidden": hidden,
            "text": _hidden(data.k, c.get("reason")) if hidden else fmt_int(c["customers"]),
            "sub": "" if hidden or not c["customers"] else fmt_pct(c["customers"] / total),
            "n": _hidden_long(data.k, c.get("reason")) if hidden else fmt_int(c["customers"]),
            "share": "–" if hidden else fmt_pct(c["customers"] / total),
            "spend": "–" if hidden or c["spend"] is None else fmt_num(c["spend"]),
            "avg": "–" if hidden or avg is None else fmt_num(avg),
        })  # fmt: skip
    max_n = max((r["customers"] or 0) for r in rows) or 1
    for r in rows:
        r["dark"] = not r["hidden"] and r["customers"] > 0.55 * max_n
    rs = sorted({c["r"] for c in data.rfm})
    fs = sorted({c["f"] for c in data.rfm}, reverse=True)
    base = alt.Chart(alt.Data(name="rows")).encode(
        x=alt.X("r:O", sort=rs, title="Recency score (5 = bought most recently)",
                axis=alt.Axis(labelAngle=0, orient="bottom")),
        y=alt.Y("f:O", sort=fs, title="Frequency score (5 = buys most often)"),
        tooltip=[alt.Tooltip("r:O", title="Recency score"), alt.Tooltip("f:O", title="Frequency score"),
                 alt.Tooltip("n:N", title="Customers"), alt.Tooltip("share:N", title="Share of customers"),
                 alt.Tooltip("spend:N", title="Spend"), alt.Tooltip("avg:N", title="Spend per customer")],
    )  # fmt: skip
    rect = base.mark_rect(stroke="white", strokeWidth=2).encode(
        color=alt.condition("datum.hidden", alt.value(HIDDEN_COLOR),
                            alt.Color("customers:Q", title="Customers", scale=alt.Scale(scheme="blues"),
                                      legend=alt.Legend(format=",d", gradientLength=220)))
    )  # fmt: skip
    color = alt.condition("datum.dark", alt.value("white"), alt.value(INK))
    text = base.mark_text(fontSize=13, fontWeight="bold", dy=-7).encode(text="text:N", color=color)
    sub = base.mark_text(fontSize=11, dy=9).encode(text="sub:N", color=color)
    chart = alt.layer(rect, text, sub).properties(width=alt.Step(96), height=alt.Step(56))
    return _finish(chart, rows=rows)


def value_chart(data, value_label):
    """Predicted value per customer by segment: 10-90% range, middle half, median and mean."""
    alt = _alt()
    rows, order = [], []
    for s in data.shown_segments:
        e = data.value["segments"].get(s["id"])
        if not e or not any(k in e for k in ("q10", "q25", "q50", "mean")):
            continue
        name = seg_name(s, width=34, max_lines=3)
        order.append(name)
        row = {"segment": name, "label": s["label"] or f"Segment {s['id']}"}
        for key in ("q10", "q25", "q50", "q75", "q90", "mean"):
            row[key] = e.get(key)
            row[key + "_t"] = fmt_num(e.get(key)) if e.get(key) is not None else "–"
        rows.append(row)
    if not rows:
        return None
    top = max((r["q90"] if r["q90"] is not None else r["mean"] or 0) for r in rows)
    fmt = ",.0f" if top >= 50 else ",.1~f" if top >= 5 else ",.2~f"
    tooltip = [alt.Tooltip("label:N", title="Segment"), alt.Tooltip("mean_t:N", title="Average"),
               alt.Tooltip("q50_t:N", title="Median"), alt.Tooltip("q25_t:N", title="25th percentile"),
               alt.Tooltip("q75_t:N", title="75th percentile"), alt.Tooltip("q10_t:N", title="10th percentile"),
               alt.Tooltip("q90_t:N", title="90th percentile")]  # fmt: skip
    base = alt.Chart(alt.Data(name="rows")).encode(
        y=alt.Y("segment:N", sort=order, title=None, axis=_seg_axis()),
        tooltip=tooltip,
    )  # fmt: skip
    x = alt.X("q10:Q", title=value_label, axis=alt.Axis(format=fmt))
    layers = []
    if any(r["q10"] is not None and r["q90"] is not None for r in rows):
        layers.append(base.mark_rule(color="#7b8794", strokeWidth=1.5).encode(x=x, x2="q90:Q"))
    if any(r["q25"] is not None and r["q75"] is not None for r in rows):
        layers.append(base.mark_bar(color="#8fb8e8", height=18, cornerRadius=2).encode(
            x=alt.X("q25:Q", title=value_label, axis=alt.Axis(format=fmt)), x2="q75:Q"))  # fmt: skip
    if any(r["q50"] is not None for r in rows):
        layers.append(base.mark_tick(color=SPEND_COLOR, thickness=3, size=22).encode(
            x=alt.X("q50:Q", title=value_label, axis=alt.Axis(format=fmt))))  # fmt: skip
    if any(r["mean"] is not None for r in rows):
        layers.append(base.mark_point(shape="diamond", filled=True, size=70, color="#c2410c").encode(
            x=alt.X("mean:Q", title=value_label, axis=alt.Axis(format=fmt))))  # fmt: skip
    chart = alt.layer(*layers).properties(width=680, height=alt.Step(44))
    return _finish(chart, rows=rows)


def _share_text(x):
    if x is None:
        return "–"
    if 0.995 <= x < 1:
        return ">99%"
    if 0 < x < 0.005:
        return "<1%"
    return fmt_pct(x, 0)


def migration_chart(data, names, previous_names=None):
    """Previous segment (rows, named with the previous run's own labels when known) -> segment now (columns):
    share of each previous segment's customers."""
    alt = _alt()
    new_row, left_col = "New since the previous run", "Left the base"

    def name_of(seg, side):
        if seg is None:
            return new_row if side == "from" else left_col
        if side == "from" and previous_names is not None:
            return previous_names.get(seg) or SEP.join(wrap_lines(f"{seg} · previous run", 22, 2))
        return names.get(seg) or SEP.join(wrap_lines(f"{seg} · no longer a segment", 22, 2))

    rows = []
    froms, tos = [], []
    for m in data.migration:
        a, b = name_of(m["from"], "from"), name_of(m["to"], "to")
        rows.append({
            "from": a, "to": b, "from_t": a.replace(SEP, " "), "to_t": b.replace(SEP, " "),
            "stay": m["from"] is not None and m["from"] == m["to"],
            "share": 0.0 if m["hidden"] else m["share"], "hidden": m["hidden"],
            "text": _hidden(data.k, m.get("reason")) if m["hidden"] else _share_text(m["share"]),
            "n": _hidden_long(data.k, m.get("reason")) if m["hidden"] else fmt_int(m["customers"]),
            "customers": None if m["hidden"] else m["customers"],
            "sub": "" if m["hidden"] else fmt_int(m["customers"]),
            "spend": "–" if m["hidden"] or m["spend"] is None else fmt_num(m["spend"]),
            "pct": "–" if m["hidden"] else fmt_pct(m["share"]),
        })  # fmt: skip
        froms.append((m["from"] is None, m["from"] if m["from"] is not None else 0, a))
        tos.append((m["to"] is None, m["to"] if m["to"] is not None else 0, b))
    f_order = [x[2] for x in sorted(set(froms))]
    t_order = [x[2] for x in sorted(set(tos))]
    for r in rows:
        r["dark"] = not r["hidden"] and (r["share"] or 0) > 0.55
    # the CLV that moved (migration.parquet's clv / clv_before), in the tooltip when a run had customer value
    value_tips = []
    for key, title in (("clv", "Their CLV now"), ("clv_before", "Their CLV before")):
        if any(m.get(key) is not None for m in data.migration):
            for r, m in zip(rows, data.migration):
                r[key] = "–" if m["hidden"] or m.get(key) is None else fmt_num(m[key])
            value_tips.append(alt.Tooltip(f"{key}:N", title=title))
    base = alt.Chart(alt.Data(name="rows")).encode(
        x=alt.X("to:N", sort=t_order, title="Segment now",
                axis=alt.Axis(orient="bottom", labelAngle=0, labelFontSize=11, **_multiline({"labelLimit": 140}))),
        y=alt.Y("from:N", sort=f_order, title="Segment in the previous run",
                axis=alt.Axis(labelFontSize=11, **_multiline({"labelLimit": 220, "labelPadding": 8}))),
        tooltip=[alt.Tooltip("from_t:N", title="From"), alt.Tooltip("to_t:N", title="To"),
                 alt.Tooltip("n:N", title="Customers"), alt.Tooltip("pct:N", title="Share of the row"),
                 alt.Tooltip("spend:N", title="Their spend"), *value_tips],
    )  # fmt: skip
    rect = base.mark_rect(stroke="white", strokeWidth=2).encode(
        color=alt.condition("datum.hidden", alt.value(HIDDEN_COLOR),
                            alt.Color("share:Q", title="Share of the previous segment's customers",
                                      scale=alt.Scale(scheme="purples", domain=[0, 1]),
                                      legend=alt.Legend(format="%", gradientLength=240, titleLimit=400,
                                                        values=[0, 0.25, 0.5, 0.75, 1]))),
    )  # fmt: skip
    outline = base.transform_filter("datum.stay").mark_rect(stroke=INK, strokeWidth=1.5, fillOpacity=0)
    color = alt.condition("datum.dark", alt.value("white"), alt.value(INK))
    text = base.mark_text(fontSize=12, fontWeight="bold", dy=-7).encode(text="text:N", color=color)
    sub = base.mark_text(fontSize=10.5, dy=9).encode(text="sub:N", color=color)
    chart = alt.layer(rect, outline, text, sub).properties(width=alt.Step(124), height=alt.Step(58))
    return _finish(chart, rows=rows)


def effects_chart(rows, names):
    """Per previous segment: the uplift in staying there (treated minus reference), with its 95% interval.

    ``names`` maps a previous segment id to its name in the previous run.
    """
    alt = _alt()
    data = []
    for r in rows:
        if r["measure"] != "stayed" or r["difference"] is None or r["low"] is None:
            continue
        data.append({"segment": _short(f"{r['previous_segment']} · {names.get(r['previous_segment'], '')}"),
                     "uplift": r["difference"] * 100, "low": r["low"] * 100, "high": r["high"] * 100,
                     "treated": r["value"], "reference": r["reference_value"], "n": r["customers"]})  # fmt: skip
    if not data:
        return None
    order = [d["segment"] for d in sorted(data, key=lambda d: d["uplift"])]
    base = alt.Chart(alt.Data(name="rows")).encode(y=alt.Y("segment:N", sort=order, title=None))
    title = "Treated minus reference: share who stayed in their segment (percentage points)"
    x = alt.X("uplift:Q", title=title)
    bars = base.mark_rule(strokeWidth=2, color="#7b8794").encode(x=alt.X("low:Q", title=title), x2="high:Q")
    points = base.mark_point(filled=True, size=80).encode(
        x=x, color=alt.condition("datum.low > 0 || datum.high < 0", alt.value("#c2410c"), alt.value("#4e79a7")),
        tooltip=[alt.Tooltip("segment:N", title="Previous segment"), alt.Tooltip("uplift:Q", format="+.1f"),
                 alt.Tooltip("low:Q", format="+.1f", title="95% low"), alt.Tooltip("high:Q", format="+.1f",
                                                                                    title="95% high"),
                 alt.Tooltip("treated:Q", format=".1%", title="Treated stayed"),
                 alt.Tooltip("reference:Q", format=".1%", title="Reference stayed"),
                 alt.Tooltip("n:Q", format=",", title="Treated customers")],
    )  # fmt: skip
    zero = alt.Chart(alt.Data(name="zero")).mark_rule(color="#999", strokeDash=[4, 4]).encode(x="x:Q")
    chart = alt.layer(zero, bars, points).properties(width=620, height=alt.Step(34))
    return _finish(chart, rows=data, zero=[{"x": 0}])


def _short(text, width=44):
    return text if len(text) <= width else text[: width - 1] + "…"
