"""Limited-memory ("good") Broyden root finding on ``f(z) = g(z) - z``, as in DEQ.

The inverse Jacobian of ``f`` is approximated by ``H = -I + U V^T`` with at most ``memory``
rank-one terms kept in a circular buffer, so memory is O(B * memory * D) regardless of
``max_iter`` (the reference implementation allocates two ``(B, D, max_iter)`` buffers).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._base import FixedPointSolver, _Tracker, shrunk

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

    def _solve(self, g: Callable[[Tensor], Tensor], z0: Tensor, tracker: _Tracker) -> None:
        bsz, dim = z0.shape
        mem = min(self.memory, self.max_iter)
        U = z0.new_zeros(bsz, mem, dim)
        V = z0.new_zeros(bsz, mem, dim)
        n_upd = 0

        def h_mul(x: Tensor) -> Tensor:  # H x = -x + U^T (V x)
            if n_upd == 0:
                return -x
            n = min(n_upd, mem)
            c = torch.bmm(V[:, :n], x.unsqueeze(2))  # (B, n, 1)
            return -x + torch.bmm(U[:, :n].transpose(1, 2), c).squeeze(2)

        def ht_mul(x: Tensor) -> Tensor:  # x^T H = -x + V^T (U x)
            if n_upd == 0:
                return -x
            n = min(n_upd, mem)
            c = torch.bmm(U[:, :n], x.unsqueeze(2))
            return -x + torch.bmm(V[:, :n].transpose(1, 2), c).squeeze(2)

        shrink = getattr(g, "shrink", None)  # a compacting map: iterate on the unconverged rows

        def work() -> Tensor | None:
            return g.work if shrink is not None else None

        def mine(t: Tensor) -> Tensor:  # a batch-sized record restricted to the working rows
            w = work()
            return t if w is None else t.index_select(0, w)

        z = z0
        gz = g(z)
        fz = gz - z
        tracker.update(z, gz, diff=fz)
        if tracker.done:
            return
        hf = -fz  # H f(z) with H = -I
        for _ in range(self.max_iter - 1):
            dz = -hf
            z_new = z + dz
            gz_new = g(z_new)
            fz_new = gz_new - z_new
            res = mine(tracker.update(z_new, gz_new, diff=fz_new, work=work()))
            if tracker.done:
                return
            # One product with H and one with H^T per iteration: H y = H f_new - H f.
            hf_new = h_mul(fz_new)
            hy = hf_new - hf
            vt = ht_mul(dz)
            y = fz_new - fz
            denom = (vt * y).sum(dim=1, keepdim=True)
            good = denom.abs() > 1e-12 * (
                dz.norm(dim=1, keepdim=True) * y.norm(dim=1, keepdim=True)
            )
            good = good & torch.isfinite(denom)
            u = torch.where(good, (dz - hy) / torch.where(good, denom, torch.ones_like(denom)), 0.0)
            vt = torch.where(good, vt, 0.0)
            slot = n_upd % mem
            U[:, slot] = u
            V[:, slot] = vt
            n_upd += 1
            # Sherman-Morrison: H_new f_new = H f_new + u (v . f_new)
            hf = hf_new + u * (vt * fz_new).sum(dim=1, keepdim=True)
            z, fz = z_new, fz_new
            # A sample that diverged (non-finite, or residual far above its best) restarts from
            # its best iterate with a fresh inverse-Jacobian estimate.
            best_res = mine(tracker.best_res)
            bad = ~torch.isfinite(z).all(dim=1) | (res > self.restart_factor * best_res)
            if tracker.sync_free or bool(bad.any()):
                z = torch.where(bad[:, None], mine(tracker.best_z), z)
                fz = torch.where(bad[:, None], torch.zeros_like(fz), fz)
                hf = torch.where(bad[:, None], torch.zeros_like(hf), hf)
                U.copy_(torch.where(bad[:, None, None], 0.0, U))
                V.copy_(torch.where(bad[:, None, None], 0.0, V))
            if (state := shrunk(shrink, z, fz, hf, U, V)) is not None:
                z, fz, hf, U, V = state  # the low-rank inverse Jacobian follows the rows
