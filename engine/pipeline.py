"""The end-to-end job: events -> profiles -> features -> segments -> outputs."""

import datetime as _dt
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from segone._threads import effective_n_threads
from segone._validation import check_int
from segone.assign import assign
from segone.cluster import Segmenter
from segone.errors import ParameterError
from segone.io import atomic_directory, write_json, write_parquet
from segone.profile import build_profiles_with_summary
from segone.score import FeatureScorer
from segone.sketch import QuantileSketch

# profile columns summarised per segment (those present are used)
SUMMARY_COLUMNS = (
    "recency_days", "tenure_days", "orders", "spend_total", "spend_mean",
    "orders_90d", "spend_365d", "n_categories", "frequency", "monetary_value",
)  # fmt: skip


@dataclass
class RunResult:
    """What :func:`run` produced."""

    out: str
    assignments: pa.Table
    segments: pa.Table
    summary: dict
    segmenter: Segmenter = field(repr=False)
    scorer: FeatureScorer = field(repr=False)


def resolve_inputs(path, events=None, attributes=None):
    """A directory written by ``segone synth`` (transactions/, events/,
    customers/) or a transactions Parquet file / dataset."""
    if isinstance(path, (str, os.PathLike)) and os.path.isdir(os.path.join(os.fspath(path), "transactions")):
        base = os.fspath(path)
        tx = os.path.join(base, "transactions")
        if events is None and os.path.isdir(os.path.join(base, "events")):
            events = os.path.join(base, "events")
        if attributes is None and os.path.isdir(os.path.join(base, "customers")):
            attributes = os.path.join(base, "customers")
        return tx, events, attributes
    return path, events, attributes


def _label_segments(seg_means, overall):
    """Plain labels: a segment's median recency, orders and order value
    relative to the median customer (x1.5 or /1.5 sets a word)."""
    labels = []
    for row in seg_means:
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


class SegmentStats:
    """Mergeable per-segment statistics of the profile columns (sizes, sums, median sketches).

    Built per piece of data (:meth:`of`), merged exactly (:meth:`merge`), and
    turned into the segment table (:meth:`table`); the Dask layer builds one
    per partition.  Medians come from :class:`~segone.sketch.QuantileSketch`
    (0.5% relative error).
    """

    def __init__(self, k, columns):
        self.k, self.columns = k, list(columns)
        self.n = 0
        self.size = np.zeros(k, dtype=np.int64)
        self.sums = np.zeros((k, len(self.columns)))
        self.counts = np.zeros((k, len(self.columns)), dtype=np.int64)
        self.seg_sketch = [[QuantileSketch() for _ in range(k)] for _ in self.columns]
        self.all_sketch = [QuantileSketch() for _ in self.columns]

    @classmethod
    def of(cls, profiles, labels, k):
        cols = [c for c in SUMMARY_COLUMNS if c in profiles.column_names]
        st = cls(k, cols)
        labels = np.asarray(labels)
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
        if (self.k, self.columns) != (other.k, other.columns):
            raise ParameterError("cannot merge segment statistics of different segments or columns.")
        out = SegmentStats(self.k, self.columns)
        out.n = self.n + other.n
        out.size = self.size + other.size
        out.sums = self.sums + other.sums
        out.counts = self.counts + other.counts
        out.seg_sketch = [[a.merge(b) for a, b in zip(ra, rb)] for ra, rb in zip(self.seg_sketch, other.seg_sketch)]
        out.all_sketch = [a.merge(b) for a, b in zip(self.all_sketch, other.all_sketch)]
        return out

    def table(self):
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
        cols["label"] = pa.array(_label_segments(medians, overall))
        return pa.table(cols)


def describe_segments(profiles, labels, k):
    """One row per segment: size, share and mean profile, with a plain label (from medians)."""
    return SegmentStats.of(profiles, labels, k).table()


def write_model(directory, seg, scorer):
    """The fitted model as plain data (never pickle): centroids.npy, scorer.json, model.json."""
    os.makedirs(directory)
    np.save(os.path.join(directory, "centroids.npy"), seg.cluster_centers_, allow_pickle=False)
    with open(os.path.join(directory, "scorer.json"), "w") as f:
        f.write(scorer.to_json())
    write_json(
        {"format": "segone-model", "version": 1, "n_clusters": len(seg.cluster_centers_),
         "features": scorer.feature_names_out_,
         "params": {k: v for k, v in seg.get_params().items() if not isinstance(v, np.ndarray)}},
        os.path.join(directory, "model.json"),
    )  # fmt: skip


def run(
    input,
    out,
    clusters=8,
    *,
    events=None,
    attributes=None,
    as_of=None,
    schema=None,
    random_state=0,
    n_init=5,
    refine=2,
    backend="auto",
    n_threads=None,
    overwrite=False,
    verbose=False,
):
    """Run the whole job and write the outputs atomically to ``out``.

    Outputs: ``assignments.parquet`` (customer_id, segment, distance,
    margin), ``segments.parquet`` (one row per segment: size, share, mean
    profile, label), ``run.json`` (rows read and dropped and why, customers,
    segments, timings per stage), and ``model/`` (centroids as ``.npy``,
    scorer and model metadata as JSON; never pickle).

    Parameters
    ----------
    input : str, path or Arrow-compatible table
        A directory written by ``segone synth`` or a transactions dataset.
    out : str or path
        Output directory (must not exist or be empty unless ``overwrite``).
    clusters : int
        Number of segments.
    events, attributes : optional
        Web events and CRM attributes (found automatically in a synth directory).
    as_of : datetime, date or ISO string, optional
        Reference time of the profiles (default: latest transaction).
    random_state : int
        Seed of the segmenter; the same seed gives the same segments.
    n_init : int, default 5
        Seedings tried by the segmenter (cheap: each is compared on a sample).
    refine : int, default 2
        Full-data Lloyd passes after the mini-batch phase.
    backend, n_threads :
        Kernel backend and thread count (see :func:`segone.assign`).
    overwrite : bool
        Replace an existing output directory.
    verbose : bool
        Print progress per stage.

    Returns
    -------
    RunResult
    """
    clusters = check_int(clusters, "clusters", low=1)
    t_all = time.perf_counter()
    timings = {}
    tx, events, attributes = resolve_inputs(input, events, attributes)

    def log(msg):
        if verbose:
            print(f"[segone] {msg}", flush=True)

    t = time.perf_counter()
    profiles, summary = build_profiles_with_summary(
        tx, events=events, attributes=attributes, as_of=as_of, schema=schema, backend=backend, n_threads=n_threads
    )
    timings["profile"] = time.perf_counter() - t
    n = profiles.num_rows
    log(f"profiles: {n} customers in {timings['profile']:.2f}s")
    if clusters > n:
        raise ParameterError(
            f"clusters={clusters} is larger than the number of customers ({n}); use --clusters {n} or fewer."
        )

    t = time.perf_counter()
    scorer = FeatureScorer()
    X = scorer.fit_transform(profiles)
    timings["score"] = time.perf_counter() - t
    log(f"features: {X.shape[1]} columns in {timings['score']:.2f}s")

    t = time.perf_counter()
    seg = Segmenter(
        clusters, n_init=n_init, random_state=random_state, refine=refine, backend=backend, n_threads=n_threads
    )
    seg.fit(X)
    timings["segment"] = time.perf_counter() - t
    log(f"segments: k={clusters}, inertia {seg.inertia_:.6g} in {timings['segment']:.2f}s")

    # order segments by size (largest first) so ids read naturally
    seg.reorder_clusters(np.argsort(-np.bincount(seg.labels_, minlength=clusters), kind="stable"))

    t = time.perf_counter()
    res = assign(X, seg.cluster_centers_, margin=True, backend=backend, n_threads=n_threads)
    timings["assign"] = time.perf_counter() - t

    t = time.perf_counter()
    assignments = pa.table(
        {
            "customer_id": profiles.column("customer_id"),
            "segment": pa.array(res.labels),
            "distance": pa.array(res.distance),
            "margin": pa.array(res.margin),
        }
    )
    segments = describe_segments(profiles, res.labels, clusters)
    timings["describe"] = time.perf_counter() - t

    t = time.perf_counter()
    run_info = {
        "format": "segone-run",
        "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "segone_version": __import__("segone").__version__,
        "input": os.fspath(input) if isinstance(input, (str, os.PathLike)) else type(input).__name__,
        "rows_read": summary["rows_read"],
        "rows_dropped": summary["dropped"],
        "rows_excluded_after_as_of": summary["excluded_after_as_of"],
        "returns": summary["returns"],
        "as_of": summary["as_of"],
        "customers": n,
        "customers_without_purchase": summary["customers_without_purchase"],
        "customers_assigned": int((res.labels >= 0).sum()),
        "segments": clusters,
        "features": scorer.feature_names_out_,
        "inertia": seg.inertia_,
        "mini_batch_steps": seg.n_steps_,
        "passes": seg.n_iter_,
        "backend": backend,
        "n_threads": effective_n_threads(n_threads),
        "random_state": random_state,
        "n_init": n_init,
        "refine": refine,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_parquet(assignments, os.path.join(tmp, "assignments.parquet"))
        write_parquet(segments, os.path.join(tmp, "segments.parquet"))
        write_model(os.path.join(tmp, "model"), seg, scorer)
        timings["write"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_all
        run_info["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
        write_json(run_info, os.path.join(tmp, "run.json"))
    log(f"wrote {out} in {timings['write']:.2f}s (total {timings['total']:.2f}s)")
    return RunResult(os.path.abspath(os.fspath(out)), assignments, segments, run_info, seg, scorer)
