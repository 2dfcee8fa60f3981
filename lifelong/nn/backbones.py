"""Feature extractors: an MLP, a small CNN, ResNet-32 and ResNet-20 (He et al. 2016, CIFAR
variant; ResNet-20 is ResNet-32 with 3 blocks per stage, the "ResNet18" of Tao et al. 2020).

Every backbone maps inputs ``[B, C, H, W]`` to features ``[B, out_features]`` and splits its
modules into a lower part and a fully connected part (:meth:`fc_modules`), which the
fine-tune-FC baseline of Li & Hoiem (2016, "Learning without Forgetting") needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """Fully connected ReLU network ``in -> hidden[0] -> ... -> hidden[-1]``.

    Its "fully connected part" for fine-tune-FC is the last hidden layer (the analogue of
    AlexNet's fc7 in Li & Hoiem 2016); the earlier layers play the role of the conv layers.

    Args:
        in_features: Flattened input size.
        hidden: Widths of the hidden layers (at least one).
        dropout: Dropout probability after each hidden layer (0 disables).
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.0):
        super().__init__()
        if not hidden:
            raise ValueError("model.hidden needs at least one hidden width, e.g. [256, 256]")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            if int(h) < 1:
                raise ValueError(f"model.hidden widths must be positive, got {list(hidden)}")
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.flatten(1))

    def fc_modules(self) -> list[nn.Module]:
        """The last hidden layer (trained by fine-tune-FC)."""
        linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        return [linears[-1]]


class SmallCNN(nn.Module):
    """Two conv blocks (conv-ReLU-maxpool) and one fully connected layer.

    Args:
        in_channels: Input channels (1 for MNIST, 3 for CIFAR).
        image_size: Input height/width (square).
        channels: Channels of the two conv blocks.
        hidden: Width of the fully connected layer.
    """

    def __init__(self, in_channels: int, image_size: int, channels: Sequence[int] = (32, 64),
                 hidden: int = 256):
        super().__init__()
        c1, c2 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, hidden), nn.ReLU())
        self.out_features = hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x))

    def fc_modules(self) -> list[nn.Module]:
        return [self.fc]


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet32(nn.Module):
    """ResNet-32 for 32x32 images (He et al. 2016, Sec. 4.2: 3 stages of 5 basic blocks with
    16/32/64 channels, global average pooling), the backbone of iCaRL and BiC on CIFAR-100.
    It has no fully connected layer of its own, so fine-tune-FC trains the heads only.
    """

    def __init__(self, in_channels: int = 3, blocks_per_stage: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        layers: list[nn.Module] = []
        cin = 16
        for i, cout in enumerate((16, 32, 64)):
            for b in range(blocks_per_stage):
                layers.append(_BasicBlock(cin, cout, 2 if (b == 0 and i > 0) else 1))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.out_features = 64

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def fc_modules(self) -> list[nn.Module]:
        return []


ARCHS = ("mlp", "cnn", "resnet32", "resnet20")


def build_backbone(arch: str, input_shape: Sequence[int], hidden: Sequence[int],
                   dropout: float = 0.0) -> nn.Module:
    """Builds a backbone by name for inputs of ``input_shape`` ``(C, H, W)``."""
    c, h, w = input_shape
    if arch == "mlp":
        return MLP(c * h * w, hidden, dropout)
    if arch == "cnn":
        if h != w:
            raise ValueError(f"model.arch=cnn needs square images, got {h}x{w}")
        return SmallCNN(c, h, hidden=int(hidden[-1]) if hidden else 256)
    if arch == "resnet32":
        return ResNet32(c)
    if arch == "resnet20":  # He et al. 2016, Sec. 4.2 with n = 3: TOPIC's CIFAR backbone
        return ResNet32(c, blocks_per_stage=3)
    raise ValueError(f"unknown model.arch {arch!r}; valid: {', '.join(ARCHS)}")
