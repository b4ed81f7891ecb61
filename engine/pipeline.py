"""The job: the one sequence of stages, over any engine.

``run`` reads the inputs through an engine, then runs PROFILE -> SCORE ->
SEGMENT -> ASSIGN -> DESCRIBE -> WRITE.  Every computation is a function or a
mergeable state (:mod:`segone._state`) of the stage's own module; the engine
(:class:`~segone._engine.LocalEngine` in this process,
:class:`segone.dask.DaskEngine` on a cluster) only maps those functions over
its parts, tree-reduces the states and writes the parts.  This module computes
nothing itself: it decides the order of the stages and what goes into
run.json.
"""

import datetime as _dt
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone import profile as _profile
from segone._engine import LocalEngine
from segone._validation import check_int, check_n_clusters
from segone.assign import assign_piece
from segone.describe import PersonaModel, PersonaState, SegmentStats
from segone.errors import ParameterError
from segone.io import atomic_directory, resolve_inputs, write_json, write_parquet
from segone.model import write_model
from segone.score import FeatureScorer, ScorerState
from segone.segment import PartialSums, Segmenter, sample_piece

# the segmenter learns on at most this many customers (a uniform sample chosen
# by a hash of the customer id), then refines on all of them
DEFAULT_SAMPLE_SIZE = 1_000_000


@dataclass
class RunResult:
    """What :func:`run` produced.

    ``assignments`` is the assignments table when the engine is local (None
    on Dask, where it stays distributed and is written part by part).
    """

    out: str
    assignments: pa.Table | None
    segments: pa.Table
    summary: dict
    segmenter: Segmenter = field(repr=False)
    scorer: FeatureScorer = field(repr=False)


def _engine_for(engine, client, n_threads, npartitions):
    if engine is None and client is None:
        return LocalEngine(n_threads=n_threads), True
    if engine in (None, "dask") or client is not None and engine in (None, "dask"):
        from segone.dask import DaskEngine

        return DaskEngine(client=client, npartitions=npartitions, n_threads=n_threads), True
    if engine == "local":
        return LocalEngine(n_threads=n_threads), True
    if hasattr(engine, "map") and hasattr(engine, "reduce"):
        return engine, False
    raise ParameterError(
        f"engine={engine!r} is not an engine; use 'local', 'dask', a segone.dask.DaskEngine or a LocalEngine."
    )


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
    sample_size=DEFAULT_SAMPLE_SIZE,
    n_traits=3,
    phrases=None,
    label_rules=None,
    backend="auto",
    n_threads=None,
    engine=None,
    client=None,
    npartitions=None,
    partitioned_by_customer=None,
    overwrite=False,
    verbose=False,
):
    """Run the whole job and write the outputs atomically to ``out``.

    Outputs: ``assignments.parquet`` (customer_id, segment, distance,
    margin), ``personas.parquet`` (customer_id, segment, traits, summary:
    what sets each customer apart), ``segments.parquet`` (one row per
    segment: size, shares of customers and of spend, medians, means and lifts
    of every feature, attribute mixes, traits, a unique label), ``run.json`` (rows read and dropped and why, customers,
    segments, timings per stage, the engine), and ``model/`` (centroids as
    ``.npy``, scorer and model metadata as JSON; never pickle).

    The same job runs in this process (default) or on Dask (``engine="dask"``
    or a ``client``), with the same stages and the same results: on Dask,
    ``assignments.parquet`` is a directory of Parquet files, one per
    partition, written by the workers.

    Parameters
    ----------
    input : str, path or Arrow-compatible table
        A directory written by ``segone synth`` or a transactions input (a
        Parquet file or directory, a pyarrow Table, anything with
        ``__arrow_c_stream__``; on Dask also a Dask DataFrame).
    out : str or path
        Output directory (must not exist or be empty unless ``overwrite``).
    clusters : int
        Number of segments.
    events, attributes : optional
        Web events and CRM attributes (found automatically in a synth directory).
    as_of : datetime, date or ISO string, optional
        Reference time of the profiles (default: latest transaction).
    schema : dict, optional
        Maps roles (customer_id, ts, amount, category, channel, event) to
        your column names, e.g. ``{"customer_id": "user", "ts": "time"}``.
    random_state : int
        Seed of the segmenter; the same seed gives the same segments.
    n_init : int, default 5
        Seedings tried by the segmenter (cheap: each is compared on a sample).
    refine : int, default 2
        Full-data Lloyd passes after the mini-batch phase.
    n_traits : int, default 3
        Traits per customer in personas.parquet.
    phrases : list of dict, optional
        The persona vocabulary (default :data:`segone.DEFAULT_PHRASES`).
    label_rules : dict, optional
        The segment label rules (default :data:`segone.DEFAULT_LABEL_RULES`).
    sample_size : int, default 1,000,000
        The segmenter's seeding and mini-batch phase see at most this many
        customers, chosen by a hash of the customer id (all of them when there
        are fewer); the refine passes see every customer.  The sample does not
        depend on the engine or the partitioning.
    backend, n_threads :
        Kernel backend and thread count (see :func:`segone.assign`).  On Dask
        the thread count is resolved on each worker (default 1 per task).
    engine : None, "local", "dask", or an engine object
        Where the job runs (default: this process, or Dask when ``client`` is
        given).
    client : distributed.Client, scheduler address or None
        The Dask cluster (``engine="dask"`` without a client uses the current
        client, else Dask's threaded scheduler).
    npartitions : int, optional
        Dask: customer partitions (default: the pieces of the transactions).
    partitioned_by_customer : bool or None
        Dask: True when piece i of every input holds the same customers (no
        shuffle), False to always shuffle, None to detect it.
    overwrite : bool
        Replace an existing output directory.
    verbose : bool
        Print progress per stage.

    Returns
    -------
    RunResult

    Examples
    --------
    >>> import segone, tempfile, os
    >>> from segone.synth import generate
    >>> d = generate(2000, seed=0)
    >>> res = segone.run(d.transactions, os.path.join(tempfile.mkdtemp(), "out"), 4,
    ...                  events=d.events, attributes=d.customers)
    >>> res.summary["customers"], res.segments.num_rows
    (2000, 4)
    """
    clusters = check_int(clusters, "clusters", low=1)
    sample_size = check_int(sample_size, "sample_size", low=1)
    eng, owned = _engine_for(engine, client, n_threads, npartitions)
    try:
        return _run(
            eng, input, out, clusters, events=events, attributes=attributes, as_of=as_of, schema=schema,
            random_state=random_state, n_init=n_init, refine=refine, sample_size=sample_size, n_traits=n_traits,
            phrases=phrases, label_rules=label_rules, backend=backend,
            n_threads=n_threads, partitioned_by_customer=partitioned_by_customer, overwrite=overwrite,
            verbose=verbose,
        )  # fmt: skip
    finally:
        if owned:
            eng.close()


def _run(eng, input, out, clusters, *, events, attributes, as_of, schema, random_state, n_init, refine, sample_size,
         n_traits, phrases, label_rules, backend, n_threads, partitioned_by_customer, overwrite, verbose):  # fmt: skip
    t_all = time.perf_counter()
    timings = {}

    def log(msg):
        if verbose:
            print(f"[segone:{eng.name}] {msg}", flush=True)

    def stage(name):
        timings[name] = time.perf_counter() - t0
        return timings[name]

    # EVENTS IN + PROFILE
    t0 = time.perf_counter()
    sources = dict(zip(("transactions", "events", "attributes"), resolve_inputs(input, events, attributes)))
    profiles, summary, facts = profile_stage(
        eng, sources, as_of=as_of, schema=schema, backend=backend, n_threads=n_threads,
        partitioned_by_customer=partitioned_by_customer, verbose=verbose,
    )  # fmt: skip
    n = summary["customers"]
    log(f"profiles: {n} customers in {stage('profile'):.2f}s")
    check_n_clusters(clusters, n, "clusters", "customers")

    # SCORE
    t0 = time.perf_counter()
    scorer = FeatureScorer(backend=backend, n_threads=n_threads)
    scorer.fit_state(eng.reduce(eng.map(ScorerState.of, profiles, scorer=scorer)))
    X = eng.persist(eng.map(scorer.transform, profiles), "features")
    log(f"features: {len(scorer.feature_names_out_)} columns in {stage('score'):.2f}s")

    # SEGMENT: learn on a customer-hash sample in customer-id order, refine on every part
    t0 = time.perf_counter()
    seg = Segmenter(clusters, n_init=n_init, random_state=random_state, refine=refine, backend=backend,
                    n_threads=n_threads)  # fmt: skip
    sample = _fit_sample(eng, profiles, X, min(1.0, sample_size / n), random_state, schema)

    def full_pass(centers):
        return eng.reduce(eng.map(PartialSums.of, X, centers=centers, backend=backend, n_threads=n_threads))

    seg.fit_passes(sample, full_pass)
    del sample
    # largest segment first, so that ids read naturally
    seg.reorder_clusters(np.argsort(-seg.counts_, kind="stable"))
    log(f"segments: k={clusters}, inertia {seg.inertia_:.6g} in {stage('segment'):.2f}s")

    # ASSIGN
    t0 = time.perf_counter()
    cid = _profile.resolve_schema(schema)["customer_id"]
    assignments = eng.persist(
        eng.map(assign_piece, profiles, X, centroids=seg.cluster_centers_, id_column=cid, backend=backend,
                n_threads=n_threads), "assignments")  # fmt: skip
    stage("assign")

    # DESCRIBE: the segment table, and a persona for every customer
    t0 = time.perf_counter()
    stats = eng.reduce(eng.map(_segment_stats, profiles, assignments, k=clusters))
    segments = stats.finish(label_rules)
    stage("describe")
    t0 = time.perf_counter()
    persona_model = PersonaModel(n_traits, phrases=phrases, backend=backend, n_threads=n_threads)
    persona_model.fit_state(eng.reduce(eng.map(PersonaState.of, profiles, model=persona_model)))
    personas = eng.persist(eng.map(_personas_piece, profiles, assignments, model=persona_model, id_column=cid),
                           "personas")  # fmt: skip
    log(f"personas: {n} customers in {stage('personas'):.2f}s")

    # WRITE
    t0 = time.perf_counter()
    info = run_summary(input, summary, scorer, seg, stats, eng.facts() | facts, backend=backend,
                       random_state=random_state, n_init=n_init, refine=refine, sample_size=sample_size,
                       n_traits=n_traits)  # fmt: skip
    with atomic_directory(out, overwrite=overwrite) as tmp:
        eng.write_parts(assignments, os.path.join(tmp, "assignments.parquet"))
        eng.write_parts(personas, os.path.join(tmp, "personas.parquet"))
        write_parquet(segments, os.path.join(tmp, "segments.parquet"))
        write_model(os.path.join(tmp, "model"), seg, scorer)
        stage("write")
        timings["total"] = time.perf_counter() - t_all
        info["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
        write_json(info, os.path.join(tmp, "run.json"))
    log(f"wrote {out} in {timings['write']:.2f}s (total {timings['total']:.2f}s)")
    local = eng.gather(assignments) if eng.name == "local" else None
    return RunResult(os.path.abspath(os.fspath(out)), local[0] if local else None, segments, info, seg, scorer)


def profile_stage(eng, sources, *, as_of=None, schema=None, backend="auto", n_threads=None,
                  partitioned_by_customer=None, npartitions=None, verbose=False, **params):  # fmt: skip
    """PROFILE over an engine: (profile parts, run-summary dict, engine facts).

    With more than one part per input, a light scan fixes what every piece
    must share (the category, channel and event columns, ``as_of``) and tells
    whether the inputs are already split by customer; the engine then brings
    each customer's rows into one piece (a shuffle, unless they already are)
    and the profile kernel runs per piece.  With one part, the piece is the
    whole input and the kernel finds all of that itself in its one pass.
    """
    parts = eng.read(sources)
    labels, as_of_us, split = None, None, True
    if any(eng.count(p) > 1 for p in parts.values()) or partitioned_by_customer is False:
        scans = {role: eng.reduce(eng.map(_profile.ScanState.of, p, role=role, schema=schema, as_of=as_of,
                                          drop_returns=params.get("drop_returns", False)))
                 for role, p in parts.items()}  # fmt: skip
        labels, as_of_us = _profile.global_labels(scans, as_of=as_of, top_categories=params.get("top_categories", 20),
                                                  top_channels=params.get("top_channels", 10))  # fmt: skip
        split = _profile.split_by_customer(scans) if partitioned_by_customer is None else partitioned_by_customer
    elif as_of is not None:
        as_of_us = _profile.parse_as_of(as_of)
    pieces = eng.by_customer(parts, split, npartitions, cid=_profile.resolve_schema(schema)["customer_id"])
    results = eng.map(_profile_piece, pieces, labels=labels, as_of_us=as_of_us, schema=schema, backend=backend,
                      n_threads=n_threads, **params)  # fmt: skip
    results = eng.persist(results, "profiles")
    summary = eng.reduce(eng.map(_second, results)).finish()
    facts = {} if eng.name == "local" else {"partitions": eng.count(pieces), "shuffled": not split}
    return eng.map(_first, results), summary, facts


def _profile_piece(piece, **kwargs):
    tx, ev, at = piece
    return _profile.profile_piece(tx, ev, at, **kwargs)


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _fit_sample(eng, profiles, X, fraction, seed, schema):
    """The segmenter's fit rows: the customer-hash sample of every part, in customer-id order."""
    cid = _profile.resolve_schema(schema)["customer_id"]
    parts = eng.gather(eng.map(_sample_part, profiles, X, fraction=fraction, seed=seed, cid=cid))
    if len(parts) == 1:
        return parts[0][0]  # one part: its rows are in customer-id order already
    rows = np.concatenate([p[0] for p in parts])
    ids = pa.chunked_array([p[1] for p in parts])
    return np.ascontiguousarray(rows[pc.sort_indices(ids).to_numpy()])


def _sample_part(profiles, X, *, fraction, seed, cid):
    ids = profiles.column(cid)
    rows, ids = sample_piece(X, ids, fraction, seed)
    return rows, ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids


def _segment_stats(profiles, assignments, *, k):
    return SegmentStats.of(profiles, assignments.column("segment").to_numpy(), k)


def _personas_piece(profiles, assignments, *, model, id_column):
    return model.personas(profiles, assignments.column("segment").to_numpy(), id_column=id_column)


def run_summary(input, summary, scorer, seg, stats, engine_facts, **settings):
    """run.json: the one summary builder of every engine (engine facts under their own keys)."""
    return {
        "format": "segone-run",
        "version": 2,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "segone_version": __import__("segone").__version__,
        "input": os.fspath(input) if isinstance(input, (str, os.PathLike)) else type(input).__name__,
        "rows_read": summary["rows_read"],
        "rows_dropped": summary["dropped"],
        "rows_excluded_after_as_of": summary["excluded_after_as_of"],
        "returns": summary["returns"],
        "as_of": summary["as_of"],
        "customers": summary["customers"],
        "customers_without_purchase": summary["customers_without_purchase"],
        "orders_from": summary.get("orders_from", "rows"),
        "folded_into_other": summary.get("folded", {}),
        "customers_assigned": int(stats.size.sum()),
        "segments": seg.cluster_centers_.shape[0],
        "features": scorer.feature_names_out_,
        "inertia": seg.inertia_,
        "mini_batch_steps": seg.n_steps_,
        "passes": seg.n_iter_,
        **settings,
        "engine": engine_facts,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
