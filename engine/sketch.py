"""A mergeable, deterministic quantile sketch with relative-error guarantees.

The sketch follows DDSketch (Masson, Rim & Lee, VLDB 2019): values are
counted in logarithmic buckets ``ceil(log_gamma(|x|))`` with
``gamma = (1 + alpha) / (1 - alpha)``, so any quantile it returns is within
``alpha`` *relative* error of the true one (for ``|x| >= min_value``; smaller
magnitudes share a zero bucket).  Unlike randomised rank sketches (KLL), the
state is a plain histogram: merging is exact and order-independent, so
fitting on the pieces of a dataset and merging gives the same state as
fitting on the whole, and the same data always gives the same result.

The updates are one compiled pass per column (the ``ddsketch`` package
updates one value at a time in Python, far too slow for a million customers
per feature), and :func:`summarise` gives a column's count, mean, sum of
squares and maximum from the same pass.  The pass and the bucket keys are
the ``sketch`` kernel family of :mod:`segone.kernels` (Cython and Numba
twins of ``kernels/reference.py``'s ``sketch_summary`` and ``sketch_keys``,
chosen by :mod:`segone._backend`).  Bucket keys use the C library's
``log``, as the compiled scoring kernels do, so a value's bucket is the same
everywhere.
"""

import threading

import numpy as np
from segone._backend import get_kernels
from segone._validation import check_float
from segone.errors import DataError, ParameterError


def _span(log_gamma, min_value):
    """(smallest key, number of keys) of the magnitudes in [min_value, the float64 maximum]."""
    lo = int(np.ceil(np.log(min_value) / log_gamma))
    hi = int(np.ceil(np.log(np.finfo(np.float64).max) / log_gamma)) + 1
    return lo, hi - lo + 1


_local = threading.local()


def _scratch(width):
    """Zeroed dense histograms of this thread, reused from call to call (zeroed again after use)."""
    buf = getattr(_local, "hist", None)
    if buf is None or buf[0].size != width:
        buf = (np.zeros(width, np.int64), np.zeros(width, np.int64))
        _local.hist = buf
    return buf


def summarise(values, alpha=0.005, min_value=1e-9):
    """``(count, mean, m2, max, sketch)`` of the finite values of a column, in one compiled pass.

    ``m2`` is the sum of squared deviations from the mean; NaN and infinite
    values are skipped (count 0: mean, m2 and max are 0, 0 and -inf).

    Examples
    --------
    >>> import numpy as np
    >>> n, mean, m2, mx, sk = summarise(np.array([1.0, 2.0, np.nan, 3.0]))
    >>> n, mean, m2, mx, round(sk.quantile(0.5), 2)
    (3, 2.0, 2.0, 3.0, 2.0)
    """
    sk = QuantileSketch(alpha, min_value)
    v = np.ascontiguousarray(values, dtype=np.float64).ravel()
    lo, width = _span(sk.log_gamma, sk.min_value)
    pos, neg = _scratch(width)
    cnt, s1, s2, x0, mx, zero, plo, phi, nlo, nhi = get_kernels("auto", "sketch").sketch_summary(
        v, sk.log_gamma, lo, sk.min_value, pos, neg)  # fmt: skip
    sk.zero_count = int(zero)
    if phi >= plo:
        c = pos[plo : phi + 1]
        nz = np.flatnonzero(c)
        sk.pos_keys, sk.pos_counts = (nz + plo + lo).astype(np.int64), c[nz].astype(np.int64)
        c[:] = 0  # the scratch goes back zeroed
    if nhi >= nlo:
        c = neg[nlo : nhi + 1]
        nz = np.flatnonzero(c)
        sk.neg_keys, sk.neg_counts = (nz + nlo + lo).astype(np.int64), c[nz].astype(np.int64)
        c[:] = 0
    if cnt == 0:
        return 0, 0.0, 0.0, -np.inf, sk
    mean = x0 + s1 / cnt
    m2 = max(s2 - s1 * s1 / cnt, 0.0)
    return int(cnt), float(mean), float(m2), float(mx), sk


class QuantileSketch:
    """Relative-error quantile sketch (DDSketch) over float64 values.

    Parameters
    ----------
    alpha : float in (0, 0.5], default 0.005
        Relative accuracy of the returned quantiles.
    min_value : float, default 1e-9
        Magnitudes below this count as 0.

    Examples
    --------
    >>> import numpy as np
    >>> s = QuantileSketch().update(np.arange(1, 1001.0))
    >>> abs(s.quantile(0.5) - 500.5) / 500.5 < 0.005
    True
    """

    def __init__(self, alpha=0.005, min_value=1e-9):
        self.alpha = check_float(alpha, "alpha", low=0.0, high=0.5, low_inclusive=False)
        self.min_value = check_float(min_value, "min_value", low=0.0, low_inclusive=False)
        self.log_gamma = np.log((1 + self.alpha) / (1 - self.alpha))
        self.pos_keys = np.empty(0, dtype=np.int64)
        self.pos_counts = np.empty(0, dtype=np.int64)
        self.neg_keys = np.empty(0, dtype=np.int64)
        self.neg_counts = np.empty(0, dtype=np.int64)
        self.zero_count = 0

    @property
    def count(self):
        return int(self.pos_counts.sum() + self.neg_counts.sum() + self.zero_count)

    def _keys(self, mag):
        out = np.empty(np.shape(mag), dtype=np.int64)
        get_kernels("auto", "sketch").sketch_keys(np.ascontiguousarray(mag, dtype=np.float64).ravel(), self.log_gamma,
                                                  out.reshape(-1))  # fmt: skip
        return out

    @staticmethod
    def _add(keys, counts, new_keys, new_counts):
        k = np.concatenate([keys, new_keys])
        c = np.concatenate([counts, new_counts])
        uk, inv = np.unique(k, return_inverse=True)
        return uk, np.bincount(inv, weights=c, minlength=uk.size).astype(np.int64)

    def update(self, values, count=1):
        """Add values (each ``count`` times); NaN or infinite values raise. Returns self."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if not np.isfinite(v).all():
            raise DataError("QuantileSketch.update: values hold NaN or infinity; drop or fill them first.")
        count = int(count)
        if v.size == 0 or count <= 0:
            return self
        new = summarise(v, self.alpha, self.min_value)[4]
        self.zero_count += new.zero_count * count
        self.pos_keys, self.pos_counts = self._add(self.pos_keys, self.pos_counts, new.pos_keys, new.pos_counts * count)
        self.neg_keys, self.neg_counts = self._add(self.neg_keys, self.neg_counts, new.neg_keys, new.neg_counts * count)
        return self

    def merge(self, other):
        """A new sketch holding both inputs (exact: same as one sketch of all values)."""
        if not isinstance(other, QuantileSketch):
            raise ParameterError(f"can only merge a QuantileSketch, got {type(other).__name__}.")
        if other.alpha != self.alpha or other.min_value != self.min_value:
            raise ParameterError("cannot merge sketches with different alpha or min_value.")
        out = QuantileSketch(self.alpha, self.min_value)
        out.pos_keys, out.pos_counts = self._add(self.pos_keys, self.pos_counts, other.pos_keys, other.pos_counts)
        out.neg_keys, out.neg_counts = self._add(self.neg_keys, self.neg_counts, other.neg_keys, other.neg_counts)
        out.zero_count = self.zero_count + other.zero_count
        return out

    @property
    def min_key(self):
        """Key of the smallest magnitude counted outside the zero bucket."""
        return int(np.ceil(np.log(self.min_value) / self.log_gamma))

    def coords(self, values):
        """Monotone integer bucket coordinate of each value (0 = the zero bucket, negative below).

        Two values share a coordinate exactly when the sketch cannot tell
        them apart; the compiled scoring kernels compute the same function.
        """
        v = np.asarray(values, dtype=np.float64)
        mag = np.abs(v)
        out = np.zeros(v.shape)
        big = mag >= self.min_value
        out[big] = np.sign(v[big]) * (self._keys(mag[big]) - self.min_key + 1)
        return out

    def _table(self, as_coords=False):
        """(bucket values ascending, counts); values are representatives or bucket coordinates."""
        if as_coords:
            neg_vals = -(self.neg_keys[::-1] - self.min_key + 1).astype(np.float64)
            pos_vals = (self.pos_keys - self.min_key + 1).astype(np.float64)
        else:
            # bucket i holds magnitudes in (gamma^(i-1), gamma^i]; its representative
            # 2 gamma^i / (gamma + 1) is within alpha of every value in it
            g = np.exp(self.log_gamma)
            neg_vals = -2.0 * np.exp(self.neg_keys[::-1] * self.log_gamma) / (g + 1)
            pos_vals = 2.0 * np.exp(self.pos_keys * self.log_gamma) / (g + 1)
        vals = np.concatenate([neg_vals, [0.0], pos_vals])
        counts = np.concatenate([self.neg_counts[::-1], [self.zero_count], self.pos_counts])
        return vals, counts

    def quantiles(self, qs, as_coords=False):
        """Values at the ranks ``qs`` (in [0, 1]), within ``alpha`` relative error; NaN when empty.

        With ``as_coords=True`` the bucket coordinates (see :meth:`coords`) of those values.
        """
        qs = np.asarray(qs, dtype=np.float64)
        if ((qs < 0) | (qs > 1) | ~np.isfinite(qs)).any():
            raise ParameterError("quantile ranks must lie in [0, 1].")
        n = self.count
        if n == 0:
            return np.full(qs.shape, np.nan)
        vals, counts = self._table(as_coords)
        cum = np.cumsum(counts)
        # the value of rank q is the (floor(q * (n - 1)) + 1)-th smallest, as DDSketch does
        idx = np.searchsorted(cum, np.floor(qs * (n - 1)) + 1, side="left")
        return vals[np.minimum(idx, vals.size - 1)]

    def quantile(self, q):
        return float(self.quantiles([q])[0])

    def to_dict(self):
        return {
            "alpha": self.alpha,
            "min_value": self.min_value,
            "pos": [self.pos_keys.tolist(), self.pos_counts.tolist()],
            "neg": [self.neg_keys.tolist(), self.neg_counts.tolist()],
            "zero": self.zero_count,
        }

    @classmethod
    def from_dict(cls, d, where="quantile sketch"):
        """The sketch of :meth:`to_dict`; every field is checked (ModelFormatError naming it)."""
        from segone._validation import check_stored_array, check_stored_number
        from segone.errors import ModelFormatError

        if not isinstance(d, dict):
            raise ModelFormatError(f"{where}: expected an object, got {type(d).__name__}.")
        alpha = check_stored_number(d.get("alpha"), "alpha", where, low=0.0, high=0.5, low_inclusive=False)
        min_value = check_stored_number(d.get("min_value"), "min_value", where, low=0.0, low_inclusive=False)
        s = cls(alpha, min_value)
        top = int(np.floor(np.log(np.finfo(np.float64).max) / s.log_gamma)) - 1  # larger keys overflow exp()
        for side in ("pos", "neg"):
            pair = d.get(side)
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ModelFormatError(f"{where}: field {side!r} must be [keys, counts], got {pair!r:.80}.")
            keys = check_stored_array(pair[0], f"{side} keys", where, integer=True)
            counts = check_stored_array(pair[1], f"{side} counts", where, length=len(keys), low=1, integer=True)
            if keys.size and ((np.diff(keys) <= 0).any() or keys[0] < s.min_key or keys[-1] > top):
                raise ModelFormatError(
                    f"{where}: field '{side} keys' must be strictly increasing bucket keys in [{s.min_key}, {top}]; "
                    "the document is corrupt or was edited: write it again."
                )
            setattr(s, f"{side}_keys", keys)
            setattr(s, f"{side}_counts", counts)
        s.zero_count = check_stored_number(d.get("zero"), "zero", where, low=0, integer=True)
        return s
