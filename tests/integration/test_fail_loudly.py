"""Issue 19, "fail loudly, lose nothing": divergence stops a run and is recorded, ``--resume``
resumes a sweep, bad input is refused before training with the option and value as written, path
problems are one line, and the presentation (threads, progress lines, table, plots)."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
import torch

import lifelong.train.run as run_mod
from lifelong import cli
from lifelong.cli import main
from lifelong.config import make_config
from lifelong.data.layout import Layout
from lifelong.methods import registry
from lifelong.methods.base import Recipe
from lifelong.methods.registry import list_methods, register_method
from lifelong.nn.model import ModelConfig, build_model
from lifelong.report import load_runs, summarize, zoom_limits
from lifelong.terms.base import Term
from lifelong.train.loop import DivergenceError, TrainConfig, fit
from lifelong.train.run import execute

REPO = Path(__file__).resolve().parents[2]
FAST = ["-b", "synthetic", "--quiet", "train.epochs=1"]


def trained(out: str) -> bool:
    """Whether a run's progress line was printed (i.e. training started)."""
    return "[1/" in out


def table(out: str) -> list[str]:
    """The lines of the last results table printed in ``out`` (header, rule, rows)."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("benchmark "))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def strict_json(path: Path) -> Any:
    """Parses ``path``, failing on the bare NaN/Infinity tokens that are not JSON."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds a bare {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


class Boom(Term):
    """A loss that is NaN at one step of one task (0-based task, 1-based step)."""

    name = "boom"

    def __init__(self, task: int = 1, step: int = 3) -> None:
        self.task, self.step = task, step

    def loss(self, ctx: Any, batch: Any) -> torch.Tensor:
        bad = ctx.task_id == self.task and ctx.task_step + 1 == self.step
        return torch.tensor(math.nan if bad else 0.0)


@pytest.fixture
def boom_method(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A test-only method ``boom`` whose loss is NaN at step 3 of task 2."""
    list_methods()
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))

    @register_method("boom", description="test-only: NaN loss at step 3 of task 2")
    def build(_: None) -> Recipe:
        return Recipe(name="boom", terms=[Boom()])

    yield "boom"


# -------------------------------------------------------------------- 1. divergence is loud


def test_fit_stops_at_the_first_non_finite_loss(synthetic: Any) -> None:
    layout = Layout.for_scenario(synthetic, "task")
    torch.manual_seed(0)
    model = build_model(synthetic, layout, ModelConfig(hidden=(8,)))
    with pytest.raises(DivergenceError) as err:
        fit(model, synthetic, layout, Recipe("boom", terms=[Boom()]),
            TrainConfig(lr=0.01, batch_size=16, progress="off"))
    assert str(err.value) == (
        "the 'boom' loss is nan at step 3 of task 2/3: training diverged; the learning rate "
        "(train.lr=0.01) or a penalty's strength is likely too large")
    assert (err.value.task, err.value.step, err.value.term) == (1, 3, "boom")
    assert err.value.result is not None  # what was finished before: task 1's row
    R = err.value.result.accuracy["task"]
    assert not math.isnan(R[0, 0]) and math.isnan(R[1, 1])


@pytest.mark.parametrize("method", ["finetune", "dhp"])
def test_a_huge_learning_rate_fails_the_run_and_records_it(tmp_path: Path, method: str,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    # the issue's case: split-digits' own settings (MLP 100-100, SGD) at lr 1e6 gave ~50 %
    (res,) = main(["run", "-b", "split-digits", "-m", method, "train.lr=1e6", "--quiet",
                   "--threads", "1", "-o", str(tmp_path)])
    assert res["status"] == "failed"
    assert re.fullmatch(
        method + r" on split-digits \(task-IL, seed 0\): the 'ce' loss is (nan|inf) at step \d+ "
        r"of task 1/5: training diverged; the learning rate \(train\.lr=1e\+06\) or a penalty's "
        r"strength is likely too large", res["error"]), res["error"]
    captured = capsys.readouterr()
    assert f"lifelong: run failed: {res['error']}" in captured.err
    assert f"FAILED: {res['error']}" in captured.out
    saved = strict_json(tmp_path / "split-digits" / "task" / method / "seed0" / "result.json")
    assert saved["status"] == "failed" and saved["error"] == res["error"]
    assert saved["failure"]["task"] == 0 and saved["failure"]["term"] == "ce"
    assert table(captured.out)[2].split()[4:] == ["1", "failed", "failed", "failed", "failed"]


def test_a_failed_run_does_not_stop_the_sweep_and_exits_non_zero(
        tmp_path: Path, boom_method: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["lifelong", "run", *FAST, "-m", "boom", "finetune", "-o", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        cli.entry_point()
    assert exc.value.code == 1
    captured = capsys.readouterr()
    assert "[2/2] finetune on synthetic (task-IL, seed 0): average accuracy" in captured.out
    boom_row = next(line for line in table(captured.out) if " boom " in line)
    assert boom_row.split()[4:] == ["1", "failed", "failed", "failed", "failed"]
    assert captured.err.splitlines()[-2:] == [
        "lifelong: error: 1 of 2 runs failed:",
        "  boom on synthetic (task-IL, seed 0): the 'boom' loss is nan at step 3 of task 2/3: "
        "training diverged; the learning rate (train.lr=0.1) or a penalty's strength is likely "
        "too large"]
    saved = strict_json(tmp_path / "synthetic" / "task" / "boom" / "seed0" / "result.json")
    assert saved["status"] == "failed" and saved["accuracy"]["task"][1] == [None, None, None]
    assert saved["summary"]["task"]["average_accuracy"] is None  # NaN became null
    runs = load_runs([tmp_path])  # the report reads failed runs and shows them as such
    rows = {row.method: row for row in summarize(runs)}
    assert rows["boom"].failed_seeds == [0] and rows["finetune"].failed_seeds == []


# -------------------------------------------------------------------- 2. --resume resumes a sweep


def _crash_after_first_task(monkeypatch: pytest.MonkeyPatch) -> None:
    real_fit = run_mod.fit

    def crashing_fit(*args: Any, checkpoint: Any = None, **kwargs: Any) -> Any:
        def ck(state: dict[str, Any]) -> None:
            checkpoint(state)
            raise KeyboardInterrupt  # a crash after the first task's checkpoint

        return real_fit(*args, checkpoint=ck, **kwargs)

    monkeypatch.setattr(run_mod, "fit", crashing_fit)


def test_resume_skips_finished_continues_interrupted_and_starts_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    reference = main(["run", *FAST, "-m", "finetune", "--seeds", "0", "1", "2", "--no-save"])
    out = str(tmp_path)
    main(["run", *FAST, "-m", "finetune", "--seeds", "0", "-o", out])
    done = tmp_path / "synthetic" / "task" / "finetune" / "seed0" / "result.json"
    before = done.read_bytes()
    real_fit = run_mod.fit
    _crash_after_first_task(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        execute(make_config("synthetic", "finetune", 1, overrides={"train.epochs": 1,
                                                                   "train.progress": "off"}), out)
    monkeypatch.setattr(run_mod, "fit", real_fit)
    calls: list[Any] = []

    def spy(*args: Any, resume: Any = None, **kwargs: Any) -> Any:
        calls.append(None if resume is None else resume["task"])
        return real_fit(*args, resume=resume, **kwargs)

    monkeypatch.setattr(run_mod, "fit", spy)
    capsys.readouterr()
    results = main(["run", *FAST, "-m", "finetune", "--seeds", "0", "1", "2", "-o", out,
                    "--resume"])
    printed = capsys.readouterr().out
    assert calls == [0, None]  # seed 1 continued after task 1, seed 2 started, seed 0 skipped
    assert done.read_bytes() == before
    assert "resume: 1 finished (skipped), 1 interrupted (continued), 1 to start" in printed
    assert "[1/3] finetune on synthetic (task-IL, seed 0): average accuracy" in printed
    assert "finished before, skipped" in printed
    assert [r["accuracy"] for r in results] == [r["accuracy"] for r in reference]
    row = summarize(results)[0]
    assert row.seeds == [0, 1, 2]
    assert sorted(p.name for p in done.parents[1].iterdir()) == ["seed0", "seed1", "seed2"]


def test_resume_with_a_corrupted_checkpoint_names_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path)
    _crash_after_first_task(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        main(["run", *FAST, "-m", "finetune", "-o", out])
    partial = tmp_path / "synthetic" / "task" / "finetune" / "seed0.partial"
    checkpoint = partial / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    with pytest.raises(ValueError) as err:
        main(["run", *FAST, "-m", "finetune", "joint", "-o", out, "--resume"])
    message = str(err.value)
    assert message.startswith(f"cannot resume from {checkpoint}: the checkpoint is truncated or "
                              "corrupted (")
    assert message.endswith(f"); delete {partial} to start that run from its beginning")
    assert "\n" not in message and "Traceback" not in message
    assert not trained(capsys.readouterr().out)  # refused before joint trained


def test_resume_refuses_a_finished_run_of_another_configuration(tmp_path: Path) -> None:
    main(["run", *FAST, "-m", "finetune", "-o", str(tmp_path)])
    with pytest.raises(ValueError) as err:
        main(["run", *FAST, "-m", "finetune", "train.lr=0.5", "-o", str(tmp_path), "--resume"])
    folder = tmp_path / "synthetic" / "task" / "finetune" / "seed0"
    assert str(err.value) == (
        f"cannot resume into {folder}: it holds a finished run of another configuration "
        "(train.lr is 0.1 there, 0.5 here); choose another --out, or run without --resume to "
        "replace it")


# -------------------------------------------------------------------- 3. refused before training


@pytest.mark.parametrize("argv, message", [
    (["-m", "finetune", "--seeds", "0", "0"],
     "seed 0 is given twice (--seeds 0 0); each seed runs once"),
    (["-m", "finetune", "finetune"],
     "method 'finetune' is given twice (-m finetune finetune); each method runs once per seed"),
    (["-m", "dhp+ewc", "ewc + dhp"],
     "methods 'dhp+ewc' and 'ewc+dhp' are the same composition (-m dhp+ewc ewc + dhp); give "
     "one of them"),
    (["-m", "finetune+joint"],
     "method 'finetune+joint' contradicts itself: 'finetune' trains on each new task's data "
     "only, 'joint' on the data of every task so far; compare them as two methods "
     "(-m finetune joint)"),
    (["-m", "finetune+ewc"],
     "method 'finetune+ewc': 'finetune' is plain training and adds nothing to 'ewc'; run 'ewc'"),
    (["-m", "joint+ewc"],
     "method 'joint+ewc': 'joint' trains on the data of every task so far, so there is nothing "
     "to forget and the penalty of 'ewc' only holds it back; compare them as two methods "
     "(-m joint ewc)"),
    (["-m", "ewc+online-ewc"],
     "method 'ewc+online-ewc': 'ewc' and 'online-ewc' are two forms of one Fisher penalty "
     "(online EWC keeps one running Fisher instead of one per task); use one of them"),
    (["-m", "mas-local+mas"],
     "method 'mas-local+mas': 'mas' and 'mas-local' are two estimates of one importance (global "
     "and local); use one of them"),
    (["-m", "finetune", "ewc.lamm=5"],
     "unknown option 'ewc.lamm'; valid keys: ewc.lam, ewc.variant, ewc.fisher_samples, "
     "ewc.fisher_batch, ewc.penalize_plastic"),
    (["-m", "finetune", "ewc.lam=-5"], "ewc.lam must be >= 0 (the penalty's strength), got -5"),
    (["-m", "ewc", "ewc.lam=-5"], "ewc.lam must be >= 0 (the penalty's strength), got -5"),
    (["-m", "online-ewc", "online-ewc.gamma=1.5"], "online-ewc.gamma must lie in [0, 1], got 1.5"),
    (["-m", "ewc", "ewc.variant=fishy"],
     "ewc.variant: unknown Fisher variant fishy; valid: true, sample, empirical, predicted, "
     "batched"),
    (["-m", "si", "si.xi=0"], "si.xi must be > 0, got 0"),
    (["-m", "dhp", "dhp.eta_init=2"], "dhp.eta_init must lie in [0, 1], got 2"),
    (["-m", "finetune", "train.lr=nan"], "train.lr: expected a finite number, got 'nan'"),
    (["-m", "finetune", "train.lr=inf"], "train.lr: expected a finite number, got 'inf'"),
    (["-m", "finetune", "train.lr=-Infinity"],
     "train.lr: expected a finite number, got '-Infinity'"),
    (["-m", "ewc", "ewc.lam=inf"], "ewc.lam: expected a finite number, got 'inf'"),
    (["-m", "finetune", "data.train_fraction=nan"],
     "data.train_fraction: expected a finite number, got 'nan'"),
    (["-m", "finetune", "train.epochs=inf"], "train.epochs: expected an integer, got 'inf'"),
    (["-m", "finetune", "train.lr=0"], "train.lr must be > 0, got 0"),
    (["-m", "finetune", "train.batch_size=0"], "train.batch_size must be >= 1, got 0"),
    (["-m", "finetune", "model.dropout=1"], "model.dropout must lie in [0, 1), got 1"),
    (["-m", "finetune", "trian.epochs=1"],
     "unknown section 'trian' in 'trian.epochs' (did you mean 'train'?); valid: data, model, "
     "train or a method's name (" + ", ".join(list_methods()) + ")"),
    (["-m", "finetune", "--resume", "--no-save"],
     "--resume needs the run folders: it cannot be combined with --no-save"),
])
def test_refused_before_training_with_the_option_and_value_as_written(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError) as err:
        main(["run", *FAST, "--no-save", *argv])
    assert str(err.value) == message
    assert not trained(capsys.readouterr().out)


def test_refused_in_a_configuration_file_too(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text('benchmark = "synthetic"\nseeds = [1, 1]\n[train]\nlr = nan\n')
    with pytest.raises(ValueError, match=r"^train\.lr: expected a finite number, got nan$"):
        main(["run", "-c", str(path), "--no-save", "-m", "finetune", "--seeds", "1"])
    path.write_text('benchmark = "synthetic"\nseeds = [1, 1]\n')
    with pytest.raises(ValueError, match=r"^seed 1 is given twice \(the configuration files' "
                                         r"seeds\); each seed runs once$"):
        main(["run", "-c", str(path), "--no-save", "-m", "finetune"])


def test_a_method_expression_is_normalised_before_it_names_a_folder(tmp_path: Path) -> None:
    (res,) = main(["run", *FAST, "-m", "dhp + ewc", "-o", str(tmp_path)])
    assert res["method"] == "dhp+ewc"
    assert (tmp_path / "synthetic" / "task" / "dhp+ewc" / "seed0" / "result.json").is_file()
    assert make_config("synthetic", " ewc ").method == "ewc"


# -------------------------------------------------------------------- 4. paths


def test_out_naming_a_file_or_an_unwritable_folder(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "runs.txt"
    file.write_text("not a folder")
    with pytest.raises(ValueError) as err:
        main(["run", *FAST, "-m", "finetune", "-o", str(file)])
    assert str(err.value) == (f"--out {file} is a file, not a folder: name a folder for the run "
                              "folders (e.g. -o runs)")
    below = file / "runs"
    with pytest.raises(ValueError) as err:
        main(["run", *FAST, "-m", "finetune", "-o", str(below)])
    assert str(err.value) == (f"cannot write to --out {below} (Not a directory): choose a "
                              "writable folder with -o DIR")
    assert not trained(capsys.readouterr().out)


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    with pytest.raises(ValueError) as err:
        main(["run", "-b", "split-mnist", "-m", "finetune", "--no-save", "--download"])
    assert str(err.value) == (
        f"cannot download into the dataset cache {blocker / 'lifelong'} (Not a directory): pass "
        "--data-dir DIR naming a writable folder, or put the dataset files there yourself")


def test_gunzipped_idx_files_are_named_in_the_not_found_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lifelong.data.datasets import DatasetNotFoundError, find_data_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"")
    with pytest.raises(DatasetNotFoundError) as err:
        find_data_dir("mnist", tmp_path / "data")
    message = str(err.value)
    assert re.search(re.escape(str(folder)) + r" +\(holds the files gunzipped; lifelong reads "
                     r"them gzipped \(\*\.gz\)\)", message), message
    assert (f"Found {folder / 'train-images-idx3-ubyte'} uncompressed where "
            f"train-images-idx3-ubyte.gz is expected: lifelong reads the gzipped IDX files "
            f"(their md5 is checked); compress them again with 'gzip {folder}/*-ubyte', or "
            "download them.") in message


def test_report_ignores_unfinished_folders_and_names_an_undecodable_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", *FAST, "-m", "finetune", "-o", str(tmp_path)])
    folder = tmp_path / "synthetic" / "task" / "finetune"
    for leftover in ("seed0.partial", "seed0.old-123", ".seed0.tmp-9"):
        (folder / leftover).mkdir()
        (folder / leftover / "result.json").write_text((folder / "seed0" / "result.json")
                                                       .read_text())
    runs = main(["report", str(tmp_path)])
    assert [r["_path"] for r in runs] == [str(folder / "seed0" / "result.json")]
    bad = tmp_path / "other" / "result.json"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xfe\x00\x9c garbage")
    with pytest.raises(ValueError) as err:
        main(["report", str(tmp_path)])
    assert str(err.value) == (f"{bad}: malformed lifelong.run/1 result: not UTF-8 text (invalid "
                              "start byte at byte 0); delete the run folder, or run it again")


# -------------------------------------------------------------------- 5. threads


def test_default_threads_on_two_cores_is_one_and_is_recorded(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (res,) = main(["run", *FAST, "-m", "finetune", "--no-save"])
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert res["threads"] == 1
    assert "1 torch thread (the default on 2 cores; --threads N to change)" in \
        capsys.readouterr().out


# -------------------------------------------------------------------- 6. presentation


def test_one_line_per_task_when_output_is_piped(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "-b", "synthetic", "-m", "ewc", "--no-save", "train.epochs=1"])
    # on stderr, like the progress bar (which shows on a terminal only)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  ewc@")]
    assert len(lines) == 3
    for k, line in enumerate(lines, start=1):
        assert re.fullmatch(rf"  ewc@synthetic/s0 task {k}/3: \d+\.\d s, loss [0-9.e+-]+ "
                            r"\(ce [0-9.e+-]+, ewc [0-9.e+-]+\)", line), line


def test_table_shows_trained_rows_first_and_one_seed_without_std(
        capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", *FAST, "-m", "finetune", "--no-save", "-s", "task"])
    lines = table(capsys.readouterr().out)
    assert lines[2].split()[1:4] == ["task", "finetune", "task"]
    assert lines[3].split()[1:4] == ["class", "finetune", "task"]
    assert "±" not in "\n".join(lines)


def test_report_writes_a_loss_curve_per_run(tmp_path: Path) -> None:
    main(["run", *FAST, "-m", "finetune", "ewc", "-o", str(tmp_path / "runs")])
    main(["report", str(tmp_path / "runs"), "-o", str(tmp_path / "report")])
    names = sorted(p.name for p in (tmp_path / "report").glob("loss-curve_*.png"))
    assert names == ["loss-curve_synthetic_task_ewc_seed0.png",
                     "loss-curve_synthetic_task_finetune_seed0.png"]


def test_accuracy_curves_zoom_to_the_data() -> None:
    assert zoom_limits([90.0, 95.0, math.nan]) == (85.0, 100.0)
    assert zoom_limits([40.0, 60.0]) == (35.0, 65.0)
    assert zoom_limits([math.nan]) == (0.0, 100.0)


def test_package_description_lists_only_what_exists() -> None:
    description = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["description"]
    for present in ("split/permuted/rotated", "MAS-local", "DHP-Softmax", "finetune-fc",
                    "feature-extraction", "joint", "metrics", "CLI", "reports", "LwF",
                    "distillation", "iCaRL", "BiC", "Hebbian", "TOPIC"):
        assert present in description
    for method in ("lwf", "icarl", "bic", "topic", "hebbian-prototypes"):  # named: they exist
        assert method in list_methods()
