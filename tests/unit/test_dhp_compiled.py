"""DHP-Softmax's compiled training step (lifelong.native.dhp_train_head_op) against the layer's
torch operations (lifelong.nn.dhp.torch_train_head): bit for bit, when it is used, and how it
fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.parametrize
from torch import Tensor, nn

from lifelong import native
from lifelong.nn import dhp
from lifelong.nn.dhp import DHPSoftmax, torch_train_head

OP = native.dhp_train_head_op()
needs_op = pytest.mark.skipif(OP is None, reason=f"no compiled DHP step: {native._dhp_status}")


def _mlp(seed: int, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return nn.ModuleDict({"body": nn.Sequential(nn.Linear(20, 16), nn.ReLU()),
                          "head": DHPSoftmax(16, 6, bias=bias, eta_init=0.05)})


def _train(compiled: bool, monkeypatch: pytest.MonkeyPatch, units: slice | None = None,
           bias: bool = True, steps: int = 12) -> tuple[nn.Module, list[Tensor]]:
    """``steps`` SGD steps of a small MLP with a DHP head; the trace grows from zero."""
    with monkeypatch.context() as m:
        if not compiled:
            m.setattr(dhp, "dhp_train_head_op", lambda: None)
        model = _mlp(0, bias)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(1)
        logits = []
        for _ in range(steps):
            x = torch.randn(32, 20, generator=gen)
            y = torch.randint(-1, 5, (32,), generator=gen)  # -1 unlabelled, class 5 absent
            opt.zero_grad(set_to_none=True)
            z = model["head"](model["body"](x), targets=y, units=units)
            lo = 0 if units is None else units.start
            loss = F.cross_entropy(z, (y - lo).clamp(0, z.shape[1] - 1))
            loss.backward()
            opt.step()
            logits.append(z.detach())
    return model, logits


def _count_compiled_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Makes the layer use a wrapper of the operator that appends to the returned list once per
    step the operator computed (a step it refuses is not counted)."""
    calls: list[int] = []

    def op(*args: Any) -> tuple[Tensor, Tensor]:
        out = OP(*args)
        calls.append(1)
        return out

    monkeypatch.setattr(dhp, "dhp_train_head_op", lambda: op)
    return calls


@needs_op
@pytest.mark.parametrize("units,bias", [(None, True), (None, False), (slice(1, 4), True)])
def test_training_is_bit_identical_to_the_torch_path(units: slice | None, bias: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_compiled_steps(monkeypatch)
    fast, z_fast = _train(True, monkeypatch, units, bias)
    ref, z_ref = _train(False, monkeypatch, units, bias)
    assert len(calls) == 12  # every step went through the compiled operator
    assert all(torch.equal(a, b) for a, b in zip(z_fast, z_ref))
    for (name, a), b in zip(fast.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.count_nonzero(fast["head"].hebb) > 0
    assert fast["head"].hebb.grad_fn is None and not fast["head"].hebb.requires_grad


@needs_op
def test_operator_equals_torch_train_head_for_every_output() -> None:
    gen = torch.Generator().manual_seed(3)
    h, weight, alpha, hebb = (torch.randn(n, 33, generator=gen) for n in (40, 7, 7, 7))
    targets = torch.randint(-1, 7, (40,), generator=gen)
    eta, bias = torch.tensor(0.3), torch.randn(7, generator=gen)
    upstream = torch.randn(40, 5, generator=gen)
    out = []
    for fn in (OP, torch_train_head):
        leaves = [t.clone().requires_grad_() for t in (h, weight, alpha, eta, bias)]
        z, new_hebb = fn(leaves[0], targets, leaves[1], leaves[2], hebb, leaves[3], leaves[4],
                         2, 7)
        out.append([z, new_hebb, *torch.autograd.grad(z, leaves, upstream)])
    for a, b in zip(*out):
        assert torch.equal(a, b)
    assert native._dhp_matches_torch(torch_train_head)


def test_a_step_that_rounds_otherwise_is_refused() -> None:
    def one_ulp_off(*args: Any) -> tuple[Tensor, Tensor]:
        z, new_hebb = torch_train_head(*args)
        return z, torch.nextafter(new_hebb, torch.full_like(new_hebb, float("inf")))

    def no_fma(h: Tensor, targets: Tensor, weight: Tensor, alpha: Tensor, hebb: Tensor,
               eta: Tensor, bias: Tensor | None, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """The same update with every product rounded before it is added."""
        eye = torch.eye(hebb.shape[0])
        onehot = torch.cat([eye.new_zeros(1, eye.shape[0]), eye])[targets + 1]
        step = (onehot / onehot.sum(0).clamp(min=1.0)).t().mm(h - onehot.mm(hebb))
        new_hebb = hebb + step * eta
        plastic = weight[lo:hi] + alpha[lo:hi] * new_hebb[lo:hi]
        return F.linear(h, plastic, None if bias is None else bias[lo:hi]), new_hebb

    assert not native._dhp_matches_torch(one_ulp_off)
    assert not native._dhp_matches_torch(no_fma)


@needs_op
def test_layer_uses_the_operator_only_where_it_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_compiled_steps(monkeypatch)
    layer = DHPSoftmax(8, 3).train()
    h, y = torch.randn(5, 8), torch.tensor([0, 2, 2, -1, 1])
    layer(h, targets=y)
    assert len(calls) == 1
    layer(h, targets=y.int())  # int32 targets: torch path
    layer.eval()(h, targets=y)  # eval: no update at all
    layer.train()(h)  # no targets: no update
    layer.double()(h.double(), targets=y)  # float64: torch path
    layer.float()
    with torch.no_grad():
        layer.eta.fill_(1.5)  # outside [0, 1]: the operator refuses, the torch path clamps
    layer(h, targets=y)
    assert len(calls) == 1
    one = DHPSoftmax(1, 3).train()  # one input feature: torch path
    one(torch.randn(5, 1), targets=y)
    with torch.no_grad():
        layer.eta.fill_(0.5)
    monkeypatch.setattr(dhp, "_is_compiling", lambda: True)  # inside torch.compile's tracing
    layer(h, targets=y)
    assert len(calls) == 1
    monkeypatch.setattr(dhp, "_is_compiling", lambda: False)
    layer(h, targets=y)
    assert len(calls) == 2


@needs_op
def test_out_of_range_targets_still_get_the_layers_message() -> None:
    layer = DHPSoftmax(8, 3).train()
    before = layer.hebb.clone()
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\).*got values in \[-1, 3\]"):
        layer(torch.randn(4, 8), targets=torch.tensor([0, 3, -1, 1]))
    assert torch.equal(layer.hebb, before)  # nothing was written


@needs_op
def test_no_grad_and_frozen_inputs_match_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    h, y = torch.randn(6, 8), torch.tensor([0, 1, 1, 2, -1, 0])
    results = []
    for compiled in (True, False):
        with monkeypatch.context() as m:
            if not compiled:
                m.setattr(dhp, "dhp_train_head_op", lambda: None)
            torch.manual_seed(5)
            layer = DHPSoftmax(8, 3, eta_init=0.2).train()
            with torch.no_grad():  # a training-mode forward without a graph still writes
                layer(h, targets=y)
            layer.weight.requires_grad_(False)  # a frozen slow weight, h without a gradient
            z = layer(h, targets=y)
            z.square().sum().backward()
            results.append([z.detach(), layer.hebb, layer.alpha.grad, layer.eta.grad,
                            layer.bias.grad])
            assert layer.weight.grad is None
    for a, b in zip(*results):
        assert torch.equal(a, b)


@needs_op
def test_second_order_gradients_are_refused_with_a_way_out() -> None:
    layer = DHPSoftmax(8, 3).train()
    z = layer(torch.randn(4, 8), targets=torch.tensor([0, 1, 2, 1]))
    with pytest.raises(RuntimeError, match="first-order gradients only.*LIFELONG_NATIVE=0"):
        torch.autograd.grad(z.sum(), layer.alpha, create_graph=True)


def test_build_says_why_the_operator_is_unavailable(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("LIFELONG_NATIVE", "off")
    assert native._build_dhp() == (None, "disabled by LIFELONG_NATIVE")
    monkeypatch.delenv("LIFELONG_NATIVE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bad = tmp_path / "bad-cxx"
    bad.write_text("#!/bin/sh\necho 'no such header' >&2\nexit 4\n")
    bad.chmod(0o755)
    monkeypatch.setenv("CXX", str(bad))
    failed = f"compiling with {bad} failed: exit 4: no such header"
    assert native._compile_dhp("AVX2") == (None, failed)
    assert list((tmp_path / "cache" / "lifelong" / "native").iterdir()) == []  # no leftovers
    monkeypatch.delenv("CXX")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    missing = "no C++ compiler found (set CXX, or install g++/clang++)"
    assert native._compile_dhp("AVX2") == (None, missing)


class _Doubled(nn.Module):
    def forward(self, w: Tensor) -> Tensor:
        return 2.0 * w


def test_parametrized_weights_are_read_through_the_module() -> None:
    """A parametrization replaces ``weight`` in the parameter table by a computed property; the
    training forward still sees the computed weight (compiled path or not)."""
    torch.manual_seed(0)
    plain = DHPSoftmax(8, 3).train()
    doubled = DHPSoftmax(8, 3).train()
    doubled.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.weight.mul_(2.0)
    torch.nn.utils.parametrize.register_parametrization(doubled, "weight", _Doubled())
    h, y = torch.randn(6, 8), torch.tensor([0, 1, 1, 2, -1, 0])
    torch.testing.assert_close(doubled(h, targets=y), plain(h, targets=y))
    torch.testing.assert_close(doubled.hebb, plain.hebb)
