"""DHP-Softmax on real MNIST (regression tier; issue: DHP-Softmax, Thangarasa et al. 2020).

Only claims that were measured to be stable across seeds are held here (numbers, commands and
the full 5-seed tables: ``docs/dhp.md``). Every run is REDUCED so that the file stays within a
few minutes on one thread:

* SplitMNIST under the DHP protocol (multi-head MLP 784-256-256, SGD 0.01, batch 64, raw pixels)
  with ``SPLIT_EPOCHS`` epoch per task instead of 10: DHP learns every task far above chance
  (task-IL >= 93 %, chance 50 %), writes a non-negative, non-zero trace into every head and
  learns ``eta``; and its plastic part is neutral against the *linear control* -- the same run
  with ``alpha0 = eta0 = 0``, which keeps alpha, eta and the trace at exactly zero and so is a
  linear layer built from the same random draws (measured: paired differences within
  +-0.05 points at 1 epoch; 0.00 +- 0.23 over 5 seeds at the full 10 epochs).
* DHP+X >= X - 0.3 points (the issue's bar), for X in EWC, online EWC, SI and MAS, on SplitMNIST
  task-IL with ONE 10-unit output layer masked to the task's units (``model.head=single``,
  ``SPLIT_EPOCHS`` epoch per task), mean of ``SEEDS``. With a single layer X and DHP+X start from
  identical weights (DHP-Softmax draws its slow weights and bias exactly like ``nn.Linear`` and
  alpha after them), so the difference is the plastic part and not the initialisation; with one
  head per task the later heads' initial weights differ between the two runs, which moves
  single runs by up to +-1.5 points (docs/dhp.md) and would make a 0.3-point bar a coin flip.
  Consolidation strengths: each method's file of the protocol, ``configs/split-mnist-dhp/<X>.toml``.
* The same bar on PermutedMNIST and Imbalanced PermutedMNIST (domain-IL, ONE 10-unit output
  layer shared by all tasks), REDUCED to ``PERM`` (tasks, data fraction, width, iterations and a
  larger Adam step; ``PERM_SEEDS``), from ``configs/permuted-mnist.toml`` with
  ``configs/permuted-mnist/<X>.toml`` (X's hyperparameters) and, for DHP+X,
  ``configs/permuted-mnist/dhp.toml`` (which adds ``<X>.penalize_plastic = true``). With alpha and
  eta left out of the penalty (the paper's choice) DHP+X loses 2-10 points to X here: the
  plastic part of the shared layer keeps learning the latest task (docs/dhp.md). Measured on
  this reduction, DHP+X - X (seeds 0 / 1): PermutedMNIST ewc +0.50 / +0.46, online-ewc +0.42 /
  +0.38, si +0.44 / +0.17, mas +0.35 / +0.65; Imbalanced ewc +0.22 / +0.79, online-ewc +0.31 /
  +0.73, si +0.51 / +0.76, mas +0.85 / +1.06 (5-task, 3-seed tables: docs/dhp.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lifelong.config import load_configs, load_toml, make_config
from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario, build_scenario
from lifelong.methods.registry import build_recipe
from lifelong.nn.dhp import DHPSoftmax
from lifelong.nn.model import build_model
from lifelong.train.loop import fit

pytestmark = pytest.mark.regression

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SPLIT_EPOCHS = 1
SEEDS = (0, 1)
CONSOLIDATION = ("ewc", "online-ewc", "si", "mas")
LINEAR_CONTROL = {"dhp.alpha_init_scale": 0.0, "dhp.eta_init": 0.0}
PERM = {"data.n_tasks": 3, "data.train_fraction": 0.1, "model.hidden": "[256,256]",
        "train.iterations": 300, "train.lr": 1e-3}
PERM_SEEDS = (0,)


_SCENARIOS: dict[Any, Scenario] = {}


def _strength(method: str) -> dict[str, Any]:
    """Hyperparameters of consolidation method ``method`` from its file of the DHP protocol."""
    _, overrides = load_toml(CONFIGS / "split-mnist-dhp" / f"{method}.toml")
    return {k: v for k, v in overrides.items() if k.startswith(method + ".")}


def _run(method: str, seed: int, data_dir: str, **overrides: Any
         ) -> tuple[float, torch.nn.Module, Layout]:
    """Task-IL average accuracy of one reduced SplitMNIST run, with the trained model."""
    ov: dict[str, Any] = {"data.data_dir": data_dir, "train.progress": "off",
                          "train.epochs": SPLIT_EPOCHS, "data.normalize": False}
    for part in method.split("+"):
        if part not in ("dhp", "finetune"):
            ov.update(_strength(part))
    ov.update(overrides)
    cfg = make_config("split-mnist", method, seed, "task", ov)
    key = (repr(cfg.data), seed)
    if key not in _SCENARIOS:
        _SCENARIOS[key] = build_scenario("split-mnist", cfg.data, seed)
    scenario = _SCENARIOS[key]
    layout = Layout.for_scenario(scenario, "task")
    recipe = build_recipe(cfg.method, cfg.hparams, "task")
    torch.manual_seed(seed)
    model = build_model(scenario, layout, cfg.model, recipe.layer)
    res = fit(model, scenario, layout, recipe, cfg.train, seed=seed)
    R = res.accuracy["task"]
    return float(np.mean(R[-1])), model, layout


def test_dhp_learns_split_mnist_writes_every_trace_and_is_neutral_vs_its_linear_control(
        mnist_dir: str) -> None:
    diffs = []
    for seed in SEEDS:
        acc, model, layout = _run("dhp", seed, mnist_dir, **{"model.head": "multi"})
        assert acc >= 0.93, (seed, acc)  # chance: 0.5
        heads = [m for m in model.head.heads]
        assert len(heads) == 5 and all(isinstance(h, DHPSoftmax) for h in heads)
        for h in heads:
            hebb = h.hebb
            # each class row holds a moving average of its (ReLU) penultimate activations
            assert float(hebb.min()) >= 0.0
            assert bool((hebb.abs().sum(1) > 0).all())
            assert not torch.allclose(hebb[0], hebb[1])
            eta = float(h.eta.detach())
            assert 0.0 < eta < 1.0 and abs(eta - 0.001) > 1e-4  # eta is learned
        control, _, _ = _run("dhp", seed, mnist_dir, **{"model.head": "multi"}, **LINEAR_CONTROL)
        diffs.append(acc - control)
    # the plastic part neither helps nor hurts measurably on this protocol (docs/dhp.md); a
    # change of the layer that moves this is a finding to document, in either direction
    assert abs(float(np.mean(diffs))) <= 0.005, diffs


def test_dhp_plus_consolidation_is_not_worse_than_consolidation(mnist_dir: str) -> None:
    gaps = {}
    for x in CONSOLIDATION:
        per_seed = []
        for seed in SEEDS:
            base, _, _ = _run(x, seed, mnist_dir, **{"model.head": "single"})
            with_dhp, _, _ = _run(f"dhp+{x}", seed, mnist_dir, **{"model.head": "single"})
            per_seed.append(with_dhp - base)
        gaps[x] = float(np.mean(per_seed))
    for gap in gaps.values():
        assert gap >= -0.003, gaps  # DHP+X >= X - 0.3 points, on average over the seeds


def _permuted(benchmark: str, method: str, seed: int, data_dir: str) -> float:
    """Domain-IL average accuracy of one reduced run of ``method`` under
    ``configs/permuted-mnist.toml`` with the file of each part of ``method`` on it."""
    files = [CONFIGS / "permuted-mnist.toml"]
    files += [CONFIGS / "permuted-mnist" / f"{part}.toml" for part in method.split("+")]
    top, overrides = load_configs(files)
    overrides.update({"data.data_dir": data_dir, "train.progress": "off", **PERM})
    cfg = make_config(benchmark, method, seed, top["setting"], overrides)
    key = (benchmark, repr(cfg.data), seed)
    if key not in _SCENARIOS:
        _SCENARIOS[key] = build_scenario(benchmark, cfg.data, seed)
    scenario = _SCENARIOS[key]
    layout = Layout.for_scenario(scenario, "domain")
    recipe = build_recipe(cfg.method, cfg.hparams, "domain")
    torch.manual_seed(seed)
    model = build_model(scenario, layout, cfg.model, recipe.layer)
    res = fit(model, scenario, layout, recipe, cfg.train, seed=seed)
    return float(np.mean(res.accuracy["domain"][-1]))


@pytest.mark.parametrize("name", ["permuted-mnist", "imbalanced-permuted-mnist"])
def test_dhp_plus_consolidation_on_permuted_benchmarks(name: str, mnist_dir: str) -> None:
    gaps = {}
    for x in CONSOLIDATION:
        diffs = [_permuted(name, f"dhp+{x}", s, mnist_dir) - _permuted(name, x, s,
                                                                          mnist_dir)
                 for s in PERM_SEEDS]
        gaps[x] = float(np.mean(diffs))
    for gap in gaps.values():
        assert gap >= -0.003, gaps  # DHP+X >= X - 0.3 points
