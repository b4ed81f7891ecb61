"""segone on Dask: the same stages for data that outgrows one process.

This module mirrors the single-process API on Dask collections, the way
``xgboost.dask`` and ``lightgbm.dask`` do, and keeps one implementation of
every computation: the Dask layer only partitions, reduces and broadcasts.

* :func:`build_profiles` takes Dask DataFrames (or Parquet paths) of events,
  finds the global labels and ``as_of`` in one light pass, shuffles every
  input by a hash of the customer id so that a customer's rows meet in one
  partition, and runs the single-process profile kernel per partition with
  the global labels (so every partition has the same columns).
* :class:`FeatureScorer` fits per-partition mergeable states, tree-reduced
  (``split_every``), and transforms partition by partition.
* :class:`Segmenter` fits mini-batch k-means on a uniform sample drawn across
  the chunks, then runs full-data Lloyd refine passes: each pass is one
  partial-sums kernel call per chunk, tree-reduced to ``(sums, counts,
  inertia)``.  A fit costs a few passes over the data, not a task per batch.
* :func:`assign` maps the assignment kernel over the chunks, centroids
  broadcast once.

Work runs on the current ``distributed`` client when there is one (or the one
passed as ``client=``), else on Dask's local threaded scheduler.
"""

import os

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dask import delayed

from segone import cluster as _cluster
from segone import profile as _profile
from segone import score as _score
from segone._backend import get_kernels
from segone._threads import effective_n_threads
from segone._validation import check_int, check_random_state
from segone.assign import Assignment
from segone.assign import assign as _assign
from segone.errors import EmptyInputError, NotFittedError, ParameterError

PART = "_segone_part"


def _compute(*objs, client=None):
    """dask.compute on ``client`` when given, else on the default (current client or threads)."""
    if client is not None:
        return dask.compute(*objs, scheduler=client)
    return dask.compute(*objs)


def _shuffle_method(client):
    """p2p on a distributed client (bounded memory), the task shuffle on the local schedulers."""
    if client is not None:
        return "p2p"
    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return "tasks"
    try:
        from distributed import default_client

        default_client()
        return "p2p"
    except (ImportError, ValueError):
        return "tasks"


def _tree_reduce(items, fn, split_every=8):
    """Delayed pairwise-or-wider reduction: ``fn(a, b)`` folded in groups of ``split_every``."""
    split_every = check_int(split_every, "split_every", low=2)

    def fold(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    items = list(items)
    if not items:
        raise EmptyInputError("nothing to reduce: the collection has no partitions.")
    while len(items) > 1:
        items = [delayed(fold)(*items[i : i + split_every]) for i in range(0, len(items), split_every)]
    return items[0]


# ------------------------------------------------------------------ profiles
def _frame(x, name, npartitions=None):
    if x is None:
        return None
    if isinstance(x, dd.DataFrame):
        return x
    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        if not os.path.exists(path):
            raise ParameterError(f"{name}: path {path!r} does not exist.")
        return dd.read_parquet(path)
    if isinstance(x, pa.Table):
        x = x.to_pandas(types_mapper=pd.ArrowDtype)
    if isinstance(x, pd.DataFrame):
        return dd.from_pandas(x, npartitions=npartitions or 1)
    raise ParameterError(
        f"{name}: expected a Dask DataFrame, a Parquet path, a pandas DataFrame or a pyarrow Table, "
        f"got {type(x).__name__}."
    )


def _arrow(pdf):
    if PART in pdf.columns:
        pdf = pdf.drop(columns=PART)
    # an empty categorical (e.g. the meta of a Parquet dictionary column) has no
    # Arrow dictionary type: give it plain values
    empty_cats = [c for c, t in pdf.dtypes.items() if isinstance(t, pd.CategoricalDtype) and len(t.categories) == 0]
    if empty_cats:
        pdf = pdf.astype({c: object for c in empty_cats})
    return pa.Table.from_pandas(pdf, preserve_index=False)


def _with_part(pdf, cid, n_parts):
    """Add the partition key: a hash of the customer id (same id -> same key in every input)."""
    ids = pdf[cid]
    if pd.api.types.is_integer_dtype(ids.dtype):
        ids = ids.astype("int64")
    else:
        ids = ids.astype(object)
    h = pd.util.hash_pandas_object(ids, index=False).to_numpy()
    return pdf.assign(**{PART: (h % np.uint64(n_parts)).astype(np.int64)})


def _label_stats(pdf, cid, tcol, acol, cat_role, ch_role, as_of_us, drop_returns):
    """One partition's share of the global pass: latest timestamp, positive spend per category, labels."""
    summary = {"rows_read": {}, "dropped": {}}
    got = _profile._collect(_arrow(pdf), "transactions", cid, tcol, summary, amount=acol,
                            categorical=(cat_role, ch_role))  # fmt: skip
    ts, amount = got["ts"], got["amount"]
    out = {"max_ts": int(ts.max()) if ts.size else None, "aware": got["aware"], "cat": {}, "channel": [],
           "rows_read": summary["rows_read"].get("transactions", 0), "dropped": summary["dropped"],
           "ids": _id_range(got["ids"])}  # fmt: skip
    keep = ts <= as_of_us if as_of_us is not None else np.ones(ts.size, dtype=bool)
    out["late"] = int((~keep).sum())
    if drop_returns:
        out["dropped_returns"] = int((keep & (amount < 0)).sum())
        keep &= amount >= 0
    out["returns"] = int((keep & (amount < 0)).sum())
    if cat_role in got["cats"]:
        codes, labels = got["cats"][cat_role]
        valid = keep & (codes >= 0)
        spend = np.bincount(codes[valid], weights=np.maximum(amount[valid], 0.0), minlength=len(labels))
        out["cat"] = dict(zip(labels, spend.tolist()))
    if ch_role in got["cats"]:
        out["channel"] = list(got["cats"][ch_role][1])
    return out


def _event_labels(pdf, cid, tcol, ecol, as_of_us):
    summary = {"rows_read": {}, "dropped": {}}
    got = _profile._collect(_arrow(pdf), "events", cid, tcol, summary, categorical=(ecol,))
    late = int((got["ts"] > as_of_us).sum()) if as_of_us is not None else None
    return {"labels": list(got["cats"].get(ecol, (None, []))[1]), "rows_read": summary["rows_read"].get("events", 0),
            "dropped": summary["dropped"], "max_ts": int(got["ts"].max()) if got["ts"].size else None,
            "late": late, "ids": _id_range(got["ids"])}  # fmt: skip


def _id_range(ids):
    """(min, max) of a partition's customer ids, None when empty or not comparable as integers."""
    if ids is None or len(ids) == 0 or not pa.types.is_integer(ids.type):
        return None
    mm = pc.min_max(ids)
    return int(mm["min"].as_py()), int(mm["max"].as_py())


def _attr_range(pdf, cid):
    col = pdf[cid].dropna()
    if col.empty or not pd.api.types.is_integer_dtype(col.dtype):
        return {"ids": None, "rows": len(pdf)}
    return {"ids": (int(col.min()), int(col.max())), "rows": len(pdf)}


def _aligned(tx_ranges, others):
    """True when partition i of every input holds the same customers: the transaction
    partitions cover disjoint increasing id ranges and every other input has the same
    number of partitions, partition i inside the i-th range (so no shuffle is needed)."""
    if any(r is None for r in tx_ranges):
        return False
    for a, b in zip(tx_ranges, tx_ranges[1:]):
        if a[1] >= b[0]:
            return False
    lows = [r[0] for r in tx_ranges][1:]
    for ranges in others:
        if len(ranges) != len(tx_ranges):
            return False
        for i, r in enumerate(ranges):
            if r is None:
                continue  # an empty partition fits anywhere (a non-integer id was caught above)
            if (i > 0 and r[0] < lows[i - 1]) or (i < len(lows) and r[1] >= lows[i]):
                return False
    return True


def _per_partition(frame, fn, *args):
    """A Series with ``fn(partition, *args)`` (any object) per partition, in partition order."""

    def wrap(pdf):
        return pd.Series([fn(pdf, *args)], dtype=object)

    return frame.map_partitions(wrap, meta=pd.Series([], dtype=object), enforce_metadata=False)


def _merge_ordered(lists):
    seen = {}
    for lst in lists:
        for x in lst:
            seen.setdefault(x, None)
    return list(seen)


def _profile_part(tx, ev, at, kwargs, meta=None):
    try:
        prof, _ = _profile.build_profiles_with_summary(
            _arrow(tx), events=None if ev is None else _arrow(ev), attributes=None if at is None else _arrow(at),
            _partition=True, **kwargs,
        )  # fmt: skip
    except EmptyInputError:
        if meta is None:
            raise
        return meta
    out = prof.to_pandas(types_mapper=pd.ArrowDtype)
    if meta is not None:
        out = out[list(meta.columns)].astype(meta.dtypes.to_dict())
    return out


def _profile_parts(*frames, which, kwargs, out_meta):
    it = iter(frames)
    tx, ev, at = (next(it) if present else None for present in which)
    return _profile_part(tx, ev, at, kwargs, out_meta)


def build_profiles(transactions, *, events=None, attributes=None, as_of=None, schema=None,
                   windows=(30, 90, 365), top_categories=20, drop_returns=False, npartitions=None,
                   client=None, n_threads=1, partitioned_by_customer=None, _with_summary=False):  # fmt: skip
    """:func:`segone.build_profiles` on Dask collections; returns a Dask DataFrame.

    Parameters are those of :func:`segone.build_profiles`, plus:

    npartitions : int or None
        Partitions of the output (customers are hashed into them); default:
        the number of partitions of ``transactions``.
    client : distributed.Client or None
        Where the global pass (labels, ``as_of``) runs; default: the current one.
    n_threads : int
        Kernel threads per task (1: Dask's workers supply the parallelism).
    partitioned_by_customer : bool or None
        True: partition i of every input holds the same customers (no
        shuffle); False: always shuffle by customer; None (default): detect
        it from the per-partition id ranges (integer ids), as a dataset
        written by ``segone synth`` or partitioned by customer range has it.

    Every customer of any input lands in exactly one partition and appears
    exactly once; columns (and their order) are the same in every partition.
    Inside a partition rows are sorted by customer id; partitions are not.

    Examples
    --------
    >>> import segone.dask
    >>> from segone.synth import generate
    >>> d = generate(1000, seed=0)
    >>> prof = segone.dask.build_profiles(d.transactions, npartitions=3)
    >>> int(prof.shape[0].compute())
    1000
    """
    roles = _profile._schema(schema)
    cid, tcol, acol = roles["customer_id"], roles["ts"], roles["amount"]
    tx = _frame(transactions, "transactions")
    ev = _frame(events, "events")
    at = _frame(attributes, "attributes")
    n_parts = check_int(npartitions or tx.npartitions, "npartitions", low=1)
    as_of_us = _profile._as_of_us(as_of)

    # one light pass: as_of, the top categories, the channel and event labels.
    # map_partitions (not to_delayed) so that each statistic fuses with the read of
    # its partition: no partition is materialised as a task result and shipped
    per_part = []
    per_part.append(_per_partition(tx, _label_stats, cid, tcol, acol, roles["category"], roles["channel"], as_of_us,
                                   drop_returns))  # fmt: skip
    if ev is not None:
        per_part.append(_per_partition(ev, _event_labels, cid, tcol, roles["event"], as_of_us))
    if at is not None:
        per_part.append(_per_partition(at, _attr_range, cid))
    results = [list(r) for r in _compute(*per_part, client=client)]
    stats = results.pop(0)
    ev_stats = results.pop(0) if ev is not None else []
    at_info = results.pop(0) if at is not None else []
    at_ranges = [a["ids"] for a in at_info]
    at_rows = sum(a["rows"] for a in at_info)
    if as_of_us is None:
        latest = [s["max_ts"] for s in stats if s["max_ts"] is not None]
        if not latest:
            raise EmptyInputError("transactions: no row with a customer id and a timestamp; nothing to profile.")
        as_of_us = max(latest)
    cat_spend = {}
    for s in stats:
        for lab, v in s["cat"].items():
            cat_spend[lab] = cat_spend.get(lab, 0.0) + v
    cat_order = sorted(cat_spend, key=lambda lab: -cat_spend[lab])  # stable: first appearance breaks ties
    labels = {
        "category": cat_order[:top_categories],
        "channel": _merge_ordered(s["channel"] for s in stats),
        "event": _merge_ordered(s["labels"] for s in ev_stats),
    }
    if not any(s["cat"] or s["max_ts"] is not None for s in stats) and not cat_spend:
        labels.pop("category")
    summary = {"rows_read": {"transactions": sum(s["rows_read"] for s in stats)}, "dropped": {},
               "excluded_after_as_of": {"transactions": sum(s["late"] for s in stats)},
               "returns": sum(s["returns"] for s in stats), "categories": labels["category"],
               "as_of": _profile._dt.datetime.fromtimestamp(as_of_us / 1e6, tz=_profile._dt.timezone.utc).isoformat()}  # fmt: skip
    for s in stats + ev_stats:
        for key, v in s["dropped"].items():
            summary["dropped"][key] = summary["dropped"].get(key, 0) + v
    if drop_returns:
        summary["dropped"]["transactions: negative amount (drop_returns=True)"] = sum(s["dropped_returns"] for s in stats)
    if at is not None:
        summary["rows_read"]["attributes"] = int(at_rows)
    if ev is not None:
        summary["rows_read"]["events"] = sum(s["rows_read"] for s in ev_stats)
        late = [s["late"] for s in ev_stats]
        if None in late:  # as_of was the default: the latest transaction, known only now
            late = [0 if s["max_ts"] is None or s["max_ts"] <= as_of_us else None for s in ev_stats]
        summary["excluded_after_as_of"]["events"] = None if None in late else sum(late)
    kwargs = dict(as_of=np.datetime64(int(as_of_us), "us"), schema=schema, windows=windows,
                  top_categories=top_categories, drop_returns=drop_returns, n_threads=n_threads, labels=labels)  # fmt: skip

    # meta from a small sample of the real inputs
    sample = tx.head(5, npartitions=-1)
    meta = _profile_part(
        sample, None if ev is None else ev._meta, None if at is None else at.head(1, npartitions=-1), kwargs
    ).iloc[:0]

    method = _shuffle_method(client)
    others = ([[s["ids"] for s in ev_stats]] if ev is not None else []) + ([at_ranges] if at is not None else [])
    if partitioned_by_customer is None:
        partitioned_by_customer = npartitions in (None, tx.npartitions) and _aligned([s["ids"] for s in stats], others)
    summary["shuffled"] = not partitioned_by_customer

    def shuffled(frame):
        if partitioned_by_customer:
            return frame  # partition i of every input already holds the same customers
        keyed = frame.map_partitions(_with_part, cid, n_parts, meta=frame._meta.assign(**{PART: np.int64(0)}))
        return keyed.shuffle(on=PART, npartitions=n_parts, shuffle_method=method)

    # partition i of every shuffled input holds the same customers: map them side by side
    if partitioned_by_customer and any(f.npartitions != tx.npartitions for f in (ev, at) if f is not None):
        raise ParameterError(
            "partitioned_by_customer=True needs the same number of partitions in every input "
            f"(transactions {tx.npartitions}, events {None if ev is None else ev.npartitions}, "
            f"attributes {None if at is None else at.npartitions}); leave it to None to shuffle."
        )
    frames = [shuffled(f) for f in (tx, ev, at) if f is not None]
    which = (True, ev is not None, at is not None)
    out = dd.map_partitions(_profile_parts, *frames, which=which, kwargs=kwargs, out_meta=meta, meta=meta,
                            align_dataframes=False, enforce_metadata=False)  # fmt: skip
    return (out, summary) if _with_summary else out


# ------------------------------------------------------------------- scoring
def _table(pdf):
    return pa.Table.from_pandas(pdf, preserve_index=False)


def _transform_part(pdf, scorer):
    return _score.FeatureScorer.transform(scorer, _table(pdf))


class FeatureScorer(_score.FeatureScorer):
    """:class:`segone.FeatureScorer` that also fits and transforms Dask DataFrames.

    ``fit`` computes one mergeable state per partition and tree-reduces them
    (``split_every`` at a time); ``transform`` returns a Dask Array (float32,
    one chunk per partition).  NumPy / Arrow inputs behave as in the parent.
    """

    split_every = 8

    def fit(self, profiles, client=None):
        if not isinstance(profiles, dd.DataFrame):
            return super().fit(profiles)
        self._check_params()
        states = [delayed(self._part_state)(p) for p in profiles.to_delayed()]
        (state,) = _compute(_tree_reduce(states, _score.ScorerState.merge, self.split_every), client=client)
        return self.fit_state(state)

    def _part_state(self, pdf):
        table = _table(pdf)
        return self._state(table, self._resolve(table))

    def transform(self, profiles):
        if not isinstance(profiles, dd.DataFrame):
            return super().transform(profiles)
        if not hasattr(self, "state_"):
            raise NotFittedError("this FeatureScorer is not fitted yet; call fit(profiles) first.")
        d = len(self.feature_names_out_)
        # one float32 block per partition (row counts unknown until computed)
        return profiles.map_partitions(_transform_part, self, meta=np.empty((0, d), dtype=np.float32))

    def fit_transform(self, profiles, client=None):
        if not isinstance(profiles, dd.DataFrame):
            return super().fit_transform(profiles)
        return self.fit(profiles, client=client).transform(profiles)


# ---------------------------------------------------------------- clustering
def _chunk_partial_sums(X, centers, backend, n_threads):
    kern = get_kernels(backend, "partial_sums")
    _, sums, counts, inertia = _cluster._full_pass(kern, np.ascontiguousarray(X), None, centers, n_threads)
    return sums, counts, float(inertia)


def _add_partials(a, b):
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def _take_rows(X, idx):
    return np.ascontiguousarray(X[idx])


class Segmenter(_cluster.Segmenter):
    """:class:`segone.Segmenter` that also fits Dask Arrays.

    On a Dask Array, ``fit`` draws a uniform sample of ``sample_size`` rows
    across the chunks (default ``max(200 * n_clusters, 20 * batch_size)``,
    at most all rows), runs the single-process fit on it (k-means++ and the
    mini-batch steps), then ``refine`` full-data Lloyd passes: each pass is one
    partial-sums kernel call per chunk, tree-reduced (``split_every``).
    Centroids that lose all members move to far-away rows of the sample.
    ``labels_`` is a lazy Dask Array; ``predict`` / ``transform`` map the
    kernels over the chunks.
    """

    split_every = 8
    sample_size = None

    def fit(self, X, sample_weight=None, client=None, order_key=None):
        """Fit on a NumPy array or Arrow table (as the parent) or a Dask Array.

        ``order_key`` (a Dask Array with one value per row, e.g. the customer
        ids) puts the sample in key order before the local fit, so the result
        does not depend on how the rows are partitioned: when the sample is
        the whole data, the fit equals ``segone.Segmenter`` on rows sorted by
        that key (the order ``segone.build_profiles`` returns).
        """
        if not isinstance(X, da.Array):
            return super().fit(X, sample_weight=sample_weight)
        if sample_weight is not None:
            raise ParameterError("sample_weight is not supported for Dask inputs yet; fit without it.")
        if X.ndim != 2:
            raise ParameterError(f"X must be 2-D, got shape {X.shape}.")
        if np.isnan(X.shape[0]):
            X = X.compute_chunk_sizes()
        n, d = X.shape
        k = check_int(self.n_clusters, "n_clusters", low=1)
        if k > n:
            raise ParameterError(f"n_clusters={k} is larger than the number of samples ({n}).")
        rng = check_random_state(self.random_state)
        m = self.sample_size or max(200 * k, 20 * self.batch_size)
        m = min(int(m), n)
        rows = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
        bounds = np.cumsum((0,) + X.chunks[0])
        takes, keys = [], []
        key_blocks = None
        if order_key is not None:
            if order_key.shape[0] != n and not np.isnan(order_key.shape[0]):
                raise ParameterError(f"order_key has {order_key.shape[0]} values for {n} rows.")
            key_blocks = order_key.rechunk((X.chunks[0],)).to_delayed().ravel()
        for i, blk in enumerate(X.to_delayed().ravel()):
            sel = rows[(rows >= bounds[i]) & (rows < bounds[i + 1])] - bounds[i]
            if sel.size:
                takes.append(delayed(_take_rows)(blk, sel))
                if key_blocks is not None:
                    keys.append(delayed(_take_rows)(key_blocks[i], sel))
        (sample_parts,) = _compute(takes, client=client)
        (key_parts,) = _compute(keys, client=client) if keys else ([],)
        sample = np.concatenate(sample_parts)
        if key_parts:
            sample = np.ascontiguousarray(sample[np.argsort(np.concatenate(key_parts), kind="stable")])
        local = _cluster.Segmenter(**{**self.get_params(), "refine": 0, "random_state": rng})
        local.fit(sample)
        centers = local.cluster_centers_
        self.n_steps_ = local.n_steps_
        nt = effective_n_threads(self.n_threads)
        blocks = X.to_delayed().ravel()
        n_iter = 0
        for it in range(self.refine + 1):
            parts = [delayed(_chunk_partial_sums)(b, centers, self.backend, nt) for b in blocks]
            ((sums, counts, inertia),) = _compute(_tree_reduce(parts, _add_partials, self.split_every), client=client)
            n_iter += 1
            if it == self.refine:
                break
            new = _cluster._lloyd_update(centers, sums, counts)
            moved = self._relocate_empty(sample, None, new, counts, rng)
            if not moved and np.array_equal(new, centers):
                break
            centers = new
            self._log(f"refine pass {it + 1}: inertia {inertia:.6g}")
        self.cluster_centers_ = centers
        self.inertia_ = float(inertia)
        self.counts_ = counts
        self.n_iter_ = n_iter
        self.n_features_in_ = d
        self.labels_ = self.predict(X)
        return self

    def predict(self, X):
        if not isinstance(X, da.Array):
            return super().predict(X)
        return assign(X, self.cluster_centers_, backend=self.backend, n_threads=self.n_threads).labels


def _assign_block(X, centroids, margin, backend, n_threads):
    res = _assign(np.ascontiguousarray(X), centroids, margin=margin, backend=backend, n_threads=n_threads)
    cols = [res.labels.astype(np.float64), res.distance.astype(np.float64)]
    if margin:
        cols.append(res.margin.astype(np.float64))
    return np.column_stack(cols)


def assign(X, centroids, *, margin=False, backend="auto", n_threads=1):
    """:func:`segone.assign` over the chunks of a Dask Array (centroids broadcast once).

    Returns an :class:`~segone.Assignment` of lazy Dask Arrays (``n_invalid``
    is None: NaN rows raise when the chunk is computed).
    """
    if not isinstance(X, da.Array):
        return _assign(X, centroids, margin=margin, backend=backend, n_threads=n_threads)
    centroids = np.ascontiguousarray(centroids, dtype=X.dtype)
    c = delayed(centroids)  # one copy in the graph, shared by every chunk
    if X.chunks[1] != (X.shape[1],):
        X = X.rechunk({1: -1})
    width = 3 if margin else 2
    out = X.map_blocks(_assign_block, c, margin, backend, n_threads, dtype=np.float64,
                       chunks=(X.chunks[0], (width,)))  # fmt: skip
    labels = out[:, 0].astype(np.int32)
    dist = out[:, 1].astype(X.dtype)
    marg = out[:, 2].astype(X.dtype) if margin else None
    return Assignment(labels, dist, marg, None)


# ------------------------------------------------------------------ the job
def _persist(obj, client, verbose):
    """Persist on the workers; with ``verbose`` show distributed's progress bar while it runs."""
    if client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            return obj.persist()  # local scheduler: nothing to show a bar for
    obj = client.persist(obj)
    if verbose:
        from distributed import progress, wait

        progress(obj)
        wait(obj)
    return obj


def _assign_part(pdf, scorer, centers, backend):
    X = _score.FeatureScorer.transform(scorer, _table(pdf))
    res = _assign(X, centers, margin=True, backend=backend, n_threads=1)
    return pd.DataFrame({"customer_id": pdf["customer_id"].to_numpy(), "segment": res.labels,
                         "distance": res.distance, "margin": res.margin})  # fmt: skip


def _segment_stats(pdf, asg, k):
    from segone.pipeline import SegmentStats

    return SegmentStats.of(_table(pdf), asg["segment"].to_numpy(), k)


def run(input, out, clusters=8, **kwargs):
    """:func:`segone.run` on Dask: the same stages and outputs, partition by partition.

    Parameters are those of :func:`segone.run` (``input``, ``out``,
    ``clusters``, ``events``, ``attributes``, ``as_of``, ``schema``,
    ``random_state``, ``n_init``, ``refine``, ``backend``, ``overwrite``,
    ``verbose``), plus ``npartitions`` (customer partitions; default: those
    of the transactions) and ``client`` (default: the current one, else the
    local threaded scheduler).

    ``assignments.parquet`` is a directory of Parquet files (one per
    partition, written by the workers, so ``out`` must be on storage that the
    workers and the client share); the other outputs are as in
    :func:`segone.run`.  The whole output directory is still written under a
    temporary name and renamed when complete.  Returns the run summary
    (``run.json``) as a dict.
    """
    client = kwargs.get("client")
    if client is not None:
        with client.as_current():  # every computation below runs on this client
            return _run(input, out, clusters, **kwargs)
    return _run(input, out, clusters, **kwargs)


def _run(input, out, clusters=8, *, events=None, attributes=None, as_of=None, schema=None, random_state=0,
        n_init=5, refine=2, npartitions=None, backend="auto", client=None, overwrite=False, verbose=False,
        partitioned_by_customer=None):  # fmt: skip
    import datetime as _dt
    import platform
    import time

    from segone.io import atomic_directory, write_json, write_parquet
    from segone.pipeline import SegmentStats, resolve_inputs, write_model

    clusters = check_int(clusters, "clusters", low=1)
    t_all = time.perf_counter()
    timings = {}

    def log(msg):
        if verbose:
            print(f"[segone.dask] {msg}", flush=True)

    tx, events, attributes = resolve_inputs(input, events, attributes)
    t = time.perf_counter()
    profiles, summary = build_profiles(tx, events=events, attributes=attributes, as_of=as_of, schema=schema,
                                       npartitions=npartitions, client=client, _with_summary=True,
                                       partitioned_by_customer=partitioned_by_customer)  # fmt: skip
    profiles = _persist(profiles, client, verbose)
    n, no_purchase = _compute(profiles.shape[0], (profiles["orders"] == 0).sum(), client=client)
    n, no_purchase = int(n), int(no_purchase)
    timings["profile"] = time.perf_counter() - t
    log(f"profiles: {n} customers in {timings['profile']:.2f}s")
    if clusters > n:
        raise ParameterError(f"clusters={clusters} is larger than the number of customers ({n}).")

    t = time.perf_counter()
    scorer = FeatureScorer().fit(profiles, client=client)
    X = scorer.transform(profiles)
    X = _persist(X, client, verbose)
    timings["score"] = time.perf_counter() - t
    log(f"features: {len(scorer.feature_names_out_)} columns in {timings['score']:.2f}s")

    t = time.perf_counter()
    seg = Segmenter(clusters, n_init=n_init, random_state=random_state, refine=refine, backend=backend)
    ids = profiles["customer_id"]
    if pd.api.types.is_integer_dtype(ids.dtype):
        ids = ids.astype("int64")
    ids = ids.to_dask_array(lengths=True)
    seg.fit(X, client=client, order_key=ids)
    order = np.argsort(-seg.counts_, kind="stable")  # largest segment first, as in segone.run
    seg.cluster_centers_ = np.ascontiguousarray(seg.cluster_centers_[order])
    seg.counts_ = seg.counts_[order]
    timings["segment"] = time.perf_counter() - t
    log(f"segments: k={clusters}, inertia {seg.inertia_:.6g} in {timings['segment']:.2f}s")

    t = time.perf_counter()
    meta = pd.DataFrame({"customer_id": profiles._meta["customer_id"], "segment": np.empty(0, np.int32),
                         "distance": np.empty(0, np.float32), "margin": np.empty(0, np.float32)})  # fmt: skip
    assignments = profiles.map_partitions(_assign_part, scorer, seg.cluster_centers_, backend, meta=meta)
    assignments = _persist(assignments, client, verbose)
    stats = [delayed(_segment_stats)(p, a, clusters)
             for p, a in zip(profiles.to_delayed(), assignments.to_delayed())]  # fmt: skip
    (seg_stats,) = _compute(_tree_reduce(stats, SegmentStats.merge, 8), client=client)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        assignments.to_parquet(os.path.join(tmp, "assignments.parquet"), write_index=False, compute=True)
        segments = seg_stats.table()
        n_assigned = int(seg_stats.size.sum())
        timings["assign_write"] = time.perf_counter() - t
        write_parquet(segments, os.path.join(tmp, "segments.parquet"))
        write_model(os.path.join(tmp, "model"), seg, scorer)
        timings["total"] = time.perf_counter() - t_all
        run_info = {
            "format": "segone-run", "version": 1, "engine": "dask",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "segone_version": __import__("segone").__version__,
            "input": os.fspath(input) if isinstance(input, (str, os.PathLike)) else type(input).__name__,
            "rows_read": summary["rows_read"], "rows_dropped": summary["dropped"],
            "rows_excluded_after_as_of": summary["excluded_after_as_of"], "returns": summary["returns"],
            "as_of": summary["as_of"], "customers": n, "customers_without_purchase": no_purchase,
            "customers_assigned": n_assigned, "segments": clusters, "features": scorer.feature_names_out_,
            "inertia": seg.inertia_, "mini_batch_steps": seg.n_steps_, "passes": seg.n_iter_,
            "partitions": profiles.npartitions, "shuffled": summary["shuffled"], "random_state": random_state, "n_init": n_init, "refine": refine,
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
        }  # fmt: skip
        write_json(run_info, os.path.join(tmp, "run.json"))
    log(f"wrote {out} (total {timings['total']:.2f}s)")
    return run_info
