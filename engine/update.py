"""Incremental updates: a per-customer state store that new events fold into.

``segone run --state DIR`` (or :func:`init_state` on the output of any run)
keeps, next to the model, every customer's compact history: the columns of
their transactions and web events that the profile reads, and their CRM
attributes, in Parquet files partitioned by a hash of the customer id
(*buckets*), plus every customer's profile, assignment and the few
timestamps that move with time.  :func:`update` (``segone update STATE
NEW_INPUT --out DIR``) then folds a batch of new events into the store:

* the customers of the batch, and those whose time windows change between
  the state's ``as_of`` and the new one (a purchase leaves the 30-day window,
  a row dated after the old ``as_of`` enters), are profiled again from their
  own stored rows plus the batch's, with the profile code of ``segone run``
  and the labels (categories, channels, event types) the model was fitted
  on;
* every other customer's time-relative columns (recency, tenure, days since
  each event type, the BTYD age ``T``) are moved to the new ``as_of`` from
  stored timestamps, without reading their history;
* every customer is scored and assigned with the state's saved model (no
  refit), and valued with the run's fitted value model;
* the customers whose segment changed are written (``assignments.parquet``
  holds the changed customers, ``changelog.parquet`` who moved from which
  segment to which, at which ``as_of``) through the same export stage as
  every other output (consent, pseudonyms, minimum segment size);
* the new state is swapped in by replacing one manifest file: a kill leaves
  the previous state whole, and the next update removes the orphans.

The result equals a full profile-and-apply of all data at the same ``as_of``
(the equivalence test ``tests/test_update.py``): counts and sums bit for
bit, means to float rounding.  Late events (older than the watermark) are
folded in exactly: the customer is profiled again from all their rows.  A
batch id already applied changes nothing.  One writer at a time: the store
is locked while an update runs.

Cost: reading the profile files (every customer is re-assigned at the new
``as_of``), the rows of the buckets the batch touches, and profiling the
customers of the batch; see the README's "Incremental updates" for
measurements.

Examples
--------
>>> import os, tempfile, segone
>>> from segone import update as up
>>> d = segone.synth.generate(600, seed=3)
>>> tmp = tempfile.mkdtemp()
>>> cut = d.transactions.filter(segone.update._before(d.transactions, "2024-10-01"))
>>> res = segone.run(cut, os.path.join(tmp, "fit"), 3, value=False)
>>> info = up.init_state(os.path.join(tmp, "state"), os.path.join(tmp, "fit"), cut)
>>> info["customers"] == res.assignments.num_rows
True
>>> late = d.transactions.filter(segone.update._before(d.transactions, "2024-10-01", after=True))
>>> out = up.update(os.path.join(tmp, "state"), late, out=os.path.join(tmp, "night1"))
>>> out.info["batch"]["transactions"] == late.num_rows
True
"""

import datetime as _dt
import hashlib
import json
import os
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segone import outputs
from segone import profile as _profile
from segone.errors import DataError, ParameterError, SchemaError, SegoneError

STATE_FORMAT = "segone-state"
STATE_VERSION = 1
MANIFEST = "manifest.json"
DATA_DIR = "data"
DEFAULT_BUCKETS = 8
MAX_DELTAS = 8  # a bucket's row files are compacted into one when an update would leave more
_HASH_SEED = 31  # the bucket of a customer: customer_hash(id, seed) % buckets (stable across processes)
_NEVER = np.iinfo(np.int64).max
_LOW = np.iinfo(np.int64).min
NEXT_CHANGE = "_next_change_us"  # hidden profile columns of the store (never exported)
LAST_EVENT = "_last_event_{}"
ROLES = ("transactions", "events", "attributes")
_LABEL_TYPE = pa.dictionary(pa.int32(), pa.string())


class StateError(SegoneError):
    """A state directory that is missing, damaged, locked or of another format."""


# -- small helpers --------------------------------------------------------------------------------
def _before(table, when, *, after=False, column="ts"):
    """Rows of ``table`` before ``when`` (ISO date), or from ``when`` on with ``after=True`` (docs/tests)."""
    t = pa.scalar(_dt.datetime.fromisoformat(when).replace(tzinfo=_dt.timezone.utc), type=pa.timestamp("us", "UTC"))
    ts = pc.cast(table.column(column), pa.timestamp("us", "UTC"))
    return pc.greater_equal(ts, t) if after else pc.less(ts, t)


def _iso(us):
    return _dt.datetime.fromtimestamp(int(us) / 1e6, tz=_dt.timezone.utc).isoformat()


def _bucket_of(ids, n_buckets):
    from segone.segment import customer_hash

    return (customer_hash(ids, _HASH_SEED) % np.uint64(n_buckets)).astype(np.int64)


def _read_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise StateError(f"{path!r}: no {what}; is this a state directory written by `segone run --state`?") from None
    except (OSError, ValueError) as exc:
        raise StateError(f"{path!r}: the {what} cannot be read ({exc}); the state is damaged.") from None


def _write_json_atomic(obj, path):
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_table(table, directory, stem):
    """Write ``table`` under a new unique name in ``directory``; returns the file name (immutable afterwards)."""
    name = f"{stem}-{uuid.uuid4().hex[:12]}.parquet"
    path = os.path.join(directory, name)
    tmp = path + ".tmp"
    pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)
    os.replace(tmp, path)
    return name


# -- the columns a role keeps, normalised -------------------------------------------------------------
def _role_columns(role, roles, names):
    """The columns of ``role`` the profile reads, of those present in ``names`` (attributes: every column)."""
    if role == "attributes":
        return list(names)
    if role == "transactions":
        want = [roles["customer_id"], roles["ts"], roles["amount"]]
        opt = [roles["category"], roles["channel"], roles["order_id"]]
    else:
        want, opt = [roles["customer_id"], roles["ts"]], [roles["event"]]
    missing = [c for c in want if c not in names]
    if missing:
        raise SchemaError(
            f"{role}: the column(s) {missing} are missing (columns: {list(names)[:20]}); the state reads "
            f"{want} (schema roles customer_id, ts{', amount' if role == 'transactions' else ''})."
        )
    return want + [c for c in opt if c in names]


def _normalise(table, role, roles, types=None):
    """``table`` with the role's columns, ts as UTC microseconds, amounts float64, labels strings.

    ``types`` (the state's column types) casts a batch to the store's types; a
    batch lacking a column the state has, or whose column cannot be cast, is
    refused.  Other columns are ignored, as :func:`segone.run` ignores them
    (the attributes: a column the state lacks is refused, it would add a
    profile column).
    """
    cols = _role_columns(role, roles, table.column_names)
    where = role
    out = {}
    for c in cols:
        col = table.column(c)
        if role != "attributes" and c == roles["ts"]:
            us, _ = _profile._ts_to_us(col, f"{where}.{c}")
            col = us.view(pa.timestamp("us", tz="UTC")) if isinstance(us, pa.Array) else pa.array(us).view(
                pa.timestamp("us", tz="UTC"))
        elif role != "attributes" and c == roles["amount"]:
            try:
                col = pc.cast(col, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise SchemaError(f"{where}.{c}: amounts of type {col.type}; expected numbers.") from None
        elif role != "attributes" and c in (roles["category"], roles["channel"], roles["event"]):
            # labels are stored dictionary-encoded: reading and filtering them is several times cheaper
            if pa.types.is_dictionary(col.type):
                col = pc.cast(col, col.type.value_type)
            if not pa.types.is_string(col.type):
                col = pc.cast(col, pa.string())
            col = pc.dictionary_encode(col)
            col = col.cast(_LABEL_TYPE) if isinstance(col, pa.Array) else pa.chunked_array(
                [ch.cast(_LABEL_TYPE) for ch in col.chunks], _LABEL_TYPE)  # fmt: skip
        elif role != "attributes" and c == roles["order_id"] and pa.types.is_dictionary(col.type):
            col = pc.cast(col, col.type.value_type)
        out[c] = col
    t = pa.table(out)
    if types is None:
        return t
    extra = [c for c in t.column_names if c not in types]
    if extra:
        raise SchemaError(
            f"{role}: the batch has column(s) {extra} that the state's {role} do not have; the state was built "
            f"with {list(types)}. Drop them, or build a new state with `segone run --state`."
        )
    fixed = {}
    for c, ty in types.items():
        if c not in t.column_names:
            raise SchemaError(
                f"{role}: the batch lacks the column {c!r} that the state's {role} have ({list(types)}); every "
                "batch needs the columns of the data the state was built from (null values where unknown)."
            )
        col = t.column(c)
        if col.type != ty:
            try:
                col = pc.cast(col, ty)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise SchemaError(
                    f"{role}.{c}: the batch's type {col.type} cannot be read as the state's {ty}; give the batch "
                    "the same column types as the data the state was built from."
                ) from None
        fixed[c] = col
    return pa.table(fixed)


def _types_of(table):
    return {f.name: f.type for f in table.schema} if table is not None else None


def _types_from_json(d):
    if d is None:
        return None
    schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(d)))
    return {f.name: f.type for f in schema}


def _types_to_json(types):
    if types is None:
        return None
    return pa.schema(list(types.items())).serialize().to_pybytes().hex()


# -- profiling a set of customers ---------------------------------------------------------------------
class _Settings:
    """What the state profiles with: roles, labels, windows, BTYD freq, the value model, the buckets."""

    def __init__(self, d):
        self.d = d
        self.roles = d["roles"]
        self.labels = d["labels"]
        self.windows = tuple(d["windows"])
        self.freq = d["freq"]
        self.n_buckets = int(d["buckets"])
        self.types = {r: _types_from_json(d["types"].get(r)) for r in ROLES}
        self.value = d.get("value")

    @property
    def cid(self):
        return self.roles["customer_id"]


def _profile_customers(settings, tx, ev, at, as_of_us, n_threads=None):
    """Profiles of the customers of ``tx`` / ``ev`` / ``at`` (their whole histories) at ``as_of_us``, sorted by id,
    with the hidden columns (the next time a window changes; the latest event of each type)."""
    table, _ = _profile.profile_piece(
        tx, ev, at, labels=settings.labels, as_of_us=int(as_of_us), schema=settings.roles,
        windows=settings.windows, freq=settings.freq, n_threads=n_threads,
    )  # fmt: skip
    table = table.replace_schema_metadata(None)
    ids = table.column(outputs.ID_COLUMN)
    r = settings.roles
    # the next instant a time-relative column other than the refreshed ones changes: a row leaves a window
    # (ts + w days) or a row dated after as_of enters
    cand_ids, cand = [], []
    for rows, is_tx in ((tx, True), (ev, False)):
        if rows is None or rows.num_rows == 0:
            continue
        ts = rows.column(r["ts"]).combine_chunks().view(pa.int64()).to_numpy(zero_copy_only=False)
        rid = rows.column(r["customer_id"])
        future = ts > as_of_us
        if future.any():
            cand_ids.append(rid.filter(pa.array(future)))
            cand.append(ts[future])
        if is_tx:
            for w in settings.windows:
                span = w * _profile.US_PER_DAY
                inw = (ts > as_of_us - span) & ~future
                if inw.any():
                    cand_ids.append(rid.filter(pa.array(inw)))
                    cand.append(ts[inw] + span)
    nxt = np.full(table.num_rows, _NEVER, dtype=np.int64)
    if cand:
        c = pa.table({"id": pa.concat_arrays([x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x
                                             for x in cand_ids]), "t": np.concatenate(cand)})
        g = c.group_by("id").aggregate([("t", "min")])
        pos = pc.index_in(g.column("id"), value_set=ids)
        ok = np.asarray(pos.is_valid())  # rows of customers the profile dropped (no id) have no place
        nxt[pos.filter(pos.is_valid()).to_numpy().astype(np.int64)] = g.column("t_min").to_numpy()[ok]
    table = table.append_column(NEXT_CHANGE, pa.array(nxt))
    # the latest event of every type (kept to move days_since_* to a new as_of)
    for i, lab in enumerate(settings.labels.get("event", [])):
        last = np.full(table.num_rows, _LOW, dtype=np.int64)
        if ev is not None and ev.num_rows and r["event"] in ev.column_names:
            sel = ev.filter(pc.and_(pc.equal(ev.column(r["event"]), pa.scalar(str(lab))),
                                    pc.less_equal(ev.column(r["ts"]).combine_chunks().view(pa.int64()),
                                                  pa.scalar(int(as_of_us)))))  # fmt: skip
            if sel.num_rows:
                g = pa.table({"id": sel.column(r["customer_id"]),
                              "t": sel.column(r["ts"]).combine_chunks().view(pa.int64())}).group_by("id").aggregate(
                    [("t", "max")])  # fmt: skip
                pos = pc.index_in(g.column("id"), value_set=ids).to_numpy(zero_copy_only=False)
                last[pos.astype(np.int64)] = g.column("t_max").to_numpy()
        table = table.append_column(LAST_EVENT.format(i), pa.array(last))
    return _sorted(table)


def _event_names(labels):
    """The suffix of the events_* / days_since_* columns of every event label (the profile's own naming)."""
    taken, out = set(), []
    for lab in labels.get("event", []):
        name = _profile._unique_name("events_", str(lab), taken)
        taken.add(name)
        out.append(name[len("events_"):])
    return out


def _sorted(table):
    if table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[(outputs.ID_COLUMN, "ascending")]))


def _ts_us(table, name):
    col = table.column(name).combine_chunks()
    v = col.view(pa.int64()) if pa.types.is_timestamp(col.type) else col
    return v.to_numpy(zero_copy_only=False), np.asarray(col.is_valid())


def _retime(settings, table, as_of_us):
    """Move the time-relative columns of profiles ``table`` to ``as_of_us`` (the profile's own formulas)."""
    if table.num_rows == 0:
        return table
    day = _profile.US_PER_DAY
    first, has = _ts_us(table, "first_purchase")
    last, _ = _ts_us(table, "last_purchase")
    first = np.where(has, first, 0)
    last = np.where(has, last, 0)
    cols = {
        "recency_days": pa.array((as_of_us - last) / day, mask=~has),
        "tenure_days": pa.array((as_of_us - first) / day, mask=~has),
    }
    if "T" in table.column_names:
        if settings.freq == "D":
            age = as_of_us // day - first // day
        else:
            age = int(_profile._period_of([as_of_us], settings.freq)[0]) - _profile._period_of(first, settings.freq)
        cols["T"] = pa.array(np.where(has, age, 0).astype(np.float64), mask=~has)
    for i, name in enumerate(_event_names(settings.labels)):
        last_ev = table.column(LAST_EVENT.format(i)).to_numpy()
        count = table.column("events_" + name).to_numpy()
        last_ev = np.where(count > 0, last_ev, 0)
        cols["days_since_" + name] = pa.array((as_of_us - last_ev) / day, mask=count == 0)
    for name, arr in cols.items():
        if name in table.column_names:
            i = table.column_names.index(name)
            table = table.set_column(i, table.schema.field(i).with_type(arr.type), arr)
        else:
            table = table.append_column(name, arr)
    return table


def _visible(table):
    """The profile columns without the store's hidden ones."""
    return table.drop_columns([c for c in table.column_names if c.startswith("_")])


# -- the store ------------------------------------------------------------------------------------
def _lock(state_dir):
    """The store's writer lock (the output lock of segone.io: stale locks of dead processes are broken)."""
    from segone.io.writers import _acquire

    lock, owned = _acquire(os.path.abspath(os.fspath(state_dir)))
    if not owned:
        raise StateError(f"the state {state_dir!r} is already being updated in this thread; one writer at a time.")
    return lock


def _read_manifest(state_dir):
    m = _read_json(os.path.join(state_dir, MANIFEST), "manifest")
    if m.get("format") != STATE_FORMAT:
        raise StateError(f"{state_dir!r}: {MANIFEST} is not a segone state (format {m.get('format')!r}).")
    if m.get("version") != STATE_VERSION:
        raise StateError(f"{state_dir!r}: state format version {m.get('version')!r}; this segone reads version "
                         f"{STATE_VERSION}. Build the state again with `segone run --state`.")  # fmt: skip
    return m


def _remove_orphans(state_dir, manifest):
    """Delete data files no manifest names (left by a killed or superseded update)."""
    keep = set()
    for entry in manifest["buckets"]:
        for role in ROLES:
            keep.update(entry["rows"].get(role, []))
        keep.update(entry.get("profiles", []))
        if entry.get("assign"):
            keep.add(entry["assign"])
    data = os.path.join(state_dir, DATA_DIR)
    removed = 0
    for name in os.listdir(data):
        if name not in keep:
            try:
                os.unlink(os.path.join(data, name))
                removed += 1
            except OSError:
                pass
    return removed


def _read_files(state_dir, names):
    tables = [pq.read_table(os.path.join(state_dir, DATA_DIR, n)) for n in names]
    if not tables:
        return None
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _read_profiles(state_dir, names, columns=None):
    """A bucket's stored profiles: the base file and its deltas, the latest row of every customer, by id.

    ``columns`` reads those columns only (of those the files have)."""
    if not names:
        return None
    paths = [os.path.join(state_dir, DATA_DIR, n) for n in names]
    if columns is not None:
        have = set(pq.read_schema(paths[0]).names)
        columns = [c for c in columns if c in have]
    tables = [pq.read_table(p, columns=columns) for p in paths]
    if len(tables) == 1:
        return tables[0]  # every profile file is written in customer order
    out = tables[-1]
    for t in reversed(tables[:-1]):
        seen = out.column(outputs.ID_COLUMN).combine_chunks()
        older = t.filter(pc.invert(pc.is_in(t.column(outputs.ID_COLUMN), value_set=seen)))
        out = pa.concat_tables([older, out.select(older.column_names)])
    return _sorted(out)


def _value_models(value):
    """The run's fitted value models (purchase model, Gamma-Gamma or None) from the state's settings."""
    if not value:
        return None, None
    from segone import clv as _clv

    cls = _clv.PURCHASE_MODELS[value["purchase_model"]]
    bg = cls.from_params(value["params"])
    gg = _clv.GammaGamma.from_params(value["gamma_gamma"]) if value.get("gamma_gamma") else None
    return bg, gg


def _value_settings(run_info):
    clv = run_info.get("clv")
    if not clv or not clv.get("bg_nbd"):
        return None
    gg = clv.get("gamma_gamma")
    return {"purchase_model": clv.get("purchase_model", "bgnbd"), "params": clv["bg_nbd"]["params"],
            "gamma_gamma": gg["params"] if gg else None, "horizon_months": clv.get("horizon_months", 12),
            "discount_rate": clv.get("discount_rate", 0.01)}  # fmt: skip


class _Ctx:
    """What every bucket's update needs: the settings, the model, the value models."""

    def __init__(self, state_dir, manifest, n_threads=None):
        from segone.model import load_model

        self.n_threads = n_threads
        self.dir = os.fspath(state_dir)
        self.settings = _Settings(manifest["settings"])
        self.model = load_model(os.path.join(self.dir, outputs.MODEL_DIR))
        if n_threads is not None:
            self.model.scorer.n_threads = n_threads
        self.bg, self.gg = _value_models(self.settings.value)
        self.n_traits = int(manifest["settings"].get("n_traits", 3))
        self.personas = _load_personas(self.dir)
        # the stored profile columns an update reads for the customers it does not profile again
        s = self.settings
        attrs = [c for c in (s.types["attributes"] or {}) if c != s.cid]
        self.needed = list(dict.fromkeys(
            [outputs.ID_COLUMN, NEXT_CHANGE, "first_purchase", "last_purchase", "spend_total", "frequency", "recency",
             "T", "monetary_value"] + list(self.model.features) + [c for c in attrs]
            + [LAST_EVENT.format(i) for i in range(len(s.labels.get("event", [])))]
            + [f"events_{n}" for n in _event_names(s.labels)]))  # fmt: skip (_retime recomputes the time columns)

    def assign(self, table):
        """(assignments with value columns, visible profiles with the value columns) of profiles ``table``."""
        vis = _visible(table)
        asg = self.model.apply(vis, id_column=outputs.ID_COLUMN, n_threads=self.n_threads)
        asg = asg.append_column("spend_total", vis.column("spend_total"))
        if self.bg is not None:
            from segone.clv import VALUE_COLUMNS, value_piece

            v = self.settings.value
            valued = value_piece(vis.select(["frequency", "recency", "T", "monetary_value"]), beta_geo=self.bg,
                                 gamma_gamma=self.gg, horizon_months=v["horizon_months"],
                                 discount_rate=v["discount_rate"], freq=self.settings.freq)  # fmt: skip
            for name in ("expected_purchases", "p_alive", "clv"):
                asg = asg.append_column(name, valued.column(name))
            for name in VALUE_COLUMNS:
                vis = vis.append_column(name, valued.column(name))
        return asg, vis

    def rows_of(self, seg_ids):
        """The model's centroid row of every stable segment id (the personas' segment contrast counts rows)."""
        lookup = {int(sid): r for r, sid in enumerate(self.model.segment_ids.tolist())}
        return np.array([lookup[int(x)] for x in seg_ids.to_numpy(zero_copy_only=False)], dtype=np.int64)

    def persona_table(self, profiles, seg_ids):
        """Personas of ``profiles`` (full columns, value included) against the state's base and segments."""
        pm = self.personas
        if pm is None or profiles.num_rows == 0:
            return None
        t = pm.personas(profiles, self.rows_of(seg_ids), id_column=outputs.ID_COLUMN)
        i = t.column_names.index(outputs.SEGMENT_COLUMN)
        return t.set_column(i, outputs.SEGMENT_COLUMN, _one_chunk(seg_ids))


PERSONAS_JSON = "personas.json"


def _persona_states(ctx, vis, seg_ids):
    """One bucket's mergeable persona states: the base's percentiles and the per-segment sketches."""
    from segone.describe import PersonaModel, PersonaState, SegmentStats

    pm = PersonaModel(ctx.n_traits)
    return PersonaState.of(vis, model=pm), SegmentStats.of(vis, ctx.rows_of(seg_ids), len(ctx.model.segment_ids))


def _save_personas(directory, n_traits, persona_state, segment_stats):
    sketches = segment_stats.segment_sketches()
    doc = {"n_traits": n_traits, "persona_state": persona_state.to_dict(),
           "segment_sketches": {f: [None if sk is None else sk.to_dict() for sk in sks] for f, sks in sketches.items()}}
    _write_json_atomic(doc, os.path.join(directory, PERSONAS_JSON))


def _load_personas(directory):
    """The state's persona model (fitted at init on every customer) or None for a state without one."""
    path = os.path.join(directory, PERSONAS_JSON)
    if not os.path.exists(path):
        return None
    from segone.describe import PersonaModel, PersonaState
    from segone.sketch import QuantileSketch

    d = _read_json(path, "persona model")
    pm = PersonaModel(d["n_traits"])
    pm.fit_state(PersonaState.from_dict(d["persona_state"]))
    pm.set_segments({f: [None if x is None else QuantileSketch.from_dict(x) for x in sks]
                     for f, sks in d["segment_sketches"].items()})  # fmt: skip
    return pm


def _empty(types):
    return None if types is None else pa.table({c: pa.array([], type=t) for c, t in types.items()})


def _filter_ids(table, column, ids):
    if table is None or table.num_rows == 0:
        return table
    return table.filter(pc.is_in(table.column(column), value_set=ids))


def _upsert(old, new, column):
    """Attribute rows: ``new`` replaces the rows of ``old`` with the same id."""
    if new is None or new.num_rows == 0:
        return old
    if old is None or old.num_rows == 0:
        return new
    keep = pc.invert(pc.is_in(old.column(column), value_set=new.column(column).combine_chunks()))
    return pa.concat_tables([old.filter(keep), new.select(old.column_names)])


def _bucket_step(ctx, entry, batch, as_of_us, *, write=True, changes=True, init=False):
    """Fold one bucket's batch rows into it at ``as_of_us``: (new manifest entry, changed assignments, moves, counts).

    ``entry`` is the bucket's manifest entry; ``batch`` {role: rows of this bucket or None}.  The customers of
    the batch and those whose windows changed are profiled again from all their rows; the others' stored
    profiles are read for the columns the model, the value model and the export need only, moved to
    ``as_of_us``; everyone is assigned.  With ``write`` the new row, profile and assignment files are written
    (new names: no file the manifest names is ever changed).
    """
    s, cid = ctx.settings, ctx.settings.cid
    prof = _read_profiles(ctx.dir, entry.get("profiles", []), columns=ctx.needed)
    old_seg = _read_files(ctx.dir, [entry["assign"]]) if entry.get("assign") else None
    touched = [batch[r].column(cid) for r in ROLES if batch.get(r) is not None and batch[r].num_rows]
    touched_ids = pc.unique(pa.chunked_array([c for t in touched for c in (t.chunks if isinstance(
        t, pa.ChunkedArray) else [t])])) if touched else None  # fmt: skip
    due_ids = None
    if prof is not None and prof.num_rows:
        due_ids = prof.filter(pc.less_equal(prof.column(NEXT_CHANGE), pa.scalar(int(as_of_us)))).column(
            outputs.ID_COLUMN).combine_chunks()  # fmt: skip
    parts = [x for x in (touched_ids, due_ids) if x is not None and len(x)]
    new_entry = {"rows": {r: list(entry["rows"].get(r, [])) for r in ROLES},
                 "profiles": list(entry.get("profiles", [])), "assign": entry.get("assign")}  # fmt: skip
    fresh, R, all_attrs = None, None, None
    cache = {}

    def stored(role):  # the bucket's stored rows of a role, read once per step
        if role not in cache:
            cache[role] = _read_files(ctx.dir, entry["rows"].get(role, []))
        return cache[role]

    def attributes():
        if "attributes" not in cache:
            cache["attributes"] = _upsert(stored("attributes_stored"), batch.get("attributes"), cid)
        return cache["attributes"]

    cache["attributes_stored"] = None if s.types["attributes"] is None else _read_files(
        ctx.dir, entry["rows"].get("attributes", []))  # fmt: skip

    def profile_of(ids):
        """The profiles of customers ``ids`` from all their rows (stored, then the batch's) at ``as_of_us``."""
        rows = {}
        for role in ("transactions", "events"):
            got = [t for t in (_filter_ids(stored(role), cid, ids), _filter_ids(batch.get(role), cid, ids))
                   if t is not None and t.num_rows]  # fmt: skip
            rows[role] = pa.concat_tables(got) if got else _empty(s.types[role])
        attrs = None
        if s.types["attributes"] is not None:
            attrs = _filter_ids(attributes(), cid, ids)
            attrs = _empty(s.types["attributes"]) if attrs is None else attrs
        return _profile_customers(s, rows["transactions"], rows["events"], attrs, as_of_us)

    if parts:
        R = pc.unique(pa.concat_arrays([p.cast(parts[0].type) for p in parts]))
        fresh = profile_of(R)
        if s.types["attributes"] is not None:
            all_attrs = attributes()
    if prof is not None and prof.num_rows:
        others = prof if R is None else prof.filter(pc.invert(pc.is_in(prof.column(outputs.ID_COLUMN), value_set=R)))
        others = _retime(s, others, as_of_us)
        table = others if fresh is None else _sorted(pa.concat_tables([others, fresh.select(others.column_names)]))
    else:
        table = fresh
    if table is None or table.num_rows == 0:
        return new_entry, None, None, {"customers": 0, "reprofiled": 0, "moved": 0}
    asg, vis = ctx.assign(table)
    ids = asg.column(outputs.ID_COLUMN)
    seg = _one_chunk(asg.column(outputs.SEGMENT_COLUMN))
    # who moved: compare with the stored segment (new customers have none)
    if old_seg is not None:
        before = _one_chunk(pc.take(old_seg.column("segment"), pc.index_in(ids, value_set=old_seg.column(
            outputs.ID_COLUMN))))  # fmt: skip
    else:
        before = pa.nulls(asg.num_rows, seg.type)
    moved = pc.fill_null(pc.not_equal(before, seg), True)
    # changed: new rows in the batch, or another segment (a window that moved with time alone is not a change
    # of its own, like everyone's recency; its customer is written when it moves them)
    changed = moved if touched_ids is None else pc.or_(moved, pc.is_in(ids, value_set=touched_ids))
    if write:
        data = os.path.join(ctx.dir, DATA_DIR)
        for role in ("transactions", "events"):
            b = batch.get(role)
            if b is not None and b.num_rows:
                files = new_entry["rows"][role] + [_write_table(b, data, role)]
                if len(files) > MAX_DELTAS:  # compaction: one file of the bucket's rows, in customer order
                    merged = _read_files(ctx.dir, files)
                    merged = merged.take(pc.sort_indices(merged, sort_keys=[(cid, "ascending")]))  # stable
                    files = [_write_table(merged, data, role)]
                new_entry["rows"][role] = files
        if all_attrs is not None and batch.get("attributes") is not None and batch["attributes"].num_rows:
            new_entry["rows"]["attributes"] = [_write_table(all_attrs, data, "attributes")]
        # profiles: a delta file of the customers profiled again (every other stored row stays valid until its
        # next window change: its time columns are recomputed from timestamps at every load); one full file
        # when the deltas pile up
        if fresh is not None and fresh.num_rows:
            if len(new_entry["profiles"]) + 1 > MAX_DELTAS:
                full = _read_profiles(ctx.dir, new_entry["profiles"])
                full = full.filter(pc.invert(pc.is_in(full.column(outputs.ID_COLUMN), value_set=R)))
                full = _sorted(pa.concat_tables([full, fresh.select(full.column_names)]))
                new_entry["profiles"] = [_write_table(full, data, "profile")]
            else:
                new_entry["profiles"] = new_entry["profiles"] + [_write_table(fresh, data, "profile")]
        new_entry["assign"] = _write_table(pa.table({outputs.ID_COLUMN: ids, "segment": seg}), data, "assign")
    counts = {"customers": table.num_rows, "reprofiled": 0 if fresh is None else fresh.num_rows,
              "moved": int(pc.sum(moved).as_py() or 0)}  # fmt: skip
    if changes and ctx.model.histogram is not None:
        from segone.track import FeatureHistogram

        counts["histogram"] = FeatureHistogram.of(vis, features=[f for f in ctx.model.features
                                                                 if f in vis.column_names])
    if init:  # the base and the segments the personas of later updates are measured against
        counts["persona_states"] = _persona_states(ctx, vis, seg)
    if not changes:
        return new_entry, None, None, counts
    moves = pa.table({outputs.ID_COLUMN: ids, "from_segment": before, "to_segment": seg}).filter(moved)
    if ctx.personas is not None:
        counts["personas"] = _changed_personas(ctx, fresh, R, ids.filter(changed), profile_of)
    return new_entry, (asg.filter(changed), vis.filter(changed)), (moves, vis.filter(moved)), counts


def _changed_personas(ctx, fresh, R, changed_ids, profile_of):
    """(personas, their profiles) of the changed customers: full profile rows (the fresh ones; customers who only
    changed segment, few, are profiled from their stored rows)."""
    if not len(changed_ids):
        return None
    parts = []
    if fresh is not None:
        parts.append(fresh.filter(pc.is_in(fresh.column(outputs.ID_COLUMN), value_set=changed_ids)))
    rest = changed_ids if R is None else changed_ids.filter(pc.invert(pc.is_in(changed_ids, value_set=R)))
    if len(rest):
        parts.append(profile_of(rest))
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return None
    table = parts[0] if len(parts) == 1 else pa.concat_tables([parts[0]] + [p.select(parts[0].column_names)
                                                                           for p in parts[1:]])  # fmt: skip
    asg, vis = ctx.assign(table)
    return ctx.persona_table(vis, _one_chunk(asg.column(outputs.SEGMENT_COLUMN))), vis


def _one_chunk(col):
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


# -- building a state -----------------------------------------------------------------------------
def _read_role(source, role, roles, types=None):
    if source is None:
        return None
    from segone.io import read_table

    table = read_table(source, name=role)
    return _normalise(table, role, roles, types)


def _split(table, cid, n_buckets):
    """{bucket: rows of ``table`` whose customer hashes to it} (rows keep their order)."""
    if table is None:
        return {}
    b = _bucket_of(table.column(cid), n_buckets)
    order = np.argsort(b, kind="stable")
    counts = np.bincount(b, minlength=n_buckets)
    out, start = {}, 0
    for i, c in enumerate(counts):
        if c:
            out[i] = table.take(pa.array(order[start:start + c]))
        start += c
    return out


def _labels_of(sources, roles, as_of):
    """The category / channel / event labels a run of these inputs profiles with (segone.profile.global_labels)."""
    scans = {role: _profile.ScanState.of(src, role, schema=roles, as_of=as_of) for role, src in sources.items()
             if src is not None}  # fmt: skip
    labels, _ = _profile.global_labels(scans, as_of=as_of)
    return labels


def init_state(state_dir, run_out, transactions, *, events=None, attributes=None, schema=None, windows=(30, 90, 365),
               buckets=DEFAULT_BUCKETS, overwrite=False, engine=None):  # fmt: skip
    """Build the state store of a run: its model and every customer's history, profile and assignment.

    Parameters
    ----------
    state_dir : str or path
        Where the state goes (must not exist unless ``overwrite``).
    run_out : str or path
        The output directory of the ``segone run`` whose model the state keeps.
    transactions, events, attributes, schema :
        The inputs that run read (anything :func:`segone.run` reads), and its schema.
    windows : tuple of int
        The profile's windows (``segone.run`` uses the default).
    buckets : int
        How many customer-hash buckets the store is split in (the unit an update rewrites).
    engine : segone engine, optional
        Builds the buckets on an engine's workers (``segone.dask.DaskEngine``); default: this process.

    Returns
    -------
    dict
        The manifest's summary: customers, rows, as_of, the store's size on disk.
    """
    from segone._validation import check_int, check_path
    from segone.io import atomic_directory, resolve_inputs

    buckets = check_int(buckets, "buckets", low=1, high=4096)
    check_path(run_out, "run_out")
    info = _read_json(os.path.join(os.fspath(run_out), outputs.RUN_JSON), "run summary (run.json) of the run")
    if info.get("format") not in (None, "segone-run") or not os.path.isdir(os.path.join(run_out, outputs.MODEL_DIR)):
        raise StateError(f"{run_out!r} is not the output of `segone run` (no model/ or another run.json format).")
    roles = _profile.resolve_schema(schema)
    tx_src, ev_src, at_src = resolve_inputs(transactions, events, attributes)
    as_of = info["as_of"]
    as_of_us = _profile.parse_as_of(as_of)
    sources = {"transactions": tx_src, "events": ev_src, "attributes": at_src}
    from segone.model import load_model

    recorded = ((load_model(os.path.join(run_out, outputs.MODEL_DIR)).settings or {}).get("profile") or {})
    labels = recorded.get("labels") or _labels_of(sources, roles, as_of)  # the model's own, when it records them
    tables = {r: _read_role(src, r, roles) for r, src in sources.items()}
    unit = (info.get("clv") or {}).get("unit", "days")
    freq = {v: k for k, v in _profile.BTYD_UNITS.items()}.get(unit, "D")
    settings = {"roles": roles, "labels": labels, "windows": list(windows), "freq": freq, "buckets": buckets,
                "types": {r: _types_to_json(_types_of(t)) for r, t in tables.items()},
                "value": _value_settings(info), "n_traits": int(info.get("n_traits") or 3)}  # fmt: skip
    watermark = max(int(pc.max(t.column(roles["ts"])).value) for t in (tables["transactions"], tables["events"])
                    if t is not None and t.num_rows)  # fmt: skip
    with atomic_directory(state_dir, overwrite=overwrite) as tmp:
        import shutil

        shutil.copytree(os.path.join(run_out, outputs.MODEL_DIR), os.path.join(tmp, outputs.MODEL_DIR))
        os.mkdir(os.path.join(tmp, DATA_DIR))
        manifest = {"format": STATE_FORMAT, "version": STATE_VERSION, "generation": 0, "settings": settings,
                    "buckets": [{"rows": {r: [] for r in ROLES}, "profiles": [], "assign": None}
                                for _ in range(buckets)]}  # fmt: skip
        ctx = _Ctx(tmp, manifest)
        split = {r: _split(t, roles["customer_id"], buckets) for r, t in tables.items()}
        del tables
        for r in ("transactions", "events"):  # each bucket's rows in customer order (stable: a customer's rows
            for b, t in split[r].items():     # keep their order), which compresses better
                split[r][b] = t.take(pc.sort_indices(t, sort_keys=[(roles["customer_id"], "ascending")]))
        args = [(manifest["buckets"][b], {r: split[r].pop(b, None) for r in ROLES}) for b in range(buckets)]
        results = _map_buckets(engine, ctx, args, tmp, manifest, as_of_us, changes=False, init=True)
        manifest["buckets"] = [r[0] for r in results]
        states = [r[3]["persona_states"] for r in results if "persona_states" in r[3]]
        if states:  # the personas' base (every customer at the run's as_of) and segment sketches
            ps, ss = states[0]
            for a, b in states[1:]:
                ps, ss = ps.merge(a), ss.merge(b)
            _save_personas(tmp, ctx.n_traits, ps, ss)
        customers = sum(r[3]["customers"] for r in results)
        manifest.update(as_of=as_of, as_of_us=as_of_us, watermark_us=watermark, batches=[],
                        customers=customers, run=os.path.abspath(os.fspath(run_out)),
                        created=_dt.datetime.now(_dt.timezone.utc).isoformat())  # fmt: skip
        _write_json_atomic(manifest, os.path.join(tmp, MANIFEST))
    return state_summary(state_dir)


def state_summary(state_dir):
    """What a state holds: customers, as_of, watermark, batches applied, files and bytes on disk."""
    m = _read_manifest(os.fspath(state_dir))
    data = os.path.join(state_dir, DATA_DIR)
    files = [n for e in m["buckets"] for r in ROLES for n in e["rows"].get(r, [])] + \
        [n for e in m["buckets"] for n in e.get("profiles", []) + ([e["assign"]] if e.get("assign") else [])]
    size = {"rows": 0, "profiles": 0}
    for n in files:
        size["profiles" if n.startswith(("profile", "assign")) else "rows"] += os.path.getsize(os.path.join(data, n))
    return {"customers": m["customers"], "as_of": m["as_of"], "watermark": _iso(m["watermark_us"]),
            "generation": m["generation"], "batches": len(m["batches"]), "buckets": len(m["buckets"]),
            "files": len(files), "bytes": size}  # fmt: skip


# -- updating a state -----------------------------------------------------------------------------
class UpdateResult:
    """What an update did: ``changes`` (the changed customers' assignments), ``moves``, ``personas`` (of the
    changed customers) and ``info`` (run.json)."""

    def __init__(self, path, changes, moves, info, personas=None):
        self.path, self.changes, self.moves, self.info, self.personas = path, changes, moves, info, personas

    def __repr__(self):
        return (f"UpdateResult(as_of={self.info.get('as_of')!r}, changed={self.info.get('customers_changed')}, "
                f"moved={self.info.get('customers_moved')})")  # fmt: skip


def batch_id_of(tables):
    """A batch's id from its content: the SHA-256 of its normalised rows (the same rows give the same id)."""
    h = hashlib.sha256()
    for role in ROLES:
        t = tables.get(role)
        h.update(role.encode())
        if t is not None:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, t.schema) as w:
                w.write_table(t)
            h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()[:32]


def _read_batch(settings, transactions, events, attributes):
    from segone.io import resolve_inputs

    srcs = dict(zip(ROLES, resolve_inputs(transactions, events, attributes)))
    out = {}
    for role, src in srcs.items():
        if src is None:
            out[role] = None
            continue
        if settings.types[role] is None:
            raise SchemaError(f"{role}: the state was built without {role}; a batch cannot add them. Build a new "
                              f"state with `segone run --state` from data with {role}.")  # fmt: skip
        out[role] = _read_role(src, role, settings.roles, settings.types[role])
    if all(t is None for t in out.values()):
        raise ParameterError("update: no batch given; pass new transactions, events or attributes.")
    return out


def _new_as_of(manifest, batch, roles, as_of):
    old = int(manifest["as_of_us"])
    latest = [int(pc.max(t.column(roles["ts"])).value) for r, t in batch.items()
              if r != "attributes" and t is not None and t.num_rows]  # fmt: skip
    if as_of is None:
        return max([old] + latest)
    us = _profile.parse_as_of(as_of)
    if us < old:
        raise ParameterError(
            f"as_of={as_of!r} is before the state's as_of {manifest['as_of']}; a state only moves forward. Rebuild "
            "the state with `segone run --state` to look at an earlier date."
        )
    return us


def update(state, transactions=None, *, events=None, attributes=None, out=None, as_of=None, batch_id=None,
           overwrite=False, id_key_file=None, engine=None, refit_above=None):  # fmt: skip
    """Fold a batch of new events into a state store; write the changed customers to ``out``.

    Parameters
    ----------
    state : str or path
        A state directory (``segone run --state`` or :func:`init_state`).
    transactions, events, attributes :
        The batch: new transactions, web events, and CRM attribute rows (which replace a customer's row).
    out : str or path, optional
        Output directory for ``assignments.parquet`` (the customers whose data or segment changed),
        ``changelog.parquet`` (who moved, from, to, at) and ``run.json``.
    as_of : str or datetime, optional
        The new as_of (default: the latest of the state's and the batch's timestamps); never earlier than the
        state's.
    batch_id : str, optional
        The batch's id (default: a hash of its rows); a batch id already applied changes nothing.
    id_key_file :
        The key file of a model fitted with ``hash_ids`` (as for ``segone apply``).
    engine : segone engine, optional
        Runs the buckets on an engine's workers (``segone.dask.DaskEngine``); default: this process.
    refit_above : float, optional
        When the largest population stability index of a model feature (the customers now against the model's
        data) passes this, refit: a full :func:`segone.run` of every row the state holds into ``out/refit``
        with ``previous=`` the state's run (segment ids kept), the model's privacy options, and the state
        rebuilt from it.  Needs ``out``.

    Returns
    -------
    UpdateResult

    Examples
    --------
    See the module's docstring and the README's "Incremental updates".
    """
    from segone import privacy as _privacy
    from segone._validation import check_path
    from segone.io import atomic_directory, write_json, write_parquet

    t0 = time.perf_counter()
    state = os.fspath(state)
    check_path(state, "state", kind="dir")
    if out is not None:
        check_path(out, "out", must_exist=False)
    check_path(id_key_file, "id_key_file", kind="file")
    if refit_above is not None:
        if isinstance(refit_above, bool) or not isinstance(refit_above, (int, float)) or not refit_above >= 0:
            raise ParameterError(f"refit_above={refit_above!r}: give a PSI threshold >= 0 (e.g. 0.25), or None.")
        if out is None:
            raise ParameterError("refit_above needs out=: the refit's run is written to out/refit.")
    with _lock(state):
        manifest = _read_manifest(state)
        ctx = _Ctx(state, manifest)
        batch = _read_batch(ctx.settings, transactions, events, attributes)
        bid = str(batch_id) if batch_id is not None else batch_id_of(batch)
        res = _apply(state, manifest, ctx, batch, [bid], as_of=as_of, out=out, overwrite=overwrite,
                     id_key_file=id_key_file, engine=engine, t0=t0)
        psi = res.info.get("max_feature_psi")
        if refit_above is not None and psi is not None and psi > refit_above:
            res.info["refit"] = _refit(state, ctx, os.path.join(res.path, "refit"), id_key_file=id_key_file,
                                       engine=engine, reason=f"largest feature PSI {psi:.3f} > {refit_above}")
            from segone.io import write_json

            write_json(res.info, os.path.join(res.path, outputs.RUN_JSON))
        return res


def stored_inputs(state):
    """Every row a state holds, per role (transactions, events, attributes): the inputs of a full run."""
    state = os.fspath(state)
    m = _read_manifest(state)
    return {r: _read_files(state, [n for e in m["buckets"] for n in e["rows"].get(r, [])]) for r in ROLES}


def _refit(state, ctx, out, *, id_key_file, engine, reason):
    """A full run of every stored row into ``out`` (previous: the state's run), and the state rebuilt from it."""
    from segone.pipeline import run

    m = _read_manifest(state)
    rec = (ctx.model.settings or {}).get("privacy") or {}
    prev = m.get("run") if m.get("run") and os.path.isdir(m["run"]) else None
    rows = stored_inputs(state)
    priv = {}
    if rec:
        priv = dict(consent=rec.get("consent") or None, consent_scope=rec.get("consent_scope", "export"),
                    consent_default=bool(rec.get("consent_default", False)), hash_ids=bool(rec.get("hash_ids")),
                    id_key_file=id_key_file, min_segment_size=rec.get("min_segment_size"),
                    small_segments=rec.get("small_segments", "merge"), keep_columns=rec.get("keep_columns") or (),
                    personal_columns=rec.get("personal_columns") or ())  # fmt: skip
    value = ctx.settings.value
    res = run(rows["transactions"], out, len(ctx.model.segment_ids), events=rows["events"],
              attributes=rows["attributes"], as_of=m["as_of"], schema=ctx.settings.roles, previous=prev,
              value=value is not None, freq=ctx.settings.freq, engine=engine, state=state, overwrite=True,
              **({} if value is None else {"horizon_months": value["horizon_months"],
                                           "discount_rate": value["discount_rate"]}), **priv)  # fmt: skip
    new = _read_manifest(state)  # the rebuilt state remembers the batches folded in before (re-applying: a no-op)
    new["batches"] = list(m["batches"])
    new["watermark_us"] = max(int(new["watermark_us"]), int(m["watermark_us"]))
    _write_json_atomic(new, os.path.join(state, MANIFEST))
    return {"reason": reason, "out": res.out, "previous": prev, "segments": res.segments.num_rows}


def _apply(state, manifest, ctx, batch, bids, *, as_of, out, overwrite, id_key_file, engine, t0):
    """Fold ``batch`` (normalised tables) with ids ``bids`` into the state; the store's lock is held."""
    from segone import privacy as _privacy

    orphans = _remove_orphans(state, manifest)
    s = ctx.settings
    record = _privacy.model_privacy(ctx.model)
    plan, taken = _privacy.apply_plan(record, where=ctx.model.path, id_key_file=id_key_file,
                                      attributes=_empty(s.types["attributes"]), schema=s.roles)
    counts = {r: (t.num_rows if t is not None else 0) for r, t in batch.items()}
    bid = bids[0] if len(bids) == 1 else bids
    info = {"format": "segone-update", "version": 1, "state": os.path.abspath(state), "batch_id": bid,
            "batch": counts, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "segone_version": __import__("segone").__version__}  # fmt: skip
    seen = [b for b in bids if b in manifest["batches"]]
    if seen:
        if len(seen) < len(bids):
            raise ParameterError(f"batches {seen} were applied before and {[b for b in bids if b not in seen]} were "
                                 "not; apply the new ones alone.")  # fmt: skip
        info.update(applied=False, note=f"batch {bid} was applied before; nothing changed.",
                    as_of=manifest["as_of"], customers_changed=0, customers_moved=0)  # fmt: skip
        return _write_update(out, overwrite, None, None, info, t0, id_type=_out_id_type(s, plan))
    as_of_us = _new_as_of(manifest, batch, s.roles, as_of)
    late = sum(int(pc.sum(pc.less(t.column(s.roles["ts"]).combine_chunks().view(pa.int64()),
                                  pa.scalar(int(manifest["watermark_us"])))).as_py() or 0)
               for r, t in batch.items() if r != "attributes" and t is not None)  # fmt: skip
    split = {r: _split(t, s.cid, s.n_buckets) for r, t in batch.items()}
    args = [(manifest["buckets"][b], {r: split[r].get(b) for r in ROLES}) for b in range(s.n_buckets)]
    results = _map_buckets(engine, ctx, args, state, manifest, as_of_us)
    new = dict(manifest)
    new["buckets"] = [r[0] for r in results]
    changed, moves = [], []
    totals = {"customers": 0, "reprofiled": 0, "moved": 0}
    hist = None
    for _, ch, mv, c in results:
        for k in totals:
            totals[k] += c.get(k, 0)
        if c.get("histogram") is not None:
            hist = c["histogram"] if hist is None else hist.merge(c["histogram"])
        if ch is not None:
            changed.append(ch)
        if mv is not None:
            moves.append(mv)
    watermark = max([int(manifest["watermark_us"])] + [
        int(pc.max(t.column(s.roles["ts"])).value) for r, t in batch.items()
        if r != "attributes" and t is not None and t.num_rows])  # fmt: skip
    new.update(generation=manifest["generation"] + 1, as_of=_iso(as_of_us), as_of_us=as_of_us,
               watermark_us=watermark, batches=manifest["batches"] + list(bids), customers=totals["customers"],
               updated=_dt.datetime.now(_dt.timezone.utc).isoformat())  # fmt: skip
    at = _iso(as_of_us)
    ch_asg, ch_prof = _concat_pairs(changed)
    mv_tab, mv_prof = _concat_pairs(moves)
    pe_tab, pe_prof = _concat_pairs([c["personas"] for *_, c in results if c.get("personas") is not None])
    if mv_tab is not None:
        mv_tab = mv_tab.append_column("at", pa.array([as_of_us] * mv_tab.num_rows, pa.timestamp("us", "UTC")))
    # EXPORT: the model's privacy (consent, pseudonyms, the exported segment ids, personal columns)
    mapping = None
    if record is not None and record.get("exported_ids") is not None:
        mapping = _privacy.id_lookup(ctx.model.segment_ids, record["exported_ids"])
    if ch_asg is not None and (plan.active or mapping is not None):
        ch_asg = _privacy.export_piece(ch_asg, ch_prof, plan=plan, mapping=mapping)
    if mv_tab is not None and (plan.active or mapping is not None):
        if mapping is not None:
            mv_tab = _privacy.relabel_segments(mv_tab, mapping, "from_segment")
        mv_tab = _privacy.export_piece(mv_tab, mv_prof, plan=plan, mapping=mapping, column="to_segment")
    if pe_tab is not None and (plan.active or mapping is not None):
        pe_tab = _privacy.export_piece(pe_tab, pe_prof, plan=plan, mapping=mapping)
    info.update(applied=True, as_of=at, previous_as_of=manifest["as_of"], watermark=_iso(watermark),
                late_rows=late, late_rule="folded in: a customer with late rows is profiled again from all rows",
                customers=totals["customers"], customers_reprofiled=totals["reprofiled"],
                customers_changed=0 if ch_asg is None else ch_asg.num_rows,
                customers_moved=totals["moved"], orphans_removed=orphans,
                privacy=_privacy.privacy_summary(plan))  # fmt: skip
    if hist is not None and ctx.model.histogram is not None:  # drift since the model was fitted
        from segone.track import feature_psi

        psi = feature_psi(ctx.model.histogram, hist)
        info["feature_psi"] = psi
        info["max_feature_psi"] = max((v for v in psi.values() if v is not None), default=None) \
            if isinstance(psi, dict) else None  # fmt: skip
    if plan.min_segment_size is not None and 0 < totals["moved"] < plan.min_segment_size:
        info["customers_moved"] = f"fewer than {plan.min_segment_size}"
    result = _write_update(out, overwrite, ch_asg, mv_tab, info, t0, id_type=_out_id_type(s, plan), personas=pe_tab)
    # the new state, swapped in by one rename (a kill before leaves the previous state whole)
    new["last_update"] = {k: info[k] for k in ("batch_id", "as_of", "customers_reprofiled", "customers_changed")}
    _write_json_atomic(new, os.path.join(state, MANIFEST))
    _remove_orphans(state, new)
    info["timings_s"] = {"total": round(time.perf_counter() - t0, 4)}
    return result




def _out_id_type(settings, plan):
    """The id column's type in the outputs: the input's, or strings (pseudonyms) when ids are hashed."""
    if plan.key is not None:
        return pa.string()
    return settings.types["transactions"][settings.cid]


def _bucket_task(item, *, state, manifest, as_of_us, changes=True, init=False):
    entry, batch = item
    return _bucket_step(_Ctx(state, manifest), entry, batch, as_of_us, changes=changes, init=init)


def _map_buckets(engine, ctx, args, state, manifest, as_of_us, changes=True, init=False):
    """Every bucket's step: in this process, or one task per bucket on an engine's workers (only the changed
    customers' rows come back)."""
    if engine is None or getattr(engine, "name", None) == "local":
        return [_bucket_step(ctx, e, bt, as_of_us, changes=changes, init=init) for e, bt in args]
    from segone._engine import check_engine

    eng = check_engine(engine)
    return eng.gather(eng.map(_bucket_task, args, state=os.path.abspath(state), manifest=manifest,
                              as_of_us=as_of_us, changes=changes, init=init))

def _concat_pairs(pairs):
    pairs = [p for p in pairs if p is not None and p[0].num_rows]
    if not pairs:
        return None, None
    return (pa.concat_tables([p[0] for p in pairs], promote_options="permissive"),
            pa.concat_tables([p[1] for p in pairs], promote_options="permissive"))


def _write_update(out, overwrite, changes, moves, info, t0, id_type=pa.int64(), personas=None):
    from segone.io import atomic_directory, write_json, write_parquet

    if changes is None:  # nobody changed: the files are there, empty, with their columns
        changes = pa.table({outputs.ID_COLUMN: pa.array([], id_type), outputs.SEGMENT_COLUMN: pa.array([], pa.int32()),
                            "distance": pa.array([], pa.float32()), "margin": pa.array([], pa.float32())})
    if moves is None:
        moves = pa.table({outputs.ID_COLUMN: pa.array([], id_type), "from_segment": pa.array([], pa.int32()),
                          "to_segment": pa.array([], pa.int32()), "at": pa.array([], pa.timestamp("us", "UTC"))})
    if out is None:
        return UpdateResult(None, changes, moves, info, personas)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_parquet(changes, os.path.join(tmp, outputs.ASSIGNMENTS))
        write_parquet(moves, os.path.join(tmp, outputs.CHANGELOG))
        if personas is not None:
            write_parquet(personas, os.path.join(tmp, outputs.PERSONAS))
        info["timings_s"] = {"total": round(time.perf_counter() - t0, 4)}
        write_json(info, os.path.join(tmp, outputs.RUN_JSON))
    return UpdateResult(os.path.abspath(os.fspath(out)), changes, moves, info, personas)


def read_profiles(state, *, hidden=False):
    """Every customer's profile in a state at its ``as_of`` (sorted by customer id), with the ``segment``.

    ``hidden=True`` keeps the store's own columns (the next window change, the latest event times).

    Examples
    --------
    >>> import os, tempfile, segone
    >>> from segone import update as up
    >>> d = segone.synth.generate(300, seed=0)
    >>> tmp = tempfile.mkdtemp()
    >>> _ = segone.run(d.transactions, os.path.join(tmp, "fit"), 2, value=False)
    >>> _ = up.init_state(os.path.join(tmp, "state"), os.path.join(tmp, "fit"), d.transactions)
    >>> up.read_profiles(os.path.join(tmp, "state")).num_rows
    300
    """
    state = os.fspath(state)
    m = _read_manifest(state)
    s = _Settings(m["settings"])
    parts = [p for p in (_read_profiles(state, e.get("profiles", [])) for e in m["buckets"]) if p is not None]
    table = _sorted(pa.concat_tables(parts)) if parts else None
    if table is None:
        return None
    table = _retime(s, table, int(m["as_of_us"]))
    asg = pa.concat_tables([_read_files(state, [e["assign"]]) for e in m["buckets"] if e.get("assign")])
    seg = pc.take(asg.column("segment"), pc.index_in(table.column(outputs.ID_COLUMN),
                                                     value_set=asg.column(outputs.ID_COLUMN)))
    if not hidden:
        table = _visible(table)
    return table.append_column(outputs.SEGMENT_COLUMN, seg)


# -- a long-lived consumer ------------------------------------------------------------------------
class _Lookup:
    """Positions of ids in a fixed array of distinct ids (a hash index built once; -1 where absent)."""

    def __init__(self, ids):
        import pandas as pd

        self.index = pd.Index(ids.to_numpy(zero_copy_only=False))

    def positions(self, ids):
        vals = ids.to_numpy(zero_copy_only=False) if isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids
        return self.index.get_indexer(vals).astype(np.int64)


class _Rows:
    """One role's rows of every customer in memory, in customer order, with each customer's row range; new rows
    wait in a small tail until :meth:`compact`."""

    def __init__(self, table, cid):
        self.cid = cid
        self.tail = []
        self._index(table)

    def _index(self, table):
        if table is not None and table.num_rows:
            table = table.take(pc.sort_indices(table, sort_keys=[(self.cid, "ascending")]))  # stable
            ids = table.column(self.cid).combine_chunks()
            change = np.flatnonzero(np.asarray(pc.not_equal(ids[1:], ids[:-1]))) + 1 if len(ids) > 1 else \
                np.zeros(0, np.int64)  # fmt: skip
            self.starts = np.concatenate([[0], change, [len(ids)]]).astype(np.int64)
            self.keys = _Lookup(ids.take(pa.array(self.starts[:-1])))
        else:
            self.starts, self.keys = np.zeros(1, np.int64), None
        self.table = table

    def add(self, rows):
        if rows is not None and rows.num_rows:
            self.tail.append(rows)

    def of(self, ids):
        """The rows of customers ``ids`` (stored rows first, then new rows in arrival order)."""
        got = []
        if self.keys is not None and len(ids):
            pos = self.keys.positions(ids)
            pos = pos[pos >= 0]
            if pos.size:
                lo, hi = self.starts[pos], self.starts[pos + 1]
                lens = hi - lo
                take = np.repeat(lo - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
                got.append(self.table.take(pa.array(np.sort(take))))
        for t in self.tail:
            got.append(t.filter(pc.is_in(t.column(self.cid), value_set=ids)))
        got = [g for g in got if g.num_rows]
        if not got:
            return None
        out = pa.concat_tables(got)
        if len(got) > 1:  # a customer's rows: stored first, then the tail in arrival order (stable sort by id)
            out = out.take(pc.sort_indices(out, sort_keys=[(self.cid, "ascending")]))
        return out

    def compact(self):
        if self.tail:
            self._index(pa.concat_tables(([self.table] if self.table is not None else []) + self.tail))
            self.tail = []


class Updater:
    """A warm updater for a long-lived consumer: fold small batches into a state in memory, flush to the store.

    ``Updater(state)`` takes the store's lock for its lifetime and loads every customer's rows and profile.
    :meth:`update` folds one batch: the customers of the batch are profiled again from all their rows at the
    batch's ``as_of``, assigned with the saved model and valued; it returns the table of those customers with
    their segment before and after (``moved``), in time proportional to the batch.  The other customers (those
    whose windows changed with time included) move to the new ``as_of`` at :meth:`flush`, which folds every batch since the last flush into the store
    exactly as :func:`update` does (the store then equals a full profile-and-apply) and returns that update's
    result.  ``flush_every`` batches or ``flush_seconds`` flush by themselves.

    Parameters
    ----------
    state : str or path
    flush_every : int, optional
    flush_seconds : float, optional
    id_key_file : optional
        As for :func:`update`.

    Examples
    --------
    >>> import os, tempfile, segone
    >>> from segone import update as up
    >>> d = segone.synth.generate(400, seed=2)
    >>> old = d.transactions.filter(up._before(d.transactions, "2025-06-01"))
    >>> new = d.transactions.filter(up._before(d.transactions, "2025-06-01", after=True))
    >>> tmp = tempfile.mkdtemp()
    >>> _ = segone.run(old, os.path.join(tmp, "fit"), 3, value=False)
    >>> _ = up.init_state(os.path.join(tmp, "state"), os.path.join(tmp, "fit"), old)
    >>> with up.Updater(os.path.join(tmp, "state")) as u:
    ...     changes = u.update(new.slice(0, 50))
    ...     flushed = u.flush()
    >>> changes.column_names[:4]
    ['customer_id', 'segment_before', 'segment', 'moved']
    >>> flushed.info["applied"]
    True
    """

    def __init__(self, state, *, flush_every=None, flush_seconds=None, id_key_file=None):
        from segone._validation import check_int, check_path

        self.state = os.fspath(state)
        check_path(self.state, "state", kind="dir")
        self.flush_every = None if flush_every is None else check_int(flush_every, "flush_every", low=1)
        if flush_seconds is not None and not (isinstance(flush_seconds, (int, float)) and flush_seconds > 0):
            raise ParameterError(f"flush_seconds={flush_seconds!r}: give a positive number of seconds, or None.")
        self.flush_seconds, self.id_key_file = flush_seconds, id_key_file
        self._lock = _lock(self.state)
        try:
            self._load()
        except BaseException:
            self._lock.release()
            raise

    def _load(self):
        self.manifest = _read_manifest(self.state)
        _remove_orphans(self.state, self.manifest)
        self.ctx = _Ctx(self.state, self.manifest, n_threads=1)  # small batches: threads cost more than they save
        s = self.ctx.settings
        self.rows = {}
        for role in ("transactions", "events"):
            files = [n for e in self.manifest["buckets"] for n in e["rows"].get(role, [])]
            self.rows[role] = _Rows(_read_files(self.state, files), s.cid) if s.types[role] is not None else None
        files = [n for e in self.manifest["buckets"] for n in e["rows"].get("attributes", [])]
        self.attrs = _read_files(self.state, files)
        prof = read_profiles(self.state, hidden=True)
        self.ids = prof.column(outputs.ID_COLUMN).combine_chunks()
        self._lookup = _Lookup(self.ids)
        self.segment = _one_chunk(prof.column(outputs.SEGMENT_COLUMN))
        self.next_change = prof.column(NEXT_CHANGE).to_numpy()
        self.as_of_us = int(self.manifest["as_of_us"])
        self.pending, self.pending_ids, self.last_flush = {r: [] for r in ROLES}, [], time.monotonic()
        self.seen = set(self.manifest["batches"])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(flush=exc[0] is None)

    def update(self, transactions=None, *, events=None, attributes=None, batch_id=None, as_of=None):
        """Fold one batch in memory; returns the changes table of the customers it profiled again."""
        s = self.ctx.settings
        batch = _read_batch(s, transactions, events, attributes)
        bid = str(batch_id) if batch_id is not None else batch_id_of(batch)
        if bid in self.seen:
            return None
        as_of_us = _new_as_of({"as_of_us": self.as_of_us, "as_of": _iso(self.as_of_us)}, batch, s.roles, as_of)
        # the batch's customers only: the others (a window change included) move to the new as_of at flush
        touched = [t.column(s.cid) for t in batch.values() if t is not None and t.num_rows]
        parts = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in touched]
        for role in ("transactions", "events"):
            if self.rows[role] is not None:
                self.rows[role].add(batch.get(role))
        if batch.get("attributes") is not None:
            self.attrs = _upsert(self.attrs, batch["attributes"], s.cid)
        for role in ROLES:
            if batch.get(role) is not None:
                self.pending[role].append(batch[role])
        self.pending_ids.append(bid)
        self.seen.add(bid)
        self.as_of_us = as_of_us
        changes = None
        if parts:
            R = pc.unique(pa.concat_arrays([p.cast(self.ids.type) if len(self.ids) else p for p in parts]))
            tx = self.rows["transactions"].of(R) if self.rows["transactions"] is not None else None
            ev = self.rows["events"].of(R) if self.rows["events"] is not None else None
            at = _filter_ids(self.attrs, s.cid, R) if self.attrs is not None else None
            fresh = _profile_customers(s, tx if tx is not None else _empty(s.types["transactions"]),
                                       ev if ev is not None or s.types["events"] is None else _empty(s.types["events"]),
                                       at if at is not None or s.types["attributes"] is None
                                       else _empty(s.types["attributes"]), as_of_us, n_threads=1)  # fmt: skip
            asg, _ = self.ctx.assign(fresh)
            fid = asg.column(outputs.ID_COLUMN)
            seg = _one_chunk(asg.column(outputs.SEGMENT_COLUMN))
            p = self._lookup.positions(fid)
            pos = pa.array(p, mask=p < 0)
            before = _one_chunk(pc.take(self.segment, pos))
            changes = pa.table({outputs.ID_COLUMN: fid, "segment_before": before, "segment": seg,
                                "moved": pc.fill_null(pc.not_equal(before, seg), True)})  # fmt: skip
            for name in asg.column_names[4:]:
                changes = changes.append_column(name, asg.column(name))
            # remember the new segments and next changes (new customers join)
            known = np.asarray(pos.is_valid())
            p_known = pos.filter(pos.is_valid()).to_numpy().astype(np.int64)
            segs = self.segment.to_numpy(zero_copy_only=False).copy()
            segs[p_known] = seg.filter(pa.array(known)).to_numpy(zero_copy_only=False)
            nxt = fresh.column(NEXT_CHANGE).to_numpy()
            self.next_change = self.next_change.copy()
            self.next_change[p_known] = nxt[known]
            if (~known).any():
                self.ids = pa.concat_arrays([self.ids, fid.filter(pa.array(~known)).combine_chunks()
                                             if isinstance(fid, pa.ChunkedArray) else fid.filter(pa.array(~known))])
                segs = np.concatenate([segs, seg.filter(pa.array(~known)).to_numpy(zero_copy_only=False)])
                self.next_change = np.concatenate([self.next_change, nxt[~known]])
                self._lookup = _Lookup(self.ids)  # new customers: rebuilt (rare after the first batches)
            self.segment = pa.array(segs, type=seg.type)
        if (self.flush_every is not None and len(self.pending_ids) >= self.flush_every) or (
                self.flush_seconds is not None and time.monotonic() - self.last_flush >= self.flush_seconds):
            self.flush()
        return changes

    def flush(self, out=None, *, overwrite=False):
        """Fold the batches since the last flush into the store (as :func:`update`); returns its result or None."""
        if not self.pending_ids:
            return None
        batch = {r: (pa.concat_tables(v) if v else None) for r, v in self.pending.items()}
        res = _apply(self.state, self.manifest, self.ctx, batch, list(self.pending_ids), as_of=_iso(self.as_of_us),
                     out=out, overwrite=overwrite, id_key_file=self.id_key_file, engine=None,
                     t0=time.perf_counter())  # fmt: skip
        self.manifest = _read_manifest(self.state)
        for role in ("transactions", "events"):
            if self.rows[role] is not None:
                self.rows[role].compact()
        self.pending, self.pending_ids, self.last_flush = {r: [] for r in ROLES}, [], time.monotonic()
        prof = read_profiles(self.state, hidden=True)  # everyone at the new as_of, as the store holds them
        self.ids = prof.column(outputs.ID_COLUMN).combine_chunks()
        self._lookup = _Lookup(self.ids)
        self.segment = _one_chunk(prof.column(outputs.SEGMENT_COLUMN))
        self.next_change = prof.column(NEXT_CHANGE).to_numpy()
        return res

    def close(self, flush=True):
        """Flush (unless ``flush=False``) and release the store's lock."""
        try:
            if flush:
                self.flush()
        finally:
            self._lock.release()
