"""Gradient modes for implicit layers, independent of the forward solver.

* :class:`ImplicitGrad` - exact implicit differentiation (Bai et al. 2019): solve the backward
  fixed point ``v = v J_f(z*) + dL/dz*`` with vector-Jacobian products; O(1) memory in depth.
* :class:`PhantomGrad` - ``k`` damped steps at the fixed point (Geng et al. 2021); ``k=1`` is
  Jacobian-free backprop (Fung et al. 2022).
* :class:`UnrolledGrad` - plain backprop through ``steps`` weight-tied iterations; the
  reference used by the tests and benchmarks.
"""

from __future__ import annotations

import abc
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ._anderson import Anderson
from ._base import FixedPointSolver, SolverStats, _Tracker

__all__ = [
    "AtFixedPoint",
    "Equilibrium",
    "GradMode",
    "GradientWarning",
    "ImplicitGrad",
    "PhantomGrad",
    "UnrolledGrad",
]


@dataclass
class Equilibrium:
    """One fixed-point problem, as an implicit layer hands it to its gradient mode.

    Attributes:
        map: The flattened cell ``z -> f(z, x)`` on ``(B, D)`` states; with autograd on, its
            output's graph reaches the parameters and the input.
        z0: The initial state, detached, ``(B, D)``.
        solver: The forward solver to use.
        inputs: The tensors ``map`` reads besides the state (parameters, the injection), for
            modes that differentiate the whole computation.
        solve: The layer's own forward solve without a graph (it may capture a CUDA graph or
            record intermediate states); ``None``: ``solver(map, z0)`` under ``no_grad``.
        at_fixed_point: Called as ``at_fixed_point(z_req, f_out)`` by modes that evaluate the
            map with a graph at the fixed point (``f_out = map(z_req)``), so that the layer can
            add terms there (the Jacobian regularizer) without another evaluation.

    Example:
        >>> import torch
        >>> from zoo.solvers import Anderson, Equilibrium, ImplicitGrad
        >>> x = torch.randn(2, 3, requires_grad=True)
        >>> problem = Equilibrium(lambda z: 0.5 * torch.tanh(z) + x, torch.zeros(2, 3), Anderson())
        >>> z, stats = ImplicitGrad().run(problem)
        >>> z.requires_grad, stats.converged
        (True, True)
    """

    map: Callable[[Tensor], Tensor]
    z0: Tensor
    solver: FixedPointSolver
    inputs: Sequence[Tensor] = ()
    solve: Callable[[], tuple[Tensor, SolverStats]] | None = None
    at_fixed_point: Callable[[Tensor, Tensor], None] | None = None

    def forward_solve(self) -> tuple[Tensor, SolverStats]:
        """The forward solve, without a graph."""
        if self.solve is not None:
            return self.solve()
        with torch.no_grad():
            return self.solver(self.map, self.z0)


class GradMode(abc.ABC):
    """How gradients flow through an implicit layer.

    Example:
        >>> import torch
        >>> from zoo.nn import DEQ
        >>> from zoo.solvers import PhantomGrad
        >>> deq = DEQ(lambda z, x: 0.5 * torch.tanh(z) + x, grad=PhantomGrad(steps=2))
        >>> x = torch.randn(2, 3, requires_grad=True)  # any GradMode: implicit, phantom, unrolled
        >>> deq(x).sum().backward()
        >>> x.grad.shape
        torch.Size([2, 3])
    """

    name = "base"
    #: The forward solvers this mode can differentiate (a layer refuses others).
    solver_type: ClassVar[type[FixedPointSolver]] = FixedPointSolver
    #: Whether the mode evaluates the cell with a graph at the fixed point, where the fixed-point
    #: correction loss and the Jacobian regularizer are defined.
    at_fixed_point: ClassVar[bool] = False

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def config(self) -> dict:
        return {}

    def spec(self) -> dict:
        """``{"name": ..., **config()}``: JSON-serializable, accepted by :func:`get_grad`."""
        return {"name": self.name, **self.config()}

    @abc.abstractmethod
    def run(self, problem: Equilibrium) -> tuple[Tensor, SolverStats]:
        """Solve ``problem`` and return ``(z, forward_stats)``: the layer's output ``(B, D)``
        with this mode's gradient attached (when autograd is on), and the forward solve's
        :class:`SolverStats`."""


class AtFixedPoint(GradMode):
    """Modes that solve without a graph, then evaluate the cell once more at the fixed point
    with a graph and attach their gradient to that evaluation (implicit, phantom).

    A subclass defines :meth:`attach` only. The fixed-point correction loss and the Jacobian
    regularizer of a ``DEQ`` apply to these modes.

    Example:
        >>> import torch
        >>> from zoo.nn import DEQ
        >>> from zoo.solvers import AtFixedPoint
        >>> class Straight(AtFixedPoint):  # the gradient of one step at z*, like JFB
        ...     name = "straight"
        ...     def attach(self, f, z_req, f_out, forward_stats=None):
        ...         return f_out
        >>> x = torch.randn(2, 3, requires_grad=True)
        >>> DEQ(lambda z, x: 0.5 * torch.tanh(z) + x, grad=Straight())(x).sum().backward()
        >>> bool((x.grad == 1).all())
        True
    """

    at_fixed_point: ClassVar[bool] = True

    def run(self, problem: Equilibrium) -> tuple[Tensor, SolverStats]:
        z_star, stats = problem.forward_solve()
        if not torch.is_grad_enabled():
            return z_star, stats
        z_req = z_star.detach().requires_grad_()
        f_out = problem.map(z_req)
        if problem.at_fixed_point is not None:
            problem.at_fixed_point(z_req, f_out)
        return self.attach(problem.map, z_req, f_out, forward_stats=stats), stats

    @abc.abstractmethod
    def attach(
        self, f: Callable[[Tensor], Tensor], z_req: Tensor, f_out: Tensor, forward_stats=None
    ) -> Tensor:
        """Return the layer output given ``f_out = f(z_req)`` evaluated with autograd on.

        Args:
            f: The flattened cell ``z -> f(z, x)`` (closes over the input injection).
            z_req: The (detached) fixed point, with ``requires_grad=True``.
            f_out: ``f(z_req)``, whose graph reaches the parameters and the input.
            forward_stats: The forward solve's :class:`SolverStats` (``None`` if unknown).
        """


class ImplicitGrad(AtFixedPoint):
    """Exact gradient by implicit differentiation.

    Args:
        solver: Fixed-point solver for the backward system (default ``Anderson(m=5)``).
        tol: Backward tolerance (overrides the solver's).
        max_iter: Backward iteration budget (overrides the solver's).
        on_unconverged: What to do when the forward solve did not converge, so that the
            implicit function theorem's gradient is not the gradient of what was computed:
            ``"warn"`` (the implicit gradient anyway, with a :class:`GradientWarning`),
            ``"phantom"`` (fall back to the Jacobian-free gradient, one step at the returned
            iterate) or ``"zero"`` (no gradient through the layer for this step). A backward
            solve that does not converge always warns. ``last_stats`` shows both.

    Example:
        >>> from zoo.solvers import Anderson
        >>> grad = ImplicitGrad(solver=Anderson(m=5), tol=1e-6, max_iter=40)
    """

    name = "implicit"

    def __init__(
        self,
        solver: FixedPointSolver | None = None,
        tol: float = 1e-4,
        max_iter: int = 30,
        on_unconverged: str = "warn",
    ) -> None:
        if on_unconverged not in ("warn", "phantom", "zero"):
            raise ValueError(
                f"on_unconverged must be 'warn', 'phantom' or 'zero', got {on_unconverged!r}"
            )
        self.on_unconverged = on_unconverged
        if solver is None:
            solver = Anderson(m=5)
        elif not isinstance(solver, FixedPointSolver):  # a name or spec dict (YAML, config.json)
            from ._registry import get_solver

            solver = get_solver(solver)
        self.solver = solver.replace(tol=tol, max_iter=max_iter)
        self.solver.warn = False
        self.tol = tol
        self.max_iter = max_iter
        self.last_stats = None

    def config(self) -> dict:
        return {
            "solver": self.solver.spec(),
            "tol": self.tol,
            "max_iter": self.max_iter,
            "on_unconverged": self.on_unconverged,
        }

    def attach(self, f, z_req, f_out, forward_stats=None):
        fwd_ok = True if forward_stats is None else bool(forward_stats.converged)
        return _ImplicitBackward.apply(f_out, (self, z_req, f_out, fwd_ok))


class _ImplicitBackward(torch.autograd.Function):
    """Identity forward; backward replaces the incoming gradient by the implicit one."""

    @staticmethod
    def forward(ctx, f_out, state):
        ctx.state = state
        return f_out.view_as(f_out)

    @staticmethod
    def backward(ctx, grad):
        mode, z_req, f_out, fwd_ok = ctx.state
        if not fwd_ok:
            if mode.on_unconverged == "zero":
                mode.last_stats = _unsolved(grad, fwd_ok, "zero")
                return torch.zeros_like(grad), None
            if mode.on_unconverged == "phantom":
                mode.last_stats = _unsolved(grad, fwd_ok, "phantom")
                return grad, None  # one step at the iterate: the Jacobian-free gradient
            warnings.warn(
                "ImplicitGrad: the forward solve did not converge, so the implicit gradient is "
                "not the gradient of the returned iterate; raise the forward budget, or choose "
                "ImplicitGrad(on_unconverged='phantom' or 'zero')",
                GradientWarning,
                stacklevel=2,
            )
        if not bool(grad.abs().amax() > 0):
            return grad, None

        def vjp_step(v: Tensor) -> Tensor:
            (vj,) = torch.autograd.grad(f_out, z_req, v, retain_graph=True)
            return vj + grad

        with torch.no_grad():
            v, stats = mode.solver(vjp_step, grad.detach())
        stats.forward_converged = fwd_ok
        stats.fallback = None
        mode.last_stats = stats
        if not stats.converged:
            # one fixed text, so Python's default filter shows it once, not at every step of a
            # training run; the residuals are in grad.last_stats (SolverStatsCallback logs them)
            warnings.warn(
                f"ImplicitGrad: the backward solve did not reach tol={mode.tol:g} in "
                f"{mode.max_iter} iterations; the gradient is approximate (its residuals: "
                "grad.last_stats, logged as train/backward_* by SolverStatsCallback)",
                GradientWarning,
                stacklevel=2,
            )
        return v, None


class GradientWarning(UserWarning):
    """An implicit gradient that is not the exact gradient of what the forward computed.

    Example:
        >>> from zoo.solvers import GradientWarning
        >>> issubclass(GradientWarning, UserWarning)
        True
    """


def _unsolved(grad: Tensor, fwd_ok: bool, fallback: str):
    from ._base import SolverStats

    st = SolverStats(
        converged_mask=torch.zeros(grad.shape[0], dtype=torch.bool),
        abs_residual=torch.full((grad.shape[0],), float("nan")),
        rel_residual=torch.full((grad.shape[0],), float("nan")),
    )
    st.forward_converged = fwd_ok
    st.fallback = fallback
    return st


class PhantomGrad(AtFixedPoint):
    """Phantom gradient: ``k`` damped steps ``z <- tau f(z) + (1 - tau) z`` at the fixed point.

    Args:
        steps: Number of differentiated steps ``k`` (>= 1). ``k=1, tau=1`` is JFB.
        tau: Damping of each step, in ``(0, 1]``.

    Example:
        >>> jfb = PhantomGrad(steps=1)
    """

    name = "phantom"

    def __init__(self, steps: int = 1, tau: float = 1.0) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau}")
        self.steps = int(steps)
        self.tau = float(tau)

    def config(self) -> dict:
        return {"steps": self.steps, "tau": self.tau}

    def attach(self, f, z_req, f_out, forward_stats=None):
        # under autocast f may return bf16 while the solver state is fp32: lerp needs one dtype
        z = f_out if self.tau == 1.0 else torch.lerp(z_req, f_out.to(z_req.dtype), self.tau)
        for _ in range(self.steps - 1):
            fz = f(z)
            z = fz if self.tau == 1.0 else torch.lerp(z, fz.to(z.dtype), self.tau)
        return z


class UnrolledGrad(GradMode):
    """Backprop through ``steps`` weight-tied iterations ``z <- f(z)`` from the initial state.

    The layer then is an explicit weight-tied network (memory grows with ``steps``). It is the
    reference that the implicit gradient is tested against.

    Args:
        steps: Number of unrolled iterations; ``None`` uses the forward solver's ``max_iter``.

    Example:
        >>> oracle = UnrolledGrad(steps=200)
    """

    name = "unrolled"

    def __init__(self, steps: int | None = None) -> None:
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = steps

    def config(self) -> dict:
        return {"steps": self.steps}

    def run(self, problem: Equilibrium) -> tuple[Tensor, SolverStats]:
        """Backpropagate through ``steps`` iterations from ``z0``; the stats record their
        residuals (the output is the last iterate, not the lowest-residual one)."""
        solver = problem.solver
        steps = self.steps or solver.max_iter
        t0 = time.perf_counter()
        tracker = _Tracker(problem.z0, solver.tol, solver.stop_mode)
        z = problem.z0
        for _ in range(steps):
            fz = problem.map(z)
            with torch.no_grad():
                tracker.update(z, fz)
            z = fz
        return z, tracker.finish(time.perf_counter() - t0)
