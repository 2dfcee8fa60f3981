"""``lifelong run`` without ``-m`` runs every registered method that applies to the setting and
names the ones it leaves out (the class-IL-only prototype methods on a task-IL benchmark)."""

from __future__ import annotations

import pytest

from lifelong.cli import main
from lifelong.methods.registry import get_method, list_methods


def test_default_methods_skip_those_without_the_setting(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    results = main(["run", "-b", "synthetic", "--quiet", "--no-save", "train.epochs=1"])
    ran = {r["method"] for r in results}
    task_methods = {m for m in list_methods() if "task" in get_method(m).settings}
    assert ran == task_methods
    out = capsys.readouterr().out
    for name in ("hebbian-prototypes", "ncm", "topic"):
        assert name in out.split("left out", 1)[1].split("(", 1)[0]
    assert "(not applicable to this setting" in out


def test_named_method_without_the_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="'topic' does not apply to the task-incremental"):
        main(["run", "-b", "synthetic", "-m", "topic", "--quiet", "--no-save"])
