"""Exemplar memory for rehearsal: a fixed budget of stored training samples of old classes.

Rebuffi et al. (2017, "iCaRL", Sec. 2.2, Alg. 4 and 5) and Wu et al. (2019, "BiC", Sec. 4): the
memory holds at most ``budget`` samples in total, shared evenly by the classes seen so far, so
each class keeps ``m = budget // classes_seen`` of them and the share shrinks as classes arrive
(Alg. 5: a class keeps the *first* ``m`` of its exemplars). The order within a class is the
selection's priority: herding's greedy order (Alg. 4), or a random order.

An exemplar is stored as ``(task, index into that task's training set, label, rank)``: four
integer tensors, so the memory is a few kilobytes in ``state_dict`` and a resumed run reads the
same samples. :meth:`ExemplarMemory.update` is called once per task, at its end, with the model
that was just trained (herding needs its features); the loop reaches it through the
:class:`~lifelong.terms.rehearsal.UpdateMemory` term, whose recipe shares the memory with the
:class:`~lifelong.data.regimes.Rehearsal` data regime that replays it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario

__all__ = ["SELECTIONS", "ExemplarMemory", "compute_features", "herding", "rank_within"]

SELECTIONS = ("herding", "random")


def rank_within(groups: Tensor, keys: Tensor) -> Tensor:
    """Rank of every element among the elements of its group, in increasing order of ``keys``.

    Vectorised (two stable sorts, no loop over groups): ``rank_within([0, 1, 0], [0.5, 0.1,
    0.2]) == [1, 0, 0]``. Keeping ``rank < k`` keeps the ``k`` smallest keys of every group.

    Args:
        groups: Integer group of every element ``[N]`` (class labels).
        keys: Sort keys ``[N]`` (random draws for a random choice, priorities otherwise).
    """
    if groups.shape != keys.shape or groups.dim() != 1:
        raise ValueError(f"rank_within: groups and keys must be [N] tensors of one shape, got "
                         f"{list(groups.shape)} and {list(keys.shape)}")
    n = groups.shape[0]
    if n == 0:
        return groups.new_zeros(0)
    order = torch.argsort(keys, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]  # by group, keys ascending inside
    sorted_groups = groups[order]
    first = torch.ones(n, dtype=torch.bool, device=groups.device)
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    pos = torch.arange(n, device=groups.device)
    start = torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), 0).values
    rank = torch.empty_like(pos)
    rank[order] = pos - start
    return rank


def herding(features: Tensor, m: int) -> Tensor:
    """iCaRL's herding selection (Rebuffi et al. 2017, Alg. 4): indices of ``m`` samples in order.

    With ``phi`` the L2-normalised features and ``mu`` their mean, the k-th exemplar is
    ``argmin_x || mu - (phi(x) + sum_{j<k} phi(p_j)) / k ||`` over the samples not chosen yet.
    Expanding the square with ``||phi(x)|| = 1``, that is ``argmax_x phi(x) . (k mu - S)`` with
    ``S = sum_{j<k} phi(p_j)``; ``phi(x) . S`` is accumulated by one matrix-vector product per
    pick, so each of the ``m`` picks costs ``O(N D)``, vectorised over the class's samples.

    Args:
        features: The class's features ``[N, D]`` (normalised here).
        m: Number of exemplars (``min(m, N)`` are returned).

    Returns:
        ``[min(m, N)]`` indices into ``features``, highest priority first.
    """
    if features.dim() != 2:
        raise ValueError(f"herding: features must be [N, D], got {list(features.shape)}")
    n = features.shape[0]
    m = min(int(m), n)
    phi = F.normalize(features.float(), dim=1)
    mu = phi.mean(0)
    to_mu = phi @ mu  # phi(x) . mu
    to_chosen = torch.zeros(n, device=phi.device)  # phi(x) . S
    free = torch.ones(n, dtype=torch.bool, device=phi.device)
    out = torch.empty(m, dtype=torch.long, device=phi.device)
    for k in range(1, m + 1):  # greedy: each pick depends on the ones before (m at task end)
        score = (k * to_mu - to_chosen).masked_fill(~free, float("-inf"))
        i = torch.argmax(score)
        out[k - 1] = i
        free[i] = False
        to_chosen += phi @ phi[i]
    return out


@torch.no_grad()
def compute_features(model: nn.Module, x: Tensor, batch_size: int = 1024,
                     device: torch.device | None = None) -> Tensor:
    """``model.features(x)`` in eval mode (BatchNorm statistics untouched), in batches, on
    ``device``; the model's train/eval mode is restored afterwards.

    Raises:
        ValueError: The model has no ``features`` method (a
            :class:`~lifelong.nn.model.ContinualModel` has).
    """
    features = getattr(model, "features", None)
    if not callable(features):
        raise ValueError(f"exemplar selection and nearest-mean classification need the "
                         f"backbone's features: model.features(x), which a ContinualModel has; "
                         f"got a {type(model).__name__}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        parts = [features(x[i:i + batch_size].to(device)) for i in range(0, x.shape[0],
                                                                          batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0, device=device)


class ExemplarMemory:
    """A fixed budget of exemplars shared evenly by the classes seen so far (Rebuffi et al.
    2017, Alg. 4-5; Wu et al. 2019, Sec. 4).

    Args:
        budget: Total number of exemplars ``K`` (iCaRL and BiC use 2000 on CIFAR-100).
        selection: ``herding`` (iCaRL's greedy order, from the trained model's features) or
            ``random`` (a random order drawn from the run's generator).
        batch_size: Batch size of the feature computation.

    Attributes:
        task: Task of every exemplar ``[E]`` (exemplars are grouped by task, in task order).
        index: Index of every exemplar in its task's training set.
        label: Dataset label of every exemplar.
        rank: Priority of every exemplar within its class (0 first).
    """

    def __init__(self, budget: int, selection: str = "herding", batch_size: int = 1024) -> None:
        if int(budget) < 1:
            raise ValueError(f"the exemplar budget must be >= 1, got {budget}")
        if selection not in SELECTIONS:
            raise ValueError(f"unknown exemplar selection {selection!r}; valid: "
                             f"{', '.join(SELECTIONS)}")
        self.budget, self.selection, self.batch_size = int(budget), selection, batch_size
        empty = torch.empty(0, dtype=torch.long)
        self.task, self.index, self.label, self.rank = empty, empty, empty, empty

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def per_class(self, num_classes: int) -> int:
        """Exemplars each class keeps when ``num_classes`` classes share the budget."""
        return self.budget // max(num_classes, 1)

    def update(self, model: nn.Module, scenario: Scenario, t: int,
               generator: torch.Generator | None = None, device: torch.device | None = None
               ) -> None:
        """Adds the classes of task ``t`` and shrinks the old ones (called at the task's end).

        Every class of tasks ``0..t`` then keeps ``m = budget // classes_seen`` exemplars: the
        old classes their first ``m`` (Alg. 5), each new class ``m`` of its training samples in
        herding order (from ``model``'s features, Alg. 4; one pass over the class's samples per
        pick) or in a random order drawn from ``generator``.
        """
        seen = sum(len(scenario.tasks[s].classes) for s in range(t + 1))
        m = self.per_class(seen)
        keep = self.rank < m  # Alg. 5: the first m of each old class
        self.task, self.index = self.task[keep], self.index[keep]
        self.label, self.rank = self.label[keep], self.rank[keep]
        if m == 0:
            return
        task = scenario.tasks[t]
        y = task.train_y
        if self.selection == "random":
            keys = torch.rand(y.shape[0], generator=generator)
            rank = rank_within(y, keys)
        else:
            feats = compute_features(model, task.inputs(task.train_x), self.batch_size, device)
            rank = torch.full_like(y, m)  # not chosen
            labels = y.to(feats.device)
            for c in task.classes:  # one herding run per new class, at task end
                members = torch.nonzero(labels == c).squeeze(1)
                order = herding(feats[members], m)
                rank[members[order].cpu()] = torch.arange(order.shape[0])
        chosen = torch.nonzero(rank < m).squeeze(1)
        chosen = chosen[torch.argsort(y[chosen] * (m + 1) + rank[chosen], stable=True)]
        self.task = torch.cat([self.task, torch.full_like(chosen, t)])
        self.index = torch.cat([self.index, chosen])
        self.label = torch.cat([self.label, y[chosen]])
        self.rank = torch.cat([self.rank, rank[chosen]])

    def data(self, scenario: Scenario, layout: Layout) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The exemplars as ``(x, y, unit targets, task ids)`` (each task's permutation
        applied), in the memory's order."""
        xs = []
        for s in torch.unique_consecutive(self.task).tolist():  # one slice per task
            task = scenario.tasks[s]
            xs.append(task.inputs(task.train_x[self.index[self.task == s]]))
        if not xs:
            shape = scenario.input_shape
            return (torch.empty(0, *shape), self.label, self.label, self.task)
        return torch.cat(xs), self.label, layout.targets(self.task, self.label), self.task

    def class_means(self, model: nn.Module, scenario: Scenario, layout: Layout,
                    device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        """Nearest-mean-of-exemplars prototypes (Rebuffi et al. 2017, Alg. 1): for every output
        unit, the normalised mean of its exemplars' normalised features.

        Returns:
            ``(means [num_units, D], present [num_units] bool)``; units without exemplars have
            ``present = False`` and a zero mean.
        """
        x, _, targets, _ = self.data(scenario, layout)
        phi = F.normalize(compute_features(model, x, self.batch_size, device), dim=1)
        targets = targets.to(phi.device)
        sums = phi.new_zeros(layout.num_units, phi.shape[1]).index_add_(0, targets, phi)
        counts = torch.bincount(targets, minlength=layout.num_units)
        return F.normalize(sums, dim=1), counts > 0

    def state_dict(self) -> dict[str, Any]:
        """The exemplars (four integer tensors) and the settings they were chosen under."""
        return {"task": self.task.clone(), "index": self.index.clone(),
                "label": self.label.clone(), "rank": self.rank.clone(), "budget": self.budget,
                "selection": self.selection}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`; a memory of another budget or selection is refused."""
        if state.get("budget") != self.budget or state.get("selection") != self.selection:
            raise ValueError(f"this exemplar memory (budget {self.budget}, {self.selection}) "
                             f"cannot load one saved with budget {state.get('budget')}, "
                             f"{state.get('selection')}")
        self.task, self.index = state["task"].cpu(), state["index"].cpu()
        self.label, self.rank = state["label"].cpu(), state["rank"].cpu()
