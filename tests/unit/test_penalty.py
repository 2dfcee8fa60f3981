"""The one quadratic penalty: closed-form values and gradients, per-task vs online accumulation,
parameter selection, parameters added later or reshaped, state round trips."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lifelong.terms.penalty import (
    FisherPenalty,
    MASPenalty,
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
    assert pen.penalty_value(model).item() == 0.0
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


def test_direct_gradient_equals_backward_of_the_value() -> None:
    """The loop's per-step path (``accumulate_gradient``: no value, no graph) adds exactly the
    gradient that back-propagating ``penalty_value`` adds, on top of an existing gradient, and
    creates ``.grad`` where there is none; frozen parameters are skipped."""
    model = _model()
    pen = QuadraticPenalty(strength=3.0, mode="per-task")
    for t in range(2):
        pen.consolidate(_rand_like_params(model, 20 + t), model)
        _shift(model, {n: 0.4 * torch.randn_like(p) for n, p in model.named_parameters()})
    model.zero_grad(set_to_none=True)
    pen.penalty_value(model).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model[0].weight.grad = torch.ones_like(model[0].weight)  # an existing (data) gradient
    pen.accumulate_gradient(model)
    for n, p in model.named_parameters():
        extra = 1.0 if n == "0.weight" else 0.0
        torch.testing.assert_close(p.grad, expected[n] + extra, rtol=1e-5, atol=1e-6)
    model.zero_grad(set_to_none=True)
    model[2].weight.requires_grad_(False)
    pen.accumulate_gradient(model)
    assert model[2].weight.grad is None and model[0].weight.grad is not None
    pen.strength = 0.0
    model.zero_grad(set_to_none=True)
    pen.accumulate_gradient(model)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("lr", [0.1, 0.003])
def test_own_sgd_step_equals_the_gradient_step(lr: float) -> None:
    """``sgd_step`` then the optimiser's plain step moves every parameter exactly as
    ``accumulate_gradient`` then the same step (up to rounding): with a data gradient on one
    parameter, none on the others (a past head) and a frozen one left in place; ``.grad`` is not
    written."""
    models, pens, opts = [], [], []
    deltas = [{n: 0.4 * torch.randn_like(p) for n, p in _model().named_parameters()}
              for _ in range(2)]
    for _ in range(2):
        model = _model()
        pen = QuadraticPenalty(strength=3.0, mode="per-task")
        for t in range(2):
            pen.consolidate(_rand_like_params(model, 40 + t), model)
            _shift(model, deltas[t])
        model[2].bias.requires_grad_(False)
        model[0].weight.grad = torch.linspace(-1, 1, 12).view(3, 4)  # the data gradient
        models.append(model)
        pens.append(pen)
        opts.append(torch.optim.SGD(model.parameters(), lr=lr))
    frozen = models[0][2].bias.detach().clone()
    pens[0].accumulate_gradient(models[0])
    assert pens[1].penalised_names() == [n for n, _ in models[1].named_parameters()]
    pens[1].sgd_step(models[1], [lr] * len(pens[1].penalised_names()))
    assert models[1][2].weight.grad is None  # nothing written
    torch.testing.assert_close(models[1][0].weight.grad, torch.linspace(-1, 1, 12).view(3, 4))
    for opt in opts:
        opt.step()
    for (n, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=n)
    assert torch.equal(models[1][2].bias, frozen)
    # learning rate None (not held by the optimiser) or 0: no move; wrong length: clear error
    before = [p.detach().clone() for p in models[1].parameters()]
    pens[1].sgd_step(models[1], [None, 0.0, None, None])
    assert all(torch.equal(a, b) for a, b in zip(before, models[1].parameters()))
    with pytest.raises(ValueError, match="one learning rate per penalised parameter"):
        pens[1].sgd_step(models[1], [lr])


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
    term = SIPenalty(c=1.0)
    term.path.begin(select_parameters(model))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    term.path.record_gradients()
    _shift(model, {n: -0.1 * torch.ones_like(p) for n, p in model.named_parameters()})
    term.path.accumulate()
    term.consolidate(term.path.importance(term.xi), model)
    fresh = SIPenalty(c=1.0)
    fresh.load_state_dict(term.state_dict())
    for a, b in zip(fresh.path.omega, term.path.omega):
        assert torch.equal(a, b)
    assert fresh.penalty_value(model).item() == term.penalty_value(model).item()
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
