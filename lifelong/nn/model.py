"""The model every method trains: a backbone and a head over a layout's output units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from torch import Tensor, nn

from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario
from lifelong.nn.backbones import build_backbone
from lifelong.nn.heads import LayerFactory, MultiHead, SingleHead, linear_layer

HEADS = ("auto", "multi", "single")


@dataclass
class ModelConfig:
    """Model options (``model.*`` on the command line).

    Attributes:
        arch: Backbone: ``mlp``, ``cnn``, ``resnet20`` or ``resnet32``.
        hidden: Hidden widths of the MLP (the CNN uses the last as its FC width).
        head: ``multi`` (one output layer per task), ``single`` (one layer over all units, the
            growing head of class-IL) or ``auto`` (multi for task-IL, single otherwise).
        dropout: Dropout after each hidden layer of the MLP.
    """

    arch: str = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    head: str = "auto"
    dropout: float = 0.0

    def validate(self, layout: Layout) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown model.head {self.head!r}; valid: {', '.join(HEADS)}")
        if self.head == "multi" and layout.setting == "domain":
            raise ValueError(
                "model.head=multi does not apply to the domain-incremental setting (all tasks "
                "share one output layer there); use model.head=single or auto"
            )

    def resolved_head(self, layout: Layout) -> str:
        if self.head != "auto":
            return self.head
        return "multi" if layout.setting == "task" else "single"


class ContinualModel(nn.Module):
    """Backbone + head. ``forward(x, units, targets)`` returns the logits of ``units`` only.

    Args:
        backbone: Maps inputs to features; has ``out_features`` and ``fc_modules()``.
        head: :class:`SingleHead` or :class:`MultiHead`.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def num_units(self) -> int:
        return cast(int, self.head.num_units)

    @property
    def uses_targets(self) -> bool:
        """Whether some layer's training forward needs labels: a submodule declaring
        ``uses_targets = True`` (DHP-Softmax's Hebbian update). The training loop passes
        ``targets=`` only then."""
        return any(getattr(m, "uses_targets", False) for m in self.modules() if m is not self)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor, units: slice | None = None,
                targets: Tensor | None = None) -> Tensor:
        """Logits of the output units in ``units`` (all by default).

        Args:
            x: Inputs ``[B, C, H, W]``.
            units: Contiguous range of output units to compute.
            targets: Output-unit targets ``[B]`` (-1: none); used only by layers that declare
                ``uses_targets`` (e.g. DHP-Softmax's Hebbian update), in training mode.
        """
        return self.head(self.backbone(x), units=units, targets=targets)


def build_model(scenario: Scenario, layout: Layout, config: ModelConfig,
                layer: LayerFactory | None = None) -> ContinualModel:
    """Builds the model of a run (call ``torch.manual_seed`` first for a reproducible init).

    ``layer`` builds each output layer (a recipe's ``layer``, e.g. DHP-Softmax); ``None`` means
    ``nn.Linear``.
    """
    config.validate(layout)
    layer = layer or linear_layer
    backbone = build_backbone(config.arch, scenario.input_shape, config.hidden, config.dropout)
    features = cast(int, backbone.out_features)
    if config.resolved_head(layout) == "multi":
        head: nn.Module = MultiHead(features, layout.sizes, layer)
    else:
        head = SingleHead(features, layout.num_units, layer)
    return ContinualModel(backbone, head)
