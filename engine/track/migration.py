"""The mergeable migration counts (:class:`Contingency`), the migration table and the population stability
index."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone._state import State, array_from_data, array_to_data
from segone.errors import DataError, ParameterError, examples
from segone.io import to_float64
from segone.track._common import GONE, MOVED, NEW, PSI_EPSILON, STATUSES, STAYED, _column


# -------------------------------------------------------------- the contingency
def _keys_of(v):
    """Sorted distinct non-negative values of an int64 array (bincount when they are small)."""
    v = v[v >= 0]
    if not v.size:
        return np.empty(0, dtype=np.int64)
    top = int(v.max())
    if top < 4 * v.size + 1024:
        return np.flatnonzero(np.bincount(v, minlength=top + 1)).astype(np.int64)
    return np.unique(v)


class Contingency(State):
    """Mergeable migration counts: customers, spend and CLV per (previous segment, new segment).

    ``counts[i, j]`` counts the customers in previous segment ``prev_ids[i]``
    now in segment ``new_ids[j]``; the extra last row counts customers absent
    before (new customers, per new segment) and the extra last column those
    absent now (gone customers, per previous segment).  ``spend`` holds the
    spend sums of the same cells.  ``clv`` and ``clv_before`` (None when
    neither run had a ``clv``) hold per cell the sum of the customers' CLV
    and, in ``clv_n`` / ``clv_before_n``, how many customers of the cell had
    one (a cell none of whose customers had one is null in the migration
    table): ``clv`` sums the new run's CLV of the customers present now and
    the previous run's of the gone ones, ``clv_before`` the previous run's
    CLV of the customers present before (see :func:`migration_table`).
    Built per piece of the *joined* data (a moves table, :func:`moves_piece`),
    merged by adding the cells (the keys are unioned): counts merge exactly,
    spend and CLV sums up to float64 rounding (exactly for values whose sums
    are exact, such as whole cents in a float64's range).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.track import Contingency, moves_piece
    >>> prev = pa.table({"customer_id": [1, 2, 3], "segment": [0, 0, 1]})
    >>> new = pa.table({"customer_id": [2, 3, 4], "segment": [0, 0, 1]})
    >>> m = moves_piece(prev, new)
    >>> c = Contingency.of(m.slice(0, 2)).merge(Contingency.of(m.slice(2)))
    >>> c == Contingency.of(m), c.stayed_share(), c.customers()
    (True, 0.5, {'previous': 3, 'now': 3, 'common': 2, 'new': 1, 'gone': 1, 'stayed': 1, 'moved': 1})
    """

    kind = "migration"

    def __init__(self, prev_ids, new_ids, counts, spend=None, clv=None):
        self.prev_ids = np.asarray(prev_ids, dtype=np.int64)
        self.new_ids = np.asarray(new_ids, dtype=np.int64)
        shape = (self.prev_ids.size + 1, self.new_ids.size + 1)
        self.counts = np.asarray(counts, dtype=np.int64).reshape(shape)
        self.spend = None if spend is None else np.asarray(spend, dtype=np.float64).reshape(shape)
        # clv: None, or (clv sums, clv counts, clv_before sums, clv_before counts) per cell
        self.clv = self.clv_n = self.clv_before = self.clv_before_n = None
        if clv is not None:
            s, n, sb, nb = clv
            self.clv, self.clv_before = (np.asarray(a, dtype=np.float64).reshape(shape) for a in (s, sb))
            self.clv_n, self.clv_before_n = (np.asarray(a, dtype=np.int64).reshape(shape) for a in (n, nb))

    def _clv_parts(self):
        return None if self.clv is None else (self.clv, self.clv_n, self.clv_before, self.clv_before_n)

    @classmethod
    def empty(cls, spend=True):
        return cls([], [], np.zeros((1, 1)), np.zeros((1, 1)) if spend else None)

    @classmethod
    def of(cls, piece, *, spend="spend"):
        """The state of one piece of joined data: a moves table (``previous_segment``, ``segment``, ``spend``,
        and ``clv`` / ``clv_before`` when present)."""
        if isinstance(piece, pa.RecordBatch):
            piece = pa.Table.from_batches([piece])
        prev = pc.fill_null(_column(piece, "previous_segment", "moves"), -1).to_numpy().astype(np.int64)
        new = pc.fill_null(_column(piece, "segment", "moves"), -1).to_numpy().astype(np.int64)
        sv = None
        if spend is not None and spend in piece.column_names:
            sv = pc.fill_null(to_float64(piece.column(spend)), 0.0).to_numpy()
        clv = clv_before = None
        if "clv" in piece.column_names or "clv_before" in piece.column_names:
            clv, clv_before = (pc.fill_null(to_float64(piece.column(c)), np.nan).to_numpy()
                               if c in piece.column_names else np.full(piece.num_rows, np.nan)
                               for c in ("clv", "clv_before"))  # fmt: skip
        return cls.of_arrays(prev, new, sv, clv=clv, clv_before=clv_before)

    @classmethod
    def of_arrays(cls, prev, new, spend=None, *, clv=None, clv_before=None):
        """From per-customer arrays: previous and new segment ids (-1 where absent), optional spend and CLV.

        ``clv`` is the customer's CLV counted in its cell (the new run's, the
        previous run's for a gone customer), ``clv_before`` its previous CLV;
        NaN where there is none.  Give both or neither.
        """
        prev = np.asarray(prev, dtype=np.int64)
        new = np.asarray(new, dtype=np.int64)
        if prev.shape != new.shape or prev.ndim != 1:
            raise ParameterError(f"prev and new must be equally long 1-D arrays, got {prev.shape} and {new.shape}.")
        both_absent = (prev < 0) & (new < 0)
        if both_absent.any():
            raise DataError(f"{int(both_absent.sum())} rows are absent from both runs (rows "
                            f"{examples(np.flatnonzero(both_absent))}); a moves row needs at least one segment.")  # fmt: skip
        pk, nk = _keys_of(prev), _keys_of(new)
        P, N = pk.size, nk.size
        lp = np.full(int(pk.max()) + 2 if P else 1, P, dtype=np.int64)
        lp[pk + 1] = np.arange(P)
        ln = np.full(int(nk.max()) + 2 if N else 1, N, dtype=np.int64)
        ln[nk + 1] = np.arange(N)
        code = lp[prev + 1]
        code *= N + 1
        code += ln[new + 1]
        size = (P + 1) * (N + 1)
        counts = np.bincount(code, minlength=size)
        sp = None
        if spend is not None:
            w = np.nan_to_num(np.asarray(spend, dtype=np.float64), nan=0.0)
            sp = np.bincount(code, weights=w, minlength=size)
        return cls(pk, nk, counts, sp, _clv_sums(code, size, clv, clv_before, prev.size))

    def merge(self, other):
        self._check_same(other)
        pk = np.union1d(self.prev_ids, other.prev_ids)
        nk = np.union1d(self.new_ids, other.new_ids)
        counts = np.zeros((pk.size + 1, nk.size + 1), dtype=np.int64)
        both = self.spend is not None and other.spend is not None
        spend = np.zeros(counts.shape) if both else None
        # a state without CLV is one whose cells hold no CLV: zero sums of zero customers
        clv = None
        if self.clv is not None or other.clv is not None:
            clv = (np.zeros(counts.shape), np.zeros(counts.shape, np.int64), np.zeros(counts.shape),
                   np.zeros(counts.shape, np.int64))  # fmt: skip
        for s in (self, other):
            r = np.append(np.searchsorted(pk, s.prev_ids), pk.size)
            c = np.append(np.searchsorted(nk, s.new_ids), nk.size)
            counts[np.ix_(r, c)] += s.counts
            if both:
                spend[np.ix_(r, c)] += s.spend
            if s.clv is not None:
                for acc, part in zip(clv, s._clv_parts()):
                    acc[np.ix_(r, c)] += part
        return Contingency(pk, nk, counts, spend, clv)

    def relabel(self, mapping):
        """A new state with the new segments renamed: ``new_ids[j] -> mapping[new_ids[j]]`` (one to one)."""
        mapping = np.asarray(mapping, dtype=np.int64)
        if self.new_ids.size and self.new_ids.max() >= mapping.size:
            raise ParameterError(f"mapping covers ids 0..{mapping.size - 1} but the state holds id {self.new_ids.max()}.")
        nk = mapping[self.new_ids]
        if np.unique(nk).size != nk.size:
            raise ParameterError("mapping must send different segments to different ids.")
        order = np.argsort(nk, kind="stable")
        cols = np.append(order, self.new_ids.size)
        spend = None if self.spend is None else self.spend[:, cols]
        clv = None if self.clv is None else tuple(a[:, cols] for a in self._clv_parts())
        return Contingency(self.prev_ids, nk[order], self.counts[:, cols], spend, clv)

    def finish(self):
        """The migration table (see :func:`migration_table`)."""
        return migration_table(self)

    # -- figures ------------------------------------------------------------------
    def common(self):
        """The (previous x new) counts of the customers present in both runs."""
        return self.counts[:-1, :-1]

    def customers(self):
        """Customer counts: previous, now, common, new, gone, stayed, moved."""
        common = int(self.common().sum())
        stayed = self._stayed()
        return {
            "previous": int(self.counts[:-1, :].sum()),
            "now": int(self.counts[:, :-1].sum()),
            "common": common,
            "new": int(self.counts[-1, :-1].sum()),
            "gone": int(self.counts[:-1, -1].sum()),
            "stayed": stayed,
            "moved": common - stayed,
        }

    def _stayed(self):
        _, ip, jn = np.intersect1d(self.prev_ids, self.new_ids, return_indices=True)
        return int(self.counts[ip, jn].sum())

    def stayed_share(self):
        """Share of the common customers whose segment id did not change (None without common customers)."""
        common = int(self.common().sum())
        return self._stayed() / common if common else None

    def adjusted_rand(self):
        """Adjusted Rand index of the two runs' segmentations on the common customers, from the counts.

        The pair-counting form of scikit-learn's ``adjusted_rand_score``
        (in exact integer arithmetic); None without common customers.
        """
        C = self.common()
        n = int(C.sum())
        if n == 0:
            return None
        sum_sq = int((C.astype(object) ** 2).sum()) if C.size else 0
        a = [int(v) for v in C.sum(axis=1)]
        b = [int(v) for v in C.sum(axis=0)]
        fp = sum(v * v for v in b) - sum_sq
        fn = sum(v * v for v in a) - sum_sq
        tp = sum_sq - n
        tn = n * n - fp - fn - sum_sq
        if fn == 0 and fp == 0:
            return 1.0
        return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))

    def shares(self):
        """(ids, previous shares, new shares) of every segment id of either run."""
        ids = np.union1d(self.prev_ids, self.new_ids)
        prev_n = self.counts[:-1, :].sum(axis=1)
        new_n = self.counts[:, :-1].sum(axis=0)
        p = np.zeros(ids.size)
        q = np.zeros(ids.size)
        p[np.searchsorted(ids, self.prev_ids)] = prev_n / max(prev_n.sum(), 1)
        q[np.searchsorted(ids, self.new_ids)] = new_n / max(new_n.sum(), 1)
        return ids, p, q

    def segment_psi(self):
        """Population stability index of the segment shares (previous -> now), per stable id.

        ``sum((q - p) * ln(q / p))`` with shares floored at ``PSI_EPSILON``
        (a segment that exists in one run only counts with that floor).
        Rules of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large.
        """
        ids, p, q = self.shares()
        if not ids.size:
            return None
        return psi(p, q)

    def figures(self):
        """The tracking figures of run.json (JSON-safe)."""
        c = self.customers()
        ids, p, q = self.shares()
        return {
            "customers": c,
            "stayed_share": self.stayed_share(),
            "adjusted_rand_common": self.adjusted_rand(),
            "segment_psi": self.segment_psi(),
            "segment_shares": {str(int(i)): {"previous": float(a), "now": float(b)} for i, a, b in zip(ids, p, q)},
        }

    def _data(self):
        return {
            "prev_ids": self.prev_ids.tolist(),
            "new_ids": self.new_ids.tolist(),
            "counts": array_to_data(self.counts),
            "spend": None if self.spend is None else array_to_data(self.spend),
            "clv": None if self.clv is None else {name: array_to_data(a) for name, a in zip(_CLV_PARTS,
                                                                                            self._clv_parts())},
        }

    @classmethod
    def _from_data(cls, d):
        spend = None if d["spend"] is None else array_from_data(d["spend"], "spend")
        c = d.get("clv")
        clv = None if c is None else tuple(array_from_data(c[name], name) for name in _CLV_PARTS)
        return cls(d["prev_ids"], d["new_ids"], array_from_data(d["counts"], "counts"), spend, clv)


_CLV_PARTS = ("clv", "clv_n", "clv_before", "clv_before_n")


def _clv_sums(code, size, clv, clv_before, n):
    """(clv sums, clv counts, clv_before sums, clv_before counts) per cell code, or None without CLV.

    NaN values are left out of a sum and of its count; the sums run in row
    order (the same order as the compiled merge's spend sums).
    """
    if clv is None and clv_before is None:
        return None
    out = []
    for v in (clv, clv_before):
        v = np.full(n, np.nan) if v is None else np.asarray(v, dtype=np.float64)
        if v.shape != (n,):
            raise ParameterError(f"clv and clv_before must have one value per row ({n}), got shape {v.shape}.")
        ok = ~np.isnan(v)
        with np.errstate(over="ignore"):
            out.append(np.bincount(code[ok], weights=v[ok], minlength=size))
        out.append(np.bincount(code[ok], minlength=size).astype(np.int64))
    return tuple(out)


def psi(expected, actual, epsilon=PSI_EPSILON):
    """Population stability index ``sum((a - e) * ln(a / e))`` of two share vectors (floored at ``epsilon``).

    Examples
    --------
    >>> from segone.track import psi
    >>> round(psi([0.5, 0.5], [0.6, 0.4]), 4)
    0.0405
    """
    e = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    return float(((a - e) * np.log(a / e)).sum())


def migration_table(contingency):
    """The migration.parquet rows: one per (from, to) pair holding customers.

    Columns: ``from_segment`` (null: absent before, i.e. new customers),
    ``to_segment`` (null: absent now, i.e. gone customers), ``status``,
    ``customers``, ``share`` (of the from-segment's customers; of all new
    customers for the null row), ``spend`` (the spend of those customers,
    null when no spend column was given), ``clv`` and ``clv_before``: the
    CLV that moved.  ``clv`` sums the new run's CLV of the cell's customers
    present now (stayed, moved, new) and, in a gone cell, the previous run's
    CLV of those customers; ``clv_before`` sums the previous run's CLV of the
    cell's customers (null in the new customers' row).  Each sums the
    customers of the cell that have a CLV; a cell none of whose customers has
    one (the run skipped the value model, or ran without it) is null, never 0.
    Sorted by from, then to (nulls last).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.track import Contingency, migration_table, moves_piece
    >>> prev = pa.table({"customer_id": [1, 2, 3], "segment": [0, 0, 1]})
    >>> new = pa.table({"customer_id": [2, 3, 4], "segment": [0, 0, 1]})
    >>> t = migration_table(Contingency.of(moves_piece(prev, new)))
    >>> t.select(["from_segment", "to_segment", "customers", "share"]).to_pylist()[:2]
    [{'from_segment': 0, 'to_segment': 0, 'customers': 1, 'share': 0.5}, {'from_segment': 0, 'to_segment': None, 'customers': 1, 'share': 0.5}]
    """
    c = contingency
    P, N = c.prev_ids.size, c.new_ids.size
    r, k = np.nonzero(c.counts)
    frm = np.append(c.prev_ids, -1)[r]
    to = np.append(c.new_ids, -1)[k]
    n = c.counts[r, k]
    row_tot = c.counts.sum(axis=1)[r]
    status = np.where((r < P) & (k < N), np.where(frm == to, STAYED, MOVED), np.where(k < N, NEW, GONE))
    # order: from ascending (absent last), then to ascending (absent last)
    big = np.iinfo(np.int64).max
    order = np.lexsort((np.where(to < 0, big, to), np.where(frm < 0, big, frm)))
    frm, to, n, row_tot, status, r, k = (a[order] for a in (frm, to, n, row_tot, status, r, k))
    spend = c.spend[r, k] if c.spend is not None else np.full(r.size, np.nan)
    clv = {}
    for name, total, have in (("clv", c.clv, c.clv_n), ("clv_before", c.clv_before, c.clv_before_n)):
        if total is None:
            clv[name] = pa.nulls(r.size, pa.float64())
        else:
            clv[name] = pa.array(total[r, k], mask=have[r, k] == 0)
    return pa.table({
        "from_segment": pa.array(frm.astype(np.int32), mask=frm < 0),
        "to_segment": pa.array(to.astype(np.int32), mask=to < 0),
        "status": pa.DictionaryArray.from_arrays(pa.array(status.astype(np.int8)), pa.array(STATUSES)),
        "customers": pa.array(n.astype(np.int64)),
        "share": pa.array(n / np.maximum(row_tot, 1)),
        "spend": pa.array(spend, mask=np.full(r.size, c.spend is None)),
        **clv,
    })  # fmt: skip
