"""The per-piece privacy stages (processing, export, moves) and run.json's ``privacy`` section."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone import outputs
from segone.errors import ParameterError, SchemaError
from segone.privacy.consent import PrivacyCounts, consent_mask, filter_consented
from segone.privacy.personal import drop_personal_columns
from segone.privacy.pseudonyms import HASH_ALGORITHM, pseudonymise, pseudonymise_column
from segone.privacy.suppression import relabel_segments


# ========================================================== per-piece stages
def processing_piece(profiles, *, plan, with_ids=False):
    """Right after PROFILE, per piece: ``(profiles, PrivacyCounts)``.

    Counts consent; with scope "processing" drops the customers without it;
    removes the personal columns.  With ``with_ids`` a third item: the ids
    (pseudonyms when hashing) of the customers without consent, for
    :func:`filter_moves`.
    """
    mask, counts = consent_mask(profiles, plan.rules, default=plan.default, purposes=plan.purposes)
    state = PrivacyCounts.from_mask(mask, counts, scope=plan.scope)
    ids = _ids_without_consent(profiles, mask, plan) if with_ids else None
    if plan.rules and plan.scope == "processing":
        profiles = filter_consented(profiles, mask)
    profiles = drop_personal_columns(profiles, plan.personal_columns)
    return (profiles, state, ids) if with_ids else (profiles, state)


def _ids_without_consent(profiles, mask, plan):
    ids = profiles.column(plan.id_column).filter(pa.array(~mask))
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    return pseudonymise(ids, plan.key, length=plan.pseudonym_length) if plan.key is not None else ids


def export_piece(table, profiles, *, plan, mapping=None, column="segment"):
    """At WRITE, per piece of a per-customer output (assignments, personas) and its profiles piece.

    Renames the segments through ``mapping`` (from
    :func:`small_segment_mapping`; a withheld segment's customers get a null
    segment), keeps the consenting customers (scope "export": the rows of
    ``table`` follow those of ``profiles``), replaces the id by its
    pseudonym when hashing, and drops any personal column.
    """
    if table.num_rows != profiles.num_rows:
        raise ParameterError(
            f"the output piece has {table.num_rows} rows but its profiles piece {profiles.num_rows}; give the "
            "piece computed from these profiles (the same rows, in the same order)."
        )
    if plan.key is not None and plan.id_column not in table.column_names:
        raise SchemaError(
            f"the output piece has no id column {plan.id_column!r} to pseudonymise (columns "
            f"{table.column_names[:10]}); per-customer outputs must name the id {outputs.ID_COLUMN!r}."
        )
    if mapping is not None:
        table = relabel_segments(table, mapping, column)
    if plan.rules and plan.scope == "export":
        mask, _ = consent_mask(profiles, plan.rules, default=plan.default, purposes=plan.purposes)
        table = filter_consented(table, mask)
    if plan.key is not None:
        table = pseudonymise_column(table, plan.id_column, plan.key, length=plan.pseudonym_length)
    return drop_personal_columns(table, plan.personal_columns)


def excluded_ids(profiles, *, plan):
    """The ids (pseudonyms when hashing) of the customers of one piece without consent (before any filter).

    For moves tables, whose rows do not follow the profiles (see :func:`filter_moves`).
    """
    if not plan.rules:
        return pa.array([], pa.string() if plan.key is not None else profiles.schema.field(plan.id_column).type)
    mask, _ = consent_mask(profiles, plan.rules, default=plan.default, purposes=plan.purposes)
    return _ids_without_consent(profiles, mask, plan)


def filter_moves(moves, excluded, *, plan, id_column=None):
    """A moves piece without the customers lacking consent.

    ``excluded``: the ids from :func:`excluded_ids` of every piece
    (concatenated), in the id form of ``moves``.  A customer gone since the
    previous run has no record in this run: kept only when
    ``consent_default`` is True.
    """
    if not plan.rules:
        return moves
    cid = id_column or plan.id_column
    keep = pc.invert(pc.is_in(moves.column(cid), value_set=excluded)) if len(excluded) else None
    if not plan.default and "segment" in moves.column_names:
        here = pc.is_valid(moves.column("segment"))
        keep = here if keep is None else pc.and_(keep, here)
    return moves if keep is None else moves.filter(keep)


# =================================================================== run.json
def privacy_summary(plan, counts=None, *, segments=None, suppressed=None, exported_ids=None):
    """run.json's ``privacy`` section: what was applied and what it did (never the key).

    Parameters
    ----------
    plan : PrivacyPlan
    counts : PrivacyCounts or dict, optional
        The merged consent counts.
    segments : dict, optional
        The report of :func:`small_segment_mapping`.
    suppressed : dict {table name: report of suppress_*}, optional
    exported_ids : array, optional
        The id each fitted cluster is written as (:func:`exported_ids`; -1: withheld).
    """
    c = counts.finish() if isinstance(counts, PrivacyCounts) else dict(counts or {})
    consent = None
    if plan.rules:
        consent = {
            "columns": [str(r) for r in plan.rules],
            "rule": "a customer consents when every rule holds",
            "scope": plan.scope,
            "default": plan.default,
            "unknown_counted_as": "consent" if plan.default else "no consent",
            "customers": c.get("customers"),
            "consented": c.get("consented"),
            "not_consented": c.get("refused"),
            "unknown": c.get("unknown"),
            "dropped_before_processing": c.get("dropped", 0),
            "excluded_from_outputs": c.get("excluded", 0),
        }
    hashing = {"enabled": plan.key is not None}
    if plan.key is not None:
        hashing.update({
            "algorithm": HASH_ALGORITHM,
            "pseudonym": f"lower-case hex, first {plan.pseudonym_length} characters ({plan.pseudonym_length * 4} bits)",
            "id_encoding": "integers as ASCII decimal text, strings as UTF-8 bytes (7 and '7' hash alike)",
            "key_source": plan.key_source,
            "columns": [plan.id_column],
        })  # fmt: skip
    out = {
        "consent": consent,
        "pseudonymous_ids": hashing,
        "personal_columns_removed": list(plan.personal_columns),
        "personal_columns_kept": list(plan.keep_columns),
        "min_segment_size": plan.min_segment_size,
    }
    if plan.min_segment_size is not None:
        seg = dict(segments or {})
        out["small_segments"] = {
            "method": plan.small_segments,
            "merged": seg.get("merged", {}),
            "withheld": seg.get("withheld", []),
            "customers_withheld": seg.get("customers_withheld", 0),
            "segments_before": seg.get("segments_before"),
            "segments_after": seg.get("segments_after"),
            "mapping": seg.get("mapping"),
            "exported_ids": None if exported_ids is None else [int(i) for i in np.asarray(exported_ids).tolist()],
        }
        out["cells_suppressed"] = {name: int(r.get("cells", 0)) for name, r in (suppressed or {}).items()}
    return out
