"""The README's Python examples run as written and print sensible numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples() -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 2
    assert "from lifelong.terms import EWC" in blocks[0]
    assert "from lifelong.nn import DHPSoftmax" in blocks[0]


@pytest.mark.parametrize("index", [0, 1])
def test_readme_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = _python_blocks()[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {})
    printed = capsys.readouterr().out.split()
    accuracy = float(printed[0])
    assert 0.5 < accuracy <= 1.0  # split-digits, 5 two-class tasks: well above chance


def test_readme_own_data_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """'Your own data': arrays the library does not ship, registered by name, run by the CLI."""
    blocks = [b for b in _python_blocks() if "custom.register" in b]
    assert len(blocks) == 1
    exec(compile(blocks[0], "README.md own-data block", "exec"), {})
    lines = [line.split() for line in capsys.readouterr().out.splitlines()[-2:]]
    assert [line[0] for line in lines] == ["finetune", "ewc"]
    for _, task_il, class_il in lines:
        assert 0.8 < float(task_il) <= 1.0 and 0.3 < float(class_il) < float(task_il)


def test_readme_distill_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    code = next(b for b in _python_blocks() if "distill(" in b)
    scope: dict = {}
    exec(compile(code, "README.md distill block", "exec"), scope)
    results = scope["results"]
    assert [r["distill"]["role"] for r in results] == ["teacher", "student", "distilled"]
    assert all(0 <= r["distill"]["test"]["errors"] < 100 for r in results)  # of 445 digits
    printed = capsys.readouterr().out
    assert "teacher" in printed and "distilled" in printed
