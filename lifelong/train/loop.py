"""The training loop: one function to read top to bottom.

``fit`` owns zero_grad, forward, backward, step and evaluation. Methods contribute through a
:class:`~lifelong.methods.base.Recipe`: loss terms with five hooks (task start, loss, after
backward, after step, task end), an output layer, a data regime and a freezing rule.
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

from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario, Task
from lifelong.methods.base import Recipe
from lifelong.terms.base import Batch, CrossEntropy, Term

OPTIMIZERS = ("sgd", "adam")


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
        iterations: Optimiser steps per task; 0 means use ``epochs``.
        eval_batch_size: Batch size of evaluation.
        reset_optimizer: Build a fresh optimiser at the start of every task.
        eval_future: Also evaluate tasks not yet trained on (and the untrained model), which
            forward transfer needs.
        log_every: Steps between two points of the logged loss curves. A point is the mean
            over those steps, except for penalties that add their gradient directly
            (``Term.direct_gradient``, e.g. EWC, SI, MAS), whose value is taken at the logged
            step only (evaluating it costs as much as its gradient).
        progress: ``auto`` (a bar on a terminal, quiet otherwise), ``on`` or ``off``.
    """

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 64
    epochs: int = 1
    iterations: int = 0
    eval_batch_size: int = 1024
    reset_optimizer: bool = True
    eval_future: bool = False
    log_every: int = 50
    progress: str = "auto"

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
        if self.progress not in ("auto", "on", "off"):
            raise ValueError(f"train.progress must be auto, on or off, got {self.progress!r}")


@dataclass
class TrainContext:
    """What hooks and terms can see of the run.

    Attributes:
        model: The model being trained.
        scenario: The scenario.
        layout: Output-unit layout of the setting.
        config: Optimisation options.
        task_id: Index of the task being learned.
        optimizer: The current optimiser.
        generator: The run's random generator (data order and any sampling a term does).
        step: Optimiser steps taken so far in the whole run.
        task_step: Optimiser steps taken so far in this task.
        train_x: Inputs of the current task's training data (permutation applied).
        train_y: Labels of ``train_x``.
        penalty_steps: Whether direct-gradient penalties may take their own plain-SGD step
            instead of adding their gradient to ``.grad`` (:mod:`lifelong.terms.base`); the loop
            sets it unless a term observes the steps through ``.grad``.
        gradient_terms: The terms that add to ``.grad`` between the data losses' backward and
            the optimiser's step (penalties, back-propagated or direct), in the loop's order.
        gradient_observers: The terms that observe the steps through ``.grad``
            (``observes_gradient_steps``).
    """

    model: nn.Module
    scenario: Scenario
    layout: Layout
    config: TrainConfig
    task_id: int = 0
    optimizer: torch.optim.Optimizer | None = None
    generator: torch.Generator = field(default_factory=torch.Generator)
    step: int = 0
    task_step: int = 0
    train_x: Tensor | None = None
    train_y: Tensor | None = None
    penalty_steps: bool = False
    gradient_terms: tuple[Term, ...] = ()
    gradient_observers: tuple[Term, ...] = ()

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
        assert self.train_x is not None and self.train_y is not None
        n = self.train_x.shape[0] if max_samples is None else min(max_samples, self.train_x.shape[0])
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            y = self.train_y[i:j]
            yield self.train_x[i:j], self.layout.targets(self.task_id, y)


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
    return torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas),
                            weight_decay=config.weight_decay)


@torch.no_grad()
def evaluate(model: nn.Module, scenario: Scenario, layout: Layout, after_task: int,
             tasks: list[int], batch_size: int = 1024) -> dict[str, dict[int, float]]:
    """Accuracy of ``model`` on the test sets of ``tasks``, for every setting the layout reads.

    Task-IL predicts among the task's own units; class-IL among the units of all tasks seen so
    far (through ``after_task``, or through the evaluated task if that is later); domain-IL among
    all units. One forward pass serves task- and class-IL. The model's train/eval mode is
    restored afterwards.
    """
    was_training = model.training
    model.eval()
    out: dict[str, dict[int, float]] = {s: {} for s in layout.eval_settings}
    try:
        for j in tasks:
            task = scenario.tasks[j]
            correct = {s: 0 for s in out}
            tu = layout.task_units(j)
            su = layout.seen_units(max(after_task, j))
            for i in range(0, task.num_test, batch_size):
                x = task.inputs(task.test_x[i:i + batch_size])
                y = task.test_y[i:i + batch_size]
                targets = layout.targets(j, y)
                if layout.setting == "domain":
                    logits = model(x)
                    correct["domain"] += int((logits.argmax(1) == targets).sum())
                    continue
                logits = model(x, units=slice(0, su.stop))
                pred_task = logits[:, tu].argmax(1) + tu.start
                correct["task"] += int((pred_task == targets).sum())
                correct["class"] += int((logits.argmax(1) == targets).sum())
            for s in out:
                out[s][j] = correct[s] / max(task.num_test, 1)
    finally:
        model.train(was_training)
    return out


def _progress_disabled(mode: str) -> bool | None:
    return {"auto": None, "on": False, "off": True}[mode]


def _task_data(scenario: Scenario, layout: Layout, t: int, replay: str
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training inputs, labels, unit targets and task ids for task ``t`` under ``replay``."""
    tasks = range(t + 1) if replay == "joint" else [t]
    xs, ys, ts = [], [], []
    for s in tasks:
        task = scenario.tasks[s]
        xs.append(task.inputs(task.train_x))
        ys.append(task.train_y)
        ts.append(torch.full_like(task.train_y, s))
    x, y, tid = (xs[0], ys[0], ts[0]) if len(xs) == 1 else (torch.cat(xs), torch.cat(ys), torch.cat(ts))
    return x, y, layout.targets(tid, y), tid


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

    Args:
        model: A :class:`~lifelong.nn.model.ContinualModel` (or anything with its forward).
        scenario: The tasks.
        layout: Output-unit layout of the setting being trained.
        recipe: The method (terms, data regime, freezing rule).
        config: Optimisation options.
        seed: Seeds the generator of the data order (and of any sampling a term does).
        desc: Label of the progress bar.
        checkpoint: Called after each task's evaluation with the complete training state
            (model, terms, optimiser, generator, results so far); pass it back as ``resume``.
        resume: A state given to ``checkpoint``: training continues with the next task and ends
            exactly as the uninterrupted run would (same accuracy matrix, bit for bit).

    Returns:
        The accuracy matrices, loss curves and timings.
    """
    config.validate()
    terms: list[Term] = [CrossEntropy(), *recipe.terms]
    data_terms = [t for t in terms if not t.penalty]
    penalty_terms = [t for t in terms if t.penalty and not t.direct_gradient]
    direct_terms = [t for t in terms if t.penalty and t.direct_gradient]
    n_tasks = len(scenario.tasks)
    gen = torch.Generator().manual_seed(seed)
    ctx = TrainContext(model=model, scenario=scenario, layout=layout, config=config, generator=gen,
                       penalty_steps=not any(t.observes_gradient_steps for t in terms),
                       gradient_terms=(*penalty_terms, *direct_terms),
                       gradient_observers=tuple(t for t in terms if t.observes_gradient_steps))
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
        acc = {s: np.array(a, dtype=float) for s, a in resume["accuracy"].items()}
        baseline, losses, timings = resume["baseline"], resume["losses"], resume["timings"]
        gen.set_state(resume["generator"])
        ctx.step = int(resume["step"])
        if resume.get("optimizer") is not None and not config.reset_optimizer:
            optimizer = build_optimizer(list(model.parameters()), config)
            optimizer.load_state_dict(resume["optimizer"])
    result = FitResult(acc, baseline, losses, timings)

    for t in range(start, n_tasks):
        t_start = time.perf_counter()
        ctx.task_id, ctx.task_step = t, 0
        x, y, targets, task_ids = _task_data(scenario, layout, t, recipe.replay)
        ctx.train_x, ctx.train_y = scenario.tasks[t].inputs(scenario.tasks[t].train_x), scenario.tasks[t].train_y
        units = layout.train_units(t)
        if recipe.replay == "joint":
            units = layout.seen_units(t)
        frozen = recipe.freeze(model, t) if recipe.freeze is not None else []
        for p in model.parameters():
            p.requires_grad_(True)
        for m in frozen:
            for p in m.parameters():
                p.requires_grad_(False)
        model.train()
        for m in frozen:
            m.eval()
        if optimizer is None or config.reset_optimizer:
            optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], config)
        ctx.optimizer = optimizer
        for term in terms:
            term.on_task_start(ctx)

        n = x.shape[0]
        bs = config.batch_size
        per_epoch = math.ceil(n / bs)
        n_steps = config.iterations if config.iterations > 0 else config.epochs * per_epoch
        sums = {term.name: 0.0 for term in terms if term not in direct_terms}
        points = {term.name: 0.0 for term in direct_terms}  # value at the logged step
        count = 0
        bar = tqdm(total=n_steps, desc=f"{desc} task {t + 1}/{n_tasks}".strip(), leave=False,
                   disable=_progress_disabled(config.progress), dynamic_ncols=True)
        order = torch.randperm(n, generator=gen)
        pos = 0
        for _ in range(n_steps):
            if pos >= n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos:pos + bs]
            pos += bs
            xb, tb, tid = x[idx], targets[idx], task_ids[idx]
            logits = model(xb, tb, units)
            batch = Batch(x=xb, y=y[idx], targets=tb, task_ids=tid, units=units, logits=logits,
                          mask=layout.unit_mask(tid, units) if recipe.replay != "none" else None)
            optimizer.zero_grad(set_to_none=True)
            values: list[tuple[str, Tensor]] = []
            data_loss: Tensor | None = None
            for term in data_terms:
                v = term.loss(ctx, batch)
                if v is not None:
                    values.append((term.name, v))
                    data_loss = v if data_loss is None else data_loss + v
            pen_loss: Tensor | None = None
            for term in penalty_terms:
                v = term.loss(ctx, batch)
                if v is not None:
                    values.append((term.name, v))
                    pen_loss = v if pen_loss is None else pen_loss + v
            if data_loss is not None:
                data_loss.backward()
            for term in terms:
                term.on_after_backward(ctx)
            if pen_loss is not None and pen_loss.requires_grad:
                pen_loss.backward()
            logging = count + 1 == config.log_every or ctx.task_step + 1 == n_steps
            if logging and direct_terms:  # their value: only on the steps that are logged, at
                with torch.no_grad():  # the parameters of this step (before any penalty step)
                    for term in direct_terms:
                        v = term.loss(ctx, batch)
                        if v is not None:
                            points[term.name] = float(v)
            for term in direct_terms:
                term.add_gradient(ctx)
            optimizer.step()
            ctx.step += 1
            ctx.task_step += 1
            for term in terms:
                term.on_after_step(ctx)
            for name, v in values:
                sums[name] += float(v.detach())
            count += 1
            if logging:
                for name in sums:
                    losses[name].append([ctx.step, sums[name] / count])
                    sums[name] = 0.0
                for name in points:
                    losses[name].append([ctx.step, points[name]])
                    points[name] = 0.0
                count = 0
            bar.update(1)
        bar.close()
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
        ctx.train_x = ctx.train_y = None
        if checkpoint is not None:
            checkpoint({"task": t, "model": model.state_dict(),
                        "terms": [term.state_dict() for term in terms],
                        "accuracy": {s: a.copy() for s, a in acc.items()}, "baseline": baseline,
                        "losses": losses, "timings": timings, "generator": gen.get_state(),
                        "step": ctx.step,
                        "optimizer": None if config.reset_optimizer else optimizer.state_dict()})
    timings["total_s"] = timings["train_s"] + timings["eval_s"]
    for m in model.modules():
        for p in m.parameters(recurse=False):
            p.requires_grad_(True)
    return result
