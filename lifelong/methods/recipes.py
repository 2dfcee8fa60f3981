"""Imports every module that registers methods (called by the registry on first use)."""

from lifelong.methods import baselines  # noqa: F401
from lifelong.methods import consolidation  # noqa: F401
from lifelong.methods import dhp  # noqa: F401
