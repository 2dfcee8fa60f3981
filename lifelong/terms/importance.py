"""Importance estimators of synaptic consolidation, each usable on its own.

* :func:`fisher_diagonal` -- diagonal Fisher information (Kirkpatrick et al. 2017, EWC); variants
  ``true``, ``sample``, ``empirical``, ``predicted`` and ``batched`` (the last for comparison
  only).
* :func:`mas_importance` -- MAS (Aljundi et al. 2018, Eq. 4-5): mean over samples of
  ``|d ||F(x)||^2 / d theta|``, per sample, no labels.
* :func:`mas_local_importance` -- local (Hebbian) MAS (Aljundi et al. 2018, Sec. 4.2):
  ``|2 y_i^{l-1} y_j^l|`` from forward activations only, no backward pass.

One equation serves the Fisher and MAS: with ``z_n`` the logits of sample ``n``, both are

    Omega = (1/N) sum_n sum_r w_nr phi(v_nr^T dz_n/dtheta)

for constant cotangents ``v_nr`` and weights ``w_nr`` read from the logits, and ``phi`` the square
(Fisher: ``d log p_c / dz = e_c - p``; ``true`` sums over every class ``c`` with ``w = p_c``, the
other variants take one label with ``w = 1``) or the absolute value (MAS: ``d ||z||^2 / dz = 2 z``).
One function computes it (:func:`_per_sample_sum`): ``torch.func`` -- ``vmap`` over the samples of
``vjp`` through ``functional_call`` -- with one exact fast path for linear layers behind it
(:class:`_LinearTaps`; 24-38x faster than ``vmap`` alone on the SplitMNIST MLP, measured figures
in :func:`_per_sample_sum`).

Linear layers: ``nn.Linear``, and any module that declares its eval forward to be
``z = a W_eff^T + b`` with ``W_eff = sum_p p * c_p`` through a method
``linear_parameters() -> dict[str, Tensor | None]`` (its parameter names -> multipliers ``c_p``,
``None`` for 1; its parameter ``bias``, if any, is ``b``), e.g. DHP-Softmax's
``{"weight": None, "alpha": Hebb}``. Nothing here depends on the classes of the layers or heads.

All estimators run the model in eval mode through ``torch.func.functional_call`` with *copies* of
its buffers, so BatchNorm running statistics (and any other buffer, e.g. a Hebbian trace) are left
exactly as they were, and they restore every module's train/eval flag afterwards. They return
``name -> tensor`` dicts (same shapes as the parameters, detached). Rows of output units outside
``units`` get zero importance (they do not enter the logits).

Data: ``batches`` is any iterable of input tensors or of ``(x, unit_targets)`` pairs
(:meth:`lifelong.train.loop.TrainContext.task_batches` yields the latter); ``units`` is the slice of
output units whose logits define the model's output (the task's head in task-IL), passed to the
model as ``model(x, units=units)``; ``None`` calls ``model(x)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import chain
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

FISHER_VARIANTS = ("true", "sample", "empirical", "predicted", "batched")

Batches = Iterable[Tensor | tuple[Tensor, Tensor | None]]
# (logits [B, K], unit targets or None) -> cotangents v [B, R, K] and weights w [B, R]
Cotangents = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]]


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
        if callable(declare):
            out.update(_join(prefix, str(name)) for name in declare())
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


def _linear_form(module: nn.Module) -> dict[str, Tensor | None] | None:
    """``parameter name -> multiplier`` of a linear layer (module docstring), else ``None``."""
    if isinstance(module, nn.Linear):
        return {"weight": None}
    declare = getattr(module, "linear_parameters", None)
    return dict(declare()) if callable(declare) else None


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


def _peek(batches: Batches) -> tuple[Tensor | None, Iterator[tuple[Tensor, Tensor | None]]]:
    """The first non-empty input batch (``None`` if there is none) and every non-empty batch."""
    stream = ((x, y) for x, y in _inputs(batches) if x.shape[0] > 0)
    first = next(stream, None)
    return (None, iter(())) if first is None else (first[0], chain([first], stream))


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


# ---------------------------------------------------------------------------- the engine


class _LinearTaps:
    """Per-sample gradient statistics of linear layers without per-sample gradients.

    For a linear layer ``z = a W_eff^T + b``, ``W_eff = sum_p p * c_p`` (module docstring), the
    gradient of a per-sample scalar ``l_n`` is ``dl_n/dp_ji = delta_nj a_ni c_ji`` and
    ``dl_n/db_j = delta_nj`` with ``delta_n = dl_n/dz_n``; square and absolute value are
    multiplicative, so ``sum_n w_n phi(dl_n/dp) = (S^T phi(a)) * phi(c)`` with
    ``S_nj = sum_r w_nr phi(delta_nrj)`` -- a matmul (Goodfellow 2015, "Efficient per-example
    gradient computations"). Every ``delta`` comes from ONE batched backward of the logits, with
    the cotangents ``v_nr``, into a zero "probe" added to each layer's output: in eval mode
    samples do not interact, so ``d(sum_m v_m^T z_m)/dz_n`` is sample ``n``'s own.

    Covered (found by a trial forward on the first batch): linear layers the forward calls
    exactly once, on a ``[B, in]`` input (a layer's parameters are assumed to enter the logits
    only through that call); selected parameters the logits do not depend on at all (the heads
    of other tasks, DHP-Softmax's ``eta`` in eval mode) are zero without any computation.
    """

    def __init__(self, fn: _Functional, x: Tensor):
        self.fn = fn
        selected = set(fn.names)
        candidates: dict[nn.Module, str] = {}
        for prefix, m in fn.model.named_modules():
            form = _linear_form(m)
            if form is not None and any(_join(prefix, k) in selected for k in (*form, "bias")):
                candidates[m] = prefix
        calls: dict[nn.Module, list[bool]] = {m: [] for m in candidates}

        def record(m: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> None:
            a = inputs[0] if inputs else None
            calls[m].append(isinstance(a, Tensor) and a.dim() == 2 and out.dim() == 2
                            and a.shape[0] == x.shape[0])

        leaves = {n: v.clone().requires_grad_(True) for n, v in fn.values.items()}
        handles = [m.register_forward_hook(record) for m in candidates]
        try:
            with torch.enable_grad():
                z = fn(leaves, x)
        finally:
            for hd in handles:
                hd.remove()
        self.layers = {m: p for m, p in candidates.items() if calls[m] == [True]}
        self.covered = {_join(p, k) for m, p in self.layers.items()
                        for k in (*(_linear_form(m) or {}), "bias")} & selected
        others = [n for n in fn.names if n not in self.covered]
        grads = (torch.autograd.grad(z.sum(), [leaves[n] for n in others], allow_unused=True)
                 if others and z.requires_grad else [None] * len(others))
        self.unused = {n for n, g in zip(others, grads) if g is None}
        self._io: dict[nn.Module, tuple[Tensor, Tensor, dict[str, Tensor | None]]] = {}

    def _tap(self, m: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> Tensor:
        if m in self._io:
            raise RuntimeError(f"layer {self.layers[m]!r} was called twice in one forward (once "
                               f"on the first batch); use linear_fast_path=False")
        probe = torch.zeros_like(out, requires_grad=True)
        self._io[m] = (inputs[0].detach(), probe, _linear_form(m) or {})
        return out + probe

    def forward(self, x: Tensor) -> Tensor:
        """Logits of ``x`` with probes attached (hooks live only during this call)."""
        self._io = {}
        handles = [m.register_forward_hook(self._tap) for m in self.layers]
        try:
            with torch.enable_grad():
                return self.fn(self.fn.values, x)
        finally:
            for hd in handles:
                hd.remove()

    def accumulate(self, total: dict[str, Tensor], z: Tensor, v: Tensor, w: Tensor,
                   phi: Callable[[Tensor], Tensor]) -> None:
        """Adds ``sum_n sum_r w_nr phi(v_nr^T dz_n/dp)`` of every covered ``p`` to ``total``."""
        mods = list(self._io)
        probes = [self._io[m][1] for m in mods]
        if v.shape[1] == 1:
            deltas = torch.autograd.grad(z, probes, grad_outputs=v[:, 0], allow_unused=True)
            stats = [None if d is None else phi(d) * w for d in deltas]
        else:
            deltas = torch.autograd.grad(z, probes, grad_outputs=v.transpose(0, 1),
                                         is_grads_batched=True, allow_unused=True)
            stats = [None if d is None else torch.einsum("rbo,br->bo", phi(d), w)
                     for d in deltas]
        for m, s in zip(mods, stats):
            if s is None:
                continue
            a, _, form = self._io[m]
            prefix = self.layers[m]
            sw = s.t() @ phi(a)
            for k, c in form.items():
                t = total.get(_join(prefix, k))
                if t is not None:
                    t += sw if c is None else sw * phi(c)
            t = total.get(_join(prefix, "bias"))
            if t is not None:
                t += s.sum(0)
        self._io = {}


def _chunks(n: int, floats_per_sample: int, budget: int = 1 << 23) -> list[tuple[int, int]]:
    """Splits ``n`` samples into ranges whose per-sample gradients (``floats_per_sample`` each)
    stay within ``budget`` floats (32 MiB in float32; larger chunks measured slower)."""
    step = max(1, budget // max(1, floats_per_sample))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def _per_sample_sum(model: nn.Module, batches: Batches, units: slice | None,
                    params: Mapping[str, Tensor] | None, cotangents: Cotangents,
                    phi: Callable[[Tensor], Tensor], fast: bool) -> dict[str, Tensor]:
    """``(1/N) sum_n sum_r w_nr phi(v_nr^T dz_n/dtheta)`` (module docstring), per parameter.

    ``torch.func``: ``vmap`` over samples of ``vjp`` (``vmap`` over the ``R`` cotangents) through
    ``functional_call``, in chunks of at most 32 MiB of per-sample gradients. With ``fast`` the
    linear layers' parameters go through :class:`_LinearTaps` instead (exact, the same numbers
    up to float rounding; tests compare both with a Python loop). It pays because ``vmap``
    writes every sample's gradient of every parameter: measured with
    ``benchmarks/fisher_speed.py --repeats 3`` (one thread, SplitMNIST task 1 = 12,665 samples in
    batches of 512, MLP 784-256-256 with 2-unit heads, CPU, best of 3, two runs on a shared
    2-core machine), the Fisher ``true`` takes 0.28-0.40 s against 10.7-11.1 s with ``vmap``
    only (28-38x) and MAS 0.22-0.23 s against 5.4-6.1 s (24-28x), max relative difference 1e-6.
    """
    fn = _Functional(model, params, units)
    total = {n: torch.zeros_like(v) for n, v in fn.values.items()}
    count = 0
    with eval_mode(model):
        first, stream = _peek(batches)
        if first is None:
            return total
        taps = _LinearTaps(fn, first) if fast else None
        skip = taps.covered | taps.unused if taps is not None else set()
        rest = [n for n in fn.names if n not in skip]
        fixed = {n: fn.values[n] for n in fn.names if n in skip}
        rest_values = {n: fn.values[n] for n in rest}
        rest_numel = sum(v.numel() for v in rest_values.values())

        def pull(values: dict[str, Tensor], xi: Tensor, vi: Tensor) -> dict[str, Tensor]:
            # per sample: the R vector-Jacobian products v_r^T dz/dtheta ([R, *shape] each)
            back = vjp(lambda p: fn({**fixed, **p}, xi.unsqueeze(0)).squeeze(0), values)[1]
            return vmap(back)(vi)[0]

        per_sample = vmap(pull, in_dims=(None, 0, 0))
        for x, targets in stream:
            z = taps.forward(x) if taps is not None else None
            with torch.no_grad():
                v, w = cotangents(z.detach() if z is not None else fn(fn.values, x), targets)
            if taps is not None and z is not None:
                taps.accumulate(total, z, v, w, phi)
            for lo, hi in _chunks(x.shape[0], v.shape[1] * rest_numel) if rest else ():
                g = per_sample(rest_values, x[lo:hi], v[lo:hi])
                for n in rest:
                    total[n] += torch.einsum("br,br...->...", w[lo:hi], phi(g[n]))
            count += x.shape[0]
    return {n: t / count for n, t in total.items()}


# ---------------------------------------------------------------------------- Fisher and MAS


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

    Per-sample gradients: ``d log p_c / dz = e_c - p`` are the cotangents of the module's one
    engine (module docstring), ``torch.func`` with the exact linear-layer fast path. Computed in
    eval mode (dropout off, BatchNorm on its running statistics, which stay untouched: the
    forward runs on copies of the buffers); every module's train/eval flag is restored.

    Args:
        model: Maps ``x`` (and ``units=``) to logits.
        batches: Inputs, or ``(x, unit_targets)`` pairs (labels needed by ``empirical`` and
            ``batched`` only). Each batch is one chunk (and the unit of ``batched``).
        units: Output units whose logits form ``p(y | x)`` (``None``: the model's whole output).
        variant: ``true``, ``sample``, ``empirical``, ``predicted`` or ``batched``.
        generator: Random generator of ``sample``.
        params: ``name -> parameter`` to estimate (default :func:`select_parameters`).
        linear_fast_path: Reduce linear layers' parameters with the exact matmul identity
            (``False``: ``vmap`` for every parameter).

    Returns:
        ``name -> F`` (same shapes as the parameters; zeros if there was no data).
    """
    if variant not in FISHER_VARIANTS:
        raise ValueError(f"unknown Fisher variant {variant!r}; valid: {', '.join(FISHER_VARIANTS)}")
    if variant == "batched":
        return _batched_fisher(model, batches, units, params)

    def cotangents(z: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor]:
        p = F.softmax(z, dim=-1)
        if variant == "true":  # v_nc = e_c - p_n, w_nc = p_nc
            eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
            return eye.unsqueeze(0) - p.unsqueeze(1), p
        if variant == "sample":
            # drawn where the generator lives (the run's is on the CPU: same draws on any device)
            where = p.device if generator is None else generator.device
            y = torch.multinomial(p.to(where), 1, generator=generator).squeeze(1).to(p.device)
        elif variant == "predicted":
            y = z.argmax(dim=-1)
        else:
            y = _local_targets(targets, units, z.shape[1])
        return (F.one_hot(y, z.shape[1]).to(p) - p).unsqueeze(1), p.new_ones(z.shape[0], 1)

    return _per_sample_sum(model, batches, units, params, cotangents, torch.square,
                           linear_fast_path)


def _batched_fisher(model: nn.Module, batches: Batches, units: slice | None,
                    params: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """The ``batched`` variant: ``(1/B) sum_b (d mean_{n in b} log p(y_n | x_n) / d theta)^2``."""
    fn = _Functional(model, params, units)
    total = {n: torch.zeros_like(v) for n, v in fn.values.items()}
    count = 0
    with eval_mode(model), torch.enable_grad():
        for x, targets in _inputs(batches):
            if x.shape[0] == 0:
                continue
            values = {n: v.clone().requires_grad_(True) for n, v in fn.values.items()}
            logits = fn(values, x)
            y = _local_targets(targets, units, logits.shape[-1])
            mean_logp = F.log_softmax(logits, -1).gather(1, y.view(-1, 1)).mean()
            grads = torch.autograd.grad(mean_logp, list(values.values()), allow_unused=True)
            for n, g in zip(values, grads):
                if g is not None:
                    total[n] += g.square()
            count += 1
    return {n: t / max(count, 1) for n, t in total.items()}


def mas_importance(
    model: nn.Module,
    batches: Batches,
    units: slice | None = None,
    params: Mapping[str, Tensor] | None = None,
    linear_fast_path: bool = True,
) -> dict[str, Tensor]:
    """MAS importance (Aljundi et al. 2018, Eq. 4-5): ``Omega = (1/N) sum_n |g(x_n)|`` with
    ``g(x) = d ||F(x)||_2^2 / d theta`` per sample, ``F`` the logits of ``units``.

    Labels are not used, so unlabelled data serves. ``d ||z||^2 / dz = 2 z`` is the cotangent of
    the module's one engine (``torch.func``, with the exact linear-layer fast path). Eval mode,
    buffers untouched, train/eval flags restored.

    Args:
        model: Maps ``x`` (and ``units=``) to logits.
        batches: Inputs or ``(x, anything)`` pairs; each batch is one chunk.
        units: Output units forming ``F(x)`` (``None``: the whole output).
        params: ``name -> parameter`` to estimate (default :func:`select_parameters`).
        linear_fast_path: As in :func:`fisher_diagonal`.

    Returns:
        ``name -> Omega`` (same shapes as the parameters; zeros if there was no data).
    """
    def cotangents(z: Tensor, _: Tensor | None) -> tuple[Tensor, Tensor]:
        return 2.0 * z.unsqueeze(1), z.new_ones(z.shape[0], 1)

    return _per_sample_sum(model, batches, units, params, cotangents, torch.abs,
                           linear_fast_path)


# ---------------------------------------------------------------------------- local MAS


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
    over the data. It is computed as ``2 |Y^l|^T |Y^{l-1}| / N`` (a matmul, ``|a b| = |a| |b|``).
    The bias is the weight of a constant input 1: ``Omega_j = (1/N) sum_n |2 y_j^l|``.

    Which layers: every linear layer (``nn.Linear`` or a module declaring
    ``linear_parameters()``, module docstring) the forward pass calls, captured with forward
    hooks. Its ``y^l`` is the output of the ``nn.ReLU`` module applied to it when there is one,
    and its own (linear) output otherwise -- there (output layers) the product is exactly the
    gradient of the layer's own ``||z||^2``. A parameter ``p`` with multiplier ``c_p`` gets
    ``Omega(p) = Omega(weight) * |c_p|`` (``dz_j/dp_ji = c_ji y_i^{l-1}``; DHP-Softmax's
    ``alpha``: ``|Hebb|``). Rows outside ``units``: a module of the model that declares
    ``output_rows(units) -> [(layer, rows), ...]`` (the heads) names the rows of its layers that
    compute ``units``; the other rows of those layers get 0, and layers not called (other tasks'
    heads) get no entry. Other layers (convolutions) get no entry.

    Args:
        model: The model (eval mode is used; flags restored; no backward pass, no buffer change).
        batches: Inputs or ``(x, anything)`` pairs.
        units: Output units passed to the model (``None``: ``model(x)``).

    Returns:
        ``parameter name -> Omega`` for the parameters of the layers above.
    """
    names = {m: n for n, m in model.named_modules()}
    rows: dict[nn.Module, slice] = {}
    for m in model.modules():
        declare = getattr(m, "output_rows", None)
        if callable(declare):
            rows = dict(declare(units))
            break
    records: list[list[Any]] = []  # [module, input, output, form, activated output or None]
    by_output: dict[int, list[Any]] = {}

    def linear_hook(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        rec = [module, inputs[0], output, _linear_form(module) or {}, None]
        records.append(rec)
        by_output[id(output)] = rec

    def relu_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        rec = by_output.get(id(inputs[0]))
        if rec is not None and rec[2] is inputs[0]:
            rec[4] = output

    totals: dict[str, Tensor] = {}
    count = 0

    def add(name: str, value: Tensor) -> None:
        totals[name] = totals[name] + value if name in totals else value.clone()

    handles = [m.register_forward_hook(linear_hook) for m in model.modules()
               if _linear_form(m) is not None]
    handles += [m.register_forward_hook(relu_hook) for m in model.modules()
                if isinstance(m, nn.ReLU)]
    kwargs: dict[str, Any] = {} if units is None else {"units": units}
    try:
        with eval_mode(model), torch.no_grad():
            buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
            for x, _ in _inputs(batches):
                if x.shape[0] == 0:
                    continue
                records.clear()
                by_output.clear()
                functional_call(model, buffers, (x,), kwargs, strict=False)
                for module, a, z, form, act in records:
                    y_in = a.reshape(-1, a.shape[-1]).abs()
                    y_out = (z if act is None else act).reshape(-1, z.shape[-1]).abs()
                    if module in rows:  # only the rows that compute the model's units
                        keep = torch.zeros(z.shape[-1], dtype=y_out.dtype, device=y_out.device)
                        keep[rows[module]] = 1.0
                        y_out = y_out * keep
                    sw = 2.0 * y_out.t() @ y_in
                    prefix = names[module]
                    for k, c in form.items():
                        add(_join(prefix, k), sw if c is None else sw * c.abs())
                    if isinstance(getattr(module, "bias", None), Tensor):
                        add(_join(prefix, "bias"), 2.0 * y_out.sum(0))
                count += x.shape[0]
    finally:
        for hd in handles:
            hd.remove()
        records.clear()
        by_output.clear()
    return {n: t / count for n, t in totals.items()}
