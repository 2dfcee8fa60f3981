"""Loss terms: the pieces a method is made of (DESIGN.md, "Terms and the loop").

A term can contribute a loss and react at five positions of the training loop
(:func:`lifelong.train.loop.fit`): task start, loss, after backward, after step, task end.
Terms never call ``optimizer.step()`` and never overwrite ``.grad`` (with the two exceptions
below, both for the plain SGD step).

A term whose loss depends on the parameters only (a quadratic penalty) sets ``penalty = True``:
the loop back-propagates it *after* ``on_after_backward``, so that hooks there see the gradient
of the data losses alone (SI's path integral needs the task-loss gradient, Zenke et al. 2017).

A penalty that knows its gradient in closed form can also set ``direct_gradient = True`` and
implement :meth:`Term.add_gradient`: the loop then calls it every step instead of
back-propagating :meth:`Term.loss`, and evaluates :meth:`Term.loss` (under ``no_grad``) only on
the steps it logs. For a quadratic penalty over every weight of a small network this halves the
cost of a step's penalty (its value costs as much memory traffic as its gradient).

When the optimiser takes the plain SGD step (``torch.optim.SGD`` without momentum, weight decay
or ``maximize``) the loop sets ``ctx.penalty_steps`` and such a penalty may instead move the
parameters by its own SGD step, ``theta <- theta - lr * grad(penalty)``, right before the
optimiser's step: exactly the update the optimiser would make with the gradient added to
``.grad``, without writing the gradient. The loop does not allow it when a term declares
``observes_gradient_steps`` (it reads each step from ``.grad``, as SI's path integral does).

A term that is the run's only gradient writer (``ctx.gradient_terms``) and only observer
(``ctx.gradient_observers``) may, under the same plain SGD step, take the whole step of the
parameters it tracks in :meth:`Term.add_gradient` -- data gradient and its own -- and set their
``.grad`` to ``None`` so that ``optimizer.step()`` skips them. SI does so with a compiled
one-pass kernel (:meth:`lifelong.terms.importance.PathIntegral.sgd_step`), bit-identical to
the gradient, the optimiser's step and the path integral done with torch operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from lifelong.train.loop import TrainContext


@dataclass
class Batch:
    """One training mini-batch as the terms see it.

    Attributes:
        x: Inputs (the task's permutation already applied).
        y: Dataset labels.
        targets: Output-unit targets (``layout.targets``), global unit indices.
        task_ids: Task of every sample ``[B]``.
        units: The contiguous range of output units whose logits were computed.
        logits: Model output for ``units``, ``[B, len(units)]``.
        mask: Optional ``[B, len(units)]`` bool mask of the units each sample may use (task-IL
            batches that mix tasks); ``None`` when all are allowed.
    """

    x: Tensor
    y: Tensor
    targets: Tensor
    task_ids: Tensor
    units: slice
    logits: Tensor
    mask: Tensor | None = None

    def masked_logits(self) -> Tensor:
        """Logits with disallowed units set to -inf."""
        if self.mask is None:
            return self.logits
        return self.logits.masked_fill(~self.mask, float("-inf"))

    def local_targets(self) -> Tensor:
        """Targets relative to ``units.start`` (column indices of ``logits``)."""
        start = self.units.start or 0
        return self.targets - start if start else self.targets


class Term:
    """Base class of loss terms; every hook is optional.

    Attributes:
        name: Name under which the loop logs the term's loss.
        penalty: ``True`` if the loss depends on parameters only (see module docstring).
        direct_gradient: ``True`` if the term adds its gradient itself (:meth:`add_gradient`);
            only for penalties.
        observes_gradient_steps: ``True`` if the term infers the optimiser's step from
            ``.grad`` (SI's plain-SGD path integral): the loop then keeps every penalty's
            gradient in ``.grad`` (``ctx.penalty_steps`` is ``False``).
    """

    name: str = "term"
    penalty: bool = False
    direct_gradient: bool = False
    observes_gradient_steps: bool = False

    def on_task_start(self, ctx: "TrainContext") -> None:
        """Called before the first step of a task (after the optimiser is built)."""

    def loss(self, ctx: "TrainContext", batch: Batch) -> Tensor | None:
        """The term's loss on ``batch`` (``None``: nothing this step)."""
        return None

    def on_after_backward(self, ctx: "TrainContext") -> None:
        """Called after the data losses' backward, before penalties are added."""

    def add_gradient(self, ctx: "TrainContext") -> None:
        """Adds the gradient of :meth:`loss` to the parameters' ``.grad`` (accumulating, as a
        backward pass does), or, when ``ctx.penalty_steps`` is set, may take its own plain-SGD
        step instead (module docstring). Called every step, after :meth:`on_after_backward` and
        right before ``optimizer.step()``, for terms with ``penalty = direct_gradient = True``
        only."""
        raise NotImplementedError(f"term {self.name!r} sets direct_gradient but does not "
                                  "implement add_gradient()")

    def on_after_step(self, ctx: "TrainContext") -> None:
        """Called after ``optimizer.step()``."""

    def on_task_end(self, ctx: "TrainContext") -> None:
        """Called after the last step of a task, before evaluation."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the term exactly (tensors, counters)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        if state:
            raise ValueError(f"term {self.name!r} has no state but was given keys {sorted(state)}")


class CrossEntropy(Term):
    """Cross-entropy on the batch's active units (the task's head in task-IL, the units seen so
    far in class-IL, all units in domain-IL)."""

    name = "ce"

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def loss(self, ctx: "TrainContext", batch: Batch) -> Tensor:
        ce = F.cross_entropy(batch.masked_logits(), batch.local_targets())
        return ce if self.weight == 1.0 else self.weight * ce
