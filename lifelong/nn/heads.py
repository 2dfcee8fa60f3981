"""Output heads over a :class:`~lifelong.data.layout.Layout`'s units.

* :class:`MultiHead`: one output layer per task (task-IL's "multi-headed" network).
* :class:`SingleHead`: one output layer over all units; restricted to the units seen so far it is
  class-IL's growing head (rows of a linear layer are independent, so using only the active
  rows is the same as growing the layer when a task arrives).

Both call their output layer modules (so forward hooks on those layers see every head) and take
the *columns* of their logits in ``units`` (the contiguous range of output units wanted): the
rows of units outside the range get no gradient. A multi-head calls only the heads that overlap
``units``. ``targets`` (output-unit indices, -1 for none) go to layers that declare
``uses_targets = True`` (e.g. :class:`~lifelong.nn.dhp.DHPSoftmax`, whose Hebbian update needs
labels), in each layer's own unit indices. ``output_rows(units)`` names the layers and rows that
compute ``units`` (local MAS uses it to leave the other rows out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

LayerFactory = Callable[[int, int], nn.Module]


def linear_layer(in_features: int, out_features: int) -> nn.Module:
    """The default output layer: ``nn.Linear``."""
    return nn.Linear(in_features, out_features)


def _call(layer: nn.Module, h: Tensor, targets: Tensor | None) -> Tensor:
    """All logits of ``layer``; targets only to a layer that declares ``uses_targets``."""
    if targets is not None and getattr(layer, "uses_targets", False):
        return layer(h, targets=targets)
    return layer(h)


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

    def forward(self, h: Tensor, units: slice | None = None,
                targets: Tensor | None = None) -> Tensor:
        """Logits ``[B, len(units)]``: the layer's output, columns ``units``."""
        lo, hi = _normalise(units, self.num_units)
        z = _call(self.layer, h, targets)
        return z if (lo, hi) == (0, self.num_units) else z[:, lo:hi]

    def output_rows(self, units: slice | None = None) -> list[tuple[nn.Module, slice]]:
        """The layer and its rows that compute ``units`` (importance estimators use this)."""
        lo, hi = _normalise(units, self.num_units)
        return [(self.layer, slice(lo, hi))]

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

    def _parts(self, units: slice | None) -> list[tuple[int, int, int]]:
        """``(task, first row, one past the last row)`` of each head overlapping ``units``."""
        lo, hi = _normalise(units, self.num_units)
        return [(t, max(lo, off) - off, min(hi, off + size) - off)
                for t, (off, size) in enumerate(zip(self.offsets, self.sizes))
                if max(lo, off) < min(hi, off + size)]

    def forward(self, h: Tensor, units: slice | None = None,
                targets: Tensor | None = None) -> Tensor:
        """Logits ``[B, len(units)]``: each overlapping head's output, its columns in
        ``units``, concatenated in task order (heads outside ``units`` are not called)."""
        outs = []
        for t, a, b in self._parts(units):
            local = None
            if targets is not None and getattr(self.heads[t], "uses_targets", False):
                off, size = self.offsets[t], self.sizes[t]  # -1: not one of this head's units
                inside = (targets >= off) & (targets < off + size)
                local = torch.where(inside, targets - off, torch.full_like(targets, -1))
            z = _call(self.heads[t], h, local)
            outs.append(z if (a, b) == (0, self.sizes[t]) else z[:, a:b])
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def output_rows(self, units: slice | None = None) -> list[tuple[nn.Module, slice]]:
        """The heads and their rows that compute ``units`` (importance estimators use this)."""
        return [(self.heads[t], slice(a, b)) for t, a, b in self._parts(units)]

    def task_modules(self, t: int) -> list[nn.Module]:
        """The head of task ``t``."""
        return [self.heads[t]]
