"""Hebbian learning: pure batched rules (:mod:`lifelong.hebbian.rules`) and stateful learners
(:mod:`lifelong.hebbian.models`): plain Hebb and the pattern-averaged associative memory, Oja's
rule, competitive (winner-take-all) learning, neural gas with competitive Hebbian learning of the
topology (Hebb 1949; Oja 1982; Martinetz & Schulten 1991; Martinetz 1993)."""

from lifelong.hebbian import rules
from lifelong.hebbian.models import AssociativeMemory, CompetitiveLayer, NeuralGas, Oja

__all__ = ["AssociativeMemory", "CompetitiveLayer", "NeuralGas", "Oja", "rules"]
