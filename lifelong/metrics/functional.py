"""Pure functions of the accuracy matrix.

Throughout, ``R`` is a ``T x T`` accuracy matrix with ``R[i, j]`` the accuracy (a fraction in
``[0, 1]``) on task ``j`` after training through task ``i``, and NaN where the pair was not
evaluated. ``R`` may be a numpy array, a torch tensor on the CPU, or nested lists in which
``None`` stands for NaN. No function here modifies its input.

Missing (NaN) entries that a metric needs propagate into a NaN result, except in
:func:`forward_transfer`, which raises because its inputs are usually forgotten, not absent.

References:
    Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning" (GEM), Sec. 2:
    average accuracy (ACC), backward transfer (BWT) and forward transfer (FWT).
    Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning: Understanding Forgetting
    and Intransigence" (RWalk), Sec. 4: the forgetting measure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "as_accuracy_matrix",
    "average_accuracy",
    "average_accuracy_curve",
    "backward_transfer",
    "forgetting",
    "forward_transfer",
    "seen_accuracy_curve",
]


def as_accuracy_matrix(R: Any, name: str = "R") -> np.ndarray:
    """Return a float64 copy of ``R`` after checking that it is a non-empty square matrix.

    Args:
        R: Accuracy matrix: numpy array, CPU tensor, or nested lists (``None`` means NaN).
        name: Name used in error messages.

    Returns:
        A new ``(T, T)`` float64 array (never a view of the input).

    Raises:
        ValueError: If ``R`` is not numeric, not 2-D, not square, or has no tasks.
    """
    try:
        matrix = np.array(R, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{name} must be a T x T numeric accuracy matrix (nested lists may use None for "
            f"NaN); could not convert it to a float array: {error}"
        ) from error
    if matrix.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D T x T accuracy matrix (R[i, j] = accuracy on task j after "
            f"training through task i), got an array with {matrix.ndim} dimension(s) and shape "
            f"{matrix.shape}"
        )
    rows, cols = matrix.shape
    if rows != cols:
        raise ValueError(
            f"{name} must be square (T x T: one row per training stage, one column per task), "
            f"got shape {matrix.shape}"
        )
    if rows == 0:
        raise ValueError(f"{name} must cover at least one task, got shape {matrix.shape}")
    return matrix


def _task_index(index: int, num_tasks: int, name: str) -> int:
    """Normalise a (possibly negative) task index, raising a clear error when out of range."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"{name} must be an integer task index, got {index!r}")
    if not -num_tasks <= index < num_tasks:
        raise ValueError(
            f"{name}={index} is out of range for {num_tasks} task(s); "
            f"use 0..{num_tasks - 1} (or a negative index from the end)"
        )
    return int(index) % num_tasks


def average_accuracy(R: Any, after: int | None = None) -> float:
    """Average accuracy over the tasks seen so far (GEM's ACC).

    Lopez-Paz & Ranzato 2017, Sec. 2: ``ACC = 1/T * sum_{j<T} R[T-1, j]``; here generalised to
    the stage ``after``: ``mean(R[after, :after+1])``.

    Args:
        R: ``T x T`` accuracy matrix.
        after: Training stage (row) to read; ``None`` means the last one. Negative indices count
            from the end.

    Returns:
        The mean accuracy on tasks ``0..after`` after training through task ``after`` (NaN if
        one of those entries is NaN).

    Raises:
        ValueError: On a malformed matrix or an out-of-range ``after``.
    """
    matrix = as_accuracy_matrix(R)
    num_tasks = matrix.shape[0]
    row = num_tasks - 1 if after is None else _task_index(after, num_tasks, "after")
    return float(np.mean(matrix[row, : row + 1]))


def average_accuracy_curve(R: Any) -> np.ndarray:
    """Average accuracy after each training stage (GEM's ACC, stage by stage).

    Lopez-Paz & Ranzato 2017, Sec. 2; entry ``i`` is ``mean(R[i, :i+1])``.

    Args:
        R: ``T x T`` accuracy matrix.

    Returns:
        A float64 array of shape ``(T,)``.

    Raises:
        ValueError: On a malformed matrix.
    """
    matrix = as_accuracy_matrix(R)
    num_tasks = matrix.shape[0]
    seen = np.tril(np.ones((num_tasks, num_tasks), dtype=bool))
    totals = np.where(seen, matrix, 0.0).sum(axis=1)
    return totals / np.arange(1, num_tasks + 1, dtype=np.float64)


def seen_accuracy_curve(R: Any, test_sizes: Any) -> np.ndarray:
    """Accuracy on all test samples seen so far, after each training stage.

    The few-shot class-incremental protocol (Tao et al. 2020, Sec. 5) reports, after session
    ``i``, the accuracy on the union of the test sets of sessions ``0..i``: entry ``i`` is
    ``sum_{j<=i} n_j R[i, j] / sum_{j<=i} n_j``, ``n_j`` the size of task ``j``'s test set (the
    sample-weighted form of :func:`average_accuracy_curve`).

    Args:
        R: ``T x T`` accuracy matrix.
        test_sizes: ``T`` test-set sizes.

    Returns:
        A float64 array of shape ``(T,)``.

    Raises:
        ValueError: On a malformed matrix, or sizes that are not ``T`` positive numbers.
    """
    matrix = as_accuracy_matrix(R)
    sizes = np.asarray(test_sizes, dtype=np.float64)
    num_tasks = matrix.shape[0]
    if sizes.shape != (num_tasks,) or not np.all(sizes > 0):
        raise ValueError(f"test_sizes must be {num_tasks} positive numbers (one per task), got "
                         f"{list(np.atleast_1d(sizes))}")
    seen = np.tril(np.ones((num_tasks, num_tasks), dtype=bool))
    weighted = np.where(seen, matrix * sizes, 0.0).sum(axis=1)
    return weighted / np.cumsum(sizes)


def forgetting(R: Any) -> float:
    """Average forgetting after the last task (Chaudhry et al. 2018, RWalk, Sec. 4).

    For each earlier task ``j < T-1``: ``f_j = max_{l in [j, T-2]} R[l, j] - R[T-1, j]`` (the
    drop from the best accuracy ever reached on ``j`` before the last stage), and the result is
    ``1/(T-1) * sum_j f_j``. Unlike ``-BWT`` the reference is the best earlier accuracy, not the
    accuracy right after learning the task.

    Args:
        R: ``T x T`` accuracy matrix.

    Returns:
        Average forgetting as a fraction; NaN when ``T == 1`` (nothing can be forgotten).

    Raises:
        ValueError: On a malformed matrix.
    """
    matrix = as_accuracy_matrix(R)
    num_tasks = matrix.shape[0]
    if num_tasks == 1:
        return float("nan")
    earlier = matrix[:-1, :-1]  # rows l = 0..T-2, columns j = 0..T-2
    reachable = np.tril(np.ones_like(earlier, dtype=bool))  # l >= j
    best = np.where(reachable, earlier, -np.inf).max(axis=0)
    return float(np.mean(best - matrix[-1, :-1]))


def backward_transfer(R: Any) -> float:
    """Backward transfer (Lopez-Paz & Ranzato 2017, GEM, Sec. 2).

    ``BWT = 1/(T-1) * sum_{j<T-1} (R[T-1, j] - R[j, j])``: negative values mean forgetting.

    Args:
        R: ``T x T`` accuracy matrix.

    Returns:
        Backward transfer as a fraction; NaN when ``T == 1``.

    Raises:
        ValueError: On a malformed matrix.
    """
    matrix = as_accuracy_matrix(R)
    if matrix.shape[0] == 1:
        return float("nan")
    return float(np.mean(matrix[-1, :-1] - np.diagonal(matrix)[:-1]))


def forward_transfer(R: Any, baseline: Any) -> float:
    """Forward transfer (Lopez-Paz & Ranzato 2017, GEM, Sec. 2).

    ``FWT = 1/(T-1) * sum_{j>=1} (R[j-1, j] - b_j)``, where ``b_j`` is the accuracy on task
    ``j`` of the model at random initialisation. It needs the entries just above the diagonal,
    i.e. each task evaluated one stage before it is trained on.

    Args:
        R: ``T x T`` accuracy matrix.
        baseline: 1-D array of length ``T`` with the random-init accuracy per task (``b_0`` is
            not used).

    Returns:
        Forward transfer as a fraction; NaN when ``T == 1``.

    Raises:
        ValueError: On a malformed matrix or baseline, or when a needed entry is NaN (the
            message lists them).
    """
    matrix = as_accuracy_matrix(R)
    num_tasks = matrix.shape[0]
    try:
        base = np.array(baseline, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"baseline must be a 1-D numeric array: {error}") from error
    if base.shape != (num_tasks,):
        raise ValueError(
            f"baseline must be a 1-D array with one random-init accuracy per task, shape "
            f"({num_tasks},) for this {num_tasks}-task matrix, got shape {base.shape}"
        )
    if num_tasks == 1:
        return float("nan")
    above = np.diagonal(matrix, offset=1)
    missing = [f"R[{j - 1}, {j}]" for j in np.flatnonzero(np.isnan(above)) + 1]
    missing += [f"baseline[{j}]" for j in np.flatnonzero(np.isnan(base[1:])) + 1]
    if missing:
        raise ValueError(
            "forward transfer needs each task evaluated one stage before training on it and a "
            f"random-init baseline for it; missing (NaN): {', '.join(missing)}"
        )
    return float(np.mean(above - base[1:]))
