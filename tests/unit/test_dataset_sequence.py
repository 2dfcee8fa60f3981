"""One task per dataset (Li & Hoiem 2016's two-dataset protocol): labels, heads, errors."""

from __future__ import annotations

import os

import pytest
import torch

from lifelong.data.datasets import ArrayDataset
from lifelong.data.layout import Layout
from lifelong.data.scenarios import (
    BenchmarkOptions,
    build_scenario,
    dataset_sequence_scenario,
    get_benchmark,
)


def _dataset(name: str, classes: int, n: int, side: int = 4, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, side, side), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    return ArrayDataset(name, x, y, x[: n // 2], y[: n // 2], classes,
                        tuple(f"c{i}" for i in range(classes)), 255.0)


def test_labels_are_offset_per_dataset_and_heads_follow() -> None:
    a, b = _dataset("a", 3, 30), _dataset("b", 4, 40, seed=1)
    s = dataset_sequence_scenario([a, b], "a-to-b", BenchmarkOptions(), seed=0)
    assert [t.name for t in s.tasks] == ["a", "b"]
    assert s.tasks[0].classes == (0, 1, 2) and s.tasks[1].classes == (3, 4, 5, 6)
    assert s.num_classes == 7 and s.class_names[3] == "b:c0"
    assert torch.equal(s.tasks[1].train_y, b.train_y + 3)
    assert torch.allclose(s.tasks[1].test_x, b.test_x.float() / 255.0)
    layout = Layout.for_scenario(s, "task")
    assert layout.sizes == (3, 4) and layout.task_units(1) == slice(3, 7)
    half = dataset_sequence_scenario([a, b], "a-to-b", BenchmarkOptions(train_fraction=0.5), 0)
    assert half.tasks[0].num_train == 15 and half.tasks[1].num_train == 20
    assert half.tasks[1].num_test == 20  # the test sets stay whole


def test_bad_sequences_are_explained() -> None:
    with pytest.raises(ValueError, match="at least two datasets"):
        dataset_sequence_scenario([_dataset("a", 3, 30)], "x", BenchmarkOptions(), 0)
    with pytest.raises(ValueError, match="differ in shape"):
        dataset_sequence_scenario([_dataset("a", 3, 30), _dataset("b", 3, 30, side=5)], "x",
                                  BenchmarkOptions(), 0)


def test_two_dataset_benchmarks_are_registered_with_the_protocol() -> None:
    for name in ("fashion-mnist-to-mnist", "mnist-to-fashion-mnist"):
        spec = get_benchmark(name)
        assert spec.defaults["model.arch"] == "cnn"
        assert spec.defaults["train.weight_decay"] == 5e-4


@pytest.mark.skipif(not os.environ.get("LIFELONG_DATA"),
                    reason="real MNIST/Fashion-MNIST not available: set LIFELONG_DATA")
def test_fashion_mnist_to_mnist_on_real_data() -> None:
    s = build_scenario("fashion-mnist-to-mnist", BenchmarkOptions(train_fraction=0.1), 0)
    assert [t.name for t in s.tasks] == ["fashion-mnist", "mnist"]
    assert s.tasks[0].num_train == 6000 and s.tasks[1].num_test == 10000
    assert s.tasks[1].classes == tuple(range(10, 20))
