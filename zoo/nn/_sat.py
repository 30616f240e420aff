"""A differentiable MAXSAT layer (SATNet, Wang, Donti, Wilder and Kolter, ICML 2019).

Each of the layer's variables (a truth direction ``v_T``, the ``n`` problem variables and ``aux``
hidden ones) is a unit vector ``v_i`` in ``R^k``; ``m`` learned clauses ``S`` (one row per
variable) define the low-rank semidefinite relaxation of MAXSAT, ``min <S S', V'V>``. A known
variable with probability ``z_i`` is fixed at ``v_i = -cos(pi z_i) v_T + sin(pi z_i) u_i`` (``u_i``
a fixed unit vector orthogonal to ``v_T``); the others are solved for, and read out as
``z_o = arccos(-v_o' v_T) / pi``.

The solve: the mixing method, block coordinate descent ``v_o <- -g_o / ||g_o||`` with
``g_o = sum_{j != o} (S S')_{oj} v_j`` over the unknown variables in turn (``method=
"sequential"``, the paper's), or every variable updated at once and accelerated by the zoo's
Anderson solver (``"parallel"``: one batched matrix product an iteration instead of a
Python-level loop over variables), or the SATNet package's own algorithm, forward and backward, in
a compiled kernel (``"satnet"``: :mod:`zoo.nn._mixing`). Updated all at once, the coordinate step itself can
oscillate forever (two coupled variables swapping signs: on SATNet's 9x9 Sudoku layer it never
settles), so the parallel update is proximal: ``T(V)_o = (lam v_o - g_o) / ||lam v_o - g_o||``
with ``lam = prox * ||S||_2^2``, a step that keeps each variable near where it was. A fixed
point of the coordinate step (``v_o = -g_o / ||g_o||``) is one of ``T``'s for every ``lam``: the
weight changes how the iteration approaches it. The converse does not hold: where ``lam >
||g_o||``, a vector pointing along ``g_o`` (a coordinate maximum) is also fixed. With
``prox >= 1`` no plain iteration increases the objective: the update minimizes
``2 <g, D> + lam ||D||^2`` over the steps ``D`` that keep the vectors unit, which bounds the
objective's change ``2 <g, D> + <D, C_off D>`` (``C_off`` the off-diagonal part of ``S S'``,
whose largest eigenvalue is below ``||S||_2^2``).

The gradient: the implicit function theorem on ``V = T(V; S, z_in)`` gives the exact gradient of
the relaxation's solution, solved by the zoo's :class:`~zoo.solvers.ImplicitGrad` (the paper's
backward pass adds a proximal term ``prox_lam`` to the same linear system and runs a fixed
number of sweeps). The proximal weight changes the linear system's conditioning, not its
answer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..solvers import Anderson, Equilibrium, FixedPointMap, ImplicitGrad, SolverStats
from ..solvers._grad import AtFixedPoint
from ._mixing import MixingFunction

__all__ = ["SATLayer"]


def _probability(first: Tensor) -> Tensor:
    """A solved vector's probability ``arccos(-v' v_T) / pi`` from its first coordinate (clamped
    inside ``(-1, 1)``, where arccos' gradient is finite)."""
    return torch.arccos((-first).clamp(-1.0 + 1e-6, 1.0 - 1e-6)) / math.pi


class _Reduced(NamedTuple):
    """One solve's map on the unknown variables (:meth:`SATLayer._map`)."""

    T: FixedPointMap  # the proximal update on flattened (B, k F) states, also row by row
    V0: Tensor  # its start, (B, k F)
    read: Callable[[Tensor], Tensor]  # a (B, k F) state -> (B, n) probabilities
    gather: Callable[[Tensor], Tensor]  # a full (B, N, k) state -> T's (B, k F)
    full0: Tensor  # the full start (B, N, k) that the sequential sweeps take
    fixed: Tensor  # the fixed rows' mask (B, N, 1)


class SATLayer(nn.Module):
    """A SATNet layer: complete partially known assignments by a learned MAXSAT relaxation.

    Args:
        n: Problem variables (inputs and outputs of the layer).
        m: Clauses (the rank of the learned clause matrix ``S``).
        aux: Hidden variables the clauses may use.
        k: Dimension of each variable's vector; default ``ceil(sqrt(2 (n + 1 + aux))) + 1``, the
            rank at which the relaxation's low-rank solutions are its global optima.
        method: ``"sequential"`` (the paper's coordinate sweeps), ``"parallel"`` (simultaneous
            proximal updates, Anderson-accelerated), both differentiated by ``grad``; or
            ``"satnet"``: the paper's algorithm as its authors' package runs it, in a C++ kernel
            compiled on first use (sweeps in the given order until one lowers the objective by
            less than ``tol`` times the first sweep did; backward: as many Gauss-Seidel sweeps on
            the adjoint system, with ``damping`` added to its diagonal).
        prox: The proximal weight of the simultaneous update, as a multiple of the clauses'
            largest squared singular value ``||S||_2^2`` (``0``: the bare coordinate step, which
            may oscillate; ``>= 1``: every plain iteration lowers the objective or keeps it). It
            is the map the parallel solve iterates and the implicit gradient differentiates, in
            both methods; it changes their convergence, not their fixed point.
        tol: Stop when the largest change of a variable's vector over one sweep (sequential),
            the relative residual ``||T(V) - V|| / ||T(V)||`` over the unknown variables
            (parallel), or a sweep's decrease of the objective relative to the first sweep's
            (satnet; the package's ``eps``, 1e-4) is at most this.
        max_iter: Sweeps (sequential) or Anderson iterations (parallel) at most.
        compact: Parallel method only: stop evaluating each sample's update once its own solve
            has reached ``tol`` (the solver's per-sample batch compaction), so that a batch's
            late iterations cost only its slow samples. Each sample still returns an iterate
            within ``tol``; without it, a settled sample keeps iterating with the batch (and
            may return a later, lower-residual iterate).
        grad: The gradient mode, one that differentiates at the fixed point (default
            ``ImplicitGrad(tol=1e-6, max_iter=200)``; a ``PhantomGrad`` is cheaper and
            inexact). Refused with ``method="satnet"``, which has the paper's backward.
        damping: ``method="satnet"`` only: what the backward adds to each variable's
            ``||g_i||`` (the package's ``prox_lam``; default 1e-2). ``0`` with converged
            sweeps gives the exact implicit gradient.
        seed: Seed of the fixed random directions (the unknowns' starting vectors, the inputs'
            ``u_i``, the sweep order): the layer is deterministic.
        random_start: In training mode, start the unknowns from unit vectors drawn afresh at
            every call (from torch's global generator, so ``seed_everything`` repeats them), as
            the paper's code does at every call; evaluation keeps the fixed start, so that its
            results repeat. Where the relaxation has several local solutions (``k`` below
            ``sqrt(2 N)``), the clauses then cannot rely on the one a fixed start leads to.
            With ``method="satnet"`` the sweep order is drawn afresh too, as the package does.

    Inputs: ``z`` ``(B, n)`` probabilities in ``[0, 1]`` and ``is_input`` ``(B, n)`` (bool or
    0/1): which entries are given. Output: ``(B, n)``, the given entries unchanged and the others
    solved. After a call, :attr:`stats` holds the solve's :class:`~zoo.solvers.SolverStats`.

    Example:
        >>> import torch
        >>> layer = SATLayer(3, m=4, aux=1).double()
        >>> z = torch.tensor([[1.0, 0.0, 0.5]], dtype=torch.float64)
        >>> out = layer(z, torch.tensor([[True, True, False]]))
        >>> out.shape, bool(out[0, :2].eq(z[0, :2]).all()), layer.stats.converged
        (torch.Size([1, 3]), True, True)
    """

    def __init__(
        self,
        n: int,
        m: int,
        aux: int = 0,
        *,
        k: int | None = None,
        method: str = "sequential",
        prox: float = 0.5,
        tol: float = 1e-5,
        max_iter: int = 100,
        compact: bool = False,
        grad: AtFixedPoint | None = None,
        seed: int = 0,
        random_start: bool = False,
        damping: float | None = None,
    ) -> None:
        super().__init__()
        for name, v, low in (("n", n, 1), ("m", m, 1), ("aux", aux, 0), ("max_iter", max_iter, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if method not in ("sequential", "parallel", "satnet"):
            raise ValueError(f"method must be 'sequential', 'parallel' or 'satnet', got {method!r}")
        if method == "satnet":
            if grad is not None:
                raise ValueError(
                    "method='satnet' differentiates by the paper's backward sweeps: leave grad "
                    "unset (set damping to change it), or use method='sequential' or 'parallel' "
                    f"with {type(grad).__name__}"
                )
            damping = 1e-2 if damping is None else damping
            if isinstance(damping, bool) or not (
                isinstance(damping, (int, float)) and damping >= 0
            ):
                raise ValueError(f"damping must be a number >= 0, got {damping!r}")
        elif damping is not None:
            raise ValueError(
                "damping is the backward of method='satnet'; the other methods are "
                f"differentiated by grad, so it would change nothing (method={method!r})"
            )
        if not (isinstance(tol, (int, float)) and tol > 0):
            raise ValueError(f"tol must be a positive number, got {tol!r}")
        if isinstance(prox, bool) or not (isinstance(prox, (int, float)) and prox >= 0):
            raise ValueError(f"prox must be a number >= 0, got {prox!r}")
        if not isinstance(compact, bool):
            raise ValueError(f"compact must be True or False, got {compact!r}")
        if not isinstance(random_start, bool):
            raise ValueError(f"random_start must be True or False, got {random_start!r}")
        if compact and method != "parallel":
            raise ValueError(
                "compact=True needs method='parallel': the sequential sweeps stop when every "
                "sample has settled and have no per-sample batch to shrink"
            )
        if grad is None and method != "satnet":
            grad = ImplicitGrad(tol=1e-6, max_iter=200)
        if grad is not None and not isinstance(grad, AtFixedPoint):
            raise ValueError(
                f"a SATLayer differentiates at its fixed point: use ImplicitGrad or PhantomGrad, "
                f"not {type(grad).__name__} (its sequential sweeps are not the map it would "
                "unroll)"
            )
        N = n + 1 + aux
        k = math.ceil(math.sqrt(2 * N)) + 1 if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ValueError(f"k must be an int >= 2, got {k!r}")
        self.n, self.m, self.aux, self.k = n, m, aux, k
        self.method, self.tol, self.max_iter, self.grad = method, float(tol), max_iter, grad
        self.prox, self.compact, self.random_start = float(prox), compact, random_start
        self.damping = None if damping is None else float(damping)
        gen = torch.Generator().manual_seed(seed)
        # the reference's initial clause scale: N(0, 1/2 / (N + m))
        self.S = nn.Parameter(torch.randn(N, m, generator=gen) * math.sqrt(0.5 / (N + m)))
        dirs = torch.randn(N, k, generator=gen)
        dirs[:, 0] = 0.0  # orthogonal to the truth direction e_0
        self.register_buffer("dirs", dirs / dirs.norm(dim=1, keepdim=True), persistent=False)
        start = torch.randn(N, k, generator=gen)
        self.register_buffer("start", start / start.norm(dim=1, keepdim=True), persistent=False)
        self.register_buffer("order", torch.randperm(N - 1, generator=gen) + 1, persistent=False)
        self.stats: SolverStats | None = None

    def extra_repr(self) -> str:
        return (
            f"n={self.n}, m={self.m}, aux={self.aux}, k={self.k}, method={self.method!r}, "
            f"prox={self.prox}"
            + (", compact=True" if self.compact else "")
            + (", random_start=True" if self.random_start else "")
            + (f", damping={self.damping}" if self.damping is not None else "")
        )

    # -- the relaxation ------------------------------------------------------------------------

    def _check(self, z: Tensor, is_input: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.n:
            raise ValueError(f"z must be (batch, {self.n}), got shape {tuple(z.shape)}")
        if is_input.shape != z.shape:
            raise ValueError(
                f"is_input must have z's shape {tuple(z.shape)}, got {tuple(is_input.shape)}"
            )
        if not torch.isfinite(z).all() or z.min() < 0 or z.max() > 1:
            raise ValueError("z must hold probabilities in [0, 1] (no NaN)")
        known = is_input.bool()
        if known.all():
            raise ValueError("every variable is given: there is nothing for the layer to solve")
        return known

    def _known(self, z: Tensor, known: Tensor) -> tuple[Tensor, Tensor]:
        """The fixed vectors ``(B, N, k)`` (truth, given inputs; zero elsewhere) and the mask of
        fixed rows ``(B, N, 1)``."""
        B = z.shape[0]
        full_z = torch.cat([z.new_ones(B, 1), z, z.new_zeros(B, self.aux)], 1)  # truth: z = 1
        fixed = torch.cat([known.new_ones(B, 1), known, known.new_zeros(B, self.aux)], 1)
        angle = math.pi * full_z[..., None]
        e0 = torch.zeros_like(self.dirs[0]).index_fill_(0, torch.tensor(0, device=z.device), 1.0)
        vec = -torch.cos(angle) * e0 + torch.sin(angle) * self.dirs
        return torch.where(fixed[..., None], vec, torch.zeros_like(vec)), fixed[..., None]

    def _starts(self, B: int, z: Tensor) -> Tensor:
        """The unknowns' starting vectors ``(B, N, k)``: the fixed ones, or in training mode
        with ``random_start`` unit vectors drawn for this call."""
        N, k = self.start.shape
        if not (self.random_start and self.training):
            return self.start.to(z.dtype).expand(B, N, k)
        V = torch.randn(B, N, k, dtype=z.dtype, device=z.device)
        return V / V.norm(dim=2, keepdim=True).clamp_min(1e-30)

    def _lam(self) -> float:
        """``prox * ||S||_2^2`` (power iteration from a fixed start; a scale, not a bound that
        must be exact)."""
        if self.prox == 0:
            return 0.0
        with torch.no_grad():
            S = self.S.detach()
            v = torch.ones(S.shape[1], dtype=S.dtype, device=S.device)
            for _ in range(20):
                v = S.T @ (S @ v)
                v = v / v.norm().clamp_min(1e-30)
            return self.prox * float((S @ v).square().sum())

    def _map(self, z: Tensor, known: Tensor) -> _Reduced:
        """``T`` on the unknown variables only, and what reads the solution out.

        Each sample's unknown rows come first in ``rows`` ``(B, F)`` (``F`` the most unknowns
        of any sample; ``real`` marks the rows that are a sample's own, the rest is padding that
        ``T`` leaves where it is). The known rows' pull on every unknown one, ``(S S')_{uK} V_K``,
        is computed once per solve, so an iteration is one ``(k, F) x (F, F)`` product a sample
        instead of an ``(N, N)`` one. States are ``(B, k, F)``, flattened, a variable's vector a
        column; padding rows read as probability 0.
        """
        V_fixed, fixed = self._known(z, known)
        B, N, k = V_fixed.shape
        free = ~fixed[..., 0]
        count = free.sum(1)
        F = int(count.max())
        rows = torch.argsort((~free).to(torch.int8), dim=1, stable=True)[:, :F]
        real = (torch.arange(F, device=z.device)[None, :] < count[:, None])[:, None, :]
        S = self.S.to(z.dtype)
        C = S @ S.T
        zero = torch.zeros((), dtype=C.dtype, device=C.device)
        pair = real.transpose(1, 2) & real
        C_ff = torch.where(pair, C[rows[:, :, None], rows[:, None, :]], zero)
        shift = (torch.diagonal(C)[rows] + self._lam())[:, None, :]
        # states are (B, k, F), a variable's vector a column: ``V' C`` is the faster product
        pull = torch.where(real, (V_fixed.transpose(1, 2) @ S) @ S[rows].transpose(1, 2), zero)

        def update(V: Tensor, C_ff: Tensor, pull: Tensor, shift: Tensor, real: Tensor) -> Tensor:
            g = V @ C_ff + pull - shift * V
            new = -g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
            return torch.where(real, new, V).reshape(V.shape[0], k * F)

        def T(flat: Tensor) -> Tensor:
            return update(flat.view(B, k, F), C_ff, pull, shift, real)

        held: list[Tensor] = []  # the last rows' gathered operands (a compacted solve's working
        # set stays the same for many iterations; gathering C_ff costs as much as a product)

        def T_rows(flat: Tensor, idx: Tensor) -> Tensor:
            if not held or not torch.equal(held[0], idx):
                held[:] = [idx.clone(), C_ff[idx], pull[idx], shift[idx], real[idx]]
            return update(flat.view(len(idx), k, F), *held[1:])

        starts = self._starts(B, z)
        V0 = starts.gather(1, rows[..., None].expand(B, F, k)).transpose(1, 2)

        def read(flat: Tensor) -> Tensor:
            first = flat.view(B, k, F)[:, 0]
            p = torch.where(real[:, 0], _probability(first), torch.zeros_like(first))
            return p.new_zeros(B, N).scatter(1, rows, p)[:, 1 : self.n + 1]

        def gather(V: Tensor) -> Tensor:
            return V.gather(1, rows[..., None].expand(B, F, k)).transpose(1, 2).reshape(B, k * F)

        full0 = torch.where(fixed, V_fixed.detach(), starts)
        return _Reduced(
            FixedPointMap(T, rows=T_rows), V0.reshape(B, k * F), read, gather, full0, fixed
        )

    @torch.no_grad()
    def _sweeps(self, V0: Tensor, fixed: Tensor) -> tuple[Tensor, SolverStats]:
        """The mixing method: coordinate sweeps over the unknown variables."""
        begin = time.perf_counter()
        S = self.S.detach().to(V0.dtype)
        snorm = (S * S).sum(1)
        V = V0.clone()
        W = V.transpose(1, 2) @ S  # (B, k, m): V'S, updated as variables move
        free = ~fixed[..., 0]
        trace, change = [], V.new_zeros(V.shape[0])
        it = 0
        while it < self.max_iter:
            it += 1
            change = V.new_zeros(V.shape[0])
            for o in self.order.tolist():
                s_o = S[o]
                g = W @ s_o - snorm[o] * V[:, o]
                new = -g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
                step = torch.where(free[:, o, None], new - V[:, o], torch.zeros_like(new))
                V[:, o] += step
                W += step[:, :, None] * s_o
                change = torch.maximum(change, step.norm(dim=1))
            trace.append(change)
            if bool((change <= self.tol).all()):
                break
        stats = SolverStats(
            nfe=it, n_iter=it, trace=torch.stack(trace), abs_residual=change,
            rel_residual=change, converged_mask=change <= self.tol,
            wall_time=time.perf_counter() - begin, stop_mode="abs", tol=self.tol,
            returned="iterate",
        )  # fmt: skip
        return V.reshape(V.shape[0], -1), stats

    def forward(self, z: Tensor, is_input: Tensor) -> Tensor:
        known = self._check(z, is_input)
        # the relaxation is solved in the layer's own precision, also under autocast (bfloat16
        # would stop the mixing method short of its tolerance)
        with torch.autocast(z.device.type, enabled=False):
            out = self._solve(z.to(self.S.dtype), known)
        return torch.where(known, z, out.to(z.dtype))

    def _compiled(self, z: Tensor, known: Tensor) -> Tensor:
        """``method="satnet"``: the compiled sweeps and the paper's backward."""
        begin = time.perf_counter()
        V_fixed, fixed = self._known(z, known)
        B, N, _ = V_fixed.shape
        free = ~fixed[..., 0]
        starts = self._starts(B, z).detach()
        if self.random_start and self.training:  # a fresh order for every sample, as starts
            keys = torch.rand(B, N - 1, device=z.device)
            order = keys.argsort(dim=1) + 1
        else:
            order = self.order.to(z.device).expand(B, N - 1)
        S = self.S.to(z.dtype)
        x, sweeps, trace = MixingFunction.apply(
            S, V_fixed, starts, free, order.contiguous(), self.max_iter, self.tol, self.damping
        )
        n = int(sweeps.max())
        ratio = trace.gather(1, (sweeps - 1).clamp_min(0)[:, None])[:, 0].to(z.dtype)
        self.stats = SolverStats(
            nfe=n, n_iter=n, trace=trace[:, :n].T.to(z.dtype), abs_residual=ratio,
            rel_residual=ratio, converged_mask=(ratio <= self.tol) | (sweeps < self.max_iter),
            wall_time=time.perf_counter() - begin, stop_mode="rel", tol=self.tol,
            rows_evaluated=int(sweeps.sum()), returned="iterate",
        )  # fmt: skip
        return _probability(x)[:, 1 : self.n + 1]

    def _solve(self, z: Tensor, known: Tensor) -> Tensor:
        if self.method == "satnet":
            return self._compiled(z, known)
        r = self._map(z, known)
        solver = Anderson(
            m=5, tol=self.tol, max_iter=self.max_iter, stop_mode="rel", warn=False,
            compact=self.compact,
        )  # fmt: skip

        def sweeps():
            V, stats = self._sweeps(r.full0, r.fixed)
            return r.gather(V.view(r.full0.shape)), stats

        problem = Equilibrium(
            map=r.T,
            z0=r.V0.detach(),
            solver=solver,
            inputs=(self.S, z),
            solve=sweeps if self.method == "sequential" else None,
        )
        flat, self.stats = self.grad.run(problem)
        return r.read(flat)
