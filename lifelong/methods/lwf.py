"""Learning without Forgetting (Li & Hoiem 2016, "Learning without Forgetting", ECCV / TPAMI).

Before a new task, the current model's responses on the new data become the targets of the old
output units (:class:`~lifelong.terms.distill.LwF`: a frozen snapshot run on each batch, the
distillation loss :func:`~lifelong.terms.distill.kd_loss` at ``T = 2`` weighted by
``lambda_o = 1``). Each task first runs a warm-up: only the new task's head trains, everything
else frozen; then all parameters train jointly (Sec. 3, "Training procedure").

Where the warm-up applies: a model whose new task has an output module of its own (task-IL's
multi-head network, the paper's setting). In class- and domain-IL the output layer is shared by
all tasks, so there is no separate new head to warm up and the warm-up is skipped (the old
classes' rows of the shared layer are what LwF's loss protects).

The paper's baselines are the foundation's ``finetune``, ``finetune-fc``, ``feature-extraction``
and ``joint`` (:mod:`lifelong.methods.baselines`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lifelong.methods.base import Recipe, Warmup, modules_outside
from lifelong.methods.registry import register_method
from lifelong.terms.distill import LwF


def new_head_only(model: nn.Module, task_id: int) -> list[nn.Module] | None:
    """Every module except the new task's head (LwF's warm-up), or ``None`` when there is no
    warm-up: the first task, or an output layer shared with the previous task.

    Raises:
        ValueError: The model's head does not say which modules belong to a task.
    """
    if task_id == 0:
        return None
    head = getattr(model, "head", None)
    task_modules = getattr(head, "task_modules", None)
    if task_modules is None:
        raise ValueError(f"LwF's warm-up needs a model whose .head has task_modules(t) (a "
                         f"ContinualModel), got {type(model).__name__}; set lwf.warmup_epochs=0")
    new = task_modules(task_id)
    if any(m is old for m in new for old in task_modules(task_id - 1)):
        return None
    return modules_outside(model, new)


@dataclass
class LwFConfig:
    """LwF hyperparameters (``lwf.*``; Li & Hoiem 2016).

    Attributes:
        temperature: ``T`` of the old tasks' distillation loss (paper: 2).
        lam: ``lambda_o``, the weight of the old tasks' loss (paper: 1).
        t2: Multiply the soft term by ``T^2`` (Hinton et al. 2015). The paper's loss does not;
            van de Ven & Tolias (2019) do (``configs/split-mnist-three-scenarios/lwf.toml``).
        warmup_epochs: Epochs of the warm-up that trains only the new head (0: none, as van de
            Ven & Tolias). The paper trains it "to convergence"; 1 epoch is the default here.
        per_old_task: Weigh the old classes' loss in class- and domain-IL by the number of old
            tasks, as van de Ven & Tolias (:class:`~lifelong.terms.distill.LwF`); task-IL's
            loss, a sum over the old heads, is the same either way.
        with_new_units: In class-IL, distil with the student's softmax over the new classes'
            units too, their targets 0 (van de Ven & Tolias; :class:`~lifelong.terms.distill.LwF`).
    """

    temperature: float = 2.0
    lam: float = 1.0
    t2: bool = False
    warmup_epochs: float = 1.0
    per_old_task: bool = False
    with_new_units: bool = False


@register_method("lwf", hparams=LwFConfig,
                 description="learning without forgetting: the previous model's responses as "
                 "targets of the old heads, after a warm-up of the new head (Li & Hoiem 2016)")
def lwf(hp: LwFConfig) -> Recipe:
    if hp.warmup_epochs < 0:
        raise ValueError(f"lwf.warmup_epochs must be >= 0, got {hp.warmup_epochs}")
    warmup = Warmup(hp.warmup_epochs, new_head_only) if hp.warmup_epochs > 0 else None
    term = LwF(hp.temperature, hp.lam, hp.t2, hp.per_old_task, hp.with_new_units)
    return Recipe(name="lwf", terms=[term], warmup=warmup, warmup_name="lwf")
