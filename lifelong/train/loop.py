"""The training loop: one function to read top to bottom.

``fit`` owns zero_grad, forward, backward, step and evaluation, on the run's device. Methods
contribute through a :class:`~lifelong.methods.base.Recipe`: loss terms with five hooks (task
start, loss, after backward, after step, task end), an output layer, a data regime
(:mod:`lifelong.data.regimes`) and a freezing rule. The loop does not branch on methods.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lifelong.data.augment import random_translate
from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario, Task
from lifelong.methods.base import Recipe
from lifelong.nn.nme import classifying
from lifelong.terms.base import Batch, CrossEntropy, Term

OPTIMIZERS = ("sgd", "adam")


class DivergenceError(ValueError):
    """A loss term became NaN or infinite: training diverged and was stopped at that step.

    Attributes:
        task: Index of the task being trained (0-based).
        step: Step within that task (1-based) at which the loss was not finite.
        term: Name of the loss term (``ce``, ``ewc`` ...), or ``parameters`` when a parameter
            became non-finite at the task's last step (the losses were still finite).
        value: The non-finite value.
        result: What the run had finished before (accuracy rows of earlier tasks, loss curves,
            timings), for a failed run's record.
    """

    def __init__(self, task: int, n_tasks: int, step: int, term: str, value: float,
                 hint: str, result: FitResult | None = None, subject: str | None = None) -> None:
        subject = subject or f"the {term!r} loss"
        super().__init__(
            f"{subject} is {value} at step {step} of task {task + 1}/{n_tasks}: training "
            f"diverged; the learning rate ({hint}) or a penalty's strength is likely too large")
        self.task, self.step, self.term, self.value = task, step, term, value
        self.result = result


@dataclass
class TrainConfig:
    """Optimisation options (``train.*`` on the command line).

    Attributes:
        optimizer: ``sgd`` or ``adam``.
        lr: Learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay of the optimiser.
        betas: Adam's betas.
        batch_size: Mini-batch size.
        epochs: Epochs per task (ignored when ``iterations > 0``).
        later_epochs: Epochs of every task after the first; 0 means ``epochs`` (few-shot
            class-incremental protocols train the base session and the few-shot sessions on
            different schedules).
        iterations: Optimiser steps per task; 0 means use ``epochs``.
        eval_batch_size: Batch size of evaluation.
        reset_optimizer: Build a fresh optimiser at the start of every task.
        eval_future: Also evaluate tasks not yet trained on (and the untrained model), which
            forward transfer needs.
        log_every: Steps between two points of the logged loss curves (each point is the
            mean over those steps).
        progress: ``auto`` (a bar on a terminal, quiet otherwise), ``on`` or ``off``.
        device: Where data, model and every term's tensors live: ``auto`` (CUDA when
            available, else the CPU), ``cpu``, ``cuda`` (or ``cuda:N``) or ``mps``.
        tensorboard: Folder of TensorBoard logs (``--tensorboard DIR``): the run writes each
            term's loss curve, the accuracy on every task after each task and the accuracy
            matrix as an image to ``DIR/<benchmark>/<setting>/<method>/seed<k>``
            (:mod:`lifelong.train.tensorboard`; needs the ``tensorboard`` package). ``None``:
            none. The run folder stays the record; this is for watching.
        jitter: Shift every training image by a random whole number of pixels in
            ``[-jitter, jitter]`` along each axis, per sample and step, zero fill
            (:func:`lifelong.data.augment.random_translate`; Hinton et al. 2015, Sec. 3: "up to
            two pixels"). Drawn from the run's generator on each batch, on the run's device;
            applied to the inputs as the model sees them (after a task's permutation); test
            data is never jittered. ``0`` disables it (and draws nothing).
    """

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 64
    epochs: int = 1
    later_epochs: int = 0
    iterations: int = 0
    eval_batch_size: int = 1024
    reset_optimizer: bool = True
    eval_future: bool = False
    log_every: int = 50
    progress: str = "auto"
    device: str = "auto"
    tensorboard: str | None = None
    jitter: int = 0

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown train.optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}"
            )
        for key in ("lr", "batch_size", "eval_batch_size", "log_every"):
            if getattr(self, key) <= 0:
                raise ValueError(f"train.{key} must be positive, got {getattr(self, key)}")
        if self.epochs < 1 and self.iterations < 1:
            raise ValueError("set train.epochs >= 1 or train.iterations >= 1")
        if self.jitter < 0:
            raise ValueError(f"train.jitter must be >= 0 pixels, got {self.jitter}")
        if self.progress not in ("auto", "on", "off"):
            raise ValueError(f"train.progress must be auto, on or off, got {self.progress!r}")
        resolve_device(self.device)


def resolve_device(name: str) -> torch.device:
    """The device named by ``train.device``: ``auto`` is CUDA when available, else the CPU.

    Raises:
        ValueError: An unknown name, or a device this machine does not have (the message says
            which devices it has).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown train.device {name!r}; valid: auto, cpu, cuda, cuda:N, "
                         "mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown train.device {name!r}; valid: auto, cpu, cuda, cuda:N, mps")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ValueError(f"train.device={name} but this machine has "
                             f"{count or 'no'} CUDA device{'s' if count != 1 else ''}; use "
                             "--device cpu (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"train.device={name} but MPS is not available here; use --device cpu "
                         "(or auto)")
    return device


@dataclass
class TrainContext:
    """What hooks and terms can see of the run.

    Attributes:
        model: The model being trained.
        scenario: The scenario.
        layout: Output-unit layout of the setting.
        config: Optimisation options.
        device: The run's device (data, model and every term's tensors live there).
        task_id: Index of the task being learned.
        generator: The run's random generator (data order and any sampling a term does).
        step: Optimiser steps taken so far in the whole run.
        task_step: Optimiser steps taken so far in this task.
        train_x: Inputs of the current task's training data (permutation applied, on
            ``device``).
        train_y: Labels of ``train_x``.
        train_targets: Output-unit targets of ``train_x`` (``layout.targets``).
    """

    model: nn.Module
    scenario: Scenario
    layout: Layout
    config: TrainConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    task_id: int = 0
    generator: torch.Generator = field(default_factory=torch.Generator)
    step: int = 0
    task_step: int = 0
    train_x: Tensor | None = None
    train_y: Tensor | None = None
    train_targets: Tensor | None = None

    @property
    def task(self) -> Task:
        return self.scenario.tasks[self.task_id]

    @property
    def train_units(self) -> slice:
        """Output units of the current task's training loss."""
        return self.layout.train_units(self.task_id)

    def task_batches(self, batch_size: int, max_samples: int | None = None
                     ) -> Iterator[tuple[Tensor, Tensor]]:
        """The current task's training data as ``(x, unit_targets)`` batches, in order.

        Importance estimators (Fisher, MAS ...) use this at task end. ``max_samples`` takes the
        first samples only.
        """
        if self.train_x is None or self.train_targets is None:
            raise RuntimeError("task_batches() is only available while a task is trained")
        n = self.train_x.shape[0]
        if max_samples is not None:
            n = min(max_samples, n)
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            yield self.train_x[i:j], self.train_targets[i:j]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        accuracy: ``setting -> R`` (T x T numpy arrays, NaN where not evaluated).
        baseline_accuracy: ``setting -> accuracy of the untrained model on each task`` (only
            with ``eval_future``), for forward transfer.
        losses: ``term name -> [[step, mean loss], ...]``.
        timings: Seconds spent training, evaluating, per task and in total.
    """

    accuracy: dict[str, np.ndarray]
    baseline_accuracy: dict[str, list[float]] | None
    losses: dict[str, list[list[float]]]
    timings: dict[str, Any]


def build_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``config.optimizer``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, betas=(config.betas[0], config.betas[1]),
                            weight_decay=config.weight_decay)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, scenario: Scenario, layout: Layout, after_task: int,
             tasks: list[int], batch_size: int = 1024) -> dict[str, dict[int, float]]:
    """Accuracy of ``model`` on the test sets of ``tasks``, for every setting the layout reads.

    Task-IL predicts among the task's own units; class-IL among the units of all tasks seen so
    far (through ``after_task``, or through the evaluated task if that is later); domain-IL among
    all units. One forward pass serves task- and class-IL, on the model's device. The model's
    train/eval mode is restored afterwards. The forward runs inside
    :func:`~lifelong.nn.nme.classifying`: a layer that predicts differently from the logits it
    trains with (nearest-mean-of-exemplars) does so here.
    """
    was_training = model.training
    model.eval()
    device = _device_of(model)
    out: dict[str, dict[int, float]] = {s: {} for s in layout.eval_settings}
    with classifying(model):
        try:
            for j in tasks:
                task = scenario.tasks[j]
                correct = {s: torch.zeros((), dtype=torch.long, device=device) for s in out}
                tu = layout.task_units(j)
                su = layout.seen_units(max(after_task, j))
                units = None if layout.setting == "domain" else slice(0, su.stop)
                for i in range(0, task.num_test, batch_size):
                    x = task.inputs(task.test_x[i:i + batch_size]).to(device)
                    targets = layout.targets(j, task.test_y[i:i + batch_size]).to(device)
                    logits = model(x, units=units)
                    if layout.setting == "domain":
                        correct["domain"] += (logits.argmax(1) == targets).sum()
                        continue
                    pred_task = logits[:, tu].argmax(1) + tu.start
                    correct["task"] += (pred_task == targets).sum()
                    correct["class"] += (logits.argmax(1) == targets).sum()
                for s in out:
                    out[s][j] = int(correct[s]) / max(task.num_test, 1)
        finally:
            model.train(was_training)
    return out


def _progress_disabled(mode: str) -> bool | None:
    return {"auto": None, "on": False, "off": True}[mode]


def _set_trainable(model: nn.Module, frozen: list[nn.Module]) -> None:
    """Every parameter trainable and every module in train mode, except ``frozen`` (no
    gradient, eval mode)."""
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    for m in frozen:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)


def _phase_steps(model: nn.Module,
                 phases: list[tuple[int, list[nn.Module] | None, torch.optim.Optimizer]]
                 ) -> Iterator[torch.optim.Optimizer]:
    """Each phase's optimiser once per step of the phase; entering a phase first sets its
    frozen modules (``None``: the trainable parameters stay as they are)."""
    for steps, frozen, optimizer in phases:
        if frozen is not None:
            _set_trainable(model, frozen)
        for _ in range(steps):
            yield optimizer


def _sum_losses(terms: list[Term], ctx: TrainContext, batch: Batch,
                values: list[tuple[str, Tensor]]) -> Tensor | None:
    """The sum of the terms' losses on ``batch`` (``None`` if none gave one); each value is
    appended to ``values`` for the loss curves."""
    total: Tensor | None = None
    for term in terms:
        v = term.loss(ctx, batch)
        if v is not None:
            values.append((term.name, v))
            total = v if total is None else total + v
    return total


def fit(
    model: nn.Module,
    scenario: Scenario,
    layout: Layout,
    recipe: Recipe,
    config: TrainConfig,
    seed: int = 0,
    desc: str = "",
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> FitResult:
    """Trains ``model`` on the tasks of ``scenario`` in order and evaluates after each task.

    Each step: forward on the batch, the data terms' losses (``penalty = False``) back-propagated,
    ``on_after_backward``, the penalties' losses back-propagated, ``optimizer.step()``,
    ``on_after_step``. The recipe's data regime forms each task's training data; its freezing
    rule fixes modules. Everything runs on ``config.device``.

    Args:
        model: A :class:`~lifelong.nn.model.ContinualModel` (or anything with its forward:
            ``model(x, units=...)``, plus ``targets=...`` when ``model.uses_targets``).
        scenario: The tasks.
        layout: Output-unit layout of the setting being trained.
        recipe: The method (terms, data regime, freezing rule).
        config: Optimisation options.
        seed: Seeds the generator of the data order (and of any sampling a term does).
        desc: Label of the progress bar.
        checkpoint: Called after each task's evaluation with the complete training state
            (model, terms, regime, optimiser, generator, results so far); pass it back as
            ``resume``.
        resume: A state given to ``checkpoint``: training continues with the next task and ends
            exactly as the uninterrupted run would (same accuracy matrix, bit for bit).

    Returns:
        The accuracy matrices, loss curves and timings.
    """
    config.validate()
    device = resolve_device(config.device)
    model.to(device)
    terms: list[Term] = [CrossEntropy(recipe.hard_weight), *recipe.terms]
    data_terms = [t for t in terms if not t.penalty]
    penalty_terms = [t for t in terms if t.penalty]
    regime = recipe.regime()
    uses_targets = bool(getattr(model, "uses_targets", False))
    n_tasks = len(scenario.tasks)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same data order on any device
    ctx = TrainContext(model=model, scenario=scenario, layout=layout, config=config,
                       device=device, generator=gen)
    acc = {s: np.full((n_tasks, n_tasks), np.nan) for s in layout.eval_settings}
    baseline = None
    losses: dict[str, list[list[float]]] = {t.name: [] for t in terms}
    timings: dict[str, Any] = {"train_s": 0.0, "eval_s": 0.0, "per_task_s": []}
    all_tasks = list(range(n_tasks))
    if config.eval_future:
        t0 = time.perf_counter()
        res = evaluate(model, scenario, layout, 0, all_tasks, config.eval_batch_size)
        baseline = {s: [res[s][j] for j in all_tasks] for s in res}
        timings["eval_s"] += time.perf_counter() - t0
    optimizer = None
    start = 0
    if resume is not None:
        start = int(resume["task"]) + 1
        model.load_state_dict(resume["model"])
        for term, state in zip(terms, resume["terms"]):
            term.load_state_dict(state)
            term.to(device)
        regime.load_state_dict(resume.get("regime", {}))
        acc = {s: np.array(a, dtype=float) for s, a in resume["accuracy"].items()}
        baseline, losses, timings = resume["baseline"], resume["losses"], resume["timings"]
        gen.set_state(resume["generator"].cpu())
        ctx.step = int(resume["step"])
        if resume.get("optimizer") is not None and not config.reset_optimizer:
            optimizer = build_optimizer(list(model.parameters()), config)
            optimizer.load_state_dict(resume["optimizer"])
    result = FitResult(acc, baseline, losses, timings)

    for t in range(start, n_tasks):
        t_start = time.perf_counter()
        ctx.task_id, ctx.task_step = t, 0
        data = regime.training_data(scenario, layout, t).to(device)
        own = data.task_ids == t if data.mixed else slice(None)  # the current task's rows
        ctx.train_x, ctx.train_y, ctx.train_targets = data.x[own], data.y[own], data.targets[own]
        units = data.units
        span = slice(0, units.stop)
        frozen = recipe.freeze(model, t) if recipe.freeze is not None else []
        _set_trainable(model, frozen)
        if optimizer is None or config.reset_optimizer:
            optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], config)
        for term in terms:  # the task's trainable parameters are set (a warm-up narrows them)
            term.on_task_start(ctx)

        n = data.x.shape[0]
        bs = config.batch_size
        epochs = config.later_epochs if t > 0 and config.later_epochs > 0 else config.epochs
        n_steps = config.iterations if config.iterations > 0 else epochs * math.ceil(n / bs)
        # phases: (steps, frozen modules, optimiser); a warm-up first trains a few modules
        # with its own optimiser (e.g. LwF's new head, Li & Hoiem 2016, Sec. 3)
        phases: list[tuple[int, list[nn.Module] | None, torch.optim.Optimizer]] = []
        warm = recipe.warmup.frozen(model, t) if recipe.warmup is not None else None
        if recipe.warmup is not None and warm is not None:
            _set_trainable(model, warm)
            warm_opt = build_optimizer([p for p in model.parameters() if p.requires_grad], config)
            phases.append((recipe.warmup.steps(n, bs), warm, warm_opt))
        phases.append((n_steps, None if not phases else frozen, optimizer))
        total_steps = sum(k for k, _, _ in phases)
        sums = {term.name: 0.0 for term in terms}
        count = 0
        bar = tqdm(total=total_steps, desc=f"{desc} task {t + 1}/{n_tasks}".strip(), leave=False,
                   disable=_progress_disabled(config.progress), dynamic_ncols=True)
        order, pos = torch.randperm(n, generator=gen).to(device), 0
        for step_optimizer in _phase_steps(model, phases):
            if pos >= n:
                order, pos = torch.randperm(n, generator=gen).to(device), 0
            idx = order[pos:pos + bs]
            pos += bs
            xb, tb, tid = data.x[idx], data.targets[idx], data.task_ids[idx]
            if config.jitter:
                xb = random_translate(xb, config.jitter, gen)

            def forward(u: slice, xb: Tensor = xb) -> Tensor:
                return model(xb, units=u)

            # one forward computes the training units and every unit before them (task-IL's
            # old heads, for a term that reads them; one small matmul per old head)
            full = model(xb, units=span, targets=tb) if uses_targets else forward(span)
            logits = full if span == units else full[:, units.start or 0:]
            batch = Batch(x=xb, y=data.y[idx], targets=tb, task_ids=tid, units=units,
                          logits=logits, forward=forward, span=span, span_logits=full,
                          mask=layout.unit_mask(tid, units) if data.mixed else None)
            step_optimizer.zero_grad(set_to_none=True)
            values: list[tuple[str, Tensor]] = []
            data_loss = _sum_losses(data_terms, ctx, batch, values)
            if data_loss is not None:
                data_loss.backward()
            for term in terms:
                term.on_after_backward(ctx)
            penalty_loss = _sum_losses(penalty_terms, ctx, batch, values)
            # stop at the first NaN or infinite loss (one scalar read per term and step)
            step_values = [(name, float(v.detach())) for name, v in values]
            if not math.isfinite(sum(x for _, x in step_values)):
                name, x = next((n, x) for n, x in step_values if not math.isfinite(x))
                bar.close()
                raise DivergenceError(t, n_tasks, ctx.task_step + 1, name, x,
                                      f"train.lr={config.lr:g}", result)
            if penalty_loss is not None and penalty_loss.requires_grad:
                penalty_loss.backward()
            step_optimizer.step()
            ctx.step += 1
            ctx.task_step += 1
            for term in terms:
                term.on_after_step(ctx)
            for name, x in step_values:
                sums[name] += x
            count += 1
            if count == config.log_every or ctx.task_step == total_steps:
                for name in sums:
                    losses[name].append([ctx.step, sums[name] / count])
                    sums[name] = 0.0
                count = 0
            bar.update(1)
        bar.close()
        bad = next((n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())),
                   None)
        if bad is not None:  # the last step of the task diverged: stop before its importance
            raise DivergenceError(t, n_tasks, ctx.task_step, "parameters", math.nan,
                                  f"train.lr={config.lr:g}", result, f"parameter {bad!r}")
        for term in terms:
            term.on_task_end(ctx)
        timings["train_s"] += time.perf_counter() - t_start

        t0 = time.perf_counter()
        eval_tasks = all_tasks if config.eval_future else list(range(t + 1))
        res = evaluate(model, scenario, layout, t, eval_tasks, config.eval_batch_size)
        for s in res:
            for j, a in res[s].items():
                acc[s][t, j] = a
        timings["eval_s"] += time.perf_counter() - t0
        timings["per_task_s"].append(time.perf_counter() - t_start)
        ctx.train_x = ctx.train_y = ctx.train_targets = None
        if checkpoint is not None:
            checkpoint({"task": t, "model": model.state_dict(),
                        "terms": [term.state_dict() for term in terms],
                        "regime": regime.state_dict(),
                        "accuracy": {s: a.copy() for s, a in acc.items()}, "baseline": baseline,
                        "losses": losses, "timings": timings, "generator": gen.get_state(),
                        "step": ctx.step,
                        "optimizer": None if config.reset_optimizer else optimizer.state_dict()})
    timings["total_s"] = timings["train_s"] + timings["eval_s"]
    for p in model.parameters():
        p.requires_grad_(True)
    return result
