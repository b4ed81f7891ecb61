"""EFFECTS: did a campaign move customers between segments, and by how much?

Given who moved where between two runs (the moves of ``segone run
--previous`` or ``segone track``) and a *treatment file* (``customer_id``,
``group``, optionally ``campaign`` and ``sent_at``), :func:`campaign_effects`
compares, per campaign and previous segment, the customers of each treated
group with a reference group:

* ``control`` when the file has a group of that name (a randomised test);
* otherwise the customers of the same previous segment that the campaign did
  not list (``untreated``): an *observational* comparison, said so in the
  table, run.json and the report, because who was targeted may differ from
  who was not in ways the segments do not capture.

For each (campaign, previous segment, group) it gives the customers, the
share that stayed, moved to each segment or became ``gone``, the change in
spend and CLV per customer between the runs (when both runs carry them), the
difference from the reference group and its 95% interval.  A headline row
per campaign gives the uplift in moving into the most valuable segment and
the spend and CLV gained per treated customer.

Intervals come from a Poisson bootstrap: every customer gets, in each of
``n_boot`` replicates, a Poisson(1) weight drawn from a hash of their id and
the replicate number.  The weights depend on nothing but the id, so the
replicate sums are a mergeable :class:`~segone._state.State` and the same
numbers come out whatever the partitioning (one process or Dask).  The
interval is the 2.5% and 97.5% percentiles of the replicate differences.

A sample-ratio check compares the reference group's share among the
customers analysed with its share in the treatment file (or the share
given): a chi-square p-value below 0.001 is flagged, as A/B-testing practice
does, since a lost or leaky group biases every figure.
"""

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone import outputs
from segone._backend import get_kernels
from segone._state import State, array_from_data, array_to_data
from segone.errors import DataError, SchemaError

CONTROL = "control"
UNTREATED = "untreated"
DEFAULT_CAMPAIGN = "campaign"
N_BOOT = 200
MIN_COMPARE = 20  # groups of fewer customers in a cell get no difference interval (shares are still shown)
SRM_P_VALUE = 1e-3
TREATMENT_COLUMNS = ("customer_id", "group", "campaign", "sent_at")


class TreatmentError(DataError):
    """The treatment file cannot be used as it is (see the message)."""


# -- the treatment file ---------------------------------------------------------------------------------------------
def read_treatment(source, *, id_column=outputs.ID_COLUMN, as_of=None):
    """The treatment file as a checked Arrow table: ``customer_id``, ``group``, ``campaign`` (and ``sent_at``).

    Parameters
    ----------
    source : path, Arrow table or data frame
        Any input segone reads.  Columns: the customer id (``id_column``),
        ``group`` (``"treatment"`` / ``"control"`` or free names), optionally
        ``campaign`` (several campaigns are compared separately; default one
        campaign named "campaign") and ``sent_at`` (a date or time).
    id_column : str
        The customer id column of the file.
    as_of : int, optional
        The new run's ``as_of`` (microseconds since the epoch): a campaign
        sent after it is refused.

    Raises
    ------
    TreatmentError
        A missing column, a null id or group, a customer in two groups of
        one campaign, or a campaign sent after ``as_of``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = read_treatment(pa.table({"customer_id": [1, 2, 3], "group": ["treatment", "control", "treatment"]}))
    >>> t.column("campaign").to_pylist()
    ['campaign', 'campaign', 'campaign']
    """
    from segone.io import read_table

    t = read_table(source, name="treatment")
    missing = [c for c in (id_column, "group") if c not in t.column_names]
    if missing:
        raise TreatmentError(f"treatment: column {missing[0]!r} not found; the file has columns {t.column_names[:20]}. "
                             f"It needs {id_column!r} and 'group' (and optionally 'campaign', 'sent_at').")  # fmt: skip
    for c in (id_column, "group"):
        if t.column(c).null_count:
            raise TreatmentError(f"treatment.{c}: {t.column(c).null_count} null values; every row needs a customer "
                                 "and a group.")  # fmt: skip
    cols = {outputs.ID_COLUMN: t.column(id_column), "group": pc.cast(t.column("group"), pa.string())}
    if "campaign" in t.column_names:
        camp = pc.cast(t.column("campaign"), pa.string())
        cols["campaign"] = pc.fill_null(camp, DEFAULT_CAMPAIGN)
    else:
        cols["campaign"] = pa.array([DEFAULT_CAMPAIGN] * t.num_rows, pa.string())
    if "sent_at" in t.column_names:
        from segone.profile import _ts_to_us

        sent = t.column("sent_at")
        us = _ts_to_us(sent.filter(pc.is_valid(sent)) if sent.null_count else sent, "treatment.sent_at")[0]
        us = us.to_numpy(zero_copy_only=False)
        if as_of is not None and us.size and int(us.max()) > as_of:
            late = int((us > as_of).sum())
            raise TreatmentError(f"treatment.sent_at: {late} rows are dated after the new run's as_of; a campaign "
                                 "can only move customers before the run that measures it. Use a later run or drop "
                                 "those rows.")  # fmt: skip
        cols["sent_at"] = sent
    t = pa.table(cols).combine_chunks()
    # sorted by campaign, customer and group: a customer in two groups of one campaign shows as neighbours that
    # share the campaign and the customer; the same row twice is harmless (kept once)
    t = t.take(pc.sort_indices(t, [("campaign", "ascending"), (outputs.ID_COLUMN, "ascending"),
                                   ("group", "ascending")]))  # fmt: skip
    if t.num_rows > 1:
        def same(name):
            c = t.column(name)
            return pc.equal(c.slice(1), c.slice(0, t.num_rows - 1)).to_numpy(zero_copy_only=False)

        same_key = same("campaign") & same(outputs.ID_COLUMN)
        dup_row = same_key & same("group")
        clash = same_key & ~dup_row
        if clash.any():
            ex = t.column(outputs.ID_COLUMN).take(pa.array(np.flatnonzero(clash)[:5] + 1)).to_pylist()
            raise TreatmentError(f"treatment: {int(clash.sum())} customers are in more than one group of the same "
                                 f"campaign (e.g. {ex}); a customer is either treated or not. Fix the file.")  # fmt: skip
        if dup_row.any():
            t = t.filter(pa.array(np.concatenate([[True], ~dup_row])))
    return t


# -- Poisson bootstrap weights ---------------------------------------------------------------------------------------
def id_hashes(ids):
    """A stable 64-bit hash of each customer id (ints and strings; the same on every machine and partition)."""
    import pandas as pd

    a = ids.to_numpy(zero_copy_only=False) if isinstance(ids, (pa.Array, pa.ChunkedArray)) else np.asarray(ids)
    if a.dtype.kind not in "iu":
        a = a.astype(object)
    return pd.util.hash_array(a, categorize=False)


# -- the mergeable state ----------------------------------------------------------------------------------------------
class EffectState(State):
    """Counts and bootstrap replicate sums per (campaign, group, previous segment, outcome) (mergeable).

    Groups are indexed per campaign with the reference group last.  Outcomes
    are the segments of the new run (in ``segments`` order) then ``gone``.
    ``values`` holds, per (campaign, group, previous segment), the customers
    with a spend change and its sum, then the customers with a CLV change and
    its sum; ``boot`` and ``boot_values`` the same weighted by each
    replicate's Poisson weights.
    """

    kind = "effect_state"

    def __init__(self, campaigns, groups, segments, n_boot, seed=0, counts=None, boot=None, values=None,
                 boot_values=None):  # fmt: skip
        self.campaigns, self.groups = list(campaigns), [list(g) for g in groups]
        self.segments, self.n_boot, self.seed = [int(s) for s in segments], int(n_boot), int(seed)
        c, g, s = len(self.campaigns), max([len(x) for x in self.groups] + [1]), len(self.segments)
        o = s + 1
        self.counts = np.zeros((c, g, s, o)) if counts is None else np.asarray(counts, float).reshape(c, g, s, o)
        self.boot = np.zeros((self.n_boot, c, g, s, o)) if boot is None else \
            np.asarray(boot, float).reshape(self.n_boot, c, g, s, o)  # fmt: skip
        self.values = np.zeros((c, g, s, 4)) if values is None else np.asarray(values, float).reshape(c, g, s, 4)
        self.boot_values = np.zeros((self.n_boot, c, g, s, 4)) if boot_values is None else \
            np.asarray(boot_values, float).reshape(self.n_boot, c, g, s, 4)  # fmt: skip

    @classmethod
    def empty(cls, campaigns=(), groups=(), segments=(), n_boot=N_BOOT, seed=0):
        return cls(campaigns, groups, segments, n_boot, seed)

    @classmethod
    def of(cls, piece, *, campaigns, groups, segments, n_boot=N_BOOT, seed=0, backend="auto", n_threads=None):
        """The state of one piece of moves joined with the treatment (see :func:`effect_rows`)."""
        s = cls(campaigns, groups, segments, n_boot, seed)
        if piece.num_rows == 0:
            return s
        ci = piece.column("campaign_index").to_numpy(zero_copy_only=False)
        gi = piece.column("group_index").to_numpy(zero_copy_only=False)
        si = piece.column("previous_index").to_numpy(zero_copy_only=False)
        oi = piece.column("outcome_index").to_numpy(zero_copy_only=False)
        shape = s.counts.shape
        cell = np.ravel_multi_index((ci, gi, si, oi), shape)
        vcell = np.ravel_multi_index((ci, gi, si), shape[:3])
        n_cells, n_vcells = int(np.prod(shape)), int(np.prod(shape[:3]))
        s.counts = np.bincount(cell, minlength=n_cells).astype(float).reshape(shape)
        dspend = piece.column("spend_change").to_numpy(zero_copy_only=False) if "spend_change" in \
            piece.column_names else np.full(piece.num_rows, np.nan)  # fmt: skip
        dclv = piece.column("clv_change").to_numpy(zero_copy_only=False) if "clv_change" in \
            piece.column_names else np.full(piece.num_rows, np.nan)  # fmt: skip
        hs, hc = np.isfinite(dspend), np.isfinite(dclv)  # each change counted where that run pair has it
        vals = np.stack([hs.astype(float), np.where(hs, dspend, 0.0), hc.astype(float), np.where(hc, dclv, 0.0)],
                        axis=1)  # fmt: skip
        for q in range(4):
            s.values[..., q] = np.bincount(vcell, weights=vals[:, q], minlength=n_vcells).reshape(shape[:3])
        h = id_hashes(piece.column(outputs.ID_COLUMN))
        # one compiled pass over the rows, every replicate per row (kernels/: bootstrap_sums, the same bits as the
        # NumPy reference, which draws the weights of each replicate with reference.poisson1_weights)
        from segone._threads import effective_n_threads

        boot, boot_values = get_kernels(backend, family="effects").bootstrap_sums(
            h, cell, vcell, vals, s.seed, s.n_boot, n_cells, n_vcells, n_threads=effective_n_threads(n_threads))
        s.boot = boot.reshape((s.n_boot, *shape))
        s.boot_values = boot_values.reshape((s.n_boot, *shape[:3], 4))
        return s

    def merge(self, other):
        self._check_same(other, "campaigns", "groups", "segments", "n_boot", "seed")
        return EffectState(self.campaigns, self.groups, self.segments, self.n_boot, self.seed,
                           self.counts + other.counts, self.boot + other.boot, self.values + other.values,
                           self.boot_values + other.boot_values)  # fmt: skip

    def finish(self):
        return self

    def _data(self):
        return {"campaigns": self.campaigns, "groups": self.groups, "segments": self.segments,
                "n_boot": self.n_boot, "seed": self.seed, "counts": array_to_data(self.counts),
                "boot": array_to_data(self.boot), "values": array_to_data(self.values),
                "boot_values": array_to_data(self.boot_values)}  # fmt: skip

    @classmethod
    def _from_data(cls, d):
        return cls(d["campaigns"], d["groups"], d["segments"], d["n_boot"], d["seed"],
                   *(array_from_data(d[k], k) for k in ("counts", "boot", "values", "boot_values")))  # fmt: skip


# -- per piece: moves joined with the treatment ------------------------------------------------------------------
def plan_groups(treatment):
    """(campaigns, groups per campaign with the reference last, observational flags) of a read treatment table."""
    pairs = treatment.select(["campaign", "group"]).group_by(["campaign", "group"]).aggregate([])
    campaigns = sorted(set(pairs.column("campaign").to_pylist()))
    groups, observational = [], []
    for c in campaigns:
        g = sorted(set(pairs.filter(pc.equal(pairs.column("campaign"), c)).column("group").to_pylist()))
        ctrl = [x for x in g if x.lower() == CONTROL]
        if ctrl:
            groups.append([x for x in g if x.lower() != CONTROL] + ctrl[:1])
            observational.append(False)
        elif len(g) == 1:
            groups.append(g + [UNTREATED])
            observational.append(True)
        else:
            raise TreatmentError(f"treatment: campaign {c!r} has groups {g} and none is named 'control'; name the "
                                 "control group 'control', or give one group only (compared with the customers "
                                 "the campaign did not list).")  # fmt: skip
        if len(groups[-1]) < 2 or (not observational[-1] and len(groups[-1]) < 2):
            raise TreatmentError(f"treatment: campaign {c!r} has no treated group; add the treated customers.")
    return campaigns, groups, observational


def effect_rows(moves, *, treatment, campaigns, groups, segments, values=None):
    """One row per (customer of the previous run, campaign): the indices :class:`EffectState` counts.

    ``moves`` holds ``customer_id``, ``previous_segment``, ``segment`` and
    ``status`` (a piece of moves.parquet); customers new in this run are
    left out (they had no previous segment).  ``values`` (optional, the same
    customers) holds ``spend_change`` and ``clv_change``.
    """
    cid = outputs.ID_COLUMN
    prev = moves.column("previous_segment")
    keep = pc.is_valid(prev)
    m = moves.filter(keep) if prev.null_count else moves
    if values is not None:
        pos = pc.index_in(m.column(cid), value_set=values.column(cid))
        for c in ("spend_change", "clv_change"):
            if c in values.column_names:
                m = m.append_column(c, pc.take(values.column(c), pos))
    seg_index = {s: i for i, s in enumerate(segments)}
    s_prev = m.column("previous_segment").to_numpy(zero_copy_only=False).astype(np.int64)
    s_new = m.column("segment")
    gone = pc.is_null(s_new).to_numpy(zero_copy_only=False) | pc.equal(m.column("status"), "gone").to_numpy(
        zero_copy_only=False)  # fmt: skip
    s_new = pc.fill_null(s_new, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    lut_keys = np.array(list(seg_index), dtype=np.int64)
    order = np.argsort(lut_keys)

    def index_of(v):
        j = np.searchsorted(lut_keys[order], v)
        j = np.clip(j, 0, len(order) - 1)
        ok = lut_keys[order][j] == v
        return np.where(ok, order[j], -1)

    pi, ni = index_of(s_prev), index_of(s_new)
    outcome = np.where(gone | (ni < 0), len(segments), ni)
    out = []
    for c_i, c in enumerate(campaigns):
        t = treatment.filter(pc.equal(treatment.column("campaign"), c))
        pos = pc.index_in(m.column(cid), value_set=t.column(cid)).to_numpy(zero_copy_only=False)
        listed = ~np.isnan(pos.astype(float)) if pos.dtype.kind == "f" else np.ones(pos.size, bool)
        listed = listed & (pi >= 0)
        g_names = groups[c_i]
        grp = np.full(m.num_rows, -1)
        if listed.any():
            names = pc.take(t.column("group"), pa.array(pos[listed].astype(np.int64))).to_pylist()
            g_of = {g: i for i, g in enumerate(g_names)}
            grp[listed] = [g_of[x] for x in names]
        if g_names[-1] == UNTREATED:  # observational: the customers the campaign did not list are the reference
            grp[~listed & (pi >= 0)] = len(g_names) - 1
        sel = grp >= 0
        cols = {cid: m.column(cid).filter(pa.array(sel)), "campaign_index": np.full(sel.sum(), c_i),
                "group_index": grp[sel], "previous_index": pi[sel], "outcome_index": outcome[sel]}  # fmt: skip
        for c2 in ("spend_change", "clv_change"):
            if c2 in m.column_names:
                cols[c2] = m.column(c2).filter(pa.array(sel))
        out.append(pa.table({k: (v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v))
                             for k, v in cols.items()}))  # fmt: skip
    return pa.concat_tables(out) if out else pa.table({})


# -- the effect table --------------------------------------------------------------------------------------------------
def _interval(boot_diff):
    fin = boot_diff[np.isfinite(boot_diff)]
    if fin.size < 10:
        return None, None
    lo, hi = np.percentile(fin, [2.5, 97.5])
    return float(lo), float(hi)


def _srm(n_ref, n_all, expected):
    """(p-value, flagged) of the chi-square test of the reference group's share against ``expected``."""
    if n_all == 0 or expected is None or not 0 < expected < 1:
        return None, False
    e_ref, e_rest = expected * n_all, (1 - expected) * n_all
    chi2 = (n_ref - e_ref) ** 2 / e_ref + ((n_all - n_ref) - e_rest) ** 2 / e_rest
    p = math.erfc(math.sqrt(chi2 / 2.0))  # the chi-square survival function with 1 degree of freedom
    return p, p < SRM_P_VALUE


def effects_table(state, *, observational, top_segment=None, min_segment_size=None, expected_reference=None):
    """(effects table, per-campaign summary) from a merged :class:`EffectState`."""
    k = min_segment_size or 0
    rows = []
    summary = []
    segs = state.segments
    S = len(segs)

    def small(n):
        return n < k

    def add(c, s, g, ref, measure, to_seg, n_t, n_r, v_t, v_r, lo_hi, suppressed):
        rows.append({"campaign": c, "previous_segment": s, "group": g, "reference": ref, "measure": measure,
                     "to_segment": to_seg, "customers": None if suppressed else int(n_t),
                     "reference_customers": None if suppressed else int(n_r),
                     "value": None if suppressed or v_t is None else float(v_t),
                     "reference_value": None if suppressed or v_r is None else float(v_r),
                     "difference": None if suppressed or v_t is None or v_r is None or lo_hi[0] is None
                     else float(v_t - v_r),
                     "low": None if suppressed else lo_hi[0], "high": None if suppressed else lo_hi[1],
                     "observational": bool(observational[ci])})  # fmt: skip

    for ci, c in enumerate(state.campaigns):
        g_names = state.groups[ci]
        r = len(g_names) - 1  # the reference group
        counts, boot = state.counts[ci], state.boot[:, ci]
        vals, bvals = state.values[ci], state.boot_values[:, ci]
        n_gs = counts.sum(axis=-1)  # (group, prev seg)
        bn_gs = boot.sum(axis=-1)  # (B, group, prev seg)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = counts / n_gs[..., None]
            bshare = boot / bn_gs[..., None]
            mean_v = np.stack([vals[..., 1] / vals[..., 0], vals[..., 3] / vals[..., 2]], axis=-1)
            bmean_v = np.stack([bvals[..., 1] / bvals[..., 0], bvals[..., 3] / bvals[..., 2]], axis=-1)
        n_v = vals[..., 0::2]  # (group, prev seg, [spend, clv]): customers with each change
        bn_v = bvals[..., 0::2]
        info = {"campaign": c, "groups": {g: int(n_gs[i].sum()) for i, g in enumerate(g_names)},
                "reference": g_names[r], "observational": bool(observational[ci])}  # fmt: skip
        for gi, g in enumerate(g_names[:-1]):
            for si, s in enumerate(segs):
                n_t, n_r = n_gs[gi, si], n_gs[r, si]
                if n_t == 0 and n_r == 0:
                    continue
                sup = small(n_t) or small(n_r)
                comparable = n_t >= MIN_COMPARE and n_r >= MIN_COMPARE  # a bootstrap of a handful says nothing
                for oi in range(S + 1):
                    if counts[gi, si, oi] == 0 and counts[r, si, oi] == 0 and oi != si:
                        continue
                    measure = "gone" if oi == S else ("stayed" if oi == si else "moved")
                    to_seg = None if oi == S else segs[oi]
                    v_t = share[gi, si, oi] if n_t else None
                    v_r = share[r, si, oi] if n_r else None
                    ci_ = _interval(bshare[:, gi, si, oi] - bshare[:, r, si, oi]) if comparable else (None, None)
                    add(c, s, g, g_names[r], measure, to_seg, n_t, n_r, v_t, v_r, ci_, sup)
                for q, measure in ((0, "spend_change"), (1, "clv_change")):
                    if n_v[gi, si, q] and n_v[r, si, q]:
                        ci_ = _interval(bmean_v[:, gi, si, q] - bmean_v[:, r, si, q]) if \
                            min(n_v[gi, si, q], n_v[r, si, q]) >= MIN_COMPARE else (None, None)  # fmt: skip
                        add(c, s, g, g_names[r], measure, None, n_v[gi, si, q], n_v[r, si, q],
                            mean_v[gi, si, q], mean_v[r, si, q], ci_, sup)  # fmt: skip
            # headline: into the most valuable segment (from any other previous segment), value gained per customer
            head = {"group": g}
            if top_segment is not None and top_segment in segs:
                ti = segs.index(top_segment)
                other = [i for i in range(S) if i != ti]
                n_t, n_r = n_gs[gi, other].sum(), n_gs[r, other].sum()
                bn_t, bn_r = bn_gs[:, gi, other].sum(axis=1), bn_gs[:, r, other].sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    v_t, v_r = counts[gi, other, ti].sum() / n_t, counts[r, other, ti].sum() / n_r
                    bd = boot[:, gi, other, ti].sum(axis=1) / bn_t - boot[:, r, other, ti].sum(axis=1) / bn_r
                sup = small(n_t) or small(n_r)
                if n_t and n_r:
                    ci_ = _interval(bd)
                    add(c, None, g, g_names[r], "into_top_segment", top_segment, n_t, n_r, v_t, v_r, ci_, sup)
                    head["into_top_segment"] = None if sup else {"uplift": float(v_t - v_r), "low": ci_[0],
                                                                 "high": ci_[1], "segment": top_segment}  # fmt: skip
            for q, measure in ((0, "spend_gained_per_treated"), (1, "clv_gained_per_treated")):
                n_t, n_r = n_v[gi, :, q].sum(), n_v[r, :, q].sum()
                if n_t and n_r:
                    # per previous segment difference, weighted by the treated customers of each (like-for-like)
                    w = n_v[gi, :, q]
                    with np.errstate(invalid="ignore", divide="ignore"):
                        d = np.nansum(w * (mean_v[gi, :, q] - np.where(n_v[r, :, q] > 0, mean_v[r, :, q], np.nan)))
                        cover = np.nansum(w * (n_v[r, :, q] > 0))
                        bw = bn_v[:, gi, :, q]
                        bd = np.nansum(bw * (bmean_v[:, gi, :, q] - bmean_v[:, r, :, q]), axis=1) / np.nansum(
                            bw * (bn_v[:, r, :, q] > 0), axis=1)  # fmt: skip
                    est = d / cover if cover else None
                    ci_ = _interval(bd)
                    sup = small(n_t) or small(n_r)
                    add(c, None, g, g_names[r], measure, None, n_t, n_r, None if est is None else est, 0.0, ci_, sup)
                    if not sup and est is not None:
                        head[measure] = {"value": float(est), "low": ci_[0], "high": ci_[1]}
            info.setdefault("headline", []).append(head)
        n_all = float(n_gs.sum())
        exp = expected_reference.get(c) if isinstance(expected_reference, dict) else expected_reference
        if not observational[ci] and exp is not None:
            p, flagged = _srm(float(n_gs[r].sum()), n_all, exp)
            info["sample_ratio"] = {"expected_reference_share": exp, "observed_reference_share":
                                    float(n_gs[r].sum() / n_all) if n_all else None, "p_value": p,
                                    "flagged": bool(flagged)}  # fmt: skip
        summary.append(info)
    schema = pa.schema([("campaign", pa.string()), ("previous_segment", pa.int64()), ("group", pa.string()),
                        ("reference", pa.string()), ("measure", pa.string()), ("to_segment", pa.int64()),
                        ("customers", pa.int64()), ("reference_customers", pa.int64()), ("value", pa.float64()),
                        ("reference_value", pa.float64()), ("difference", pa.float64()), ("low", pa.float64()),
                        ("high", pa.float64()), ("observational", pa.bool_())])  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=schema)
    return table, summary


def _largest_moves(table, campaign, n=3):
    """The ``n`` largest differences in staying, moving or leaving whose 95% interval excludes 0."""
    rows = [r for r in table.to_pylist() if r["campaign"] == campaign and r["measure"] in ("stayed", "moved", "gone")
            and r["difference"] is not None and r["low"] is not None and (r["low"] > 0 or r["high"] < 0)]
    rows.sort(key=lambda r: -abs(r["difference"]))
    keep = ("group", "previous_segment", "measure", "to_segment", "value", "reference_value", "difference", "low",
            "high")  # fmt: skip
    return [{k: r[k] for k in keep} for r in rows[:n]]


def campaign_effects(moves, treatment, *, values=None, top_segment=None, n_boot=N_BOOT, seed=0,
                     min_segment_size=None, as_of=None, expected_reference_share=None, engine=None):  # fmt: skip
    """Effects of the campaigns of ``treatment`` on the moves between two runs (one process, or over an engine).

    Parameters
    ----------
    moves : Arrow table, or a list of tables (pieces)
        ``customer_id``, ``previous_segment``, ``segment``, ``status`` (moves.parquet).
    treatment : path, Arrow table or data frame
        The treatment file (see :func:`read_treatment`).
    values : Arrow table, optional
        ``customer_id``, ``spend_change``, ``clv_change`` per customer of both runs.
    top_segment : int, optional
        The most valuable segment of the new run (the headline's target).
    n_boot : int, default 200
        Bootstrap replicates.
    seed : int
        The bootstrap's seed (the weights depend on it and the ids only).
    min_segment_size : int, optional
        Cells of fewer customers in either group are suppressed (null).
    as_of : int, optional
        The new run's as_of (microseconds): campaigns sent after it are refused.
    expected_reference_share : float or {campaign: float}, optional
        The control share the test was designed with (default: its share in
        the treatment file), for the sample-ratio check.

    Returns
    -------
    (pyarrow.Table, dict)
        ``effects.parquet``'s table and the run.json section.

    Examples
    --------
    >>> import pyarrow as pa
    >>> moves = pa.table({"customer_id": [1, 2, 3, 4], "previous_segment": [0, 0, 0, 0], "segment": [1, 0, 1, 0],
    ...                   "status": ["moved", "stayed", "moved", "stayed"]})
    >>> treat = pa.table({"customer_id": [1, 2, 3, 4], "group": ["treatment", "control", "treatment", "control"]})
    >>> table, info = campaign_effects(moves, treat, n_boot=50)
    >>> table.filter(pa.compute.equal(table.column("measure"), "moved")).column("difference").to_pylist()
    [1.0]
    """
    from segone._validation import check_int

    n_boot = check_int(n_boot, "n_boot", low=10, high=100_000)
    seed = check_int(seed, "seed", low=0)
    if min_segment_size is not None:
        min_segment_size = check_int(min_segment_size, "min_segment_size", low=1)
    treat = read_treatment(treatment, as_of=as_of)
    campaigns, groups, observational = plan_groups(treat)
    pieces = moves if isinstance(moves, list) else [moves]
    for p in pieces:
        missing = [c for c in (outputs.ID_COLUMN, "previous_segment", "segment", "status") if c not in p.column_names]
        if missing:
            raise SchemaError(f"moves: column {missing[0]!r} not found; give the moves of `segone run --previous` "
                              "or `segone track`.")  # fmt: skip
    segs = set()
    for p in pieces:
        for c in ("previous_segment", "segment"):
            segs.update(v for v in pc.unique(p.column(c)).to_pylist() if v is not None)
    segments = sorted(int(s) for s in segs)
    # which listed customers the runs know
    known = pa.chunked_array([p.column(outputs.ID_COLUMN) for p in pieces]) if pieces else pa.chunked_array([])
    info_ids = {}
    for c in campaigns:
        t = treat.filter(pc.equal(treat.column("campaign"), c))
        found = int(pc.sum(pc.is_in(t.column(outputs.ID_COLUMN), value_set=known)).as_py() or 0)
        info_ids[c] = {"listed": t.num_rows, "found": found, "not_found": t.num_rows - found}
    if not any(v["found"] for v in info_ids.values()):
        raise TreatmentError("treatment: none of its customers is in either run (ids are compared as written: a run "
                             "with --hash-ids holds pseudonyms, and customers without consent are not written); "
                             "check the id column and its type.")  # fmt: skip
    rows = [effect_rows(p, treatment=treat, campaigns=campaigns, groups=groups, segments=segments, values=values)
            for p in pieces]  # fmt: skip
    ctx = {"campaigns": campaigns, "groups": groups, "segments": segments, "n_boot": n_boot, "seed": seed}
    if engine is None:
        from segone._state import merge_all

        state = merge_all([EffectState.of(r, **ctx) for r in rows])
    else:
        state = engine.reduce(engine.map(EffectState.of, rows, **ctx))
    for ci, c in enumerate(campaigns):
        n_g = state.counts[ci].sum(axis=(1, 2))
        empty = [g for g, n in zip(groups[ci], n_g) if n == 0]
        if empty:
            raise TreatmentError(f"treatment: group {empty[0]!r} of campaign {c!r} has no customer in the previous "
                                 "run; every group needs customers to compare.")  # fmt: skip
    if expected_reference_share is None:
        expected_reference_share = {}
        for ci, c in enumerate(campaigns):
            if not observational[ci]:
                t = treat.filter(pc.equal(treat.column("campaign"), c))
                ref = groups[ci][-1]
                expected_reference_share[c] = float(pc.sum(pc.equal(t.column("group"), ref)).as_py() / t.num_rows)
    table, summary = effects_table(state, observational=observational, top_segment=top_segment,
                                   min_segment_size=min_segment_size,
                                   expected_reference=expected_reference_share)  # fmt: skip
    for s in summary:
        s["ids"] = info_ids[s["campaign"]]
        s["largest_moves"] = _largest_moves(table, s["campaign"])
    notes = []
    if any(observational):
        notes.append("observational: a campaign without a control group is compared with the customers of the same "
                     "previous segment it did not list; who was targeted may differ from who was not in ways the "
                     "segments do not capture, so the differences are associations, not effects.")  # fmt: skip
    return table, {"campaigns": summary, "n_boot": n_boot, "seed": seed, "interval": "95% Poisson bootstrap",
                   "min_segment_size": min_segment_size, "notes": notes}  # fmt: skip


# -- from output directories ------------------------------------------------------------------------------------
def _read_columns(path, columns, what):
    """The ``columns`` present in a Parquet file or directory (page checksums verified), or None when absent."""
    import os

    import pyarrow.dataset as ds

    from segone.io import parquet_format

    if not os.path.exists(path):
        return None
    d = ds.dataset(path, format=parquet_format())
    have = [c for c in columns if c in d.schema.names]
    if outputs.ID_COLUMN not in have:
        raise SchemaError(f"{what} ({path}) has no {outputs.ID_COLUMN!r} column; not a segone output.")
    return d.to_table(columns=have)


def top_segment_of(segments):
    """The most valuable segment of a segment table: the highest total CLV per customer, else spend per customer."""
    cols = segments.column_names
    if "segment" not in cols or "size" not in cols or segments.num_rows == 0:
        return None
    size = np.asarray(segments.column("size").to_numpy(zero_copy_only=False), dtype=float)
    for name in ("total_clv", "mean_spend_365d", "mean_spend_total"):
        if name in cols:
            v = np.asarray(pc.fill_null(segments.column(name), np.nan).to_numpy(zero_copy_only=False), dtype=float)
            per = v / np.maximum(size, 1) if name == "total_clv" else v
            if (np.isfinite(per) & (per > 0)).any():  # a column of nulls or zeros (no CLV) says nothing
                return int(segments.column("segment").to_numpy(zero_copy_only=False)[int(np.nanargmax(per))])
    return None


def value_changes(previous_assignments, assignments):
    """``customer_id``, ``spend_change``, ``clv_change`` of the customers in both (null where a run lacks it).

    ``spend_change`` is the growth of the cumulative ``spend_total`` (what the
    customer spent between the runs), ``clv_change`` the change of ``clv``.
    """
    cid = outputs.ID_COLUMN
    a = previous_assignments.select([c for c in (cid, "spend_total", "clv") if c in previous_assignments.column_names])
    b = assignments.select([c for c in (cid, "spend_total", "clv") if c in assignments.column_names])
    j = b.join(a, cid, join_type="inner", left_suffix="_new", right_suffix="_old", coalesce_keys=True)
    cols = {cid: j.column(cid)}
    for name, out in (("spend_total", "spend_change"), ("clv", "clv_change")):
        if f"{name}_new" in j.column_names:  # in both runs (the join suffixes the names both sides have)
            cols[out] = pc.subtract(j.column(f"{name}_new"), j.column(f"{name}_old"))
        else:
            cols[out] = pa.nulls(j.num_rows, pa.float64())
    return pa.table(cols)


def effects_from_outputs(previous_dir, new_dir, treatment, *, moves_dir=None, n_boot=N_BOOT, seed=0,
                         min_segment_size=None, as_of=None, id_key=None, engine=None):  # fmt: skip
    """:func:`campaign_effects` of two output directories of ``segone run`` (or of ``segone track``'s moves).

    ``previous_dir`` and ``new_dir`` hold assignments.parquet (their
    ``spend_total`` and ``clv`` give the value changes) and the new run's
    segments.parquet (its most valuable segment is the headline's target);
    moves.parquet is read from ``moves_dir`` (default ``new_dir``).
    ``as_of`` (microseconds or an ISO string; default: the new output's
    run.json) refuses campaigns sent after the new run.  When
    the outputs hold pseudonyms (``--hash-ids``), the treatment file's ids
    are pseudonymised with ``id_key`` first, so that they match.
    """
    import os

    from segone.io import read_table

    from segone.track.previous import _read_run

    moves_dir = moves_dir or new_dir
    if as_of is None:  # the new run's own as_of (its run.json), when the caller did not give it
        as_of = (_read_run(os.fspath(new_dir), []) or {}).get("as_of")
    if isinstance(as_of, str):
        from segone.profile import parse_as_of

        as_of = parse_as_of(as_of.replace("Z", "+00:00"))
    moves = _read_columns(os.path.join(moves_dir, outputs.MOVES), list(outputs.MOVES_COLUMNS), "moves")
    if moves is None:
        raise SchemaError(f"{moves_dir}: no {outputs.MOVES}; campaign effects need the moves of a run with "
                          "--previous (or of segone track).")  # fmt: skip
    prev = _read_columns(os.path.join(previous_dir, outputs.ASSIGNMENTS), [outputs.ID_COLUMN, "spend_total", "clv"],
                         "previous assignments")  # fmt: skip
    new = _read_columns(os.path.join(new_dir, outputs.ASSIGNMENTS), [outputs.ID_COLUMN, "spend_total", "clv"],
                        "assignments")  # fmt: skip
    values = value_changes(prev, new) if prev is not None and new is not None else None
    seg_path = os.path.join(new_dir, outputs.SEGMENTS)
    top = top_segment_of(read_table(seg_path, name="segments")) if os.path.exists(seg_path) else None
    treat = treatment
    if id_key is not None:
        from segone.privacy import pseudonymise_column

        t = read_treatment(treatment, as_of=as_of)
        treat = pseudonymise_column(t.set_column(0, outputs.ID_COLUMN, pc.cast(t.column(0), pa.string())
                                                 if not pa.types.is_integer(t.column(0).type) else t.column(0)),
                                    outputs.ID_COLUMN, id_key)  # fmt: skip
    table, info = campaign_effects(moves, treat, values=values, top_segment=top, n_boot=n_boot, seed=seed,
                                   min_segment_size=min_segment_size, as_of=as_of, engine=engine)  # fmt: skip
    info["top_segment"] = top
    # customers with each change (0: a run lacks the column, or its value model was skipped)
    info["values"] = None if values is None else {
        c: int(values.num_rows - values.column(c).null_count - int(pc.sum(pc.is_nan(values.column(c))).as_py() or 0))
        if values.column(c).type != pa.null() else 0 for c in ("spend_change", "clv_change")}  # fmt: skip
    return table, info


__all__ = ["EffectState", "TreatmentError", "campaign_effects", "effect_rows", "effects_from_outputs", "effects_table",
           "id_hashes", "plan_groups", "read_treatment", "top_segment_of", "value_changes"]  # fmt: skip
