"""A method is a recipe: an output layer, a list of loss terms, a data regime, a freezing rule and
an optional warm-up.

Recipes compose with ``+`` (:func:`compose`): ``dhp+ewc`` is DHP-Softmax's output layer with EWC's
penalty added to the term list, not a file written for the pair (DESIGN.md, principle 2). In
Python, ``recipe_a + recipe_b`` is the same composition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn

from lifelong.data.regimes import CurrentTask, DataRegime
from lifelong.nn.heads import LayerFactory
from lifelong.terms.base import Term

FreezeRule = Callable[[nn.Module, int], list[nn.Module]]


@dataclass
class Warmup:
    """A first phase of each task that trains only some modules, with its own optimiser; the
    task's steps then run as usual (Li & Hoiem 2016, Sec. 3: "we first freeze theta_s and
    theta_o and train theta_n to convergence, then jointly train all weights").

    Attributes:
        epochs: Length of the warm-up in epochs over the task's training data (at least one
            step).
        frozen: ``frozen(model, task_id)`` -> modules kept fixed during the warm-up, or
            ``None`` for no warm-up on that task (e.g. the first task, or a model whose new
            task has no output module of its own).
    """

    epochs: float
    frozen: Callable[[nn.Module, int], list[nn.Module] | None]

    def steps(self, n: int, batch_size: int) -> int:
        """Warm-up steps for ``n`` training samples in batches of ``batch_size``."""
        return max(1, round(self.epochs * math.ceil(n / batch_size)))


@dataclass
class Recipe:
    """What a method adds to the plain training loop.

    Attributes:
        name: Method name (``+``-joined for compositions).
        terms: Loss terms besides the cross-entropy the loop always has.
        layer: Output-layer factory (``None``: ``nn.Linear``), e.g. DHP-Softmax.
        layer_name: Name of the method that set ``layer`` (for error messages).
        data: The data regime (:mod:`lifelong.data.regimes`); ``None`` means the current task's
            data only (:class:`~lifelong.data.regimes.CurrentTask`).
        freeze: ``freeze(model, task_id)`` -> modules kept fixed (no gradient, eval mode) while
            training that task.
        freeze_name: Name of the method that set ``freeze``.
        warmup: A first phase of each task that trains fewer modules (:class:`Warmup`).
        warmup_name: Name of the method that set ``warmup``.
        hard_weight: Weight of the cross-entropy on the labels that the loop always adds (the
            hard term of knowledge distillation, Hinton et al. 2015, Sec. 2; ``0`` trains on
            the other terms alone).
    """

    name: str
    terms: list[Term] = field(default_factory=list)
    layer: LayerFactory | None = None
    layer_name: str | None = None
    data: DataRegime | None = None
    freeze: FreezeRule | None = None
    freeze_name: str | None = None
    warmup: Warmup | None = None
    warmup_name: str | None = None
    hard_weight: float = 1.0

    def regime(self) -> DataRegime:
        """The recipe's data regime (the current task's data when none is set)."""
        return self.data if self.data is not None else CurrentTask()

    def __add__(self, other: Recipe) -> Recipe:
        """``a + b`` is :func:`compose` ``([a, b])``."""
        if not isinstance(other, Recipe):
            return NotImplemented
        return compose([self, other])


def modules_outside(model: nn.Module, keep: Sequence[nn.Module]) -> list[nn.Module]:
    """The modules of ``model`` that hold parameters of their own, except those whose
    parameters belong to ``keep`` (or their submodules): what a freezing rule returns to train
    ``keep`` alone."""
    kept = {id(p) for m in keep for p in m.parameters()}
    return [m for m in model.modules()
            if any(True for _ in m.parameters(recurse=False))
            and not any(id(p) in kept for p in m.parameters(recurse=False))]


# parts of a recipe that at most one recipe of a composition may set: (attribute, why not two);
# ``<attribute>_name`` records which recipe set it
_ONE_OWNER = (("layer", "both replace the output layer"),
              ("freeze", "both decide which parameters are frozen"),
              ("warmup", "both add a warm-up phase to each task"))


def compose(recipes: Sequence[Recipe]) -> Recipe:
    """Combines recipes into one, or explains why they cannot be combined.

    Terms are concatenated (two terms with the same name are an error: the same method twice);
    at most one recipe may set the output layer, the data regime, a freezing rule, a warm-up or
    a weight of the cross-entropy other than 1. The loss of the composition is the sum of its
    parts' losses.
    """
    if not recipes:
        raise ValueError("compose() needs at least one recipe")
    out = Recipe(name="+".join(r.name for r in recipes))
    seen_terms: dict[str, str] = {}
    for r in recipes:
        for term in r.terms:
            if term.name in seen_terms:
                raise ValueError(
                    f"cannot combine {seen_terms[term.name]!r} and {r.name!r}: both add a "
                    f"{term.name!r} term"
                )
            seen_terms[term.name] = r.name
            out.terms.append(term)
        for attr, why in _ONE_OWNER:
            if getattr(r, attr) is None:
                continue
            if getattr(out, attr) is not None:
                raise ValueError(f"cannot combine {getattr(out, attr + '_name')!r} and "
                                 f"{r.name!r}: {why}")
            setattr(out, attr, getattr(r, attr))
            setattr(out, attr + "_name", r.name)
        if r.data is not None:
            if out.data is not None:
                raise ValueError(
                    f"cannot combine two data regimes ({out.data.name!r} and {r.data.name!r})"
                )
            out.data = r.data
        if r.hard_weight != 1.0:
            if out.hard_weight != 1.0:
                raise ValueError(f"cannot combine two weights of the cross-entropy "
                                 f"({out.hard_weight:g} and {r.name!r}'s {r.hard_weight:g})")
            out.hard_weight = r.hard_weight
    return out
