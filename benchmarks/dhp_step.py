"""Cost of DHP-Softmax against ``nn.Linear`` as the output layer of the DHP protocol's MLP.

Thangarasa, Miconi & Taylor 2020 (SplitMNIST protocol): MLP 784-256-256 ReLU, batch 64, plain
SGD. Times ``--steps`` training steps (forward + cross-entropy + backward + SGD step) with each
head, after a warm-up, ``--repeats`` times, the two heads alternating so that machine noise hits
both alike, and prints the medians and their ratio (target: DHP <= ~1.10x Linear).

``--updates`` also times the two vectorised forms of the Hebbian update (one-hot matmul, the one
:class:`~lifelong.nn.dhp.DHPSoftmax` uses, and ``index_add`` + ``bincount``), forward + backward
of the update alone, written with plain autograd ops.

Usage: ``python benchmarks/dhp_step.py [--steps 2000] [--repeats 5] [--updates] [--threads N]``

On a shared machine, wall-clock times with several intra-op threads swing widely (a descheduled
OpenMP worker stalls every parallel matmul); ``--threads 1`` gives steadier ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.nn.dhp import DHPSoftmax


def _mlp(head: nn.Module) -> nn.ModuleDict:
    return nn.ModuleDict({"body": nn.Sequential(nn.Linear(784, 256), nn.ReLU(),
                                                nn.Linear(256, 256), nn.ReLU()),
                          "head": head})


def _stepper(model: nn.ModuleDict, plastic: bool, batches: list[tuple[Tensor, Tensor]]
             ) -> Callable[[int], None]:
    """A function running ``n`` SGD steps of ``model`` over ``batches`` (cycled)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    body, head = model["body"], model["head"]
    model.train()

    def run(n: int) -> None:
        for i in range(n):
            x, y = batches[i % len(batches)]
            opt.zero_grad(set_to_none=True)
            h = body(x)
            z = head(h, targets=y) if plastic else head(h)
            F.cross_entropy(z, y).backward()
            opt.step()

    return run


def time_heads(steps: int, repeats: int, batch: int = 64, seed: int = 0) -> tuple[float, float]:
    """Median seconds for ``steps`` training steps with ``nn.Linear`` and with DHP-Softmax."""
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(batch, 784, generator=g), torch.randint(0, 10, (batch,), generator=g))
               for _ in range(32)]
    torch.manual_seed(seed)
    linear = _stepper(_mlp(nn.Linear(256, 10)), False, batches)
    torch.manual_seed(seed)
    dhp = _stepper(_mlp(DHPSoftmax(256, 10)), True, batches)
    warm = max(1, steps // 10)
    linear(warm)
    dhp(warm)
    times: dict[str, list[float]] = {"linear": [], "dhp": []}
    for _ in range(repeats):
        for name, run in (("linear", linear), ("dhp", dhp)):
            t0 = time.perf_counter()
            run(steps)
            times[name].append(time.perf_counter() - t0)
    return statistics.median(times["linear"]), statistics.median(times["dhp"])


def _update_onehot(hebb: Tensor, h: Tensor, y: Tensor, eta: Tensor, table: Tensor) -> Tensor:
    """DHPSoftmax's form: ``Hebb + eta A^T (h - O Hebb)``, O one-hot (rows of ``table``
    looked up by ``y + 1``, row 0 zero), A = O / max(n, 1)."""
    onehot = table.index_select(0, y + 1)
    assign = onehot / onehot.sum(0).clamp_(min=1.0)
    resid = torch.addmm(h, onehot, hebb, alpha=-1.0)
    return torch.addcmul(hebb, assign.t().mm(resid), eta)


def _update_index_add(hebb: Tensor, h: Tensor, y: Tensor, eta: Tensor, table: Tensor) -> Tensor:
    """Same update from ``index_add`` class sums and ``bincount`` counts (-1: a discarded row)."""
    c = hebb.shape[0]
    idx = y.remainder(c + 1)
    counts = torch.bincount(idx, minlength=c + 1)[:c].to(h.dtype).unsqueeze(1)
    sums = h.new_zeros(c + 1, h.shape[1]).index_add(0, idx, h)[:c]
    step = torch.addcmul(sums, counts, hebb, value=-1.0).div_(counts.clamp(min=1.0))
    return torch.addcmul(hebb, step, eta)


def time_updates(steps: int, repeats: int, batch: int = 64) -> dict[str, float]:
    """Median microseconds per forward + backward of each vectorised update form."""
    h = torch.randn(batch, 256, requires_grad=True)
    y = torch.randint(0, 10, (batch,))
    eta = torch.tensor(0.001, requires_grad=True)
    hebb = torch.randn(10, 256)
    table = torch.cat([torch.zeros(1, 10), torch.eye(10)])
    out = {}
    for name, fn in (("one-hot matmul", _update_onehot), ("index_add", _update_index_add)):
        def run(n: int, fn: Callable[..., Tensor] = fn) -> None:
            for _ in range(n):
                fn(hebb, h, y, eta, table).sum().backward()
        run(max(1, steps // 10))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(steps)
            ts.append(time.perf_counter() - t0)
        out[name] = statistics.median(ts) / steps * 1e6
    return out


def main(argv: Sequence[str] | None = None) -> float:
    """Runs the benchmark and returns the DHP / Linear time ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--updates", action="store_true", help="also time the update variants")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: leave torch's default)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t_lin, t_dhp = time_heads(args.steps, args.repeats)
    ratio = t_dhp / t_lin
    print(f"MLP 784-256-256 + head, batch 64, {args.steps} SGD steps, median of {args.repeats} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"  nn.Linear(256, 10):   {t_lin:.3f} s  ({t_lin / args.steps * 1e6:.0f} us/step)")
    print(f"  DHPSoftmax(256, 10):  {t_dhp:.3f} s  ({t_dhp / args.steps * 1e6:.0f} us/step)")
    print(f"  ratio DHP / Linear:   {ratio:.3f}")
    if args.updates:
        for name, us in time_updates(args.steps, args.repeats).items():
            print(f"  update {name:15s} {us:.1f} us (forward + backward)")
    return ratio


if __name__ == "__main__":
    main()
