"""Slow reference estimators for tests (and ``benchmarks/fisher_speed.py``): Python loops over
samples with one ``autograd.grad`` per sample (and class), straight from the equations."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _call(model: nn.Module, x: Tensor, units: slice | None) -> Tensor:
    return model(x) if units is None else model(x, units=units)


def _per_sample(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor | None]],
                units: slice | None, params: dict[str, Tensor] | None,
                terms: str) -> dict[str, Tensor]:
    """``(1/N) sum_n sum_(w, l) w * phi(d l / d theta)`` over the per-sample scalars of ``terms``:
    ``fisher-true`` (``l = log p_c`` for every class, ``w = p_c``, square), ``fisher-empirical``
    (``l = log p_y``, square), ``mas`` (``l = ||z||^2``, absolute value)."""
    params = dict(params) if params is not None else {
        n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    modes = [(m, m.training) for m in model.modules()]
    buffers = [b.clone() for b in model.buffers()]
    model.eval()
    count = 0
    try:
        for x, y in batches:
            for i in range(x.shape[0]):
                z = _call(model, x[i:i + 1], units)[0]
                logp = F.log_softmax(z, dim=-1)
                if terms == "fisher-true":
                    pairs = [(float(logp[c].detach().exp()), logp[c]) for c in range(z.shape[0])]
                elif terms == "fisher-empirical":
                    assert y is not None
                    start = 0 if units is None or units.start is None else units.start
                    pairs = [(1.0, logp[int(y[i]) - start])]
                else:
                    pairs = [(1.0, z.square().sum())]
                for weight, scalar in pairs:
                    grads = torch.autograd.grad(scalar, list(params.values()), retain_graph=True,
                                                allow_unused=True)
                    for n, g in zip(params, grads):
                        if g is not None:
                            phi = g.abs() if terms == "mas" else g.square()
                            total[n] += weight * phi
                count += 1
    finally:
        for m, mode in modes:
            m.training = mode
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    return {n: t / count for n, t in total.items()}


def fisher_diagonal_loop(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor | None]],
                         units: slice | None = None, variant: str = "true",
                         params: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Fisher ``true`` (``sum_c p_c (d log p_c)^2``) or ``empirical`` (``(d log p_y)^2``) by a
    loop over samples (Kirkpatrick et al. 2017, Eq. 2 and Supp.)."""
    if variant not in ("true", "empirical"):
        raise ValueError(f"the loop reference supports 'true' and 'empirical', got {variant!r}")
    return _per_sample(model, batches, units, params, f"fisher-{variant}")


def mas_loop(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor | None]],
             units: slice | None = None, params: dict[str, Tensor] | None = None
             ) -> dict[str, Tensor]:
    """MAS (Aljundi et al. 2018, Eq. 4-5), ``(1/N) sum_n |d ||F(x_n)||^2 / d theta|``, by a loop."""
    return _per_sample(model, batches, units, params, "mas")
