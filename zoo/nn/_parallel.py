"""Parallel-in-time integration: a fixed-grid ODE solve as one fixed-point problem.

``K`` RK4 steps ``z_{k+1} = Phi(t_k, z_k)`` from a known ``z_0`` form the trajectory
``Z = (z_1, ..., z_K)``, the fixed point of ``G(Z)_k = Phi(t_{k-1}, z_{k-1})``. Each evaluation
of ``G`` takes all ``K`` steps at once, the vector field evaluated on all times as one batch.
Picard iteration on ``G`` is exact after at most ``K`` rounds (round ``r`` fixes the first ``r``
states; ParaDiGMS, Shih et al. 2023); Anderson acceleration needs far fewer on smooth
trajectories (ParaTAA, Tang et al. 2024). The rounds are the sequential depth: on hardware
where a batch of ``K`` evaluations costs about one, they are the wall time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..solvers import FixedPointSolver, SolverStats

__all__ = ["parallel_grid_nodes"]


def _rk4_all(func, z: Tensor, tk: Tensor, h: Tensor) -> Tensor:
    """One RK4 step from every ``(t_k, z_k)`` at once: ``z`` is ``(K * B, ...)``, ``tk`` ``(K * B,)``."""
    k1 = func(tk, z)
    k2 = func(tk + h / 2, z + h / 2 * k1)
    k3 = func(tk + h / 2, z + h / 2 * k2)
    k4 = func(tk + h, z + h * k3)
    return z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def parallel_grid_nodes(
    func, z0: Tensor, t0: float | Tensor, t1: float | Tensor, steps: int, solver: FixedPointSolver
) -> tuple[Tensor, SolverStats]:
    """The ``steps + 1`` RK4 grid states from ``t0`` to ``t1`` (``t1 < t0`` integrates
    backwards), found as one fixed point by ``solver``.

    Args:
        func: The vector field ``func(t, z)``; it is called on ``steps * B`` states at once with
            a time per row (``t`` of shape ``(steps * B,)``), as the zoo's flow fields accept.
        z0: The initial state ``(B, ...)``.
        t0: Start time.
        t1: End time.
        steps: RK4 steps ``K`` (and at most ``K`` Picard rounds).
        solver: Any of the zoo's fixed-point solvers; its ``max_iter`` bounds the rounds and its
            ``tol`` the relative residual of the whole trajectory. ``stats.n_iter`` are the
            rounds.

    Returns:
        ``(Z, stats)``: ``Z`` of shape ``(steps + 1, *z0.shape)`` (``Z[0]`` is ``z0``).

    Example:
        >>> import torch
        >>> from zoo.solvers import Picard
        >>> z0 = torch.ones(2, 1, dtype=torch.float64)
        >>> Z, stats = parallel_grid_nodes(lambda t, z: -z, z0, 0.0, 1.0, 8,
        ...                                Picard(tol=0.0, max_iter=8, warn=False))
        >>> round(float(Z[-1, 0, 0]), 6), stats.n_iter  # exp(-1) with 8 RK4 steps, 8 rounds
        (0.36788, 8)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    shape, b = tuple(z0.shape), z0.shape[0]
    t0 = torch.as_tensor(t0, dtype=z0.dtype, device=z0.device)
    h = (torch.as_tensor(t1, dtype=z0.dtype, device=z0.device) - t0) / steps
    tk = (t0 + h * torch.arange(steps, dtype=z0.dtype, device=z0.device)).repeat_interleave(b)

    def g(flat: Tensor) -> Tensor:  # (1, K * numel): the whole trajectory as one sample
        Z = flat.reshape(steps, *shape)
        prev = torch.cat([z0.unsqueeze(0), Z[:-1]]).reshape(steps * b, *shape[1:])
        return _rk4_all(func, prev, tk, h).reshape(1, -1)

    start = z0.unsqueeze(0).expand(steps, *shape).reshape(1, -1)  # every state at z0
    with torch.no_grad():
        flat, stats = solver(g, start)
    return torch.cat([z0.unsqueeze(0), flat.reshape(steps, *shape)]), stats
