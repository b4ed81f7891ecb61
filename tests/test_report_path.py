"""`segone report -o FILE` never replaces a file segone did not write."""

import pytest

import segone
from segone.errors import OutputError
from segone.report import write_report
from segone.synth import generate


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    d = generate(600, seed=2)
    o = tmp_path_factory.mktemp("r") / "out"
    segone.run(d.transactions, o, 3, value=False)
    return o


def test_report_refuses_to_replace_a_foreign_file(out, tmp_path):
    victim = tmp_path / "transactions.csv"
    victim.write_text("customer_id,ts,amount\n1,2024-01-01,3\n")
    with pytest.raises(OutputError, match="not a report segone wrote"):
        write_report(out, victim)
    assert victim.read_text().startswith("customer_id")
    html = tmp_path / "notes.html"
    html.write_text("<!DOCTYPE html><html><head><title>my notes</title></head></html>")
    with pytest.raises(OutputError, match="not a report segone wrote"):
        write_report(out, html)
    with pytest.raises(OutputError, match="is a directory"):
        write_report(out, tmp_path)


def test_report_replaces_its_own_earlier_report(out, tmp_path):
    p = tmp_path / "r.html"
    write_report(out, p)
    first = p.read_text(encoding="utf-8")
    assert write_report(out, p, title="Again") == str(p)
    assert p.read_text(encoding="utf-8") != first
