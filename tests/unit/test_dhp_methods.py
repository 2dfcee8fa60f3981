"""The ``dhp`` method and its compositions with consolidation (Thangarasa et al. 2020).

On the tiny ``synthetic`` benchmark: the recipe carries the DHP-Softmax layer (and, composed, the
penalty term); refused compositions; the consolidation penalty selects the slow weights, never
the trace, and the plastic ``alpha``/``eta`` only with ``penalize_plastic``; the trace is written
in training, kept across tasks, untouched by evaluation; a trained model round-trips through
``state_dict``; every head design trains and beats chance.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lifelong.cli import main
from lifelong.config import RunConfig, load_configs, make_config
from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario, build_scenario
from lifelong.methods.base import Recipe, compose
from lifelong.methods.dhp import DHPConfig, dhp_layer_factory
from lifelong.methods.registry import build_recipe, get_method
from lifelong.nn.dhp import DHPSoftmax
from lifelong.nn.heads import MultiHead, SingleHead
from lifelong.nn.model import ContinualModel, build_model
from lifelong.terms.base import Term
from lifelong.terms.penalty import QuadraticPenalty, penalties
from lifelong.train.loop import FitResult, evaluate, fit

CONSOLIDATION = ("ewc", "online-ewc", "si", "mas", "mas-local")
BENCHMARK = "synthetic"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# strengths that train stably on `synthetic` (lr 0.1), independent of the defaults, which are
# tuned for the SplitMNIST protocol
STABLE = {"ewc.lam": 10.0, "online-ewc.lam": 10.0, "si.c": 1.0, "mas.lam": 1.0,
          "mas-local.lam": 0.5}


def _traces(model: nn.Module) -> dict[str, Tensor]:
    return {n: m.hebb.detach().clone() for n, m in model.named_modules()
            if isinstance(m, DHPSoftmax)}


class _TraceRecorder(Term):
    """Records every DHP trace at the start and at the end of each task."""

    name = "trace-recorder"

    def __init__(self) -> None:
        self.start: list[dict[str, Tensor]] = []
        self.end: list[dict[str, Tensor]] = []

    def on_task_start(self, ctx: Any) -> None:
        self.start.append(_traces(ctx.model))

    def on_task_end(self, ctx: Any) -> None:
        self.end.append(_traces(ctx.model))


@dataclasses.dataclass
class _Run:
    model: ContinualModel
    result: FitResult
    recipe: Recipe
    scenario: Scenario
    layout: Layout
    after_eval: list[dict[str, Tensor]]


def _train(method: str, setting: str = "task", head: str = "auto",
           extra_terms: tuple[Term, ...] = (), seed: int = 0, **overrides: Any) -> _Run:
    ov = {"train.progress": "off", "model.head": head, **STABLE, **overrides}
    cfg = make_config(BENCHMARK, method, seed, setting, ov)
    scenario = build_scenario(BENCHMARK, cfg.data, seed)
    layout = Layout.for_scenario(scenario, setting)
    recipe = build_recipe(cfg.method, cfg.hparams, setting)
    recipe.terms.extend(extra_terms)
    torch.manual_seed(seed)
    model = build_model(scenario, layout, cfg.model, recipe.layer)
    after_eval: list[dict[str, Tensor]] = []

    def checkpoint(state: dict[str, Any]) -> None:  # called after each task's evaluation
        after_eval.append({k[: -len(".hebb")]: v.clone() for k, v in state["model"].items()
                           if k.endswith(".hebb")})

    res = fit(model, scenario, layout, recipe, cfg.train, seed=seed, checkpoint=checkpoint)
    return _Run(model, res, recipe, scenario, layout, after_eval)


# ---------------------------------------------------------------------------------- recipes


def test_dhp_recipe_is_the_layer_only_with_the_papers_defaults() -> None:
    spec = get_method("dhp")
    hp = spec.default_hparams()
    assert isinstance(hp, DHPConfig)
    assert (hp.eta_init, hp.alpha_init_scale, hp.bias) == (0.001, 0.01, True)
    recipe = build_recipe("dhp")
    assert recipe.terms == [] and recipe.data is None and recipe.freeze is None
    assert recipe.layer_name == "dhp"
    torch.manual_seed(0)
    layer = recipe.layer(7, 3)
    assert isinstance(layer, DHPSoftmax)
    assert layer.weight.shape == layer.alpha.shape == layer.hebb.shape == (3, 7)
    assert float(layer.eta.detach()) == pytest.approx(0.001)
    assert 0.0 <= float(layer.alpha.detach().min()) <= float(layer.alpha.detach().max()) <= 0.01
    assert layer.bias is not None and torch.count_nonzero(layer.hebb) == 0


def test_hyperparameters_reach_the_layer() -> None:
    factory = dhp_layer_factory(DHPConfig(eta_init=0.25, alpha_init_scale=0.5, bias=False))
    layer = factory(4, 2)
    assert float(layer.eta.detach()) == 0.25 and layer.bias is None
    assert 0.0 <= float(layer.alpha.detach().min()) <= float(layer.alpha.detach().max()) <= 0.5
    # the same keys from the command line / a config
    cfg = make_config(BENCHMARK, "dhp", overrides={"dhp.eta_init": "0.25", "dhp.bias": "false"})
    assert cfg.hparams["dhp"] == DHPConfig(eta_init=0.25, bias=False)


@pytest.mark.parametrize("bad, match", [({"eta_init": 1.5}, r"dhp\.eta_init must lie in \[0, 1\]"),
                                        ({"eta_init": -0.1}, r"dhp\.eta_init"),
                                        ({"alpha_init_scale": -1.0}, r"dhp\.alpha_init_scale")])
def test_bad_hyperparameters_are_refused_with_the_key(bad: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_recipe("dhp", {"dhp": DHPConfig(**bad)})


@pytest.mark.parametrize("other", CONSOLIDATION)
def test_composition_has_the_dhp_layer_and_the_penalty(other: str) -> None:
    for expr in (f"dhp+{other}", f"{other}+dhp"):
        recipe = build_recipe(expr)
        assert recipe.name == expr
        assert isinstance(recipe.layer(5, 2), DHPSoftmax) and recipe.layer_name == "dhp"
        assert [t.name for t in recipe.terms] == [other]
        assert isinstance(recipe.terms[0], QuadraticPenalty)
        assert recipe.terms[0].penalize_plastic is False


def test_senseless_compositions_are_refused() -> None:
    with pytest.raises(ValueError, match="names a method twice"):
        build_recipe("dhp+dhp")
    with pytest.raises(ValueError, match="names a method twice"):
        build_recipe("dhp+ewc+dhp")
    other_layer = Recipe(name="other-layer", layer=nn.Linear, layer_name="other-layer")
    with pytest.raises(ValueError, match="both replace the output layer"):
        compose([build_recipe("dhp"), other_layer])
    with pytest.raises(ValueError, match="dhp.eta_init"):
        main(["run", "-b", BENCHMARK, "-m", "dhp", "--no-save", "--quiet", "dhp.eta_init=2"])


@pytest.mark.parametrize("setting, head, kind, n_layers", [
    ("task", "auto", MultiHead, 3), ("task", "single", SingleHead, 1),
    ("class", "auto", SingleHead, 1), ("domain", "auto", SingleHead, 1)])
def test_every_output_layer_is_dhp(setting: str, head: str, kind: type, n_layers: int,
                                   synthetic: Scenario) -> None:
    cfg = make_config(BENCHMARK, "dhp+si", setting=setting, overrides={"model.head": head})
    layout = Layout.for_scenario(synthetic, setting)
    model = build_model(synthetic, layout, cfg.model, build_recipe("dhp+si").layer)
    assert isinstance(model.head, kind)
    layers = [m for m in model.head.modules() if isinstance(m, DHPSoftmax)]
    assert len(layers) == n_layers
    assert not any(type(m) is nn.Linear for m in model.head.modules())
    assert sum(layer.out_features for layer in layers) == layout.num_units


# ------------------------------------------------------------- consolidation and the trace


@pytest.mark.parametrize("other", CONSOLIDATION)
def test_penalty_covers_slow_weights_never_the_trace_nor_alpha_eta(other: str) -> None:
    run = _train(f"dhp+{other}", **{"train.epochs": 1})
    (term,) = penalties(run.recipe.terms)
    assert term.num_consolidated == 3
    selected = set(term.importances[-1])
    params = dict(run.model.named_parameters())
    assert selected <= set(params)
    assert not any(n.endswith((".alpha", ".eta", ".hebb")) for n in selected)
    assert {"backbone.layers.0.weight", "backbone.layers.0.bias"} <= selected
    heads = {f"head.heads.{t}.{p}" for t in range(3) for p in ("weight", "bias")}
    assert heads <= selected
    # every trained head has importance (with mas-local too: its estimator covers DHP-Softmax)
    assert all(sum(float(o[n].sum()) for o in term.importances if n in o) > 0 for n in heads)
    # the penalty is a function of the selected parameters only: moving the trace, alpha and
    # eta leaves it unchanged (a slow weight is moved off the anchor first, which online
    # methods place at the end of the last task)
    with torch.no_grad():
        run.model.backbone.layers[0].weight.add_(0.01)
    before = term.penalty_value(run.model)
    assert before is not None and float(before.detach()) > 0
    with torch.no_grad():
        for m in run.model.modules():
            if isinstance(m, DHPSoftmax):
                m.hebb.add_(1.0)
                m.alpha.add_(0.5)
                m.eta.fill_(0.7)
    assert torch.equal(term.penalty_value(run.model), before)


@pytest.mark.parametrize("other", ("ewc", "si", "mas"))
def test_penalize_plastic_adds_alpha_and_eta(other: str) -> None:
    run = _train(f"dhp+{other}", **{"train.epochs": 1, f"{other}.penalize_plastic": "true"})
    (term,) = penalties(run.recipe.terms)
    assert term.penalize_plastic is True
    selected = set(term.importances[-1])
    assert {f"head.heads.{t}.{p}" for t in range(3) for p in ("alpha", "eta")} <= selected
    assert not any(n.endswith(".hebb") for n in selected)
    before = float(term.penalty_value(run.model).detach())
    with torch.no_grad():
        run.model.head.heads[0].alpha.add_(0.5)
        run.model.head.heads[0].eta.add_(0.5)
    assert float(term.penalty_value(run.model).detach()) > before


def test_trace_is_written_in_training_kept_across_tasks_and_untouched_by_evaluation() -> None:
    rec = _TraceRecorder()
    run = _train("dhp", extra_terms=(rec,))
    heads = [f"head.heads.{t}" for t in range(3)]
    # zeros before the first task
    assert all(torch.count_nonzero(rec.start[0][h]) == 0 for h in heads)
    for t in range(3):
        # the head of task t is written while task t trains: non-negative (ReLU means) and > 0
        assert torch.count_nonzero(rec.end[t][heads[t]]) > 0
        assert float(rec.end[t][heads[t]].min()) >= 0.0
        # heads of other tasks are not touched
        for u in range(3):
            if u != t:
                assert torch.equal(rec.end[t][heads[u]], rec.start[t][heads[u]])
        # evaluation after the task leaves every trace as training left it
        for h in heads:
            assert torch.equal(run.after_eval[t][h], rec.end[t][h])
        # never reset between tasks: the next task starts from the trace the last one left
        if t + 1 < 3:
            for h in heads:
                assert torch.equal(rec.start[t + 1][h], rec.end[t][h])
    # task 0's memory survives to the end
    assert torch.equal(run.model.head.heads[0].hebb, rec.end[0][heads[0]])


@pytest.mark.parametrize("setting", ["task", "class"])
def test_single_layer_trace_rows_are_written_by_their_own_classes_only(setting: str) -> None:
    rec = _TraceRecorder()
    run = _train("dhp", setting=setting, head="single", extra_terms=(rec,))
    assert isinstance(run.model.head, SingleHead)
    name = "head.layer"
    for t in range(3):
        rows = run.layout.task_units(t)
        start, end = rec.start[t][name], rec.end[t][name]
        assert torch.count_nonzero(end[rows]) > 0
        assert not torch.equal(end[rows], start[rows])
        keep = torch.ones(end.shape[0], dtype=torch.bool)
        keep[rows] = False
        assert torch.equal(end[keep], start[keep])  # other classes' rows kept, not reset
        assert torch.equal(run.after_eval[t][name], end)
    # rows of task 0 still hold what task 0 wrote
    assert torch.equal(run.model.head.layer.hebb[run.layout.task_units(0)],
                       rec.end[0][name][run.layout.task_units(0)])


def test_explicit_evaluate_and_eval_forward_never_update_the_trace() -> None:
    run = _train("dhp+ewc", **{"train.epochs": 1})
    before = _traces(run.model)
    evaluate(run.model, run.scenario, run.layout, 2, [0, 1, 2])
    x = run.scenario.tasks[1].test_x
    y = run.layout.targets(1, run.scenario.tasks[1].test_y)
    run.model.eval()
    run.model(x, units=run.layout.task_units(1), targets=y)  # labels given, but eval mode
    after = _traces(run.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------- results and state


@pytest.mark.parametrize("setting, head", [("task", "auto"), ("class", "auto")])
def test_state_dict_round_trip_restores_identical_predictions(setting: str, head: str) -> None:
    run = _train("dhp", setting=setting, head=head)
    state = run.model.state_dict()
    assert any(k.endswith(".hebb") for k in state)
    assert any(torch.count_nonzero(v) > 0 for k, v in state.items() if k.endswith(".hebb"))
    cfg = make_config(BENCHMARK, "dhp", setting=setting, overrides={"model.head": head})
    torch.manual_seed(123)  # a different initialisation, overwritten by the state
    fresh = build_model(run.scenario, run.layout, cfg.model, build_recipe("dhp").layer)
    fresh.load_state_dict(state)
    run.model.eval()
    fresh.eval()
    x = torch.cat([t.test_x for t in run.scenario.tasks])
    units = run.layout.seen_units(2)
    with torch.no_grad():
        assert torch.equal(run.model(x, units=units), fresh(x, units=units))
    a = evaluate(run.model, run.scenario, run.layout, 2, [0, 1, 2])
    b = evaluate(fresh, run.scenario, run.layout, 2, [0, 1, 2])
    assert a == b


@pytest.mark.parametrize("method", ["dhp", "dhp+ewc", "dhp+si"])
@pytest.mark.parametrize("setting, head", [("task", "single"), ("class", "auto")])
def test_single_layer_designs_train_and_beat_chance(method: str, setting: str, head: str) -> None:
    run = _train(method, setting=setting, head=head)
    R = run.result.accuracy[setting]
    for t in range(3):
        seen = len(range(*run.layout.seen_units(t).indices(run.layout.num_units)))
        chance = 0.5 if setting == "task" else 1.0 / seen
        assert R[t, t] >= chance + 0.3, (t, R)
    if setting == "task":
        assert R[-1].mean() >= 0.8, R


def test_cli_runs_dhp_and_every_composition() -> None:
    methods = ["dhp", *(f"dhp+{m}" for m in CONSOLIDATION)]
    results = main(["run", "-b", BENCHMARK, "-m", *methods, "--no-save", "--quiet",
                    "train.epochs=1", *(f"{k}={v}" for k, v in STABLE.items())])
    assert [r["method"] for r in results] == methods
    for r in results:
        assert r["setting"] == "task"
        assert r["summary"]["task"]["average_accuracy"] >= 0.7
        assert r["config"]["dhp"] == dataclasses.asdict(DHPConfig())


# ------------------------------------------------------------------------- configurations


def _layered(protocol: str, method: str) -> RunConfig:
    """``method`` resolved from ``configs/<protocol>.toml`` and the file of each of its parts."""
    files = [CONFIGS / f"{protocol}.toml"]
    files += [CONFIGS / protocol / f"{part}.toml" for part in method.split("+")]
    top, overrides = load_configs(files)
    return make_config(top["benchmark"], method, 0, top["setting"], overrides)


@pytest.mark.parametrize("other", [None, *CONSOLIDATION])
def test_dhp_protocol_files_give_dhp_its_settings_and_x_its_own_table(other: str | None) -> None:
    method = "dhp" if other is None else f"dhp+{other}"
    cfg = _layered("split-mnist-dhp", method)
    assert cfg.hparams["dhp"] == DHPConfig()
    assert (cfg.benchmark, cfg.setting) == ("split-mnist", "task")
    assert (cfg.model.hidden, cfg.model.head, cfg.data.normalize) == ((256, 256), "multi", False)
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (
        "sgd", 0.01, 64, 10)
    if other is not None:  # the same table as X alone; alpha and eta left out of the penalty
        assert cfg.hparams[other] == _layered("split-mnist-dhp", other).hparams[other]
        assert cfg.hparams[other].penalize_plastic is False


@pytest.mark.parametrize("other", CONSOLIDATION)
def test_permuted_dhp_file_adds_the_plastic_penalty_to_x_own_table(other: str) -> None:
    """On PermutedMNIST (one shared output layer) DHP+X also penalises alpha and eta
    (docs/dhp.md); everything else is X's own table."""
    alone = _layered("permuted-mnist", other)
    composed = _layered("permuted-mnist", f"dhp+{other}")
    assert composed.hparams["dhp"] == DHPConfig()
    assert alone.hparams[other].penalize_plastic is False
    assert composed.hparams[other] == dataclasses.replace(alone.hparams[other],
                                                          penalize_plastic=True)
    assert (composed.train, composed.model, composed.data) == (alone.train, alone.model,
                                                               alone.data)
