"""Data regimes: how a task's training data is formed (DESIGN.md, "Terms, data regimes and the
loop").

A recipe carries one regime; the training loop asks it for each task's data and never branches
on the method. Two are defined here:

* :class:`CurrentTask` -- the current task's training data only (every method's default);
* :class:`Joint` -- all training data of the tasks seen so far: joint training, the upper bound
  of Li & Hoiem (2016, Sec. 4).

A regime with state (an exemplar memory) keeps it in :meth:`DataRegime.state_dict`, so a run
resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario

__all__ = ["CurrentTask", "DataRegime", "Joint", "TrainingData"]


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


def _task_tensors(scenario: Scenario, layout: Layout, tasks: list[int]
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
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
        x, y, targets, tid = _task_tensors(scenario, layout, [t])
        return TrainingData(x, y, targets, tid, layout.train_units(t))


class Joint(DataRegime):
    """All training data of tasks ``0..t`` on the units seen so far (Li & Hoiem 2016: joint
    training, the upper bound); task-IL batches are masked per sample to each task's head."""

    name = "joint"

    def training_data(self, scenario: Scenario, layout: Layout, t: int) -> TrainingData:
        x, y, targets, tid = _task_tensors(scenario, layout, list(range(t + 1)))
        return TrainingData(x, y, targets, tid, layout.seen_units(t), mixed=True)
