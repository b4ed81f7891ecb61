"""Segments of one: a persona for every customer.

The module ``segone.describe._personas`` (it was ``segone.describe.personas``,
a name now held by the function alone: ``segone.describe.personas`` and
``segone.personas``); its public names are imported from ``segone.describe``.

A persona is the few traits that set one customer apart from the whole
customer base, and one plain sentence that says them.  For every numeric
profile feature the customer's population percentile ``p`` comes from the
mergeable quantile sketch of the feature (:class:`PersonaState` holds a
:class:`~segone.score.ScorerState`, so it merges across partitions), and the
trait's signed strength is ``2 p - 1`` (-1: lowest in the base, +1:
highest).  A categorical attribute value is a trait as strong as it is rare
(``1 - 2 x the share of customers holding it``; values held by half the base
or more, and empty values such as "" or "[]", are never traits).

Features are grouped (orders, purchase days and the order windows all say
"buys often"); a group contributes its strongest member only.  The compiled
``top_traits`` kernel (Cython or Numba, tested against the NumPy reference)
picks the ``n_traits`` strongest groups per customer, and traits weaker than
``min_strength`` are left out: a customer at the median of everything reads
"A typical customer: nothing stands out from the base."

The phrasing is data: :data:`DEFAULT_PHRASES` is a list of rules (a glob
pattern over feature names, the feature group, and a phrase for a high and
for a low value, None to never say it); pass ``phrases=`` to replace it.
The rules of the profile features come from the feature registry
(:attr:`segone.features.Feature.phrase`), exact names before families, and
a catch-all rule ends the list.
Optional keys of a rule: ``high_one`` / ``low_one`` (the phrase when the
value reads 1 at the decimals of its ``{value}``: "1 order only", not "1
orders"), ``high_zero`` / ``low_zero`` (when it reads 0: "no purchase yet"),
``high_far`` (when ``{ratio}`` reaches ``far_ratio``, default 10: "far above
typical" instead of "857.0x"), ``high_min`` / ``low_min`` / ``low_max``
(values below / below / above these are never said in that direction: a
share that reads "0%" is not a trait) and ``low_base_min`` (the low phrase
only for a feature whose base mean reaches it: "never buys milk" only where
the base spends on milk).
Placeholders: ``{value}`` (the customer's value), ``{ratio}`` (value / the
base's median), ``{pct}`` (value x 100), ``{top}`` / ``{bottom}`` (how far
into the top or bottom of the base, in %), each with an optional ``:.Nf``
format; ``{label}`` (what the feature name holds after its prefix, e.g.
"jazz" for share_jazz) and ``{name}`` (the feature name).  Sentences are
built with Arrow's string kernels, column by column, never row by row.
"""

import fnmatch
import string

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone import features as _features
from segone._deprecation import renamed_keywords
from segone._backend import get_kernels
from segone.describe import _sentences
from segone.describe.segments import categorical_columns, numeric_columns
from segone._state import State
from segone._threads import effective_n_threads
from segone._validation import check_float, check_int
from segone.errors import NotFittedError, ParameterError, SchemaError
from segone.io import read_table, to_float64
from segone.kernels._common import MAX_DECIMALS
from segone.score import ScalerState, ScorerState
from segone.sketch import QuantileSketch, summarise

# (pattern, group, phrase when high, phrase when low); the first matching rule wins. The rules of the profile
# features are declared with the features (segone.features: exact names before families); the catch-all ends it.
DEFAULT_PHRASES = _features.persona_phrases() + [
    {"match": "*", "group": None, "high": "high {name}: {value:.1f} (top {top:.0f}%)",
     "low": "low {name}: {value:.1f} (bottom {bottom:.0f}%)"},
]  # fmt: skip
CATEGORY_PHRASE = "{name}: "  # followed by the customer's value
NOTHING = "A typical customer: nothing stands out from the base."
SEGMENT_PREFIX = "for their segment, "
FAR_RATIO = 10.0  # a {ratio} from this on reads the rule's "high_far" phrase ("far above typical")
_KINDS = ("none", "value", "ratio", "pct", "top", "bottom", "category")


def _compile_phrase(template, feature, label, where):
    """'text {kind:.Nf} text ...' -> (literals, kinds, decimals), with {name} / {label} filled in.

    ``literals`` has one more entry than ``kinds``: the text around the numbers.
    """
    if template is None:
        return None
    if not isinstance(template, str):
        raise ParameterError(f"{where}: a phrase must be a string or None, got {template!r}.")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ParameterError(f"{where}: phrase {template!r} is not a valid template ({exc}).") from None
    lits, kinds, decs = [""], [], []
    for lit, field, spec, _ in parsed:
        lits[-1] += lit
        if field is None:
            continue
        if field in ("name", "label"):
            lits[-1] += feature if field == "name" else label
        elif field in _KINDS[1:-1]:
            d = 0
            if spec:
                if not (spec.startswith(".") and spec.endswith("f") and spec[1:-1].isdigit()):
                    raise ParameterError(f"{where}: format {spec!r} in {template!r}; use .0f, .1f, ...")
                d = int(spec[1:-1])
                if d > MAX_DECIMALS:
                    raise ParameterError(f"{where}: format {spec!r} in {template!r} asks for {d} decimals; use at "
                                         f"most {MAX_DECIMALS} (.0f to .{MAX_DECIMALS}f).")  # fmt: skip
            kinds.append(field)
            decs.append(d)
            lits.append("")
        else:
            raise ParameterError(
                f"{where}: phrase {template!r} names {{{field}}}; known placeholders: value, ratio, pct, top, "
                "bottom, label, name."
            )
    return lits, kinds, decs


def _float_columns(table, names):
    """The named numeric columns as contiguous float64 arrays, nulls as NaN (zero-copy where they already are)."""
    out = []
    for name in names:
        c = table.column(name)
        c = c.combine_chunks() if isinstance(c, pa.ChunkedArray) and c.num_chunks != 1 else c
        c = c.chunk(0) if isinstance(c, pa.ChunkedArray) else c
        out.append(np.ascontiguousarray(to_float64(c).to_numpy(zero_copy_only=False), dtype=np.float64))
    return out


def _map_threads(fn, items, n_threads):
    """[fn(x) for x in items] on up to ``n_threads`` threads (fn releases the GIL)."""
    nt = min(effective_n_threads(n_threads), len(items))
    if nt <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(nt) as pool:
        return list(pool.map(fn, items))


def _strength_tables(sketches, no_high, no_low, bounds=None):
    """Lookup tables of the strength ``2 p - 1`` of every bucket coordinate, per feature: (lut, off, low, len).

    ``p`` is the mid-rank of the coordinate's bucket in the fitted base (the
    share below it plus half the share in it); directions the vocabulary
    never says (``no_high`` / ``no_low``) are NaN, and so are values outside
    the feature's ``bounds`` (high_min, low_min, low_max; NaN: none).  A
    feature without values has an empty table (never a trait).
    """
    d = len(sketches)
    off, low, length = np.zeros(d, np.int64), np.zeros(d), np.zeros(d, np.int64)
    parts, pos = [], 0
    for j, sk in enumerate(sketches):
        if sk is None or sk.count == 0:
            continue
        coords, counts = sk._table(as_coords=True)
        a, b = int(coords[0]), int(coords[-1])
        dense = np.zeros(b - a + 1)
        dense[(coords - a).astype(np.int64)] = counts
        below = np.cumsum(dense) - dense
        strength = (2.0 * (below + 0.5 * dense) / dense.sum() - 1.0).astype(np.float32)
        if no_high[j]:
            strength[strength > 0] = np.nan
        if no_low[j]:
            strength[strength < 0] = np.nan
        if bounds is not None:  # values never said in a direction (within the sketch's 0.5% at the bound)
            hi_min, lo_min, lo_max = bounds[j]
            at = np.arange(a, b + 1)
            for bound, direction, bad in ((hi_min, 1, at < sk.coords(hi_min)), (lo_min, -1, at < sk.coords(lo_min)),
                                          (lo_max, -1, at > sk.coords(lo_max))):  # fmt: skip
                if np.isfinite(bound):
                    strength[bad & (np.sign(strength) == direction)] = np.nan
        parts.append(strength)
        off[j], low[j], length[j] = pos, a, strength.size
        pos += strength.size
    lut = np.concatenate(parts) if parts else np.zeros(1, np.float32)
    return lut, off, low, length


def _rule_for(name, phrases):
    for i, rule in enumerate(phrases):
        if fnmatch.fnmatchcase(name, rule["match"]):
            return i, rule
    return None, None


def _label_of(name, pattern):
    """What a glob pattern's ``*`` stands for in ``name``, made readable (share_home_garden -> home garden)."""
    return _features.label_of(name, pattern) or name


def _check_phrases(phrases):
    """The persona vocabulary's rules: :func:`segone._validation.check_phrases` (keys, kinds, placeholders)."""
    from segone._validation import check_phrases

    check_phrases(phrases)


class PersonaState(State):
    """Mergeable state of a :class:`PersonaModel`: the quantile scorer state and category counts."""

    kind = "persona_state"

    def __init__(self, scorer, categories, n):
        self.scorer, self.categories, self.n = scorer, categories, int(n)

    @classmethod
    def of(cls, profiles, model):
        return model.partial_state(profiles)

    def merge(self, other):
        self._check_same(other)
        cats = {c: dict(v) for c, v in self.categories.items()}
        for c, v in other.categories.items():
            d = cats.setdefault(c, {})
            for key, cnt in v.items():
                d[key] = d.get(key, 0) + cnt
        if self.scorer is None or other.scorer is None:
            sc = self.scorer or other.scorer
        else:
            sc = self.scorer.merge(other.scorer)
        return PersonaState(sc, cats, self.n + other.n)

    def finish(self, model):
        return model.fit_state(self)

    def _data(self):
        return {"scorer": None if self.scorer is None else self.scorer.to_dict(),
                "categories": {c: [[k, v] for k, v in d.items()] for c, d in self.categories.items()}, "n": self.n}  # fmt: skip

    @classmethod
    def _from_data(cls, d):
        sc = None if d["scorer"] is None else ScorerState.from_dict(d["scorer"])
        return cls(sc, {c: dict(map(tuple, v)) for c, v in d["categories"].items()}, d["n"])


class PersonaModel:
    """Fitted population percentiles of the profile features, and the vocabulary that phrases them.

    Parameters
    ----------
    n_traits : int, default 3
        Traits per customer.
    min_strength : float in [0, 1], default 0.5
        Traits weaker than this are left out (|2 p - 1| < 0.5: inside the
        middle half of the base).
    phrases : list of dict, optional
        The vocabulary (default :data:`DEFAULT_PHRASES`).
    categorical : list of str or None
        Categorical (string, dictionary or boolean) profile columns to use as
        traits; default: every such column with at most ``max_categories``
        distinct values.
    max_categories : int, default 50
    backend, n_threads :
        Kernel backend and threads.

    Examples
    --------
    >>> import segone
    >>> from segone.synth import generate
    >>> d = generate(2000, seed=0)
    >>> prof = segone.build_profiles(d.transactions, events=d.events, attributes=d.customers)
    >>> t = PersonaModel().fit(prof).personas(prof)
    >>> t.num_rows, t.column_names
    (2000, ['customer_id', 'traits', 'summary'])
    """

    def __init__(self, n_traits=3, *, min_strength=0.5, phrases=None, categorical=None, max_categories=50,
                 backend="auto", n_threads=None):  # fmt: skip
        self.n_traits = n_traits
        self.min_strength = min_strength
        self.phrases = phrases
        self.categorical = categorical
        self.max_categories = max_categories
        self.backend = backend
        self.n_threads = n_threads

    # -- features -------------------------------------------------------------
    @staticmethod
    def numeric_columns(table):
        """The profile columns described by percentiles (every integer or float column but ids and times)."""
        return numeric_columns(table)

    def _categorical_columns(self, table):
        if self.categorical is not None:
            missing = [c for c in self.categorical if c not in table.column_names]
            if missing:
                raise SchemaError(
                    f"categorical column(s) {missing} are not in the profiles; found {table.column_names[:30]}."
                )
            return list(self.categorical)
        return categorical_columns(table)

    def partial_state(self, profiles):
        """The mergeable :class:`PersonaState` of one piece of profiles.

        Percentiles are taken over the finite, non-null values of each
        feature: a missing value (null or NaN) is never a trait and never
        shifts anyone else's percentile.  One compiled pass per column gives
        its moments and quantile sketch; columns run on ``n_threads``.
        """
        self._check_params()
        table = read_table(profiles, name="profiles")
        names = self.numeric_columns(table)
        cols = _float_columns(table, names)
        moments = ScalerState(len(names))
        sketches = []
        for j, (cnt, mean, m2, mx, sk) in enumerate(_map_threads(summarise, cols, self.n_threads)):
            if cnt:
                moments.count[j], moments.mean[j], moments.m2[j], moments.max[j] = cnt, mean, m2, mx
            sketches.append(sk)
        feats = [(n, "identity", "quantile") for n in names]
        cats = {}
        for c in self._categorical_columns(table):
            col = table.column(c)
            vc = pc.value_counts(col if pa.types.is_string(col.type) else pc.cast(col, pa.string()))
            cats[c] = {str(v["values"]): int(v["counts"]) for v in vc.to_pylist() if v["values"] is not None}
        scorer = ScorerState(feats, moments, np.zeros(len(names)), sketches) if names else None
        return PersonaState(scorer, cats, table.num_rows)

    def fit(self, profiles):
        """Fit the percentiles on the profiles (one piece); see :meth:`fit_state`."""
        return self.fit_state(self.partial_state(profiles))

    def fit_state(self, state):
        """Fit from a (merged) :class:`PersonaState`; returns self."""
        self._check_params()
        phrases = DEFAULT_PHRASES if self.phrases is None else self.phrases
        _check_phrases(phrases)
        self.state_ = state
        names = [] if state.scorer is None else [f[0] for f in state.scorer.features]
        self.features_ = names
        medians = {}
        if state.scorer is not None:
            for j, sk in enumerate(state.scorer.sketches):
                medians[names[j]] = sk.quantile(0.5) if sk is not None and sk.count else np.nan
        groups, table, variants, bounds = [], [], [], []
        base_mean = {} if state.scorer is None else dict(zip(names, state.scorer.moments.mean))
        for name in names:
            i, rule = _rule_for(name, phrases)
            variants.append({})
            bounds.append((np.nan, np.nan, np.nan))
            if rule is None:  # a vocabulary without a catch-all rule: the feature is never a trait
                groups.append(f"feature:{name}")
                table.append((None, None))
                continue
            label = _label_of(name, rule["match"])
            where = f"phrases[{i}] ({rule['match']!r}, feature {name!r})"
            groups.append((rule.get("group") or f"feature:{name}").replace("{label}", label))
            no_ratio = not medians.get(name, 0) > 0  # a ratio to a median of 0 means nothing: say the value instead

            def compiled(key):
                e = _compile_phrase(rule.get(key), name, label, where)
                return e and (e[0], ["value" if x == "ratio" else x for x in e[1]], e[2]) if no_ratio else e

            hi, lo = compiled("high"), compiled("low")
            if no_ratio and rule.get("high_far") and "ratio" in str(rule.get("high")):
                hi = compiled("high_far")  # above a typical value of 0 is far above it, whatever the value
            if lo is not None and rule.get("low_base_min") is not None and \
                    not base_mean.get(name, 0.0) >= rule["low_base_min"]:  # fmt: skip
                lo = None  # "never buys X" only where the base buys X
            table.append((hi, lo))
            variants[-1] = {(d, v): compiled(f"{d}_{v}") for d in ("high", "low") for v in ("one", "zero", "far")
                            if rule.get(f"{d}_{v}") is not None and (hi if d == "high" else lo) is not None}  # fmt: skip
            variants[-1]["far_ratio"] = float(rule.get("far_ratio", FAR_RATIO))
            bounds[-1] = tuple(float(rule[b]) if rule.get(b) is not None else np.nan
                               for b in ("high_min", "low_min", "low_max"))  # fmt: skip
        self.groups_ = groups
        self._phrase_table = table
        self._variants = variants
        self._bounds = bounds
        sketches = [] if state.scorer is None else state.scorer.sketches
        self._tables = _strength_tables(sketches, [hi is None for hi, _ in table], [lo is None for _, lo in table],
                                        bounds)  # fmt: skip
        self.medians_ = np.array([medians.get(n, np.nan) for n in names])
        limit = check_int(self.max_categories, "max_categories", low=1)
        from segone.privacy import is_personal

        # a categorical column is a trait when the vocabulary says something of it (its rule has a "high"
        # phrase), it has few values, and it is not personal data (names, e-mails, ...)
        self.categorical_ = {c: counts for c, counts in state.categories.items() if len(counts) <= limit
                             and (_rule_for(c, phrases)[1] or {}).get("high") is not None and not is_personal(c)}  # fmt: skip
        return self

    def _check_params(self):
        check_int(self.n_traits, "n_traits", low=1, high=64)
        check_float(self.min_strength, "min_strength", low=0.0, high=1.0)
        if self.phrases is not None:
            _check_phrases(self.phrases)  # before any profile is read

    # -- personas ---------------------------------------------------------------
    def _strengths(self, table, n_extra=0):
        """(S, cols): N x (D + n_extra) float32 strengths of the numeric features in the first D columns (NaN:
        no trait, the extra columns are left for the caller) and the D float64 value columns (NaN: missing)."""
        n, names = table.num_rows, self.features_
        cols = _float_columns(table, names)
        S = np.empty((n, len(names) + n_extra), dtype=np.float32)
        if names:
            lut, off, low, length = self._tables
            ref = QuantileSketch()
            get_kernels(self.backend, "persona").persona_strengths(
                cols, lut, off, low, length, (ref.log_gamma, ref.min_value, float(ref.min_key)), S,
                effective_n_threads(self.n_threads))  # fmt: skip
        return S, cols

    def set_segments(self, sketches, min_strength=0.8):
        """Turn on the segment contrast: what sets a customer apart from their own segment.

        ``sketches`` maps feature names to one :class:`~segone.sketch.QuantileSketch`
        per segment (``SegmentStats.segment_sketches()`` gives them for the
        headline features).  :meth:`personas` called with ``segments`` then
        adds, where it says more than the base traits, one trait measured
        against the customer's own segment (``against="segment"``): the
        feature among these where the customer sits furthest from their
        segment's middle, if at least ``min_strength`` away (0.8: the top or
        bottom 10% of the segment) and its feature group is not already among
        the customer's traits.  Its phrase is the vocabulary's, preceded by
        "for their segment, ", with ``{ratio}`` to the segment's median and
        ``{top}`` / ``{bottom}`` within the segment.  Returns self.
        """
        if not hasattr(self, "features_"):
            raise NotFittedError("fit the PersonaModel before set_segments.")
        check_float(min_strength, "min_strength", low=0.0, high=1.0)
        tables = {}
        for name, sks in sketches.items():
            if name not in self.features_:
                continue
            j = self.features_.index(name)
            hi, lo = self._phrase_table[j]
            if hi is None and lo is None:
                continue
            sks = list(sks)
            lut, off, low, length = _strength_tables(sks, [hi is None] * len(sks), [lo is None] * len(sks),
                                                     [self._bounds[j]] * len(sks))  # fmt: skip
            med = np.array([sk.quantile(0.5) if sk is not None and sk.count else np.nan for sk in sks])
            tables[name] = (j, lut, off, low, length, med)
        self._segment_tables = tables
        self.segment_min_strength_ = float(min_strength)
        return self

    def _segment_slot(self, seg, V, idx, groups_of):
        """(feature index, strength, within-segment percentile, segment median) of the segment contrast slot."""
        n = len(seg)
        tabs = getattr(self, "_segment_tables", None) or {}
        j_out = np.full(n, -1, np.int64)
        t_out = np.full(n, np.nan)
        med_out = np.full(n, np.nan)
        if not tabs or n == 0:
            return j_out, t_out, med_out
        ref = QuantileSketch()
        best = np.full(n, -1.0)
        for j, lut, off, low, length, med in tabs.values():
            k_seg = len(length)
            ok = (seg >= 0) & (seg < k_seg)
            s_c = np.where(ok, seg, 0)
            v = V[j]
            ok &= np.isfinite(v) & (length[s_c] > 0)
            coord = ref.coords(np.where(ok, v, 0.0))
            ci = np.clip(coord - low[s_c], 0, np.maximum(length[s_c] - 1, 0)).astype(np.int64)
            t = np.where(ok, lut[np.minimum(off[s_c] + ci, lut.size - 1)], np.nan)
            a = np.abs(t)
            # not said already: the feature's group is not among the customer's base traits
            said = np.zeros(n, bool)
            for slot in range(idx.shape[1]):
                said |= groups_of[np.where(idx[:, slot] >= 0, idx[:, slot], len(groups_of) - 1)] == groups_of[j]
            take = (a >= self.segment_min_strength_) & (a > best) & ~said & np.isfinite(a)
            best = np.where(take, a, best)
            j_out = np.where(take, j, j_out)
            t_out = np.where(take, t, t_out)
            med_out = np.where(take, med[s_c], med_out)
        return j_out, t_out, med_out

    @renamed_keywords(where="PersonaModel.personas", segments="labels")
    def personas(self, profiles, labels=None, *, id_column="customer_id", rfm=False):
        """A table with ``id_column``, ``segment`` (``labels``, the segment of every row, when given), ``traits``
        and ``summary``, one row per customer (``segments=`` is the deprecated name of ``labels=``).

        ``traits`` is a list of structs (feature, value, percentile,
        strength, against), strongest first; ``against`` is "base" (the whole
        customer base), or "segment" for the one segment contrast trait (see
        :meth:`set_segments`); ``summary`` is the sentence.  With
        ``rfm=True`` also ``r_score``, ``f_score``, ``m_score`` (1..5),
        ``rfm_code`` and ``rfm_segment`` (see :meth:`rfm_columns`).
        """
        if not hasattr(self, "state_"):
            raise NotFittedError("this PersonaModel is not fitted yet; call fit(profiles) first.")
        segments = labels
        table = read_table(profiles, name="profiles")
        if id_column not in table.column_names:
            raise SchemaError(f"profiles have no {id_column!r} column; found {table.column_names[:20]}.")
        n, k = table.num_rows, int(self.n_traits)
        names = list(self.features_)
        cat_cols = []  # (column, values as strings, strength of each value's code)
        for c, counts in self.categorical_.items():
            if c not in table.column_names:
                continue
            total = sum(counts.values()) or 1
            vals = table.column(c)
            vals = vals if pa.types.is_string(vals.type) else pc.cast(vals, pa.string())
            vals = vals.combine_chunks() if isinstance(vals, pa.ChunkedArray) else vals
            keys = list(counts)
            s = 1.0 - 2.0 * np.array([counts[v] / total for v in keys] + [1.0])
            s[s <= 0] = np.nan
            # an empty value (an empty list such as "", ";" or "[]": no letter or digit) is never a trait
            s[:-1][[not any(ch.isalnum() for ch in v) for v in keys]] = np.nan
            code = pc.fill_null(pc.index_in(vals, value_set=pa.array(keys, pa.string())), len(keys))
            cat_cols.append((c, vals, s.astype(np.float32)[code.to_numpy(zero_copy_only=False)]))
        S, V = self._strengths(table, len(cat_cols))
        for i, (_, _, s) in enumerate(cat_cols):  # one matrix: numeric strengths, then categorical ones
            S[:, len(names) + i] = s
        rfm_cols = self.rfm_columns(V) if rfm else {}
        # the kernel keeps each group's strongest member
        groups = list(self.groups_) + [f"category:{c}" for c, _, _ in cat_cols]
        gid = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        idx = np.empty((n, k), dtype=np.int32)
        val = np.empty((n, k), dtype=np.float32)
        get_kernels(self.backend, "persona").top_traits(
            S, np.array([gid[g] for g in groups], dtype=np.int32), len(gid),
            float(self.min_strength), k, idx, val, effective_n_threads(self.n_threads))  # fmt: skip
        contrast = None
        if segments is not None and getattr(self, "_segment_tables", None):
            seg = np.asarray(segments)
            if seg.shape == (n,) and seg.dtype.kind in "iu":
                gcode = np.array([gid[g] for g in groups] + [-1], dtype=np.int64)
                contrast = self._segment_slot(seg.astype(np.int64), V, idx, gcode)
        out = self._assemble(table, id_column, segments, idx, val, V, names, cat_cols, contrast)
        for name, col in rfm_cols.items():
            out = out.append_column(name, col)
        return out

    def rfm_columns(self, V, bins=5, recency="recency_days", frequency="orders", monetary="spend_total"):
        """R, F, M scores 1..``bins`` against the fitted population, the code and the named segment.

        ``V`` holds the value columns of the profile features (as
        ``_strengths`` returns them).  The scores are :func:`segone.rfm.score`
        against the fitted sketch of each column, so they equal
        :func:`segone.rfm_scores` on the profiles the model was fitted on, the
        same on every engine; customers without a value score 1.  The segment
        comes from :data:`segone.DEFAULT_RFM_RULES`.
        """
        from segone.rfm import UNCLASSIFIED, rule_grid, score

        names = list(self.features_)
        missing = [c for c in (recency, frequency, monetary) if c not in names]
        if missing:
            raise SchemaError(f"RFM scores need the profile column(s) {missing}; build the profiles with segone.")
        sketches = self.state_.scorer.sketches
        scores = [score(V[names.index(c)], sketches[names.index(c)], self.state_.n, bins, better_high)
                  for c, better_high in ((recency, False), (frequency, True), (monetary, True))]  # fmt: skip
        r, f, m = scores
        seg_names, grid = rule_grid(None, bins)
        cell = (r.astype(np.int64) - 1) * bins * bins + (f.astype(np.int64) - 1) * bins + (m.astype(np.int64) - 1)
        codes = pa.array([f"{a}{b}{c}" for a in range(1, bins + 1) for b in range(1, bins + 1)
                          for c in range(1, bins + 1)], pa.string())  # fmt: skip
        names = pa.array(seg_names + [UNCLASSIFIED], pa.string())  # rule -1 (no rule) takes the last name
        rule = grid.ravel()[cell]
        return {"r_score": pa.array(r), "f_score": pa.array(f), "m_score": pa.array(m),
                "rfm_code": pc.take(codes, pa.array(cell)),
                "rfm_segment": pc.take(names, pa.array(np.where(rule < 0, len(seg_names), rule)))}  # fmt: skip

    def _assemble(self, table, id_column, segments, feat, val, V, names, cat_cols, contrast=None):
        n, k = feat.shape
        n_num = len(names)
        entries = self._entries(cat_cols)
        n_base = len(entries)
        if contrast is not None:  # the segment contrast's phrases: the vocabulary's, prefixed
            entries = entries + [e and ([SEGMENT_PREFIX + e[0][0]] + e[0][1:], e[1], e[2])
                                 for e in entries[: 2 * n_num]]  # fmt: skip
        entries, variants = self._with_variants(entries, n_num, n_base if contrast is not None else None)
        compiled = _sentences.compile_entries(entries)
        # per slot: the phrase (entry) code, the numbers of its placeholders, the value and the percentile
        entry, nums, values, pct = _sentences.slots(feat, val, V, self.medians_, compiled[3], variants=variants,
                                                    backend=self.backend, n_threads=self.n_threads)  # fmt: skip
        against = np.zeros((n, k), np.int8)
        if contrast is not None:  # one more slot: the same phrases, numbers against the segment
            j, t, med = contrast
            e, x, v, p = _sentences.slots(j[:, None], t[:, None].astype(np.float32), V, self.medians_,
                                          compiled[3], row_medians=med, entry_base=n_base,
                                          variants=variants, backend=self.backend,
                                          n_threads=self.n_threads)  # fmt: skip
            feat = np.concatenate([feat, j[:, None].astype(feat.dtype)], axis=1)
            val = np.concatenate([val, t[:, None].astype(val.dtype)], axis=1)
            entry = np.concatenate([entry, e], axis=1)
            nums = np.concatenate([nums, x], axis=1)
            values = np.concatenate([values, v], axis=1)
            pct = np.concatenate([pct, p], axis=1)
            against = np.concatenate([against, np.ones((n, 1), np.int8)], axis=1)
            k += 1
        cat = np.full((n, k), -1, np.int64)
        cat_values = []
        for c_i, (_, vals, _) in enumerate(cat_cols):  # every categorical column's values in one table
            enc = pc.dictionary_encode(vals)
            codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            codes = np.where(codes >= 0, codes + len(cat_values), -1)  # null: no value
            cat_values += [str(x) for x in enc.dictionary.to_pylist()]
            rows, slot = np.nonzero(feat == n_num + c_i)
            cat[rows, slot] = codes[rows]
        # traits: list<struct> of the valid slots of each row, strongest first
        okm = feat >= 0
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(okm.sum(axis=1), out=offsets[1:])
        flat = okm.ravel()
        all_names = pa.array(names + [c for c, _, _ in cat_cols], pa.string())
        traits = pa.ListArray.from_arrays(pa.array(offsets), pa.StructArray.from_arrays(
            [all_names.take(pa.array(feat.ravel()[flat])),
             pa.array(values.ravel()[flat], pa.float64(), from_pandas=True),
             pa.array(pct.ravel()[flat], pa.float64(), from_pandas=True),
             pa.array(val.ravel()[flat].astype(np.float64), pa.float64()),
             pa.array(["base", "segment"], pa.string()).take(pa.array(against.ravel()[flat]))],
            names=["feature", "value", "percentile", "strength", "against"]))  # fmt: skip
        # the sentence: slots joined by "; ", first letter capitalised (one compiled pass)
        summary = _sentences.build(entry, nums, cat, compiled, cat_values, NOTHING, self.n_threads,
                                   backend=self.backend)  # fmt: skip
        cols = {id_column: table.column(id_column)}
        if segments is not None:
            seg = np.asarray(segments)
            if seg.shape != (n,):
                raise ParameterError(f"segments has shape {seg.shape}; give one segment per profile row ({n}).")
            cols["segment"] = pa.array(seg)
        cols["traits"] = traits
        cols["summary"] = summary
        return pa.table(cols)

    def _with_variants(self, entries, n_num, contrast_base):
        """``entries`` with the phrase variants appended, and (swap, far_ratio, vdec) for :func:`_sentences.slots`.

        Entry ``2 j`` / ``2 j + 1`` is feature ``j``'s low / high phrase (at
        ``contrast_base`` too, prefixed, for the segment contrast); its
        variants (``low_one``, ``high_far``, ...) get entries of their own.
        """
        entries = list(entries)
        m = len(entries)
        swap, far, vdec = [[-1, -1, -1] for _ in range(m)], [np.inf] * m, [0] * m
        for e, base_e in enumerate(entries[:m]):
            if base_e and "value" in base_e[1]:
                vdec[e] = base_e[2][base_e[1].index("value")]
        bases = [(0, "")] + ([(contrast_base, SEGMENT_PREFIX)] if contrast_base is not None else [])
        for j in range(n_num):
            var = self._variants[j] if j < len(self._variants) else {}
            for h, d in ((0, "low"), (1, "high")):
                for col, v in enumerate(("one", "zero", "far")):
                    ph = var.get((d, v))
                    if not ph:
                        continue
                    for off, prefix in bases:
                        e = off + 2 * j + h
                        swap[e][col] = len(entries)
                        far[e] = var.get("far_ratio", FAR_RATIO)
                        entries.append(([prefix + ph[0][0]] + ph[0][1:], ph[1], ph[2]))
                        swap.append([-1, -1, -1]), far.append(np.inf), vdec.append(0)
        return entries, (np.array(swap, np.int64), np.array(far), np.array(vdec, np.int64))

    def _entries(self, cat_cols):
        """The compiled phrases: (low, high) per numeric feature, then per categorical column, then "none"."""
        entries = []
        for hi, lo in self._phrase_table:
            entries += [lo, hi]
        for c, _, _ in cat_cols:
            entries += [None, ([CATEGORY_PHRASE.format(name=c.replace("_", " ")), ""], ["category"], [0])]
        entries.append(None)  # the last code: no trait
        return entries


def with_next_step(table, steps):
    """A personas table whose ``summary`` gains each customer's next step (``"; "`` then the step).

    ``steps``: one string or None per row (:func:`segone.actions.next_steps`), rows following the table; a
    row without a step keeps its sentence.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"customer_id": [1, 2], "summary": ["Orders often", "A typical customer."]})
    >>> with_next_step(t, ["likely to buy toys in the next 30 days (62%)", None]).column("summary").to_pylist()
    ['Orders often; likely to buy toys in the next 30 days (62%)', 'A typical customer.']
    """
    if len(steps) != table.num_rows:
        raise ParameterError(f"{len(steps)} next steps for a personas piece of {table.num_rows} rows; give one "
                             "per row (None for a customer without an offer).")  # fmt: skip
    if not table.num_rows or "summary" not in table.column_names:
        return table
    summary = np.asarray(table.column("summary").to_pylist(), dtype=object)
    step = np.asarray(steps, dtype=object)
    has = np.array([x is not None for x in steps], dtype=bool)
    if not has.any():
        return table
    base = np.array([x.rstrip(".") if x else "" for x in summary[has]], dtype=object)
    summary[has] = np.where(base != "", base + "; " + step[has], step[has])
    i = table.column_names.index("summary")
    return table.set_column(i, "summary", pa.array(summary.tolist(), pa.string()))


@renamed_keywords(segments="labels")
def personas(profiles, labels=None, *, n_traits=3, min_strength=0.5, phrases=None, backend="auto",
             n_threads=None):  # fmt: skip
    """Personas of the customers in ``profiles``, against the base they form (see :class:`PersonaModel`).

    ``labels`` (optional, the segment of every row) is carried into the
    output's ``segment`` column (``segments=`` is its deprecated name).

    Examples
    --------
    >>> import segone
    >>> from segone.synth import generate
    >>> prof = segone.build_profiles(generate(1000, seed=1).transactions)
    >>> p = segone.personas(prof)
    >>> p.column("summary")[0].as_py()[0].islower()
    False
    """
    pm = PersonaModel(n_traits, min_strength=min_strength, phrases=phrases, backend=backend, n_threads=n_threads)
    return pm.fit(profiles).personas(profiles, labels)
