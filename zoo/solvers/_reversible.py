"""Reversible deep equilibrium solves (McCallum et al. 2025, arXiv:2509.12917).

The forward pass is an algebraically reversible coupled iteration of the cell ``f``::

    y_{n+1} = (1 - b) y_n + b f(z_n)
    z_{n+1} = (1 - b) z_n + b f(y_{n+1})

from ``y_0 = z_0``. Each step can be undone exactly in algebra,
``z_n = (z_{n+1} - b f(y_{n+1})) / (1 - b)`` and ``y_n = (y_{n+1} - b f(z_n)) / (1 - b)``, so the
backward pass rebuilds the trajectory from its last state and backpropagates through every step
of it: the exact gradient of the computation that ran (not the implicit function theorem's
approximation at an approximate fixed point), at memory that does not grow with the number of
steps. How far the rebuilt start is from the true one (floating-point error amplified by
``1 / (1 - b)`` per step) is reported as ``stats.reconstruction_error``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._base import FixedPointSolver, IterState, SolverStats, Step, _Tracker, as_map
from ._grad import Equilibrium, GradMode

__all__ = ["Reversible", "ReversibleGrad"]


class Reversible(FixedPointSolver):
    """The reversible coupled fixed-point iteration (two cell calls per step).

    Args:
        beta: The coupling ``b`` in ``(0, 1)``: larger converges faster (``b -> 1`` is Picard
            iteration) but amplifies rounding by ``1 / (1 - b)`` per half step when the steps
            are undone. The default 0.5 multiplies by exact powers of two: with the states kept
            in float64, a float32 cell's trajectory is rebuilt exactly for a dozen steps or
            more (``stats.reconstruction_error`` says when it is not).
        tol: Stop once every sample's residual ``||f(z) - z||`` (relative by default) is below
            ``tol``.
        max_iter: At most this many steps (``2 * max_iter`` cell calls).
        stop_mode: ``"rel"`` or ``"abs"``.
        warn: Warn once when ``tol`` is not reached.

    Used alone it is a fixed-point solver like the others (it returns the lowest-residual
    iterate); with :class:`ReversibleGrad` a ``DEQ`` returns the last state exactly and
    differentiates the whole computation.

    Example:
        >>> import torch
        >>> z, stats = Reversible(beta=0.7, tol=1e-6, max_iter=100)(
        ...     lambda z: 0.5 * z + 1.0, torch.zeros(2, 3))
        >>> round(float(z[0, 0]), 4), stats.converged, stats.nfe == 2 * stats.n_iter - 1
        (2.0, True, True)
    """

    name = "reversible"

    def __init__(
        self,
        beta: float = 0.5,
        tol: float = 1e-4,
        max_iter: int = 30,
        stop_mode: str = "rel",
        warn: bool = True,
    ) -> None:
        super().__init__(tol, max_iter, stop_mode, warn)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < 1:
            raise ValueError(f"beta must be a number in (0, 1), got {beta!r}")
        self.beta = float(beta)

    def config(self) -> dict:
        return {**super().config(), "beta": self.beta}

    def _start(self, z0: Tensor, tracker: _Tracker) -> _Coupled:
        return _Coupled(z0)

    def _advance(self, state: _Coupled, step: Step) -> Tensor:
        b = self.beta
        state.y = (1 - b) * state.y + b * step.gz  # f(z_n), reused
        return (1 - b) * step.z + b * step.g(state.y)

    def __call__(self, g, z0: Tensor) -> tuple[Tensor, SolverStats]:
        calls = [0]
        g = as_map(g)

        def counted(z: Tensor) -> Tensor:
            calls[0] += 1
            return g(z)

        z, stats = super().__call__(g.with_fn(counted), z0)
        stats.nfe = calls[0]  # two cell calls per step (the last step's check only one)
        return z, stats


class _Coupled(IterState):
    """The second state ``y`` of the reversible iteration (the first is the iterate)."""

    per_row = ("y",)

    def __init__(self, y: Tensor) -> None:
        self.y = y


class _ReversibleFunction(torch.autograd.Function):
    """``z_N`` of the reversible iteration; its backward rebuilds the states step by step."""

    @staticmethod
    def forward(ctx, f, beta, steps, stats, y_last, z_last, z0, *inputs):
        # the forward iteration already ran (no graph); only its last states are kept
        ctx.f, ctx.beta, ctx.steps, ctx.stats = f, beta, steps, stats
        ctx.save_for_backward(z0, y_last, z_last, *inputs)
        return z_last.clone()

    @staticmethod
    def backward(ctx, grad_z):
        z0, y, z, *inputs = ctx.saved_tensors
        f, b = ctx.f, ctx.beta
        want = [t for t in inputs if t.requires_grad]
        acc = [torch.zeros_like(t) for t in want]
        gy, gz = torch.zeros_like(grad_z), grad_z
        for _ in range(ctx.steps):
            with torch.enable_grad():
                # step back through z' = (1-b) z + b f(y'): y' is the current y
                yr = y.detach().requires_grad_()
                fy = f(yr)
                grads = torch.autograd.grad(fy, [yr, *want], b * gz, allow_unused=True)
            gy = gy + grads[0]
            acc = [a + (g if g is not None else 0) for a, g in zip(acc, grads[1:])]
            with torch.no_grad():
                z = (z - b * fy.detach()) / (1 - b)  # z_n
            with torch.enable_grad():
                # step back through y' = (1-b) y + b f(z_n)
                zr = z.detach().requires_grad_()
                fz = f(zr)
                grads = torch.autograd.grad(fz, [zr, *want], b * gy, allow_unused=True)
            gz = (1 - b) * gz + grads[0]
            acc = [a + (g if g is not None else 0) for a, g in zip(acc, grads[1:])]
            with torch.no_grad():
                y = (y - b * fz.detach()) / (1 - b)  # y_n
            gy = (1 - b) * gy
        # y_0 = z_0: both adjoints flow into the start
        g0 = gz + gy
        err = torch.maximum((y - z0).abs().amax(), (z - z0).abs().amax())
        ctx.stats.reconstruction_error = float(err)
        it = iter(acc)
        grads_inputs = [next(it) if t.requires_grad else None for t in inputs]
        return (None, None, None, None, None, None, g0, *grads_inputs)


class ReversibleGrad(GradMode):
    """The exact gradient of a :class:`Reversible` solve, at memory constant in its length.

    A ``DEQ`` with ``solver=Reversible(...)`` and ``grad=ReversibleGrad()`` returns the last
    state of the reversible iteration and backpropagates through all of its steps by
    rebuilding them backwards (two cell calls per step, forward and backward alike). After the
    backward pass ``deq.stats.reconstruction_error`` is the largest difference between the
    rebuilt start and the true one.

    Example:
        >>> import torch
        >>> from zoo.nn import DEQ
        >>> deq = DEQ(lambda z, x: 0.5 * torch.tanh(z) + x, grad=ReversibleGrad(),
        ...           solver=Reversible(beta=0.5, tol=0.0, max_iter=8, warn=False))
        >>> x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
        >>> deq(x).sum().backward()  # through all 8 steps, nothing stored but the last state
        >>> deq.stats.reconstruction_error < 1e-12
        True
    """

    name = "reversible"
    solver_type = Reversible

    def config(self) -> dict:
        return {}

    def run(self, problem: Equilibrium) -> tuple[Tensor, SolverStats]:
        if not torch.is_grad_enabled():  # nothing to differentiate: the solver's own answer
            return problem.forward_solve()
        return self.solve(problem.map, problem.z0, problem.solver, problem.inputs)

    def solve(
        self,
        f: Callable[[Tensor], Tensor],
        z0: Tensor,
        solver: Reversible,
        inputs: Sequence[Tensor],
    ) -> tuple[Tensor, SolverStats]:
        """Run the forward solve (its length set by ``tol``/``max_iter``) and return its last
        state with the exact, memory-constant backward attached. ``inputs`` are the tensors the
        cell reads besides the state (its parameters, the injection) that need gradients."""
        if not isinstance(solver, Reversible):
            raise TypeError(
                f"ReversibleGrad needs solver=Reversible(...), got {type(solver).__name__}"
            )
        t0 = time.perf_counter()
        b = solver.beta
        # the two states are kept in float64 whatever the cell computes in: the cell sees the
        # same (rounded) input when a step is undone, so only float64 rounding of the mixing
        # is amplified by the reversal, not float32's
        low = z0.dtype
        high = torch.float64 if low in (torch.float32, torch.float16, torch.bfloat16) else low

        def f_high(state: Tensor) -> Tensor:
            return f(state.to(low)).to(high)

        z0 = z0.to(high)
        tracker = _Tracker(z0, solver.tol, solver.stop_mode, joint=True, keep_step=False)
        with torch.no_grad():
            y = z = z0
            steps = 0
            for _ in range(solver.max_iter):
                fz = f_high(z)
                tracker.update(z, fz)
                if tracker.done:
                    break
                y = (1 - b) * y + b * fz
                z = (1 - b) * z + b * f_high(y)
                steps += 1
        stats = tracker.finish(time.perf_counter() - t0)
        stats.nfe, stats.n_iter = 2 * steps + 1, steps
        stats.reconstruction_error = float("nan")  # set by the backward pass
        if solver.warn and not stats.converged:
            import warnings

            from ._base import ConvergenceWarning

            warnings.warn(
                f"Reversible did not reach tol={solver.tol:g} within {solver.max_iter} steps; "
                "returning the last state (its gradient is exact for the steps that ran)",
                ConvergenceWarning,
                stacklevel=3,
            )

        inputs = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
        out = _ReversibleFunction.apply(f_high, b, steps, stats, y, z, z0, *inputs)
        return out.to(low), stats
