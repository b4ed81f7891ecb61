"""The report page: one self-contained HTML document (inline CSS, inline Vega bundle, inline chart specs)."""

import datetime as _dt
import html
import json
import math
import re

from segone.features import find, report_table_columns
from segone.report._names import (
    attribute_name,
    feature_name,
    fmt_int,
    fmt_lift,
    fmt_num,
    fmt_pct,
    fmt_seconds,
    grows_with_time,
    trait_text,
)
from segone.report._read import ids_hashed

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac"]  # fmt: skip

# decimals of a median in the segment table, by the feature's kind (counts 1, days 0, money by size)
_TABLE_DIGITS = {"count": 1, "days": 0}

SECTIONS = (
    ("overview", "Segments at a glance"),
    ("profiles", "What sets each segment apart"),
    ("personas", "Typical customers"),
    ("value", "Predicted customer value"),
    ("rfm", "Recency and frequency (RFM grid)"),
    ("migration", "Movement since the previous run"),
    ("effects", "Campaign effects"),
    ("run-facts", "Run facts and data quality"),
    ("actions", "What to do next"),
)
OPTIONAL_SECTIONS = ("effects",)  # listed in the contents only when the run has them

CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#e4e7eb;--soft:#f5f7fa;--accent:#2366b8;--warn:#b44d12}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:#eef1f5;color:var(--ink);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;font-variant-numeric:tabular-nums}
.page{max-width:1180px;margin:0 auto;padding:28px 28px 60px}
header.top{background:linear-gradient(135deg,#17324d,#2366b8);color:#fff;border-radius:14px;padding:26px 30px 22px;
margin-bottom:18px}
header.top .eyebrow{text-transform:uppercase;letter-spacing:.08em;font-size:12px;opacity:.8}
header.top h1{margin:4px 0 6px;font-size:30px;line-height:1.2}
header.top p{margin:0;opacity:.92}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px;margin:0 0 18px}
.kpi{background:#fff;border-radius:12px;padding:14px 16px;border:1px solid var(--line)}
.kpi .v{font-size:24px;font-weight:700;line-height:1.2}
.kpi .k{color:var(--muted);font-size:13px}
.kpi .s{font-size:13px;margin-top:2px}
nav.toc{background:#fff;border:1px solid var(--line);border-radius:12px;padding:10px 16px;margin-bottom:18px;
display:flex;flex-wrap:wrap;gap:4px 18px;font-size:14px}
nav.toc a{color:var(--accent);text-decoration:none}
nav.toc a.off{color:var(--muted)}
nav.toc a:hover{text-decoration:underline}
section{background:#fff;border:1px solid var(--line);border-radius:14px;padding:22px 26px 24px;margin:0 0 18px}
h2{font-size:21px;margin:0 0 4px}
h3{font-size:16px;margin:20px 0 6px}
.howto{color:var(--muted);margin:0 0 14px;font-size:14px;border-left:3px solid #c8d6e5;padding:2px 0 2px 10px}
.howto b{color:var(--ink);font-weight:600}
.findings{margin:0;padding-left:20px}
.findings li{margin:3px 0}
.chart{margin:6px 0 10px;min-height:40px;overflow-x:auto}
.chart .fallback,.chart-error{color:var(--muted);font-size:13px;font-style:italic}
.chart-error{color:var(--warn)}
table{border-collapse:collapse;width:100%;font-size:14px;margin:6px 0 4px}
th,td{padding:7px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12.5px;color:var(--muted);font-weight:600;background:var(--soft);line-height:1.3}
td.n,th.n{text-align:right}
td.n{white-space:nowrap}
tbody tr:hover{background:#fafbfc}
.tablewrap{overflow-x:auto}
.seg{display:inline-flex;align-items:baseline;gap:8px}
.dot{display:inline-block;width:11px;height:11px;border-radius:50%;flex:none;position:relative;top:1px}
.segid{color:var(--muted);font-size:12px;white-space:nowrap}
.seglabel{font-weight:600}
.traits{color:var(--muted);font-size:13px;margin:2px 0 0 19px}
th.segcol{min-width:300px}
.seg{min-width:250px}
#segment-table th{vertical-align:bottom}
#segment-table th.n,#value-table th.n{min-width:92px}
.hidden-cell{color:#9aa5b1}
.missing{background:var(--soft);border:1px dashed #cbd2d9;border-radius:10px;padding:12px 14px;color:var(--muted);
font-size:14px}
.note{color:var(--muted);font-size:13px;margin:8px 0 0}
details.note summary{cursor:pointer}
details.note p{margin:4px 0 0 14px}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:14px 22px}
.personas{display:grid;gap:16px}
.pseg{border:1px solid var(--line);border-radius:12px;padding:12px 14px 14px;border-top-width:5px}
.pseg h3{margin:0 0 2px;font-size:16px}
.pseg .meta{color:var(--muted);font-size:13px;margin-bottom:10px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:10px}
.card{background:var(--soft);border-radius:10px;padding:10px 12px}
.card .cid{font-size:12px;color:var(--muted);font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
word-break:break-all}
.card .sum{margin:4px 0 6px;font-size:14px}
.chips{display:flex;flex-wrap:wrap;gap:5px}
.chip{background:#fff;border:1px solid var(--line);border-radius:999px;padding:1px 9px;font-size:12px;color:#3e4c59}
.chip b{font-weight:600;color:var(--ink)}
.chip.val{background:#eef6ee;border-color:#cfe6d0}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:10px;margin:6px 0 14px}
.fig{border:1px solid var(--line);border-radius:10px;padding:10px 12px}
.fig .v{font-size:22px;font-weight:700}
.fig .k{color:var(--muted);font-size:13px}
.fig .s{font-size:13px}
.good{color:#1f7a3d}.fair{color:#9a6700}.bad{color:var(--warn)}
p.warn{color:var(--warn);border-left:3px solid var(--warn);padding-left:10px}
.tbar{display:inline-block;height:9px;background:#8fb8e8;border-radius:2px;vertical-align:middle;margin-left:8px}
table.mix{width:auto}
table.mix th{font-weight:500;color:var(--ink);text-align:left;width:150px;font-size:12.5px;vertical-align:bottom}
table.mix th .dot{margin-right:4px}
table.mix tr.group td{font-weight:700;background:#fff;padding-top:14px;border-bottom:2px solid var(--line)}
table.mix td.val{padding-left:18px}
table.mix td{padding:5px 10px}
.kv td:first-child{color:var(--muted);width:34%}
footer{color:var(--muted);font-size:13px;text-align:center;margin-top:8px}
@media print{body{background:#fff}section,nav.toc,.kpi{border-color:#ccc;break-inside:avoid}.page{padding:0}}
"""

# records script errors and which charts drew into attributes of <html>, for a browser test and for the reader
PROBE_JS = """window.__reportErrors=[];
window.addEventListener('error',function(e){window.__reportErrors.push(String(e.message||e));});
window.addEventListener('unhandledrejection',function(e){window.__reportErrors.push(String(e.reason));});
(function(){var ce=console.error;console.error=function(){try{window.__reportErrors.push(
Array.prototype.map.call(arguments,String).join(' '));}catch(_){}return ce.apply(console,arguments);};})();"""

EMBED_JS = """const specs = %s;
const opts = {actions: false, renderer: 'svg', tooltip: {theme: 'light'}};
const root = document.documentElement;
const jobs = Object.keys(specs).map(function (id) {
  const el = document.getElementById(id);
  return vegaEmbed(el, specs[id], opts).then(function () {
    el.setAttribute('data-drawn', 'yes');
  }).catch(function (err) {
    window.__reportErrors.push(id + ': ' + String(err));
    el.innerHTML = '<p class="chart-error">This chart could not be drawn (' +
      String(err).replace(/[<>&]/g, '') + '); the table next to it has the same figures.</p>';
  });
});
Promise.allSettled(jobs).then(function () {
  root.setAttribute('data-charts-drawn', String(document.querySelectorAll('[data-drawn=yes]').length));
  root.setAttribute('data-report-errors', JSON.stringify(window.__reportErrors));
});"""


def esc(x):
    return html.escape("" if x is None else str(x), quote=True)


def script_json(obj):
    """JSON safe inside a <script> element."""
    s = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def script_text(js):
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)


def color_of(seg_id, index):
    try:
        return PALETTE[int(seg_id) % len(PALETTE)]
    except (TypeError, ValueError):
        return PALETTE[index % len(PALETTE)]


def _date(s, with_time=False):
    if not s:
        return "–"
    try:
        d = _dt.datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    except ValueError:
        return str(s)
    if with_time:
        return d.strftime("%-d %b %Y, %H:%M") + (" UTC" if d.utcoffset() == _dt.timedelta(0) else "")
    return d.strftime("%-d %b %Y")


def _first_number(d, keys):
    return next((d[k] for k in keys if isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool)), None)


def _psi_words(v):
    """(css class, words) of a population stability index (rules of thumb: < 0.1 stable, < 0.25 moderate)."""
    return ("good", "stable") if v < 0.1 else ("fair", "moderate shift") if v < 0.25 else ("bad", "large shift")


def privacy_facts(p, k):
    """Plain sentences from run.json's privacy section (whatever of it is there)."""
    out = []
    if k:
        out.append(f"Minimum segment size {k:,}: no figure about fewer customers is shown.")
    if ids_hashed(p):
        hashing = p.get("pseudonymous_ids")
        algo = hashing.get("algorithm") if isinstance(hashing, dict) else None
        out.append("Customer ids are pseudonyms" + (f" ({algo})" if algo else "") + ".")
    small = p.get("small_segments")
    if isinstance(small, dict):
        merged, withheld = small.get("merged") or {}, small.get("withheld") or []
        if merged:
            out.append(f"{len(merged)} small segment(s) merged into their nearest segment.")
        if withheld:
            out.append(f"{len(withheld)} small segment(s) withheld ({fmt_int(small.get('customers_withheld'))} "
                       "customers without a segment).")  # fmt: skip
    cells = p.get("cells_suppressed")
    if isinstance(cells, dict) and any(cells.values()):
        out.append("Cells suppressed: " + ", ".join(f"{t}: {fmt_int(n)}" for t, n in cells.items() if n) + ".")
    consent = p.get("consent")
    if isinstance(consent, dict):
        cols = ", ".join(str(c) for c in consent.get("columns") or [])
        out.append(f"Consent ({cols}): {fmt_int(consent.get('consented'))} consented, "
                   f"{fmt_int(consent.get('not_consented'))} did not, {fmt_int(consent.get('unknown'))} unknown; "
                   f"{fmt_int(consent.get('excluded_from_outputs'))} left out of the outputs, "
                   f"{fmt_int(consent.get('dropped_before_processing'))} dropped before processing.")  # fmt: skip
    removed = p.get("personal_columns_removed")
    if removed:
        out.append("Personal columns removed: " + ", ".join(str(c) for c in removed) + ".")
    return out


class Page:
    """Assembles the sections; charts are placeholders filled by vegaEmbed from ``self.specs``."""

    def __init__(self, data, charts_module, title=None):
        self.d = data
        self.c = charts_module
        self.title = title or "Customer segments"
        self.specs = {}
        self.present = {}
        self.colors = {s["id"]: color_of(s["id"], i) for i, s in enumerate(data.segments)}

    # ------------------------------------------------------------- helpers
    def chart(self, cid, spec, alt_text):
        if spec is None:
            return ""
        self.specs[cid] = spec
        return (f'<div class="chart" id="{cid}" role="img" aria-label="{esc(alt_text)}">'
                '<p class="fallback">This chart needs JavaScript; the table below has the same figures.</p>'
                "</div>")  # fmt: skip

    def seg_cell(self, s, wrap=True):
        dot = f'<span class="dot" style="background:{self.colors.get(s["id"], "#999")}"></span>'
        label = esc(s["label"] or f"Segment {s['id']}")
        return (f'<span class="seg">{dot}<span><span class="seglabel">{label}</span> '
                f'<span class="segid">segment {esc(s["id"])}</span></span></span>')  # fmt: skip

    def count(self, n):
        """A customer count under the privacy rule."""
        if n is None:
            return self.hidden(withheld=True) if self.d.k else "–"
        if not self.d.visible(n):
            return self.hidden()
        return fmt_int(n)

    def hidden(self, withheld=False):
        """A hidden figure: '< k' when the report knows it is below k, 'hidden' when the run withheld it."""
        k = self.d.k
        if k and not withheld:
            return f'<span class="hidden-cell" title="fewer than {k:,} customers: hidden">&lt; {k:,}</span>'
        tip = "withheld by the run's privacy rule: too few customers, or it would reveal such a figure"
        return f'<span class="hidden-cell" title="{tip}">hidden</span>'

    def section(self, sid, title, howto, body, present=True):
        self.present[sid] = present
        how = f'<p class="howto"><b>How to read this:</b> {howto}</p>' if howto and present else ""
        flag = "yes" if present else "no"
        return f'<section id="{sid}" data-present="{flag}"><h2>{esc(title)}</h2>{how}{body}</section>'

    @staticmethod
    def missing(text):
        return f'<div class="missing">{text}</div>'

    def _med(self, s, feat):
        r = s["row"]
        for pre in ("median_", "mean_"):
            v = r.get(pre + feat)
            if isinstance(v, (int, float)):
                return v
        return None

    # ------------------------------------------------------------- header
    def header(self):
        run = self.d.run
        n = run.get("customers")
        k = len(self.d.segments)
        made = _dt.datetime.now(_dt.timezone.utc).isoformat()
        sub = [f"{fmt_int(n)} customers in {k} segments" if n is not None else f"{k} segments",
               f"data as of {_date(run.get('as_of'))}", f"report made {_date(made, True)}"]  # fmt: skip
        sweep = run.get("sweep") if isinstance(run.get("sweep"), dict) else {}
        warn = ""
        if sweep.get("fallback"):  # -k auto found no clear structure: say so before anything else
            warn = (f'<p class="note" id="k-fallback"><b>The number of segments was not chosen by the data.</b> '
                    f'{esc(sweep.get("note", ""))}</p>')  # fmt: skip
        return (f'<header class="top"><div class="eyebrow">segone · segmentation report</div>'
                f'<h1>{esc(self.title)}</h1><p>{esc(" · ".join(sub))}</p>{warn}</header>')  # fmt: skip

    def kpis(self):
        d = self.d
        segs = d.shown_segments
        cards = [("Customers", fmt_int(d.run.get("customers")), f"as of {_date(d.run.get('as_of'))}")]
        cards.append(("Segments", fmt_int(len(d.segments)), "groups of similar customers"))
        no_buy = d.run.get("customers_without_purchase")
        if isinstance(no_buy, int) and no_buy > 0:  # web or CRM only: customers, not buyers
            cards.append(("Not bought yet", fmt_int(no_buy), "customers without a purchase (web or CRM only)"))
        if segs:
            big = max(segs, key=lambda s: s["size"] or 0)
            cards.append(("Largest segment", fmt_pct(big["share"], 0), esc(big["label"] or f"Segment {big['id']}")))
            idx = [(s["value_share"] / s["share"], s) for s in segs if s["value_share"] is not None and s["share"]]
            if idx:
                v, s = max(idx, key=lambda t: t[0])
                cards.append(("Top spenders per customer", fmt_lift(v), esc(s["label"] or f"Segment {s['id']}")))
        t = d.tracking
        if t and isinstance(t.get("stayed_share"), (int, float)):
            cards.append(("Stayed in their segment", fmt_pct(t["stayed_share"]), "since the previous run"))
        return '<div class="kpis">' + "".join(
            f'<div class="kpi"><div class="k">{esc(k)}</div><div class="v">{v}</div><div class="s">{s}</div></div>'
            for k, v, s in cards) + "</div>"  # fmt: skip

    def toc(self):
        links = []
        order = {sid: i for i, sid in enumerate(self.present)}  # the order the sections were rendered in
        for sid, title in sorted(SECTIONS, key=lambda t: order.get(t[0], len(order))):
            if sid in OPTIONAL_SECTIONS and not self.present.get(sid, False):
                continue
            cls = "" if self.present.get(sid, True) else ' class="off" title="not in this run\'s outputs"'
            links.append(f'<a href="#{sid}"{cls}>{esc(title)}</a>')
        return '<nav class="toc" aria-label="Sections">' + "".join(links) + "</nav>"

    def findings(self):
        d = self.d
        segs = d.shown_segments
        out = []
        if segs:
            big = max(segs, key=lambda s: s["size"] or 0)
            out.append(f"The largest segment is <b>{esc(big['label'] or big['id'])}</b> with "
                       f"{fmt_pct(big['share'])} of customers.")  # fmt: skip
            idx = [(s["value_share"] / s["share"], s) for s in segs if s["value_share"] is not None and s["share"]]
            if idx:
                v, s = max(idx, key=lambda t: t[0])
                out.append(f"<b>{esc(s['label'] or s['id'])}</b> brings {fmt_pct(s['value_share'])} of spend from "
                           f"{fmt_pct(s['share'])} of customers: {fmt_lift(v)} the average spend per "
                           "customer.")  # fmt: skip
                lo, s2 = min(idx, key=lambda t: t[0])
                if s2 is not s:
                    out.append(f"<b>{esc(s2['label'] or s2['id'])}</b> holds {fmt_pct(s2['share'])} of customers "
                               f"but only {fmt_pct(s2['value_share'])} of spend ({fmt_lift(lo)}).")  # fmt: skip
        if d.value:
            means = [(e["mean"], s) for s in segs if (e := d.value["segments"].get(s["id"])) and "mean" in e]
            if means:
                v, s = max(means, key=lambda t: t[0])
                h = (d.value_info or {}).get("horizon_months")
                when = f" over the next {h} months" if h else ""
                if d.value.get("metric") == "clv":
                    out.append(f"The highest predicted value per customer is in <b>{esc(s['label'] or s['id'])}</b> "
                               f"({fmt_num(v)} on average{when}).")  # fmt: skip
                else:
                    out.append(f"<b>{esc(s['label'] or s['id'])}</b> is expected to buy the most: {fmt_num(v, 1)} "
                               f"purchases per customer on average{when}.")  # fmt: skip
        t = d.tracking
        if t and isinstance(t.get("stayed_share"), (int, float)):
            out.append(f"{fmt_pct(t['stayed_share'])} of the customers present in both runs stayed in the same "
                       "segment.")  # fmt: skip
        if not out:
            return ""
        return '<section id="findings"><h2>Key findings</h2><ul class="findings">' + "".join(
            f"<li>{x}</li>" for x in out) + "</ul></section>"  # fmt: skip

    # ------------------------------------------------------------- sections
    def overview(self):
        d = self.d
        segs = d.shown_segments
        if not segs:
            return self.section("overview", SECTIONS[0][1], "", self.missing("No segment can be shown."), False)
        chart = self.chart("chart-overview", self.c.overview_chart(d),
                           "Share of customers and share of spend for each segment")  # fmt: skip
        medians = report_table_columns()  # the registry's report_table features (orders, spend, recency)
        heads = ["Segment and what stands out", "Customers", "Share of customers", "Share of spend",
                 "Spend per customer vs average"] + [f"Median {feature_name(f)[:1].lower()}{feature_name(f)[1:]}"
                                                     for f in medians]  # fmt: skip
        th = "".join(f'<th class="n">{h}</th>' if i else f'<th class="segcol">{h}</th>' for i, h in enumerate(heads))
        body = []
        for s in d.segments:
            if s["hidden"]:
                body.append(f'<tr class="hidden-row" data-segment="{esc(s["id"])}"><td>{self.seg_cell(s)}</td>'
                            f'<td class="n">{self.count(s["size"])}</td><td colspan="{3 + len(medians)}" '
                            f'class="hidden-cell">'
                            f"Hidden: fewer than {d.k:,} customers (privacy rule of this run).</td></tr>")  # fmt: skip
                continue
            idx = s["value_share"] / s["share"] if s["value_share"] is not None and s["share"] else None
            traits = "; ".join(trait_text(t) for t in s["traits"][:3])
            first = self.seg_cell(s) + (f'<div class="traits">{esc(traits)}</div>' if traits else "")
            cells = [self.count(s["size"]), fmt_pct(s["share"]), fmt_pct(s["value_share"]),
                     fmt_lift(idx) if idx is not None else "–"]
            cells += [fmt_num(self._med(s, f), _TABLE_DIGITS.get(find(f).kind)) for f in medians]
            body.append(f'<tr data-segment="{esc(s["id"])}"><td>{first}</td>'
                        + "".join(f'<td class="n">{c}</td>' for c in cells) + "</tr>")  # fmt: skip
        table = (f'<div class="tablewrap"><table id="segment-table"><thead><tr>{th}</tr></thead>'
                 f'<tbody>{"".join(body)}</tbody></table></div>')  # fmt: skip
        how = ("for each segment, the grey bar is its share of all customers and the blue bar its share of all spend. "
               "A blue bar longer than the grey one means the segment spends more per customer than the average "
               "customer; <i>×2.00</i> in the table means twice the average.")  # fmt: skip
        return self.section("overview", SECTIONS[0][1], how, chart + table)

    def profiles(self):
        d = self.d
        if not d.lift_features or not d.shown_segments:
            return self.section("profiles", SECTIONS[1][1], "",
                                self.missing("segments.parquet holds no lift columns (lift_*)."), False)  # fmt: skip
        chart = self.chart("chart-profiles", self.c.profile_heatmap(d),
                           "Heatmap of each feature's lift in each segment against the average customer")  # fmt: skip
        how = ("each cell compares the segment's average with the average customer (for days since a purchase or a "
               "visit, and abandoned carts, the colours are reversed: fewer is blue, good). <i>×2.00</i> (blue) = twice as "
               "much, <i>×0.50</i> (red) = half, <i>×1.00</i> (white) = the same. Hover a cell for the segment's "
               "own average. Shares of spend and of orders are shares of each customer's spend or orders.")  # fmt: skip
        mixes = self.mixes()
        return self.section("profiles", SECTIONS[1][1], how, chart + mixes)

    def mixes(self):
        d = self.d
        if not d.mixes:
            return ""
        segs = d.shown_segments
        head = "".join(f'<th class="n">{self.seg_head(s)}</th>' for s in segs)
        rows = []
        for attr, values in d.mixes.items():
            name = attribute_name(f"{attr}=x")[0]
            rows.append(f'<tr class="group"><td colspan="{len(segs) + 1}">{esc(name)}</td></tr>')
            for value, col in sorted(values, key=lambda v: (not v[0][:1].isdigit(), v[0])):
                cells = []
                for s in segs:
                    x = s["row"].get(col)
                    if x is None and d.k:  # suppressed by the run's privacy rule
                        cells.append(f'<td class="n">{self.hidden(withheld=True)}</td>')
                        continue
                    if not isinstance(x, (int, float)) or math.isnan(x):
                        cells.append('<td class="n">–</td>')
                        continue
                    n = round(x * (s["size"] or 0))
                    if not d.visible(n):
                        cells.append(f'<td class="n">{self.hidden()}</td>')
                        continue
                    alpha = min(max(x, 0.0), 1.0) * 0.8
                    cells.append(f'<td class="n" style="background:rgba(35,102,184,{alpha:.2f});'
                                 f'color:{"#fff" if alpha > 0.42 else "inherit"}">{fmt_pct(x, 0)}</td>')  # fmt: skip
                rows.append(f'<tr><td class="val">{esc(value)}</td>{"".join(cells)}</tr>')
        return ('<h3>Who they are</h3><p class="howto"><b>How to read this:</b> the share of each segment\'s customers '
                "with each attribute value; within an attribute, each column adds up to 100%. Darker = more "
                "common.</p>"
                f'<div class="tablewrap"><table class="mix" id="mix-table"><thead><tr><th>Attribute</th>{head}</tr>'
                f'</thead><tbody>{"".join(rows)}</tbody></table></div>')  # fmt: skip

    def seg_head(self, s):
        dot = f'<span class="dot" style="background:{self.colors.get(s["id"], "#999")}"></span>'
        return f'<span title="{esc(s["label"])}">{dot}{esc(s["label"] or "Segment " + str(s["id"]))}</span>'

    def personas(self):
        d = self.d
        if not d.personas:
            msg = ("personas.parquet is not in this output directory, or none of the customers read belongs to a "
                   "segment that can be shown.")  # fmt: skip
            return self.section("personas", SECTIONS[2][1], "", self.missing(msg), False)
        read, total = d.sample.get("personas", (0, None))
        blocks = []
        for s in d.shown_segments:
            cards = d.personas.get(s["id"])
            if not cards:
                continue
            items = []
            for p in cards:
                chips = []
                for t in p["traits"]:
                    feat = t.get("feature")
                    if feat is None:
                        continue
                    pct = t.get("percentile")
                    if not isinstance(pct, (int, float)):
                        continue  # a categorical trait: the sentence above already says it
                    where = (f"top {max(1, round((1 - pct) * 100))}%" if pct >= 0.5
                             else f"bottom {max(1, round(pct * 100))}%")  # fmt: skip
                    chips.append(f'<span class="chip"><b>{esc(feature_name(feat))}</b> {esc(where)}</span>')
                said = {t.get("feature") for t in p["traits"]}
                vals = p["value"]
                has_clv = isinstance(vals.get("clv"), (int, float)) and not math.isnan(vals["clv"])
                shown = [("clv", "predicted value", fmt_num)] if has_clv else [
                    ("expected_purchases", "expected purchases", lambda x: fmt_num(x, 1))]
                shown.append(("p_alive", "chance still active", lambda x: fmt_pct(x, 0)))
                for key, label, fmt in shown:
                    v = vals.get(key)
                    if key not in said and isinstance(v, (int, float)) and not math.isnan(v):
                        chips.append(f'<span class="chip val">{label} <b>{fmt(v)}</b></span>')
                items.append(f'<div class="card"><div class="cid">customer {esc(p["id"])}</div>'
                             f'<div class="sum">{esc(p["summary"])}</div>'
                             f'<div class="chips">{"".join(chips)}</div></div>')  # fmt: skip
            meta = f"{fmt_pct(s['share'])} of customers · {self.count(s['size'])} customers"
            blocks.append(f'<div class="pseg" style="border-top-color:{self.colors.get(s["id"], "#999")}">'
                          f'<h3>{esc(s["label"] or "Segment " + str(s["id"]))} <span class="segid">segment '
                          f'{esc(s["id"])}</span></h3><div class="meta">{meta}</div><div class="cards">{"".join(items)}'
                          "</div></div>")  # fmt: skip
        typical = any(p["typical"] for cards in d.personas.values() for p in cards)
        pick = ("the customers closest to the segment's centre" if typical else "the first customers")
        how = (f"a few real customers per segment ({pick} among the first {fmt_int(read)} of "
               f"{fmt_int(total)} customers read from personas.parquet), each with the traits that set them apart "
               "from the whole base (top 5% = among the 5% highest). Customer ids are shown exactly as stored in "
               "the outputs.")  # fmt: skip
        if ids_hashed(d.privacy) or d.pseudonyms:
            how += " This run hashed the customer ids: the ids shown are pseudonyms."
        return self.section("personas", SECTIONS[2][1], how, f'<div class="personas">{"".join(blocks)}</div>')

    def value(self):
        d = self.d
        v = d.value
        skipped = d.value_info.get("skipped") if isinstance(d.value_info, dict) else None
        if not v and isinstance(skipped, dict) and (skipped.get("bg_nbd") or skipped.get("gamma_gamma")):
            why = [f"{name} was skipped: {str(skipped[part]).rstrip('.')}." for part, name in
                   (("bg_nbd", "The purchase model (BG/NBD)"), ("gamma_gamma", "The spend model (Gamma-Gamma)"))
                   if skipped.get(part)]  # fmt: skip
            msg = ("This run has no predicted customer value: the data could not support the value models, so "
                   "their columns are empty and the rest of the run is complete. " + " ".join(esc(w) for w in why))
            return self.section("value", SECTIONS[3][1], "", self.missing(msg), False)
        if not v:
            msg = ("This run has no predicted customer value (no <code>clv</code>, <code>p_alive</code> or "
                   "<code>expected_purchases</code> column in assignments.parquet and no <code>mean_clv</code> in "
                   "segments.parquet).")  # fmt: skip
            return self.section("value", SECTIONS[3][1], "", self.missing(msg), False)
        info = d.value_info or {}
        horizon = info.get("horizon_months")
        clv = v.get("metric") == "clv"
        what = "Predicted value" if clv else "Expected purchases"
        nxt = f", next {horizon} months" if horizon else ""
        vlabel = f"{what} per customer{nxt}"
        chart = self.chart("chart-value", self.c.value_chart(d, vlabel),
                           f"{what} per customer by segment: range, middle half, median and mean")  # fmt: skip
        heads = ["Segment", f"Average {what.lower()}", "Median", "Middle half (25–75%)", "Chance still active"]
        if clv:
            heads += ["Expected purchases", "Share of predicted value"]
        # the segment totals with their 90% intervals (segments.parquet; from the fits' parameter covariance)
        tkey = "total" if clv else "purchases_total"
        with_total = any(f"{tkey}_lo" in e for e in v["segments"].values())
        if with_total:
            heads.append(f"Total {'predicted value' if clv else 'expected purchases'}{nxt} (90% interval)")
        th = "".join(f'<th class="n">{h}</th>' if i else f"<th>{h}</th>" for i, h in enumerate(heads))
        rows = []
        digits = None if clv else 2
        for s in d.shown_segments:
            e = v["segments"].get(s["id"])
            if not e:
                continue
            mid = f"{fmt_num(e['q25'], digits)} – {fmt_num(e['q75'], digits)}" if "q25" in e and "q75" in e else "–"
            cells = [fmt_num(e.get("mean"), digits), fmt_num(e.get("q50"), digits), mid, fmt_pct(e.get("p_alive"), 0)]
            if clv:
                cells += [fmt_num(e.get("expected_purchases"), 1), fmt_pct(e.get("value_share"))]
            if with_total:
                lo, hi = e.get(f"{tkey}_lo"), e.get(f"{tkey}_hi")
                cells.append(f"{fmt_num(e.get(tkey))} ({fmt_num(lo)} – {fmt_num(hi)})" if lo is not None
                             and hi is not None else fmt_num(e.get(tkey)))  # fmt: skip
            rows.append(f'<tr data-segment="{esc(s["id"])}"><td>{self.seg_cell(s)}</td>'
                        + "".join(f'<td class="n">{c}</td>' for c in cells) + "</tr>")  # fmt: skip
        table = (f'<div class="tablewrap"><table id="value-table"><thead><tr>{th}</tr></thead>'
                 f'<tbody>{"".join(rows)}</tbody></table></div>')  # fmt: skip
        notes, details = [], []
        if v["from_sample"]:
            read, total = v["sample_rows"], v["total_rows"]
            if total is not None and read >= total:
                notes.append(f"Distribution from all {fmt_int(total)} customers in assignments.parquet.")
            else:
                notes.append(f"Distribution from the first {fmt_int(read)} of {fmt_int(total)} customers in "
                             "assignments.parquet (a bounded read: the report never scans every customer); "
                             "figures from segments.parquet cover all customers.")  # fmt: skip
        model = info.get("model") or ("BG/NBD purchases" + (" and Gamma-Gamma spend" if info.get("gamma_gamma") else "")
                                      if "bg_nbd" in info else None)  # fmt: skip
        if model:
            bits = [str(model)]
            if info.get("discount_rate") is not None:
                bits.append(f"discount rate {fmt_pct(info['discount_rate'])} per month")
            skipped = (info.get("skipped") or {}) if isinstance(info.get("skipped"), dict) else {}
            notes.append("Model: " + "; ".join(bits) + ".")
            for part, name in (("bg_nbd", "The purchase model"), ("gamma_gamma", "The spend model")):
                if skipped.get(part):
                    details.append(f"{name} was not used: {str(skipped[part]).rstrip('.')}.")
        if with_total:
            notes.append("The totals' 90% intervals show how uncertain the fitted model parameters make each "
                         "segment's total (the delta method on the fits' covariance); they do not include the "
                         "chance in each customer's own purchases.")  # fmt: skip
        ints = info.get("intervals") if isinstance(info.get("intervals"), dict) else {}
        if ints.get("skipped"):
            details.append(f"Intervals of the segment totals: {str(ints['skipped']).rstrip('.')}.")
        details += [str(n) for n in info.get("notes") or []]
        how = (f"for each segment, the line spans the 10th to the 90th percentile of {what.lower()} per customer, "
               "the box the middle half of customers, the blue tick the median and the orange diamond the average. "
               "Chance still active is the model's probability that a customer has not lapsed.")  # fmt: skip
        if not clv:
            notes.append("This run predicted purchases but no customer value (clv), so the chart shows expected "
                         "purchases.")  # fmt: skip
        note = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
        if details:
            note += ('<details class="note"><summary>Model details</summary>'
                     + "".join(f"<p>{esc(n)}</p>" for n in details) + "</details>")  # fmt: skip
        return self.section("value", SECTIONS[3][1], how, chart + table + note)

    def actions(self):
        """What to do next: per segment, the leading top offers (actions.parquet, summed in run.json)."""
        d = self.d
        title = dict(SECTIONS)["actions"]
        info = d.run.get("actions") if isinstance(d.run.get("actions"), dict) else None
        if info is None:
            msg = ("This run wrote no next best actions (<code>actions.parquet</code>): it was run with "
                   "<code>--no-actions</code>, or by a segone without them.")  # fmt: skip
            return self.section("actions", title, "", self.missing(msg), False)
        if info.get("skipped_stage"):
            msg = ("This run has no next best actions: the data could not support them, and the rest of the run "
                   f"is complete. {esc(info['skipped_stage'])}")  # fmt: skip
            return self.section("actions", title, "", self.missing(msg), False)
        horizon = info.get("horizon_days")
        rows_by_seg = {}
        for r in info.get("by_segment") or []:
            if isinstance(r, dict) and d.visible(r.get("customers")):
                rows_by_seg.setdefault(r.get("segment"), []).append(r)
        heads = ["Segment", "Offer (category)", "Customers for whom it is the best offer",
                 f"Average chance they buy it in the next {horizon} days",
                 f"Expected spend on it in the next {horizon} days"]  # fmt: skip
        th = "".join(f'<th class="n">{h}</th>' if i > 1 else f"<th>{h}</th>" for i, h in enumerate(heads))
        rows, shown_per_segment = [], 3
        for s in d.shown_segments:
            offers = rows_by_seg.get(s["id"])
            if not offers:
                continue
            # the offers worth most first: the expected spend is what a campaign on them can bring
            offers = sorted(offers, key=lambda r: -(r.get("expected_spend") or 0.0))
            top = offers[:shown_per_segment]
            rest = len(offers) - len(top)
            extra = f'<div class="note">and {rest} other offer{"s" if rest > 1 else ""}</div>' if rest else ""
            if max((r.get("mean_propensity") or 0.0) for r in offers) < 0.02:
                extra += ('<div class="note">Unlikely to buy anything soon, whatever the offer: a win-back '
                          "message, not a category push.</div>")  # fmt: skip
            for j, r in enumerate(top):
                seg = f'<td rowspan="{len(top)}">{self.seg_cell(s)}{extra}</td>' if j == 0 else ""
                rows.append(f'<tr data-segment="{esc(s["id"])}">{seg}<td>{esc(r.get("category"))}</td>'
                            f'<td class="n">{self.count(r.get("customers"))}</td>'
                            f'<td class="n">{fmt_pct(r.get("mean_propensity"), 0)}</td>'
                            f'<td class="n">{fmt_num(r.get("expected_spend"))}</td></tr>')  # fmt: skip
        if not rows:
            msg = ("No segment has an offer that can be shown (every cell stands for too few customers, or no "
                   "customer may be contacted).")  # fmt: skip
            return self.section("actions", title, "", self.missing(msg), False)
        table = (f'<div class="tablewrap"><table id="actions-table"><thead><tr>{th}</tr></thead>'
                 f'<tbody>{"".join(rows)}</tbody></table></div>')  # fmt: skip
        notes = []
        n_with = info.get("customers_with_actions")
        if isinstance(n_with, int):
            line = f"{fmt_int(n_with)} customers have offers in actions.parquet"
            n_without = info.get("customers_without_actions")
            if isinstance(n_without, int) and n_without > 0:
                line += f"; {fmt_int(n_without)} customers may not be contacted (no marketing consent) and have none"
            notes.append(line + ".")
        skipped = info.get("skipped") if isinstance(info.get("skipped"), dict) else {}
        if skipped:
            notes.append("Not offered (no model): " + "; ".join(f"{c}: {str(w).rstrip('.')}" for c, w in
                                                               skipped.items()) + ".")  # fmt: skip
        how = (f"each customer gets the categories they are most likely to buy in the next {horizon} days, with the "
               "channel, weekday and hour they buy most (actions.parquet, one row per customer who may be "
               "contacted). For each segment, this table shows the categories that are the customers' best "
               "offer, the most valuable first: how many customers that is, their average chance of buying it, and "
               "the spend expected from them (chance x the customer's usual order value in that category, added "
               "up). Use it to pick "
               "what to promote to each segment; the file has the list per customer.")  # fmt: skip
        note = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
        return self.section("actions", title, how, table + note)

    def rfm(self):
        d = self.d
        if not d.rfm:
            msg = ("This run's outputs hold no RFM grid. The pipeline can write <code>rfm.parquet</code> "
                   "(columns <code>r</code>, <code>f</code>, <code>customers</code>, <code>spend</code>: one row per "
                   "recency x frequency score cell) and this section will show it.")  # fmt: skip
            return self.section("rfm", SECTIONS[4][1], "", self.missing(msg), False)
        chart = self.chart("chart-rfm", self.c.rfm_chart(d), "Customers per recency and frequency score")
        how = ("customers are scored 1–5 on how recently (R) and how often (F) they bought; 5 is best. Top right: "
               "recent, frequent buyers (champions); bottom right: recent first-time buyers; top left: frequent "
               "buyers who have not come back (at risk); bottom left: lapsed one-off buyers. Each cell shows its "
               "customers and their share of all customers.")  # fmt: skip
        return self.section("rfm", SECTIONS[4][1], how, chart)

    def effects(self):
        """Campaign effects (effects.parquet): per campaign, the headline, the caveats and the uplift chart."""
        d = self.d
        if not d.effects:
            self.present["effects"] = False
            return ""
        info = d.effects_info or {}
        names = {s["id"]: s["label"] or f"Segment {s['id']}" for s in d.segments}
        # a previous segment is named by its own run's label (ids are stable, labels may change)
        before = {**names, **{k: v for k, v in (d.previous_names or {}).items() if v}}
        blocks = []
        for c in info.get("campaigns", []) or [{"campaign": r["campaign"]} for r in d.effects[:1]]:
            rows = [r for r in d.effects if r["campaign"] == c["campaign"]]
            figs = []
            for h in c.get("headline", []):
                top = h.get("into_top_segment")
                if top and top.get("low") is not None:
                    sure = top["low"] > 0 or top["high"] < 0
                    figs.append((f"Moved into {names.get(top['segment'], top['segment'])} (the most valuable segment)",
                                 f"{top['uplift'] * 100:+.1f} pts",
                                 f"treated vs {c.get('reference', 'control')}, 95% interval "
                                 f"{top['low'] * 100:+.1f} to {top['high'] * 100:+.1f}", "good" if sure and
                                 top["uplift"] > 0 else "bad" if sure else "fair"))  # fmt: skip
                for key, what in (("spend_gained_per_treated", "Spend per treated customer"),
                                  ("clv_gained_per_treated", "Predicted value per treated customer")):  # fmt: skip
                    v = h.get(key)
                    if v and v.get("low") is not None:
                        sure = v["low"] > 0 or v["high"] < 0
                        figs.append((what, f"{v['value']:+,.2f}", f"95% interval {v['low']:+,.2f} to "
                                     f"{v['high']:+,.2f}", "good" if sure and v["value"] > 0 else
                                     "bad" if sure else "fair"))  # fmt: skip
            fig_html = "".join(f'<div class="fig"><div class="k">{esc(k)}</div><div class="v {cls}">{esc(v)}</div>'
                               f'<div class="s">{esc(s_)}</div></div>' for k, v, s_, cls in figs)  # fmt: skip
            caveats = []
            if c.get("observational"):
                caveats.append("There is no control group: the treated customers are compared with the customers of "
                               "the same segment the campaign did not reach. Who was targeted may differ from who "
                               "was not, so read these as associations, not effects.")  # fmt: skip
            srm = c.get("sample_ratio") or {}
            if srm.get("flagged"):
                caveats.append(f"Sample ratio mismatch: the control group is {srm['observed_reference_share']:.1%} of "
                               f"the customers analysed against {srm['expected_reference_share']:.1%} in the "
                               "treatment file (p < 0.001). Customers were lost or mixed up between the groups: "
                               "fix that before trusting any figure here.")  # fmt: skip
            ids = c.get("ids") or {}
            if ids.get("not_found"):
                caveats.append(f"{ids['not_found']:,} of the {ids['listed']:,} customers in the treatment file are "
                               "in neither run (or have no consent) and are left out.")  # fmt: skip
            moved = sorted((r for r in rows if r["measure"] in ("moved", "stayed", "gone") and
                            r["difference"] is not None and r["low"] is not None and
                            (r["low"] > 0 or r["high"] < 0)), key=lambda r: -abs(r["difference"]))[:6]  # fmt: skip
            lines = []
            for r in moved:
                frm = before.get(r["previous_segment"], r["previous_segment"])
                what = ("stayed" if r["measure"] == "stayed" else "left (gone)" if r["measure"] == "gone" else
                        f"moved to {names.get(r['to_segment'], r['to_segment'])}")  # fmt: skip
                lines.append(f"<li>{esc(frm)}: {esc(what)} {r['difference'] * 100:+.1f} pts "
                             f"({r['value']:.1%} treated vs {r['reference_value']:.1%}; 95% interval "
                             f"{r['low'] * 100:+.1f} to {r['high'] * 100:+.1f})</li>")  # fmt: skip
            biggest = ("<p>Where the treated customers moved differently (intervals that exclude no difference):</p>"
                       f"<ul>{''.join(lines)}</ul>") if lines else \
                "<p>No move differs between the groups beyond chance (every 95% interval holds 0).</p>"  # fmt: skip
            chart = self.chart(f"chart-effects-{len(blocks)}", self.c.effects_chart(rows, before),
                               f"Uplift in staying in each segment for campaign {c['campaign']}")  # fmt: skip
            cav = "".join(f'<p class="warn">{esc(x)}</p>' for x in caveats)
            groups = ", ".join(f"{g}: {self.count(n)}" for g, n in (c.get("groups") or {}).items())
            blocks.append(f"<h3>{esc(c['campaign'])}</h3><p>Customers of the previous run per group: {groups}.</p>"
                          f'<div class="figures">{fig_html}</div>{cav}{biggest}{chart}')  # fmt: skip
        how = ("each campaign's treated customers against the control group (or the untreated customers of the same "
               "segment), per segment of the previous run. A difference is in percentage points of the segment's "
               "customers; the 95% interval comes from a bootstrap. With many cells, about one interval in twenty "
               "excludes 0 by chance alone: trust large, consistent differences. Cells of fewer customers than the "
               "privacy minimum are not shown.")  # fmt: skip
        self.present["effects"] = True
        return self.section("effects", dict(SECTIONS)["effects"], how, "".join(blocks))

    def migration(self):
        d = self.d
        t = d.tracking or {}
        if not d.migration and not t:
            msg = ("This run was not compared with a previous run, so there is no migration.parquet. Track a run "
                   "against the previous output directory to see who moved between segments.")  # fmt: skip
            return self.section("migration", SECTIONS[5][1], "", self.missing(msg), False)
        figs = []
        stayed = t.get("stayed_share")
        if isinstance(stayed, (int, float)):
            cls = "good" if stayed >= 0.8 else "fair" if stayed >= 0.6 else "bad"
            figs.append(("Stayed in the same segment", fmt_pct(stayed), "of customers present in both runs", cls))
        ari = _first_number(t, ("adjusted_rand_common", "adjusted_rand", "ari"))
        if ari is not None:
            cls, word = (("good", "very similar") if ari >= 0.8 else ("fair", "fairly similar") if ari >= 0.5
                         else ("bad", "different"))  # fmt: skip
            figs.append(("Agreement between the runs", f"{ari:.2f}",
                         f"adjusted Rand index: {word} groupings (1 = same)", cls))  # fmt: skip
        psi = _first_number(t, ("segment_psi", "psi"))
        if psi is not None:
            cls, word = _psi_words(psi)
            figs.append(("Change in segment sizes", f"{psi:.3f}", f"stability index (PSI): {word}", cls))
        fpsi = t.get("feature_psi") if isinstance(t.get("feature_psi"), dict) else {}
        drift = sorted(((v, f) for f, v in fpsi.items() if isinstance(v, (int, float)) and not grows_with_time(f)),
                       reverse=True)[:3]  # fmt: skip
        if drift:
            v = drift[0][0]
            cls, word = _psi_words(v)
            names = ", ".join(f"{feature_name(f)} ({x:.2f})" for x, f in drift)
            figs.append(("Biggest change in a feature", f"{v:.2f}", f"PSI, {word}: {names}", cls))
        c = t.get("customers") if isinstance(t.get("customers"), dict) else {}
        for key, label in (("new", "New since the previous run"), ("gone", "Left since the previous run")):
            if key in c and (isinstance(c[key], int) or c[key] is None):
                figs.append((label, self.count(c[key]), "customers in one run only", ""))
        fig_html = "".join(f'<div class="fig"><div class="k">{esc(k)}</div><div class="v {cls}">{v}</div>'
                           f'<div class="s">{esc(s)}</div></div>' for k, v, s, cls in figs)  # fmt: skip
        fig_html = f'<div class="figures">{fig_html}</div>' if figs else ""
        chart = ""
        if d.migration:
            names = {s["id"]: self.c.seg_name(s, width=22, max_lines=4) for s in d.segments if not s["hidden"]}
            prev = None if d.previous_names is None else {
                i: self.c.seg_name({"id": i, "label": lab}, width=22, max_lines=4)
                for i, lab in d.previous_names.items()}  # each run's own labels for its side
            chart = self.chart("chart-migration", self.c.migration_chart(d, names, prev),
                               "Heatmap of customers moving from each previous segment to each segment "
                               "now")  # fmt: skip
        notes = []
        if d.moves_rows is not None:
            notes.append(f"moves.parquet lists each customer's move ({fmt_int(d.moves_rows)} rows).")
        prev = t.get("previous")
        if prev:
            notes.append(f"Previous run: {prev}.")
        for n in t.get("notes") or []:
            notes.append(str(n))
        how = ("each row is a segment of the previous run and shows where its customers are now; the outlined cells "
               "are customers who stayed. Rows carry the previous run's labels, columns this run's. <i>New since the "
               "previous run</i> were not in the previous run; <i>Left the base</i> are customers of the previous run "
               "missing from this one. Segment ids are matched between runs, so the same id means the same kind of "
               "customer.")  # fmt: skip
        note = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
        return self.section("migration", SECTIONS[5][1], how, fig_html + chart + note)

    def run_facts(self):
        d = self.d
        run = d.run
        rows = []

        def add(k, v):
            rows.append(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>")

        add("Data as of", esc(_date(run.get("as_of"), True)))
        add("Input", esc(run.get("input", "–")))
        add("Customers profiled", fmt_int(run.get("customers")))
        if "customers_assigned" in run:
            add("Customers assigned to a segment", fmt_int(run.get("customers_assigned")))
        if run.get("customers_without_purchase"):
            add("Customers without a purchase (web or CRM only)", fmt_int(run["customers_without_purchase"]))
        read = run.get("rows_read") if isinstance(run.get("rows_read"), dict) else {}
        if read:
            add("Rows read", "<br>".join(f"{esc(k)}: {fmt_int(v)}" for k, v in read.items()))
        dropped = run.get("rows_dropped") if isinstance(run.get("rows_dropped"), dict) else {}
        total_read = sum(v for v in read.values() if isinstance(v, (int, float))) or None
        if dropped:
            tot = sum(v for v in dropped.values() if isinstance(v, (int, float)))
            share = f" ({fmt_pct(tot / total_read, 2)} of rows read)" if total_read else ""
            lines = "<br>".join(f"{esc(k)}: {fmt_int(v)}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1]))
            add("Rows dropped, and why", f"<b>{fmt_int(tot)}</b>{share}<br>{lines}")
        else:
            add("Rows dropped", "none: every row had a customer id and a time")
        excl = run.get("rows_excluded_after_as_of")
        if isinstance(excl, dict) and any(excl.values()):
            add("Rows after the as-of date (not used)", "<br>".join(f"{esc(k)}: {fmt_int(v)}" for k, v in excl.items()))
        if run.get("returns"):
            add("Returns (negative amounts)", fmt_int(run["returns"]))
        folded = run.get("folded_into_other")
        if isinstance(folded, dict) and any(folded.values()):
            add("Rows whose category or channel was folded into 'other'",
                "<br>".join(f"{esc(k)}: {fmt_int(v)}" for k, v in folded.items()))  # fmt: skip
        if run.get("orders_from"):
            add("Orders counted from", esc("order ids" if run["orders_from"] != "rows" else "rows (one order per row)"))
        feats = run.get("features")
        if isinstance(feats, list):
            add("Segments / features used", f"{fmt_int(run.get('segments', len(d.segments)))} segments from "
                f"{len(feats)} features")  # fmt: skip
        eng = run.get("engine")
        if isinstance(eng, dict):
            bits = [str(eng.get("engine", ""))] if eng.get("engine") else []
            if eng.get("n_threads"):
                bits.append(f"{eng['n_threads']} threads")
            for k, v in eng.items():
                if k in ("engine", "n_threads") or v is None:
                    continue
                if k == "memory" and isinstance(v, dict):
                    bits.append("freed memory kept for reuse" if v.get("keep_freed_memory") else
                                "allocator defaults")  # fmt: skip
                elif isinstance(v, bool):
                    bits.append(k.replace("_", " ") if v else f"not {k.replace('_', ' ')}")
                elif isinstance(v, (int, float, str)):
                    bits.append(f"{k.replace('_', ' ')} {v}")
            add("Engine", esc(", ".join(bits)))
        made = _date(run.get("created"), True)
        add("segone version / run made", esc(f"{run.get('segone_version', '–')} · {made}"))
        if d.privacy:
            add("Privacy", "<br>".join(esc(b) for b in privacy_facts(d.privacy, d.k)) or "–")
        a_read, a_total = d.sample.get("assignments", (0, None))
        p_read, p_total = d.sample.get("personas", (0, None))
        if a_total or p_total:
            add("Read for this report",
                esc(f"{fmt_int(a_read)} of {fmt_int(a_total)} rows of assignments.parquet and {fmt_int(p_read)} of "
                    f"{fmt_int(p_total)} rows of personas.parquet (the first rows only); every other figure comes "
                    "from segments.parquet, run.json and the other small outputs."))  # fmt: skip
        facts = f'<table class="kv" id="run-facts-table"><tbody>{"".join(rows)}</tbody></table>'
        timings = run.get("timings_s") if isinstance(run.get("timings_s"), dict) else {}
        tim = ""
        if timings:
            stages = [(k, v) for k, v in timings.items() if k != "total" and isinstance(v, (int, float))]
            top = max([v for _, v in stages] or [1]) or 1
            trs = "".join(f'<tr><td>{esc(k)}</td><td class="n">{fmt_seconds(v)}</td><td><span class="tbar" '
                          f'style="width:{max(2, round(220 * v / top))}px"></span></td></tr>'
                          for k, v in stages)  # fmt: skip
            if isinstance(timings.get("total"), (int, float)):
                total = fmt_seconds(timings["total"])
                trs += f'<tr><td><b>total</b></td><td class="n"><b>{total}</b></td><td></td></tr>'
            tim = ('<h3>Time per stage</h3><table id="timings-table" style="max-width:560px"><thead><tr><th>Stage</th>'
                   f'<th class="n">Time</th><th></th></tr></thead><tbody>{trs}</tbody></table>')  # fmt: skip
        notes = "".join(f'<p class="note">{esc(n)}</p>' for n in d.notes)
        how = "what went into this run, what was left out and why, and how long each stage took."
        return self.section("run-facts", dict(SECTIONS)["run-facts"], how, facts + tim + notes)

    # ------------------------------------------------------------- page
    def render(self, bundle_js):
        body = [self.overview(), self.profiles(), self.personas(), self.value(), self.actions(), self.rfm(),
                self.migration(), self.effects(), self.run_facts()]  # fmt: skip
        head = self.header() + self.kpis() + self.toc() + self.findings()
        footer = ('<footer>Made by segone from the outputs in '
                  f'<code>{esc(self.d.out_dir)}</code>. This file works offline: it loads nothing from the network.'
                  "</footer>")  # fmt: skip
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)} · segone report</title>"
            f"<style>{CSS}</style>"
            f"<script>{PROBE_JS}</script>"
            f'<script type="module">{script_text(bundle_js)}</script>'
            "</head><body><div class=\"page\">" + head + "".join(body) + footer + "</div>"
            f'<script type="module">{script_text(EMBED_JS % script_json(self.specs))}</script>'
            "</body></html>\n"
        )
