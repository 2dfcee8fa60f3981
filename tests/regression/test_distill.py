"""Knowledge distillation on MNIST (Hinton et al. 2015), a small protocol that fits the CI budget:
the seed's data-efficiency claim, soft targets let a small student learn from 1 % of MNIST
(606 images: 1 % of each class, rounded up) far better than the hard labels of the same images do.

Protocol: teacher 2x400 (dropout 0.2, no jitter, 2 epochs on all 60,000 images, Adam 1e-3,
batch 100); students 2x100, 150 epochs (1,050 steps) over the stratified 1 % transfer set,
T = 20, soft and hard weights 1. Measured (seed 0): teacher 256 test errors, student alone 1192,
distilled 828; at 40 epochs (280 steps) the soft targets had not helped yet (1211 vs 1207), so
the number of steps matters. The README's KD section has the full tables (2x1200 / 2x800, 3
seeds).
"""

from __future__ import annotations

from lifelong.data.scenarios import BenchmarkOptions
from lifelong.train.distill import DistillConfig, distill
from lifelong.train.loop import TrainConfig


def test_soft_targets_beat_hard_labels_on_one_percent_of_mnist(mnist_dir: str) -> None:
    config = DistillConfig(
        benchmark="mnist", seeds=(0,), teacher_hidden=(400, 400), teacher_dropout=0.2,
        teacher_epochs=2, jitter=0, student_hidden=(100, 100), student_epochs=150,
        transfer_fraction=0.01,
        train=TrainConfig(optimizer="adam", lr=1e-3, batch_size=100, progress="off"),
        data=BenchmarkOptions(data_dir=mnist_dir))
    teacher, student, distilled = (r["distill"] for r in distill(config, out_root=None))
    assert student["train_size"] == distilled["train_size"] == 606  # ceil(1 % of each class)
    errors = {r["role"]: r["test"]["errors"] for r in (teacher, student, distilled)}
    assert errors["teacher"] < 400, errors
    assert errors["distilled"] < 0.85 * errors["student"], errors
