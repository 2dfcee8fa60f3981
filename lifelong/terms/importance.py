"""Importance estimators of synaptic consolidation, each usable on its own.

* :func:`fisher_diagonal` -- diagonal Fisher information (Kirkpatrick et al. 2017, EWC), from
  per-sample gradients: ``torch.func`` (``vmap`` of ``grad``/``jacrev``), and for ``nn.Linear``
  layers an exact reduction that never materialises them (:class:`_LinearTaps`); variants
  ``true``, ``sample``, ``empirical``, ``predicted`` and ``batched`` (the last for comparison
  only). :func:`fisher_diagonal_loop` is the slow reference (a Python loop over samples).
* :func:`mas_importance` -- MAS (Aljundi et al. 2018, Eq. 4-5): mean over samples of
  ``|d ||F(x)||^2 / d theta|``, per sample, no labels.
* :func:`mas_local_importance` -- local (Hebbian) MAS (Aljundi et al. 2018, Sec. 4.2):
  ``|2 y_i^{l-1} y_j^l|`` from forward activations only, no backward pass.
* :class:`PathIntegral` -- SI's running path integral ``omega`` and Eq. 5 of Zenke et al. (2017).

All estimators run the model in eval mode through ``torch.func.functional_call`` with *copies* of
its buffers, so BatchNorm running statistics (and any other buffer) are left exactly as they were,
and they restore every module's train/eval flag afterwards. They return ``name -> tensor`` dicts
(same shapes as the parameters, detached).

Data: ``batches`` is any iterable of input tensors or of ``(x, unit_targets)`` pairs
(:meth:`lifelong.train.loop.TrainContext.task_batches` yields the latter); ``units`` is the slice of
output units whose logits define the model's output (the task's head in task-IL), passed to the
model as ``model(x, units=units)``; ``None`` calls ``model(x)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, vmap

from lifelong.native import float32_cpu, si_sgd_step_kernel

FISHER_VARIANTS = ("true", "sample", "empirical", "predicted", "batched")

Batches = Iterable[Tensor | tuple[Tensor, Tensor | None]]


# ---------------------------------------------------------------------------- parameter selection


def plastic_parameter_names(model: nn.Module) -> set[str]:
    """Full names of the parameters that layers of ``model`` declare plastic.

    A module declares them with a method ``plastic_parameter_names() -> tuple[str, ...]`` naming
    its own (direct) parameters, e.g. DHP-Softmax's ``("alpha", "eta")`` (Thangarasa et al. 2020:
    consolidation regularises the slow weights, never the plastic part).
    """
    out: set[str] = set()
    for prefix, module in model.named_modules():
        declare = getattr(module, "plastic_parameter_names", None)
        if not callable(declare):
            continue
        for name in declare():
            out.add(f"{prefix}.{name}" if prefix else str(name))
    return out


def select_parameters(model: nn.Module, penalize_plastic: bool = False) -> dict[str, nn.Parameter]:
    """The parameters consolidation regularises, by full name.

    Args:
        model: The model.
        penalize_plastic: Also select the parameters declared plastic by their layers
            (:func:`plastic_parameter_names`); off by default.

    Returns:
        ``name -> parameter`` for every parameter that requires a gradient and is not plastic, in
        ``named_parameters()`` order. Buffers (Hebbian traces, BatchNorm statistics) are never
        parameters, so they are never included.
    """
    skip = set() if penalize_plastic else plastic_parameter_names(model)
    return {n: p for n, p in model.named_parameters() if p.requires_grad and n not in skip}


# ---------------------------------------------------------------------------- helpers


def _join(prefix: str, name: str) -> str:
    """Full parameter name of ``name`` inside the module called ``prefix`` ("" for the root)."""
    return f"{prefix}.{name}" if prefix else name


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Puts every module of ``model`` in eval mode and restores each one's own flag afterwards
    (a model whose modules were in mixed modes gets exactly those modes back)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _inputs(batches: Batches) -> Iterator[tuple[Tensor, Tensor | None]]:
    for b in batches:
        if isinstance(b, Tensor):
            yield b, None
        else:
            x, *rest = b
            yield x, (rest[0] if rest else None)


def _local_targets(targets: Tensor | None, units: slice | None, k: int) -> Tensor:
    if targets is None:
        raise ValueError("this Fisher variant needs labels: give batches of (x, unit_targets)")
    start = 0 if units is None or units.start is None else units.start
    local = targets.long() - start
    if local.numel() and (int(local.min()) < 0 or int(local.max()) >= k):
        raise ValueError(f"targets must be output units inside {units} (the logits used); got "
                         f"values {int(targets.min())}..{int(targets.max())}")
    return local


class _Functional:
    """``model`` as a pure function of the selected parameters, for ``torch.func``.

    Unselected parameters are constants; buffers are copied, so nothing the forward pass might
    do to them (BatchNorm statistics) reaches the model.
    """

    def __init__(self, model: nn.Module, params: Mapping[str, Tensor] | None,
                 units: slice | None):
        if params is None:
            params = select_parameters(model)
        if not params:
            raise ValueError("no parameters to estimate the importance of (all frozen?)")
        named = dict(model.named_parameters())
        unknown = [n for n in params if n not in named]
        if unknown:
            raise ValueError(f"parameters {unknown} are not parameters of the model")
        self.model = model
        self.names = list(params)
        self.values = {n: named[n].detach() for n in self.names}
        self.frozen = {n: p.detach() for n, p in named.items() if n not in params}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.kwargs: dict[str, Any] = {} if units is None else {"units": units}

    def __call__(self, values: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Logits of a batch ``x``."""
        return functional_call(self.model, (dict(values), self.frozen, self.buffers), (x,),
                               self.kwargs)

    def one(self, values: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Logits ``[K]`` of one sample ``x`` (no batch dimension), for ``vmap``."""
        return self(values, x.unsqueeze(0)).squeeze(0)

    def zeros(self) -> dict[str, Tensor]:
        return {n: torch.zeros_like(v) for n, v in self.values.items()}


# ---------------------------------------------------------------------------- linear fast path


class _Unsupported(Exception):
    """A tapped module was called in a way the fast path cannot use (falls back to vmap)."""


class _LinearTaps:
    """Per-sample gradients of ``nn.Linear`` layers without materialising them.

    For a linear layer ``z = W a + b`` the gradient of any per-sample scalar ``l_n`` is
    ``dl_n/dW = delta_n a_n^T`` with ``delta_n = dl_n/dz_n``, so sums over samples of squared
    (Fisher) or absolute (MAS) per-sample gradients are matmuls:
    ``sum_n (delta_n a_n^T)^2 = (delta^2)^T (a^2)`` and ``sum_n |delta_n a_n^T| = |delta|^T |a|``
    (Goodfellow 2015, "Efficient per-example gradient computations"). ``delta`` for every sample
    comes from ONE backward of ``sum_n l_n`` into a zero "probe" added to each layer's output:
    in eval mode samples do not interact, so ``d(sum_m l_m)/dz_n = dl_n/dz_n``.

    Covered: every ``nn.Linear`` module called exactly once per forward on a ``[B, in]`` input,
    and the ``nn.Linear`` layers of a :class:`~lifelong.nn.heads.SingleHead` /
    :class:`~lifelong.nn.heads.MultiHead` at ``model.head`` (which computes them functionally),
    through a probe on the head's output; heads of a ``MultiHead`` outside ``units`` have no
    gradient (zero). :class:`~lifelong.nn.dhp.DHPSoftmax` layers are covered too: in eval mode
    their logits ``z = h (W + alpha * Hebb)^T + b`` are linear in ``W`` and ``b``, so the same
    identities hold for them, and ``dz_j/dalpha_ji = Hebb_ji h_i`` gives ``alpha`` the weight
    statistic times ``Hebb^2`` (Fisher) or ``|Hebb|`` (MAS); ``eta`` does not enter the eval
    forward (zero). A DHP layer not called in a forward has zero gradient for that batch.
    Everything else goes to the ``vmap`` engine.
    """

    def __init__(self, model: nn.Module, selected: Iterable[str], units: slice | None):
        from lifelong.nn.dhp import DHPSoftmax
        from lifelong.nn.heads import MultiHead, SingleHead

        self.selected = set(selected)
        self.units = units
        self.linears: dict[nn.Module, str] = {}
        self.plastic: dict[nn.Module, str] = {}
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and self._wanted(name, m):
                self.linears[m] = name
            elif isinstance(m, DHPSoftmax) and self._wanted(name, m):
                self.plastic[m] = name
        self._plastic_records: dict[nn.Module, tuple[Tensor, Tensor, slice | None, Tensor]] = {}
        self.head: nn.Module | None = None
        self.head_layers: list[tuple[nn.Linear, str, slice, slice]] = []
        self.idle_heads: list[tuple[nn.Linear, str]] = []
        head = getattr(model, "head", None)
        if isinstance(head, (SingleHead, MultiHead)):
            prefix = next(n for n, m in model.named_modules() if m is head)
            rows = _head_rows(head, prefix, units)
            used = {id(layer) for layer, *_ in rows}
            self.head_layers = [(layer, ln, c, r) for layer, ln, c, r in rows
                                if isinstance(layer, nn.Linear) and self._wanted(ln, layer)]
            if isinstance(head, MultiHead):
                self.idle_heads = [(layer, f"{prefix}.heads.{t}")
                                   for t, layer in enumerate(head.heads)
                                   if id(layer) not in used and isinstance(layer, nn.Linear)
                                   and self._wanted(f"{prefix}.heads.{t}", layer)]
            if self.head_layers:
                self.head = head
        self._records: dict[nn.Module, list[tuple[Tensor, Tensor]]] = {}
        self._head_records: list[tuple[Tensor, Tensor]] = []
        self._batch = 0

    def _wanted(self, prefix: str, m: nn.Module) -> bool:
        return any(_join(prefix, k) in self.selected for k, _ in m.named_parameters(recurse=False))

    def covered(self) -> set[str]:
        """Names of the selected parameters this fast path computes."""
        out = set()
        for m, prefix in list(self.linears.items()) + [(l, n) for l, n, *_ in self.head_layers] \
                + self.idle_heads + list(self.plastic.items()):
            for k, _ in m.named_parameters(recurse=False):
                if _join(prefix, k) in self.selected:
                    out.add(_join(prefix, k))
        return out

    def _linear_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        a = inputs[0]
        if a.dim() != 2 or a.shape[0] != self._batch or module in self._records:
            raise _Unsupported(self.linears[module])
        probe = torch.zeros_like(output, requires_grad=True)
        self._records[module] = [(a.detach(), probe)]
        return output + probe

    def _plastic_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                      output: Tensor) -> Tensor:
        h = args[0]
        if h.dim() != 2 or h.shape[0] != self._batch or module in self._plastic_records:
            raise _Unsupported(self.plastic[module])
        units = kwargs.get("units", args[2] if len(args) > 2 else None)
        rows = module._rows(units)  # type: ignore[operator]
        hebb = module.hebb if rows is None else module.hebb[rows]  # type: ignore[index]
        probe = torch.zeros_like(output, requires_grad=True)
        self._plastic_records[module] = (h.detach(), probe, rows, hebb.detach())
        return output + probe

    def _head_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                   output: Tensor) -> Tensor:
        h = args[0]
        if h.dim() != 2 or self._head_records:
            raise _Unsupported("head")
        probe = torch.zeros_like(output, requires_grad=True)
        self._head_records.append((h.detach(), probe))
        return output + probe

    def forward(self, fn: "_Functional", x: Tensor) -> Tensor:
        """Logits of ``x`` with probes attached (hooks live only during this call)."""
        self._records, self._head_records, self._batch = {}, [], x.shape[0]
        self._plastic_records = {}
        handles = [m.register_forward_hook(self._linear_hook) for m in self.linears]
        handles += [m.register_forward_hook(self._plastic_hook, with_kwargs=True)
                    for m in self.plastic]
        if self.head is not None:
            handles.append(self.head.register_forward_hook(self._head_hook, with_kwargs=True))
        try:
            with torch.enable_grad():
                return fn(fn.values, x)
        finally:
            for hd in handles:
                hd.remove()

    def calibrate(self, fn: "_Functional", x: Tensor) -> None:
        """Drops the modules the fast path cannot handle (called more than once, not on a
        ``[B, in]`` input, or never called) after a trial forward on ``x``."""
        while True:
            try:
                self.forward(fn, x)
            except _Unsupported as e:
                bad = str(e.args[0])
                if bad == "head":
                    self.head, self.head_layers, self.idle_heads = None, [], []
                else:
                    self.linears = {m: n for m, n in self.linears.items() if n != bad}
                    self.plastic = {m: n for m, n in self.plastic.items() if n != bad}
                continue
            break
        self.linears = {m: n for m, n in self.linears.items() if m in self._records}
        if self.head is not None and not self._head_records:
            self.head, self.head_layers, self.idle_heads = None, [], []

    def probes(self) -> list[Tensor]:
        out = [rec[0][1] for rec in self._records.values()]
        out += [p for _, p in self._head_records]
        return out + [rec[1] for rec in self._plastic_records.values()]

    def accumulate(self, totals: dict[str, Tensor], weights: list[Tensor | None],
                   input_map: Callable[[Tensor], Tensor]) -> None:
        """Adds ``weights_k^T input_map(a_k)`` to the weights (and ``weights_k.sum(0)`` to the
        biases) of each tapped layer; ``weights`` are per-sample ``[B, out]`` statistics of the
        output gradients, in :meth:`probes` order (``None``: the layer does not reach the
        output, nothing to add)."""
        k = 0
        for module, recs in self._records.items():
            a, _ = recs[0]
            if weights[k] is not None:
                self._add(totals, self.linears[module], weights[k], input_map(a), None)
            k += 1
        for h, _ in self._head_records:
            w = weights[k]
            if w is not None:
                mapped = input_map(h)
                for _, lname, cols, rows in self.head_layers:
                    self._add(totals, lname, w[:, cols], mapped, rows)
            k += 1
        for module, (h, _, rows, hebb) in self._plastic_records.items():
            w = weights[k]
            k += 1
            if w is None:
                continue
            prefix = self.plastic[module]
            per_weight = w.t() @ input_map(h)
            for key, value in (("weight", per_weight), ("bias", w.sum(0)),
                               ("alpha", per_weight * input_map(hebb))):
                target = totals.get(_join(prefix, key))
                if target is not None:
                    (target if rows is None else target[rows]).add_(value)

    @staticmethod
    def _add(totals: dict[str, Tensor], prefix: str, w: Tensor, a: Tensor,
             rows: slice | None) -> None:
        wn, bn = _join(prefix, "weight"), _join(prefix, "bias")
        target_w = totals.get(wn)
        if target_w is not None:
            (target_w if rows is None else target_w[rows]).add_(w.t() @ a)
        target_b = totals.get(bn)
        if target_b is not None:
            (target_b if rows is None else target_b[rows]).add_(w.sum(0))


def _sub_chunks(n: int, floats_per_sample: int, budget: int = 1 << 25
                ) -> list[tuple[int, int]]:
    """Splits ``n`` samples into ranges whose per-sample gradients (``floats_per_sample`` each)
    stay within ``budget`` floats (128 MiB in float32) in the ``vmap`` engine."""
    step = max(1, budget // max(1, floats_per_sample))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def _peek(batches: Batches) -> tuple[tuple[Tensor, Tensor | None] | None,
                                     Iterator[tuple[Tensor, Tensor | None]]]:
    it = _inputs(batches)
    for first in it:
        if first[0].shape[0] > 0:
            def chain() -> Iterator[tuple[Tensor, Tensor | None]]:
                yield first
                yield from it
            return first, chain()
    return None, iter(())


# ---------------------------------------------------------------------------- Fisher


def fisher_diagonal(
    model: nn.Module,
    batches: Batches,
    units: slice | None = None,
    variant: str = "true",
    generator: torch.Generator | None = None,
    params: Mapping[str, Tensor] | None = None,
    linear_fast_path: bool = True,
) -> dict[str, Tensor]:
    """Diagonal of the Fisher information of ``model`` on the given data.

    ``F_i = (1/N) sum_n E_y [(d log p(y | x_n) / d theta_i)^2]`` (Kirkpatrick et al. 2017, Eq. 2
    and Supp.; MacKay 1992): a mean over samples of squared *per-sample* gradients. ``p(y | x)`` is
    the softmax over the logits of ``units``. Variants:

    * ``"true"`` (default): the expectation over every class ``c`` weighted by the model's
      ``p(c | x)`` -- ``sum_c p_c g_c^2`` -- exact for the model's predictive distribution.
    * ``"sample"``: one label drawn from ``p(y | x)`` per sample (``generator`` seeds it; the
      recipes pass the run's generator, so the draws are part of the run's random stream); an
      unbiased one-sample estimate of ``"true"``.
    * ``"empirical"``: the sample's true label (the "empirical Fisher").
    * ``"predicted"``: the model's most probable label (what van de Ven & Tolias 2019 use, so
      their lambda values transfer); on confident predictions it is much smaller than ``true``
      (``(1 - p_max)^2`` against ``p_max (1 - p_max)`` per logit direction).
    * ``"batched"``: NOT the Fisher -- the square of each batch's *mean* gradient (true labels),
      averaged over batches: ``(1/B) sum_b (mean_{n in b} g_n)^2``. It is what an implementation
      that squares a mini-batch gradient computes (smaller by about the batch size); kept for
      comparison only. With batches of one sample it equals ``"empirical"``.

    Per-sample gradients: ``torch.func`` -- ``vmap`` over the samples of each batch of ``grad``
    (``jacrev`` over the classes for ``true``) of ``functional_call(model, ...)``. With
    ``linear_fast_path`` (default) the parameters of ``nn.Linear`` layers (the whole of an MLP and
    its heads) are instead reduced exactly without materialising a ``[B, P]`` gradient tensor:
    one batched backward into per-layer output probes gives every sample's output gradient
    ``delta_n`` and ``sum_n (delta_n a_n^T)^2 = (delta^2)^T a^2`` (see :class:`_LinearTaps`); the
    remaining parameters (convolutions, BatchNorm, plastic layers ...) use ``vmap``. Both give
    the same numbers (tests compare them with a Python loop, :func:`fisher_diagonal_loop`).

    Computed in eval mode (dropout off, BatchNorm on its running statistics, which stay
    untouched: the forward runs on copies of the buffers); every module's train/eval flag is
    restored.

    Args:
        model: Maps ``x`` (and ``units=``) to logits.
        batches: Inputs, or ``(x, unit_targets)`` pairs (labels needed by ``empirical`` and
            ``batched`` only). Each batch is one chunk of the fast path (and the unit of the
            ``batched`` variant); the ``vmap`` engine splits it further so that its per-sample
            gradients (``K x P`` floats per sample for ``true``, ``P`` otherwise) stay within
            128 MiB.
        units: Output units whose logits form ``p(y | x)`` (``None``: the model's whole output).
        variant: ``true``, ``sample``, ``empirical``, ``predicted`` or ``batched``.
        generator: Random generator of ``sample``.
        params: ``name -> parameter`` to estimate (default :func:`select_parameters`).
        linear_fast_path: Reduce ``nn.Linear`` parameters with the exact matmul identity
            (``False``: ``vmap`` for every parameter).

    Returns:
        ``name -> F`` (same shapes as the parameters; zeros if there was no data).
    """
    if variant not in FISHER_VARIANTS:
        raise ValueError(f"unknown Fisher variant {variant!r}; valid: {', '.join(FISHER_VARIANTS)}")
    fn = _Functional(model, params, units)
    total = fn.zeros()
    count = 0

    def logp_one(values: dict[str, Tensor], x: Tensor) -> Tensor:
        return F.log_softmax(fn.one(values, x), dim=-1)

    def true_one(values: dict[str, Tensor], x: Tensor) -> dict[str, Tensor]:
        # Jacobian of log p over the K classes: [K, *shape] per parameter, weighted by p_c.
        def with_aux(v: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            lp = logp_one(v, x)
            return lp, lp.detach()

        jac, logp = jacrev(with_aux, has_aux=True)(values)
        p = logp.exp()
        return {n: torch.tensordot(p, j.square(), dims=1) for n, j in jac.items()}

    def label_one(values: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return logp_one(values, x).gather(0, y.view(1)).squeeze(0)

    with eval_mode(model):
        first, stream = _peek(batches)
        if first is None:
            return total
        fast: set[str] = set()
        taps = None
        if linear_fast_path and variant != "batched":
            taps = _LinearTaps(model, fn.names, units)
            taps.calibrate(fn, first[0])
            fast = taps.covered()
        slow = [n for n in fn.names if n not in fast]
        slow_fn_values = {n: fn.values[n] for n in slow}
        slow_numel = sum(fn.values[n].numel() for n in slow)

        def vmap_values(values: dict[str, Tensor]) -> dict[str, Tensor]:
            return {**{n: fn.values[n] for n in fast}, **values}

        for x, targets in stream:
            if x.shape[0] == 0:
                continue
            if variant == "batched":
                values = {n: v.clone().requires_grad_(True) for n, v in fn.values.items()}
                with torch.enable_grad():
                    logits = fn(values, x)
                    y = _local_targets(targets, units, logits.shape[-1])
                    mean_logp = F.log_softmax(logits, -1).gather(1, y.view(-1, 1)).mean()
                    g = torch.autograd.grad(mean_logp, [values[n] for n in fn.names],
                                            allow_unused=True)
                for n, gn in zip(fn.names, g):
                    if gn is not None:
                        total[n] += gn.square()
                count += 1
                continue
            y = None
            logits = None
            if taps is not None and fast:
                logits = taps.forward(fn, x)
            if variant in ("sample", "predicted"):
                with torch.no_grad():
                    out = logits.detach() if logits is not None else fn(fn.values, x)
                if variant == "sample":
                    y = torch.multinomial(F.softmax(out, dim=-1), 1, generator=generator).squeeze(1)
                else:
                    y = out.argmax(dim=-1)
            elif variant == "empirical":
                k = logits.shape[-1] if logits is not None else fn(fn.values, x[:1]).shape[-1]
                y = _local_targets(targets, units, k)
            if logits is not None and taps is not None:
                with torch.enable_grad():
                    logp = F.log_softmax(logits, dim=-1)
                probes = taps.probes()
                if variant == "true":
                    k = logp.shape[-1]
                    basis = torch.eye(k, dtype=logp.dtype).unsqueeze(1).expand(k, x.shape[0], k)
                    deltas = torch.autograd.grad(logp, probes, grad_outputs=basis,
                                                 is_grads_batched=True, allow_unused=True)
                    p = logp.detach().exp()
                    weights = [None if d is None else torch.einsum("kbo,bk->bo", d.square(), p)
                               for d in deltas]
                else:
                    assert y is not None
                    onehot = F.one_hot(y, logp.shape[-1]).to(logp.dtype)
                    deltas = torch.autograd.grad(logp, probes, grad_outputs=onehot,
                                                 allow_unused=True)
                    weights = [None if d is None else d.square() for d in deltas]
                taps.accumulate(total, weights, torch.square)
            if slow:
                k_out = 1 if variant != "true" else int(
                    (logits if logits is not None else fn(fn.values, x[:1])).shape[-1])
                for lo, hi in _sub_chunks(x.shape[0], k_out * slow_numel):
                    if variant == "true":
                        sq = vmap(lambda v, xi: true_one(vmap_values(v), xi),
                                  in_dims=(None, 0))(slow_fn_values, x[lo:hi])
                        for n in slow:
                            total[n] += sq[n].sum(0)
                    else:
                        assert y is not None
                        g = vmap(grad(lambda v, xi, yi: label_one(vmap_values(v), xi, yi)),
                                 in_dims=(None, 0, 0))(slow_fn_values, x[lo:hi], y[lo:hi])
                        for n in slow:
                            total[n] += g[n].square().sum(0)
            count += x.shape[0]
    if count:
        for n in fn.names:
            total[n] /= count
    return total


def fisher_diagonal_loop(
    model: nn.Module,
    batches: Batches,
    units: slice | None = None,
    variant: str = "true",
    params: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Reference implementation of :func:`fisher_diagonal` (``true`` or ``empirical``): a plain
    Python loop over samples with one ``autograd.grad`` per sample and class. Slow on purpose;
    tests and ``benchmarks/fisher_speed.py`` compare the vectorised estimator against it."""
    if variant not in ("true", "empirical"):
        raise ValueError(f"the loop reference supports 'true' and 'empirical', got {variant!r}")
    fn = _Functional(model, params, units)
    total = fn.zeros()
    count = 0
    values = {n: v.clone().requires_grad_(True) for n, v in fn.values.items()}
    leaves = [values[n] for n in fn.names]
    with eval_mode(model), torch.enable_grad():
        for x, targets in _inputs(batches):
            for i in range(x.shape[0]):
                logp = F.log_softmax(fn.one(values, x[i]), dim=-1)
                if variant == "true":
                    classes = [(c, float(logp[c].detach().exp())) for c in range(logp.shape[0])]
                else:
                    y = _local_targets(targets[i:i + 1] if targets is not None else None, units,
                                       logp.shape[0])
                    classes = [(int(y[0]), 1.0)]
                for c, weight in classes:
                    g = torch.autograd.grad(logp[c], leaves, retain_graph=True, allow_unused=True)
                    for n, gn in zip(fn.names, g):
                        if gn is not None:
                            total[n] += weight * gn.square()
                count += 1
    if count:
        for n in fn.names:
            total[n] /= count
    return total


# ---------------------------------------------------------------------------- MAS


def mas_importance(
    model: nn.Module,
    batches: Batches,
    units: slice | None = None,
    params: Mapping[str, Tensor] | None = None,
    linear_fast_path: bool = True,
) -> dict[str, Tensor]:
    """MAS importance (Aljundi et al. 2018, Eq. 4-5): ``Omega = (1/N) sum_n |g(x_n)|`` with
    ``g(x) = d ||F(x)||_2^2 / d theta`` per sample, ``F`` the logits of ``units``. Labels are not
    used, so unlabelled data serves. Per-sample gradients as in :func:`fisher_diagonal`: ``vmap``
    of ``grad``, and for ``nn.Linear`` layers the exact identity
    ``sum_n |delta_n a_n^T| = |delta|^T |a|`` (``linear_fast_path``). Eval mode, buffers
    untouched, train/eval flags restored.

    Args:
        model: Maps ``x`` (and ``units=``) to logits.
        batches: Inputs or ``(x, anything)`` pairs; each batch is one chunk.
        units: Output units forming ``F(x)`` (``None``: the whole output).
        params: ``name -> parameter`` to estimate (default :func:`select_parameters`).
        linear_fast_path: Reduce ``nn.Linear`` parameters without materialising per-sample
            gradients (``False``: ``vmap`` for every parameter).

    Returns:
        ``name -> Omega`` (same shapes as the parameters).
    """
    fn = _Functional(model, params, units)
    total = fn.zeros()
    count = 0

    def sq_norm(values: dict[str, Tensor], x: Tensor) -> Tensor:
        return fn.one(values, x).square().sum()

    with eval_mode(model):
        first, stream = _peek(batches)
        if first is None:
            return total
        fast: set[str] = set()
        taps = None
        if linear_fast_path:
            taps = _LinearTaps(model, fn.names, units)
            taps.calibrate(fn, first[0])
            fast = taps.covered()
        slow = [n for n in fn.names if n not in fast]
        slow_values = {n: fn.values[n] for n in slow}
        slow_numel = sum(fn.values[n].numel() for n in slow)

        def full(values: dict[str, Tensor]) -> dict[str, Tensor]:
            return {**{n: fn.values[n] for n in fast}, **values}

        per_sample = vmap(grad(lambda v, xi: sq_norm(full(v), xi)), in_dims=(None, 0))
        for x, _ in stream:
            if x.shape[0] == 0:
                continue
            if taps is not None and fast:
                logits = taps.forward(fn, x)
                with torch.enable_grad():
                    out = logits.square().sum()
                deltas = torch.autograd.grad(out, taps.probes(), allow_unused=True)
                taps.accumulate(total, [None if d is None else d.abs() for d in deltas], torch.abs)
            if slow:
                for lo, hi in _sub_chunks(x.shape[0], slow_numel):
                    g = per_sample(slow_values, x[lo:hi])
                    for n in slow:
                        total[n] += g[n].abs().sum(0)
            count += x.shape[0]
    if count:
        for n in fn.names:
            total[n] /= count
    return total


def mas_local_importance(
    model: nn.Module,
    batches: Batches,
    units: slice | None = None,
) -> dict[str, Tensor]:
    """Local (Hebbian) MAS (Aljundi et al. 2018, Sec. 4.2), from forward activations only.

    For a fully connected layer ``y_j^l = ReLU(sum_i theta_ij y_i^{l-1} + b_j)``, the gradient of
    the layer's own output norm ``||y^l||^2`` is ``2 y_i^{l-1} y_j^l`` (zero where the ReLU is
    off, where ``y_j^l = 0`` too), so
    ``Omega_ij = (1/N) sum_n |2 y_i^{l-1}(x_n) y_j^l(x_n)|`` -- Hebb's ``w_ij = x_i x_j`` averaged
    over the data (the seed's derivation). It is computed as ``2 |Y^l|^T |Y^{l-1}| / N`` (a matmul,
    ``|a b| = |a| |b|``), with the absolute value of each per-sample product as MAS prescribes. The
    bias is the weight of a constant input 1: ``Omega_j = (1/N) sum_n |2 y_j^l|``.

    Which layers: every ``nn.Linear`` module the forward pass calls, captured with forward
    hooks. Its ``y^l`` is the output of the ``nn.ReLU`` module applied to it when there is one,
    and its own (linear) output otherwise. The output layer of a
    :class:`~lifelong.nn.model.ContinualModel` is linear, and there the same product with the
    linear output ``z_j`` *is* the gradient of its own ``||z||^2`` (``dz_j/dtheta_ij = h_i``):
    our choice for the heads is this exact form, ``Omega_ji = (1/N) sum |2 z_j h_i|`` over the
    logits of ``units`` (rows of other units get 0), read from a hook on ``model.head`` and mapped
    to the rows of its ``nn.Linear`` layers (:class:`~lifelong.nn.heads.SingleHead` and
    :class:`~lifelong.nn.heads.MultiHead`). A :class:`~lifelong.nn.dhp.DHPSoftmax` layer
    (anywhere in the model) gets the same exact form from a hook on the layer itself: its logits
    ``z_j = sum_i (w_ji + alpha_ji Hebb_ji) h_i + b_j`` give ``dz_j/dw_ji = h_i``, so
    ``Omega(w)_ji = (1/N) sum |2 z_j h_i|`` and ``Omega(b)_j = (1/N) sum |2 z_j|`` for the rows
    it computed, and ``Omega(alpha)_ji = Omega(w)_ji |Hebb_ji|`` (``dz_j/dalpha_ji = Hebb_ji
    h_i``; used only when a penalty regularises plastic parameters). ``eta`` does not enter the
    evaluation forward and gets no entry. Other layers (convolutions) get no entry: they are not
    regularised by this estimator.

    Args:
        model: The model (eval mode is used; flags restored; no backward pass, no buffer change).
        batches: Inputs or ``(x, anything)`` pairs.
        units: Output units passed to the model (``None``: ``model(x)``).

    Returns:
        ``parameter name -> Omega`` for the weights and biases of the layers above.
    """
    from lifelong.nn.dhp import DHPSoftmax
    from lifelong.nn.heads import MultiHead, SingleHead

    names = {m: n for n, m in model.named_modules()}
    plastic_io: list[tuple[DHPSoftmax, Tensor, Tensor, slice | None]] = []

    def plastic_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                     output: Tensor) -> None:
        assert isinstance(module, DHPSoftmax)
        units_ = kwargs.get("units", args[2] if len(args) > 2 else None)
        plastic_io.append((module, args[0], output, module._rows(units_)))
    linear_records: list[list[Any]] = []  # [module, input, output, activated output or None]
    by_output: dict[int, list[Any]] = {}

    def linear_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        rec = [module, inputs[0], output, None]
        linear_records.append(rec)
        by_output[id(output)] = rec

    def relu_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        rec = by_output.get(id(inputs[0]))
        if rec is not None and rec[2] is inputs[0]:
            rec[3] = output

    head = getattr(model, "head", None)
    head_io: list[tuple[Tensor, Tensor]] = []

    def head_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                  output: Tensor) -> None:
        head_io.append((args[0], output))

    totals: dict[str, Tensor] = {}
    count = 0

    def add(name: str, value: Tensor, rows: slice | None = None, like: Tensor | None = None
            ) -> None:
        if name not in totals:
            assert like is not None
            totals[name] = torch.zeros_like(like)
        if rows is None:
            totals[name] += value
        else:
            totals[name][rows] += value

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.ReLU):
            handles.append(m.register_forward_hook(relu_hook))
        elif isinstance(m, DHPSoftmax):
            handles.append(m.register_forward_hook(plastic_hook, with_kwargs=True))
    if isinstance(head, (SingleHead, MultiHead)):
        handles.append(head.register_forward_hook(head_hook, with_kwargs=True))
    kwargs: dict[str, Any] = {} if units is None else {"units": units}
    try:
        with eval_mode(model), torch.no_grad():
            buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
            for x, _ in _inputs(batches):
                if x.shape[0] == 0:
                    continue
                linear_records.clear()
                by_output.clear()
                head_io.clear()
                plastic_io.clear()
                functional_call(model, buffers, (x,), kwargs, strict=False)
                for module, inp, out, act in linear_records:
                    y_in = inp.reshape(-1, inp.shape[-1]).abs()
                    y_out = (out if act is None else act).reshape(-1, out.shape[-1]).abs()
                    prefix = names[module]
                    add(_join(prefix, "weight"), 2.0 * y_out.t() @ y_in, like=module.weight)
                    if module.bias is not None:
                        add(_join(prefix, "bias"), 2.0 * y_out.sum(0), like=module.bias)
                for h, z in head_io:
                    for layer, lname, cols, rows in _head_rows(head, names[head], units):
                        if not isinstance(layer, nn.Linear):
                            continue
                        zc = z[:, cols].abs()
                        add(_join(lname, "weight"), 2.0 * zc.t() @ h.abs(), rows,
                            like=layer.weight)
                        if layer.bias is not None:
                            add(_join(lname, "bias"), 2.0 * zc.sum(0), rows, like=layer.bias)
                for layer, h, z, rows in plastic_io:
                    prefix = names[layer]
                    za = z.reshape(-1, z.shape[-1]).abs()
                    w_omega = 2.0 * za.t() @ h.reshape(-1, h.shape[-1]).abs()
                    hebb = layer.hebb if rows is None else layer.hebb[rows]
                    add(_join(prefix, "weight"), w_omega, rows, like=layer.weight)
                    add(_join(prefix, "alpha"), w_omega * hebb.abs(), rows, like=layer.alpha)
                    if layer.bias is not None:
                        add(_join(prefix, "bias"), 2.0 * za.sum(0), rows, like=layer.bias)
                count += x.shape[0]
    finally:
        for hd in handles:
            hd.remove()
        linear_records.clear()
        by_output.clear()
        head_io.clear()
        plastic_io.clear()
    if count:
        for n in totals:
            totals[n] /= count
    return totals


def _head_rows(head: nn.Module, prefix: str, units: slice | None
               ) -> list[tuple[nn.Module, str, slice, slice]]:
    """``(layer, layer name, logit columns, layer rows)`` of the units a head computed."""
    from lifelong.nn.heads import MultiHead

    n = int(head.num_units)
    lo = 0 if units is None or units.start is None else units.start
    hi = n if units is None or units.stop is None else units.stop
    if isinstance(head, MultiHead):
        out = []
        for t, (off, size) in enumerate(zip(head.offsets, head.sizes)):
            a, b = max(lo, off), min(hi, off + size)
            if a < b:
                out.append((head.heads[t], f"{prefix}.heads.{t}", slice(a - lo, b - lo),
                            slice(a - off, b - off)))
        return out
    return [(head.layer, f"{prefix}.layer", slice(0, hi - lo), slice(lo, hi))]


# ---------------------------------------------------------------------------- SI


def plain_sgd_groups(optimizer: torch.optim.Optimizer | None, params: Sequence[Tensor]
                     ) -> list[dict[str, Any] | None] | None:
    """Each parameter's param group when ``optimizer`` takes the plain SGD step, else ``None``.

    The step of ``torch.optim.SGD`` without momentum, weight decay or ``maximize`` is exactly
    ``delta = -lr * grad`` (the gradient the step used), which lets SI's path integral
    (Zenke et al. 2017, Eq. 3) be accumulated as ``lr * g * grad`` without keeping the previous
    parameters. Any other optimiser (a subclass included) returns ``None``. A parameter the
    optimiser does not hold gets ``None`` in the list (it never moves).
    """
    if optimizer is None or type(optimizer) is not torch.optim.SGD:
        return None
    groups = optimizer.param_groups
    if any(g.get("momentum", 0) != 0 or g.get("weight_decay", 0) != 0 or g.get("maximize", False)
           for g in groups):
        return None
    where = {id(p): g for g in groups for p in g["params"]}
    return [where.get(id(p)) for p in params]


class PathIntegral:
    """SI's per-parameter path integral (Zenke et al. 2017, Eq. 3-5).

    Usage per task: :meth:`begin` with the parameters (and the optimiser); after every backward
    of the *task* loss :meth:`record_gradients`; after every optimiser step :meth:`accumulate`
    (``omega += -g * delta``, ``delta`` the step just taken); at the end :meth:`importance`
    (``omega / ((theta_end - theta_start)^2 + xi)``, Eq. 5). Updates use fused ``torch._foreach``
    ops over the parameter list. A parameter without a gradient in a step counts ``g = 0``.

    Two exact forms of the same sum (chosen by :meth:`begin`):

    * general (any optimiser): ``delta = theta - theta_prev`` from a copy of the parameters
      kept after every step;
    * plain SGD (``torch.optim.SGD`` without momentum, weight decay or ``maximize``, see
      :func:`plain_sgd_groups`): ``delta = -lr * grad`` with ``grad`` the gradient the step used
      (the task gradient plus any penalty's), so ``omega += lr * g * grad`` -- one fused pass
      instead of three and no ``theta_prev`` (about half of SI's per-step memory traffic).
    * plain SGD where the only gradient besides the task's is a known quadratic penalty's,
      ``grad = g + k (theta - m)`` (``quadratic`` given to :meth:`begin`; SI's own penalty,
      ``k = 2 c Omega``): the task gradient need not be recorded at all. With ``u = theta - m``
      and the step ``u' = u - lr grad``, ``lr g = (u - u') - lr k u`` and
      ``u (u - u') = (u^2 - u'^2) / 2 + (u - u')^2 / 2``, so over steps of one learning rate
      from ``u_0`` to ``u_T``, exactly::

          sum_t -g_t delta_t = (1 - lr k / 2) A - (k / 2) (u_0^2 - u_T^2),   A = sum_t lr grad_t^2

      Each step only adds ``lr * grad^2`` to ``A`` (one fused pass, no copy of ``g``); the
      endpoint term is evaluated when the learning rate changes (a new segment starts) and in
      :meth:`importance`. Where ``k = 0`` (no penalty yet, e.g. the first task) ``A`` is the
      plain-SGD form's sum itself, bit for bit. Otherwise the two forms agree up to float
      rounding (about ``eps`` relative to the larger of ``A`` and ``k u^2``).

      :meth:`sgd_step` can moreover take the optimiser's step itself in this form: the
      penalty's gradient, ``theta -= lr * grad`` and ``A += lr * grad^2`` in one compiled pass
      per parameter instead of four torch passes (:mod:`lifelong.native`), bit for bit the same.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self._params: list[Tensor] = []
        self.start: list[Tensor] = []
        self.prev: list[Tensor] = []
        self.grads: list[Tensor] = []
        self.omega: list[Tensor] = []
        self._values: list[Tensor] = []
        self._recorded: list[bool] = []
        self._groups: list[dict[str, Any] | None] | None = None
        self.plain_sgd = False
        self.closed_form = False
        self._reset_closed()

    def _reset_closed(self) -> None:
        """Empties the closed form's state."""
        # per parameter k, m, the current segment's start and learning rate, and
        # A = sum lr grad^2 over the segment (omega holds the closed segments)
        self._k: list[Tensor | None] = []
        self._m: list[Tensor | None] = []
        self._seg_start: list[Tensor] = []
        self._seg_lr: list[float | None] = []
        self._work: list[Tensor] = []
        # sgd_step's fixed operands (addresses held alive by the lists above), per offsets list
        self._kernel_for: Sequence[Tensor | None] | None = None
        self._kernel_args: list[tuple[int, int | None, int | None, int, int] | None] = []

    def begin(self, params: Mapping[str, Tensor],
              optimizer: torch.optim.Optimizer | None = None,
              quadratic: Mapping[str, tuple[Tensor, Tensor]] | None = None) -> None:
        """Starts a task: records ``theta_start`` and resets ``omega``.

        Args:
            params: The parameters whose path integral is kept, by name.
            optimizer: The task's optimiser. When it takes the plain SGD step
                (:func:`plain_sgd_groups`) the SGD form is used; otherwise (or ``None``) the
                general form, which keeps ``theta_prev``.
            quadratic: Declares that every step's gradient is the task gradient plus
                ``k * (theta - m)`` and nothing else, as ``name -> (k, m)`` (parameters not
                named: ``k = 0``; ``{}``: no penalty at all). With the plain SGD step this selects
                the closed form (class docstring), where :meth:`record_gradients` is not needed.
                Ignored with any other optimiser.
        """
        self.names = list(params)
        self._params = [p for p in params.values()]
        self._values = [p.detach() for p in self._params]  # aliases: optimisers update in place
        self.start = [p.detach().clone() for p in self._params]
        self._groups = plain_sgd_groups(optimizer, self._params)
        self.plain_sgd = self._groups is not None
        self.closed_form = self.plain_sgd and quadratic is not None
        self.prev = [] if self.plain_sgd else [p.detach().clone() for p in self._params]
        self.grads = [] if self.closed_form else [torch.zeros_like(p) for p in self._params]
        self.omega = [torch.zeros_like(p) for p in self._params]
        self._recorded = [False] * len(self._params)
        self._reset_closed()
        if self.closed_form:
            assert quadratic is not None and self._groups is not None
            for n, p in params.items():
                k, m = quadratic.get(n, (None, None))
                if k is not None and (k.shape != p.shape or m is None or m.shape != p.shape):
                    raise ValueError(f"PathIntegral: quadratic (k, m) of {n!r} must both have the "
                                     f"parameter's shape {tuple(p.shape)}")
                self._k.append(k)
                self._m.append(m)
            self._seg_start = list(self.start)
            self._seg_lr = self._lrs()
            self._work = [torch.zeros_like(p) for p in self._params]

    def _lrs(self) -> list[float | None]:
        assert self._groups is not None
        return [None if g is None else float(g["lr"]) for g in self._groups]

    def _check(self, accumulating: bool = True) -> None:
        if not self._params:
            raise RuntimeError("PathIntegral: call begin(params) at the start of the task")
        if accumulating and self.plain_sgd and self._groups is None:
            raise RuntimeError("PathIntegral: restored in the plain-SGD form; call "
                               "begin(params, optimizer) before accumulating again")

    def record_gradients(self) -> None:
        """Copies the current ``.grad`` of each parameter (the task-loss gradient when called
        before penalties are back-propagated); missing gradients count as zero. Nothing to do
        in the closed form."""
        self._check()
        if self.closed_form:
            return
        self._recorded = [p.grad is not None for p in self._params]
        present = [i for i, r in enumerate(self._recorded) if r]
        if present:
            torch._foreach_copy_([self.grads[i] for i in present],
                                 [self._params[i].grad.detach() for i in present])

    def accumulate(self) -> None:
        """``omega += -g * (theta - theta_prev)`` after an optimiser step (Eq. 3 discretised).

        Only parameters that have a ``.grad`` after the step can have moved (optimisers skip the
        others, e.g. the heads of other tasks), so the others are skipped; a parameter moved by
        a gradient that is not the task's (a penalty's) has ``g = 0`` and only its
        ``theta_prev`` is updated. In the plain-SGD form ``-(theta - theta_prev)`` is
        ``lr * grad``, read from the ``.grad`` the step used.
        """
        self._check()
        if self.closed_form:
            self._accumulate_closed()
            return
        if self.plain_sgd:
            self._accumulate_sgd()
            return
        moved = [i for i, p in enumerate(self._params) if p.grad is not None]
        if not moved:
            return
        rec = self._recorded
        both = [i for i in moved if rec[i]]
        if both:
            now = [self._values[i] for i in both]
            prev = [self.prev[i] for i in both]
            torch._foreach_sub_(prev, now)  # prev <- theta_prev - theta = -delta
            torch._foreach_addcmul_([self.omega[i] for i in both],
                                    [self.grads[i] for i in both], prev)  # omega += g (-delta)
        torch._foreach_copy_([self.prev[i] for i in moved], [self._values[i] for i in moved])

    def _accumulate_sgd(self) -> None:
        """``omega += lr * g * grad`` for the parameters the SGD step moved (Eq. 3 with
        ``delta = -lr * grad``), one fused op per learning rate."""
        groups = self._groups
        assert groups is not None
        by_lr: dict[float, list[int]] = {}
        for i, p in enumerate(self._params):
            group = groups[i]
            if p.grad is not None and self._recorded[i] and group is not None:
                by_lr.setdefault(float(group["lr"]), []).append(i)
        for lr, idx in by_lr.items():
            torch._foreach_addcmul_([self.omega[i] for i in idx], [self.grads[i] for i in idx],
                                    [self._params[i].grad for i in idx], value=lr)

    def _accumulate_closed(self) -> None:
        """``A += lr * grad^2`` for the parameters the SGD step moved (closed form); a new
        segment starts, at the parameters before this step, where the learning rate changed."""
        lrs = self._lrs()
        if lrs != self._seg_lr:
            for i, (old, new) in enumerate(zip(self._seg_lr, lrs)):
                if old != new:
                    p = self._params[i]
                    before = self._values[i]  # theta before this step: theta + lr grad
                    if p.grad is not None and new:
                        before = before.add(p.grad, alpha=new)
                    self._new_segment(i, before, new)
        by_lr: dict[float, list[int]] = {}
        for i, (p, lr) in enumerate(zip(self._params, lrs)):
            if p.grad is not None and lr is not None:
                by_lr.setdefault(lr, []).append(i)
        for lr, idx in by_lr.items():
            grads = [self._params[i].grad for i in idx]
            torch._foreach_addcmul_([self._work[i] for i in idx], grads, grads, value=lr)

    def _new_segment(self, i: int, at: Tensor, lr: float | None) -> None:
        """Closes parameter ``i``'s segment at ``at`` (into ``omega``) and opens one of ``lr``."""
        self.omega[i].add_(self._segment_work(i, at))
        self._work[i].zero_()
        self._seg_start[i] = at.clone()
        self._seg_lr[i] = lr

    def sgd_step(self, offsets: Sequence[Tensor | None]) -> bool:
        """Takes the optimiser's plain SGD step of the tracked parameters itself, the quadratic
        penalty's gradient and the closed form's ``A += lr * grad^2`` included, in one compiled
        pass per parameter (:func:`lifelong.native.si_sgd_step_kernel`).

        Closed form only (:meth:`begin` with ``quadratic`` and a plain-SGD optimiser). For every
        parameter the optimiser holds: ``grad = g + k theta - k m`` (``g`` the ``.grad`` of the
        task loss, or 0 where it is ``None``; no penalty term where ``k`` is ``None``),
        ``A += lr * grad^2`` and ``theta -= lr * grad`` -- the same numbers, bit for bit, as the
        penalty's :meth:`~lifelong.terms.penalty.QuadraticPenalty.accumulate_gradient`, then
        ``optimizer.step()``, then :meth:`accumulate` -- after which ``.grad`` is set to ``None``
        so that the optimiser's own step skips the parameter. Four memory-bound passes over
        every parameter become one. Call it right before ``optimizer.step()``; :meth:`accumulate`
        after the step then has nothing left to do for these parameters. (At a change of
        learning rate the segment closes at ``theta`` itself rather than at ``theta + lr grad``
        reconstructed after the step: the same sum up to float rounding.)

        Args:
            offsets: ``k * m`` per parameter, in the order of :attr:`names`, exactly as the
                penalty's gradient subtracts it (``None`` where ``k`` is ``None``).

        Returns:
            ``False``, with nothing changed, where the compiled kernel is unavailable or some
            tensor is not a contiguous float32 CPU tensor: the caller takes the torch path.

        Raises:
            ValueError: ``offsets`` does not have one entry per tracked parameter.
        """
        if not self.closed_form:
            return False
        if len(offsets) != len(self.names):
            raise ValueError(f"PathIntegral.sgd_step: offsets needs one entry per tracked "
                             f"parameter ({len(self.names)}: {self.names}), got {len(offsets)}")
        kernel = si_sgd_step_kernel()
        if kernel is None:
            return False
        if self._kernel_for is not offsets:  # the task's fixed operands, checked once
            self._kernel_args = [self._static_args(i, offsets[i]) for i in range(len(self.names))]
            self._kernel_for = offsets
        lrs = self._lrs()
        todo = []
        for i, (p, lr, args) in enumerate(zip(self._params, lrs, self._kernel_args)):
            if lr is None or not p.requires_grad:
                continue  # the optimiser does not move it
            g = p.grad
            if g is None and args is not None and args[1] is None:
                continue  # no gradient, no penalty: nothing moves it
            if args is None or (g is not None and not float32_cpu(g)):
                return False
            todo.append((i, g))
        if lrs != self._seg_lr:
            for i, (old, new) in enumerate(zip(self._seg_lr, lrs)):
                if old != new:
                    self._new_segment(i, self._values[i], new)  # theta before this step
        args = self._kernel_args
        for i, g in todo:
            theta, k, km, work, n = args[i]  # type: ignore[misc]
            kernel(theta, None if g is None else g.data_ptr(), k, km, work, n, lrs[i])
            self._params[i].grad = None
        return True

    def _static_args(self, i: int, offset: Tensor | None
                     ) -> tuple[int, int | None, int | None, int, int] | None:
        """Addresses of parameter ``i``'s fixed kernel operands (``theta``, ``k``, ``k m``,
        ``A``) and its size, or ``None`` if one is not a contiguous float32 CPU tensor."""
        theta, k, work = self._values[i], self._k[i], self._work[i]
        if (k is None) != (offset is None) or not all(
                float32_cpu(t) for t in (theta, k, offset, work) if t is not None):
            return None
        return (theta.data_ptr(), None if k is None else k.data_ptr(),
                None if offset is None else offset.data_ptr(), work.data_ptr(), theta.numel())

    def _segment_work(self, i: int, end: Tensor) -> Tensor:
        """``sum -g delta`` of parameter ``i`` over the current segment, ending at ``end``:
        ``(1 - lr k / 2) A - (k / 2) ((start - m)^2 - (end - m)^2)`` (class docstring)."""
        k, m, lr, work = self._k[i], self._m[i], self._seg_lr[i], self._work[i]
        if k is None or not lr:
            return work.clone()
        drop = (self._seg_start[i] - m).square_().sub_((end - m).square_())
        return work.mul(1.0 - 0.5 * lr * k).sub_(drop.mul_(k).mul_(0.5))

    def _omega(self) -> list[Tensor]:
        """``omega`` so far: in the closed form the closed segments plus the current one."""
        if not self.closed_form:
            return self.omega
        return [w.add(self._segment_work(i, v))
                for i, (w, v) in enumerate(zip(self.omega, self._values))]

    def importance(self, xi: float) -> dict[str, Tensor]:
        """``omega / ((theta_end - theta_start)^2 + xi)`` for the task (Zenke et al. Eq. 5).

        ``omega`` can be slightly negative for a parameter whose steps went against its task
        gradient (noise, momentum, the penalty); such importance is clamped to 0 (a quadratic
        penalty needs ``Omega >= 0``).
        """
        self._check(accumulating=False)
        out = {}
        for n, w, p, s in zip(self.names, self._omega(), self._params, self.start):
            total = p.detach() - s
            out[n] = (w / (total.square() + xi)).clamp_min_(0.0)
        return out

    def clear(self) -> None:
        """Drops the per-task buffers (after :meth:`importance`; :meth:`begin` makes new ones)."""
        self.names, self._params, self._values, self._recorded = [], [], [], []
        self.start, self.prev, self.grads, self.omega = [], [], [], []
        self._groups, self.plain_sgd, self.closed_form = None, False, False
        self._reset_closed()

    def state_dict(self) -> dict[str, Any]:
        """``theta_start``, ``theta_prev`` (empty in the plain-SGD forms), the last gradient
        (empty in the closed form) and ``omega`` so far (the closed form's segments evaluated)
        by parameter name (all empty between tasks), and whether the form was plain SGD."""
        return {"names": list(self.names), "plain_sgd": self.plain_sgd,
                "start": dict(zip(self.names, [t.clone() for t in self.start])),
                "prev": dict(zip(self.names, [t.clone() for t in self.prev])),
                "grads": dict(zip(self.names, [t.clone() for t in self.grads])),
                "omega": dict(zip(self.names, [t.clone() for t in self._omega()]))}

    def load_state_dict(self, state: dict[str, Any], params: Mapping[str, Tensor] | None = None
                        ) -> None:
        """Restores :meth:`state_dict`; ``params`` re-attaches the live parameters (the term
        re-attaches them itself at the next :meth:`begin`). A state saved in a plain-SGD form
        has no ``theta_prev``: it can give :meth:`importance`, but accumulating again needs
        :meth:`begin` with the optimiser."""
        names = list(state["names"])
        self.names = names
        self.plain_sgd = bool(state.get("plain_sgd", False))
        self._groups = None
        self.closed_form = False
        self._reset_closed()
        self.start = [state["start"][n].clone() for n in names]
        self.prev = [] if self.plain_sgd else [state["prev"][n].clone() for n in names]
        self.omega = [state["omega"][n].clone() for n in names]
        grads = state["grads"]
        self.grads = [grads[n].clone() if n in grads else torch.zeros_like(o)
                      for n, o in zip(names, self.omega)]
        if params is not None:
            self._params = [params[n] for n in names]
            self._values = [p.detach() for p in self._params]
            self._recorded = [False] * len(names)
