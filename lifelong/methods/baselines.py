"""The baselines of Li & Hoiem (2016, "Learning without Forgetting", Sec. 3 and Fig. 2).

* ``finetune``: every parameter trained on the new task only (old heads get no gradient).
* ``joint``: every parameter trained on all data of the tasks seen so far (the upper bound).
* ``feature-extraction``: after the first task the backbone θ_s is frozen; only heads train.
* ``finetune-fc``: after the first task only the backbone's fully connected part (the MLP's last
  hidden layer; a CNN's FC block) and the heads train.
"""

from __future__ import annotations

from torch import nn

from lifelong.data.regimes import Joint
from lifelong.methods.base import Recipe, modules_outside
from lifelong.methods.registry import register_method


@register_method("finetune", description="plain fine-tuning on each new task (Li & Hoiem 2016)")
def finetune(_: None) -> Recipe:
    return Recipe(name="finetune")


@register_method("joint", description="joint training on all data seen so far: the upper bound "
                 "(Li & Hoiem 2016)")
def joint(_: None) -> Recipe:
    return Recipe(name="joint", data=Joint())


def _backbone(model: nn.Module) -> nn.Module:
    """``model.backbone`` (a :class:`~lifelong.nn.model.ContinualModel`'s), with a clear error
    for other models."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"this freezing rule needs a model with a .backbone module (a "
                         f"ContinualModel), got {type(model).__name__}")
    return backbone


def _freeze_backbone(model: nn.Module, task_id: int) -> list[nn.Module]:
    return [_backbone(model)] if task_id > 0 else []


@register_method("feature-extraction", description="backbone frozen after the first task, only "
                 "heads trained (Li & Hoiem 2016)")
def feature_extraction(_: None) -> Recipe:
    return Recipe(name="feature-extraction", freeze=_freeze_backbone,
                  freeze_name="feature-extraction")


def _freeze_below_fc(model: nn.Module, task_id: int) -> list[nn.Module]:
    if task_id == 0:
        return []
    backbone = _backbone(model)
    return modules_outside(backbone, backbone.fc_modules())  # type: ignore[operator]


@register_method("finetune-fc", description="after the first task only the fully connected layers "
                 "and heads trained (Li & Hoiem 2016)")
def finetune_fc(_: None) -> Recipe:
    return Recipe(name="finetune-fc", freeze=_freeze_below_fc, freeze_name="finetune-fc")
