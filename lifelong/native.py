"""Optional compiled kernels: small C functions built on first use, loaded with :mod:`ctypes`.

On a CPU, a training step of a small network spends much of its time in memory-bound
element-wise passes over the parameters, one per tensor operation. Where a method needs several
such passes per step, one C loop that reads every operand once does the same arithmetic in a
fraction of the time. The kernels here are plain C (no Python or torch headers): the system's C
compiler builds them in well under a second the first time they are needed, and the library is
cached in ``native/`` of the user cache (``$XDG_CACHE_HOME/lifelong``, default
``~/.cache/lifelong``), keyed by a hash of the source, the flags, the compiler and the CPU's
vector capability.

Each kernel repeats, operation for operation, the rounding of the torch operations it replaces
(fused multiply-adds where torch's vectorised kernels use them, ``-ffp-contract=off`` elsewhere),
so the compiled path and the torch path give bit-identical results: the kernel is compared with
the torch operations when it is loaded, and not used on a machine where they differ.
Everything falls back to torch operations, silently, where a kernel is unavailable: no C
compiler, a CPU other than x86-64 with AVX2 and FMA, a failed build, a kernel that rounds
differently, or ``LIFELONG_NATIVE=0`` in the environment. :func:`native_status` says which.

Kernels:

* ``si_sgd_step`` -- SI's plain-SGD step with its quadratic penalty and path integral in one pass
  (:meth:`lifelong.terms.importance.PathIntegral.sgd_step`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["native_status", "si_sgd_step_kernel", "si_sgd_step_reference"]

_SI_SOURCE = r"""
#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* SI's plain-SGD step for one float32 tensor of n elements (lifelong.native):
 *     G = g + k * theta - km          (g = 0 when g is NULL; G = g when k is NULL)
 *     A     <- A + (lr * G) * G       (SI's path-integral sum, closed form)
 *     theta <- theta - lr * G         (torch.optim.SGD without momentum)
 * with the roundings of torch's CPU kernels for grad.addcmul_(k, theta).sub_(km),
 * torch._foreach_add_(theta, G, alpha=-lr) and torch._foreach_addcmul_(A, G, G, value=lr). */
void lifelong_si_sgd_step(float *restrict theta, const float *restrict g,
                          const float *restrict k, const float *restrict km,
                          float *restrict A, int64_t n, float lr) {
    const float nlr = -lr;
    int64_t i;
    if (k && g) {
        for (i = 0; i < n; ++i) {
            float G = fmaf(k[i], theta[i], g[i]) - km[i];
            A[i] = fmaf(lr * G, G, A[i]);
            theta[i] = fmaf(nlr, G, theta[i]);
        }
    } else if (k) {
        for (i = 0; i < n; ++i) {
            float G = k[i] * theta[i] - km[i];
            A[i] = fmaf(lr * G, G, A[i]);
            theta[i] = fmaf(nlr, G, theta[i]);
        }
    } else if (g) {
        for (i = 0; i < n; ++i) {
            float G = g[i];
            A[i] = fmaf(lr * G, G, A[i]);
            theta[i] = fmaf(nlr, G, theta[i]);
        }
    }
}
"""

_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-mavx2", "-mfma", "-fPIC", "-shared"]

_kernel: Callable[..., None] | None = None
_status: str | None = None


def _cache_dir() -> Path:
    from lifelong.data.datasets import user_cache_dir

    return user_cache_dir() / "native"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build() -> tuple[Callable[..., None] | None, str]:
    """Compiles (or finds in the cache) and loads the kernel; ``(None, reason)`` on failure."""
    if os.environ.get("LIFELONG_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "disabled by LIFELONG_NATIVE"
    if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform == "win32":
        return None, f"no kernel for {sys.platform}/{platform.machine()} (x86-64 Linux/macOS only)"
    get_capability = getattr(torch.backends.cpu, "get_cpu_capability", None)  # torch >= 2.1
    capability = get_capability() if get_capability is not None else "unknown"
    if capability not in ("AVX2", "AVX512"):
        return None, f"CPU capability {capability} (the kernels need AVX2 and FMA)"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC, or install gcc/clang)"
    key = hashlib.sha256("\0".join([_SI_SOURCE, " ".join(_FLAGS), cc, capability,
                                    platform.machine()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"si_sgd_step-{key}.so"
    if not target.exists():
        try:
            _compile(cc, target)
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"compiling with {cc} failed: {exc}"
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as exc:
        return None, f"loading {target} failed: {exc}"
    fn = lib.lifelong_si_sgd_step
    fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64, ctypes.c_float]
    fn.restype = None
    if not _rounds_like_torch(fn):
        return None, f"{target} does not round like torch's operations on this machine: not used"
    return fn, f"compiled kernels loaded from {target}"


def _compile(cc: str, target: Path) -> None:
    """Builds the kernel into ``target`` (atomically) or raises ``OSError``/``SubprocessError``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        workdir = tempfile.mkdtemp(prefix=".build-", dir=target.parent)
    except OSError:  # no writable cache: build into a temporary directory
        target = Path(tempfile.mkdtemp(prefix="lifelong-native-")) / target.name
        workdir = tempfile.mkdtemp(prefix="lifelong-build-")
    try:
        src = Path(workdir) / "si_sgd_step.c"
        out = Path(workdir) / target.name
        src.write_text(_SI_SOURCE)
        proc = subprocess.run([cc, *_FLAGS, "-o", str(out), str(src)], capture_output=True,
                              text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise OSError(f"exit {proc.returncode}: {proc.stderr.strip()[:500]}")
        os.replace(out, target)  # atomic: a concurrent build writes the same bytes
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def si_sgd_step_reference(theta: Tensor, g: Tensor | None, k: Tensor | None,
                          km: Tensor | None, work: Tensor, lr: float) -> None:
    """The torch operations that ``si_sgd_step`` replaces, in place, as the training loop runs
    them: the penalty's gradient (``QuadraticPenalty.accumulate_gradient``: ``g += k theta``,
    ``g -= km``, or ``k theta - km`` without a gradient), the step of ``torch.optim.SGD``
    (``theta -= lr g``) and the closed form's ``A += lr g^2`` (``PathIntegral``). ``g`` is
    modified where given."""
    if k is not None and km is not None:
        g = torch.mul(k, theta).sub_(km) if g is None else g.addcmul_(k, theta).sub_(km)
    if g is None:
        return
    torch._foreach_add_([theta], [g], alpha=-lr)
    torch._foreach_addcmul_([work], [g], [g], value=lr)


def _rounds_like_torch(fn: Callable[..., None]) -> bool:
    """Whether the kernel gives :func:`si_sgd_step_reference`'s numbers bit for bit (every
    branch, a length with a vector tail), checked once when it is loaded."""
    gen = torch.Generator().manual_seed(0)
    n = 1031
    for has_g, has_k in ((True, True), (False, True), (True, False)):
        theta, g, k, m, work = (torch.randn(n, generator=gen) for _ in range(5))
        km = k.mul_(3.0).mul(m)
        ref_theta, ref_work = theta.clone(), work.clone()
        si_sgd_step_reference(ref_theta, g.clone() if has_g else None, k if has_k else None,
                              km if has_k else None, ref_work, 0.37)
        fn(theta.data_ptr(), g.data_ptr() if has_g else None, k.data_ptr() if has_k else None,
           km.data_ptr() if has_k else None, work.data_ptr(), n, 0.37)
        if not (torch.equal(theta, ref_theta) and torch.equal(work, ref_work)):
            return False
    return True


def si_sgd_step_kernel() -> Callable[..., None] | None:
    """The compiled ``si_sgd_step`` function, or ``None`` where it is unavailable.

    Built (or loaded from the cache) on the first call; later calls return the same function.
    Signature ``(theta, g, k, km, A, n, lr)``: five addresses of contiguous float32 CPU buffers
    (``g``, ``k`` and ``km`` may be ``None``: no gradient, no penalty), the element count, and the
    learning rate (module docstring and :meth:`~lifelong.terms.importance.PathIntegral.sgd_step`).
    """
    global _kernel, _status
    if _status is None:
        _kernel, _status = _build()
    return _kernel


def native_status() -> str:
    """Why the compiled kernels are or are not in use (builds them if not yet tried)."""
    si_sgd_step_kernel()
    assert _status is not None
    return _status


def float32_cpu(t: Tensor) -> bool:
    """Whether ``t`` can be handed to a kernel: a contiguous float32 tensor in CPU memory."""
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()
