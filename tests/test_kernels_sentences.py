"""Persona slots and sentences (kernel family "persona"): Cython and Numba twins against the NumPy reference."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segone
from segone.describe import _sentences
from segone.errors import ParameterError
from segone.kernels import _common, _cy, _nb, reference

KERNELS = {"cython": _cy, "numba": _nb}
ALL = {"reference": reference, **KERNELS}


# ------------------------------------------------------------------ slots: entries and numbers
def slots_case(rng, n, k, n_num=4, n_cat=2, width=3, variants=True, row_medians=False, base=0):
    d = n_num + n_cat
    feat = rng.integers(-1, d, (n, k))
    val = rng.uniform(-1, 1, (n, k)).astype(np.float32)
    values = np.round(rng.lognormal(0, 2, (n, k)), int(rng.integers(0, 3)))
    values[rng.random((n, k)) < 0.2] = rng.choice([0.0, 1.0, 0.004, 0.996, 1.004])  # read 0 or 1 at a few decimals
    medians = rng.choice([0.0, 0.5, 2.0, 10.0], n_num)
    m = base + 2 * d
    kind = rng.integers(0, 7, (m, width))
    swap = np.where(rng.random((m, 3)) < 0.5, rng.integers(0, m, (m, 3)), -1) if variants else np.full((m, 3), -1)
    far = rng.choice([2.0, 10.0, np.inf], m)
    vdec = rng.integers(0, 3, m)
    row_med = rng.choice([0.0, 1.0, 3.0], n) if row_medians else None
    return feat, val, values, medians, row_med, kind, base, swap, far, vdec


def run_slots(mod, case):
    feat, *_, kind, base, swap, far, vdec = case
    n, k = feat.shape
    out = (np.empty((n, k), np.int64), np.empty((n, k, kind.shape[1])), np.empty((n, k)))
    mod.persona_slots(*case, *out, **({} if mod is reference else {"n_threads": 2}))
    return out


def check_slots(case):
    want = run_slots(reference, case)
    for name, mod in KERNELS.items():
        for a, b in zip(run_slots(mod, case), want):
            np.testing.assert_array_equal(a, b, err_msg=name)  # NaN percentiles compare equal
    return want


@pytest.mark.parametrize("n, k", [(0, 3), (1, 1), (9, 2), (500, 4)])
@pytest.mark.parametrize("variants, row_medians, base", [(False, False, 0), (True, False, 0), (True, True, 6)])
def test_persona_slots_match_reference(n, k, variants, row_medians, base):
    rng = np.random.default_rng(n + k + base)
    entry, nums, pct = check_slots(slots_case(rng, n, k, variants=variants, row_medians=row_medians, base=base))
    if not variants:  # the variants may point anywhere
        assert ((entry == -1) | (entry >= base)).all()


def test_persona_slots_adversarial():
    rng = np.random.default_rng(1)
    feat, val, values, medians, row_med, kind, base, swap, far, vdec = slots_case(rng, 8, 3)
    swap = np.tile([0, 1, 2], (kind.shape[0], 1))  # every variant possible
    kind[:] = [1, 2, 4] if kind.shape[1] == 3 else 1
    feat[:] = np.arange(3)  # numeric columns only
    cases = {
        "nan strength": np.full_like(val, np.nan),  # a NaN percentile stays NaN, "top NaN%" is NaN
        "ties at zero": np.zeros_like(val),  # strength 0 is low (not > 0)
        "extremes": np.tile(np.float32([-1.0, 1.0, 3e38]), (8, 1)),
    }
    for v in cases.values():
        check_slots((feat, v, values, medians, row_med, kind, base, swap, far, vdec))
    odd = {
        "nan / inf values": np.tile([np.nan, np.inf, -np.inf], (8, 1)),
        "huge": np.tile([1e308, -1e308, 5e-324], (8, 1)),
        "large offset": 1e12 + np.tile([0.25, 0.5, 0.75], (8, 1)),
        "reads 1 / 0": np.tile([0.9996, 0.0004, 1.0], (8, 1)),
        "constant": np.full((8, 3), 2.0),
    }
    for v in odd.values():
        for med in (medians, np.zeros_like(medians)):  # zero medians: ratios are inf / NaN, never far
            check_slots((feat, val, v, med, row_med, kind, base, swap, far, vdec))
    for d in (0, 3, _common.MAX_DECIMALS):  # rounding at the vdec decimals
        check_slots((feat, val, values, medians, row_med, kind, base, swap, far, np.full_like(vdec, d)))
    no_numbers = np.zeros((kind.shape[0], 0), np.int64)  # a vocabulary without placeholders
    check_slots((feat, val, values, medians, row_med, no_numbers, base, swap, far, vdec))
    check_slots((np.full((4, 2), -1), val[:4, :2], values[:4, :2], medians, None, kind, base, swap, far, vdec))


def test_persona_slots_refuse_codes_outside_the_tables():
    rng = np.random.default_rng(2)
    feat, val, values, medians, row_med, kind, base, swap, far, vdec = slots_case(rng, 5, 2)
    for mod in ALL.values():
        with pytest.raises(ValueError, match="entry codes"):
            run_slots(mod, (feat, val, values, medians, row_med, kind[:3], base, swap[:3], far[:3], vdec[:3]))
        with pytest.raises(ValueError, match="swap entries"):
            run_slots(mod, (feat, val, values, medians, row_med, kind, base, swap + 100, far, vdec))
        with pytest.raises(ValueError, match="vdec"):
            run_slots(mod, (feat, val, values, medians, row_med, kind, base, swap * 0, far, vdec + 10))


# ------------------------------------------------------------------ sentences
ENTRIES = [
    (["spent ", " (x", ") ok"], ["value", "ratio"], [0, 1]),
    (["région: ", ""], ["category"], [0]),
    None,
    (["plain"], [], []),
    (["up ", "% and ", " of ", ""], ["pct", "top", "value"], [2, 0, _common.MAX_DECIMALS]),
    ([""], [], []),  # an empty phrase: no separator before the next one
    (["", " ", "!"], ["value", "category"], [3, 0]),  # a number first: no letter to upper-case
]
CATS = ["nörth", "south", "", "日本"]


def run_sentences(mod, entry, nums, cat, entries=ENTRIES, cats=CATS, nothing="Nothing.", n_chunks=3, n_threads=2):
    lit_off, lit_len, lit_bytes, kind, dec = _sentences.compile_entries(entries)
    cat_b = [c.encode() for c in cats]
    cat_off = np.zeros(len(cat_b) + 1, np.int64)
    np.cumsum([len(b) for b in cat_b], out=cat_off[1:])
    cat_bytes = np.frombuffer(b"".join(cat_b) or b"\0", np.uint8)
    nothing_b = np.frombuffer(nothing.encode(), np.uint8)
    n, k = entry.shape
    row_cap = _common.sentence_row_cap(lit_len, kind, dec, cat_off, k, nothing_b.size)
    out = np.full(n * row_cap + 1, 255, np.uint8)
    offsets = np.empty(n + 1, np.int32 if n_threads % 2 == 0 else np.int64)
    end = mod.persona_sentences(entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes,
                                nothing_b, out, offsets, n_chunks, row_cap,
                                **({} if mod is reference else {"n_threads": n_threads}))  # fmt: skip
    assert offsets[n] == end
    return bytes(out[:end]), offsets.astype(np.int64)


def sentence_case(rng, n, k, spread=1e6):
    entry = rng.integers(-1, len(ENTRIES), (n, k))
    entry[entry == 2] = -1
    nums = rng.uniform(-spread, spread, (n, k, 3))
    nums[rng.random((n, k, 3)) < 0.1] = rng.choice([0.5, 1.5, 2.5, -0.5, -0.004, 1e-9])  # halves: to even
    cat = rng.integers(-1, len(CATS), (n, k))
    return entry, nums, cat


def check_sentences(entry, nums, cat, **kw):
    want = run_sentences(reference, entry, nums, cat, **kw)
    for name, mod in KERNELS.items():
        for n_chunks, n_threads in ((1, 1), (3, 2), (64, 3)):
            got = run_sentences(mod, entry, nums, cat, **{**kw, "n_chunks": n_chunks, "n_threads": n_threads})
            assert got[0] == want[0], (name, n_chunks)
            np.testing.assert_array_equal(got[1], want[1], err_msg=name)
    return want


@pytest.mark.parametrize("n, k", [(0, 2), (1, 1), (10, 3), (2000, 4)])
def test_persona_sentences_match_reference(n, k):
    rng = np.random.default_rng(n * 3 + k)
    entry, nums, cat = sentence_case(rng, n, k)
    check_sentences(entry, nums, cat)
    # the same text as the Python twin that formats with f-strings (which joins an empty phrase with "; ")
    entry[entry == 5] = -1
    buf, offsets = check_sentences(entry, nums, cat)
    arr = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(buf)])
    assert arr.to_pylist() == _sentences.build_reference(entry, nums[:, :, :3], cat, ENTRIES, CATS,
                                                         "Nothing.").to_pylist()  # fmt: skip


def test_persona_sentences_adversarial():
    fmt = lambda x, d: reference.format_number(x, d).decode()  # noqa: E731
    assert [fmt(x, 0) for x in (0.5, 1.5, 2.5, -0.5, -2.5, -0.4)] == ["0", "2", "2", "0", "-2", "0"]  # half to even
    assert [fmt(x, 2) for x in (np.nan, np.inf, -np.inf, 9e15, 1e12 + 0.25)] == ["?", "?", "?", "?", "1000000000000.25"]
    assert fmt(1e-9, _common.MAX_DECIMALS) == "0.000000001" and fmt(-0.0, 1) == "0.0"
    one = np.array([[4, 6, 1]])
    odd = [np.nan, np.inf, -np.inf, 8.99e17, -8.99e17, 1e300, 5e-324, -0.0, 1e12 + 0.125, 0.5]
    for x in odd:  # not finite, huge, tiny, a large offset: the same bytes everywhere
        check_sentences(one, np.full((1, 3, 3), x), np.array([[0, 3, 1]]))
    e, nums, cat = sentence_case(np.random.default_rng(0), 50, 3)
    check_sentences(np.full_like(e, -1), nums, cat)  # no trait anywhere: the "nothing" sentence
    check_sentences(np.full_like(e, -1), nums, cat, nothing="")  # an empty "nothing"
    check_sentences(np.full_like(e, 5), nums, cat)  # only empty phrases: "nothing" as well
    check_sentences(np.tile([5, 3, 5, 3], (20, 1)), nums[:20, :1].repeat(4, 1), cat[:20, :1].repeat(4, 1))  # ties
    check_sentences(e, nums, np.full_like(cat, 2))  # the empty category value
    check_sentences(e[:, :0], nums[:, :0], cat[:, :0])  # no slots
    plain = [(["only words here"], [], [])]
    check_sentences(np.zeros((30, 2), np.int64), np.zeros((30, 2, 0)), np.full((30, 2), -1), entries=plain, cats=[])


@given(st.lists(st.tuples(st.integers(-1, len(ENTRIES) - 1), st.floats(allow_nan=True, allow_infinity=True),
                          st.integers(-1, len(CATS) - 1)), max_size=25), st.integers(1, 3))  # fmt: skip
def test_persona_sentences_hypothesis(rows, k):
    n = len(rows)
    entry = np.full((n, k), -1, np.int64)
    nums = np.zeros((n, k, 3))
    cat = np.full((n, k), -1, np.int64)
    for i, (e, x, c) in enumerate(rows):
        entry[i] = [(e + s) % len(ENTRIES) if e >= 0 else -1 for s in range(k)]
        nums[i] = x
        cat[i] = c
    check_sentences(entry, nums, cat, n_chunks=2)


def test_persona_sentences_refuse_what_would_write_out_of_bounds():
    entry, nums, cat = sentence_case(np.random.default_rng(4), 6, 2)
    lit_off, lit_len, lit_bytes, kind, dec = _sentences.compile_entries(ENTRIES)
    cat_off = np.array([0, 3], np.int64)
    cat_bytes = np.frombuffer(b"abc", np.uint8)
    nothing = np.frombuffer(b"-", np.uint8)
    cat = np.minimum(cat, 0)
    cap = _common.sentence_row_cap(lit_len, kind, dec, cat_off, 2, 1)

    def call(mod, **over):
        a = dict(entry=entry, nums=nums, cat=cat, lit_off=lit_off, lit_len=lit_len, lit_bytes=lit_bytes, kind=kind,
                 dec=dec, cat_off=cat_off, cat_bytes=cat_bytes, nothing=nothing, out=np.empty(6 * cap + 1, np.uint8),
                 offsets=np.empty(7, np.int64), n_chunks=2, row_cap=cap)  # fmt: skip
        a.update(over)
        return mod.persona_sentences(**a)

    for mod in ALL.values():
        assert call(mod) > 0
        for over, match in (({"row_cap": cap - 1}, "row_cap"), ({"out": np.empty(6 * cap, np.uint8)}, "out"),
                            ({"entry": entry + 10}, "entry codes"), ({"cat": cat + 1}, "category codes"),
                            ({"dec": dec + 10}, "decimals"), ({"offsets": np.empty(6, np.int64)}, "offsets"),
                            ({"lit_bytes": lit_bytes[:3]}, "literal")):  # fmt: skip
            with pytest.raises(ValueError, match=match):
                call(mod, **over)


def test_persona_family_is_dispatched_and_used_by_personas(monkeypatch):
    from segone._backend import get_kernels

    for name in ("cython", "numba"):
        kern = get_kernels(name, "persona")
        assert kern.persona_slots is KERNELS[name].persona_slots
        assert kern.persona_sentences is KERNELS[name].persona_sentences
    n = 60
    t = pa.table({"customer_id": np.arange(n), "orders": np.arange(n, dtype=float),
                  "spend_total": np.arange(n) * 2.5, "region": np.where(np.arange(n) < 3, "north", "south")})  # fmt: skip
    out = {b: segone.personas(t, backend=b) for b in ("cython", "numba")}
    assert out["cython"].equals(out["numba"])
    calls = []
    monkeypatch.setattr(_cy, "persona_sentences", lambda *a, **kw: calls.append(1) or reference.persona_sentences(*a))
    assert segone.personas(t, backend="cython").equals(out["cython"])
    assert calls == [1]


def test_a_phrase_with_more_decimals_than_the_writer_prints_is_refused():
    t = pa.table({"customer_id": np.arange(20), "orders": np.arange(20, dtype=float)})
    rule = {"match": "*", "high": "{value:.%df} orders" % (_common.MAX_DECIMALS + 1), "low": None}
    with pytest.raises(ParameterError, match=r"decimals; use at most 9 \(\.0f to \.9f\)"):
        segone.personas(t, phrases=[rule])
    rule["high"] = "{value:.%df} orders" % _common.MAX_DECIMALS
    assert segone.personas(t, phrases=[rule], min_strength=0.9).column("summary")[19].as_py() == "19.000000000 orders"
