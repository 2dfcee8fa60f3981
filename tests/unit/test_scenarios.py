"""Scenario invariants (lifelong.data.scenarios): split, permuted, imbalanced permuted, rotated.

Everything random about a scenario is drawn once, at build time, from the seed: these tests
check that class orders, permutations and keep fractions are pure functions of the seed (also
across processes), that split tasks partition the labels, and that the data of each task is what
the docstrings promise. The embedded ``digits`` dataset stands in for MNIST (same builders);
tests on real MNIST run only when ``LIFELONG_DATA`` is set.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lifelong.data.datasets import ArrayDataset
from lifelong.data.scenarios import (
    BenchmarkOptions,
    Scenario,
    build_scenario,
    list_benchmarks,
    permuted_scenario,
    rotate,
    rotated_scenario,
    split_scenario,
)

REPO = Path(__file__).resolve().parents[2]


def scaled(x: torch.Tensor, ds: ArrayDataset) -> torch.Tensor:
    """Raw dataset images as the scenarios present them (no normalisation)."""
    return x.float() / ds.scale


def perm_digest(scenario: Scenario) -> list[str | None]:
    """sha256 of every task's permutation (None for the identity task)."""
    return [None if t.perm is None else hashlib.sha256(t.perm.numpy().tobytes()).hexdigest()
            for t in scenario.tasks]


# -------------------------------------------------------------------------------- split


def test_split_tasks_partition_the_labels(split_digits: Scenario, digits: ArrayDataset) -> None:
    sc = split_digits
    assert len(sc) == 5 and sc.num_classes == 10
    assert sc.info["class_order"] == list(range(10))
    seen: set[int] = set()
    for t, task in enumerate(sc.tasks):
        assert task.id == t
        assert task.classes == (2 * t, 2 * t + 1)
        assert seen.isdisjoint(task.classes)
        seen.update(task.classes)
        assert set(task.train_y.unique().tolist()) == set(task.classes)
        assert set(task.test_y.unique().tolist()) == set(task.classes)
        assert task.train_x.shape[1:] == (1, 8, 8) and task.train_x.dtype == torch.float32
        assert task.perm is None
    assert seen == set(range(10))
    # every sample of the dataset lands in exactly one task
    assert sum(t.num_train for t in sc.tasks) == digits.train_y.shape[0] == 1352
    assert sum(t.num_test for t in sc.tasks) == digits.test_y.shape[0] == 445
    # raw pixels in [0, 1] by default (data.normalize=False)
    assert float(sc.tasks[0].train_x.min()) == 0.0 and float(sc.tasks[0].train_x.max()) == 1.0


def test_split_natural_order_keeps_images_with_their_labels(split_digits: Scenario,
                                                            digits: ArrayDataset) -> None:
    task = split_digits.tasks[3]  # labels 6 and 7
    for label in task.classes:
        expected = scaled(digits.train_x[digits.train_y == label], digits)
        assert torch.equal(task.train_x[task.train_y == label], expected)
    assert task.name == f"{digits.class_names[6]}/{digits.class_names[7]}"


def test_random_class_order_is_drawn_from_the_seed(digits: ArrayDataset) -> None:
    opts = BenchmarkOptions(class_order="random")
    a = split_scenario(digits, "split-digits", opts, seed=0, default_tasks=5)
    b = split_scenario(digits, "split-digits", opts, seed=0, default_tasks=5)
    c = split_scenario(digits, "split-digits", opts, seed=1, default_tasks=5)
    order = a.info["class_order"]
    assert sorted(order) == list(range(10))
    assert order != list(range(10))
    assert b.info["class_order"] == order
    assert c.info["class_order"] != order
    # labels are renumbered in class order: new label k holds the images of original order[k]
    for task in a.tasks:
        for k in task.classes:
            expected = scaled(digits.train_x[digits.train_y == order[k]], digits)
            assert torch.equal(task.train_x[task.train_y == k], expected)
            expected_test = scaled(digits.test_x[digits.test_y == order[k]], digits)
            assert torch.equal(task.test_x[task.test_y == k], expected_test)
    assert a.class_names == tuple(digits.class_names[o] for o in order)
    # the data of two builds with the same seed is identical
    for ta, tb in zip(a.tasks, b.tasks):
        assert torch.equal(ta.train_x, tb.train_x) and torch.equal(ta.train_y, tb.train_y)


def test_split_normalize_standardises_with_training_statistics(digits: ArrayDataset) -> None:
    sc = split_scenario(digits, "split-digits", BenchmarkOptions(normalize=True), 0, 5)
    train = torch.cat([t.train_x for t in sc.tasks])
    assert abs(float(train.mean())) < 1e-4
    assert float(train.std()) == pytest.approx(1.0, abs=1e-3)
    raw = scaled(digits.train_x, digits)
    assert sc.info["mean"] == pytest.approx([float(raw.mean())], rel=1e-5)


def test_train_fraction_keeps_the_fraction_of_every_class(digits: ArrayDataset,
                                                          split_digits: Scenario) -> None:
    opts = BenchmarkOptions(train_fraction=0.25)
    sub = split_scenario(digits, "split-digits", opts, seed=0, default_tasks=5)
    again = split_scenario(digits, "split-digits", opts, seed=0, default_tasks=5)
    other = split_scenario(digits, "split-digits", opts, seed=1, default_tasks=5)
    for full, part, part2 in zip(split_digits.tasks, sub.tasks, again.tasks):
        for c in full.classes:
            n = int((full.train_y == c).sum())
            kept = int((part.train_y == c).sum())
            assert abs(kept - 0.25 * n) <= 1, (c, kept, n)
        # a subset of the full training set (rows are the same images)
        full_rows = {tuple(r.tolist()) for r in full.train_x.flatten(1)}
        assert all(tuple(r.tolist()) in full_rows for r in part.train_x.flatten(1))
        assert torch.equal(part.train_x, part2.train_x)
        # test sets are never subsampled
        assert torch.equal(part.test_y, full.test_y)
    assert any(not torch.equal(a.train_x, b.train_x) for a, b in zip(sub.tasks, other.tasks))


def test_uneven_split_error_says_what_to_do() -> None:
    with pytest.raises(ValueError) as err:
        build_scenario("split-digits", BenchmarkOptions(n_tasks=3), 0)
    msg = str(err.value)
    assert "10 classes" in msg and "3 tasks" in msg
    assert "data.n_tasks" in msg and "divisors of 10" in msg


def test_uneven_split_error_lists_the_divisors() -> None:
    with pytest.raises(ValueError, match=r"\[1, 2, 5, 10\]"):
        build_scenario("split-digits", BenchmarkOptions(n_tasks=3), 0)


def test_unknown_benchmark_lists_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        build_scenario("split-nope")
    msg = str(err.value)
    assert "'split-nope'" in msg
    names = list_benchmarks()
    assert {"split-digits", "split-mnist", "permuted-mnist", "rotated-mnist", "synthetic",
            "split-fashion-mnist", "split-cifar10", "split-cifar100"} <= set(names)
    for name in names:
        assert name in msg


@pytest.mark.parametrize("options, message", [
    (BenchmarkOptions(n_tasks=0), "data.n_tasks"),
    (BenchmarkOptions(class_order="sorted"), "data.class_order"),
    (BenchmarkOptions(train_fraction=0.0), "data.train_fraction"),
    (BenchmarkOptions(imbalance_low=0.8, imbalance_high=0.2), "data.imbalance_low/high"),
])
def test_bad_options_are_rejected_before_loading(options: BenchmarkOptions, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_scenario("split-mnist", options, 0)  # would need MNIST if validation came later


# -------------------------------------------------------------------------------- permuted


def _permuted(ds: ArrayDataset, seed: int, n_tasks: int = 4, **kw: object) -> Scenario:
    return permuted_scenario(ds, "permuted-digits", BenchmarkOptions(n_tasks=n_tasks), seed,
                             n_tasks, **kw)  # type: ignore[arg-type]


def test_permutations_are_fixed_by_the_seed(digits: ArrayDataset) -> None:
    a, b, c = _permuted(digits, 5), _permuted(digits, 5), _permuted(digits, 6)
    assert a.tasks[0].perm is None
    for t in range(1, 4):
        p = a.tasks[t].perm
        assert p is not None and p.dtype == torch.int64
        assert torch.equal(torch.sort(p).values, torch.arange(64))
        assert not torch.equal(p, torch.arange(64))
        assert torch.equal(p, b.tasks[t].perm)
        assert not torch.equal(p, c.tasks[t].perm)
    assert not torch.equal(a.tasks[1].perm, a.tasks[2].perm)
    # every task sees the whole (shared, unpermuted) dataset; the permutation is applied lazily
    for task in a.tasks:
        assert task.classes == tuple(range(10))
        assert task.train_x is a.tasks[0].train_x
        assert torch.equal(task.test_y, digits.test_y)
    assert a.default_setting == "domain"


def test_task_inputs_applies_the_permutation(digits: ArrayDataset) -> None:
    sc = _permuted(digits, 0)
    task = sc.tasks[2]
    x = task.train_x[:7]
    out = task.inputs(x)
    assert out.shape == x.shape
    perm = task.perm
    i = int(torch.nonzero(perm != torch.arange(64))[0])
    row, col = divmod(i, 8)
    src_row, src_col = divmod(int(perm[i]), 8)
    # pixel i of the permuted image is pixel perm[i] of the original
    assert torch.equal(out[:, 0, row, col], x[:, 0, src_row, src_col])
    assert torch.equal(out.flatten(1), x.flatten(1)[:, perm])
    # the same input gives the same output every time (epochs, loaders)
    assert torch.equal(task.inputs(x), out)
    assert sc.tasks[0].inputs(x) is x


_CHILD = """
import hashlib, sys
from lifelong.data.datasets import load_dataset
from lifelong.data.scenarios import BenchmarkOptions, build_scenario, permuted_scenario
name, seed = sys.argv[1], int(sys.argv[2])
if name == "digits":
    sc = permuted_scenario(load_dataset("digits"), "permuted-digits", BenchmarkOptions(n_tasks=4),
                           seed, 4)
    order = build_scenario("split-digits", BenchmarkOptions(class_order="random"), seed)
    print("order", order.info["class_order"])
else:
    sc = build_scenario("permuted-mnist", BenchmarkOptions(n_tasks=3), seed)
for t in sc.tasks:
    print(t.id, None if t.perm is None else hashlib.sha256(t.perm.numpy().tobytes()).hexdigest())
"""


def _child_output(name: str, seed: int) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, name, str(seed)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\n")


def test_same_permutations_and_class_order_in_another_process(digits: ArrayDataset) -> None:
    lines = _child_output("digits", 11)
    here = _permuted(digits, 11)
    order = build_scenario("split-digits", BenchmarkOptions(class_order="random"), 11)
    assert lines[0] == f"order {order.info['class_order']}"
    assert lines[1:5] == [f"{t} {d}" for t, d in enumerate(perm_digest(here))]


def test_imbalanced_permuted_keep_fractions(digits: ArrayDataset) -> None:
    n_tasks = 10
    sc = permuted_scenario(digits, "imb", BenchmarkOptions(n_tasks=n_tasks, imbalance_low=0.1,
                                                           imbalance_high=0.9), 3, n_tasks,
                           imbalanced=True)
    fracs = torch.tensor(sc.info["keep_fractions"], dtype=torch.float64)
    assert fracs.shape == (n_tasks, 10)
    assert bool(((fracs >= 0.1) & (fracs <= 0.9)).all())
    assert float(fracs.max() - fracs.min()) > 0.5  # really imbalanced
    assert not torch.equal(fracs[0], fracs[1])
    full = torch.bincount(digits.train_y, minlength=10).double()
    for t, task in enumerate(sc.tasks):
        counts = torch.bincount(task.train_y, minlength=10).double()
        expected = fracs[t] * full
        sd = torch.sqrt(full * fracs[t] * (1 - fracs[t]))
        assert bool(((counts - expected).abs() <= 4 * sd + 1).all()), (t, counts, expected)
        # kept rows are images of the right class (train_x and train_y stay aligned)
        assert task.train_x.shape[0] == task.train_y.shape[0]
        # test sets stay complete and balanced
        assert torch.equal(task.test_y, digits.test_y)
        assert task.test_x.shape[0] == digits.test_x.shape[0]
    # the same seed draws the same fractions and subsets
    again = permuted_scenario(digits, "imb", BenchmarkOptions(n_tasks=n_tasks, imbalance_low=0.1,
                                                              imbalance_high=0.9), 3, n_tasks,
                              imbalanced=True)
    assert again.info["keep_fractions"] == sc.info["keep_fractions"]
    assert all(torch.equal(a.train_y, b.train_y) for a, b in zip(sc.tasks, again.tasks))


def test_imbalanced_rows_match_their_labels(digits: ArrayDataset) -> None:
    sc = permuted_scenario(digits, "imb", BenchmarkOptions(n_tasks=2), 0, 2, imbalanced=True)
    raw = scaled(digits.train_x, digits).flatten(1)
    index = {tuple(r.tolist()): int(y) for r, y in zip(raw, digits.train_y)}
    task = sc.tasks[1]
    got = [index[tuple(r.tolist())] for r in task.train_x.flatten(1)]
    assert got == task.train_y.tolist()


# -------------------------------------------------------------------------------- rotated


def test_rotate_90_degrees_is_counterclockwise_like_rot90() -> None:
    img = torch.zeros(1, 1, 5, 5)
    img[0, 0, 0, 4] = 1.0  # top-right corner
    img[0, 0, 1, 2] = 0.5
    out = rotate(img, 90.0)
    expected = torch.rot90(img, 1, dims=(2, 3))  # counterclockwise: top-right -> top-left
    assert float(expected[0, 0, 0, 0]) == 1.0
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(img, 180.0), torch.rot90(img, 2, dims=(2, 3)),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(img, -90.0), torch.rot90(img, -1, dims=(2, 3)),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(img, 0.0), img, atol=1e-6, rtol=0)


def test_rotate_45_degrees_turns_a_point_counterclockwise() -> None:
    img = torch.zeros(1, 1, 9, 9)
    img[0, 0, 4, 6] = 1.0  # two pixels right of the centre (4, 4)
    out = rotate(img, 45.0)[0, 0]
    rows, cols = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
    mass = float(out.sum())
    centroid = (float((out * rows).sum()) / mass, float((out * cols).sum()) / mass)
    # counterclockwise on screen: the point moves up (smaller row) along the 45-degree diagonal
    r = 2 / math.sqrt(2)
    assert centroid == pytest.approx((4 - r, 4 + r), abs=0.2)
    assert float(rotate(img, 45.0 * 8)[0, 0, 4, 6]) == pytest.approx(1.0, abs=1e-4)


def test_rotated_scenario_angles_and_images(digits: ArrayDataset) -> None:
    opts = BenchmarkOptions(n_tasks=4, max_angle=360.0)
    sc = rotated_scenario(digits, "rotated-digits", opts, 0, 4)
    assert sc.info["angles"] == [0.0, 90.0, 180.0, 270.0]
    x = scaled(digits.train_x, digits)
    xt = scaled(digits.test_x, digits)
    torch.testing.assert_close(sc.tasks[0].train_x, x, atol=1e-6, rtol=0)
    for t, k in ((1, 1), (2, 2), (3, 3)):
        torch.testing.assert_close(sc.tasks[t].train_x, torch.rot90(x, k, dims=(2, 3)),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(sc.tasks[t].test_x, torch.rot90(xt, k, dims=(2, 3)),
                                   atol=1e-5, rtol=0)
        assert torch.equal(sc.tasks[t].train_y, digits.train_y)
        assert sc.tasks[t].perm is None
    assert sc.default_setting == "domain"


def test_default_rotation_angles_spread_over_max_angle(digits: ArrayDataset) -> None:
    sc = rotated_scenario(digits, "rotated-digits", BenchmarkOptions(n_tasks=3, max_angle=90.0),
                          0, 10)
    assert sc.info["angles"] == [0.0, 30.0, 60.0]
    assert [t.name for t in sc.tasks] == ["rot-0", "rot-30", "rot-60"]


# -------------------------------------------------------------------------------- real MNIST


def test_split_mnist_real(mnist: ArrayDataset) -> None:
    sc = build_scenario("split-mnist", BenchmarkOptions(), 0)
    assert [t.classes for t in sc.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert sum(t.num_train for t in sc.tasks) == 60000
    assert sum(t.num_test for t in sc.tasks) == 10000
    assert sc.tasks[0].num_train == int(((mnist.train_y == 0) | (mnist.train_y == 1)).sum())
    assert sc.input_shape == (1, 28, 28)


def test_permuted_mnist_real(mnist: ArrayDataset) -> None:
    a = build_scenario("permuted-mnist", BenchmarkOptions(n_tasks=3), 0)
    b = build_scenario("permuted-mnist", BenchmarkOptions(n_tasks=3), 0)
    c = build_scenario("permuted-mnist", BenchmarkOptions(n_tasks=3), 1)
    assert a.tasks[0].perm is None
    for t in (1, 2):
        p = a.tasks[t].perm
        assert p.shape == (784,)
        assert torch.equal(torch.sort(p).values, torch.arange(784))
        assert torch.equal(p, b.tasks[t].perm)
        assert not torch.equal(p, c.tasks[t].perm)
    lines = _child_output("mnist", 0)
    assert lines[:3] == [f"{t} {d}" for t, d in enumerate(perm_digest(a))]


def test_imbalanced_permuted_mnist_real(mnist: ArrayDataset) -> None:
    sc = build_scenario("imbalanced-permuted-mnist", BenchmarkOptions(n_tasks=2), 0)
    fracs = torch.tensor(sc.info["keep_fractions"], dtype=torch.float64)
    assert bool(((fracs >= 0.1) & (fracs <= 1.0)).all())
    full = torch.bincount(mnist.train_y, minlength=10).double()
    for t, task in enumerate(sc.tasks):
        counts = torch.bincount(task.train_y, minlength=10).double()
        assert torch.allclose(counts / full, fracs[t], atol=0.02), (counts / full, fracs[t])
        assert task.num_test == 10000


def test_rotated_mnist_real(mnist: ArrayDataset) -> None:
    sc = build_scenario("rotated-mnist", BenchmarkOptions(n_tasks=2, max_angle=180.0), 0)
    x = scaled(mnist.test_x, mnist)
    torch.testing.assert_close(sc.tasks[0].test_x, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(sc.tasks[1].test_x, torch.rot90(x, 1, dims=(2, 3)),
                               atol=1e-5, rtol=0)
    assert math.isclose(sc.info["angles"][1], 90.0)
