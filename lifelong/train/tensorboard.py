"""TensorBoard logs of a run, written after every task (``lifelong run --tensorboard DIR``).

What one run writes (its own folder ``DIR/<benchmark>/<setting>/<method>/seed<k>``, so that
TensorBoard shows the runs of a sweep side by side while it runs):

* ``loss/<term>``: each term's logged loss curve (the points of ``result.json``'s ``losses``,
  at their optimiser steps);
* ``accuracy/<setting>/task<j>`` and ``average_accuracy/<setting>``: after training on task
  ``i`` (TensorBoard step ``i + 1``, the number of tasks trained), the accuracy on every task
  evaluated so far, and their mean (row ``i`` of the accuracy matrix R);
* ``accuracy_matrix/<setting>``: R so far as a heatmap image (the report's heatmap);
* ``command``: the ``lifelong run`` command of the run, as text.

The writer is ``torch.utils.tensorboard.SummaryWriter``, which needs the ``tensorboard``
package (``pip install "lifelong[tensorboard]"``). The run folder stays the record.
"""

from __future__ import annotations

import importlib.util
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TENSORBOARD_MISSING", "TensorBoardLog", "check_tensorboard"]

TENSORBOARD_MISSING = ("--tensorboard needs the tensorboard package, which is not installed "
                       "here: pip install \"lifelong[tensorboard]\" (or pip install tensorboard)")


def check_tensorboard() -> None:
    """Raises ``ValueError`` with the install command when ``tensorboard`` is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError(TENSORBOARD_MISSING)


class TensorBoardLog:
    """Writes one run's curves and matrices after each task (see the module docstring).

    Args:
        log_dir: The run's log folder.
        task_names: One name per task (tags and heatmap ticks).
        title: Heatmap title prefix (``method on benchmark, seed k``).
        command: The run's command line, written once as text.
        since_step: Loss points at or before this optimiser step are already written (a
            resumed run).
    """

    def __init__(self, log_dir: str | Path, task_names: Sequence[str], title: str,
                 command: str = "", since_step: int = 0):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.task_names = [str(n) for n in task_names]
        self.title = title
        self.last_step = since_step
        if command and since_step == 0:
            self.writer.add_text("command", f"`{command}`", 0)

    def task_done(self, state: dict[str, Any]) -> None:
        """Writes what a checkpoint state (``fit``'s ``checkpoint`` callback) holds after task
        ``state['task']``: new loss points, row ``task`` of every R, and the heatmaps."""
        from matplotlib.image import imread

        from lifelong.report.plots import accuracy_matrix_figure, png_bytes

        for name, points in state["losses"].items():
            for step, value in points:
                if step > self.last_step and value is not None and math.isfinite(value):
                    self.writer.add_scalar(f"loss/{name}", value, int(step))
        self.last_step = max([self.last_step] + [int(p[0]) for points in state["losses"].values()
                                                 for p in points])
        task = int(state["task"])
        for setting, matrix in state["accuracy"].items():
            row = np.asarray(matrix, dtype=np.float64)[task]
            seen = [j for j in range(row.shape[0]) if not math.isnan(row[j])]
            for j in seen:
                self.writer.add_scalar(f"accuracy/{setting}/task{j}", float(row[j]), task + 1)
            done = [float(row[j]) for j in seen if j <= task]
            if done:
                self.writer.add_scalar(f"average_accuracy/{setting}", sum(done) / len(done),
                                       task + 1)
            figure = accuracy_matrix_figure(matrix, f"{self.title} · {setting} · after task "
                                            f"{task + 1}", self.task_names)
            image = imread(io.BytesIO(png_bytes(figure)), format="png")
            self.writer.add_image(f"accuracy_matrix/{setting}", image[..., :3], task + 1,
                                  dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
