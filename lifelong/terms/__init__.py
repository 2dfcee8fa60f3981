"""Loss terms (:mod:`lifelong.terms.base`), the consolidation penalties built on one quadratic
penalty (:mod:`lifelong.terms.penalty`): ``EWC``, ``OnlineEWC``, ``SI``, ``MAS``, ``MASLocal``,
distillation (:mod:`lifelong.terms.distill`) and the rehearsal terms
(:mod:`lifelong.terms.rehearsal`): ``UpdateMemory``, ``BiCDistillation``, ``BiasCorrection``,
``BalancedRetrain``."""

from lifelong.terms.base import Batch, CrossEntropy, Term
from lifelong.terms.distill import KnowledgeDistillation, LwF, kd_loss, soft_targets
from lifelong.terms.penalty import (
    EWC,
    MAS,
    SI,
    FisherPenalty,
    MASLocal,
    MASPenalty,
    OnlineEWC,
    QuadraticPenalty,
    SIPenalty,
)
from lifelong.terms.rehearsal import BalancedRetrain, BiasCorrection, BiCDistillation, UpdateMemory

__all__ = [
    "EWC", "MAS", "SI", "BalancedRetrain", "Batch", "BiCDistillation", "BiasCorrection",
    "CrossEntropy", "FisherPenalty", "KnowledgeDistillation", "LwF",
    "MASLocal", "MASPenalty", "OnlineEWC", "QuadraticPenalty", "SIPenalty", "Term", "kd_loss",
    "UpdateMemory", "soft_targets",
]
