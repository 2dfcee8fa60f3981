"""Importance estimators: analytic Fisher, vmap == loop != batched, MAS, MAS-local, SI path
integral, untouched BatchNorm statistics and train/eval flags."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.nn.backbones import MLP
from lifelong.nn.heads import MultiHead, SingleHead
from lifelong.nn.model import ContinualModel
from lifelong.terms.importance import (
    PathIntegral,
    fisher_diagonal,
    fisher_diagonal_loop,
    mas_importance,
    mas_local_importance,
    plain_sgd_groups,
    select_parameters,
)


def _close(a: dict[str, Tensor], b: dict[str, Tensor], rtol: float = 1e-4,
           atol: float = 1e-7) -> None:
    assert set(a) == set(b)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=rtol, atol=atol, msg=lambda m: f"{n}: {m}")


def _batches(x: Tensor, y: Tensor | None, bs: int) -> list:
    return [(x[i:i + bs], None if y is None else y[i:i + bs]) for i in range(0, x.shape[0], bs)]


def _tiny_model(seed: int = 0, heads: int = 3) -> ContinualModel:
    torch.manual_seed(seed)
    return ContinualModel(MLP(6, (5, 4)), MultiHead(4, [2] * heads))


@pytest.fixture
def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(23, 1, 2, 3, generator=g)
    y = torch.randint(2, 4, (23,), generator=g)  # units of task 1 of a 2-unit-per-task layout
    return x, y


# ------------------------------------------------------------------------------------- Fisher


def _dhp_model(head: str, seed: int = 0) -> ContinualModel:
    """A tiny MLP whose output layers are DHP-Softmax with non-trivial alpha and trace."""
    from lifelong.nn.dhp import DHPSoftmax

    torch.manual_seed(seed)
    head_module = (MultiHead(4, [2, 2, 2], DHPSoftmax) if head == "multi"
                   else SingleHead(4, 6, DHPSoftmax))
    model = ContinualModel(MLP(6, (5, 4)), head_module)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, DHPSoftmax):
                m.alpha.uniform_(-1.0, 1.0)
                m.hebb.uniform_(0.0, 2.0)
    return model


@pytest.mark.parametrize("head", ["multi", "single"])
@pytest.mark.parametrize("variant", ["true", "empirical", "predicted", "mas"])
def test_dhp_layers_take_the_fast_path_and_match_vmap(data: tuple[Tensor, Tensor], head: str,
                                                      variant: str) -> None:
    """Fisher and MAS of DHP-Softmax layers (weight, bias, alpha; eta has no eval gradient)
    through the probe identities equal ``vmap`` per-sample gradients, and the trace is left
    exactly as it was."""
    model = _dhp_model(head)
    x, y = data
    units = slice(2, 4)
    params = select_parameters(model, penalize_plastic=True)
    assert any(n.endswith(".alpha") for n in params) and any(n.endswith(".eta") for n in params)
    traces = [b.clone() for n, b in model.named_buffers() if n.endswith("hebb")]

    def estimate(fast: bool) -> dict[str, Tensor]:
        if variant == "mas":
            return mas_importance(model, _batches(x, y, 9), units, params=params,
                                  linear_fast_path=fast)
        return fisher_diagonal(model, _batches(x, y, 9), units, variant=variant, params=params,
                               linear_fast_path=fast)

    from lifelong.terms.importance import _Functional, _LinearTaps

    fn = _Functional(model, params, units)
    taps = _LinearTaps(model, fn.names, units)
    taps.calibrate(fn, x[:9])
    assert taps.covered() == set(params)  # nothing left for the slow vmap engine
    fast, slow = estimate(True), estimate(False)
    _close(fast, slow, rtol=1e-4, atol=1e-6)
    layer = "head.heads.1" if head == "multi" else "head.layer"
    assert float(fast[f"{layer}.alpha"].abs().sum()) > 0
    assert all(float(v.abs().sum()) == 0 for n, v in fast.items() if n.endswith(".eta"))
    assert all(torch.equal(a, b) for a, b in
               zip(traces, [b for n, b in model.named_buffers() if n.endswith("hebb")]))


@pytest.mark.parametrize("fast", [True, False])
def test_fisher_of_logistic_regression_is_analytic(fast: bool) -> None:
    # z = W x + b with 2 classes, p = softmax(z). d log p_c / d W_k = (1[c=k] - p_k) x, so
    # true Fisher: sum_c p_c (1[c=k] - p_k)^2 x^2 = p_k (1 - p_k) x^2 = p_0 p_1 x^2 for both rows;
    # empirical (label y): (1[y=k] - p_k)^2 x^2 = (1 - p_y)^2 x^2 for both rows (2 classes).
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(17, 3, generator=g)
    y = torch.randint(0, 2, (17,), generator=g)
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)
    pq = p[:, 0] * p[:, 1]
    true_w = (pq[:, None] * x.square()).mean(0).expand(2, 3)
    true_b = pq.mean().expand(2)
    other = 1.0 - p.gather(1, y[:, None]).squeeze(1)
    emp_w = (other.square()[:, None] * x.square()).mean(0).expand(2, 3)
    emp_b = other.square().mean().expand(2)
    f_true = fisher_diagonal(model, _batches(x, y, 5), variant="true", linear_fast_path=fast)
    f_emp = fisher_diagonal(model, _batches(x, y, 5), variant="empirical", linear_fast_path=fast)
    _close(f_true, {"weight": true_w, "bias": true_b})
    _close(f_emp, {"weight": emp_w, "bias": emp_b})


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("variant", ["true", "empirical"])
def test_vectorised_fisher_equals_python_loop(data: tuple[Tensor, Tensor], variant: str,
                                              fast: bool) -> None:
    model = _tiny_model()
    x, y = data
    units = slice(2, 4)
    ref = fisher_diagonal_loop(model, _batches(x, y, 7), units, variant=variant)
    got = fisher_diagonal(model, _batches(x, y, 7), units, variant=variant,
                          linear_fast_path=fast)
    _close(got, ref)
    # heads of other tasks have no gradient; the task's head and the backbone do
    assert got["head.heads.0.weight"].abs().sum() == 0
    assert got["head.heads.1.weight"].abs().sum() > 0
    assert got["backbone.layers.0.weight"].abs().sum() > 0


def test_fisher_vmap_engine_matches_loop_on_non_linear_parameters(data: tuple[Tensor, Tensor]
                                                                  ) -> None:
    # BatchNorm's affine parameters are not nn.Linear: they always go through vmap(grad).
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(),
                          nn.Linear(5, 3))
    model.train()
    model(torch.randn(32, 6))  # non-trivial running statistics
    x, _ = data
    y = torch.randint(0, 3, (x.shape[0],))
    for variant in ("true", "empirical"):
        ref = fisher_diagonal_loop(model, _batches(x, y, 8), variant=variant)
        _close(fisher_diagonal(model, _batches(x, y, 8), variant=variant), ref)


def test_per_sample_fisher_differs_from_batched(data: tuple[Tensor, Tensor]) -> None:
    model = _tiny_model()
    x, y = data
    units = slice(2, 4)
    emp = fisher_diagonal(model, _batches(x, y, 8), units, variant="empirical")
    batched = fisher_diagonal(model, _batches(x, y, 8), units, variant="batched")
    w = "backbone.layers.0.weight"
    # the square of a mean gradient is (much) smaller than the mean of squares
    assert batched[w].sum() < 0.5 * emp[w].sum()
    # ... and with batches of one sample the two coincide
    _close(fisher_diagonal(model, _batches(x, y, 1), units, variant="batched"), emp)


def test_sampled_fisher_is_reproducible_and_unbiased() -> None:
    model = _tiny_model()
    x = torch.randn(3, 1, 2, 3).repeat(400, 1, 1, 1)
    units = slice(0, 2)
    true = fisher_diagonal(model, _batches(x, None, 300), units, variant="true")
    a = fisher_diagonal(model, _batches(x, None, 300), units, variant="sample",
                        generator=torch.Generator().manual_seed(5))
    b = fisher_diagonal(model, _batches(x, None, 300), units, variant="sample",
                        generator=torch.Generator().manual_seed(5))
    _close(a, b, rtol=0, atol=0)
    w = "backbone.layers.0.weight"
    assert abs(float(a[w].sum() / true[w].sum()) - 1.0) < 0.15


@pytest.mark.parametrize("fast", [True, False])
def test_predicted_fisher_is_the_empirical_one_at_the_argmax_label(data: tuple[Tensor, Tensor],
                                                                   fast: bool) -> None:
    model = _tiny_model()
    x, _ = data
    units = slice(2, 4)
    with torch.no_grad():
        y_hat = model(x, units=units).argmax(1) + units.start
    pred = fisher_diagonal(model, _batches(x, None, 8), units, variant="predicted",
                           linear_fast_path=fast)
    _close(pred, fisher_diagonal_loop(model, _batches(x, y_hat, 8), units, variant="empirical"))


def test_fisher_errors(data: tuple[Tensor, Tensor]) -> None:
    model = _tiny_model()
    x, y = data
    with pytest.raises(ValueError, match="unknown Fisher variant 'max'"):
        fisher_diagonal(model, _batches(x, y, 8), slice(2, 4), variant="max")
    with pytest.raises(ValueError, match="needs labels"):
        fisher_diagonal(model, _batches(x, None, 8), slice(2, 4), variant="empirical")
    with pytest.raises(ValueError, match="targets must be output units inside"):
        fisher_diagonal(model, _batches(x, y, 8), slice(0, 2), variant="empirical")
    with pytest.raises(ValueError, match="not parameters of the model"):
        fisher_diagonal(model, _batches(x, y, 8), slice(2, 4), params={"nope": torch.zeros(1)})


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(),
                             nn.Dropout(0.5))
    backbone.out_features = 5  # type: ignore[assignment]
    model = ContinualModel(backbone, SingleHead(5, 4))
    model.train()
    model(torch.randn(16, 1, 2, 3))  # running statistics away from their init
    model.head.eval()  # mixed modes must come back exactly as they were
    return model


@pytest.mark.parametrize("estimator", ["fisher", "fisher-vmap", "mas", "mas-local"])
def test_estimators_leave_batchnorm_stats_and_modes_untouched(data: tuple[Tensor, Tensor],
                                                              estimator: str) -> None:
    model = _bn_model()
    x, y = data
    before = {n: b.clone() for n, b in model.named_buffers()}
    modes = {n: m.training for n, m in model.named_modules()}
    batches = _batches(x, y, 8)
    if estimator == "fisher":
        out = fisher_diagonal(model, batches, slice(2, 4), variant="empirical")
    elif estimator == "fisher-vmap":
        out = fisher_diagonal(model, batches, slice(2, 4), linear_fast_path=False)
    elif estimator == "mas":
        out = mas_importance(model, batches, slice(2, 4))
    else:
        out = mas_local_importance(model, batches, slice(2, 4))
    assert out and all(torch.isfinite(v).all() for v in out.values())
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------- MAS


def _mas_loop(model: nn.Module, x: Tensor, units: slice | None) -> dict[str, Tensor]:
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    model.eval()
    for i in range(x.shape[0]):
        out = model(x[i:i + 1]) if units is None else model(x[i:i + 1], units=units)
        grads = torch.autograd.grad(out.square().sum(), list(params.values()), allow_unused=True)
        for n, g in zip(params, grads):
            if g is not None:
                total[n] += g.abs()
    return {n: t / x.shape[0] for n, t in total.items()}


@pytest.mark.parametrize("fast", [True, False])
def test_mas_is_mean_of_per_sample_absolute_gradients(data: tuple[Tensor, Tensor],
                                                      fast: bool) -> None:
    model = _tiny_model()
    x, _ = data
    ref = _mas_loop(model, x, slice(2, 4))
    got = mas_importance(model, _batches(x, None, 6), slice(2, 4), linear_fast_path=fast)
    _close(got, ref)
    # per-sample absolute values, not the absolute value of a summed gradient
    summed = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for xb, _ in _batches(x, None, 23):
        g = torch.autograd.grad(model(xb, units=slice(2, 4)).square().sum(),
                                list(model.parameters()), allow_unused=True)
        for n, gi in zip(summed, g):
            if gi is not None:
                summed[n] = gi.abs() / x.shape[0]
    w = "backbone.layers.0.weight"
    assert got[w].sum() > 1.05 * summed[w].sum()


def test_mas_local_equals_gradient_mas_for_one_relu_layer() -> None:
    # The seed's derivation: for y = ReLU(W x + b), d||y||^2/dW_ji = 2 y_j x_i (0 where off).
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(5, 4), nn.ReLU())
    x = torch.randn(31, 5)  # negative inputs too: the absolute value is per sample
    local = mas_local_importance(layer, [x[:10], x[10:]])
    grad_based = mas_importance(layer, [x[:10], x[10:]], linear_fast_path=False)
    _close(local, {"0.weight": grad_based["0.weight"], "0.bias": grad_based["0.bias"]})
    # and by hand
    y = torch.relu(layer(x))
    by_hand = (2 * y.abs()[:, :, None] * x.abs()[:, None, :]).mean(0)
    torch.testing.assert_close(local["0.weight"], by_hand)


@pytest.mark.parametrize("units", [None, slice(1, 3)])
def test_mas_local_on_a_dhp_softmax_layer_equals_gradient_mas(units: slice | None) -> None:
    """DHP-Softmax's logits are linear in its slow weights: the local form 2 |z_j h_i| is the
    gradient of its own ||z||^2 (rows outside ``units`` get 0); alpha gets it times |Hebb|."""
    from lifelong.nn.dhp import DHPSoftmax

    torch.manual_seed(0)
    layer = DHPSoftmax(5, 4)
    with torch.no_grad():
        layer.hebb.copy_(torch.rand(4, 5))
        layer.alpha.copy_(torch.rand(4, 5))
    x = torch.randn(23, 5)
    batches = [x[:10], x[10:]]
    local = mas_local_importance(layer, batches, units)
    params = {n: p for n, p in layer.named_parameters() if n != "eta"}
    grad_based = mas_importance(layer, batches, units, params=params, linear_fast_path=False)
    assert set(local) == {"weight", "bias", "alpha"}
    for n in ("weight", "bias", "alpha"):
        torch.testing.assert_close(local[n], grad_based[n])
    if units is not None:
        assert float(local["weight"][0].abs().sum()) == 0.0
        assert float(local["weight"][1:3].abs().min()) > 0.0


def test_mas_local_on_a_multi_head_model(data: tuple[Tensor, Tensor]) -> None:
    model = _tiny_model()
    x, _ = data
    units = slice(2, 4)
    local = mas_local_importance(model, _batches(x, None, 9), units)
    grad_based = mas_importance(model, _batches(x, None, 9), units)
    # the output layer is linear: its local form is exactly the gradient of its own ||z||^2
    for n in ("head.heads.1.weight", "head.heads.1.bias"):
        torch.testing.assert_close(local[n], grad_based[n])
    # hidden layers use their own ReLU output: layer 0 by hand
    with torch.no_grad():
        xf = x.flatten(1)
        h1 = torch.relu(model.backbone.layers[0](xf))
    torch.testing.assert_close(local["backbone.layers.0.weight"],
                               (2 * h1.abs()[:, :, None] * xf.abs()[:, None, :]).mean(0))
    # heads outside the units get no importance
    assert "head.heads.0.weight" not in local and "head.heads.2.weight" not in local
    # forward only: no gradient anywhere, even when parameters do not require one
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        again = mas_local_importance(model, _batches(x, None, 9), units)
    _close(again, local)


# ------------------------------------------------------------------------------------- SI


@pytest.mark.parametrize("sgd_form", [False, True])
def test_si_path_integral_on_a_quadratic_with_known_answer(sgd_form: bool) -> None:
    # L = 1/2 sum a_i theta_i^2, plain SGD: g = a theta, delta = -lr g, so
    # omega = sum_t -g_t * delta_t = lr sum_t g_t^2 with theta_t = (1 - lr a)^t theta_0.
    a = torch.tensor([0.5, 1.0, 2.0])
    theta0 = torch.tensor([1.0, -2.0, 0.5])
    lr, steps, xi = 0.1, 25, 0.1
    theta = nn.Parameter(theta0.clone())
    opt = torch.optim.SGD([theta], lr=lr)
    path = PathIntegral()
    path.begin({"theta": theta}, opt if sgd_form else None)
    assert path.plain_sgd is sgd_form
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (a * theta.square()).sum()).backward()
        path.record_gradients()
        opt.step()
        path.accumulate()
    t = torch.arange(steps, dtype=torch.float32)[:, None]
    thetas = (1 - lr * a) ** t * theta0
    omega = lr * (a * thetas).square().sum(0)
    torch.testing.assert_close(path.omega[0], omega)
    end = (1 - lr * a) ** steps * theta0
    torch.testing.assert_close(path.importance(xi)["theta"], omega / ((end - theta0) ** 2 + xi))


def test_si_uses_the_data_gradient_not_the_penalty() -> None:
    # Loop order: data backward -> record -> penalty backward -> step -> accumulate.
    theta = nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([theta], lr=0.1)
    path = PathIntegral()
    path.begin({"theta": theta})
    opt.zero_grad()
    (theta.sum() * 3.0).backward()  # data gradient: 3
    path.record_gradients()
    (10.0 * theta.square().sum()).backward()  # penalty gradient: 20 theta
    opt.step()  # delta = -0.1 * (3 + 20 theta)
    path.accumulate()
    delta = -0.1 * (3.0 + 20.0 * torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(path.omega[0], -3.0 * delta)


def _si_run(optimizer_factory: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
            use_optimizer: bool, steps: int = 6) -> tuple[PathIntegral, nn.Module]:
    """A few steps of a small MLP with SI's loop order (a penalty-like gradient added after
    the data gradient is recorded; the second head gets no gradient and never moves)."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"body": nn.Linear(5, 4), "a": nn.Linear(4, 3), "b": nn.Linear(4, 3)})
    params = dict(model.named_parameters())
    opt = optimizer_factory(list(params.values()))
    path = PathIntegral()
    path.begin(params, opt if use_optimizer else None)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model["a"](torch.relu(model["body"](x))), y).backward()
        path.record_gradients()
        with torch.no_grad():  # a penalty's gradient: moves the body, not counted in g
            model["body"].weight.grad.add_(model["body"].weight, alpha=0.3)
        opt.step()
        path.accumulate()
    return path, model


def test_si_sgd_form_equals_the_general_form() -> None:
    # Plain SGD: delta = -lr * grad, so omega += lr * g * grad is the same sum as
    # omega += -g * (theta - theta_prev), without keeping theta_prev.
    def sgd(ps: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD([{"params": ps[:2], "lr": 0.05}, {"params": ps[2:], "lr": 0.2}])

    fast, _ = _si_run(sgd, use_optimizer=True)
    slow, _ = _si_run(sgd, use_optimizer=False)
    assert fast.plain_sgd and not slow.plain_sgd and fast.prev == []
    for a, b, name in zip(fast.omega, slow.omega, fast.names):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-9, msg=name)
    assert fast.omega[0].abs().sum() > 0  # the body moved
    assert all(float(w.abs().sum()) == 0.0 for w, n in zip(fast.omega, fast.names)
               if n.startswith("b."))  # the idle head did not


def _si_quadratic_run(closed: bool, penalised: bool = True, lr_change: bool = True,
                      steps: int = 12) -> tuple[PathIntegral, nn.Module]:
    """SGD steps of a small MLP whose only extra gradient is ``k (theta - m)`` on the body and
    one head (two learning-rate groups, the learning rate of one changed half-way; the second
    head idle), with the path integral in the closed form or recording the task gradient."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"body": nn.Linear(5, 4), "a": nn.Linear(4, 3), "b": nn.Linear(4, 3)})
    params = dict(model.named_parameters())
    names = list(params)
    opt = torch.optim.SGD([{"params": [params[n] for n in names[:2]], "lr": 0.05},
                           {"params": [params[n] for n in names[2:]], "lr": 0.2}])
    quad = {n: (torch.rand_like(params[n]) * 3.0, params[n].detach() + 0.3 * torch.randn_like(
        params[n])) for n in ("body.weight", "body.bias", "a.weight")} if penalised else {}
    path = PathIntegral()
    path.begin(params, opt, quadratic=quad if closed else None)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for step in range(steps):
        if lr_change and step == steps // 2:
            opt.param_groups[0]["lr"] = 0.02
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model["a"](torch.relu(model["body"](x))), y).backward()
        path.record_gradients()
        with torch.no_grad():
            for n, (k, m) in quad.items():
                params[n].grad.addcmul_(k, params[n] - m)
        opt.step()
        path.accumulate()
    return path, model


def test_si_closed_form_equals_the_recorded_sum() -> None:
    # grad = g + k (theta - m) only: sum -g delta from A = sum lr grad^2 and the endpoints
    # (Zenke et al. Eq. 3 rewritten), across a learning-rate change; no copy of g is kept.
    closed, model = _si_quadratic_run(closed=True)
    recorded, _ = _si_quadratic_run(closed=False)
    assert closed.closed_form and not recorded.closed_form and closed.grads == []
    assert closed.names == recorded.names
    omega_closed = closed.state_dict()["omega"]
    for n, b in zip(recorded.names, recorded.omega):
        torch.testing.assert_close(omega_closed[n], b, rtol=1e-4, atol=1e-7, msg=n)
    assert float(recorded.omega[0].abs().sum()) > 1e-3  # the body moved under the task
    for n in recorded.names:  # Eq. 5 from either
        torch.testing.assert_close(closed.importance(0.1)[n], recorded.importance(0.1)[n],
                                   rtol=1e-4, atol=1e-6, msg=n)
    # without any penalty the closed form is the recorded sum, bit for bit
    plain_closed, _ = _si_quadratic_run(closed=True, penalised=False, lr_change=False)
    plain, _ = _si_quadratic_run(closed=False, penalised=False, lr_change=False)
    total = plain_closed.state_dict()["omega"]
    assert all(torch.equal(total[n], b) for n, b in zip(plain.names, plain.omega))
    # a restored state gives the same importance (the segments evaluated into omega)
    other = PathIntegral()
    other.load_state_dict(closed.state_dict(), dict(model.named_parameters()))
    for n in closed.names:
        torch.testing.assert_close(other.importance(0.1)[n], closed.importance(0.1)[n])
    # the closed form needs the plain SGD step; (k, m) must match the parameter
    w = nn.Parameter(torch.zeros(2))
    general = PathIntegral()
    general.begin({"w": w}, torch.optim.Adam([w]), quadratic={})
    assert not general.closed_form and len(general.grads) == 1
    with pytest.raises(ValueError, match=r"quadratic \(k, m\) of 'w' must both have"):
        PathIntegral().begin({"w": w}, torch.optim.SGD([w], lr=0.1),
                             quadratic={"w": (torch.ones(3), torch.zeros(2))})


def test_plain_sgd_groups_recognises_only_the_plain_sgd_step() -> None:
    ps = [nn.Parameter(torch.zeros(2)) for _ in range(3)]
    opt = torch.optim.SGD(ps[:2], lr=0.1)
    groups = plain_sgd_groups(opt, ps)
    assert groups is not None and groups[0] is opt.param_groups[0] and groups[2] is None
    assert plain_sgd_groups(None, ps) is None
    for other in (torch.optim.SGD(ps, lr=0.1, momentum=0.9),
                  torch.optim.SGD(ps, lr=0.1, weight_decay=1e-4),
                  torch.optim.SGD(ps, lr=0.1, maximize=True),
                  torch.optim.Adam(ps, lr=0.1)):
        assert plain_sgd_groups(other, ps) is None
    # with momentum the step is not -lr * grad: the path integral keeps the general form
    path, _ = _si_run(lambda q: torch.optim.SGD(q, lr=0.1, momentum=0.9), use_optimizer=True)
    assert not path.plain_sgd and len(path.prev) == len(path.names)


def test_path_integral_state_round_trip_in_the_sgd_form() -> None:
    path, model = _si_run(lambda q: torch.optim.SGD(q, lr=0.1), use_optimizer=True)
    state = path.state_dict()
    assert state["plain_sgd"] is True and state["prev"] == {}
    other = PathIntegral()
    other.load_state_dict(state, dict(model.named_parameters()))
    for n in path.names:
        torch.testing.assert_close(other.importance(0.1)[n], path.importance(0.1)[n])
    with pytest.raises(RuntimeError, match=r"call begin\(params, optimizer\)"):
        other.accumulate()


def test_path_integral_state_round_trip() -> None:
    theta = nn.Parameter(torch.tensor([1.0, 2.0]))
    path = PathIntegral()
    path.begin({"theta": theta})
    theta.grad = torch.tensor([0.5, -1.0])
    path.record_gradients()
    with torch.no_grad():
        theta -= torch.tensor([0.1, 0.2])
    path.accumulate()
    state = path.state_dict()
    other = PathIntegral()
    other.load_state_dict(state, {"theta": theta})
    torch.testing.assert_close(other.importance(0.1)["theta"], path.importance(0.1)["theta"])
    with pytest.raises(RuntimeError, match="call begin"):
        PathIntegral().accumulate()


def test_select_parameters_excludes_plastic_and_frozen() -> None:
    class Plastic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))
            self.alpha = nn.Parameter(torch.zeros(2))
            self.register_buffer("hebb", torch.zeros(2))

        def plastic_parameter_names(self) -> tuple[str, ...]:
            return ("alpha",)

    model = nn.Sequential(nn.Linear(2, 2), Plastic())
    model[0].bias.requires_grad_(False)
    assert list(select_parameters(model)) == ["0.weight", "1.w"]
    assert list(select_parameters(model, penalize_plastic=True)) == ["0.weight", "1.w", "1.alpha"]
