"""Ray: sweeps (``lifelong run --workers N``) write the same run folders and accuracy matrices as
the sequential run, skip finished runs with ``--resume`` and re-run a worker killed mid-run from
its checkpoint; ``lifelong tune`` searches on validation splits and writes a TOML file that
``lifelong run -c`` takes; clear messages where Ray is not installed. One Ray session serves the
module (starting Ray takes seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomllib
import torch

from lifelong.cli import CLIError, main
from lifelong.data.scenarios import BenchmarkOptions, build_scenario

GRID = ["-b", "split-digits", "-m", "finetune", "ewc", "--seeds", "0", "1", "--quiet",
        "train.epochs=1", "model.hidden=[16]"]
# fields of result.json that record when and how fast, not what was computed
VOLATILE = ("timings", "started_at", "finished_at", "path", "skipped")

PLUGIN = '''
import os, signal
from dataclasses import dataclass
from lifelong.methods.base import Recipe
from lifelong.methods.registry import register_method
from lifelong.terms.base import Term

@dataclass
class CrashOnceHP:
    marker: str = ""

class CrashOnce(Term):
    """Kills its own process at the end of task 2 the first time (no marker file yet)."""
    name = "crash-once"
    def __init__(self, marker):
        self.marker = marker
    def on_task_end(self, ctx):
        if ctx.task_id == 1 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)

@register_method("crash-once", hparams=CrashOnceHP, description="test: a worker that dies")
def crash_once(hp):
    return Recipe(name="crash-once", terms=[CrashOnce(hp.marker)])
'''


@pytest.fixture(scope="module")
def ray_session() -> Any:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install \"lifelong[ray]\"): "
                                            "the Ray sweep tests need it")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _folders(out: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(out.rglob("result.json")):
        result = json.loads(path.read_text())
        found[str(path.relative_to(out))] = {k: v for k, v in result.items() if k not in VOLATILE}
    return found


def test_two_workers_write_the_sequential_run_folders(ray_session: Any, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    sequential = main(["run", *GRID, "-o", str(tmp_path / "seq")])
    on_ray = main(["run", *GRID, "-o", str(tmp_path / "ray"), "--workers", "2"])
    assert [r["accuracy"] for r in on_ray] == [r["accuracy"] for r in sequential]
    seq_folders, ray_folders = _folders(tmp_path / "seq"), _folders(tmp_path / "ray")
    assert len(ray_folders) == 4 and ray_folders == seq_folders  # same files, same contents
    assert sorted(p.name for p in (tmp_path / "ray").rglob("*")) == \
        sorted(p.name for p in (tmp_path / "seq").rglob("*"))
    capsys.readouterr()
    again = main(["run", *GRID, "-o", str(tmp_path / "ray"), "--workers", "2", "--resume"])
    assert all(r["skipped"] for r in again)
    assert "resume: 4 finished (skipped)" in capsys.readouterr().out


def test_a_worker_killed_mid_run_is_run_again_from_its_checkpoint(
        ray_session: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = tmp_path / "crash_plugin.py"
    plugin.write_text(PLUGIN)
    marker = tmp_path / "killed-once"
    argv = ["run", "--import", str(plugin), "-b", "split-digits", "-m", "crash-once", "finetune",
            "--seeds", "0", "--quiet", "train.epochs=1", "model.hidden=[16]",
            f"crash-once.marker={marker}"]
    on_ray = main([*argv, "-o", str(tmp_path / "ray"), "--workers", "2"])
    assert marker.exists()  # the worker did die
    assert "died; running it again from its last checkpoint" in capsys.readouterr().err
    sequential = main([*argv, "-o", str(tmp_path / "seq")])  # marker present: no kill here
    assert [r["accuracy"] for r in on_ray] == [r["accuracy"] for r in sequential]
    assert _folders(tmp_path / "ray") == _folders(tmp_path / "seq")
    assert not list((tmp_path / "ray").rglob("*.partial"))


def test_workers_without_ray_say_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import lifelong.train.sweep as sweep

    monkeypatch.setattr(sweep, "ray_available", lambda: False)
    with pytest.raises(CLIError) as info:
        main(["run", *GRID, "--no-save", "--workers", "2"])
    assert str(info.value) == ('--workers 2 runs the sweep on Ray, which is not installed here: '
                               'pip install "lifelong[ray]" (or pip install ray); without '
                               '--workers/--address the runs go one after another in this process')
    assert "[1/" not in capsys.readouterr().out  # refused before any training
    with pytest.raises(CLIError, match="--workers must be >= 1, got 0"):
        main(["run", *GRID, "--no-save", "--workers", "0"])


def test_validation_scenario_holds_out_training_data_and_no_test_data() -> None:
    from lifelong.train.tune import validation_scenario

    sc = build_scenario("split-digits", BenchmarkOptions(), 0)
    val = validation_scenario(sc, 0.25, seed=0)
    for task, held in zip(sc.tasks, val.tasks):
        assert held.num_train + held.num_test == task.num_train  # train split in two
        # every validation row is a training row of the task (none is a test row)
        rows = torch.cat([held.train_x, held.test_x]).flatten(1)
        assert torch.equal(rows.unique(dim=0), task.train_x.flatten(1).unique(dim=0))
        for c in task.classes:  # stratified: ceil(0.25 n_c) of every class held out
            n = int((task.train_y == c).sum())
            assert int((held.test_y == c).sum()) == -(-n // 4)
    assert "validation" in val.info and val.name == sc.name


def test_tune_writes_a_config_that_run_takes(ray_session: Any, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "best.toml"
    res = main(["tune", "-b", "split-digits", "-m", "ewc", "--param", "ewc.lam=loguniform(1,1e4)",
                "--trials", "3", "-o", str(out), "train.epochs=1", "model.hidden=[16]"])
    assert len(res["trials"]) == 3 and 1 <= res["best"]["ewc.lam"] <= 1e4
    assert res["val_accuracy"] == max(r["val_accuracy"] for r in res["trials"]
                                      if r["tasks"] == 5)
    doc = tomllib.loads(out.read_text())
    assert doc["benchmark"] == "split-digits" and doc["method"] == "ewc"
    assert doc["ewc"]["lam"] == pytest.approx(res["best"]["ewc.lam"])
    assert doc["train"]["epochs"] == 1 and doc["model"]["hidden"] == [16]
    assert "the test set was not read" in out.read_text()
    run = main(["run", "-c", str(out), "--no-save", "--quiet"])[0]
    assert run["config"]["ewc"]["lam"] == pytest.approx(res["best"]["ewc.lam"])
    assert "test set is not read" in capsys.readouterr().out


@pytest.mark.parametrize("param, message", [
    ("ewc.lam=loguniform(0,10)", "--param ewc.lam=loguniform(0,10): need 0 < low < high"),
    ("ewc.lam=normal(1,2)", "expected KEY=DIST(ARGS) with DIST one of loguniform, uniform, "
                            "randint, choice, grid"),
    ("ewc.lamm=uniform(1,2)", "unknown option 'ewc.lamm'"),
])
def test_tune_refuses_bad_parameters_before_any_trial(param: str, message: str) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install \"lifelong[tune]\")")
    with pytest.raises(ValueError) as info:
        main(["tune", "-m", "ewc", "--param", param])
    assert message in str(info.value)


def test_tune_without_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("ray") else real(name, *a))
    with pytest.raises(CLIError, match=r'lifelong tune runs on Ray Tune, which is not installed '
                                       r'here: pip install "lifelong\[tune\]"'):
        main(["tune", "-m", "ewc", "--param", "ewc.lam=loguniform(1,10)"])
