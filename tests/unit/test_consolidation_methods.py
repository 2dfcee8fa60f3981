"""The registered consolidation methods on a tiny hand-built scenario: the penalty is absent on
the first task, strictly positive afterwards and changes the update; state round trips; memory
per task; composition; configuration files."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lifelong.config import load_configs, make_config
from lifelong.data.layout import Layout
from lifelong.data.scenarios import SETTINGS, Scenario, Task
from lifelong.methods.registry import build_recipe, get_method
from lifelong.nn.model import ModelConfig, build_model
from lifelong.terms.penalty import QuadraticPenalty
from lifelong.train.loop import FitResult, TrainConfig, fit

METHODS = ("ewc", "online-ewc", "si", "mas", "mas-local")
# strong enough to visibly hold the parameters on this tiny problem
STRONG = {"ewc": {"lam": 10.0}, "online-ewc": {"lam": 10.0}, "si": {"c": 10.0},
          "mas": {"lam": 2.0}, "mas-local": {"lam": 0.5}}
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_scenario(n_tasks: int = 3, seed: int = 0) -> Scenario:
    """Two Gaussian classes per task in 8 dimensions, 48 training samples per task."""
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(n_tasks):
        means = 2.0 * torch.randn(2, 8, generator=g)

        def draw(n: int, means: torch.Tensor = means, t: int = t
                 ) -> tuple[torch.Tensor, torch.Tensor]:
            local = torch.arange(2).repeat(n // 2)
            x = means[local] + 0.7 * torch.randn(n, 8, generator=g)
            return x.view(n, 1, 2, 4), local + 2 * t

        train_x, train_y = draw(48)
        test_x, test_y = draw(20)
        tasks.append(Task(id=t, name=f"t{t}", classes=(2 * t, 2 * t + 1), train_x=train_x,
                          train_y=train_y, test_x=test_x, test_y=test_y))
    return Scenario(name="tiny", tasks=tuple(tasks), input_shape=(1, 2, 4),
                    num_classes=2 * n_tasks, class_names=tuple(map(str, range(2 * n_tasks))),
                    settings=SETTINGS, default_setting="task")


def _run(method: str, hp: dict | None = None, n_tasks: int = 3, epochs: int = 2,
         on_task: Callable[[torch.nn.Module, object], None] | None = None,
         ) -> tuple[torch.nn.Module, FitResult, object]:
    """Trains ``method`` on :func:`tiny_scenario`; ``on_task(model, recipe)`` after each task."""
    scenario = tiny_scenario(n_tasks)
    layout = Layout.for_scenario(scenario, "task")
    hparams = {}
    if method != "finetune":
        spec = get_method(method)
        hparams[method] = dataclasses.replace(spec.default_hparams(), **(hp or {}))
    recipe = build_recipe(method, hparams, "task")
    torch.manual_seed(0)
    model = build_model(scenario, layout, ModelConfig(hidden=(16,)))
    config = TrainConfig(lr=0.1, batch_size=16, epochs=epochs, log_every=1, progress="off")
    hook = None if on_task is None else (lambda state: on_task(model, recipe))
    return model, fit(model, scenario, layout, recipe, config, seed=0, checkpoint=hook), recipe


def test_every_method_is_registered_with_documented_hyperparameters() -> None:
    for name in METHODS:
        spec = get_method(name)
        assert dataclasses.is_dataclass(spec.hparams), name
        assert spec.hparams.__doc__ and "Attributes:" in spec.hparams.__doc__
        assert "20" in spec.description  # cites the paper's year
        recipe = spec.build(spec.default_hparams())
        assert recipe.layer is None and recipe.data is None and recipe.freeze is None
        assert len(recipe.terms) == 1 and recipe.terms[0].penalty
        assert isinstance(recipe.terms[0], QuadraticPenalty)
        assert recipe.terms[0].name == name


def test_penalty_value_is_logged_as_the_mean_over_the_logged_steps() -> None:
    """A penalty is a loss like any other: evaluated every step, logged as a mean."""
    scenario = tiny_scenario(2)
    layout = Layout.for_scenario(scenario, "task")
    recipe = build_recipe("ewc", {"ewc": dataclasses.replace(get_method("ewc").default_hparams(),
                                                             lam=1e4)}, "task")
    torch.manual_seed(0)
    model = build_model(scenario, layout, ModelConfig(hidden=(16,)))
    calls = []
    term = recipe.terms[0]
    original = term.loss
    term.loss = lambda ctx, batch: calls.append(ctx.task_step) or original(ctx, batch)
    config = TrainConfig(lr=0.1, batch_size=16, epochs=3, log_every=4, progress="off")
    res = fit(model, scenario, layout, recipe, config, seed=0)
    # 3 epochs of 48 samples in batches of 16 = 9 steps per task; logged after steps 4, 8, 9
    assert calls == list(range(9)) * 2
    assert [s for s, _ in res.losses["ewc"]] == [s for s, _ in res.losses["ce"]] == [
        4, 8, 9, 13, 17, 18]
    values = [v for _, v in res.losses["ewc"]]
    assert values[:3] == [0.0, 0.0, 0.0] and all(v > 0 for v in values[3:])


@pytest.mark.parametrize("method", METHODS)
def test_penalty_is_zero_on_task_one_then_positive_and_changes_the_update(method: str) -> None:
    model, res, recipe = _run(method, STRONG[method])
    steps = 2 * 3  # per task: 2 epochs of 48 samples in batches of 16 (logged every step)
    curve = [v for _, v in res.losses[method]]
    assert len(curve) == 3 * steps
    assert all(v == 0.0 for v in curve[:steps])  # nothing to consolidate during task 1
    for t in (1, 2):
        task = curve[t * steps:(t + 1) * steps]
        # a task starts at the anchor (exactly 0 with one anchor); every later step is penalised
        assert task[0] >= 0.0 and all(v > 0.0 for v in task[1:]), (t, task)
    assert recipe.terms[0].num_consolidated == 3

    ft_model, ft_res, _ = _run("finetune")
    # same data order and initialisation: task 1 is learned identically ...
    assert res.accuracy["task"][0, 0] == ft_res.accuracy["task"][0, 0]
    # ... and the penalty changes every update after it
    w, w_ft = model.backbone.layers[0].weight, ft_model.backbone.layers[0].weight
    assert not torch.allclose(w, w_ft)


@pytest.mark.parametrize("method", METHODS)
def test_strong_penalty_holds_the_important_weights(method: str) -> None:
    # Importance-weighted drift sum Omega_1 (theta_2 - theta_1)^2 over task 2, with Omega_1 the
    # method's importance after task 1: the penalty keeps it well below fine-tuning's.
    snaps: dict[str, list[dict[str, torch.Tensor]]] = {"finetune": [], method: []}
    omega: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable[[torch.nn.Module, object], None]:
        def on_task(model: torch.nn.Module, recipe: object) -> None:
            snaps[name].append({n: p.detach().clone() for n, p in model.named_parameters()})
            if name == method and not omega:
                omega.update(recipe.terms[0].state_dict()["importances"][0])
        return on_task

    hold = {**STRONG, "ewc": {"lam": 30.0}, "online-ewc": {"lam": 30.0}}  # 2 tasks: still stable
    for name in ("finetune", method):
        _run(name, hold.get(name), n_tasks=2, epochs=3, on_task=record(name))
    drift = {name: sum(float((omega[n] * (s[1][n] - s[0][n]).square()).sum()) for n in omega)
             for name, s in snaps.items()}
    assert drift[method] < 0.5 * drift["finetune"], drift


@pytest.mark.parametrize("method", METHODS)
def test_state_round_trip_after_training(method: str) -> None:
    model, _, recipe = _run(method, n_tasks=2)
    term = recipe.terms[0]
    fresh = build_recipe(method, None, "task").terms[0]
    fresh.load_state_dict(term.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    assert fresh.penalty_value(model).item() == term.penalty_value(model).item() > 0


def test_memory_of_ewc_grows_with_tasks_and_online_methods_stay_constant() -> None:
    sizes: dict[str, list[int]] = {}
    for method in METHODS:
        sizes[method] = []
        _run(method, n_tasks=3,
             on_task=lambda m, r, out=sizes[method]: out.append(r.terms[0].state_bytes()))
    ewc = sizes["ewc"]
    assert ewc[1] == 2 * ewc[0] and ewc[2] == 3 * ewc[0]  # one (F, theta*) pair per task
    for method in ("online-ewc", "si", "mas", "mas-local"):
        assert sizes[method] == [sizes[method][0]] * 3, (method, sizes[method])
        assert sizes[method][0] == ewc[0]


def test_methods_compose_with_each_other_and_with_baselines() -> None:
    recipe = build_recipe("ewc+si")
    assert [t.name for t in recipe.terms] == ["ewc", "si"]
    assert [t.name for t in build_recipe("joint+mas").terms] == ["mas"]
    scenario = tiny_scenario(2)
    layout = Layout.for_scenario(scenario, "task")
    torch.manual_seed(0)
    model = build_model(scenario, layout, ModelConfig(hidden=(16,)))
    res = fit(model, scenario, layout, build_recipe("online-ewc+mas-local"),
              TrainConfig(lr=0.1, batch_size=16, epochs=1, progress="off"), seed=0)
    assert set(res.losses) == {"ce", "online-ewc", "mas-local"}


def test_dotted_overrides_reach_the_hyperparameters() -> None:
    cfg = make_config("split-mnist", "ewc+si", 0, None, {"ewc.lam": "1e7", "si.xi": 0.5})
    assert cfg.hparams["ewc"].lam == 1e7 and cfg.hparams["si"].xi == 0.5
    assert cfg.hparams["ewc"].fisher_samples is None
    cfg = make_config("split-mnist", "ewc", 0, None, {"ewc.fisher_samples": "1000"})
    assert cfg.hparams["ewc"].fisher_samples == 1000
    with pytest.raises(ValueError, match="unknown option 'ewc.lambda'"):
        make_config("split-mnist", "ewc", 0, None, {"ewc.lambda": 1.0})


def _own_configs() -> list[Path]:
    """The consolidation methods' files of every protocol, ``configs/<protocol>/<method>.toml``
    (each layered on ``configs/<protocol>.toml``)."""
    return sorted(p for p in CONFIGS.glob("*/*.toml") if p.stem in METHODS)


@pytest.mark.parametrize("path", _own_configs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_reference_configs_resolve(path: Path) -> None:
    top, overrides = load_configs([CONFIGS / f"{path.parent.name}.toml", path])
    method = top["method"]
    assert method == path.stem
    cfg = make_config(top["benchmark"], method, 0, top.get("setting"), overrides)
    recipe = build_recipe(method, cfg.hparams, cfg.setting)
    # every key of the method's table reached its hyperparameters
    for key, value in overrides.items():
        if key.startswith(f"{method}."):
            assert getattr(cfg.hparams[method], key.split(".", 1)[1]) == value, key
    assert recipe.terms[0].name == method


def test_there_is_a_reference_config_per_method_and_benchmark() -> None:
    names = {f"{p.parent.name}/{p.name}" for p in _own_configs()}
    for method in METHODS:
        for protocol in ("split-mnist-dhp", "split-mnist-three-scenarios", "permuted-mnist"):
            assert f"{protocol}/{method}.toml" in names
