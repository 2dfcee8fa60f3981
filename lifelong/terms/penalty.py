"""The one quadratic penalty of synaptic consolidation and the terms built on it.

EWC, online EWC, SI and MAS all add ``strength * sum_i Omega_i (theta_i - theta*_i)^2`` to the
loss; they differ only in how the importance ``Omega`` is estimated (METHODS.md; DESIGN.md,
principle 3). This module holds that penalty once (:class:`QuadraticPenalty`) with its two ways of
accumulating importance over tasks, and the four terms that feed it an estimator from
:mod:`lifelong.terms.importance`:

* :class:`FisherPenalty` -- EWC (Kirkpatrick et al. 2017, Eq. 3) and online EWC
  (Schwarz et al. 2018, Eq. 7-8).
* :class:`SIPenalty` -- synaptic intelligence (Zenke et al. 2017, Eq. 4-5).
* :class:`MASPenalty` -- memory aware synapses (Aljundi et al. 2018, Eq. 4-6), gradient-based or
  with the local Hebbian estimator (Aljundi et al. 2018, Sec. 4.2).

Convention for the strength (one penalty, so one convention): :class:`QuadraticPenalty` computes
exactly ``strength * sum Omega (theta - theta*)^2`` -- no factor 1/2 inside. EWC's published loss
is ``(lambda / 2) sum F (theta - theta*)^2``, so :class:`FisherPenalty` passes
``strength = lambda / 2`` (its ``lam`` is the paper's lambda, and van de Ven & Tolias' ``--lambda``,
whose code also multiplies by 1/2). SI's ``c`` and MAS's ``lambda`` multiply the sum directly
(Zenke et al. Eq. 4 and Aljundi et al. Eq. 6 have no 1/2), so their strength is the parameter
itself.

Parameter selection (:func:`select_parameters`): every parameter that requires a gradient when
the importance is taken, except the *plastic* parameters a layer declares through a method
``plastic_parameter_names() -> tuple[str, ...]`` (e.g. DHP-Softmax's ``alpha`` and ``eta``),
unless ``penalize_plastic=True``. Buffers (Hebbian traces, BatchNorm statistics) are never
parameters and so never penalised. A parameter without an anchor (a head created after the
anchor was taken, or one that had no importance yet) is simply not penalised; a parameter whose
shape changed since its anchor was taken is an error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lifelong.terms.base import Batch, Term
from lifelong.terms.importance import (
    FISHER_VARIANTS,
    PathIntegral,
    fisher_diagonal,
    mas_importance,
    mas_local_importance,
    plain_sgd_groups,
    plastic_parameter_names,
    select_parameters,
)

__all__ = [
    "MODES", "FisherPenalty", "MASPenalty", "QuadraticPenalty", "SIPenalty", "penalties",
    "plastic_parameter_names", "select_parameters",
]

if TYPE_CHECKING:
    from lifelong.train.loop import TrainContext

MODES = ("per-task", "online")


def _detach_all(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {n: t.detach().clone() for n, t in tensors.items()}


class _Quadratic(torch.autograd.Function):
    """``strength * (sum_k sum S_k (theta_k - m_k)^2 + C)`` over a list of parameters.

    The forward computes ``d_k = theta_k - m_k`` (exactly 0 at the anchor) with one multi-tensor
    op and keeps it; the gradient is the closed form ``2 strength S_k d_k``. No autograd graph
    over elementwise ops.
    """

    @staticmethod
    def forward(ctx: Any, scales: list[Tensor], centers: list[Tensor], grad_scales: list[Tensor],
                strength: float, const: float, *params: Tensor) -> Tensor:
        d = torch._foreach_sub(list(params), centers)
        weighted = torch._foreach_mul(d, d)
        torch._foreach_mul_(weighted, scales)
        value = torch.stack(torch._foreach_norm(weighted, 1)).sum()  # entries are >= 0
        ctx.d, ctx.grad_scales = d, grad_scales
        return (value + const) * strength

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        d = ctx.d
        del ctx.d
        torch._foreach_mul_(d, ctx.grad_scales)  # 2 strength S d
        if grad_out.item() != 1.0:
            torch._foreach_mul_(d, grad_out)
        return (None, None, None, None, None, *d)


class QuadraticPenalty(Term):
    """``strength * sum_i Omega_i (theta_i - theta*_i)^2`` with per-task or online accumulation.

    * ``mode="per-task"`` (EWC, Kirkpatrick et al. 2017, Eq. 3): one ``(Omega_t, theta*_t)`` pair
      per consolidated task, penalty ``strength * sum_t sum_i Omega_t,i (theta_i - theta*_t,i)^2``.
      Memory grows linearly with the number of tasks.
    * ``mode="online"`` (online EWC, Schwarz et al. 2018, Eq. 8; SI and MAS with ``gamma=1``):
      one running importance ``Omega <- gamma * Omega + Omega_new`` and the latest anchor.
      Memory is constant.

    The per-step cost does not grow with the number of tasks: a sum of quadratics in ``theta`` is
    one quadratic, ``sum_t O_t (theta - a_t)^2 = S (theta - m)^2 + C`` with ``S = sum_t O_t``,
    ``m = sum_t O_t a_t / S`` and ``C = sum_t O_t (a_t - m)^2`` (a constant), so every step costs
    the same whatever the mode and the number of tasks. In the training loop the term adds its
    closed-form gradient ``2 strength S (theta - m)`` straight into ``.grad``
    (:meth:`accumulate_gradient`: two in-place multi-tensor ops, no autograd graph, the product
    ``2 strength S m`` precomputed) and its value is computed only on logged steps;
    :meth:`penalty_value` gives the differentiable value for anyone else. When the optimiser
    takes the plain SGD step and the loop allows it (``ctx.penalty_steps``), the term takes the
    penalty's share of that step itself instead (:meth:`sgd_step`):
    ``theta <- theta - lr 2 strength S (theta - m) = lerp(theta, m, lr 2 strength S)``, one
    in-place pass, after which the optimiser's step ``- lr * grad`` completes exactly the update
    ``- lr (grad + 2 strength S (theta - m))``. The per-task pairs are
    kept (they are the method's state) and the combined ``S, m, C`` are rebuilt when a task is
    added or the state is loaded.

    Subclasses estimate the importance at the end of each task (:meth:`estimate`) and call
    :meth:`consolidate`; this class alone is usable with hand-set importances.

    Args:
        name: Name of the term (logged loss, composition).
        strength: Multiplies the sum; see the module docstring for each method's convention.
        mode: ``"per-task"`` or ``"online"``.
        gamma: Decay of the running importance in online mode (1 keeps everything).
        penalize_plastic: Also regularise parameters declared plastic by their layers.
    """

    penalty = True
    direct_gradient = True

    def __init__(self, name: str = "penalty", strength: float = 1.0, mode: str = "online",
                 gamma: float = 1.0, penalize_plastic: bool = False):
        if mode not in MODES:
            raise ValueError(f"unknown penalty mode {mode!r}; valid: {', '.join(MODES)}")
        if not math.isfinite(strength) or strength < 0:
            raise ValueError(f"penalty strength must be a finite number >= 0, got {strength}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.name = name
        self.strength = float(strength)
        self.mode = mode
        self.gamma = float(gamma)
        self.penalize_plastic = penalize_plastic
        # state: one (importance, anchor) pair per task (per-task) or a single pair (online)
        self.importances: list[dict[str, Tensor]] = []
        self.anchors: list[dict[str, Tensor]] = []
        self.num_consolidated = 0
        # combined quadratic S (theta - m)^2 + C, per parameter (derived from the state)
        self._names: list[str] = []
        self._shapes: list[torch.Size] = []
        self._scales: list[Tensor] = []  # S
        self._centers: list[Tensor] = []  # m
        self._grad_scales: list[Tensor] = []  # 2 strength S (built lazily for self.strength)
        self._grad_offsets: list[Tensor] = []  # 2 strength S m (likewise)
        self._grad_strength = math.nan
        self._step_weights: list[Tensor] = []  # lr 2 strength S (built lazily for the lrs)
        self._step_key: tuple[Any, ...] | None = None
        self._const = 0.0
        self._params: list[nn.Parameter] | None = None
        self._params_of: int | None = None

    # ------------------------------------------------------------------ state and accumulation

    def consolidate(self, importance: Mapping[str, Tensor],
                    anchor: Mapping[str, Tensor] | nn.Module) -> None:
        """Adds one task's importance with its anchor (per-task) or folds it in (online).

        Args:
            importance: ``name -> Omega`` (same shapes as the parameters).
            anchor: ``name -> theta*``, or a model whose current parameters are the anchor.
        """
        if isinstance(anchor, nn.Module):
            named = dict(anchor.named_parameters())
            missing = [n for n in importance if n not in named]
            if missing:
                raise ValueError(f"{self.name}: importance given for parameters the model does not "
                                 f"have: {missing}")
            anchor = {n: named[n] for n in importance}
        for n, omega in importance.items():
            if n not in anchor:
                raise ValueError(f"{self.name}: importance of {n!r} has no anchor value")
            if omega.shape != anchor[n].shape:
                raise ValueError(f"{self.name}: importance of {n!r} has shape "
                                 f"{tuple(omega.shape)} but the parameter has "
                                 f"{tuple(anchor[n].shape)}")
            if not torch.isfinite(omega).all():
                hint = ("the parameter itself is not finite: training diverged (is the strength "
                        "too large for the learning rate?)"
                        if not torch.isfinite(anchor[n]).all() else "check the estimator's data")
                raise ValueError(f"{self.name}: importance of {n!r} must be finite and >= 0, it "
                                 f"has NaN/inf values; {hint}")
            if (omega < 0).any():
                raise ValueError(f"{self.name}: importance of {n!r} must be finite and >= 0, it "
                                 "has negative values")
        new_omega = _detach_all(importance)
        new_anchor = {n: anchor[n].detach().clone() for n in importance}
        if self.mode == "per-task" or not self.importances:
            self.importances.append(new_omega)
            self.anchors.append(new_anchor)
        else:  # online: Omega <- gamma * Omega + Omega_new; anchor <- latest (Schwarz et al. Eq. 8)
            old_omega, old_anchor = self.importances[0], self.anchors[0]
            merged_omega: dict[str, Tensor] = {}
            merged_anchor: dict[str, Tensor] = {}
            for n, o in old_omega.items():
                merged_omega[n] = o.mul(self.gamma)
                merged_anchor[n] = new_anchor.get(n, old_anchor[n])
            for n, o in new_omega.items():
                merged_omega[n] = merged_omega[n].add_(o) if n in merged_omega else o
                merged_anchor[n] = new_anchor[n]
            self.importances = [merged_omega]
            self.anchors = [merged_anchor]
        self.num_consolidated += 1
        self._rebuild()

    def _rebuild(self) -> None:
        """Recomputes the combined quadratic ``S (theta - m)^2 + C`` from the stored pairs.

        Importances below ``sqrt(tiny)`` of their dtype (about 1e-19 in float32) are flushed to
        zero in ``S``: even a strength of 1e12 turns them into a pull below 1e-7 per unit of
        deviation, and products with small deviations would otherwise become subnormal numbers,
        which x86 CPUs process ~30x slower. Parameters whose importance is zero everywhere (a
        head not trained yet) are left out of the penalty.
        """
        self._params = None
        names: list[str] = []
        for omega in self.importances:
            names.extend(n for n in omega if n not in names)
        scales, centers, shapes, kept = [], [], [], []
        const = 0.0
        for n in names:
            pairs = [(o[n], a[n]) for o, a in zip(self.importances, self.anchors) if n in o]
            shape = pairs[-1][1].shape
            for _, a in pairs:
                if a.shape != shape:
                    raise ValueError(f"{self.name}: anchors of {n!r} have different shapes across "
                                     f"tasks ({tuple(shape)} and {tuple(a.shape)})")
            if len(pairs) == 1:
                s, m = pairs[0][0].clone(), pairs[0][1]
            else:
                s = torch.stack([o for o, _ in pairs]).sum(0)
                weighted = torch.stack([o * a for o, a in pairs]).sum(0)
                m = torch.where(s > 0, weighted / s.clamp_min(torch.finfo(s.dtype).tiny),
                                pairs[-1][1])
                for o, a in pairs:
                    const += float((o.double() * (a.double() - m.double()).square()).sum())
            s.masked_fill_(s < torch.finfo(s.dtype).tiny ** 0.5, 0.0)
            if not bool(s.any()):
                continue  # zero importance everywhere (e.g. a head not trained yet): unpenalised
            scales.append(s)
            centers.append(m.clone())
            shapes.append(shape)
            kept.append(n)
        self._names, self._shapes = kept, shapes
        self._scales, self._centers = scales, centers
        self._grad_scales, self._grad_offsets = [], []
        self._step_weights, self._step_key = [], None
        self._const = const

    def _resolve(self, model: nn.Module) -> list[nn.Parameter]:
        """The model's parameters in the order of the stored names (cached per model)."""
        if self._params is not None and self._params_of == id(model):
            return self._params
        named = dict(model.named_parameters())
        params = []
        for n, shape in zip(self._names, self._shapes):
            if n not in named:
                raise ValueError(f"{self.name}: parameter {n!r} has an anchor but the model no "
                                 "longer has it; consolidate the same model you train")
            p = named[n]
            if p.shape != shape:
                raise ValueError(f"{self.name}: parameter {n!r} has shape {tuple(p.shape)} but its "
                                 f"anchor was taken with shape {tuple(shape)}; a consolidated "
                                 "parameter cannot change shape (add new parameters instead)")
            params.append(p)
        self._params, self._params_of = params, id(model)
        return params

    # ------------------------------------------------------------------ the penalty

    def penalty_value(self, model: nn.Module) -> Tensor | None:
        """``strength * sum Omega (theta - theta*)^2`` at the model's current parameters
        (``None`` before anything was consolidated). Differentiable in the parameters, with
        the closed-form gradient ``2 strength S (theta - m)``."""
        if not self._names:
            return None
        params = self._resolve(model)
        return _Quadratic.apply(self._scales, self._centers, self._gradient_scales(),
                                self.strength, self._const, *params)

    def _gradient_scales(self) -> list[Tensor]:
        """``2 strength S`` per parameter (rebuilt when the strength or ``S`` changed), and
        with it ``self._grad_offsets = 2 strength S m`` for :meth:`accumulate_gradient`."""
        if self._grad_strength != self.strength or not self._grad_scales:
            self._grad_scales = torch._foreach_mul(self._scales, 2.0 * self.strength)
            self._grad_offsets = torch._foreach_mul(self._grad_scales, self._centers)
            self._grad_strength = self.strength
        return self._grad_scales

    @torch.no_grad()
    def accumulate_gradient(self, model: nn.Module) -> None:
        """Adds the penalty's gradient ``2 strength S (theta - m)`` to every penalised
        parameter's ``.grad`` (creating it where it is ``None``), as ``penalty_value(model)
        .backward()`` would, without building or evaluating the penalty itself.

        Written ``grad += 2 strength S theta - 2 strength S m`` with the second product
        precomputed once per consolidation: two in-place multi-tensor ops per step and no
        temporary (``theta - m`` would be one more pass over all regularised parameters, and on
        a CPU these memory-bound passes cost as much as a small network's forward and backward;
        measured ~30 % less time for the update than ``d = theta - m; grad += 2 strength S d``).
        The rounding differs from the product form by ``~eps * 2 strength S |theta|`` per
        element. Parameters that do not require a gradient (frozen) are skipped.
        """
        if not self._names or self.strength == 0.0:
            return
        params = self._resolve(model)
        scales = self._gradient_scales()
        offsets = self._grad_offsets
        live = [i for i, p in enumerate(params) if p.requires_grad]
        if len(live) < len(params):
            params = [params[i] for i in live]
            scales = [scales[i] for i in live]
            offsets = [offsets[i] for i in live]
        if not params:
            return
        values = [p.detach() for p in params]
        if all(p.grad is not None for p in params):
            grads = [p.grad for p in params]
            torch._foreach_addcmul_(grads, scales, values)
            torch._foreach_sub_(grads, offsets)
            return
        for p, v, si, oi in zip(params, values, scales, offsets):
            if p.grad is None:
                p.grad = torch.mul(si, v).sub_(oi)
            else:
                p.grad.addcmul_(si, v).sub_(oi)

    def loss(self, ctx: "TrainContext", batch: Batch) -> Tensor | None:
        """The penalty's value. The loop adds the gradient through :meth:`add_gradient` and
        calls this (under ``no_grad``) only on the steps it logs."""
        if self.strength == 0.0:
            return None
        return self.penalty_value(ctx.model)

    def add_gradient(self, ctx: "TrainContext") -> None:
        """The loop's per-step hook for this penalty, right before the optimiser's step:
        :meth:`sgd_step` when the loop allows it (``ctx.penalty_steps``) and the optimiser
        takes the plain SGD step (:func:`~lifelong.terms.importance.plain_sgd_groups`),
        otherwise :meth:`accumulate_gradient`."""
        if ctx.penalty_steps and self._names and self.strength != 0.0:
            groups = plain_sgd_groups(ctx.optimizer, self._resolve(ctx.model))
            if groups is not None:
                self.sgd_step(ctx.model, [None if g is None else float(g["lr"]) for g in groups])
                return
        self.accumulate_gradient(ctx.model)

    @torch.no_grad()
    def sgd_step(self, model: nn.Module, lrs: Sequence[float | None]) -> None:
        """Moves every penalised parameter by the penalty's plain-SGD step,
        ``theta <- theta - lr 2 strength S (theta - m)``, in place.

        Written ``theta <- lerp(theta, m, lr 2 strength S)`` (one multi-tensor pass, the weight
        ``lr 2 strength S`` rebuilt only when a learning rate, the strength or ``S`` changed).
        Followed by the optimiser's plain step ``theta <- theta - lr * grad`` it gives exactly
        the step of :meth:`accumulate_gradient` + ``optimizer.step()``, up to float rounding,
        without writing the gradient: parameters without a gradient of their own (the heads
        of past tasks) need no ``.grad`` and are not visited by the optimiser. Frozen
        parameters (no ``requires_grad``) and those whose learning rate is ``None`` (not held
        by the optimiser) do not move.

        Args:
            model: The model holding the penalised parameters.
            lrs: Learning rate of each penalised parameter, in the order of
                :meth:`penalised_names`.

        Raises:
            ValueError: ``lrs`` does not have one entry per penalised parameter.
        """
        if not self._names or self.strength == 0.0:
            return
        params = self._resolve(model)
        if len(lrs) != len(params):
            raise ValueError(f"{self.name}: sgd_step needs one learning rate per penalised "
                             f"parameter ({len(params)}: {self._names}), got {len(lrs)}")
        key = (self.strength, tuple(lrs))
        if key != self._step_key:
            self._step_weights = [s.mul(2.0 * self.strength * (lr or 0.0))
                                  for s, lr in zip(self._scales, lrs)]
            self._step_key = key
        live = [i for i, (p, lr) in enumerate(zip(params, lrs)) if p.requires_grad and lr]
        if live:
            torch._foreach_lerp_([params[i].detach() for i in live],
                                 [self._centers[i] for i in live],
                                 [self._step_weights[i] for i in live])

    def penalised_names(self) -> list[str]:
        """Names of the parameters the penalty currently regularises (non-zero importance)."""
        return list(self._names)

    def on_task_start(self, ctx: "TrainContext") -> None:
        self._params = None  # parameters may have been added or replaced between tasks

    def on_task_end(self, ctx: "TrainContext") -> None:
        params = select_parameters(ctx.model, self.penalize_plastic)
        importance = self.estimate(ctx, params)
        self.consolidate(importance, {n: p for n, p in params.items() if n in importance})

    def estimate(self, ctx: "TrainContext", params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        """The importance of ``params`` for the task just learned (subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} does not estimate importance; call "
                                  "consolidate() with an importance yourself")

    # ------------------------------------------------------------------ (de)serialisation

    def state_dict(self) -> dict[str, Any]:
        """The stored ``(Omega, theta*)`` pairs (one per task, or one in online mode)."""
        return {"mode": self.mode,
                "importances": [_detach_all(o) for o in self.importances],
                "anchors": [_detach_all(a) for a in self.anchors],
                "num_consolidated": self.num_consolidated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` (the mode must match)."""
        missing = {"mode", "importances", "anchors", "num_consolidated"} - set(state)
        if missing:
            raise ValueError(f"{self.name}: state is missing keys {sorted(missing)}")
        if state["mode"] != self.mode:
            raise ValueError(f"{self.name}: state was saved in mode {state['mode']!r}, this term "
                             f"runs in mode {self.mode!r}")
        if len(state["importances"]) != len(state["anchors"]):
            raise ValueError(f"{self.name}: state has {len(state['importances'])} importances but "
                             f"{len(state['anchors'])} anchors")
        self.importances = [_detach_all(o) for o in state["importances"]]
        self.anchors = [_detach_all(a) for a in state["anchors"]]
        self.num_consolidated = int(state["num_consolidated"])
        self._rebuild()

    def state_bytes(self) -> int:
        """Bytes of the stored state tensors (what grows with the number of tasks for EWC)."""
        return sum(t.numel() * t.element_size()
                   for group in (self.importances, self.anchors) for d in group for t in d.values())


class FisherPenalty(QuadraticPenalty):
    """EWC and online EWC: importance = diagonal Fisher information.

    Loss ``(lam / 2) sum_t F_t (theta - theta*_t)^2`` (Kirkpatrick et al. 2017, Eq. 3; one term
    per task, ``mode="per-task"``) or ``(lam / 2) F~ (theta - theta*)^2`` with
    ``F~ <- gamma F~ + F_new`` (Schwarz et al. 2018, Eq. 8; ``mode="online"``). The Fisher is
    :func:`~lifelong.terms.importance.fisher_diagonal` on the task's training data (logits of the
    task's training units), computed in eval mode.

    Args:
        lam: The paper's lambda (the penalty multiplies ``lam / 2``).
        mode: ``"per-task"`` (EWC) or ``"online"`` (online EWC).
        gamma: Online decay.
        variant: Fisher variant (``true``, ``sample``, ``empirical``, ``predicted``,
            ``batched``).
        samples: Training samples used (``None``: all of the task's).
        batch_size: Samples per ``vmap`` chunk.
        penalize_plastic: Also regularise plastic parameters.
        name: Term name.
    """

    def __init__(self, lam: float, mode: str = "per-task", gamma: float = 1.0,
                 variant: str = "true", samples: int | None = None, batch_size: int = 128,
                 penalize_plastic: bool = False, name: str = "ewc"):
        if variant not in FISHER_VARIANTS:
            raise ValueError(f"unknown Fisher variant {variant!r}; valid: "
                             f"{', '.join(FISHER_VARIANTS)}")
        if samples is not None and samples < 1:
            raise ValueError(f"{name}: fisher samples must be >= 1 or None (all), got {samples}")
        if batch_size < 1:
            raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}")
        super().__init__(name=name, strength=lam / 2.0, mode=mode, gamma=gamma,
                         penalize_plastic=penalize_plastic)
        self.lam = lam
        self.variant = variant
        self.samples = samples
        self.batch_size = batch_size

    def estimate(self, ctx: "TrainContext", params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        return fisher_diagonal(ctx.model, ctx.task_batches(self.batch_size, self.samples),
                               ctx.train_units, variant=self.variant, generator=ctx.generator,
                               params=params)


class MASPenalty(QuadraticPenalty):
    """MAS: importance from the sensitivity of the learned function (Aljundi et al. 2018).

    Loss ``lam * sum Omega (theta - theta*)^2`` (Eq. 6) with ``Omega`` accumulated over tasks
    (online mode, ``gamma=1``) and the latest anchor. ``local=False`` uses the global estimator
    :func:`~lifelong.terms.importance.mas_importance` (per-sample ``|d ||F(x)||^2 / d theta|``,
    Eq. 4-5); ``local=True`` the Hebbian one,
    :func:`~lifelong.terms.importance.mas_local_importance`
    (Sec. 4.2: ``|2 y_i^{l-1} y_j^l|`` from forward activations only). Labels are not used.

    Args:
        lam: Penalty strength.
        local: Local Hebbian estimator instead of the gradient one.
        samples: Training samples used (``None``: all of the task's).
        batch_size: Samples per chunk.
        penalize_plastic: Also regularise plastic parameters.
        name: Term name.
    """

    def __init__(self, lam: float, local: bool = False, samples: int | None = None,
                 batch_size: int = 512, penalize_plastic: bool = False, name: str = "mas"):
        if samples is not None and samples < 1:
            raise ValueError(f"{name}: samples must be >= 1 or None (all), got {samples}")
        if batch_size < 1:
            raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}")
        super().__init__(name=name, strength=lam, mode="online", gamma=1.0,
                         penalize_plastic=penalize_plastic)
        self.lam = lam
        self.local = local
        self.samples = samples
        self.batch_size = batch_size

    def estimate(self, ctx: "TrainContext", params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        batches = ((x, None) for x, _ in ctx.task_batches(self.batch_size, self.samples))
        if self.local:
            omega = mas_local_importance(ctx.model, batches, ctx.train_units)
            # layers the local rule does not cover (convolutions, other heads) get 0: unpenalised
            return {n: omega[n] if n in omega else torch.zeros_like(p) for n, p in params.items()}
        return mas_importance(ctx.model, batches, ctx.train_units, params=params)


class SIPenalty(QuadraticPenalty):
    """Synaptic intelligence (Zenke et al. 2017): importance from the path integral of learning.

    During a task, after every step ``omega += -g * delta`` (Eq. 3 discretised), ``g`` the gradient
    of the data losses alone (read in ``on_after_backward``, before penalties are
    back-propagated) and ``delta`` the step just taken; at the task's end
    ``Omega += omega / ((theta_end - theta_start)^2 + xi)`` (Eq. 5), kept across tasks (online
    mode, ``gamma=1``) with the latest anchor. Loss ``c * sum Omega (theta - theta*)^2`` (Eq. 4).
    With the run's optimiser taking the plain SGD step (no momentum, weight decay or
    ``maximize``) the sum is accumulated as ``omega += lr * g * grad`` (``delta = -lr * grad``,
    exact, no copy of the previous parameters; :class:`PathIntegral`). That form reads each step
    from ``.grad``, so the term sets ``observes_gradient_steps``: in a run with SI every
    penalty, its own included, adds its gradient to ``.grad`` rather than taking its own SGD
    step (:meth:`QuadraticPenalty.sgd_step`). When SI's penalty is moreover the only term that
    adds to ``.grad`` after the data losses' backward (``ctx.gradient_terms``; the usual case,
    ``si`` and ``dhp+si``), every step's gradient is ``g + 2 c S (theta - m)`` and the path
    integral takes its closed form (:class:`PathIntegral`): ``A += lr * grad^2`` per step and
    no copy of ``g`` at all, the same sum up to float rounding (bit for bit in the first task).
    When SI is moreover the only term that reads the steps from ``.grad``
    (``ctx.gradient_observers``), :meth:`add_gradient` takes the whole plain SGD step of the
    parameters it tracks in one compiled pass each (:meth:`PathIntegral.sgd_step`: penalty
    gradient, step and ``A``, bit-identical to the torch operations; where no C compiler is
    available the torch operations run, see :mod:`lifelong.native`).

    Args:
        c: Penalty strength.
        xi: Damping ``xi`` of Eq. 5 (0.1, as van de Ven & Tolias 2019 use).
        penalize_plastic: Also regularise plastic parameters.
        name: Term name.
    """

    observes_gradient_steps = True

    def __init__(self, c: float, xi: float = 0.1, penalize_plastic: bool = False,
                 name: str = "si"):
        if not xi > 0:
            raise ValueError(f"{name}: xi must be > 0 (it keeps Eq. 5 finite), got {xi}")
        super().__init__(name=name, strength=c, mode="online", gamma=1.0,
                         penalize_plastic=penalize_plastic)
        self.c = c
        self.xi = xi
        self.path = PathIntegral()
        self._own_steps = False
        self._path_offsets: list[Tensor | None] = []

    def on_task_start(self, ctx: "TrainContext") -> None:
        super().on_task_start(ctx)
        quadratic = None
        offsets: dict[str, Tensor] = {}
        writers = ctx.gradient_terms
        if len(writers) == 1 and writers[0] is self:  # grad = g + 2 c S (theta - m), nothing else
            quadratic = {}
            if self._names and self.strength != 0.0:
                quadratic = dict(zip(self._names, zip(self._gradient_scales(), self._centers)))
                offsets = dict(zip(self._names, self._grad_offsets))
        params = select_parameters(ctx.model, self.penalize_plastic)
        self.path.begin(params, ctx.optimizer, quadratic=quadratic)
        # the whole step may be taken here only if no other term reads it from .grad
        self._own_steps = self.path.closed_form and tuple(ctx.gradient_observers) == (self,)
        self._path_offsets = [offsets.get(n) for n in self.path.names]

    def add_gradient(self, ctx: "TrainContext") -> None:
        """The penalty's gradient (:meth:`QuadraticPenalty.add_gradient`); or, in the closed
        form (plain SGD, this penalty the only term that writes or reads ``.grad``), the whole
        plain SGD step of the tracked parameters in one compiled pass, penalty and path
        integral included (:meth:`PathIntegral.sgd_step`, bit-identical; their ``.grad`` is
        then cleared so that ``optimizer.step()`` skips them)."""
        if self._own_steps and self.path.sgd_step(self._path_offsets):
            return
        super().add_gradient(ctx)

    def on_after_backward(self, ctx: "TrainContext") -> None:
        self.path.record_gradients()

    def on_after_step(self, ctx: "TrainContext") -> None:
        self.path.accumulate()

    def estimate(self, ctx: "TrainContext", params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        omega = self.path.importance(self.xi)
        return {n: o for n, o in omega.items() if n in params}

    def on_task_end(self, ctx: "TrainContext") -> None:
        super().on_task_end(ctx)
        self.path.clear()  # the path integral restarts with the next task

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "path": self.path.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        path = state.pop("path", None)
        if path is None:
            raise ValueError(f"{self.name}: state is missing key 'path'")
        super().load_state_dict(state)
        self.path.load_state_dict(path)


def penalties(terms: Iterable[Term]) -> list[QuadraticPenalty]:
    """The quadratic penalties among ``terms`` (e.g. a recipe's), for inspection."""
    return [t for t in terms if isinstance(t, QuadraticPenalty)]
