"""How a setting maps a scenario's labels to output units (van de Ven & Tolias 2019).

Two layouts cover the three settings:

* **incremental** (task-IL and class-IL): every task owns a contiguous block of output units, in
  task order; label ``classes[i]`` of task ``t`` is unit ``offset[t] + i``. Task-IL uses the
  task's block only (a head per task, or one layer masked to the task's units); class-IL uses all
  units seen so far (one growing head). Both are read from one forward pass.
* **domain** (domain-IL): all tasks share the same units; label ``classes[i]`` of any task is
  unit ``i``. Requires every task to have the same number of classes.

Every active set of units is a contiguous range, so models compute exactly the logits a batch
needs (``units: slice``) and masking never needs a ``-inf`` fill for single-task batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lifelong.data.scenarios import SETTINGS, Scenario


@dataclass(frozen=True, eq=False)
class Layout:
    """Output-unit layout of a scenario under one training setting.

    Attributes:
        setting: ``"task"``, ``"domain"`` or ``"class"``.
        sizes: Number of output units of each task's block (incremental) or the shared block.
        offsets: First unit of each task's block.
        num_units: Total number of output units of the model.
        lut: ``[num_tasks, num_classes]`` lookup table from (task, dataset label) to unit (-1 where
            the label is not part of the task).
    """

    setting: str
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    num_units: int
    lut: Tensor

    @classmethod
    def for_scenario(cls, scenario: Scenario, setting: str) -> Layout:
        """Builds the layout of ``scenario`` under ``setting``, or explains why it cannot."""
        if setting not in SETTINGS:
            raise ValueError(f"unknown setting {setting!r}; valid settings: {', '.join(SETTINGS)}")
        if setting not in scenario.settings:
            raise ValueError(
                f"benchmark {scenario.name!r} does not support the {setting}-incremental setting; "
                f"valid settings: {', '.join(scenario.settings)}"
            )
        n_tasks = len(scenario.tasks)
        lut = torch.full((n_tasks, scenario.num_classes), -1, dtype=torch.long)
        if setting == "domain":
            sizes_set = {len(t.classes) for t in scenario.tasks}
            if len(sizes_set) != 1:
                raise ValueError(
                    f"domain-incremental needs every task to have the same number of classes; "
                    f"{scenario.name} has tasks of sizes {sorted(sizes_set)}"
                )
            k = sizes_set.pop()
            for t, task in enumerate(scenario.tasks):
                lut[t, list(task.classes)] = torch.arange(k)
            return cls(setting, (k,) * n_tasks, (0,) * n_tasks, k, lut)
        sizes = tuple(len(t.classes) for t in scenario.tasks)
        offsets = tuple(sum(sizes[:t]) for t in range(n_tasks))
        for t, task in enumerate(scenario.tasks):
            lut[t, list(task.classes)] = torch.arange(offsets[t], offsets[t] + sizes[t])
        return cls(setting, sizes, offsets, sum(sizes), lut)

    @property
    def incremental(self) -> bool:
        return self.setting != "domain"

    @property
    def eval_settings(self) -> tuple[str, ...]:
        """Settings that one forward pass of this layout evaluates (the trained one first)."""
        if self.setting == "domain":
            return ("domain",)
        return ("task", "class") if self.setting == "task" else ("class", "task")

    def task_units(self, t: int) -> slice:
        """The block of units of task ``t``."""
        return slice(self.offsets[t], self.offsets[t] + self.sizes[t])

    def seen_units(self, t: int) -> slice:
        """All units of tasks ``0..t`` (class-IL's growing head; every unit for domain-IL)."""
        if self.setting == "domain":
            return slice(0, self.num_units)
        return slice(0, self.offsets[t] + self.sizes[t])

    def train_units(self, t: int) -> slice:
        """Units whose logits enter the training loss while learning task ``t``."""
        return self.task_units(t) if self.setting == "task" else self.seen_units(t)

    def targets(self, task_ids: Tensor | int, y: Tensor) -> Tensor:
        """Output-unit targets of labels ``y`` from tasks ``task_ids`` (vectorised lookup)."""
        if isinstance(task_ids, int):
            return self.lut[task_ids].index_select(0, y)
        return self.lut[task_ids, y]

    def unit_mask(self, task_ids: Tensor, units: slice) -> Tensor | None:
        """Per-sample mask of allowed units within ``units`` for mixed-task task-IL batches.

        Returns ``None`` when every unit in ``units`` is allowed for every sample (class-IL,
        domain-IL, or a batch from one task whose block is exactly ``units``).
        """
        if self.setting != "task":
            return None
        lo = units.start or 0
        hi = self.num_units if units.stop is None else units.stop
        dev = task_ids.device
        offsets = torch.tensor(self.offsets, device=dev)[task_ids]
        sizes = torch.tensor(self.sizes, device=dev)[task_ids]
        cols = torch.arange(lo, hi, device=dev)
        mask = (cols >= offsets[:, None]) & (cols < (offsets + sizes)[:, None])
        return None if bool(mask.all()) else mask
