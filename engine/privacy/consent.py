"""Consent: the rules (boolean or purpose columns), the per-piece mask and filter, the mergeable counts."""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone._state import State
from segone.errors import DataError, ParameterError, SchemaError, examples


CONSENT_SCOPES = ("export", "processing")
DEFAULT_PURPOSES = (
    "marketing", "analytics", "profiling", "personalisation", "personalization", "segmentation", "research",
    "advertising", "email", "sms", "phone", "post", "third_party", "service",
)  # fmt: skip


# ====================================================================== consent
@dataclass(frozen=True)
class ConsentRule:
    """One consent rule: a boolean ``column``, or a purpose ``column`` and the ``purpose`` it must hold.

    Examples
    --------
    >>> ConsentRule.parse("consent_marketing")
    ConsentRule(column='consent_marketing', purpose=None)
    >>> str(ConsentRule.parse("consent_purposes = Analytics"))
    'consent_purposes=analytics'
    """

    column: str
    purpose: str | None = None

    @classmethod
    def parse(cls, spec):
        """``"COLUMN"`` (boolean column) or ``"COLUMN=purpose"`` (purpose column) -> ConsentRule."""
        if isinstance(spec, ConsentRule):
            return spec
        if not isinstance(spec, str):
            raise ParameterError(
                f"consent entry {spec!r} is not a column name; give 'COLUMN' for a boolean consent column or "
                "'COLUMN=purpose' for a column of purposes."
            )
        col, sep, purpose = spec.partition("=")
        col, purpose = col.strip(), purpose.strip().lower()
        if not col:
            raise ParameterError(f"consent entry {spec!r} names no column; use 'COLUMN' or 'COLUMN=purpose'.")
        if sep and (not purpose or "," in purpose):
            raise ParameterError(
                f"consent entry {spec!r} names no single purpose after '='; use e.g. 'consent_purposes=marketing' "
                "(give several entries for several purposes)."
            )
        return cls(col, purpose if sep else None)

    def __str__(self):
        return self.column if self.purpose is None else f"{self.column}={self.purpose}"


def parse_consent(consent):
    """``consent`` (None, a string, a ConsentRule or a list of them) -> tuple of ConsentRule."""
    if consent is None:
        return ()
    if isinstance(consent, (str, ConsentRule)):
        consent = [consent]
    try:
        items = list(consent)
    except TypeError:
        raise ParameterError(
            f"consent must be a column name, 'COLUMN=purpose' or a list of them, got {consent!r}."
        ) from None
    rules = tuple(ConsentRule.parse(c) for c in items)
    if len(set(rules)) != len(rules):
        raise ParameterError(f"consent names the same rule twice: {[str(r) for r in rules]}.")
    return rules


# consent states, ordered so that the combination of rules is their minimum
REFUSED, UNKNOWN, CONSENTED = 0, 1, 2


def _profile_column(table, column):
    """The attribute ``column`` in a profiles table (attributes clashing with a profile column get ``crm_``)."""
    for name in (f"crm_{column}", column):  # the crm_ name first: then the plain name is a profile column
        if name in table.column_names:
            return name
    return None


def _is_text(t):
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _purpose_type(t):
    """True for the column types that can hold purposes (strings, dictionary or list of strings)."""
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _is_text(t.value_type) or (pa.types.is_dictionary(t.value_type) and _is_text(t.value_type.value_type))
    return _is_text(t)


def _check_rule_type(rule, t, where):
    if rule.purpose is None:
        if not pa.types.is_boolean(t):
            hint = (f"name the purpose it must hold: '{rule.column}=marketing'" if _purpose_type(t)
                    else "cast it to a boolean column (true: consents)")  # fmt: skip
            raise SchemaError(f"{where}: consent column {rule.column!r} has type {t}, not boolean; {hint}.")
    elif not _purpose_type(t):
        hint = (f"use '{rule.column}' without '={rule.purpose}' for a boolean column" if pa.types.is_boolean(t)
                else "give a column of comma-separated purpose strings or of lists of strings")  # fmt: skip
        raise SchemaError(f"{where}: consent column {rule.column!r} has type {t}, which holds no purposes; {hint}.")


def _purpose_lists(col):
    """A purpose column -> (list array of trimmed lower-case purposes, row validity as bool ndarray)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        lists = col
        if pa.types.is_dictionary(t.value_type):
            lists = type(col).from_arrays(col.offsets, col.values.cast(t.value_type.value_type))
    else:
        lists = pc.split_pattern(col, ",")
    return lists, valid


def _norm_purposes(values):
    return pc.utf8_lower(pc.utf8_trim_whitespace(values))


def _rule_state(table, rule, purposes, where="attributes"):
    """int8 ndarray of REFUSED / UNKNOWN / CONSENTED per row of ``table`` for one rule."""
    name = _profile_column(table, rule.column)
    if name is None:
        raise SchemaError(
            f"{where}: consent column {rule.column!r} not found; the table has columns "
            f"{table.column_names[:30]}. Name a column of the customer attributes."
        )
    col = table.column(name)
    _check_rule_type(rule, col.type, where)
    n = table.num_rows
    if rule.purpose is None:
        valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else np.ones(n, dtype=bool)
        val = pc.fill_null(col, False).to_numpy(zero_copy_only=False).astype(bool)
        return np.where(valid, np.where(val, CONSENTED, REFUSED), UNKNOWN).astype(np.int8)
    lists, valid = _purpose_lists(col)
    flat = lists.flatten()
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    vals = _norm_purposes(flat)
    present = pc.fill_null(pc.not_equal(vals, ""), False).to_numpy(zero_copy_only=False)
    _check_purposes(vals.filter(pa.array(present)), purposes, rule, where)
    hit = pc.fill_null(pc.equal(vals, rule.purpose), False).to_numpy(zero_copy_only=False)
    has = np.zeros(n, dtype=bool)
    has[parent[hit]] = True
    return np.where(valid, np.where(has, CONSENTED, REFUSED), UNKNOWN).astype(np.int8)


def _check_purposes(values, purposes, rule, where):
    """Raise DataError when ``values`` (normalised purposes) hold one outside ``purposes``."""
    if not len(values):
        return
    uniq = pc.unique(values)
    bad = uniq.filter(pc.invert(pc.is_in(uniq, value_set=pa.array(sorted(purposes), pa.string()))))
    if len(bad):
        raise DataError(
            f"{where}: consent column {rule.column!r} holds purpose(s) {examples(bad.to_pylist())} that are not "
            f"known purposes ({', '.join(sorted(purposes))}). Fix the values, or name your purposes with "
            "purposes=[...] so that a typo cannot silently refuse consent."
        )


def consent_mask(profiles, rule, *, default=False, purposes=DEFAULT_PURPOSES):
    """Who consents, per row of one piece: ``(bool ndarray, counts)``.

    Parameters
    ----------
    profiles : pyarrow.Table or RecordBatch
        Profiles (the attributes are columns; a customer without an
        attributes row has nulls there) or the attributes table itself.
    rule : ConsentRule, str, or a list of them
        Every rule must hold (a refusal of any one wins; else a missing
        value makes the record unknown).  An empty list: everyone consents.
    default : bool, default False
        What a customer without a consent record (unknown) counts as.
    purposes : iterable of str
        The known purposes (values outside raise DataError).

    Returns
    -------
    (mask, counts)
        ``mask[i]`` is True when row ``i`` may appear in per-customer
        outputs; ``counts`` = {"customers", "consented", "refused",
        "unknown"} (``unknown`` before the default is applied).

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"ok": [True, False, None], "p": ["marketing,analytics", "", None]})
    >>> mask, counts = consent_mask(t, ["ok", "p=analytics"])
    >>> mask.tolist(), counts
    ([True, False, False], {'customers': 3, 'consented': 1, 'refused': 1, 'unknown': 1})
    >>> consent_mask(t, "p=marketing", default=True)[0].tolist()
    [True, False, True]
    """
    if isinstance(profiles, pa.RecordBatch):
        profiles = pa.Table.from_batches([profiles])
    rules = parse_consent(rule)
    purposes = _vocabulary(purposes)
    n = profiles.num_rows
    state = np.full(n, CONSENTED, dtype=np.int8)
    for r in rules:
        if r.purpose is not None and r.purpose not in purposes:
            raise ParameterError(f"consent rule {str(r)!r} names an unknown purpose; known: {sorted(purposes)}.")
        np.minimum(state, _rule_state(profiles, r, purposes, "profiles"), out=state)
    counts = {"customers": int(n), "consented": int((state == CONSENTED).sum()),
              "refused": int((state == REFUSED).sum()), "unknown": int((state == UNKNOWN).sum())}  # fmt: skip
    mask = state == CONSENTED
    if default:
        mask |= state == UNKNOWN
    return mask, counts


def filter_consented(table, mask):
    """The rows of ``table`` (one piece) where ``mask`` is True; ``table`` rows follow the mask's rows.

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> filter_consented(pa.table({"a": [1, 2, 3]}), np.array([True, False, True])).column("a").to_pylist()
    [1, 3]
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (table.num_rows,):
        raise ParameterError(
            f"the consent mask has {mask.size} rows but the table has {table.num_rows}; the table must hold the "
            "rows of the profiles piece the mask was computed on, in the same order."
        )
    if mask.all():
        return table
    return table.filter(pa.array(mask))


class PrivacyCounts(State):
    """Mergeable consent counts: customers, consented, refused, unknown, dropped and excluded.

    ``dropped`` counts the customers removed before any processing
    (``consent_scope="processing"``); ``excluded`` those kept out of the
    per-customer outputs (every customer without consent, in both scopes).
    Pieces hold disjoint customers, so the counts add up.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"ok": [True, False, None]})
    >>> a = PrivacyCounts.of(t.slice(0, 1), rules="ok")
    >>> b = PrivacyCounts.of(t.slice(1), rules="ok")
    >>> a.merge(b).finish()
    {'customers': 3, 'consented': 1, 'refused': 1, 'unknown': 1, 'dropped': 0, 'excluded': 2}
    """

    kind = "privacy_counts"
    FIELDS = ("customers", "consented", "refused", "unknown", "dropped", "excluded")

    def __init__(self, **counts):
        unknown = set(counts) - set(self.FIELDS)
        if unknown:
            raise ParameterError(f"PrivacyCounts has no field(s) {sorted(unknown)}; fields: {list(self.FIELDS)}.")
        self.counts = {f: int(counts.get(f, 0)) for f in self.FIELDS}

    @classmethod
    def empty(cls):
        return cls()

    @classmethod
    def of(cls, piece, *, rules=(), default=False, scope="export", purposes=DEFAULT_PURPOSES):
        """The counts of one profiles piece under the consent ``rules``."""
        mask, counts = consent_mask(piece, rules, default=default, purposes=purposes)
        return cls.from_mask(mask, counts, scope=scope)

    @classmethod
    def from_mask(cls, mask, counts, *, scope="export"):
        """From :func:`consent_mask`'s output (``scope`` tells whether the excluded are dropped too)."""
        excluded = int(mask.size - np.count_nonzero(mask))
        return cls(**counts, excluded=excluded, dropped=excluded if scope == "processing" else 0)

    def merge(self, other):
        self._check_same(other)
        return PrivacyCounts(**{f: self.counts[f] + other.counts[f] for f in self.FIELDS})

    def finish(self):
        return dict(self.counts)

    def _data(self):
        return dict(self.counts)

    @classmethod
    def _from_data(cls, d):
        return cls(**d)


def _vocabulary(purposes):
    out = set(DEFAULT_PURPOSES)
    if purposes is not None:
        out |= {str(p).strip().lower() for p in ([purposes] if isinstance(purposes, str) else purposes)}
    return frozenset(out)
