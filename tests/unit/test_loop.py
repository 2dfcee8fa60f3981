"""The training loop (lifelong.train.loop): determinism, hooks, data regimes, freezing, evaluation.

Hook order (DESIGN.md, "Terms and the loop"): on_task_start, loss (every term), data-loss
backward, on_after_backward, penalty backward, optimizer.step, on_after_step; on_task_end after
the last step of a task and before its evaluation.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.config import make_config
from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario
from lifelong.methods.base import Recipe
from lifelong.methods.registry import build_recipe
from lifelong.nn.model import ContinualModel, ModelConfig, build_model
from lifelong.terms.base import Batch, Term
from lifelong.train.loop import TrainConfig, TrainContext, evaluate, fit
from lifelong.train.run import execute


def prepare(scenario: Scenario, setting: str = "task", method: str = "finetune", seed: int = 0,
            hidden: tuple[int, ...] = (16,), **train: Any
            ) -> tuple[Layout, Recipe, ContinualModel, TrainConfig]:
    layout = Layout.for_scenario(scenario, setting)
    recipe = build_recipe(method, None, setting)
    torch.manual_seed(seed)
    model = build_model(scenario, layout, ModelConfig(hidden=hidden))
    config = TrainConfig(progress="off", **{"lr": 0.1, "batch_size": 16, "epochs": 1, **train})
    return layout, recipe, model, config


def same_matrices(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


class Recorder(Term):
    """Logs every hook call into a shared list as ``(name, event)``."""

    def __init__(self, name: str, log: list[tuple[str, str]], penalty: bool = False):
        self.name = name
        self.penalty = penalty
        self.log = log
        self.steps = 0
        self.batches: list[Batch] = []
        self.task_steps: list[int] = []

    def on_task_start(self, ctx: TrainContext) -> None:
        self.log.append((self.name, "task_start"))

    def loss(self, ctx: TrainContext, batch: Batch) -> Tensor | None:
        self.log.append((self.name, "loss"))
        self.batches.append(batch)
        return None

    def on_after_backward(self, ctx: TrainContext) -> None:
        self.log.append((self.name, "after_backward"))

    def on_after_step(self, ctx: TrainContext) -> None:
        self.log.append((self.name, "after_step"))
        self.steps += 1

    def on_task_end(self, ctx: TrainContext) -> None:
        self.log.append((self.name, "task_end"))
        self.task_steps.append(ctx.task_step)


# ------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("bench_name, epochs", [("synthetic", 2), ("split-digits", 2)])
def test_same_seed_gives_bit_identical_results(bench_name: str, epochs: int) -> None:
    overrides = {"train.progress": "off", "train.epochs": epochs}
    runs = [execute(make_config(bench_name, "finetune", 0, "task", overrides), None)
            for _ in range(2)]
    a, b = runs
    for s in a["accuracy"]:
        ra, rb = np.array(a["accuracy"][s], dtype=float), np.array(b["accuracy"][s], dtype=float)
        assert np.array_equal(ra, rb, equal_nan=True), s
    assert a["losses"] == b["losses"]  # exact float equality of every logged point


def test_same_seed_same_model_parameters(synthetic: Scenario) -> None:
    params = []
    for _ in range(2):
        layout, recipe, model, config = prepare(synthetic, "class", seed=4)
        fit(model, synthetic, layout, recipe, config, seed=4)
        params.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(p, q) for p, q in zip(*params))


def test_different_seed_gives_different_results() -> None:
    overrides = {"train.progress": "off", "train.epochs": 2}
    for benchmark in ("synthetic", "split-digits"):
        a = execute(make_config(benchmark, "finetune", 0, "class", overrides), None)
        b = execute(make_config(benchmark, "finetune", 1, "class", overrides), None)
        assert a["losses"]["ce"] != b["losses"]["ce"]
    ra = np.array(a["accuracy"]["class"], dtype=float)
    rb = np.array(b["accuracy"]["class"], dtype=float)
    assert not np.array_equal(ra, rb, equal_nan=True)


# ------------------------------------------------------------------------ evaluation


class ModeSpy(nn.Module):
    """Wraps a model and records ``self.training`` at every forward."""

    def __init__(self, model: ContinualModel):
        super().__init__()
        self.model = model
        self.modes: list[bool] = []

    def forward(self, x: Tensor, units: slice | None = None) -> Tensor:
        self.modes.append(self.training)
        return self.model(x, units=units)


@pytest.mark.parametrize("start_training", [True, False])
def test_evaluate_runs_in_eval_mode_and_restores_the_mode(split_digits: Scenario,
                                                          start_training: bool) -> None:
    layout, _, model, _ = prepare(split_digits)
    spy = ModeSpy(model)
    spy.train(start_training)
    evaluate(spy, split_digits, layout, 1, [0, 1], batch_size=50)
    assert spy.modes and not any(spy.modes)
    assert spy.training is start_training and model.training is start_training


def test_evaluate_numbers_match_a_hand_computation(split_digits: Scenario) -> None:
    layout, _, model, _ = prepare(split_digits, seed=1)
    model.eval()
    res = evaluate(model, split_digits, layout, after_task=2, tasks=[1, 4], batch_size=37)
    assert set(res) == {"task", "class"}
    with torch.no_grad():
        for j, seen in ((1, 6), (4, 10)):  # task 4 is in the future: its own units count as seen
            task = split_digits.tasks[j]
            logits = model(task.test_x)
            y = task.test_y  # natural order: unit == label
            lo = 2 * j
            task_pred = logits[:, lo:lo + 2].argmax(1) + lo
            class_pred = logits[:, :seen].argmax(1)
            assert res["task"][j] == pytest.approx(float((task_pred == y).float().mean()))
            assert res["class"][j] == pytest.approx(float((class_pred == y).float().mean()))


def test_task_il_accuracy_is_at_least_class_il(split_digits: Scenario) -> None:
    layout, recipe, model, config = prepare(split_digits, "task", epochs=2, lr=0.05,
                                            hidden=(32,))
    res = fit(model, split_digits, layout, recipe, config, seed=0)
    task, cls = res.accuracy["task"], res.accuracy["class"]
    lower = np.tril_indices(5)
    assert np.all(task[lower] >= cls[lower])
    assert np.all(np.isnan(task[np.triu_indices(5, 1)]))
    # class-IL fine-tuning forgets old tasks, task-IL much less (the point of the distinction)
    assert task[4].mean() > cls[4].mean() + 0.2


def test_eval_future_fills_the_matrix_and_the_baseline(synthetic: Scenario) -> None:
    layout, recipe, model, config = prepare(synthetic, "task", eval_future=True)
    untrained = copy.deepcopy(model)
    res = fit(model, synthetic, layout, recipe, config, seed=0)
    for s in ("task", "class"):
        assert np.isfinite(res.accuracy[s]).all()
    assert res.baseline_accuracy is not None and set(res.baseline_accuracy) == {"task", "class"}
    ref = evaluate(untrained, synthetic, layout, 0, [0, 1, 2])
    for s in ("task", "class"):
        assert res.baseline_accuracy[s] == [ref[s][j] for j in range(3)]


def test_without_eval_future_upper_triangle_is_nan(synthetic: Scenario) -> None:
    layout, recipe, model, config = prepare(synthetic, "class")
    res = fit(model, synthetic, layout, recipe, config, seed=0)
    assert res.baseline_accuracy is None
    for R in res.accuracy.values():
        assert np.all(np.isnan(R[np.triu_indices(3, 1)]))
        assert np.all(np.isfinite(R[np.tril_indices(3)]))


# ------------------------------------------------------------------------ hooks


def test_hooks_are_called_in_the_documented_order(synthetic: Scenario) -> None:
    log: list[tuple[str, str]] = []
    layout, recipe, model, config = prepare(synthetic)
    data, pen = Recorder("data", log), Recorder("pen", log, penalty=True)
    recipe.terms += [pen, data]  # the penalty first in the list: order of hooks must not care
    fit(model, synthetic, layout, recipe, config, seed=0)
    steps = 5  # 80 samples, batch 16, 1 epoch
    # data terms: loss, backward, after_backward; penalties are evaluated after it (so that
    # on_after_backward sees the data gradient alone), then the step
    data_task = ["task_start"] + ["loss", "after_backward", "after_step"] * steps + ["task_end"]
    pen_task = ["task_start"] + ["after_backward", "loss", "after_step"] * steps + ["task_end"]
    assert [e for n, e in log if n == "data"] == data_task * 3
    assert [e for n, e in log if n == "pen"] == pen_task * 3
    assert data.task_steps == pen.task_steps == [steps] * 3
    # across terms, within a step: data loss, every after_backward, penalty loss, every after_step
    step_events = [(n, e) for n, e in log if e not in ("task_start", "task_end")]
    one_step = [("data", "loss"), ("pen", "after_backward"), ("data", "after_backward"),
                ("pen", "loss"), ("pen", "after_step"), ("data", "after_step")]
    assert step_events == one_step * (3 * steps)


class KnownPenalty(Term):
    """A parameter-only loss ``<G, W>`` whose gradient with respect to ``W`` is ``G``."""

    name = "known"
    penalty = True

    def __init__(self, weight: nn.Parameter, G: Tensor):
        self.weight, self.G = weight, G

    def loss(self, ctx: TrainContext, batch: Batch) -> Tensor:
        return (self.G * self.weight).sum()


class GradProbe(Term):
    """Records, on one step, the parameter before the step, its ``.grad`` at
    on_after_backward, the parameter after the step and a copy of the model and batch."""

    name = "probe"

    def __init__(self, weight: nn.Parameter, at_step: int):
        self.weight, self.at_step = weight, at_step
        self.seen: dict[str, Any] = {}

    def loss(self, ctx: TrainContext, batch: Batch) -> None:
        if ctx.step == self.at_step:
            self.seen["before"] = self.weight.detach().clone()
            self.seen["model"] = copy.deepcopy(ctx.model)
            self.seen["batch"] = batch
        return None

    def on_after_backward(self, ctx: TrainContext) -> None:
        if ctx.step == self.at_step:
            self.seen["grad"] = self.weight.grad.detach().clone()

    def on_after_step(self, ctx: TrainContext) -> None:
        if ctx.step == self.at_step + 1:  # the step counter was just incremented
            self.seen["after"] = self.weight.detach().clone()


def test_penalty_gradient_is_added_after_on_after_backward(synthetic: Scenario) -> None:
    lr = 0.1
    layout, recipe, model, config = prepare(synthetic, lr=lr)
    W = model.backbone.layers[0].weight
    G = torch.full_like(W, 3.0)
    probe = GradProbe(W, at_step=7)  # task 1, third step
    recipe.terms += [KnownPenalty(W, G), probe]
    res = fit(model, synthetic, layout, recipe, config, seed=0)
    seen = probe.seen
    # at on_after_backward: the cross-entropy gradient alone, computed here independently
    batch: Batch = seen["batch"]
    ref_model = seen["model"]
    ce = F.cross_entropy(ref_model(batch.x, units=batch.units), batch.local_targets())
    ce.backward()
    ref_grad = ref_model.backbone.layers[0].weight.grad
    torch.testing.assert_close(seen["grad"], ref_grad, rtol=1e-5, atol=1e-6)
    # the update (plain SGD) used the cross-entropy gradient plus the penalty's G
    update = (seen["before"] - seen["after"]) / lr
    torch.testing.assert_close(update, ref_grad + G, rtol=1e-4, atol=1e-4)
    # the penalty is logged under its name: <G, W> at the logged steps
    assert "known" in res.losses and len(res.losses["known"]) == len(res.losses["ce"])


def test_on_task_end_runs_before_evaluation(synthetic: Scenario) -> None:
    class ZeroAtEnd(Term):
        name = "zero"

        def on_task_end(self, ctx: TrainContext) -> None:
            if ctx.task_id == 1:
                with torch.no_grad():
                    for p in ctx.model.parameters():
                        p.zero_()

    layout, recipe, model, config = prepare(synthetic, "task")
    recipe.terms.append(ZeroAtEnd())
    res = fit(model, synthetic, layout, recipe, config, seed=0)
    # all logits equal: argmax picks the first unit; half of each task's test set is its first
    # class (20 of 40), and in class-IL unit 0 is a task-0 class
    assert res.accuracy["task"][1, :2].tolist() == [0.5, 0.5]
    assert res.accuracy["class"][1, :2].tolist() == [0.5, 0.0]


def test_iterations_mode_takes_exactly_that_many_steps(synthetic: Scenario) -> None:
    log: list[tuple[str, str]] = []
    layout, recipe, model, config = prepare(synthetic, iterations=7, epochs=50)
    rec = Recorder("count", log)
    recipe.terms.append(rec)
    res = fit(model, synthetic, layout, recipe, config, seed=0)
    assert rec.steps == 21 and rec.task_steps == [7, 7, 7]
    assert res.losses["ce"][-1][0] == 21
    # the first five batches of a task are one epoch: every training sample exactly once
    task0 = synthetic.tasks[0]
    first = torch.cat([b.x for b in rec.batches[:5]])
    assert sorted(map(tuple, first.flatten(1).tolist())) == sorted(
        map(tuple, task0.train_x.flatten(1).tolist()))


def test_epochs_mode_batches(synthetic: Scenario) -> None:
    log: list[tuple[str, str]] = []
    layout, recipe, model, config = prepare(synthetic, batch_size=30, epochs=2)
    rec = Recorder("sizes", log)
    recipe.terms.append(rec)
    fit(model, synthetic, layout, recipe, config, seed=0)
    sizes = [b.x.shape[0] for b in rec.batches]
    assert sizes == [30, 30, 20] * 2 * 3  # 80 samples: the last batch of an epoch is smaller
    assert rec.task_steps == [6, 6, 6]
    for i, b in enumerate(rec.batches):
        t = i // 6
        assert b.units == layout.task_units(t) == slice(2 * t, 2 * t + 2)
        assert b.logits.shape == (b.x.shape[0], 2)
        assert torch.equal(b.local_targets(), b.y - 2 * t)


def test_loss_curves_are_logged_per_term_name(synthetic: Scenario) -> None:
    class StepLoss(Term):
        """Loss equal to the global step at which it is computed (no gradient)."""

        name = "stepvalue"

        def loss(self, ctx: TrainContext, batch: Batch) -> Tensor:
            return torch.tensor(float(ctx.step))

    layout, recipe, model, config = prepare(synthetic, log_every=4)
    recipe.terms.append(StepLoss())
    res = fit(model, synthetic, layout, recipe, config, seed=0)
    assert set(res.losses) == {"ce", "stepvalue"}
    # 5 steps per task, windows of 4 flushed at the end of every task
    assert res.losses["stepvalue"] == [[4, 1.5], [5, 4.0], [9, 6.5], [10, 9.0], [14, 11.5],
                                       [15, 14.0]]
    assert [p[0] for p in res.losses["ce"]] == [4, 5, 9, 10, 14, 15]
    assert all(np.isfinite(v) and v > 0 for _, v in res.losses["ce"])
    assert res.timings["total_s"] == pytest.approx(res.timings["train_s"] + res.timings["eval_s"])
    assert len(res.timings["per_task_s"]) == 3


# ------------------------------------------------------------------------ data regimes, freezing


def test_joint_trains_on_the_union_of_tasks_seen(synthetic: Scenario) -> None:
    log: list[tuple[str, str]] = []
    layout, recipe, model, config = prepare(synthetic, "task", method="joint")
    rec = Recorder("count", log)
    recipe.terms.append(rec)
    fit(model, synthetic, layout, recipe, config, seed=0)
    sizes = [t.num_train for t in synthetic.tasks]
    per_task: list[list[Batch]] = [[], [], []]
    step = 0
    for t in range(3):
        n_steps = -(-sum(sizes[:t + 1]) // 16)
        per_task[t] = rec.batches[step:step + n_steps]
        step += n_steps
    assert step == len(rec.batches)
    for t, batches in enumerate(per_task):
        assert sum(b.x.shape[0] for b in batches) == sum(sizes[:t + 1])
        tids = torch.cat([b.task_ids for b in batches])
        assert torch.bincount(tids, minlength=3).tolist() == [
            sizes[s] if s <= t else 0 for s in range(3)]
        for b in batches:
            assert b.units == slice(0, 2 * (t + 1))
            if t > 0 and b.task_ids.unique().numel() > 1:
                # task-IL: each sample may only use its own task's units
                assert b.mask is not None
                expected = (torch.arange(2 * (t + 1))[None, :] // 2) == b.task_ids[:, None]
                assert torch.equal(b.mask, expected)


def test_finetune_trains_on_the_current_task_only(synthetic: Scenario) -> None:
    log: list[tuple[str, str]] = []
    layout, recipe, model, config = prepare(synthetic, "class")
    rec = Recorder("count", log)
    recipe.terms.append(rec)
    fit(model, synthetic, layout, recipe, config, seed=0)
    for i, b in enumerate(rec.batches):
        t = i // 5
        assert set(b.y.tolist()) <= set(synthetic.tasks[t].classes)
        assert b.units == slice(0, 2 * (t + 1))  # class-IL: all units seen so far
        assert b.mask is None


def _snapshots(method: str, synthetic: Scenario) -> tuple[ContinualModel, list[dict[str, Tensor]]]:
    layout, recipe, model, config = prepare(synthetic, "task", method=method, hidden=(16, 16))
    snaps: list[dict[str, Tensor]] = [{k: v.clone() for k, v in model.state_dict().items()}]

    def keep(state: dict[str, Any]) -> None:
        assert state["task"] == len(snaps) - 1
        snaps.append({k: v.clone() for k, v in state["model"].items()})

    fit(model, synthetic, layout, recipe, config, seed=0, checkpoint=keep)
    return model, snaps


def test_feature_extraction_freezes_the_backbone_after_task_0(synthetic: Scenario) -> None:
    model, snaps = _snapshots("feature-extraction", synthetic)
    init, after0, final = snaps[0], snaps[1], snaps[-1]
    backbone = [k for k in final if k.startswith("backbone.")]
    assert backbone
    for k in backbone:
        assert not torch.equal(init[k], after0[k]), k  # trained on task 0
        assert torch.equal(after0[k], final[k]), k  # bit-identical afterwards
    for t in (1, 2):
        w = f"head.heads.{t}.weight"
        assert torch.equal(snaps[t][w], init[w]) and not torch.equal(snaps[t + 1][w], init[w])
    assert all(p.requires_grad for p in model.parameters())  # unfrozen after fit


def test_finetune_fc_trains_only_the_last_hidden_layer_after_task_0(synthetic: Scenario) -> None:
    _, snaps = _snapshots("finetune-fc", synthetic)
    after0, final = snaps[1], snaps[-1]
    for k in ("backbone.layers.0.weight", "backbone.layers.0.bias"):
        assert torch.equal(after0[k], final[k]), k
    for k in ("backbone.layers.2.weight", "backbone.layers.2.bias"):
        assert not torch.equal(after0[k], snaps[2][k]), k
        assert not torch.equal(snaps[2][k], final[k]), k


def test_finetune_trains_everything_on_every_task(synthetic: Scenario) -> None:
    _, snaps = _snapshots("finetune", synthetic)
    for t in (1, 2):
        for k in ("backbone.layers.0.weight", "backbone.layers.2.weight"):
            assert not torch.equal(snaps[t][k], snaps[t + 1][k])
        # old heads receive no gradient in task-IL
        assert torch.equal(snaps[t]["head.heads.0.weight"], snaps[t + 1]["head.heads.0.weight"])


def test_bad_train_config_is_rejected(synthetic: Scenario) -> None:
    layout, recipe, model, _ = prepare(synthetic)
    for kw, msg in (({"optimizer": "lbfgs"}, "unknown train.optimizer 'lbfgs'; valid: sgd, adam"),
                    ({"lr": 0.0}, "train.lr must be positive"),
                    ({"epochs": 0}, "train.epochs >= 1 or train.iterations >= 1"),
                    ({"progress": "yes"}, "train.progress must be auto, on or off")):
        with pytest.raises(ValueError, match=msg):
            fit(model, synthetic, layout, recipe, TrainConfig(**kw), seed=0)


# ------------------------------------------------------------------------ checkpoint and resume


@pytest.mark.parametrize("setting, train", [("class", {}),
                                            ("task", {"momentum": 0.9, "reset_optimizer": False})])
def test_resume_from_a_checkpoint_is_bit_identical(synthetic: Scenario, setting: str,
                                                   train: dict[str, Any]) -> None:
    states: list[dict[str, Any]] = []
    layout, recipe, model, config = prepare(synthetic, setting, epochs=2, **train)
    # the state handed to ``checkpoint`` shares tensors with the live run: copy it to keep it
    full = fit(model, synthetic, layout, recipe, config, seed=5,
               checkpoint=lambda state: states.append(copy.deepcopy(state)))
    assert [s["task"] for s in states] == [0, 1, 2]
    for after in (0, 1):
        layout, recipe, fresh, config = prepare(synthetic, setting, seed=99, epochs=2, **train)
        resumed = fit(fresh, synthetic, layout, recipe, config, seed=5,
                      resume=copy.deepcopy(states[after]))
        assert same_matrices(resumed.accuracy, full.accuracy), after
        assert resumed.losses == full.losses
        for p, q in zip(model.parameters(), fresh.parameters()):
            assert torch.equal(p, q)


# ------------------------------------------------------------------------ what terms can ask for


class OldUnits(Term):
    """Asks the batch for the logits of task 0's units while later tasks train."""

    name = "old"

    def __init__(self) -> None:
        self.seen: list[tuple[slice, Tensor, Tensor]] = []

    def loss(self, ctx: TrainContext, batch: Batch) -> None:
        if ctx.task_id > 0 and not self.seen:
            units = ctx.layout.task_units(0)
            self.seen.append((batch.units, batch.logits_for(units).detach(),
                              ctx.model(batch.x, units=units).detach()))
        return None


def test_a_term_gets_logits_of_other_units_without_the_loop_knowing(synthetic: Scenario) -> None:
    layout, recipe, model, config = prepare(synthetic)
    old = OldUnits()
    recipe.terms += [old]
    fit(model, synthetic, layout, recipe, config, seed=0)
    (batch_units, got, direct), = old.seen
    assert batch_units == layout.task_units(1)
    assert got.shape == (16, len(synthetic.tasks[0].classes))
    torch.testing.assert_close(got, direct)
    # the batch's own units are the logits the loop computed, not a second forward
    batch = Batch(x=torch.zeros(2, 1), y=torch.zeros(2), targets=torch.zeros(2), task_ids=torch.zeros(2),
                  units=slice(0, 2), logits=torch.ones(2, 2))
    assert batch.logits_for(slice(0, 2)) is batch.logits
    with pytest.raises(ValueError, match="no forward"):
        batch.logits_for(slice(2, 4))


def test_device_option_is_validated_with_a_clear_message() -> None:
    from lifelong.train.loop import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown train.device 'tpu'"):
        TrainConfig(device="tpu").validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device.*--device cpu"):
            TrainConfig(device="cuda").validate()


class NestedState(Term):
    """A term whose state nests tensors in dicts, lists and tuples, plus a counter."""

    name = "nested"

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"a": torch.ones(2), "b": [torch.zeros(3), (torch.eye(2),)],
                                      "n": 7}

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state


def test_terms_follow_to_device() -> None:
    term = NestedState()
    assert term.to("meta") is term
    leaves = [term.state["a"], term.state["b"][0], term.state["b"][1][0]]
    assert [t.device.type for t in leaves] == ["meta"] * 3
    assert [tuple(t.shape) for t in leaves] == [(2,), (3,), (2, 2)]
    assert isinstance(term.state["b"][1], tuple) and term.state["n"] == 7
    # a penalty's state round-trips through .to(): same value off the anchor
    from lifelong.terms import EWC

    model = nn.Linear(3, 2)
    pen = EWC(lam=2.0)
    pen.consolidate({n: torch.ones_like(p) for n, p in model.named_parameters()}, model)
    with torch.no_grad():
        model.weight.add_(0.5)
    before = float(pen.penalty_value(model).detach())
    pen.to("cpu")
    assert float(pen.penalty_value(model).detach()) == pytest.approx(before)
    assert before == pytest.approx(1.0 * 6 * 0.25)  # lam/2 * sum F (delta)^2 over 6 weights


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_run_matches_cpu_run(synthetic: Scenario) -> None:
    results = []
    for device in ("cpu", "cuda"):
        layout, recipe, model, config = prepare(synthetic, method="si", device=device)
        results.append(fit(model, synthetic, layout, recipe, config, seed=0))
    for s in results[0].accuracy:
        np.testing.assert_allclose(results[0].accuracy[s], results[1].accuracy[s], atol=0.05)
