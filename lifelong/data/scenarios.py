"""Continual-learning scenarios: ordered tasks built once, from a dataset and a seed.

A :class:`Scenario` is an ordered tuple of :class:`Task` objects. Everything random about a
scenario (class order, pixel permutations, rotation angles, per-class keep fractions) is drawn
*once*, when it is built, from its own generator seeded by the run's seed, so the same task sees
the same permutation in every epoch, data loader and process.

The setting (task-, domain- or class-incremental; van de Ven & Tolias 2019, "Three scenarios for
continual learning") does not change the data; it changes the output layer and the evaluation,
which :class:`lifelong.data.layout.Layout` handles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.data.datasets import ArrayDataset, load_dataset

SETTINGS = ("task", "domain", "class")


@dataclass(frozen=True, eq=False)
class Task:
    """One task of a scenario.

    Attributes:
        id: Position of the task in the scenario (0-based).
        name: Human-readable name, e.g. ``"0/1"`` or ``"perm-3"``.
        classes: Dataset labels of this task, in local order: local output ``i`` of a per-task head
            stands for label ``classes[i]``.
        train_x: Training inputs, float32 ``[N, C, H, W]`` (preprocessed, before ``perm``).
        train_y: Training labels (int64, values in ``classes``).
        test_x: Test inputs.
        test_y: Test labels.
        perm: Optional pixel permutation applied to the flattened inputs of every batch
            (permuted benchmarks share one input tensor between tasks instead of copying it).
    """

    id: int
    name: str
    classes: tuple[int, ...]
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    perm: Tensor | None = None

    def inputs(self, x: Tensor) -> Tensor:
        """Returns ``x`` as the model must see it for this task (the permutation applied)."""
        if self.perm is None:
            return x
        return x.flatten(1).index_select(1, self.perm).view_as(x)

    @property
    def num_train(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_y.shape[0])


@dataclass(frozen=True, eq=False)
class Scenario:
    """An ordered sequence of tasks plus what is needed to build models for it.

    Attributes:
        name: Registered benchmark name.
        tasks: The tasks, in training order.
        input_shape: Shape of one input, ``(C, H, W)``.
        num_classes: Number of distinct dataset labels over all tasks.
        class_names: Name of each dataset label.
        settings: The settings this scenario supports.
        default_setting: The setting used when none is asked for.
        info: What was drawn at build time (class order, angles, keep fractions ...), for the
            record.
    """

    name: str
    tasks: tuple[Task, ...]
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    settings: tuple[str, ...]
    default_setting: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)


@dataclass
class BenchmarkOptions:
    """Options of the data side of a benchmark (``data.*`` on the command line).

    Attributes:
        n_tasks: Number of tasks; ``None`` keeps the benchmark's own default.
        normalize: Standardise inputs with the training set's per-channel mean and std. The DHP
            protocol (Thangarasa et al.) uses raw pixels in [0, 1] (``False``); many others
            normalise.
        class_order: ``"natural"`` (0/1, 2/3, ...) or ``"random"`` (drawn once from the seed); split
            benchmarks only.
        train_fraction: Keep this fraction of every task's training set (stratified, drawn from
            the seed); 1.0 keeps all. For quick runs.
        imbalance_low: Imbalanced PermutedMNIST: lower end of the per-class keep fraction range.
        imbalance_high: Imbalanced PermutedMNIST: upper end of the per-class keep fraction range.
        max_angle: Rotated benchmarks: task ``t`` is rotated by ``t * max_angle / n_tasks`` degrees.
        base_classes: Few-shot class-incremental benchmarks (``fscil-*``): classes of the base
            session (``None``: the benchmark's default).
        ways: ``fscil-*``: new classes per few-shot session (N-way).
        shots: ``fscil-*``: training samples per new class (K-shot), drawn once from the seed.
        data_dir: Directory looked in first for dataset files (then ``$LIFELONG_DATA``, then the
            user cache).
        download: Download missing dataset files into the cache (canonical URLs, md5 checked).
    """

    n_tasks: int | None = None
    normalize: bool = False
    class_order: str = "natural"
    train_fraction: float = 1.0
    imbalance_low: float = 0.1
    imbalance_high: float = 1.0
    max_angle: float = 180.0
    base_classes: int | None = None
    ways: int | None = None
    shots: int | None = None
    data_dir: str | None = None
    download: bool = False

    def validate(self) -> None:
        if self.n_tasks is not None and self.n_tasks < 1:
            raise ValueError(f"data.n_tasks must be a positive integer, got {self.n_tasks}")
        if self.class_order not in ("natural", "random"):
            raise ValueError(
                f"data.class_order must be 'natural' or 'random', got {self.class_order!r}"
            )
        for key in ("base_classes", "ways", "shots"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"data.{key} must be a positive integer, got {value}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"data.train_fraction must be in (0, 1], got {self.train_fraction}")
        if not 0.0 < self.imbalance_low <= self.imbalance_high <= 1.0:
            raise ValueError(
                "data.imbalance_low/high must satisfy 0 < low <= high <= 1, got "
                f"{self.imbalance_low}, {self.imbalance_high}"
            )


@dataclass(frozen=True)
class BenchmarkSpec:
    """A registered benchmark: how to build it and which protocol it runs by default.

    Attributes:
        name: Registry name.
        build: ``build(options, seed) -> Scenario``.
        description: One line for ``lifelong list``.
        defaults: Dotted-key overrides applied before the user's (the benchmark's protocol:
            model widths, optimiser, epochs, and method strengths such as ``ewc.lam``, which
            differ by orders of magnitude between benchmarks; a method key applies only to runs
            of that method).
        needs_download: Whether its data is an external dataset (not the embedded one).
    """

    name: str
    build: Callable[[BenchmarkOptions, int], Scenario]
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    needs_download: bool = True


_BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Adds a benchmark to the registry (a later registration of the same name replaces it)."""
    _BENCHMARKS[spec.name] = spec
    return spec


def list_benchmarks() -> list[str]:
    """Names of the registered benchmarks, sorted."""
    return sorted(_BENCHMARKS)


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec of a registered benchmark; a clear error listing the valid names otherwise."""
    try:
        return _BENCHMARKS[name]
    except KeyError:
        raise ValueError(
            f"unknown benchmark {name!r}; valid benchmarks: {', '.join(list_benchmarks())}"
        ) from None


def build_scenario(
    name: str, options: BenchmarkOptions | None = None, seed: int = 0
) -> Scenario:
    """Builds a registered benchmark as a pure function of its options and the seed."""
    options = options or BenchmarkOptions()
    options.validate()
    return get_benchmark(name).build(options, seed)


# --------------------------------------------------------------------------------------------
# building blocks


def _to_float(ds: ArrayDataset, normalize: bool) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Scales images to [0, 1]; optionally standardises with the training set's channel stats."""
    train = ds.train_x.float().div_(ds.scale)
    test = ds.test_x.float().div_(ds.scale)
    info: dict[str, Any] = {"normalize": normalize}
    if normalize:
        dims = [0, 2, 3]
        mean = train.mean(dim=dims, keepdim=True)
        std = train.std(dim=dims, keepdim=True).clamp_min(1e-8)
        train.sub_(mean).div_(std)
        test.sub_(mean).div_(std)
        info["mean"] = mean.flatten().tolist()
        info["std"] = std.flatten().tolist()
    return train, test, info


def _random_rank(y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """A random order of the samples and, in it, each sample's rank within its class:
    ``(order, rank, counts)`` with ``rank[i]`` for sample ``order[i]`` (vectorised with a stable
    sort) and ``counts`` the class sizes."""
    order = torch.randperm(y.shape[0], generator=gen)
    ys = y[order]
    sort_idx = torch.sort(ys, stable=True).indices
    counts = torch.bincount(ys)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(sort_idx)
    rank[sort_idx] = torch.arange(ys.shape[0]) - starts[ys[sort_idx]]
    return order, rank, counts


def _stratified_subset(y: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    """Indices keeping ``fraction`` of each class (at least one sample per class), sorted."""
    if fraction >= 1.0:
        return torch.arange(y.shape[0])
    order, rank, counts = _random_rank(y, gen)
    keep = torch.ceil(counts.double() * fraction).long().clamp_min(1)
    return torch.sort(order[rank < keep[y[order]]]).values


def _per_class_sample(y: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """Indices of ``k`` samples of every class in ``y``, drawn at random without replacement
    (sorted)."""
    order, rank, _ = _random_rank(y, gen)
    return torch.sort(order[rank < k]).values


def _relabel(y: Tensor, order: Tensor, num_classes: int) -> Tensor:
    """Maps dataset labels so that ``order[k]`` becomes label ``k`` (-1 for labels not in
    ``order``)."""
    lut = torch.full((num_classes,), -1, dtype=torch.long)
    lut[order] = torch.arange(order.shape[0])
    return lut[y]


def check_class_groups(groups: Sequence[Sequence[int]], num_classes: int, name: str
                       ) -> list[tuple[int, ...]]:
    """User-given tasks as class groups: non-empty, disjoint, labels in ``[0, num_classes)``.

    Raises:
        ValueError: Naming the benchmark and the offending group.
    """
    out: list[tuple[int, ...]] = []
    seen: dict[int, int] = {}
    if isinstance(groups, (str, bytes)) or len(groups) == 0:
        raise ValueError(f"{name}: tasks must be a non-empty list of class groups, e.g. "
                         f"[[0, 1], [2, 3]], got {groups!r}")
    for t, group in enumerate(groups):
        if isinstance(group, (int, str)) or len(group) == 0:
            raise ValueError(f"{name}: task {t} must be a non-empty list of class labels, got "
                             f"{group!r}")
        labels = []
        for c in group:
            if isinstance(c, bool) or int(c) != c or not 0 <= int(c) < num_classes:
                raise ValueError(f"{name}: task {t} names class {c!r}; classes are integers in "
                                 f"[0, {num_classes})")
            if int(c) in seen:
                raise ValueError(f"{name}: class {int(c)} is in task {seen[int(c)]} and in task "
                                 f"{t}; tasks must not share classes")
            seen[int(c)] = t
            labels.append(int(c))
        out.append(tuple(labels))
    return out


def split_scenario(
    ds: ArrayDataset,
    name: str,
    options: BenchmarkOptions,
    seed: int,
    default_tasks: int,
    groups: Sequence[Sequence[int]] | None = None,
    default_setting: str = "task",
) -> Scenario:
    """Split benchmark: the classes are divided into disjoint groups, one task per group.

    Labels are renumbered in class order, so task ``t`` of a 10-class, 5-task split holds labels
    ``2t`` and ``2t+1``; ``info['class_order']`` records the original label of each new label.
    Supports the task-, domain- (label = position within the task) and class-incremental settings.
    With one task it is the plain classification problem (the ``mnist``, ``fashion-mnist`` and
    ``digits`` benchmarks: every class in one task, class-IL by default).

    Args:
        ds: The dataset.
        name: The scenario's (benchmark's) name.
        options: ``data.*`` options (``n_tasks``, ``class_order``, ``normalize`` ...).
        seed: Draws the class order (``class_order="random"``) and the training subsets.
        default_tasks: Number of tasks when ``options.n_tasks`` is not set.
        groups: User-given tasks: the dataset labels of each task, in task order (e.g.
            ``[[0, 1], [2, 3, 4]]``); groups may differ in size (domain-IL then refuses) and
            classes in no group are left out. ``class_order`` does not apply.
        default_setting: The scenario's setting when none is asked for.
    """
    gen = torch.Generator().manual_seed(seed)
    bounds: list[tuple[int, int]] = []
    if groups is not None:
        checked = check_class_groups(groups, ds.num_classes, name)
        if options.n_tasks is not None and options.n_tasks != len(checked):
            raise ValueError(f"{name}: data.n_tasks={options.n_tasks} but the benchmark's tasks "
                             f"are {len(checked)} given class groups; leave data.n_tasks unset")
        order = torch.tensor([c for g in checked for c in g], dtype=torch.long)
        for g in checked:
            lo = bounds[-1][1] if bounds else 0
            bounds.append((lo, lo + len(g)))
    else:
        n_tasks = options.n_tasks or default_tasks
        if ds.num_classes % n_tasks != 0:
            raise ValueError(
                f"{name}: {ds.num_classes} classes cannot be split evenly into {n_tasks} tasks; "
                "choose data.n_tasks among the divisors of "
                f"{ds.num_classes}: "
                f"{[d for d in range(1, ds.num_classes + 1) if ds.num_classes % d == 0]}"
            )
        if options.class_order == "random":
            order = torch.randperm(ds.num_classes, generator=gen)
        else:
            order = torch.arange(ds.num_classes)
        per = ds.num_classes // n_tasks
        bounds = [(t * per, (t + 1) * per) for t in range(n_tasks)]
    n_tasks = len(bounds)
    train_x, test_x, info = _to_float(ds, options.normalize)
    train_y = _relabel(ds.train_y, order, ds.num_classes)
    test_y = _relabel(ds.test_y, order, ds.num_classes)
    tasks = []
    for t, (lo, hi) in enumerate(bounds):
        tr = torch.nonzero((train_y >= lo) & (train_y < hi)).squeeze(1)
        te = torch.nonzero((test_y >= lo) & (test_y < hi)).squeeze(1)
        tr = tr[_stratified_subset(train_y[tr], options.train_fraction, gen)]
        names = [ds.class_names[int(order[c])] for c in range(lo, hi)]
        tasks.append(
            Task(
                id=t,
                name="/".join(names),
                classes=tuple(range(lo, hi)),
                train_x=train_x[tr],
                train_y=train_y[tr],
                test_x=test_x[te],
                test_y=test_y[te],
            )
        )
    info.update(class_order=order.tolist(), n_tasks=n_tasks, seed=seed)
    if groups is not None:
        info["groups"] = [list(g) for g in checked]
    return Scenario(
        name=name,
        tasks=tuple(tasks),
        input_shape=tuple(ds.train_x.shape[1:]),
        num_classes=int(order.shape[0]),
        class_names=tuple(ds.class_names[int(c)] for c in order),
        settings=SETTINGS,
        default_setting=default_setting,
        info=info,
    )


def permuted_scenario(
    ds: ArrayDataset,
    name: str,
    options: BenchmarkOptions,
    seed: int,
    default_tasks: int,
    imbalanced: bool = False,
) -> Scenario:
    """Permuted benchmark (Goodfellow et al. 2013; Kirkpatrick et al. 2017): every task applies
    its own fixed pixel permutation to the whole dataset. Task 0 keeps the original pixel order.

    With ``imbalanced=True`` this is Imbalanced PermutedMNIST (Thangarasa et al. 2020): each task's
    training set keeps, for every class, a random fraction of that class's samples drawn once
    (uniformly in ``[imbalance_low, imbalance_high]``) from the seed; test sets stay balanced.
    ``info['keep_fractions']`` records the fractions (tasks x classes).
    """
    gen = torch.Generator().manual_seed(seed)
    n_tasks = options.n_tasks or default_tasks
    train_x, test_x, info = _to_float(ds, options.normalize)
    dim = math.prod(ds.train_x.shape[1:])
    classes = tuple(range(ds.num_classes))
    tasks, fractions = [], []
    for t in range(n_tasks):
        perm = None if t == 0 else torch.randperm(dim, generator=gen)
        tr = _stratified_subset(ds.train_y, options.train_fraction, gen)
        if imbalanced:
            lo, hi = options.imbalance_low, options.imbalance_high
            frac = lo + (hi - lo) * torch.rand(ds.num_classes, generator=gen, dtype=torch.float64)
            draw = torch.rand(tr.shape[0], generator=gen, dtype=torch.float64)
            keep = draw < frac[ds.train_y[tr]]
            tr = tr[keep]
            fractions.append([round(float(f), 4) for f in frac])
        tasks.append(
            Task(
                id=t,
                name=f"perm-{t}",
                classes=classes,
                train_x=train_x if tr.shape[0] == train_x.shape[0] else train_x[tr],
                train_y=ds.train_y if tr.shape[0] == train_x.shape[0] else ds.train_y[tr],
                test_x=test_x,
                test_y=ds.test_y,
                perm=perm,
            )
        )
    info.update(n_tasks=n_tasks, seed=seed)
    if imbalanced:
        info["keep_fractions"] = fractions
    return Scenario(
        name=name,
        tasks=tuple(tasks),
        input_shape=tuple(ds.train_x.shape[1:]),
        num_classes=ds.num_classes,
        class_names=ds.class_names,
        settings=SETTINGS,
        default_setting="domain",
        info=info,
    )


def rotate(x: Tensor, degrees: float) -> Tensor:
    """Rotates a batch of images ``[N, C, H, W]`` by ``degrees`` (bilinear, zero padding)."""
    if degrees % 360 == 0:
        return x.clone()
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    mat = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotated_scenario(
    ds: ArrayDataset, name: str, options: BenchmarkOptions, seed: int, default_tasks: int
) -> Scenario:
    """Rotated benchmark: task ``t`` shows every image rotated by ``t * max_angle / n_tasks``
    degrees (rotations are applied once, at build time)."""
    gen = torch.Generator().manual_seed(seed)
    n_tasks = options.n_tasks or default_tasks
    train_x, test_x, info = _to_float(ds, options.normalize)
    classes = tuple(range(ds.num_classes))
    angles = [t * options.max_angle / n_tasks for t in range(n_tasks)]
    tasks = []
    for t, angle in enumerate(angles):
        tr = _stratified_subset(ds.train_y, options.train_fraction, gen)
        tasks.append(
            Task(
                id=t,
                name=f"rot-{angle:g}",
                classes=classes,
                train_x=rotate(train_x[tr], angle),
                train_y=ds.train_y[tr],
                test_x=rotate(test_x, angle),
                test_y=ds.test_y,
            )
        )
    info.update(n_tasks=n_tasks, seed=seed, angles=angles)
    return Scenario(
        name=name,
        tasks=tuple(tasks),
        input_shape=tuple(ds.train_x.shape[1:]),
        num_classes=ds.num_classes,
        class_names=ds.class_names,
        settings=SETTINGS,
        default_setting="domain",
        info=info,
    )


def dataset_sequence_scenario(
    datasets: Sequence[ArrayDataset], name: str, options: BenchmarkOptions, seed: int
) -> Scenario:
    """One task per dataset, in order: the two-dataset protocol of Li & Hoiem (2016, Sec. 4),
    a network trained on one dataset, then a new task from another.

    Dataset ``d``'s labels become ``offset_d + label`` (``offset_d``: the classes of the datasets
    before it), so a task-IL run has a head per dataset and a class-IL run one head over all
    their classes; domain-IL needs datasets with equally many classes. Each dataset is scaled
    (and, with ``data.normalize``, standardised) on its own; ``data.train_fraction`` keeps a
    stratified part of every training set, drawn from the seed.

    Raises:
        ValueError: Fewer than two datasets, or datasets whose images differ in shape.
    """
    if len(datasets) < 2:
        raise ValueError(f"{name}: a dataset sequence needs at least two datasets")
    shapes = {tuple(ds.train_x.shape[1:]) for ds in datasets}
    if len(shapes) != 1:
        raise ValueError(f"{name}: the datasets' images differ in shape {sorted(shapes)}; a "
                         "dataset sequence needs one input shape")
    gen = torch.Generator().manual_seed(seed)
    tasks, names, offset = [], [], 0
    info: dict[str, Any] = {"datasets": [ds.name for ds in datasets], "seed": seed,
                            "normalize": options.normalize}
    for t, ds in enumerate(datasets):
        train_x, test_x, _ = _to_float(ds, options.normalize)
        tr = _stratified_subset(ds.train_y, options.train_fraction, gen)
        tasks.append(Task(id=t, name=ds.name,
                          classes=tuple(range(offset, offset + ds.num_classes)),
                          train_x=train_x[tr], train_y=ds.train_y[tr] + offset,
                          test_x=test_x, test_y=ds.test_y + offset))
        names += [f"{ds.name}:{c}" for c in ds.class_names]
        offset += ds.num_classes
    info["n_tasks"] = len(tasks)
    return Scenario(
        name=name,
        tasks=tuple(tasks),
        input_shape=shapes.pop(),
        num_classes=offset,
        class_names=tuple(names),
        settings=SETTINGS,
        default_setting="task",
        info=info,
    )


def fscil_scenario(ds: ArrayDataset, name: str, options: BenchmarkOptions, seed: int,
                   base_classes: int, ways: int, shots: int, sessions: int) -> Scenario:
    """Few-shot class-incremental benchmark (Tao et al. 2020, "Few-Shot Class-Incremental
    Learning", Sec. 3): a base session with ``base_classes`` classes and all their training
    samples, then sessions of ``ways`` new classes with ``shots`` training samples each.

    Task 0 is the base session, task ``t > 0`` the ``t``-th few-shot session; each task's test
    set holds every test sample of its classes, so class-IL evaluation after session ``t`` covers
    all classes seen so far (:func:`lifelong.metrics.seen_accuracy_curve` gives the protocol's
    accuracy on their union). The class order (``data.class_order``) and the shots are drawn
    once from the seed; ``info['shots']`` records the training indices of every session's
    shots. ``data.train_fraction`` thins the base session only. ``data.n_tasks``,
    ``data.base_classes``, ``data.ways`` and ``data.shots`` override the defaults given here
    (``sessions`` counts the base session too). Class-incremental only.
    """
    gen = torch.Generator().manual_seed(seed)
    sessions = options.n_tasks or sessions
    base = options.base_classes or base_classes
    ways = options.ways or ways
    shots = options.shots or shots
    needed = base + ways * (sessions - 1)
    if needed > ds.num_classes:
        raise ValueError(
            f"{name}: {base} base classes + {sessions - 1} sessions of {ways} new classes need "
            f"{needed} classes, but {ds.name} has {ds.num_classes}; lower data.n_tasks, "
            "data.base_classes or data.ways"
        )
    if options.class_order == "random":
        order = torch.randperm(ds.num_classes, generator=gen)
    else:
        order = torch.arange(ds.num_classes)
    train_x, test_x, info = _to_float(ds, options.normalize)
    train_y = _relabel(ds.train_y, order, ds.num_classes)
    test_y = _relabel(ds.test_y, order, ds.num_classes)
    tasks, drawn = [], []
    for t in range(sessions):
        lo, hi = (0, base) if t == 0 else (base + (t - 1) * ways, base + t * ways)
        tr = torch.nonzero((train_y >= lo) & (train_y < hi)).squeeze(1)
        te = torch.nonzero((test_y >= lo) & (test_y < hi)).squeeze(1)
        if t == 0:
            tr = tr[_stratified_subset(train_y[tr], options.train_fraction, gen)]
        else:
            smallest = int(torch.bincount(train_y[tr] - lo, minlength=ways).min())
            if smallest < shots:
                raise ValueError(f"{name}: data.shots={shots} but a class of session {t} has "
                                 f"only {smallest} training samples")
            tr = tr[_per_class_sample(train_y[tr], shots, gen)]
            drawn.append(tr.tolist())
        names = [ds.class_names[int(order[c])] for c in range(lo, hi)]
        tasks.append(Task(id=t, name="base" if t == 0 else "/".join(names),
                          classes=tuple(range(lo, hi)), train_x=train_x[tr],
                          train_y=train_y[tr], test_x=test_x[te], test_y=test_y[te]))
    info.update(class_order=order.tolist(), n_tasks=sessions, seed=seed, base_classes=base,
                ways=ways, shots=shots, shots_drawn=drawn)
    return Scenario(
        name=name,
        tasks=tuple(tasks),
        input_shape=tuple(ds.train_x.shape[1:]),
        num_classes=needed,
        class_names=tuple(ds.class_names[int(c)] for c in order[:needed]),
        settings=("class",),
        default_setting="class",
        info=info,
    )


FSCIL_CIFAR100_SESSIONS = 9  # Tao et al. 2020: 60 base classes + 8 sessions of 5-way 5-shot


def read_index_list(path: Path) -> Tensor:
    """One integer per line (blank lines ignored), as int64; a clear error for anything else."""
    try:
        values = [int(line) for line in path.read_text().split() if line.strip()]
    except ValueError as error:
        raise ValueError(f"{path} is not an index list (one integer per line): {error}") from None
    return torch.tensor(values, dtype=torch.long)


def find_fscil_lists(data_dir: str | None, dataset: str = "cifar100") -> Path:
    """The folder of the published FSCIL index lists of ``dataset`` (``session_1.txt`` ...,
    ``test_1.txt`` ...): ``<root>/fscil/<dataset>`` or ``<root>/../fscil/<dataset>`` for every
    data root (``data.data_dir``, ``$LIFELONG_DATA``, the cache); the shared layout keeps
    ``fscil/`` beside ``data/``.

    Raises:
        FileNotFoundError: Naming every folder looked in and the files expected.
    """
    from lifelong.data.datasets import search_roots

    looked = []
    for root in search_roots(data_dir):
        for folder in (root / "fscil" / dataset, root.parent / "fscil" / dataset):
            if (folder / "session_1.txt").is_file():
                return folder
            looked.append(str(folder))
    raise FileNotFoundError(
        f"the FSCIL index lists of {dataset} (session_1.txt ... session_9.txt, test_1.txt ... "
        f"test_9.txt; Tao et al. 2020, github.com/xyutao/fscil data/index_list/{dataset}) were "
        f"not found; looked in: {', '.join(dict.fromkeys(looked))}. Put them in "
        f"<LIFELONG_DATA>/fscil/{dataset}/ or pass --data-dir"
    )


def fscil_from_lists(ds: ArrayDataset, name: str, options: BenchmarkOptions,
                     train_lists: list[Tensor], test_lists: list[Tensor]) -> Scenario:
    """FSCIL scenario from published index lists (Tao et al. 2020): session ``t``'s training
    samples are ``ds.train_x[train_lists[t]]`` and its test samples ``ds.test_x[test_lists[t]]``
    (the lists index the dataset's arrays in file order). Each session's classes are the labels
    its training indices hold; the lists fix the classes and shots, so ``data.class_order`` must
    be ``natural`` and ``data.base_classes/ways/shots/n_tasks`` unset (or equal to the lists').
    ``data.train_fraction`` thins the base session only.
    """
    if options.class_order != "natural":
        raise ValueError(f"{name}: the published index lists fix the class order; "
                         "data.class_order must be 'natural'")
    if options.n_tasks not in (None, len(train_lists)):
        raise ValueError(f"{name}: the index lists define {len(train_lists)} sessions, "
                         f"data.n_tasks={options.n_tasks} cannot change that")
    gen = torch.Generator().manual_seed(0)
    train_x, test_x, info = _to_float(ds, options.normalize)
    tasks: list[Task] = []
    seen: set[int] = set()
    for t, (tr, te) in enumerate(zip(train_lists, test_lists)):
        for split, idx, size in (("train", tr, ds.train_y.shape[0]),
                                 ("test", te, ds.test_y.shape[0])):
            if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= size:
                raise ValueError(f"{name}: the {split} index list of session {t + 1} is empty or "
                                 f"points outside the {size} {split} samples of {ds.name}")
        classes = tuple(int(c) for c in torch.unique(ds.train_y[tr]))
        if seen & set(classes) or set(int(c) for c in torch.unique(ds.test_y[te])) != set(classes):
            raise ValueError(f"{name}: session {t + 1}'s lists hold classes {classes} that repeat "
                             "an earlier session's or differ between train and test")
        seen |= set(classes)
        if t == 0:
            tr = tr[_stratified_subset(ds.train_y[tr], options.train_fraction, gen)]
        tasks.append(Task(id=t, name="base" if t == 0 else f"session-{t + 1}", classes=classes,
                          train_x=train_x[tr], train_y=ds.train_y[tr], test_x=test_x[te],
                          test_y=ds.test_y[te]))
    fixed = {"base_classes": len(tasks[0].classes), "ways": len(tasks[-1].classes),
             "shots": tasks[-1].num_train // max(len(tasks[-1].classes), 1)}
    for key, value in fixed.items():
        if getattr(options, key) not in (None, value):
            raise ValueError(f"{name}: the index lists fix data.{key}={value}, got "
                             f"{getattr(options, key)}")
    info.update(n_tasks=len(tasks), index_lists="Tao et al. 2020 (xyutao/fscil)", **fixed)
    return Scenario(name=name, tasks=tuple(tasks), input_shape=tuple(ds.train_x.shape[1:]),
                    num_classes=ds.num_classes, class_names=ds.class_names, settings=("class",),
                    default_setting="class", info=info)


def _build_fscil_cifar100(options: BenchmarkOptions, seed: int) -> Scenario:
    folder = find_fscil_lists(options.data_dir)
    n = FSCIL_CIFAR100_SESSIONS
    train = [read_index_list(folder / f"session_{t}.txt") for t in range(1, n + 1)]
    test = [read_index_list(folder / f"test_{t}.txt") for t in range(1, n + 1)]
    ds = _loader("cifar100")(options)
    return fscil_from_lists(ds, "fscil-cifar100", options, train, test)


def _loader(dataset: str) -> Callable[[BenchmarkOptions], ArrayDataset]:
    def load(options: BenchmarkOptions) -> ArrayDataset:
        return load_dataset(dataset, data_dir=options.data_dir, download=options.download)

    return load


def _split(name: str, dataset: str, tasks: int, description: str, defaults: dict[str, Any],
           needs_download: bool = True) -> None:
    load = _loader(dataset)
    setting = "class" if tasks == 1 else "task"
    register_benchmark(
        BenchmarkSpec(
            name=name,
            build=lambda o, s: split_scenario(load(o), name, o, s, tasks,
                                                   default_setting=setting),
            description=description,
            defaults=defaults,
            needs_download=needs_download,
        )
    )


# The DHP protocol (Thangarasa et al. 2020): multi-head MLP 784-256-256, SGD 0.01, batch 64,
# 10 epochs per task, raw pixels.
DHP_SPLIT_PROTOCOL: dict[str, Any] = {
    "model.arch": "mlp",
    "model.hidden": (256, 256),
    "train.optimizer": "sgd",
    "train.lr": 0.01,
    "train.batch_size": 64,
    "train.epochs": 10,
}

_split(
    "split-digits", "digits", 5,
    "scikit-learn's bundled 8x8 digits in 5 two-class tasks (embedded, no download)",
    {"model.arch": "mlp", "model.hidden": (100, 100), "train.optimizer": "sgd",
     "train.lr": 0.05, "train.batch_size": 32, "train.epochs": 10, "data.normalize": False},
    needs_download=False,
)
_split("split-mnist", "mnist", 5, "MNIST in 5 two-class tasks (0/1, 2/3, ...)", DHP_SPLIT_PROTOCOL)
_split("split-kmnist", "kmnist", 5, "Kuzushiji-MNIST in 5 two-class tasks", DHP_SPLIT_PROTOCOL)
_split(
    "split-fashion-mnist", "fashion-mnist", 5, "Fashion-MNIST in 5 two-class tasks",
    DHP_SPLIT_PROTOCOL,
)
_split(
    "split-cifar10", "cifar10", 5, "CIFAR-10 in 5 two-class tasks (needs its data)",
    {"model.arch": "resnet32", "train.optimizer": "sgd", "train.lr": 0.1, "train.momentum": 0.9,
     "train.batch_size": 128, "train.epochs": 30, "data.normalize": True},
)
_split(
    "split-cifar100", "cifar100", 10, "CIFAR-100 in 10 ten-class tasks (needs its data)",
    {"model.arch": "resnet32", "train.optimizer": "sgd", "train.lr": 0.1, "train.momentum": 0.9,
     "train.batch_size": 128, "train.epochs": 30, "data.normalize": True},
)

# Whole datasets as one task (plain classification): the teacher and students of knowledge
# distillation (``lifelong distill``; Hinton et al. 2015, Sec. 3 on MNIST). The protocol is the
# student's of the README's KD table; ``lifelong distill`` sets its own sizes and epochs.
_WHOLE_PROTOCOL: dict[str, Any] = {
    "model.arch": "mlp",
    "model.hidden": (800, 800),
    "train.optimizer": "adam",
    "train.lr": 1e-3,
    "train.batch_size": 100,
    "train.epochs": 10,
}
_split("mnist", "mnist", 1, "MNIST as one 10-class task (plain classification; distillation)",
       _WHOLE_PROTOCOL)
_split("fashion-mnist", "fashion-mnist", 1, "Fashion-MNIST as one 10-class task",
       _WHOLE_PROTOCOL)
_split(
    "digits", "digits", 1, "scikit-learn's 8x8 digits as one 10-class task (embedded)",
    {"model.arch": "mlp", "model.hidden": (100, 100), "train.optimizer": "adam",
     "train.lr": 1e-3, "train.batch_size": 32, "train.epochs": 10, "data.normalize": False},
    needs_download=False,
)

_PERMUTED_PROTOCOL: dict[str, Any] = {
    # van de Ven & Tolias (2019) use 2x1000 units, Adam lr 1e-4, 5000 iterations per task;
    # configs/permuted-mnist.toml holds that full protocol. This default is a lighter one.
    "model.arch": "mlp",
    "model.hidden": (1000, 1000),
    "train.optimizer": "adam",
    "train.lr": 1e-4,
    "train.batch_size": 128,
    "train.iterations": 5000,
}

register_benchmark(
    BenchmarkSpec(
        name="permuted-mnist",
        build=lambda o, s: permuted_scenario(_loader("mnist")(o), "permuted-mnist", o, s, 10),
        description="MNIST under 10 fixed pixel permutations (domain-IL by default)",
        defaults=_PERMUTED_PROTOCOL,
    )
)
register_benchmark(
    BenchmarkSpec(
        name="imbalanced-permuted-mnist",
        build=lambda o, s: permuted_scenario(
            _loader("mnist")(o), "imbalanced-permuted-mnist", o, s, 10, imbalanced=True
        ),
        description="PermutedMNIST whose training sets keep a random fraction of each class",
        defaults=_PERMUTED_PROTOCOL,
    )
)
register_benchmark(
    BenchmarkSpec(
        name="rotated-mnist",
        build=lambda o, s: rotated_scenario(_loader("mnist")(o), "rotated-mnist", o, s, 10),
        description="MNIST rotated by a different angle per task (domain-IL by default)",
        defaults=_PERMUTED_PROTOCOL,
    )
)


# Li & Hoiem (2016, Sec. 4) in small: a CNN trained on one dataset, then a new task (a new
# head) from another. The paper's weight decay 5e-4; SGD with momentum; reduced for a CPU:
# 5 % of each training set (3,000 images), 3 epochs per task. configs/two-datasets.toml
# documents the table's command.
TWO_DATASET_PROTOCOL: dict[str, Any] = {
    "model.arch": "cnn",
    "model.hidden": (256,),
    "train.optimizer": "sgd",
    "train.lr": 0.01,
    "train.momentum": 0.9,
    "train.weight_decay": 5e-4,
    "train.batch_size": 64,
    "train.epochs": 3,
    "data.train_fraction": 0.05,
}


def _sequence(name: str, datasets: tuple[str, ...], description: str) -> None:
    register_benchmark(
        BenchmarkSpec(
            name=name,
            build=lambda o, s: dataset_sequence_scenario(
                [_loader(d)(o) for d in datasets], name, o, s),
            description=description,
            defaults=TWO_DATASET_PROTOCOL,
        )
    )


# Few-shot class-incremental learning (Tao et al. 2020). CPU-sized: 6 base classes + 4 sessions of
# 1-way 5-shot; MLP 784-256-64 (64-d features, like the paper's ResNet-20), Adam 1e-3, batch 128,
# 2 epochs on the base session and 20 on each few-shot session (20 steps: its 5 samples are one
# batch). The schedule was fixed before any run; nothing is selected on test data.
FSCIL_SMALL_PROTOCOL: dict[str, Any] = {
    "model.arch": "mlp",
    "model.hidden": (256, 64),
    "train.optimizer": "adam",
    "train.lr": 1e-3,
    "train.batch_size": 128,
    "train.epochs": 2,
    "train.later_epochs": 20,
}



def _fscil_small(name: str, dataset: str) -> None:
    load = _loader(dataset)
    register_benchmark(
        BenchmarkSpec(
            name=name,
            build=lambda o, s: fscil_scenario(load(o), name, o, s, base_classes=6, ways=1,
                                              shots=5, sessions=5),
            description=f"few-shot class-incremental {dataset}: 6 base classes + 4 sessions of "
                        "1-way 5-shot (Tao et al. 2020 protocol, CPU-sized)",
            defaults=FSCIL_SMALL_PROTOCOL,
        )
    )


_sequence("fashion-mnist-to-mnist", ("fashion-mnist", "mnist"),
          "Fashion-MNIST, then MNIST as a new task (LwF's two-dataset protocol, Li & Hoiem 2016)")
_sequence("mnist-to-fashion-mnist", ("mnist", "fashion-mnist"),
          "MNIST, then Fashion-MNIST as a new task (LwF's two-dataset protocol, Li & Hoiem 2016)")

_fscil_small("fscil-fashion-mnist", "fashion-mnist")
_fscil_small("fscil-mnist", "mnist")

register_benchmark(
    BenchmarkSpec(
        name="fscil-cifar100",
        build=_build_fscil_cifar100,
        description="few-shot class-incremental CIFAR-100: 60 base classes + 8 sessions of 5-way "
                    "5-shot, the published index lists (Tao et al. 2020; needs CIFAR-100 and "
                    "fscil/cifar100/)",
        # ResNet-20 (the paper's CIFAR backbone), SGD 0.1, momentum 0.9, weight decay 5e-4,
        # batch 128, 100 base epochs at one learning rate; few-shot sessions: 20 steps on their
        # 25 images (one batch). The same as configs/fscil-cifar100.toml (which says what
        # differs from the paper).
        defaults={"model.arch": "resnet20", "train.optimizer": "sgd", "train.lr": 0.1,
                  "train.momentum": 0.9, "train.weight_decay": 5e-4, "train.batch_size": 128,
                  "train.epochs": 100, "train.later_epochs": 20, "data.normalize": True},
    )
)


def benchmark_option_names() -> list[str]:
    """Field names of :class:`BenchmarkOptions` (the ``data.*`` keys)."""
    return [f.name for f in fields(BenchmarkOptions)]


def _build_synthetic(options: BenchmarkOptions, seed: int) -> Scenario:
    from lifelong.data.synthetic import synthetic_scenario

    return synthetic_scenario(n_tasks=options.n_tasks or 3, seed=seed)


register_benchmark(
    BenchmarkSpec(
        name="synthetic",
        build=_build_synthetic,
        description="tiny Gaussian-cluster split scenario for tests and examples (no files)",
        defaults={"model.arch": "mlp", "model.hidden": (32,), "train.lr": 0.1,
                  "train.batch_size": 16, "train.epochs": 2,
                  # penalty strengths for this scale (SplitMNIST's diverge at lr 0.1 here)
                  "ewc.lam": 10.0, "online-ewc.lam": 10.0, "si.c": 1.0, "mas.lam": 0.5,
                  "mas-local.lam": 0.1},
        needs_download=False,
    )
)
