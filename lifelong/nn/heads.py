"""Output heads over a :class:`~lifelong.data.layout.Layout`'s units.

* :class:`MultiHead`: one output layer per task (task-IL's "multi-headed" network).
* :class:`SingleHead`: one output layer over all units; restricted to the units seen so far it is
  class-IL's growing head (rows of a linear layer are independent, so computing only the active
  rows is the same as growing the layer when a task arrives).

Both take ``units`` (the contiguous range of output units wanted) and compute only those logits;
``targets`` (output-unit indices, -1 for none) are passed to plastic output layers such as
:class:`~lifelong.nn.dhp.DHPSoftmax`, which need labels for their Hebbian update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LayerFactory = Callable[[int, int], nn.Module]


def linear_layer(in_features: int, out_features: int) -> nn.Module:
    """The default output layer: ``nn.Linear``."""
    return nn.Linear(in_features, out_features)


def _apply(layer: nn.Module, h: Tensor, targets: Tensor | None, lo: int, hi: int) -> Tensor:
    """Logits of rows ``lo:hi`` of ``layer``; targets are in the layer's own unit indices."""
    if isinstance(layer, nn.Linear):
        w, b = layer.weight, layer.bias
        if lo != 0 or hi != w.shape[0]:
            w = w[lo:hi]
            b = None if b is None else b[lo:hi]
        return F.linear(h, w, b)
    return layer(h, targets=targets, units=slice(lo, hi))


def _normalise(units: slice | None, n: int) -> tuple[int, int]:
    if units is None:
        return 0, n
    lo = 0 if units.start is None else units.start
    hi = n if units.stop is None else units.stop
    if not 0 <= lo < hi <= n or units.step not in (None, 1):
        raise ValueError(f"units {units} is not a contiguous range inside 0..{n}")
    return lo, hi


class SingleHead(nn.Module):
    """One output layer over all ``num_units`` units.

    Args:
        in_features: Feature size.
        num_units: Total number of output units.
        layer: Factory of the output layer (``nn.Linear`` by default, or ``DHPSoftmax``).
    """

    def __init__(self, in_features: int, num_units: int, layer: LayerFactory = linear_layer):
        super().__init__()
        self.num_units = num_units
        self.layer = layer(in_features, num_units)

    def forward(self, h: Tensor, targets: Tensor | None = None, units: slice | None = None) -> Tensor:
        lo, hi = _normalise(units, self.num_units)
        return _apply(self.layer, h, targets, lo, hi)

    def task_modules(self, t: int) -> list[nn.Module]:
        """A single head is shared by every task."""
        return [self.layer]


class MultiHead(nn.Module):
    """One output layer per task; their outputs are concatenated in task order.

    Args:
        in_features: Feature size.
        sizes: Number of units of each task's head.
        layer: Factory of each head's output layer.
    """

    def __init__(self, in_features: int, sizes: Sequence[int], layer: LayerFactory = linear_layer):
        super().__init__()
        self.sizes = tuple(int(s) for s in sizes)
        self.offsets = tuple(sum(self.sizes[:t]) for t in range(len(self.sizes)))
        self.num_units = sum(self.sizes)
        self.heads = nn.ModuleList(layer(in_features, s) for s in self.sizes)

    def forward(self, h: Tensor, targets: Tensor | None = None, units: slice | None = None) -> Tensor:
        lo, hi = _normalise(units, self.num_units)
        outs = []
        for t, (off, size) in enumerate(zip(self.offsets, self.sizes)):
            a, b = max(lo, off), min(hi, off + size)
            if a >= b:
                continue
            local = None
            if targets is not None and not isinstance(self.heads[t], nn.Linear):
                inside = (targets >= off) & (targets < off + size)
                local = torch.where(inside, targets - off, torch.full_like(targets, -1))
            outs.append(_apply(self.heads[t], h, local, a - off, b - off))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def task_modules(self, t: int) -> list[nn.Module]:
        """The head of task ``t``."""
        return [self.heads[t]]
