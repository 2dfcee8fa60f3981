"""Data regimes: how a task's training data is formed (DESIGN.md, "Terms, data regimes and the
loop").

A recipe carries one regime; the training loop asks it for each task's data and never branches
on the method. Three are defined here:

* :class:`CurrentTask` -- the current task's training data only (every method's default);
* :class:`Joint` -- all training data of the tasks seen so far: joint training, the upper bound
  of Li & Hoiem (2016, Sec. 4);
* :class:`Rehearsal` -- the current task's data plus an exemplar memory of the old classes
  (:class:`~lifelong.data.memory.ExemplarMemory`; replay, iCaRL, BiC), optionally with a
  held-out split balanced between old and new classes (BiC's second stage).

A regime with state (an exemplar memory) keeps it in :meth:`DataRegime.state_dict`, so a run
resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lifelong.data.layout import Layout
from lifelong.data.memory import ExemplarMemory, rank_within
from lifelong.data.scenarios import Scenario

__all__ = ["CurrentTask", "DataRegime", "Joint", "Rehearsal", "TrainingData", "task_tensors"]


@dataclass
class TrainingData:
    """One task's training data as the loop draws batches from it.

    Attributes:
        x: Inputs (each task's permutation applied).
        y: Dataset labels.
        targets: Output-unit targets (global unit indices).
        task_ids: Task of every sample.
        units: Output units whose logits the loop computes for a batch.
        mixed: Samples of several tasks share ``units``: task-IL batches then need a per-sample
            mask of the units each sample may use (:meth:`Layout.unit_mask`).
    """

    x: Tensor
    y: Tensor
    targets: Tensor
    task_ids: Tensor
    units: slice
    mixed: bool = False

    def to(self, device: torch.device) -> TrainingData:
        """The same data on ``device``."""
        return TrainingData(self.x.to(device), self.y.to(device), self.targets.to(device),
                            self.task_ids.to(device), self.units, self.mixed)

    def subset(self, rows: Tensor) -> TrainingData:
        """The rows ``rows`` (a bool mask or indices) of this data."""
        return TrainingData(self.x[rows], self.y[rows], self.targets[rows], self.task_ids[rows],
                            self.units, self.mixed)


def task_tensors(scenario: Scenario, layout: Layout, tasks: list[int]
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x, y, unit targets, task ids)`` of the training data of ``tasks`` (permutations
    applied), concatenated in task order."""
    xs, ys, ts = [], [], []
    for s in tasks:
        task = scenario.tasks[s]
        xs.append(task.inputs(task.train_x))
        ys.append(task.train_y)
        ts.append(torch.full_like(task.train_y, s))
    x, y, tid = (xs[0], ys[0], ts[0]) if len(xs) == 1 else (torch.cat(xs), torch.cat(ys),
                                                              torch.cat(ts))
    return x, y, layout.targets(tid, y), tid


class DataRegime:
    """Base class: forms the training data of task ``t``.

    Attributes:
        name: Name used in error messages (e.g. when two recipes set a regime).
    """

    name = "regime"

    def training_data(self, scenario: Scenario, layout: Layout, t: int) -> TrainingData:
        """The data task ``t`` is trained on."""
        raise NotImplementedError(f"{type(self).__name__} does not define training_data()")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the regime exactly (e.g. exemplar indices)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        if state:
            raise ValueError(f"data regime {self.name!r} has no state but was given keys "
                             f"{sorted(state)}")


class CurrentTask(DataRegime):
    """The current task's training data, on the task's training units."""

    name = "current"

    def training_data(self, scenario: Scenario, layout: Layout, t: int) -> TrainingData:
        x, y, targets, tid = task_tensors(scenario, layout, [t])
        return TrainingData(x, y, targets, tid, layout.train_units(t))


class Joint(DataRegime):
    """All training data of tasks ``0..t`` on the units seen so far (Li & Hoiem 2016: joint
    training, the upper bound); task-IL batches are masked per sample to each task's head."""

    name = "joint"

    def training_data(self, scenario: Scenario, layout: Layout, t: int) -> TrainingData:
        x, y, targets, tid = task_tensors(scenario, layout, list(range(t + 1)))
        return TrainingData(x, y, targets, tid, layout.seen_units(t), mixed=True)


class Rehearsal(DataRegime):
    """The current task's data plus the exemplars of the old classes (Rebuffi et al. 2017, Sec.
    2.2; Wu et al. 2019, Sec. 4), on the units seen so far.

    The memory is filled at each task's end by the
    :class:`~lifelong.terms.rehearsal.UpdateMemory` term of the same recipe (a regime does not
    see the trained model); the loop shuffles exemplars and new samples together, so every
    batch mixes them in proportion. Task-IL batches are masked per sample to each task's head,
    as :class:`Joint`'s.

    With ``holdout > 0`` (BiC, Wu et al. 2019, Sec. 4.2) the data of every task after the first
    is split into training data and a held-out validation set *balanced between old and new
    classes*: ``k = max(1, round(holdout * e))`` samples of every class, where ``e`` is the
    smallest number of exemplars an old class has (BiC: 10 % of the exemplars, 9:1), drawn at
    random among the old classes' exemplars and the new classes' samples. The held-out rows are
    left out of training and kept in :attr:`held_out` for the bias-correction stage. The split
    is drawn from the scenario's seed and the task index, so a resumed run draws it again
    identically.

    Args:
        memory: The exemplar memory (shared with the recipe's ``UpdateMemory`` term).
        holdout: Fraction of the exemplars held out per class (0: no split).

    Attributes:
        held_out: The held-out split of the last task formed (``None`` without a split).
    """

    name = "rehearsal"

    def __init__(self, memory: ExemplarMemory, holdout: float = 0.0) -> None:
        if not 0.0 <= holdout < 1.0:
            raise ValueError(f"the held-out fraction must lie in [0, 1), got {holdout}")
        self.memory, self.holdout = memory, holdout
        self.held_out: TrainingData | None = None

    def training_data(self, scenario: Scenario, layout: Layout, t: int) -> TrainingData:
        x, y, targets, tid = task_tensors(scenario, layout, [t])
        self.held_out = None
        if len(self.memory) == 0:
            return TrainingData(x, y, targets, tid, layout.train_units(t))
        ex, ey, et, etid = self.memory.data(scenario, layout)
        data = TrainingData(torch.cat([x, ex]), torch.cat([y, ey]), torch.cat([targets, et]),
                            torch.cat([tid, etid]), layout.seen_units(t), mixed=True)
        if self.holdout == 0.0:
            return data
        held = self.split(data, t, int(scenario.info.get("seed", 0)))
        self.held_out = data.subset(held)
        return data.subset(~held)

    def split(self, data: TrainingData, t: int, seed: int) -> Tensor:
        """Bool mask of the held-out rows of ``data``: the same number ``k`` of every class
        (class docstring), drawn from ``seed`` and ``t``."""
        old = data.task_ids != t
        counts = torch.bincount(data.y[old])
        e = int(counts[counts > 0].min())
        k = max(1, round(self.holdout * e))
        gen = torch.Generator().manual_seed(seed * 1_000_003 + t)
        rank = rank_within(data.y, torch.rand(data.y.shape[0], generator=gen))
        return rank < k

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"memory"}:
            raise ValueError(f"data regime {self.name!r} expects the key 'memory', got "
                             f"{sorted(state)}")
        self.memory.load_state_dict(state["memory"])
