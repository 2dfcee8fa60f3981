"""Your own data as a scenario, and as a named benchmark that the CLI and sweeps run.

Three steps, each usable alone::

    from lifelong.data import custom

    ds = custom.from_arrays(X, y, name="wine")                 # or custom.from_torch(dataset)
    sc = custom.make_scenario(ds, "split", tasks=[[0, 1], [2]])   # a Scenario, for fit()
    custom.register("split-wine", ds, "split", tasks=[[0, 1], [2]])  # lifelong run -b split-wine

:func:`from_arrays` takes arrays as a user has them (numpy arrays or tensors): inputs of shape
``[N, D]`` (feature vectors), ``[N, H, W]`` (grey images), ``[N, H, W, C]`` or ``[N, C, H, W]``
(colour images; which one is read from the shape, or said with ``channels=``), and labels of any
integer dtype or strings (mapped to ``0 .. K-1`` in sorted order, the originals kept as class
names). Without a test set a stratified one is carved out, the same for every seed. Feature
vectors are stored as ``[N, D, 1, 1]``: one "channel" per feature, so ``data.normalize=true``
standardises each feature with the training set's mean and standard deviation.

:func:`register` adds a benchmark by name (split, permuted or rotated, or user-given class
groups) with a training protocol copied from a registered benchmark (``protocol="split-digits"``
by default) and your changes to it. A module that registers benchmarks (or methods) is loaded
on the command line with ``lifelong run --import my_module`` (a module name or a ``.py`` file);
sweeps on Ray import it in every worker too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lifelong.data.datasets import ArrayDataset
from lifelong.data.scenarios import (
    BenchmarkOptions,
    BenchmarkSpec,
    Scenario,
    _stratified_subset,
    get_benchmark,
    permuted_scenario,
    register_benchmark,
    rotated_scenario,
    split_scenario,
)

__all__ = ["KINDS", "from_arrays", "from_torch", "make_scenario", "register"]

KINDS = ("split", "permuted", "rotated")
Kind = Literal["split", "permuted", "rotated"]
Channels = Literal["auto", "first", "last"]
_SHAPES = "[N, D] (feature vectors), [N, H, W] (grey images), [N, H, W, C] or [N, C, H, W]"


def _tensor(a: Any, what: str) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach().cpu()
    array = np.asarray(a)
    if array.dtype == object:
        raise ValueError(f"{what}: cannot read an array of Python objects (dtype object); pass a "
                         "numeric array (e.g. np.stack of the samples)")
    if array.dtype.kind in "US":  # strings (labels only): kept as numpy for np.unique
        raise TypeError("strings")
    return torch.from_numpy(np.ascontiguousarray(array))


def _inputs(x: Any, what: str, channels: Channels) -> Tensor:
    """``x`` as ``[N, C, H, W]`` uint8 (kept) or float32 (every other real dtype)."""
    try:
        t = _tensor(x, what)
    except TypeError:
        raise ValueError(f"{what}: inputs must be numbers, got strings") from None
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{what}: inputs must be real numbers, got dtype {t.dtype}")
    if t.dtype != torch.uint8:
        t = t.to(torch.float32)
    if t.ndim == 2:
        return t[:, :, None, None]
    if t.ndim == 3:
        return t[:, None]
    if t.ndim != 4:
        raise ValueError(f"{what}: expected inputs of shape {_SHAPES}, got shape "
                         f"{tuple(t.shape)}")
    if channels == "auto":
        small = [d for d in (1, 3) if t.shape[d] <= 4]
        if len(small) == 2:  # e.g. [N, 1, 4, 4]: the reading that leaves square images
            square = [d for d in small if len({t.shape[e] for e in (1, 2, 3) if e != d}) == 1]
            small = square if len(square) == 1 else small
        if len(small) != 1:
            raise ValueError(f"{what}: cannot tell whether shape {tuple(t.shape)} is [N, C, H, W] "
                             "or [N, H, W, C]; pass channels='first' or channels='last'")
        channels = "first" if small[0] == 1 else "last"
    if channels == "last":
        return t.permute(0, 3, 1, 2).contiguous()
    if channels != "first":
        raise ValueError(f"channels must be 'auto', 'first' or 'last', got {channels!r}")
    return t


def _labels(y: Any, what: str) -> np.ndarray:
    """``y`` as a 1-D numpy array of integers or strings; a clear error otherwise."""
    array = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        hint = (" (one-hot labels? pass y.argmax(1))" if array.ndim == 2 else "")
        raise ValueError(f"{what}: labels must have shape [N], got {array.shape}{hint}")
    if array.dtype.kind not in "iuUS":
        raise ValueError(
            f"{what}: labels must be integers (class indices) or strings (class names), got "
            f"dtype {array.dtype}"
            + ("; if they are whole numbers, pass y.astype(int)" if array.dtype.kind == "f"
               else ""))
    return array


def _carve_test(y: Tensor, fraction: float, seed: int) -> Tensor:
    """Boolean mask of a stratified test split: ``ceil(fraction * n_c)`` of each class."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(y.shape[0], dtype=torch.bool)
    mask[_stratified_subset(y, fraction, gen)] = True
    return mask


def from_arrays(
    train_x: Any,
    train_y: Any,
    test_x: Any = None,
    test_y: Any = None,
    *,
    name: str = "custom",
    class_names: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    channels: Channels = "auto",
    scale: float | None = None,
) -> ArrayDataset:
    """Turns arrays into an :class:`~lifelong.data.datasets.ArrayDataset`.

    Args:
        train_x: Inputs, numpy array or tensor of shape ``[N, D]``, ``[N, H, W]``,
            ``[N, H, W, C]`` or ``[N, C, H, W]``; uint8 stays uint8, any other real dtype becomes
            float32.
        train_y: Labels ``[N]`` (or ``[N, 1]``) of any integer dtype, or strings.
        test_x: Test inputs, same per-sample shape; ``None`` carves a stratified test set of
            ``test_fraction`` of every class out of ``train_x`` (drawn from ``split_seed``, so
            the same for every run seed).
        test_y: Test labels (given together with ``test_x``).
        name: The dataset's name (recorded in results).
        class_names: One name per class. With integer labels in ``[0, len(class_names))`` the
            labels are kept as they are; otherwise (default) the distinct labels are numbered
            ``0 .. K-1`` in sorted order and named after their original value.
        test_fraction: Fraction of each class held out when ``test_x`` is ``None``.
        split_seed: Seed of that held-out draw.
        channels: For 4-D inputs: ``"first"`` (``[N, C, H, W]``), ``"last"`` (``[N, H, W, C]``)
            or ``"auto"`` (the one of dimensions 1 and 3 that is at most 4 is the channel; if
            both are, the one that leaves square images).
        scale: ``x / scale`` should lie in about ``[0, 1]``; default 255 for uint8, else 1 (use
            ``data.normalize=true`` to standardise instead).

    Returns:
        The dataset, channels-first with int64 labels.

    Raises:
        ValueError: Saying what is wrong with a shape, dtype, label or name, and what to pass.
    """
    if (test_x is None) != (test_y is None):
        raise ValueError(f"{name}: give test_x and test_y together, or neither (a stratified "
                         f"test set of test_fraction={test_fraction} is then held out)")
    x = _inputs(train_x, f"{name}: train_x", channels)
    y_raw = _labels(train_y, f"{name}: train_y")
    if x.shape[0] != y_raw.shape[0]:
        raise ValueError(f"{name}: train_x has {x.shape[0]} samples but train_y has "
                         f"{y_raw.shape[0]} labels")
    if test_x is not None:
        tx = _inputs(test_x, f"{name}: test_x", channels)
        ty_raw = _labels(test_y, f"{name}: test_y")
        if tx.shape[0] != ty_raw.shape[0]:
            raise ValueError(f"{name}: test_x has {tx.shape[0]} samples but test_y has "
                             f"{ty_raw.shape[0]} labels")
        if tx.shape[1:] != x.shape[1:]:
            raise ValueError(f"{name}: test samples have shape {tuple(tx.shape[1:])}, training "
                             f"samples {tuple(x.shape[1:])} (as [C, H, W])")
        if tx.dtype != x.dtype:
            tx = tx.to(torch.float32)
            x = x.to(torch.float32)
    else:
        tx, ty_raw = x[:0], y_raw[:0]
    both = np.concatenate([y_raw, ty_raw])
    if y_raw.dtype.kind != ty_raw.dtype.kind and {y_raw.dtype.kind, ty_raw.dtype.kind} - {"i", "u"}:
        raise ValueError(f"{name}: train_y and test_y must both be integers or both strings")
    keep = (class_names is not None and both.dtype.kind in "iu" and both.size > 0
            and both.min() >= 0 and both.max() < len(class_names))
    if keep:
        assert class_names is not None
        names = tuple(str(n) for n in class_names)
        index = both.astype(np.int64)
    else:
        values, index = np.unique(both, return_inverse=True)
        if class_names is not None:
            if len(class_names) != len(values):
                raise ValueError(f"{name}: {len(class_names)} class names for {len(values)} "
                                 f"distinct labels {values.tolist()[:20]}")
            names = tuple(str(n) for n in class_names)
        else:
            names = tuple(str(v) for v in values.tolist())
    labels = torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64))
    y, ty = labels[: y_raw.shape[0]], labels[y_raw.shape[0]:]
    if test_x is None:
        mask = _carve_test(y, test_fraction, split_seed)
        x, y, tx, ty = x[~mask], y[~mask], x[mask], y[mask]
    if scale is None:
        scale = 255.0 if x.dtype == torch.uint8 else 1.0
    return ArrayDataset(name=name, train_x=x.contiguous(), train_y=y.contiguous(),
                        test_x=tx.contiguous(), test_y=ty.contiguous(), num_classes=len(names),
                        class_names=names, scale=float(scale))


def _stack(dataset: Any, what: str, batch_size: int) -> tuple[Tensor, Tensor]:
    from torch.utils.data import DataLoader

    try:
        first = dataset[0]
    except Exception as error:  # noqa: BLE001 - any failure to index means "not a Dataset"
        raise ValueError(f"{what}: expected a map-style torch Dataset (dataset[i] -> (x, y)); "
                         f"indexing it failed ({type(error).__name__}: {error})") from None
    if not isinstance(first, (tuple, list)) or len(first) < 2:
        raise ValueError(f"{what}: dataset[i] must be an (input, label) pair, got "
                         f"{type(first).__name__}")
    if not isinstance(first[0], (Tensor, np.ndarray)):
        raise ValueError(f"{what}: inputs must be tensors or arrays, got "
                         f"{type(first[0]).__name__} (for PIL images add a transform such as "
                         "torchvision.transforms.PILToTensor())")
    xs, ys = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    return torch.cat(xs), torch.cat(ys)


def from_torch(train: Any, test: Any = None, *, batch_size: int = 1024, **kwargs: Any
               ) -> ArrayDataset:
    """Turns ``torch.utils.data.Dataset`` objects (``dataset[i] -> (x, y)``) into an
    :class:`~lifelong.data.datasets.ArrayDataset`, read once into memory.

    Args:
        train: The training dataset; its items are ``(input, label)`` pairs (tensors or arrays,
            e.g. torchvision images with ``transform=PILToTensor()``).
        test: The test dataset, or ``None`` to hold out a stratified ``test_fraction``.
        batch_size: Samples collated at a time while reading.
        **kwargs: Passed to :func:`from_arrays` (``name``, ``class_names``, ``scale`` ...).
    """
    x, y = _stack(train, "train dataset", batch_size)
    if test is None:
        return from_arrays(x, y, **kwargs)
    tx, ty = _stack(test, "test dataset", batch_size)
    return from_arrays(x, y, tx, ty, **kwargs)


def make_scenario(
    dataset: ArrayDataset,
    kind: Kind = "split",
    *,
    n_tasks: int | None = None,
    tasks: Sequence[Sequence[int]] | None = None,
    seed: int = 0,
    options: BenchmarkOptions | None = None,
    name: str | None = None,
) -> Scenario:
    """Builds a scenario of ``dataset``, as a pure function of its arguments and ``seed``.

    Args:
        dataset: From :func:`from_arrays` / :func:`from_torch` (or any ``ArrayDataset``).
        kind: ``"split"`` (disjoint class groups, task-IL by default; Zenke et al. 2017),
            ``"permuted"`` (a fixed input permutation per task, domain-IL by default; Goodfellow
            et al. 2013) or ``"rotated"`` (images rotated by ``t * max_angle / n_tasks``).
        n_tasks: Number of tasks (``options.n_tasks`` wins when set); default: two classes per
            task for ``split``, 5 otherwise.
        tasks: ``split`` only: user-given tasks as the labels of each task, e.g. ``[[0, 1],
            [2, 3, 4]]``.
        seed: The run's seed (class order, permutations, subsets).
        options: ``data.*`` options (``normalize``, ``class_order``, ``train_fraction`` ...).
        name: The scenario's name (default ``"<kind>-<dataset name>"``).
    """
    options = options or BenchmarkOptions()
    options.validate()
    name = name or f"{kind}-{dataset.name}"
    if kind not in KINDS:
        raise ValueError(f"{name}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    if tasks is not None and kind != "split":
        raise ValueError(f"{name}: tasks (class groups) apply to kind 'split' only, not {kind!r}")
    if kind == "split":
        default = n_tasks or (dataset.num_classes // 2 if dataset.num_classes % 2 == 0
                              else dataset.num_classes)
        return split_scenario(dataset, name, options, seed, default, groups=tasks)
    if kind == "rotated" and dataset.train_x.shape[2] * dataset.train_x.shape[3] == 1:
        raise ValueError(f"{name}: feature vectors ([N, D]) cannot be rotated; use kind "
                         "'permuted' or 'split'")
    build = permuted_scenario if kind == "permuted" else rotated_scenario
    return build(dataset, name, options, seed, n_tasks or 5)


def register(
    name: str,
    data: ArrayDataset | Callable[[], ArrayDataset],
    kind: Kind = "split",
    *,
    n_tasks: int | None = None,
    tasks: Sequence[Sequence[int]] | None = None,
    protocol: str | None = "split-digits",
    defaults: dict[str, Any] | None = None,
    description: str = "",
) -> BenchmarkSpec:
    """Registers a benchmark of your data under ``name``, so that ``make_config(name, ...)``,
    ``lifelong run -b NAME`` (with ``--import`` of the registering module), sweeps and
    ``lifelong tune`` use it like a shipped one.

    Args:
        name: The benchmark's name (a later registration of the same name replaces it).
        data: The dataset, or a function returning it (called once, on first use; e.g. reading
            your files).
        kind: ``"split"``, ``"permuted"`` or ``"rotated"`` (see :func:`make_scenario`).
        n_tasks: Default number of tasks (``data.n_tasks`` overrides it).
        tasks: ``split`` only: user-given class groups, one per task.
        protocol: A registered benchmark whose training protocol (model, optimiser, epochs,
            method strengths) is copied; ``None`` for the components' defaults.
        defaults: Dotted-key changes on top of ``protocol``, e.g. ``{"train.epochs": 5,
            "data.normalize": True}``.
        description: One line for ``lifelong list``.

    Returns:
        The registered :class:`~lifelong.data.scenarios.BenchmarkSpec`.
    """
    if kind not in KINDS:
        raise ValueError(f"{name}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    protocol_defaults = dict(get_benchmark(protocol).defaults) if protocol else {}
    protocol_defaults.update(defaults or {})
    cache: list[ArrayDataset] = []

    def load() -> ArrayDataset:
        if not cache:
            ds = data() if callable(data) and not isinstance(data, ArrayDataset) else data
            if not isinstance(ds, ArrayDataset):
                raise ValueError(f"{name}: the data function returned {type(ds).__name__}, not "
                                 "an ArrayDataset (build it with lifelong.data.custom.from_arrays)")
            cache.append(ds)
        return cache[0]

    if isinstance(data, ArrayDataset):  # check the tasks now, not at the first run
        make_scenario(data, kind, n_tasks=n_tasks, tasks=tasks, name=name)

    def build(options: BenchmarkOptions, seed: int) -> Scenario:
        return make_scenario(load(), kind, n_tasks=n_tasks, tasks=tasks, seed=seed,
                             options=options, name=name)

    what = f"{len(tasks)} user-given tasks" if tasks is not None else f"{kind} benchmark"
    return register_benchmark(BenchmarkSpec(
        name=name, build=build, description=description or f"your data: {what}",
        defaults=protocol_defaults, needs_download=False))

