"""A prototype output layer: labelled nodes in feature space, prediction by the nearest node.

Used by ``hebbian-prototypes``, ``ncm`` and ``topic`` (:mod:`lifelong.methods.hebbian`). The
layer holds two things:

* ``linear`` -- an ``nn.Linear`` classifier. The training loop's cross-entropy trains it (and the
  backbone through it): Tao et al. (2020, Sec. 4) train the base network with cross-entropy on a
  classifier and fine-tune later sessions with cross-entropy plus their losses.
* labelled nodes -- up to ``nodes_per_class`` nodes per output unit (class), each with a
  centroid, a diagonal variance and the label of its unit, plus a dense ``[K, K]`` edge-age matrix
  (+inf: no edge) of the competitive Hebbian topology over all ``K = units x nodes_per_class``
  node slots. A term fits them (:class:`lifelong.terms.hebbian.NeuralGasFit`); the layer only
  stores them.

``forward`` returns the linear logits in training mode (and before any node is fitted); in
evaluation mode it returns ``-min_i ||e(h) - m_i||^2`` over the nodes ``i`` of each unit,
``e`` the embedding (L2 normalisation by default, as TOPIC's 64-d normalised features). The
loop's ``argmax`` over these logits is the label of the nearest node, so the class-incremental
evaluation needs no change; a unit without nodes gets ``-inf``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.hebbian import rules

__all__ = ["PrototypeLayer"]


class PrototypeLayer(nn.Module):
    """Linear classifier for training, labelled prototype nodes for prediction.

    Args:
        in_features: Feature size ``D``.
        out_features: Number of output units (classes) ``U``.
        nodes_per_class: Node slots per unit ``M`` (a unit may use fewer).
        normalize: Compare L2-normalised features (default) instead of raw ones.

    Attributes:
        nodes: Centroids ``[U, M, D]`` (in the embedding space).
        variance: Diagonal variances ``[U, M, D]`` of the samples each node represents.
        active: ``[U, M]`` which slots hold a node.
        age: Edge ages ``[U M, U M]`` between node slots (+inf: no edge), slot ``u M + i``.
    """

    nodes: Tensor
    variance: Tensor
    active: Tensor
    age: Tensor

    def __init__(self, in_features: int, out_features: int, nodes_per_class: int = 8,
                 normalize: bool = True):
        super().__init__()
        if nodes_per_class < 1:
            raise ValueError(f"nodes_per_class must be >= 1, got {nodes_per_class}")
        self.linear = nn.Linear(in_features, out_features)
        self.in_features, self.out_features = in_features, out_features
        self.nodes_per_class, self.normalize = nodes_per_class, normalize
        k = out_features * nodes_per_class
        self.register_buffer("nodes", torch.zeros(out_features, nodes_per_class, in_features))
        self.register_buffer("variance", torch.zeros(out_features, nodes_per_class, in_features))
        self.register_buffer("active", torch.zeros(out_features, nodes_per_class,
                                                   dtype=torch.bool))
        self.register_buffer("age", torch.full((k, k), rules.NO_EDGE))

    @property
    def fitted(self) -> bool:
        """Whether any node exists (evaluation then uses the nodes)."""
        return bool(self.active.any())

    def node_labels(self) -> Tensor:
        """Unit (class) of every node slot, ``[U M]``."""
        return torch.arange(self.out_features, device=self.nodes.device).repeat_interleave(
            self.nodes_per_class)

    def flat_nodes(self) -> Tensor:
        """Centroids of all slots, ``[U M, D]`` (a view)."""
        return self.nodes.view(-1, self.in_features)

    def embed(self, h: Tensor) -> Tensor:
        """The space the nodes live in: ``h / ||h||`` (or ``h`` with ``normalize=False``)."""
        return F.normalize(h, dim=1) if self.normalize else h

    def node_logits(self, h: Tensor) -> Tensor:
        """``-min ||e(h) - m||^2`` over each unit's active nodes, ``[B, U]`` (-inf: no node)."""
        d = rules.squared_distances(self.embed(h), self.flat_nodes())
        d = d.masked_fill(~self.active.view(1, -1), math.inf)
        return -d.view(h.shape[0], self.out_features, self.nodes_per_class).amin(2)

    def forward(self, h: Tensor) -> Tensor:
        if self.training or not self.fitted:
            return self.linear(h)
        return self.node_logits(h)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nodes_per_class={self.nodes_per_class}, normalize={self.normalize}")
