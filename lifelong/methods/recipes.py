"""Imports every module that registers methods (called by the registry on first use)."""

from lifelong.methods import (
    baselines,  # noqa: F401
    consolidation,  # noqa: F401
    dhp,  # noqa: F401
    hebbian,  # noqa: F401
    lwf,  # noqa: F401
    rehearsal,  # noqa: F401
)
