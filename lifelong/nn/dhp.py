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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.native import dhp_train_head_op, float32_cpu

__all__ = ["DHPSoftmax", "torch_train_head"]

# whether torch.compile is tracing (torch >= 2.3; earlier versions have no such check)
_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)


class DHPSoftmax(nn.Module):
    """Softmax output layer with differentiable Hebbian plasticity (DHP-Softmax).

    Thangarasa, Miconi & Taylor 2020, "Enabling Continual Learning with Differentiable Hebbian
    Plasticity" (logits ``z_j = sum_i (theta_ij + alpha_ij Hebb_ij) h_i``; Hebbian update of
    Algorithm 1). A drop-in replacement for a network's last ``nn.Linear``: ``layer(h)``
    returns the logits, with two optional keywords -- ``targets`` (labels for the Hebbian update)
    and ``units`` (compute only a contiguous range of output units).

    Parameters and state:

    * ``weight`` ``[out_features, in_features]`` -- slow weights ``theta``, stored like
      ``nn.Linear.weight`` (the paper and METHODS.md write ``w`` as ``in x out``: this is its
      transpose, so code that handles heads generically -- slicing rows per task, penalties,
      initialisation -- treats both layers alike). Initialised like ``nn.Linear`` (Kaiming-uniform
      with ``a = sqrt(5)``, i.e. ``U(-1/sqrt(in), 1/sqrt(in))``). The seed blog applies
      ``kaiming_uniform_`` to an ``in x out`` tensor, whose fan-in PyTorch reads as
      ``out_features``; we follow ``nn.Linear`` (fan-in = ``in_features``) instead.
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
      (``eta_rate``); 0.001 follows the paper's experimental setup as we read it (worth
      confirming against its appendix). Configurable.
    * ``eta`` is used clamped to ``[0, 1]`` in the update. The paper states no constraint, but
      ``(1 - eta) Hebb + eta h_bar`` is a moving average (a bounded trace) only for ``eta`` in
      ``[0, 1]``. Inside that range the clamp is the identity with an identical gradient, so it
      changes nothing in the paper's regime (``eta`` starts at 0.001 and moves slowly under SGD),
      and it is skipped there (one host read of ``eta`` per training step decides; a clamp node
      in the graph would cost as much as the rest of the update). Outside the range the update
      uses the bound and ``eta`` receives no gradient. The parameter itself is never modified.
    * The trace stores the *raw* mean penultimate activation ``h_bar`` of each class (Algorithm 1:
      ``h_bar = sum(h[y == c]) / s``), not a normalised one.
    * As in Algorithm 1 (where ``h`` is not detached) the update is part of this step's graph:
      ``eta``, ``alpha`` *and* the backbone (through ``h_bar``) receive gradients through the
      updated trace. Between steps the stored trace is detached (a plain buffer value).
    * ``targets = -1`` marks a sample without a label for this layer (e.g. a sample of another
      task's head); it is left out of the update.

    Implementation: the update is vectorised with a one-hot matmul (on CPU at the SplitMNIST
    sizes it was faster than ``index_add`` + ``bincount``; ``benchmarks/dhp_step.py --updates``)
    and written in as few tensor operations as possible, because at the sizes of a small network
    each one costs about as much as a large matmul of the backbone (9--30 us each right after
    the backbone's matmuls have evicted the caches, against 3--8 us in a warm loop). With
    ``O[b, c] = [y_b = c]`` (zero rows for unlabelled samples; one ``index_select`` from a fixed
    table, which also rejects out-of-range targets), ``A = O / max(n, 1)`` (``n_c`` the count of
    class ``c``; zero columns for absent classes) and ``R = h - O Hebb`` (row ``b``:
    ``h_b - Hebb[y_b]``)::

        Hebb' = Hebb + eta A^T R     row c: (1 - eta) Hebb_c + eta mean(h[y == c])  if n_c > 0,
                                            Hebb_c                                  otherwise

    Plain differentiable operations throughout (:func:`torch_train_head`), so autograd supplies
    every gradient. The ``eta`` read is host-side, so the *training* update (not the evaluation
    forward, which importance estimators use) cannot run under ``torch.func`` transforms.

    Compiled step: for float32 CPU tensors (int64 targets, ``eta`` in ``[0, 1]``), the training
    forward -- update, plastic weights, logits -- and its backward run as one autograd node, a
    C++ torch operator built on first use (:func:`lifelong.native.dhp_train_head_op`). It calls
    torch's own matrix products and sum where the graph above does and repeats the roundings of
    the element-wise operations in between, so training is bit-identical to the torch path (it
    is checked against :func:`torch_train_head` when loaded, and unused where it differs); it
    spares the dozen small operations and autograd nodes that made the layer cost ~1.17x a linear
    head per SGD step (now ~1.07x, ``benchmarks/dhp_step.py``). Its gradients
    are first-order only (a ``create_graph=True`` backward through it raises);
    ``LIFELONG_NATIVE=0`` keeps the torch path everywhere.

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

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, eta_init={self.eta_init}, "
                f"alpha_init_scale={self.alpha_init_scale}")

    # ------------------------------------------------------------------------------ forward

    def _rows(self, units: slice | None) -> slice | None:
        """``units`` as a slice of rows, or ``None`` for all of them."""
        if units is None:
            return None
        if not isinstance(units, slice):
            raise ValueError(f"units must be a slice of output units (e.g. slice(0, 2)), "
                             f"got {type(units).__name__}")
        n = self.out_features
        lo = 0 if units.start is None else units.start
        hi = n if units.stop is None else units.stop
        if units.step not in (None, 1) or not 0 <= lo < hi <= n:
            raise ValueError(f"units must be a non-empty contiguous range inside 0..{n} "
                             f"(slice(start, stop) with 0 <= start < stop <= {n}), got {units}")
        if lo == 0 and hi == n:
            return None
        return slice(int(lo), int(hi))

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
        table, so the range check costs nothing unless it fails (a host-side min/max on every
        step cost as much as a tensor operation right after the backbone's matmuls). Integer
        types other than int32/int64 (which ``index_select`` refuses) are converted on that path.
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

    def forward(self, h: Tensor, targets: Tensor | None = None,
                units: slice | None = None) -> Tensor:
        """Logits ``z = h (w + alpha * Hebb)^T + b`` of the output units in ``units``.

        Thangarasa et al. 2020, Algorithm 1. In training mode with ``targets``, the trace of
        every class present in the batch (inside ``units`` or not) first becomes
        ``(1 - eta) Hebb[c] + eta * mean(h[targets == c])``, and the logits use this updated
        trace, inside the autograd graph (so ``eta``, ``alpha`` and ``h`` get its gradient); the
        buffer then holds the updated value, detached. Classes without samples keep their trace.
        In eval mode, or without ``targets``, the current trace is used and never changed.
        Where it applies, the compiled step computes the same numbers (class docstring).

        Args:
            h: Penultimate activations ``[B, in_features]``.
            targets: Output-unit indices ``[B]`` in ``[0, out_features)`` -- this layer's own
                indices, not relative to ``units`` -- or -1 for a sample with no label here.
            units: Contiguous range of output units to compute (default: all). The result
                equals the full logits sliced, computed only for those rows.

        Returns:
            Logits ``[B, len(units)]``.

        Raises:
            ValueError: ``h`` not ``[B, in_features]``; ``targets`` not an integer ``[B]`` tensor
                in ``[-1, out_features)``; ``units`` not a contiguous range of the outputs.
        """
        if h.dim() != 2 or h.shape[1] != self.in_features:
            raise ValueError(f"h must have shape [B, in_features] = [B, {self.in_features}], "
                             f"got {list(h.shape)}")
        rows = None if units is None else self._rows(units)
        if targets is None or not self.training:
            weight, alpha, hebb, bias = self.weight, self.alpha, self.hebb, self.bias
            if rows is not None:
                weight, alpha, hebb = weight[rows], alpha[rows], hebb[rows]
                bias = None if bias is None else bias[rows]
            return F.linear(h, torch.addcmul(weight, alpha, hebb), bias)
        self._check_targets(targets, h.shape[0])
        lo, hi = (0, self.out_features) if rows is None else (rows.start, rows.stop)
        try:  # the tensors straight from the module's tables (nn.Module.__getattr__ costs
            # ~0.5 us each, which adds up to a tensor operation's cost on every training step)
            params = self._parameters
            weight, alpha, eta = params["weight"], params["alpha"], params["eta"]
            bias = params["bias"] if "bias" in params else self.bias
            hebb = self._buffers["hebb"]
        except KeyError:  # computed by a parametrization (torch.nn.utils.parametrize)
            weight, alpha, eta, bias = self.weight, self.alpha, self.eta, self.bias
            hebb = self.hebb
        if (float32_cpu(h) and targets.dtype == torch.int64 and targets.is_contiguous()
                and float32_cpu(weight) and float32_cpu(alpha) and float32_cpu(hebb)
                and float32_cpu(eta) and (bias is None or float32_cpu(bias))
                and self.in_features > 1 and not _is_compiling()):
            # the compiled step: float32 CPU tensors, int64 targets, all contiguous, outside
            # torch.compile's tracing, in_features > 1 (autograd's matrix-product backward lays
            # out a one-column h differently)
            op = dhp_train_head_op()
            if op is not None:
                try:
                    z, new_hebb = op(h, targets, weight, alpha, hebb, eta, bias, lo, hi)
                except RuntimeError:
                    pass  # a target or eta out of range: the torch path says or clamps
                else:
                    self._buffers["hebb"] = new_hebb  # a non-differentiable output: no graph
                    return z
        if not 0.0 <= eta.item() <= 1.0:
            eta = eta.clamp(0.0, 1.0)
        z, new_hebb = torch_train_head(h, targets, weight, alpha, hebb, eta, bias, lo, hi,
                                       onehot=self._onehot(targets))
        # the new trace, without its graph, becomes the buffer (set in the buffer table
        # directly: nn.Module.__setattr__'s checks cost as much as a tensor op here)
        self._buffers["hebb"] = new_hebb.detach()
        return z


def torch_train_head(h: Tensor, targets: Tensor, weight: Tensor, alpha: Tensor, hebb: Tensor,
                     eta: Tensor, bias: Tensor | None, lo: int, hi: int,
                     onehot: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """DHP-Softmax's training forward in torch operations: ``(logits of rows lo..hi-1, Hebb')``.

    Thangarasa et al. 2020, Algorithm 1: ``Hebb'_c = (1 - eta) Hebb_c + eta mean(h[targets == c])``
    for every class present, then ``z = h (w + alpha Hebb')^T + b``, all inside the autograd graph
    (:class:`DHPSoftmax`'s docstring gives the one-hot form used here). The layer runs this where
    its compiled equivalent (:func:`lifelong.native.dhp_train_head_op`, checked bit-identical to
    this function when it is loaded) is unavailable.

    Args:
        h: Penultimate activations ``[B, in]``.
        targets: Output-unit indices ``[B]`` in ``[-1, out)`` (-1: no label).
        weight: Slow weights ``[out, in]``.
        alpha: Plasticity coefficients ``[out, in]``.
        hebb: The trace before the update ``[out, in]``.
        eta: The Hebbian rate (0-dim), already within ``[0, 1]``.
        bias: ``[out]`` or ``None``.
        lo: First output row of the logits.
        hi: One past the last output row.
        onehot: ``O[b, c] = [targets_b = c]`` if already computed (the layer looks it up in a
            fixed table, which also checks the range); built here otherwise.

    Returns:
        The logits ``[B, hi - lo]`` and the updated trace ``[out, in]`` (still in the graph).
    """
    if onehot is None:
        eye = torch.eye(hebb.shape[0], dtype=hebb.dtype, device=hebb.device)
        onehot = torch.cat([eye.new_zeros(1, eye.shape[1]), eye]).index_select(0, targets + 1)
    assign = onehot / onehot.sum(0).clamp_(min=1.0)  # A = O / max(n, 1)
    resid = torch.addmm(h, onehot, hebb, alpha=-1.0)  # R = h - O Hebb
    # Algorithm 1: Hebb_c <- (1 - eta) Hebb_c + eta h_bar_c for every class present
    new_hebb = torch.addcmul(hebb, assign.t().mm(resid), eta)
    trace = new_hebb
    if lo != 0 or hi != hebb.shape[0]:
        weight, alpha, trace = weight[lo:hi], alpha[lo:hi], trace[lo:hi]
        bias = None if bias is None else bias[lo:hi]
    return F.linear(h, torch.addcmul(weight, alpha, trace), bias), new_hebb
