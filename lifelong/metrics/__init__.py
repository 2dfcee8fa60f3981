"""Continual-learning metrics: pure functions of the accuracy matrix and an accumulator.

``R[i, j]`` is the accuracy on task ``j`` after training through task ``i`` (a fraction in
``[0, 1]``), NaN where not evaluated. See :mod:`lifelong.metrics.functional` for the formulas
(GEM: Lopez-Paz & Ranzato 2017; RWalk: Chaudhry et al. 2018).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from lifelong.metrics.functional import (
    as_accuracy_matrix,
    average_accuracy,
    average_accuracy_curve,
    backward_transfer,
    forgetting,
    forward_transfer,
    seen_accuracy_curve,
)

__all__ = [
    "AccuracyMatrix",
    "as_accuracy_matrix",
    "average_accuracy",
    "average_accuracy_curve",
    "backward_transfer",
    "forgetting",
    "forward_transfer",
    "matrix_to_list",
    "seen_accuracy_curve",
]


def matrix_to_list(R: Any) -> list[list[float | None]]:
    """Convert an accuracy matrix to JSON-friendly nested lists, with ``None`` for NaN.

    Args:
        R: ``T x T`` accuracy matrix.

    Returns:
        ``T`` lists of ``T`` Python floats (or ``None`` where the entry is NaN).
    """
    matrix = as_accuracy_matrix(R)
    return [[None if math.isnan(value) else value for value in row] for row in matrix.tolist()]


class AccuracyMatrix:
    """Stateful accumulator of the accuracy matrix (torchmetrics-style ``update/compute/reset``).

    Metrics follow Lopez-Paz & Ranzato 2017 (GEM: ACC, BWT, FWT) and Chaudhry et al. 2018
    (RWalk: forgetting); see :mod:`lifelong.metrics.functional`.

    Example:
        >>> acc = AccuracyMatrix(2)
        >>> acc.update(0, 0, 0.9)
        >>> acc.update(1, 0, 0.7); acc.update(1, 1, 0.8)
        >>> round(acc.compute()["forgetting"], 6)
        0.2

    Args:
        num_tasks: Number of tasks ``T`` (the matrix is ``T x T``).
    """

    def __init__(self, num_tasks: int) -> None:
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)):
            raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
        self.num_tasks = int(num_tasks)
        self._matrix = np.full((self.num_tasks, self.num_tasks), np.nan, dtype=np.float64)

    def _check_index(self, value: int, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer task index, got {value!r}")
        if not 0 <= value < self.num_tasks:
            raise ValueError(
                f"{name}={value} is out of range: this matrix has {self.num_tasks} task(s), "
                f"valid indices are 0..{self.num_tasks - 1}"
            )
        return int(value)

    def update(self, after_task: int, task: int, accuracy: float) -> None:
        """Record the accuracy on ``task`` after training through ``after_task``.

        Args:
            after_task: Training stage ``i`` (row).
            task: Evaluated task ``j`` (column).
            accuracy: Accuracy as a fraction in ``[0, 1]`` (a 0-d tensor is accepted).

        Raises:
            ValueError: On out-of-range indices or an accuracy outside ``[0, 1]``.
        """
        row = self._check_index(after_task, "after_task")
        col = self._check_index(task, "task")
        value = float(accuracy)
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ValueError(
                f"accuracy must be a fraction in [0, 1], got {accuracy!r} for "
                f"(after_task={row}, task={col}); divide percentages by 100"
            )
        self._matrix[row, col] = value

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the ``T x T`` matrix (NaN where not yet recorded)."""
        return self._matrix.copy()

    @property
    def stages_seen(self) -> int:
        """Number of training stages with at least one recorded accuracy (last such row + 1)."""
        rows = np.flatnonzero(~np.isnan(self._matrix).all(axis=1))
        return int(rows[-1]) + 1 if rows.size else 0

    def compute(self, baseline: Any | None = None) -> dict[str, float]:
        """Metrics over the stages seen so far.

        With ``n = stages_seen``, the metrics are those of the leading ``n x n`` block, so a run
        that stopped after task ``n-1`` reports its metrics at that point.

        Args:
            baseline: Optional random-init accuracy per task (length ``num_tasks``); when given,
                ``forward_transfer`` (GEM) is added.

        Returns:
            ``{"average_accuracy", "forgetting", "backward_transfer"}`` (fractions; NaN where
            undefined), plus ``"forward_transfer"`` if ``baseline`` is given.

        Raises:
            ValueError: If nothing has been recorded yet, or from :func:`forward_transfer`.
        """
        seen = self.stages_seen
        if seen == 0:
            raise ValueError("AccuracyMatrix is empty: call update() before compute()")
        block = self._matrix[:seen, :seen]
        result = {
            "average_accuracy": average_accuracy(block),
            "forgetting": forgetting(block),
            "backward_transfer": backward_transfer(block),
        }
        if baseline is not None:
            base = np.asarray(baseline, dtype=np.float64)
            if base.shape != (self.num_tasks,):
                raise ValueError(
                    f"baseline must have shape ({self.num_tasks},), got {base.shape}"
                )
            result["forward_transfer"] = forward_transfer(block, base[:seen])
        return result

    def reset(self) -> None:
        """Forget every recorded accuracy (all entries back to NaN)."""
        self._matrix.fill(np.nan)

    def to_list(self) -> list[list[float | None]]:
        """JSON-friendly nested lists, ``None`` for NaN."""
        return matrix_to_list(self._matrix)

    @classmethod
    def from_matrix(cls, R: Any) -> AccuracyMatrix:
        """Build an accumulator from an existing ``T x T`` matrix (lists with ``None`` work).

        Raises:
            ValueError: On a malformed matrix or values outside ``[0, 1]``.
        """
        matrix = as_accuracy_matrix(R)
        finite = matrix[~np.isnan(matrix)]
        if np.any((finite < 0.0) | (finite > 1.0)):
            raise ValueError("accuracies must be fractions in [0, 1]; divide percentages by 100")
        result = cls(matrix.shape[0])
        result._matrix = matrix
        return result

    def state_dict(self) -> dict[str, Any]:
        """Serialisable state: ``{"num_tasks": T, "matrix": to_list()}``."""
        return {"num_tasks": self.num_tasks, "matrix": self.to_list()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`.

        Raises:
            ValueError: If keys are missing or the matrix does not match ``num_tasks``.
        """
        if "matrix" not in state or "num_tasks" not in state:
            raise ValueError(
                f"state must have keys 'num_tasks' and 'matrix', got {sorted(state)}"
            )
        loaded = AccuracyMatrix.from_matrix(state["matrix"])
        if state["num_tasks"] != self.num_tasks or loaded.num_tasks != self.num_tasks:
            raise ValueError(
                f"state is for {state['num_tasks']} task(s) with a {loaded.num_tasks}x"
                f"{loaded.num_tasks} matrix, but this AccuracyMatrix has {self.num_tasks} task(s)"
            )
        self._matrix = loaded._matrix

    def __repr__(self) -> str:
        return f"AccuracyMatrix(num_tasks={self.num_tasks}, stages_seen={self.stages_seen})"
