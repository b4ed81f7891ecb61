"""Segment statistics as a mergeable state, the segment table, and plain, unique labels.

:class:`SegmentStats` is built per piece of data (profiles and the segment of
every customer), merged exactly, and finished into the segment table: one row
per segment with its size, share of customers, share of spend (value share),
the mean and lift against the whole base of every numeric profile feature
(category, channel and event mixes included), medians of the headline
columns (from :class:`~segone.sketch.QuantileSketch`, 0.5% relative error),
the mix of every categorical attribute, the top distinguishing traits and a
label.  The table is the same whether the customers came in one piece or in
many.

Labels follow :data:`DEFAULT_LABEL_RULES`, plain data a user can replace:

* **value** is judged on spend per customer over a stated window (default
  ``spend_365d``): the segment's value index is its share of that spend
  divided by its share of customers, both among the segments of buyers
  (segments of non-buyers, named from their web behaviour, are left out of
  that base: where most visitors never bought, buyers are not all
  "big-spending");
* **recency** is judged against the base's typical time between purchases
  (the median over repeat customers of their days between the first and
  the last purchase day per repeat purchase day: the BTYD ``recency /
  frequency`` in days, whatever ``freq``), so a 10-day gap is not "lapsed"
  in a grocery and a 200-day gap is not "recent" for a record shop;
* **frequency**: "one-time buyers" when the segment's median customer bought
  on one day, "regulars" when it buys at least ``regular_ratio`` times as
  often as the base over the window;
* **mix**: ", mostly {categories}": the categories over-represented
  ``min_lift`` times the base's share (largest share first) that together
  hold ``min_share`` of the
  segment's spend, and any further one that holds ``min_share`` on its own;
  the same for channels (", via {channels}").

* **recency checked against the value model** (``alive_check``): a segment
  of repeat buyers is "lapsed" only if its median ``p_alive`` is below
  ``max_p_alive`` (0.5) as well; otherwise it reads "quiet ..., likely to
  return" (one-time buyers are judged on recency alone: BG/NBD gives them
  ``p_alive`` 1 by construction);
* **customers without a purchase** (``non_buyers``): a segment whose median
  customer has no order is never "buyers"; it is named from its web
  behaviour (the funnel columns of :func:`segone.build_profiles`):
  "visitors who abandoned checkout", "bounced visitors", "browsers",
  "visitors", else "customers without a purchase yet";
* ties in the mix: categories whose shares are within ``tie`` of the last
  one named are named too (equal shares in alphabetical order), so a
  segment whose four categories hold about a quarter each keeps its label;
  more than ``max_labels`` read ``many_phrase`` ("spread over 4 categories").

Labels are unique within a run: segments that would share a label get the
median that tells them apart added (``distinguish``: the first listed column
on which they differ by ``min_difference``, else the one on which they differ
most, e.g. "(spends 893 a year)" / "(spends 1,533 a year)"), else their
strongest trait, else a number.  The table's ``typical_gap_days`` is the gap
the recency words were judged against.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone import features as _features
from segone._deprecation import renamed_keywords
from segone._state import State, array_from_data, array_to_data
from segone._validation import check_int
from segone.errors import DataError, ParameterError
from segone.io import read_table
from segone.sketch import QuantileSketch

# columns whose per-segment median is reported (those present are used): the registry's ``median`` flags
SUMMARY_COLUMNS = _features.median_columns()
_SKIP = _features.not_features()  # the id and the timestamps
MAX_CATEGORIES = 50  # categorical attributes with more distinct values get no mix columns

DEFAULT_LABEL_RULES = {
    "value_column": "spend_365d",          # spend per customer over this window judges "value"
    "value": [(2.0, "big-spending"), (1.25, "high-spending"), (0.5, ""), (0.0, "low-spending")],
    "recency": [(1.5, "active"), (4.0, "cooling"), (float("inf"), "lapsed")],  # x the typical gap
    "new_tenure": 2.0,                     # median tenure below this many typical gaps: "new"
    "frequency_column": "orders_365d",
    "regular_ratio": 2.0,                  # buys this many times as often as the base: "regulars"
    "nouns": {"one_time": "one-time buyers", "regular": "regulars", "default": "customers"},
    # the recency words checked against the value model: a segment is called "lapsed" only when its median
    # p_alive is below max_p_alive too; otherwise the word is replaced and the tail added ("quiet ..., likely to
    # return"). One-time buyers are judged on recency alone (BG/NBD gives them p_alive 1 by construction).
    "alive_check": {"column": "p_alive", "max_p_alive": 0.5, "words": {"lapsed": "quiet"},
                    "tail": "likely to return"},
    # segments whose median customer has not bought (median orders below max_orders) are never "buyers": they
    # are named by the first rule whose condition holds, on the segment's mean or median of a profile column
    # (the web funnel columns of segone.build_profiles), else by "default"
    "non_buyers": {
        "max_orders": 0.5,
        "names": [("mean", "cart_abandoned", ">=", 0.5, "visitors who abandoned checkout"),
                  ("median", "pages_per_session", "<=", 1.5, "bounced visitors"),
                  ("median", "sessions", ">=", 1.0, "browsers"),
                  ("mean", "events_*", ">", 0.0, "visitors")],
        "default": "customers without a purchase yet",
    },
    # "mostly": categories whose shares are within `tie` (relative) of the last one chosen are named too, in
    # alphabetical order among equals, so that a segment keeps its label when nothing changed; more than
    # max_labels of them are named by many_phrase
    "mix": {"prefix": "share_", "min_share": 0.3, "min_lift": 1.5, "phrase": "mostly {label}", "tie": 0.15,
            "max_labels": 4, "many_phrase": "spread over {n} categories"},
    "channel": {"prefix": "channel_", "min_share": 0.6, "min_lift": 1.3, "phrase": "via {label}"},
    # segments that would share a label: the first of these medians (in this order) on which they differ by at
    # least min_difference (relative: (high - low) / high), else the one on which they differ most, written
    # with the phrase of that column; then the strongest trait; then a number
    "distinguish": {
        "min_difference": 0.2,
        "columns": [("spend_365d", "spends {value} a year"), ("recency_days", "last purchase {value} days ago"),
                    ("orders", "{value} orders"), ("spend_mean", "{value} per order"),
                    ("tenure_days", "customer for {value} days"), ("n_categories", "{value} categories")],
    },
}  # fmt: skip


def numeric_columns(table):
    """Integer and float profile columns, ids and timestamps left out."""
    return [f.name for f in table.schema if f.name not in _SKIP and
            (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]  # fmt: skip


def categorical_columns(table):
    """String, dictionary and boolean profile columns, ids left out."""
    return [f.name for f in table.schema if f.name not in _SKIP and (
        pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_dictionary(f.type)
        or pa.types.is_boolean(f.type))]  # fmt: skip


def _days(profiles, name):
    """A profile column as float64 (NaN for nulls); timestamps as whole UTC days since 1970."""
    col = profiles.column(name)
    if pa.types.is_timestamp(col.type):
        us = pc.cast(col.cast(pa.timestamp("us", tz=col.type.tz), safe=False), pa.int64())
        return np.floor(np.asarray(us.to_numpy(zero_copy_only=False), dtype=np.float64) / 86_400_000_000)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def _gaps_in_days(profiles):
    """Per repeat customer: the mean time between purchases, in days (what the typical gap is the median of).

    (last purchase day - first purchase day) / (purchase days - 1): the BTYD
    ``recency / frequency`` in daily periods, whatever ``freq`` the BTYD
    columns were built with (the recency words compare ``recency_days``
    with it).  Profiles without those columns: ``(tenure_days -
    recency_days) / (purchase_days - 1)``, else ``recency / frequency`` as
    they are.
    """
    names = set(profiles.column_names)
    if {"purchase_days", "first_purchase", "last_purchase"} <= names and \
            pa.types.is_timestamp(profiles.schema.field("first_purchase").type) and \
            pa.types.is_timestamp(profiles.schema.field("last_purchase").type):  # fmt: skip
        span = _days(profiles, "last_purchase") - _days(profiles, "first_purchase")
        rep = _days(profiles, "purchase_days") - 1
    elif {"purchase_days", "tenure_days", "recency_days"} <= names:
        span = _days(profiles, "tenure_days") - _days(profiles, "recency_days")
        rep = _days(profiles, "purchase_days") - 1
    elif {"recency", "frequency"} <= names:
        span, rep = _days(profiles, "recency"), _days(profiles, "frequency")
    else:
        return np.empty(0)
    ok = np.isfinite(span) & np.isfinite(rep) & (rep > 0)
    return span[ok] / rep[ok]


class SegmentStats(State):
    """Mergeable per-segment statistics of the profiles.

    Per segment and numeric column: sums and counts of finite values (means
    and lifts); per segment and headline column: a median sketch; per segment
    and categorical column: value counts; for the base: the sketch of the
    typical time between purchases.  Built per piece (:meth:`of`), merged
    exactly (:meth:`merge`), finished into the segment table
    (:meth:`finish`).  Customers with segment -1 (not assigned) count in
    ``n`` only.
    """

    kind = "segment_stats"

    def __init__(self, k, columns, median_columns=(), categorical=()):
        self.k, self.columns = int(k), list(columns)
        self.median_columns = list(median_columns)
        self.categorical = list(categorical)
        self.n = 0
        self.size = np.zeros(self.k, dtype=np.int64)
        self.sums = np.zeros((self.k, len(self.columns)))
        self.counts = np.zeros((self.k, len(self.columns)), dtype=np.int64)
        self.seg_sketch = [[QuantileSketch() for _ in range(self.k)] for _ in self.median_columns]
        self.all_sketch = [QuantileSketch() for _ in self.median_columns]
        self.cat_counts = {c: [{} for _ in range(self.k)] for c in self.categorical}
        self.gap = QuantileSketch()

    @classmethod
    def of(cls, profiles, labels, k, columns=None, categorical=None):
        """The statistics of one piece: ``profiles`` (a table) and the segment of each row (-1: none)."""
        profiles = read_table(profiles, name="profiles")
        k = check_int(k, "k", low=1)
        labels = np.asarray(labels)
        if labels.dtype.kind == "f" and labels.size and np.isfinite(labels).all() and \
                (labels == np.round(labels)).all():  # fmt: skip
            labels = labels.astype(np.int64)  # whole numbers as floats (e.g. from pandas)
        if labels.dtype.kind not in "iub" and not (labels.size == 0 and labels.dtype.kind == "f"):
            raise ParameterError(
                f"labels must be integer segment numbers (-1: none), got dtype {labels.dtype}; e.g. "
                "segmenter.predict(X)."
            )
        labels = labels.astype(np.int64, copy=False)
        if labels.shape != (profiles.num_rows,):
            raise ParameterError(
                f"labels has shape {labels.shape} but the profiles have {profiles.num_rows} rows; "
                "give one segment per profile row."
            )
        if labels.size and (labels.max() >= k or labels.min() < -1):
            raise ParameterError(f"labels must lie in -1..{k - 1}; found {labels.min()}..{labels.max()}.")
        cols = list(columns) if columns is not None else numeric_columns(profiles)
        med = [c for c in SUMMARY_COLUMNS if c in cols]
        cats = list(categorical) if categorical is not None else categorical_columns(profiles)
        missing = [c for c in cols + cats if c not in profiles.column_names]
        if missing:
            raise ParameterError(f"profiles lack the column(s) {missing}; found {profiles.column_names[:30]}.")
        st = cls(k, cols, med, cats)
        st.n = profiles.num_rows
        assigned = labels >= 0
        st.size = np.bincount(labels[assigned], minlength=k).astype(np.int64)
        order = np.argsort(labels, kind="stable")  # one sort by segment, shared by the sketches
        lab_sorted = labels[order]
        for j, name in enumerate(cols):
            v = np.asarray(profiles.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
            ok = np.isfinite(v) & assigned
            st.sums[:, j] = np.bincount(labels[ok], weights=v[ok], minlength=k)
            st.counts[:, j] = np.bincount(labels[ok], minlength=k)
            if name in med:
                m = med.index(name)
                st.all_sketch[m].update(v[ok])
                keep = ok[order]
                ls, vs = lab_sorted[keep], v[order][keep]
                bounds = np.searchsorted(ls, np.arange(k + 1))
                for i in range(k):
                    st.seg_sketch[m][i].update(vs[bounds[i] : bounds[i + 1]])
        for c in cats:
            col = profiles.column(c)
            vals = col.cast(pa.string()) if not pa.types.is_string(col.type) else col
            t = pa.table({"s": pa.array(labels), "v": vals}).filter(pa.array(assigned))
            grouped = t.group_by(["s", "v"]).aggregate([([], "count_all")])
            for s, v, cnt in zip(*(grouped.column(x).to_pylist() for x in ("s", "v", "count_all"))):
                key = "(null)" if v is None else str(v)
                st.cat_counts[c][s][key] = st.cat_counts[c][s].get(key, 0) + cnt
        st.gap.update(_gaps_in_days(profiles))
        return st

    def merge(self, other):
        self._check_same(other, "k", "columns", "median_columns", "categorical")
        out = SegmentStats(self.k, self.columns, self.median_columns, self.categorical)
        out.n = self.n + other.n
        out.size = self.size + other.size
        out.sums = self.sums + other.sums
        out.counts = self.counts + other.counts
        out.seg_sketch = [[a.merge(b) for a, b in zip(ra, rb)] for ra, rb in zip(self.seg_sketch, other.seg_sketch)]
        out.all_sketch = [a.merge(b) for a, b in zip(self.all_sketch, other.all_sketch)]
        for c in self.categorical:
            for i in range(self.k):
                d = dict(self.cat_counts[c][i])
                for key, v in other.cat_counts[c][i].items():
                    d[key] = d.get(key, 0) + v
                out.cat_counts[c][i] = d
        out.gap = self.gap.merge(other.gap)
        return out

    # -- the table ------------------------------------------------------------------
    def means(self):
        """(segment means k x D, base means D) of the numeric columns; NaN where nothing was counted."""
        with np.errstate(invalid="ignore", divide="ignore"):
            seg = np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)
            tot = self.counts.sum(axis=0)
            base = np.where(tot > 0, self.sums.sum(axis=0) / np.maximum(tot, 1), np.nan)
        return seg, base

    def segment_sketches(self):
        """``{column: [quantile sketch of segment 0, ..., k-1]}`` of the headline columns.

        What :meth:`segone.describe.PersonaModel.set_segments` needs for the
        personas' segment contrast.
        """
        return {name: list(self.seg_sketch[m]) for m, name in enumerate(self.median_columns)}

    def finish(self, rules=None):
        """The segment table (see the module docstring); ``rules`` replaces :data:`DEFAULT_LABEL_RULES`."""
        k = self.k
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.abs(self.sums).sum(axis=0)
        if self.sums.size and not np.isfinite(total).all():  # sums of finite values that left the float64 range
            j = int(np.flatnonzero(~np.isfinite(total))[0])
            raise DataError(
                f"profiles.{self.columns[j]}: the values of the customers add up beyond the float64 range (1.8e308), "
                "so the segment means would be infinite; rescale that column (e.g. divide by 1e6)."
            )
        seg_mean, base_mean = self.means()
        with np.errstate(invalid="ignore", divide="ignore"):
            lift = np.where(np.abs(base_mean) > 1e-12, seg_mean / base_mean, np.nan)
        cols = {"segment": pa.array(np.arange(k, dtype=np.int32)), "size": pa.array(self.size)}
        n_assigned = max(int(self.size.sum()), 1)
        cols["share"] = pa.array(self.size / max(self.n, 1))
        vcol = (rules or DEFAULT_LABEL_RULES).get("value_column", "spend_365d")
        vcol = vcol if vcol in self.columns else ("spend_total" if "spend_total" in self.columns else None)
        value_index = np.full(k, np.nan)
        if vcol is not None:
            j = self.columns.index(vcol)
            total = self.sums[:, j].sum()
            vshare = self.sums[:, j] / total if total > 0 else np.full(k, np.nan)
            cols["value_share"] = pa.array(vshare)
            with np.errstate(invalid="ignore", divide="ignore"):
                value_index = vshare / (self.size / n_assigned)
        medians = {}
        for m, name in enumerate(self.median_columns):
            medians[name] = np.array([s.quantile(0.5) if s.count else np.nan for s in self.seg_sketch[m]])
            cols[f"median_{name}"] = pa.array(medians[name])
        for j, name in enumerate(self.columns):
            cols[f"mean_{name}"] = pa.array(seg_mean[:, j])
        for j, name in enumerate(self.columns):
            cols[f"lift_{name}"] = pa.array(lift[:, j])
        for name in _features.total_columns():  # predicted value: the segment's total too (null: nothing predicted)
            if name in self.columns:
                j = self.columns.index(name)
                cols[f"total_{name}"] = pa.array(self.sums[:, j], mask=self.counts[:, j] == 0)
        for c in self.categorical:
            values = {}
            for i in range(k):
                for key, v in self.cat_counts[c][i].items():
                    values[key] = values.get(key, 0) + v
            if len(values) > MAX_CATEGORIES:
                continue
            for key in sorted(values, key=lambda x: -values[x]):
                cols[f"{c}={key}"] = pa.array([self.cat_counts[c][i].get(key, 0) / max(self.size[i], 1)
                                               for i in range(k)])  # fmt: skip
        traits = self._traits(lift, seg_mean)
        cols["traits"] = pa.array(traits, pa.list_(pa.string()))
        gap = self.gap.quantile(0.5) if self.gap.count else np.nan
        cols["typical_gap_days"] = pa.array(np.full(k, gap))  # what the recency words were judged against
        cols["label"] = pa.array(label_segments(self, medians, value_index, seg_mean, base_mean, gap, traits,
                                                rules))  # fmt: skip
        return pa.table(cols)

    table = finish

    def _traits(self, lift, seg_mean, n=3):
        """Per segment: what sets it apart, as "feature xLIFT" (mean / base mean).

        Features well above the base come first (largest lift); features far
        below it fill the remaining places, except mix columns (a segment that
        does not buy garden tools is not described by that).
        """
        out = []
        trait = np.array([_features.is_trait(c) for c in self.columns], dtype=bool)  # the registry's trait flags
        mix = np.array([_features.is_mix(c) for c in self.columns], dtype=bool)
        for i in range(self.k):
            with np.errstate(invalid="ignore", divide="ignore"):
                lg = np.log(lift[i])
            ok = np.isfinite(lg) & trait
            up = [j for j in np.argsort(-np.where(ok, lg, -np.inf), kind="stable") if ok[j] and lg[j] > np.log(1.25)]
            down = [j for j in np.argsort(np.where(ok & ~mix, lg, np.inf), kind="stable")
                    if ok[j] and not mix[j] and lg[j] < -np.log(1.25)]  # fmt: skip
            pick = (up + down)[:n]
            out.append([f"{self.columns[j]} x{lift[i, j]:.2f}" for j in pick])
        return out

    def _data(self):
        return {
            "k": self.k, "columns": self.columns, "median_columns": self.median_columns,
            "categorical": self.categorical, "n": int(self.n),
            "size": array_to_data(self.size), "sums": array_to_data(self.sums), "counts": array_to_data(self.counts),
            "seg_sketch": [[s.to_dict() for s in row] for row in self.seg_sketch],
            "all_sketch": [s.to_dict() for s in self.all_sketch],
            "cat_counts": {c: [[[k, v] for k, v in d.items()] for d in seg] for c, seg in self.cat_counts.items()},
            "gap": self.gap.to_dict(),
        }  # fmt: skip

    @classmethod
    def _from_data(cls, d):
        st = cls(d["k"], d["columns"], d["median_columns"], d["categorical"])
        st.n = int(d["n"])
        st.size = array_from_data(d["size"], "size")
        st.sums = array_from_data(d["sums"], "sums")
        st.counts = array_from_data(d["counts"], "counts")
        st.seg_sketch = [[QuantileSketch.from_dict(s) for s in row] for row in d["seg_sketch"]]
        st.all_sketch = [QuantileSketch.from_dict(s) for s in d["all_sketch"]]
        st.cat_counts = {c: [dict(map(tuple, seg)) for seg in v] for c, v in d["cat_counts"].items()}
        st.gap = QuantileSketch.from_dict(d["gap"])
        return st


class RFMGrid(State):
    """Mergeable R x F grid: customers and spend per (R score, F score) cell (the classic RFM chart)."""

    kind = "rfm_grid"

    def __init__(self, customers=None, spend=None, bins=5):
        self.bins = int(bins)
        self.customers = np.zeros((bins, bins), np.int64) if customers is None else np.asarray(customers, np.int64)
        self.spend = np.zeros((bins, bins)) if spend is None else np.asarray(spend, np.float64)

    @classmethod
    def of(cls, rfm, spend=None, bins=5):
        """``rfm``: a table with r_score and f_score (1..bins); ``spend`` an array per row (optional)."""
        r = np.asarray(rfm.column("r_score").to_numpy(zero_copy_only=False), np.int64) - 1
        f = np.asarray(rfm.column("f_score").to_numpy(zero_copy_only=False), np.int64) - 1
        cell = r * bins + f
        st = cls(bins=bins)
        st.customers = np.bincount(cell, minlength=bins * bins).reshape(bins, bins).astype(np.int64)
        if spend is not None:
            w = np.nan_to_num(np.asarray(spend, np.float64))
            # float64 even for an empty piece (bincount of nothing is int64 whatever the weights)
            st.spend = np.bincount(cell, weights=w, minlength=bins * bins).reshape(bins, bins).astype(np.float64)
        return st

    def merge(self, other):
        self._check_same(other, "bins")
        return RFMGrid(self.customers + other.customers, self.spend + other.spend, self.bins)

    def finish(self):
        """rfm.parquet: one row per (r_score, f_score) cell with customers and spend."""
        r, f = np.meshgrid(np.arange(1, self.bins + 1), np.arange(1, self.bins + 1), indexing="ij")
        return pa.table({"r_score": pa.array(r.ravel().astype(np.int8)), "f_score": pa.array(f.ravel().astype(np.int8)),
                         "customers": pa.array(self.customers.ravel()), "spend": pa.array(self.spend.ravel())})  # fmt: skip

    def _data(self):
        return {"bins": self.bins, "customers": array_to_data(self.customers), "spend": array_to_data(self.spend)}

    @classmethod
    def _from_data(cls, d):
        return cls(array_from_data(d["customers"]), array_from_data(d["spend"]), d["bins"])


def _level(x, levels, above=True):
    """The word of the first level whose threshold ``x`` reaches (levels sorted as given)."""
    if not np.isfinite(x):
        return ""
    for threshold, word in levels:
        if (x >= threshold) if above else (x <= threshold):
            return word
    return ""


def _check_rules(rules):
    """The label rules: :func:`segone._validation.check_label_rules` (every key known, every value of its kind)."""
    from segone._validation import check_label_rules

    check_label_rules(rules)


def _number(v):
    """A median for a label: whole numbers from 10 on, one decimal below (no trailing zero)."""
    if abs(v) >= 9.95:
        return f"{v:,.0f}"
    if abs(v) >= 0.095:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2g}"


def _distinguish(idx, medians, rule):
    """Words that tell the segments ``idx`` (which share a label) apart, one per segment, or None.

    The first column of ``rule["columns"]`` whose medians differ between every
    two of the segments by ``min_difference`` ((high - low) / high) and read
    differently, else the column on which they differ most; None when no
    column reads differently for all of them.
    """
    best, best_sep = None, -1.0
    for name, phrase in rule.get("columns", ()):
        if name not in medians:
            continue
        vals = np.asarray(medians[name], dtype=np.float64)[idx]
        if not np.isfinite(vals).all():
            continue
        words = [phrase.format(value=_number(v)) for v in vals]
        if len(set(words)) < len(idx):
            continue
        v = np.sort(vals)
        hi = np.maximum(np.abs(v[1:]), np.abs(v[:-1]))
        sep = float(np.min(np.where(hi > 0, (v[1:] - v[:-1]) / np.where(hi > 0, hi, 1.0), 0.0)))
        if sep >= rule.get("min_difference", 0.2):
            return words
        if sep > best_sep:
            best, best_sep = words, sep
    return best


def _non_buyer_noun(i, rule, stats, medians, seg_mean):
    """The noun of a segment whose median customer has not bought: the first rule of ``rule["names"]`` that holds.

    A rule is ``(stat, column, op, threshold, noun)``: ``stat`` "mean" or "median" of the profile ``column`` in
    the segment (a glob such as "events_*" sums the means of the matching columns), compared with ``op``
    (">=", ">", "<=", "<") to ``threshold``; a column the profiles lack never holds.
    """
    import fnmatch
    import operator

    ops = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
    for stat, column, op, threshold, noun in rule.get("names", ()):
        if stat == "median":
            v = medians.get(column, np.full(stats.k, np.nan))[i]
        else:
            js = [j for j, c in enumerate(stats.columns) if fnmatch.fnmatchcase(c, column)]
            v = float(np.nansum(seg_mean[i, js])) if js and np.isfinite(seg_mean[i, js]).any() else np.nan
        if np.isfinite(v) and ops[op](v, threshold):
            return noun
    return rule.get("default", "customers without a purchase yet")


def _buyers_value_index(stats, medians, value_index, rules):
    """The value index against the buyers' base: segments of non-buyers (named from their web behaviour) are left
    out, so that a base where most customers never bought does not make every buyer segment "big-spending"."""
    nb = rules.get("non_buyers", DEFAULT_LABEL_RULES["non_buyers"])
    med_orders = medians.get("orders")
    if not nb or med_orders is None:
        return value_index
    size = np.asarray(stats.size, dtype=np.float64)
    n = size.sum()
    buyers = np.isfinite(med_orders) & (med_orders >= nb.get("max_orders", 0.5)) & (size > 0)
    if n == 0 or buyers.all() or not buyers.any():
        return value_index
    with np.errstate(invalid="ignore", divide="ignore"):
        vshare = value_index * size / n  # each segment's share of the value column
        scale = (size[buyers].sum() / n) / np.nansum(vshare[buyers])
    return value_index * scale if np.isfinite(scale) and scale > 0 else value_index


def label_segments(stats, medians, value_index, seg_mean, base_mean, gap, traits=None, rules=None):
    """Unique plain labels, one per segment (see the module docstring for the rules)."""
    rules = DEFAULT_LABEL_RULES if rules is None else rules
    _check_rules(rules)
    k, cols = stats.k, stats.columns
    col = {c: j for j, c in enumerate(cols)}
    fcol = rules["frequency_column"]
    value_index = _buyers_value_index(stats, medians, value_index, rules)
    labels, words = [], []
    for i in range(k):
        if stats.size[i] == 0:
            labels.append("empty segment")
            words.append(None)
            continue
        rec = medians.get("recency_days", np.full(k, np.nan))[i]
        ten = medians.get("tenure_days", np.full(k, np.nan))[i]
        pdays = seg_mean[i, col["purchase_days"]] if "purchase_days" in col else np.nan
        med_orders = medians.get("orders", np.full(k, np.nan))[i]
        nb = rules.get("non_buyers", DEFAULT_LABEL_RULES["non_buyers"])
        if nb and np.isfinite(med_orders) and med_orders < nb.get("max_orders", 0.5):  # not buyers: web behaviour
            text = _non_buyer_noun(i, nb, stats, medians, seg_mean)
            labels.append(text[:1].upper() + text[1:])
            words.append(text)
            continue
        # orders are whole numbers and the median comes from a sketch (0.5%): 1 may read 0.995 or 1.005
        one_time = (np.isfinite(med_orders) and med_orders < 1.5) or (np.isfinite(pdays) and pdays < 1.5)
        head, tails = [], []
        if np.isfinite(gap) and gap > 0 and np.isfinite(ten) and ten < rules["new_tenure"] * gap:
            head.append("new")
        elif np.isfinite(gap) and gap > 0 and np.isfinite(rec):
            word = _level(rec / gap, rules["recency"], above=False)
            chk = rules.get("alive_check", DEFAULT_LABEL_RULES["alive_check"])
            alive = medians.get(chk["column"], np.full(k, np.nan))[i] if chk else np.nan
            if chk and not one_time and word in chk.get("words", {}) and np.isfinite(alive) and \
                    alive >= chk["max_p_alive"]:  # fmt: skip
                word = chk["words"][word]  # the model says most of them are still active
                if chk.get("tail"):
                    tails.append(chk["tail"])
            head.append(word)
        head.append(_level(value_index[i], rules["value"]))
        if one_time:
            noun = rules["nouns"]["one_time"]
        elif fcol in col and base_mean[col[fcol]] > 0 and \
                seg_mean[i, col[fcol]] >= rules["regular_ratio"] * base_mean[col[fcol]]:  # fmt: skip
            noun = rules["nouns"]["regular"]
        else:
            noun = rules["nouns"]["default"]
        text = " ".join(w for w in head + [noun] if w)
        for key in ("mix", "channel"):
            r = rules.get(key)
            if not r:
                continue
            # the categories (up to max_labels) over-represented min_lift times that together hold min_share
            cands = []
            for j, c in enumerate(cols):
                if not c.startswith(r["prefix"]) or c.endswith("_other"):
                    continue
                s, b = seg_mean[i, j], base_mean[j]
                if np.isfinite(s) and b > 0 and s / b >= r["min_lift"]:
                    # "candy___packaged" (from "CANDY - PACKAGED") reads "candy packaged"
                    cands.append((-s, " ".join(c[len(r["prefix"]) :].replace("_", " ").split())))
            # and every further one that holds min_share on its own (two as large: "mostly baby food and diapers"),
            # and every further one within `tie` of the last chosen (four equal shares: all four, whatever order)
            chosen, total, tie = [], 0.0, r.get("tie", 0.0)
            for neg, name in sorted(cands):
                if total >= r["min_share"] and -neg < r["min_share"] and -neg < (1.0 - tie) * chosen[-1][0]:
                    break
                chosen.append((-neg, name))
                total -= neg
            if chosen and total >= r["min_share"]:
                # equal shares (within tie of each other) are written in alphabetical order
                groups = []
                for share, name in chosen:
                    if groups and share >= (1.0 - tie) * groups[-1][0][0]:
                        groups[-1].append((share, name))
                    else:
                        groups.append([(share, name)])
                names = [nm for g in groups for _, nm in sorted(g, key=lambda x: x[1])]
                if len(names) > r.get("max_labels", 3) and r.get("many_phrase"):
                    tails.append(r["many_phrase"].format(n=len(names)))
                else:
                    names = names[: r.get("max_labels", 3)]
                    both = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
                    tails.append(r["phrase"].format(label=both))
        labels.append(", ".join([text[:1].upper() + text[1:]] + tails))
        words.append(text)
    # unique: what tells the segments that share a label apart (a median), else their strongest trait, else a number
    dist = rules.get("distinguish", DEFAULT_LABEL_RULES["distinguish"])
    for attempt in range(3):
        seen = {}
        for i, lab in enumerate(labels):
            seen.setdefault(lab, []).append(i)
        dups = [idx for idx in seen.values() if len(idx) > 1]
        if not dups:
            break
        for idx in dups:
            extra = None
            if attempt == 0:
                extra = _distinguish(idx, medians, dist)
            elif attempt == 1 and traits is not None and all(traits[i] for i in idx):
                extra = []
                for i in idx:
                    feat, lift = traits[i][0].rsplit(" x", 1)
                    extra.append(f"{'high' if float(lift) > 1 else 'low'} {' '.join(feat.replace('_', ' ').split())}")
                extra = extra if len(set(extra)) == len(idx) else None
            elif attempt == 2:
                extra = [f"#{n_i + 1}" for n_i in range(len(idx))]
            if extra is not None:
                for i, e in zip(idx, extra):
                    labels[i] += f" ({e})" if attempt < 2 else f" {e}"
    seen = set()
    for i, lab in enumerate(labels):  # a last guarantee
        while labels[i] in seen:
            labels[i] += "'"
        seen.add(labels[i])
    return labels


@renamed_keywords(k="n_clusters")
def describe_segments(profiles, labels, n_clusters, rules=None):
    """The segment table of ``profiles`` whose rows belong to segments ``labels`` (-1: not assigned).

    ``profiles`` is any table segone reads (pyarrow, pandas, polars, Parquet
    path); ``n_clusters`` is the number of segments (``k=`` is its deprecated
    name); ``rules`` replaces :data:`DEFAULT_LABEL_RULES` (checked by
    :func:`segone._validation.check_label_rules`).

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> prof = pa.table({"orders": [1, 2, 10, 12], "spend_mean": [5.0, 6.0, 50.0, 60.0]})
    >>> describe_segments(prof, np.array([0, 0, 1, 1]), 2).column("size").to_pylist()
    [2, 2]
    """
    from segone._validation import check_label_rules

    check_label_rules(rules)  # before the data
    k = check_int(n_clusters, "n_clusters", low=1)
    profiles = read_table(profiles, name="profiles")
    if k > max(profiles.num_rows, 1):
        raise ParameterError(
            f"n_clusters={k} segments for {profiles.num_rows} profile rows; a segment table has at most one segment "
            "per row: give the number of segments the labels come from."
        )
    return SegmentStats.of(profiles, labels, k).finish(rules)
