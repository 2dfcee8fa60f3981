"""Regression tier: reproduces published/measured numbers on real data (slow; runs in CI)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


def mnist_root() -> str:
    """The directory holding ``mnist/``, from ``LIFELONG_DATA``; skips the test otherwise."""
    for root in os.environ.get("LIFELONG_DATA", "").split(os.pathsep):
        if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return root
    pytest.skip("MNIST not found: set LIFELONG_DATA to a directory holding mnist/ "
                "(the four *-ubyte.gz files); CI sets it to ../shared/data")


@pytest.fixture
def mnist_dir() -> str:
    return mnist_root()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/regression" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.regression)


@pytest.fixture(scope="module", autouse=True)
def _single_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine two OpenMP threads spinning against each
    other make these small models several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
