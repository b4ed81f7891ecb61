"""Comparing two outputs without refitting (:func:`compare_outputs`) and the checks of a previous output."""

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from segone import outputs
from segone.errors import DataError, ModelFormatError, SchemaError
from segone.track.matching import match_counts
from segone.track.moves import (
    _contingency_of, _moves_arrays, _moves_table, _overlap_from, _relabel_moves, check_id_types,
)
from segone.track.previous import read_previous
from segone.track.tracking import tracking_figures


# ------------------------------------------------------------ comparing outputs
def output_pseudonymised(path):
    """True when the output directory ``path`` holds pseudonyms instead of customer ids (a ``--hash-ids`` run).

    The id column of assignments.parquet carries the ``segone.pseudonym``
    field metadata; run.json's ``privacy.pseudonymous_ids.enabled`` says so
    too (either is enough).  False for plain ids or when neither can be read.
    """
    import pyarrow.dataset as ds

    from segone._validation import load_json

    rpath = os.path.join(os.fspath(path), "run.json")
    if os.path.isfile(rpath):
        try:
            run = load_json(rpath, "run.json")
            hashing = (run.get("privacy") or {}).get("pseudonymous_ids") or {}
            if isinstance(hashing, dict) and hashing.get("enabled") is True:
                return True
        except (ModelFormatError, AttributeError):
            pass
    try:
        schema = ds.dataset(os.path.join(os.fspath(path), "assignments.parquet"), format="parquet").schema
    except (pa.ArrowInvalid, OSError, ValueError):
        return False
    return any(f.metadata and b"segone.pseudonym" in f.metadata for f in schema)


def _withheld(run):
    """(customers withheld, segment ids withheld, min_segment_size) of a run.json, or None."""
    try:
        priv = run.get("privacy") or {}
        small = priv.get("small_segments") or {}
        n = small.get("customers_withheld") or 0
        if small.get("method") == "withhold" and isinstance(n, int) and n > 0:
            return n, list(small.get("withheld") or []), priv.get("min_segment_size")
    except AttributeError:
        pass
    return None


def check_previous(path, *, pseudonymised=None, role="previous output", now="this run"):
    """Check before any work that the output ``path`` can be tracked against (SegoneError saying what to do).

    * ``pseudonymised`` (True / False; None: not checked): whether the
      other side of the tracking holds pseudonyms (``hash_ids``).  A
      pseudonymised run and a plain one share no id, so every customer
      would be "new": refused, naming the side that is pseudonymised.
    * A previous run written with ``small_segments="withhold"`` published no
      segment for the customers of its small segments: refused, saying how
      to write a previous output every customer of which has a segment.

    Examples
    --------
    >>> import os, tempfile, segone
    >>> from segone.track import check_previous
    >>> out = os.path.join(tempfile.mkdtemp(), "out")
    >>> _ = segone.run(segone.synth.generate(300, seed=0).transactions, out, 3, value=False)
    >>> check_previous(out, pseudonymised=False)
    """
    from segone._validation import load_json

    path = os.fspath(path)
    if not os.path.isdir(path):
        return
    if pseudonymised is not None:
        theirs = output_pseudonymised(path)
        if theirs and not pseudonymised:
            raise SchemaError(
                f"the {role} {path!r} is pseudonymised (written with hash_ids / --hash-ids: its ids are HMAC "
                f"pseudonyms) but {now} has plain customer ids, so no customer can be matched and every one would "
                "count as new. Pass hash_ids=True (--hash-ids) with the same key ($SEGONE_ID_KEY or --id-key-file) "
                f"so that both sides hold the same pseudonyms, or track against a {role} written without --hash-ids."
            )
        if pseudonymised and not theirs:
            raise SchemaError(
                f"{now} is pseudonymised (hash_ids / --hash-ids) but the {role} {path!r} holds plain customer ids, "
                "so no customer can be matched and every one would count as new. Track against a run written with "
                "--hash-ids and the same key, or run this one without --hash-ids (then no id is pseudonymised)."
            )
    rpath = os.path.join(path, "run.json")
    run = None
    if os.path.isfile(rpath):
        try:
            run = load_json(rpath, "run.json")
        except ModelFormatError:
            run = None
    held = _withheld(run) if isinstance(run, dict) else None
    if held is not None:
        n, ids, k = held
        raise DataError(
            f"the {role} {path!r} was written with small_segments='withhold' (min_segment_size={k}): its "
            f"{n} customers of the small segments {ids[:10]} have no segment in assignments.parquet, so where "
            "they were is not published and they cannot be tracked. To track against that period, write it "
            "again with small_segments='merge' (--small-segments merge: a small segment joins its nearest, every "
            "customer keeps a segment) and pass that output" + ("; or leave out previous (--previous) for this run."
                                                              if role == "previous output" else ".")
        )


def _check_spend(spend, *outputs):
    """A spend column asked for (``--spend``) must be a column of the assignments of at least one output."""
    import pyarrow.dataset as ds

    if spend is None:
        return
    names = []
    for out in outputs:
        try:
            names.append(ds.dataset(os.path.join(out, "assignments.parquet"), format="parquet").schema.names)
        except (pa.ArrowInvalid, OSError, ValueError):
            names.append([])
    if not any(spend in n for n in names):
        have = sorted({c for n in names for c in n if c not in ("segment",)})
        raise SchemaError(
            f"spend column {spend!r} (--spend) is not a column of the assignments of {' or '.join(map(repr, outputs))}"
            f"; their columns are {have[:20]}. Give one of them (e.g. --spend spend_total when the runs wrote it), "
            "or leave out --spend."
        )


@dataclass
class Comparison:
    """What :func:`compare_outputs` wrote: the tables and tracking.json's content."""

    out: str
    moves: pa.Table = field(repr=False)
    migration: pa.Table = field(repr=False)
    summary: dict


def compare_outputs(old_dir, new_dir, out_dir, *, match=True, spend=None, id_column=None, overwrite=False,
                    treatment=None, id_key_file=None):  # fmt: skip
    """Compare two existing outputs without refitting: migration.parquet, moves.parquet, tracking.json.

    The outputs honour the privacy options of both runs (their models'
    records, else their run.json): the stricter ones apply
    (:func:`segone.privacy.tracking_plan`).  With consent rules, customers
    gone since the old output are left out of moves.parquet (they may have
    withdrawn consent) unless both runs count a missing record as consent;
    with a minimum segment size (the larger of the two), migration cells and
    tracking counts of fewer customers are suppressed.  Outputs with raw ids
    and pseudonyms, or pseudonyms of two keys, are refused
    (:class:`segone.privacy.WiderPrivacyError`).

    Parameters
    ----------
    old_dir, new_dir : str or path
        ``--out`` directories of two ``segone run`` (or ``segone apply``, with ``model/``) calls.
    out_dir : str or path
        Where to write (atomically; must not exist or be empty unless ``overwrite``).
    match : bool, default True
        Match the new output's segment ids to the old ones on the common
        customers first (the identity for a run tracked against ``old_dir``;
        needed for two independent runs, whose ids mean nothing to each
        other).  The mapping used is in tracking.json (``id_map``).
    spend : str, optional
        A spend column of the assignments (default: ``spend`` or
        ``spend_total`` when present).  The ``clv`` column of either
        output, when present, gives migration.parquet's ``clv`` and
        ``clv_before`` (see :func:`segone.track.migration_table`).
    id_column : str, optional
        The customer id column (default: as written by the runs).
    overwrite : bool

    Returns
    -------
    Comparison

    Examples
    --------
    >>> import os, tempfile, segone
    >>> from segone.track import compare_outputs
    >>> d = segone.synth.generate(2000, seed=0)
    >>> tmp = tempfile.mkdtemp()
    >>> for name, seed in (("a", 0), ("b", 5)):
    ...     _ = segone.run(d.transactions, os.path.join(tmp, name), 3, events=d.events, attributes=d.customers,
    ...                    random_state=seed)
    >>> c = compare_outputs(os.path.join(tmp, "a"), os.path.join(tmp, "b"), os.path.join(tmp, "cmp"))
    >>> sorted(os.listdir(c.out)), c.summary["customers"]["common"]
    (['migration.parquet', 'moves.parquet', 'tracking.json'], 2000)
    """
    from segone.io import check_output

    # checked and locked before any work: writable, neither run's directory, not written by another run
    if treatment is not None:  # the treatment file is checked before any work (campaign effects)
        from segone import effects as _effects

        _effects.plan_groups(_effects.read_treatment(treatment))
    with check_output(out_dir, (), overwrite, others=[("old output", old_dir), ("new output", new_dir)]):
        return _compare_outputs(old_dir, new_dir, out_dir, id_column=id_column, match=match, spend=spend,
                                overwrite=overwrite, treatment=treatment, id_key_file=id_key_file)  # fmt: skip


def _compare_outputs(old_dir, new_dir, out_dir, *, id_column, match, spend, overwrite, treatment=None,
                     id_key_file=None):  # fmt: skip
    from segone import privacy as _privacy
    from segone.io import atomic_directory, write_json, write_parquet

    # the privacy options of both outputs, checked before any work: the stricter apply
    (rec_old, src_old), (rec_new, src_new) = _privacy.output_record(old_dir), _privacy.output_record(new_dir)
    plan = _privacy.tracking_plan(rec_old, rec_new, where=(f"the old output {os.fspath(old_dir)!r}",
                                                           f"the new output {os.fspath(new_dir)!r}"))  # fmt: skip
    check_previous(old_dir, pseudonymised=output_pseudonymised(new_dir), role="old output",
                   now=f"the new output {os.fspath(new_dir)!r}")  # fmt: skip
    check_previous(new_dir, role="new output")
    _check_spend(spend, os.fspath(old_dir), os.fspath(new_dir))
    probe = ([spend] if spend is not None else ["spend", "spend_total"]) + ["clv"]
    old = read_previous(old_dir, id_column=id_column, spend=probe)
    new = read_previous(new_dir, id_column=id_column or old.id_column, spend=probe)
    if spend is None:
        spend = next((c for c in ("spend", "spend_total") if c in new.assignments.column_names
                      or c in old.assignments.column_names), None)  # fmt: skip
    notes = [f"old: {n}" for n in old.notes] + [f"new: {n}" for n in new.notes]
    if old.id_column != new.id_column:
        new.assignments = new.assignments.rename_columns(
            [old.id_column if c == new.id_column else c for c in new.assignments.column_names])
    cid = old.id_column
    check_id_types(old.assignments.schema.field(cid).type, new.assignments.schema.field(cid).type,
                   f"the old output {old.path}")  # fmt: skip
    m = _moves_arrays(old.assignments, new.assignments, id_column=cid, spend=spend, clv="clv")
    id_map = None
    seg_match = None
    raw = _contingency_of(m)
    cont = raw
    if match:
        new_keys = np.union1d(new.segment_ids, raw.new_ids)
        overlap = _overlap_from(raw, old.segment_ids, np.searchsorted(new_keys, raw.new_ids), new_keys.size)
        nxt = max(old.next_id, new.next_id)
        seg_match = match_counts(old.segment_ids, overlap, next_id=nxt)
        # an unmatched new segment keeps its own id unless an old segment used it
        taken = set(old.segment_ids.tolist())
        ids = seg_match.ids.copy()
        for j in np.flatnonzero(~seg_match.kept):
            own = int(new_keys[j])
            if own not in taken and own not in set(ids[seg_match.kept].tolist()):
                ids[j] = own
        seg_match.ids = ids
        seg_match.next_id = max(nxt, int(ids.max()) + 1 if ids.size else 0)
        id_map = {str(int(a)): int(b) for a, b in zip(new_keys, ids)}
        mapping = np.zeros(int(new_keys.max()) + 1 if new_keys.size else 0, dtype=np.int64)
        mapping[new_keys] = ids
        _relabel_moves(m, mapping)
        cont = raw.relabel(mapping)
    moves = _moves_table(m, cid)
    hist = new.model.histogram if new.model is not None else None
    old.feature_mismatch = None
    if old.model is not None and new.model is not None and old.model.features != new.model.features:
        old.feature_mismatch = {"added": [f for f in new.model.features if f not in old.model.features],
                                "removed": [f for f in old.model.features if f not in new.model.features]}  # fmt: skip
    summary = {"format": "segone-tracking", "version": 1, "old": old.path, "new": new.path,
               **tracking_figures(cont, seg_match, prev=old, histogram=hist, notes=notes)}  # fmt: skip
    summary["previous"] = old.path
    summary["id_map"] = id_map
    summary["spend_column"] = spend
    if hist is None and "no feature PSI" not in " ".join(summary["notes"]):
        summary["notes"].append("no feature PSI: the new model holds no feature histogram")
    # EXPORT: the same functions as run: consent on the moves, small cells suppressed
    migration = cont.finish()
    n_moves = moves.num_rows
    moves = _privacy.filter_moves(moves, pa.array([], moves.schema.field(cid).type), plan=plan, id_column=cid)
    suppressed = {}
    if plan.min_segment_size is not None:
        migration, suppressed["migration"] = _privacy.suppress_migration(migration, plan.min_segment_size)
        summary["customers"] = _privacy.suppress_counts(summary["customers"], plan.min_segment_size)
    summary["privacy"] = {
        "from": {"old": src_old, "new": src_new},
        "consent": [str(r) for r in plan.rules] or None,
        "consent_default": plan.default if plan.rules else None,
        "moves_left_out": n_moves - moves.num_rows,
        "pseudonymous_ids": bool(rec_old and rec_old.get("hash_ids")),
        "min_segment_size": plan.min_segment_size,
        "cells_suppressed": {name: int(r.get("cells", 0)) for name, r in suppressed.items()},
    }
    key = None
    if treatment is not None and summary["privacy"]["pseudonymous_ids"]:  # treatment ids must be hashed the same way
        key = _privacy.load_key(id_key_file=id_key_file)[0]
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        write_parquet(migration, os.path.join(tmp, outputs.MIGRATION))
        write_parquet(moves, os.path.join(tmp, outputs.MOVES))
        if treatment is not None:  # campaign effects from the moves just written (privacy applied)
            from segone import effects as _effects

            effects, summary["effects"] = _effects.effects_from_outputs(
                old_dir, new_dir, treatment, moves_dir=tmp, min_segment_size=plan.min_segment_size, id_key=key)
            write_parquet(effects, os.path.join(tmp, outputs.EFFECTS))
        write_json(summary, os.path.join(tmp, outputs.TRACKING_JSON))
    return Comparison(os.path.abspath(os.fspath(out_dir)), moves, migration, summary)
