"""Segment statistics as a mergeable state, and the segment table.

:class:`SegmentStats` is built per piece of data (profiles and the segment of
every customer), merged exactly, and finished into the segment table: one row
per segment with its size, share, mean profile and a plain label.  Medians
come from :class:`~segone.sketch.QuantileSketch` (0.5% relative error), so
the table is the same whether the customers were seen in one piece or in
many.
"""

import numpy as np
import pyarrow as pa

from segone._state import State, array_from_data, array_to_data
from segone.errors import ParameterError
from segone.io import read_table
from segone.sketch import QuantileSketch

# profile columns summarised per segment (those present are used)
SUMMARY_COLUMNS = (
    "recency_days", "tenure_days", "orders", "spend_total", "spend_mean",
    "orders_90d", "spend_365d", "n_categories", "frequency", "monetary_value",
)  # fmt: skip


def label_segments(seg_medians, overall):
    """Plain labels: a segment's median recency, orders and order value
    relative to the median customer (x1.5 or /1.5 sets a word)."""
    labels = []
    for row in seg_medians:
        parts = []
        r, o, m = row.get("recency_days"), row.get("orders"), row.get("spend_mean")
        if m is not None and overall.get("spend_mean"):
            ratio = m / overall["spend_mean"]
            parts.append("high-value" if ratio > 1.5 else "low-value" if ratio < 0.67 else "mid-value")
        if r is not None and overall.get("recency_days"):
            ratio = r / overall["recency_days"]
            parts.append("recent" if ratio < 0.67 else "lapsed" if ratio > 1.5 else "")
        if o is not None and overall.get("orders"):
            ratio = o / overall["orders"]
            parts.append("frequent" if ratio > 1.5 else "occasional" if ratio < 0.67 else "")
        t = row.get("tenure_days")
        if t is not None and overall.get("tenure_days") and t / overall["tenure_days"] < 0.33:
            parts.append("new")
        labels.append(", ".join(p for p in parts if p) or "average")
    return labels


class SegmentStats(State):
    """Mergeable per-segment statistics of the profile columns (sizes, sums, median sketches).

    Built per piece (:meth:`of`), merged exactly (:meth:`merge`), finished
    into the segment table (:meth:`finish`).  Customers with segment -1 (not
    assigned) count in ``n`` but in no segment.
    """

    kind = "segment_stats"

    def __init__(self, k, columns):
        self.k, self.columns = int(k), list(columns)
        self.n = 0
        self.size = np.zeros(self.k, dtype=np.int64)
        self.sums = np.zeros((self.k, len(self.columns)))
        self.counts = np.zeros((self.k, len(self.columns)), dtype=np.int64)
        self.seg_sketch = [[QuantileSketch() for _ in range(self.k)] for _ in self.columns]
        self.all_sketch = [QuantileSketch() for _ in self.columns]

    @classmethod
    def of(cls, profiles, labels, k, columns=None):
        """The statistics of one piece: ``profiles`` (a table) and the segment of each row."""
        profiles = read_table(profiles, name="profiles")
        labels = np.asarray(labels)
        if labels.shape != (profiles.num_rows,):
            raise ParameterError(
                f"labels has shape {labels.shape} but the profiles have {profiles.num_rows} rows; "
                "give one segment per profile row."
            )
        if labels.size and (labels.max() >= k or labels.min() < -1):
            raise ParameterError(f"labels must lie in -1..{k - 1}; found {labels.min()}..{labels.max()}.")
        cols = columns if columns is not None else [c for c in SUMMARY_COLUMNS if c in profiles.column_names]
        st = cls(k, cols)
        st.n = profiles.num_rows
        st.size = np.bincount(labels[labels >= 0], minlength=k).astype(np.int64)
        order = np.argsort(labels, kind="stable")  # one sort by segment, shared by every column
        lab_sorted = labels[order]
        for j, name in enumerate(cols):
            v = np.asarray(profiles.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
            ok = np.isfinite(v) & (labels >= 0)
            st.sums[:, j] = np.bincount(labels[ok], weights=v[ok], minlength=k)
            st.counts[:, j] = np.bincount(labels[ok], minlength=k)
            st.all_sketch[j].update(v[ok])
            keep = ok[order]
            ls, vs = lab_sorted[keep], v[order][keep]
            bounds = np.searchsorted(ls, np.arange(k + 1))
            for i in range(k):
                st.seg_sketch[j][i].update(vs[bounds[i] : bounds[i + 1]])
        return st

    def merge(self, other):
        self._check_same(other, "k", "columns")
        out = SegmentStats(self.k, self.columns)
        out.n = self.n + other.n
        out.size = self.size + other.size
        out.sums = self.sums + other.sums
        out.counts = self.counts + other.counts
        out.seg_sketch = [[a.merge(b) for a, b in zip(ra, rb)] for ra, rb in zip(self.seg_sketch, other.seg_sketch)]
        out.all_sketch = [a.merge(b) for a, b in zip(self.all_sketch, other.all_sketch)]
        return out

    def finish(self):
        """The segment table: segment, size, share, ``mean_*`` per column and a plain label."""
        k = self.k
        cols = {"segment": pa.array(np.arange(k, dtype=np.int32)), "size": pa.array(self.size)}
        cols["share"] = pa.array(self.size / max(self.n, 1))
        medians, overall = [{} for _ in range(k)], {}
        for j, name in enumerate(self.columns):
            with np.errstate(invalid="ignore", divide="ignore"):
                m = np.where(self.counts[:, j] > 0, self.sums[:, j] / np.maximum(self.counts[:, j], 1), np.nan)
            cols[f"mean_{name}"] = pa.array(m)
            # labels compare medians: robust to the few big spenders that drag means
            sk = self.all_sketch[j]
            overall[name] = sk.quantile(0.5) if sk.count else None
            for i in range(k):
                s = self.seg_sketch[j][i]
                medians[i][name] = s.quantile(0.5) if s.count else None
        cols["label"] = pa.array(label_segments(medians, overall))
        return pa.table(cols)

    table = finish

    def _data(self):
        return {
            "k": self.k, "columns": self.columns, "n": int(self.n),
            "size": array_to_data(self.size), "sums": array_to_data(self.sums), "counts": array_to_data(self.counts),
            "seg_sketch": [[s.to_dict() for s in row] for row in self.seg_sketch],
            "all_sketch": [s.to_dict() for s in self.all_sketch],
        }  # fmt: skip

    @classmethod
    def _from_data(cls, d):
        st = cls(d["k"], d["columns"])
        st.n = int(d["n"])
        st.size = array_from_data(d["size"], "size")
        st.sums = array_from_data(d["sums"], "sums")
        st.counts = array_from_data(d["counts"], "counts")
        st.seg_sketch = [[QuantileSketch.from_dict(s) for s in row] for row in d["seg_sketch"]]
        st.all_sketch = [QuantileSketch.from_dict(s) for s in d["all_sketch"]]
        return st


def describe_segments(profiles, labels, k):
    """One row per segment: size, share and mean profile, with a plain label (from medians).

    ``profiles`` is any table segone reads (pyarrow, pandas, polars, Parquet
    path); ``labels`` the segment of each row (-1: not assigned).

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> prof = pa.table({"orders": [1, 2, 10, 12], "spend_mean": [5.0, 6.0, 50.0, 60.0]})
    >>> describe_segments(prof, np.array([0, 0, 1, 1]), 2).column("size").to_pylist()
    [2, 2]
    """
    return SegmentStats.of(profiles, labels, k).finish()
