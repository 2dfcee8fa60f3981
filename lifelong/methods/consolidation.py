"""Synaptic consolidation recipes: EWC, online EWC, SI, MAS and MAS-local.

Each is one :class:`~lifelong.terms.penalty.QuadraticPenalty` term with its own importance
estimator (DESIGN.md, principle 3): no output layer, no data regime, no freezing rule, so each
composes with any other recipe (``dhp+ewc``, ``ewc+si`` ...). The defaults are tuned for the
protocol that ``lifelong run -b split-mnist -m <method>`` runs (the DHP SplitMNIST protocol:
multi-head MLP 784-256-256, plain SGD lr 0.01, batch 64, 10 epochs per task, raw pixels). The
right strength differs by orders of magnitude between protocols;
``configs/<protocol>/<method>.toml`` holds the reference value for each (e.g. EWC
``lam = 1e7`` on the three-scenarios SplitMNIST protocol of van de Ven & Tolias 2019).

Strength conventions (see :mod:`lifelong.terms.penalty`): EWC and online EWC add
``(lam / 2) sum F (theta - theta*)^2`` (the paper's and van de Ven & Tolias' lambda); SI adds
``c sum Omega (theta - theta*)^2``; MAS and MAS-local add ``lam sum Omega (theta - theta*)^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifelong.methods.base import Recipe
from lifelong.methods.registry import register_method
from lifelong.terms.penalty import EWC, MAS, SI, MASLocal, OnlineEWC


@dataclass
class EWCConfig:
    """EWC hyperparameters (``ewc.*``; Kirkpatrick et al. 2017).

    Attributes:
        lam: lambda of ``(lam / 2) sum_t F_t (theta - theta*_t)^2``. Default 100: the DHP
            SplitMNIST protocol with the ``true`` Fisher (98.06 % task-IL, mean of 3 seeds, vs
            94.10 fine-tune; 1e4 diverges with SGD lr 0.01). The three-scenarios protocol uses
            1e7 with the ``predicted`` Fisher, as van de Ven & Tolias
            (``configs/split-mnist-three-scenarios/ewc.toml``).
        variant: Fisher variant: ``true`` (expectation over classes under the model; default),
            ``sample``, ``empirical``, ``predicted`` (argmax label, as van de Ven & Tolias 2019)
            or ``batched`` (comparison only, not a Fisher).
        fisher_samples: Training samples of the task the Fisher is estimated on (``None``: all).
        fisher_batch: Samples per ``vmap`` chunk (memory ``~ fisher_batch x classes x params``).
        penalize_plastic: Also regularise parameters declared plastic by their layers.
    """

    lam: float = 100.0
    variant: str = "true"
    fisher_samples: int | None = None
    fisher_batch: int = 512
    penalize_plastic: bool = False


@register_method("ewc", hparams=EWCConfig,
                 description="elastic weight consolidation, one Fisher penalty per past task "
                 "(Kirkpatrick et al. 2017)")
def ewc(hp: EWCConfig) -> Recipe:
    return Recipe(name="ewc", terms=[EWC(
        hp.lam, variant=hp.variant, samples=hp.fisher_samples, batch_size=hp.fisher_batch,
        penalize_plastic=hp.penalize_plastic)])


@dataclass
class OnlineEWCConfig:
    """Online EWC hyperparameters (``online-ewc.*``; Schwarz et al. 2018).

    Attributes:
        lam: lambda of ``(lam / 2) sum F~ (theta - theta*)^2``. Default 300: the DHP SplitMNIST
            protocol (98.08 %, mean of 3 seeds; 100 gives 97.38).
        gamma: Decay of the running Fisher ``F~ <- gamma F~ + F_new`` (1: no forgetting of old
            importance, as van de Ven & Tolias 2019 use).
        variant: Fisher variant (see :class:`EWCConfig`).
        fisher_samples: Training samples the Fisher is estimated on (``None``: all).
        fisher_batch: Samples per ``vmap`` chunk.
        penalize_plastic: Also regularise parameters declared plastic by their layers.
    """

    lam: float = 300.0
    gamma: float = 1.0
    variant: str = "true"
    fisher_samples: int | None = None
    fisher_batch: int = 512
    penalize_plastic: bool = False


@register_method("online-ewc", hparams=OnlineEWCConfig,
                 description="online EWC: one gamma-decayed running Fisher, latest anchor "
                 "(Schwarz et al. 2018)")
def online_ewc(hp: OnlineEWCConfig) -> Recipe:
    return Recipe(name="online-ewc", terms=[OnlineEWC(
        hp.lam, gamma=hp.gamma, variant=hp.variant, samples=hp.fisher_samples,
        batch_size=hp.fisher_batch, penalize_plastic=hp.penalize_plastic)])


@dataclass
class SIConfig:
    """Synaptic intelligence hyperparameters (``si.*``; Zenke et al. 2017).

    Attributes:
        c: Strength of ``c sum Omega (theta - theta*)^2``. Default 100: the DHP SplitMNIST
            protocol (98.17 %, mean of 3 seeds; 10 gives 96.4 on seed 0). SI's importance grows
            with the learning rate, so the right ``c`` falls with it (at lr 0.1, ``c >= 30``
            diverges).
        xi: Damping of ``Omega += omega / (Delta^2 + xi)`` (Eq. 5).
        penalize_plastic: Also regularise parameters declared plastic by their layers.
    """

    c: float = 100.0
    xi: float = 0.1
    penalize_plastic: bool = False


@register_method("si", hparams=SIConfig,
                 description="synaptic intelligence: path-integral importance (Zenke et al. 2017)")
def si(hp: SIConfig) -> Recipe:
    return Recipe(name="si", terms=[SI(hp.c, xi=hp.xi, penalize_plastic=hp.penalize_plastic)])


@dataclass
class MASConfig:
    """MAS hyperparameters (``mas.*``; Aljundi et al. 2018).

    Attributes:
        lam: Strength of ``lam sum Omega (theta - theta*)^2``. Default 0.5: the DHP SplitMNIST
            protocol (98.16 %, mean of 3 seeds; 10 diverges with SGD lr 0.01).
        samples: Training samples (labels unused) the importance is estimated on (``None``: all).
        batch: Samples per chunk.
        penalize_plastic: Also regularise parameters declared plastic by their layers.
    """

    lam: float = 0.5
    samples: int | None = None
    batch: int = 512
    penalize_plastic: bool = False


@register_method("mas", hparams=MASConfig,
                 description="memory aware synapses: importance = |d||F(x)||^2/dtheta| "
                 "(Aljundi et al. 2018)")
def mas(hp: MASConfig) -> Recipe:
    return Recipe(name="mas", terms=[MAS(
        hp.lam, samples=hp.samples, batch_size=hp.batch, penalize_plastic=hp.penalize_plastic)])


@dataclass
class MASLocalConfig:
    """Local (Hebbian) MAS hyperparameters (``mas-local.*``; Aljundi et al. 2018, Sec. 4.2).

    Attributes:
        lam: Strength of ``lam sum Omega (theta - theta*)^2``. Default 1: the DHP SplitMNIST
            protocol (98.04 %, mean of 3 seeds; 10 diverges with SGD lr 0.01).
        samples: Training samples (labels unused) the importance is estimated on (``None``: all).
        batch: Samples per forward chunk.
        penalize_plastic: Also regularise parameters declared plastic by their layers.
    """

    lam: float = 1.0
    samples: int | None = None
    batch: int = 1024
    penalize_plastic: bool = False


@register_method("mas-local", hparams=MASLocalConfig,
                 description="local MAS: Hebbian importance |2 y_i y_j| from forward activations "
                 "(Aljundi et al. 2018)")
def mas_local(hp: MASLocalConfig) -> Recipe:
    return Recipe(name="mas-local", terms=[MASLocal(
        hp.lam, samples=hp.samples, batch_size=hp.batch, penalize_plastic=hp.penalize_plastic)])
