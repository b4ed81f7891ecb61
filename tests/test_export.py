"""One export stage: apply, track, the report and persona honour the privacy options of the model they work from.

The end-to-end test reads every file of every output directory as bytes (Parquet, JSON, NumPy, HTML) and
decodes every Parquet column, looking for any raw customer id of the input and for any id or pseudonym of a
customer without consent.  The other tests check that an apply that would widen the model's options is
refused, in Python and on the command line, and that models without a privacy record keep working.
"""

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
from click.testing import CliRunner

import segone
from segone import outputs, synth
from segone.cli import main
from segone.model import apply_model, load_model, save_model
from segone.privacy import PrivacyOptions, WiderPrivacyError
from segone.report import write_report
from segone.track import compare_outputs

KEY = b"export test key 0123456789abcdef"
OTHER_KEY = b"another export key 0123456789abcdef"
K = 60  # min_segment_size of the private runs


def pseudonym(i, key=KEY):
    """The documented pseudonym of an integer id, with the standard library."""
    return hmac.new(key, str(int(i)).encode(), hashlib.sha256).hexdigest()[:32]


def _remap(d):
    """The synthetic data with 11-digit customer ids that no library or number in an output holds by chance."""
    def ids(t):
        new = pc.add(pc.multiply(t.column("customer_id"), 7919), 123_456_789)
        return t.set_column(t.column_names.index("customer_id"), "customer_id", new)

    return ids(d.transactions), ids(d.events), ids(d.customers)


def _write_inputs(d, where):
    os.makedirs(where)
    paths = {}
    for name, t in zip(("transactions", "events", "customers"), _remap(d)):
        paths[name] = os.path.join(where, f"{name}.parquet")
        pq.write_table(t, paths[name])
    return paths


def _people(customers_path):
    """(every raw id, the pseudonyms of the consenting customers, the pseudonyms of the others)."""
    c = pq.read_table(customers_path, columns=["customer_id", "consent_marketing"])
    ids = c.column("customer_id").to_numpy()
    yes = pc.fill_null(c.column("consent_marketing"), False).to_numpy(zero_copy_only=False)
    return ids, {pseudonym(i) for i in ids[yes]}, {pseudonym(i) for i in ids[~yes]}


# --------------------------------------------------------------------------------------- the byte checker
def _values(col):
    """Every leaf value of a Parquet column (lists and structs flattened, dictionaries decoded)."""
    t = col.type
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], t)
    if pa.types.is_dictionary(t):
        return _values(col.dictionary_decode())
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _values(col.flatten())
    if pa.types.is_struct(t):
        return [v for i in range(t.num_fields) for v in _values(col.field(i))]
    return [v for v in col.to_pylist() if v is not None]


def _files(*dirs):
    for d in dirs:
        for root, _, names in os.walk(d):
            for name in names:
                yield os.path.join(root, name)


def _leaks(path, raw_ids, refused):
    """What ``path`` reveals, read as bytes and, for Parquet, decoded: raw ids, refused pseudonyms, the key."""
    with open(path, "rb") as f:
        data = f.read()
    found = []
    texts = {str(int(i)).encode() for i in raw_ids}
    # decimal text (digits inside hex pseudonyms or a number's fraction do not count)
    for m in re.finditer(rb"(?<![0-9a-fA-F.])[0-9]+(?![0-9a-fA-F.])", data):
        if m.group() in texts:
            found.append(f"raw id {m.group().decode()} as text")
    arr = np.frombuffer(data, dtype=np.uint8)
    want = np.sort(np.asarray(raw_ids, dtype=np.int64))
    for off in range(8):  # plain-encoded int64 at any offset
        n = (arr.size - off) // 8
        if n > 0:
            v = arr[off : off + 8 * n].view("<i8")
            found += [f"raw id {x} as int64" for x in v[np.isin(v, want)][:3]]
    for p in refused:
        if p.encode() in data:
            found.append(f"pseudonym {p} of a customer without consent")
    if KEY in data or KEY.hex().encode() in data:
        found.append("the key")
    if path.endswith(".parquet"):
        table = pq.read_table(path)
        raw_set, raw_text = {int(i) for i in raw_ids}, {str(int(i)) for i in raw_ids}
        for name in table.column_names:
            vals = set(_values(table.column(name)))
            bad = {v for v in vals if (isinstance(v, int) and v in raw_set) or (isinstance(v, str) and v in raw_text)}
            found += [f"raw id {v} in column {name}" for v in list(bad)[:3]]
            found += [f"pseudonym {v} without consent in column {name}" for v in list(vals & refused)[:3]]
    return found


def _check(dirs, raw_ids, refused):
    checked = 0
    for path in _files(*dirs):
        assert not _leaks(path, raw_ids, refused), f"{path}: {_leaks(path, raw_ids, refused)[:5]}"
        checked += 1
    return checked


def test_the_checker_catches_raw_ids_and_customers_without_consent(tmp_path):
    """The checker is not blind: raw ids (text, Parquet, compressed) and a refused pseudonym are found."""
    raw = np.array([79_314_567_890, 79_314_575_809], dtype=np.int64)
    refused = {pseudonym(raw[1])}
    pq.write_table(pa.table({"customer_id": raw}), tmp_path / "a.parquet", compression="zstd")
    pq.write_table(pa.table({"customer_id": [str(raw[0])]}), tmp_path / "b.parquet", compression="snappy")
    (tmp_path / "c.json").write_text(json.dumps({"who": [pseudonym(raw[1])]}))
    (tmp_path / "d.html").write_text(f"<td>{raw[0]}</td>")
    for name in ("a.parquet", "b.parquet", "c.json", "d.html"):
        assert _leaks(str(tmp_path / name), raw, refused), name
    (tmp_path / "e.json").write_text(json.dumps({"who": [pseudonym(raw[0])], "inertia": 0.79314567890}))
    assert not _leaks(str(tmp_path / "e.json"), raw, refused)


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def private(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    key = base / "key"
    key.write_bytes(KEY + b"\n")
    p1 = _write_inputs(synth.generate(2000, seed=11, personal_data=True), str(base / "period-1"))
    p2 = _write_inputs(synth.generate(2000, seed=12, personal_data=True), str(base / "period-2"))
    opts = dict(consent=["consent_marketing"], hash_ids=True, id_key_file=str(key), min_segment_size=K)
    run1 = segone.run(p1["transactions"], base / "run1", 8, events=p1["events"], attributes=p1["customers"],
                      **opts)  # fmt: skip
    run2 = segone.run(p2["transactions"], base / "run2", 8, events=p2["events"], attributes=p2["customers"],
                      previous=run1.out, **opts)  # fmt: skip
    return {"base": base, "key": str(key), "p1": p1, "p2": p2, "run1": run1.out, "run2": run2.out}


def test_every_output_byte_of_a_private_model_holds_no_raw_id_and_no_customer_without_consent(private, tmp_path):
    """After run --hash-ids --consent --min-segment-size: apply (Python and CLI), track, the report and persona
    write no raw id and nobody without consent; apply took the model's options without being told."""
    p1, p2, key = private["p1"], private["p2"], private["key"]
    ids1, yes1, no1 = _people(p1["customers"])
    ids2, yes2, no2 = _people(p2["customers"])
    raw = np.union1d(ids1, ids2)

    # apply the model of period 1 to period 2: only the key is given, every other option is the model's
    ap = apply_model(private["run1"], p2["transactions"], tmp_path / "apply", events=p2["events"],
                     attributes=p2["customers"], id_key_file=key)  # fmt: skip
    assert set(ap.assignments.column("customer_id").to_pylist()) == yes2
    assert ap.summary["privacy"]["from_model"] == ["consent", "hash_ids", "min_segment_size"]
    sizes = [s["customers"] for s in ap.summary["segments"].values()]
    assert all(n is None or n >= K for n in sizes)
    r = CliRunner().invoke(main, ["apply", private["run1"], p2["transactions"], "-o", str(tmp_path / "apply-cli"),
                                  "--events", p2["events"], "--attributes", p2["customers"], "--id-key-file", key])
    assert r.exit_code == 0, r.output
    cli_ids = pq.read_table(tmp_path / "apply-cli" / outputs.ASSIGNMENTS).column("customer_id").to_pylist()
    assert set(cli_ids) == yes2

    # track: the two runs compared without refitting
    cmp = compare_outputs(private["run1"], private["run2"], tmp_path / "track")
    moved = set(cmp.moves.column("customer_id").to_pylist())
    assert moved and moved <= yes2
    cells = [n for n in pq.read_table(tmp_path / "track" / outputs.MIGRATION).column("customers").to_pylist() if n]
    assert cells and min(cells) >= K

    # the report and persona read the private output of period 2
    report = write_report(private["run2"], tmp_path / "report" / outputs.REPORT)
    who = int(ids2[np.isin([pseudonym(i) for i in ids2], list(yes2))][0])
    r = CliRunner().invoke(main, ["persona", private["run2"], str(who), "--id-key-file", key])
    assert r.exit_code == 0, r.output
    assert pseudonym(who) in r.stdout and str(who) not in r.stdout
    assert not _leaks_text(r.stdout, raw, no2)
    nobody = int(ids2[np.isin([pseudonym(i) for i in ids2], list(no2))][0])
    r = CliRunner().invoke(main, ["persona", private["run2"], str(nobody), "--id-key-file", key])
    assert r.exit_code == 2 and r.stdout == "" and pseudonym(nobody) not in r.stderr

    # every byte of every output
    assert _check([private["run1"]], raw, no1) >= 6
    assert _check([private["run2"], tmp_path / "apply", tmp_path / "apply-cli", tmp_path / "track",
                   os.path.dirname(report)], raw, no2) >= 12  # fmt: skip


def test_every_output_byte_of_an_update_of_a_private_state(private, tmp_path):
    """segone update of the state of a private run: the changed customers, the changelog and the personas hold
    pseudonyms of consenting customers only (the model's options, without being told), and no raw id."""
    p1, p2, key = private["p1"], private["p2"], private["key"]
    ids1, yes1, no1 = _people(p1["customers"])
    segone.update.init_state(tmp_path / "state", private["run1"], p1["transactions"], events=p1["events"],
                             attributes=p1["customers"], buckets=2)  # fmt: skip
    r = CliRunner().invoke(main, ["update", str(tmp_path / "state"), p2["transactions"], "--events", p2["events"],
                                  "-o", str(tmp_path / "update"), "--id-key-file", key])  # fmt: skip
    assert r.exit_code == 0, r.output
    changed = set(pq.read_table(tmp_path / "update" / outputs.ASSIGNMENTS).column("customer_id").to_pylist())
    assert changed and changed <= yes1
    moved = set(pq.read_table(tmp_path / "update" / outputs.CHANGELOG).column("customer_id").to_pylist())
    assert moved <= yes1
    assert set(pq.read_table(tmp_path / "update" / outputs.PERSONAS).column("customer_id").to_pylist()) == changed
    raw = np.union1d(ids1, _people(p2["customers"])[0])
    assert _check([tmp_path / "update"], raw, no1) >= 4
    # without the key the model's pseudonyms cannot be made: refused before any work
    r = CliRunner().invoke(main, ["update", str(tmp_path / "state"), p2["transactions"], "-o", str(tmp_path / "u2")],
                           env={"SEGONE_ID_KEY": ""})  # fmt: skip
    assert r.exit_code == 2 and not (tmp_path / "u2").exists()


def _leaks_text(text, raw_ids, refused):
    digits = set(re.findall(r"(?<![0-9a-fA-F.])[0-9]+(?![0-9a-fA-F.])", text))
    return (digits & {str(int(i)) for i in raw_ids}) | {p for p in refused if p in text}


def test_track_refuses_raw_ids_next_to_pseudonyms(private, tmp_path):
    p1 = private["p1"]
    plain = segone.run(p1["transactions"], tmp_path / "plain", 3, value=False)
    for old, new in ((plain.out, private["run1"]), (private["run1"], plain.out)):
        with pytest.raises(WiderPrivacyError, match=r"pseudonym.*raw ids.*--hash-ids"):
            compare_outputs(old, new, tmp_path / "cmp")
        assert not os.path.exists(tmp_path / "cmp")


# ----------------------------------------------------------------------------------- refused widenings
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A model fitted with every privacy option (save_model with a plan), one without a record, and the data."""
    base = tmp_path_factory.mktemp("models")
    d = synth.generate(400, seed=3, personal_data=True)
    paths = _write_inputs(d, str(base / "data"))
    prof = segone.build_profiles(paths["transactions"], attributes=paths["customers"])
    scorer = segone.FeatureScorer().fit(prof)
    seg = segone.Segmenter(3, random_state=0).fit(scorer.transform(prof))
    keys = {}
    for name, k in (("key", KEY), ("other", OTHER_KEY)):
        keys[name] = str(base / name)
        (base / name).write_bytes(k)
    plan = PrivacyOptions(consent=["consent_marketing"], consent_scope="processing", hash_ids=True,
                          id_key_file=keys["key"], min_segment_size=20).validate(d.customers.schema)  # fmt: skip
    return {"private": save_model(base / "private", seg, scorer, privacy=plan),
            "plain": save_model(base / "plain", seg, scorer), "keys": keys, **paths}  # fmt: skip


WIDENINGS = {
    "no hashing": ({"hash_ids": False}, r"^hash_ids=False: .*fitted with hash_ids=True.*leave hash_ids unset"),
    "another key": ({"id_key_file": "other"}, r"^the id key .*not the key .*give the model's key"),
    "a consent rule left out": ({"consent": ["consent_purposes=analytics"]},
                                r"^consent=.*leaves out \['consent_marketing'\].*leave consent unset"),
    "export after processing": ({"consent_scope": "export"}, r"^consent_scope='export': .*'processing'"),
    "unknown counted as consent": ({"consent_default": True}, r"^consent_default=True: .*leave consent_default"),
    "a smaller minimum size": ({"min_segment_size": 5}, r"^min_segment_size=5: .*min_segment_size=20.*at least 20"),
    "a removed column kept": ({"keep_columns": ["email"]}, r"^keep_columns=\['email'\]: .*removed \['email'\]"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(WIDENINGS))
def test_apply_refuses_every_widening_of_the_models_options(case, models, tmp_path):
    kwargs, match = WIDENINGS[case]
    kwargs = {"id_key_file": models["keys"]["key"], **kwargs}
    if kwargs["id_key_file"] == "other":
        kwargs["id_key_file"] = models["keys"]["other"]
    with pytest.raises(WiderPrivacyError, match=match):
        apply_model(models["private"], models["transactions"], tmp_path / "out", attributes=models["customers"],
                    **kwargs)  # fmt: skip
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("args, option", [(["--no-hash-ids"], "hash_ids=False"),
                                          (["--min-segment-size", "5"], "min_segment_size=5"),
                                          (["--consent-default", "yes"], "consent_default=True")])  # fmt: skip
def test_the_cli_refuses_a_widening_apply_in_one_line(args, option, models, tmp_path):
    r = CliRunner().invoke(main, ["apply", models["private"], models["transactions"], "-o", str(tmp_path / "out"),
                                  "--attributes", models["customers"], "--id-key-file", models["keys"]["key"], *args])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith(f"error: {option}: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "out")


def test_narrower_options_are_taken_and_a_model_without_a_record_applies_as_before(models, tmp_path):
    key = models["keys"]["key"]
    ids, yes, _ = _people(models["customers"])
    # narrower than the model: a larger minimum, one more consent rule
    ap = apply_model(models["private"], models["transactions"], tmp_path / "narrow", attributes=models["customers"],
                     id_key_file=key, min_segment_size=30, consent=["consent_marketing", "consent_purposes=analytics"])
    assert ap.summary["privacy"]["min_segment_size"] == 30 and len(ap.summary["privacy"]["consent"]["columns"]) == 2
    assert set(ap.assignments.column("customer_id").to_pylist()) < yes
    # processing scope from the model: the customers without consent take part in nothing
    ap = apply_model(models["private"], models["transactions"], tmp_path / "model", attributes=models["customers"],
                     id_key_file=key)  # fmt: skip
    assert ap.summary["privacy"]["consent"]["dropped_before_processing"] == len(ids) - len(yes)
    assert set(ap.assignments.column("customer_id").to_pylist()) == yes
    # a model written without a record (older segone): no options assumed, as before; narrowing still works
    assert "privacy" not in load_model(models["plain"]).settings
    ap = apply_model(models["plain"], models["transactions"], tmp_path / "plain", attributes=models["customers"])
    assert ap.assignments.num_rows == len(ids) and ap.summary["privacy"]["from_model"] == []
    assert pa.types.is_integer(ap.assignments.schema.field("customer_id").type)
    ap = apply_model(models["plain"], models["transactions"], tmp_path / "hashed", attributes=models["customers"],
                     hash_ids=True, id_key_file=key)  # fmt: skip
    assert set(ap.assignments.column("customer_id").to_pylist()) == {pseudonym(i) for i in ids}


def test_a_model_records_its_options_but_never_the_key(private):
    rec = load_model(private["run1"]).settings["privacy"]
    assert rec["consent"] == ["consent_marketing"] and rec["hash_ids"] and rec["min_segment_size"] == K
    assert rec["key_check"] == hmac.new(KEY, b"segone id key check v1", hashlib.sha256).hexdigest()[:32]
    text = open(os.path.join(private["run1"], outputs.MODEL_DIR, outputs.MODEL_JSON), "rb").read()
    assert KEY not in text and KEY.hex().encode() not in text


def test_hash_ids_with_a_renamed_id_column_writes_pseudonyms(tmp_path):
    """With --schema customer_id=user the plan pseudonymised a column 'user' that no output has: raw ids."""
    d = synth.generate(300, seed=4)
    tx = d.transactions.rename_columns(["user" if c == "customer_id" else c for c in d.transactions.column_names])
    key = tmp_path / "key"
    key.write_bytes(KEY)
    res = segone.run(tx, tmp_path / "out", 3, schema={"customer_id": "user"}, hash_ids=True, id_key_file=str(key),
                     value=False)  # fmt: skip
    ids = d.transactions.column("customer_id").unique().to_pylist()
    assert set(res.assignments.column("customer_id").to_pylist()) == {pseudonym(i) for i in ids}
    assert _check([res.out], ids, set()) >= 5


def test_the_report_and_persona_read_the_models_options(private, tmp_path):
    """The report takes the model's minimum size when run.json lacks it and shows no unmarked ids of a hashing
    model; persona refuses a key other than the model's."""
    import shutil

    from segone.report import read_outputs

    out = tmp_path / "out"
    shutil.copytree(private["run2"], out)
    run = json.loads((out / outputs.RUN_JSON).read_text())
    del run["privacy"]
    (out / outputs.RUN_JSON).write_text(json.dumps(run))
    personas = pq.read_table(out / outputs.PERSONAS)
    plain = personas.schema.set(0, pa.field("customer_id", pa.string()))  # the pseudonym mark dropped
    pq.write_table(personas.cast(plain), out / outputs.PERSONAS)
    data = read_outputs(out)
    assert data.k == K and data.personas == {} and any("persona cards are left out" in n for n in data.notes)
    other = tmp_path / "other-key"
    other.write_bytes(OTHER_KEY)
    ids, yes, _ = _people(private["p2"]["customers"])
    r = CliRunner().invoke(main, ["persona", private["run2"], str(int(ids[0])), "--id-key-file", str(other)])
    assert r.exit_code == 2 and "not the key" in r.stderr and r.stderr.count("\n") == 1
