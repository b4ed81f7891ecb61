"""Privacy: consent, pseudonymous ids, personal columns, minimum segment size, the run.json section."""

import base64
import doctest
import hashlib
import hmac
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segone
from segone import privacy, synth
from segone.describe import SegmentStats
from segone.errors import DataError, ParameterError, SchemaError, SegoneError
from segone.privacy import (
    ConsentRule,
    PrivacyCounts,
    PrivacyOptions,
    check_privacy,
    consent_mask,
    filter_consented,
    load_key,
    merge_segment_stats,
    merge_small_segments,
    personal_columns,
    privacy_summary,
    pseudonymise,
    suppress_counts_table,
    suppress_migration,
    suppress_segment_table,
    suppress_small_cells,
    withhold_small_segments,
)

KEY = b"test key: 0123456789abcdef"
OTHER_KEY = b"another key 0123456789abcdef"


def ref(value, key=KEY, length=32):
    """The standard library's HMAC of the documented canonical bytes."""
    data = str(value).encode() if isinstance(value, int) else value if isinstance(value, bytes) else value.encode()
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:length]


def test_docstring_examples():
    result = doctest.testmod(privacy, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 20 and result.failed == 0


# ------------------------------------------------------------------ pseudonyms
ADVERSARIAL_INTS = [0, 1, -1, 7, -12, 9, 10, 99, 100, 2**31 - 1, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63),
                    -(2**63) + 1, 10_000_000, 123456789012345678]  # fmt: skip
ADVERSARIAL_STRINGS = ["", "7", "007", " 7", "7 ", "é", "e\u0301", "😀", "日本語", "\x00", "a\x00b", "\n", "'\";",
                       "x" * 55, "x" * 56, "x" * 63, "x" * 64, "x" * 65, "x" * 119, "x" * 120, "é" * 60,
                       "y" * 1000]  # fmt: skip


@pytest.mark.parametrize("length", [16, 32, 64])
def test_pseudonyms_equal_hmac_on_adversarial_ids(length):
    got = pseudonymise(pa.array(ADVERSARIAL_INTS, pa.int64()), KEY, length=length).to_pylist()
    assert got == [ref(v, length=length) for v in ADVERSARIAL_INTS]
    got = pseudonymise(pa.array(ADVERSARIAL_STRINGS), KEY, length=length).to_pylist()
    assert got == [ref(v, length=length) for v in ADVERSARIAL_STRINGS]


def test_pseudonyms_random_ids_every_input_kind(rng):
    ints = rng.integers(-(2**62), 2**62, size=5000, dtype=np.int64)
    expect = [ref(int(v)) for v in ints]
    assert pseudonymise(pa.array(ints), KEY).to_pylist() == expect
    assert pseudonymise(ints, KEY).to_pylist() == expect  # NumPy
    assert pseudonymise(ints.tolist(), KEY).to_pylist() == expect  # Python list
    # every integer width, unsigned 64-bit beyond int64 included
    widths = ((pa.int8(), [-128, 5, 127]), (pa.int16(), [-3, 30000]), (pa.int32(), [-(2**31), 12]),
              (pa.uint8(), [0, 255]), (pa.uint32(), [2**32 - 1]), (pa.uint64(), [2**64 - 1, 2**63, 3]))
    for t, vals in widths:
        assert pseudonymise(pa.array(vals, t), KEY).to_pylist() == [ref(v) for v in vals]
    strs = ["".join(chr(c) for c in rng.integers(1, 0x2FFF, size=n)) for n in rng.integers(0, 90, size=2000)]
    strs = [s for s in strs if not any(0xD800 <= ord(c) <= 0xDFFF for c in s)]
    expect = [ref(s) for s in strs]
    for arr in (pa.array(strs), pa.array(strs, pa.large_string()), pa.array(strs).dictionary_encode()):
        assert pseudonymise(arr, KEY).to_pylist() == expect
    assert pseudonymise(pa.array([s.encode() for s in strs], pa.binary()), KEY).to_pylist() == expect
    # slices (non-zero offsets), chunked arrays and nulls
    arr = pa.array(strs[:100] + [None] * 3 + strs[100:200])
    got = pseudonymise(arr.slice(37, 120), KEY).to_pylist()
    assert got == [None if s is None else ref(s) for s in arr.slice(37, 120).to_pylist()]
    chunked = pa.chunked_array([pa.array([1, None, 3]), pa.array([], pa.int64()), pa.array([-4])])
    out = pseudonymise(chunked, KEY)
    assert isinstance(out, pa.ChunkedArray) and out.to_pylist() == [ref(1), None, ref(3), ref(-4)]
    assert pseudonymise(pa.nulls(2), KEY).to_pylist() == [None, None]


def test_huge_python_ints_and_mixed_lists_use_the_same_encoding():
    vals = [2**64, -(2**64) - 5, 10**40, "abc", 7]
    assert pseudonymise(vals, KEY).to_pylist() == [ref(v) for v in vals]


@given(st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=80)), max_size=30))
def test_pseudonyms_property(values):
    ints = [v for v in values if isinstance(v, int)]
    strs = [v for v in values if isinstance(v, str)]
    assert pseudonymise(pa.array(ints, pa.int64()), KEY).to_pylist() == [ref(v) for v in ints]
    assert pseudonymise(pa.array(strs, pa.string()), KEY).to_pylist() == [ref(v) for v in strs]


def test_same_key_same_pseudonyms_other_key_others_and_int_equals_string():
    ids = pa.array(np.arange(10_000_000, 10_000_500, dtype=np.int64))
    a, b = pseudonymise(ids, KEY), pseudonymise(ids, KEY)
    c = pseudonymise(ids, OTHER_KEY)
    assert a.equals(b)
    assert not set(a.to_pylist()) & set(c.to_pylist())
    assert len(set(a.to_pylist())) == 500 and all(re.fullmatch("[0-9a-f]{32}", p) for p in a.to_pylist())
    assert a.equals(pseudonymise(pc.cast(ids, pa.string()), KEY))  # 7 and "7" hash alike (documented)
    assert pseudonymise(["007"], KEY)[0] != pseudonymise([7], KEY)[0]
    # a key longer than SHA-256's block is hashed first, as HMAC says
    long_key = bytes(range(256)) * 2
    assert pseudonymise(pa.array([5, -5]), long_key).to_pylist() == [ref(5, long_key), ref(-5, long_key)]


def test_threads_give_the_same_pseudonyms():
    ids = pa.array(np.arange(-70_000, 140_000, 3, dtype=np.int64))
    one = pseudonymise(ids, KEY, n_threads=1)
    assert one.equals(pseudonymise(ids, KEY, n_threads=2))
    picks = [0, 1, 22_222, len(ids) - 1]
    assert [one[i].as_py() for i in picks] == [ref(ids[i].as_py()) for i in picks]


def test_pseudonymise_rejects_float_and_bool_ids_and_bad_lengths():
    for bad in (pa.array([1.5]), pa.array([True]), np.array([1.0])):
        with pytest.raises(ParameterError, match="cannot be pseudonymised"):
            pseudonymise(bad, KEY)
    with pytest.raises(ParameterError, match="even"):
        pseudonymise([1], KEY, length=33)
    with pytest.raises(ParameterError, match="length"):
        pseudonymise([1], KEY, length=8)
    with pytest.raises(ParameterError, match="at least 16"):
        pseudonymise([1], b"short")


def test_pseudonymise_column_keeps_the_name_and_records_no_key():
    t = pa.table({"customer_id": [1, 2], "segment": [0, 1]})
    out = privacy.pseudonymise_column(t, "customer_id", KEY)
    assert out.column_names == ["customer_id", "segment"]
    assert out.column("customer_id").to_pylist() == [ref(1), ref(2)]
    meta = out.schema.field("customer_id").metadata
    assert meta == {b"segone.pseudonym": b"HMAC-SHA256/128"} and KEY not in b"".join(meta.values())


# ---------------------------------------------------------------------- keys
def test_load_key_sources_and_prefixes(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGONE_ID_KEY", "env key 0123456789")
    assert load_key() == (b"env key 0123456789", "environment variable SEGONE_ID_KEY")
    f = tmp_path / "key"
    f.write_bytes(b"file key 0123456789\n")
    assert load_key(id_key_file=f) == (b"file key 0123456789", "key file")  # the file wins over the environment
    raw = os.urandom(32)
    f.write_text("hex:" + raw.hex() + "\r\n")
    assert load_key(id_key_file=f)[0] == raw
    assert load_key(id_key="base64:" + base64.b64encode(raw).decode())[0] == raw
    monkeypatch.setenv("SEGONE_ID_KEY", "hex:" + raw.hex())
    assert load_key()[0] == raw


def test_key_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGONE_ID_KEY", raising=False)
    with pytest.raises(ParameterError, match="SEGONE_ID_KEY"):
        load_key()
    monkeypatch.setenv("SEGONE_ID_KEY", "too short")
    with pytest.raises(ParameterError, match="9 bytes; at least 16") as exc:
        load_key()
    assert "too short" not in str(exc.value)  # never the key in a message
    with pytest.raises(ParameterError, match="cannot be read"):
        load_key(id_key_file=tmp_path / "missing")
    with pytest.raises(ParameterError, match="cannot be read"):
        load_key(id_key_file=tmp_path)  # a directory
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ParameterError, match="0 bytes"):
        load_key(id_key_file=tmp_path / "empty")
    with pytest.raises(ParameterError, match="not valid hex"):
        load_key(id_key="hex:zz" + "0" * 40)
    with pytest.raises(ParameterError, match="not both"):
        load_key(id_key=KEY, id_key_file=tmp_path / "empty")


# ------------------------------------------------------------------- consent
def _attrs():
    return pa.table({
        "customer_id": [1, 2, 3, 4, 5, 6],
        "ok": pa.array([True, False, None, True, True, False]),
        "purposes": pa.array(["marketing, Analytics", "", None, "analytics", " MARKETING ", "marketing"]),
        "plist": pa.array([["marketing"], [], None, ["analytics", None], ["marketing", "analytics"], ["email"]],
                          pa.list_(pa.string())),
    })  # fmt: skip


def test_consent_mask_booleans_purposes_lists_and_defaults():
    t = _attrs()
    mask, counts = consent_mask(t, "ok")
    assert mask.tolist() == [True, False, False, True, True, False]
    assert counts == {"customers": 6, "consented": 3, "refused": 2, "unknown": 1}
    assert consent_mask(t, "ok", default=True)[0].tolist() == [True, False, True, True, True, False]
    assert consent_mask(t, "purposes=marketing")[0].tolist() == [True, False, False, False, True, True]
    assert consent_mask(t, "purposes=analytics")[0].tolist() == [True, False, False, True, False, False]
    assert consent_mask(t, "plist=marketing")[0].tolist() == [True, False, False, False, True, False]
    assert consent_mask(t, "plist=marketing", default=True)[0].tolist() == [True, False, True, False, True, False]
    dict_col = t.set_column(2, "purposes", t.column("purposes").dictionary_encode())
    assert consent_mask(dict_col, "purposes=marketing")[0].tolist() == [True, False, False, False, True, True]
    # every rule must hold; a refusal wins over an unknown
    mask, counts = consent_mask(t, ["ok", "purposes=marketing"])
    assert mask.tolist() == [True, False, False, False, True, False]
    assert counts == {"customers": 6, "consented": 2, "refused": 3, "unknown": 1}
    assert consent_mask(t, [])[0].all()


def test_consent_of_customers_without_an_attributes_row():
    tx = pa.table({"customer_id": [1, 2, 3, 9], "ts": pa.array([1, 2, 3, 4], pa.timestamp("us", tz="UTC")),
                   "amount": [1.0, 2.0, 3.0, 4.0]})  # fmt: skip
    prof = segone.build_profiles(tx, attributes=_attrs().select(["customer_id", "ok", "purposes"]))
    ids = prof.column("customer_id").to_pylist()
    assert 9 in ids and prof.column("ok").to_pylist()[ids.index(9)] is None
    for default in (False, True):
        mask, counts = consent_mask(prof, ["ok"], default=default)
        got = dict(zip(ids, mask.tolist()))
        assert got[9] is default and got[3] is default  # no row, and a null value: the default
        assert got[1] is True and got[2] is False
        assert counts["unknown"] == 2 and counts["customers"] == 7  # 3 (null) and 9 (no row); 4-6 come from the CRM
    # an attribute clashing with a profile column is found under its crm_ name
    clash = pa.table({"customer_id": [1, 2], "orders": [True, False]})
    prof = segone.build_profiles(tx, attributes=clash)
    assert consent_mask(prof, "orders")[0].tolist() == [True, False, False, False]


def test_consent_errors():
    t = _attrs()
    with pytest.raises(SchemaError, match="not found"):
        consent_mask(t, "nope")
    with pytest.raises(SchemaError, match="name the purpose"):
        consent_mask(t, "purposes")
    with pytest.raises(SchemaError, match="without '=marketing'"):
        consent_mask(t, "ok=marketing")
    with pytest.raises(SchemaError, match="holds no purposes"):
        consent_mask(t, "customer_id=marketing")
    bad = t.set_column(2, "purposes", pa.array(["marketing", "yes", None, "", "", ""]))
    with pytest.raises(DataError, match="'yes'.*not known"):
        consent_mask(bad, "purposes=marketing")
    assert consent_mask(bad, "purposes=marketing", purposes=privacy.DEFAULT_PURPOSES + ("yes",))[0][0]
    with pytest.raises(ParameterError, match="unknown purpose"):
        consent_mask(t, "purposes=marketting")
    for spec in ("", "=x", "col=", "col=a,b", 5):
        with pytest.raises(ParameterError):
            ConsentRule.parse(spec)
    with pytest.raises(ParameterError, match="twice"):
        privacy.parse_consent(["ok", "ok"])
    with pytest.raises(ParameterError, match="same order"):
        filter_consented(t, np.ones(2, bool))


@given(st.lists(st.sampled_from([True, False, None]), max_size=40), st.integers(0, 40), st.booleans())
def test_privacy_counts_merge_equals_the_whole(values, cut, default):
    t = pa.table({"ok": pa.array(values, pa.bool_())})
    cut = min(cut, t.num_rows)
    whole = PrivacyCounts.of(t, rules="ok", default=default, scope="processing")
    parts = PrivacyCounts.of(t.slice(0, cut), rules="ok", default=default, scope="processing").merge(
        PrivacyCounts.of(t.slice(cut), rules="ok", default=default, scope="processing"))
    assert parts == whole and PrivacyCounts.from_dict(json.loads(json.dumps(whole.to_dict()))) == whole
    c = whole.finish()
    assert c["consented"] + c["refused"] + c["unknown"] == c["customers"] == len(values)
    assert c["excluded"] == c["dropped"] == c["refused"] + (0 if default else c["unknown"])


def test_processing_and_export_pieces():
    t = _attrs().append_column("email", pa.array(["a@x"] * 6)).append_column("spend_total", pa.array([1.0] * 6))
    plan = PrivacyOptions(consent="ok", consent_scope="processing", hash_ids=True, id_key=KEY).validate(t.schema)
    assert plan.personal_columns == ("email",)
    prof, counts = privacy.processing_piece(t, plan=plan)
    assert prof.column("customer_id").to_pylist() == [1, 4, 5] and "email" not in prof.column_names
    assert counts.finish()["dropped"] == 3
    plan = PrivacyOptions(consent="ok", hash_ids=True, id_key=KEY).validate(t.schema)
    prof, counts, ids = privacy.processing_piece(t, plan=plan, with_ids=True)
    assert prof.num_rows == 6 and counts.finish()["dropped"] == 0 and counts.finish()["excluded"] == 3
    assert ids.to_pylist() == [ref(2), ref(3), ref(6)]
    asg = pa.table({"customer_id": t.column("customer_id"), "segment": pa.array([0, 1, 2, 0, 1, 2], pa.int32())})
    out = privacy.export_piece(asg, prof, plan=plan, mapping=np.array([0, 1, -1]))
    assert out.column("customer_id").to_pylist() == [ref(1), ref(4), ref(5)]
    assert out.column("segment").to_pylist() == [0, 0, 1]
    withheld = privacy.export_piece(asg, prof, plan=plan, mapping=np.array([0, -1, 1]))
    assert withheld.column("segment").to_pylist() == [0, 0, None]
    with pytest.raises(ParameterError, match="same rows"):
        privacy.export_piece(asg.slice(1), prof, plan=plan)
    moves = pa.table({"customer_id": [ref(1), ref(2), ref(7)], "previous_segment": [0, 1, 2],
                      "segment": pa.array([0, 1, None], pa.int32())})  # fmt: skip
    assert privacy.filter_moves(moves, ids, plan=plan).column("customer_id").to_pylist() == [ref(1)]


# --------------------------------------------------------- personal columns
def test_personal_columns_detection():
    names = ["customer_id", "email", "E_Mail", "emailAddress", "phone", "mobile_number", "tel", "name", "firstName",
             "last_name", "surname", "full_name", "street", "address_line_1", "zip", "postcode", "birth_date", "dob",
             "DateOfBirth", "birthday", "ssn", "passport_no", "ip_address", "region", "age_band", "signup_ts",
             "consent_marketing", "consent_purposes", "loyalty_tier", "spend_total", "segment"]  # fmt: skip
    found = personal_columns(names)
    assert found == names[1:23]
    assert not set(found) & {"region", "age_band", "signup_ts", "consent_marketing", "consent_purposes", "segment"}
    schema = pa.schema([("email_opt_in", pa.bool_()), ("email", pa.string()), ("tier", pa.string())])
    assert personal_columns(schema, extra=["tier"]) == ["email", "tier"]  # a boolean flag holds no address
    t = pa.table({"email": ["a"], "crm_name": ["b"], "x": [1]})
    assert privacy.drop_personal_columns(t, ("email", "name")).column_names == ["x"]


# ---------------------------------------------------------- small segments
@given(st.lists(st.integers(0, 60), min_size=1, max_size=12), st.integers(1, 80), st.integers(0, 2**32 - 1))
def test_merge_small_segments_property(sizes, k, seed):
    sizes = np.array(sizes)
    rng = np.random.default_rng(seed)
    cent = rng.normal(size=(sizes.size, 3))
    if k > sizes.sum():
        with pytest.raises(ParameterError, match="larger than"):
            merge_small_segments(sizes, cent, k)
        return
    mapping = merge_small_segments(sizes, cent, k)
    assert mapping.shape == sizes.shape and mapping.min() == 0
    m = mapping.max() + 1
    assert set(mapping.tolist()) == set(range(m))  # every old segment maps, onto 0..m-1
    new = np.bincount(mapping, weights=sizes, minlength=m)
    assert (new >= k).all() and new.sum() == sizes.sum()
    big = np.flatnonzero(sizes >= k)
    assert np.all(np.diff(mapping[big]) > 0)  # segments already large enough are never merged together ...
    if big.size:  # ... unless one of them absorbed a small one: every new segment holds one large survivor at most
        assert np.unique(mapping[big]).size == big.size
    held = withhold_small_segments(sizes, k)
    assert ((held >= 0) == (sizes >= k)).all() and set(held[held >= 0].tolist()) == set(range((sizes >= k).sum()))


def test_merge_small_segments_goes_to_the_nearest_and_repeats():
    # 3 is small and nearest to 2; 1 (2 customers) goes to 0; the merged 2+3 is still small and goes to 0
    sizes = [100, 2, 5, 4]
    cent = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0]])
    assert merge_small_segments(sizes, cent, 10).tolist() == [0, 0, 0, 0]
    assert merge_small_segments(sizes, cent, 5).tolist() == [0, 0, 1, 1]
    mapping, report = privacy.small_segment_mapping(sizes, cent, 5)
    assert report["merged"] == {"1": 0, "3": 2} and report["survivors"] == [0, 2]
    mapping, report = privacy.small_segment_mapping(sizes, cent, 5, "withhold")
    assert mapping.tolist() == [0, -1, 1, -1] and report["customers_withheld"] == 6
    assert privacy.exported_ids(mapping, report["survivors"], [10, 11, 12, 13]).tolist() == [10, -1, 12, -1]
    with pytest.raises(ParameterError, match="small_segments"):
        privacy.small_segment_mapping(sizes, cent, 5, "drop")


def test_merge_segment_stats_equals_stats_of_the_merged_labels(small_synth):
    prof = segone.build_profiles(small_synth.transactions, attributes=small_synth.customers)
    labels = small_synth.truth.column("segment").to_numpy()
    k = int(labels.max()) + 1
    stats = SegmentStats.of(prof, labels, k)
    mapping = np.array([0, 1, 1, 2, 0, 3])[:k]
    merged = merge_segment_stats(stats, mapping)
    direct = SegmentStats.of(prof, mapping[labels], int(mapping.max()) + 1)
    assert merged.size.tolist() == direct.size.tolist() and merged.n == direct.n
    np.testing.assert_allclose(merged.sums, direct.sums, rtol=1e-12)
    assert (merged.counts == direct.counts).all()
    assert merged.cat_counts == {c: [dict(d) for d in v] for c, v in direct.cat_counts.items()}
    a, b = merged.finish(), direct.finish()
    assert a.column_names == b.column_names
    for name in ("size", "share", "median_orders", "label"):
        assert a.column(name).to_pylist() == pytest.approx(b.column(name).to_pylist()) if name != "label" else \
            a.column(name).equals(b.column(name))  # fmt: skip
    # withholding: those customers count in n only
    held = merge_segment_stats(stats, np.array([0, -1, 1, 2, 3, 4])[:k])
    assert held.n == stats.n and held.size.sum() == stats.size.sum() - stats.size[1]
    assert merge_segment_stats(stats, np.arange(k)) is stats


# --------------------------------------------------------------- suppression
def test_suppress_segment_table_mix_cells_and_small_rows():
    seg = pa.table({"segment": pa.array([0, 1, 2], pa.int32()), "size": [200, 60, 4], "mean_x": [1.0, 2.0, 3.0],
                    "region=north": [0.5, 0.95, 0.5], "region=south": [0.48, 0.05, 0.5],
                    "region=(null)": [0.02, 0.0, 0.0], "tier=a": [1.0, 1.0, 1.0],
                    "label": ["a", "b", "c"]})  # fmt: skip
    out, rep = suppress_segment_table(seg, 10, categorical=["region", "tier"])
    rows = out.to_pylist()
    # segment 0: north 100, south 96, null 4 -> null suppressed, and south (the smallest other) with it
    assert rows[0]["region=(null)"] is None and rows[0]["region=south"] is None and rows[0]["region=north"] == 0.5
    # segment 1: south 3 -> suppressed; north is the only other positive cell -> suppressed too; the 0 cell stays
    assert rows[1]["region=south"] is None and rows[1]["region=north"] is None and rows[1]["region=(null)"] == 0.0
    # segment 2 has 4 customers: every cell but its id
    assert rows[2]["segment"] == 2 and all(rows[2][c] is None for c in ("size", "mean_x", "label", "tier=a"))
    assert [r["suppressed"] for r in rows] == [True, True, True] and rep["small_segments"] == [2]
    assert rep["primary"] == 5 and rep["secondary"] == 2  # 2 + the 3 small cells of segment 2


def test_suppress_migration_and_counts():
    mig = pa.table({"from_segment": pa.array([0, 0, 0, 1, 1, None], pa.int32()),
                    "to_segment": pa.array([0, 1, None, 0, 1, 1], pa.int32()),
                    "customers": [500, 3, 40, 30, 400, 25], "share": [0.9, 0.01, 0.09, 0.07, 0.93, 1.0],
                    "spend": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})  # fmt: skip
    out, rep = suppress_migration(mig, 10)
    c = out.column("customers").to_pylist()
    assert c[1] is None and rep["primary"] == 1
    # from 0: {500, 3*, 40} -> 40 goes too; to 1: {3*, 400, 25} -> 25 goes too; then from None: {25*} alone
    assert c == [500, None, None, 30, 400, None]
    assert out.column("spend").to_pylist()[1] is None and out.column("share").to_pylist()[2] is None
    assert out.column("suppressed").to_pylist() == [False, True, True, False, False, True]
    for row in out.to_pylist():
        assert row["customers"] is None or row["customers"] == 0 or row["customers"] >= 10
    assert privacy.suppress_counts({"new": 9, "gone": 10, "stayed": 0}, 10) == {"new": None, "gone": 10, "stayed": 0}


def test_suppress_small_cells_generic():
    t = pa.table({"n": [5, 50, 0], "share": [0.5, 0.02, 0.9], "total": [100, 100, 100]})
    out, rep = suppress_small_cells(t, 10, count_columns=["n"], share_columns={"share": "total"})
    assert out.column("n").to_pylist() == [None, 50, 0] and out.column("share").to_pylist() == [0.5, None, 0.9]
    assert rep == {"k": 10, "cells": 2, "primary": 2, "secondary": 0, "rows": 2}
    grid = pa.table({"r_score": [1, 1, 2, 2], "f_score": [1, 2, 1, 2], "customers": [9, 30, 30, 30]})
    out, rep = suppress_counts_table(grid, 10, keys=("r_score", "f_score"))
    assert out.column("customers").null_count == 4  # a 2 x 2 grid with published margins: all or nothing
    with pytest.raises(ParameterError, match="no column"):
        suppress_small_cells(t, 10, count_columns=["missing"])


# -------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, error, match", [
    ({"consent": "nope"}, SchemaError, "consent column 'nope' not found"),
    ({"consent": "consent_purposes"}, SchemaError, "name the purpose"),
    ({"consent": "consent_marketing=marketing"}, SchemaError, "not boolean|holds no purposes|without"),
    ({"consent": "consent_purposes=marketting"}, ParameterError, "not a known purpose"),
    ({"consent_scope": "everywhere"}, ParameterError, "consent_scope"),
    ({"consent_default": "no"}, ParameterError, "consent_default"),
    ({"hash_ids": True}, ParameterError, "needs a secret key"),
    ({"hash_ids": True, "id_key": "short"}, ParameterError, "at least 16"),
    ({"hash_ids": True, "id_key_file": "/nonexistent/key"}, ParameterError, "cannot be read"),
    ({"id_key_file": "/some/key"}, ParameterError, "hash_ids is False"),
    ({"min_segment_size": 0}, ParameterError, "min_segment_size"),
    ({"min_segment_size": 2.5}, ParameterError, "min_segment_size"),
    ({"min_segment_size": 101}, ParameterError, "larger than the 100"),
    ({"small_segments": "drop"}, ParameterError, "small_segments"),
    ({"keep_columns": ["nope"]}, SchemaError, "keep_columns"),
    ({"personal": ["nope"]}, SchemaError, "personal"),
    ({"consent": "consent_marketing", "personal": ["consent_marketing"]}, ParameterError, "consent column"),
    ({"personal": ["customer_id"]}, ParameterError, "the id"),
])  # fmt: skip
def test_every_validation_error(kwargs, error, match, monkeypatch):
    monkeypatch.delenv("SEGONE_ID_KEY", raising=False)
    schema = synth.generate(20, seed=0, personal_data=True).customers.schema
    with pytest.raises(error, match=match) as exc:
        PrivacyOptions(**kwargs).validate(schema, n_customers=100)
    assert isinstance(exc.value, SegoneError)


def test_check_privacy_reads_only_metadata_and_consent_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGONE_ID_KEY", KEY.decode())
    d = synth.generate(300, seed=1, tx_per_customer=2, personal_data=True)
    path = tmp_path / "customers.parquet"
    pq.write_table(d.customers, path)
    plan = check_privacy(attributes=str(path), inputs=(d.transactions, None, str(path)), consent=["consent_marketing",
                         "consent_purposes=analytics"], hash_ids=True, min_segment_size=20)  # fmt: skip
    assert plan.hash_ids and plan.key == KEY and KEY.decode() not in repr(plan) and "test key" not in repr(plan)
    assert set(plan.personal_columns) == {"name", "email", "phone", "birth_date"}
    bad = d.customers.set_column(d.customers.column_names.index("consent_purposes"), "consent_purposes",
                                 pa.array(["marketing,spam"] * 300))  # fmt: skip
    pq.write_table(bad, path)
    with pytest.raises(DataError, match="'spam'"):
        check_privacy(attributes=str(path), consent="consent_purposes=marketing")
    rows = d.transactions.num_rows + 300
    with pytest.raises(ParameterError, match=f"larger than the {rows}"):
        check_privacy(attributes=str(path), inputs=(d.transactions, None, str(path)), min_segment_size=rows + 1)
    with pytest.raises(ParameterError, match="needs the customer attributes"):
        check_privacy(consent="consent_marketing")
    plan = check_privacy(attributes=d.customers, min_segment_size=5)
    with pytest.raises(ParameterError, match="larger than the 4"):
        plan.check_customers(4)


# --------------------------------------------------------------- run.json
def test_privacy_summary_never_holds_the_key(tmp_path, monkeypatch):
    raw = os.urandom(24)
    monkeypatch.setenv("SEGONE_ID_KEY", "hex:" + raw.hex())
    schema = synth.generate(20, seed=0, personal_data=True).customers.schema
    plan = PrivacyOptions(consent=["consent_marketing"], hash_ids=True, min_segment_size=5).validate(schema)
    counts = PrivacyCounts(customers=10, consented=6, refused=3, unknown=1, excluded=4)
    _, seg = privacy.small_segment_mapping([10, 2, 8], np.array([[0.0], [2.0], [2.5]]), 5)
    out = privacy_summary(plan, counts, segments=seg, suppressed={"segments": {"cells": 3}})
    text = json.dumps(out)
    for secret in (raw, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(), hashlib.sha256(raw).hexdigest(),
                   hashlib.sha256(raw).hexdigest()[:16], hmac.new(raw, b"", hashlib.sha256).hexdigest()[:16]):
        assert (secret if isinstance(secret, str) else secret.decode("latin-1")) not in text
    assert out["consent"]["excluded_from_outputs"] == 4 and out["consent"]["default"] is False
    assert out["pseudonymous_ids"]["algorithm"] == "HMAC-SHA256" and "key" not in out["pseudonymous_ids"]
    assert out["personal_columns_removed"] == ["name", "email", "phone", "birth_date"]
    assert out["small_segments"]["merged"] == {"1": 2} and out["cells_suppressed"] == {"segments": 3}
    assert "key" not in json.dumps(plan.to_dict()).replace("keep", "")


# ------------------------------------------------------------------- synth
def test_synth_personal_data_columns():
    plain = synth.generate(3000, seed=4, tx_per_customer=3, personal_data=False)
    d = synth.generate(3000, seed=4, tx_per_customer=3, personal_data=True)
    assert d.customers.column_names == plain.customers.column_names + list(synth.PERSONAL_COLUMNS)
    assert d.customers.select(plain.customers.column_names).equals(plain.customers)
    assert d.transactions.equals(plain.transactions) and d.events.equals(plain.events) and d.truth.equals(plain.truth)
    rows = d.customers.to_pylist()
    for r in rows[:500]:
        assert re.fullmatch(r"[a-z]+\.[a-z]+\d{1,3}@example\.(com|org|net)", r["email"]), r["email"]
        assert re.fullmatch(r"\+1-\d{3}-555-01\d\d", r["phone"]) and " " in r["name"]
        lo, hi = [(18, 24), (25, 34), (35, 44), (45, 54), (55, 64), (65, 90)][synth.AGE_BANDS.index(r["age_band"])]
        age = (synth.DEFAULT_END.date() - r["birth_date"]).days / 365.2425
        assert lo - 0.01 <= age <= hi + 1.01
    purposes = d.customers.column("consent_purposes")
    assert 0 < purposes.null_count < 0.06 * 3000
    for r in rows:
        if r["consent_purposes"] is not None:
            assert ("marketing" in r["consent_purposes"].split(",")) == r["consent_marketing"]
    assert set(personal_columns(d.customers.schema)) == {"name", "email", "phone", "birth_date"}
    mask, counts = consent_mask(d.customers, "consent_purposes=analytics")
    assert counts["unknown"] == purposes.null_count and 0.7 < mask.mean() < 0.9
    # a customer keeps its personal data in every period
    p0, p1 = synth.generate_periods(2000, periods=2, switch_share=0.3, seed=4, tx_per_customer=3, personal_data=True)
    a = p0.customers.select(["customer_id", "name", "email", "phone"]).sort_by("customer_id")
    b = p1.customers.select(["customer_id", "name", "email", "phone"]).sort_by("customer_id")
    assert a.equals(b)


# ------------------------------------------------------------------- end to end
PER_CUSTOMER = ("assignments", "personas", "moves")


def _files(out):
    for root, _, names in os.walk(out):
        for name in names:
            yield os.path.join(root, name)


def _table_of(path):
    """The Parquet table of ``path`` (a file or a part of a directory dataset), None for other files."""
    if not path.endswith(".parquet") and ".parquet" + os.sep not in path:
        return None
    return pq.read_table(path)


def _strings_of(col):
    t = col.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _strings_of(pc.list_flatten(col))
    if pa.types.is_struct(t):
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        return [s for i in range(t.num_fields) for s in _strings_of(arr.field(i))]
    if pa.types.is_dictionary(t):
        return _strings_of(pc.cast(col, t.value_type))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return [s for s in col.to_pylist() if s is not None]
    return []


def _raw_id_hits(data, ids):
    """Raw ids found in the bytes ``data``: as decimal text (a run of digits bounded by non-hex characters,
    so that digits inside hex pseudonyms do not count), as UTF-8 text, or as little/big-endian int64 at any
    offset."""
    hits = set()
    id_set = {int(i) for i in ids}
    texts = {str(i).encode() for i in ids}
    for m in re.finditer(rb"(?<![0-9a-fA-F])[0-9]+(?![0-9a-fA-F])", data):
        if m.group() in texts:
            hits.add(int(m.group()))
    arr = np.frombuffer(data, dtype=np.uint8)
    want = np.array(sorted(id_set), dtype=np.int64)
    for off in range(8):
        n = (arr.size - off) // 8
        if n <= 0:
            continue
        chunk = arr[off : off + 8 * n]
        for dt in ("<i8", ">i8"):
            v = chunk.view(dt)
            hits.update(int(x) for x in v[np.isin(v, want)])
    return hits


def _check_private_outputs(out, customers, *, consent_column, k, key):
    """Every output of a private run: no raw id anywhere, no customer without consent per customer, no small cell."""
    ids = customers.column("customer_id").to_numpy()
    consented = set(customers.filter(pc.fill_null(customers.column(consent_column), False))
                    .column("customer_id").to_pylist())  # fmt: skip
    allowed = {ref(int(i), key) for i in consented}
    refused = {ref(int(i), key) for i in ids} - allowed
    raw_strings = {str(int(i)) for i in ids}
    seen_per_customer = 0
    for path in _files(out):
        with open(path, "rb") as f:
            data = f.read()
        assert not _raw_id_hits(data, ids), f"raw ids in {path}"
        assert key not in data and key.hex().encode() not in data, f"the key in {path}"
        table = _table_of(path)
        if table is None:
            continue
        rel = os.path.relpath(path, out)
        for name in table.column_names:
            col = table.column(name)
            if pa.types.is_integer(col.type):
                assert not set(pc.unique(col).to_pylist()) & {int(i) for i in ids}, f"raw ids in {rel}:{name}"
            strs = set(_strings_of(col))
            assert not strs & raw_strings, f"raw ids in {rel}:{name}"
            assert not strs & refused, f"a customer without consent in {rel}:{name}"
        if rel.split(os.sep)[0].split(".")[0] in PER_CUSTOMER:
            got = set(table.column("customer_id").to_pylist())
            assert got <= allowed, f"{len(got - allowed)} customers without consent in {rel}"
            seen_per_customer += len(got)
        elif rel.startswith("segments"):
            for row in table.to_pylist():
                if row["size"] is not None:
                    assert row["size"] >= k, f"segment {row['segment']} of {row['size']} customers"
                    for c, v in row.items():
                        if "=" in c and v is not None:
                            n = round(v * row["size"])
                            assert n == 0 or n >= k, f"segments.{c} implies {n} customers"
        else:
            for c in ("customers", "size", "count"):
                if c in table.column_names:
                    vals = [v for v in table.column(c).to_pylist() if v is not None]
                    assert all(v == 0 or v >= k for v in vals), f"{rel}.{c} holds a cell below {k}"
    assert seen_per_customer > 0
    return json.loads(open(os.path.join(out, "run.json")).read())


def test_output_checker_catches_raw_ids_and_passes_pseudonyms(tmp_path):
    d = synth.generate(600, seed=2, personal_data=True)
    segone.run(d.transactions, tmp_path / "plain", 3, events=d.events, attributes=d.customers)
    with pytest.raises(AssertionError, match="raw ids"):
        _check_private_outputs(tmp_path / "plain", d.customers, consent_column="consent_marketing", k=1, key=KEY)
    # the same assignments made private by the per-piece functions pass
    plan = PrivacyOptions(consent="consent_marketing", hash_ids=True, id_key=KEY).validate(d.customers.schema)
    prof = segone.build_profiles(d.transactions, attributes=d.customers)
    asg = pq.read_table(tmp_path / "plain" / "assignments.parquet")
    os.makedirs(tmp_path / "private")
    pq.write_table(privacy.export_piece(asg, prof, plan=plan), tmp_path / "private" / "assignments.parquet")
    (tmp_path / "private" / "run.json").write_text(json.dumps({"privacy": privacy_summary(plan)}))
    _check_private_outputs(tmp_path / "private", d.customers, consent_column="consent_marketing", k=1, key=KEY)
    # ... and a customer without consent is caught
    leak = privacy.pseudonymise_column(asg, "customer_id", KEY)
    pq.write_table(leak, tmp_path / "private" / "assignments.parquet")
    with pytest.raises(AssertionError, match="without consent"):
        _check_private_outputs(tmp_path / "private", d.customers, consent_column="consent_marketing", k=1, key=KEY)


def test_end_to_end_private_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGONE_ID_KEY", KEY.decode())
    d = synth.generate(3000, seed=11, personal_data=True)
    out = tmp_path / "out"
    res = segone.run(d.transactions, out, 4, events=d.events, attributes=d.customers, consent=["consent_marketing"],
                     hash_ids=True, min_segment_size=50)  # fmt: skip
    info = _check_private_outputs(out, d.customers, consent_column="consent_marketing", k=50, key=KEY)
    p = info["privacy"]
    n_yes = int(pc.sum(d.customers.column("consent_marketing")).as_py())
    assert p["consent"]["consented"] == n_yes and p["consent"]["excluded_from_outputs"] == 3000 - n_yes
    assert p["pseudonymous_ids"]["enabled"] and set(p["personal_columns_removed"]) >= {"email", "phone", "name"}
    assert res.assignments.num_rows == n_yes
    # the same key gives the same pseudonyms: a second run is tracked against the first
    out2 = tmp_path / "out2"
    segone.run(d.transactions, out2, 4, events=d.events, attributes=d.customers, consent=["consent_marketing"],
               hash_ids=True, min_segment_size=50, previous=out)  # fmt: skip
    info2 = _check_private_outputs(out2, d.customers, consent_column="consent_marketing", k=50, key=KEY)
    assert info2["tracking"]["stayed_share"] > 0.95
    a = pq.read_table(out / "assignments.parquet").sort_by("customer_id")
    b = pq.read_table(out2 / "assignments.parquet").sort_by("customer_id")
    assert a.column("customer_id").equals(b.column("customer_id"))


def test_end_to_end_processing_scope_purposes_and_small_segments(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGONE_ID_KEY", KEY.decode())
    d = synth.generate(2000, seed=5, personal_data=True)
    yes = consent_mask(d.customers, "consent_purposes=analytics")[0]
    cust = d.customers.append_column("analytics_ok", pa.array(yes))  # the expected consent, as a column to check
    for how in ("merge", "withhold"):
        out = tmp_path / how
        res = segone.run(d.transactions, out, 12, events=d.events, attributes=d.customers,
                         consent=["consent_purposes=analytics"], consent_scope="processing", hash_ids=True,
                         min_segment_size=150, small_segments=how)  # fmt: skip
        info = _check_private_outputs(out, cust, consent_column="analytics_ok", k=150, key=KEY)
        p = info["privacy"]
        assert p["consent"]["dropped_before_processing"] == 2000 - int(yes.sum())
        small = p["small_segments"]
        assert small["method"] == how and (small["merged"] or small["withheld"])
        if how == "withhold":
            assert res.assignments.column("segment").null_count == small["customers_withheld"] > 0
        sizes = pq.read_table(out / "segments.parquet").column("size").to_pylist()
        assert min(sizes) >= 150 and len(sizes) == small["segments_after"]
