"""Terms of the Hebbian prototype methods and of TOPIC (Tao et al., "Few-Shot Class-Incremental
Learning", CVPR 2020).

* :class:`NeuralGasFit` (no loss) -- at the end of every task, fits the nodes of the task's
  classes in the :class:`~lifelong.nn.prototypes.PrototypeLayer` to the network's features by a
  neural gas per class and learns the edges by competitive Hebbian learning
  (:mod:`lifelong.hebbian.rules`). Old classes' nodes are never moved: new classes add nodes.
* :class:`AnchorLoss` -- TOPIC's anchor loss (Sec. 4.2): every node keeps one stored training
  sample ``z_j``; in later sessions ``sum_j (f(z_j) - m_j)^T Lambda_j^-1 (f(z_j) - m_j)`` holds
  their features at the node centroids ``m_j``, weighted by the inverse variances.
* :class:`MinMaxLoss` -- TOPIC's min-max loss (Sec. 4.3): the new samples are pulled to their
  class's node, the new nodes pushed from nearby nodes of other classes.

The authors released no neural-gas code; every choice below that the paper leaves open is ours
and is listed in ``docs/topic.md`` (and in each class's docstring).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lifelong.hebbian import rules
from lifelong.nn.prototypes import PrototypeLayer
from lifelong.terms.base import Batch, Term

if TYPE_CHECKING:
    from lifelong.train.loop import TrainContext

__all__ = ["AnchorLoss", "MinMaxLoss", "NeuralGasFit", "prototype_layer", "task_features"]


def prototype_layer(model: nn.Module) -> PrototypeLayer:
    """The model's :class:`PrototypeLayer`, or an error saying how to get one."""
    for m in model.modules():
        if isinstance(m, PrototypeLayer):
            return m
    raise ValueError("this term needs a PrototypeLayer output layer (the hebbian-prototypes, ncm "
                     "and topic recipes set one); the model has none")


def _features(model: nn.Module, x: Tensor) -> Tensor:
    features = getattr(model, "features", None)
    if not callable(features):
        raise ValueError(f"this term needs model.features(x) (a ContinualModel), got "
                         f"{type(model).__name__}")
    out: Tensor = features(x)
    return out


@torch.no_grad()
def task_features(ctx: TrainContext, layer: PrototypeLayer, batch_size: int = 1024
                  ) -> tuple[Tensor, Tensor]:
    """Embedded features (eval mode, no gradient) and unit targets of the current task's
    training data, in ``ctx.train_x`` order."""
    model = ctx.model
    was_training = model.training
    model.eval()
    try:
        feats, targets = [], []
        for x, t in ctx.task_batches(batch_size):
            feats.append(layer.embed(_features(model, x)))
            targets.append(t)
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(targets)


class NeuralGasFit(Term):
    """Fits the current task's class nodes at task end (no loss).

    For every class ``c`` of the task: ``k_c = clamp(n_c // samples_per_node, 1, M)`` nodes
    (``M`` the layer's ``nodes_per_class``), placed at randomly chosen samples of the class (Tao
    et al.: nodes initialised from randomly chosen features), then ``epochs`` passes of neural gas
    in which a sample ranks only its own class's nodes (one gas per class, all classes in one
    distance matrix), ``eps`` and ``lambda`` annealed exponentially. Edges: competitive Hebbian
    learning over *all* nodes (old classes' too) on the same passes, maximum age annealed. Last,
    each node becomes the mean of the samples of its class nearest to it (one winner-take-all
    step with rate ``1/n``, the fixed point of competitive learning) and its variance their
    diagonal variance; a node that no sample is nearest to is dropped. With ``M = 1`` the node is
    the class mean: nearest-class-mean classification.

    Args:
        samples_per_node: A class gets one node per this many training samples (at least one).
        epochs: Neural-gas passes over the task's features.
        batch_size: Samples per neural-gas step.
        eps: ``(eps_i, eps_f)``.
        lam: ``(lambda_i, lambda_f)``; Tao et al. use a rank decay ``exp(-i/10)``, i.e. lambda 10.
        max_age: ``(T_i, T_f)``; Tao et al. remove edges above age 200.
    """

    name = "neural-gas"

    def __init__(self, samples_per_node: int = 1, epochs: int = 3, batch_size: int = 256,
                 eps: tuple[float, float] = (0.5, 0.005), lam: tuple[float, float] = (10.0, 0.01),
                 max_age: tuple[float, float] = (20.0, 200.0)):
        if samples_per_node < 1 or epochs < 0 or batch_size < 1:
            raise ValueError(f"NeuralGasFit needs samples_per_node >= 1, epochs >= 0 and "
                             f"batch_size >= 1, got {samples_per_node}, {epochs}, {batch_size}")
        self.samples_per_node, self.epochs, self.batch_size = samples_per_node, epochs, batch_size
        self.eps, self.lam, self.max_age = eps, lam, max_age

    def on_task_end(self, ctx: TrainContext) -> None:
        layer = prototype_layer(ctx.model)
        feats, targets = task_features(ctx, layer)
        gen = torch.Generator().manual_seed(ctx.generator.initial_seed() * 1009 + ctx.task_id)
        fit_nodes(layer, feats, targets, self, gen)


@torch.no_grad()
def fit_nodes(layer: PrototypeLayer, feats: Tensor, targets: Tensor, fit: NeuralGasFit,
              gen: torch.Generator) -> None:
    """Places, trains and finalises the nodes of the units in ``targets`` (see
    :class:`NeuralGasFit`); other units' nodes are left as they are."""
    m, dev = layer.nodes_per_class, feats.device
    units = torch.unique(targets)
    counts = torch.bincount(targets, minlength=layer.out_features)
    k = (counts // fit.samples_per_node).clamp(1, m)
    # initial nodes: the first k_c samples of class c in a random order, slot = rank
    order = torch.randperm(feats.shape[0], generator=gen).to(dev)
    ys = targets[order]
    sort_idx = torch.sort(ys, stable=True).indices
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(sort_idx)
    rank[sort_idx] = torch.arange(ys.shape[0], device=dev) - starts[ys[sort_idx]]
    pick = rank < k[ys]
    layer.active[units] = False
    layer.nodes[units] = 0.0
    layer.nodes[ys[pick], rank[pick]] = feats[order[pick]]
    layer.active[ys[pick], rank[pick]] = True
    slots = (units[:, None] * m + torch.arange(m, device=dev)).flatten()
    layer.age[slots] = rules.NO_EDGE
    layer.age[:, slots] = rules.NO_EDGE

    w, active, labels = layer.flat_nodes().clone(), layer.active.flatten(), layer.node_labels()
    age = layer.age.clone()
    n, total = feats.shape[0], max(fit.epochs * feats.shape[0], 1)
    seen = 0
    for _ in range(fit.epochs):
        perm = torch.randperm(n, generator=gen).to(dev)
        for i in range(0, n, fit.batch_size):
            idx = perm[i:i + fit.batch_size]
            x, y = feats[idx], targets[idx]
            frac = seen / total
            d = rules.masked(rules.squared_distances(x, w), None, None, active)
            h = rules.neural_gas_weights(d.masked_fill(y[:, None] != labels[None, :], torch.inf),
                                         rules.anneal(*fit.lam, frac))
            if int(active.sum()) >= 2:
                top2 = torch.topk(d, 2, dim=1, largest=False).indices
                age = rules.competitive_hebbian(age, top2[:, 0], top2[:, 1],
                                                rules.anneal(*fit.max_age, frac))
            w = rules.move(w, x, h, rules.anneal(*fit.eps, frac))
            seen += idx.shape[0]
    # final winner-take-all step with rate 1/n: centroid and variance of each node's samples
    _, win = rules.winners(feats, w, targets, labels, active)
    win = win[:, 0]
    cnt = torch.bincount(win, minlength=w.shape[0]).to(feats.dtype)
    mean = torch.zeros_like(w).index_add_(0, win, feats) / cnt.clamp_min(1)[:, None]
    sq = torch.zeros_like(w).index_add_(0, win, (feats - mean[win]) ** 2)
    var = sq / cnt.clamp_min(1)[:, None]
    in_task = torch.isin(labels, units)
    keep = active & ~(in_task & (cnt == 0))
    layer.nodes.view(-1, layer.in_features)[in_task] = mean[in_task]
    layer.variance.view(-1, layer.in_features)[in_task] = var[in_task]
    layer.active.copy_(keep.view_as(layer.active))
    dropped = ~keep
    age[dropped] = rules.NO_EDGE
    age[:, dropped] = rules.NO_EDGE
    layer.age.copy_(age)


class AnchorLoss(Term):
    """TOPIC's anchor loss (Tao et al. 2020, Sec. 4.2, Eq. 6):
    ``AL = weight * mean_j mean_d (f(z_j) - m_j)_d^2 / Lambda_jd``.

    At the end of every task, for each node of the task's classes it stores the node's nearest
    training sample ``z_j`` (the paper's node keeps "the training sample nearest to it"), its
    centroid ``m_j`` and its diagonal variance; from the next task on, the loss is computed on the
    stored samples' embedded features. Our choices: the mean over nodes and dimensions instead of
    the sum (so the weight does not scale with the number of nodes or the feature size), and
    ``Lambda_j = var_j + floor * mean(var)`` (the mean over every stored node's variance), since
    a node fitted to one sample has zero variance (:meth:`inverse_scale`; when every node has
    zero variance, the centroids' spread replaces ``mean(var)``).

    Args:
        weight: ``lambda_1``.
        variance_floor: ``floor`` above.
    """

    name = "anchor"

    def __init__(self, weight: float = 1.0, variance_floor: float = 0.1):
        if weight < 0 or variance_floor <= 0:
            raise ValueError(f"AnchorLoss needs weight >= 0 and variance_floor > 0, got "
                             f"{weight}, {variance_floor}")
        self.weight, self.variance_floor = weight, variance_floor
        self.samples: Tensor | None = None
        self.centroids: Tensor | None = None
        self.variances: Tensor | None = None

    def on_task_end(self, ctx: TrainContext) -> None:
        if ctx.train_x is None:
            raise RuntimeError("AnchorLoss.on_task_end needs the task's training data")
        layer = prototype_layer(ctx.model)
        feats, targets = task_features(ctx, layer)
        units = torch.unique(targets)
        labels = layer.node_labels()
        nodes = torch.nonzero(layer.active.flatten() & torch.isin(labels, units)).squeeze(1)
        centroids = layer.flat_nodes()[nodes]
        d = rules.squared_distances(centroids, feats)
        d = d.masked_fill(labels[nodes][:, None] != targets[None, :], torch.inf)
        nearest = d.argmin(1)
        var = layer.variance.view(-1, layer.in_features)[nodes]
        parts = [(self.samples, ctx.train_x[nearest]), (self.centroids, centroids.clone()),
                 (self.variances, var.clone())]
        self.samples, self.centroids, self.variances = (
            new if old is None else torch.cat([old, new.to(old.device)]) for old, new in parts)

    def loss(self, ctx: TrainContext, batch: Batch) -> Tensor | None:
        if self.samples is None or self.weight == 0:
            return None
        assert self.centroids is not None and self.variances is not None
        layer = prototype_layer(ctx.model)
        e = layer.embed(_features(ctx.model, self.samples))
        return self.weight * ((e - self.centroids) ** 2 / self.inverse_scale()).mean()

    def inverse_scale(self) -> Tensor:
        """``Lambda = var + floor * s``: ``s`` the mean stored variance or, when every stored
        node was fitted to a single sample (all variances 0), the variance of the centroids
        across nodes (1 if that is 0 too), so the loss stays finite."""
        assert self.variances is not None and self.centroids is not None
        scale = self.variances.mean()
        if float(scale) <= 0:
            spread = self.centroids.var(0).mean() if self.centroids.shape[0] > 1 else scale
            scale = spread if float(spread) > 0 else torch.ones_like(scale)
        return self.variances + self.variance_floor * scale

    def state_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "centroids": self.centroids,
                "variances": self.variances}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples, self.centroids = state["samples"], state["centroids"]
        self.variances = state["variances"]


class MinMaxLoss(Term):
    """TOPIC's min-max loss (Tao et al. 2020, Sec. 4.3, Eq. 8), in sessions after the first.

    ``MML = weight * (pull + push)``:

    * ``pull = mean_b max(0, ||e_b - m_{y_b}||^2 - pull_margin)``: each new sample toward its
      class's node;
    * ``push = mean_{(c, j)} max(0, push_margin - ||m_c - m_j||^2)`` over each new class ``c``
      and its neighbouring nodes ``j`` of other classes.

    Our choices: a new class's node ``m_c`` is the mean of the batch's embedded features of that
    class (differentiable, so the push moves the network; the few-shot sessions fit in one
    batch, where it is the class mean); the neighbours of class ``c`` are the nodes that the
    competitive Hebbian rule would connect to its samples -- the nearest and second-nearest
    existing node of each of its samples, found with the network as it is when the session
    starts; margins are in squared distances of the embedding (0 to 4 for normalised features).

    Args:
        weight: ``lambda_2``.
        pull_margin: Samples closer than this (squared) to their class's node are not pulled.
        push_margin: Neighbours farther than this (squared) from a new class's node are not
            pushed.
    """

    name = "min-max"

    def __init__(self, weight: float = 1.0, pull_margin: float = 0.0, push_margin: float = 0.5):
        if weight < 0 or pull_margin < 0 or push_margin < 0:
            raise ValueError(f"MinMaxLoss needs weight, pull_margin, push_margin >= 0, got "
                             f"{weight}, {pull_margin}, {push_margin}")
        self.weight, self.pull_margin, self.push_margin = weight, pull_margin, push_margin
        self.neighbours: Tensor | None = None  # [U, K] bool: nodes to push class u's node from

    def on_task_start(self, ctx: TrainContext) -> None:
        layer = prototype_layer(ctx.model)
        self.neighbours = None
        if ctx.task_id == 0 or not layer.fitted:
            return
        feats, targets = task_features(ctx, layer)
        active = layer.active.flatten()
        k = min(2, int(active.sum()))
        _, top = rules.winners(feats, layer.flat_nodes(), active=active, k=k)
        mask = torch.zeros(layer.out_features, active.shape[0], dtype=torch.bool,
                           device=feats.device)
        mask[targets[:, None].expand_as(top), top] = True
        self.neighbours = mask & (layer.node_labels()[None, :] != torch.arange(
            layer.out_features, device=feats.device)[:, None])

    def loss(self, ctx: TrainContext, batch: Batch) -> Tensor | None:
        if self.neighbours is None or self.weight == 0:
            return None
        layer = prototype_layer(ctx.model)
        e = layer.embed(_features(ctx.model, batch.x))
        onehot = torch.nn.functional.one_hot(batch.targets, layer.out_features).to(e.dtype)
        count = onehot.sum(0)
        means = (onehot.transpose(0, 1) @ e) / count.clamp_min(1)[:, None]  # [U, D]
        pull = (((e - means[batch.targets]) ** 2).sum(1) - self.pull_margin).clamp_min(0).mean()
        present = count > 0
        pairs = self.neighbours & present[:, None]
        if not bool(pairs.any()):
            return self.weight * pull
        d = rules.squared_distances(means, layer.flat_nodes())  # [U, K]
        push = (self.push_margin - d[pairs]).clamp_min(0).mean()
        return self.weight * (pull + push)

    def state_dict(self) -> dict[str, Any]:
        return {"neighbours": self.neighbours}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.neighbours = state["neighbours"]
