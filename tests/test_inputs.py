"""Any table in, any file in: every input kind gives the profiles of the plain pyarrow reference.

The matrix has three axes for in-memory inputs (table kind x customer-id type x
timestamp type) and one for files (Parquet / CSV / Arrow IPC x id x timestamp).
Every value of every axis is compared with the reference, and every pair of
values of two axes appears in at least one case (a pairwise design, not the
full product).
"""

import datetime as dt
import gzip
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import segone
from segone import io
from segone.errors import DataError, ParameterError, SchemaError
from segone.profile import _ts_to_us

import pandas as pd  # noqa: E402

N_ROWS, N_CUSTOMERS = 300, 40
BASE = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)


def _data():
    """Transactions with whole-second UTC times, two-decimal amounts, string categories (some null)."""
    rng = np.random.default_rng(7)
    cid = rng.integers(0, N_CUSTOMERS, N_ROWS) * 7 + 1001
    secs = np.sort(rng.integers(0, 200 * 86400, N_ROWS))
    ts = pa.array((np.datetime64(BASE.replace(tzinfo=None), "s") + secs).astype("datetime64[us]"))
    amount = np.round(rng.gamma(2.0, 30.0, N_ROWS), 2)
    amount[::17] *= -1  # a few returns
    cats = np.array(["grocery", "toys", "garden", "books", "music"])
    category = pa.array([None if i % 23 == 0 else cats[(i * 7) % 4] for i in range(N_ROWS)])  # "music" unused
    channel = pa.array([["web", "store", "app"][i % 3] for i in range(N_ROWS)])
    return pa.table({"customer_id": pa.array(cid, pa.int64()), "ts": ts, "amount": pa.array(amount),
                     "category": category, "channel": channel})  # fmt: skip


DATA = _data()


# ------------------------------------------------------------------ the axes
def _string_ids(col):
    return pa.array([f"c{v:05d}" for v in col.to_pylist()], pa.string())


ID_TYPES = {
    "int64": lambda c: c,
    "int32": lambda c: pc.cast(c, pa.int32()),
    "string": _string_ids,
    "large_string": lambda c: pc.cast(_string_ids(c), pa.large_string()),
    "string_view": lambda c: pc.cast(_string_ids(c), pa.string_view()),
    "dictionary": lambda c: _string_ids(c).dictionary_encode(),
}
STRING_IDS = {"string", "large_string", "string_view", "dictionary"}


def _iso_strings(ts):
    """The same instants written in the accepted ISO 8601 forms, cycling row by row."""
    out = []
    for i, v in enumerate(ts.to_pylist()):
        u = v.replace(tzinfo=dt.timezone.utc)
        forms = [u.strftime("%Y-%m-%d %H:%M:%S"), u.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 (u + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00"),
                 (u - dt.timedelta(hours=5, minutes=30)).strftime("%Y-%m-%d %H:%M:%S-0530"),
                 u.strftime("%Y-%m-%dT%H:%M:%S.000000")]  # fmt: skip
        out.append(forms[i % len(forms)])
    return pa.array(out, pa.string())


def _dates(ts):
    return pc.cast(ts, pa.date32())


TS_TYPES = {
    "timestamp_us": lambda c: c,
    "timestamp_ns": lambda c: pc.cast(c, pa.timestamp("ns")),
    "timestamp_tz": lambda c: pc.cast(pc.cast(c, pa.timestamp("us", tz="UTC")), pa.timestamp("us", tz="Europe/Paris")),
    "date32": _dates,
    "date_strings": lambda c: pc.cast(_dates(c), pa.string()),
    "datetime_strings": _iso_strings,
}
DATE_ONLY = {"date32", "date_strings"}


class _CStream:
    """Only the Arrow C stream interface (what any Arrow producer may hand over)."""

    def __init__(self, table):
        self._table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self._table.__arrow_c_stream__(requested_schema)


def _pandas_numpy(t):
    df = t.to_pandas()
    df.index = np.arange(len(df)) * 3 + 100  # a non-default index is never read
    return df


def _pandas_categorical(t):
    df = t.to_pandas()
    for c in ("category", "channel"):
        df[c] = df[c].astype("category").cat.add_categories(["unused"])  # an unused category changes nothing
    return df


def _polars(t, categorical=False):
    import polars as pl
    df = pl.from_arrow(t)
    if categorical:
        df = df.with_columns(pl.col("category").cast(pl.Categorical),
                             pl.col("channel").cast(pl.Enum(["web", "store", "app"])))  # fmt: skip
    return df


def _duckdb(t):
    import duckdb
    con = duckdb.connect()
    return con.from_arrow(t)


KINDS = {
    "pyarrow": lambda t: t,
    "record_batch_reader": lambda t: pa.RecordBatchReader.from_batches(t.schema, t.to_batches(max_chunksize=64)),
    "pandas_numpy": _pandas_numpy,
    "pandas_arrow": lambda t: t.to_pandas(types_mapper=pd.ArrowDtype),
    "pandas_categorical": _pandas_categorical,
    "polars": _polars,
    "polars_categorical": lambda t: _polars(t, categorical=True),
    "duckdb": _duckdb,
    "c_stream": _CStream,
}


def _table(id_type, ts_type):
    t = DATA.set_column(0, "customer_id", ID_TYPES[id_type](DATA.column("customer_id").combine_chunks()))
    return t.set_column(1, "ts", TS_TYPES[ts_type](DATA.column("ts").combine_chunks()))


_REFS = {}


def reference(id_type, ts_type):
    """The profiles of the plain pyarrow table: int64 or string ids, timestamp[us] (midnight for date-only axes)."""
    key = ("string" if id_type in STRING_IDS else "int64", "date32" if ts_type in DATE_ONLY else "timestamp_us")
    if key not in _REFS:
        t = DATA.set_column(0, "customer_id", ID_TYPES[key[0]](DATA.column("customer_id").combine_chunks()))
        if key[1] == "date32":
            t = t.set_column(1, "ts", pc.cast(_dates(DATA.column("ts")), pa.timestamp("us")))
        _REFS[key] = segone.build_profiles(t)
    return _REFS[key]


def assert_identical(got, ref):
    assert got.schema.equals(ref.schema), f"schema differs:\n{got.schema}\nvs\n{ref.schema}"
    bad = [c for c in ref.column_names if not got.column(c).equals(ref.column(c))]
    assert not bad, f"columns differ: {bad}"


# pairwise design over kind x id x ts: every (kind, id) pair, with the timestamp type
# cycling so that every (kind, ts) and (id, ts) pair appears too
def _pairwise():
    kinds, ids, tss = list(KINDS), list(ID_TYPES), list(TS_TYPES)
    return [(k, i, tss[(a + b) % len(tss)]) for a, k in enumerate(kinds) for b, i in enumerate(ids)]


PAIRS = _pairwise()


def test_pairwise_design_covers_every_pair():
    for (x, y) in ((0, 1), (0, 2), (1, 2)):
        axes = (list(KINDS), list(ID_TYPES), list(TS_TYPES))
        want = {(a, b) for a in axes[x] for b in axes[y]}
        assert want <= {(c[x], c[y]) for c in PAIRS}


@pytest.mark.parametrize("kind, id_type, ts_type", PAIRS)
def test_in_memory_inputs_give_the_reference_profiles(kind, id_type, ts_type):
    src = KINDS[kind](_table(id_type, ts_type))
    assert_identical(segone.build_profiles(src), reference(id_type, ts_type))


def _write(table, path, fmt):
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "arrow_ipc":
        feather.write_feather(table, path)
    else:
        # CSV holds text: views / large strings / dictionaries are written as their values
        schema = io.normalize_schema(table.schema)
        text = pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema])
        pacsv.write_csv(io.normalize_table(table).cast(text), path)


FILES = {"parquet": "tx.parquet", "csv": "tx.csv", "arrow_ipc": "tx.arrow"}
FILE_CASES = [(f, i, list(TS_TYPES)[(a + b) % len(TS_TYPES)])
              for a, f in enumerate(FILES) for b, i in enumerate(ID_TYPES)]  # fmt: skip


@pytest.mark.parametrize("fmt, id_type, ts_type", FILE_CASES)
def test_files_give_the_reference_profiles(tmp_path, fmt, id_type, ts_type):
    path = tmp_path / FILES[fmt]
    _write(_table(id_type, ts_type), path, fmt)
    assert_identical(segone.build_profiles(str(path)), reference(id_type, ts_type))


@pytest.mark.parametrize("ts_type", list(TS_TYPES))
def test_every_timestamp_type_from_csv_and_parquet(tmp_path, ts_type):
    for fmt in ("csv", "parquet"):
        path = tmp_path / FILES[fmt]
        _write(_table("int64", ts_type), path, fmt)
        assert_identical(segone.build_profiles(path), reference("int64", ts_type))


def test_file_directories_csv_gz_tsv_and_sniffing(tmp_path):
    ref = reference("int64", "timestamp_us")
    halves = (DATA.slice(0, 150), DATA.slice(150))
    (tmp_path / "csvdir" / "sub").mkdir(parents=True)
    pacsv.write_csv(halves[0], tmp_path / "csvdir" / "a.csv")
    with gzip.open(tmp_path / "csvdir" / "sub" / "b.csv.gz", "wb") as f:  # recursive, compressed
        pacsv.write_csv(halves[1], f)
    (tmp_path / "csvdir" / "_SUCCESS").write_text("")  # ignored like pyarrow does
    assert_identical(segone.build_profiles(tmp_path / "csvdir"), ref)
    # TSV, and files without an extension recognised by their first bytes
    pacsv.write_csv(DATA, tmp_path / "tx.tsv", pacsv.WriteOptions(delimiter="\t"))
    assert io.file_format(tmp_path / "tx.tsv") == "tsv"
    assert_identical(segone.build_profiles(tmp_path / "tx.tsv"), ref)
    (tmp_path / "sniff").mkdir()
    pq.write_table(halves[0], tmp_path / "sniff" / "part-0")
    pq.write_table(halves[1], tmp_path / "sniff" / "part-1")
    assert io.file_format(tmp_path / "sniff" / "part-0") == "parquet"
    assert_identical(segone.build_profiles(tmp_path / "sniff"), ref)
    feather.write_feather(DATA, tmp_path / "blob")
    assert io.file_format(tmp_path / "blob") == "ipc"
    with pa.ipc.new_stream(tmp_path / "tx.arrows", DATA.schema) as w:  # an IPC stream is streamed
        w.write_table(DATA)
    assert io.file_format(tmp_path / "tx.arrows") == "ipc-stream"
    assert_identical(segone.build_profiles(tmp_path / "tx.arrows"), ref)


def test_csv_directory_types_inferred_over_every_file(tmp_path):
    """pyarrow infers a CSV dataset's types from its first file; segone unifies every file's types."""
    d = tmp_path / "tx"
    d.mkdir()
    (d / "a.csv").write_text("customer_id,ts,amount\n1,2024-01-01,1\n")
    (d / "b.csv").write_text("customer_id,ts,amount\nc7,2024-01-02 10:00:00,2.5\n")
    prof = segone.build_profiles(d)
    assert prof.column("customer_id").to_pylist() == ["1", "c7"]
    assert prof.column("spend_total").to_pylist() == [1.0, 2.5]


def test_csv_column_types_can_be_given(tmp_path):
    p = tmp_path / "tx.csv"
    p.write_text("customer_id,ts,amount\n007,2024-03-18,9.5\n7,2024-03-18,1\n")
    assert segone.build_profiles(p).column("customer_id").to_pylist() == [7]  # inferred: integers
    src = io.dataset(p, column_types={"customer_id": pa.string()})
    assert segone.build_profiles(src).column("customer_id").to_pylist() == ["007", "7"]


def test_unreadable_inputs_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "mixed").mkdir()
    pacsv.write_csv(DATA, tmp_path / "mixed" / "a.csv")
    pq.write_table(DATA, tmp_path / "mixed" / "b.parquet")
    with pytest.raises(ParameterError, match=r"mixes file formats \(CSV: 1 file\(s\), e.g. .*a.csv'; Parquet: .*b.parq"):
        segone.build_profiles(tmp_path / "mixed")
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01binary")
    with pytest.raises(ParameterError, match=r"cannot tell the format of .*junk.bin.*Rename it with its extension"):
        segone.build_profiles(tmp_path / "junk.bin")
    (tmp_path / "trunc.parquet").write_bytes(b"PAR1" + b"\x00" * 20)
    with pytest.raises(ParameterError, match=r"cannot read .*trunc.parquet' as Parquet.*complete Parquet file"):
        segone.build_profiles(tmp_path / "trunc.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="holds no data files"):
        segone.build_profiles(tmp_path / "empty")
    # a value that does not fit the inferred type, past the inference block: the file is named
    d = tmp_path / "late"
    d.mkdir()
    (d / "a.csv").write_text("customer_id,ts,amount\n1,2024-01-01,1\n")
    rows = "".join(f"{i},2024-01-01,1.5\n" for i in range(120_000))
    (d / "b.csv").write_text("customer_id,ts,amount\n" + rows + "1,2024-01-01,oops\n")
    with pytest.raises(DataError, match=r"reading '.*b.csv' \(in '.*late'\) failed: .*value 'oops'.*column_types"):
        segone.build_profiles(d)
    with pytest.raises(ParameterError, match="does not exist"):
        segone.build_profiles(tmp_path / "nope.csv")


def test_timestamp_string_rule():
    """The documented rule of _ts_to_us: ISO 8601, offsets converted to UTC, no offset = UTC."""
    col = pa.array(["2024-03-18", "2024-03-18 14:05:00", "2024-03-18T14:05:00Z", "2024-03-18 14:05:00+01:00",
                    "2024-03-18T14:05:00.123456789", "2024-03-18T14:05-0200", None])  # fmt: skip
    us, aware = _ts_to_us(pc.drop_null(col), "t.ts")
    exp = [dt.datetime(2024, 3, 18), dt.datetime(2024, 3, 18, 14, 5), dt.datetime(2024, 3, 18, 14, 5),
           dt.datetime(2024, 3, 18, 13, 5), dt.datetime(2024, 3, 18, 14, 5, 0, 123456), dt.datetime(2024, 3, 18, 16, 5)]
    epoch = dt.datetime(1970, 1, 1)
    assert us.to_pylist() == [int((e - epoch) / dt.timedelta(microseconds=1)) for e in exp]
    assert aware  # the column has offsets
    assert _ts_to_us(pa.array(["2024-03-18"], pa.large_string()), "t")[1] is False
    with pytest.raises(DataError, match=r"t.ts: timestamp column has type string and 2 of its values match no accepted "
                                        r"format \(values: '18/03/2024', 'yesterday'; first rows: 1, 3\). "
                                        r"Accepted: ISO 8601.*pc.strptime"):
        _ts_to_us(pa.array(["2024-03-18", "18/03/2024", "2024-03-19", "yesterday"]), "t.ts")
    with pytest.raises(DataError, match=r"values: '2024-13-45'"):
        _ts_to_us(pa.array(["2024-03-18", "2024-13-45"]), "t.ts")
    with pytest.raises(SchemaError, match=r"timestamp column has type int64.*pa.timestamp\('s'\)"):
        _ts_to_us(pa.array([1, 2]), "t.ts")


def test_events_with_string_times_and_attributes_from_other_kinds():
    """Every input of build_profiles goes through the same boundary: events and attributes too."""
    import polars as pl
    ev = pa.table({"customer_id": DATA.column("customer_id").slice(0, 50), "ts": DATA.column("ts").slice(0, 50),
                   "event": pa.array(["visit", "cart"] * 25)})  # fmt: skip
    ids = pc.unique(DATA.column("customer_id")).sort()
    attrs = pa.table({"customer_id": ids, "region": pa.array([["n", "s"][i % 2] for i in range(len(ids))])})
    ref = segone.build_profiles(DATA, events=ev, attributes=attrs)
    ev_str = ev.set_column(1, "ts", pc.cast(ev.column("ts"), pa.string()))  # naive strings, like the reference
    got = segone.build_profiles(DATA, events=pl.from_arrow(ev_str).with_columns(pl.col("event").cast(pl.Categorical)),
                                attributes=attrs.to_pandas().set_index("region", drop=False))  # fmt: skip
    assert_identical(got, ref)


def test_normalised_types():
    schema = pa.schema([("a", pa.string_view()), ("b", pa.large_string()),
                        ("c", pa.dictionary(pa.uint32(), pa.string_view())), ("d", pa.large_list(pa.large_string())),
                        ("e", pa.timestamp("ns", tz="UTC")), ("f", pa.int32())])  # fmt: skip
    out = io.normalize_schema(schema)
    assert out.types == [pa.string(), pa.string(), pa.dictionary(pa.int32(), pa.string()), pa.list_(pa.string()),
                         pa.timestamp("ns", tz="UTC"), pa.int32()]  # fmt: skip
    same = pa.schema([("x", pa.string()), ("y", pa.dictionary(pa.int8(), pa.string()))])
    assert io.normalize_schema(same) is same


def test_read_table_accepts_every_kind_and_drops_the_pandas_index():
    df = DATA.to_pandas()
    df.index = pd.Index(np.arange(len(df)) + 5, name="row")
    assert io.read_table(df).column_names == DATA.column_names
    assert io.read_table(df, ["amount"]).column_names == ["amount"]
    assert io.read_table(DATA.to_batches()[0]).num_rows == DATA.to_batches()[0].num_rows
    with pytest.raises(ParameterError, match="expected a pyarrow Table .* got int"):
        io.read_table(42)
    with pytest.raises(ParameterError, match=r"got a single column \(Int64Array\); wrap it in a table"):
        io.read_table(pa.array([1, 2]))
    with pytest.raises(SchemaError, match=r"required column\(s\) 'nope' not found"):
        io.read_table(df, ["nope"])
    mixed = pd.DataFrame({"customer_id": [1, "a"], "x": [1.0, 2.0]})
    with pytest.raises(SchemaError, match="a pandas column cannot be read as one Arrow type"):
        io.read_table(mixed)


@pytest.mark.parametrize("kind", ["pandas_numpy", "pandas_arrow", "polars", "duckdb", "c_stream"])
def test_table_consumers_accept_every_kind(kind):
    """describe_segments, personas, rfm_scores and FeatureScorer read profiles of any kind."""
    prof = segone.build_profiles(DATA)
    labels = np.arange(prof.num_rows) % 3
    src = KINDS[kind](prof)
    assert segone.describe_segments(src, labels, 3).equals(segone.describe_segments(prof, labels, 3))
    assert segone.rfm_scores(KINDS[kind](prof)).equals(segone.rfm_scores(prof))
    sc = segone.FeatureScorer().fit(prof)
    np.testing.assert_array_equal(segone.FeatureScorer().fit(KINDS[kind](prof)).transform(prof), sc.transform(prof))
    got = segone.personas(KINDS[kind](prof), labels)
    assert got.equals(segone.personas(prof, labels))


@pytest.mark.parametrize("kind", ["pyarrow", "pandas_numpy", "polars", "duckdb", "c_stream"])
def test_segmenter_reads_tables_with_names_and_float32(kind):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    t = pa.table({"f0": X[:, 0], "f1": X[:, 1], "f2": X[:, 2]})
    seg = segone.Segmenter(3, random_state=0).fit(KINDS[kind](t))
    ref = segone.Segmenter(3, random_state=0).fit(X)
    assert list(seg.feature_names_in_) == ["f0", "f1", "f2"] and seg.n_features_in_ == 3
    assert seg.cluster_centers_.dtype == np.float32  # no upcast on the way in
    np.testing.assert_array_equal(seg.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(seg.predict(KINDS[kind](t)), ref.labels_)


def test_parse_schema_options():
    assert io.parse_schema_options(["customer_id=user", " ts = time ", "event=kind=of"]) == {
        "customer_id": "user", "ts": "time", "event": "kind=of"}  # fmt: skip
    assert io.parse_schema_options([]) == {} and io.parse_schema_options(None) == {}
    assert io.parse_schema_options(["ts=t", "ts=t"]) == {"ts": "t"}
    with pytest.raises(ParameterError, match=r"--schema 'customer_id' is not ROLE=COLUMN; write e.g. --schema customer_id="):
        io.parse_schema_options(["customer_id"])
    with pytest.raises(ParameterError, match="is not ROLE=COLUMN"):
        io.parse_schema_options(["=user"])
    with pytest.raises(ParameterError, match=r"unknown role 'customer'; roles are customer_id, ts.*Did you mean 'customer_id'"):
        io.parse_schema_options(["customer=user"])
    with pytest.raises(ParameterError, match=r"maps role 'ts' twice \('a' and 'b'\)"):
        io.parse_schema_options(["ts=a", "ts=b"])
    with pytest.raises(ParameterError, match="expected ROLE=COLUMN strings"):
        io.parse_schema_options([("ts", "a")])
    # what the CLI passes on: a schema for build_profiles / run
    tx = DATA.rename_columns(["user", "time", "amount", "category", "channel"])
    got = segone.build_profiles(tx, schema=io.parse_schema_options(["customer_id=user", "ts=time"]))
    assert_identical(got, reference("int64", "timestamp_us"))


def test_run_reads_csv_files(tmp_path):
    pacsv.write_csv(DATA, tmp_path / "tx.csv")
    res = segone.run(str(tmp_path / "tx.csv"), tmp_path / "out", 3, random_state=0)
    assert res.summary["customers"] == len(pc.unique(DATA.column("customer_id")))
    assert os.path.exists(tmp_path / "out" / "segments.parquet")


def test_a_column_with_no_timestamp_at_all_is_a_schema_error_too():
    with pytest.raises(DataError) as info:
        _ts_to_us(pa.array(["a", "b", None]), "t.ts")
    assert isinstance(info.value, SchemaError)  # not one value is a timestamp: the column is wrong
    with pytest.raises(DataError) as info:
        _ts_to_us(pa.array(["2024-01-01", "b"]), "t.ts")
    assert not isinstance(info.value, SchemaError)  # one bad value: a data error only
