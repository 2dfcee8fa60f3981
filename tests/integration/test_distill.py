"""Knowledge distillation as model compression (``lifelong distill``, lifelong.train.distill):
the transfer set, the bias correction, the ensemble, the cross-entropy's weight, and the command
end to end on the embedded digits (files written, results' shapes, --resume reusing the teacher,
errors before training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lifelong import Recipe, TrainConfig, compose, fit
from lifelong.cli import main
from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario, build_scenario
from lifelong.nn import ModelConfig, build_model
from lifelong.report import load_runs, summarize
from lifelong.train.distill import Ensemble, choose_bias, transfer_split

TINY = ["distill", "-b", "digits", "--teacher-hidden", "48", "--student-hidden", "16",
        "--teacher-epochs", "2", "--student-epochs", "2", "--jitter", "1", "--lr", "0.01",
        "--batch-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def digits_task() -> Scenario:
    return build_scenario("digits")


def test_transfer_split_holds_out_subsamples_and_omits(digits_task: Scenario) -> None:
    task = digits_task.tasks[0]
    assert task.classes == tuple(range(10)) and digits_task.default_setting == "class"
    transfer, held = transfer_split(task, 0.5, (3,), 100, seed=0)
    assert held.numel() == 100
    assert not set(held.tolist()) & set(transfer.tolist())
    assert 3 not in task.train_y[transfer].tolist()
    assert 3 in task.train_y[held].tolist()
    # half of every other class of the rest (rounded up), none of class 3
    rest = torch.ones(task.num_train, dtype=torch.bool)
    rest[held] = False
    for c in range(10):
        n_c = int((task.train_y[rest] == c).sum())
        kept = int((task.train_y[transfer] == c).sum())
        assert kept == (0 if c == 3 else -(-n_c // 2)), c
    again = transfer_split(task, 0.5, (3,), 100, seed=0)
    assert torch.equal(again[0], transfer) and torch.equal(again[1], held)
    assert not torch.equal(transfer_split(task, 0.5, (3,), 100, seed=1)[1], held)
    full, none = transfer_split(task)
    assert torch.equal(full, torch.arange(task.num_train)) and none.numel() == 0


def test_transfer_split_errors(digits_task: Scenario) -> None:
    task = digits_task.tasks[0]
    with pytest.raises(ValueError, match=f"holdout={task.num_train} takes all"):
        transfer_split(task, holdout=task.num_train)
    with pytest.raises(ValueError, match="transfer set is empty"):
        transfer_split(task, omit_classes=tuple(range(10)))


def test_choose_bias_finds_the_smallest_best_value() -> None:
    # class 2 is under-predicted by 1.5: samples of class 2 whose logit 2 is 1 below the best
    logits = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.2], [3.0, 0.0, 0.0],
                           [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    targets = torch.tensor([2, 2, 0, 1, 2])
    value, errors = choose_bias(logits, targets, [2], torch.arange(0, 31) * 0.1)
    # 1.3 is the smallest value that fixes both (needs > 1.2) and breaks no other (< 2.0)
    assert value == pytest.approx(1.3) and errors == 0
    value, errors = choose_bias(logits, targets, [2], torch.tensor([0.0, 5.0]))
    assert value == 0.0 and errors == 2  # 5 breaks two, 0 leaves two: the smaller value wins


def test_ensemble_averages_its_members_logits(digits_task: Scenario) -> None:
    layout = Layout.for_scenario(digits_task, "class")
    torch.manual_seed(0)
    members = [build_model(digits_task, layout, ModelConfig(hidden=(8,))) for _ in range(3)]
    x = digits_task.tasks[0].test_x[:5]
    expected = sum(m(x) for m in members) / 3
    torch.testing.assert_close(Ensemble(members)(x), expected)
    torch.testing.assert_close(Ensemble(members)(x, units=slice(2, 5)), expected[:, 2:5])


def test_hard_weight_zero_trains_nothing_and_compose_refuses_two(digits_task: Scenario) -> None:
    layout = Layout.for_scenario(digits_task, "class")
    torch.manual_seed(0)
    model = build_model(digits_task, layout, ModelConfig(hidden=(8,)))
    before = [p.detach().clone() for p in model.parameters()]
    res = fit(model, digits_task, layout, Recipe("none", hard_weight=0.0),
              TrainConfig(iterations=3, log_every=1, progress="off"), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert [v for _, v in res.losses["ce"]] == [0.0, 0.0, 0.0]
    assert compose([Recipe("a", hard_weight=0.5), Recipe("b")]).hard_weight == 0.5
    with pytest.raises(ValueError, match="two weights of the cross-entropy"):
        compose([Recipe("a", hard_weight=0.5), Recipe("b", hard_weight=0.2)])


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_distill_end_to_end_writes_runs_and_resumes_the_teacher(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    results = main([*TINY, "--seeds", "0", "1", "-o", str(out), "--omit-classes", "3",
                    "--holdout", "100"])
    printed = capsys.readouterr().out
    assert [r["distill"]["role"] for r in results] == ["teacher", "student", "distilled"] * 2
    names = ["teacher", "student-no3-h100", "distilled-no3-h100"]
    assert _files(out) == sorted(f"digits/class/{n}/seed{s}/{f}" for n in names for s in (0, 1)
                                 for f in ("model.pt", "result.json"))
    for r in results:
        saved = json.loads((Path(r["path"]) / "result.json").read_text())
        assert saved["format"] == "lifelong.run/1" and saved["status"] == "finished"
        assert saved["setting"] == "class" and len(saved["accuracy"]["class"]) == 1
        test = saved["distill"]["test"]
        assert test["size"] == 445 and len(test["class_errors"]) == 10
        assert sum(test["class_errors"]) == test["errors"]
        assert saved["accuracy"]["class"][0][0] == pytest.approx(1 - test["errors"] / 445)
        role = saved["distill"]["role"]
        if role == "teacher":
            assert saved["distill"]["train_size"] == 1352 and "bias_correction" not in \
                saved["distill"]
        else:  # 1352 training digits minus 100 held out minus the threes
            assert saved["tasks"][0]["train_size"] == saved["distill"]["train_size"] < 1252
            bias = saved["distill"]["bias_correction"]
            assert bias["units"] == [3] and 0 <= bias["value"] <= 10
            assert bias["heldout_errors"] <= bias["heldout_errors_before"]
        assert ("kd" in saved["losses"]) == (role == "distilled")
    state = torch.load(Path(results[0]["path"]) / "model.pt", weights_only=True)
    assert state["backbone.layers.0.weight"].shape == (48, 64)
    assert "errors on class 3" in printed and "after bias" in printed
    # the same report tooling as any run: one row per model
    rows = summarize(load_runs([str(out)]))
    assert {row.method for row in rows} == set(names)
    # --resume reuses every finished run; the distilled student is retrained identically from
    # the reloaded teacher when its own folder is gone
    distilled0 = Path(results[2]["path"])
    for f in distilled0.iterdir():
        f.unlink()
    distilled0.rmdir()
    again = main([*TINY, "--seeds", "0", "-o", str(out), "--omit-classes", "3", "--holdout",
                  "100", "--resume"])
    assert [r.get("skipped", False) for r in again] == [True, True, False]
    assert again[2]["distill"]["test"] == results[2]["distill"]["test"]
    # a different teacher into the same folder is refused, naming the difference
    with pytest.raises(ValueError, match="teacher_hidden|model.hidden"):
        main([*TINY[:3], "--teacher-hidden", "32", *TINY[5:], "--seeds", "0", "-o", str(out),
              "--resume"])


@pytest.mark.parametrize("args, message", [
    (["--omit-classes", "12"], "digits has no class 12"),
    (["-b", "split-digits"], "needs a one-task benchmark"),
    (["-T", "0"], "temperature must be positive, got 0.0"),
    (["--transfer-fraction", "0"], r"transfer_fraction must lie in \(0, 1\], got 0.0"),
    (["--soft-weight", "0", "--hard-weight", "0"], "would learn nothing"),
    (["--seeds", "1", "1"], "seed 1 is given twice"),
])
def test_distill_errors_before_training(tmp_path: Path, args: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=message):
        main([*TINY, "--no-save", *args])
    assert "test errors of" not in capsys.readouterr().err
