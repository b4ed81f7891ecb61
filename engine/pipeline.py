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

from segone import _progress
from segone import actions as _actions
from segone import outputs
from segone import clv as _clv
from segone import privacy as _privacy
from segone import profile as _profile
from segone import tuning as _tuning
from segone import _memory
from segone import track as _track
from segone._deprecation import renamed_keywords, warn_deprecated
from segone._engine import LocalEngine, check_engine
from segone._validation import (
    check_n_clusters,
    check_path,
    check_previous_output,
    check_horizon_days,
    check_offers,
    check_run_parameters,
    default_sample_size,
)
from segone.assignment import assign_piece
from segone.describe import PersonaModel, PersonaState, RFMGrid, SegmentStats
from segone.errors import DataError, ParameterError
from segone.io import atomic_directory, resolve_inputs, write_json, write_parquet
from segone.model import write_model
from segone.score import FeatureScorer, ScorerState
from segone.segment import PartialSums, Segmenter, sample_piece

# what the progress line says while the next stage runs, keyed by the stage just finished
_NEXT_STAGE = {
    None: "reading and profiling customers", "profile": "scoring features", "score": "finding segments",
    "segment": "assigning customers", "assign": "predicting value", "predict": "tracking and describing",
    "track": "describing segments", "actions": "describing segments", "describe": "writing personas", "personas": "writing the outputs",
    "write": "done",
}  # fmt: skip

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


def _engine_for(engine, client, n_threads, npartitions, verbose=False):
    """(engine, owned): the engine to run on, and whether this call made it (and must close it).

    The one way to run on Dask is ``engine=segone.dask.DaskEngine(...)``; ``engine="dask"``, ``client=`` and
    ``npartitions=`` still build one for this call, with a FutureWarning.  The arguments were checked by
    :func:`_check_engine_argument`.
    """
    if not (engine is None or isinstance(engine, str)):
        return check_engine(engine), False
    if client is not None:
        warn_deprecated("segone.run(client=...)", "engine=segone.dask.DaskEngine(client)", stacklevel=5)
    if npartitions is not None:
        warn_deprecated("segone.run(npartitions=...)", "engine=segone.dask.DaskEngine(npartitions=...)",
                        stacklevel=5)  # fmt: skip
    if engine == "dask":
        warn_deprecated("segone.run(engine='dask')", "engine=segone.dask.DaskEngine(...)", stacklevel=5)
    if engine == "dask" or (engine is None and client is not None):
        from segone.dask import DaskEngine

        return DaskEngine(client=client, npartitions=npartitions, n_threads=n_threads, verbose=verbose), True
    return LocalEngine(n_threads=n_threads), True


def check_run_arguments(*args, **kwargs):
    """Check the arguments of :func:`run` as it does before any input is read; returns the number of segments.

    The same arguments as :func:`run`.  Every parameter (one helper per rule
    of :mod:`segone._validation`: the number of segments and the sweep
    range, ``sample_size``, ``n_init``, ``refine``, ``n_traits``,
    ``horizon_months``, ``discount_rate``, ``value_penalizer``, ``freq``,
    ``min_segment_size``, ``label_rules``, ``phrases``, ``n_threads``,
    ``engine``, the actions' ``horizon_days`` and ``offers``), then the paths (``input``, ``events``, ``attributes``,
    ``id_key_file`` exist; ``previous`` is an earlier run's output).  The
    command line calls it before it starts a Dask cluster.

    Examples
    --------
    >>> check_run_arguments("data/", "out/", n_clusters=0)
    Traceback (most recent call last):
    ...
    segone.errors.ParameterError: n_clusters must be a number of segments (an integer >= 1) or 'auto', got 0; e.g. 8.
    """
    import inspect

    bound = inspect.signature(run).bind(*args, **kwargs)
    bound.apply_defaults()
    return _check_arguments(bound.arguments)


def _check_arguments(a):
    """The checks of :func:`check_run_arguments` on the dict of run's arguments (parameters first, paths last)."""
    clusters = check_run_parameters(
        n_clusters=a["n_clusters"], k_min=a["k_min"], k_max=a["k_max"], n_init=a["n_init"], refine=a["refine"],
        sample_size=a["sample_size"], n_traits=a["n_traits"], horizon_months=a["horizon_months"],
        discount_rate=a["discount_rate"], value_penalizer=a["value_penalizer"], freq=a["freq"],
        min_segment_size=a["min_segment_size"], label_rules=a["label_rules"], phrases=a["phrases"],
        n_threads=a["n_threads"],
    )  # fmt: skip
    _check_engine_argument(a["engine"], a["client"], a["npartitions"])
    check_horizon_days(a.get("horizon_days", 30))
    check_offers(a.get("offers", 3))
    if a.get("value_model") == "bgbb":  # discrete time: its backtest, not a CLV over months (segone.backtesting)
        raise ParameterError("value_model='bgbb': BG/BB is a discrete-time model (transaction opportunities), so "
                             "segone run, which predicts purchases and CLV over a horizon in months, does not take "
                             "it; compare it on your data with `segone backtest INPUT --models bgnbd,bgbb --freq W` "
                             f"and use one of {[*_clv.PURCHASE_MODELS, 'auto']} here.")  # fmt: skip
    if a.get("value_model") not in (*_clv.PURCHASE_MODELS, "auto"):
        raise ParameterError(f"value_model={a.get('value_model')!r} is not a purchase model; use one of "
                             f"{[*_clv.PURCHASE_MODELS, 'auto']}.")  # fmt: skip
    if a.get("value_by") not in (None, "segment"):
        raise ParameterError(f"value_by={a.get('value_by')!r}: use None (one fit for every customer) or 'segment'.")
    if a.get("treatment") is not None and a["previous"] is None:
        raise ParameterError("treatment= needs previous=: campaign effects compare who moved between two runs; give "
                             "the earlier run's output directory.")  # fmt: skip
    for name in ("input", "events", "attributes"):
        check_path(a[name], name)
    check_path(a["out"], "out", must_exist=False)
    check_path(a["id_key_file"], "id_key_file", kind="file")
    if a.get("state") is not None:
        check_path(a["state"], "state", must_exist=False)
        if os.path.abspath(os.fspath(a["state"])) == os.path.abspath(os.fspath(a["out"])):
            raise ParameterError("state= must be another directory than out=; e.g. out='night-0', state='state'.")
    if a["previous"] is not None:
        check_previous_output(a["previous"], hash_ids=a["hash_ids"])  # a previous run that can be tracked
    if a.get("treatment") is not None:
        if isinstance(a["treatment"], (str, os.PathLike)):
            check_path(a["treatment"], "treatment")
        from segone import effects as _effects

        _effects.plan_groups(_effects.read_treatment(a["treatment"]))  # columns, nulls, groups: before any work
    return clusters


def _check_engine_argument(engine, client=None, npartitions=None):
    """The ``engine`` argument before any work: None, "local", "dask" (deprecated) or an :class:`~segone.Engine`."""
    if isinstance(engine, str) and engine not in ("local", "dask"):
        raise ParameterError(f"engine={engine!r} is not valid; give None (this process) or an engine: "
                             "segone.dask.DaskEngine(...) to run on Dask, segone.LocalEngine(...).")  # fmt: skip
    if engine == "local" and (client is not None or npartitions is not None):
        raise ParameterError("engine='local' runs in this process; drop client= and npartitions=, or give "
                             "engine=segone.dask.DaskEngine(client, npartitions=...).")  # fmt: skip
    if not (engine is None or isinstance(engine, str)):
        if client is not None or npartitions is not None:
            raise ParameterError("client= and npartitions= are options of segone.dask.DaskEngine; with an engine "
                                 "object give them to the engine, not to segone.run.")  # fmt: skip
        check_engine(engine)


@renamed_keywords(clusters="n_clusters")
def run(
    input,
    out,
    n_clusters=8,
    *,
    k_min=None,
    k_max=None,
    events=None,
    attributes=None,
    as_of=None,
    schema=None,
    random_state=0,
    n_init=5,
    refine=2,
    sample_size=None,
    n_traits=3,
    phrases=None,
    label_rules=None,
    value=True,
    value_penalizer=0.0,
    value_model="bgnbd",
    value_by=None,
    freq="D",
    horizon_months=12,
    discount_rate=0.01,
    previous=None,
    treatment=None,
    backend="auto",
    n_threads=None,
    engine=None,
    client=None,
    npartitions=None,
    partitioned_by_customer=None,
    overwrite=False,
    verbose=False,
    consent=None,
    consent_scope="export",
    consent_default=False,
    hash_ids=False,
    id_key_file=None,
    min_segment_size=None,
    small_segments="merge",
    keep_columns=(),
    personal_columns=(),
    purposes=None,
    actions=False,
    horizon_days=30,
    offers=3,
    new_only=False,
    state=None,
):
    """Run the whole job and write the outputs atomically to ``out``.

    Outputs: ``assignments.parquet`` (customer_id, segment, distance,
    margin), ``personas.parquet`` (customer_id, segment, traits, summary:
    what sets each customer apart), ``segments.parquet`` (one row per
    segment: size, shares of customers and of spend, medians, means and lifts
    of every feature, attribute mixes, traits, a unique label), ``run.json`` (rows read and dropped and why, customers,
    segments, timings per stage, the engine), and ``model/`` (centroids as
    ``.npy``, scorer and model metadata as JSON; never pickle).

    The same job runs in this process (default) or on Dask
    (``engine=segone.dask.DaskEngine(...)``), with the same stages and the
    same results: on Dask, ``assignments.parquet`` is a directory of Parquet
    files, one per partition, written by the workers.

    Every parameter is checked before any input is read (one helper per rule
    in :mod:`segone._validation`): a bad one raises
    :class:`~segone.errors.ParameterError` naming it, the value and the fix.

    Parameters
    ----------
    input : str, path or Arrow-compatible table
        A directory written by ``segone synth`` or a transactions input (a
        Parquet file or directory, a pyarrow Table, anything with
        ``__arrow_c_stream__``; on Dask also a Dask DataFrame).
    out : str or path
        Output directory (must not exist or be empty unless ``overwrite``).
    n_clusters : int or "auto", default 8
        Number of segments, or "auto": a sweep over ``k_min..k_max`` (default
        2..20) chooses it by the rule of :func:`segone.tuning.choose_k` (the
        table goes to sweep.parquet and run.json).  (``clusters=`` is its
        deprecated name.)
    k_min, k_max : int, optional
        The range of the sweep (``n_clusters="auto"`` only).
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
        The persona vocabulary (default :data:`segone.DEFAULT_PHRASES`); every
        rule's keys and placeholders are checked up front
        (:func:`segone._validation.check_phrases`).
    label_rules : dict, optional
        The segment label rules (default :data:`segone.DEFAULT_LABEL_RULES`);
        every key is checked up front, a misspelt one is named
        (:func:`segone._validation.check_label_rules`).
    value : bool, default True
        Predict every customer's value (BG/NBD + Gamma-Gamma on the BTYD
        columns): ``expected_purchases`` over ``horizon_months``, ``p_alive``,
        ``expected_order_value`` and ``clv`` (monthly ``discount_rate``) in
        assignments.parquet, their means and totals in segments.parquet, the
        fitted parameters in run.json.  A model the data cannot support (a
        fit that does not converge, predictions that overflow) is skipped
        (its columns null) and run.json and the report say why; the run
        completes.
    value_penalizer : float, default 0.0
        L2 penalty on the value models' parameters, lifetimes'
        ``penalizer_coef`` (``penalizer * sum of squared parameters`` added to
        the mean negative log-likelihood), for BG/NBD and Gamma-Gamma.  0:
        unpenalized, with one refit at 0.001 when a fit fails (said in
        run.json); 0.001 to 0.1 steadies fits on data with extreme customers.
    value_model : {"bgnbd", "pareto", "mbgnbd", "auto"}, default "bgnbd"
        The purchase model (:data:`segone.clv.PURCHASE_MODELS`: BG/NBD,
        Pareto/NBD, MBG/NBD).  "auto" backtests them first on the data's own
        past (the last ``min(90, span / 4)`` days held out,
        :func:`segone.backtest`) and uses the one with the lowest error on
        the holdout's purchases; run.json's ``clv.value_model`` records the
        choice and the figures.  It costs a second profile pass.
    value_by : None or "segment"
        "segment": the purchase and spend models are fitted per segment and
        shrunk toward the fit on every customer (random effects,
        :mod:`segone.value_segments`); the per-segment parameters go to
        run.json's ``clv.by_segment`` and segments.parquet (``purchase_*``).
    freq : {"D", "W", "M"}, default "D"
        Period of the BTYD columns the value models are fitted on (days,
        weeks or months, as lifetimes' ``freq``).
    horizon_months : int, default 12
        Months ahead of the predicted purchases and value (1..1200).
    discount_rate : float, default 0.01
        Monthly discount rate of the customer value, in [0, 1].
    previous : str or path, optional
        The output directory of an earlier run: the fit warm-starts from its
        segments (same features and number of segments), segments keep their
        ids (matched one-to-one on the customers both runs share), and
        ``migration.parquet`` / ``moves.parquet`` say who moved where.
    treatment : path or table, optional
        With ``previous``: who a campaign reached between the two runs
        (``customer_id``, ``group`` "treatment" / "control" or free names,
        optionally ``campaign`` and ``sent_at``).  ``effects.parquet`` and
        run.json's ``effects`` say, per campaign and previous segment, how the
        treated customers moved compared with the control group (or, without
        one, with the untreated customers of the same segment: observational),
        with 95% bootstrap intervals (:func:`segone.effects.campaign_effects`).
    state : str or path, optional
        Also build the state store of this run there (:func:`segone.update.init_state`): every customer's
        history, profile and assignment, which ``segone update`` / :class:`segone.update.Updater` then fold new
        events into without reading the history again.
    sample_size : int or None
        The segmenter (and the sweep of ``n_clusters="auto"``) learns on at
        most this many customers, chosen by a hash of the customer id (all of
        them when there are fewer); the refine passes see every customer.  The
        sample does not depend on the engine or the partitioning.  None: the
        one default of every ``sample_size`` in segone,
        ``max(131072, 128 * n_clusters)``.
    backend, n_threads :
        Kernel backend and thread count (see :func:`segone.assign`).  On Dask
        the thread count is resolved on each worker (default 1 per task).
    engine : None or an engine
        Where the job runs: None (or "local") in this process;
        ``segone.dask.DaskEngine(client, npartitions=...)`` on Dask (the one
        way to run on Dask); any object that provides :class:`segone.Engine`.
        ``engine="dask"`` is deprecated.
    client, npartitions :
        Deprecated: give them to ``segone.dask.DaskEngine`` instead (they
        still build one for this call, with a FutureWarning).
    partitioned_by_customer : bool or None
        Dask: True when piece i of every input holds the same customers (no
        shuffle), False to always shuffle, None to detect it.
    overwrite : bool
        Replace an existing output directory.
    verbose : bool
        Print progress per stage.
    consent : str or list of str, optional
        Consent columns of the attributes: ``"COLUMN"`` (boolean) or
        ``"COLUMN=purpose"`` (comma-separated purposes, or lists); every rule
        must hold.  Customers without consent are never written per customer.
    consent_scope : {"export", "processing"}
        "processing" also drops them right after the profiles are built.
    consent_default : bool, default False
        What a customer without a consent record (null, or no attributes
        row) counts as.
    hash_ids : bool, default False
        Write ``HMAC-SHA256(key, id)`` (32 hex characters) instead of the
        customer id in every output; the key comes from ``id_key_file`` or
        the environment variable ``SEGONE_ID_KEY`` (at least 16 bytes).
    id_key_file : path, optional
    min_segment_size : int, optional
        No exported cell stands for fewer customers: smaller segments are
        merged into their nearest (``small_segments="merge"``) or withheld
        (``"withhold"``: their customers get a null segment), small cells of
        the segment, migration and RFM tables are suppressed.
    keep_columns, personal_columns : list of str
        Personal attribute columns to keep anyway; more columns to treat as
        personal (e-mail, phone, name, address, birth date are detected).
    purposes : list of str, optional
        Consent purposes known besides :data:`segone.privacy.DEFAULT_PURPOSES`.
    actions : bool, default False
        Opt-in while the stage is far slower than the profile stage (about
        20x at 100,000 customers, and it keeps the input pieces in memory
        until it has run): write ``actions.parquet``: per customer, the next
        best offers (the
        ``offers`` categories of highest propensity to be bought in the next
        ``horizon_days`` days, with the expected spend and a reason in words)
        and the preferred channel, weekday and hour (:mod:`segone.actions`).
        It goes through the export path like assignments.parquet: customers
        without consent get no row, ids are pseudonymised with ``hash_ids``,
        segments carry the exported ids.  The persona sentence gains the top
        offer.  Data that cannot support it (no category column, a history
        shorter than 2 x ``horizon_days``) skip the stage with the reason in
        run.json's ``actions``; the run completes.
    horizon_days : int, default 30
        The propensity horizon in days (1..3650).
    offers : int, default 3
        Offers per customer (1..50).
    new_only : bool, default False
        Offer only categories the customer has not bought yet.

    Returns
    -------
    RunResult

    Examples
    --------
    >>> import segone, tempfile, os
    >>> from segone.synth import generate
    >>> d = generate(2000, seed=0)
    >>> res = segone.run(d.transactions, os.path.join(tempfile.mkdtemp(), "out"), n_clusters=4,
    ...                  events=d.events, attributes=d.customers)
    >>> res.summary["customers"], res.segments.num_rows
    (2000, 4)
    """
    clusters = _check_arguments(locals())  # every argument, before any input is read
    value_penalizer = float(value_penalizer)
    inputs = resolve_inputs(input, events, attributes)
    plan = _privacy.check_privacy(
        attributes=inputs[2], inputs=inputs, schema=schema, consent=consent, consent_scope=consent_scope,
        consent_default=consent_default, hash_ids=hash_ids, id_key_file=id_key_file,
        min_segment_size=min_segment_size, small_segments=small_segments, keep_columns=keep_columns,
        personal=personal_columns, purposes=purposes,
    )  # fmt: skip
    # the output is checked (writable, no overlap with an input, not locked by another run) and locked before any
    # work; the lock is released when the progress line closes, i.e. in the `finally` below
    from segone.io import check_output

    lock = check_output(out, [(role, src) for role, src in zip(("transactions", "events", "attributes"), inputs)],
                        overwrite, others=[("previous output", previous)])  # fmt: skip
    try:
        eng, owned = _engine_for(engine, client, n_threads, npartitions, verbose)
        shown = lock.releasing(_progress.stage_line(_NEXT_STAGE[None], enabled=verbose and eng.name == "local"))
    except BaseException:
        lock.release()
        raise
    try:
        res = _run(
            eng, input, out, clusters, events=events, attributes=attributes, as_of=as_of, schema=schema,
            random_state=random_state, n_init=n_init, refine=refine, sample_size=sample_size, n_traits=n_traits,
            phrases=phrases, label_rules=label_rules, value=value, value_penalizer=value_penalizer, freq=freq,
            horizon_months=horizon_months, discount_rate=discount_rate, previous=previous, backend=backend,
            n_threads=n_threads, partitioned_by_customer=partitioned_by_customer, overwrite=overwrite,
            verbose=verbose, plan=plan, shown=shown, k_min=k_min, k_max=k_max, treatment=treatment,
            value_model=value_model, value_by=value_by, actions=actions, horizon_days=horizon_days, offers=offers,
            new_only=new_only,
        )  # fmt: skip
        if state is not None:  # the store of this run, for incremental updates
            from segone import update as _update

            res.summary["state"] = _update.init_state(state, res.out, input, events=events, attributes=attributes,
                                                      schema=schema, overwrite=overwrite, engine=eng)  # fmt: skip
        return res
    finally:
        shown.close()
        if owned:
            eng.close()
        else:  # an engine given by the caller: the job's spilled parts are no longer needed
            eng.cleanup()


def _run(eng, input, out, clusters, *, events, attributes, as_of, schema, random_state, n_init, refine, sample_size,
         n_traits, phrases, label_rules, value, freq, horizon_months, discount_rate, previous, backend, n_threads,
         partitioned_by_customer, overwrite, verbose, plan=None, shown=None, k_min=None, k_max=None,
         value_penalizer=0.0, treatment=None, value_model="bgnbd", value_by=None, actions=False, horizon_days=30,
         offers=3, new_only=False):  # fmt: skip
    t_all = time.perf_counter()
    timings = {}

    shown = shown or _progress.NullProgress()

    def log(msg):
        if verbose:
            shown.write(f"[segone:{eng.name}] {msg}")

    def stage(name):
        timings[name] = time.perf_counter() - t0
        shown.set_description(_NEXT_STAGE.get(name, "finishing"))
        set_stage(_NEXT_STAGE.get(name, "finishing"))
        return timings[name]

    set_stage = eng.set_stage  # an engine may name the running stage in its errors
    set_stage(_NEXT_STAGE[None])

    # EVENTS IN + PROFILE
    t0 = time.perf_counter()
    sources = dict(zip(("transactions", "events", "attributes"), resolve_inputs(input, events, attributes)))
    profiles, summary, facts = profile_stage(
        eng, sources, as_of=as_of, schema=schema, backend=backend, n_threads=n_threads,
        partitioned_by_customer=partitioned_by_customer, verbose=verbose, freq=freq,
        piece=_actions.keep_piece if actions else None,
    )  # fmt: skip
    pieces = None
    if actions:  # the pieces stay (persisted with the profiles) for the actions stage, partitioned alike
        pieces = eng.map(_second, profiles)
        profiles = eng.map(_first, profiles)
    # PRIVACY: count consent, drop the customers without it (scope "processing") and the personal columns
    plan = plan or _privacy.PrivacyPlan()
    privacy_counts = _privacy.PrivacyCounts(customers=summary["customers"], consented=summary["customers"])
    no_consent, with_ids = None, previous is not None and bool(plan.rules)  # moves: ids without consent
    if plan.active:
        results = eng.persist(eng.map(_privacy.processing_piece, profiles, plan=plan, with_ids=with_ids),
                              "profiles")  # fmt: skip
        privacy_counts = eng.reduce(eng.map(_second, results))
        no_consent = eng.map(_third, results) if with_ids else None  # per part, co-partitioned with the moves
        profiles = eng.map(_first, results)
    n = summary["customers"] - privacy_counts.counts["dropped"]
    log(f"profiles: {n} customers in {stage('profile'):.2f}s")
    plan.check_customers(n)
    if clusters == "auto":
        check_n_clusters(_tuning.DEFAULT_K_MAX if k_max is None else k_max, n, "k_max", "customers")
    else:
        check_n_clusters(clusters, n, "n_clusters", "customers")

    # SCORE
    t0 = time.perf_counter()
    scorer = FeatureScorer(backend=backend, n_threads=n_threads)
    scorer.fit_state(eng.reduce(eng.map(ScorerState.of, profiles, scorer=scorer)))
    X = eng.persist(eng.map(scorer.transform, profiles), "features")
    log(f"features: {len(scorer.feature_names_out_)} columns in {stage('score'):.2f}s")

    # SEGMENT: learn on a customer-hash sample in customer-id order, refine on every part;
    # with a previous run, start from its segments
    t0 = time.perf_counter()
    cid = outputs.ID_COLUMN  # profiles (and every output) name the id so, whatever the input column
    prev = None if previous is None else _track.read_previous(previous, features=scorer.feature_names_out_,
                                                              id_column=cid, spend=("spend_total", "clv"),
                                                              lazy=True)  # fmt: skip
    if sample_size is None:  # the one default: max(131072, 128 * n_clusters) (k_max for "auto")
        sample_size = default_sample_size(clusters if clusters != "auto" else k_max or _tuning.DEFAULT_K_MAX)
    sample = _fit_sample(eng, profiles, X, min(1.0, sample_size / n), random_state, schema)
    sweep_info = sweep_table = None
    if clusters == "auto":  # how many segments: a sweep over k on the same sample, two rounds over every part
        sw = _tuning.sweep_parts(eng, X, sample, k_min=k_min, k_max=k_max, n_rows=n, random_state=random_state,
                                sample_size=sample_size, backend=backend, n_threads=n_threads, log=log)  # fmt: skip
        clusters, sweep_info = _tuning.auto_clusters(sw)
        sweep_table = sw.table
        log(sweep_info["note"])
    init = None if prev is None else prev.warm_start(scorer, clusters)
    seg = Segmenter(clusters, init="k-means++" if init is None else init, n_init=n_init if init is None else 1,
                    random_state=random_state, refine=refine, sample_size=sample_size, backend=backend,
                    n_threads=n_threads)  # fmt: skip

    def full_pass(centers):
        return eng.reduce(eng.map(PartialSums.of, X, centers=centers, backend=backend, n_threads=n_threads))

    seg.fit_passes(sample, full_pass)
    del sample
    # largest segment first, so that ids read naturally
    seg.reorder_clusters(np.argsort(-seg.counts_, kind="stable"))
    log(f"segments: k={clusters}, inertia {seg.inertia_:.6g} in {stage('segment'):.2f}s")

    # ASSIGN
    t0 = time.perf_counter()
    assignments = eng.persist(
        eng.map(assign_piece, profiles, X, centroids=seg.cluster_centers_, id_column=cid, backend=backend,
                n_threads=n_threads), "assignments")  # fmt: skip
    stage("assign")

    # PREDICT: customer value from the mergeable BTYD pattern histograms, predicted per piece
    t0 = time.perf_counter()
    value_info = None
    by_segment = None
    bg = gg = None
    if value:
        chosen, choice = value_model, None
        if value_model == "auto":  # a backtest on the data's own past chooses the purchase model
            chosen, choice = _choose_value_model(eng, sources, schema=schema, freq=freq, penalizer=value_penalizer,
                                                 backend=backend, n_threads=n_threads,
                                                 partitioned_by_customer=partitioned_by_customer, log=log)  # fmt: skip
        bg, gg, value_info = _clv.fit_value(eng.reduce(eng.map(_clv.ValueState.of, profiles)),
                                            penalizer=value_penalizer, horizon_months=horizon_months,
                                            discount_rate=discount_rate, freq=freq, model=chosen)  # fmt: skip
        value_info.update(horizon_months=horizon_months, discount_rate=discount_rate, unit=_profile.BTYD_UNITS[freq])
        value_info["value_model"] = {"requested": value_model, "used": chosen, **(choice or {})}
        if value_by == "segment" and bg is not None:
            from segone import value_segments as _vs

            sv = eng.reduce(eng.map(_segment_value_state, profiles, assignments, k=clusters))
            models, by_segment, tau2 = _vs.fit_by_segment(sv, bg, gg, penalizer=value_penalizer)
            value_info["by_segment"] = {"segments": by_segment, "between_segment_variance": tau2,
                                        "shrinkage": "random effects (DerSimonian-Laird) toward the pooled fit"}
            profiles = eng.persist(eng.map(_value_piece_by_segment, profiles, assignments, models=models, freq=freq,
                                           horizon_months=horizon_months, discount_rate=discount_rate),
                                   "profiles")  # fmt: skip
        else:
            if value_by == "segment":
                value_info["notes"].append("value_by='segment' needs the pooled purchase model, which was skipped")
            profiles = eng.persist(eng.map(_clv.value_piece, profiles, beta_geo=bg, gamma_gamma=gg, freq=freq,
                                           horizon_months=horizon_months, discount_rate=discount_rate),
                                   "profiles")  # fmt: skip
        assignments = eng.persist(eng.map(_with_value, assignments, profiles), "assignments")
        log(f"customer value in {stage('predict'):.2f}s")
    else:
        assignments = eng.persist(eng.map(_with_value, assignments, profiles, names=("spend_total",)), "assignments")

    # TRACK: stable ids against the previous run, who moved where
    t0 = time.perf_counter()
    hist = eng.reduce(eng.map(_track.FeatureHistogram.of, profiles, features=scorer.feature_names_out_))
    tracked, seg_ids, next_id = None, np.arange(clusters), clusters
    if prev is not None:
        # named as in the previous assignments.parquet, so that the gone customers' spend and CLV are found there
        parts = eng.map(_track.tracking_columns, profiles, assignments, id_column=cid, spend_as="spend_total")
        if plan.hash_ids:  # the previous output holds pseudonyms
            parts = eng.map(_privacy.pseudonymise_column, parts, column=cid, key=plan.key)
        # per part: the previous customers that hash with each part's, joined; only the contingency is reduced
        tracked = _track.track_parts(eng, prev, parts, excluded=no_consent, centroids=seg.cluster_centers_,
                                     scorer=scorer, spend="spend_total", clv="clv", histogram=hist)  # fmt: skip
        seg_ids, next_id = tracked.segment_ids, tracked.next_id
    stage("track")  # the feature histogram (drift in the model) and, with a previous run, the tracking
    if tracked is not None:
        log(f"tracking: {tracked.figures.get('stayed_share')} stayed in {timings['track']:.2f}s")

    # ACT: the next best offers of every customer (rows following the profiles, cluster indices); consent,
    # pseudonyms and the exported segment ids are applied at WRITE like the other per-customer outputs
    actions_parts, actions_info = None, None
    if actions:
        t0 = time.perf_counter()
        shown.set_description("next best actions")
        set_stage("next best actions")
        actions_parts, actions_info = _actions_or_skip(eng, pieces, profiles, assignments, summary=summary,
                                                       n_segments=clusters, horizon_days=horizon_days,
                                                       offers=offers, new_only=new_only, schema=schema)  # fmt: skip
        del pieces
        log(f"actions: {actions_info.get('skipped_stage') or 'offers'} in {stage('actions'):.2f}s")

    # DESCRIBE: the segment table, and a persona for every customer
    t0 = time.perf_counter()
    stats = eng.reduce(eng.map(_segment_stats, profiles, assignments, k=clusters))
    totals = None
    if bg is not None and by_segment is None:  # the totals behind the segments' 90% intervals (one pooled fit)
        totals = eng.reduce(eng.map(_clv.SegmentTotals.of_assigned, profiles, assignments, k=clusters, beta_geo=bg,
                                    gamma_gamma=gg, horizon_months=horizon_months, discount_rate=discount_rate,
                                    freq=freq))  # fmt: skip
    segment_sketches = stats.segment_sketches()
    mapping, seg_report, suppressed, final_ids = None, None, {}, None
    if plan.min_segment_size is not None:  # merge or withhold the segments below k
        mapping, seg_report = _privacy.small_segment_mapping(stats.size, seg.cluster_centers_,
                                                             plan.min_segment_size, plan.small_segments)  # fmt: skip
        stats = _privacy.merge_segment_stats(stats, mapping)
    segments = stats.finish(label_rules)
    if by_segment is not None and mapping is None:  # one row per fitted segment: its shrunk BG/NBD parameters
        segments = _with_segment_params(segments, by_segment)
    if value:
        why = None if totals is not None else "the purchase model was skipped (see clv.skipped.bg_nbd)" \
            if bg is None else "value_by='segment': the per-segment fits have no joint covariance"  # fmt: skip
        segments, value_info["intervals"] = _clv.with_interval_columns(segments, totals, bg, gg, mapping=mapping,
                                                                       reason=why)  # fmt: skip
    if plan.min_segment_size is not None:
        segments, suppressed["segments"] = _privacy.suppress_segment_table(segments, plan.min_segment_size,
                                                                           categorical=stats.categorical)  # fmt: skip
    stage("describe")
    t0 = time.perf_counter()
    persona_model = PersonaModel(n_traits, phrases=phrases, backend=backend, n_threads=n_threads)
    persona_model.fit_state(eng.reduce(eng.map(PersonaState.of, profiles, model=persona_model)))
    persona_model.set_segments(segment_sketches)  # the segment contrast (cluster indices, before any merge)
    both = eng.persist(eng.map(_personas_piece, profiles, assignments, model=persona_model, id_column=cid),
                       "personas")  # fmt: skip
    personas = eng.map(_first, both)
    assignments = eng.map(_second, both)  # with the R, F, M scores and the RFM segment
    if actions_parts is not None:  # the persona sentence gains the top offer (rows follow the profiles)
        personas = eng.map(_with_next_step, personas, actions_parts, horizon_days=horizon_days)
    rfm_grid = eng.reduce(eng.map(_rfm_grid, both, profiles)).finish()
    log(f"personas: {n} customers in {stage('personas'):.2f}s")
    model_labels = segments.column("label").to_pylist()
    if mapping is not None:  # cluster index -> exported id (the survivor's stable id; -1: withheld)
        final_ids = _privacy.exported_ids(mapping, seg_report["survivors"], seg_ids)
        segments = _track.relabel_piece(segments, segment_ids=np.asarray(seg_ids)[seg_report["survivors"]])
        model_labels = _privacy.cluster_labels(mapping, model_labels)
    elif tracked is not None:  # cluster indices -> stable ids in every output
        assignments = eng.persist(eng.map(_track.relabel_piece, assignments, segment_ids=seg_ids), "assignments")
        personas = eng.map(_track.relabel_piece, personas, segment_ids=seg_ids)
        segments = _track.relabel_piece(segments, segment_ids=seg_ids)
        if actions_parts is not None:
            actions_parts = eng.map(_track.relabel_piece, actions_parts, segment_ids=seg_ids)

    # WRITE: per-customer outputs relabelled, consent-filtered and pseudonymised per piece; small cells suppressed
    t0 = time.perf_counter()
    if plan.active or final_ids is not None:
        assignments = eng.persist(eng.map(_privacy.export_piece, assignments, profiles, plan=plan,
                                          mapping=final_ids), "assignments")  # fmt: skip
        personas = eng.persist(eng.map(_privacy.export_piece, personas, profiles, plan=plan, mapping=final_ids),
                               "personas")  # fmt: skip
        if actions_parts is not None:
            actions_parts = eng.persist(eng.map(_privacy.export_piece, actions_parts, profiles, plan=plan,
                                                mapping=final_ids), "actions")  # fmt: skip
    if actions_parts is not None:
        actions_info["customers_with_actions"] = eng.reduce(eng.map(_actions.ActionCounts.of, actions_parts)).rows
        actions_info["customers_without_actions"] = n - actions_info["customers_with_actions"]  # no consent
        # the report's "What to do next": per exported segment, the leading top offers (cells below k left out)
        actions_info["by_segment"] = eng.reduce(eng.map(_actions.OfferSummary.of, actions_parts)).finish(
            plan.min_segment_size)
    if tracked is not None:
        moves = tracked.moves
        if final_ids is not None:
            moves = eng.persist(eng.map(_privacy.relabel_moves, moves,
                                        lookup=_privacy.id_lookup(seg_ids, final_ids)), "moves")  # fmt: skip
            cont = eng.reduce(eng.map(_track.Contingency.of, moves))
            tracked.migration = _track.migration_table(cont)
            tracked.figures = _track.tracking_figures(cont, tracked.match, prev=prev, histogram=hist)
        if plan.min_segment_size is not None:
            tracked.migration, suppressed["migration"] = _privacy.suppress_migration(tracked.migration,
                                                                                     plan.min_segment_size)
            tracked.figures["customers"] = _privacy.suppress_counts(tracked.figures["customers"],
                                                                    plan.min_segment_size)
        tracked.moves = eng.map(_privacy.filter_moves, moves, tracked.excluded, plan=plan) \
            if tracked.excluded is not None else moves  # fmt: skip
    if plan.min_segment_size is not None:
        rfm_grid, suppressed["rfm"] = _privacy.suppress_counts_table(rfm_grid, plan.min_segment_size,
                                                                     keys=("r_score", "f_score"))
    info = run_summary(input, summary, scorer, seg, stats, eng.facts() | facts, backend=backend,
                       random_state=random_state, n_init=n_init, refine=refine, sample_size=sample_size,
                       n_traits=n_traits)  # fmt: skip
    info["segment_ids"] = [int(i) for i in seg_ids]
    if sweep_info is not None:
        info["clusters_requested"] = "auto"
        info["sweep"] = sweep_info
    if value_info is not None:
        info["clv"] = value_info
    info["privacy"] = _privacy.privacy_summary(plan, privacy_counts, segments=seg_report, suppressed=suppressed,
                                               exported_ids=final_ids)
    if actions_info is not None:
        info["actions"] = actions_info
    if prev is not None:
        info["tracking"] = {"previous": os.path.abspath(os.fspath(previous)), "warm_start": init is not None,
                            "notes": list(prev.notes), **tracked.figures}  # fmt: skip
    with atomic_directory(out, overwrite=overwrite) as tmp:
        eng.write_parts(assignments, os.path.join(tmp, outputs.ASSIGNMENTS))
        eng.write_parts(personas, os.path.join(tmp, outputs.PERSONAS))
        if actions_parts is not None:
            eng.write_parts(actions_parts, os.path.join(tmp, outputs.ACTIONS))
        write_parquet(segments, os.path.join(tmp, outputs.SEGMENTS))
        write_parquet(rfm_grid, os.path.join(tmp, outputs.RFM))
        if sweep_table is not None:
            write_parquet(sweep_table, os.path.join(tmp, outputs.SWEEP))
        write_model(os.path.join(tmp, outputs.MODEL_DIR), seg, scorer, segment_ids=seg_ids,
                    labels=model_labels, next_id=next_id, histogram=hist,
                    settings={"id_column": cid, "random_state": random_state,
                              "previous": None if prev is None else prev.path,
                              "profile": {"labels": _profile.labels_of_summary(summary), "freq": freq}},
                    privacy=plan, exported_ids=final_ids)  # fmt: skip
        if tracked is not None:
            eng.write_parts(tracked.moves, os.path.join(tmp, outputs.MOVES))
            write_parquet(tracked.migration, os.path.join(tmp, outputs.MIGRATION))
        if treatment is not None:  # campaign effects: from the outputs just written (consent and pseudonyms applied)
            from segone import effects as _effects

            t_eff = time.perf_counter()
            effects, info["effects"] = _effects.effects_from_outputs(
                prev.path, tmp, treatment, min_segment_size=plan.min_segment_size, as_of=summary["as_of"],
                id_key=plan.key if plan.hash_ids else None, seed=random_state,
            )  # fmt: skip
            write_parquet(effects, os.path.join(tmp, outputs.EFFECTS))
            timings["effects"] = time.perf_counter() - t_eff
        stage("write")
        timings["total"] = time.perf_counter() - t_all
        info["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
        write_json(info, os.path.join(tmp, outputs.RUN_JSON))
    log(f"wrote {out} in {timings['write']:.2f}s (total {timings['total']:.2f}s)")
    local = eng.gather(assignments) if eng.name == "local" else None
    table = None
    if local:
        table = local[0] if len(local) == 1 else pa.concat_tables(local)
    return RunResult(os.path.abspath(os.fspath(out)), table, segments, info, seg, scorer)


def profile_stage(eng, sources, *, as_of=None, schema=None, backend="auto", n_threads=None,
                  partitioned_by_customer=None, npartitions=None, verbose=False, piece=None, **params):  # fmt: skip
    """PROFILE over an engine: (profile parts, run-summary dict, engine facts).

    ``piece`` (default: the profile kernel of one piece) is the function
    mapped over the pieces of customers; it returns ``(profiles, summary)``
    (the backtest adds each customer's holdout columns so).

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
    results = eng.map(piece or _profile_piece, pieces, labels=labels, as_of_us=as_of_us, schema=schema, backend=backend,
                      n_threads=n_threads, **params)  # fmt: skip
    results = eng.persist(results, "profiles")
    summary = eng.reduce(eng.map(_second, results)).finish()
    if eng.name == "local":  # profiled file by file when the inputs are large and split by customer
        facts = {"pieces": eng.count(pieces)} if eng.count(pieces) > 1 else {}
    else:
        facts = {"partitions": eng.count(pieces), "shuffled": not split}
    return eng.map(_first, results), summary, facts


def _profile_piece(piece, **kwargs):
    tx, ev, at = piece
    return _profile.profile_piece(tx, ev, at, **kwargs)


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _third(triple):
    return triple[2]


def _fit_sample(eng, profiles, X, fraction, seed, schema):
    """The segmenter's fit rows: the customer-hash sample of every part, in customer-id order."""
    cid = outputs.ID_COLUMN  # profiles (and every output) name the id so, whatever the input column
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


def _segment_value_state(profiles, assignments, *, k):
    from segone.value_segments import SegmentValueState

    return SegmentValueState.of(profiles, assignments.column("segment").to_numpy(zero_copy_only=False), k=k)


def _value_piece_by_segment(profiles, assignments, **kwargs):
    from segone.value_segments import value_piece_by_segment

    return value_piece_by_segment(profiles, assignments.column("segment").to_numpy(zero_copy_only=False), **kwargs)


def _with_segment_params(segments, by_segment):
    """segments.parquet with each segment's shrunk purchase-model parameters (``purchase_<name>``)."""
    names = list(by_segment[0]["bg_nbd"]["shrunk"]) if by_segment and by_segment[0]["bg_nbd"] else []
    for p in names:
        segments = segments.append_column(f"purchase_{p}", pa.array([d["bg_nbd"]["shrunk"][p] for d in by_segment]))
    if names:
        segments = segments.append_column("purchase_own_fit", pa.array([d["bg_nbd"]["own"] is not None
                                                                      for d in by_segment]))  # fmt: skip
    return segments


def _choose_value_model(eng, sources, *, schema, freq, penalizer, backend, n_threads, partitioned_by_customer, log):
    """(model name, run.json figures): the purchase model with the lowest holdout MAE of purchases."""
    from segone import backtesting as _bt

    try:
        metrics, _, info = _bt.evaluate(eng, tuple(sources.values()), holdout_days="auto", schema=schema, freq=freq,
                                        names=list(_clv.PURCHASE_MODELS), penalizer=penalizer, n_clusters=1,
                                        backend=backend, n_threads=n_threads,
                                        partitioned_by_customer=partitioned_by_customer)  # fmt: skip
    except (ParameterError, DataError) as exc:  # a history too short to hold part of it out
        log(f"value_model='auto': no backtest ({exc}); BG/NBD")
        return "bgnbd", {"by": "default (no backtest possible)", "reason": str(exc)}
    rows = [r for r in metrics.to_pylist() if r["kind"] == "model" and r["mae_purchases"] is not None]
    figures = {r["model"]: {"mae_purchases": r["mae_purchases"], "rmse_purchases": r["rmse_purchases"],
                            "spearman_purchases": r["spearman_purchases"], "skipped": r["skipped"]}
               for r in metrics.to_pylist()}  # fmt: skip
    best = min(rows, key=lambda r: r["mae_purchases"])["model"] if rows else "bgnbd"
    log(f"value_model='auto': {best} (holdout MAE of purchases)")
    return best, {"by": "lowest holdout MAE of purchases", "cutoff": info["cutoff"], "end": info["end"],
                  "duration_holdout": info["duration_holdout"], "figures": figures}


def _with_value(assignments, profiles, *, names=("spend_total", "expected_purchases", "p_alive", "clv")):
    """The spend to date and the predicted value columns of a profile piece appended to its assignments.

    ``spend_total`` (the customer's cumulative spend) is there so that a later
    run can tell what each customer spent in between (campaign effects).
    """
    for name in names:
        if name in profiles.column_names:
            assignments = assignments.append_column(name, profiles.column(name))
    return assignments


# personas are built this many customers at a time: a persona depends only on its own row and the fitted model, and
# the scratch (strengths, value columns, trait slots) is then bounded instead of growing with the piece
PERSONA_BLOCK = 1 << 18


def _personas_piece(profiles, assignments, *, model, id_column, block=None):
    """(personas, assignments with the RFM columns) of one piece, built ``block`` customers at a time."""
    block = block or PERSONA_BLOCK
    seg = assignments.column("segment").to_numpy()
    n = profiles.num_rows
    pieces = [model.personas(profiles.slice(a, block), seg[a : a + block], id_column=id_column, rfm=True)
              for a in range(0, max(n, 1), block)]  # fmt: skip
    t = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
    del pieces
    rfm = ("r_score", "f_score", "m_score", "rfm_code", "rfm_segment")
    for name in rfm:
        assignments = assignments.append_column(name, t.column(name))
    return t.drop_columns(list(rfm)), assignments


def _actions_or_skip(eng, pieces, profiles, assignments, *, summary, n_segments, horizon_days, offers, new_only,
                     schema):  # fmt: skip
    """(actions parts or None, run.json's "actions"): every customer's offers, rows following the profiles.

    No consent filter and no pseudonyms here (``contact=None, plan=None``): the parts then go through
    :func:`segone.privacy.export_piece` like assignments.parquet.  A history the stage cannot learn from
    (shorter than 2 x the horizon, a horizon longer than the data) skips it with the reason; the run goes on.
    """
    try:
        parts, info = _actions.actions_stage(eng, pieces, profiles, assignments, categories=summary["categories"],
                                             as_of=summary["as_of"], n_segments=n_segments,
                                             horizon_days=horizon_days, offers=offers, new_only=new_only,
                                             schema=schema)  # fmt: skip
    except DataError as exc:
        return None, {"horizon_days": horizon_days, "offers": offers, "new_only": bool(new_only),
                      "skipped_stage": str(exc)}  # fmt: skip
    if parts is None:
        info["skipped_stage"] = info.pop("skipped")
        return None, info
    for name in ("customers_with_actions", "customers_not_contactable"):  # counted again after the export
        info.pop(name, None)
    return parts, info


def _with_next_step(personas, actions, *, horizon_days):
    from segone.describe._personas import with_next_step

    return with_next_step(personas, _actions.next_steps(actions, horizon_days))


def _rfm_grid(both, profiles):
    spend = profiles.column("spend_total").to_numpy(zero_copy_only=False) if "spend_total" in \
        profiles.column_names else None  # fmt: skip
    return RFMGrid.of(both[1], spend)


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
        "attributes_renamed": summary.get("attributes_renamed", {}),
        "folded_into_other": summary.get("folded", {}),
        "customers_assigned": int(stats.size.sum()),
        "segments": seg.cluster_centers_.shape[0],
        "features": scorer.feature_names_out_,
        "inertia": seg.inertia_,
        "mini_batch_steps": seg.n_steps_,
        "passes": seg.n_passes_,
        "iterations": seg.n_iter_,
        **settings,
        "engine": {**engine_facts, "memory": _memory.settings()},
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
