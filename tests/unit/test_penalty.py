"""The one quadratic penalty: closed-form values and gradients, per-task vs online accumulation,
parameter selection, parameters added later or reshaped, state round trips; SI's path integral
on a quadratic with a known answer; a composition's loss is the sum of its parts' losses."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lifelong.terms.penalty import (
    FisherPenalty,
    MASPenalty,
    PathIntegral,
    QuadraticPenalty,
    SIPenalty,
    select_parameters,
)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _rand_like_params(model: nn.Module, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()}


def _shift(model: nn.Module, deltas: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(deltas[n])


@pytest.mark.parametrize("mode", ["per-task", "online"])
def test_zero_at_the_anchor_and_exactly_lambda_omega_delta_squared(mode: str) -> None:
    model = _model()
    omega = _rand_like_params(model, 1)
    pen = QuadraticPenalty(strength=7.5, mode=mode)
    assert pen.penalty_value(model) is None  # nothing consolidated yet
    pen.consolidate(omega, model)
    value = pen.penalty_value(model)
    assert value.item() == 0.0
    value.backward()  # and so is the gradient, exactly (nothing for an unstable step to amplify)
    assert all(float(p.grad.abs().max()) == 0.0 for p in model.parameters())
    delta = {n: 0.1 * torch.randn_like(o) for n, o in omega.items()}
    _shift(model, delta)
    expected = 7.5 * sum(float((omega[n] * delta[n].square()).sum()) for n in omega)
    assert pen.penalty_value(model).item() == pytest.approx(expected, rel=1e-5)


def test_gradient_is_the_closed_form() -> None:
    model = _model()
    omega = _rand_like_params(model, 2)
    pen = QuadraticPenalty(strength=3.0, mode="per-task")
    pen.consolidate(omega, model)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    _shift(model, {n: torch.randn_like(o) for n, o in omega.items()})
    pen.penalty_value(model).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * 3.0 * omega[n] * (p.detach() - anchor[n]))
    # twice the upstream gradient -> twice the parameter gradient
    model.zero_grad()
    (2.0 * pen.penalty_value(model)).backward()
    p = model[0].weight
    expected = 4 * 3.0 * omega["0.weight"] * (p.detach() - anchor["0.weight"])
    torch.testing.assert_close(p.grad, expected)


def test_per_task_mode_is_the_sum_of_one_penalty_per_task() -> None:
    model = _model()
    pen = QuadraticPenalty(strength=2.0, mode="per-task")
    omegas, anchors = [], []
    for t in range(3):
        _shift(model, {n: 0.3 * torch.randn_like(p) for n, p in model.named_parameters()})
        omegas.append(_rand_like_params(model, 10 + t))
        anchors.append({n: p.detach().clone() for n, p in model.named_parameters()})
        pen.consolidate(omegas[-1], model)
    _shift(model, {n: 0.2 * torch.randn_like(p) for n, p in model.named_parameters()})
    params = dict(model.named_parameters())
    naive = 2.0 * sum((o[n] * (params[n] - a[n]).square()).sum()
                      for o, a in zip(omegas, anchors) for n in o)
    g_naive = torch.autograd.grad(naive, list(params.values()))
    value = pen.penalty_value(model)
    g = torch.autograd.grad(value, list(params.values()))
    assert value.item() == pytest.approx(naive.item(), rel=1e-5)
    for a, b in zip(g, g_naive):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert len(pen.state_dict()["importances"]) == 3  # memory grows with the tasks


def test_online_gamma_decay_over_two_tasks_by_hand() -> None:
    model = _model()
    gamma = 0.6
    pen = QuadraticPenalty(strength=1.5, mode="online", gamma=gamma)
    o1, o2 = _rand_like_params(model, 1), _rand_like_params(model, 2)
    pen.consolidate(o1, model)
    _shift(model, {n: 0.5 * torch.randn_like(o) for n, o in o1.items()})
    anchor2 = {n: p.detach().clone() for n, p in model.named_parameters()}
    pen.consolidate(o2, model)
    state = pen.state_dict()
    assert len(state["importances"]) == 1  # constant memory
    for n in o1:
        torch.testing.assert_close(state["importances"][0][n], gamma * o1[n] + o2[n])
        torch.testing.assert_close(state["anchors"][0][n], anchor2[n])
    delta = {n: 0.1 * torch.randn_like(o) for n, o in o1.items()}
    _shift(model, delta)
    expected = 1.5 * sum(float(((gamma * o1[n] + o2[n]) * delta[n].square()).sum()) for n in o1)
    assert pen.penalty_value(model).item() == pytest.approx(expected, rel=1e-5)


def test_fisher_penalty_carries_the_ewc_half() -> None:
    # EWC: (lam / 2) sum F (theta - theta*)^2
    model = _model()
    fisher = _rand_like_params(model, 4)
    pen = FisherPenalty(lam=10.0)
    pen.consolidate(fisher, model)
    delta = {n: 0.1 * torch.randn_like(o) for n, o in fisher.items()}
    _shift(model, delta)
    expected = 5.0 * sum(float((fisher[n] * delta[n].square()).sum()) for n in fisher)
    assert pen.penalty_value(model).item() == pytest.approx(expected, rel=1e-5)
    assert SIPenalty(c=3.0).strength == 3.0 and MASPenalty(lam=4.0).strength == 4.0


def test_parameters_added_later_are_unpenalised_and_reshaped_ones_are_an_error() -> None:
    model = _model()
    pen = QuadraticPenalty(strength=1.0)
    pen.consolidate({n: torch.ones_like(p) for n, p in model.named_parameters()}, model)
    model.add_module("new_head", nn.Linear(2, 5))  # created after the anchor was taken
    _shift(model, {n: torch.full_like(p, 0.5) for n, p in model.named_parameters()})
    pen.on_task_start(None)  # type: ignore[arg-type]  # re-resolves parameters
    value = pen.penalty_value(model)
    n_old = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("new_head"))
    assert value.item() == pytest.approx(0.25 * n_old)
    value.backward()
    assert model.new_head.weight.grad is None
    # a consolidated parameter whose shape changed
    model[2] = nn.Linear(3, 4)
    pen.on_task_start(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'2.weight' has shape \(4, 3\) but its anchor was taken "
                                         r"with shape \(2, 3\)"):
        pen.penalty_value(model)
    # a parameter that disappeared
    with pytest.raises(ValueError, match="'2.weight' has an anchor but the model no longer has it"):
        pen.penalty_value(nn.Sequential(model[0], model[1]))


def test_zero_importance_parameters_are_left_out() -> None:
    model = _model()
    pen = QuadraticPenalty(strength=1.0)
    omega = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    omega["2.weight"] = torch.zeros_like(omega["2.weight"])
    omega["2.bias"] = torch.full_like(omega["2.bias"], 1e-30)  # flushed: below sqrt(tiny)
    pen.consolidate(omega, model)
    _shift(model, {n: torch.ones_like(p) for n, p in model.named_parameters()})
    pen.penalty_value(model).backward()
    assert model[2].weight.grad is None and model[2].bias.grad is None
    assert model[0].weight.grad is not None


class _Plastic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.alpha = nn.Parameter(torch.zeros(3))
        self.register_buffer("hebb", torch.zeros(3))
        self.bn = nn.BatchNorm1d(3)

    def plastic_parameter_names(self) -> tuple[str, ...]:
        return ("alpha",)


def test_selection_skips_plastic_parameters_and_buffers() -> None:
    model = nn.Sequential(nn.Linear(2, 3), _Plastic())
    names = list(select_parameters(model))
    assert names == ["0.weight", "0.bias", "1.w", "1.bn.weight", "1.bn.bias"]
    assert "1.alpha" in select_parameters(model, penalize_plastic=True)
    assert not any("hebb" in n or "running" in n for n in select_parameters(model, True))


@pytest.mark.parametrize("mode", ["per-task", "online"])
def test_state_dict_round_trip(mode: str) -> None:
    model = _model()
    pen = QuadraticPenalty(strength=2.0, mode=mode, gamma=0.9)
    for t in range(2):
        pen.consolidate(_rand_like_params(model, t), model)
        _shift(model, {n: 0.2 * torch.randn_like(p) for n, p in model.named_parameters()})
    state = pen.state_dict()
    fresh = QuadraticPenalty(strength=2.0, mode=mode, gamma=0.9)
    fresh.load_state_dict(state)
    assert fresh.penalty_value(model).item() == pytest.approx(pen.penalty_value(model).item())
    assert fresh.state_bytes() == pen.state_bytes()
    saved = fresh.state_dict()
    for key in ("importances", "anchors"):
        for a, b in zip(saved[key], state[key]):
            assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    other = "online" if mode == "per-task" else "per-task"
    with pytest.raises(ValueError, match=f"saved in mode '{mode}'"):
        QuadraticPenalty(mode=other).load_state_dict(state)
    with pytest.raises(ValueError, match="missing keys"):
        QuadraticPenalty(mode=mode).load_state_dict({"mode": mode})


def test_si_term_state_round_trip() -> None:
    model = _model()

    class Ctx:
        pass

    ctx = Ctx()
    ctx.model = model  # type: ignore[attr-defined]
    term = SIPenalty(c=1.0)
    term.on_task_start(ctx)  # type: ignore[arg-type]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    term.path.record_gradients()
    _shift(model, {n: -0.1 * torch.ones_like(p) for n, p in model.named_parameters()})
    term.path.accumulate()
    # mid-task (not what the loop checkpoints, but exact): into a term that started the task
    mid = SIPenalty(c=1.0)
    mid.on_task_start(ctx)  # type: ignore[arg-type]
    mid.load_state_dict(term.state_dict())
    for a, b in zip(mid.path.omega, term.path.omega):
        assert torch.equal(a, b) and float(a.sum()) > 0
    with pytest.raises(ValueError, match="mid-task path integral"):
        SIPenalty(c=1.0).load_state_dict(term.state_dict())
    # between tasks (what the loop checkpoints): the penalty, and an empty path
    term.consolidate(term.path.importance(term.xi), model)
    term.path.clear()
    _shift(model, {n: 0.2 * torch.ones_like(p) for n, p in model.named_parameters()})
    fresh = SIPenalty(c=1.0)
    fresh.load_state_dict(term.state_dict())
    assert fresh.path.omega == []
    assert fresh.penalty_value(model).item() == term.penalty_value(model).item() > 0
    with pytest.raises(ValueError, match="missing key 'path'"):
        SIPenalty(c=1.0).load_state_dict(QuadraticPenalty().state_dict())


def test_bad_arguments_have_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown penalty mode 'sometimes'"):
        QuadraticPenalty(mode="sometimes")
    with pytest.raises(ValueError, match="strength must be a finite number >= 0"):
        QuadraticPenalty(strength=-1.0)
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        QuadraticPenalty(gamma=1.5)
    with pytest.raises(ValueError, match="unknown Fisher variant 'max'"):
        FisherPenalty(lam=1.0, variant="max")
    with pytest.raises(ValueError, match="xi must be > 0"):
        SIPenalty(c=1.0, xi=0.0)
    model = _model()
    pen = QuadraticPenalty()
    with pytest.raises(ValueError, match="importance of '0.weight' has shape"):
        pen.consolidate({"0.weight": torch.ones(2)}, model)
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        pen.consolidate({"0.weight": -torch.ones(3, 4)}, model)
    with pytest.raises(ValueError, match="does not have"):
        pen.consolidate({"nope": torch.ones(1)}, model)


# ------------------------------------------------------------------------------------- SI


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_si_path_integral_on_a_quadratic_with_known_answer(momentum: float) -> None:
    # L = 1/2 sum a_i theta_i^2: g = a theta. Whatever the optimiser, omega = sum_t -g_t delta_t
    # with delta_t the step actually taken; replayed here by hand from the recorded thetas.
    a = torch.tensor([0.5, 1.0, 2.0])
    theta = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    lr, steps, xi = 0.1, 25, 0.1
    opt = torch.optim.SGD([theta], lr=lr, momentum=momentum)
    path = PathIntegral()
    path.begin({"theta": theta})
    thetas = [theta.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (a * theta.square()).sum()).backward()
        path.record_gradients()
        opt.step()
        path.accumulate()
        thetas.append(theta.detach().clone())
    th = torch.stack(thetas)
    omega = (-(a * th[:-1]) * (th[1:] - th[:-1])).sum(0)
    torch.testing.assert_close(path.omega[0], omega)
    if momentum == 0.0:  # plain SGD: delta = -lr g, so omega = lr sum g^2 in closed form
        t = torch.arange(steps, dtype=torch.float32)[:, None]
        closed = lr * (a * (1 - lr * a) ** t * th[0]).square().sum(0)
        torch.testing.assert_close(path.omega[0], closed)
    torch.testing.assert_close(path.importance(xi)["theta"],
                               (omega / ((th[-1] - th[0]) ** 2 + xi)).clamp_min(0))


def test_si_uses_the_data_gradient_not_the_penalty() -> None:
    # Loop order: data backward -> record -> penalty backward -> step -> accumulate.
    theta = nn.Parameter(torch.tensor([1.0, 2.0]))
    other = nn.Parameter(torch.tensor([5.0]))  # no gradient this step: contributes nothing
    opt = torch.optim.SGD([theta, other], lr=0.1)
    path = PathIntegral()
    path.begin({"theta": theta, "other": other})
    opt.zero_grad(set_to_none=True)
    (theta.sum() * 3.0).backward()  # data gradient: 3
    path.record_gradients()
    (10.0 * theta.square().sum()).backward()  # penalty gradient: 20 theta
    opt.step()  # delta = -0.1 * (3 + 20 theta)
    path.accumulate()
    delta = -0.1 * (3.0 + 20.0 * torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(path.omega[0], -3.0 * delta)
    assert path.omega[1].item() == 0.0
    with pytest.raises(RuntimeError, match="call begin"):
        PathIntegral().record_gradients()


def test_si_takes_the_same_numerical_path_whatever_else_is_in_the_run() -> None:
    """``si`` and ``ewc+si`` (EWC at strength 0, so training is the same) give SI bit-identical
    importances: SI's path integral does not depend on the other terms of the run."""
    from lifelong.config import make_config
    from lifelong.data.layout import Layout
    from lifelong.data.scenarios import build_scenario
    from lifelong.methods.registry import build_recipe
    from lifelong.nn.model import build_model
    from lifelong.train.loop import fit

    scenario = build_scenario("synthetic", make_config("synthetic", "si").data, 0)
    layout = Layout.for_scenario(scenario, "task")
    states = []
    for method in ("si", "ewc+si"):
        cfg = make_config("synthetic", method, overrides={"ewc.lam": 0.0, "train.epochs": 2,
                                                          "train.progress": "off"})
        recipe = build_recipe(method, cfg.hparams, "task")
        torch.manual_seed(0)
        model = build_model(scenario, layout, cfg.model)
        fit(model, scenario, layout, recipe, cfg.train, seed=0)
        (si,) = [t for t in recipe.terms if isinstance(t, SIPenalty)]
        states.append(si.state_dict()["importances"][0])
    assert states[0].keys() == states[1].keys()
    assert float(sum(o.sum() for o in states[0].values())) > 0
    assert all(torch.equal(states[0][n], states[1][n]) for n in states[0])


def test_the_loss_of_a_composition_is_the_sum_of_its_parts() -> None:
    from lifelong.methods.base import Recipe
    from lifelong.terms import EWC, MAS, SI
    from lifelong.terms.base import Batch

    model = _model()
    ewc, si, mas = EWC(lam=4.0), SI(c=2.0), MAS(lam=3.0)
    for k, term in enumerate((ewc, si, mas)):
        term.consolidate(_rand_like_params(model, k), model)
    _shift(model, {n: 0.3 * torch.ones_like(p) for n, p in model.named_parameters()})
    a, b = Recipe("a", terms=[ewc, si]), Recipe("b", terms=[mas])
    both = a + b
    assert both.name == "a+b" and [t.name for t in both.terms] == ["ewc", "si", "mas"]

    class Ctx:
        pass

    ctx = Ctx()
    ctx.model = model  # type: ignore[attr-defined]
    batch = Batch(x=torch.zeros(1, 4), y=torch.zeros(1), targets=torch.zeros(1),
                  task_ids=torch.zeros(1), units=slice(0, 2), logits=torch.zeros(1, 2))
    parts = [t.loss(ctx, batch) for r in (a, b) for t in r.terms]  # type: ignore[arg-type]
    total = sum(t.loss(ctx, batch) for t in both.terms)  # type: ignore[arg-type, misc]
    torch.testing.assert_close(total, sum(parts))  # type: ignore[arg-type]
    # each part by hand: EWC carries lam / 2, SI and MAS multiply the sum directly
    d = {n: p.detach() - ewc.anchors[0][n] for n, p in model.named_parameters()}
    by_hand = 2.0 * sum(float((ewc.importances[0][n] * d[n] ** 2).sum()) for n in d)
    assert abs(float(parts[0].detach()) - by_hand) < 1e-4 * by_hand  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="both add a 'ewc' term"):
        _ = a + Recipe("c", terms=[EWC()])


def test_a_parameter_only_the_penalty_moves_stays_at_its_anchor_under_an_unstable_step() -> None:
    """lr * 2 * strength * S = 2.6 > 2: any deviation would grow by 1.6x a step; at the anchor
    there is none (the README's main job diverged on split-digits when the penalty's form left
    a rounding residual there)."""
    model = _model()
    pen = QuadraticPenalty(strength=100.0)
    pen.consolidate({n: torch.full_like(p, 0.263) for n, p in model.named_parameters()}, model)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        pen.penalty_value(model).backward()
        opt.step()
    assert all(torch.equal(p, anchor[n]) for n, p in model.named_parameters())
