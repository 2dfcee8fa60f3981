"""Loss terms (:mod:`lifelong.terms.base`) and the consolidation penalties built on one quadratic
penalty (:mod:`lifelong.terms.penalty`): ``EWC``, ``OnlineEWC``, ``SI``, ``MAS``, ``MASLocal``."""

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

__all__ = [
    "EWC", "MAS", "SI", "Batch", "CrossEntropy", "FisherPenalty", "KnowledgeDistillation", "LwF",
    "MASLocal", "MASPenalty", "OnlineEWC", "QuadraticPenalty", "SIPenalty", "Term", "kd_loss",
    "soft_targets",
]
