"""Picard (fixed-point, optionally damped) iteration."""

from __future__ import annotations

from torch import Tensor

from ._base import FixedPointSolver, IterState, Step

__all__ = ["Picard"]


class Picard(FixedPointSolver):
    """Damped fixed-point iteration ``z <- damping * z + (1 - damping) * g(z)``.

    Args:
        tol: Stopping tolerance on the per-sample residual.
        max_iter: Maximum number of iterations (= function evaluations).
        damping: Weight kept on the previous iterate, in ``[0, 1)``; 0 is plain Picard.
        stop_mode: ``"rel"`` or ``"abs"``.
        warn: Warn once when ``tol`` is not reached.
        compact: Per-sample batch compaction (see :class:`FixedPointSolver`).
        cuda_graph: A fixed-budget, capturable solve (see :class:`FixedPointSolver`).
        joint: One stop and best-iterate decision for the whole batch (coupled samples; see
            :class:`FixedPointSolver`).

    Example:
        >>> import torch
        >>> z, stats = Picard(tol=1e-8, max_iter=100)(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3))
        >>> round(float(z[0, 0]), 6), stats.converged
        (2.0, True)
    """

    name = "picard"

    def __init__(
        self,
        tol: float = 1e-4,
        max_iter: int = 50,
        damping: float = 0.0,
        stop_mode: str = "rel",
        warn: bool = True,
        compact: bool = False,
        cuda_graph: bool = False,
        joint: bool = False,
        returns: str = "step",
    ) -> None:
        super().__init__(tol, max_iter, stop_mode, warn, compact, cuda_graph, joint, returns)
        if not 0.0 <= damping < 1.0:
            raise ValueError(f"damping must be in [0, 1), got {damping}")
        self.damping = float(damping)

    def config(self) -> dict:
        return {**super().config(), "damping": self.damping}

    def _advance(self, state: IterState, step: Step) -> Tensor:
        return step.gz if self.damping == 0.0 else step.gz.lerp(step.z, self.damping)
