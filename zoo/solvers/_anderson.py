"""Anderson acceleration (type-II, Walker & Ni 2011), as used by DEQ/MDEQ.

The history buffers are updated in place and the Gram matrix of residual differences is grown
one row per iteration, so the per-iteration overhead is O(B m D), not O(B m^2 D).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._base import _EPS, FixedPointSolver, IterState, Step, _Tracker

__all__ = ["Anderson"]


class Anderson(FixedPointSolver):
    """Anderson acceleration with a regularized, fail-safe least-squares step.

    Each iteration mixes the last ``m`` evaluations: ``z = sum_i a_i [beta g(z_i) +
    (1 - beta) z_i]`` with ``a`` minimizing ``||sum_i a_i (g(z_i) - z_i)||`` subject to
    ``sum_i a_i = 1``. The small ``(m+1) x (m+1)`` system is Tikhonov-regularized relative to
    its own scale (``lam``); when it is still singular or gives non-finite weights for a
    sample, that sample takes a plain Picard step instead of crashing (the failure mode of
    locuslab/deq issues 20 and 26).

    Args:
        m: History size.
        beta: Mixing parameter (1 = undamped).
        lam: Relative Tikhonov regularization of the Gram matrix.
        tol: Stopping tolerance on the per-sample residual.
        max_iter: Maximum number of iterations.
        stop_mode: ``"rel"`` or ``"abs"``.
        warn: Warn once when ``tol`` is not reached.
        compact: Per-sample batch compaction (see :class:`FixedPointSolver`).
        cuda_graph: A fixed-budget, capturable solve (see :class:`FixedPointSolver`).
        compile: Experimental. Run each iteration's algebra once the history is full (residual
            norms, best iterate, history write, Gram row, least squares, mixing) as one function
            compiled by ``torch.compile``: a few fused kernels instead of about thirty. The
            first solve of each shape pays the compilation (tens of seconds on a CPU). Measured
            on 2 CPU threads (``bench/solvers.py``, ``bench/RESULTS.md``): the solve takes
            0.71-0.97x the eager time on the trained DEQ-Transformer cell at tol 1e-4 and
            0.91-1.0x at 1e-3, but 1.2-1.4x the eager time on the trained CIFAR-10 MDEQ cell,
            where the cell dominates. Turn it on only where a measurement on your cell says it pays.
            A ``joint`` solve fuses its per-block decision too. Once a compacting solve has
            shrunk its state, it goes on eagerly.
        joint: One stop and best-iterate decision for the whole batch (coupled samples; see
            :class:`FixedPointSolver`).

    Example:
        >>> import torch
        >>> A = torch.tensor([[0.5, 0.4], [-0.3, 0.2]])
        >>> z, stats = Anderson(m=3, tol=1e-10)(lambda z: z @ A.T + 1.0, torch.zeros(4, 2))
        >>> stats.converged, stats.nfe < 10
        (True, True)
    """

    name = "anderson"

    def __init__(
        self,
        m: int = 5,
        beta: float = 1.0,
        lam: float = 1e-4,
        tol: float = 1e-4,
        max_iter: int = 50,
        stop_mode: str = "rel",
        warn: bool = True,
        compact: bool = False,
        cuda_graph: bool = False,
        compile: bool = False,
        joint: bool = False,
        returns: str = "step",
    ) -> None:
        super().__init__(tol, max_iter, stop_mode, warn, compact, cuda_graph, joint, returns)
        if m < 1:
            raise ValueError(f"history size m must be >= 1, got {m}")
        self.m = int(m)
        self.beta = float(beta)
        self.lam = float(lam)
        self.compile = bool(compile)

    def config(self) -> dict:
        cfg = {"m": self.m, "beta": self.beta, "lam": self.lam, **super().config()}
        return {**cfg, "compile": True} if self.compile else cfg

    def _start(self, z0: Tensor, tracker: _Tracker) -> _History:
        bsz, dim = z0.shape
        m = min(self.m, self.max_iter)
        sdtype = torch.float64 if z0.dtype == torch.float64 else torch.float32
        state = _History(
            F=z0.new_zeros(bsz, m, dim),
            G=z0.new_zeros(bsz, m, dim),
            gram=torch.zeros(bsz, m, m, dtype=sdtype, device=z0.device),
        )
        if self.compile and not tracker.sync_free:
            state.steady = _compiled_steady()
            state.knobs = self._fused_knobs(tracker, z0)
        return state

    def _fused(self, state, k, z, gz, tracker, work) -> Tensor | None:
        """Once the history is full, record and advance in one compiled call (``compile``);
        a compacting solve that has shrunk its state goes on eagerly."""
        m = state.F.shape[1]
        if state.steady is None or work is not None or k + 1 < m or m == 1:
            return None
        try:
            return self._steady(state, z, gz, k % m, tracker)
        except Exception as err:  # no compiler here: this iteration and the rest eagerly
            state.steady = _compile_failed(err)
            return None

    def _advance(self, state: _History, step: Step) -> Tensor:
        F, G, gram = state.F, state.G, state.gram
        m = F.shape[1]
        slot = step.k % m
        n = min(step.k + 1, m)
        G[:, slot] = step.diff
        F[:, slot] = step.gz
        # One new row/column of the Gram matrix G G^T.
        row = torch.bmm(G[:, :n], G[:, slot].unsqueeze(2)).squeeze(2).to(gram.dtype)
        gram[:, slot, :n] = row
        gram[:, :n, slot] = row
        if n == 1:
            return step.gz
        alpha, ok = self._mix_weights(gram[:, :n, :n])
        dtype = step.z.dtype
        znew = torch.bmm(alpha.to(dtype).unsqueeze(1), F[:, :n]).squeeze(1)
        if self.beta != 1.0:
            zg = torch.bmm(alpha.to(dtype).unsqueeze(1), G[:, :n]).squeeze(1)
            znew = znew - (1.0 - self.beta) * zg
        if step.sync_free or not bool(ok.all()):
            return torch.where(ok[:, None], znew, step.gz)
        return znew

    def _fused_knobs(self, tracker: _Tracker, z0: Tensor) -> tuple[Tensor, ...]:
        """The fused step's settings as 0-d tensors, made once per solve: one compiled graph
        serves every tolerance, stop mode, return rule and compaction flag (only the block size
        and damping on/off specialize it)."""

        def t(v, dtype=torch.float64):
            return torch.tensor(v, dtype=dtype, device=z0.device)

        b = torch.bool
        return (
            t(self.lam), t(self.beta), t(tracker.tol), t(tracker.stop_mode == "rel", b),
            t(tracker.compact, b), t(tracker.keep_step, b),
        )  # fmt: skip

    def _steady(self, state: _History, z, gz, slot: int, tracker: _Tracker) -> Tensor:
        slot_t = torch.tensor([slot], device=z.device)
        out = state.steady(
            z, gz, state.F, state.G, state.gram, slot_t, tracker.best_z, tracker.best_res,
            tracker.best_abs, tracker.best_rel, tracker.active, *state.knobs,
            tracker.group if tracker.joint else 1, self.beta != 1.0,
        )  # fmt: skip
        z, tracker.best_z, tracker.best_res, tracker.best_abs, tracker.best_rel, res, active = out
        tracker.nfe += 1
        if not tracker.compact:
            tracker.rows += z.shape[0]
        tracker.trace.append(res)
        tracker.active = active
        return z

    def _mix_weights(self, gram: Tensor) -> tuple[Tensor, Tensor]:
        """Solve ``min ||a G||`` s.t. ``sum a = 1`` per sample. Returns ``(alpha, ok)``."""
        bsz, n, _ = gram.shape
        # regularize relative to the smallest residual in the history, so that lam stays
        # meaningful as the residuals shrink by orders of magnitude near convergence
        scale = gram.diagonal(dim1=1, dim2=2).amin(dim=1).clamp_min(1e-30)
        h = gram / scale[:, None, None]
        h = h + self.lam * torch.eye(n, dtype=h.dtype, device=h.device)
        # Bordered system [[0, 1^T], [1, H]] [mu, a] = [1, 0].
        sys = torch.zeros(bsz, n + 1, n + 1, dtype=h.dtype, device=h.device)
        sys[:, 0, 1:] = 1.0
        sys[:, 1:, 0] = 1.0
        sys[:, 1:, 1:] = h
        rhs = torch.zeros(bsz, n + 1, dtype=h.dtype, device=h.device)
        rhs[:, 0] = 1.0
        sol, info = torch.linalg.solve_ex(sys, rhs)
        alpha = sol[:, 1:]
        ok = (info == 0) & torch.isfinite(alpha).all(dim=1)
        alpha = torch.where(ok[:, None], alpha, torch.zeros_like(alpha))
        return alpha, ok


class _History(IterState):
    """Anderson's state: ``F[:, i] = g(z_i)``, ``G[:, i] = g(z_i) - z_i`` (so ``z_i = F - G``)
    and the Gram matrix ``G G^T``, in a circular buffer of ``m`` slots; the compiled iteration
    and its settings when ``compile`` is on."""

    per_row = ("F", "G", "gram")

    def __init__(self, F: Tensor, G: Tensor, gram: Tensor) -> None:
        self.F, self.G, self.gram = F, G, gram
        self.steady = None
        self.knobs: tuple[Tensor, ...] = ()


_STEADY = None


def _compiled_steady():
    global _STEADY
    if _STEADY is None:
        _STEADY = torch.compile(_steady_iteration, fullgraph=True)
    return _STEADY or None  # False after a failed compilation


def _compile_failed(err: Exception) -> None:
    global _STEADY
    if _STEADY is not False:
        import warnings

        warnings.warn(
            f"Anderson(compile=True): torch.compile failed ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); solving eagerly instead (the "
            "same results, without the fused iteration). torch.compile needs a C++ compiler "
            "(CPU) or Triton (GPU); each block size and damping setting compiles once more.",
            RuntimeWarning,
            stacklevel=4,
        )
    _STEADY = False


def _steady_iteration(
    z: Tensor, gz: Tensor, F: Tensor, G: Tensor, gram: Tensor, slot: Tensor, best_z: Tensor,
    best_res: Tensor, best_abs: Tensor, best_rel: Tensor, active: Tensor, lam: Tensor,
    beta: Tensor, tol: Tensor, rel: Tensor, compact: Tensor, keep_step: Tensor, group: int,
    damped: bool,
):  # fmt: skip
    """One Anderson iteration with a full history, tracker included, as ``Anderson._solve`` and
    ``_Tracker.update`` do it eagerly (the same algebra, in one function for the compiler).
    ``slot`` is a one-element index tensor, so the history position needs no recompilation, and
    the settings are 0-d tensors for the same reason. ``group``: the rows of one coupled block
    (a joint solve: one decision per block, as the tracker's); 1 is the per-sample rule."""
    diff = gz - z
    G.index_copy_(1, slot, diff.unsqueeze(1))
    abs_res = torch.linalg.vector_norm(diff, dim=1).float()
    g_norm = torch.linalg.vector_norm(gz, dim=1).float()
    rel_res = abs_res / (g_norm + _EPS)
    res = torch.where(rel, rel_res, abs_res)
    ok = torch.isfinite(res) & torch.isfinite(abs_res) & torch.isfinite(g_norm)
    res = torch.where(ok, res, torch.full_like(res, math.inf))
    # a block improves when its worst row does (all its rows, or none); per sample for group 1,
    # where a stopped sample's best residual is at most tol and never improves again
    worst_best = best_res.view(-1, group).amax(1)
    block = (res.view(-1, group).amax(1) < worst_best) & active.view(-1, group)[:, 0]
    better = block[:, None].expand(-1, group).reshape(-1)
    best_res = torch.where(better, res, best_res)
    best_abs = torch.where(better, abs_res, best_abs)
    best_rel = torch.where(better, rel_res, best_rel)
    best_z = torch.where(better[:, None], torch.where(keep_step, gz, z), best_z)
    res = torch.where(active | ~compact, res, best_res)
    going = best_res.view(-1, group).amax(1) > tol
    active = going[:, None].expand(-1, group).reshape(-1)
    F.index_copy_(1, slot, gz.unsqueeze(1))
    row = torch.bmm(G, G.index_select(1, slot).transpose(1, 2)).squeeze(2).to(gram.dtype)
    gram.index_copy_(1, slot, row.unsqueeze(1))
    gram.index_copy_(2, slot, row.unsqueeze(2))
    n = gram.shape[1]
    scale = gram.diagonal(dim1=1, dim2=2).amin(dim=1).clamp_min(1e-30)
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    h = gram / scale[:, None, None] + lam.to(gram.dtype) * eye
    sys = torch.zeros(gram.shape[0], n + 1, n + 1, dtype=gram.dtype, device=gram.device)
    sys[:, 0, 1:] = 1.0
    sys[:, 1:, 0] = 1.0
    sys[:, 1:, 1:] = h
    rhs = torch.zeros(gram.shape[0], n + 1, dtype=gram.dtype, device=gram.device)
    rhs[:, 0] = 1.0
    sol, info = torch.linalg.solve_ex(sys, rhs)
    alpha = sol[:, 1:]
    okw = (info == 0) & torch.isfinite(alpha).all(dim=1)
    alpha = torch.where(okw[:, None], alpha, torch.zeros_like(alpha)).to(z.dtype)
    znew = torch.bmm(alpha.unsqueeze(1), F).squeeze(1)
    if damped:
        zg = torch.bmm(alpha.unsqueeze(1), G).squeeze(1)
        znew = znew - (1.0 - beta).to(z.dtype) * zg
    z = torch.where(okw[:, None], znew, gz)
    return z, best_z, best_res, best_abs, best_rel, res, active
