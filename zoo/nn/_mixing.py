"""SATNet's own algorithm, compiled: the mixing method's coordinate sweeps and the paper's backward.

:class:`~zoo.nn.SATLayer` with ``method="satnet"`` runs the forward and backward passes of the
SATNet paper (Wang, Donti, Wilder and Kolter, ICML 2019) as its authors' package does, in a small
C++ kernel built on first use with the compiler PyTorch's extensions use (``g++`` on Linux):

* **Forward.** Sweeps over the unknown variables in a given order, each one the coordinate step
  ``v_i <- -g_i / ||g_i||`` with ``g_i = sum_{j != i} (S S')_{ij} v_j``, kept cheap by holding
  ``W = S' V`` and updating it by a rank-one term after each variable. It stops when a sweep
  lowers the objective by less than ``eps`` times what the first sweep did, or after
  ``max_iter`` sweeps.
* **Backward.** The adjoint of the coordinate step's fixed point: ``u_i = -P_i (sum_{j != i}
  (S S')_{ij} u_j + a_i) / (||g_i|| + damping)`` with ``P_i = I - v_i v_i'`` and ``a_i`` the
  loss's gradient with respect to ``v_i``, solved by as many Gauss-Seidel sweeps as the forward
  took; then ``dL/dS_i = u_i' W' + v_i' Phi'`` with ``Phi = S' U``, and the given variables'
  vectors receive ``Phi' s_i``. At ``damping = 0`` and a converged forward with a converged
  backward this is the exact implicit gradient (``tests/test_sat.py`` checks it against the
  parallel method's and finite differences, in float64); the paper adds ``damping = 1e-2``.

The sweeps are sequential within a sample and run in parallel over the batch (PyTorch's
intra-op threads).
"""

from __future__ import annotations

import logging
import threading

import torch

__all__ = ["mixing_kernel", "MixingFunction"]

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>

// States are row-major: V and U (N, k), W and Phi (m, k), S (N, m). An update of variable i reads
// and writes its k-vector and W's m rows, so every inner loop runs over k contiguous numbers.

template <typename T>
static inline void row_product(const T* __restrict s, const T* __restrict W, T* __restrict g,
                               int64_t m, int64_t k) {
  for (int64_t c = 0; c < k; ++c) g[c] = 0;
  for (int64_t l = 0; l < m; ++l) {
    const T a = s[l];
    const T* __restrict w = W + l * k;
#pragma omp simd
    for (int64_t c = 0; c < k; ++c) g[c] += a * w[c];
  }
}

template <typename T>
static inline void rank_one(const T* __restrict s, const T* __restrict d, T* __restrict W,
                            int64_t m, int64_t k) {
  for (int64_t l = 0; l < m; ++l) {
    const T a = s[l];
    T* __restrict w = W + l * k;
#pragma omp simd
    for (int64_t c = 0; c < k; ++c) w[c] += a * d[c];
  }
}

// The last variable's pending rank-one update of W, applied in the same pass over W that forms
// the next variable's product: W's rows are read and written once per variable instead of read
// twice and written once (the same operations in the same order as applying it first).
template <typename T>
static inline void update_then_product(const T* __restrict s_prev, const T* __restrict d_prev,
                                       const T* __restrict s, T* __restrict W, T* __restrict g,
                                       int64_t m, int64_t k) {
  for (int64_t c = 0; c < k; ++c) g[c] = 0;
  for (int64_t l = 0; l < m; ++l) {
    const T a = s_prev[l], b = s[l];
    T* __restrict w = W + l * k;
#pragma omp simd
    for (int64_t c = 0; c < k; ++c) {
      const T x = w[c] + a * d_prev[c];
      w[c] = x;
      g[c] += b * x;
    }
  }
}

template <typename T>
static void forward_one(const T* S, const T* snorm, const int64_t* order, int64_t L,
                        const bool* free_, T* V, T* W, T* gnorm, int64_t m, int64_t k,
                        int64_t max_iter, double eps, int64_t* sweeps, double* trace) {
  std::vector<T> g(k), d(k);
  const T* pending = nullptr;  // the row of S whose update (d) W still owes
  double first = 0.0, delta = 0.0;
  int64_t it = 0;
  while (it < max_iter) {
    delta = 0.0;
    for (int64_t q = 0; q < L; ++q) {
      const int64_t i = order[q];
      if (!free_[i]) continue;
      const T* s = S + i * m;
      T* v = V + i * k;
      if (pending) update_then_product(pending, d.data(), s, W, g.data(), m, k);
      else row_product(s, W, g.data(), m, k);
      double nrm = 0.0;
      for (int64_t c = 0; c < k; ++c) {
        g[c] -= snorm[i] * v[c];
        nrm += double(g[c]) * double(g[c]);
      }
      nrm = std::sqrt(nrm);
      const double inv = nrm > 1e-30 ? 1.0 / nrm : 0.0;
      double moved = 0.0;
      for (int64_t c = 0; c < k; ++c) {
        const T nv = nrm > 1e-30 ? T(-g[c] * inv) : v[c];
        d[c] = nv - v[c];
        moved += double(d[c]) * double(d[c]);
        v[c] = nv;
      }
      pending = s;
      gnorm[i] = T(nrm);
      delta += nrm * moved;
    }
    ++it;
    if (it == 1) first = delta;
    trace[it - 1] = first > 0.0 ? delta / first : 0.0;
    if (!(first > 0.0) || (it > 1 && delta < eps * first)) break;
  }
  if (pending) rank_one(pending, d.data(), W, m, k);
  *sweeps = it;
}

template <typename T>
static void backward_one(const T* S, const T* snorm, const int64_t* order, int64_t L,
                         const bool* free_, const T* V, const T* gnorm, const T* a, T* U,
                         T* Phi, int64_t m, int64_t k, int64_t sweeps, double damping) {
  std::vector<T> g(k), d(k);
  const T* pending = nullptr;  // as in forward_one, for Phi
  for (int64_t it = 0; it < sweeps; ++it) {
    for (int64_t q = 0; q < L; ++q) {
      const int64_t i = order[q];
      if (!free_[i]) continue;
      const T* s = S + i * m;
      const T* v = V + i * k;
      T* u = U + i * k;
      if (pending) update_then_product(pending, d.data(), s, Phi, g.data(), m, k);
      else row_product(s, Phi, g.data(), m, k);
      for (int64_t c = 0; c < k; ++c) g[c] -= snorm[i] * u[c];
      g[0] += a[i];
      double along = 0.0;
      for (int64_t c = 0; c < k; ++c) along += double(v[c]) * double(g[c]);
      const double scale = 1.0 / (double(gnorm[i]) + damping);
      for (int64_t c = 0; c < k; ++c) {
        const T nu = T(-(double(g[c]) - along * double(v[c])) * scale);
        d[c] = nu - u[c];
        u[c] = nu;
      }
      pending = s;
    }
  }
  if (pending) rank_one(pending, d.data(), Phi, m, k);
}

std::vector<torch::Tensor> mixing_forward(torch::Tensor S, torch::Tensor V, torch::Tensor free_,
                                          torch::Tensor order, int64_t max_iter, double eps) {
  const int64_t B = V.size(0), N = V.size(1), k = V.size(2), m = S.size(1), L = order.size(1);
  V = V.contiguous().clone();
  S = S.contiguous();
  auto free_c = free_.contiguous();
  auto order_c = order.contiguous();
  auto W = torch::matmul(S.t(), V).contiguous();  // (B, m, k)
  auto snorm = (S * S).sum(1).contiguous();
  auto gnorm = torch::zeros({B, N}, V.options());
  auto sweeps = torch::zeros({B}, torch::dtype(torch::kInt64));
  auto trace = torch::zeros({B, max_iter}, torch::dtype(torch::kFloat64));
  AT_DISPATCH_FLOATING_TYPES(V.scalar_type(), "mixing_forward", [&] {
    const scalar_t* Sp = S.data_ptr<scalar_t>();
    const scalar_t* np = snorm.data_ptr<scalar_t>();
    scalar_t* Vp = V.data_ptr<scalar_t>();
    scalar_t* Wp = W.data_ptr<scalar_t>();
    scalar_t* Gp = gnorm.data_ptr<scalar_t>();
    const bool* Fp = free_c.data_ptr<bool>();
    const int64_t* Op = order_c.data_ptr<int64_t>();
    int64_t* Ip = sweeps.data_ptr<int64_t>();
    double* Rp = trace.data_ptr<double>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        forward_one<scalar_t>(Sp, np, Op + b * L, L, Fp + b * N, Vp + b * N * k,
                              Wp + b * m * k, Gp + b * N, m, k, max_iter, eps, Ip + b,
                              Rp + b * max_iter);
    });
  });
  return {V, W, gnorm, sweeps, trace};
}

std::vector<torch::Tensor> mixing_backward(torch::Tensor S, torch::Tensor V, torch::Tensor free_,
                                           torch::Tensor order, torch::Tensor gnorm,
                                           torch::Tensor a, torch::Tensor sweeps,
                                           double damping) {
  const int64_t B = V.size(0), N = V.size(1), k = V.size(2), m = S.size(1), L = order.size(1);
  S = S.contiguous();
  V = V.contiguous();
  auto free_c = free_.contiguous();
  auto order_c = order.contiguous();
  auto gn = gnorm.contiguous();
  auto ac = a.contiguous();
  auto sw = sweeps.contiguous();
  auto snorm = (S * S).sum(1).contiguous();
  auto U = torch::zeros({B, N, k}, V.options());
  auto Phi = torch::zeros({B, m, k}, V.options());
  AT_DISPATCH_FLOATING_TYPES(V.scalar_type(), "mixing_backward", [&] {
    const scalar_t* Sp = S.data_ptr<scalar_t>();
    const scalar_t* np = snorm.data_ptr<scalar_t>();
    const scalar_t* Vp = V.data_ptr<scalar_t>();
    const scalar_t* Gp = gn.data_ptr<scalar_t>();
    const scalar_t* Ap = ac.data_ptr<scalar_t>();
    scalar_t* Up = U.data_ptr<scalar_t>();
    scalar_t* Pp = Phi.data_ptr<scalar_t>();
    const bool* Fp = free_c.data_ptr<bool>();
    const int64_t* Op = order_c.data_ptr<int64_t>();
    const int64_t* Ip = sw.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        backward_one<scalar_t>(Sp, np, Op + b * L, L, Fp + b * N, Vp + b * N * k, Gp + b * N,
                               Ap + b * N, Up + b * N * k, Pp + b * m * k, m, k, Ip[b],
                               damping);
    });
  });
  return {U, Phi};
}
"""

_CPP_DECLS = r"""
#include <torch/extension.h>
#include <vector>
std::vector<torch::Tensor> mixing_forward(torch::Tensor S, torch::Tensor V, torch::Tensor free_,
                                          torch::Tensor order, int64_t max_iter, double eps);
std::vector<torch::Tensor> mixing_backward(torch::Tensor S, torch::Tensor V, torch::Tensor free_,
                                           torch::Tensor order, torch::Tensor gnorm,
                                           torch::Tensor a, torch::Tensor sweeps,
                                           double damping);
"""

_lock = threading.Lock()
_module = None


def mixing_kernel():
    """The compiled kernel (built once per machine on first use, then loaded from PyTorch's
    extension cache, ``TORCH_EXTENSIONS_DIR``).

    Raises:
        RuntimeError: naming the cause and the way out when it cannot be built (no C++
            compiler, for example).
    """
    global _module
    with _lock:
        if _module is None:
            quiet = logging.getLogger("torch.utils.cpp_extension")
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # its import warns that this machine has no CUDA
            try:
                from torch.utils.cpp_extension import load_inline
            finally:
                quiet.setLevel(level)

            try:
                _module = load_inline(
                    name="zoo_satnet_mixing",
                    cpp_sources=[_CPP_DECLS, _SOURCE],
                    functions=["mixing_forward", "mixing_backward"],
                    extra_cflags=["-O3", "-fopenmp", "-march=native"],
                    extra_ldflags=["-fopenmp"],
                    verbose=False,
                )
            except Exception as err:  # the build's own message is long; keep its last line
                last = str(err).strip().splitlines()[-1:] or ["(no message)"]
                raise RuntimeError(
                    "SATLayer(method='satnet') compiles a small C++ kernel on first use and the "
                    f"build failed ({last[0]}). It needs ninja (pip install 'implicit-zoo[satnet]'), a "
                    "C++ compiler that PyTorch's extensions can use (g++ or clang++, with OpenMP) "
                    "and Python's headers; install them, or use method='parallel' or "
                    "'sequential', which need none (a checkpoint trained with 'satnet' loads "
                    "with zoo.load(name, method='sequential', damping=None): the same sweeps in "
                    "Python, many times slower, stopped by that method's own residual test)."
                ) from err
    return _module


class MixingFunction(torch.autograd.Function):
    """``x = V[..., 0]`` after the forward sweeps; backward: the paper's adjoint sweeps.

    Inputs: ``S`` ``(N, m)``; ``V_fixed`` ``(B, N, k)`` (the given variables' vectors, the truth
    direction's included; differentiable); ``start`` ``(B, N, k)`` (the unknowns' starting unit
    vectors); ``free`` ``(B, N)`` bool; ``order`` ``(B, L)`` int64 (the sweep order, over variable
    indices); ``max_iter``; ``eps``; ``damping``. Outputs: ``x`` ``(B, N)``, the first coordinate of
    every solved vector (differentiable), the sweeps taken ``(B,)`` and every sweep's decrease of the
    objective relative to the first sweep's ``(B, max_iter)`` (zero after a sample stopped).
    """

    @staticmethod
    def forward(ctx, S, V_fixed, start, free, order, max_iter, eps, damping):
        kernel = mixing_kernel()
        V0 = torch.where(free[..., None], start, V_fixed).detach()
        with torch.no_grad():
            V, W, gnorm, sweeps, trace = kernel.mixing_forward(
                S.detach(), V0, free, order, int(max_iter), float(eps)
            )
        ctx.save_for_backward(S, V, W, gnorm, sweeps, free, order)
        ctx.damping = float(damping)
        ctx.mark_non_differentiable(sweeps, trace)
        return V[..., 0].clone(), sweeps, trace

    @staticmethod
    def backward(ctx, dx, _sweeps, _trace):
        S, V, W, gnorm, sweeps, free, order = ctx.saved_tensors
        kernel = mixing_kernel()
        S_ = S.detach()
        a = torch.where(free, dx, torch.zeros_like(dx)).contiguous()
        U, Phi = kernel.mixing_backward(S_, V, free, order, gnorm, a, sweeps, ctx.damping)
        # dL/dS_i = u_i' W' + v_i' Phi' (W = S'V and Phi = S'U are (B, m, k))
        dS = (U @ W.transpose(1, 2) + V @ Phi.transpose(1, 2)).sum(0)
        dV_fixed = torch.where(free[..., None], torch.zeros_like(V), S_ @ Phi)
        return dS, dV_fixed, None, None, None, None, None, None
