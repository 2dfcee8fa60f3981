"""Your own data (lifelong.data.custom): arrays of the shapes users have, labels of any integer
dtype or strings, user-given tasks, registration by name for make_config / the CLI, and the
refusals that used to fail silently or misleadingly."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from lifelong.cli import main
from lifelong.config import make_config
from lifelong.data import custom
from lifelong.data import datasets as ds
from lifelong.data.scenarios import BenchmarkOptions, build_scenario, get_benchmark
from lifelong.train.run import execute


def _blobs(n: int = 120, shape: tuple[int, ...] = (6,), classes: int = 4, seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, *shape)) + 3 * y.reshape(-1, *([1] * len(shape)))
    return x, y


@pytest.mark.parametrize("shape, expected", [
    ((6,), (6, 1, 1)),                 # feature vectors: one channel per feature
    ((5, 7), (1, 5, 7)),               # grey images
    ((5, 7, 3), (3, 5, 7)),            # channels last
    ((3, 5, 7), (3, 5, 7)),            # channels first
    ((1, 8, 8), (1, 8, 8)),
    ((1, 4, 4), (1, 4, 4)),            # both ends <= 4: the square reading
    ((4, 4, 3), (3, 4, 4)),
])
def test_natural_shapes_become_channels_first(shape: tuple[int, ...], expected: tuple) -> None:
    x, y = _blobs(shape=shape)
    data = custom.from_arrays(x.astype(np.float64), y.astype(np.int32), name="mine")
    assert data.image_shape == expected
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert data.num_classes == 4 and data.scale == 1.0
    # stratified held-out test set: ceil(0.2 * 30) = 6 of each class, the rest for training
    assert data.test_y.bincount().tolist() == [6, 6, 6, 6]
    assert data.train_y.shape[0] == 120 - 24
    if len(shape) == 3 and shape[-1] == 3:  # the permute kept each pixel's channels
        given = custom.from_arrays(x, y, x, y)
        assert torch.equal(given.train_x[7, :, 2, 1], torch.from_numpy(x[7, 2, 1]).float())


def test_held_out_split_is_the_same_for_every_call() -> None:
    x, y = _blobs()
    a = custom.from_arrays(x, y)
    b = custom.from_arrays(x, y)
    c = custom.from_arrays(x, y, split_seed=1)
    assert torch.equal(a.test_x, b.test_x) and not torch.equal(a.test_x, c.test_x)


def test_labels_of_any_integer_dtype_or_strings_are_numbered_in_sorted_order() -> None:
    x, y = _blobs()
    odd = np.array([10, 30, 20, 40])[y].astype(np.uint8)
    data = custom.from_arrays(x, odd)
    assert data.class_names == ("10", "20", "30", "40")
    assert data.train_y.max() == 3
    names = np.array(["cat", "dog", "ant", "bee"])[y]
    data = custom.from_arrays(x, names)
    assert data.class_names == ("ant", "bee", "cat", "dog")
    # class names given with labels 0..K-1: labels kept as they are
    data = custom.from_arrays(x, torch.from_numpy(y), class_names=["a", "b", "c", "d"])
    assert data.class_names == ("a", "b", "c", "d")
    assert custom.from_arrays(x, y, x, y).test_y.tolist() == y.tolist()


@pytest.mark.parametrize("kwargs, message", [
    ({"train_y": np.zeros(120, dtype=np.float32)},
     "mine: train_y: labels must be integers (class indices) or strings (class names), got dtype "
     "float32; if they are whole numbers, pass y.astype(int)"),
    ({"train_y": np.zeros((120, 4))}, "labels must have shape [N], got (120, 4) (one-hot labels? "
                                      "pass y.argmax(1))"),
    ({"train_x": np.zeros((120, 5, 5, 5))}, "cannot tell whether shape (120, 5, 5, 5) is "
                                            "[N, C, H, W] or [N, H, W, C]; pass channels='first'"),
    ({"train_x": np.zeros((120, 2, 2, 2, 2))}, "expected inputs of shape [N, D] (feature vectors), "
                                               "[N, H, W] (grey images), [N, H, W, C] or "
                                               "[N, C, H, W], got shape (120, 2, 2, 2, 2)"),
    ({"train_y": np.zeros(100, dtype=int)}, "train_x has 120 samples but train_y has 100 labels"),
    ({"test_x": np.zeros((3, 6))}, "give test_x and test_y together, or neither"),
])
def test_bad_arrays_are_refused_saying_what_is_wrong(kwargs: dict, message: str) -> None:
    x, y = _blobs()
    args = {"train_x": x, "train_y": y, **kwargs}
    with pytest.raises(ValueError) as info:
        custom.from_arrays(name="mine", **args)
    assert message in str(info.value)


def test_torch_dataset_is_read_like_arrays() -> None:
    x, y = _blobs(shape=(1, 4, 4))
    train = torch.utils.data.TensorDataset(torch.from_numpy(x).float(), torch.from_numpy(y))
    data = custom.from_torch(train, train, batch_size=7, name="tds")
    assert data.image_shape == (1, 4, 4) and data.train_y.tolist() == y.tolist()
    with pytest.raises(ValueError, match=r"dataset\[i\] must be an \(input, label\) pair"):
        custom.from_torch([torch.zeros(3)])


def test_user_given_tasks_and_kinds() -> None:
    x, y = _blobs(n=150, classes=5)
    data = custom.from_arrays(x, y, name="five")
    sc = custom.make_scenario(data, "split", tasks=[[4, 0], [2, 3, 1]])
    assert [t.classes for t in sc.tasks] == [(0, 1), (2, 3, 4)]
    assert sc.class_names == ("4", "0", "2", "3", "1") and sc.num_classes == 5
    assert sc.info["groups"] == [[4, 0], [2, 3, 1]]
    first = sc.tasks[0]
    assert first.num_train == 48 and torch.equal(  # original labels 4 and 0 -> 0 and 1
        first.train_y.bincount(), torch.tensor([24, 24]))
    assert custom.make_scenario(data, "split", tasks=[[1], [3]]).num_classes == 2  # subset
    perm = custom.make_scenario(data, "permuted", n_tasks=3, seed=1)
    assert len(perm) == 3 and perm.tasks[2].perm is not None and perm.default_setting == "domain"
    with pytest.raises(ValueError, match="class 0 is in task 0 and in task 1"):
        custom.make_scenario(data, "split", tasks=[[0, 1], [0, 2]])
    with pytest.raises(ValueError, match=r"task 1 names class 7; classes are integers in \[0, 5\)"):
        custom.make_scenario(data, "split", tasks=[[0], [7]])
    with pytest.raises(ValueError, match="feature vectors .* cannot be rotated"):
        custom.make_scenario(data, "rotated")


def test_registered_data_runs_by_name_with_the_protocol_it_copies(tmp_path: Path) -> None:
    x, y = _blobs(n=160, classes=4)
    data = custom.from_arrays(x, y, name="blobs")
    spec = custom.register("split-blobs-test", data, "split", n_tasks=2,
                           defaults={"train.epochs": 40, "data.normalize": True})
    assert spec.defaults["train.lr"] == get_benchmark("split-digits").defaults["train.lr"]
    cfg = make_config("split-blobs-test", "ewc", seed=0)
    assert cfg.train.epochs == 40 and cfg.data.normalize is True
    sc = build_scenario("split-blobs-test", cfg.data, 0)
    assert len(sc) == 2 and sc.name == "split-blobs-test"
    res = main(["run", "-b", "split-blobs-test", "-m", "finetune", "--quiet", "-o",
                str(tmp_path)])
    assert (tmp_path / "split-blobs-test" / "task" / "finetune" / "seed0" / "result.json").is_file()
    R = res[0]["accuracy"]["task"]
    assert min(R[0][0], R[1][1]) > 0.9  # well-separated blobs: each task learned


def test_import_flag_loads_a_file_that_registers_a_benchmark(tmp_path: Path) -> None:
    plugin = tmp_path / "my_bench.py"
    plugin.write_text(
        "import numpy as np\nfrom lifelong.data import custom\n"
        "rng = np.random.default_rng(0)\ny = np.arange(80) % 2\n"
        "x = rng.normal(size=(80, 3)) + 3 * y[:, None]\n"
        "custom.register('plugin-bench', custom.from_arrays(x, y), tasks=[[0], [1]],\n"
        "                defaults={'train.epochs': 1})\n")
    listed = main(["list", "--import", str(plugin)])
    assert "plugin-bench" in listed["benchmarks"]
    res = main(["run", "--import", str(plugin), "-b", "plugin-bench", "-m", "finetune",
                "--quiet", "--no-save"])
    assert res[0]["benchmark"] == "plugin-bench" and len(res[0]["tasks"]) == 2
    with pytest.raises(ValueError, match="--import nope_module_xyz: no module named"):
        main(["run", "--import", "nope_module_xyz", "--no-save"])


def test_execute_refuses_a_scenario_of_another_name(split_digits) -> None:
    cfg = make_config("synthetic", "finetune", 0)
    with pytest.raises(ValueError, match="the scenario is 'split-digits' but the configuration is "
                                         "for benchmark 'synthetic'"):
        execute(cfg, None, scenario=split_digits)


def test_split_kmnist_is_registered() -> None:
    spec = get_benchmark("split-kmnist")
    assert spec.needs_download and spec.defaults["train.epochs"] == 10


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_own_idx_files_in_a_known_dataset_folder_are_not_called_corrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "kmnist"
    folder.mkdir()
    images, labels = np.zeros((5, 4, 4)), np.arange(5)
    for name, array in zip(ds._MNIST_NAMES, (images, labels, images, labels)):
        (folder / name).write_bytes(_idx(array))
    with pytest.raises(ds.DatasetChecksumError) as info:
        ds.load_dataset("kmnist")
    message = str(info.value)
    assert "is not the official 'kmnist' file: it holds an IDX array of shape (5, 4, 4) (uint8), " \
           "complete and readable" in message
    assert "lifelong.data.custom.from_arrays" in message and "corrupted" not in message
    # a truncated file still reads as truncated
    victim = folder / ds._MNIST_NAMES[0]
    victim.write_bytes(victim.read_bytes()[:-5])
    with pytest.raises(ds.DatasetChecksumError, match="truncated or corrupted"):
        ds.load_dataset("kmnist")


def test_options_override_the_tasks_count_only_without_groups() -> None:
    x, y = _blobs()
    data = custom.from_arrays(x, y)
    with pytest.raises(ValueError, match="data.n_tasks=3 but the benchmark's tasks are 2 given"):
        custom.make_scenario(data, tasks=[[0, 1], [2, 3]], options=BenchmarkOptions(n_tasks=3))
