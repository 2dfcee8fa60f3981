"""DHP-Softmax as a method: the output layer of Thangarasa, Miconi & Taylor (2020).

Thangarasa, Miconi & Taylor, "Enabling Continual Learning with Differentiable Hebbian Plasticity"
(IJCNN 2020; ICML 2019 AMTL workshop version "Differentiable Hebbian Plasticity for Continual
Learning"). The method is *only* an output layer (:class:`~lifelong.nn.dhp.DHPSoftmax`): its
recipe sets the layer factory and adds no loss term, so it composes with any recipe that adds
terms -- ``dhp+ewc``, ``dhp+online-ewc``, ``dhp+si``, ``dhp+mas``, ``dhp+mas-local`` are the
paper's "Differentiable Hebbian Consolidation" (Sec. 3.2: the consolidation penalty covers the
slow weights and the rest of the network; the plastic part ``alpha``, ``eta`` is left out unless
``<method>.penalize_plastic=true``; the Hebbian trace is a buffer and is never penalised).

How the layer sits in each head design (:mod:`lifelong.nn.heads`):

* task-IL, ``model.head=multi`` (the default): one ``DHPSoftmax`` per task, each with its own
  trace; a head's trace is written only while its own task is trained, with the labels local to
  that head.
* task-IL, ``model.head=single``: one ``DHPSoftmax`` over all units; the loss and logits use the
  current task's units, the trace update covers every class present in the batch (the current
  task's), and the rows of the other classes keep their trace.
* class-IL: the same single layer restricted to the units seen so far (the growing head);
  domain-IL: one layer shared by every task (the paper's PermutedMNIST head), whose rows are
  re-written by each task.

Refused compositions: a method named twice (``dhp+dhp``, by the registry) and any second recipe
that replaces the output layer (by :func:`~lifelong.methods.base.compose`).

Choices the description leaves open (ours; see also :class:`~lifelong.nn.dhp.DHPSoftmax` and
``docs/dhp.md``):

* ``bias``: the paper's logits ``z = h (w + alpha Hebb)`` have no bias; we keep ``nn.Linear``'s
  bias by default so that ``dhp`` differs from ``finetune`` (whose heads are ``nn.Linear``) only
  by the plastic part. ``dhp.bias=false`` gives the paper's exact form.
* ``eta_init = 0.001``, ``alpha_init_scale = 0.01`` (``alpha = 0.01 U(0, 1)``): the blog's code
  and the paper; both are then learned by the run's optimiser with the run's learning rate.
* the trace holds the raw class means of the penultimate activations, is updated *before* the
  logits are computed (Algorithm 1), inside the step's graph (``eta``, ``alpha`` and the
  backbone get gradients through it), detached between steps, and never updated in evaluation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from lifelong.methods.base import Recipe
from lifelong.methods.registry import register_method
from lifelong.nn.dhp import DHPSoftmax

__all__ = ["DHPConfig", "dhp", "dhp_layer_factory"]


@dataclass
class DHPConfig:
    """DHP-Softmax hyperparameters (``dhp.*``; Thangarasa et al. 2020, Sec. 3 and Appendix).

    The paper presents the plastic component as adding "no additional hyperparameters": ``alpha``
    and ``eta`` are learned. What remains are their initial values and the bias.

    Attributes:
        eta_init: Initial Hebbian rate ``eta`` of ``Hebb <- (1 - eta) Hebb + eta h_bar``
            (0.001, the paper's initial value; must lie in ``[0, 1]``).
        alpha_init_scale: ``alpha`` is initialised ``alpha_init_scale * U(0, 1)`` (0.01 in the
            blog's code).
        bias: Give the layer an additive bias like ``nn.Linear`` (our default, so that ``dhp``
            and ``finetune`` differ only by the plastic part); the paper has none (``false``).
    """

    eta_init: float = 0.001
    alpha_init_scale: float = 0.01
    bias: bool = True

    def validate(self) -> None:
        """Raises ``ValueError`` for values :class:`DHPSoftmax` would refuse, naming the key."""
        if not 0.0 <= self.eta_init <= 1.0:
            raise ValueError(f"dhp.eta_init must lie in [0, 1] (the trace is a moving average), "
                             f"got {self.eta_init}")
        if self.alpha_init_scale < 0:
            raise ValueError(f"dhp.alpha_init_scale must be >= 0, got {self.alpha_init_scale}")


def dhp_layer_factory(hp: DHPConfig) -> functools.partial[DHPSoftmax]:
    """``factory(in_features, out_features) -> DHPSoftmax`` with ``hp``'s settings.

    Thangarasa et al. 2020, Sec. 3: the DHP-Softmax replaces the network's softmax (last linear)
    layer; every head the model builds is one such layer.
    """
    hp.validate()
    return functools.partial(DHPSoftmax, bias=hp.bias, eta_init=hp.eta_init,
                             alpha_init_scale=hp.alpha_init_scale)


@register_method("dhp", hparams=DHPConfig,
                 description="DHP-Softmax: output layer with a learned Hebbian plastic part "
                 "(Thangarasa et al. 2020); combine with consolidation, e.g. dhp+ewc")
def dhp(hp: DHPConfig) -> Recipe:
    """The DHP-Softmax recipe: the output layer only, no loss term (Thangarasa et al. 2020)."""
    return Recipe(name="dhp", layer=dhp_layer_factory(hp), layer_name="dhp")
