"""The command line (lifelong.cli): errors before training, run folders, reports, overrides,
configuration files and the one-line error of the console entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lifelong.cli import main
from lifelong.config import RunConfig, make_config
from lifelong.data.scenarios import get_benchmark, list_benchmarks
from lifelong.methods.registry import get_method, list_methods

REPO = Path(__file__).resolve().parents[2]
FAST = ["-b", "synthetic", "--quiet"]


def trained(out: str) -> bool:
    """Whether a run's progress line was printed (i.e. training started)."""
    return "[1/" in out


# -------------------------------------------------------------------- errors before training


def test_unknown_benchmark_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError) as err:
        main(["run", "-b", "nope", "-m", "finetune", "--no-save"])
    msg = str(err.value)
    assert msg.startswith("unknown benchmark 'nope'; valid benchmarks:")
    assert all(name in msg for name in list_benchmarks())
    assert not trained(capsys.readouterr().out)


def test_unknown_method_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError) as err:
        main(["run", *FAST, "-m", "finetune", "nope", "--no-save"])
    msg = str(err.value)
    assert msg.startswith("unknown method 'nope'; valid methods:")
    assert all(name in msg for name in list_methods())
    assert "dhp+ewc" in msg  # says how to combine
    assert not trained(capsys.readouterr().out)  # finetune, listed first, did not start


def test_unknown_setting_flag_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse validates -s itself: usage error, exit status 2, choices listed
    with pytest.raises(SystemExit) as exc:
        main(["run", *FAST, "-s", "sideways", "--no-save"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'sideways'" in err
    assert all(s in err for s in ("'task'", "'domain'", "'class'"))


def test_unknown_setting_from_an_override_lists_the_valid_ones(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown setting 'sideways'; valid settings: task, "
                                         "domain, class"):
        main(["run", *FAST, "-m", "finetune", "--no-save", "setting=sideways"])
    assert not trained(capsys.readouterr().out)


def test_incompatible_choices_fail_before_training(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="model.head=multi does not apply to the "
                                         "domain-incremental setting"):
        main(["run", *FAST, "-m", "finetune", "-s", "domain", "--no-save", "model.head=multi"])
    with pytest.raises(ValueError, match="unknown option 'train.lrr'"):
        main(["run", *FAST, "-m", "finetune", "joint", "--no-save", "train.lrr=1"])
    assert not trained(capsys.readouterr().out)


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "zero"], "--seeds takes integers, got 'zero'"),
    (["--set", "train.lr"], "expected key=value, got 'train.lr'"),
    (["train.lr"], "expected key=value, got 'train.lr'"),
])
def test_malformed_arguments(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        main(["run", *FAST, "-m", "finetune", "--no-save", *argv])


def test_entry_point_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lifelong", "run", "-b", "nope"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lifelong: error: unknown benchmark 'nope'; valid benchmarks:")
    assert "split-digits" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "runs").exists()


# -------------------------------------------------------------------- list


def test_list_shows_benchmarks_methods_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    res = main(["list"])
    out = capsys.readouterr().out
    assert res == {"benchmarks": list_benchmarks(), "methods": list_methods()}
    for name in list_benchmarks():
        assert f"  {name} " in out
        assert get_benchmark(name).description in out
    assert "split-digits" in out and "[embedded, no download]" in out
    for name in list_methods():
        spec = get_method(name)
        assert f"  {name} " in out
        if spec.hparams is not None:
            hp = spec.default_hparams()
            for field, value in vars(hp).items():
                assert f"{field} = {value!r}" in out, (name, field)
    # the options of every section with their defaults
    for line in ("lr = 0.01", "batch_size = 64", "iterations = 0", "hidden = (256, 256)",
                 "head = 'auto'", "normalize = False", "class_order = 'natural'"):
        assert line in out
    assert "train.lr=0.01" in out  # the split-mnist protocol line


# -------------------------------------------------------------------- run folders and report


def test_run_writes_one_folder_atomically(tmp_path: Path) -> None:
    results = main(["run", *FAST, "-m", "finetune", "-o", str(tmp_path)])
    folder = tmp_path / "synthetic" / "task" / "finetune" / "seed0"
    assert results[0]["path"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["result.json"]
    stored = json.loads((folder / "result.json").read_text())
    assert stored["format"] == "lifelong.run/1"
    assert stored["accuracy"] == results[0]["accuracy"]
    assert stored["config"] == results[0]["config"]
    everything = [p.name for p in tmp_path.rglob("*")]
    assert not [n for n in everything if ".partial" in n or ".tmp" in n or ".old" in n]
    # running again replaces the folder, leaving nothing behind
    main(["run", *FAST, "-m", "finetune", "-o", str(tmp_path), "train.epochs=1"])
    again = json.loads((folder / "result.json").read_text())
    assert again["config"]["train"]["epochs"] == 1
    assert sorted(p.name for p in (tmp_path / "synthetic" / "task" / "finetune").iterdir()) == [
        "seed0"]


def test_report_prints_the_table_and_writes_pngs(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    main(["run", *FAST, "-m", "finetune", "joint", "--seeds", "0", "1", "-o", str(runs),
          "train.epochs=1"])
    capsys.readouterr()
    out_dir = tmp_path / "report"
    loaded = main(["report", str(runs), "-o", str(out_dir)])
    out = capsys.readouterr().out
    assert len(loaded) == 4
    assert "finetune" in out and "joint" in out and "synthetic" in out and "± " in out
    assert "wrote" in out and str(out_dir) in out
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert "accuracy-matrix_synthetic_task_finetune.png" in pngs
    assert "accuracy-matrix_synthetic_task_joint.png" in pngs
    assert "average-accuracy_synthetic_task.png" in pngs
    for name in pngs:
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out_dir / "table.txt").read_text().strip() != ""


# -------------------------------------------------------------------- overrides and config files


def test_overrides_after_seeds_are_applied() -> None:
    results = main(["run", *FAST, "-m", "finetune", "--no-save", "--seeds", "0", "1",
                    "train.epochs=1", "model.hidden=8"])
    assert [r["seed"] for r in results] == [0, 1]
    for r in results:
        assert r["config"]["train"]["epochs"] == 1
        assert r["config"]["model"]["hidden"] == [8]
        assert r["losses"]["ce"][-1][0] == 15  # 3 tasks x 5 steps x 1 epoch


def test_overrides_after_methods_and_with_set() -> None:
    results = main(["run", *FAST, "-m", "finetune", "train.epochs=1", "--no-save",
                    "--set", "train.lr=0.05"])
    assert [r["method"] for r in results] == ["finetune"]
    assert results[0]["config"]["train"]["epochs"] == 1
    assert results[0]["config"]["train"]["lr"] == 0.05


def test_threads_option_applies_during_the_run_and_is_restored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import lifelong.train.run as run

    seen = []
    original = run.execute

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(run, "execute", spy)
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    main(["run", *FAST, "-m", "finetune", "--no-save", "--threads", str(target),
          "train.epochs=1"])
    assert seen == [target] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="--threads must be >= 1, got 0"):
        main(["run", *FAST, "-m", "finetune", "--no-save", "--threads", "0"])


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text('benchmark = "synthetic"\nmethods = ["finetune", "joint"]\nseeds = [3]\n'
                    'setting = "class"\n[train]\nepochs = 1\nlr = 0.2\n[model]\nhidden = [8, 8]\n')
    results = main(["run", "-c", str(path), "--no-save", "--quiet", "train.lr=0.3"])
    assert [(r["method"], r["seed"], r["setting"]) for r in results] == [
        ("finetune", 3, "class"), ("joint", 3, "class")]
    for r in results:
        assert r["config"]["train"]["epochs"] == 1
        assert r["config"]["train"]["lr"] == 0.3  # the command line beats the file
        assert r["config"]["model"]["hidden"] == [8, 8]
        R = np.array(r["accuracy"]["class"], dtype=float)
        assert R.shape == (3, 3)


def test_config_files_layer_then_overrides_then_flags(tmp_path: Path) -> None:
    base = tmp_path / "protocol.toml"
    base.write_text('benchmark = "synthetic"\nmethod = "finetune"\nseeds = [3]\n'
                    'setting = "class"\n[train]\nepochs = 1\nlr = 0.2\n[model]\nhidden = [8, 8]\n')
    layer = tmp_path / "method.toml"
    layer.write_text('method = "joint"\nsetting = "task"\n[train]\nlr = 0.3\n'
                     '[model]\nhidden = [6]\n')
    (r,) = main(["run", "-c", str(base), "-c", str(layer), "--no-save", "--quiet",
                 "model.hidden=4"])
    assert (r["method"], r["seed"], r["setting"]) == ("joint", 3, "task")  # the later file
    assert r["config"]["train"]["lr"] == 0.3  # the later file
    assert r["config"]["train"]["epochs"] == 1  # the earlier file's key the later one leaves
    assert r["config"]["model"]["hidden"] == [4]  # a dotted override beats both files
    (r,) = main(["run", "-c", str(layer), "-c", str(base), "--no-save", "--quiet",
                 "--set", "setting=domain"])
    assert (r["method"], r["setting"]) == ("finetune", "domain")  # override beats the files
    assert r["config"]["train"]["lr"] == 0.2 and r["config"]["model"]["hidden"] == [8, 8]
    # flags beat files and overrides
    (r,) = main(["run", "-c", str(base), "-c", str(layer), "--no-save", "--quiet", "-m",
                 "finetune", "--seeds", "1", "-s", "class", "setting=domain", "train.lr=0.4"])
    assert (r["method"], r["seed"], r["setting"]) == ("finetune", 1, "class")
    assert r["config"]["train"]["lr"] == 0.4


def test_device_flag_sets_train_device(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text('[train]\ndevice = "mps"\nepochs = 1\n')
    (r,) = main(["run", *FAST, "-m", "finetune", "--no-save", "-c", str(path), "--device", "cpu",
                 "train.device=cuda"])
    assert r["config"]["train"]["device"] == "cpu"  # the flag beats the file and the override


class _StopBeforeData(Exception):
    """Raised instead of building a scenario: the test needs the resolved configurations only."""


def test_shipped_protocol_and_method_files_layer_on_the_command_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``-c protocol -c X -m dhp+X`` gives the composition X's table (resolved, not run)."""
    from lifelong import cli

    made: list[RunConfig] = []

    def spy(*args: Any) -> RunConfig:
        made.append(make_config(*args))
        return made[-1]

    def stop(*args: Any) -> None:
        raise _StopBeforeData

    monkeypatch.setattr(cli, "make_config", spy)
    monkeypatch.setattr(cli, "build_scenario", stop)
    configs = REPO / "configs"
    with pytest.raises(_StopBeforeData):
        main(["run", "-c", str(configs / "split-mnist-dhp.toml"), "-c",
              str(configs / "split-mnist-dhp" / "ewc.toml"), "-m", "dhp+ewc", "--no-save",
              "--device", "cpu"])
    assert [(c.method, c.seed) for c in made] == [("dhp+ewc", s) for s in range(5)]
    for cfg in made:
        assert (cfg.benchmark, cfg.setting) == ("split-mnist", "task")
        assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (0.01, 64, 10)
        assert cfg.hparams["ewc"].lam == 100.0 and cfg.train.device == "cpu"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["run", "-c", "/nonexistent/exp.toml", "--no-save"])
    good = tmp_path / "good.toml"
    good.write_text("[train]\nepochs = 1\n")
    with pytest.raises(FileNotFoundError, match="config file '/nonexistent/second.toml' does"):
        main(["run", "-c", str(good), "-c", "/nonexistent/second.toml", "--no-save"])
