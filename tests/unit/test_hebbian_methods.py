"""The prototype layer, the neural-gas fitting term and TOPIC's losses (lifelong.nn.prototypes,
lifelong.terms.hebbian, lifelong.methods.hebbian)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lifelong.train.run as run_mod
from lifelong.config import make_config
from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario
from lifelong.methods.registry import build_recipe
from lifelong.nn.model import build_model
from lifelong.nn.prototypes import PrototypeLayer
from lifelong.terms.base import Batch
from lifelong.terms.hebbian import (
    AnchorLoss,
    MinMaxLoss,
    NeuralGasFit,
    fit_nodes,
    prototype_layer,
    task_features,
)
from lifelong.train.loop import TrainConfig, TrainContext, fit
from lifelong.train.run import execute


def test_layer_predicts_the_label_of_the_nearest_node() -> None:
    layer = PrototypeLayer(2, 3, nodes_per_class=2, normalize=False)
    h = torch.tensor([[0.0, 0.1], [2.9, 0.0], [0.0, -2.0]])
    assert torch.equal(layer(h), layer.linear(h))  # nothing fitted: the linear classifier
    layer.nodes[0, 0] = torch.tensor([0.0, 0.0])
    layer.nodes[1, 0] = torch.tensor([3.0, 0.0])
    layer.nodes[1, 1] = torch.tensor([0.0, -2.5])
    layer.active[0, 0] = layer.active[1, 0] = layer.active[1, 1] = True
    assert torch.equal(layer(h), layer.linear(h))  # training mode: the linear classifier
    layer.eval()
    logits = layer(h)
    expected = torch.tensor([[-0.01, -min(9.0 + 0.01, 2.6 ** 2)], [-(2.9 ** 2), -0.01],
                             [-4.0, -0.25]])
    assert torch.allclose(logits[:, :2], expected, atol=1e-5)
    assert torch.isinf(logits[:, 2]).all()  # a class without nodes
    assert logits.argmax(1).tolist() == [0, 1, 1]


def _features(n_per: int, classes: list[int], dim: int = 4, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.eye(dim)[: max(classes) + 1]
    y = torch.tensor(classes).repeat_interleave(n_per)
    x = centres[y] + 0.3 * torch.randn(len(y), dim, generator=g)
    return F.normalize(x, dim=1), y


def test_fit_nodes_adds_new_class_nodes_without_moving_old_ones() -> None:
    layer = PrototypeLayer(4, 4, nodes_per_class=3)
    g = torch.Generator().manual_seed(0)
    x, y = _features(50, [0, 1])
    fit_nodes(layer, x, y, NeuralGasFit(epochs=2, batch_size=16), g)
    assert layer.active[:2].all() and not layer.active[2:].any()
    old = layer.nodes[:2].clone()
    x2, y2 = _features(2, [2, 3], seed=1)  # two-shot classes: two nodes each
    fit_nodes(layer, x2, y2, NeuralGasFit(epochs=2, batch_size=16), g)
    assert torch.equal(layer.nodes[:2], old)
    assert layer.active.sum(1).tolist() == [3, 3, 2, 2]
    # each node is the mean of the class samples nearest to it (before that last step, so
    # approximately after it), with their variance
    nodes = layer.flat_nodes()
    labels = layer.node_labels()
    active = layer.active.flatten()
    d = torch.cdist(x, nodes) ** 2
    d[(y[:, None] != labels[None, :]) | ~active[None, :]] = math.inf
    win = d.argmin(1)
    for k in torch.unique(win).tolist():
        cell = x[win == k]
        assert torch.allclose(nodes[k], cell.mean(0), atol=0.02)
        assert torch.allclose(layer.variance.view(-1, 4)[k], cell.var(0, unbiased=False),
                              atol=0.02)
    # edges only between active nodes, symmetric
    edges = torch.isfinite(layer.age)
    assert edges.any() and torch.equal(edges, edges.T)
    assert not (edges & ~(active[:, None] & active[None, :])).any()


def test_one_node_per_class_is_the_class_mean() -> None:
    layer = PrototypeLayer(4, 2, nodes_per_class=1)
    x, y = _features(40, [0, 1])
    fit_nodes(layer, x, y, NeuralGasFit(epochs=0), torch.Generator().manual_seed(0))
    means = torch.stack([x[y == c].mean(0) for c in (0, 1)])
    assert torch.allclose(layer.nodes[:, 0], means, atol=1e-6)


def _trained(synthetic: Scenario, method: str, overrides: dict | None = None
             ) -> tuple[torch.nn.Module, Layout, object, TrainConfig]:
    cfg = make_config("synthetic", method, 0, "class",
                      {"train.progress": "off", **(overrides or {})})
    layout = Layout.for_scenario(synthetic, "class")
    recipe = build_recipe(cfg.method, cfg.hparams, "class")
    torch.manual_seed(0)
    model = build_model(synthetic, layout, cfg.model, recipe.layer)
    return model, layout, recipe, cfg.train


def test_ncm_predicts_the_nearest_class_mean_of_frozen_first_task_features(
        synthetic: Scenario) -> None:
    model, layout, recipe, train = _trained(synthetic, "ncm")
    res = fit(model, synthetic, layout, recipe, train, seed=0)
    model.eval()
    layer = prototype_layer(model)
    with torch.no_grad():
        feats = [F.normalize(model.features(t.train_x), dim=1) for t in synthetic.tasks]
        means = torch.cat([torch.stack([f[t.train_y == c].mean(0) for c in t.classes])
                           for f, t in zip(feats, synthetic.tasks)])
        assert torch.allclose(layer.nodes[:, 0], means, atol=1e-5)
        for j, t in enumerate(synthetic.tasks):
            e = F.normalize(model.features(t.test_x), dim=1)
            pred = torch.cdist(e, means).argmin(1)
            acc = float((pred == layout.targets(j, t.test_y)).float().mean())
            assert res.accuracy["class"][-1, j] == pytest.approx(acc)


def _ctx(model: torch.nn.Module, scenario: Scenario, layout: Layout, t: int) -> TrainContext:
    task = scenario.tasks[t]
    ctx = TrainContext(model=model, scenario=scenario, layout=layout, config=TrainConfig(),
                       task_id=t, generator=torch.Generator().manual_seed(0))
    ctx.train_x, ctx.train_y = task.train_x, task.train_y
    ctx.train_targets = layout.targets(t, task.train_y)
    return ctx


def test_anchor_loss_holds_stored_samples_at_their_nodes(synthetic: Scenario) -> None:
    model, layout, _, _ = _trained(synthetic, "topic")
    ctx = _ctx(model, synthetic, layout, 0)
    fitter, anchor = NeuralGasFit(epochs=1), AnchorLoss(weight=2.0, variance_floor=0.1)
    batch = Batch(x=synthetic.tasks[0].train_x[:4], y=synthetic.tasks[0].train_y[:4],
                  targets=ctx.train_targets[:4], task_ids=torch.zeros(4, dtype=torch.long),
                  units=slice(0, 2), logits=torch.zeros(4, 2))
    assert anchor.loss(ctx, batch) is None  # nothing stored before the first task's end
    fitter.on_task_end(ctx)
    anchor.on_task_end(ctx)
    layer = prototype_layer(model)
    n_nodes = int(layer.active.sum())
    assert anchor.samples is not None and anchor.samples.shape[0] == n_nodes
    feats, targets = task_features(ctx, layer)
    # every stored sample is a training sample of the node's class, the nearest to the node
    rows = [int((ctx.train_x == z).all(dim=(1, 2, 3)).nonzero()[0]) for z in anchor.samples]
    assert all(int(targets[r]) in (0, 1) for r in rows)
    model.eval()  # no dropout/batch norm here: the value is the formula's
    value = anchor.loss(ctx, batch)
    assert value is not None
    e = layer.embed(model.features(anchor.samples))
    lam = anchor.variances + 0.1 * anchor.variances.mean()
    assert torch.equal(anchor.inverse_scale(), lam)
    expected = 2.0 * ((e - anchor.centroids) ** 2 / lam).mean()
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    value.backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    state = anchor.state_dict()
    other = AnchorLoss()
    other.load_state_dict(state)
    assert torch.equal(other.samples, anchor.samples)


def test_anchor_loss_stays_finite_when_every_node_has_one_sample() -> None:
    # fscil-cifar100 smoke run with 5 base images per class: every node fitted to one sample,
    # all variances 0 -> the loss was inf at the first step of session 2
    anchor = AnchorLoss(variance_floor=0.1)
    anchor.centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    anchor.variances = torch.zeros(2, 2)
    scale = anchor.centroids.var(0).mean()
    assert torch.allclose(anchor.inverse_scale(), torch.full((2, 2), 0.1 * float(scale)))
    anchor.centroids = torch.ones(1, 2)
    anchor.variances = torch.zeros(1, 2)
    assert torch.equal(anchor.inverse_scale(), torch.full((1, 2), 0.1))


def test_min_max_loss_pulls_samples_and_pushes_from_neighbours_of_other_classes(
        synthetic: Scenario) -> None:
    model, layout, _, _ = _trained(synthetic, "topic")
    ctx0 = _ctx(model, synthetic, layout, 0)
    NeuralGasFit(epochs=1).on_task_end(ctx0)
    mml = MinMaxLoss(weight=1.0, pull_margin=0.0, push_margin=4.0)
    mml.on_task_start(ctx0)
    assert mml.neighbours is None  # nothing to push from in the base session
    ctx1 = _ctx(model, synthetic, layout, 1)
    mml.on_task_start(ctx1)
    layer = prototype_layer(model)
    assert mml.neighbours is not None
    assert mml.neighbours[2:4].any() and not mml.neighbours[:2].any()
    labels = layer.node_labels()
    assert not (mml.neighbours & (labels[None, :] == torch.arange(6)[:, None])).any()
    task = synthetic.tasks[1]
    targets = ctx1.train_targets
    batch = Batch(x=task.train_x, y=task.train_y, targets=targets,
                  task_ids=torch.ones_like(targets), units=slice(0, 4), logits=torch.zeros(
                      len(targets), 4))
    model.eval()
    value = mml.loss(ctx1, batch)
    e = layer.embed(model.features(task.train_x))
    means = torch.stack([e[targets == u].mean(0) for u in (2, 3)])
    pull = ((e - means[targets - 2]) ** 2).sum(1).mean()
    d = torch.cdist(means, layer.flat_nodes()) ** 2
    pairs = mml.neighbours[2:4]
    push = (4.0 - d[pairs]).clamp_min(0).mean()
    assert value is not None
    assert float(value.detach()) == pytest.approx(float((pull + push).detach()), rel=1e-4)


def test_terms_refuse_a_model_without_prototype_layer(synthetic: Scenario) -> None:
    model, layout, _, _ = _trained(synthetic, "finetune")
    with pytest.raises(ValueError, match="needs a PrototypeLayer output layer"):
        NeuralGasFit().on_task_end(_ctx(model, synthetic, layout, 0))


@pytest.mark.parametrize("override, message", [
    ({"topic.anchor_weight": -1}, "topic.anchor_weight must be >= 0"),
    ({"topic.nodes_per_class": 0}, "nodes_per_class must be >= 1"),
])
def test_bad_topic_hyperparameters_are_refused(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_config("synthetic", "topic", 0, "class", override)


def test_prototype_methods_refuse_task_incremental() -> None:
    with pytest.raises(ValueError, match="does not apply to the task-incremental setting"):
        build_recipe("topic", setting="task")


def test_topic_resumes_bit_identically_from_a_checkpoint(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes and edges (layer buffers), stored anchor samples and min-max neighbours (term state)
    survive a checkpoint: an interrupted topic run ends as the uninterrupted one."""
    def cfg():
        return make_config("synthetic", "topic", 3, "class", {"train.progress": "off"})

    ref = execute(cfg(), None)
    real_fit = run_mod.fit

    class Crash(RuntimeError):
        pass

    def crashing_fit(*args, checkpoint=None, **kwargs):
        def ck(state):
            checkpoint(state)
            if state["task"] == 1:
                raise Crash("after task 2")
        return real_fit(*args, checkpoint=ck, **kwargs)

    monkeypatch.setattr(run_mod, "fit", crashing_fit)
    with pytest.raises(Crash):
        execute(cfg(), tmp_path)
    monkeypatch.setattr(run_mod, "fit", real_fit)
    res = execute(cfg(), tmp_path, resume=True)
    saved = json.loads((tmp_path / "synthetic" / "class" / "topic" / "seed3" / "result.json")
                       .read_text())
    a = np.array(ref["accuracy"]["class"], dtype=float)
    assert np.array_equal(a, np.array(saved["accuracy"]["class"], dtype=float), equal_nan=True)
    assert res["losses"] == ref["losses"]
    assert ref["losses"]["anchor"] and ref["losses"]["min-max"]  # both terms were active
