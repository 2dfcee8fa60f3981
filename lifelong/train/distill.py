"""Knowledge distillation as model compression (Hinton, Vinyals & Dean 2015, Sec. 2-3).

``lifelong distill`` and :func:`distill` train, for every seed, on a one-task benchmark
(``mnist``, ``fashion-mnist``, ``digits``):

1. a **teacher**: one large network or an ensemble of ``K`` (trained one after the other from
   their own seeds; the ensemble's logits are the mean of its members' logits), usually
   regularised (dropout, ``jitter``);
2. the **student alone**: a small network trained on the transfer set's hard labels (the
   reference);
3. the **distilled student**: the same network, from the same initialisation, trained on the
   transfer set with the teacher's soft targets at temperature ``T`` plus the hard labels:
   ``soft_weight * T^2 * KL(q_teacher(T) || q_student(T)) + hard_weight * CE(y, q_student(1))``
   (:class:`~lifelong.terms.KnowledgeDistillation` for the soft term, the loop's cross-entropy
   weighted by :attr:`Recipe.hard_weight <lifelong.methods.base.Recipe>` for the hard one; one
   equation, :func:`~lifelong.terms.kd_loss`).

Every model is trained by the one loop, :func:`lifelong.train.loop.fit`, and saved as a run
folder (``result.json`` in the ``lifelong.run/1`` format that ``lifelong report`` reads, plus
``model.pt``): ``<out>/<benchmark>/class/<teacher|student|distilled>[-tag]/seed<k>/``.

The **transfer set** is the benchmark's training set minus ``holdout`` held-out samples (drawn
from the seed), optionally a stratified ``transfer_fraction`` of it (the data-efficiency
experiment) and without the classes in ``omit_classes`` (the paper's "no 3s" experiment). The
teacher always trains on the whole training set (held-out samples included). With omitted
classes and a held-out set, the **bias correction** of Sec. 3 is chosen for both students: the
value added to the omitted classes' logits that makes the fewest errors on the held-out samples
(never on the test set), then applied to the test set.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lifelong.config import RunConfig
from lifelong.data.layout import Layout
from lifelong.data.scenarios import (
    BenchmarkOptions,
    Scenario,
    Task,
    _stratified_subset,
    build_scenario,
)
from lifelong.methods.base import Recipe
from lifelong.nn.model import ModelConfig, build_model
from lifelong.terms.base import Term
from lifelong.terms.distill import KnowledgeDistillation, _check_temperature
from lifelong.train.loop import FitResult, TrainConfig, evaluate, fit, resolve_device
from lifelong.train.run import _now, read_result, resume_plan, run_dir_name, run_record, write_run

__all__ = ["DistillConfig", "Ensemble", "choose_bias", "distill", "distill_table",
           "transfer_split"]

SETTING = "class"
ROLES = ("teacher", "student", "distilled")
# the bias correction's candidate values (added to the omitted classes' logits)
BIAS_GRID = (0.0, 10.0, 0.1)


@dataclass
class DistillConfig:
    """Options of :func:`distill` (the flags of ``lifelong distill``).

    Attributes:
        benchmark: A one-task benchmark (``mnist``, ``fashion-mnist``, ``digits``).
        seeds: One teacher, student and distilled student per seed.
        teacher_hidden: Hidden widths of the teacher's MLP (Hinton et al.: 2 x 1200).
        teacher_dropout: Dropout after each of the teacher's hidden layers.
        teacher_members: ``K``: one teacher (1) or an ensemble of ``K`` (mean of the logits).
        teacher_epochs: Epochs of each teacher (member).
        jitter: The teacher's input jitter in pixels (``train.jitter``; Hinton et al.: 2).
        student_hidden: Hidden widths of the student (Hinton et al.: 2 x 800).
        student_dropout: Dropout of the student (Hinton et al.: none).
        student_epochs: Epochs of both students over the transfer set.
        student_jitter: The students' input jitter (Hinton et al.: none in the transfer set).
        temperature: ``T`` of the soft targets (Hinton et al.: 20 on MNIST).
        soft_weight: Weight of the soft term.
        hard_weight: Weight of the distilled student's hard term (the cross-entropy on the
            labels; 0: soft targets only). The student alone always has weight 1.
        t2: Multiply the soft term by ``T^2``.
        transfer_fraction: Keep this stratified fraction of the transfer set (e.g. 0.01).
        omit_classes: Dataset labels left out of the transfer set.
        holdout: Training samples held out of the transfer set (the bias correction is chosen
            on them); 0: none.
        name: Suffix of the students' folder names (``student-<name>``); ``None`` derives it
            from the transfer set (``f0.01``, ``no3``, ``h5000``, ``x5`` for a 5-member teacher).
        train: Optimiser, learning rate, batch size, device, progress (epochs and jitter are
            set per model from the fields above).
        data: Benchmark options (``data_dir``, ``download``, ``normalize``).
    """

    benchmark: str = "mnist"
    seeds: tuple[int, ...] = (0,)
    teacher_hidden: tuple[int, ...] = (1200, 1200)
    teacher_dropout: float = 0.5
    teacher_members: int = 1
    teacher_epochs: int = 10
    jitter: int = 2
    student_hidden: tuple[int, ...] = (800, 800)
    student_dropout: float = 0.0
    student_epochs: int = 10
    student_jitter: int = 0
    temperature: float = 20.0
    soft_weight: float = 1.0
    hard_weight: float = 1.0
    t2: bool = True
    transfer_fraction: float = 1.0
    omit_classes: tuple[int, ...] = ()
    holdout: int = 0
    name: str | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        optimizer="adam", lr=1e-3, batch_size=100))
    data: BenchmarkOptions = field(default_factory=BenchmarkOptions)

    def validate(self) -> None:
        """Checks every option before any training (messages name the option and value)."""
        _check_temperature(self.temperature)
        if not self.seeds:
            raise ValueError("give at least one seed")
        repeated = sorted({s for s in self.seeds if list(self.seeds).count(s) > 1})
        if repeated:
            raise ValueError(f"seed {repeated[0]} is given twice; each seed runs once")
        for key in ("teacher_members", "teacher_epochs", "student_epochs"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("jitter", "student_jitter", "holdout"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("teacher_dropout", "student_dropout"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"{key} must lie in [0, 1), got {getattr(self, key)}")
        for key in ("teacher_hidden", "student_hidden"):
            widths = getattr(self, key)
            if not widths or any(int(h) < 1 for h in widths):
                raise ValueError(f"{key} needs positive widths, e.g. 800 800; got {list(widths)}")
        for key in ("soft_weight", "hard_weight"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                raise ValueError(f"{key} must be a finite number >= 0, got {getattr(self, key)}")
        if self.soft_weight == 0 and self.hard_weight == 0:
            raise ValueError("soft_weight and hard_weight are both 0: the distilled student "
                             "would learn nothing")
        if not 0 < self.transfer_fraction <= 1:
            raise ValueError(f"transfer_fraction must lie in (0, 1], got "
                             f"{self.transfer_fraction}")
        if len(set(self.omit_classes)) != len(self.omit_classes):
            raise ValueError(f"omit_classes names a class twice: {list(self.omit_classes)}")
        self.train.validate()
        self.data.validate()

    def tag(self) -> str:
        """The students' folder suffix (:attr:`name`, or derived from the transfer set)."""
        if self.name is not None:
            return self.name
        parts = [f"x{self.teacher_members}"] if self.teacher_members > 1 else []
        if self.transfer_fraction < 1:
            parts.append(f"f{self.transfer_fraction:g}")
        if self.omit_classes:
            parts.append("no" + "".join(str(c) for c in sorted(self.omit_classes)))
        if self.holdout:
            parts.append(f"h{self.holdout}")
        return "-".join(parts)


@dataclass
class EnsembleOptions:
    """Recorded in the teacher's configuration (``ensemble.members``)."""

    members: int = 1


@dataclass
class TransferOptions:
    """Recorded in the students' configurations (``transfer.*``)."""

    fraction: float = 1.0
    omit_classes: tuple[int, ...] = ()
    holdout: int = 0


@dataclass
class SoftTargetOptions:
    """Recorded in the distilled student's configuration (``kd.*``): the teacher's run and the
    soft term's settings."""

    teacher: str = "teacher"
    temperature: float = 20.0
    soft_weight: float = 1.0
    hard_weight: float = 1.0
    t2: bool = True


class Ensemble(nn.Module):
    """Teachers whose logits are averaged: ``forward(x, units) = mean_k member_k(x, units)``
    (Hinton et al. 2015, Sec. 1: an ensemble's knowledge distilled into one model).

    Args:
        members: Models with the forward of :class:`~lifelong.nn.model.ContinualModel`.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor, units: slice | None = None,
                targets: Tensor | None = None) -> Tensor:
        # a loop over the K members (a handful of models), not over samples
        return torch.stack([m(x, units=units) for m in self.members]).mean(0)


def transfer_split(task: Task, fraction: float = 1.0, omit_classes: Sequence[int] = (),
                   holdout: int = 0, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices into ``task``'s training data of the transfer set and of the held-out set.

    ``holdout`` samples are drawn first (uniformly, from ``seed``); of the rest a stratified
    ``fraction`` is kept (at least one sample per class), then the ``omit_classes`` are removed.

    Returns:
        ``(transfer, heldout)``, both sorted.

    Raises:
        ValueError: The held-out set takes every sample, or nothing is left to transfer.
    """
    n = task.num_train
    if holdout >= n:
        raise ValueError(f"holdout={holdout} takes all {n} training samples; hold out fewer")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    heldout, rest = torch.sort(order[:holdout]).values, torch.sort(order[holdout:]).values
    y = task.train_y[rest]
    rest = rest[_stratified_subset(y, fraction, gen)]
    if omit_classes:
        rest = rest[~torch.isin(task.train_y[rest], torch.tensor(list(omit_classes)))]
    if rest.numel() == 0:
        raise ValueError("the transfer set is empty (every remaining class omitted)")
    return rest, heldout


def choose_bias(logits: Tensor, targets: Tensor, units: Sequence[int],
                grid: Tensor | None = None) -> tuple[float, int]:
    """The bias added to the logits of ``units`` that makes the fewest errors (Hinton et al.
    2015, Sec. 3: "if the bias for the 3 is increased by 3.5 ...").

    All candidate values are scored at once (``[G, N]`` predictions, no loop over samples).

    Args:
        logits: ``[N, C]`` logits of held-out samples.
        targets: ``[N]`` their output units.
        units: Output units whose bias is raised (one shared value).
        grid: Candidate values in increasing order (default 0, 0.1, ..., 10).

    Returns:
        ``(value, errors)``: the smallest best value and its number of errors.
    """
    if grid is None:
        lo, hi, step = BIAS_GRID
        grid = torch.arange(round((hi - lo) / step) + 1, dtype=logits.dtype) * step + lo
    add = torch.zeros(logits.shape[1], dtype=logits.dtype)
    add[list(units)] = 1.0
    pred = (logits[None] + grid[:, None, None] * add).argmax(-1)  # [G, N]
    errors = (pred != targets[None]).sum(1)
    best = int(errors.argmin())  # the first minimum: the smallest value among ties
    return round(float(grid[best]), 6), int(errors[best])


@torch.no_grad()
def _logits(model: nn.Module, task: Task, x: Tensor, batch_size: int) -> Tensor:
    """``model``'s logits (all units) of the inputs ``x`` of ``task``, in eval mode, on CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(task.inputs(x[i:i + batch_size]).to(device)).cpu()
           for i in range(0, x.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out)


def _errors(logits: Tensor, targets: Tensor, num_units: int) -> dict[str, Any]:
    wrong = logits.argmax(1) != targets
    return {"errors": int(wrong.sum()), "size": int(targets.shape[0]),
            "class_errors": torch.bincount(targets[wrong], minlength=num_units).tolist(),
            "class_size": torch.bincount(targets, minlength=num_units).tolist()}


def _with_training(scenario: Scenario, keep: Tensor) -> Scenario:
    """``scenario`` (one task) training on the rows ``keep`` of its training data only."""
    task = scenario.tasks[0]
    sub = dataclasses.replace(task, train_x=task.train_x[keep], train_y=task.train_y[keep])
    return dataclasses.replace(scenario, tasks=(sub,))


def _say(config: DistillConfig, text: str) -> None:
    if config.train.progress != "off":
        print(text, file=sys.stderr, flush=True)


def _train(scenario: Scenario, layout: Layout, model_cfg: ModelConfig, recipe: Recipe,
           train: TrainConfig, seed: int, desc: str) -> tuple[nn.Module, FitResult]:
    torch.manual_seed(seed)
    model = build_model(scenario, layout, model_cfg)
    return model, fit(model, scenario, layout, recipe, train, seed=seed, desc=desc)


def _teacher(config: DistillConfig, scenario: Scenario, layout: Layout, cfg: RunConfig
             ) -> tuple[nn.Module, FitResult]:
    """Trains the teacher's members one after the other (member ``k`` of seed ``s`` from seed
    ``s * K + k``) and evaluates their mean (the teacher itself when ``K = 1``)."""
    k_members = config.teacher_members
    members, fits = [], []
    for k in range(k_members):
        seed = cfg.seed * k_members + k
        desc = f"teacher/s{cfg.seed}" + (f" member {k + 1}/{k_members}" if k_members > 1 else "")
        model, res = _train(scenario, layout, cfg.model, Recipe(cfg.method), cfg.train, seed,
                            desc)
        members.append(model)
        fits.append(res)
    if k_members == 1:
        return members[0], fits[0]
    teacher = Ensemble(members)
    acc = evaluate(teacher, scenario, layout, 0, [0], cfg.train.eval_batch_size)
    losses = {f"member{k}.{name}": points for k, r in enumerate(fits)
              for name, points in r.losses.items()}
    timings = {key: sum(r.timings[key] for r in fits) for key in ("train_s", "eval_s", "total_s")}
    timings["per_task_s"] = [sum(r.timings["per_task_s"][0] for r in fits)]
    return teacher, FitResult({s: np.array([[a[0]]]) for s, a in acc.items()}, None, losses,
                              timings)


def _load_model(path: Path, scenario: Scenario, layout: Layout, cfg: RunConfig,
                members: int) -> nn.Module:
    model: nn.Module = build_model(scenario, layout, cfg.model)
    if members > 1:
        model = Ensemble([build_model(scenario, layout, cfg.model) for _ in range(members)])
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:  # a truncated file or another architecture
        raise ValueError(f"cannot load the model in {path} ({type(error).__name__}); delete "
                         f"{path.parent} or run without --resume") from None
    return model


def _run_configs(config: DistillConfig, seed: int) -> dict[str, RunConfig]:
    """The recorded configuration of each role's run (its folder name and what ``--resume``
    compares)."""
    k = config.teacher_members
    teacher_name = "teacher" if k == 1 else f"teacher-x{k}"
    tag = config.tag()
    suffix = f"-{tag}" if tag else ""
    transfer = TransferOptions(config.transfer_fraction, tuple(config.omit_classes),
                               config.holdout)
    data = dataclasses.replace(config.data)
    teacher = RunConfig(
        benchmark=config.benchmark, method=teacher_name, setting=SETTING, seed=seed, data=data,
        model=ModelConfig("mlp", tuple(config.teacher_hidden), "single", config.teacher_dropout),
        train=dataclasses.replace(config.train, epochs=config.teacher_epochs, iterations=0,
                                  jitter=config.jitter),
        hparams={"ensemble": EnsembleOptions(k)})
    student_model = ModelConfig("mlp", tuple(config.student_hidden), "single",
                                config.student_dropout)
    student_train = dataclasses.replace(config.train, epochs=config.student_epochs,
                                        iterations=0, jitter=config.student_jitter)
    student = RunConfig(benchmark=config.benchmark, method=f"student{suffix}", setting=SETTING,
                        seed=seed, data=data, model=student_model, train=student_train,
                        hparams={"transfer": transfer})
    soft = SoftTargetOptions(teacher_name, config.temperature, config.soft_weight,
                             config.hard_weight, config.t2)
    distilled = dataclasses.replace(student, method=f"distilled{suffix}",
                                    hparams={"transfer": transfer, "kd": soft})
    return {"teacher": teacher, "student": student, "distilled": distilled}


def distill(config: DistillConfig, out_root: str | Path | None = "runs",
            resume: bool = False) -> list[dict[str, Any]]:
    """Knowledge distillation (Hinton et al. 2015): for every seed a teacher, the student
    alone and the distilled student (module docstring), each saved as a run folder.

    Args:
        config: The options (validated before any training).
        out_root: Folder of the run folders; ``None`` writes nothing.
        resume: Reuse a finished run of the same configuration instead of training it again:
            the teacher's saved weights (so one teacher serves several transfer-set
            experiments), and students whose teacher was reused too.

    Returns:
        The run results (``result.json``'s content, with ``"path"``), teacher, student and
        distilled student for each seed in turn. Each has a ``"distill"`` entry: its role, its
        test errors (``errors``, ``size``, ``class_errors``, ``class_size``), the transfer and
        held-out sizes and, for students with omitted classes and a held-out set, the bias
        correction (``value`` chosen on the held-out set, test errors after it).

    Raises:
        ValueError: A bad option, a benchmark with more than one task, an omitted class the
            benchmark does not have, a held-out set larger than the training set; or a
            ``--resume`` into a folder written by another configuration.
    """
    config.validate()
    device = resolve_device(config.train.device)
    results: list[dict[str, Any]] = []
    for seed in config.seeds:
        scenario = build_scenario(config.benchmark, config.data, seed)
        if len(scenario.tasks) != 1:
            raise ValueError(f"lifelong distill needs a one-task benchmark (mnist, "
                             f"fashion-mnist, digits); {config.benchmark!r} has "
                             f"{len(scenario.tasks)} tasks")
        task = scenario.tasks[0]
        bad = [c for c in config.omit_classes if c not in task.classes]
        if bad:
            raise ValueError(f"omit_classes: {config.benchmark} has no class {bad[0]} (its "
                             f"classes are {min(task.classes)}..{max(task.classes)})")
        layout = Layout.for_scenario(scenario, SETTING)
        transfer_idx, heldout_idx = transfer_split(task, config.transfer_fraction,
                                                   config.omit_classes, config.holdout, seed)
        transfer = _with_training(scenario, transfer_idx)
        cfgs = _run_configs(config, seed)
        omitted_units = layout.targets(0, torch.tensor(list(config.omit_classes),
                                                       dtype=torch.long)).tolist()
        test_targets = layout.targets(0, task.test_y)
        bs = config.train.eval_batch_size
        teacher: nn.Module | None = None
        reused_teacher = False
        for role in ROLES:
            cfg = cfgs[role]
            final = None if out_root is None else Path(out_root) / run_dir_name(cfg, SETTING)
            can_reuse = resume and final is not None and (role == "teacher" or reused_teacher)
            if can_reuse and resume_plan(cfg, out_root or ".", SETTING,
                                         check_checkpoint=False) == "finished":
                assert final is not None
                done = read_result(final / "result.json")
                done["path"], done["skipped"] = str(final), True
                if role == "teacher":
                    teacher = _load_model(final / "model.pt", scenario, layout, cfg,
                                          config.teacher_members).to(device)
                    reused_teacher = True
                _say(config, f"[{role} seed {seed}] finished before, reused: {final}")
                results.append(done)
                continue
            started, clock = _now(), time.perf_counter()
            if role == "teacher":
                model, res = _teacher(config, scenario, layout, cfg)
                teacher = model
            else:
                terms: list[Term] = []
                if role == "distilled":
                    assert teacher is not None
                    terms = [KnowledgeDistillation(teacher, config.temperature,
                                                   config.soft_weight, config.t2)]
                recipe = Recipe(cfg.method, terms=terms,
                                hard_weight=config.hard_weight if role == "distilled" else 1.0)
                # both students start from the same initialisation and see the same batches
                model, res = _train(transfer, layout, cfg.model, recipe, cfg.train, seed,
                                    f"{role}/s{seed}")
            result = run_record(cfg, transfer if role != "teacher" else scenario, SETTING, res,
                                started)
            test_logits = _logits(model, task, task.test_x, bs)
            test = _errors(test_logits, test_targets, layout.num_units)
            info: dict[str, Any] = {"role": role, "test": test,
                                    "train_size": int(task.num_train if role == "teacher"
                                                      else transfer_idx.numel()),
                                    "heldout_size": int(heldout_idx.numel())}
            if role != "teacher" and omitted_units and heldout_idx.numel():
                held = _logits(model, task, task.train_x[heldout_idx], bs)
                held_targets = layout.targets(0, task.train_y[heldout_idx])
                value, held_errors = choose_bias(held, held_targets, omitted_units)
                shifted = test_logits.clone()
                shifted[:, omitted_units] += value
                info["bias_correction"] = {
                    "units": omitted_units, "value": value, "heldout_errors": held_errors,
                    "heldout_errors_before": _errors(held, held_targets,
                                                     layout.num_units)["errors"],
                    "test": _errors(shifted, test_targets, layout.num_units)}
            result["distill"] = info
            if final is not None:
                write_run(final, result, {"model.pt": model.state_dict()})
                result["path"] = str(final)
            where = f" -> {final}" if final is not None else ""
            _say(config, f"[{role} seed {seed}] {test['errors']} test errors of {test['size']} "
                         f"in {time.perf_counter() - clock:.1f} s{where}")
            results.append(result)
    return results


def _mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.1f} ± {a.std(ddof=1):.1f}" if a.size > 1 else f"{a[0]:.0f}"


def distill_table(results: list[dict[str, Any]], fmt: str = "text") -> str:
    """The comparison of :func:`distill`'s results: test errors per role (mean ± std over seeds,
    and each seed's), errors on the omitted classes, the bias correction, and the share of the
    student-teacher gap that distillation closes."""
    by_role: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_role.setdefault(r["distill"]["role"], []).append(r)
    omitted: list[int] = []
    for r in results:
        omitted = r["distill"].get("bias_correction", {}).get("units", omitted)
    header = ["model", "run", "test errors", "per seed"]
    if omitted:
        header += [f"errors on class{'es' if len(omitted) > 1 else ''} "
                   + ",".join(map(str, omitted)), "bias", "after bias", "on omitted after"]
    rows = []
    errors: dict[str, float] = {}
    for role in ROLES:
        runs = sorted(by_role.get(role, []), key=lambda r: r["seed"])
        if not runs:
            continue
        per = [r["distill"]["test"]["errors"] for r in runs]
        errors[role] = float(np.mean(per))
        row = [role, runs[0]["method"], _mean_std(per), " ".join(str(e) for e in per)]
        if omitted:
            row.append(_mean_std([sum(r["distill"]["test"]["class_errors"][u] for u in omitted)
                                  for r in runs]))
            bias = [r["distill"]["bias_correction"] for r in runs
                    if "bias_correction" in r["distill"]]
            row += [" ".join(f"{b['value']:g}" for b in bias) or "-",
                    _mean_std([b["test"]["errors"] for b in bias]) if bias else "-",
                    _mean_std([sum(b["test"]["class_errors"][u] for u in omitted)
                               for b in bias]) if bias else "-"]
        rows.append(row)
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip()
                 for line in (header, *rows)]
    if {"teacher", "student", "distilled"} <= set(errors):
        gap = errors["student"] - errors["teacher"]
        if gap > 0:
            closed = (errors["student"] - errors["distilled"]) / gap
            lines.append(f"\ndistillation closes {100 * closed:.0f}% of the student-teacher gap "
                         f"({errors['student']:.1f} -> {errors['distilled']:.1f} errors; teacher "
                         f"{errors['teacher']:.1f}; means over seeds)")
        else:
            lines.append("\nthe student alone is not worse than the teacher: no gap to close")
    return "\n".join(lines)
