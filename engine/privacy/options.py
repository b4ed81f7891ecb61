"""The privacy options of a run, checked before any work (:class:`PrivacyOptions`, :func:`check_privacy`), and
the plan they give (:class:`PrivacyPlan`)."""

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from segone import outputs
from segone.errors import ParameterError, SchemaError
from segone.privacy.consent import (
    CONSENT_SCOPES, DEFAULT_PURPOSES, _check_rule_type, _rule_state, _vocabulary, parse_consent,
)
from segone.privacy.personal import personal_columns
from segone.privacy.pseudonyms import PSEUDONYM_HEX, load_key
from segone.privacy.suppression import SMALL_SEGMENTS, _check_k


# =================================================================== options
def attributes_schema(attributes):
    """The schema of the attributes input, read cheaply (Parquet metadata, a table's schema); None if unknown."""
    if attributes is None:
        return None
    if isinstance(attributes, (pa.Table, pa.RecordBatch, pa.RecordBatchReader)):
        return attributes.schema
    if isinstance(attributes, (str, os.PathLike)):
        from segone.io import _open_path

        return _open_path(attributes, "attributes").schema
    if hasattr(attributes, "schema") and isinstance(attributes.schema, pa.Schema):  # a pyarrow Dataset
        return attributes.schema
    meta = getattr(attributes, "_meta", None)  # a Dask DataFrame
    if meta is not None:
        return pa.Schema.from_pandas(meta, preserve_index=False)
    if type(attributes).__name__ == "DataFrame" and type(attributes).__module__.startswith("pandas"):
        return pa.Schema.from_pandas(attributes.head(0), preserve_index=False)
    if hasattr(attributes, "__arrow_c_schema__"):
        return pa.schema(attributes)
    if hasattr(attributes, "__arrow_c_stream__"):
        try:
            return pa.RecordBatchReader.from_stream(attributes).schema
        except (TypeError, pa.ArrowInvalid):
            return None
    return None


def rows_upper_bound(sources):
    """The number of rows of all ``sources`` (an upper bound of the customers), cheaply; None when unknown.

    Parquet paths are counted from their metadata; tables by ``num_rows``.
    """
    import pyarrow.dataset as ds

    total = 0
    for src in sources:
        if src is None:
            continue
        if isinstance(src, (pa.Table, pa.RecordBatch)):
            total += src.num_rows
        elif isinstance(src, (str, os.PathLike)):
            from segone.io import _open_path

            total += _open_path(src, "input").count_rows()
        elif isinstance(src, ds.Dataset):
            total += src.count_rows()
        else:
            return None
    return total


def _names(value, what):
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        out = tuple(value)
    except TypeError:
        raise ParameterError(f"{what} must be a column name or a list of names, got {value!r}.") from None
    if not all(isinstance(v, str) for v in out):
        raise ParameterError(f"{what} must hold column names (strings), got {list(out)!r}.")
    return out


@dataclass
class PrivacyOptions:
    """What the user asked for; :meth:`validate` checks it and returns a :class:`PrivacyPlan`.

    Parameters
    ----------
    consent : str, ConsentRule or list, optional
        Consent rules: ``"COLUMN"`` (boolean) or ``"COLUMN=purpose"``.
    consent_scope : {"export", "processing"}
        "export": customers without consent are processed (in the segment
        statistics) but never written per customer; "processing": they are
        dropped right after the profiles are built.
    consent_default : bool, default False
        What a customer without a consent record counts as.
    hash_ids : bool, default False
        Replace the customer id by its HMAC pseudonym in every output.
    id_key : bytes or str, optional
        The secret key (else ``id_key_file``, else ``$SEGONE_ID_KEY``).
    id_key_file : path, optional
    min_segment_size : int, optional
        No exported cell below this many customers.
    small_segments : {"merge", "withhold"}
    keep_columns : names
        Personal attribute columns to keep anyway.
    personal : names
        More attribute columns to treat as personal data.
    purposes : names, optional
        Purposes known besides :data:`DEFAULT_PURPOSES`.
    """

    consent: object = None
    consent_scope: str = "export"
    consent_default: bool = False
    hash_ids: bool = False
    id_key: object = field(default=None, repr=False)
    id_key_file: object = None
    min_segment_size: int | None = None
    small_segments: str = "merge"
    keep_columns: tuple = ()
    personal: tuple = ()
    purposes: tuple | None = None

    def validate(self, attributes_schema=None, n_customers=None, *, id_column="customer_id"):
        """Check everything that can be checked without reading data: a :class:`PrivacyPlan`, or a SegoneError.

        ``attributes_schema`` (a pyarrow Schema of the customer attributes,
        None when unknown) lets the consent, keep and personal columns be
        checked; ``n_customers`` (the customers, or an upper bound of them)
        lets ``min_segment_size`` be checked.  ``id_column`` is the
        attributes' customer id column (never treated as personal); the
        plan's ``id_column`` is the outputs' (:data:`segone.outputs.ID_COLUMN`),
        which profiles and every output use whatever the input calls it.
        """
        rules = parse_consent(self.consent)
        if self.consent_scope not in CONSENT_SCOPES:
            raise ParameterError(f"consent_scope={self.consent_scope!r}; use one of {CONSENT_SCOPES}.")
        if not isinstance(self.consent_default, (bool, np.bool_)):
            raise ParameterError(f"consent_default must be True or False, got {self.consent_default!r}.")
        if not isinstance(self.hash_ids, (bool, np.bool_)):
            raise ParameterError(f"hash_ids must be True or False, got {self.hash_ids!r}.")
        if self.small_segments not in SMALL_SEGMENTS:
            raise ParameterError(f"small_segments={self.small_segments!r}; use one of {SMALL_SEGMENTS}.")
        purposes = _vocabulary(self.purposes)
        for r in rules:
            if r.purpose is not None and r.purpose not in purposes:
                raise ParameterError(
                    f"consent rule {str(r)!r} names the purpose {r.purpose!r}, which is not a known purpose "
                    f"({', '.join(sorted(purposes))}); fix the spelling or add it with purposes=[...]."
                )
        k = None
        if self.min_segment_size is not None:
            n = None if n_customers is None else int(n_customers)
            k = _check_k(self.min_segment_size)
            if n is not None and k > n:  # n: the rows of the inputs, an upper bound of the customers
                raise ParameterError(
                    f"min_segment_size={k} is larger than the {n} rows of the inputs, so larger than the number of "
                    "customers (at most one per row): no segment could be shown. Lower it below the number of "
                    "customers (each exported segment must hold at least min_segment_size of them), or leave it "
                    "unset."
                )
        key, source = None, None
        if self.hash_ids:
            key, source = load_key(self.id_key, self.id_key_file)
        elif self.id_key is not None or self.id_key_file is not None:
            raise ParameterError(
                "an id key is given but hash_ids is False; pass hash_ids=True (--hash-ids) to write pseudonymous "
                "ids, or drop the key."
            )
        keep = _names(self.keep_columns, "keep_columns")
        extra = _names(self.personal, "personal")
        personal = ()
        if attributes_schema is not None:
            names = attributes_schema.names
            for r in rules:
                if r.column not in names:
                    raise SchemaError(
                        f"attributes: consent column {r.column!r} not found; the attributes have columns "
                        f"{names[:30]}. Name one of them (--consent COLUMN or --consent COLUMN=purpose)."
                    )
                _check_rule_type(r, attributes_schema.field(r.column).type, "attributes")
            for what, cols in (("keep_columns", keep), ("personal", extra)):
                bad = [c for c in cols if c not in names]
                if bad:
                    raise SchemaError(
                        f"{what} names column(s) {bad} the attributes do not have; columns: {names[:30]}."
                    )
            protected = {id_column, *(r.column for r in rules)}
            personal = tuple(c for c in personal_columns(attributes_schema, extra)
                             if c not in keep and c not in protected)  # fmt: skip
            clash = [c for c in extra if c in protected]
            if clash:
                raise ParameterError(f"personal names {clash}, which is the id or a consent column; these stay.")
        elif keep or extra:
            personal = tuple(c for c in extra if c not in keep)
        return PrivacyPlan(rules=rules, scope=self.consent_scope, default=bool(self.consent_default),
                           key=key, key_source=source, min_segment_size=k, small_segments=self.small_segments,
                           keep_columns=keep, personal_columns=personal, purposes=purposes,
                           id_column=outputs.ID_COLUMN)  # fmt: skip


@dataclass(frozen=True)
class PrivacyPlan:
    """The validated privacy settings (from :meth:`PrivacyOptions.validate`), passed to the per-piece functions.

    Holds the key in memory (for the workers) but never shows it: not in
    ``repr``, not in :meth:`to_dict`.
    """

    rules: tuple = ()
    scope: str = "export"
    default: bool = False
    key: bytes | None = field(default=None, repr=False)
    key_source: str | None = None
    min_segment_size: int | None = None
    small_segments: str = "merge"
    keep_columns: tuple = ()
    personal_columns: tuple = ()
    purposes: frozenset = field(default=frozenset(DEFAULT_PURPOSES), repr=False)
    id_column: str = "customer_id"
    pseudonym_length: int = PSEUDONYM_HEX

    @property
    def hash_ids(self):
        return self.key is not None

    @property
    def active(self):
        """True when anything changes the job (consent, hashing, personal columns or a minimum size)."""
        return bool(self.rules or self.key is not None or self.personal_columns or self.min_segment_size)

    def check_customers(self, n):
        """Raise ParameterError when ``min_segment_size`` exceeds the ``n`` customers (call right after PROFILE)."""
        if self.min_segment_size is not None:
            _check_k(self.min_segment_size, int(n))

    def to_dict(self):
        """The settings for run.json (never the key)."""
        return {
            "consent": [str(r) for r in self.rules], "consent_scope": self.scope, "consent_default": self.default,
            "hash_ids": self.hash_ids, "min_segment_size": self.min_segment_size,
            "small_segments": self.small_segments, "keep_columns": list(self.keep_columns),
        }  # fmt: skip


def check_privacy(options=None, *, attributes=None, inputs=(), schema=None, scan=True, **kwargs):
    """Validate the privacy options before any work: a :class:`PrivacyPlan`, or a SegoneError.

    Call it first thing in ``run()``.  Reads only the attributes' schema
    (Parquet metadata) and, with ``scan``, the consent columns themselves
    (their values must be booleans or known purposes); the row counts of
    ``inputs`` (Parquet metadata) bound the number of customers for the
    ``min_segment_size`` check (the exact check is
    :meth:`PrivacyPlan.check_customers`, right after PROFILE).

    Parameters
    ----------
    options : PrivacyOptions, optional
        Or give its fields as keyword arguments.
    attributes : the attributes input (path, table, ...), optional
    inputs : the inputs (transactions, events, attributes)
    schema : dict, optional
        The run's role -> column mapping (for the customer id column).
    """
    from segone.profile import resolve_schema

    if options is None:
        options = PrivacyOptions(**kwargs)
    elif kwargs:
        raise ParameterError("give either a PrivacyOptions or its fields as keywords, not both.")
    cid = resolve_schema(schema)["customer_id"]
    rules = parse_consent(options.consent)
    if rules and attributes is None:
        raise ParameterError(
            f"consent={[str(r) for r in rules]} needs the customer attributes that hold the consent columns; "
            "pass attributes=... (a synth directory finds customers/ itself)."
        )
    aschema = attributes_schema(attributes)
    bound = rows_upper_bound(inputs) if inputs else None
    plan = options.validate(aschema, bound, id_column=cid)
    if scan and plan.rules and attributes is not None and aschema is not None and _rescannable(attributes):
        from segone.io import read_table

        cols = sorted({r.column for r in plan.rules})
        t = read_table(attributes, cols, name="attributes")
        for r in plan.rules:
            _rule_state(t, r, plan.purposes, "attributes")
    return plan


def _rescannable(source):
    """True when reading the source does not consume it (paths, tables, datasets, data frames)."""
    import pyarrow.dataset as ds

    return isinstance(source, (str, os.PathLike, pa.Table, pa.RecordBatch, ds.Dataset)) or (
        type(source).__name__ == "DataFrame" and not hasattr(source, "_meta"))
