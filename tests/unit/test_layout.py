"""Output-unit layouts (lifelong.data.layout) on hand-made scenarios.

Incremental settings (task-IL, class-IL): label ``classes[i]`` of task ``t`` is unit
``offset[t] + i``; domain-IL: it is unit ``i`` for every task (van de Ven & Tolias 2019).
"""

from __future__ import annotations

import pytest
import torch

from lifelong.data.layout import Layout
from lifelong.data.scenarios import SETTINGS, Scenario, Task


def make_task(t: int, classes: tuple[int, ...]) -> Task:
    y = torch.tensor(classes, dtype=torch.long)
    x = torch.zeros(len(classes), 1, 2, 2)
    return Task(id=t, name=str(t), classes=classes, train_x=x, train_y=y, test_x=x, test_y=y)


def make_scenario(class_groups: list[tuple[int, ...]], num_classes: int,
                  settings: tuple[str, ...] = SETTINGS) -> Scenario:
    return Scenario(name="handmade", tasks=tuple(make_task(t, c) for t, c in enumerate(class_groups)),
                    input_shape=(1, 2, 2), num_classes=num_classes,
                    class_names=tuple(str(c) for c in range(num_classes)), settings=settings,
                    default_setting=settings[0])


@pytest.fixture
def uneven() -> Scenario:
    """Tasks of sizes 2, 3, 1 whose labels are not in sorted order inside a task."""
    return make_scenario([(4, 2), (0, 5, 1), (3,)], num_classes=6)


@pytest.fixture
def even() -> Scenario:
    """Three tasks of two classes (a split scenario in shuffled class order)."""
    return make_scenario([(3, 0), (5, 1), (2, 4)], num_classes=6)


@pytest.mark.parametrize("setting", ["task", "class"])
def test_incremental_units_are_offset_plus_local_index(uneven: Scenario, setting: str) -> None:
    lay = Layout.for_scenario(uneven, setting)
    assert lay.sizes == (2, 3, 1)
    assert lay.offsets == (0, 2, 5)
    assert lay.num_units == 6
    assert lay.incremental
    assert lay.targets(0, torch.tensor([4, 2, 2])).tolist() == [0, 1, 1]
    assert lay.targets(1, torch.tensor([0, 5, 1])).tolist() == [2, 3, 4]
    assert lay.targets(2, torch.tensor([3])).tolist() == [5]
    # a label outside the task has no unit
    assert lay.targets(0, torch.tensor([0])).tolist() == [-1]
    # mixed-task batches (tensor of task ids)
    tids = torch.tensor([2, 0, 1, 1])
    ys = torch.tensor([3, 2, 1, 5])
    assert lay.targets(tids, ys).tolist() == [5, 1, 4, 3]
    expected_lut = torch.tensor([[-1, -1, 1, -1, 0, -1],
                                 [2, 4, -1, -1, -1, 3],
                                 [-1, -1, -1, 5, -1, -1]])
    assert torch.equal(lay.lut, expected_lut)


def test_domain_units_are_the_local_index(even: Scenario) -> None:
    lay = Layout.for_scenario(even, "domain")
    assert lay.sizes == (2, 2, 2) and lay.offsets == (0, 0, 0) and lay.num_units == 2
    assert not lay.incremental
    assert lay.targets(0, torch.tensor([3, 0])).tolist() == [0, 1]
    assert lay.targets(1, torch.tensor([5, 1])).tolist() == [0, 1]
    assert lay.targets(torch.tensor([2, 2, 0]), torch.tensor([2, 4, 0])).tolist() == [0, 1, 1]
    assert lay.eval_settings == ("domain",)


def test_unit_ranges(uneven: Scenario) -> None:
    task = Layout.for_scenario(uneven, "task")
    cls = Layout.for_scenario(uneven, "class")
    assert [task.task_units(t) for t in range(3)] == [slice(0, 2), slice(2, 5), slice(5, 6)]
    assert [task.seen_units(t) for t in range(3)] == [slice(0, 2), slice(0, 5), slice(0, 6)]
    # task-IL trains the task's block, class-IL everything seen so far
    assert [task.train_units(t) for t in range(3)] == [slice(0, 2), slice(2, 5), slice(5, 6)]
    assert [cls.train_units(t) for t in range(3)] == [slice(0, 2), slice(0, 5), slice(0, 6)]
    assert task.eval_settings == ("task", "class")
    assert cls.eval_settings == ("class", "task")


def test_domain_unit_ranges(even: Scenario) -> None:
    lay = Layout.for_scenario(even, "domain")
    for t in range(3):
        assert lay.task_units(t) == slice(0, 2)
        assert lay.seen_units(t) == slice(0, 2)
        assert lay.train_units(t) == slice(0, 2)


def test_unit_mask_for_mixed_task_batches(uneven: Scenario) -> None:
    lay = Layout.for_scenario(uneven, "task")
    mask = lay.unit_mask(torch.tensor([0, 1, 2, 1]), slice(0, 6))
    expected = torch.tensor([[1, 1, 0, 0, 0, 0],
                             [0, 0, 1, 1, 1, 0],
                             [0, 0, 0, 0, 0, 1],
                             [0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    assert mask is not None and torch.equal(mask, expected)
    # a window of units: columns are relative to units.start
    sub = lay.unit_mask(torch.tensor([0, 1]), slice(0, 5))
    assert torch.equal(sub, expected[:2, :5])
    # a batch from one task whose block is exactly the units needs no mask
    assert lay.unit_mask(torch.tensor([1, 1, 1]), slice(2, 5)) is None
    # but the same batch over all seen units does
    one_task = lay.unit_mask(torch.tensor([1, 1]), slice(0, 5))
    assert one_task is not None and one_task[:, 2:5].all() and not one_task[:, :2].any()


@pytest.mark.parametrize("setting", ["class", "domain"])
def test_unit_mask_is_none_outside_task_il(uneven: Scenario, even: Scenario, setting: str) -> None:
    sc = even if setting == "domain" else uneven
    lay = Layout.for_scenario(sc, setting)
    assert lay.unit_mask(torch.tensor([0, 1, 2]), slice(0, lay.num_units)) is None


def test_domain_il_needs_equal_task_sizes(uneven: Scenario) -> None:
    with pytest.raises(ValueError) as err:
        Layout.for_scenario(uneven, "domain")
    msg = str(err.value)
    assert "domain-incremental" in msg and "same number of classes" in msg
    assert "[1, 2, 3]" in msg and "handmade" in msg


def test_unknown_setting_lists_valid_settings(even: Scenario) -> None:
    with pytest.raises(ValueError, match=r"unknown setting 'joint'; valid settings: task, domain, "
                                         r"class"):
        Layout.for_scenario(even, "joint")


def test_unsupported_setting_names_the_benchmark_and_its_settings() -> None:
    sc = make_scenario([(0, 1), (2, 3)], 4, settings=("task", "class"))
    with pytest.raises(ValueError) as err:
        Layout.for_scenario(sc, "domain")
    msg = str(err.value)
    assert "'handmade' does not support the domain-incremental setting" in msg
    assert "valid settings: task, class" in msg


def test_layout_of_a_registered_split(split_digits: Scenario) -> None:
    lay = Layout.for_scenario(split_digits, "task")
    assert lay.offsets == (0, 2, 4, 6, 8) and lay.num_units == 10
    task = split_digits.tasks[2]
    targets = lay.targets(2, task.test_y)
    # natural class order: unit == label for split scenarios
    assert torch.equal(targets, task.test_y)
    dom = Layout.for_scenario(split_digits, "domain")
    assert torch.equal(dom.targets(2, task.test_y), task.test_y - 4)
