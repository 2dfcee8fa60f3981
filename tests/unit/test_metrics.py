"""Metrics of the accuracy matrix: hand-computed values, a loop reference, errors, accumulator."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest

import lifelong.metrics
from lifelong.metrics import (
    AccuracyMatrix,
    average_accuracy,
    average_accuracy_curve,
    backward_transfer,
    forgetting,
    forward_transfer,
    matrix_to_list,
)

NAN = math.nan

# 2 tasks: forgetting = 0.9 - 0.7 = 0.2, BWT = 0.7 - 0.9 = -0.2, ACC = (0.7 + 0.8) / 2.
R2 = [[0.9, NAN], [0.7, 0.8]]

# 3 tasks where task 0 peaks *after* its own stage (0.9 at stage 1 > 0.8 on the diagonal):
#   forgetting: task 0: max(0.8, 0.9) - 0.6 = 0.3; task 1: 0.7 - 0.5 = 0.2 -> 0.25
#   BWT: ((0.6 - 0.8) + (0.5 - 0.7)) / 2 = -0.2   (so forgetting != -BWT)
#   ACC curve: 0.8, (0.9 + 0.7) / 2 = 0.8, (0.6 + 0.5 + 0.9) / 3 = 2/3
#   FWT with b = [0.5, 0.1, 0.25]: ((0.1 - 0.1) + (0.3 - 0.25)) / 2 = 0.025
R3 = [[0.8, 0.1, 0.2], [0.9, 0.7, 0.3], [0.6, 0.5, 0.9]]
B3 = [0.5, 0.1, 0.25]


def test_two_task_values() -> None:
    assert average_accuracy(R2) == pytest.approx(0.75)
    assert forgetting(R2) == pytest.approx(0.2)
    assert backward_transfer(R2) == pytest.approx(-0.2)
    np.testing.assert_allclose(average_accuracy_curve(R2), [0.9, 0.75])


def test_three_task_forgetting_uses_the_max_not_the_diagonal() -> None:
    assert forgetting(R3) == pytest.approx(0.25)
    assert backward_transfer(R3) == pytest.approx(-0.2)
    assert forgetting(R3) != pytest.approx(-backward_transfer(R3))
    assert average_accuracy(R3) == pytest.approx(2 / 3)
    np.testing.assert_allclose(average_accuracy_curve(R3), [0.8, 0.8, 2 / 3])


def test_forward_transfer_with_baseline() -> None:
    assert forward_transfer(R3, B3) == pytest.approx(0.025)
    assert forward_transfer(np.array(R3), np.array(B3)) == pytest.approx(0.025)


def test_average_accuracy_after_stage() -> None:
    assert average_accuracy(R3, after=0) == pytest.approx(0.8)
    assert average_accuracy(R3, after=1) == pytest.approx(0.8)
    assert average_accuracy(R3, after=-1) == pytest.approx(2 / 3)
    assert average_accuracy(R3, after=-3) == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"after=3 is out of range for 3 task"):
        average_accuracy(R3, after=3)
    with pytest.raises(ValueError, match="integer"):
        average_accuracy(R3, after=1.0)  # type: ignore[arg-type]


def test_single_task() -> None:
    R = [[0.42]]
    assert average_accuracy(R) == pytest.approx(0.42)
    assert math.isnan(forgetting(R))
    assert math.isnan(backward_transfer(R))
    assert math.isnan(forward_transfer(R, [0.1]))
    np.testing.assert_allclose(average_accuracy_curve(R), [0.42])


def test_none_in_nested_lists_means_nan() -> None:
    R = [[0.9, None], [0.7, 0.8]]
    assert average_accuracy(R) == pytest.approx(0.75)
    assert forgetting(R) == pytest.approx(0.2)
    assert matrix_to_list(R) == [[0.9, None], [0.7, 0.8]]


def test_missing_needed_entries_propagate_nan() -> None:
    R = [[0.9, NAN], [NAN, 0.8]]
    assert math.isnan(forgetting(R))
    assert math.isnan(backward_transfer(R))
    assert math.isnan(average_accuracy(R))
    curve = average_accuracy_curve(R)
    assert curve[0] == pytest.approx(0.9) and math.isnan(curve[1])


def _loop_reference(R: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Direct transcription of the paper formulas with Python loops."""
    T = R.shape[0]
    fgt = sum(max(R[i, j] for i in range(j, T - 1)) - R[T - 1, j] for j in range(T - 1)) / (T - 1)
    bwt = sum(R[T - 1, j] - R[j, j] for j in range(T - 1)) / (T - 1)
    fwt = sum(R[j - 1, j] - b[j] for j in range(1, T)) / (T - 1)
    curve = [sum(R[i, j] for j in range(i + 1)) / (i + 1) for i in range(T)]
    return {"forgetting": fgt, "bwt": bwt, "fwt": fwt, "curve": curve}


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_metrics_match_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    T = int(rng.integers(2, 8))
    R = rng.uniform(size=(T, T))
    b = rng.uniform(size=T)
    ref = _loop_reference(R, b)
    assert forgetting(R) == pytest.approx(ref["forgetting"])
    assert backward_transfer(R) == pytest.approx(ref["bwt"])
    assert forward_transfer(R, b) == pytest.approx(ref["fwt"])
    np.testing.assert_allclose(average_accuracy_curve(R), ref["curve"])
    assert average_accuracy(R) == pytest.approx(ref["curve"][-1])


def test_inputs_are_not_mutated() -> None:
    R = np.array(R3)
    b = np.array(B3)
    R_before, b_before = R.copy(), b.copy()
    R_list = [[0.9, None], [0.7, 0.8]]
    list_before = json.dumps(R_list)
    for fn in (average_accuracy, average_accuracy_curve, forgetting, backward_transfer):
        fn(R)
        fn(R_list)
    forward_transfer(R, b)
    np.testing.assert_array_equal(R, R_before)
    np.testing.assert_array_equal(b, b_before)
    assert json.dumps(R_list) == list_before
    # the returned curve is a fresh array, not a view into the input
    curve = average_accuracy_curve(R)
    curve[:] = -1.0
    np.testing.assert_array_equal(R, R_before)


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        ([0.1, 0.2], r"2-D .* 1 dimension\(s\) and shape \(2,\)"),
        (np.zeros((2, 2, 2)), r"2-D .* 3 dimension\(s\)"),
        (np.zeros((2, 3)), r"must be square .* got shape \(2, 3\)"),
        (np.zeros((0, 0)), r"at least one task"),
        ([[0.1, 0.2], [0.3]], r"could not convert"),
        ([["a", "b"], ["c", "d"]], r"could not convert"),
    ],
)
def test_bad_shapes_raise(bad: object, pattern: str) -> None:
    for fn in (average_accuracy, average_accuracy_curve, forgetting, backward_transfer):
        with pytest.raises(ValueError, match=pattern):
            fn(bad)
    with pytest.raises(ValueError, match=pattern):
        forward_transfer(bad, [0.0, 0.0])


def test_forward_transfer_names_missing_entries() -> None:
    R = [[0.8, NAN, NAN], [0.9, 0.7, 0.3], [0.6, 0.5, 0.9]]
    with pytest.raises(ValueError, match=r"missing \(NaN\): R\[0, 1\]$"):
        forward_transfer(R, B3)
    R_lower = np.tril(np.full((3, 3), 0.5)) + np.triu(np.full((3, 3), NAN), 1)
    with pytest.raises(ValueError, match=r"R\[0, 1\], R\[1, 2\]"):
        forward_transfer(R_lower, B3)
    with pytest.raises(ValueError, match=r"baseline\[2\]"):
        forward_transfer(R3, [0.5, 0.1, NAN])


def test_forward_transfer_baseline_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \(3,\) .* got shape \(2,\)"):
        forward_transfer(R3, [0.1, 0.2])
    with pytest.raises(ValueError, match=r"got shape \(1, 3\)"):
        forward_transfer(R3, [B3])


def test_accuracy_matrix_accumulates_and_computes() -> None:
    acc = AccuracyMatrix(3)
    for i, row in enumerate(R3):
        for j, value in enumerate(row):
            acc.update(i, j, value)
    np.testing.assert_allclose(acc.matrix, R3)
    result = acc.compute()
    assert set(result) == {"average_accuracy", "forgetting", "backward_transfer"}
    assert result["average_accuracy"] == pytest.approx(2 / 3)
    assert result["forgetting"] == pytest.approx(0.25)
    assert result["backward_transfer"] == pytest.approx(-0.2)
    assert acc.compute(baseline=B3)["forward_transfer"] == pytest.approx(0.025)


def test_accuracy_matrix_matrix_is_a_copy() -> None:
    acc = AccuracyMatrix(2)
    acc.update(0, 0, 0.5)
    snapshot = acc.matrix
    snapshot[0, 0] = 0.0
    assert acc.matrix[0, 0] == 0.5
    assert math.isnan(acc.matrix[1, 1])


def test_accuracy_matrix_partial_run_uses_stages_seen() -> None:
    acc = AccuracyMatrix(4)
    acc.update(0, 0, 0.9)
    acc.update(1, 0, 0.7)
    acc.update(1, 1, 0.8)
    assert acc.stages_seen == 2
    result = acc.compute()
    assert result["average_accuracy"] == pytest.approx(0.75)
    assert result["forgetting"] == pytest.approx(0.2)
    assert result["backward_transfer"] == pytest.approx(-0.2)


def test_accuracy_matrix_state_round_trip_and_reset() -> None:
    acc = AccuracyMatrix(2)
    acc.update(0, 0, 0.9)
    acc.update(1, 0, 0.7)
    acc.update(1, 1, 0.8)
    assert acc.to_list() == [[0.9, None], [0.7, 0.8]]
    state = json.loads(json.dumps(acc.state_dict()))
    assert state == {"num_tasks": 2, "matrix": [[0.9, None], [0.7, 0.8]]}
    restored = AccuracyMatrix(2)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.matrix, acc.matrix)
    assert restored.compute() == acc.compute()
    assert AccuracyMatrix.from_matrix(state["matrix"]).to_list() == acc.to_list()
    restored.reset()
    assert np.isnan(restored.matrix).all()
    assert restored.stages_seen == 0
    with pytest.raises(ValueError, match="empty: call update"):
        restored.compute()
    np.testing.assert_array_equal(acc.matrix, np.array([[0.9, NAN], [0.7, 0.8]]))


def test_accuracy_matrix_errors() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AccuracyMatrix(0)
    with pytest.raises(ValueError, match="positive integer"):
        AccuracyMatrix(2.0)  # type: ignore[arg-type]
    acc = AccuracyMatrix(2)
    with pytest.raises(ValueError, match=r"after_task=2 is out of range.*0\.\.1"):
        acc.update(2, 0, 0.5)
    with pytest.raises(ValueError, match=r"task=-1 is out of range"):
        acc.update(0, -1, 0.5)
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\], got 97.*divide percentages"):
        acc.update(0, 0, 97)
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\]"):
        acc.update(0, 0, NAN)
    with pytest.raises(ValueError, match=r"this AccuracyMatrix has 2 task"):
        acc.load_state_dict({"num_tasks": 3, "matrix": np.zeros((3, 3)).tolist()})
    with pytest.raises(ValueError, match="keys 'num_tasks' and 'matrix'"):
        acc.load_state_dict({"matrix": [[0.1]]})
    with pytest.raises(ValueError, match=r"baseline must have shape \(2,\)"):
        acc.update(0, 0, 0.5)
        acc.compute(baseline=[0.1])


def test_docstring_examples() -> None:
    failures, attempted = doctest.testmod(lifelong.metrics, verbose=False)
    assert attempted >= 3 and failures == 0
