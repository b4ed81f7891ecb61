"""RFM scores and named RFM segments.

:func:`rfm_scores` scores every customer 1..``bins`` on recency, frequency
and monetary value (``bins`` = best), forms the RFM code (``"545"``) and
names the segment from a rule table.

Scores are rank-based and deterministic: a customer's score is
``1 + floor(bins * p)`` where ``p`` is the share of customers with a strictly
worse value, so tied customers always share a score (many one-time buyers all
get F = 1, whatever their row order) and the scores do not depend on how the
input is sorted.  Customers without a value (null recency: no purchase) get
1 and count as worse than everyone.  The ranks are read from the column's
mergeable quantile sketch (:func:`population`, :func:`score`): values within
the sketch's 0.5% of each other tie.  This is the one RFM scoring: a run's
per-customer scores (:meth:`segone.PersonaModel.rfm_columns`, on every
engine) rank against the same sketch, merged over the pieces, so they equal
:func:`rfm_scores` on the same profiles.

The rule table (:data:`DEFAULT_RFM_RULES`) is plain data: an ordered list of
``{"segment", "r": [lo, hi], "f": [lo, hi], "m": [lo, hi]}`` entries with
inclusive score ranges; the first matching rule names the cell, and cells no
rule matches are labelled ``"Unclassified"``.  The default table follows the
recency x frequency grid that marketing teams commonly use, with monetary
value separating Champions from Loyal Customers and Can't Lose Them from At
Risk; it names all 125 cells (the tests check that every segment is
reachable and count the unnamed cells).  Pass ``rules=`` to replace it.
"""

import numpy as np
import pyarrow as pa

from segone._validation import check_int
from segone.errors import ParameterError, SchemaError
from segone.io import read_table, to_float64
from segone.sketch import summarise

UNCLASSIFIED = "Unclassified"

DEFAULT_RFM_RULES = [
    {"segment": "Champions", "r": [4, 5], "f": [4, 5], "m": [4, 5]},
    {"segment": "Can't Lose Them", "r": [1, 1], "f": [4, 5], "m": [4, 5]},
    {"segment": "At Risk", "r": [1, 2], "f": [3, 5], "m": [1, 5]},
    {"segment": "Loyal Customers", "r": [3, 5], "f": [4, 5], "m": [1, 5]},
    {"segment": "Potential Loyalists", "r": [4, 5], "f": [2, 3], "m": [1, 5]},
    {"segment": "New Customers", "r": [5, 5], "f": [1, 1], "m": [1, 5]},
    {"segment": "Promising", "r": [4, 4], "f": [1, 1], "m": [1, 5]},
    {"segment": "Need Attention", "r": [3, 3], "f": [2, 3], "m": [1, 5]},
    {"segment": "About To Sleep", "r": [3, 3], "f": [1, 2], "m": [1, 5]},
    {"segment": "Hibernating", "r": [2, 2], "f": [1, 2], "m": [1, 5]},
    {"segment": "Lost", "r": [1, 1], "f": [1, 2], "m": [1, 5]},
]


def _check_rules(rules, bins):
    if not isinstance(rules, (list, tuple)) or not rules:
        raise ParameterError("rules must be a non-empty list of {'segment', 'r', 'f', 'm'} entries.")
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or set(rule) != {"segment", "r", "f", "m"}:
            raise ParameterError(
                f"rules[{i}] = {rule!r} must be a dict with exactly the keys 'segment', 'r', 'f', 'm' "
                "(e.g. {'segment': 'Champions', 'r': [4, 5], 'f': [4, 5], 'm': [4, 5]})."
            )
        ranges = []
        for key in ("r", "f", "m"):
            rng = rule[key]
            try:
                lo, hi = (int(v) for v in rng)
            except (TypeError, ValueError):
                raise ParameterError(f"rules[{i}][{key!r}] = {rng!r} must be a [low, high] pair of scores.") from None
            if not 1 <= lo <= hi <= bins:
                raise ParameterError(
                    f"rules[{i}][{key!r}] = [{lo}, {hi}] must satisfy 1 <= low <= high <= bins ({bins})."
                )
            ranges.append((lo, hi))
        out.append((str(rule["segment"]), ranges))
    return out


def rule_grid(rules=None, bins=5):
    """(segment names, int array (bins, bins, bins) of the rule index per R, F, M cell, -1 = none)."""
    bins = check_int(bins, "bins", low=2, high=9)
    checked = _check_rules(DEFAULT_RFM_RULES if rules is None else rules, bins)
    grid = np.full((bins, bins, bins), -1, dtype=np.int64)
    for idx in range(len(checked) - 1, -1, -1):  # first matching rule wins: paint in reverse
        (rl, rh), (fl, fh), (ml, mh) = checked[idx][1]
        grid[rl - 1 : rh, fl - 1 : fh, ml - 1 : mh] = idx
    return [name for name, _ in checked], grid


def population(values):
    """The population of one RFM column: ``(sketch of its finite values, number of customers)``.

    The state that :func:`score` ranks against; :class:`segone.PersonaModel`
    holds the same sketch for every profile column (merged over the pieces of
    the data on an engine), so the scores of a run and of
    :func:`rfm_scores` on the same profiles are the same.

    Examples
    --------
    >>> import numpy as np
    >>> sketch, n = population(np.array([3.0, 1.0, np.nan]))
    >>> sketch.count, n
    (2, 3)
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    return summarise(v)[4], int(v.size)


def score(values, sketch, n, bins=5, higher_is_better=True):
    """1..``bins`` scores of ``values`` against a population: ``1 + floor(bins * p)``.

    ``p`` is the share of the population's ``n`` customers that is strictly
    worse: in a sketch bucket below the value's (above it when
    ``higher_is_better`` is False), plus the customers without a value (not
    in the sketch).  Values in one bucket (within the sketch's 0.5%) tie and
    share a score; a value that is NaN scores 1.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.array([1.0, 1.0, 2.0, 3.0, np.nan])
    >>> score(v, *population(v)).tolist()
    [2, 2, 4, 5, 1]
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.ones(v.shape, dtype=np.int8)
    ok = np.isfinite(v)
    if n <= 0 or sketch is None or sketch.count == 0 or not ok.any():
        return out
    coords, counts = sketch._table(as_coords=True)
    if not higher_is_better:
        coords, counts = -coords[::-1], counts[::-1]
    below = np.concatenate([[0], np.cumsum(counts)])
    c = sketch.coords(v[ok])
    worse = below[np.searchsorted(coords, c if higher_is_better else -c, side="left")] + (n - sketch.count)
    out[ok] = 1 + np.minimum((bins * worse) // n, bins - 1)
    return out


def rfm_scores(profiles, *, bins=5, rules=None, recency="recency_days", frequency="orders", monetary="spend_total"):
    """Score customers on recency, frequency and monetary value and name their RFM segment.

    Parameters
    ----------
    profiles : pyarrow Table (or anything :func:`segone.build_profiles` returns / accepts as a table)
        One row per customer with ``customer_id`` and the three score columns.
    bins : int in [2, 9], default 5
        Number of score levels (``bins`` = best).
    rules : list of dict or None
        The segment rule table (see :data:`DEFAULT_RFM_RULES`); None uses the
        default, which is defined for ``bins=5`` only (with other ``bins``
        and no rules, the ``rfm_segment`` column is left out).
    recency, frequency, monetary : str
        The profile columns scored (lower recency is better).

    Returns
    -------
    pyarrow.Table
        ``customer_id``, ``r_score``, ``f_score``, ``m_score`` (int8),
        ``rfm_code`` (string such as ``"545"``) and ``rfm_segment``.

    Examples
    --------
    >>> import segone
    >>> from segone.synth import generate
    >>> rfm = segone.rfm_scores(segone.build_profiles(generate(2000, seed=0).transactions))
    >>> rfm.column_names
    ['customer_id', 'r_score', 'f_score', 'm_score', 'rfm_code', 'rfm_segment']
    """
    bins = check_int(bins, "bins", low=2, high=9)
    table = read_table(profiles, name="profiles")
    needed = ["customer_id", recency, frequency, monetary]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise SchemaError(
            f"profiles lack the column(s) {missing} needed for RFM scores; build them with segone.build_profiles "
            "or name your columns with recency=, frequency=, monetary=."
        )
    cols = {}
    for name in (recency, frequency, monetary):
        t = table.schema.field(name).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise SchemaError(f"RFM column {name!r} has type {t}; expected a numeric column.")
        v = to_float64(table.column(name)).to_numpy(zero_copy_only=False)
        if np.isinf(v).any():
            raise SchemaError(f"RFM column {name!r} holds infinite values; fix them in the profile.")
        cols[name] = v
    r = score(cols[recency], *population(cols[recency]), bins, higher_is_better=False)
    f = score(cols[frequency], *population(cols[frequency]), bins)
    m = score(cols[monetary], *population(cols[monetary]), bins)
    digits = np.array([str(i) for i in range(10)], dtype=object)
    code = digits[r] + digits[f] + digits[m]
    out = {
        "customer_id": table.column("customer_id"),
        "r_score": pa.array(r),
        "f_score": pa.array(f),
        "m_score": pa.array(m),
        "rfm_code": pa.array(code.tolist(), type=pa.string()),
    }
    if rules is not None or bins == 5:
        names, grid = rule_grid(rules, bins)
        labels = np.array(names + [UNCLASSIFIED], dtype=object)
        idx = grid[r - 1, f - 1, m - 1]  # -1 (no rule) picks the last label: Unclassified
        out["rfm_segment"] = pa.array(labels[idx].tolist(), type=pa.string())
    return pa.table(out)
