"""DHP-Softmax: an output layer with differentiable Hebbian plasticity.

Thangarasa, Miconi & Taylor, "Enabling Continual Learning with Differentiable Hebbian
Plasticity" (IJCNN 2020; ICML 2019 AMTL workshop version "Differentiable Hebbian Plasticity for
Continual Learning"), building on Miconi et al., "Differentiable plasticity" (ICML 2018).

Each connection of the softmax (output) layer has a slow weight ``w``, learned by gradient descent,
and a plastic (fast) part ``alpha * Hebb``: ``alpha`` (per connection) and the Hebbian rate ``eta``
(one scalar) are learned by gradient descent, while the Hebbian trace ``Hebb`` is written by a
Hebbian rule in the forward pass -- for every class ``c`` present in the mini-batch, its row moves
towards the mean penultimate activation of the class's samples. The trace is a compressed episodic
memory of each class's representation; it starts at zero before the first task and is never reset.

Logits (the paper's ``z``; written here with the weight stored as ``[out, in]``)::

    z = h (w + alpha * Hebb)^T + b

Hebbian update (paper, Algorithm 1 / Hebbian update rule), per class ``c`` in the batch::

    Hebb[c] <- (1 - eta) Hebb[c] + eta * mean(h[y == c])
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DHPSoftmax"]


class DHPSoftmax(nn.Module):
    """Softmax output layer with differentiable Hebbian plasticity (DHP-Softmax).

    Thangarasa, Miconi & Taylor 2020, "Enabling Continual Learning with Differentiable Hebbian
    Plasticity" (logits ``z_j = sum_i (theta_ij + alpha_ij Hebb_ij) h_i``; Hebbian update of
    Algorithm 1). A drop-in replacement for a network's last ``nn.Linear``: ``layer(h)`` returns
    the logits of every output unit; in training mode ``layer(h, targets=y)`` also applies the
    Hebbian update (:attr:`uses_targets` declares that the layer wants labels; heads pass them).

    Parameters and state:

    * ``weight`` ``[out_features, in_features]`` -- slow weights ``theta``, stored like
      ``nn.Linear.weight`` (the paper writes ``w`` as ``in x out``: this is its transpose, so code
      that handles output layers generically -- penalties, initialisation -- treats both layers
      alike). Initialised like ``nn.Linear`` (Kaiming-uniform with ``a = sqrt(5)``, i.e.
      ``U(-1/sqrt(in), 1/sqrt(in))``). The seed blog applies ``kaiming_uniform_`` to an
      ``in x out`` tensor, whose fan-in PyTorch reads as ``out_features``; we follow
      ``nn.Linear`` (fan-in = ``in_features``) instead.
    * ``bias`` ``[out_features]`` or ``None`` -- ``U(-1/sqrt(in), 1/sqrt(in))`` like
      ``nn.Linear``. The paper's logits have no bias; pass ``bias=False`` for its exact form.
    * ``alpha`` ``[out_features, in_features]`` -- plasticity coefficients, learned,
      initialised ``alpha_init_scale * U(0, 1)`` (paper/blog: ``0.01 * rand``).
    * ``eta`` (0-dim) -- the Hebbian rate, learned, shared by all connections.
    * ``hebb`` ``[out_features, in_features]`` -- the Hebbian trace, a persistent *buffer*: zeros
      at construction, saved in ``state_dict``, never reset between tasks (only by an explicit
      :meth:`reset_trace`). Being a buffer it is never a parameter, so optimisers and
      consolidation penalties (EWC, online EWC, SI, MAS) never see it;
      :meth:`plastic_parameter_names` names ``alpha`` and ``eta`` so that penalties can leave the
      plastic part unregularised, as the paper does (importance on the slow weights only).

    Choices where the paper leaves room (ours, documented):

    * ``eta_init = 0.001``: the seed blog's code leaves the initial Hebbian rate as a variable
      (``eta_rate``); 0.001 follows the paper's experimental setup as we read it. Configurable.
    * ``eta`` is used clamped to ``[0, 1]`` in the update. The paper states no constraint, but
      ``(1 - eta) Hebb + eta h_bar`` is a moving average (a bounded trace) only for ``eta`` in
      ``[0, 1]``. The clamp is a tensor operation applied on every training step (no host read
      of ``eta``, so no device synchronisation): inside ``[0, 1]`` it is the identity with an
      identical gradient, so it changes nothing in the paper's regime (``eta`` starts at 0.001
      and moves slowly under SGD); outside, the update uses the bound and ``eta`` receives no
      gradient. The parameter itself is never modified.
    * The trace stores the *raw* mean penultimate activation ``h_bar`` of each class (Algorithm 1:
      ``h_bar = sum(h[y == c]) / s``), not a normalised one.
    * As in Algorithm 1 (where ``h`` is not detached) the update is part of this step's graph:
      ``eta``, ``alpha`` *and* the backbone (through ``h_bar``) receive gradients through the
      updated trace. Between steps the stored trace is detached (a plain buffer value).
    * ``targets = -1`` marks a sample without a label for this layer (e.g. a sample of another
      task's head); it is left out of the update.

    Implementation: the update is vectorised with a one-hot matmul (on CPU at the SplitMNIST
    sizes it was faster than ``index_add`` + ``bincount``; ``benchmarks/dhp_step.py --updates``).
    With ``O[b, c] = [y_b = c]`` (zero rows for unlabelled samples; one ``index_select`` from a
    fixed table), ``A = O / max(n, 1)`` (``n_c`` the count of class ``c``; zero columns for
    absent classes) and ``R = h - O Hebb`` (row ``b``: ``h_b - Hebb[y_b]``)::

        Hebb' = Hebb + eta A^T R     row c: (1 - eta) Hebb_c + eta mean(h[y == c])  if n_c > 0,
                                            Hebb_c                                  otherwise

    Plain differentiable torch operations on the layer's own device, so autograd supplies every
    gradient and the layer runs wherever its tensors live. In eval mode the logits are linear in
    ``weight`` and ``alpha`` (:meth:`linear_parameters`), which importance estimators use.

    Args:
        in_features: Size of the penultimate representation ``h``.
        out_features: Number of output units (classes).
        bias: Learn an additive bias (``nn.Linear``'s default; the paper has none).
        eta_init: Initial Hebbian rate ``eta``.
        alpha_init_scale: ``alpha`` is initialised ``alpha_init_scale * U(0, 1)``.

    Raises:
        ValueError: Non-positive sizes, or ``eta_init`` outside ``[0, 1]``, or a negative
            ``alpha_init_scale``.
    """

    hebb: Tensor
    onehot_table: Tensor
    uses_targets: ClassVar[bool] = True
    """The training forward needs labels (``forward(h, targets=...)``): heads and the training
    loop pass them to layers that declare this."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 eta_init: float = 0.001, alpha_init_scale: float = 0.01):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"DHPSoftmax needs positive sizes, got in_features={in_features}, "
                             f"out_features={out_features}")
        if not 0.0 <= eta_init <= 1.0:
            raise ValueError(f"eta_init must lie in [0, 1] (the trace is a moving average), "
                             f"got {eta_init}")
        if alpha_init_scale < 0:
            raise ValueError(f"alpha_init_scale must be >= 0, got {alpha_init_scale}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.eta_init = float(eta_init)
        self.alpha_init_scale = float(alpha_init_scale)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.alpha = nn.Parameter(torch.empty(out_features, in_features))
        self.eta = nn.Parameter(torch.empty(()))
        self.register_buffer("hebb", torch.zeros(out_features, in_features))
        # one-hot rows looked up by target + 1: row 0 (target -1, no label) is zero, row c + 1 is
        # class c's unit vector (derived, not saved; follows the layer's dtype and device)
        table = torch.cat([torch.zeros(1, out_features), torch.eye(out_features)])
        self.register_buffer("onehot_table", table, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialises ``weight``/``bias`` like ``nn.Linear``, ``alpha`` and ``eta`` as the paper.

        Thangarasa et al. 2020: slow weights with Kaiming (He) uniform initialisation,
        ``alpha = 0.01 * U(0, 1)``, ``eta = eta_init``. The Hebbian trace is left as it is
        (use :meth:`reset_trace`).
        """
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.alpha.copy_(torch.rand_like(self.alpha).mul_(self.alpha_init_scale))
            self.eta.fill_(self.eta_init)

    def reset_trace(self) -> None:
        """Zeroes the Hebbian trace (the paper never does this between tasks; only on request)."""
        self.hebb = torch.zeros_like(self.hebb)

    def plastic_parameter_names(self) -> tuple[str, ...]:
        """Names of the plastic parameters, which consolidation penalties leave out.

        Thangarasa et al. 2020: synaptic consolidation (EWC, online EWC, SI, MAS) regularises
        the slow weights only. The trace ``hebb`` is a buffer, never a parameter, so optimisers
        and penalties never see it in the first place.
        """
        return ("alpha", "eta")

    def linear_parameters(self) -> dict[str, Tensor | None]:
        """The eval forward as a linear layer: ``z = h W_eff^T + b``, ``W_eff = sum_p p * c_p``.

        Thangarasa et al. 2020: ``W_eff = w + alpha * Hebb``, so ``{"weight": None}`` (multiplier
        1) and ``{"alpha": Hebb}``; ``eta`` does not enter the eval forward. Importance
        estimators (:mod:`lifelong.terms.importance`) use this protocol to treat the layer like
        an ``nn.Linear`` without knowing its class.
        """
        return {"weight": None, "alpha": self.hebb}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, eta_init={self.eta_init}, "
                f"alpha_init_scale={self.alpha_init_scale}")

    # ------------------------------------------------------------------------------ forward

    def _check_targets(self, targets: Tensor, batch: int) -> None:
        """Type, dtype and shape of ``targets`` (host-side attributes only, no tensor read)."""
        if not isinstance(targets, Tensor):
            raise ValueError(f"targets must be a tensor of output-unit indices, "
                             f"got {type(targets).__name__}")
        dtype = targets.dtype
        if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            raise ValueError(f"targets must be an integer tensor (torch.long) of output-unit "
                             f"indices, got dtype {targets.dtype}")
        if targets.shape != (batch,):
            raise ValueError(f"targets must have shape [B] = [{batch}] (one output-unit index per "
                             f"row of h), got {list(targets.shape)}")

    def _onehot(self, targets: Tensor) -> Tensor:
        """``O[b, c] = [targets_b = c]``, a zero row for ``targets_b = -1``.

        One lookup in :attr:`onehot_table`; ``index_select`` itself rejects an index outside the
        table (on the CPU with an exception, turned into a ``ValueError`` here; on an accelerator
        with torch's device-side check), so the range check costs no host read unless it fails.
        Integer types other than int32/int64 (which ``index_select`` refuses) are converted.
        """
        try:
            return self.onehot_table.index_select(0, targets + 1)
        except (IndexError, RuntimeError):
            lo, hi = (int(v) for v in torch.aminmax(targets))
            if lo < -1 or hi >= self.out_features:
                raise ValueError(f"targets must lie in [0, {self.out_features}) (this layer's "
                                 f"own output units; -1 = no label), got values in "
                                 f"[{lo}, {hi}]") from None
            if targets.dtype in (torch.int32, torch.int64):
                raise  # not a range problem (e.g. another device): torch's own message
            return self.onehot_table.index_select(0, targets.long() + 1)

    def forward(self, h: Tensor, targets: Tensor | None = None) -> Tensor:
        """Logits ``z = h (w + alpha * Hebb)^T + b`` of every output unit.

        Thangarasa et al. 2020, Algorithm 1. In training mode with ``targets``, the trace of
        every class present in the batch first becomes
        ``(1 - eta) Hebb[c] + eta * mean(h[targets == c])`` (one-hot form: class docstring), and
        the logits use this updated trace, inside the autograd graph (so ``eta``, ``alpha`` and
        ``h`` get its gradient); the buffer then holds the updated value, detached. Classes
        without samples keep their trace. In eval mode, or without ``targets``, the current
        trace is used and never changed.

        Args:
            h: Penultimate activations ``[B, in_features]``.
            targets: Output-unit indices ``[B]`` in ``[0, out_features)`` (this layer's own
                units), or -1 for a sample with no label here.

        Returns:
            Logits ``[B, out_features]``.

        Raises:
            ValueError: ``h`` not ``[B, in_features]``; ``targets`` not an integer ``[B]`` tensor
                in ``[-1, out_features)``.
        """
        if h.dim() != 2 or h.shape[1] != self.in_features:
            raise ValueError(f"h must have shape [B, in_features] = [B, {self.in_features}], "
                             f"got {list(h.shape)}")
        hebb = self.hebb
        if targets is not None and self.training:
            self._check_targets(targets, h.shape[0])
            onehot = self._onehot(targets)
            assign = onehot / onehot.sum(0).clamp_(min=1.0)  # A = O / max(n, 1)
            resid = torch.addmm(h, onehot, hebb, alpha=-1.0)  # R = h - O Hebb
            eta = self.eta.clamp(0.0, 1.0)  # identity, same gradient, inside [0, 1]
            # Algorithm 1: Hebb_c <- (1 - eta) Hebb_c + eta h_bar_c for every class present
            hebb = torch.addcmul(hebb, assign.t().mm(resid), eta)
            self.hebb = hebb.detach()
        return F.linear(h, torch.addcmul(self.weight, self.alpha, hebb), self.bias)
