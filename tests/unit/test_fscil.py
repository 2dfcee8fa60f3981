"""Few-shot class-incremental scenarios (Tao et al. 2020): fscil_scenario, the published index
lists, and the seen-so-far accuracy of the protocol."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lifelong.data.datasets import ArrayDataset
from lifelong.data.layout import Layout
from lifelong.data.scenarios import (
    BenchmarkOptions,
    build_scenario,
    find_fscil_lists,
    fscil_from_lists,
    fscil_scenario,
    read_index_list,
)
from lifelong.metrics import seen_accuracy_curve


def _fscil(digits: ArrayDataset, seed: int = 0, **kw: object) -> object:
    options = BenchmarkOptions(**kw)  # type: ignore[arg-type]
    return fscil_scenario(digits, "fscil-digits", options, seed, base_classes=4, ways=2, shots=3,
                          sessions=4)


def test_base_session_then_n_way_k_shot_sessions(digits: ArrayDataset) -> None:
    sc = _fscil(digits)
    assert [t.classes for t in sc.tasks] == [(0, 1, 2, 3), (4, 5), (6, 7), (8, 9)]
    base = sc.tasks[0]
    assert base.num_train == int((digits.train_y < 4).sum())  # all base samples
    for t in sc.tasks[1:]:
        assert t.num_train == 6  # 2-way 3-shot
        assert torch.equal(torch.bincount(t.train_y - t.classes[0]), torch.tensor([3, 3]))
    for t in sc.tasks:  # every test sample of the session's classes
        assert t.num_test == int(sum((digits.test_y == c).sum() for c in t.classes))
    assert sc.settings == ("class",) and sc.default_setting == "class"
    layout = Layout.for_scenario(sc, "class")
    assert layout.sizes == (4, 2, 2, 2)
    with pytest.raises(ValueError, match="does not support the task-incremental setting"):
        Layout.for_scenario(sc, "task")


def test_shots_are_drawn_once_from_the_seed(digits: ArrayDataset) -> None:
    a, b, c = _fscil(digits, 0), _fscil(digits, 0), _fscil(digits, 1)
    assert a.info["shots_drawn"] == b.info["shots_drawn"]
    assert a.info["shots_drawn"] != c.info["shots_drawn"]
    for t, idx in zip(a.tasks[1:], a.info["shots_drawn"]):
        images = digits.train_x[idx].float() / digits.scale
        assert torch.equal(t.train_x, images)  # the recorded indices are the session's images
        assert len(set(idx)) == len(idx)


def test_random_class_order_and_overrides(digits: ArrayDataset) -> None:
    sc = _fscil(digits, 3, class_order="random", n_tasks=3, ways=3, shots=2, base_classes=2)
    assert [len(t.classes) for t in sc.tasks] == [2, 3, 3]
    assert all(t.num_train == 6 for t in sc.tasks[1:])
    order = sc.info["class_order"]
    assert sorted(order) == list(range(10)) and order != list(range(10))


@pytest.mark.parametrize("kw, message", [
    ({"n_tasks": 5, "ways": 2}, r"4 base classes \+ 4 sessions of 2 new classes need 12 classes"),
    ({"shots": 1000}, "data.shots=1000 but a class of session 1 has only"),
])
def test_impossible_sessions_are_refused(digits: ArrayDataset, kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _fscil(digits, **kw)


def test_bad_fscil_options_are_refused() -> None:
    with pytest.raises(ValueError, match="data.shots must be a positive integer, got 0"):
        BenchmarkOptions(shots=0).validate()


def test_scenario_from_index_lists(digits: ArrayDataset) -> None:
    y, yt = digits.train_y, digits.test_y
    train = [torch.nonzero(y < 3).squeeze(1), torch.nonzero(y == 3).squeeze(1)[:2]]
    test = [torch.nonzero(yt < 3).squeeze(1), torch.nonzero(yt == 3).squeeze(1)]
    sc = fscil_from_lists(digits, "lists", BenchmarkOptions(), train, test)
    assert [t.classes for t in sc.tasks] == [(0, 1, 2), (3,)]
    assert sc.info["base_classes"] == 3 and sc.info["ways"] == 1 and sc.info["shots"] == 2
    assert torch.equal(sc.tasks[1].train_x, digits.train_x[train[1]].float() / digits.scale)
    with pytest.raises(ValueError, match="repeat an earlier session's"):
        fscil_from_lists(digits, "lists", BenchmarkOptions(), [train[0], train[0]],
                         [test[0], test[0]])
    with pytest.raises(ValueError, match="class order"):
        fscil_from_lists(digits, "lists", BenchmarkOptions(class_order="random"), train, test)
    with pytest.raises(ValueError, match="points outside"):
        fscil_from_lists(digits, "lists", BenchmarkOptions(), [train[0], torch.tensor([10**6])],
                         test)


def test_index_list_lookup_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="FSCIL index lists of cifar100.*looked in"):
        find_fscil_lists(None)
    folder = tmp_path / "fscil" / "cifar100"  # beside data/, as in the shared layout
    folder.mkdir(parents=True)
    (folder / "session_1.txt").write_text("3\n1\n\n2\n")
    assert find_fscil_lists(None) == folder
    assert read_index_list(folder / "session_1.txt").tolist() == [3, 1, 2]
    (folder / "bad.txt").write_text("3\nx\n")
    with pytest.raises(ValueError, match="not an index list"):
        read_index_list(folder / "bad.txt")


def test_published_cifar100_lists_have_the_protocol_sizes() -> None:
    try:
        folder = find_fscil_lists(None)
    except FileNotFoundError as error:
        pytest.skip(f"published FSCIL lists not found ({str(error)[:80]}...)")
    train = [read_index_list(folder / f"session_{t}.txt") for t in range(1, 10)]
    test = [read_index_list(folder / f"test_{t}.txt") for t in range(1, 10)]
    assert [len(x) for x in train] == [30000] + [25] * 8
    assert [len(x) for x in test] == [6000] + [500] * 8
    every = torch.cat(train)
    assert len(torch.unique(every)) == len(every) and int(every.max()) < 50000


def test_fscil_cifar100_without_its_data_says_what_is_missing(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="FSCIL index lists of cifar100"):
        build_scenario("fscil-cifar100")


def test_registered_fscil_fashion_mnist() -> None:
    if not os.environ.get("LIFELONG_DATA"):
        pytest.skip("Fashion-MNIST not available: set LIFELONG_DATA")
    sc = build_scenario("fscil-fashion-mnist", BenchmarkOptions(), 0)
    assert [t.classes for t in sc.tasks] == [(0, 1, 2, 3, 4, 5), (6,), (7,), (8,), (9,)]
    assert [t.num_train for t in sc.tasks] == [36000, 5, 5, 5, 5]
    assert [t.num_test for t in sc.tasks] == [6000, 1000, 1000, 1000, 1000]


def test_seen_accuracy_curve_weights_tasks_by_their_test_sizes() -> None:
    R = np.array([[0.8, np.nan], [0.5, 1.0]])
    curve = seen_accuracy_curve(R, [300, 100])
    assert np.allclose(curve, [0.8, (0.5 * 300 + 100) / 400])
    with pytest.raises(ValueError, match="test_sizes must be 2 positive numbers"):
        seen_accuracy_curve(R, [1, 0])
