"""Rehearsal: the exemplar memory (herding, budget, state), the rehearsal regime and its balanced
held-out split, NME classification, BiC's loss weight, bias layer and second stage, the FC
retrain upper bound, compositions and an exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lifelong.train.run as run_mod
from lifelong.config import make_config
from lifelong.data.layout import Layout
from lifelong.data.memory import ExemplarMemory, herding, rank_within
from lifelong.data.regimes import Rehearsal
from lifelong.data.scenarios import Scenario
from lifelong.methods.registry import build_recipe
from lifelong.nn.bias import BiasCorrectedLinear
from lifelong.nn.heads import SingleHead
from lifelong.nn.model import ContinualModel
from lifelong.nn.nme import NMEClassifier, classifying
from lifelong.terms.base import Batch
from lifelong.terms.distill import _frozen_copy
from lifelong.terms.rehearsal import BalancedRetrain, BiasCorrection, BiCDistillation, UpdateMemory
from lifelong.train.loop import TrainConfig, TrainContext
from lifelong.train.run import execute


class _Backbone(nn.Sequential):
    """A tiny backbone with BatchNorm (whose statistics the second stages must not move)."""

    def __init__(self, dim: int = 16, width: int = 12) -> None:
        super().__init__(nn.Flatten(), nn.Linear(dim, width), nn.BatchNorm1d(width), nn.ReLU())
        self.out_features = width


def _model(scenario: Scenario, layer: type[nn.Module] = nn.Linear) -> ContinualModel:
    torch.manual_seed(0)
    units = sum(len(t.classes) for t in scenario.tasks)
    return ContinualModel(_Backbone(), SingleHead(12, units, layer))


def _ctx(model: nn.Module, scenario: Scenario, layout: Layout, t: int) -> TrainContext:
    return TrainContext(model=model, scenario=scenario, layout=layout,
                        config=TrainConfig(progress="off", device="cpu"), task_id=t,
                        generator=torch.Generator().manual_seed(1))


def test_rank_within_groups() -> None:
    groups = torch.tensor([0, 1, 0, 2, 1, 0])
    keys = torch.tensor([0.5, 0.1, 0.2, 0.9, 0.3, 0.7])
    assert rank_within(groups, keys).tolist() == [1, 0, 0, 0, 1, 2]
    g = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(0))
    k = torch.rand(200, generator=torch.Generator().manual_seed(1))
    ref = [int(((g == g[i]) & (k < k[i])).sum()) for i in range(200)]
    assert rank_within(g, k).tolist() == ref


def test_herding_is_the_greedy_rule_of_icarl() -> None:
    """Alg. 4 written out: the k-th pick minimises ||mu - (phi(x) + sum of earlier picks) / k||
    over the samples not chosen yet."""
    feats = torch.randn(60, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    phi = F.normalize(feats, dim=1)
    mu = phi.mean(0)
    chosen: list[int] = []
    for k in range(1, 26):
        s = phi[chosen].sum(0) if chosen else torch.zeros(7, dtype=torch.float64)
        dist = (mu - (phi + s) / k).norm(dim=1)
        dist[chosen] = float("inf")
        chosen.append(int(dist.argmin()))
    assert herding(feats, 25).tolist() == chosen
    assert sorted(herding(feats, 100).tolist()) == list(range(60))  # m > N: every sample once


def test_memory_budget_is_shared_evenly_and_shrinks_by_priority(synthetic: Scenario) -> None:
    layout = Layout.for_scenario(synthetic, "class")
    model = _model(synthetic)
    for selection in ("herding", "random"):
        memory = ExemplarMemory(30, selection)
        history = []
        for t, per_class in enumerate([15, 7, 5]):  # 30 // 2, 30 // 4, 30 // 6
            memory.update(model, synthetic, t, torch.Generator().manual_seed(t))
            seen = 2 * (t + 1)
            assert torch.bincount(memory.label, minlength=seen).tolist() == [per_class] * seen
            assert len(memory) <= 30
            for s in range(t + 1):  # each index names a training sample of its label
                rows = memory.task == s
                assert torch.equal(synthetic.tasks[s].train_y[memory.index[rows]],
                                   memory.label[rows])
            history.append({c: memory.index[memory.label == c].tolist() for c in range(seen)})
        for c in range(2):  # Alg. 5: a class keeps the first m of its exemplars
            assert history[1][c] == history[0][c][:7] and history[2][c] == history[0][c][:5]
    x, y, targets, tid = memory.data(synthetic, layout)
    assert x.shape == (30, *synthetic.input_shape) and torch.equal(targets, y)


def test_memory_state_dict_round_trip_and_refusal(synthetic: Scenario) -> None:
    memory = ExemplarMemory(20, "herding")
    memory.update(_model(synthetic), synthetic, 0)
    other = ExemplarMemory(20, "herding")
    other.load_state_dict(memory.state_dict())
    for key in ("task", "index", "label", "rank"):
        assert torch.equal(getattr(other, key), getattr(memory, key))
    with pytest.raises(ValueError, match=r"budget 10, herding\) cannot load one saved with "
                                         r"budget 20, herding"):
        ExemplarMemory(10).load_state_dict(memory.state_dict())
    with pytest.raises(ValueError, match="unknown exemplar selection 'best'; valid: herding"):
        ExemplarMemory(10, "best")


def test_rehearsal_data_is_the_task_plus_the_exemplars(synthetic: Scenario) -> None:
    layout = Layout.for_scenario(synthetic, "class")
    memory = ExemplarMemory(20, "random")
    regime = Rehearsal(memory)
    first = regime.training_data(synthetic, layout, 0)
    assert first.units == slice(0, 2) and not first.mixed and first.x.shape[0] == 80
    memory.update(_model(synthetic), synthetic, 0, torch.Generator().manual_seed(0))
    data = regime.training_data(synthetic, layout, 1)
    assert data.units == slice(0, 4) and data.mixed and data.x.shape[0] == 80 + 20
    assert torch.equal(data.targets, layout.targets(data.task_ids, data.y))
    assert (data.task_ids == 0).sum() == 20 and regime.held_out is None


def test_held_out_split_is_balanced_between_old_and_new_classes(synthetic: Scenario) -> None:
    layout = Layout.for_scenario(synthetic, "class")
    memory = ExemplarMemory(40, "random")
    regime = Rehearsal(memory, holdout=0.1)
    memory.update(_model(synthetic), synthetic, 0, torch.Generator().manual_seed(0))
    memory.update(_model(synthetic), synthetic, 1, torch.Generator().manual_seed(1))
    train = regime.training_data(synthetic, layout, 2)  # 6 classes: 10 exemplars each old one
    held = regime.held_out
    assert held is not None
    assert torch.bincount(held.y).tolist() == [1] * 6  # round(0.1 * 10) of every class
    assert train.x.shape[0] + held.x.shape[0] == 80 + 40
    assert torch.bincount(train.y).tolist() == [9, 9, 9, 9, 39, 39]
    pairs = {(int(t), float(x.sum())) for t, x in zip(train.task_ids, train.x)}
    assert not any((int(t), float(x.sum())) in pairs for t, x in zip(held.task_ids, held.x))
    regime.training_data(synthetic, layout, 2)  # drawn again identically (resume)
    assert regime.held_out is not None and torch.equal(regime.held_out.x, held.x)


def test_nme_classifier_predicts_the_nearest_mean() -> None:
    layer = NMEClassifier(5, 3)
    h = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(layer(h), F.linear(h, layer.weight, layer.bias))
    means = F.normalize(torch.randn(3, 5, generator=torch.Generator().manual_seed(1)), dim=1)
    layer.set_means(slice(0, 3), means, torch.tensor([True, True, True]))
    with classifying(layer):
        scores = layer(h)
    nearest = torch.cdist(F.normalize(h, dim=1), means).argmin(1)
    assert torch.equal(scores.argmax(1), nearest)
    assert torch.equal(layer(h), F.linear(h, layer.weight, layer.bias))  # logits outside
    layer.set_means(slice(2, 3), means[2:], torch.tensor([False]))
    teacher = _frozen_copy(layer)  # a distillation teacher, copied at a task's start
    with classifying(layer):
        assert torch.isneginf(layer(h)[:, 2]).all()
        assert torch.equal(teacher(h), F.linear(h, layer.weight, layer.bias))  # logits


def test_update_memory_sets_the_nme_prototypes(synthetic: Scenario) -> None:
    layout = Layout.for_scenario(synthetic, "class")
    model = _model(synthetic, NMEClassifier)
    memory = ExemplarMemory(20, "herding")
    UpdateMemory(memory).on_task_end(_ctx(model, synthetic, layout, 0))
    layer = model.head.layer
    assert layer.has_mean.tolist() == [True, True, False, False, False, False]
    model.eval()
    with torch.no_grad():
        x = synthetic.tasks[0].train_x[memory.index[memory.label == 1]]
        mean = F.normalize(F.normalize(model.features(x), dim=1).mean(0), dim=0)
    torch.testing.assert_close(layer.means[1], mean)


def test_bias_layer_is_the_identity_at_start() -> None:
    torch.manual_seed(0)
    layer = BiasCorrectedLinear(6, 4)
    h = torch.randn(10, 6)
    assert torch.equal(layer(h), layer.linear(h))
    assert [n for n, _ in layer.named_parameters()] == ["linear.weight", "linear.bias"]
    layer.set_correction(slice(2, 4), 0.5, -1.0)
    torch.testing.assert_close(layer(h)[:, 2:], 0.5 * layer.linear(h)[:, 2:] - 1.0)
    torch.testing.assert_close(layer(h)[:, :2], layer.linear(h)[:, :2])


def test_bic_lambda_is_n_over_n_plus_m_and_the_loss_is_eq_4(synthetic: Scenario) -> None:
    layout = Layout.for_scenario(synthetic, "class")
    model = _model(synthetic)
    term = BiCDistillation(temperature=2.0)
    lams = []
    for t in range(3):
        term.on_task_start(_ctx(model, synthetic, layout, t))
        lams.append(term.lam)
    assert lams == [0.0, 2 / 4, 4 / 6]
    torch.manual_seed(1)
    with torch.no_grad():  # the student drifts away from the snapshot taken at task start
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, y = synthetic.tasks[2].train_x[:16], synthetic.tasks[2].train_y[:16]
    units = slice(0, 6)
    logits = model(x, units=units)
    batch = Batch(x=x, y=y, targets=y, task_ids=torch.full_like(y, 2), units=units,
                  logits=logits)
    assert term.teacher is not None
    teacher = term.teacher(x, units=units)
    ce = F.cross_entropy(logits, y)
    p_t = F.softmax(teacher[:, :4] / 2, dim=1)
    l_d = -(p_t * F.log_softmax(logits[:, :4] / 2, dim=1)).sum(1).mean()  # Eq. 3
    l_d_kl = l_d + (p_t * p_t.log()).sum(1).mean()  # the teacher's entropy is a constant
    total = ce + term.loss(_ctx(model, synthetic, layout, 2), batch)
    torch.testing.assert_close(total, 4 / 6 * l_d_kl + (1 - 4 / 6) * ce)


def _fitted(synthetic: Scenario) -> tuple[ContinualModel, Rehearsal, Layout]:
    """A BiC model after some training on tasks 0-1 (its new classes favoured), memory filled,
    the held-out split of task 1 drawn."""
    layout = Layout.for_scenario(synthetic, "class")
    model = _model(synthetic, BiasCorrectedLinear)
    regime = Rehearsal(ExemplarMemory(20, "random"), holdout=0.2)
    regime.memory.update(model, synthetic, 0, torch.Generator().manual_seed(0))
    data = regime.training_data(synthetic, layout, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    new = data.task_ids == 1
    for _ in range(20):  # train on the new classes only: a bias toward them
        opt.zero_grad()
        F.cross_entropy(model(data.x[new], units=slice(0, 4)), data.targets[new]).backward()
        opt.step()
    return model, regime, layout


def test_bic_stage_2_changes_only_alpha_and_beta(synthetic: Scenario) -> None:
    model, regime, layout = _fitted(synthetic)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    term = BiasCorrection(regime, beta_decay=0.1)
    term.on_task_end(_ctx(model, synthetic, layout, 0))
    term.on_task_end(_ctx(model, synthetic, layout, 1))
    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["head.layer.alpha", "head.layer.beta"]  # BatchNorm statistics untouched
    assert model.training
    a, b = term.alpha[1], term.beta[1]
    assert term.alpha[0] == 1.0 and term.beta[0] == 0.0
    assert after["head.layer.alpha"].tolist()[:2] == [1.0, 1.0]
    torch.testing.assert_close(after["head.layer.alpha"][2:4], torch.tensor([a, a]))
    torch.testing.assert_close(after["head.layer.beta"][2:4], torch.tensor([b, b]))
    assert (a, b) != (1.0, 0.0)
    # (alpha, beta) minimise the stage-2 objective: the held-out loss is lower than at identity
    held = regime.held_out
    assert held is not None
    model.eval()
    with torch.no_grad():
        o = model.head.layer.linear(model.features(held.x))[:, :4]

    def objective(alpha: float, beta: float) -> float:
        q = torch.cat([o[:, :2], alpha * o[:, 2:] + beta], 1)
        return float(F.cross_entropy(q, held.targets) + 0.1 * beta ** 2 / 2)

    best = objective(a, b)
    assert best < objective(1.0, 0.0)
    for da, db in [(1e-2, 0), (-1e-2, 0), (0, 1e-2), (0, -1e-2)]:
        assert best <= objective(a + da, b + db) + 1e-6
    assert term.report() == {"alpha": [1.0, a], "beta": [0.0, b]}


def test_fc_retrain_changes_only_the_seen_rows_of_the_last_layer(synthetic: Scenario) -> None:
    layout = Layout.for_scenario(synthetic, "class")
    model = _model(synthetic)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    BalancedRetrain(max_iter=20).on_task_end(_ctx(model, synthetic, layout, 1))
    after = model.state_dict()
    assert sorted(k for k in before if not torch.equal(before[k], after[k])) == [
        "head.layer.bias", "head.layer.weight"]
    assert torch.equal(after["head.layer.weight"][4:], before["head.layer.weight"][4:])
    assert not torch.equal(after["head.layer.weight"][:4], before["head.layer.weight"][:4])


@pytest.mark.parametrize("expr, message", [
    ("icarl+lwf", "'icarl' distils the old classes with LwF's term already"),
    ("bic+lwf", r"'bic' distils the old classes already \(lambda = n/\(n\+m\)\)"),
    ("replay+bic", "'replay' and 'bic' both keep an exemplar memory"),
    ("joint+replay", "the exemplar memory of 'replay' has nothing to add"),
    ("finetune+icarl", "'finetune' is plain training and adds nothing to 'icarl'"),
])
def test_contradictory_compositions_are_refused(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_config("synthetic", expr)


@pytest.mark.parametrize("expr", ["replay+ewc", "replay+lwf", "replay+si"])
def test_replay_composes(expr: str) -> None:
    res = execute(make_config("synthetic", expr, seed=0, setting="class",
                              overrides={"train.progress": "off", "train.epochs": 1}), None)
    R = np.array(res["accuracy"]["class"], dtype=float)
    assert res["status"] == "finished" and np.isfinite(R[np.tril_indices(3)]).all()
    assert set(build_recipe(expr).terms[0].name for _ in [0]) == {"memory"}


@pytest.mark.parametrize("method", ["bic", "icarl"])
def test_interrupted_rehearsal_run_resumes_identically(method: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def cfg():  # type: ignore[no-untyped-def]
        return make_config("synthetic", method, seed=3, setting="class",
                           overrides={"train.progress": "off", f"{method}.budget": 12})

    ref = execute(cfg(), None)
    real_fit = run_mod.fit

    def crashing_fit(*args, checkpoint=None, **kwargs):  # type: ignore[no-untyped-def]
        def ck(state):  # type: ignore[no-untyped-def]
            checkpoint(state)
            if state["task"] == 1:
                raise RuntimeError("simulated crash after task 2")
        return real_fit(*args, checkpoint=ck, **kwargs)

    monkeypatch.setattr(run_mod, "fit", crashing_fit)
    with pytest.raises(RuntimeError, match="simulated crash"):
        execute(cfg(), tmp_path)
    monkeypatch.setattr(run_mod, "fit", real_fit)
    res = execute(cfg(), tmp_path, resume=True)
    saved = json.loads(Path(res["path"], "result.json").read_text())
    for s in ref["accuracy"]:
        assert np.array_equal(np.array(ref["accuracy"][s], dtype=float),
                              np.array(saved["accuracy"][s], dtype=float), equal_nan=True)
    assert saved["losses"] == ref["losses"]
    if method == "bic":
        assert saved["learned"] == ref["learned"]
        assert len(saved["learned"]["bias"]["alpha"]) == 3
