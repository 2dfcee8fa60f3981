"""Knowledge distillation: one ``kd_loss`` for KD, LwF and (later) iCaRL and BiC.

Hinton, Vinyals & Dean (2015, "Distilling the Knowledge in a Neural Network", Sec. 2): the
softened distribution ``q_i = exp(z_i / T) / sum_j exp(z_j / T)`` of a teacher is the target of
the student's softened distribution; the soft term's gradients scale as ``1 / T^2``, so it is
multiplied by ``T^2`` to keep its weight relative to the hard (label) term when ``T`` changes.

Li & Hoiem (2016, "Learning without Forgetting", Eq. 2) raise the recorded probabilities to the
power ``1 / T`` and renormalise; that equals ``softmax(z / T)``, so LwF's "modified
cross-entropy" is the soft term below with ``t2=False`` (tests/unit/test_distill.py checks the
identity). DESIGN.md, principle 3: one implementation of the equation.

The soft term is computed as ``KL(q_teacher || q_student)``: the cross-entropy minus the
teacher's entropy, which does not depend on the student. It has the cross-entropy's gradient
and is exactly 0 when the student matches the teacher.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.terms.base import Batch, Term

if TYPE_CHECKING:
    from lifelong.train.loop import TrainContext

__all__ = ["LwF", "KnowledgeDistillation", "kd_loss", "soft_targets"]


def soft_targets(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``softmax(logits / T)`` over the last dimension (Hinton et al. 2015, Eq. 1)."""
    _check_temperature(temperature)
    return F.softmax(logits / temperature, dim=-1)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"the distillation temperature must be positive, got {temperature}")


def kd_loss(
    student: Tensor,
    teacher: Tensor | None = None,
    targets: Tensor | None = None,
    *,
    temperature: float = 1.0,
    soft_weight: float = 1.0,
    hard_weight: float = 1.0,
    t2: bool = True,
    mask: Tensor | None = None,
) -> Tensor:
    """Distillation loss: soft targets of a teacher plus hard labels (Hinton et al. 2015, Sec. 2).

    ``soft_weight * s * KL(softmax(teacher / T) || softmax(student / T)) + hard_weight *
    CE(targets, softmax(student))``, with ``s = T^2`` when ``t2`` (Hinton et al.: keeps the soft
    gradients' scale independent of ``T``) and ``s = 1`` otherwise (LwF's modified
    cross-entropy, Li & Hoiem 2016, Eq. 2). Both terms are means over the batch.

    Args:
        student: Student logits ``[B, C]``.
        teacher: Teacher logits ``[B, C]`` (treated as constants), or ``[B, K]`` with ``K < C``:
            a teacher over the first ``K`` units only, the student's other units then get target
            probability 0 (the student's softmax still covers all ``C``; van de Ven & Tolias
            2019 distil class-IL's old classes so, the new classes' units padded with zeros);
            ``None``: no soft term.
        targets: Class indices ``[B]`` in ``[0, C)`` for the hard term; ``None``: no hard term.
        temperature: ``T > 0`` of the soft term (the hard term always uses ``T = 1``).
        soft_weight: Weight of the soft term (Hinton: a weighted average with the hard term;
            LwF: ``lambda_o``; BiC: ``n / (n + m)``).
        hard_weight: Weight of the hard term.
        t2: Multiply the soft term by ``T^2``.
        mask: Optional bool ``[C]``: the output units that take part in the soft term (both
            distributions are renormalised over them; LwF and BiC distil the old classes only).
            The hard term uses every unit.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: Neither a teacher nor targets, mismatched shapes, a non-positive
            temperature, or a mask selecting no unit.
    """
    _check_temperature(temperature)
    if student.dim() != 2:
        raise ValueError(f"kd_loss: student logits must be [B, C], got {list(student.shape)}")
    if teacher is None and targets is None:
        raise ValueError("kd_loss needs teacher logits (soft term), targets (hard term) or both")
    loss = student.new_zeros(())
    if teacher is not None:
        k = teacher.shape[1] if teacher.dim() == 2 else -1
        if teacher.shape[0] != student.shape[0] or not 0 < k <= student.shape[1]:
            raise ValueError(f"kd_loss: teacher logits {list(teacher.shape)} must have the same "
                             f"shape as the student logits {list(student.shape)}, or fewer units "
                             "(the first ones)")
        if k < student.shape[1] and mask is not None:
            raise ValueError("kd_loss: give either a mask or a teacher over fewer units, not both")
        s, t = student, teacher.detach()
        if mask is not None:
            if mask.dtype != torch.bool or mask.shape != (student.shape[1],):
                raise ValueError(f"kd_loss: mask must be a bool tensor of shape "
                                 f"[{student.shape[1]}] (one flag per output unit), got "
                                 f"{mask.dtype} {list(mask.shape)}")
            if not bool(mask.any()):
                raise ValueError("kd_loss: the mask selects no output unit")
            s, t = s[:, mask], t[:, mask]
        log_q_s = F.log_softmax(s / temperature, dim=1)[:, :k]  # units past k: target 0
        log_q_t = F.log_softmax(t / temperature, dim=1)
        soft = F.kl_div(log_q_s, log_q_t, reduction="batchmean", log_target=True)
        scale = soft_weight * (temperature * temperature if t2 else 1.0)
        loss = loss + scale * soft
    if targets is not None:
        if targets.shape != (student.shape[0],):
            raise ValueError(f"kd_loss: targets must be [B] = [{student.shape[0]}], got "
                             f"{list(targets.shape)}")
        loss = loss + hard_weight * F.cross_entropy(student, targets)
    return loss


def _frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with no parameter requiring a gradient (the teacher)."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class LwF(Term):
    """Learning without Forgetting (Li & Hoiem 2016, Sec. 3, Eq. 2): the previous model's
    responses on the new task's data are the targets of the old output units.

    At each task's start (from the second task on) a frozen snapshot of the model is kept; each
    step it is run on the batch (no gradient) and ``lam * kd_loss(student, teacher, T, t2)`` is
    added for every group of old units: each old task's head in task-IL (its own softmax), the
    units of all old classes in class-IL (one softmax, as van de Ven & Tolias 2019), and every
    unit in domain-IL (the units are shared). The snapshot gives the same targets as recording
    ``Y_o`` once per task (the paper's wording) and works with any data regime; it is rebuilt
    from the model at the next task's start, so a resumed run needs no saved copy.

    Args:
        temperature: ``T`` (paper: 2, chosen on held-out data).
        lam: ``lambda_o``, the weight of each old task's loss (paper: 1).
        t2: Multiply the soft term by ``T^2`` (Hinton et al. 2015). The paper's loss has no such
            factor (default ``False``); van de Ven & Tolias (2019) use it.
        with_new_units: In class-IL, the student's softmax of the distillation also covers the
            new task's units, whose target probability is 0 (van de Ven & Tolias 2019: the
            teacher's distribution padded with zeros): on the new data it also pulls the new
            classes' probabilities down. ``False`` (default): the old classes' units only, one
            softmax over them (Li & Hoiem's old-task outputs). No effect in task- and domain-IL.
        per_old_task: Weigh a group of units by the number of old tasks it covers, so that
            every old task counts ``lam`` in every setting: task-IL's heads are one task each
            (no change), the one group of class- and domain-IL covers ``t`` old tasks at task
            ``t``. This is van de Ven & Tolias' weighting (their ``1/(t+1)`` on the new task's
            loss against ``t/(t+1)`` on the distillation, up to a constant factor). ``False``
            (default): each group counts ``lam``.
    """

    name = "lwf"

    def __init__(self, temperature: float = 2.0, lam: float = 1.0, t2: bool = False,
                 per_old_task: bool = False, with_new_units: bool = False) -> None:
        _check_temperature(temperature)
        if lam < 0:
            raise ValueError(f"lwf.lam must be >= 0, got {lam}")
        self.temperature, self.lam, self.t2 = temperature, lam, t2
        self.per_old_task, self.with_new_units = per_old_task, with_new_units
        self.teacher: nn.Module | None = None
        self.groups: list[slice] = []
        self.student_stop: int | None = None  # class-IL with_new_units: the student's last unit
        self.weights: list[float] = []

    def on_task_start(self, ctx: TrainContext) -> None:
        t, layout = ctx.task_id, ctx.layout
        self.teacher = None if t == 0 else _frozen_copy(ctx.model)
        if t == 0:
            self.groups = []
        elif layout.setting == "task":
            self.groups = [layout.task_units(s) for s in range(t)]
        elif layout.setting == "class":
            self.groups = [slice(0, layout.offsets[t])]
        else:
            self.groups = [slice(0, layout.num_units)]
        self.student_stop = (layout.seen_units(t).stop
                             if self.with_new_units and layout.setting == "class" and t else None)
        covered = 1 if layout.setting == "task" else t  # old tasks behind each group
        self.weights = [self.lam * (covered if self.per_old_task else 1)] * len(self.groups)

    def loss(self, ctx: TrainContext, batch: Batch) -> Tensor | None:
        if self.teacher is None or not self.groups:
            return None
        span = slice(self.groups[0].start, self.groups[-1].stop)
        student = batch.logits_for(span if self.student_stop is None
                                   else slice(span.start, self.student_stop))
        if not student.requires_grad:  # nothing it could move (the warm-up): no teacher pass
            return None
        with torch.no_grad():
            teacher = self.teacher(batch.x, units=span)
        if self.student_stop is not None:  # one group, the student over the new units too
            return kd_loss(student, teacher, temperature=self.temperature,
                           soft_weight=self.weights[0], t2=self.t2)
        lo = span.start or 0
        total = student.new_zeros(())
        for g, w in zip(self.groups, self.weights):  # one softmax per old head (a few tasks)
            cols = slice(g.start - lo, g.stop - lo)
            total = total + kd_loss(student[:, cols], teacher[:, cols],
                                    temperature=self.temperature, soft_weight=w, t2=self.t2)
        return total

    def on_task_end(self, ctx: TrainContext) -> None:
        self.teacher = None  # the next task snapshots the model again

    def state_dict(self) -> dict[str, Any]:
        return {}


class KnowledgeDistillation(Term):
    """The soft term of knowledge distillation from a fixed teacher (Hinton et al. 2015, Sec. 2).

    The loop's cross-entropy is the hard term; this term adds
    ``soft_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))`` on the batch's
    units (``t2=False`` drops the ``T^2``). Used to compress a large teacher, or an ensemble
    (the teacher's logits are then the mean of its members' logits), into a small student.

    Args:
        teacher: The teacher, called as ``teacher(x, units=...)`` (a
            :class:`~lifelong.nn.model.ContinualModel`) or ``teacher(x)``; kept frozen in eval
            mode.
        temperature: ``T`` (Hinton et al. use 20 on MNIST).
        soft_weight: Weight of the soft term.
        t2: Multiply the soft term by ``T^2``.
    """

    name = "kd"

    def __init__(self, teacher: nn.Module, temperature: float = 20.0, soft_weight: float = 1.0,
                 t2: bool = True) -> None:
        _check_temperature(temperature)
        self.teacher = _frozen_copy(teacher)
        self.temperature, self.soft_weight, self.t2 = temperature, soft_weight, t2

    def loss(self, ctx: TrainContext, batch: Batch) -> Tensor:
        with torch.no_grad():
            teacher = self.teacher(batch.x, units=batch.units)
        return kd_loss(batch.logits, teacher, temperature=self.temperature,
                       soft_weight=self.soft_weight, t2=self.t2)

    def to(self, device: torch.device | str) -> KnowledgeDistillation:
        self.teacher.to(device)
        return self
