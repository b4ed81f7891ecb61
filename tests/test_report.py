"""The HTML report: structure, offline, privacy, bounded reads, degraded inputs, and a real browser.

The browser test renders the report of a small synthetic run in headless
Chromium (skipped, with the reason, where no Chromium is installed), reads the
DOM after the scripts ran, and keeps a screenshot under pytest's tmp dir.
"""

import html.parser
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import segone
from segone.errors import ModelFormatError, SegoneError

from segone.report import read_outputs, rfm_grid, write_report
from segone.report._read import read_head


def _have_charts():
    try:
        import altair  # noqa: F401
        import vl_convert  # noqa: F401
    except ImportError:
        return False
    return True


# tests that draw charts need the optional extra; reading the outputs and the rest do not
needs_charts = pytest.mark.skipif(not _have_charts(), reason="needs the optional extra: pip install segone[report]")

K = 4
SECTION_IDS = ["overview", "profiles", "personas", "value", "actions", "rfm", "migration", "run-facts"]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def _strict_charts(tmp_path_factory):
    """Validate every chart spec against the Vega-Lite schema; keep the Vega bundle cache in a tmp dir."""
    from segone.report import _charts

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_charts, "VALIDATE", True)
        mp.setenv("SEGONE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A `segone run` output of 3,000 synthetic customers, with the next best actions (opt-in)."""
    d = segone.synth.generate(3000, seed=11)
    out = tmp_path_factory.mktemp("report") / "out"
    segone.run(d.transactions, out, K, events=d.events, attributes=d.customers, random_state=0, actions=True)
    return out


VALUE_COLUMNS = ("expected_purchases", "p_alive", "expected_order_value", "clv")


def _drop(table, pred):
    return table.drop_columns([c for c in table.column_names if pred(c)])


def _strip(src, dst):
    """Copy an output without any optional part: no value columns, RFM grid, tracking or privacy."""
    shutil.copytree(src, dst)
    for name in ("rfm.parquet", "migration.parquet", "moves.parquet", "tracking.json", "report.html",
                 "actions.parquet"):  # fmt: skip
        if (dst / name).exists():
            os.remove(dst / name)
    asg = pq.read_table(dst / "assignments.parquet")
    pq.write_table(_drop(asg, lambda c: c in VALUE_COLUMNS), dst / "assignments.parquet")
    segs = pq.read_table(dst / "segments.parquet")
    pq.write_table(_drop(segs, lambda c: any(v in c for v in VALUE_COLUMNS)), dst / "segments.parquet")
    run = json.loads((dst / "run.json").read_text())
    for key in ("clv", "tracking", "privacy", "rfm", "rfm_grid", "actions"):
        run.pop(key, None)
    (dst / "run.json").write_text(json.dumps(run))
    return dst


@pytest.fixture(scope="module")
def minimal_dir(run_dir, tmp_path_factory):
    return _strip(run_dir, tmp_path_factory.mktemp("report") / "minimal")


def _enrich(src, dst, *, k_min=None, hashed=False):
    """Copy an output and add what other stages write: value columns, RFM grid, migration, tracking, privacy."""
    _strip(src, dst)
    asg = pq.read_table(dst / "assignments.parquet")
    n = asg.num_rows
    rng = np.random.default_rng(3)
    seg = asg.column("segment").to_numpy()
    ep = rng.gamma(2.0, 1.0 + seg, n)
    asg = asg.append_column("expected_purchases", pa.array(ep))
    asg = asg.append_column("p_alive", pa.array(rng.uniform(0.05, 1.0, n)))
    asg = asg.append_column("clv", pa.array(ep * rng.gamma(3.0, 20.0, n)))
    pq.write_table(asg, dst / "assignments.parquet")

    scores = pa.table({"r_score": rng.integers(1, 6, n).astype(np.int8),
                       "f_score": rng.integers(1, 6, n).astype(np.int8)})  # fmt: skip
    grid = rfm_grid(scores, spend=rng.gamma(2.0, 50.0, n), segments=seg)
    pq.write_table(grid, dst / "rfm.parquet")

    prev = seg.copy()
    moved = rng.random(n) < 0.1
    prev[moved] = (seg[moved] + 1) % K
    frm, to, cnt = [], [], []
    for a in range(K):
        for b in range(K):
            c = int(((prev == a) & (seg == b)).sum())
            if c:
                frm.append(a), to.append(b), cnt.append(c)
    frm.append(None), to.append(0), cnt.append(7)  # new customers
    frm.append(1), to.append(None), cnt.append(120)  # gone
    pq.write_table(pa.table({
        "from_segment": pa.array(frm, pa.int32()), "to_segment": pa.array(to, pa.int32()),
        "customers": pa.array(cnt, pa.int64()), "spend": pa.array([float(c) * 10 for c in cnt]),
    }), dst / "migration.parquet")  # fmt: skip
    pq.write_table(pa.table({"customer_id": asg.column("customer_id"), "previous_segment": prev, "segment": seg}),
                   dst / "moves.parquet")  # fmt: skip

    run = json.loads((dst / "run.json").read_text())
    counts = {"previous": n + 113, "now": n, "common": n - 7, "new": 7, "gone": 120}
    run["tracking"] = {"previous": "/runs/last-month", "stayed_share": float((prev == seg).mean()),
                       "adjusted_rand_common": 0.81, "segment_psi": 0.004, "customers": counts}  # fmt: skip
    run["clv"] = {"model": "BG/NBD + Gamma-Gamma", "horizon_months": 12, "discount_rate": 0.01}
    run["actions"] = json.loads((src / "run.json").read_text())["actions"]  # the run's own next best actions
    if k_min is not None:
        run["privacy"] = {"min_segment_size": k_min, "hashed_ids": hashed}
    (dst / "run.json").write_text(json.dumps(run))
    return dst


@pytest.fixture(scope="module")
def full_dir(run_dir, tmp_path_factory):
    return _enrich(run_dir, tmp_path_factory.mktemp("report") / "full")


# ------------------------------------------------------------------ HTML helpers
class _Page(html.parser.HTMLParser):
    """Sections, tables, attributes with URLs, style text and, for each chart container, whether it holds an svg."""

    VOID = frozenset(("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                      "wbr"))  # fmt: skip

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []
        self.sections = {}
        self.urls = []
        self.styles = []
        self.scripts_src = []
        self.links = []
        self.charts = {}
        self.rows = {}
        self.root_attrs = {}
        self._in_style = False
        self.text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.root_attrs = a
        for k in ("src", "href", "xlink:href", "action", "data", "poster"):
            if a.get(k):
                self.urls.append((tag, k, a[k]))
        if a.get("style"):
            self.styles.append(a["style"])
        if tag == "script" and a.get("src"):
            self.scripts_src.append(a["src"])
        if tag == "link":
            self.links.append(a)
        if tag == "section" and a.get("id"):
            self.sections[a["id"]] = a.get("data-present")
        if tag == "div" and "chart" in (a.get("class") or "").split() and a.get("id"):
            self.charts.setdefault(a["id"], False)
        if tag in ("svg", "canvas"):
            for t, attrs_ in self.stack:
                if t == "div" and "chart" in (attrs_.get("class") or "").split() and attrs_.get("id"):
                    self.charts[attrs_["id"]] = True
        if tag == "tr":
            for t, attrs_ in reversed(self.stack):
                if t == "table" and attrs_.get("id"):
                    self.rows.setdefault(attrs_["id"], []).append(a)
                    break
        self._in_style = tag == "style"
        if tag not in self.VOID:
            self.stack.append((tag, a))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID and self.stack and self.stack[-1][0] == tag:
            self.stack.pop()

    def handle_endtag(self, tag):
        self._in_style = False
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)
        elif not (self.stack and self.stack[-1][0] == "script"):
            self.text.append(data)


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def parse(text):
    p = _Page()
    p.feed(text)
    p.close()
    return p


EXTERNAL = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)


def assert_offline(page):
    """Nothing the page would fetch: no URL attributes to other hosts, no stylesheet links, no @import/url(http)."""
    external = [(t, k, v) for t, k, v in page.urls if EXTERNAL.match(v)]
    assert not external, external
    assert not page.scripts_src, page.scripts_src
    assert not [link for link in page.links if "stylesheet" in (link.get("rel") or "")]
    for css in page.styles:
        assert "@import" not in css
        for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", css):
            assert not EXTERNAL.match(url), url


def seg_rows(page, table="segment-table"):
    return [r for r in page.rows.get(table, []) if r.get("data-segment") is not None]


def chart_specs(text):
    m = re.search(r"const specs = (\{.*?\});\nconst opts", text, re.DOTALL)
    assert m, "chart specs not found"
    return json.loads(m.group(1))


def spec_values(spec):
    """Every inline data row of a Vega-Lite spec (any nesting)."""
    out = []
    if isinstance(spec, dict):
        data = spec.get("data")
        if isinstance(data, dict) and isinstance(data.get("values"), list):
            out += data["values"]
        for ds in (spec.get("datasets") or {}).values():
            out += ds
        for key, v in spec.items():
            if key not in ("data", "datasets"):
                out += spec_values(v)
    elif isinstance(spec, list):
        for v in spec:
            out += spec_values(v)
    return out


# ------------------------------------------------------------------ structure
@needs_charts
def test_minimal_outputs_report_structure(minimal_dir, tmp_path):
    run_dir = minimal_dir
    path = write_report(run_dir, tmp_path / "r.html")
    assert path == str(tmp_path / "r.html")
    text = read_text(path)
    page = parse(text)
    assert list(page.sections) == ["findings", *SECTION_IDS]
    # present in every run; absent optional outputs degrade to a note
    assert [page.sections[s] for s in SECTION_IDS] == ["yes", "yes", "yes", "no", "no", "no", "no", "yes"]
    segs = pq.read_table(run_dir / "segments.parquet")
    assert len(seg_rows(page)) == segs.num_rows == K
    assert_offline(page)
    body = " ".join(page.text)
    for label in segs.column("label").to_pylist():
        assert label in body
    assert "How to read this" in body
    assert "rfm.parquet" in body  # the RFM section says what would fill it
    specs = chart_specs(text)
    assert set(specs) == {"chart-overview", "chart-profiles"}
    assert set(page.charts) == set(specs)
    # thousands separators and percentages
    sizes = segs.column("size").to_pylist()
    assert f"{max(sizes):,}" in body and "%" in body


@needs_charts
def test_report_of_a_pipeline_run_shows_what_its_outputs_hold(run_dir, tmp_path):
    text = read_text(write_report(run_dir, tmp_path / "r.html"))
    page = parse(text)
    assert_offline(page)
    asg = pq.read_schema(run_dir / "assignments.parquet").names
    segs = pq.read_schema(run_dir / "segments.parquet").names
    expect = {"overview": "yes", "profiles": "yes", "personas": "yes", "run-facts": "yes",
              "value": "yes" if "clv" in asg or "mean_clv" in segs else "no",
              "rfm": "yes" if (run_dir / "rfm.parquet").exists() else "no",
              "migration": "yes" if (run_dir / "migration.parquet").exists() else "no",
              "actions": "yes" if (run_dir / "actions.parquet").exists() else "no"}  # fmt: skip
    assert {s: page.sections[s] for s in SECTION_IDS} == expect
    assert len(seg_rows(page)) == K


@needs_charts
def test_default_path_is_in_the_output_directory(run_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run_dir, out)
    path = write_report(out)
    assert path == str(out / "report.html") and os.path.getsize(path) > 100_000
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


@needs_charts
def test_full_outputs_fill_every_section(full_dir, tmp_path):
    text = read_text(write_report(full_dir, tmp_path / "r.html"))
    page = parse(text)
    assert all(page.sections[s] == "yes" for s in SECTION_IDS), page.sections
    assert_offline(page)
    specs = chart_specs(text)
    assert set(specs) == {"chart-overview", "chart-profiles", "chart-value", "chart-rfm", "chart-migration"}
    assert len(seg_rows(page, "value-table")) == K
    body = " ".join(page.text)
    assert "Stayed in the same segment" in body and "New since the previous run" in body
    assert "moves.parquet" in body
    # the RFM grid covers 5 x 5 cells; the migration chart has a row for new customers and a column for those gone
    rfm = spec_values(specs["chart-rfm"])
    assert len(rfm) == 25 and sum(r["customers"] for r in rfm) == 3000
    mig = spec_values(specs["chart-migration"])
    assert any(r["from"] == "New since the previous run" for r in mig) and any(r["to"] == "Left the base" for r in mig)
    # every lift column of the segment table is in the heatmap
    lifts = [c for c in pq.read_table(full_dir / "segments.parquet").column_names if c.startswith("lift_")]
    heat = spec_values(specs["chart-profiles"])
    assert len({r["feature"] for r in heat if "feature" in r}) >= len(lifts) - 2  # all-n/a features are left out
    # persona cards: customers from the outputs, per segment
    assert len([s for s in page.styles if "border-top-color" in s]) == K


@needs_charts
def test_report_is_small(full_dir, tmp_path):
    path = write_report(full_dir, tmp_path / "r.html")
    assert os.path.getsize(path) < 3_000_000


# ------------------------------------------------------------------ privacy
@needs_charts
def test_privacy_minimum_hides_small_cells(full_dir, tmp_path):
    sizes = pq.read_table(full_dir / "segments.parquet").column("size").to_pylist()
    k_min = min(sizes) + 1  # the smallest segment falls below the minimum
    out = tmp_path / "private"
    shutil.copytree(full_dir, out)
    run = json.loads((out / "run.json").read_text())
    run["privacy"] = {"min_segment_size": k_min, "hashed_ids": True}
    (out / "run.json").write_text(json.dumps(run))
    text = read_text(write_report(out, tmp_path / "r.html"))
    page = parse(text)
    rows = seg_rows(page)
    assert len(rows) == K and sum("hidden-row" in (r.get("class") or "") for r in rows) == 1
    body = " ".join(page.text)
    assert f"fewer than {k_min:,} customers" in body
    assert f"{min(sizes):,}" not in body  # the small segment's size is not printed
    assert "pseudonyms" in body
    specs = chart_specs(text)
    for r in spec_values(specs["chart-rfm"]):
        assert r["hidden"] or r["customers"] == 0 or r["customers"] >= k_min
    for r in spec_values(specs["chart-migration"]):
        n = r["n"].replace(",", "")
        assert r["hidden"] or not n.isdigit() or int(n) == 0 or int(n) >= k_min
    data = read_outputs(out)
    assert data.k == k_min
    assert all(e.get("sample_n", k_min) >= k_min for e in data.value["segments"].values())
    smallest = next(s["id"] for s in data.segments if s["size"] == min(sizes))
    assert smallest not in data.personas and smallest not in data.value["segments"]


@needs_charts
def test_cells_withheld_by_the_run_show_as_hidden_never_as_numbers(full_dir, tmp_path):
    """Outputs already suppressed by segone.privacy: null counts (small, or complementary) and null mix shares."""
    out = tmp_path / "suppressed"
    shutil.copytree(full_dir, out)
    mig = pq.read_table(out / "migration.parquet")
    counts = mig.column("customers").to_numpy()
    big, small = int(np.argmax(counts)), int(np.argmin(counts))  # a complementary suppression hides a big cell too
    null = np.zeros(mig.num_rows, bool)
    null[[small, big]] = True
    mig = mig.set_column(mig.column_names.index("customers"), "customers",
                         pa.array(mig.column("customers").to_numpy(), mask=null))  # fmt: skip
    pq.write_table(mig.append_column("suppressed", pa.array(null)), out / "migration.parquet")
    rfm = pq.read_table(out / "rfm.parquet")
    rmask = np.zeros(rfm.num_rows, bool)
    rmask[:2] = True
    rfm = rfm.set_column(rfm.column_names.index("customers"), "customers",
                         pa.array(rfm.column("customers").to_numpy(), mask=rmask))  # fmt: skip
    pq.write_table(rfm, out / "rfm.parquet")
    segs = pq.read_table(out / "segments.parquet")
    mix = next(c for c in segs.column_names if "=" in c)
    segs = segs.set_column(segs.column_names.index(mix), mix, pa.nulls(segs.num_rows, pa.float64()))
    pq.write_table(segs, out / "segments.parquet")
    run = json.loads((out / "run.json").read_text())
    run["privacy"] = {"min_segment_size": 5, "pseudonymous_ids": {"enabled": True, "algorithm": "HMAC-SHA256"},
                      "cells_suppressed": {"migration": 2, "rfm": 2}}  # fmt: skip
    run["tracking"]["customers"]["new"] = None  # suppressed count
    (out / "run.json").write_text(json.dumps(run))
    text = read_text(write_report(out, tmp_path / "r.html"))
    specs = chart_specs(text)
    mig_rows = spec_values(specs["chart-migration"])
    hidden = [r for r in mig_rows if r["hidden"]]
    assert len(hidden) == 2 and all(r["text"] == "hidden" and not r["sub"] for r in hidden)
    biggest = f"{int(counts[big]):,}"
    assert biggest not in json.dumps(specs["chart-migration"])
    assert sum(r["hidden"] for r in spec_values(specs["chart-rfm"])) >= 1
    body = " ".join(parse(text).text)
    assert "pseudonyms" in body and "Cells suppressed: migration: 2, rfm: 2." in body
    assert body.count("hidden") >= segs.num_rows  # the nulled mix cells, and the suppressed new-customer count


@needs_charts
def test_pseudonymous_ids_are_said_to_be_pseudonyms(full_dir, tmp_path):
    out = tmp_path / "pseudo"
    shutil.copytree(full_dir, out)
    per = pq.read_table(out / "personas.parquet")
    ids = pa.array([f"{i:032x}" for i in per.column("customer_id").to_pylist()])
    field = pa.field("customer_id", pa.string(), metadata={b"segone.pseudonym": b"HMAC-SHA256"})
    per = per.set_column(0, field, ids)
    pq.write_table(per, out / "personas.parquet")
    text = read_text(write_report(out, tmp_path / "r.html"))
    body = " ".join(parse(text).text)
    assert "pseudonyms" in body
    assert any(f"customer {x}" in body for x in ids.to_pylist())  # shown as the outputs hold them


# ------------------------------------------------------------------ degraded and odd inputs
def test_missing_dependency_says_how_to_install(minimal_dir, tmp_path, monkeypatch):
    run_dir = minimal_dir
    monkeypatch.setitem(sys.modules, "altair", None)
    with pytest.raises(SegoneError, match=r"pip install .*segone\[report\]"):
        write_report(run_dir, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


@needs_charts
def test_not_an_output_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="not a directory"):
        write_report(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "run.json").write_text("{}")
    with pytest.raises(ModelFormatError, match="segments.parquet"):
        write_report(tmp_path / "half")


@needs_charts
def test_column_name_variants_and_missing_per_customer_files(full_dir, tmp_path):
    out = tmp_path / "variants"
    shutil.copytree(full_dir, out)
    mig = pq.read_table(out / "migration.parquet")
    mig = mig.drop_columns(["spend"]).rename_columns(["previous_segment", "segment", "count"])
    pq.write_table(mig, out / "migration.parquet")
    rfm = pq.read_table(out / "rfm.parquet").rename_columns(["segment", "r_score", "f_score", "count", "spend"])
    pq.write_table(rfm, out / "rfm.parquet")
    os.remove(out / "personas.parquet")
    os.remove(out / "moves.parquet")
    run = json.loads((out / "run.json").read_text())
    tracking = run.pop("tracking")
    (out / "tracking.json").write_text(json.dumps(tracking))  # written by compare_outputs
    (out / "run.json").write_text(json.dumps(run))
    data = read_outputs(out)
    assert data.migration and sum(m["customers"] for m in data.migration) == mig.column("count").to_numpy().sum()
    assert all(m["spend"] is None for m in data.migration)
    assert data.rfm and sum(c["customers"] for c in data.rfm) == 3000
    assert data.tracking["stayed_share"] == tracking["stayed_share"]
    assert data.personas == {} and data.moves_rows is None
    page = parse(read_text(write_report(out, tmp_path / "r.html")))
    assert page.sections["personas"] == "no" and page.sections["migration"] == "yes"


@needs_charts
def test_unreadable_optional_output_is_a_note_not_a_failure(full_dir, tmp_path):
    out = tmp_path / "broken"
    shutil.copytree(full_dir, out)
    (out / "migration.parquet").write_bytes(b"not parquet")
    data = read_outputs(out)
    assert data.migration is None and any("migration.parquet" in n for n in data.notes)
    page = parse(read_text(write_report(out, tmp_path / "r.html")))
    assert page.sections["migration"] == "yes"  # the tracking figures of run.json are still shown


@needs_charts
def test_value_from_segment_summaries_without_per_customer_columns(minimal_dir, tmp_path):
    out = tmp_path / "segvalue"
    shutil.copytree(minimal_dir, out)
    segs = pq.read_table(out / "segments.parquet")
    n = segs.num_rows
    for name, scale in (("mean_clv", 100.0), ("median_clv", 80.0), ("clv_p25", 40.0), ("clv_p75", 150.0)):
        segs = segs.append_column(name, pa.array([scale * (i + 1) for i in range(n)]))
    pq.write_table(segs, out / "segments.parquet")
    data = read_outputs(out)
    e = data.value["segments"][segs.column("segment")[0].as_py()]
    assert e["mean"] == 100.0 and e["q50"] == 80.0 and e["q25"] == 40.0 and e["q75"] == 150.0
    assert not data.value["from_sample"]
    shares = [x["value_share"] for x in data.value["segments"].values()]
    assert abs(sum(shares) - 1.0) < 1e-9
    page = parse(read_text(write_report(out, tmp_path / "r.html")))
    assert page.sections["value"] == "yes"


def test_rfm_grid_table():
    scores = pa.table({"r_score": pa.array([5, 5, 1, 3], pa.int8()), "f_score": pa.array([1, 1, 2, 3], pa.int8())})
    t = rfm_grid(scores, spend=[10.0, 5.0, 1.0, np.nan], segments=[0, 0, 0, 1])
    assert t.column_names == ["segment", "r", "f", "customers", "spend"]
    assert t.to_pylist() == [
        {"segment": 0, "r": 1, "f": 2, "customers": 1, "spend": 1.0},
        {"segment": 0, "r": 5, "f": 1, "customers": 2, "spend": 15.0},
        {"segment": 1, "r": 3, "f": 3, "customers": 1, "spend": 0.0},
    ]
    assert rfm_grid(scores).column("spend").null_count == 3


@needs_charts
def test_vega_bundle_cache_is_rebuilt_when_damaged(tmp_path, monkeypatch):
    from segone import report

    monkeypatch.setenv("SEGONE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(report, "_BUNDLES", {})
    first = report.vega_bundle()
    (cached,) = list(tmp_path.iterdir())
    assert cached.read_text(encoding="utf-8") == first and "window.vegaEmbed" in first
    # URLs in the bundle are XML namespaces, schema ids and links in messages (the editor link is off)
    hosts = set(re.findall(r"https?://([a-zA-Z0-9.-]+)", first))
    assert hosts <= {"www.w3.org", "vega.github.io", "github.com"}, hosts
    cached.write_text("truncated", encoding="utf-8")
    monkeypatch.setattr(report, "_BUNDLES", {})
    assert report.vega_bundle() == first and cached.read_text(encoding="utf-8") == first


# ------------------------------------------------------------------ bounded reads
def test_bounded_read_of_per_customer_files(tmp_path):
    n = 400_000
    t = pa.table({"customer_id": np.arange(n, dtype=np.int64), "segment": (np.arange(n) % 5).astype(np.int32),
                  "clv": np.ones(n)})  # fmt: skip
    pq.write_table(t, tmp_path / "one.parquet", row_group_size=150_000)
    head, total = read_head(str(tmp_path / "one.parquet"), ["segment", "clv", "absent"], 1000)
    assert head.num_rows == 1000 and total == n and head.column_names == ["segment", "clv"]
    # a Dask-style directory of parts: later files are counted from their footers, not read
    d = tmp_path / "parts"
    d.mkdir()
    for i in range(3):
        pq.write_table(t.slice(i * 1000, 1000), d / f"part.{i}.parquet")
    head, total = read_head(str(d), ["customer_id"], 1500)
    assert head.num_rows == 1500 and total == 3000
    assert head.column("customer_id").to_pylist() == list(range(1500))


def test_report_reads_a_bounded_sample(full_dir, tmp_path):
    data = read_outputs(full_dir, max_rows=500, persona_rows=300, personas_per_segment=2)
    assert data.sample["assignments"] == (500, 3000)
    assert data.sample["personas"] == (300, 3000)
    assert all(len(v) <= 2 for v in data.personas.values())
    assert data.value["from_sample"] and data.value["sample_rows"] == 500


# ------------------------------------------------------------------ progress helper
def test_progress_is_a_no_op_off_a_terminal(monkeypatch):
    from segone._progress import NullProgress, progress, stage

    monkeypatch.delenv("SEGONE_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress(total=10, desc="x") as bar:
        assert isinstance(bar, NullProgress)
        bar.update(3)
        bar.set_description("y")
    assert list(progress([1, 2, 3])) == [1, 2, 3]
    with stage("profiling", enabled=True) as s:
        s.update(5)
    assert sys.stderr.getvalue() == ""


def test_progress_draws_on_an_explicit_stream_unless_quiet(monkeypatch):
    from segone._progress import NullProgress, progress, stage

    monkeypatch.delenv("SEGONE_PROGRESS", raising=False)
    buf = io.StringIO()
    with progress(total=4, desc="assign", unit="rows", file=buf) as bar:
        bar.update(2)
        bar.set_description("assign (half)")
        bar.update(2)
    assert "assign (half)" in buf.getvalue()
    assert list(progress(range(3), desc="it", file=io.StringIO())) == [0, 1, 2]
    buf = io.StringIO()
    with stage("profiling customers", file=buf, interval=0.01) as s:
        s.update(7)
        time.sleep(0.08)
    assert "profiling customers" in buf.getvalue()
    assert isinstance(progress(total=1, enabled=False, file=io.StringIO()), NullProgress)
    monkeypatch.setenv("SEGONE_PROGRESS", "0")
    assert isinstance(progress(total=1, file=io.StringIO()), NullProgress)


def test_stage_line_for_a_job_of_several_stages(monkeypatch, capsys):
    from segone._progress import NullProgress, stage_line

    monkeypatch.delenv("SEGONE_PROGRESS", raising=False)
    buf = io.StringIO()
    line = stage_line("profiling customers", file=buf, interval=0.01)
    try:
        line.update(1200)
        time.sleep(0.05)
        line.write("[segone:local] profiles: 1200 customers")
        line.set_description("scoring features")
        time.sleep(0.05)
    finally:
        line.close()
    drawn = buf.getvalue()
    assert "profiling customers (1,200 done)" in drawn and "scoring features" in drawn
    assert "(1,200 done)" not in drawn.split("scoring features", 1)[1]  # a new stage counts afresh
    assert capsys.readouterr().out == "[segone:local] profiles: 1200 customers\n"
    quiet = stage_line("x", enabled=False)
    assert isinstance(quiet, NullProgress)
    quiet.write("log line")  # without progress, log lines print as before
    assert capsys.readouterr().out == "log line\n"


# ------------------------------------------------------------------ in a real browser
def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _browser(exe, args, tmp_path, timeout=120):
    profile = tmp_path / "chromium-profile"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@needs_charts
@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (apt-get install chromium)")
def test_report_in_headless_chromium(full_dir, tmp_path):
    exe = _chromium()
    path = write_report(full_dir, tmp_path / "report.html")
    url = "file://" + os.path.abspath(path)
    res = _browser(exe, ["--dump-dom", url], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    page = parse(res.stdout)
    assert page.root_attrs.get("data-report-errors") == "[]", page.root_attrs.get("data-report-errors")
    specs = chart_specs(read_text(path))
    assert len(specs) == 5
    assert page.root_attrs.get("data-charts-drawn") == str(len(specs))
    assert page.charts == {cid: True for cid in specs}, page.charts  # every chart container holds its svg
    assert "Uncaught" not in res.stderr
    assert_offline(page)  # also after the scripts ran
    shot = tmp_path / "report.png"
    res = _browser(exe, [f"--screenshot={shot}", "--window-size=1400,3000", url], tmp_path)
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 50_000, res.stderr[-2000:]
    print(f"\nreport screenshot: {shot}\nreport: {path}")


# ------------------------------------------------------------- issue 27, the report items
def _tracked_copy(full_dir, dst, prev_labels):
    """A copy of ``full_dir`` whose tracking points at a previous run with its own labels."""
    shutil.copytree(full_dir, dst)
    prev = dst.parent / (dst.name + "-previous")
    prev.mkdir()
    segs = pq.read_table(full_dir / "segments.parquet")
    ids = segs.column("segment").to_pylist()
    pq.write_table(pa.table({"segment": pa.array(ids, pa.int32()),
                             "label": [prev_labels.format(i) for i in ids]}), prev / "segments.parquet")  # fmt: skip
    run = json.loads((dst / "run.json").read_text())
    run["tracking"]["previous"] = str(prev)
    return dst, run


def test_the_movement_matrix_names_each_side_with_its_own_runs_labels(full_dir, tmp_path):
    dst, run = _tracked_copy(full_dir, tmp_path / "tracked", "Then-label {}")
    (dst / "run.json").write_text(json.dumps(run))
    text = read_text(write_report(dst, tmp_path / "r.html"))
    rows = [r for spec in chart_specs(text).values() for r in spec_values(spec) if "from_t" in r]
    assert rows
    froms = {r["from_t"] for r in rows} - {"New since the previous run"}
    tos = {r["to_t"] for r in rows} - {"Left the base"}
    assert froms and all("Then-label" in f for f in froms), froms  # the previous run's own labels
    assert not any("Then-label" in t for t in tos), tos  # this run's labels for the columns


def test_drift_ignores_features_that_grow_with_time_and_the_engine_line_is_plain(full_dir, tmp_path):
    dst = tmp_path / "drift"
    shutil.copytree(full_dir, dst)
    run = json.loads((dst / "run.json").read_text())
    run["tracking"]["feature_psi"] = {"tenure_days": 3.5, "T": 2.9, "spend_total": 0.31, "orders": 0.12}
    run["engine"] = {"engine": "local", "n_threads": 2, "memory": {"keep_freed_memory": False, "glibc": "defaults"}}
    (dst / "run.json").write_text(json.dumps(run))
    text = read_text(write_report(dst, tmp_path / "r.html"))
    m = re.search(r"Biggest change in a feature</div><div class=\"v [a-z]*\">([0-9.]+)</div><div class=\"s\">([^<]*)",
                  text)  # fmt: skip
    assert m and m.group(1) == "0.31" and "since first purchase" not in m.group(2), m and m.groups()
    engine_row = re.search(r"<td>Engine</td><td>([^<]*)</td>", text).group(1)
    assert "{" not in engine_row and "allocator defaults" in engine_row, engine_row


def test_non_buyers_and_a_fallback_k_are_stated(full_dir, tmp_path):
    dst = tmp_path / "fallback"
    shutil.copytree(full_dir, dst)
    run = json.loads((dst / "run.json").read_text())
    run["customers_without_purchase"] = 765
    run["sweep"] = {"fallback": True, "note": "clusters=auto found no clear structure; k=8 (the default) was used."}
    (dst / "run.json").write_text(json.dumps(run))
    text = read_text(write_report(dst, tmp_path / "r.html"))
    header = text[text.index('<header class="top">'): text.index("</header>")]
    assert "not chosen by the data" in header and "no clear structure" in header
    assert "Not bought yet" in text and "765" in text
    assert "New customers" not in text  # tracking's 'new' is 'new since the previous run'


def test_days_since_a_purchase_are_coloured_by_good_and_bad():
    from segone.report._charts import profile_heatmap

    class D:  # the two fields the heatmap reads
        lift_features = ["recency_days", "spend_total"]
        shown_segments = [{"id": 0, "label": "A", "row": {"lift_recency_days": 2.0, "lift_spend_total": 2.0,
                                                           "mean_recency_days": 90.0, "mean_spend_total": 10.0}}]

    if not _have_charts():
        pytest.skip("altair is not installed")
    rows = spec_values(profile_heatmap(D()))
    color = {r["feature"]: r["color"] for r in rows if "color" in r}
    assert color["Days since last purchase"] == -1.0 and color["Total spend"] == 1.0, color
