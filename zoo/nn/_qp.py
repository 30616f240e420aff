"""A differentiable batched quadratic program (OptNet, Amos and Kolter 2017).

``min_z 1/2 z'Qz + p'z  s.t.  Az = b,  Gz <= h``, solved by a batched primal-dual interior
point method (Mehrotra's predictor-corrector) and differentiated by the implicit function
theorem on its KKT conditions at the solution: the backward pass is one linear solve with the
KKT matrix, never a pass back through the solver's iterations.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..solvers._base import SolverStats

__all__ = ["QPLayer", "qp_solve"]

_NAMES = ("Q", "p", "G", "h", "A", "b")


@contextlib.contextmanager
def _lapack_threads(x: Tensor):
    """Batched LU factorizations and solves on one thread on the CPU: the MKL of the torch
    2.14 wheels returns corrupt pivots for batched ``getrf``/``getrs`` of matrices from about
    168 x 168 when it runs on several threads ("DLASWP: parameter 6 was incorrect")."""
    n = torch.get_num_threads()
    if x.device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _default_tol(dtype: torch.dtype) -> float:
    return 1e-13 if dtype == torch.float64 else 1e-5


def _batched(x: Tensor | None, B: int, dims: int) -> Tensor | None:
    if x is None:
        return None
    return x.expand(B, *x.shape[-dims:]) if x.dim() == dims else x


def _check(Q, p, G, h, A, b) -> tuple[int, int, int, int]:
    if p.dim() not in (1, 2):
        raise ValueError(f"p must be (n,) or (batch, n), got shape {tuple(p.shape)}")
    n = p.shape[-1]
    if Q.shape[-2:] != (n, n) or Q.dim() not in (2, 3):
        raise ValueError(f"Q must be (n, n) or (batch, n, n) with n = {n}, got {tuple(Q.shape)}")
    if (G is None) != (h is None) or (A is None) != (b is None):
        raise ValueError("give G with h and A with b (a constraint needs both sides)")
    m = 0 if G is None else G.shape[-2]
    q = 0 if A is None else A.shape[-2]
    for name, x, shape in (("G", G, (m, n)), ("A", A, (q, n))):
        if x is not None and (x.shape[-2:] != shape or x.dim() not in (2, 3)):
            raise ValueError(f"{name} must be (k, {n}) or (batch, k, {n}), got {tuple(x.shape)}")
    for name, x, k in (("h", h, m), ("b", b, q)):
        if x is not None and (x.shape[-1] != k or x.dim() not in (1, 2)):
            raise ValueError(f"{name} must be ({k},) or (batch, {k}), got {tuple(x.shape)}")
    sizes = {x.shape[0] for x, d in ((Q, 3), (p, 2), (G, 3), (h, 2), (A, 3), (b, 2))
             if x is not None and x.dim() == d}  # fmt: skip
    if len(sizes) > 1:
        raise ValueError(f"the batched inputs disagree on the batch size: {sorted(sizes)}")
    for name, x in zip(_NAMES, (Q, p, G, h, A, b)):
        if x is not None and not torch.isfinite(x).all():
            raise ValueError(f"{name} has NaN or infinite entries")
    return (sizes.pop() if sizes else 1), n, m, q


def _kkt_matrix(Q: Tensor, G: Tensor, A: Tensor, d: Tensor) -> Tensor:
    """``[[Q, A', G'], [A, 0, 0], [G, 0, -diag(d)]]``, batched."""
    B, n, _ = Q.shape
    q, m = A.shape[1], G.shape[1]
    K = Q.new_zeros(B, n + q + m, n + q + m)
    K[:, :n, :n] = Q
    K[:, :n, n : n + q] = A.transpose(1, 2)
    K[:, :n, n + q :] = G.transpose(1, 2)
    K[:, n : n + q, :n] = A
    K[:, n + q :, :n] = G
    K[:, n + q :, n + q :] = -torch.diag_embed(d)
    return K


def _max_step(x: Tensor, dx: Tensor) -> Tensor:
    """The largest ``a <= 1`` with ``x + a dx >= 0``, per row."""
    ratio = torch.where(dx < 0, -x / dx, torch.full_like(x, math.inf))
    return ratio.amin(dim=1).clamp(max=1.0) if x.shape[1] else x.new_ones(x.shape[0])


@torch.no_grad()
def _interior_point(Q, p, G, h, A, b, tol: float, max_iter: int):
    """Mehrotra predictor-corrector on the batched KKT system; returns ``z, lam, nu, s, stats``."""
    start = time.perf_counter()
    B, n = p.shape
    m, q = G.shape[1], A.shape[1]
    # start: min 1/2 z'Qz + p'z + 1/2 ||s||^2 with Gz + s = h, Az = b (one linear solve)
    K = _kkt_matrix(Q, G, A, torch.ones_like(h))
    sol = torch.linalg.solve(K, torch.cat([-p, b, h], 1))
    z, nu, w = sol[:, :n], sol[:, n : n + q], sol[:, n + q :]
    s, lam = -w, w.clone()
    if m:
        s = s + (1.0 - s.amin(1, keepdim=True)).clamp(min=0)
        lam = lam + (1.0 - lam.amin(1, keepdim=True)).clamp(min=0)
    Gt, At = G.transpose(1, 2), A.transpose(1, 2)

    def residuals():
        r_d = (Q @ z[..., None] + Gt @ lam[..., None] + At @ nu[..., None])[..., 0] + p
        r_e = (A @ z[..., None])[..., 0] - b
        r_i = (G @ z[..., None])[..., 0] + s - h
        mu = (s * lam).sum(1) / max(m, 1)
        res = torch.stack([r_d.abs().amax(1), _amax(r_e), _amax(r_i), mu], dim=1).amax(1)
        return (r_d, r_e, r_i), mu, res

    res_vec, mu, res = residuals()
    trace, it = [], 0
    while it < max_iter and bool((res > tol).any()):
        it += 1
        active = (res > tol)[:, None]
        K = _kkt_matrix(Q, G, A, s / lam.clamp_min(1e-300) if m else lam)
        LU, piv = torch.linalg.lu_factor(K)
        if not m:  # an equality-constrained QP: one Newton step is the answer
            dz, dnu, _, _ = _direction(LU, piv, res_vec, s, lam, s * lam, n, q)
            z, nu = z + dz * active, nu + dnu * active
        else:
            _, _, dlam, ds = _direction(LU, piv, res_vec, s, lam, s * lam, n, q)  # predictor
            a = torch.minimum(_max_step(s, ds), _max_step(lam, dlam))
            mu_aff = ((s + a[:, None] * ds) * (lam + a[:, None] * dlam)).sum(1) / m
            sigma = (mu_aff / mu.clamp_min(1e-300)).clamp(0, 1) ** 3
            r_c = s * lam + ds * dlam - (sigma * mu)[:, None]
            dz, dnu, dlam, ds = _direction(LU, piv, res_vec, s, lam, r_c, n, q)  # corrector
            a = (0.99 * torch.minimum(_max_step(s, ds), _max_step(lam, dlam))).clamp(max=1.0)
            a = a[:, None] * active
            z, nu, lam, s = z + a * dz, nu + a * dnu, lam + a * dlam, s + a * ds
        res_vec, mu, res = residuals()
        trace.append(res)
    stats = SolverStats(
        nfe=it,
        n_iter=it,
        trace=torch.stack(trace) if trace else p.new_zeros(0, B),
        abs_residual=res,
        rel_residual=res,
        converged_mask=res <= tol,
        wall_time=time.perf_counter() - start,
        stop_mode="abs",
        tol=tol,
        returned="iterate",
    )
    return z, lam, nu, s, stats


def _direction(LU, piv, residuals, s, lam, r_c, n: int, q: int):
    """The Newton direction for complementarity target ``r_c``, from the factored KKT matrix."""
    r_d, r_e, r_i = residuals
    rhs = torch.cat([-r_d, -r_e, -r_i + r_c / lam], 1)
    d = torch.linalg.lu_solve(LU, piv, rhs[..., None])[..., 0]
    dz, dnu, dlam = d[:, :n], d[:, n : n + q], d[:, n + q :]
    return dz, dnu, dlam, (-r_c - s * dlam) / lam


def _amax(r: Tensor) -> Tensor:
    return r.abs().amax(1) if r.shape[1] else r.new_zeros(r.shape[0])


def _kkt_residuals(z, lam, nu, s, Q, p, G, h, A, b):
    """The KKT conditions as functions of the problem's data at a fixed solution."""
    stat = (Q @ z[..., None] + G.transpose(-1, -2) @ lam[..., None])[..., 0]
    stat = stat + (A.transpose(-1, -2) @ nu[..., None])[..., 0] + p
    comp = lam * ((G @ z[..., None])[..., 0] - h)
    eq = (A @ z[..., None])[..., 0] - b
    return stat, comp, eq


class _QPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tol, max_iter, holder, Q, p, G, h, A, b):
        B, n = p.shape
        Qb, Gb, Ab = (_batched(x, B, 2) for x in (Q, G, A))
        hb, bb = (_batched(x, B, 1) for x in (h, b))
        Qb = 0.5 * (Qb + Qb.transpose(1, 2))
        with _lapack_threads(p):
            z, lam, nu, s, stats = _interior_point(Qb, p, Gb, hb, Ab, bb, tol, max_iter)
        holder.append(stats)
        ctx.save_for_backward(z, lam, nu, s, Q, p, G, h, A, b)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gz):
        z, lam, nu, s, Q, p, G, h, A, b = ctx.saved_tensors
        B, n = z.shape
        m, q = lam.shape[1], nu.shape[1]
        Qb, Gb, Ab = (_batched(x, B, 2) for x in (Q, G, A))
        Qb = 0.5 * (Qb + Qb.transpose(1, 2))
        # the KKT Jacobian in (z, lam, nu): [[Q, G', A'], [diag(lam) G, -diag(s), 0], [A, 0, 0]]
        J = z.new_zeros(B, n + m + q, n + m + q)
        J[:, :n, :n] = Qb
        J[:, :n, n : n + m] = Gb.transpose(1, 2)
        J[:, :n, n + m :] = Ab.transpose(1, 2)
        J[:, n : n + m, :n] = lam[..., None] * Gb
        J[:, n : n + m, n : n + m] = -torch.diag_embed(s)
        J[:, n + m :, :n] = Ab
        rhs = torch.cat([gz, gz.new_zeros(B, m + q)], 1)
        with _lapack_threads(J):
            u = torch.linalg.solve(J.transpose(1, 2), rhs[..., None])[..., 0]
        u1, u2, u3 = u[:, :n], u[:, n : n + m], u[:, n + m :]
        inputs = [x.detach().requires_grad_(ctx.needs_input_grad[3 + i]) for i, x in
                  enumerate((Q, p, G, h, A, b))]  # fmt: skip
        wanted = [x for x in inputs if x.requires_grad]
        grads = dict.fromkeys(range(6))
        if wanted:
            with torch.enable_grad():
                Qs = 0.5 * (inputs[0] + inputs[0].transpose(-1, -2))
                outs = _kkt_residuals(z, lam, nu, s, Qs, *inputs[1:])
                got = torch.autograd.grad(outs, wanted, (-u1, -u2, -u3), allow_unused=True)
            it = iter(got)
            for i, x in enumerate(inputs):
                if x.requires_grad:
                    g = next(it)
                    grads[i] = torch.zeros_like(x) if g is None else g
        return (None, None, None, *(grads[i] for i in range(6)))


def qp_solve(
    Q: Tensor,
    p: Tensor,
    G: Tensor | None = None,
    h: Tensor | None = None,
    A: Tensor | None = None,
    b: Tensor | None = None,
    *,
    tol: float | None = None,
    max_iter: int = 30,
) -> tuple[Tensor, SolverStats]:
    """Solve ``min 1/2 z'Qz + p'z  s.t.  Az = b, Gz <= h`` for a batch, differentiably.

    Args:
        Q: ``(n, n)`` or ``(B, n, n)``, symmetric positive definite (its symmetric part is used).
        p: ``(n,)`` or ``(B, n)``.
        G, h: ``(m, n)``/``(B, m, n)`` and ``(m,)``/``(B, m)``: inequalities (optional).
        A, b: ``(k, n)``/``(B, k, n)`` and ``(k,)``/``(B, k)``: equalities (optional, full row
            rank).
        tol: Stop when the largest KKT residual (stationarity, primal residuals and the
            duality measure ``s'lam / m``) is at most this, per problem; default ``1e-13`` in
            float64, ``1e-5`` otherwise.
        max_iter: Interior-point iterations at most.

    Returns:
        ``(z, stats)``: the solution ``(B, n)`` (``(1, n)`` when nothing is batched) and a
        :class:`~zoo.solvers.SolverStats` (``n_iter`` Newton iterations, the residual trace,
        ``converged_mask`` per problem). Gradients flow to every input that requires them, by
        implicit differentiation of the KKT conditions at ``z``.

    Example:
        >>> import torch
        >>> Q = torch.eye(2, dtype=torch.float64); p = torch.tensor([-1.0, -1.0], dtype=Q.dtype)
        >>> G = torch.eye(2, dtype=Q.dtype); h = torch.tensor([0.5, 2.0], dtype=Q.dtype)
        >>> z, stats = qp_solve(Q, p, G, h)   # min 1/2 |z|^2 - z1 - z2, z1 <= 0.5, z2 <= 2
        >>> z.round(decimals=6).tolist(), stats.converged
        ([[0.5, 1.0]], True)
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number or None, got {tol!r}")
    B, n, m, q = _check(Q, p, G, h, A, b)
    if G is None:
        G, h = p.new_zeros(0, n), p.new_zeros(0)
    if A is None:
        A, b = p.new_zeros(0, n), p.new_zeros(0)
    p2 = p if p.dim() == 2 else p.expand(B, n)
    holder: list[SolverStats] = []
    tol = _default_tol(p.dtype) if tol is None else float(tol)
    z = _QPFunction.apply(tol, max_iter, holder, Q, p2, G, h, A, b)
    return z, holder[0]


class QPLayer(nn.Module):
    """An OptNet layer: the solution of a quadratic program whose data are learned or given.

    ``z*(p) = argmin 1/2 z'Qz + p'z  s.t.  Az = b,  Gz <= h``. Each of ``Q, G, h, A, b`` is
    learned unless given in ``fixed`` (a tensor, kept as a buffer), and any of them can be
    passed per call (input-dependent). Learned data are parametrized to keep the problem
    well-posed, as in OptNet: ``Q = L L' + q_eps I``, ``h = G z0 + softplus(s0)`` and
    ``b = A z0`` with ``z0 = exp(log_z0)``, so that ``z0`` is a feasible point whenever ``h``
    is learned, or ``h`` is fixed and ``z0 >= 0`` satisfies it (OptNet's Sudoku: ``G = -I``,
    ``h = 0``).

    Args:
        n: Variables.
        n_ineq: Inequality constraints ``m``.
        n_eq: Equality constraints ``k`` (fewer than ``n``).
        fixed: Problem data to keep fixed, by name (``"Q"``, ``"G"``, ``"h"``, ``"A"``,
            ``"b"``).
        q_eps: The ridge added to a learned ``Q``.
        tol: Interior-point tolerance (see :func:`qp_solve`).
        max_iter: Interior-point iterations at most.

    After a call, :attr:`stats` holds the solve's :class:`~zoo.solvers.SolverStats`.

    Example:
        >>> import torch
        >>> layer = QPLayer(4, n_ineq=3, n_eq=1).double()
        >>> z = layer(torch.randn(5, 4, dtype=torch.float64))
        >>> z.shape, layer.stats.converged
        (torch.Size([5, 4]), True)
    """

    def __init__(
        self,
        n: int,
        n_ineq: int = 0,
        n_eq: int = 0,
        *,
        fixed: Mapping[str, Tensor] | None = None,
        q_eps: float = 1e-4,
        tol: float | None = None,
        max_iter: int = 30,
    ) -> None:
        super().__init__()
        for name, v in (("n", n), ("n_ineq", n_ineq), ("n_eq", n_eq)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "n" else 0):
                raise ValueError(f"{name} must be an int >= {1 if name == 'n' else 0}, got {v!r}")
        if n_eq >= n:
            raise ValueError(f"n_eq={n_eq} equalities would fix all n={n} variables: use fewer")
        fixed = dict(fixed or {})
        unknown = set(fixed) - {"Q", "G", "h", "A", "b"}
        if unknown:
            raise ValueError(f"fixed takes Q, G, h, A and b, got {sorted(unknown)}")
        if not q_eps >= 0:
            raise ValueError(f"q_eps must be >= 0, got {q_eps}")
        self.n, self.n_ineq, self.n_eq, self.q_eps = n, n_ineq, n_eq, q_eps
        self.tol, self.max_iter = tol, max_iter
        shapes = {"Q": (n, n), "G": (n_ineq, n), "h": (n_ineq,), "A": (n_eq, n), "b": (n_eq,)}
        for name, value in fixed.items():
            value = torch.as_tensor(value, dtype=torch.get_default_dtype())
            if tuple(value.shape) != shapes[name]:
                raise ValueError(f"fixed {name} must have shape {shapes[name]}, got "
                                 f"{tuple(value.shape)}")  # fmt: skip
            self.register_buffer(f"fixed_{name}", value)
        self.fixed = frozenset(fixed)
        if "Q" not in fixed:
            self.L = nn.Parameter(torch.eye(n))
        if "G" not in fixed:
            self.G = nn.Parameter(torch.randn(n_ineq, n) / math.sqrt(n))
        if "A" not in fixed:
            self.A = nn.Parameter(torch.randn(n_eq, n) / math.sqrt(n))
        if {"h", "b"} - set(fixed):
            self.log_z0 = nn.Parameter(torch.zeros(n))
        if "h" not in fixed:
            self.s0 = nn.Parameter(torch.ones(n_ineq))
        self.stats: SolverStats | None = None

    def problem(self) -> dict[str, Tensor]:
        """The learned and fixed data ``Q, G, h, A, b``."""
        get = lambda k: getattr(self, f"fixed_{k}")  # noqa: E731
        Q = get("Q") if "Q" in self.fixed else (
            self.L @ self.L.T + self.q_eps * torch.eye(self.n, device=self.L.device,
                                                       dtype=self.L.dtype))  # fmt: skip
        G = get("G") if "G" in self.fixed else self.G
        A = get("A") if "A" in self.fixed else self.A
        z0 = self.log_z0.exp() if hasattr(self, "log_z0") else None
        h = get("h") if "h" in self.fixed else G @ z0 + F.softplus(self.s0)
        b = get("b") if "b" in self.fixed else A @ z0
        return {"Q": Q, "G": G, "h": h, "A": A, "b": b}

    def forward(self, p: Tensor, **data: Tensor) -> Tensor:
        """Solve for the linear term ``p`` ``(B, n)``; ``Q=``, ``G=``, ... override the layer's
        data for this call (per-example tensors with a batch dimension are fine)."""
        unknown = set(data) - {"Q", "G", "h", "A", "b"}
        if unknown:
            raise ValueError(f"a QPLayer takes Q, G, h, A and b per call, got {sorted(unknown)}")
        prob = {**self.problem(), **data}
        G, h = (prob["G"], prob["h"]) if self.n_ineq or "G" in data else (None, None)
        A, b = (prob["A"], prob["b"]) if self.n_eq or "A" in data else (None, None)
        z, self.stats = qp_solve(prob["Q"], p, G, h, A, b, tol=self.tol, max_iter=self.max_iter)
        return z

    def extra_repr(self) -> str:
        return f"n={self.n}, n_ineq={self.n_ineq}, n_eq={self.n_eq}, fixed={sorted(self.fixed)}"
