"""Stateful Hebbian learners: the rules of :mod:`lifelong.hebbian.rules` with their state in
buffers, so ``state_dict()`` / ``load_state_dict()`` and ``.to(device)`` work as for any module.

* :class:`AssociativeMemory` -- the pattern-averaged Hebbian memory ``w = (1/p) sum x x^T``;
* :class:`Oja` -- one linear unit trained by Oja's rule (first principal component);
* :class:`CompetitiveLayer` -- winner-take-all prototypes, optionally labelled (classification
  by the nearest prototype's label);
* :class:`NeuralGas` -- Martinetz & Schulten's neural gas with competitive Hebbian learning of
  the topology (one distance matrix per batch, no loop over points or nodes).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lifelong.hebbian import rules

__all__ = ["AssociativeMemory", "CompetitiveLayer", "NeuralGas", "Oja"]


def _check_2d(x: Tensor, dim: int, what: str) -> None:
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} expects inputs [B, {dim}], got shape {tuple(x.shape)}")


class AssociativeMemory(nn.Module):
    """Auto-associative memory of ±1 patterns by the pattern-averaged Hebb rule
    ``w = (1/p) sum_k x^k x^k^T`` (METHODS.md; Hopfield 1982). Patterns can be stored in batches
    (the running average is exact). Reliable recall needs ``p`` well below ``0.138 N``.

    Args:
        size: Pattern length ``N``.
    """

    weight: Tensor
    count: Tensor

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.register_buffer("weight", torch.zeros(size, size))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def store(self, patterns: Tensor) -> None:
        """Adds ±1 patterns ``[p, N]`` to the average."""
        _check_2d(patterns, self.size, "AssociativeMemory.store")
        p, n = patterns.shape[0], int(self.count)
        w = rules.pattern_average(patterns.to(self.weight.dtype))
        self.weight.mul_(n / (n + p)).add_(w, alpha=p / (n + p))
        self.count += p

    def recall(self, cues: Tensor, steps: int = 10) -> Tensor:
        """Completes corrupted ±1 patterns ``[B, N]`` (:func:`rules.recall`)."""
        _check_2d(cues, self.size, "AssociativeMemory.recall")
        return rules.recall(self.weight, cues.to(self.weight.dtype), steps)


class Oja(nn.Module):
    """One linear unit ``y = w^T x`` trained by Oja's rule (Oja 1982); ``w`` converges to the
    unit-norm first principal component of (zero-mean) inputs.

    Args:
        dim: Input size.
        lr: Learning rate.
        generator: Draws the initial ``w`` (a random unit vector).
    """

    weight: Tensor

    def __init__(self, dim: int, lr: float = 0.01, generator: torch.Generator | None = None):
        super().__init__()
        self.dim, self.lr = dim, lr
        w = torch.randn(dim, generator=generator)
        self.register_buffer("weight", w / w.norm())

    def step(self, x: Tensor) -> None:
        """One batched Oja update on ``x`` ``[B, D]``."""
        _check_2d(x, self.dim, "Oja.step")
        self.weight.copy_(rules.oja(self.weight, x, self.lr))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight


class CompetitiveLayer(nn.Module):
    """Winner-take-all prototypes ``[K, D]`` (METHODS.md, competitive learning).

    Unlabelled, it clusters (each prototype moves toward the samples it wins); with
    ``node_labels`` and labelled batches the winner is the nearest prototype of the sample's
    label, and :meth:`predict` returns the label of the nearest prototype.

    Args:
        prototypes: Initial prototypes ``[K, D]`` (e.g. randomly chosen samples).
        node_labels: Optional labels ``[K]``.
    """

    prototypes: Tensor
    node_labels: Tensor | None
    wins: Tensor

    def __init__(self, prototypes: Tensor, node_labels: Tensor | None = None):
        super().__init__()
        self.register_buffer("prototypes", prototypes.detach().clone().float())
        self.register_buffer("node_labels", None if node_labels is None
                             else node_labels.detach().clone().long())
        self.register_buffer("wins", torch.zeros(prototypes.shape[0], dtype=torch.long))

    @classmethod
    def from_samples(cls, x: Tensor, k: int, generator: torch.Generator | None = None
                     ) -> CompetitiveLayer:
        """``k`` unlabelled prototypes at samples of ``x`` chosen by farthest-point seeding (the
        first at random, each next the sample farthest from those chosen), which leaves no
        cluster of a well-separated mixture without a prototype (plain random seeding can put
        two in one cluster: a "dead unit" of winner-take-all learning)."""
        first = int(torch.randint(x.shape[0], (1,), generator=generator))
        chosen = [first]
        d = rules.squared_distances(x, x[first:first + 1])[:, 0]
        for _ in range(k - 1):
            nxt = int(torch.argmax(d))
            chosen.append(nxt)
            d = torch.minimum(d, rules.squared_distances(x, x[nxt:nxt + 1])[:, 0])
        return cls(x[chosen])

    def step(self, x: Tensor, lr: float | None = None, labels: Tensor | None = None) -> None:
        """One batched winner-take-all step. ``lr=None`` uses ``1 / (wins so far)`` per node: each
        prototype is then the exact running mean of the samples it has won (the fixed point of
        the rule; with one prototype per label, the class mean)."""
        _check_2d(x, self.prototypes.shape[1], "CompetitiveLayer.step")
        if labels is not None and self.node_labels is None:
            raise ValueError("labels given to an unlabelled CompetitiveLayer; build it with "
                             "node_labels=...")
        nl = self.node_labels if labels is not None else None
        if lr is not None:
            dist, idx = rules.winners(x, self.prototypes, labels, nl)
            self.wins += torch.bincount(idx[torch.isfinite(dist)], minlength=len(self.wins))
            self.prototypes.copy_(rules.competitive(self.prototypes, x, lr, labels, nl))
            return
        dist, idx = rules.winners(x, self.prototypes, labels, nl)
        ok = torch.isfinite(dist[:, 0])
        idx, xs = idx[ok, 0], x[ok]
        counts = torch.bincount(idx, minlength=len(self.wins))
        self.wins += counts
        # new mean = old + (sum of new samples - count * old) / (all wins so far)
        sums = torch.zeros_like(self.prototypes).index_add_(0, idx, xs.to(self.prototypes.dtype))
        pull = sums - counts.to(sums.dtype)[:, None] * self.prototypes
        self.prototypes.add_(pull / self.wins.clamp_min(1).to(sums.dtype)[:, None])

    def predict(self, x: Tensor) -> Tensor:
        """Label of the nearest prototype (index of the prototype if unlabelled)."""
        _, idx = rules.winners(x, self.prototypes)
        idx = idx[:, 0]
        return idx if self.node_labels is None else self.node_labels[idx]


class NeuralGas(nn.Module):
    """Neural gas with competitive Hebbian learning of the topology (Martinetz & Schulten 1991;
    Martinetz 1993; METHODS.md, "Neural gas").

    Every node moves by ``eps(t) exp(-k_i / lam(t)) (x - w_i)``; the winner and the second winner
    are connected (age 0), the winner's other edges age, edges older than ``T(t)`` are deleted;
    ``eps``, ``lam`` and ``T`` are annealed exponentially from their first to their second value
    over the samples of a :meth:`fit` (``t / t_max``). Edges are a dense ``[K, K]`` age matrix
    (+inf: no edge).

    Args:
        num_nodes: ``K``.
        dim: Input size ``D``.
        eps: ``(eps_i, eps_f)``; default ``(0.5, 0.005)``.
        lam: ``(lambda_i, lambda_f)``; default ``(10, 0.01)``.
        max_age: ``(T_i, T_f)``; default ``(20, 200)``.
    """

    nodes: Tensor
    age: Tensor

    def __init__(self, num_nodes: int, dim: int, eps: tuple[float, float] = (0.5, 0.005),
                 lam: tuple[float, float] = (10.0, 0.01),
                 max_age: tuple[float, float] = (20.0, 200.0)):
        super().__init__()
        if num_nodes < 2:
            raise ValueError(f"a neural gas needs at least 2 nodes, got {num_nodes}")
        if min(*eps, *lam, *max_age) <= 0:
            raise ValueError(f"eps, lam and max_age must be positive, got {eps}, {lam}, {max_age}")
        self.eps, self.lam, self.max_age = eps, lam, max_age
        self.register_buffer("nodes", torch.zeros(num_nodes, dim))
        self.register_buffer("age", torch.full((num_nodes, num_nodes), rules.NO_EDGE))

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.shape[0])

    def init_from(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """Nodes at ``K`` distinct randomly chosen samples of ``x`` (edges cleared)."""
        _check_2d(x, self.nodes.shape[1], "NeuralGas.init_from")
        if x.shape[0] < self.num_nodes:
            raise ValueError(f"need at least {self.num_nodes} samples to place the nodes, got "
                             f"{x.shape[0]}")
        idx = torch.randperm(x.shape[0], generator=generator)[:self.num_nodes].to(x.device)
        self.nodes.copy_(x[idx])
        self.age.fill_(rules.NO_EDGE)

    def step(self, x: Tensor, frac: float) -> None:
        """One batch at schedule position ``frac = t / t_max``: one distance matrix gives the
        ranks (node update) and the two winners (edges), both from the nodes before the move."""
        d = rules.squared_distances(x, self.nodes)
        h = rules.neural_gas_weights(d, rules.anneal(*self.lam, frac))
        second = torch.topk(d, 2, dim=1, largest=False).indices
        self.nodes.copy_(rules.move(self.nodes, x, h, rules.anneal(*self.eps, frac)))
        self.age.copy_(rules.competitive_hebbian(self.age, second[:, 0], second[:, 1],
                                                 rules.anneal(*self.max_age, frac)))

    def fit(self, x: Tensor, epochs: int = 1, batch_size: int = 100,
            generator: torch.Generator | None = None) -> list[float]:
        """Trains on ``x`` ``[N, D]`` for ``epochs`` passes in random order (the schedule runs over
        all of them) and returns the quantisation error after each pass."""
        _check_2d(x, self.nodes.shape[1], "NeuralGas.fit")
        n = x.shape[0]
        total = max(epochs * n, 1)
        seen, errors = 0, []
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(x.device)
            for i in range(0, n, batch_size):
                self.step(x[order[i:i + batch_size]], seen / total)
                seen += min(batch_size, n - i)
            errors.append(self.quantisation_error(x))
        return errors

    def quantisation_error(self, x: Tensor) -> float:
        """Mean squared distance of the samples to their nearest node."""
        d, _ = rules.winners(x, self.nodes)
        return float(d.mean())

    def edges(self) -> Tensor:
        """The edges as index pairs ``[E, 2]`` with ``i < j``."""
        i, j = torch.nonzero(torch.triu(torch.isfinite(self.age), diagonal=1), as_tuple=True)
        return torch.stack([i, j], 1)

    def extra_repr(self) -> str:
        return (f"num_nodes={self.num_nodes}, dim={self.nodes.shape[1]}, eps={self.eps}, "
                f"lam={self.lam}, max_age={self.max_age}")
