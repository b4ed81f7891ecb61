"""Read what the report shows from an output directory: small tables whole, big ones bounded.

The report reads only the small outputs whole: ``run.json``,
``segments.parquet`` (one row per segment), and, when present,
``migration.parquet`` (one row per pair of segments), ``rfm.parquet`` (at
most 25 cells per segment) and ``tracking.json``.  Of the per-customer
outputs (``assignments.parquet``, ``personas.parquet``, ``moves.parquet``)
it reads the row counts from the Parquet footers and at most ``max_rows``
rows of a few columns, from the first row groups, streamed batch by batch
(:func:`read_head`): the time does not grow with the number of customers.

Column names are looked up among candidates (``from_segment`` or
``previous_segment``, ``customers`` or ``count``, ...), and every optional
part degrades to ``None`` with a note saying what was missing.

Privacy (run.json ``privacy``): with a minimum segment size ``k``
(``min_segment_size``; ``min_cell_size`` or ``k_anonymity`` are accepted
too), every figure that describes fewer than ``k`` customers is withheld:
segments below ``k``, attribute-mix cells, RFM cells, migration cells and
value distributions of fewer than ``k`` customers.  Customer ids are shown as
the outputs hold them (pseudonyms when the run hashed them).  The privacy
options recorded in the output's model (:func:`segone.privacy.output_record`)
count too: the larger minimum applies, and when the model hashed ids but
personas.parquet holds ids not marked as pseudonyms, no persona card is shown.

File names come from :mod:`segone.outputs`.
"""

import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segone import features as _features
from segone import outputs
from segone.errors import ModelFormatError

MAX_ROWS = 100_000  # rows read at most from assignments.parquet
MAX_PERSONA_ROWS = 50_000  # rows read at most from personas.parquet
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)

SEGMENT_ID = ("segment", "segment_id", "cluster", "id")
SIZE = ("size", "customers", "n_customers", "count")
SHARE = ("share", "customer_share", "share_customers")
VALUE_SHARE = ("value_share", "spend_share", "share_spend")
LABEL = ("label", "name", "segment_label")
TRAITS = ("traits", "top_traits")
CUSTOMER_ID = ("customer_id", "customer", "id", "customer_hash", "pseudonym")

MIG_FROM = ("from_segment", "previous_segment", "prev_segment", "segment_before", "from")
MIG_TO = ("to_segment", "segment", "new_segment", "current_segment", "segment_now", "to")
MIG_CUSTOMERS = ("customers", "count", "n_customers", "n", "size")
MIG_SHARE = ("share", "share_of_from", "from_share")
MIG_SPEND = ("spend", "spend_total", "value")

RFM_R = ("r", "r_score", "recency_score", "R")
RFM_F = ("f", "f_score", "frequency_score", "F")
RFM_CUSTOMERS = ("customers", "count", "n_customers", "n", "size")
RFM_SPEND = ("spend", "spend_total", "monetary", "value")

# the predicted-value columns (the registry's "predict" features) and the other names they go by in other outputs
_VALUE_ALIASES = {
    "clv": ("predicted_clv", "customer_value", "predicted_value"),
    "p_alive": ("prob_alive", "probability_alive"),
    "expected_purchases": ("predicted_purchases",),
}
VALUE_COLUMNS = {f.name: (f.name, *_VALUE_ALIASES.get(f.name, ())) for f in _features.features_of_step("predict")}
PRIVACY_K = ("min_segment_size", "min_cell_size", "k_anonymity", "min_customers", "k", "min_count")
PRIVACY_HASHED = ("hashed_ids", "ids_hashed", "pseudonymised_ids", "pseudonymized_ids", "hash_ids", "pseudonymised",
                  "pseudonymized")  # fmt: skip


def pick(names, candidates):
    """The first candidate that is one of ``names`` (None if none is)."""
    have = set(names)
    return next((c for c in candidates if c in have), None)


def _float(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def parquet_files(path):
    """A Parquet file, or the ``*.parquet`` files under a directory (the Dask layout), in name order."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        return []
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        out += [os.path.join(root, f) for f in files if f.endswith(".parquet") and not f.startswith((".", "_"))]
    return sorted(out)


def parquet_rows(path):
    """Row count from the footers only (None when there is no file)."""
    files = parquet_files(path)
    if not files:
        return None
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def read_head(path, columns, max_rows):
    """(table of at most ``max_rows`` rows of ``columns`` -- those present --, total rows from the footers).

    Reads the first rows only, batch by batch, and never more than
    ``max_rows`` of them; the other files and row groups are not decoded.
    """
    files = parquet_files(path)
    batches, got, total, cols = [], 0, 0, None
    for f in files:
        pf = pq.ParquetFile(f)
        total += pf.metadata.num_rows
        if got >= max_rows:
            continue
        names = pf.schema_arrow.names
        if cols is None:
            cols = [c for c in columns if c in names]
        elif not all(c in names for c in cols):
            continue
        if not cols:
            continue
        for batch in pf.iter_batches(batch_size=max(1, min(65_536, max_rows - got)), columns=cols):
            batch = batch.slice(0, max_rows - got)
            batches.append(batch)
            got += batch.num_rows
            if got >= max_rows:
                break
    if not batches:
        return None, (total if files else None)
    return pa.Table.from_batches(batches), total


def _read_json(path):
    with open(path) as f:
        return json.load(f)


@dataclass
class ReportData:
    """Everything the report shows, read defensively from one output directory."""

    out_dir: str
    run: dict
    segments: list  # dicts: id, label, size, share, value_share, traits, row (all columns), hidden
    lift_features: list
    mixes: dict  # attribute -> [(value, column)]
    k: int | None = None
    privacy: dict | None = None
    rfm: list | None = None
    migration: list | None = None
    tracking: dict | None = None
    previous_names: dict | None = None  # the previous run's segment id -> its own label (the movement matrix rows)
    moves_rows: int | None = None
    value: dict | None = None
    value_info: dict | None = None
    effects: list | None = None  # rows of effects.parquet (campaign effects), already suppressed below k
    effects_info: dict | None = None  # run.json's effects section
    personas: dict = field(default_factory=dict)
    pseudonyms: bool = False  # the id column of the per-customer outputs is marked as pseudonyms
    sample: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def visible(self, n):
        """True when a figure about ``n`` customers may be shown (privacy minimum)."""
        if n is None:
            return self.k is None
        return self.k is None or n == 0 or n >= self.k

    @property
    def shown_segments(self):
        return [s for s in self.segments if not s["hidden"]]


def ids_hashed(privacy):
    """True when run.json's privacy section says the customer ids are pseudonyms."""
    if not isinstance(privacy, dict):
        return False
    p = privacy.get("pseudonymous_ids")
    if isinstance(p, dict):
        return bool(p.get("enabled"))
    return any(bool(privacy.get(k)) for k in PRIVACY_HASHED)


def _privacy(run):
    p = run.get("privacy")
    if not isinstance(p, dict):
        return None, None
    k = None
    for key in PRIVACY_K:
        v = p.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 1:
            k = int(v)
            break
    return k, p


def read_segments(out_dir, k):
    path = os.path.join(out_dir, outputs.SEGMENTS)
    table = pq.read_table(path)
    names = table.column_names
    sid = pick(names, SEGMENT_ID)
    size = pick(names, SIZE)
    if sid is None:
        raise ModelFormatError(f"{path} has no segment id column (one of {list(SEGMENT_ID)}); columns: {names[:12]}.")
    rows = table.to_pylist()
    total = sum(r[size] or 0 for r in rows) if size else None
    share_c, vshare_c, label_c, traits_c = (pick(names, c) for c in (SHARE, VALUE_SHARE, LABEL, TRAITS))
    out = []
    for r in rows:
        n = r.get(size) if size else None
        share = _float(r.get(share_c)) if share_c else (n / total if n is not None and total else None)
        seg = {
            "id": r[sid],
            "label": str(r.get(label_c) or "") if label_c else "",
            "size": None if n is None else int(n),
            "share": share,
            "value_share": _float(r.get(vshare_c)) if vshare_c else None,
            "traits": list(r.get(traits_c) or []) if traits_c else [],
            "row": r,
        }
        seg["hidden"] = k is not None and (seg["size"] is None or seg["size"] < k)
        out.append(seg)
    out.sort(key=lambda s: (s["id"] is None, s["id"]))
    lift = [c[5:] for c in names if c.startswith("lift_")]
    mixes = {}
    for c in names:
        if "=" in c and pa.types.is_floating(table.schema.field(c).type):
            attr, _, value = c.partition("=")
            mixes.setdefault(attr, []).append((value, c))
    return out, lift, mixes


def read_rfm(out_dir, run, k):
    """The R x F grid: rfm.parquet (r, f, customers[, spend][, segment]) or run.json ``rfm_grid`` / ``rfm.grid``."""
    rows = None
    for name in (outputs.RFM, "rfm_grid.parquet"):  # rfm_grid.parquet: an older name
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            rows = pq.read_table(path).to_pylist()
            break
    if rows is None:
        grid = run.get("rfm_grid")
        if grid is None and isinstance(run.get("rfm"), dict):
            grid = run["rfm"].get("grid") or run["rfm"].get("cells")
        if isinstance(grid, list):
            rows = [g for g in grid if isinstance(g, dict)]
    if not rows:
        return None
    names = list(rows[0])
    rc, fc, nc, sc = pick(names, RFM_R), pick(names, RFM_F), pick(names, RFM_CUSTOMERS), pick(names, RFM_SPEND)
    if rc is None or fc is None or nc is None:
        return None
    cells = {}
    for row in rows:  # a per-segment grid is summed over the segments
        try:
            key = (int(row[rc]), int(row[fc]))
        except (TypeError, ValueError):
            continue
        c = cells.setdefault(key, {"r": key[0], "f": key[1], "customers": 0, "spend": None, "null": False})
        if row[nc] is None:  # suppressed by the run's privacy rule
            c["null"] = True
            continue
        c["customers"] += int(row[nc])
        s = _float(row.get(sc)) if sc else None
        if s is not None:
            c["spend"] = (c["spend"] or 0.0) + s
    if cells:  # the full grid: empty cells count 0 customers
        rs = range(min(min(r for r, _ in cells), 1), max(r for r, _ in cells) + 1)
        fs = range(min(min(f for _, f in cells), 1), max(f for _, f in cells) + 1)
        for key in ((r, f) for r in rs for f in fs):
            cells.setdefault(key, {"r": key[0], "f": key[1], "customers": 0, "spend": None, "null": False})
    out = sorted(cells.values(), key=lambda c: (c["r"], c["f"]))
    for c in out:
        # "withheld": the run suppressed the cell (small, or protecting a small one); "small": below k here
        null = c.pop("null")
        c["hidden"] = null or (k is not None and 0 < c["customers"] < k)
        c["reason"] = "withheld" if null else "small" if c["hidden"] else None
        if c["hidden"]:
            c["customers"], c["spend"] = 0, None
    return out


def read_migration(out_dir, k):
    for name in (outputs.MIGRATION, os.path.join("tracking", outputs.MIGRATION)):
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            break
    else:
        return None
    table = pq.read_table(path)
    names = table.column_names
    fc, tc, nc = pick(names, MIG_FROM), pick(names, MIG_TO), pick(names, MIG_CUSTOMERS)
    if fc is None or tc is None or nc is None or fc == tc:
        return None
    shc, spc = pick(names, MIG_SHARE), pick(names, MIG_SPEND)
    rows = table.to_pylist()
    from_tot = {}
    for r in rows:
        from_tot[r[fc]] = from_tot.get(r[fc], 0) + int(r[nc] or 0)
    out = []
    for r in rows:
        withheld = r[nc] is None  # suppressed by the run's privacy rule (small, or protecting a small cell)
        n = int(r[nc] or 0)
        hidden = withheld or (k is not None and 0 < n < k)
        share = _float(r.get(shc)) if shc else None
        if share is None and not hidden:
            share = n / from_tot[r[fc]] if from_tot[r[fc]] else None
        out.append({
            "from": r[fc], "to": r[tc], "customers": None if hidden else n, "share": None if hidden else share,
            "spend": None if hidden else (_float(r.get(spc)) if spc else None), "hidden": hidden,
            "reason": "withheld" if withheld else "small" if hidden else None,
            # the CLV that moved (null: a run without customer value), when the table has it
            "clv": None if hidden else _float(r.get("clv")),
            "clv_before": None if hidden else _float(r.get("clv_before")),
        })  # fmt: skip
    return out


def read_tracking(out_dir, run):
    t = run.get("tracking")
    if not isinstance(t, dict):
        path = os.path.join(out_dir, outputs.TRACKING_JSON)
        t = _read_json(path) if os.path.exists(path) else None
    return t if isinstance(t, dict) else None


def read_previous_names(tracking):
    """{segment id: label} of the previous run a tracked run was compared with (None when it cannot be read)."""
    prev = (tracking or {}).get("previous")
    if not isinstance(prev, str):
        return None
    path = os.path.join(prev, outputs.SEGMENTS)
    if not os.path.exists(path):
        return None
    t = pq.read_table(path)
    if "segment" not in t.column_names or "label" not in t.column_names:
        return None
    return {int(i): str(lab) for i, lab in zip(t.column("segment").to_pylist(), t.column("label").to_pylist())
            if i is not None and lab is not None}  # fmt: skip


def _segment_value_columns(segments):
    """Per-segment value summaries written in segments.parquet: {stat: column} for the clv column."""
    if not segments:
        return {}
    names = list(segments[0]["row"])
    found = {}
    for stat, cands in (("mean", ("mean_clv", "clv_mean")), ("median", ("median_clv", "clv_median")),
                        ("total", ("sum_clv", "total_clv", "clv_total")), ("value_share", ("clv_share",)),
                        ("p_alive", ("mean_p_alive", "p_alive_mean")),
                        ("expected_purchases", ("mean_expected_purchases", "expected_purchases_mean")),
                        ("total_lo", ("total_clv_lo",)), ("total_hi", ("total_clv_hi",)),
                        ("purchases_total", ("total_expected_purchases",)),
                        ("purchases_total_lo", ("total_expected_purchases_lo",)),
                        ("purchases_total_hi", ("total_expected_purchases_hi",))):  # fmt: skip
        c = pick(names, cands)
        if c:
            found[stat] = c
    pat = re.compile(r"^(?:clv_[pq](\d{1,2})|[pq](\d{1,2})_clv)$")
    for c in names:
        m = pat.match(c)
        if m:
            found[f"q{int(m.group(1) or m.group(2)):02d}"] = c
    if "median" in found and "q50" not in found:
        found["q50"] = found["median"]
    return found


def _quantiles(v):
    v = v[np.isfinite(v)]
    if not v.size:
        return {}
    qs = np.quantile(v, QUANTILES)
    return {f"q{int(round(q * 100)):02d}": float(x) for q, x in zip(QUANTILES, qs)}


def read_value(data, sample, sample_total):
    """Predicted value by segment: exact summaries from segments.parquet, the distribution from a bounded sample."""
    seg_cols = _segment_value_columns(data.segments)
    vcols = {}
    if sample is not None:
        vcols = {k: pick(sample.column_names, c) for k, c in VALUE_COLUMNS.items()}
        vcols = {k: c for k, c in vcols.items() if c}
    if not seg_cols and not vcols:
        return None
    per = {}
    n_sample = 0 if sample is None else sample.num_rows
    seg_arr = None
    values = {}
    if vcols and "segment" in sample.column_names:
        seg_arr = sample.column("segment").to_numpy(zero_copy_only=False)
        for key, col in vcols.items():
            v = pc.cast(sample.column(col), pa.float64()).to_numpy(zero_copy_only=False)
            if np.isfinite(v).any():
                values[key] = v
    # the distribution shown: predicted value (clv) when the run has it, else expected purchases
    seg_clv = any(_float(s["row"].get(c)) is not None for s in data.segments for k, c in seg_cols.items()
                  if k in ("mean", "median") or k.startswith("q"))  # fmt: skip
    metric = "clv" if ("clv" in values or seg_clv) else "expected_purchases" if "expected_purchases" in values else None
    for s in data.segments:
        if s["hidden"]:
            continue
        row = s["row"]
        e = {"segment": s["id"], "source": {}}
        for stat, col in seg_cols.items():
            v = _float(row.get(col))
            if metric != "clv" and (stat in ("mean", "median", "total", "total_lo", "total_hi", "value_share")
                                    or stat.startswith("q")):  # fmt: skip
                continue  # the run has no usable predicted value: its summaries are empty
            if v is not None:
                e[stat] = v
                e["source"][stat] = "all"
        if seg_arr is not None:
            mask = seg_arr == s["id"]
            n = int(mask.sum())
            e["sample_n"] = n
            if n and data.visible(n):
                for key, v in values.items():
                    v = v[mask]
                    v = v[np.isfinite(v)]
                    if not v.size:
                        continue
                    if key == metric:
                        for q, x in _quantiles(v).items():
                            if q not in e:
                                e[q], e["source"][q] = x, "sample"
                        if "mean" not in e:
                            e["mean"], e["source"]["mean"] = float(v.mean()), "sample"
                    if key != "clv" and key not in e:
                        e[key], e["source"][key] = float(v.mean()), "sample"
        per[s["id"]] = e
    if not any(("q50" in e or "mean" in e or "p_alive" in e) for e in per.values()):
        return None
    if metric == "clv":  # share of predicted value: the segment totals, else size x mean per customer
        def amount(s):
            e = per.get(s["id"], {})
            if "total" in e:
                return e["total"]
            return e["mean"] * s["size"] if "mean" in e and s["size"] else None

        amounts = {s["id"]: amount(s) for s in data.shown_segments}
        total = sum(a for a in amounts.values() if a is not None)
        for sid, a in amounts.items():
            if a is not None and total and sid in per:
                per[sid].setdefault("value_share", a / total)
    return {
        "segments": per,
        "metric": metric,
        "columns": vcols,
        "segment_columns": seg_cols,
        "sample_rows": n_sample,
        "total_rows": sample_total,
        "from_sample": any("sample" in e["source"].values() for e in per.values()),
    }


def _typical_personas(data, personas, assign, per_segment):
    """A few customers per segment: the closest to the segment centre among the rows read (else the first)."""
    if personas is None or per_segment <= 0:
        return {}
    names = personas.column_names
    cid = pick(names, CUSTOMER_ID)
    if cid is None or "segment" not in names:
        return {}
    rows_by_id = {}
    dist = {}
    extra = {}
    if assign is not None and cid in assign.column_names:
        acols = assign.column_names
        a_ids = assign.column(cid).to_pylist()
        d = assign.column("distance").to_pylist() if "distance" in acols else None
        vcols = {k: pick(acols, c) for k, c in VALUE_COLUMNS.items()}
        vals = {k: assign.column(c).to_pylist() for k, c in vcols.items() if c}
        for i, x in enumerate(a_ids):
            if d is not None:
                dist[x] = d[i]
            extra[x] = {k: v[i] for k, v in vals.items()}
    seg = personas.column("segment").to_numpy(zero_copy_only=False)
    ids = personas.column(cid).to_pylist()
    out = {}
    for s in data.shown_segments:
        idx = np.flatnonzero(seg == s["id"])
        if not idx.size:
            continue
        if dist:
            key = np.array([dist.get(ids[i], np.inf) if dist.get(ids[i]) is not None else np.inf for i in idx])
            idx = idx[np.argsort(key, kind="stable")]
        chosen = idx[:per_segment]
        sub = personas.take(pa.array(chosen)).to_pylist()
        for r in sub:
            rows_by_id[r[cid]] = r
        out[s["id"]] = [{
            "id": r[cid],
            "summary": r.get("summary") or "",
            "traits": [t for t in (r.get("traits") or []) if isinstance(t, dict)],
            "value": extra.get(r[cid], {}),
            "typical": bool(dist),
        } for r in sub]  # fmt: skip
    return out


def read_outputs(out_dir, *, max_rows=MAX_ROWS, persona_rows=MAX_PERSONA_ROWS, personas_per_segment=3):
    """Read an output directory of ``segone run`` into a :class:`ReportData`."""
    out_dir = os.fspath(out_dir)
    if not os.path.isdir(out_dir):
        raise ModelFormatError(f"{out_dir!r} is not a directory; give the --out directory of `segone run`.")
    missing = [n for n in (outputs.RUN_JSON, outputs.SEGMENTS) if not os.path.exists(os.path.join(out_dir, n))]
    if missing:
        raise ModelFormatError(
            f"{out_dir!r} has no {' or '.join(missing)}: it is not a complete output of `segone run` "
            "(a run that failed, or another directory)."
        )
    try:
        run = _read_json(os.path.join(out_dir, outputs.RUN_JSON))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{out_dir}/run.json cannot be read ({exc}).") from None
    if not isinstance(run, dict):
        raise ModelFormatError(f"{out_dir}/run.json does not hold a JSON object.")
    k, privacy = _privacy(run)
    from segone.privacy import output_record

    record, _ = output_record(out_dir)  # the options the model was fitted with (None: an older model)
    k_model = record.get("min_segment_size") if record else None
    if k_model is not None and k_model > 1 and (k is None or k_model > k):
        k = k_model
    try:
        segments, lift, mixes = read_segments(out_dir, k)
    except (OSError, pa.ArrowException) as exc:
        raise ModelFormatError(f"{out_dir}/segments.parquet cannot be read ({exc}).") from None
    data = ReportData(out_dir, run, segments, lift, mixes, k=k, privacy=privacy)
    hidden = [s["id"] for s in segments if s["hidden"]]
    if hidden:
        data.notes.append(f"{len(hidden)} segment(s) with fewer than {k:,} customers are not shown (privacy).")

    def optional(what, fn, *args):
        try:
            return fn(*args)
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            data.notes.append(f"{what} could not be read ({type(exc).__name__}: {exc}); that section is left out.")
            return None

    data.rfm = optional("The RFM grid", read_rfm, out_dir, run, k)
    data.migration = optional(outputs.MIGRATION, read_migration, out_dir, k)
    data.tracking = optional("The tracking figures", read_tracking, out_dir, run)
    data.previous_names = optional("The previous run's labels", read_previous_names, data.tracking)
    data.moves_rows = optional(outputs.MOVES, parquet_rows, os.path.join(out_dir, outputs.MOVES))
    data.value_info = run.get("clv") if isinstance(run.get("clv"), dict) else None
    if os.path.exists(os.path.join(out_dir, outputs.EFFECTS)):
        data.effects = optional(outputs.EFFECTS, lambda p: pq.read_table(p).to_pylist(),
                                os.path.join(out_dir, outputs.EFFECTS))  # fmt: skip
        data.effects_info = run.get("effects") if isinstance(run.get("effects"), dict) else None

    want = ["customer_id", *CUSTOMER_ID[1:], "segment", "distance"] + [c for cs in VALUE_COLUMNS.values() for c in cs]
    res = optional(outputs.ASSIGNMENTS, read_head, os.path.join(out_dir, outputs.ASSIGNMENTS), want, max_rows)
    assign, a_total = res if res else (None, None)
    data.sample["assignments"] = (0 if assign is None else assign.num_rows, a_total)
    data.value = optional("The predicted value", read_value, data, assign, a_total)

    res = optional(outputs.PERSONAS, read_head, os.path.join(out_dir, outputs.PERSONAS),
                   ["customer_id", *CUSTOMER_ID[1:], "segment", "summary", "traits"], persona_rows)  # fmt: skip
    personas, p_total = res if res else (None, None)
    if personas is not None:
        id_field = next((f for f in personas.schema if f.name in CUSTOMER_ID), None)
        meta = id_field.metadata if id_field is not None else None
        data.pseudonyms = bool(meta and outputs.PSEUDONYM_METADATA in meta)
        if record and record.get("hash_ids") and not data.pseudonyms:
            data.notes.append("The persona cards are left out: the model hashed the customer ids but "
                              f"{outputs.PERSONAS} holds ids not marked as pseudonyms.")  # fmt: skip
            personas = None
    data.sample["personas"] = (0 if personas is None else personas.num_rows, p_total)
    data.personas = optional("The persona cards", _typical_personas, data, personas, assign, personas_per_segment) or {}
    return data
