"""The compiled SI step (lifelong.native) against the torch operations it replaces."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong import native
from lifelong.terms.importance import PathIntegral
from lifelong.terms.penalty import QuadraticPenalty

KERNEL = native.si_sgd_step_kernel()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason=f"no compiled kernel: {native._status}")


@needs_kernel
@pytest.mark.parametrize("has_g,has_k", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("lr", [0.01, 0.37])
def test_kernel_matches_the_torch_operations_bit_for_bit(has_g: bool, has_k: bool,
                                                         lr: float) -> None:
    gen = torch.Generator().manual_seed(1)
    n = 4099  # not a multiple of any vector width: the loop's tail is covered too
    theta, g, k, m, work = (torch.randn(n, generator=gen) for _ in range(5))
    k = k.abs() * 3.0
    km = k * m
    ref_theta, ref_work = theta.clone(), work.clone()
    native.si_sgd_step_reference(ref_theta, g.clone() if has_g else None, k if has_k else None,
                km if has_k else None, ref_work, lr)
    assert KERNEL is not None
    KERNEL(theta.data_ptr(), g.data_ptr() if has_g else None, k.data_ptr() if has_k else None,
           km.data_ptr() if has_k else None, work.data_ptr(), n, lr)
    assert torch.equal(theta, ref_theta) and torch.equal(work, ref_work)


def _penalised_run(native_steps: bool, lr_change: bool = False, steps: int = 10,
                   dtype: torch.dtype = torch.float32) -> tuple[PathIntegral, nn.Module, list[bool]]:
    """SGD steps of a small MLP (two learning-rate groups) with a quadratic penalty on the body
    and both heads, head ``b`` idle (a past task's head: no gradient of its own, only the
    penalty's), the path integral in the closed form; the step taken either as the loop does
    without the kernel (the penalty's ``accumulate_gradient``, ``optimizer.step()``, then
    ``accumulate``) or by :meth:`PathIntegral.sgd_step`."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"body": nn.Linear(5, 4), "a": nn.Linear(4, 3),
                           "b": nn.Linear(4, 3)}).to(dtype)
    params = dict(model.named_parameters())
    names = list(params)
    opt = torch.optim.SGD([{"params": [params[n] for n in names[:2]], "lr": 0.05},
                           {"params": [params[n] for n in names[2:]], "lr": 0.2}])
    penalised = ("body.weight", "body.bias", "a.weight", "b.weight")
    penalty = QuadraticPenalty(strength=1.5)
    penalty.consolidate({n: torch.rand_like(params[n]) for n in penalised},
                        {n: params[n].detach() + 0.3 * torch.randn_like(params[n])
                         for n in penalised})
    names_p = penalty.penalised_names()
    quadratic = dict(zip(names_p, zip(penalty._gradient_scales(), penalty._centers)))
    offsets_of = dict(zip(names_p, penalty._grad_offsets))  # as SIPenalty.on_task_start
    path = PathIntegral()
    path.begin(params, opt, quadratic=quadratic)
    offsets = [offsets_of.get(n) for n in path.names]
    x, y = torch.randn(16, 5, dtype=dtype), torch.randint(0, 3, (16,))
    taken = []
    for step in range(steps):
        if lr_change and step == steps // 2:
            opt.param_groups[0]["lr"] = 0.02
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model["a"](torch.relu(model["body"](x))), y).backward()
        done = native_steps and path.sgd_step(offsets)
        taken.append(done)
        if done:
            assert all(p.grad is None for p in model.parameters())
        else:
            penalty.accumulate_gradient(model)
        opt.step()
        path.accumulate()
    return path, model, taken


@needs_kernel
def test_path_integral_sgd_step_equals_the_torch_path_bit_for_bit() -> None:
    fused, model_f, taken = _penalised_run(native_steps=True)
    ref, model_r, _ = _penalised_run(native_steps=False)
    assert all(taken)
    for (n, p), q in zip(model_f.named_parameters(), model_r.parameters()):
        assert torch.equal(p, q), n
    omega_f, omega_r = fused.state_dict()["omega"], ref.state_dict()["omega"]
    for n in fused.names:
        assert torch.equal(omega_f[n], omega_r[n]), n
    assert float(omega_f["body.weight"].abs().sum()) > 1e-4
    assert float(omega_f["b.weight"].abs().sum()) > 0  # the idle head, moved by its penalty
    # across a learning-rate change the segment closes at theta itself instead of the
    # reconstructed theta + lr grad: the same sum up to float rounding
    fused, model_f, _ = _penalised_run(native_steps=True, lr_change=True)
    ref, model_r, _ = _penalised_run(native_steps=False, lr_change=True)
    for p, q in zip(model_f.parameters(), model_r.parameters()):
        assert torch.equal(p, q)
    for n in fused.names:
        torch.testing.assert_close(fused.importance(0.1)[n], ref.importance(0.1)[n],
                                   rtol=1e-5, atol=1e-7, msg=n)


def test_sgd_step_declines_what_it_cannot_take() -> None:
    # float64 parameters: nothing is changed and the caller takes the torch path
    _, _, taken = _penalised_run(native_steps=True, dtype=torch.float64, steps=2)
    assert taken == [False, False]
    # outside the closed form (no quadratic declared) there is no step to take
    w = nn.Parameter(torch.ones(3))
    path = PathIntegral()
    path.begin({"w": w}, torch.optim.SGD([w], lr=0.1))
    w.grad = torch.ones(3)
    assert not path.closed_form and path.sgd_step([None]) is False
    assert torch.equal(w, torch.ones(3)) and w.grad is not None
    path.begin({"w": w}, torch.optim.SGD([w], lr=0.1), quadratic={})
    with pytest.raises(ValueError, match=r"offsets needs one entry per tracked parameter \(1"):
        path.sgd_step([])


def test_build_says_why_the_kernel_is_unavailable(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("LIFELONG_NATIVE", "0")
    assert native._build() == (None, "disabled by LIFELONG_NATIVE")
    monkeypatch.delenv("LIFELONG_NATIVE")
    if KERNEL is None:
        pytest.skip(f"no compiled kernel here: {native._status}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bad = tmp_path / "bad-cc"
    bad.write_text("#!/bin/sh\necho 'no such flag' >&2\nexit 3\n")
    bad.chmod(0o755)
    monkeypatch.setenv("CC", str(bad))
    fn, why = native._build()
    assert fn is None and why == f"compiling with {bad} failed: exit 3: no such flag"
    monkeypatch.delenv("CC")
    fn, why = native._build()  # a fresh build into the (empty) cache directory
    built = list((tmp_path / "cache" / "lifelong" / "native").iterdir())
    assert fn is not None and why.startswith("compiled kernels loaded from")
    assert len(built) == 1 and built[0].name.startswith("si_sgd_step-")  # no build leftovers
    assert native._build()[1] == why  # found in the cache the second time


@needs_kernel
def test_a_kernel_that_rounds_otherwise_is_refused() -> None:
    def no_fma(theta: int, g: int | None, k: int | None, km: int | None, work: int, n: int,
               lr: float) -> None:
        """The same step in float32 numpy, every product rounded before it is added."""
        def view(addr: int) -> np.ndarray:
            return np.ctypeslib.as_array((ctypes.c_float * n).from_address(addr))

        t, a = view(theta), view(work)
        grad = view(g).copy() if g is not None else np.zeros(n, np.float32)
        if k is not None and km is not None:
            grad = grad + view(k) * t - view(km)
        lr32 = np.float32(lr)
        a += (lr32 * grad) * grad
        t -= lr32 * grad

    assert not native._rounds_like_torch(no_fma)
    assert not native._rounds_like_torch(lambda *args: None)  # a step never taken
