"""lifelong: continual (lifelong) learning with PyTorch.

Nothing happens on import beyond defining names; see the README for the API and the CLI. The
curated entry points::

    from lifelong import metrics, scenarios          # metrics of R; build_scenario, benchmarks
    from lifelong.nn import DHPSoftmax               # layers
    from lifelong.terms import EWC, OnlineEWC, SI, MAS, MASLocal
    from lifelong import Recipe, fit, TrainConfig    # recipes (compose with +) and the loop
    from lifelong import distill, DistillConfig      # knowledge distillation (lifelong distill)
"""

__version__ = "0.1.0"

from lifelong import metrics
from lifelong.data import regimes, scenarios
from lifelong.methods.base import Recipe, compose
from lifelong.train.distill import DistillConfig, distill
from lifelong.train.loop import TrainConfig, evaluate, fit

__all__ = ["DistillConfig", "Recipe", "TrainConfig", "compose", "distill", "evaluate", "fit",
           "metrics", "regimes", "scenarios", "__version__"]
