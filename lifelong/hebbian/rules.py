"""Hebbian learning rules as pure, batched functions of tensors.

Every function returns new tensors and leaves its arguments unchanged; the stateful wrappers in
:mod:`lifelong.hebbian.models` keep the state in buffers (``state_dict``). Shapes: ``x`` is a
batch of inputs ``[B, D]``; weights of a layer are ``[out, D]``; prototypes/nodes ``[K, D]``.

Equations (``METHODS.md``, "Hebbian learning"):

* plain Hebb (Hebb 1949): ``dw_ij = lr * y_i * x_j`` summed over the batch (:func:`hebb`);
* the pattern average ``w = (1/p) sum_k x^k x^k^T`` of ±1 patterns, an auto-associative memory
  (Hopfield 1982) that completes a corrupted pattern by ``x <- sign(w x)`` (:func:`pattern_average`,
  :func:`recall`);
* Oja's rule (Oja 1982): ``dw = lr * y (x - y w)``, ``y = w^T x`` (:func:`oja`), which converges to
  the unit-norm first principal component of zero-mean ``x``;
* competitive (winner-take-all) learning: only the nearest prototype moves,
  ``dw_win = lr (x - w_win)`` (:func:`competitive`);
* neural gas (Martinetz & Schulten 1991): every node moves by
  ``eps * exp(-k_i / lam) * (x - w_i)``, ``k_i`` its distance rank (:func:`neural_gas`), with
  ``eps`` and ``lam`` annealed exponentially (:func:`anneal`);
* competitive Hebbian learning of a topology (Martinetz 1993): connect the winner and the second
  winner (age 0), age the winner's other edges, delete edges older than a maximum age
  (:func:`competitive_hebbian`).

Batches. The online rules move the weights after every sample; here a batch of ``B`` samples is
one step (one distance matrix, no loop over samples). For the prototype rules a node moves by
``lr * sum_b h_bk (x_b - w_k) / max(1, sum_b h_bk)``, ``h_bk`` the sample's weight for the node
(1 for the winner of competitive learning, ``exp(-rank / lam)`` for neural gas): with ``B = 1``
this is exactly the online rule; a node that many samples pull is moved ``lr`` of the way to
their weighted mean (never past it, so a large batch cannot overshoot), and a node pulled with a
total weight below 1 moves as the online rule moves it. Edge ages grow by the number of the
batch's samples that a node wins before the batch's new edges are set to age 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "NO_EDGE", "anneal", "competitive", "competitive_hebbian", "hebb", "masked", "move",
    "neural_gas", "neural_gas_weights", "oja", "pattern_average", "recall", "squared_distances",
    "winners",
]

NO_EDGE = math.inf  # age of a missing edge in the dense [K, K] age matrix


def hebb(w: Tensor, x: Tensor, y: Tensor, lr: float) -> Tensor:
    """Plain Hebb, ``dw_ij = lr * sum_b y_bi x_bj`` (Hebb 1949; METHODS.md).

    Args:
        w: Weights ``[out, D]``.
        x: Presynaptic activity ``[B, D]``.
        y: Postsynaptic activity ``[B, out]``.
        lr: Learning rate ``eta``.
    """
    return w + lr * (y.transpose(0, 1) @ x)


def pattern_average(patterns: Tensor, zero_diagonal: bool = True) -> Tensor:
    """``w_ij = (1/p) sum_k x_i^k x_j^k``: the pattern average of ``p`` patterns ``[p, N]``
    (METHODS.md; Hopfield 1982). The diagonal (self-connections) is zeroed by default, which
    removes the constant ``x_i x_i = 1`` term that only biases ±1 units toward staying put."""
    if patterns.dim() != 2:
        raise ValueError(f"patterns must be [p, N], got shape {tuple(patterns.shape)}")
    w = patterns.transpose(0, 1) @ patterns / patterns.shape[0]
    if zero_diagonal:
        w = w - torch.diag_embed(torch.diagonal(w))
    return w


def recall(w: Tensor, x: Tensor, steps: int = 10) -> Tensor:
    """Completes ±1 patterns ``x`` ``[B, N]`` with the memory ``w`` by synchronous updates
    ``x <- sign(w x)`` until nothing changes or ``steps`` are done (a unit with zero input keeps
    its state)."""
    for _ in range(steps):
        h = x @ w.transpose(0, 1)
        new = torch.where(h == 0, x, torch.sign(h))
        if torch.equal(new, x):
            break
        x = new
    return x


def oja(w: Tensor, x: Tensor, lr: float) -> Tensor:
    """Oja's rule averaged over the batch: ``w + lr * mean_b y_b (x_b - y_b w)``, ``y = x w``
    (Oja 1982, Eq. 5). ``w`` is ``[D]`` (one output unit)."""
    y = x @ w
    return w + lr * ((y @ x) - (y * y).sum() * w) / x.shape[0]


def squared_distances(x: Tensor, w: Tensor) -> Tensor:
    """``||x_b - w_k||^2`` for every sample and node, ``[B, K]``: one matrix product
    (``|x|^2 - 2 x w^T + |w|^2``), clamped at 0 against rounding."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * (x @ w.transpose(0, 1)) + (w * w).sum(1)
    return d.clamp_min_(0.0)


def masked(d: Tensor, labels: Tensor | None, node_labels: Tensor | None,
            active: Tensor | None) -> Tensor:
    """``d`` with +inf where node ``k`` may not serve sample ``b`` (another label; inactive)."""
    if labels is not None:
        if node_labels is None:
            raise ValueError("labels were given without node_labels: pass both (labelled "
                             "prototypes) or neither")
        d = d.masked_fill(labels[:, None] != node_labels[None, :], math.inf)
    if active is not None:
        d = d.masked_fill(~active[None, :], math.inf)
    return d


def winners(x: Tensor, w: Tensor, labels: Tensor | None = None, node_labels: Tensor | None = None,
            active: Tensor | None = None, k: int = 1) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest allowed nodes of each sample: ``(distances [B, k], indices [B, k])``.

    With ``labels`` (``[B]``) and ``node_labels`` (``[K]``) a sample only sees nodes of its own
    label; ``active`` (``[K]`` bool) hides unused nodes. A sample without an allowed node gets
    distance +inf.
    """
    d = masked(squared_distances(x, w), labels, node_labels, active)
    return torch.topk(d, k, dim=1, largest=False)


def move(w: Tensor, x: Tensor, h: Tensor, lr: float) -> Tensor:
    """``w_k + lr * sum_b h_bk (x_b - w_k) / max(1, sum_b h_bk)`` (module docstring)."""
    mass = h.sum(0)
    pull = h.transpose(0, 1) @ x - mass[:, None] * w
    return w + (lr / mass.clamp_min(1.0))[:, None] * pull


def competitive(w: Tensor, x: Tensor, lr: float, labels: Tensor | None = None,
                node_labels: Tensor | None = None, active: Tensor | None = None) -> Tensor:
    """Competitive (winner-take-all) learning: only each sample's nearest node moves,
    ``dw_win = lr (x - w_win)`` (METHODS.md). With ``labels``/``node_labels`` the winner is the
    nearest node of the sample's own label (labelled prototypes, i.e. learning vector
    quantisation without the push term); with one node per label and ``lr = 1/n`` for the
    ``n``-th sample a node wins it computes that label's mean exactly.

    Args:
        w: Prototypes ``[K, D]``.
        x: Samples ``[B, D]``.
        lr: Learning rate.
        labels: Optional sample labels ``[B]``.
        node_labels: Labels of the nodes ``[K]`` (with ``labels``).
        active: Optional ``[K]`` bool mask of the nodes in use.
    """
    dist, idx = winners(x, w, labels, node_labels, active)
    h = torch.zeros(x.shape[0], w.shape[0], dtype=x.dtype, device=x.device)
    # a sample without an allowed node (dist +inf) moves nothing
    h.scatter_(1, idx, torch.isfinite(dist).to(x.dtype))
    return move(w, x, h, lr)


def neural_gas_weights(d: Tensor, lam: float) -> Tensor:
    """``h_bk = exp(-k_bk / lam)``, ``k_bk`` the rank of node ``k`` among sample ``b``'s
    distances ``d`` ``[B, K]`` (0 for the nearest); 0 where ``d`` is +inf. One ``argsort`` of the
    batch's distance matrix, the weights written to the ranks' positions by ``scatter``."""
    order = torch.argsort(d, dim=1)
    ranks = torch.arange(d.shape[1], dtype=d.dtype, device=d.device)
    h = torch.empty_like(d).scatter_(1, order, torch.exp(-ranks / lam).expand_as(d).contiguous())
    return h.masked_fill_(torch.isinf(d), 0.0)


def neural_gas(w: Tensor, x: Tensor, eps: float, lam: float, labels: Tensor | None = None,
               node_labels: Tensor | None = None, active: Tensor | None = None) -> Tensor:
    """One neural-gas step: ``dw_i = eps * exp(-k_i / lam) * (x - w_i)`` (Martinetz & Schulten
    1991; batched as in the module docstring). With ``labels``/``node_labels`` each sample ranks
    only the nodes of its own label (one gas per class, all classes in one matrix).

    Args:
        w: Nodes ``[K, D]``.
        x: Samples ``[B, D]``.
        eps: Step size ``eps(t)``.
        lam: Neighbourhood range ``lambda(t)`` (> 0).
        labels: Optional sample labels ``[B]``.
        node_labels: Labels of the nodes ``[K]``.
        active: Optional ``[K]`` bool mask of the nodes in use.
    """
    if lam <= 0:
        raise ValueError(f"neural gas needs lambda > 0, got {lam}")
    d = masked(squared_distances(x, w), labels, node_labels, active)
    return move(w, x, neural_gas_weights(d, lam), eps)


def competitive_hebbian(age: Tensor, first: Tensor, second: Tensor, max_age: float) -> Tensor:
    """Competitive Hebbian learning of the topology (Martinetz 1993) for one batch.

    For each sample: its nearest node (winner, ``first``) and second nearest (``second``) are
    connected with age 0; the winner's other edges age by one; edges older than ``max_age`` are
    deleted. Batched: every edge ages by the number of the batch's samples that either end wins,
    then the batch's winner/second-winner edges are set to age 0, then old edges are removed.

    Args:
        age: Edge ages ``[K, K]``, symmetric, +inf where there is no edge (and on the diagonal).
        first: Each sample's winner ``[B]`` (see :func:`winners` with ``k=2``).
        second: Each sample's second winner ``[B]``.
        max_age: Edges with an age above this are deleted.

    Returns:
        The new age matrix (+inf: no edge).
    """
    wins = torch.bincount(first, minlength=age.shape[0]).to(age.dtype)
    age = age + wins[:, None] + wins[None, :]  # inf stays inf: only existing edges age
    age[first, second] = 0.0
    age[second, first] = 0.0
    return age.masked_fill_(age > max_age, NO_EDGE)


def anneal(start: float, end: float, frac: float) -> float:
    """``start * (end / start) ** frac`` for ``frac`` in [0, 1] (Martinetz & Schulten 1991:
    exponential annealing of eps, lambda and the maximum edge age)."""
    frac = min(max(frac, 0.0), 1.0)
    return start * (end / start) ** frac
