"""Loss terms: the pieces a method is made of (DESIGN.md, "Terms, data regimes and the loop").

A term contributes a loss and may react at five positions of the training loop
(:func:`lifelong.train.loop.fit`), and nowhere else:

1. :meth:`Term.on_task_start` -- before the first step of a task;
2. :meth:`Term.loss` -- its loss on the step's batch;
3. :meth:`Term.on_after_backward` -- after the data losses' backward;
4. :meth:`Term.on_after_step` -- after ``optimizer.step()``;
5. :meth:`Term.on_task_end` -- after the last step of a task, before evaluation.

Terms never step the optimiser, never set or clear ``.grad`` and never look at which other terms
are in the run. One declared property fixes the order: a term whose loss depends on the
parameters only (a quadratic penalty) sets ``penalty = True``, and the loop back-propagates it
*after* hook 3, so that hook sees the gradient of the data losses alone (SI's path integral
needs exactly that gradient, Zenke et al. 2017, Eq. 3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from lifelong.train.loop import TrainContext


@dataclass
class Batch:
    """One training mini-batch as the terms see it.

    Attributes:
        x: Inputs (the task's permutation already applied), on the run's device.
        y: Dataset labels.
        targets: Output-unit targets (``layout.targets``), global unit indices.
        task_ids: Task of every sample ``[B]``.
        units: The contiguous range of output units whose logits were computed.
        logits: Model output for ``units``, ``[B, len(units)]``.
        mask: Optional ``[B, len(units)]`` bool mask of the units each sample may use (task-IL
            batches that mix tasks); ``None`` when all are allowed.
        forward: ``forward(units) -> logits`` of this batch's inputs for other output units
            (e.g. LwF's old heads); see :meth:`logits_for`.
        span: The output units the loop's forward computed, ``units`` and the units before
            them (``slice(0, units.stop)``); ``span_logits`` are their logits, of which
            ``logits`` are the last columns. ``None``: only ``units`` were computed.
        span_logits: Logits of ``span`` ``[B, len(span)]``.
    """

    x: Tensor
    y: Tensor
    targets: Tensor
    task_ids: Tensor
    units: slice
    logits: Tensor
    mask: Tensor | None = None
    forward: Callable[[slice], Tensor] | None = None
    span: slice | None = None
    span_logits: Tensor | None = None

    def masked_logits(self) -> Tensor:
        """Logits with disallowed units set to -inf."""
        if self.mask is None:
            return self.logits
        return self.logits.masked_fill(~self.mask, float("-inf"))

    def local_targets(self) -> Tensor:
        """Targets relative to ``units.start`` (column indices of ``logits``)."""
        start = self.units.start or 0
        return self.targets - start if start else self.targets

    def logits_for(self, units: slice) -> Tensor:
        """Logits of this batch's inputs for the output units ``units`` (differentiable).

        The batch's own ``units`` return :attr:`logits`, and a range inside :attr:`span` the
        columns of :attr:`span_logits` (the same forward pass, so the same graph: in task-IL the
        loop computes the old heads with the new one and LwF reads them at no extra cost). Any
        other range runs the model's forward again on :attr:`x` without labels (a plastic
        layer's trace is not written).

        Raises:
            ValueError: The batch was built without a ``forward``.
        """
        if units == self.units:
            return self.logits
        if self.span is not None and self.span_logits is not None:
            lo, hi = self.span.start or 0, self.span.stop
            a = lo if units.start is None else units.start
            b = hi if units.stop is None else units.stop
            if lo <= a < b <= hi and units.step in (None, 1):
                return self.span_logits[:, a - lo:b - lo]
        if self.forward is None:
            raise ValueError("this batch has no forward(); build it with Batch(..., forward=...) "
                             "to ask for other output units")
        return self.forward(units)


class Term:
    """Base class of loss terms; every hook is optional.

    Attributes:
        name: Name under which the loop logs the term's loss.
        penalty: ``True`` if the loss depends on the parameters only: the loop back-propagates
            it after :meth:`on_after_backward` (module docstring).
    """

    name: str = "term"
    penalty: bool = False

    def on_task_start(self, ctx: TrainContext) -> None:
        """Called before the first step of a task (after the optimiser is built)."""

    def loss(self, ctx: TrainContext, batch: Batch) -> Tensor | None:
        """The term's loss on ``batch`` (``None``: nothing this step)."""
        return None

    def on_after_backward(self, ctx: TrainContext) -> None:
        """Called after the data losses' backward, before penalties are back-propagated."""

    def on_after_step(self, ctx: TrainContext) -> None:
        """Called after ``optimizer.step()``."""

    def on_task_end(self, ctx: TrainContext) -> None:
        """Called after the last step of a task, before evaluation."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the term exactly (tensors, counters)."""
        return {}

    def report(self) -> dict[str, Any]:
        """What the term learned that a run's result records (JSON values; e.g. BiC's
        ``alpha``, ``beta`` per step); empty for most terms."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        if state:
            raise ValueError(f"term {self.name!r} has no state but was given keys {sorted(state)}")

    def to(self, device: torch.device | str) -> Term:
        """Moves every tensor of the term's state to ``device`` (through :meth:`state_dict`,
        so a term follows ``.to()`` without code of its own). Returns the term."""
        state = self.state_dict()
        if state:
            self.load_state_dict(_to_device(state, torch.device(device)))
        return self


def _to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` (nested dicts, lists and tuples of tensors) with every tensor on ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


class CrossEntropy(Term):
    """Cross-entropy on the batch's active units (the task's head in task-IL, the units seen so
    far in class-IL, all units in domain-IL)."""

    name = "ce"

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def loss(self, ctx: TrainContext, batch: Batch) -> Tensor:
        ce = F.cross_entropy(batch.masked_logits(), batch.local_targets())
        return ce if self.weight == 1.0 else self.weight * ce
