"""Shared fixtures of the test suite.

Data: the embedded ``digits`` dataset and the ``synthetic`` benchmark need no files. Real MNIST
is used only when the environment variable ``LIFELONG_DATA`` points at a folder holding
``mnist/`` (CI sets ``LIFELONG_DATA=../shared/data``); tests that need it skip otherwise.
Expensive objects (datasets, scenarios) are built once per session and must not be mutated.

Threads: the tests use tiny tensors, for which torch's intra-op thread pool only costs time;
on a machine whose cores are busy with other processes two OpenMP threads made a 30-step
``synthetic`` run ~70x slower (1.4 s instead of 0.02 s). The session therefore runs torch on one
thread unless ``OMP_NUM_THREADS`` is set explicitly.
"""

from __future__ import annotations

import os

import pytest
import torch

from lifelong.data.datasets import ArrayDataset, DatasetNotFoundError, load_dataset
from lifelong.data.scenarios import BenchmarkOptions, Scenario, build_scenario

MNIST_SKIP_REASON = (
    "real MNIST not available: set LIFELONG_DATA to a folder holding mnist/*.gz "
    "(e.g. LIFELONG_DATA=/work/shared/data) to run this test"
)


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread for the whole session (see the module docstring)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> ArrayDataset:
    """scikit-learn's 8x8 digits as an :class:`ArrayDataset` (uint8, scale 16)."""
    return load_dataset("digits")


@pytest.fixture(scope="session")
def split_digits() -> Scenario:
    """``split-digits`` with default options and seed 0 (natural class order)."""
    return build_scenario("split-digits", BenchmarkOptions(), 0)


@pytest.fixture(scope="session")
def synthetic() -> Scenario:
    """The tiny ``synthetic`` benchmark, seed 0 (3 tasks of 2 Gaussian classes, 16 features)."""
    return build_scenario("synthetic", BenchmarkOptions(), 0)


@pytest.fixture(scope="session")
def mnist() -> ArrayDataset:
    """Real MNIST found through ``LIFELONG_DATA``; the test is skipped when it is not set."""
    if not os.environ.get("LIFELONG_DATA"):
        pytest.skip(MNIST_SKIP_REASON)
    try:
        return load_dataset("mnist")
    except DatasetNotFoundError as e:
        pytest.skip(f"{MNIST_SKIP_REASON} ({e})")
