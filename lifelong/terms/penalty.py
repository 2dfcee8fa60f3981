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
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lifelong.terms.base import Batch, Term
from lifelong.terms.importance import (
    FISHER_VARIANTS,
    fisher_diagonal,
    mas_importance,
    mas_local_importance,
    plastic_parameter_names,
    select_parameters,
)

__all__ = [
    "EWC", "MAS", "MODES", "SI", "FisherPenalty", "MASLocal", "MASPenalty", "OnlineEWC",
    "PathIntegral", "QuadraticPenalty", "SIPenalty", "penalties",
    "plastic_parameter_names", "select_parameters",
]

if TYPE_CHECKING:
    from lifelong.train.loop import TrainContext

MODES = ("per-task", "online")


def _detach_all(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {n: t.detach().clone() for n, t in tensors.items()}


class _Quadratic(torch.autograd.Function):
    """``strength * (sum_k ||sqrt(S_k) (theta_k - m_k)||^2 + C)`` over a list of parameters, with
    its closed-form backward ``2 strength S_k (theta_k - m_k)``.

    Forward: ``u_k = sqrt(S_k) (theta_k - m_k)`` (a multi-tensor subtraction, then a
    multiplication) and the value from ``_foreach_norm`` (2-norms); ``u`` is kept, and the
    backward is one multi-tensor multiplication by ``2 strength sqrt(S)`` (precomputed once per
    consolidation and strength). No autograd graph over element-wise ops is built. The
    deviation is computed first, so at the anchor the value and the gradient are exactly 0: a
    parameter that only the penalty moves (a past task's head) stays exactly at its anchor even
    when ``lr 2 strength S > 2`` would make any deviation grow (a form ``sqrt(S) theta -
    sqrt(S) m`` left a rounding residual there that such a step amplified to inf; tested).
    Measured on the DHP protocol's MLP (269k penalised weights, 1 thread, in a training run):
    an L1 ``_foreach_norm`` instead of the 2-norm (not vectorised on the CPU) is ~5x slower.
    """

    @staticmethod
    def forward(ctx: Any, roots: list[Tensor], centers: list[Tensor], grad_scales: list[Tensor],
                strength: float, const: float, *params: Tensor) -> Tensor:
        u = torch._foreach_sub(list(params), centers)
        torch._foreach_mul_(u, roots)  # sqrt(S) (theta - m)
        value = torch.stack(torch._foreach_norm(u, 2)).square().sum()
        ctx.u, ctx.grad_scales = u, grad_scales
        return (value + const) * strength

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        u = ctx.u
        del ctx.u
        torch._foreach_mul_(u, ctx.grad_scales)  # 2 strength sqrt(S) u = 2 strength S (theta - m)
        if grad_out.device.type != "cpu" or float(grad_out) != 1.0:  # a host read on the CPU only
            torch._foreach_mul_(u, grad_out)
        return (None, None, None, None, None, *u)


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
    ``m = sum_t O_t a_t / S`` and ``C = sum_t O_t (a_t - m)^2`` (a constant). :meth:`loss`
    returns that value as one differentiable node whose backward is the closed form
    ``2 strength S (theta - m)`` (:class:`_Quadratic`); the loop back-propagates it like any
    loss (``penalty = True``: after the data losses' hooks). The per-task pairs are kept (they
    are the method's state) and the combined ``S, m, C`` are rebuilt when a task is added or
    the state is loaded.

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
        # sqrt(S) and 2 strength sqrt(S) (built lazily: _Quadratic)
        self._consts: tuple[list[Tensor], ...] = ()
        self._consts_for = math.nan
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
        self._consts, self._consts_for = (), math.nan
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
        if self._consts_for != self.strength or not self._consts:
            roots = list(torch._foreach_sqrt(self._scales))
            self._consts = (roots, list(torch._foreach_mul(roots, 2.0 * self.strength)))
            self._consts_for = self.strength
        roots, grad_scales = self._consts
        return _Quadratic.apply(roots, self._centers, grad_scales, self.strength, self._const,
                                *params)

    def loss(self, ctx: TrainContext, batch: Batch) -> Tensor | None:
        """The penalty at the current parameters (``None`` before the first consolidation or
        with strength 0)."""
        if self.strength == 0.0:
            return None
        return self.penalty_value(ctx.model)

    def penalised_names(self) -> list[str]:
        """Names of the parameters the penalty currently regularises (non-zero importance)."""
        return list(self._names)

    def on_task_start(self, ctx: TrainContext) -> None:
        self._params = None  # parameters may have been added or replaced between tasks

    def on_task_end(self, ctx: TrainContext) -> None:
        params = select_parameters(ctx.model, self.penalize_plastic)
        importance = self.estimate(ctx, params)
        self.consolidate(importance, {n: p for n, p in params.items() if n in importance})

    def estimate(self, ctx: TrainContext, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
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

    def estimate(self, ctx: TrainContext, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
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

    def estimate(self, ctx: TrainContext, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        batches = ((x, None) for x, _ in ctx.task_batches(self.batch_size, self.samples))
        if self.local:
            omega = mas_local_importance(ctx.model, batches, ctx.train_units)
            # layers the local rule does not cover (convolutions, other heads) get 0: unpenalised
            return {n: omega[n] if n in omega else torch.zeros_like(p) for n, p in params.items()}
        return mas_importance(ctx.model, batches, ctx.train_units, params=params)


def _grad(p: Tensor) -> Tensor:
    assert p.grad is not None
    return p.grad


class PathIntegral:
    """SI's per-parameter path integral (Zenke et al. 2017, Eq. 3 and 5).

    Per task: :meth:`begin` with the parameters; after the backward of the *task* loss
    :meth:`record_gradients` (``g`` and the parameters before the step); after the optimiser's
    step :meth:`accumulate`, ``omega += -g * (theta_after - theta_before)`` (Eq. 3 discretised:
    the step actually taken, whatever the optimiser); at the end :meth:`importance`,
    ``omega / ((theta_end - theta_start)^2 + xi)`` (Eq. 5). Four multi-tensor passes per step
    over the parameters that have a gradient in that step (``g`` must be copied: autograd
    accumulates the penalties' backward into ``.grad`` in place); the others (another task's
    head) have ``g = 0`` and add nothing.
    """

    names: list[str]
    start: list[Tensor]
    omega: list[Tensor]
    _params: list[Tensor]
    _values: list[Tensor]
    _live: list[int]
    _grads: list[Tensor]
    _before: list[Tensor]

    def __init__(self) -> None:
        self.clear()

    def begin(self, params: Mapping[str, Tensor]) -> None:
        """Starts a task: records ``theta_start`` and zeroes ``omega``."""
        self.names = list(params)
        self._params = list(params.values())
        self._values = [p.detach() for p in self._params]  # aliases: optimisers step in place
        self.start = [v.clone() for v in self._values]
        self.omega = [torch.zeros_like(v) for v in self._values]
        self._live, self._grads, self._before = [], [], []  # set by the first record_gradients

    def record_gradients(self) -> None:
        """Copies the gradient ``g`` of every parameter that has one (the task-loss gradient
        when called before penalties are back-propagated) and its value before the step."""
        if not self._params:
            raise RuntimeError("PathIntegral: call begin(params) at the start of the task")
        live = [i for i, p in enumerate(self._params) if p.grad is not None]
        if live != self._live:
            self._live = live
            self._grads = [torch.empty_like(self._values[i]) for i in live]
            self._before = [torch.empty_like(self._values[i]) for i in live]
        if live:
            torch._foreach_copy_(self._grads, [_grad(self._params[i]) for i in live])
            torch._foreach_copy_(self._before, [self._values[i] for i in live])

    def accumulate(self) -> None:
        """``omega += -g * delta`` with ``delta`` the step just taken (after the step)."""
        if not self._live:
            return
        torch._foreach_sub_(self._before, [self._values[i] for i in self._live])  # -delta
        torch._foreach_addcmul_([self.omega[i] for i in self._live], self._grads, self._before)

    def importance(self, xi: float) -> dict[str, Tensor]:
        """``omega / ((theta_end - theta_start)^2 + xi)`` for the task (Zenke et al. Eq. 5).

        ``omega`` can be slightly negative for a parameter whose steps went against its task
        gradient (noise, momentum, the penalty); such importance is clamped to 0 (a quadratic
        penalty needs ``Omega >= 0``).
        """
        return {n: (w / (v - s).square().add_(xi)).clamp_min_(0.0)
                for n, w, v, s in zip(self.names, self.omega, self._values, self.start)}

    def clear(self) -> None:
        """Drops the per-task buffers (:meth:`begin` makes new ones)."""
        self.names, self.start, self.omega = [], [], []
        self._params, self._values = [], []
        self._live, self._grads, self._before = [], [], []

    def state_dict(self) -> dict[str, Any]:
        """``theta_start`` and ``omega`` so far by parameter name (empty between tasks)."""
        return {"start": dict(zip(self.names, [t.clone() for t in self.start])),
                "omega": dict(zip(self.names, [t.clone() for t in self.omega]))}

    def load_state_dict(self, state: dict[str, Any], params: Mapping[str, Tensor]) -> None:
        """Restores :meth:`state_dict` onto the live ``params`` (by name)."""
        missing = [n for n in state["start"] if n not in params]
        if missing:
            raise ValueError(f"PathIntegral: state names parameters the model does not have: "
                             f"{missing}")
        self.begin({n: params[n] for n in state["start"]})
        self.start = [state["start"][n].clone() for n in self.names]
        self.omega = [state["omega"][n].clone() for n in self.names]


class SIPenalty(QuadraticPenalty):
    """Synaptic intelligence (Zenke et al. 2017): importance from the path integral of learning.

    During a task, after every step ``omega += -g * delta`` (Eq. 3 discretised), ``g`` the gradient
    of the data losses alone (read in ``on_after_backward``, before penalties are
    back-propagated) and ``delta`` the step just taken (:class:`PathIntegral`); at the task's end
    ``Omega += omega / ((theta_end - theta_start)^2 + xi)`` (Eq. 5), kept across tasks (online
    mode, ``gamma=1``) with the latest anchor. Loss ``c * sum Omega (theta - theta*)^2`` (Eq. 4).
    The same numerical path whatever else is in the run (``si``, ``ewc+si``, ``dhp+si``) and
    whatever the optimiser.

    Args:
        c: Penalty strength.
        xi: Damping ``xi`` of Eq. 5 (0.1, as van de Ven & Tolias 2019 use).
        penalize_plastic: Also regularise plastic parameters.
        name: Term name.
    """

    def __init__(self, c: float, xi: float = 0.1, penalize_plastic: bool = False,
                 name: str = "si"):
        if not xi > 0:
            raise ValueError(f"{name}: xi must be > 0 (it keeps Eq. 5 finite), got {xi}")
        super().__init__(name=name, strength=c, mode="online", gamma=1.0,
                         penalize_plastic=penalize_plastic)
        self.c = c
        self.xi = xi
        self.path = PathIntegral()
        self._model: nn.Module | None = None

    def on_task_start(self, ctx: TrainContext) -> None:
        super().on_task_start(ctx)
        self._model = ctx.model
        self.path.begin(select_parameters(ctx.model, self.penalize_plastic))

    def on_after_backward(self, ctx: TrainContext) -> None:
        self.path.record_gradients()

    def on_after_step(self, ctx: TrainContext) -> None:
        self.path.accumulate()

    def estimate(self, ctx: TrainContext, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        omega = self.path.importance(self.xi)
        return {n: o for n, o in omega.items() if n in params}

    def on_task_end(self, ctx: TrainContext) -> None:
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
        if path["start"]:
            if self._model is None:
                raise ValueError(f"{self.name}: a mid-task path integral can only be restored "
                                 "into a term that has started a task")
            self.path.load_state_dict(path, dict(self._model.named_parameters()))
        else:
            self.path.clear()


class EWC(FisherPenalty):
    """EWC (Kirkpatrick et al. 2017, Eq. 3): one ``(F_t, theta*_t)`` pair per past task, loss
    ``(lam / 2) sum_t F_t (theta - theta*_t)^2``. Keywords as :class:`FisherPenalty`."""

    def __init__(self, lam: float = 100.0, **kwargs: Any):
        kwargs.setdefault("name", "ewc")
        super().__init__(lam, mode="per-task", **kwargs)


class OnlineEWC(FisherPenalty):
    """Online EWC (Schwarz et al. 2018, Eq. 7-8): ``F~ <- gamma F~ + F_new``, latest anchor,
    loss ``(lam / 2) F~ (theta - theta*)^2``. Keywords as :class:`FisherPenalty`."""

    def __init__(self, lam: float = 300.0, gamma: float = 1.0, **kwargs: Any):
        kwargs.setdefault("name", "online-ewc")
        super().__init__(lam, mode="online", gamma=gamma, **kwargs)


class MAS(MASPenalty):
    """MAS (Aljundi et al. 2018, Eq. 4-6) with the gradient estimator. Keywords as
    :class:`MASPenalty`."""

    def __init__(self, lam: float = 0.5, **kwargs: Any):
        kwargs.setdefault("name", "mas")
        super().__init__(lam, local=False, **kwargs)


class MASLocal(MASPenalty):
    """Local (Hebbian) MAS (Aljundi et al. 2018, Sec. 4.2): ``|2 y_i y_j|`` from forward
    activations. Keywords as :class:`MASPenalty`."""

    def __init__(self, lam: float = 1.0, **kwargs: Any):
        kwargs.setdefault("name", "mas-local")
        kwargs.setdefault("batch_size", 1024)
        super().__init__(lam, local=True, **kwargs)


SI = SIPenalty
"""Synaptic intelligence (Zenke et al. 2017): :class:`SIPenalty`."""


def penalties(terms: Iterable[Term]) -> list[QuadraticPenalty]:
    """The quadratic penalties among ``terms`` (e.g. a recipe's), for inspection."""
    return [t for t in terms if isinstance(t, QuadraticPenalty)]
