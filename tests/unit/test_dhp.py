"""DHP-Softmax (Thangarasa, Miconi & Taylor 2020): logits, Hebbian update, gradients, state,
the protocols it declares (``uses_targets``, ``linear_parameters``), inside heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.nn.dhp import DHPSoftmax
from lifelong.nn.heads import MultiHead, SingleHead


def _layer(in_features: int = 3, out_features: int = 4, eta: float = 0.25, bias: bool = True,
           dtype: torch.dtype = torch.float32, seed: int = 0) -> DHPSoftmax:
    torch.manual_seed(seed)
    layer = DHPSoftmax(in_features, out_features, bias=bias).to(dtype)
    with torch.no_grad():
        layer.eta.fill_(eta)
    return layer


def _reference_step(h: Tensor, targets: Tensor, weight: Tensor, alpha: Tensor, eta: Tensor,
                    bias: Tensor | None, hebb: Tensor) -> tuple[Tensor, Tensor]:
    """Algorithm 1 of the paper, literally: a Python loop over the classes present, autograd ops."""
    rows = []
    for c in range(hebb.shape[0]):
        mask = targets == c
        if bool(mask.any()):
            h_bar = h[mask].sum(0) / mask.sum()
            rows.append((1 - eta) * hebb[c] + eta * h_bar)
        else:
            rows.append(hebb[c])
    new_hebb = torch.stack(rows)
    return F.linear(h, weight + alpha * new_hebb, bias), new_hebb


# ------------------------------------------------------------------------------ construction


def test_init_matches_linear_and_paper():
    layer = DHPSoftmax(256, 10)
    bound = 1 / math.sqrt(256)
    assert layer.weight.shape == (10, 256) and layer.alpha.shape == (10, 256)
    assert layer.hebb.shape == (10, 256) and torch.count_nonzero(layer.hebb) == 0
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert layer.bias is not None and layer.bias.abs().max() <= bound
    assert 0 <= layer.alpha.min() and layer.alpha.max() <= 0.01 and layer.alpha.std() > 0.002
    assert layer.eta.shape == () and layer.eta.item() == pytest.approx(0.001)
    assert DHPSoftmax(4, 2, bias=False).bias is None
    assert DHPSoftmax(4, 2, eta_init=0.1, alpha_init_scale=0.5).alpha.max() <= 0.5


def test_hebb_is_a_saved_buffer_not_a_parameter():
    layer = DHPSoftmax(5, 3)
    assert set(dict(layer.named_parameters())) == {"weight", "bias", "alpha", "eta"}
    assert "hebb" in dict(layer.named_buffers())
    assert set(layer.state_dict()) == {"weight", "bias", "alpha", "eta", "hebb"}
    assert layer.plastic_parameter_names() == ("alpha", "eta")
    text = repr(layer)
    assert "in_features=5, out_features=3, bias=True, eta_init=0.001" in text


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="positive sizes"):
        DHPSoftmax(0, 3)
    with pytest.raises(ValueError, match=r"eta_init must lie in \[0, 1\]"):
        DHPSoftmax(3, 3, eta_init=1.5)
    with pytest.raises(ValueError, match="alpha_init_scale"):
        DHPSoftmax(3, 3, alpha_init_scale=-1.0)


# ------------------------------------------------------------------------------ logits


def test_alpha_zero_equals_linear_exactly():
    layer = _layer(6, 5)
    with torch.no_grad():
        layer.alpha.zero_()
        layer.hebb.copy_(torch.randn(5, 6))  # a non-zero trace changes nothing when alpha = 0
    h = torch.randn(7, 6)
    targets = torch.tensor([0, 1, 1, 4, -1, 2, 0])
    expected = F.linear(h, layer.weight, layer.bias)
    layer.eval()
    assert torch.equal(layer(h), expected)
    layer.train()
    assert torch.equal(layer(h, targets=targets), expected)  # with an update


def test_logits_use_the_plastic_weights():
    layer = _layer(4, 3)
    with torch.no_grad():
        layer.hebb.copy_(torch.randn(3, 4))
    h = torch.randn(5, 4)
    expected = h @ (layer.weight + layer.alpha * layer.hebb).T + layer.bias
    torch.testing.assert_close(layer.eval()(h), expected, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ Hebbian update


def test_trace_after_one_batch_by_hand():
    """Classes 1 and 3 absent, class 2 three times, one unlabelled row (-1), eta = 0.25."""
    layer = _layer(3, 4, eta=0.25)
    with torch.no_grad():
        layer.hebb.copy_(torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0],
                                       [0.0, 0.0, 4.0], [5.0, 5.0, 5.0]]))
    h = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, -4.0], [3.0, 2.0, 1.0], [2.0, 2.0, 2.0],
                      [100.0, 100.0, 100.0]])
    targets = torch.tensor([2, 0, 2, 2, -1])
    layer.train()(h, targets=targets)
    # class 0: h_bar = [4, 0, -4];  0.75 * [1, 1, 1] + 0.25 * [4, 0, -4] = [1.75, 0.75, -0.25]
    # class 2: h_bar = mean([1,2,3], [3,2,1], [2,2,2]) = [2, 2, 2];
    #          0.75 * [0, 0, 4] + 0.25 * [2, 2, 2] = [0.5, 0.5, 3.5]
    # classes 1 and 3: absent, unchanged; the -1 row (100s) is ignored
    expected = torch.tensor([[1.75, 0.75, -0.25], [2.0, 0.0, 0.0],
                             [0.5, 0.5, 3.5], [5.0, 5.0, 5.0]])
    torch.testing.assert_close(layer.hebb, expected, rtol=0, atol=1e-6)


def test_vectorised_update_equals_python_loop_over_several_steps():
    layer = _layer(16, 6, eta=0.3, seed=1)
    hebb = layer.hebb.clone()
    gen = torch.Generator().manual_seed(2)
    for _ in range(4):
        h = torch.randn(20, 16, generator=gen)
        targets = torch.randint(-1, 4, (20,), generator=gen)  # classes 4, 5 never present
        z = layer.train()(h, targets=targets)
        z_ref, hebb = _reference_step(h, targets, layer.weight, layer.alpha, layer.eta,
                                      layer.bias, hebb)
        hebb = hebb.detach()
        torch.testing.assert_close(layer.hebb, hebb, rtol=0, atol=1e-6)
        torch.testing.assert_close(z, z_ref, rtol=0, atol=1e-6)
    assert torch.count_nonzero(layer.hebb[4:]) == 0


def test_no_update_in_eval_mode_or_without_targets():
    layer = _layer(4, 3)
    with torch.no_grad():
        layer.hebb.copy_(torch.randn(3, 4))
    before = layer.hebb.clone()
    h, targets = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    layer.eval()(h, targets=targets)
    assert torch.equal(layer.hebb, before)
    out = layer.train()(h)  # training mode, no targets: the trace is used, not changed
    assert torch.equal(layer.hebb, before)
    torch.testing.assert_close(out, layer.eval()(h), rtol=0, atol=0)


def test_unlabelled_rows_are_ignored():
    a, b = _layer(5, 3, eta=0.5), _layer(5, 3, eta=0.5)
    h = torch.randn(6, 5)
    targets = torch.tensor([0, -1, 2, -1, 0, -1])
    keep = targets >= 0
    a.train()(h, targets=targets)
    b.train()(h[keep], targets=targets[keep])
    torch.testing.assert_close(a.hebb, b.hebb, rtol=0, atol=1e-7)
    assert torch.count_nonzero(a.hebb[1]) == 0  # class 1 absent
    c = _layer(5, 3)
    c.train()(h, targets=torch.full((6,), -1))
    assert torch.count_nonzero(c.hebb) == 0


def test_buffer_is_detached_after_forward():
    layer = _layer(4, 3)
    h = torch.randn(5, 4, requires_grad=True)
    z = layer.train()(h, targets=torch.tensor([0, 1, 1, 2, 0]))
    assert z.grad_fn is not None
    assert layer.hebb.grad_fn is None and not layer.hebb.requires_grad
    assert layer.hebb is dict(layer.named_buffers())["hebb"]


def test_trace_persists_and_reset_trace():
    layer = _layer(4, 3)
    layer.train()(torch.randn(5, 4), targets=torch.tensor([0, 1, 1, 2, 0]))
    assert torch.count_nonzero(layer.hebb) > 0
    layer.reset_trace()
    assert layer.hebb.shape == (3, 4) and torch.count_nonzero(layer.hebb) == 0


def test_int32_and_int8_targets_and_a_float64_layer():
    h = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([2, 0, -1, 2, 2, 0])
    a = _layer(4, 3).double().train()
    za = a(h, targets=y)
    b = _layer(4, 3).double().train()
    zb = b(h, targets=y.int())
    c = _layer(4, 3).double().train()
    zc = c(h, targets=y.to(torch.int8))  # index_select refuses int8: converted
    assert za.dtype == torch.float64 and a.hebb.dtype == torch.float64
    assert torch.equal(za, zb) and torch.equal(a.hebb, b.hebb)
    assert torch.equal(za, zc) and torch.equal(a.hebb, c.hebb)
    mean0 = h[[1, 5]].mean(0)  # class 0 from zero: Hebb = eta * mean
    torch.testing.assert_close(a.hebb[0], a.eta.detach() * mean0)
    assert torch.count_nonzero(a.hebb[1]) == 0  # class 1 absent
    assert "onehot_table" not in a.state_dict()  # derived, not saved


def test_training_forward_reads_nothing_back_to_the_host(monkeypatch: pytest.MonkeyPatch):
    """No ``eta.item()`` (a device synchronisation on a GPU) or other host read per step."""
    layer = _layer(4, 3, eta=0.5).train()
    h, y = torch.randn(6, 4), torch.tensor([2, 0, -1, 2, 2, 0])

    def refuse(*args: object) -> None:
        raise AssertionError("host read of a tensor in the training forward")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    z = layer(h, targets=y)
    monkeypatch.undo()
    assert z.shape == (6, 3) and torch.count_nonzero(layer.hebb[1]) == 0
    torch.testing.assert_close(layer.hebb[0], 0.5 * h[[1, 5]].mean(0))


def test_eta_is_clamped_to_unit_interval_in_the_update():
    layer = _layer(3, 2, eta=1.5)
    h = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    z = layer.train()(h, targets=torch.tensor([1, 1]))
    torch.testing.assert_close(layer.hebb[1], torch.tensor([2.0, 2.0, 2.0]))  # eta used as 1
    z.sum().backward()
    assert layer.eta.grad is not None and layer.eta.grad.item() == 0.0
    assert layer.eta.item() == 1.5  # the parameter itself is not modified
    neg = _layer(3, 2, eta=-0.5)
    neg.train()(h, targets=torch.tensor([1, 1]))
    assert torch.count_nonzero(neg.hebb) == 0  # eta used as 0


# ------------------------------------------------------------------------------ gradients


def test_gradients_reach_eta_and_alpha():
    torch.manual_seed(0)
    layer = _layer(8, 4, eta=0.001)
    h = torch.randn(16, 8)
    targets = torch.randint(0, 4, (16,))
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(2):  # the second step starts from a non-zero trace
        opt.zero_grad()
        F.cross_entropy(layer.train()(h, targets=targets), targets).backward()
        assert layer.eta.grad is not None and layer.eta.grad.abs().item() > 0
        assert layer.alpha.grad is not None and layer.alpha.grad.abs().sum().item() > 0
        opt.step()
    assert torch.count_nonzero(layer.hebb) > 0


def test_eta_inside_the_unit_interval_gets_the_unclamped_gradient():
    """The clamp is the identity with an identical gradient inside [0, 1]."""
    layer = _layer(4, 3, eta=0.3, dtype=torch.float64)
    with torch.no_grad():
        layer.hebb.copy_(torch.randn(3, 4, dtype=torch.float64))
    hebb = layer.hebb.clone()
    h = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 2, 2, 1, 0])
    (g,) = torch.autograd.grad(layer.train()(h, targets=y).sum(), layer.eta)
    eta = layer.eta.detach().clone().requires_grad_()
    z_ref, _ = _reference_step(h, y, layer.weight, layer.alpha, eta, layer.bias, hebb)
    (g_ref,) = torch.autograd.grad(z_ref.sum(), eta)
    assert float(g_ref.abs()) > 0
    torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("bias", [True, False])
def test_gradients_equal_autograd_reference(bias: bool):
    """Gradients of the vectorised update equal autograd through Algorithm 1's loop, for every
    input (h included: the trace depends on h)."""
    layer = _layer(5, 4, eta=0.3, bias=bias, dtype=torch.float64, seed=3)
    with torch.no_grad():
        layer.hebb.copy_(torch.randn(4, 5, dtype=torch.float64))
        layer.alpha.copy_(torch.randn(4, 5, dtype=torch.float64))
    hebb = layer.hebb.clone()
    h = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 2, 2, -1, 3, 0, 0, 1, -1])
    z = layer.train()(h, targets=targets)
    z_ref, _ = _reference_step(h, targets, layer.weight, layer.alpha, layer.eta, layer.bias, hebb)
    torch.testing.assert_close(z, z_ref)
    params = [h, *layer.parameters()]
    g = torch.randn_like(z)
    ours = torch.autograd.grad(z, params, g)
    ref = torch.autograd.grad(z_ref, params, g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)
    assert ours[0].abs().sum() > 0  # h also gets the gradient through the trace


def test_gradcheck_finite_differences():
    layer = _layer(4, 3, eta=0.4, dtype=torch.float64, seed=4)
    start = torch.randn(3, 4, dtype=torch.float64)
    targets = torch.tensor([0, 2, 2, -1, 0])

    def f(h: Tensor, weight: Tensor, alpha: Tensor, eta: Tensor, bias: Tensor) -> Tensor:
        layer.hebb = start.clone()
        values = {"weight": weight, "alpha": alpha, "eta": eta, "bias": bias}
        return torch.func.functional_call(layer, values, (h,), {"targets": targets})

    inputs = (torch.randn(5, 4, dtype=torch.float64, requires_grad=True),
              *(p.detach().clone().requires_grad_() for p in
                (layer.weight, layer.alpha, layer.eta, layer.bias)))
    layer.train()
    assert torch.autograd.gradcheck(f, inputs)


def test_eval_forward_supports_torch_func_per_sample_gradients():
    """Importance estimators take per-sample gradients of the eval forward with ``torch.func``."""
    layer = _layer(4, 3, seed=6)
    with torch.no_grad():
        layer.hebb.copy_(torch.randn(3, 4))
    layer.eval()
    x = torch.randn(5, 4)
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss_one(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return torch.func.functional_call(layer, p, (xi.unsqueeze(0),)).logsumexp(1).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0))(params, x)
    for i in range(5):
        layer.zero_grad()
        layer(x[i:i + 1]).logsumexp(1).sum().backward()
        torch.testing.assert_close(per_sample["alpha"][i], layer.alpha.grad)
        torch.testing.assert_close(per_sample["weight"][i], layer.weight.grad)


# ------------------------------------------------------------------------------ units, state


def test_declares_targets_and_linear_parameters():
    layer = _layer(4, 3)
    assert DHPSoftmax.uses_targets is True and layer.uses_targets is True
    form = layer.linear_parameters()
    assert set(form) == {"weight", "alpha"} and form["weight"] is None
    assert form["alpha"] is layer.hebb
    with torch.no_grad():  # z = h (weight * 1 + alpha * hebb)^T + b in eval mode
        layer.hebb.copy_(torch.randn(3, 4))
    h = torch.randn(5, 4)
    w_eff = layer.weight + layer.alpha * layer.linear_parameters()["alpha"]
    torch.testing.assert_close(layer.eval()(h), h @ w_eff.T + layer.bias)


@pytest.mark.parametrize("head", ["single", "multi"])
def test_units_of_a_head_slice_the_logits_and_the_update_covers_every_class(head: str):
    """Heads take the columns of ``units``; the trace update covers every class with samples
    (inside the units or not); gradients reach only the rows of the units."""
    torch.manual_seed(0)
    make = (lambda: SingleHead(6, 5, DHPSoftmax)) if head == "single" else (
        lambda: MultiHead(6, [2, 3], DHPSoftmax))
    a = make()
    b = make()
    b.load_state_dict(a.state_dict())
    layers = [m for m in a.modules() if isinstance(m, DHPSoftmax)]
    with torch.no_grad():
        for m in [*layers, *(m for m in b.modules() if isinstance(m, DHPSoftmax))]:
            m.eta.fill_(0.2)
            m.hebb.copy_(torch.arange(m.hebb.numel(), dtype=torch.float32).view_as(m.hebb))
    h = torch.randn(8, 6)
    targets = torch.tensor([0, 4, 4, 1, 2, -1, 0, 3])  # classes outside 1:3 too
    torch.testing.assert_close(a.eval()(h, units=slice(1, 3)), b.eval()(h)[:, 1:3],
                               rtol=0, atol=1e-6)
    za = a.train()(h, units=slice(1, 3), targets=targets)
    zb = b.train()(h, targets=targets)
    assert za.shape == (8, 2)
    torch.testing.assert_close(za, zb[:, 1:3], rtol=0, atol=1e-6)
    for ma, mb in zip(layers, (m for m in b.modules() if isinstance(m, DHPSoftmax))):
        assert torch.equal(ma.hebb, mb.hebb)
    za.sum().backward()
    if head == "single":
        weight, bias = a.layer.weight.grad, a.layer.bias.grad
        assert torch.count_nonzero(weight[[0, 3, 4]]) == 0
        assert torch.count_nonzero(weight[1:3]) > 0
        assert bias.tolist() == [0.0, 8.0, 8.0, 0.0, 0.0]
    else:  # units 1:3 are row 1 of head 0 and row 0 of head 1
        assert torch.count_nonzero(a.heads[0].weight.grad[0]) == 0
        assert torch.count_nonzero(a.heads[1].weight.grad[1:]) == 0
        assert a.heads[0].bias.grad.tolist() == [0.0, 8.0]
        assert a.heads[1].bias.grad.tolist() == [8.0, 0.0, 0.0]
    # class 2 (one sample, h[4]) by hand: row 2 of the single layer, row 0 of the second head
    layer, row = (layers[0], 2) if head == "single" else (layers[1], 0)
    start = torch.arange(layer.hebb.numel(), dtype=torch.float32).view_as(layer.hebb)[row]
    torch.testing.assert_close(layer.hebb[row], 0.8 * start + 0.2 * h[4])


def test_state_dict_round_trip():
    layer = _layer(6, 4, eta=0.1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        h = torch.randn(10, 6, generator=gen)
        targets = torch.randint(0, 4, (10,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(layer.train()(h, targets=targets), targets).backward()
        opt.step()
    state = layer.state_dict()
    assert torch.equal(state["hebb"], layer.hebb) and torch.count_nonzero(state["hebb"]) > 0
    fresh = DHPSoftmax(6, 4)
    fresh.load_state_dict(state)
    x = torch.randn(7, 6)
    assert torch.equal(fresh.eval()(x), layer.eval()(x))
    assert torch.equal(fresh.hebb, layer.hebb)


# ------------------------------------------------------------------------------ bad input


def test_error_wrong_feature_size():
    layer = DHPSoftmax(5, 3)
    with pytest.raises(ValueError, match=r"h must have shape \[B, in_features\] = \[B, 5\], "
                                         r"got \[4, 6\]"):
        layer(torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        layer(torch.randn(5))


def test_error_targets_out_of_range():
    layer = DHPSoftmax(5, 3).train()
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\) .*-1 = no label.*"
                                         r"got values in \[0, 3\]"):
        layer(torch.randn(4, 5), targets=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"got values in \[-2, 1\]"):
        layer(torch.randn(2, 5), targets=torch.tensor([-2, 1]))
    with pytest.raises(ValueError, match=r"got values in \[0, 7\]"):
        layer(torch.randn(2, 5), targets=torch.tensor([7, 0], dtype=torch.int8))


def test_error_targets_shape_and_dtype():
    layer = DHPSoftmax(5, 3).train()
    with pytest.raises(ValueError, match=r"targets must have shape \[B\] = \[4\] .*got \[4, 1\]"):
        layer(torch.randn(4, 5), targets=torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"integer tensor .* got dtype torch.float32"):
        layer(torch.randn(4, 5), targets=torch.zeros(4))


def test_error_units_through_a_head():
    """The layer computes every unit; heads check ``units`` before the layer runs."""
    head = SingleHead(5, 3, DHPSoftmax).train()
    with pytest.raises(ValueError, match=r"units slice\(1, 4, None\) is not a contiguous range "
                                         r"inside 0..3"):
        head(torch.randn(2, 5), units=slice(1, 4), targets=torch.tensor([0, 1]))
    assert torch.count_nonzero(head.layer.hebb) == 0  # refused before any update
    with pytest.raises(ValueError, match="contiguous range"):
        head(torch.randn(2, 5), units=slice(0, 3, 2))
    with pytest.raises(TypeError):
        DHPSoftmax(5, 3)(torch.randn(2, 5), units=slice(0, 2))  # type: ignore[call-arg]
