"""BiC's bias-correction layer (Wu et al. 2019, "Large Scale Incremental Learning", Sec. 4.2).

A linear output layer followed by a per-unit affine map ``q_k = alpha_k o_k + beta_k`` (Eq. 5).
``alpha = 1``, ``beta = 0`` at start: the layer is then exactly its linear part. BiC fits one
pair ``(alpha, beta)`` per incremental step, shared by that step's new classes, in a second
stage with everything else frozen (:class:`~lifelong.terms.rehearsal.BiasCorrection`); the old
classes keep the correction of the step that introduced them. ``alpha`` and ``beta`` are
buffers: the training loop's optimiser never sees them, the model's ``state_dict`` saves them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BiasCorrectedLinear"]


class BiasCorrectedLinear(nn.Module):
    """``alpha * (W h + b) + beta``, per output unit (Wu et al. 2019, Eq. 5).

    Args:
        in_features: Feature size.
        out_features: Number of output units.

    Attributes:
        linear: The linear part (trained by the loop).
        alpha: Scale of every unit ``[out_features]`` (buffer, 1 at start).
        beta: Offset of every unit ``[out_features]`` (buffer, 0 at start).
    """

    alpha: Tensor
    beta: Tensor

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.register_buffer("alpha", torch.ones(out_features))
        self.register_buffer("beta", torch.zeros(out_features))

    def forward(self, h: Tensor) -> Tensor:
        return torch.addcmul(self.beta, self.linear(h), self.alpha)

    @torch.no_grad()
    def set_correction(self, rows: slice, alpha: float, beta: float) -> None:
        """Sets ``alpha``, ``beta`` of the units ``rows`` (one step's new classes)."""
        self.alpha[rows] = alpha
        self.beta[rows] = beta
