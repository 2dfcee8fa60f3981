"""Tests of lifelong.data.datasets: readers, checksums, lookup order, download, digits, real data.

Real-data tests find MNIST / Fashion-MNIST only through the environment variable LIFELONG_DATA
(CI sets it) and skip otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import pickle
import shutil
import struct
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from lifelong.data import datasets as ds
from lifelong.data.datasets import (
    ArrayDataset,
    DatasetChecksumError,
    DatasetDownloadError,
    DatasetNotFoundError,
    DatasetSpec,
    RemoteFile,
)

IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# ---------------------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray, code: int, compress: bool) -> Path:
    """Write ``array`` as an IDX file from the format description (independent of the reader)."""
    big_endian = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    payload = (
        bytes([0, 0, code, array.ndim])
        + struct.pack(">" + "I" * array.ndim, *array.shape)
        + array.astype(big_endian[code]).tobytes()
    )
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No LIFELONG_DATA; the user cache points into tmp_path (returned)."""
    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "lifelong"


@pytest.fixture
def fake_idx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[DatasetSpec, Path, dict]:
    """A tiny 4-class IDX dataset in ``tmp_path/source`` registered as ``fake``."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.integers(0, 256, size=(12, 5, 4), dtype=np.uint8),
        "train_y": np.arange(12, dtype=np.uint8) % 4,
        "test_x": rng.integers(0, 256, size=(6, 5, 4), dtype=np.uint8),
        "test_y": np.array([3, 2, 1, 0, 3, 2], dtype=np.uint8),
    }
    source = tmp_path / "source"
    source.mkdir()
    for name, key in zip(IDX_NAMES, ("train_x", "train_y", "test_x", "test_y"), strict=True):
        write_idx(source / name, arrays[key], 0x08, compress=True)
    spec = DatasetSpec(
        name="fake",
        kind="idx",
        files=tuple(RemoteFile(n, md5(source / n)) for n in IDX_NAMES),
        mirrors=("https://example.invalid/fake/",),
        num_classes=4,
        class_names=("a", "b", "c", "d"),
        homepage="https://example.invalid/fake",
        torchvision_dir="FAKE",
    )
    monkeypatch.setitem(ds.DATASETS, "fake", spec)
    return spec, source, arrays


def place(source: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in IDX_NAMES:
        shutil.copy(source / name, directory / name)
    return directory


# ---------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_uint8_values_and_shape(tmp_path: Path, compress: bool) -> None:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5) * 7
    labels = np.array([9, 0, 4], dtype=np.uint8)
    got_x = ds.read_idx(write_idx(tmp_path / "x", images, 0x08, compress))
    got_y = ds.read_idx(write_idx(tmp_path / "y", labels, 0x08, compress))
    assert got_x.shape == (3, 4, 5) and got_x.dtype == np.uint8
    np.testing.assert_array_equal(got_x, images)
    np.testing.assert_array_equal(got_y, labels)
    assert got_x.flags.writeable


@pytest.mark.parametrize(
    ("code", "dtype"),
    [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
def test_read_idx_other_types_native_order(tmp_path: Path, code: int, dtype: type) -> None:
    values = (np.arange(-6, 6).reshape(2, 6) * 3).astype(dtype)
    got = ds.read_idx(write_idx(tmp_path / "v", values, code, compress=False))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, values)


def test_read_idx_bad_magic(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file") as info:
        ds.read_idx(bad)
    assert str(bad) in str(info.value)


def test_read_idx_unknown_type_code(tmp_path: Path) -> None:
    bad = tmp_path / "code"
    bad.write_bytes(b"\x00\x00\x0a\x01" + struct.pack(">I", 2) + b"\x00\x00")
    with pytest.raises(ValueError, match="unsupported IDX type code 0x0A"):
        ds.read_idx(bad)


def test_read_idx_size_mismatch_and_bad_gzip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.zeros((4, 3), np.uint8), 0x08, compress=False)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"shape \(4, 3\) \(12 data bytes\).*10 data bytes"):
        ds.read_idx(path)
    gz = write_idx(tmp_path / "x.gz", np.zeros((40, 30), np.uint8), 0x08, compress=True)
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated or corrupted") as info:
        ds.read_idx(gz)
    assert str(gz) in str(info.value)


# ---------------------------------------------------------------------------- registry


def test_registry_names_and_unknown_name() -> None:
    assert ds.list_datasets() == [
        "cifar10",
        "cifar100",
        "digits",
        "fashion-mnist",
        "kmnist",
        "mnist",
    ]
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'.*cifar10.*digits.*mnist"):
        ds.load_dataset("imagenet")
    assert ds.get_spec("Fashion_MNIST").name == "fashion-mnist"


def test_registry_checksums_and_classes() -> None:
    mnist = ds.get_spec("mnist")
    assert [f.filename for f in mnist.files] == list(IDX_NAMES)
    assert mnist.files[0].md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert (
        mnist.urls(IDX_NAMES[0])[0]
        == "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"
    )
    fashion = ds.get_spec("fashion-mnist")
    assert [f.md5 for f in fashion.files] == [
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ]
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    assert ds.get_spec("kmnist").class_names == (
        "o",
        "ki",
        "su",
        "tsu",
        "na",
        "ha",
        "ma",
        "ya",
        "re",
        "wo",
    )
    assert ds.get_spec("cifar10").files[0].md5 == "c58f30108f718f92721af3b95e74349a"
    assert ds.get_spec("cifar100").files[0].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    for name in ds.list_datasets():
        spec = ds.get_spec(name)
        assert all(len(f.md5) == 32 for f in (*spec.files, *spec.extracted))


# ---------------------------------------------------------------------------- load, checksum


def test_load_fake_idx_values(fake_idx, isolated_env: Path, tmp_path: Path) -> None:
    spec, source, arrays = fake_idx
    root = tmp_path / "root"
    place(source, root / "fake")
    data = ds.load_dataset("fake", data_dir=root)
    assert isinstance(data, ArrayDataset)
    assert data.train_x.shape == (12, 1, 5, 4) and data.test_x.shape == (6, 1, 5, 4)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    np.testing.assert_array_equal(data.train_x[:, 0].numpy(), arrays["train_x"])
    np.testing.assert_array_equal(data.test_y.numpy(), arrays["test_y"])
    assert (
        data.class_names == ("a", "b", "c", "d") and data.num_classes == 4 and data.scale == 255.0
    )
    assert data.image_shape == (1, 5, 4)


def test_truncated_file_raises_checksum_error(fake_idx, isolated_env: Path, tmp_path: Path) -> None:
    spec, source, _ = fake_idx
    directory = place(source, tmp_path / "root" / "fake")
    victim = directory / "train-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-7])
    actual = md5(victim)
    with pytest.raises(DatasetChecksumError) as info:
        ds.load_dataset("fake", data_dir=tmp_path / "root")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(victim) in message
    assert spec.files[0].md5 in message and actual in message
    assert "delete it and download it again" in message
    assert "https://example.invalid/fake/train-images-idx3-ubyte.gz" in message


def test_spec_can_be_passed_directly(
    fake_idx, isolated_env: Path, tmp_path: Path, monkeypatch
) -> None:
    spec, source, arrays = fake_idx
    monkeypatch.delitem(ds.DATASETS, "fake")
    place(source, tmp_path / "root" / "fake")
    data = ds.load_dataset(spec, data_dir=tmp_path / "root")
    np.testing.assert_array_equal(data.train_y.numpy(), arrays["train_y"])


# ---------------------------------------------------------------------------- lookup


def test_missing_dataset_lists_every_searched_dir(fake_idx, tmp_path: Path, monkeypatch) -> None:
    explicit, env_a, env_b = tmp_path / "explicit", tmp_path / "env_a", tmp_path / "env_b"
    monkeypatch.setenv("LIFELONG_DATA", f"{env_a}{os.pathsep}{env_b}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (env_a / "fake").mkdir(parents=True)
    shutil.copy(fake_idx[1] / IDX_NAMES[1], env_a / "fake" / IDX_NAMES[1])  # a partial set
    with pytest.raises(DatasetNotFoundError) as info:
        ds.load_dataset("fake", data_dir=explicit)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for directory in (
        explicit / "fake",
        explicit,
        explicit / "FAKE" / "raw",
        env_a / "fake",
        env_a,
        env_b / "fake",
        tmp_path / "xdg" / "lifelong" / "fake",
        tmp_path / "xdg" / "lifelong",
    ):
        assert f"  {directory} " in message, directory
    assert (
        message.index(str(explicit))
        < message.index(str(env_a))
        < message.index(str(tmp_path / "xdg"))
    )
    assert all(name in message for name in IDX_NAMES)
    assert "missing train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz" in message
    for hint in (
        "--data-dir",
        "LIFELONG_DATA",
        "download=True",
        "--download",
        "https://example.invalid/fake/train-images-idx3-ubyte.gz",
    ):
        assert hint in message


def test_lookup_order_explicit_env_cache(fake_idx, tmp_path: Path, monkeypatch) -> None:
    _, source, _ = fake_idx
    explicit = place(source, tmp_path / "explicit" / "fake")
    env = place(source, tmp_path / "env" / "fake")
    cache = place(source, tmp_path / "xdg" / "lifelong" / "fake")
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ds.find_data_dir("fake", data_dir=tmp_path / "explicit") == explicit
    assert ds.find_data_dir("fake") == env
    monkeypatch.delenv("LIFELONG_DATA")
    assert ds.find_data_dir("fake") == cache
    assert ds.search_roots(str(tmp_path / "explicit")) == [
        tmp_path / "explicit",
        tmp_path / "xdg" / "lifelong",
    ]


def test_cache_dir_respects_xdg(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert ds.user_cache_dir() == tmp_path / "c" / "lifelong"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ds.user_cache_dir() == tmp_path / "home" / ".cache" / "lifelong"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert ds.user_cache_dir() == tmp_path / "home" / ".cache" / "lifelong"


def test_flat_and_torchvision_layouts(fake_idx, isolated_env: Path, tmp_path: Path) -> None:
    _, source, _ = fake_idx
    flat = place(source, tmp_path / "flat")
    assert ds.find_data_dir("fake", data_dir=flat) == flat
    raw = place(source, tmp_path / "tv" / "FAKE" / "raw")
    assert ds.find_data_dir("fake", data_dir=tmp_path / "tv") == raw
    assert ds.load_dataset("fake", data_dir=tmp_path / "tv").train_x.shape == (12, 1, 5, 4)


def test_digits_has_no_data_dir() -> None:
    with pytest.raises(ValueError, match="bundled with scikit-learn"):
        ds.find_data_dir("digits")


# ---------------------------------------------------------------------------- download


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``tmp_path`` served over HTTP on 127.0.0.1 (pooch fetches http/https, not file://);
    returns the base URL. No retries, so a bad mirror fails at once."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(ds, "DOWNLOAD_RETRIES", 0)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


def test_download_into_cache_with_mirror_fallback(
    fake_idx, isolated_env: Path, tmp_path: Path, http_root: str
) -> None:
    spec, source, arrays = fake_idx
    corrupted = tmp_path / "corrupted"
    place(source, corrupted)
    for name in IDX_NAMES:
        (corrupted / name).write_bytes(b"garbage")
    mirrors = (f"{http_root}/nowhere/", f"{http_root}/corrupted/", f"{http_root}/source/")
    spec = dataclasses.replace(spec, mirrors=mirrors)
    with pytest.raises(DatasetNotFoundError):
        ds.load_dataset(spec)
    data = ds.load_dataset(spec, download=True)
    np.testing.assert_array_equal(data.test_x[:, 0].numpy(), arrays["test_x"])
    assert sorted(p.name for p in (isolated_env / "fake").iterdir()) == sorted(
        IDX_NAMES
    )  # no .part left


def test_download_into_data_dir_and_failure(fake_idx, isolated_env: Path, tmp_path: Path,
                                            http_root: str) -> None:
    spec, source, _ = fake_idx
    good = dataclasses.replace(spec, mirrors=(f"{http_root}/source",))
    assert ds.download_dataset(good, data_dir=tmp_path / "dl") == tmp_path / "dl" / "fake"
    assert md5(tmp_path / "dl" / "fake" / IDX_NAMES[0]) == spec.files[0].md5
    bad_source = tmp_path / "bad"
    bad_source.mkdir()
    (bad_source / IDX_NAMES[0]).write_bytes(b"not it")
    bad = dataclasses.replace(spec, mirrors=(f"{http_root}/bad",))
    with pytest.raises(
        DatasetDownloadError, match=r"md5 [0-9a-f]{32} != expected " + spec.files[0].md5
    ):
        ds.load_dataset(bad, data_dir=tmp_path / "dl2", download=True)
    assert list((tmp_path / "dl2" / "fake").iterdir()) == []


# ---------------------------------------------------------------------------- CIFAR


def _cifar_files(which: str, bytes_keys: bool, with_meta: bool = True) -> dict[str, dict]:
    """Tiny pickled batches in the official layout: data [N, 3072] uint8, labels as lists."""

    def key(k: str):
        return k.encode() if bytes_keys else k

    def batch(start: int, n: int, label_key: str, classes: int) -> dict:
        data = ((np.arange(n * 3072).reshape(n, 3072) + 1000 * start) % 251).astype(np.uint8)
        return {
            key("data"): data,
            key(label_key): [int(v) for v in (np.arange(n) + start) % classes],
        }

    if which == "cifar10":
        files = {f"data_batch_{i}": batch(10 * i, 2, "labels", 10) for i in range(1, 6)}
        files["test_batch"] = batch(7, 3, "labels", 10)
        if with_meta:
            files["batches.meta"] = {key("label_names"): [key(f"c10_{i}") for i in range(10)]}
    else:
        files = {"train": batch(0, 4, "fine_labels", 100), "test": batch(50, 2, "fine_labels", 100)}
        files["train"][key("coarse_labels")] = [0, 1, 2, 3]
        if with_meta:
            files["meta"] = {key("fine_label_names"): [key(f"c100_{i}") for i in range(100)]}
    return files


def _write_cifar(directory: Path, folder: str, files: dict[str, dict]) -> Path:
    (directory / folder).mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        with open(directory / folder / name, "wb") as handle:
            pickle.dump(content, handle, protocol=2)
    return directory / folder


def _tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_read_cifar10_folder_and_tar(tmp_path: Path, bytes_keys: bool) -> None:
    files = _cifar_files("cifar10", bytes_keys)
    folder = _write_cifar(tmp_path / "x", "cifar-10-batches-py", files)
    archive = _tar(folder, tmp_path / "cifar-10-python.tar.gz")
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    expected_x = np.concatenate([files[f"data_batch_{i}"][k("data")] for i in range(1, 6)])
    expected_y = sum((files[f"data_batch_{i}"][k("labels")] for i in range(1, 6)), [])
    for where in (folder, tmp_path / "x", archive, tmp_path):
        got = ds.read_cifar(where, "cifar10")
        assert got.train_x.shape == (10, 3, 32, 32) and got.train_x.dtype == np.uint8
        assert got.test_x.shape == (3, 3, 32, 32) and got.test_y.dtype == np.int64
        # row layout: 1024 red, 1024 green, 1024 blue, each 32x32 row-major
        assert got.train_x[3, 1, 2, 5] == expected_x[3, 1024 + 2 * 32 + 5]
        np.testing.assert_array_equal(got.train_x.reshape(10, -1), expected_x)
        np.testing.assert_array_equal(got.train_y, expected_y)
        assert got.class_names == tuple(f"c10_{i}" for i in range(10))


def test_read_cifar100_folder_tar_and_missing_meta(tmp_path: Path) -> None:
    files = _cifar_files("cifar100", bytes_keys=True)
    folder = _write_cifar(tmp_path / "x", "cifar-100-python", files)
    archive = _tar(folder, tmp_path / "c100.tar.gz")
    for where in (folder, archive):
        got = ds.read_cifar(where, "cifar100")
        assert got.train_x.shape == (4, 3, 32, 32) and got.test_x.shape == (2, 3, 32, 32)
        np.testing.assert_array_equal(got.train_y, [0, 1, 2, 3])  # fine labels, not coarse
        np.testing.assert_array_equal(got.test_y, [50, 51])
        assert got.class_names[99] == "c100_99"
    bare = _write_cifar(
        tmp_path / "y", "cifar-100-python", _cifar_files("cifar100", False, with_meta=False)
    )
    got = ds.read_cifar(bare, "cifar100")
    assert len(got.class_names) == 100 and got.class_names[:2] == ("class_0", "class_1")


def test_read_cifar_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="which must be one of"):
        ds.read_cifar(tmp_path, "cifar5")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        ds.read_cifar(tmp_path, "cifar10")
    files = _cifar_files("cifar10", False)
    del files["data_batch_3"]
    folder = _write_cifar(tmp_path / "x", "cifar-10-batches-py", files)
    with pytest.raises(ValueError, match="missing: data_batch_3"):
        ds.read_cifar(folder, "cifar10")


def test_load_cifar_via_spec_archive_and_extracted(
    tmp_path: Path, isolated_env: Path, monkeypatch
) -> None:
    folder = _write_cifar(tmp_path / "src", "cifar-10-batches-py", _cifar_files("cifar10", True))
    root = tmp_path / "root" / "fakecifar"
    root.mkdir(parents=True)
    archive = _tar(folder, root / "cifar-10-python.tar.gz")
    names = (
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    )
    spec = DatasetSpec(
        name="fakecifar",
        kind="cifar10",
        files=(RemoteFile("cifar-10-python.tar.gz", md5(archive)),),
        mirrors=("https://example.invalid/",),
        num_classes=10,
        extracted=tuple(RemoteFile(f"cifar-10-batches-py/{n}", md5(folder / n)) for n in names),
    )
    monkeypatch.setitem(ds.DATASETS, "fakecifar", spec)
    from_tar = ds.load_dataset("fakecifar", data_dir=tmp_path / "root")
    assert from_tar.train_x.shape == (10, 3, 32, 32) and from_tar.train_y.dtype == torch.int64
    assert from_tar.class_names[0] == "c10_0"
    shutil.copytree(folder, root / "cifar-10-batches-py")
    from_dir = ds.load_dataset("fakecifar", data_dir=tmp_path / "root")
    assert torch.equal(from_dir.train_x, from_tar.train_x) and torch.equal(
        from_dir.test_y, from_tar.test_y
    )
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"evil")
    with pytest.raises(DatasetChecksumError, match="test_batch"):
        ds.load_dataset("fakecifar", data_dir=tmp_path / "root")


# ---------------------------------------------------------------------------- container


def test_array_dataset_validation() -> None:
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 1])
    ArrayDataset("ok", x, y, x, y, 3, ("a", "b", "c"), 255.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), found range \[0, 2\]"):
        ArrayDataset("bad", x, y, x, y, 2, ("a", "b"), 255.0)
    with pytest.raises(ValueError, match="train_x must be a uint8 or float32"):
        ArrayDataset("bad", x.double(), y, x, y, 3, ("a", "b", "c"), 255.0)
    with pytest.raises(ValueError, match="train_y must be an int64"):
        ArrayDataset("bad", x, y.int(), x, y, 3, ("a", "b", "c"), 255.0)
    with pytest.raises(ValueError, match="3 class names|2 class names"):
        ArrayDataset("bad", x, y, x, y, 3, ("a", "b"), 255.0)


# ---------------------------------------------------------------------------- digits


def test_digits_split_is_fixed_stratified_partition() -> None:
    from sklearn.datasets import load_digits

    first, second = ds.load_dataset("digits"), ds.load_dataset("digits")
    assert first.train_x.shape[1:] == (1, 8, 8) and first.train_x.dtype == torch.uint8
    assert first.num_classes == 10 and first.scale == 16.0 and first.class_names[3] == "3"
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)
    assert len(first.train_y) + len(first.test_y) == 1797
    reference = load_digits()
    counts = np.bincount(reference.target, minlength=10)
    np.testing.assert_array_equal(first.test_y.bincount(minlength=10).numpy(), counts // 4)
    assert len(first.test_y) == 445 and int(first.train_x.max()) == 16
    # a partition: train + test rows (image + label) are exactly the original rows, as a multiset
    original = np.column_stack([reference.images.reshape(1797, 64), reference.target])
    split = np.column_stack(
        [
            torch.cat([first.train_x, first.test_x]).reshape(1797, 64).numpy(),
            torch.cat([first.train_y, first.test_y]).numpy(),
        ]
    )
    np.testing.assert_array_equal(
        np.unique(original, axis=0, return_counts=True)[1],
        np.unique(split, axis=0, return_counts=True)[1],
    )
    np.testing.assert_array_equal(np.unique(original, axis=0), np.unique(split, axis=0))


# ---------------------------------------------------------------------------- real data (CI)


def _real(name: str, folder: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ArrayDataset:
    if not os.environ.get("LIFELONG_DATA"):
        pytest.skip(
            f"{name} not found: set LIFELONG_DATA to a directory holding {folder}/ "
            f"(the four *-ubyte.gz files)"
        )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))  # LIFELONG_DATA only
    try:
        return ds.load_dataset(folder)
    except DatasetNotFoundError:
        pytest.skip(
            f"{name} not found: LIFELONG_DATA={os.environ['LIFELONG_DATA']} holds no "
            f"{folder}/ with the four *-ubyte.gz files"
        )


def test_real_mnist(monkeypatch, tmp_path: Path) -> None:
    data = _real("MNIST", "mnist", monkeypatch, tmp_path)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and data.test_y.dtype == torch.int64
    np.testing.assert_array_equal(
        data.train_y.bincount().numpy(),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    )
    np.testing.assert_array_equal(
        data.test_y.bincount().numpy(), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    mean = int(data.train_x.numpy().sum(dtype=np.int64)) / (data.train_x.numel() * data.scale)
    assert mean == pytest.approx(0.1306604762738429, abs=1e-12)


def test_real_fashion_mnist(monkeypatch, tmp_path: Path) -> None:
    data = _real("Fashion-MNIST", "fashion-mnist", monkeypatch, tmp_path)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8
    np.testing.assert_array_equal(data.train_y.bincount().numpy(), [6000] * 10)
    np.testing.assert_array_equal(data.test_y.bincount().numpy(), [1000] * 10)
    assert data.class_names[0] == "T-shirt/top"
