"""Rehearsal methods: experience replay, iCaRL, and BiC with the rows of its ablation.

Each is a short recipe of shared parts (DESIGN.md, principle 2): the
:class:`~lifelong.data.regimes.Rehearsal` data regime over an
:class:`~lifelong.data.memory.ExemplarMemory`, the :class:`~lifelong.terms.rehearsal.UpdateMemory`
term that fills it at each task's end, and

* ``replay`` -- nothing else: exemplars mixed into every batch, plain cross-entropy (experience
  replay; ``replay.nme=true`` classifies by nearest mean of exemplars instead of the logits);
* ``icarl`` (Rebuffi et al. 2017) -- herding, the distillation of the previous model over the
  old classes and nearest-mean-of-exemplars classification. The distillation is LwF's term
  (:class:`~lifelong.terms.distill.LwF`, ``kd_loss`` at ``T = 2`` over the old classes): we use
  the softmax form of the widely used re-implementations (e.g. FACIL's), not the paper's
  per-class sigmoid cross-entropy;
* ``bic-baseline-1`` (Wu et al. 2019, Table 6) -- herding exemplars and the classification loss;
* ``bic-baseline-2`` -- plus the distillation over the old classes, ``lambda = n / (n + m)``
  (:class:`~lifelong.terms.rehearsal.BiCDistillation`);
* ``bic`` -- plus the bias-correction layer ``alpha o + beta`` on the new classes' logits, fitted
  at each task's end on a held-out split balanced between old and new classes (9:1 by default)
  with everything else frozen (:class:`~lifelong.terms.rehearsal.BiasCorrection`); the learned
  ``alpha``, ``beta`` per step are in the run's result (``learned.bias``);
* ``bic-upper-bound`` -- baseline-2, then the last layer retrained at each task's end on the
  data of every class seen, balanced (:class:`~lifelong.terms.rehearsal.BalancedRetrain`).

The baselines and the upper bound train on all the exemplars (no held-out split: only ``bic``
needs validation data), as in the paper. iCaRL and the BiC rows are class-incremental methods;
``replay`` applies to every setting (task-IL batches are masked per sample to each task's head).
Compositions: ``replay+ewc``, ``replay+lwf`` and any penalty; two memories, a memory with
``joint``, or a second distillation of the old classes are refused
(:func:`lifelong.config.check_composition`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lifelong.data.memory import SELECTIONS, ExemplarMemory
from lifelong.data.regimes import Rehearsal
from lifelong.methods.base import Recipe
from lifelong.methods.registry import register_method
from lifelong.nn.bias import BiasCorrectedLinear
from lifelong.nn.nme import NMEClassifier
from lifelong.terms.base import Term
from lifelong.terms.distill import LwF
from lifelong.terms.rehearsal import BalancedRetrain, BiasCorrection, BiCDistillation, UpdateMemory

__all__ = ["BiCConfig", "BiCUpperBoundConfig", "DistillMemoryConfig", "ICaRLConfig",
           "MemoryConfig", "ReplayConfig"]

REHEARSAL_METHODS = ("replay", "icarl", "bic-baseline-1", "bic-baseline-2", "bic",
                     "bic-upper-bound")


@dataclass
class MemoryConfig:
    """Exemplar memory (``<method>.*``).

    Attributes:
        budget: Total number of exemplars, shared evenly by the classes seen so far (iCaRL and
            BiC: 2000 on CIFAR-100; we keep 2000 on the MNIST-sized benchmarks too).
        selection: ``herding`` (iCaRL, Alg. 4) or ``random``.
    """

    budget: int = 2000
    selection: str = "herding"

    def validate(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown exemplar selection {self.selection!r}; valid: "
                             f"{', '.join(SELECTIONS)}")


@dataclass
class ReplayConfig(MemoryConfig):
    """Experience replay (``replay.*``).

    Attributes:
        selection: ``random`` by default (plain experience replay); ``herding`` as iCaRL.
        nme: Classify by nearest mean of exemplars instead of the output layer's logits.
    """

    selection: str = "random"
    nme: bool = False


@dataclass
class DistillMemoryConfig(MemoryConfig):
    """Exemplars plus distillation over the old classes (``bic-baseline-2.*``).

    Attributes:
        temperature: Distillation temperature ``T`` (BiC: 2).
    """

    temperature: float = 2.0


@dataclass
class ICaRLConfig(DistillMemoryConfig):
    """iCaRL (``icarl.*``; Rebuffi et al. 2017).

    Attributes:
        lam: Weight of the distillation over the old classes (1, as FACIL's re-implementation).
        nme: Classify by nearest mean of exemplars (iCaRL's classifier; ``false`` for the
            ablation "iCaRL with the network's outputs", Rebuffi et al. Sec. 4.1).
    """

    lam: float = 1.0
    nme: bool = True


@dataclass
class BiCConfig(DistillMemoryConfig):
    """BiC (``bic.*``; Wu et al. 2019, Sec. 4.2).

    Attributes:
        holdout: Fraction of the exemplars held out per class for the bias stage (0.1: the
            paper's 9:1 split); the new classes hold out as many samples per class.
        beta_decay: Weight of ``beta^2 / 2`` in stage 2 (the authors' code: 0.1).
        max_iter: L-BFGS iterations of stage 2.
    """

    holdout: float = 0.1
    beta_decay: float = 0.1
    max_iter: int = 100


@dataclass
class BiCUpperBoundConfig(DistillMemoryConfig):
    """BiC's upper bound (``bic-upper-bound.*``; Wu et al. 2019, Table 6).

    Attributes:
        max_iter: L-BFGS iterations of the last layer's balanced retraining.
        weight_decay: L2 weight of the retrained weights (``weight_decay / 2 ||W||^2``; without
            it the first step's separable classes drive ``||W||`` to infinity).
    """

    max_iter: int = 100
    weight_decay: float = 1e-3


def _memory(hp: MemoryConfig, holdout: float = 0.0) -> tuple[Rehearsal, list[Term]]:
    hp.validate()
    memory = ExemplarMemory(hp.budget, hp.selection)
    return Rehearsal(memory, holdout), [UpdateMemory(memory)]


@register_method("replay", hparams=ReplayConfig,
                 description="experience replay: an exemplar memory mixed into every batch, "
                 "plain cross-entropy (budget shared by the classes seen)")
def replay(hp: ReplayConfig) -> Recipe:
    regime, terms = _memory(hp)
    return Recipe(name="replay", terms=terms, data=regime,
                  layer=NMEClassifier if hp.nme else None, layer_name="replay")


@register_method("icarl", hparams=ICaRLConfig, settings=("class",),
                 description="iCaRL: herding exemplars, distillation of the old classes, "
                 "nearest-mean-of-exemplars classification (Rebuffi et al. 2017)")
def icarl(hp: ICaRLConfig) -> Recipe:
    regime, terms = _memory(hp)
    return Recipe(name="icarl", terms=[*terms, LwF(hp.temperature, hp.lam)], data=regime,
                  layer=NMEClassifier if hp.nme else None, layer_name="icarl")


@register_method("bic-baseline-1", hparams=MemoryConfig, settings=("class",),
                 description="BiC ablation row 1: herding exemplars + classification loss "
                 "(Wu et al. 2019)")
def bic_baseline_1(hp: MemoryConfig) -> Recipe:
    regime, terms = _memory(hp)
    return Recipe(name="bic-baseline-1", terms=terms, data=regime)


@register_method("bic-baseline-2", hparams=DistillMemoryConfig, settings=("class",),
                 description="BiC ablation row 2: + distillation over the old classes, "
                 "lambda = n/(n+m) (Wu et al. 2019)")
def bic_baseline_2(hp: DistillMemoryConfig) -> Recipe:
    regime, terms = _memory(hp)
    return Recipe(name="bic-baseline-2", terms=[*terms, BiCDistillation(hp.temperature)],
                  data=regime)


@register_method("bic", hparams=BiCConfig, settings=("class",),
                 description="BiC: + a bias-correction layer alpha*o+beta on the new classes, "
                 "fitted on a held-out balanced split (Wu et al. 2019)")
def bic(hp: BiCConfig) -> Recipe:
    regime, terms = _memory(hp, hp.holdout)
    return Recipe(name="bic", terms=[*terms, BiCDistillation(hp.temperature),
                                     BiasCorrection(regime, hp.beta_decay, hp.max_iter)],
                  data=regime, layer=BiasCorrectedLinear, layer_name="bic")


@register_method("bic-upper-bound", hparams=BiCUpperBoundConfig, settings=("class",),
                 description="BiC ablation upper bound: baseline-2, then the last layer "
                 "retrained on all seen classes' data, balanced (Wu et al. 2019)")
def bic_upper_bound(hp: BiCUpperBoundConfig) -> Recipe:
    regime, terms = _memory(hp)
    retrain = BalancedRetrain(hp.max_iter, hp.weight_decay)
    return Recipe(name="bic-upper-bound",
                  terms=[*terms, BiCDistillation(hp.temperature), retrain], data=regime)
