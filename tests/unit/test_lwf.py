"""LwF (Li & Hoiem 2016): the old units' targets, the warm-up phase, compositions, resume."""

from __future__ import annotations

import copy

import pytest
import torch

from lifelong.config import check_composition
from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario
from lifelong.methods.base import Recipe, Warmup
from lifelong.methods.consolidation import EWCConfig
from lifelong.methods.lwf import LwFConfig, new_head_only
from lifelong.methods.registry import build_recipe
from lifelong.nn.model import ModelConfig, build_model
from lifelong.terms.base import Batch, Term
from lifelong.terms.distill import LwF, kd_loss
from lifelong.train.loop import TrainConfig, TrainContext, fit


def _model(scenario: Scenario, layout: Layout) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(scenario, layout, ModelConfig(hidden=(16,)))


class _Recorder(Term):
    """Records the backbone's and the heads' parameters after every step."""

    name = "recorder"

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, dict[str, torch.Tensor]]] = []

    def on_after_step(self, ctx: TrainContext) -> None:
        state = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
        self.steps.append((ctx.task_id, ctx.task_step, state))


def _config(**kw: object) -> TrainConfig:
    options: dict[str, object] = {"lr": 0.1, "batch_size": 32, "epochs": 2, "progress": "off",
                                  "device": "cpu", **kw}
    return TrainConfig(**options)  # type: ignore[arg-type]


class _Snapshot(Term):
    """Keeps a copy of the model at the end of the first task."""

    name = "snapshot"
    model: torch.nn.Module

    def on_task_end(self, ctx: TrainContext) -> None:
        if ctx.task_id == 0:
            self.model = copy.deepcopy(ctx.model)


@pytest.mark.parametrize("setting, groups", [
    ("task", [slice(0, 2), slice(2, 4)]),  # one softmax per old head
    ("class", [slice(0, 4)]),               # one softmax over the old classes
    ("domain", [slice(0, 2)]),              # the shared units
])
def test_lwf_distils_the_old_units_of_each_setting(synthetic: Scenario, setting: str,
                                                   groups: list[slice]) -> None:
    layout = Layout.for_scenario(synthetic, setting)
    model = _model(synthetic, layout)
    term = LwF(temperature=2.0, lam=0.5)
    ctx = TrainContext(model=model, scenario=synthetic, layout=layout, config=_config(),
                       task_id=0)
    term.on_task_start(ctx)
    assert term.teacher is None and term.groups == []
    ctx.task_id = 2
    term.on_task_start(ctx)
    assert term.groups == groups
    x = synthetic.tasks[2].train_x[:8]
    units = layout.train_units(2)
    span = slice(0, units.stop)
    full = model(x, units=span)
    batch = Batch(x=x, y=torch.zeros(8, dtype=torch.long), targets=torch.zeros(8, dtype=torch.long),
                  task_ids=torch.full((8,), 2), units=units, logits=full[:, units.start:],
                  span=span, span_logits=full)
    # student == teacher at the task's start: nothing to distil
    assert term.loss(ctx, batch).item() == pytest.approx(0.0, abs=1e-7)
    # move the student: the loss is the sum of kd_loss over the groups (no T^2 by default)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    full = model(x, units=span)
    batch.span_logits, batch.logits = full, full[:, units.start:]
    with torch.no_grad():
        teacher = term.teacher(x, units=span)  # type: ignore[misc]
    expected = sum(kd_loss(full[:, g], teacher[:, g], temperature=2.0, soft_weight=0.5, t2=False)
                   for g in groups)
    assert term.loss(ctx, batch).detach().item() == pytest.approx(float(expected.detach()), rel=1e-6)
    assert term.loss(ctx, batch).detach().item() > 1e-4


def test_warmup_trains_only_the_new_head_then_everything(synthetic: Scenario) -> None:
    layout = Layout.for_scenario(synthetic, "task")
    model = _model(synthetic, layout)
    rec = _Recorder()
    recipe = build_recipe("lwf", {"lwf": LwFConfig(warmup_epochs=1.0)}) + Recipe("r", [rec])
    config = _config()
    fit(model, synthetic, layout, recipe, config)
    n = synthetic.tasks[1].train_x.shape[0]
    per_epoch = -(-n // config.batch_size)
    steps = [s for s in rec.steps if s[0] == 1]
    start = [s for s in rec.steps if s[0] == 0][-1][2]  # the model at task 1's start
    assert len(steps) == per_epoch + config.epochs * per_epoch  # warm-up, then the task's steps
    after_warmup = steps[per_epoch - 1][2]
    for name, value in after_warmup.items():
        moved = not torch.equal(value, start[name])
        assert moved == name.startswith("head.heads.1."), name
    final = steps[-1][2]
    for name in final:  # then every parameter of the backbone and the new head trains
        if name.startswith(("backbone.", "head.heads.1.")):
            assert not torch.equal(final[name], after_warmup[name]), name
    # task 0 has no warm-up (nothing is old yet)
    assert len([s for s in rec.steps if s[0] == 0]) == config.epochs * per_epoch


def test_no_warmup_where_the_output_layer_is_shared(synthetic: Scenario) -> None:
    layout = Layout.for_scenario(synthetic, "class")
    rec = _Recorder()
    recipe = build_recipe("lwf") + Recipe("r", [rec])
    config = _config()
    fit(_model(synthetic, layout), synthetic, layout, recipe, config)
    n = synthetic.tasks[1].train_x.shape[0]
    assert len([s for s in rec.steps if s[0] == 1]) == config.epochs * -(-n // config.batch_size)


def test_lwf_keeps_old_outputs_closer_than_finetune(synthetic: Scenario) -> None:
    layout = Layout.for_scenario(synthetic, "task")
    x0, units = synthetic.tasks[0].test_x, layout.task_units(0)
    drift = {}
    for method in ("finetune", "lwf"):
        model, snap = _model(synthetic, layout), _Snapshot()
        recipe = build_recipe(method, {"lwf": LwFConfig(lam=5.0)}) + Recipe("s", [snap])
        fit(model, synthetic, layout, recipe, _config(epochs=3))
        with torch.no_grad():
            drift[method] = (model(x0, units=units) - snap.model(x0, units=units)).abs().mean()
    assert drift["lwf"] < 0.8 * drift["finetune"], drift


def test_lwf_compositions() -> None:
    recipe = build_recipe("lwf+ewc")
    assert [t.name for t in recipe.terms] == ["lwf", "ewc"] and recipe.warmup is not None
    recipe = build_recipe("dhp+lwf")
    assert recipe.layer is not None and [t.name for t in recipe.terms] == ["lwf"]
    check_composition("lwf+ewc")
    check_composition("dhp+lwf")
    with pytest.raises(ValueError, match="nothing to forget and distilling the previous model"):
        check_composition("joint+lwf")
    with pytest.raises(ValueError, match="'finetune' is plain training"):
        check_composition("finetune+lwf")
    with pytest.raises(ValueError, match="both add a warm-up"):
        _ = build_recipe("lwf") + Recipe("w", warmup=Warmup(1.0, new_head_only), warmup_name="w")
    assert build_recipe("lwf", {"lwf": LwFConfig(warmup_epochs=0)}).warmup is None
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        build_recipe("lwf", {"lwf": LwFConfig(warmup_epochs=-1)})
    with pytest.raises(ValueError, match="temperature must be positive"):
        build_recipe("lwf", {"lwf": LwFConfig(temperature=0)})


@pytest.mark.parametrize("expr", ["lwf+ewc", "dhp+lwf"])
def test_lwf_compositions_train(synthetic: Scenario, expr: str) -> None:
    layout = Layout.for_scenario(synthetic, "task")
    recipe = build_recipe(expr, {"ewc": EWCConfig(lam=10.0)})  # the synthetic protocol's
    torch.manual_seed(0)
    model = build_model(synthetic, layout, ModelConfig(hidden=(16,)), recipe.layer)
    result = fit(model, synthetic, layout, recipe, _config())
    R = result.accuracy["task"]
    assert R.shape == (3, 3) and float(R[2, :].min()) > 0.6, R
    assert len(result.losses["lwf"]) > 0 and all(v >= 0 for _, v in result.losses["lwf"])


@pytest.mark.parametrize("setting, weights", [("task", [0.5, 0.5]), ("class", [1.0]),
                                              ("domain", [1.0])])
def test_per_old_task_weighting(synthetic: Scenario, setting: str, weights: list[float]) -> None:
    # van de Ven & Tolias: every old task counts lam; at task 2 class-/domain-IL's one group
    # covers two old tasks
    layout = Layout.for_scenario(synthetic, setting)
    ctx = TrainContext(model=_model(synthetic, layout), scenario=synthetic, layout=layout,
                       config=_config(), task_id=2)
    term = LwF(lam=0.5, per_old_task=True)
    term.on_task_start(ctx)
    assert term.weights == weights
    plain = LwF(lam=0.5)
    plain.on_task_start(ctx)
    assert plain.weights == [0.5] * len(weights)


def test_with_new_units_distils_over_the_seen_units_in_class_il(synthetic: Scenario) -> None:
    layout = Layout.for_scenario(synthetic, "class")
    model = _model(synthetic, layout)
    ctx = TrainContext(model=model, scenario=synthetic, layout=layout, config=_config(),
                       task_id=2)
    term = LwF(temperature=2.0, with_new_units=True)
    term.on_task_start(ctx)
    assert term.groups == [slice(0, 4)] and term.student_stop == 6
    x = synthetic.tasks[2].train_x[:8]
    units = layout.train_units(2)
    full = model(x, units=units)
    zeros = torch.zeros(8, dtype=torch.long)
    batch = Batch(x=x, y=zeros, targets=zeros, task_ids=torch.full((8,), 2), units=units,
                  logits=full, span=units, span_logits=full)
    with torch.no_grad():
        teacher = term.teacher(x, units=slice(0, 4))  # type: ignore[misc]
    expected = kd_loss(full, teacher, temperature=2.0, t2=False)
    assert term.loss(ctx, batch).detach().item() == pytest.approx(expected.item(), rel=1e-6)
    # not 0 at the task's start: the new classes' probability is pulled down
    assert expected.item() > 1e-4


def test_no_teacher_pass_when_the_old_units_cannot_move(synthetic: Scenario) -> None:
    # LwF's warm-up freezes the backbone and the old heads: the distillation would be a constant
    layout = Layout.for_scenario(synthetic, "task")
    model = _model(synthetic, layout)
    ctx = TrainContext(model=model, scenario=synthetic, layout=layout, config=_config(),
                       task_id=1)
    term = LwF()
    term.on_task_start(ctx)
    calls = []
    assert term.teacher is not None
    term.teacher.register_forward_hook(lambda *_: calls.append(1))
    x = synthetic.tasks[1].train_x[:4]
    full = model(x, units=slice(0, 4))
    zeros = torch.zeros(4, dtype=torch.long)
    for logits, expect_loss in ((full.detach(), False), (full, True)):
        batch = Batch(x=x, y=zeros, targets=zeros, task_ids=torch.ones(4, dtype=torch.long),
                      units=slice(2, 4), logits=logits[:, 2:], span=slice(0, 4),
                      span_logits=logits)
        assert (term.loss(ctx, batch) is not None) == expect_loss
    assert len(calls) == 1
