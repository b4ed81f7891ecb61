"""The profile-feature registry (segone.features) is the one source of every consumer's feature facts."""

import ast
import dataclasses
import fnmatch
import pathlib

import numpy as np
import pyarrow as pa
import pytest

import segone
from segone import features as F
from segone import profile as P
from segone.describe import DEFAULT_LABEL_RULES, DEFAULT_PHRASES, SUMMARY_COLUMNS, PersonaModel, describe_segments
from segone.describe._personas import _rule_for
from segone.report import _names
from segone.synth import generate

ENGINE = pathlib.Path(segone.__file__).parent
PROFILE_STEPS = tuple(s for s in F.STEPS if s != "predict")


@pytest.fixture(scope="module")
def data():
    return generate(400, seed=5)


@pytest.fixture(scope="module")
def prof(data):
    return segone.build_profiles(data.transactions, events=data.events)


def _feature_columns(table):
    return [c for c in table.column_names if c != F.ID_COLUMN]


def test_entries_are_well_formed():
    names = [f.name for f in F.FEATURES]
    assert len(set(names)) == len(names)
    for f in F.FEATURES:
        assert f.kind in F.KINDS and f.step in F.STEPS and f.transform in F.TRANSFORMS, f.name
        assert f.direction in F.DIRECTIONS and f.section in _names.GROUPS, f.name
        assert f.digits <= f.is_family and f.share_group <= f.is_family or f.name == "share_other", f.name
        if f.phrase is not None:
            assert {"group", "high", "low"} <= set(f.phrase) and "match" not in f.phrase, f.name
        if isinstance(f.median, tuple):  # a family reports the median of named members
            assert f.is_family and all(f.matches(c) for c in f.median), f.name
    # exact entries win over families (share_other), and every lookup is deterministic
    assert F.find("share_other").name == "share_other" and F.find("share_x").name == "share_*"
    assert F.find("orders_30d").name == "orders_*d" and F.find("orders_paid") is None
    with pytest.raises(KeyError):
        F.get("no_such_feature")


def test_every_profile_column_is_declared_and_every_declared_feature_is_built(data, prof):
    full = segone.build_profiles(data.transactions, events=data.events, attributes=data.customers)
    crm = set(data.customers.column_names)
    cols = [c for c in _feature_columns(full) if c not in crm]
    assert cols == _feature_columns(prof)
    for c in cols:
        f = F.find(c)
        assert f is not None and f.step in PROFILE_STEPS, f"profile column {c!r} has no registry entry"
    for f in F.FEATURES:
        if f.step in PROFILE_STEPS:
            assert any(f.matches(c) for c in cols), f"registry feature {f.name!r} is not built by the profile"
    # the registry-driven steps: exactly one builder per feature, and their columns in registry order
    driven = [f.name for f in F.FEATURES if f.step in ("transactions", "btyd")]
    assert set(P._BUILDERS) == set(driven)
    assert [c for c in cols if c in driven] == driven
    assert P.FUNNEL_COLUMNS == tuple(f.name for f in F.features_of_step("funnel"))


def test_scorer_defaults_follow_the_registry(prof):
    sc = segone.FeatureScorer().fit(prof)
    scored = dict(sc.state_.features[i][:2] for i in range(len(sc.state_.features)))
    for c in _feature_columns(prof):
        f = F.find(c)
        family = next((g for g in F.FEATURES if g.is_family and g.transform and g.matches(c)), None)
        expected = (family or f).transform
        assert scored.get(c) == expected, c
    # the order saved models carry: single features by kind (counts, money, days), then the families
    assert sc.feature_names_out_[:6] == ["orders", "purchase_days", "spend_total", "spend_mean", "recency_days",
                                         "tenure_days"]  # fmt: skip
    shares = [n for n in sc.feature_names_out_ if F.share_group_of(n) == "share_*"]
    assert shares[-1] == "share_other" and np.allclose(sc.weights_[sc.feature_names_out_.index(shares[0])],
                                                       np.sqrt(2 / len(shares)))  # fmt: skip
    # "never" nulls: recency and days since an event are filled with the largest value, not 0
    for name, fill in zip(sc.feature_names_out_, sc.fill_):
        assert (fill > 0) == (F.null_means_never(name) and fill > 0)


def test_persona_rules_come_from_the_registry(prof):
    assert DEFAULT_PHRASES[:-1] == F.persona_phrases() and DEFAULT_PHRASES[-1]["match"] == "*"
    pm = PersonaModel().fit(prof)
    for j, name in enumerate(pm.features_):
        f = F.find(name)
        if f is None or f.phrase is None:
            continue
        _, rule = _rule_for(name, DEFAULT_PHRASES)
        if not f.digits:  # the persona vocabulary matches globs as they are
            assert rule == {"match": f.name, **f.phrase}, name
        label = F.label_of(name, rule["match"]) or name
        assert pm.groups_[j] == rule["group"].replace("{label}", label)


def test_segment_table_reads_the_registry(prof):
    assert SUMMARY_COLUMNS == F.median_columns()
    labels = np.arange(prof.num_rows) % 3
    seg = describe_segments(prof, labels, 3)
    medians = [c[len("median_"):] for c in seg.column_names if c.startswith("median_")]
    assert medians == [c for c in F.median_columns() if c in prof.column_names]
    traits = [t.rsplit(" x", 1)[0] for ts in seg.column("traits").to_pylist() for t in ts]
    assert all(F.is_trait(t) for t in traits)


def test_report_names_colours_and_drift_follow_the_registry(prof):
    for c in _feature_columns(prof):
        f = F.find(c)
        title, section = _names.feature_info(c)
        assert section == f.section, c
        if not f.is_family:
            assert title == f.title
        assert _names.lower_is_better(c) == (f.direction == "lower")
        assert _names.grows_with_time(c) == f.grows_with_time
    assert _names.feature_info("share_home_garden") == ("Home garden", "Category mix (share of spend)")
    assert _names.feature_info("days_since_visit") == ("Days since last site visit", "Web activity")
    assert _names.feature_info("crm_score") == ("Crm score", "Other")
    assert F.report_table_columns() == ("orders", "spend_total", "recency_days")
    from segone.report._read import VALUE_COLUMNS

    assert list(VALUE_COLUMNS) == [f.name for f in F.features_of_step("predict")]


def _rule_columns(rules):
    cols = [rules["value_column"], rules["frequency_column"], rules["alive_check"]["column"]]
    cols += [c for _, c, _, _, _ in rules["non_buyers"]["names"]]
    cols += [rules[k]["prefix"] + "*" for k in ("mix", "channel")]
    cols += [c for c, _ in rules["distinguish"]["columns"]]
    return cols


def test_label_rules_name_registry_features_flagged_for_labels():
    for c in _rule_columns(DEFAULT_LABEL_RULES):
        f = F.find(c) or F.get(c)
        assert f.labels, f"label rules read {c!r} but its registry entry has labels=False"
    # and every feature flagged for labels is read by the rules or the label code
    src = (ENGINE / "describe" / "segments.py").read_text()
    for f in F.FEATURES:
        if f.labels:
            head = f.name.split("*")[0]
            assert any(fnmatch.fnmatchcase(c, f.name) or c == f.name for c in _rule_columns(DEFAULT_LABEL_RULES)) \
                or f'"{f.name}"' in src or f'"{head}' in src, f.name  # fmt: skip


# functions whose literals are the build code or logic over a few named columns, not lists of features
_ALLOWED = {"profile.py": {"funnel_features"}, "segments.py": {"_gaps_in_days"},
            "_read.py": {"_VALUE_ALIASES"}}  # other names of the predicted-value columns in outputs


def _feature_literal(s):
    if not isinstance(s, str) or not s or s == F.ID_COLUMN:
        return False
    if F.find(s) is not None or any(f.name == s for f in F.FEATURES):
        return True
    return any(f.is_family and f.name.split("*")[0] == s and s.endswith("_") for f in F.FEATURES)


def _lists_of_feature_names(path):
    """(line, names) of every list / tuple / set display or dict in ``path`` holding two or more feature names."""
    tree = ast.parse(path.read_text())
    allowed = _ALLOWED.get(path.name, set())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.Assign)) and (getattr(node, "name", None) in allowed or (
                isinstance(node, ast.Assign) and any(getattr(t, "id", None) in allowed | {"_BUILDERS"}
                                                     for t in node.targets))):  # fmt: skip
            skip |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        elts = node.elts if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else \
            node.keys if isinstance(node, ast.Dict) else None  # fmt: skip
        if elts is None:
            continue
        names = [e.value for e in elts if isinstance(e, ast.Constant) and _feature_literal(e.value)]
        if len(names) >= 2:
            out.append((node.lineno, names))
    return out


CONSUMERS = ["score.py", "profile.py", "describe/_personas.py", "describe/segments.py", "describe/_sentences.py",
             "report/_names.py", "report/_html.py", "report/_charts.py", "report/_read.py", "report/__init__.py"]


@pytest.mark.parametrize("module", CONSUMERS)
def test_no_consumer_keeps_its_own_list_of_feature_names(module):
    assert _lists_of_feature_names(ENGINE / module) == [], (
        f"engine/{module} holds a hard-coded list of profile feature names; read segone.features instead"
    )


def test_the_list_check_finds_a_list():  # the check above can fail
    tree = "X = ('recency_days', 'orders')\nY = {'share_': 1, 'events_': 2}\nZ = ['orders', 'region']\n"
    path = pathlib.Path(__file__).parent / "_tmp_registry_probe.py"
    try:
        path.write_text(tree)
        assert [line for line, _ in _lists_of_feature_names(path)] == [1, 2]
    finally:
        path.unlink()


SPEND_GROSS = F.Feature(
    "spend_gross", "monetary", "money", "currency", "transactions", "Spend before returns", "Orders and spend",
    transform="log1p", direction="higher", median=True,
    phrase={"group": "spend", "high": "bought {value:.0f} before returns", "low": None},
)  # fmt: skip


def test_adding_a_feature_is_its_entry_and_its_builder(monkeypatch, data):
    """The README's worked example: one registry entry and one builder (the kernel already sums the gross spend)."""
    at = [f.name for f in F.FEATURES].index("spend_max") + 1
    monkeypatch.setattr(F, "FEATURES", F.FEATURES[:at] + (SPEND_GROSS,) + F.FEATURES[at:])
    monkeypatch.setitem(P._BUILDERS, "spend_gross", lambda k: pa.array(k.agg["gross"]))
    prof = segone.build_profiles(data.transactions)
    names = prof.column_names
    assert names.index("spend_gross") == names.index("spend_max") + 1
    assert ("spend_gross", "log1p") in segone.score.default_features(names)
    assert "spend_gross" in segone.FeatureScorer().fit(prof).feature_names_out_
    assert "spend_gross" in F.median_columns()
    assert {"match": "spend_gross", **SPEND_GROSS.phrase} in F.persona_phrases()
    assert _names.feature_info("spend_gross") == ("Spend before returns", "Orders and spend")
    seg = describe_segments(prof, np.arange(prof.num_rows) % 2, 2)
    assert "lift_spend_gross" in seg.column_names
    # the entry is frozen data: a consumer cannot change it by accident
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPEND_GROSS.name = "x"


def test_registry_docstring_examples():
    import doctest

    result = doctest.testmod(F, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0
