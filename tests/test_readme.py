"""The README's Python snippets run as shown, and its first command names a report that outlives the demo."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def _snippet(marker):
    text = _readme()
    i = text.index(marker)
    start = text.rindex("```python", 0, i) + len("```python")
    return text[start : text.index("```", i)]


@pytest.mark.slow
def test_bring_your_own_frames_snippet_runs_as_shown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(_snippet("# frames of your own shape"), "README.md", "exec"), scope)  # noqa: S102
    assert scope["result"].summary["customers"] == 5000
    assert (tmp_path / "out" / "assignments.parquet").exists()


def test_first_command_installs_the_report_and_keeps_it():
    first = re.search(r"```bash\n(python3 -m venv[^\n]*segone demo[^\n]*)\n```", _readme())
    assert first, "the README's first command is the demo"
    cmd = first.group(1)
    assert '".[report]"' in cmd or "[report]" in cmd  # the report's dependencies are installed
    assert re.search(r"segone demo (-o|--out) \S+", cmd)  # the outputs and report.html stay in a folder of the user's
