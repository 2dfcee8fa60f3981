"""Optional compiled kernels: a C function and a C++ torch operator, built on first use.

On a CPU, a training step of a small network spends much of its time in memory-bound
element-wise passes over the parameters, one per tensor operation, and -- for tensors of a few
thousand elements -- in the fixed cost of each operation (dispatch, allocation, an autograd node),
which right after a backbone's large matrix products costs as much as a large product. Where a
method needs several such operations per step, one loop that reads every operand once does the
same arithmetic in a fraction of the time. The kernels are built with the system's compilers the
first time they are needed and cached in ``native/`` of the user cache
(``$XDG_CACHE_HOME/lifelong``, default ``~/.cache/lifelong``), keyed by a hash of the source, the
flags, the compiler, the torch version and the CPU's vector capability.

Each kernel repeats, operation for operation, the rounding of the torch operations it replaces
(fused multiply-adds where torch's vectorised kernels use them, ``-ffp-contract=off`` elsewhere),
so the compiled path and the torch path give bit-identical results: the kernel is compared with
the torch operations when it is loaded, and not used on a machine where they differ.
Everything falls back to torch operations, silently, where a kernel is unavailable: no C (C++)
compiler, a CPU other than x86-64 with AVX2 and FMA, a failed build, a kernel that rounds
differently, or ``LIFELONG_NATIVE=0`` in the environment. :func:`native_status` says which.

Kernels:

* ``si_sgd_step`` -- SI's plain-SGD step with its quadratic penalty and path integral in one pass
  (:meth:`lifelong.terms.importance.PathIntegral.sgd_step`). Plain C (no Python or torch
  headers), built with ``$CC``/``cc`` in well under a second, loaded with :mod:`ctypes`.
* ``dhp_train_head`` -- DHP-Softmax's training forward (Hebbian update, plastic weights, logits)
  and its backward as *one* autograd node (:class:`lifelong.nn.dhp.DHPSoftmax`): a torch operator
  ``torch.ops.lifelong.dhp_train_head`` in C++ against torch's headers, built with
  ``$CXX``/``c++`` (about 20 s, once; Linux only), loaded with :func:`torch.ops.load_library`. It
  calls torch's own matrix products and sum where the layer's autograd graph does, and repeats
  the element-wise roundings in between, so it is checked bit-identical to the layer's torch
  operations (forward, trace and every gradient) when it is loaded. First-order gradients only:
  a backward with ``create_graph=True`` through it raises (``LIFELONG_NATIVE=0`` gives the torch
  path, which supports higher orders).
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

__all__ = ["dhp_train_head_op", "native_status", "si_sgd_step_kernel",
           "si_sgd_step_reference"]

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

_DHP_SOURCE = r"""
// DHP-Softmax's training step as one torch operator with its own backward (lifelong.native).
// Each step repeats the rounding of the torch operations of lifelong.nn.dhp.DHPSoftmax.forward
// and of their autograd formulas: torch's own mm/addmm/sum where the layer uses them, and
// element-wise loops written as torch's CPU kernels round (fma in addcmul; the one-hot matrix
// products, whose other terms are exact zeros, as a sequential fma over the batch).
#include <torch/library.h>
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <cstring>
#include <cmath>
#include <vector>

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// s_c = 1 / max(n_c, 1), n_c = number of samples of class c (targets -1 count for none):
// onehot / onehot.sum(0).clamp_(min=1)
void class_scale(const int64_t* y, int64_t B, int64_t C, float* s) {
  for (int64_t c = 0; c < C; ++c) s[c] = 0.f;
  for (int64_t b = 0; b < B; ++b) if (y[b] >= 0) s[y[b]] += 1.f;
  for (int64_t c = 0; c < C; ++c) s[c] = 1.f / (s[c] < 1.f ? 1.f : s[c]);
}

// M = A^T (h - O Hebb): row c = sum over the samples b of class c, in batch order, of
// s_c (h_b - Hebb_c)
void class_step(const float* __restrict__ h, const int64_t* y, const float* __restrict__ hebb,
                const float* s, int64_t B, int64_t C, int64_t D, float* __restrict__ M) {
  std::memset(M, 0, sizeof(float) * C * D);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t c = y[b];
    if (c < 0) continue;
    const float a = s[c];
    const float* __restrict__ hb = h + b * D;
    const float* __restrict__ tc = hebb + c * D;
    float* __restrict__ m = M + c * D;
    for (int64_t j = 0; j < D; ++j) m[j] = std::fma(a, hb[j] - tc[j], m[j]);
  }
}

struct DHPTrainHead : public torch::autograd::Function<DHPTrainHead> {
  // h [B, D], targets [B] (int64, -1 = no label), weight/alpha/hebb [C, D], eta 0-dim in
  // [0, 1], bias [C] or none; logits of the rows lo..hi-1 and the updated trace. A target or
  // eta out of range raises before anything is written.
  static variable_list forward(AutogradContext* ctx, Tensor h, Tensor targets, Tensor weight,
                               Tensor alpha, Tensor hebb, Tensor eta, c10::optional<Tensor> bias,
                               int64_t lo, int64_t hi) {
    const int64_t B = h.size(0), D = h.size(1), C = hebb.size(0), R = hi - lo;
    const int64_t* y = targets.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b)
      TORCH_CHECK(y[b] >= -1 && y[b] < C, "dhp_train_head: target ", y[b], " outside [-1, ",
                  C, ")");
    const float e = *eta.data_ptr<float>();
    TORCH_CHECK(e >= 0.f && e <= 1.f, "dhp_train_head: eta = ", e, " outside [0, 1]");
    thread_local std::vector<float> work;
    work.resize(C * D + C);
    float* M = work.data();
    float* s = M + C * D;
    class_scale(y, B, C, s);
    class_step(h.data_ptr<float>(), y, hebb.data_ptr<float>(), s, B, C, D, M);
    Tensor new_hebb = at::empty({C, D}, h.options());
    Tensor plastic = at::empty({R, D}, h.options());
    const float* __restrict__ t = hebb.data_ptr<float>();
    const float* __restrict__ w = weight.data_ptr<float>() + lo * D;
    const float* __restrict__ al = alpha.data_ptr<float>() + lo * D;
    float* __restrict__ nt = new_hebb.data_ptr<float>();
    float* __restrict__ p = plastic.data_ptr<float>();
    // addcmul(Hebb, M, eta)
    for (int64_t i = 0; i < C * D; ++i) nt[i] = std::fma(M[i], e, t[i]);
    const float* __restrict__ ntr = nt + lo * D;
    // addcmul(w, alpha, Hebb')
    for (int64_t i = 0; i < R * D; ++i) p[i] = std::fma(al[i], ntr[i], w[i]);
    Tensor z;
    if (bias.has_value()) {  // F.linear
      Tensor b = R == C ? *bias : bias->narrow(0, lo, R);
      z = at::addmm(b, h, plastic.t());
    } else {
      z = at::mm(h, plastic.t());
    }
    ctx->save_for_backward({h, targets, alpha, hebb, new_hebb, plastic, eta});
    ctx->saved_data["lo"] = lo;
    ctx->saved_data["hi"] = hi;
    ctx->saved_data["bias"] = bias.has_value();
    ctx->mark_non_differentiable({new_hebb});
    ctx->set_materialize_grads(false);
    return {z, new_hebb};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "DHPSoftmax's compiled training step has first-order gradients only (a backward "
                "with create_graph=True went through it); set LIFELONG_NATIVE=0 for the torch "
                "path, which supports higher orders");
    auto saved = ctx->get_saved_variables();
    const Tensor &h = saved[0], &targets = saved[1], &alpha = saved[2], &hebb = saved[3],
                 &new_hebb = saved[4], &plastic = saved[5], &eta = saved[6];
    const int64_t lo = ctx->saved_data["lo"].toInt(), hi = ctx->saved_data["hi"].toInt();
    const bool has_bias = ctx->saved_data["bias"].toBool();
    const int64_t B = h.size(0), C = alpha.size(0), D = alpha.size(1), R = hi - lo;
    if (!grads[0].defined()) return variable_list(9);
    const Tensor& g = grads[0];
    const float e = *eta.data_ptr<float>();
    const int64_t* y = targets.data_ptr<int64_t>();
    thread_local std::vector<float> work;
    work.resize(2 * C * D + C);
    float* M = work.data();
    float* gM = M + C * D;
    float* s = gM + C * D;
    class_scale(y, B, C, s);
    class_step(h.data_ptr<float>(), y, hebb.data_ptr<float>(), s, B, C, D, M);
    // F.linear's backward (addmm, mm_mat1/mat2_backward)
    Tensor g_plastic = at::mm(g.t(), h);
    const bool need_h = ctx->needs_input_grad(0);
    Tensor g_h = need_h ? at::mm(g, plastic) : Tensor();
    Tensor g_bias;
    if (has_bias) {
      std::vector<int64_t> shape{R};
      g_bias = at::sum_to(g, c10::IntArrayRef(shape));
    }
    Tensor g_alpha = at::empty({C, D}, alpha.options());
    Tensor prod = at::empty({C, D}, alpha.options());
    float* __restrict__ ga = g_alpha.data_ptr<float>();
    float* __restrict__ pr = prod.data_ptr<float>();
    Tensor g_weight = g_plastic;
    if (R != C) {  // rows outside lo..hi: zero gradients, as a slice's backward gives
      std::memset(ga, 0, sizeof(float) * C * D);
      std::memset(pr, 0, sizeof(float) * C * D);
      std::memset(gM, 0, sizeof(float) * C * D);
      g_weight = at::zeros({C, D}, alpha.options());
      g_weight.narrow(0, lo, R).copy_(g_plastic);
      if (has_bias) {
        Tensor full = at::zeros({C}, alpha.options());
        full.narrow(0, lo, R).copy_(g_bias);
        g_bias = full;
      }
    }
    // addcmul(w, alpha, Hebb')'s backward: d alpha = G Hebb', d Hebb' = G alpha;
    // addcmul(Hebb, M, eta)'s: d M = d Hebb' eta, d eta = sum(d Hebb' M)
    const float* __restrict__ gp = g_plastic.data_ptr<float>();
    const float* __restrict__ al = alpha.data_ptr<float>();
    const float* __restrict__ nt = new_hebb.data_ptr<float>();
    for (int64_t i = 0; i < R * D; ++i) {
      const int64_t k = lo * D + i;
      ga[k] = gp[i] * nt[k];
      const float gt = gp[i] * al[k];
      gM[k] = gt * e;
      pr[k] = gt * M[k];
    }
    Tensor g_eta = prod.sum();
    if (need_h) {  // mm(A^T, R)'s backward A dM, then addmm(h, O, Hebb)'s: added to dh
      float* __restrict__ gh = g_h.data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) {
        const int64_t c = y[b];
        if (c < 0) continue;
        const float a = s[c];
        const float* __restrict__ m = gM + c * D;
        float* __restrict__ o = gh + b * D;
        for (int64_t j = 0; j < D; ++j) o[j] = o[j] + a * m[j];
      }
    }
    return {g_h, Tensor(), g_weight, g_alpha, Tensor(), g_eta, g_bias, Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor> dhp_train_head(const Tensor& h, const Tensor& targets,
                                          const Tensor& weight, const Tensor& alpha,
                                          const Tensor& hebb, const Tensor& eta,
                                          const c10::optional<Tensor>& bias, int64_t lo,
                                          int64_t hi) {
  auto out = DHPTrainHead::apply(h, targets, weight, alpha, hebb, eta, bias, lo, hi);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY(lifelong, m) {
  m.def("dhp_train_head(Tensor h, Tensor targets, Tensor weight, Tensor alpha, Tensor hebb, "
        "Tensor eta, Tensor? bias, int lo, int hi) -> (Tensor, Tensor)");
  m.impl("dhp_train_head", c10::DispatchKey::CompositeImplicitAutograd, TORCH_FN(dhp_train_head));
}
"""

_CXX_FLAGS = ["-O3", "-std=c++20", "-ffp-contract=off", "-fno-math-errno", "-mavx2", "-mfma",
              "-fPIC", "-shared"]

_dhp_op: Callable[..., tuple[Tensor, Tensor]] | None = None
_dhp_status: str | None = None


def _cache_dir() -> Path:
    from lifelong.data.datasets import user_cache_dir

    return user_cache_dir() / "native"


def _compiler(env: str, names: tuple[str, ...]) -> str | None:
    """The compiler named by ``$env``, else the first of ``names`` on the ``PATH``."""
    for name in (os.environ.get(env), *names):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _unsupported() -> tuple[str | None, str]:
    """``(reason, capability)``: why no kernel can be used here (``None`` if one can)."""
    get_capability = getattr(torch.backends.cpu, "get_cpu_capability", None)  # torch >= 2.1
    capability = get_capability() if get_capability is not None else "unknown"
    if os.environ.get("LIFELONG_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return "disabled by LIFELONG_NATIVE", capability
    if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform == "win32":
        return (f"no kernel for {sys.platform}/{platform.machine()} (x86-64 Linux/macOS only)",
                capability)
    if capability not in ("AVX2", "AVX512"):
        return f"CPU capability {capability} (the kernels need AVX2 and FMA)", capability
    return None, capability


def _build() -> tuple[Callable[..., None] | None, str]:
    """Compiles (or finds in the cache) and loads the SI kernel; ``(None, reason)`` on failure."""
    reason, capability = _unsupported()
    if reason is not None:
        return None, reason
    cc = _compiler("CC", ("cc", "gcc", "clang"))
    if cc is None:
        return None, "no C compiler found (set CC, or install gcc/clang)"
    key = hashlib.sha256("\0".join([_SI_SOURCE, " ".join(_FLAGS), cc, capability,
                                    platform.machine()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"si_sgd_step-{key}.so"
    if not target.exists():
        try:
            target = _compile([cc, *_FLAGS], _SI_SOURCE, "si_sgd_step.c", target)
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


def _compile(command: list[str], source: str, filename: str, target: Path,
             extra: tuple[str, ...] = (), timeout: float = 120.0) -> Path:
    """Builds ``source`` with ``command + [-o out, src] + extra`` into ``target`` (atomically)
    and returns where it is (a temporary directory if the cache is not writable); raises
    ``OSError``/``SubprocessError`` on failure."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        workdir = tempfile.mkdtemp(prefix=".build-", dir=target.parent)
    except OSError:  # no writable cache: build into a temporary directory
        target = Path(tempfile.mkdtemp(prefix="lifelong-native-")) / target.name
        workdir = tempfile.mkdtemp(prefix="lifelong-build-")
    try:
        src = Path(workdir) / filename
        out = Path(workdir) / target.name
        src.write_text(source)
        proc = subprocess.run([*command, "-o", str(out), str(src), *extra], capture_output=True,
                              text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise OSError(f"exit {proc.returncode}: {proc.stderr.strip()[:500]}")
        os.replace(out, target)  # atomic: a concurrent build writes the same bytes
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return target


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


def _torch_paths() -> tuple[str, str]:
    """``(include, lib)`` directories of the installed torch (its headers and libraries)."""
    root = Path(torch.__file__).resolve().parent
    return str(root / "include"), str(root / "lib")


def _build_dhp() -> tuple[Callable[..., tuple[Tensor, Tensor]] | None, str]:
    """Compiles (or finds in the cache), loads and checks ``torch.ops.lifelong.dhp_train_head``;
    ``(None, reason)`` where it cannot be used."""
    reason, capability = _unsupported()
    if reason is not None:
        return None, reason
    if not sys.platform.startswith("linux"):
        return None, f"no compiled torch operator on {sys.platform} (Linux only)"
    if not hasattr(torch.ops.lifelong, "dhp_train_head"):  # not yet loaded in this process
        target, why = _compile_dhp(capability)
        if target is None:
            return None, why
        try:
            torch.ops.load_library(str(target))
        except (OSError, RuntimeError) as exc:
            return None, f"loading {target} failed: {exc}"
        where = f"loaded from {target}"
    else:
        where = "already loaded in this process"
    op = torch.ops.lifelong.dhp_train_head.default
    if not _dhp_matches_torch(op):
        return None, (f"the compiled DHP training step ({where}) does not give the torch "
                      f"operations' numbers on this machine: not used")
    return op, f"compiled DHP training step {where}"


def _compile_dhp(capability: str) -> tuple[Path | None, str]:
    """The library holding ``dhp_train_head``, compiled unless cached; ``(None, reason)`` on
    failure."""
    cxx = _compiler("CXX", ("c++", "g++", "clang++"))
    if cxx is None:
        return None, "no C++ compiler found (set CXX, or install g++/clang++)"
    include, lib = _torch_paths()
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))
    flags = [*_CXX_FLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-I", include,
             "-I", str(Path(include) / "torch" / "csrc" / "api" / "include")]
    libs = ("-L", lib, "-ltorch", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{lib}")
    key = hashlib.sha256("\0".join([_DHP_SOURCE, " ".join(flags), " ".join(libs), cxx,
                                    capability, platform.machine(), torch.__version__]
                                   ).encode()).hexdigest()[:16]
    target = _cache_dir() / f"dhp_train_head-{key}.so"
    if target.exists():
        return target, "cached"
    print(f"lifelong: compiling DHP-Softmax's training step with {cxx} (once, about 20 s; "
          f"cached in {target.parent}; LIFELONG_NATIVE=0 skips it)", file=sys.stderr, flush=True)
    try:
        return _compile([cxx, *flags], _DHP_SOURCE, "dhp_train_head.cpp", target, extra=libs,
                        timeout=600.0), "compiled"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"compiling with {cxx} failed: {exc}"


def _dhp_matches_torch(op: Callable[..., tuple[Tensor, Tensor]]) -> bool:
    """Whether ``op`` gives the logits, the new trace and every gradient of the layer's torch
    operations (:func:`lifelong.nn.dhp.torch_train_head`) bit for bit: with and without a bias,
    all rows or a range, absent, repeated and unlabelled (-1) classes, a non-zero trace, sizes
    with vector tails and the DHP protocol's sizes. Checked once when it is loaded."""
    from lifelong.nn.dhp import torch_train_head

    gen = torch.Generator().manual_seed(0)
    cases = (((23, 6, 37), True, (0, 6)), ((23, 6, 37), False, (0, 6)), ((23, 6, 37), True, (1, 4)),
             ((64, 10, 256), True, (0, 10)))  # the last: the DHP protocol's sizes
    for (B, C, D), has_bias, (lo, hi) in cases:
        h = torch.randn(B, D, generator=gen)
        targets = torch.randint(-1, C - 1, (B,), generator=gen)  # class C-1 absent, -1 present
        weight, alpha, hebb = (torch.randn(C, D, generator=gen) for _ in range(3))
        eta = torch.rand((), generator=gen)
        bias = torch.randn(C, generator=gen) if has_bias else None
        upstream = torch.randn(B, hi - lo, generator=gen)
        results = []
        for fn in (op, torch_train_head):
            leaves = [t.clone().requires_grad_() for t in (h, weight, alpha, eta)]
            b = bias.clone().requires_grad_() if bias is not None else None
            with torch.enable_grad():
                z, new_hebb = fn(leaves[0], targets, leaves[1], leaves[2], hebb, leaves[3], b,
                                 lo, hi)
                grads = torch.autograd.grad(z, leaves + ([b] if b is not None else []), upstream)
            results.append([z.detach(), new_hebb, *grads])
        if not all(torch.equal(a, b) for a, b in zip(*results)):
            return False
    return True


def dhp_train_head_op() -> Callable[..., tuple[Tensor, Tensor]] | None:
    """``torch.ops.lifelong.dhp_train_head``, or ``None`` where it is unavailable.

    Built (or loaded from the cache) and checked on the first call; later calls return the same
    operator. Signature ``(h, targets, weight, alpha, hebb, eta, bias, lo, hi) -> (logits,
    new_hebb)``, the same as :func:`lifelong.nn.dhp.torch_train_head`, for contiguous float32
    CPU tensors and int64 targets (module docstring).
    """
    global _dhp_op, _dhp_status
    if _dhp_status is None:
        _dhp_op, _dhp_status = _build_dhp()
    return _dhp_op


def native_status() -> str:
    """Why each compiled kernel is or is not in use (builds them if not yet tried)."""
    si_sgd_step_kernel()
    dhp_train_head_op()
    return f"si_sgd_step: {_status}; dhp_train_head: {_dhp_status}"


def float32_cpu(t: Tensor) -> bool:
    """Whether ``t`` can be handed to a kernel: a contiguous float32 tensor in CPU memory."""
    return t.dtype == torch.float32 and t.is_cpu and t.is_contiguous()
