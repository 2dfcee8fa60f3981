"""Every registered method, end to end, on the tiny ``synthetic`` benchmark (timm-style test
parametrised over the registry: methods added later are picked up automatically).

For each method and each setting it supports: the accuracy matrix has shape (T, T), is finite
on and below the diagonal and NaN above it, and beats chance on the task just learned; every
parameter trains at some point (changes, stays finite); the terms' state survives a
``state_dict`` round trip; and ``main(argv)`` returns result dicts with the documented schema.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from lifelong.cli import main
from lifelong.config import make_config
from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario, build_scenario
from lifelong.methods.registry import build_recipe, get_method, list_methods
from lifelong.nn.heads import linear_layer
from lifelong.nn.model import build_model
from lifelong.train.loop import fit

BENCHMARK = "synthetic"
CLASSES_PER_TASK = 2
MARGIN = 0.2
SETTINGS = ("task", "class", "domain")

CASES = [pytest.param(m, s, id=f"{m}-{s}") for m in list_methods() for s in SETTINGS
         if s in get_method(m).settings]


def _state_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(_state_equal(x, y) for x, y in zip(a, b)))
    return a == b


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return build_scenario(BENCHMARK, seed=0)


def test_registry_is_not_empty_and_well_formed() -> None:
    names = list_methods()
    assert {"finetune", "joint", "feature-extraction", "finetune-fc"} <= set(names)
    for name in names:
        spec = get_method(name)
        assert spec.name == name and name == name.lower() and "+" not in name and " " not in name
        assert spec.description, f"{name} has no description for `lifelong list`"
        assert spec.settings and set(spec.settings) <= set(SETTINGS)
        if spec.hparams is not None:
            assert dataclasses.is_dataclass(spec.default_hparams())
        recipe = build_recipe(name)
        assert recipe.name == name
        assert recipe.data is None or recipe.data.name in ("current", "joint", "rehearsal")


@pytest.mark.parametrize("method, setting", CASES)
def test_method_trains_and_beats_chance(method: str, setting: str, scenario: Scenario) -> None:
    cfg = make_config(BENCHMARK, method, seed=0, setting=setting,
                      overrides={"train.progress": "off"})
    layout = Layout.for_scenario(scenario, setting)
    recipe = build_recipe(cfg.method, cfg.hparams, setting)
    torch.manual_seed(cfg.seed)
    model = build_model(scenario, layout, cfg.model, recipe.layer or linear_layer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    res = fit(model, scenario, layout, recipe, cfg.train, seed=cfg.seed)

    T = len(scenario.tasks)
    assert res.accuracy, "no accuracy matrix"
    assert list(res.accuracy)[0] == setting  # the trained setting is evaluated first
    lower, upper = np.tril_indices(T), np.triu_indices(T, 1)
    for s, R in res.accuracy.items():
        assert R.shape == (T, T), s
        assert np.all(np.isfinite(R[lower])), (s, R)
        assert np.all((R[lower] >= 0) & (R[lower] <= 1)), (s, R)
        assert np.all(np.isnan(R[upper])), (s, R)
    R = res.accuracy[setting]
    chance = 1 / CLASSES_PER_TASK
    just_learned = np.diag(R)
    assert np.all(just_learned > chance + MARGIN), f"{method} ({setting}-IL): diag {just_learned}"

    # every parameter trains at some point and stays finite
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"{method} ({setting}-IL) never changed: {unchanged}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    assert not bad, f"{method} ({setting}-IL) non-finite parameters: {bad}"
    assert all(p.requires_grad for p in model.parameters()), "parameters left frozen after fit"

    # every term's loss is logged by name, finite
    assert "ce" in res.losses
    for term in recipe.terms:
        assert term.name in res.losses, f"term {term.name!r} not logged"
    for name, curve in res.losses.items():
        values = [v for _, v in curve]
        assert all(np.isfinite(values)), (name, values)

    # the terms' state survives a round trip (checkpoints resume exactly)
    fresh = build_recipe(cfg.method, cfg.hparams, setting)
    assert [t.name for t in fresh.terms] == [t.name for t in recipe.terms]
    for old, new in zip(recipe.terms, fresh.terms):
        state = old.state_dict()
        new.load_state_dict(state)
        assert _state_equal(new.state_dict(), state), f"term {old.name!r} state round trip"


@pytest.mark.parametrize("method", list_methods())
def test_method_is_deterministic(method: str, scenario: Scenario) -> None:
    setting = "task" if "task" in get_method(method).settings else get_method(method).settings[0]
    results = []
    for _ in range(2):
        cfg = make_config(BENCHMARK, method, seed=3, setting=setting,
                          overrides={"train.progress": "off", "train.epochs": 1})
        layout = Layout.for_scenario(scenario, setting)
        recipe = build_recipe(cfg.method, cfg.hparams, setting)
        torch.manual_seed(cfg.seed)
        model = build_model(scenario, layout, cfg.model, recipe.layer or linear_layer)
        results.append(fit(model, scenario, layout, recipe, cfg.train, seed=cfg.seed))
    a, b = results
    for s in a.accuracy:
        assert np.array_equal(a.accuracy[s], b.accuracy[s], equal_nan=True), s
    assert a.losses == b.losses


SCHEMA_KEYS = {"format", "benchmark", "method", "setting", "seed", "settings", "config",
               "accuracy", "summary", "losses", "timings", "versions"}


def test_main_returns_the_results(capsys: pytest.CaptureFixture[str]) -> None:
    results = main(["run", "-b", BENCHMARK, "-m", "finetune", "--no-save", "--quiet"])
    assert isinstance(results, list) and len(results) == 1
    res = results[0]
    assert SCHEMA_KEYS <= set(res)
    assert res["format"] == "lifelong.run/1"
    assert res["benchmark"] == BENCHMARK and res["method"] == "finetune"
    assert res["setting"] == "task" and res["seed"] == 0
    assert res["settings"] == ["task", "class"]
    assert "path" not in res  # --no-save
    for s in ("task", "class"):
        R = np.array(res["accuracy"][s], dtype=float)  # None (JSON null) -> nan
        assert R.shape == (3, 3)
        assert np.all(np.isnan(R[np.triu_indices(3, 1)]))
        assert np.all(np.isfinite(R[np.tril_indices(3)]))
        summary = res["summary"][s]
        assert summary["average_accuracy"] == pytest.approx(float(np.mean(R[-1])))
        assert set(summary) >= {"average_accuracy", "forgetting", "backward_transfer"}
    assert res["config"]["benchmark"] == BENCHMARK and res["config"]["setting"] == "task"
    assert res["config"]["train"]["progress"] == "off"
    assert res["versions"]["torch"] == torch.__version__
    assert set(res["versions"]) >= {"lifelong", "torch", "numpy", "python"}
    assert set(res["timings"]) >= {"train_s", "eval_s", "total_s", "per_task_s"}
    # synthetic protocol: 80 samples per task, batch 16, 2 epochs -> 10 steps per task, 3 tasks
    assert list(res["losses"]) == ["ce"] and res["losses"]["ce"][-1][0] == 30
    out = capsys.readouterr().out
    assert "finetune on synthetic (task-IL, seed 0)" in out
    assert "avg acc" in out


def test_main_runs_several_methods_and_seeds() -> None:
    results = main(["run", "-b", BENCHMARK, "-m", "finetune", "joint", "--seeds", "0", "1",
                    "--no-save", "--quiet", "train.epochs=1"])
    assert [(r["method"], r["seed"]) for r in results] == [
        ("finetune", 0), ("finetune", 1), ("joint", 0), ("joint", 1)]
    assert all(r["config"]["train"]["epochs"] == 1 for r in results)
