"""Limited-memory ("good") Broyden root finding on ``f(z) = g(z) - z``, as in DEQ.

The inverse Jacobian of ``f`` is approximated by ``H = -I + U V^T`` with at most ``memory``
rank-one terms kept in a circular buffer, so memory is O(B * memory * D) regardless of
``max_iter`` (the reference implementation allocates two ``(B, D, max_iter)`` buffers).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import FixedPointSolver, IterState, Step, _Tracker

__all__ = ["Broyden"]


class Broyden(FixedPointSolver):
    """Limited-memory Broyden's method (Sherman-Morrison updates of the inverse Jacobian).

    Args:
        tol: Stopping tolerance on the per-sample residual.
        max_iter: Maximum number of iterations (= function evaluations).
        memory: Number of rank-one updates kept (oldest overwritten first).
        restart_factor: A sample whose residual exceeds this multiple of its best restarts
            from its best iterate with a fresh Jacobian estimate.
        stop_mode: ``"rel"`` or ``"abs"``.
        warn: Warn once when ``tol`` is not reached.
        compact: Per-sample batch compaction (see :class:`FixedPointSolver`).
        cuda_graph: A fixed-budget, capturable solve (see :class:`FixedPointSolver`).
        joint: One stop and best-iterate decision for the whole batch (coupled samples; see
            :class:`FixedPointSolver`).

    Example:
        >>> import torch
        >>> A = torch.tensor([[0.5, 0.4], [-0.3, 0.2]])
        >>> z, stats = Broyden(tol=1e-10)(lambda z: z @ A.T + 1.0, torch.zeros(4, 2))
        >>> stats.converged
        True
    """

    name = "broyden"

    def __init__(
        self,
        tol: float = 1e-4,
        max_iter: int = 50,
        memory: int = 20,
        stop_mode: str = "rel",
        warn: bool = True,
        restart_factor: float = 4.0,
        compact: bool = False,
        cuda_graph: bool = False,
        joint: bool = False,
        returns: str = "step",
    ) -> None:
        super().__init__(tol, max_iter, stop_mode, warn, compact, cuda_graph, joint, returns)
        if memory < 1:
            raise ValueError(f"memory must be >= 1, got {memory}")
        self.memory = int(memory)
        self.restart_factor = float(restart_factor)

    def config(self) -> dict:
        return {**super().config(), "memory": self.memory, "restart_factor": self.restart_factor}

    def _start(self, z0: Tensor, tracker: _Tracker) -> _InverseJacobian:
        bsz, dim = z0.shape
        mem = min(self.memory, self.max_iter)
        return _InverseJacobian(z0.new_zeros(bsz, mem, dim), z0.new_zeros(bsz, mem, dim))

    def _advance(self, s: _InverseJacobian, step: Step) -> Tensor:
        z, fz_new = step.z, step.diff
        if step.k == 0:  # H = -I: the first step is a plain fixed-point step
            s.fz, s.hf = fz_new, -fz_new
            s.dz = -s.hf
            return z + s.dz
        # One product with H and one with H^T per iteration: H y = H f_new - H f.
        dz = s.dz
        hf_new = s.h_mul(fz_new)
        hy = hf_new - s.hf
        vt = s.ht_mul(dz)
        y = fz_new - s.fz
        denom = (vt * y).sum(dim=1, keepdim=True)
        good = denom.abs() > 1e-12 * (dz.norm(dim=1, keepdim=True) * y.norm(dim=1, keepdim=True))
        good = good & torch.isfinite(denom)
        u = torch.where(good, (dz - hy) / torch.where(good, denom, torch.ones_like(denom)), 0.0)
        vt = torch.where(good, vt, 0.0)
        slot = s.n_upd % s.U.shape[1]
        s.U[:, slot] = u
        s.V[:, slot] = vt
        s.n_upd += 1
        # Sherman-Morrison: H_new f_new = H f_new + u (v . f_new)
        s.hf = hf_new + u * (vt * fz_new).sum(dim=1, keepdim=True)
        s.fz = fz_new
        # A sample that diverged (non-finite, or residual far above its best) restarts from
        # its best iterate with a fresh inverse-Jacobian estimate.
        bad = ~torch.isfinite(z).all(dim=1) | (step.res > self.restart_factor * step.best_res)
        if step.sync_free or bool(bad.any()):
            z = torch.where(bad[:, None], step.best_z, z)
            s.fz = torch.where(bad[:, None], torch.zeros_like(s.fz), s.fz)
            s.hf = torch.where(bad[:, None], torch.zeros_like(s.hf), s.hf)
            s.U.copy_(torch.where(bad[:, None, None], 0.0, s.U))
            s.V.copy_(torch.where(bad[:, None, None], 0.0, s.V))
        s.dz = -s.hf
        return z + s.dz


class _InverseJacobian(IterState):
    """Broyden's state: the inverse Jacobian estimate ``H = -I + U^T V`` (rank-one terms in a
    circular buffer), the last residual ``f``, ``H f`` and the last step."""

    per_row = ("U", "V", "fz", "hf", "dz")

    def __init__(self, U: Tensor, V: Tensor) -> None:
        self.U, self.V = U, V
        self.fz = self.hf = self.dz = U[:, 0]
        self.n_upd = 0

    def h_mul(self, x: Tensor) -> Tensor:  # H x = -x + U^T (V x)
        if self.n_upd == 0:
            return -x
        n = min(self.n_upd, self.U.shape[1])
        c = torch.bmm(self.V[:, :n], x.unsqueeze(2))  # (B, n, 1)
        return -x + torch.bmm(self.U[:, :n].transpose(1, 2), c).squeeze(2)

    def ht_mul(self, x: Tensor) -> Tensor:  # x^T H = -x + V^T (U x)
        if self.n_upd == 0:
            return -x
        n = min(self.n_upd, self.U.shape[1])
        c = torch.bmm(self.U[:, :n], x.unsqueeze(2))
        return -x + torch.bmm(self.V[:, :n].transpose(1, 2), c).squeeze(2)
