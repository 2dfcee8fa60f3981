"""Terms of the rehearsal methods: the exemplar memory's update, BiC's distillation, its
bias-correction stage and the FC-retrained upper bound.

* :class:`UpdateMemory` -- at each task's end, selects the new classes' exemplars with the model
  just trained and shrinks the old classes' share (the memory is the one the recipe's
  :class:`~lifelong.data.regimes.Rehearsal` regime replays); sets the nearest-mean prototypes of
  any :class:`~lifelong.nn.nme.NMEClassifier` in the model (iCaRL).
* :class:`BiCDistillation` -- Wu et al. (2019, Eq. 2-4): ``lambda L_d + (1 - lambda) L_c`` with
  ``lambda = n / (n + m)``, ``L_d`` the distillation of the previous model's outputs over the
  ``n`` old classes at ``T = 2``, through :func:`~lifelong.terms.distill.kd_loss`.
* :class:`BiasCorrection` -- BiC's second stage (Sec. 4.2, Eq. 5-6): ``alpha``, ``beta`` of the
  new classes fitted on the held-out balanced split, everything else frozen and in eval mode.
* :class:`BalancedRetrain` -- the upper bound of BiC's ablation (Sec. 5.3, Table 6): the last
  layer retrained on the training data of every class seen, balanced over classes.

The two fitting stages are convex problems on features (or logits) computed once in eval mode
(``no_grad``: no parameter and no BatchNorm statistic moves), solved by full-batch L-BFGS: a
multinomial logistic regression in ``(alpha, beta)``, respectively in the last layer's rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.memory import ExemplarMemory, compute_features, rank_within
from lifelong.data.regimes import Rehearsal, task_tensors
from lifelong.nn.bias import BiasCorrectedLinear
from lifelong.nn.nme import NMEClassifier
from lifelong.terms.base import Batch, Term
from lifelong.terms.distill import _check_temperature, _frozen_copy, kd_loss

if TYPE_CHECKING:
    from lifelong.train.loop import TrainContext

__all__ = ["BalancedRetrain", "BiCDistillation", "BiasCorrection", "UpdateMemory"]


def _output_rows(model: nn.Module, units: slice) -> list[tuple[nn.Module, slice]]:
    head = getattr(model, "head", None)
    rows = getattr(head, "output_rows", None)
    if not callable(rows):
        raise ValueError(f"this method needs a model whose head names its output layers "
                         f"(model.head.output_rows, a ContinualModel's); got "
                         f"{type(model).__name__}")
    return cast(list[tuple[nn.Module, slice]], rows(units))


@torch.no_grad()
def _logits(model: nn.Module, x: Tensor, units: slice, batch_size: int,
            device: torch.device) -> Tensor:
    """``model(x, units)`` in eval mode, in batches (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        parts = [model(x[i:i + batch_size].to(device), units=units)
                 for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts)


def _lbfgs(params: list[Tensor], objective: Any, max_iter: int) -> None:
    """Minimises ``objective()`` over ``params`` by full-batch L-BFGS (strong Wolfe line
    search); the problems here are convex."""
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9,
                            tolerance_change=1e-12)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return cast(Tensor, loss)

    with torch.enable_grad():
        opt.step(closure)


class UpdateMemory(Term):
    """Updates the exemplar memory at each task's end (Rebuffi et al. 2017, Alg. 2 lines 3-8).

    A data regime does not see the trained model, so the recipe pairs its
    :class:`~lifelong.data.regimes.Rehearsal` regime with this term; both hold the same
    :class:`~lifelong.data.memory.ExemplarMemory`, whose state the regime saves. After the
    update, every :class:`~lifelong.nn.nme.NMEClassifier` of the model gets the class means of
    the new memory (Alg. 1), so evaluation classifies by nearest mean of exemplars. No loss.
    """

    name = "memory"

    def __init__(self, memory: ExemplarMemory) -> None:
        self.memory = memory

    def on_task_end(self, ctx: TrainContext) -> None:
        model = ctx.model
        self.memory.update(model, ctx.scenario, ctx.task_id, ctx.generator, ctx.device)
        if not any(isinstance(m, NMEClassifier) for m in model.modules()):
            return
        means, present = self.memory.class_means(model, ctx.scenario, ctx.layout, ctx.device)
        lo = 0
        for layer, rows in _output_rows(model, slice(0, ctx.layout.num_units)):
            n = rows.stop - rows.start
            if isinstance(layer, NMEClassifier):
                layer.set_means(rows, means[lo:lo + n], present[lo:lo + n])
            lo += n


class BiCDistillation(Term):
    """BiC's stage-1 loss (Wu et al. 2019, Eq. 2-4): ``lambda L_d + (1 - lambda) L_c``.

    ``lambda = n / (n + m)`` with ``n`` old and ``m`` new classes (set at each task's start;
    0 at the first task); ``L_d`` distils a frozen snapshot of the previous model (taken at the
    task's start, bias correction included) over the ``n`` old classes' logits at temperature
    ``T``, through :func:`~lifelong.terms.distill.kd_loss` with a mask of the old units.
    The loop's ``ce`` term is ``L_c`` with weight 1, so this term adds
    ``lambda (L_d - L_c)`` (``kd_loss`` with ``soft_weight = lambda``, ``hard_weight = -lambda``):
    the sum is exactly Eq. 4, and the term's logged curve can be negative. Class-IL only.

    Args:
        temperature: ``T`` (paper: 2).
        t2: Multiply the soft term by ``T^2`` (the paper's Eq. 3 has no such factor).
    """

    name = "distill"

    def __init__(self, temperature: float = 2.0, t2: bool = False) -> None:
        _check_temperature(temperature)
        self.temperature, self.t2 = temperature, t2
        self.teacher: nn.Module | None = None
        self.lam = 0.0
        self.n_old = 0
        self._mask: Tensor | None = None

    def on_task_start(self, ctx: TrainContext) -> None:
        if ctx.layout.setting != "class":
            raise ValueError(f"BiC's distillation applies to the class-incremental setting, not "
                             f"{ctx.layout.setting}-IL")
        t = ctx.task_id
        self.n_old = ctx.layout.offsets[t]
        self.lam = self.n_old / (self.n_old + ctx.layout.sizes[t])  # Eq. 4
        self.teacher = None if t == 0 else _frozen_copy(ctx.model)
        self._mask = None

    def loss(self, ctx: TrainContext, batch: Batch) -> Tensor | None:
        if self.teacher is None:
            return None
        with torch.no_grad():
            teacher = self.teacher(batch.x, units=batch.units)
        if self._mask is None or self._mask.shape[0] != batch.logits.shape[1]:
            cols = torch.arange(batch.logits.shape[1], device=batch.logits.device)
            self._mask = cols + (batch.units.start or 0) < self.n_old  # the old classes
        return kd_loss(batch.logits, teacher, batch.local_targets(),
                       temperature=self.temperature, soft_weight=self.lam,
                       hard_weight=-self.lam, t2=self.t2, mask=self._mask)

    def on_task_end(self, ctx: TrainContext) -> None:
        self.teacher = None  # the next task snapshots the model again


class BiasCorrection(Term):
    """BiC's second stage (Wu et al. 2019, Sec. 4.2, Eq. 5-6), at each task's end from the second.

    On the held-out split of the recipe's :class:`~lifelong.data.regimes.Rehearsal` regime
    (balanced between old and new classes), with the model frozen in eval mode: the logits
    ``o`` are computed once (``no_grad``, so no BatchNorm statistic moves), then ``alpha``,
    ``beta`` minimise ``CE(y, softmax([o_old, alpha o_new + beta])) + beta_decay * beta^2 / 2``
    (the authors' code's offset penalty; 0 drops it), starting from ``alpha = 1``, ``beta = 0``.
    The result is written into the new classes' units of the
    :class:`~lifelong.nn.bias.BiasCorrectedLinear` output layer; the learned pair of every step
    is kept (:meth:`report`).

    Args:
        regime: The recipe's rehearsal regime (holds the held-out split).
        beta_decay: Weight of ``beta^2 / 2``.
        max_iter: L-BFGS iterations.
    """

    name = "bias"

    def __init__(self, regime: Rehearsal, beta_decay: float = 0.1, max_iter: int = 100) -> None:
        if regime.holdout <= 0:
            raise ValueError("BiC's bias correction needs a held-out split: a rehearsal regime "
                             "with holdout > 0 (e.g. 0.1, the paper's 9:1)")
        self.regime, self.beta_decay, self.max_iter = regime, beta_decay, max_iter
        self.alpha: list[float] = []
        self.beta: list[float] = []

    def on_task_end(self, ctx: TrainContext) -> None:
        t, layout, model = ctx.task_id, ctx.layout, ctx.model
        held = self.regime.held_out
        if t == 0 or held is None:
            self.alpha.append(1.0)
            self.beta.append(0.0)
            return
        new, seen = layout.task_units(t), layout.seen_units(t)
        layers = _output_rows(model, new)
        if not all(isinstance(layer, BiasCorrectedLinear) for layer, _ in layers):
            raise ValueError("BiC's bias correction needs BiasCorrectedLinear output layers "
                             "(the 'bic' recipe's layer)")
        o = _logits(model, held.x, seen, ctx.config.eval_batch_size, ctx.device)
        y = held.targets.to(o.device)
        n_old = layout.offsets[t]
        alpha = torch.ones((), device=o.device, requires_grad=True)
        beta = torch.zeros((), device=o.device, requires_grad=True)

        def objective() -> Tensor:
            q = torch.cat([o[:, :n_old], alpha * o[:, n_old:] + beta], dim=1)  # Eq. 5
            return F.cross_entropy(q, y) + self.beta_decay * beta * beta / 2  # Eq. 6

        _lbfgs([alpha, beta], objective, self.max_iter)
        a, b = float(alpha.detach()), float(beta.detach())
        for layer, rows in layers:
            cast(BiasCorrectedLinear, layer).set_correction(rows, a, b)
        self.alpha.append(a)
        self.beta.append(b)

    def report(self) -> dict[str, Any]:
        """The learned ``alpha``, ``beta`` of every step (1, 0 at the first)."""
        return {"alpha": list(self.alpha), "beta": list(self.beta)}

    def state_dict(self) -> dict[str, Any]:
        return self.report()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha, self.beta = list(state["alpha"]), list(state["beta"])


class BalancedRetrain(Term):
    """The upper bound of BiC's ablation (Wu et al. 2019, Table 6, "FC retrain"): at each task's
    end the last layer's rows of the classes seen so far are retrained on the training data of
    *all* those classes, balanced (every class subsampled to the smallest class's count, at
    random from the run's generator), with the backbone frozen in eval mode.

    The features are computed once (``no_grad``); the rows ``(W, b)`` are then fitted from their
    current values by full-batch L-BFGS on the cross-entropy plus ``weight_decay / 2 ||W||^2``
    (a strictly convex multinomial logistic regression). The decay matters: the first step's two
    classes are linearly separable in feature space, where the unregularised optimum is at
    infinity (L-BFGS took ``||W||`` from 1.9 to 445 on SplitMNIST), and the next step then starts
    from, and distils, logits hundreds of times too large.

    Args:
        max_iter: L-BFGS iterations.
        weight_decay: L2 weight of the retrained rows' weights.
    """

    name = "fc-retrain"

    def __init__(self, max_iter: int = 100, weight_decay: float = 1e-3) -> None:
        self.max_iter, self.weight_decay = max_iter, weight_decay

    def on_task_end(self, ctx: TrainContext) -> None:
        t, layout, model = ctx.task_id, ctx.layout, ctx.model
        seen = layout.seen_units(t)
        layers = _output_rows(model, seen)
        layer, rows = layers[0]
        if len(layers) != 1 or not isinstance(layer, nn.Linear):
            raise ValueError("the FC-retrain upper bound needs one nn.Linear output layer over "
                             "the classes seen (a single head)")
        x, _, targets, _ = task_tensors(ctx.scenario, layout, list(range(t + 1)))
        counts = torch.bincount(targets)
        keep = rank_within(targets, torch.rand(targets.shape[0], generator=ctx.generator))
        keep = keep < int(counts[counts > 0].min())
        h = compute_features(model, x[keep], ctx.config.eval_batch_size, ctx.device)
        y = targets[keep].to(h.device) - (seen.start or 0)
        w = layer.weight[rows].detach().clone().requires_grad_(True)
        b = (layer.bias[rows].detach().clone() if layer.bias is not None
             else torch.zeros(w.shape[0], device=w.device)).requires_grad_(True)
        decay = self.weight_decay / 2

        def objective() -> Tensor:
            return F.cross_entropy(F.linear(h, w, b), y) + decay * w.square().sum()

        _lbfgs([w, b], objective, self.max_iter)
        with torch.no_grad():
            layer.weight[rows] = w
            if layer.bias is not None:
                layer.bias[rows] = b
