"""Importance estimators: Fisher and MAS equal a Python loop over samples (tests/unit/_reference.py)
on multi-head, single-head (restricted units too) and DHP-Softmax models; the linear fast path
equals ``vmap`` only; rows outside ``units`` are zero; analytic Fisher; batched != per-sample;
local MAS by hand; buffers and train/eval flags untouched."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.nn.backbones import MLP
from lifelong.nn.dhp import DHPSoftmax
from lifelong.nn.heads import MultiHead, SingleHead
from lifelong.nn.model import ContinualModel
from lifelong.terms import importance
from lifelong.terms.importance import (
    _Functional,
    _LinearTaps,
    fisher_diagonal,
    mas_importance,
    mas_local_importance,
    select_parameters,
)
from tests.unit._reference import fisher_diagonal_loop, mas_loop

Estimates = dict[str, Tensor]


def _close(a: Estimates, b: Estimates, rtol: float = 1e-5) -> None:
    """Equal within ``rtol`` relative to each tensor's largest entry (float32 rounding)."""
    assert set(a) == set(b)
    for n in a:
        scale = float(b[n].abs().max())
        torch.testing.assert_close(a[n], b[n], rtol=rtol, atol=rtol * scale + 1e-12,
                                   msg=lambda m, n=n: f"{n}: {m}")


def _batches(x: Tensor, y: Tensor | None, bs: int) -> list[tuple[Tensor, Tensor | None]]:
    return [(x[i:i + bs], None if y is None else y[i:i + bs]) for i in range(0, x.shape[0], bs)]


def _model(head: str = "multi", seed: int = 0) -> ContinualModel:
    """A tiny MLP 6-5-4 with 6 output units: 3 linear or DHP-Softmax heads of 2 units, or one
    layer of 6; DHP layers get non-trivial ``alpha`` and trace."""
    torch.manual_seed(seed)
    layer = DHPSoftmax if head.startswith("dhp") else nn.Linear
    head_module = (MultiHead(4, [2, 2, 2], layer) if head.endswith("multi")
                   else SingleHead(4, 6, layer))
    model = ContinualModel(MLP(6, (5, 4)), head_module)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, DHPSoftmax):
                m.alpha.uniform_(-1.0, 1.0)
                m.hebb.uniform_(0.0, 2.0)
    return model


@pytest.fixture
def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(23, 1, 2, 3, generator=g)
    y = torch.randint(2, 4, (23,), generator=g)  # units of task 1 of a 2-unit-per-task layout
    return x, y


def _estimate(kind: str, model: nn.Module, batches: list, units: slice | None,
              params: dict[str, Tensor] | None, fast: bool) -> Estimates:
    if kind == "mas":
        return mas_importance(model, batches, units, params=params, linear_fast_path=fast)
    return fisher_diagonal(model, batches, units, variant=kind, params=params,
                           linear_fast_path=fast)


def _reference(kind: str, model: nn.Module, batches: list, units: slice | None,
               params: dict[str, Tensor] | None) -> Estimates:
    if kind == "mas":
        return mas_loop(model, batches, units, params=params)
    return fisher_diagonal_loop(model, batches, units, variant=kind, params=params)


# (head, units, rows of output layers that must be zero, rows of one layer that must not)
CASES = [
    ("multi", slice(2, 4), {"head.heads.0": slice(0, 2), "head.heads.2": slice(0, 2)},
     ("head.heads.1", slice(0, 2))),
    ("single", None, {}, ("head.layer", slice(0, 6))),
    ("single", slice(0, 4), {"head.layer": slice(4, 6)},  # class-IL, 2 tasks seen
     ("head.layer", slice(0, 4))),
    ("dhp-multi", slice(2, 4), {"head.heads.0": slice(0, 2), "head.heads.2": slice(0, 2)},
     ("head.heads.1", slice(0, 2))),
    ("dhp-single", slice(0, 4), {"head.layer": slice(4, 6)}, ("head.layer", slice(0, 4))),
]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("kind", ["true", "empirical", "mas"])
@pytest.mark.parametrize("head, units, zero_rows, live", CASES)
def test_estimators_equal_the_python_loop(data: tuple[Tensor, Tensor], head: str,
                                          units: slice | None, zero_rows: dict[str, slice],
                                          live: tuple[str, slice], kind: str,
                                          fast: bool) -> None:
    """Fisher (true, empirical) and MAS equal one ``autograd.grad`` per sample (and class);
    output rows outside ``units`` get exactly zero; DHP's ``alpha`` gets importance, ``eta``
    none (it does not enter the eval forward)."""
    model = _model(head)
    x, y = data
    params = select_parameters(model, penalize_plastic=True)
    got = _estimate(kind, model, _batches(x, y, 7), units, params, fast)
    _close(got, _reference(kind, model, _batches(x, y, 7), units, params))
    for layer, rows in zero_rows.items():
        for p in ("weight", "bias", "alpha"):
            if f"{layer}.{p}" in got:
                assert float(got[f"{layer}.{p}"][rows].abs().sum()) == 0.0, (layer, p)
    layer, rows = live
    assert float(got[f"{layer}.weight"][rows].abs().sum(1).min()) > 0  # every row
    assert float(got[f"{layer}.bias"][rows].abs().min()) > 0
    assert float(got["backbone.layers.0.weight"].abs().sum()) > 0
    if head.startswith("dhp"):
        assert float(got[f"{layer}.alpha"][rows].abs().sum(1).min()) > 0
        assert all(float(v.abs().sum()) == 0 for n, v in got.items() if n.endswith(".eta"))


@pytest.mark.parametrize("head", ["multi", "single", "dhp-multi", "dhp-single"])
@pytest.mark.parametrize("kind", ["true", "sample", "empirical", "predicted", "mas"])
def test_fast_path_equals_vmap_only(data: tuple[Tensor, Tensor], head: str, kind: str) -> None:
    """The linear fast path covers every parameter of these models (nothing left for ``vmap``)
    and gives the numbers of ``vmap`` alone, for every variant (``sample``: the same draws)."""
    model = _model(head)
    x, y = data
    units = slice(2, 4)
    params = select_parameters(model, penalize_plastic=True)
    taps = _LinearTaps(_Functional(model, params, units), x[:9])
    assert taps.covered | taps.unused == set(params)
    assert {n for n in params if n.endswith(".eta") or ".heads.0." in n} <= taps.unused

    def run(fast: bool) -> Estimates:
        if kind == "sample":
            return fisher_diagonal(model, _batches(x, y, 9), units, variant="sample",
                                   params=params, linear_fast_path=fast,
                                   generator=torch.Generator().manual_seed(3))
        return _estimate(kind, model, _batches(x, y, 9), units, params, fast)

    fast, slow = run(True), run(False)
    _close(fast, slow)
    assert float(sum(v.abs().sum() for v in fast.values())) > 0


class _ScaledLinear(nn.Module):
    """A layer unknown to the estimators: ``z = h (weight * scale + gain * mask)^T + bias``,
    declared through the ``linear_parameters`` protocol."""

    scale: Tensor
    mask: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 4))
        self.gain = nn.Parameter(torch.randn(3, 4))
        self.bias = nn.Parameter(torch.randn(3))
        self.register_buffer("scale", torch.rand(3, 4) + 0.5)
        self.register_buffer("mask", torch.randn(3, 4))

    def linear_parameters(self) -> dict[str, Tensor | None]:
        return {"weight": self.scale, "gain": self.mask}

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(h, self.weight * self.scale + self.gain * self.mask, self.bias)


@pytest.mark.parametrize("kind", ["true", "mas"])
def test_linear_parameters_protocol_takes_the_fast_path(kind: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), _ScaledLinear())
    x = torch.randn(13, 5)
    taps = _LinearTaps(_Functional(model, None, None), x)
    assert taps.covered == set(dict(model.named_parameters()))
    fast = _estimate(kind, model, _batches(x, None, 5), None, None, True)
    _close(fast, _estimate(kind, model, _batches(x, None, 5), None, None, False))
    _close(fast, _reference(kind, model, _batches(x, None, 5), None, None))


def test_importance_module_does_not_name_layer_or_head_classes() -> None:
    """Layers that need special treatment declare it (``linear_parameters``, ``output_rows``);
    the estimators' code never names them (docstrings aside)."""
    tree = ast.parse(inspect.getsource(importance))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not names & {"DHPSoftmax", "MultiHead", "SingleHead", "ContinualModel"}
    assert "linear_parameters" in inspect.getsource(importance)


# ------------------------------------------------------------------------------------- Fisher


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
def test_non_linear_parameters_go_through_vmap(data: tuple[Tensor, Tensor], fast: bool) -> None:
    # BatchNorm's affine parameters are not linear-layer parameters: always vmap of vjp.
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(),
                          nn.Linear(5, 3))
    model.train()
    model(torch.randn(32, 6))  # non-trivial running statistics
    x, _ = data
    y = torch.randint(0, 3, (x.shape[0],))
    taps = _LinearTaps(_Functional(model, None, None), x[:8])
    assert taps.covered == {"1.weight", "1.bias", "4.weight", "4.bias"} and not taps.unused
    for kind in ("true", "empirical", "mas"):
        got = _estimate(kind, model, _batches(x, y, 8), None, None, fast)
        _close(got, _reference(kind, model, _batches(x, y, 8), None, None))
        assert float(got["2.weight"].abs().sum()) > 0


def test_per_sample_fisher_differs_from_batched(data: tuple[Tensor, Tensor]) -> None:
    model = _model()
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
    model = _model()
    x = torch.randn(3, 1, 2, 3).repeat(400, 1, 1, 1)
    units = slice(0, 2)
    true = fisher_diagonal(model, _batches(x, None, 300), units, variant="true")
    a = fisher_diagonal(model, _batches(x, None, 300), units, variant="sample",
                        generator=torch.Generator().manual_seed(5))
    b = fisher_diagonal(model, _batches(x, None, 300), units, variant="sample",
                        generator=torch.Generator().manual_seed(5))
    _close(a, b, rtol=0)
    w = "backbone.layers.0.weight"
    assert abs(float(a[w].sum() / true[w].sum()) - 1.0) < 0.15


@pytest.mark.parametrize("fast", [True, False])
def test_predicted_fisher_is_the_empirical_one_at_the_argmax_label(data: tuple[Tensor, Tensor],
                                                                   fast: bool) -> None:
    model = _model()
    x, _ = data
    units = slice(2, 4)
    with torch.no_grad():
        y_hat = model(x, units=units).argmax(1) + units.start
    pred = fisher_diagonal(model, _batches(x, None, 8), units, variant="predicted",
                           linear_fast_path=fast)
    _close(pred, fisher_diagonal_loop(model, _batches(x, y_hat, 8), units, variant="empirical"))


def test_fisher_errors_and_empty_data(data: tuple[Tensor, Tensor]) -> None:
    model = _model()
    x, y = data
    with pytest.raises(ValueError, match="unknown Fisher variant 'max'"):
        fisher_diagonal(model, _batches(x, y, 8), slice(2, 4), variant="max")
    with pytest.raises(ValueError, match="needs labels"):
        fisher_diagonal(model, _batches(x, None, 8), slice(2, 4), variant="empirical")
    with pytest.raises(ValueError, match="targets must be output units inside"):
        fisher_diagonal(model, _batches(x, y, 8), slice(0, 2), variant="empirical")
    with pytest.raises(ValueError, match="not parameters of the model"):
        fisher_diagonal(model, _batches(x, y, 8), slice(2, 4), params={"nope": torch.zeros(1)})
    empty = fisher_diagonal(model, [(x[:0], y[:0])], slice(2, 4))
    assert set(empty) == set(select_parameters(model))
    assert all(float(v.abs().sum()) == 0 for v in empty.values())


def _bn_model(head: str) -> nn.Module:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(),
                             nn.Dropout(0.5))
    backbone.out_features = 5  # type: ignore[assignment]
    layer = DHPSoftmax if head == "dhp" else nn.Linear
    model = ContinualModel(backbone, SingleHead(5, 4, layer))
    model.train()
    model(torch.randn(16, 1, 2, 3), targets=torch.randint(0, 4, (16,)))  # stats and trace move
    model.head.eval()  # mixed modes must come back exactly as they were
    return model


ESTIMATORS: dict[str, Callable[[nn.Module, list], Estimates]] = {
    "fisher": lambda m, b: fisher_diagonal(m, b, slice(2, 4), variant="empirical"),
    "fisher-vmap": lambda m, b: fisher_diagonal(m, b, slice(2, 4), linear_fast_path=False),
    "fisher-batched": lambda m, b: fisher_diagonal(m, b, slice(2, 4), variant="batched"),
    "mas": lambda m, b: mas_importance(m, b, slice(2, 4)),
    "mas-local": lambda m, b: mas_local_importance(m, b, slice(2, 4)),
}


@pytest.mark.parametrize("head", ["linear", "dhp"])
@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_estimators_leave_buffers_and_modes_untouched(data: tuple[Tensor, Tensor], head: str,
                                                      estimator: str) -> None:
    """BatchNorm statistics and the DHP trace stay bit for bit; every module's own flag
    (here: backbone training, head eval) comes back; no ``.grad`` is left behind."""
    model = _bn_model(head)
    x, y = data
    before = {n: b.clone() for n, b in model.named_buffers()}
    assert head == "linear" or float(before["head.layer.hebb"].abs().sum()) > 0
    modes = {n: m.training for n, m in model.named_modules()}
    out = ESTIMATORS[estimator](model, _batches(x, y, 8))
    assert out and all(torch.isfinite(v).all() for v in out.values())
    assert float(out["1.weight" if "1.weight" in out else "backbone.1.weight"].sum()) > 0
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------- MAS


@pytest.mark.parametrize("fast", [True, False])
def test_mas_takes_absolute_values_per_sample(data: tuple[Tensor, Tensor], fast: bool) -> None:
    model = _model()
    x, _ = data
    got = mas_importance(model, _batches(x, None, 6), slice(2, 4), linear_fast_path=fast)
    # not the absolute value of a summed gradient
    summed = torch.autograd.grad(model(x, units=slice(2, 4)).square().sum(),
                                 model.backbone.layers[0].weight)[0].abs() / x.shape[0]
    assert got["backbone.layers.0.weight"].sum() > 1.05 * summed.sum()


def test_mas_local_equals_gradient_mas_for_one_relu_layer() -> None:
    # d||y||^2/dW_ji = 2 y_j x_i for y = ReLU(W x + b) (0 where off)
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(5, 4), nn.ReLU())
    x = torch.randn(31, 5)  # negative inputs too: the absolute value is per sample
    local = mas_local_importance(layer, [x[:10], x[10:]])
    grad_based = mas_importance(layer, [x[:10], x[10:]], linear_fast_path=False)
    _close(local, {"0.weight": grad_based["0.weight"], "0.bias": grad_based["0.bias"]})
    y = torch.relu(layer(x))
    by_hand = (2 * y.abs()[:, :, None] * x.abs()[:, None, :]).mean(0)
    torch.testing.assert_close(local["0.weight"], by_hand)


@pytest.mark.parametrize("units", [None, slice(1, 3)])
def test_mas_local_on_a_dhp_head_equals_gradient_mas(units: slice | None) -> None:
    """DHP-Softmax's logits are linear in its slow weights: the local form 2 |z_j h_i| is the
    gradient of its own ||z||^2 (rows outside ``units`` get 0); alpha gets it times |Hebb|."""
    torch.manual_seed(0)
    head = SingleHead(5, 4, DHPSoftmax)
    with torch.no_grad():
        head.layer.hebb.copy_(torch.rand(4, 5))
        head.layer.alpha.copy_(torch.rand(4, 5))
    x = torch.randn(23, 5)
    batches = [x[:10], x[10:]]
    local = mas_local_importance(head, batches, units)
    params = {n: p for n, p in head.named_parameters() if not n.endswith("eta")}
    grad_based = mas_importance(head, batches, units, params=params, linear_fast_path=False)
    assert set(local) == {"layer.weight", "layer.bias", "layer.alpha"}
    _close(local, grad_based)
    if units is not None:
        assert float(local["layer.weight"][[0, 3]].abs().sum()) == 0.0
        assert float(local["layer.bias"][[0, 3]].abs().sum()) == 0.0
        assert float(local["layer.weight"][1:3].abs().min()) > 0.0


@pytest.mark.parametrize("head", ["multi", "single"])
def test_mas_local_on_a_model(data: tuple[Tensor, Tensor], head: str) -> None:
    model = _model(head)
    x, _ = data
    units = slice(2, 4)
    local = mas_local_importance(model, _batches(x, None, 9), units)
    grad_based = mas_importance(model, _batches(x, None, 9), units)
    # the output layer is linear: its local form is exactly the gradient of its own ||z||^2
    out = "head.heads.1" if head == "multi" else "head.layer"
    for n in (f"{out}.weight", f"{out}.bias"):
        _close({n: local[n]}, {n: grad_based[n]})
    # hidden layers use their own ReLU output: layer 0 by hand
    with torch.no_grad():
        xf = x.flatten(1)
        h1 = torch.relu(model.backbone.layers[0](xf))
    torch.testing.assert_close(local["backbone.layers.0.weight"],
                               (2 * h1.abs()[:, :, None] * xf.abs()[:, None, :]).mean(0))
    if head == "multi":  # heads outside the units get no entry
        assert "head.heads.0.weight" not in local and "head.heads.2.weight" not in local
    else:  # rows outside the units are zero, the others are not
        assert float(local["head.layer.weight"][[0, 1, 4, 5]].abs().sum()) == 0.0
        assert float(local["head.layer.weight"][2:4].abs().min()) > 0.0
    # forward only: no gradient anywhere, even when parameters do not require one
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        again = mas_local_importance(model, _batches(x, None, 9), units)
    _close(again, local, rtol=0)


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
    assert set(select_parameters(_model("dhp-multi"))) == {
        *(f"backbone.layers.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")),
        *(f"head.heads.{t}.{p}" for t in range(3) for p in ("weight", "bias"))}
