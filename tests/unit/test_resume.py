"""A run interrupted after a task resumes from its checkpoint and ends bit-identical."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lifelong.train.run as run_mod
from lifelong.config import make_config
from lifelong.train.run import execute


class Crash(RuntimeError):
    pass


def _cfg(method: str = "finetune"):
    return make_config("synthetic", method, seed=3, overrides={"train.progress": "off",
                                                              "data.n_tasks": 3})


def test_interrupted_run_leaves_partial_and_resumes_identically(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    ref = execute(_cfg(), None)

    real_fit = run_mod.fit

    def crashing_fit(*args, checkpoint=None, **kwargs):
        def ck(state):
            checkpoint(state)
            if state["task"] == 1:
                raise Crash("simulated crash after task 2")
        return real_fit(*args, checkpoint=ck, **kwargs)

    monkeypatch.setattr(run_mod, "fit", crashing_fit)
    with pytest.raises(Crash):
        execute(_cfg(), tmp_path)
    partial = tmp_path / "synthetic" / "task" / "finetune" / "seed3.partial"
    assert (partial / "checkpoint.pt").is_file()
    assert not (partial / "result.json").exists()
    assert not partial.with_name("seed3").exists()

    monkeypatch.setattr(run_mod, "fit", real_fit)
    res = execute(_cfg(), tmp_path, resume=True)
    final = tmp_path / "synthetic" / "task" / "finetune" / "seed3"
    assert final.is_dir() and not partial.exists()
    assert not (final / "checkpoint.pt").exists()
    saved = json.loads((final / "result.json").read_text())
    for s in ref["accuracy"]:
        a = np.array(ref["accuracy"][s], dtype=float)
        b = np.array(saved["accuracy"][s], dtype=float)
        assert np.array_equal(a, b, equal_nan=True), s
    assert res["losses"] == ref["losses"]


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    real_fit = run_mod.fit

    def crashing_fit(*args, checkpoint=None, **kwargs):
        def ck(state):
            checkpoint(state)
            raise Crash("after task 1")
        return real_fit(*args, checkpoint=ck, **kwargs)

    monkeypatch.setattr(run_mod, "fit", crashing_fit)
    with pytest.raises(Crash):
        execute(_cfg(), tmp_path)
    monkeypatch.setattr(run_mod, "fit", real_fit)
    other = _cfg()
    other.train.lr = 0.5
    with pytest.raises(ValueError, match="different configuration"):
        execute(other, tmp_path, resume=True)
