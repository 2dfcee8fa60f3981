"""Image-classification datasets: file readers, a checksummed registry, local lookup and download.

Every dataset comes back as an :class:`ArrayDataset` of channels-first tensors (``[N, C, H, W]``,
uint8 images, int64 labels) plus its class names and the ``scale`` that maps the images to
``[0, 1]``. Nothing here converts to float, normalises or augments: that belongs to scenarios
and models.

Where the files are looked for, in this order (first complete set wins):

1. the explicit ``data_dir`` argument (CLI: ``--data-dir``);
2. each directory in the environment variable ``LIFELONG_DATA`` (``os.pathsep``-separated);
3. the user cache (:func:`user_cache_dir`, from platformdirs: ``$XDG_CACHE_HOME/lifelong``,
   default ``~/.cache/lifelong``, on Linux).

Within each of these roots the files may live in ``<root>/<name>/`` (preferred, e.g.
``<root>/mnist/train-images-idx3-ubyte.gz``), directly in ``<root>/``, or in torchvision's
layout ``<root>/MNIST/raw/``. Every file's md5 is checked before it is read. With
``download=True`` missing files are fetched into ``<data_dir>/<name>/`` (or the user cache) from
the registered mirrors by pooch: md5-checked, retried, with a progress bar on a terminal, and
moved into place atomically.

References:
    LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
    recognition" (MNIST; IDX file format at http://yann.lecun.com/exdb/mnist/).
    Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
    Learning Algorithms".
    Clanuwat et al. 2018, "Deep Learning for Classical Japanese Literature" (Kuzushiji-MNIST).
    Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images" (CIFAR-10/100).
    Alpaydin & Kaynak 1998, UCI "Optical Recognition of Handwritten Digits" (the 8x8 digits
    bundled with scikit-learn).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
import sys
import tarfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "CifarArrays",
    "DatasetChecksumError",
    "DatasetDownloadError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "RemoteFile",
    "download_dataset",
    "file_md5",
    "find_data_dir",
    "get_spec",
    "list_datasets",
    "load_dataset",
    "read_cifar",
    "read_idx",
    "search_roots",
    "user_cache_dir",
]

DatasetKind = Literal["idx", "cifar10", "cifar100", "digits"]

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class DatasetChecksumError(ValueError):
    """A dataset file exists but its md5 differs from the registered one (truncated/corrupted)."""


class DatasetNotFoundError(FileNotFoundError):
    """No directory searched holds a complete set of the dataset's files."""


class DatasetDownloadError(OSError):
    """Every mirror failed (network error or md5 mismatch) while downloading a dataset file."""


# --------------------------------------------------------------------------------------------
# The dataset container
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class ArrayDataset:
    """A fixed train/test split held in memory as channels-first tensors.

    Comparison is by identity (``eq=False``): element-wise tensor equality has no single truth
    value. Use ``torch.equal`` on the fields to compare contents.

    Attributes:
        name: Registry name (``"mnist"``, ``"cifar10"``, ...).
        train_x: Training images ``[N, C, H, W]``, uint8 or float32 (raw values, not scaled).
        train_y: Training labels ``[N]``, int64 in ``[0, num_classes)``.
        test_x: Test images ``[M, C, H, W]``, same dtype and ``C, H, W`` as ``train_x``.
        test_y: Test labels ``[M]``, int64.
        num_classes: Number of classes.
        class_names: One name per class, indexed by label.
        scale: ``train_x / scale`` lies in ``[0, 1]`` (255.0 for 8-bit images, 16.0 for digits).

    Raises:
        ValueError: On construction, if shapes, dtypes, label range or names are inconsistent.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]
    scale: float

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x = getattr(self, f"{split}_x")
            y = getattr(self, f"{split}_y")
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise ValueError(
                    f"ArrayDataset {self.name!r}: {split}_x and {split}_y must be torch tensors, "
                    f"got {type(x).__name__} and {type(y).__name__}"
                )
            if x.ndim != 4 or x.dtype not in (torch.uint8, torch.float32):
                raise ValueError(
                    f"ArrayDataset {self.name!r}: {split}_x must be a uint8 or float32 tensor of "
                    f"shape [N, C, H, W], got dtype {x.dtype} and shape {tuple(x.shape)}"
                )
            if y.ndim != 1 or y.dtype != torch.int64:
                raise ValueError(
                    f"ArrayDataset {self.name!r}: {split}_y must be an int64 tensor of shape [N], "
                    f"got dtype {y.dtype} and shape {tuple(y.shape)}"
                )
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"ArrayDataset {self.name!r}: {split}_x has {x.shape[0]} images but "
                    f"{split}_y has {y.shape[0]} labels"
                )
        if (
            self.train_x.shape[1:] != self.test_x.shape[1:]
            or self.train_x.dtype != self.test_x.dtype
        ):
            raise ValueError(
                f"ArrayDataset {self.name!r}: train and test images differ: "
                f"{self.train_x.dtype} {tuple(self.train_x.shape[1:])} vs "
                f"{self.test_x.dtype} {tuple(self.test_x.shape[1:])}"
            )
        if self.num_classes < 1 or len(self.class_names) != self.num_classes:
            raise ValueError(
                f"ArrayDataset {self.name!r}: num_classes={self.num_classes} but "
                f"{len(self.class_names)} class names were given"
            )
        labels = torch.cat([self.train_y, self.test_y])
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"ArrayDataset {self.name!r}: labels must lie in [0, {self.num_classes}), "
                f"found range [{int(labels.min())}, {int(labels.max())}]"
            )
        if not self.scale > 0:
            raise ValueError(f"ArrayDataset {self.name!r}: scale must be > 0, got {self.scale}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The per-image shape ``(C, H, W)``."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, train={tuple(self.train_x.shape)}, "
            f"test={tuple(self.test_x.shape)}, dtype={self.train_x.dtype}, "
            f"num_classes={self.num_classes}, scale={self.scale})"
        )


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------

# IDX type codes (third magic byte) -> big-endian element dtype (LeCun et al. 1998, file format).
_IDX_DTYPES: Mapping[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzipped or plain) into a numpy array in native byte order.

    Format (LeCun et al. 1998, MNIST page): magic ``00 00 <type> <ndim>``, then ``ndim``
    big-endian uint32 sizes, then the elements in row-major big-endian order. Type codes:
    0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64. Gzip is
    recognised by its magic bytes, not by the file name.

    Args:
        path: The ``.idx``/``-ubyte`` file, optionally gzip-compressed.

    Returns:
        A new, writable array of shape ``dims`` (e.g. ``(60000, 28, 28)`` uint8).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not IDX (bad magic), uses an unknown type code, or its size
            does not match its header (truncated), or the gzip stream is corrupted.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        is_gzip = handle.read(2) == b"\x1f\x8b"
    try:
        if is_gzip:
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(
            f"{path}: the gzip stream is truncated or corrupted ({error}); delete the file and "
            f"download it again"
        ) from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path} is not an IDX file: its magic number starts with bytes {raw[:4].hex(' ')!r}, "
            f"expected '00 00 <type code> <ndim>'"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{path}: unsupported IDX type code 0x{code:02X} (supported: {known})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions; expected at least 1")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated IDX header ({len(raw)} bytes, need {header} for {ndim} dims)"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(dims, dtype=np.int64))
    expected = count * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header promises shape {dims} ({expected} data bytes) but the file holds "
            f"{len(raw) - header} data bytes; the file is truncated or corrupted"
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


class CifarArrays(NamedTuple):
    """The arrays of a CIFAR release: uint8 ``[N, 3, 32, 32]`` images and int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    num_classes: int
    default_names: tuple[str, ...]


_CIFAR10_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# Krizhevsky 2009; file layout of the "python version" archives at cs.toronto.edu/~kriz/cifar.html.
_CIFAR_LAYOUTS: Mapping[str, _CifarLayout] = {
    "cifar10": _CifarLayout(
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        meta="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
        default_names=_CIFAR10_NAMES,
    ),
    "cifar100": _CifarLayout(
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        train=("train",),
        test=("test",),
        meta="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        default_names=tuple(f"class_{i}" for i in range(100)),
    ),
}


def _unpickle(handle: Any, source: str) -> dict[str, Any]:
    """Load one CIFAR pickle (Python 2 or 3) and return it with ``str`` keys."""
    try:
        # latin1 is the documented way to read Python-2 pickles holding numpy arrays.
        content = pickle.load(handle, encoding="latin1")
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{source}: not a readable CIFAR pickle ({error})") from error
    if not isinstance(content, dict):
        raise ValueError(f"{source}: expected a pickled dict, got {type(content).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in content.items()}


def _cifar_batch(
    entry: dict[str, Any], label_key: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in entry or label_key not in entry:
        raise ValueError(
            f"{source}: CIFAR batch lacks key 'data' or {label_key!r} (has {sorted(entry)})"
        )
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{source}: expected 'data' of shape [N, 3072] and N labels, got {data.shape} and "
            f"{labels.shape}"
        )
    # Each row is 1024 red, then 1024 green, then 1024 blue values, each 32x32 row-major.
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(path: str | os.PathLike[str], which: Literal["cifar10", "cifar100"]) -> CifarArrays:
    """Read the CIFAR-10 or CIFAR-100 "python version" release (Krizhevsky 2009).

    CIFAR-10: train = ``data_batch_1`` .. ``data_batch_5`` concatenated in that order, test =
    ``test_batch``, labels under ``labels``, names from ``batches.meta`` (``label_names``).
    CIFAR-100: ``train``/``test`` with ``fine_labels``, names from ``meta``
    (``fine_label_names``), falling back to ``class_0``.. when ``meta`` is absent.

    The pickles are unpickled, which can run code: read only files you trust.
    :func:`load_dataset` checks the md5 of each file before calling this.

    Args:
        path: One of: the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``), a
            directory containing it, the ``.tar.gz`` archive itself (read with ``tarfile``, no
            extraction), or a directory containing the archive under its canonical name.
        which: ``"cifar10"`` or ``"cifar100"``.

    Returns:
        :class:`CifarArrays` with uint8 images ``[N, 3, 32, 32]`` and int64 labels.

    Raises:
        ValueError: If ``which`` is unknown or a file is malformed.
        FileNotFoundError: If neither the folder nor the archive is found at ``path``.
    """
    if which not in _CIFAR_LAYOUTS:
        raise ValueError(f"which must be one of {sorted(_CIFAR_LAYOUTS)}, got {which!r}")
    layout = _CIFAR_LAYOUTS[which]
    path = Path(path)
    wanted = (*layout.train, *layout.test, layout.meta)
    entries: dict[str, dict[str, Any]] = {}
    if path.is_file():
        source = str(path)
        try:
            with tarfile.open(path, mode="r|*") as archive:  # one sequential pass
                for member in archive:
                    parts = member.name.replace("\\", "/").split("/")
                    if not member.isfile() or parts[-1] not in wanted:
                        continue
                    if len(parts) < 2 or parts[-2] != layout.folder:
                        continue
                    handle = archive.extractfile(member)
                    if handle is not None:
                        entries[parts[-1]] = _unpickle(handle, f"{path}:{member.name}")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            raise ValueError(
                f"{path}: cannot read the archive ({error}); it is truncated or corrupted, delete "
                f"it and download it again"
            ) from error
    else:
        candidates = [path / layout.folder, path]
        folder = next((c for c in candidates if (c / layout.train[0]).is_file()), None)
        if folder is None:
            if (path / layout.archive).is_file():
                return read_cifar(path / layout.archive, which)
            raise FileNotFoundError(
                f"No {which} data at {path}: looked for the folder {path / layout.folder}, the "
                f"batch files directly in {path}, and the archive {path / layout.archive}"
            )
        source = str(folder)
        for name in wanted:
            if (folder / name).is_file():
                with open(folder / name, "rb") as handle:
                    entries[name] = _unpickle(handle, str(folder / name))
    missing = [name for name in (*layout.train, *layout.test) if name not in entries]
    if missing:
        raise ValueError(f"{source}: {which} files missing: {', '.join(missing)}")
    train = [_cifar_batch(entries[n], layout.label_key, f"{source}/{n}") for n in layout.train]
    test = [_cifar_batch(entries[n], layout.label_key, f"{source}/{n}") for n in layout.test]
    names = layout.default_names
    if layout.meta in entries and layout.names_key in entries[layout.meta]:
        raw_names = entries[layout.meta][layout.names_key]
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw_names)
    return CifarArrays(
        train_x=np.concatenate([x for x, _ in train]),
        train_y=np.concatenate([y for _, y in train]),
        test_x=np.concatenate([x for x, _ in test]),
        test_y=np.concatenate([y for _, y in test]),
        class_names=names,
    )


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name (relative to the dataset directory) and md5 hex digest."""

    filename: str
    md5: str


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's files come from and how to read them.

    Attributes:
        name: Registry name; also the sub-directory ``<root>/<name>/`` searched and downloaded to.
        kind: Reader: ``"idx"`` (``files`` = train images, train labels, test images, test
            labels, in this order), ``"cifar10"``/``"cifar100"`` (``files`` = the archive), or
            ``"digits"`` (scikit-learn, no files).
        files: The files to download, with md5 sums.
        mirrors: Base URLs tried in order; a file's URL is ``mirror + filename``.
        num_classes: Number of classes.
        class_names: Class names (empty: read them from the files).
        homepage: Where a person can read about and fetch the data.
        scale: Divisor mapping the raw image values to ``[0, 1]``.
        torchvision_dir: Folder name of torchvision's ``<root>/<dir>/raw/`` layout, if any.
        extracted: Alternative to ``files``: the members of the extracted archive, with md5 sums
            (paths relative to the dataset directory). Preferred when all are present.
    """

    name: str
    kind: DatasetKind
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    num_classes: int
    class_names: tuple[str, ...] = ()
    homepage: str = ""
    scale: float = 255.0
    torchvision_dir: str | None = None
    extracted: tuple[RemoteFile, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "idx" and len(self.files) != 4:
            raise ValueError(
                f"DatasetSpec {self.name!r}: kind 'idx' needs exactly 4 files (train images, "
                f"train labels, test images, test labels), got {len(self.files)}"
            )
        if self.kind in ("cifar10", "cifar100") and len(self.files) != 1:
            raise ValueError(
                f"DatasetSpec {self.name!r}: kind {self.kind!r} needs exactly 1 file (the "
                f".tar.gz archive), got {len(self.files)}"
            )
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"DatasetSpec {self.name!r}: {len(self.class_names)} class names for "
                f"{self.num_classes} classes"
            )

    def urls(self, filename: str) -> list[str]:
        """Return the candidate download URLs of ``filename``, one per mirror, in order."""
        return [m if m.endswith(filename) else m.rstrip("/") + "/" + filename for m in self.mirrors]


_MNIST_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _idx_files(*md5s: str) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, md5) for name, md5 in zip(_MNIST_NAMES, md5s, strict=True))


def _cifar_members(folder: str, pairs: Iterable[tuple[str, str]]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(f"{folder}/{name}", md5) for name, md5 in pairs)


_KRIZ = "https://www.cs.toronto.edu/~kriz/"

#: The built-in datasets. md5 sums are those of the official releases (also used by
#: torchvision). Tests may add entries with ``monkeypatch.setitem(DATASETS, name, spec)``.
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        kind="idx",
        files=_idx_files(
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        homepage="http://yann.lecun.com/exdb/mnist/",
        torchvision_dir="MNIST",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        kind="idx",
        files=_idx_files(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        num_classes=10,
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        torchvision_dir="FashionMNIST",
    ),
    "kmnist": DatasetSpec(
        name="kmnist",
        kind="idx",
        files=_idx_files(
            "bdb82020997e1d708af4cf47b453dcf7",
            "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7",
            "7320c461ea6c1c855c0b718fb2a4b134",
        ),
        mirrors=(
            "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        ),
        num_classes=10,
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        homepage="https://github.com/rois-codh/kmnist",
        torchvision_dir="KMNIST",
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        kind="cifar10",
        files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        mirrors=(_KRIZ,),
        num_classes=10,
        class_names=_CIFAR10_NAMES,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        extracted=_cifar_members(
            "cifar-10-batches-py",
            (
                ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
                ("test_batch", "40351d587109b95175f43aff81a1287e"),
                ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
            ),
        ),
    ),
    "cifar100": DatasetSpec(
        name="cifar100",
        kind="cifar100",
        files=(RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
        mirrors=(_KRIZ,),
        num_classes=100,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        extracted=_cifar_members(
            "cifar-100-python",
            (
                ("train", "16019d7e3df5f24257cddd939b257f8d"),
                ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
                ("meta", "7973b15100ade9c7d40fb424638fde48"),
            ),
        ),
    ),
    "digits": DatasetSpec(
        name="digits",
        kind="digits",
        files=(),
        mirrors=(),
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        scale=16.0,
    ),
}


def list_datasets() -> list[str]:
    """Return the registered dataset names, sorted."""
    return sorted(DATASETS)


def get_spec(name: str | DatasetSpec) -> DatasetSpec:
    """Return the registered :class:`DatasetSpec` for ``name`` (a spec is returned unchanged).

    Names are case-insensitive and ``_`` is read as ``-`` (``"Fashion_MNIST"`` works).

    Raises:
        ValueError: If the name is not registered; the message lists the valid names.
    """
    if isinstance(name, DatasetSpec):
        return name
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    return DATASETS[key]


# --------------------------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------------------------


def user_cache_dir() -> Path:
    """Return the user cache root (platformdirs): on Linux ``$XDG_CACHE_HOME/lifelong``
    (default ``~/.cache/lifelong``; an empty or relative ``XDG_CACHE_HOME`` is ignored), on
    macOS ``~/Library/Caches/lifelong``, on Windows ``%LOCALAPPDATA%\\lifelong\\Cache``.
    """
    import platformdirs

    return platformdirs.user_cache_path("lifelong", appauthor=False)


def search_roots(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Return the roots searched, in order: ``data_dir``, ``$LIFELONG_DATA`` entries, the cache."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    for part in os.environ.get("LIFELONG_DATA", "").split(os.pathsep):
        if part.strip():
            roots.append(Path(part.strip()).expanduser())
    roots.append(user_cache_dir())
    return list(dict.fromkeys(roots))


def _candidate_dirs(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    dirs: list[Path] = []
    for root in search_roots(data_dir):
        dirs += [root / spec.name, root]
        if spec.torchvision_dir:
            dirs.append(root / spec.torchvision_dir / "raw")
    return list(dict.fromkeys(dirs))


def _complete_set(spec: DatasetSpec, directory: Path) -> tuple[RemoteFile, ...] | None:
    """The file set (extracted members preferred, else ``files``) fully present in ``directory``."""
    for files in (spec.extracted, spec.files):
        if files and all((directory / f.filename).is_file() for f in files):
            return files
    return None


def _describe_dir(spec: DatasetSpec, directory: Path) -> str:
    if not directory.is_dir():
        return "does not exist"
    have = [f.filename for f in spec.files if (directory / f.filename).is_file()]
    if _gunzipped(spec, [directory]):
        return "holds the files gunzipped; lifelong reads them gzipped (*.gz)"
    if not have:
        return "no dataset files"
    lacking = [f.filename for f in spec.files if f.filename not in have]
    return f"incomplete, missing {', '.join(lacking)}"


def _gunzipped(spec: DatasetSpec, dirs: list[Path]) -> list[Path]:
    """Uncompressed copies (``train-images-idx3-ubyte``) of expected ``.gz`` files, found."""
    return [d / f.filename[:-3] for d in dirs for f in spec.files
            if f.filename.endswith(".gz") and not (d / f.filename).is_file()
            and (d / f.filename[:-3]).is_file()]


def _not_found_message(spec: DatasetSpec, dirs: list[Path], target: Path) -> str:
    width = max(len(str(d)) for d in dirs)
    lines = [
        f"Dataset {spec.name!r} not found. Expected the files "
        f"{', '.join(f.filename for f in spec.files)}"
        + (
            f" (or the extracted folder {spec.extracted[0].filename.split('/')[0]}/)"
            if spec.extracted
            else ""
        )
        + " in one of these directories (searched in this order):"
    ]
    lines += [f"  {str(d):<{width}}  ({_describe_dir(spec, d)})" for d in dirs]
    unzipped = _gunzipped(spec, dirs)
    if unzipped:
        lines += [f"Found {unzipped[0]} uncompressed where {unzipped[0].name}.gz is expected: "
                  f"lifelong reads the gzipped IDX files (their md5 is checked); compress them "
                  f"again with 'gzip {unzipped[0].parent}/*-ubyte', or download them."]
    lines += [
        "Provide them in one of these ways:",
        f"  - pass data_dir=DIR (CLI: --data-dir DIR) with the files in DIR/{spec.name}/;",
        f"  - set the environment variable LIFELONG_DATA=DIR (files in DIR/{spec.name}/; "
        f"several directories separated by {os.pathsep!r});",
        f"  - pass download=True (CLI: --download) to download them (md5-checked) into {target}.",
        "Canonical URLs: "
        + ", ".join(spec.urls(f.filename)[0] for f in spec.files)
        + (f" (see {spec.homepage})" if spec.homepage else ""),
    ]
    return "\n".join(lines)


def _download_target(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None) -> Path:
    root = Path(data_dir).expanduser() if data_dir is not None else user_cache_dir()
    return root / spec.name


def find_data_dir(name: str | DatasetSpec, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the first directory that holds a complete set of the dataset's files.

    Search order: ``data_dir``, then each entry of ``$LIFELONG_DATA``, then the user cache
    (:func:`user_cache_dir`); within each root ``<root>/<name>/``, ``<root>/`` and torchvision's
    ``<root>/<TorchvisionName>/raw/``. Checksums are not verified here (see :func:`load_dataset`).

    Args:
        name: Registered name or a :class:`DatasetSpec`.
        data_dir: Explicit root searched first.

    Returns:
        The directory containing the files.

    Raises:
        ValueError: For an unknown name, or for ``digits`` (bundled with scikit-learn, no files).
        DatasetNotFoundError: If no searched directory is complete; the message lists them all,
            the expected file names, and how to provide the files.
    """
    spec = get_spec(name)
    if spec.kind == "digits":
        raise ValueError(
            f"Dataset {spec.name!r} is bundled with scikit-learn and has no data directory; "
            f"call load_dataset({spec.name!r}) directly"
        )
    dirs = _candidate_dirs(spec, data_dir)
    for directory in dirs:
        if _complete_set(spec, directory) is not None:
            return directory
    raise DatasetNotFoundError(_not_found_message(spec, dirs, _download_target(spec, data_dir)))


# --------------------------------------------------------------------------------------------
# Checksums and download
# --------------------------------------------------------------------------------------------


def file_md5(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the md5 hex digest of a file, read in chunks of ``chunk_size`` bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str, spec: DatasetSpec) -> None:
    actual = file_md5(path)
    if actual != expected.lower():
        filename = path.name
        urls = [u for f in spec.files if f.filename == filename for u in spec.urls(filename)]
        source = (
            f" from {urls[0]}" if urls else (f" (see {spec.homepage})" if spec.homepage else "")
        )
        other = _readable_other_file(path, spec)
        if other is not None:
            raise DatasetChecksumError(
                f"{path} is not the official {spec.name!r} file: {other}, complete and readable, "
                f"but its md5 is {actual} where the official release's is {expected}. lifelong "
                f"loads {spec.name!r} only from the official files{source}. To train on your own "
                "data, read it (lifelong.data.datasets.read_idx reads IDX files), turn the arrays "
                "into a dataset with lifelong.data.custom.from_arrays and register it under a new "
                "name with lifelong.data.custom.register (README, Your own data); move these "
                f"files out of {path.parent}."
            )
        raise DatasetChecksumError(
            f"Checksum mismatch for {path}: expected md5 {expected}, actual md5 {actual}. The "
            f"file is truncated or corrupted: delete it and download it again{source} "
            f"(load_dataset({spec.name!r}, download=True) or --download)."
        )


def _readable_other_file(path: Path, spec: DatasetSpec) -> str | None:
    """What a file whose md5 is not the registered one holds, if it reads as a complete file of
    the dataset's format (someone else's data under the dataset's name), else ``None``."""
    if spec.kind != "idx":
        return None
    try:
        array = read_idx(path)
    except (ValueError, OSError):
        return None
    return f"it holds an IDX array of shape {array.shape} ({array.dtype})"


#: How often pooch tries a mirror again after a failed or corrupted download (1 s, 2 s ... apart).
DOWNLOAD_RETRIES = 2


def _download_file(spec: DatasetSpec, remote: RemoteFile, target: Path) -> None:
    """Fetch ``remote`` into ``target`` with pooch (md5-checked, retried, progress bar on a
    terminal, written atomically), trying each mirror in order."""
    import pooch
    import requests

    failures: list[str] = []
    for url in spec.urls(remote.filename):
        fetcher = pooch.create(path=target, base_url="", urls={remote.filename: url},
                               registry={remote.filename: f"md5:{remote.md5}"},
                               retry_if_failed=DOWNLOAD_RETRIES)
        try:
            fetcher.fetch(remote.filename, progressbar=sys.stderr.isatty())
            return
        except ValueError as error:  # pooch: hash mismatch (or a protocol it cannot fetch)
            got = re.search(r"but got '?([0-9a-f]{32})", str(error))
            failures.append(f"{url}: md5 {got.group(1)} != expected {remote.md5}" if got
                            else f"{url}: {error}")
        except (OSError, requests.RequestException) as error:
            failures.append(f"{url}: {error}")
    raise DatasetDownloadError(
        f"Could not download {remote.filename} for dataset {spec.name!r}:\n  "
        + "\n  ".join(failures or ["no mirrors registered"])
        + f"\nDownload it by hand (md5 {remote.md5}) into {target}/"
        + (f" (see {spec.homepage})" if spec.homepage else "")
    )


def download_dataset(
    name: str | DatasetSpec, data_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Download the dataset's missing files into ``<data_dir>/<name>/`` or the user cache.

    Each file is fetched by pooch into a temporary file in the target directory, md5-checked
    (retried :data:`DOWNLOAD_RETRIES` times), then renamed atomically; mirrors are tried in
    order. Files already present are left alone.

    Args:
        name: Registered name or a :class:`DatasetSpec`.
        data_dir: Root to download into (default: :func:`user_cache_dir`).

    Returns:
        The dataset directory the files are in.

    Raises:
        ValueError: For an unknown name, or a dataset with nothing to download.
        DatasetDownloadError: If every mirror fails for some file.
    """
    spec = get_spec(name)
    if not spec.files:
        raise ValueError(f"Dataset {spec.name!r} has no files to download")
    target = _download_target(spec, data_dir)
    target.mkdir(parents=True, exist_ok=True)
    for remote in spec.files:
        if not (target / remote.filename).is_file():
            _download_file(spec, remote, target)
    return target


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _load_idx(spec: DatasetSpec, directory: Path) -> ArrayDataset:
    train_x, train_y, test_x, test_y = (read_idx(directory / f.filename) for f in spec.files)
    images = []
    for path, x in ((spec.files[0].filename, train_x), (spec.files[2].filename, test_x)):
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.dtype != np.uint8:
            raise ValueError(
                f"{directory / path}: expected uint8 images [N, H, W] or [N, C, H, W], got "
                f"{x.dtype} {x.shape}"
            )
        images.append(torch.from_numpy(x))
    return ArrayDataset(
        name=spec.name,
        train_x=images[0],
        train_y=torch.from_numpy(train_y.reshape(-1).astype(np.int64)),
        test_x=images[1],
        test_y=torch.from_numpy(test_y.reshape(-1).astype(np.int64)),
        num_classes=spec.num_classes,
        class_names=spec.class_names or tuple(f"class_{i}" for i in range(spec.num_classes)),
        scale=spec.scale,
    )


def _load_cifar(spec: DatasetSpec, directory: Path, files: tuple[RemoteFile, ...]) -> ArrayDataset:
    which: Literal["cifar10", "cifar100"] = "cifar10" if spec.kind == "cifar10" else "cifar100"
    if files == spec.extracted:
        source = directory / files[0].filename.split("/")[0]
    else:
        source = directory / files[0].filename
    arrays = read_cifar(source, which)
    names = arrays.class_names
    if len(names) != spec.num_classes:
        names = spec.class_names or tuple(f"class_{i}" for i in range(spec.num_classes))
    return ArrayDataset(
        name=spec.name,
        train_x=torch.from_numpy(arrays.train_x),
        train_y=torch.from_numpy(arrays.train_y),
        test_x=torch.from_numpy(arrays.test_x),
        test_y=torch.from_numpy(arrays.test_y),
        num_classes=spec.num_classes,
        class_names=names,
        scale=spec.scale,
    )


def _rank_within_class(labels: np.ndarray) -> np.ndarray:
    """Position of each sample among the samples of its class, in original order (vectorised)."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty_like(order)
    rank[order] = np.arange(labels.shape[0]) - first
    return rank


def _load_digits(spec: DatasetSpec) -> ArrayDataset:
    """scikit-learn's 8x8 digits (1797 images, values 0..16) with a fixed stratified split.

    Split (independent of any seed): within each class, in the original sample order, every 4th
    sample (positions 3, 7, 11, ...) goes to test and the rest to train, giving 445 test and
    1352 train images. Images are stored as uint8 (the values are integers 0..16; scale 16).
    """
    from sklearn.datasets import load_digits  # lazy: only this dataset needs scikit-learn

    bunch = load_digits()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target, dtype=np.int64)
    pixels = images.astype(np.uint8)
    if not np.array_equal(pixels, images):
        raise ValueError("sklearn digits: expected integer pixel values in 0..16")
    is_test = _rank_within_class(labels) % 4 == 3
    x = torch.from_numpy(pixels[:, None])
    y = torch.from_numpy(labels)
    mask = torch.from_numpy(is_test)
    return ArrayDataset(
        name=spec.name,
        train_x=x[~mask].contiguous(),
        train_y=y[~mask].contiguous(),
        test_x=x[mask].contiguous(),
        test_y=y[mask].contiguous(),
        num_classes=spec.num_classes,
        class_names=spec.class_names,
        scale=spec.scale,
    )


def load_dataset(
    name: str | DatasetSpec,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> ArrayDataset:
    """Find, verify and read a dataset into an :class:`ArrayDataset`.

    The files are located with :func:`find_data_dir`; each file's md5 is checked (streamed, not
    cached) before it is read. Images stay uint8 (``scale`` says how to map them to [0, 1]).

    Args:
        name: Registered name (see :func:`list_datasets`) or a :class:`DatasetSpec`.
        data_dir: Root searched first, and where ``download=True`` puts the files
            (``<data_dir>/<name>/``; default: the user cache).
        download: If the files are not found, download them from the registered mirrors.

    Returns:
        The dataset with uint8 ``[N, C, H, W]`` images and int64 labels.

    Raises:
        ValueError: For an unknown name (the message lists the valid ones).
        DatasetNotFoundError: If the files are missing and ``download`` is False.
        DatasetChecksumError: If a file's md5 differs from the registered one.
        DatasetDownloadError: If downloading fails on every mirror.
    """
    spec = get_spec(name)
    if spec.kind == "digits":
        return _load_digits(spec)
    try:
        directory = find_data_dir(spec, data_dir)
    except DatasetNotFoundError:
        if not download:
            raise
        directory = download_dataset(spec, data_dir)
    files = _complete_set(spec, directory)
    if files is None:  # only after a download that left the set incomplete
        raise DatasetNotFoundError(
            _not_found_message(spec, [directory], _download_target(spec, data_dir))
        )
    for remote in files:
        _verify(directory / remote.filename, remote.md5, spec)
    if spec.kind == "idx":
        return _load_idx(spec, directory)
    return _load_cifar(spec, directory, files)
