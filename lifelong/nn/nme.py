"""Nearest-mean-of-exemplars classification (Rebuffi et al. 2017, "iCaRL", Sec. 2.1, Alg. 1).

:class:`NMEClassifier` is a linear output layer for training (its logits feed the losses, the
teachers of distillation and the importance estimators) that answers *predictions* with the
similarity of the L2-normalised features to each class's prototype, the normalised mean of its
exemplars' normalised features: the arg max is the nearest mean (both have unit norm, so
``||phi - mu||^2 = 2 - 2 phi . mu``). It predicts that way only inside :func:`classifying`,
which :func:`~lifelong.train.loop.evaluate` enters, and only once prototypes are set (by the
exemplar memory's :class:`~lifelong.terms.rehearsal.UpdateMemory` term at each task's end);
units without a prototype score ``-inf``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NMEClassifier", "classifying"]


class NMEClassifier(nn.Linear):
    """``nn.Linear`` for training; nearest-mean-of-exemplars scores when classifying.

    Attributes:
        means: Prototype of every unit ``[out_features, in_features]`` (buffer, unit norm).
        has_mean: Which units have a prototype ``[out_features]`` (buffer).
        classifying: Set by :func:`classifying`; predictions are NME scores then.
    """

    means: Tensor
    has_mean: Tensor

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("means", torch.zeros(out_features, in_features))
        self.register_buffer("has_mean", torch.zeros(out_features, dtype=torch.bool))
        self.classifying = False

    def forward(self, h: Tensor) -> Tensor:
        if not self.classifying or not bool(self.has_mean.any()):
            return super().forward(h)
        scores = F.normalize(h, dim=1) @ self.means.T  # Alg. 1: y* = argmin_y ||phi(x) - mu_y||
        return scores.masked_fill(~self.has_mean, float("-inf"))

    @torch.no_grad()
    def set_means(self, rows: slice, means: Tensor, present: Tensor) -> None:
        """Sets the prototypes of the units ``rows``."""
        self.means[rows] = means.to(self.means)
        self.has_mean[rows] = present.to(self.has_mean.device)


@contextmanager
def classifying(model: nn.Module) -> Iterator[None]:
    """Marks every layer of ``model`` that has a ``classifying`` flag (an
    :class:`NMEClassifier`) as answering predictions, for the duration of the block."""
    layers = [m for m in model.modules() if hasattr(m, "classifying")]
    for m in layers:
        setattr(m, "classifying", True)  # noqa: B010 (a flag of any layer that has one)
    try:
        yield
    finally:
        for m in layers:
            setattr(m, "classifying", False)  # noqa: B010
