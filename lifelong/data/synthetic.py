"""A tiny synthetic scenario for tests and examples: Gaussian class clusters, no files needed."""

from __future__ import annotations

import torch

from lifelong.data.scenarios import SETTINGS, Scenario, Task


def synthetic_scenario(n_tasks: int = 3, classes_per_task: int = 2, train_per_class: int = 40,
                       test_per_class: int = 20, shape: tuple[int, int, int] = (1, 4, 4),
                       separation: float = 3.0, seed: int = 0) -> Scenario:
    """Split-style scenario whose classes are Gaussian clusters around random means.

    Labels are ``0 .. n_tasks*classes_per_task-1`` with task ``t`` holding the labels
    ``t*k .. t*k+k-1``. Well separated (``separation`` standard deviations between means), so any
    working learner beats chance on the task it just learned.
    """
    gen = torch.Generator().manual_seed(seed)
    n_classes = n_tasks * classes_per_task
    dim = shape[0] * shape[1] * shape[2]
    means = torch.randn(n_classes, dim, generator=gen) * separation / (2 ** 0.5)

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n_classes).repeat_interleave(per_class)
        x = means[y] + torch.randn(y.shape[0], dim, generator=gen)
        return x.view(-1, *shape), y

    train_x, train_y = draw(train_per_class)
    test_x, test_y = draw(test_per_class)
    tasks = []
    for t in range(n_tasks):
        lo, hi = t * classes_per_task, (t + 1) * classes_per_task
        tr = (train_y >= lo) & (train_y < hi)
        te = (test_y >= lo) & (test_y < hi)
        tasks.append(Task(id=t, name=f"{lo}-{hi - 1}", classes=tuple(range(lo, hi)),
                          train_x=train_x[tr], train_y=train_y[tr],
                          test_x=test_x[te], test_y=test_y[te]))
    return Scenario(name="synthetic", tasks=tuple(tasks), input_shape=shape,
                    num_classes=n_classes, class_names=tuple(str(c) for c in range(n_classes)),
                    settings=SETTINGS, default_setting="task", info={"seed": seed})
