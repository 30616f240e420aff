"""The deep equilibrium layer (Bai, Kolter, Koltun, NeurIPS 2019).

``z* = cell(z*, x)`` is found by a forward fixed-point solver without autograd, then one
differentiable evaluation of the cell at ``z*`` is handed to the gradient mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..solvers import (
    Anderson,
    FixedPointSolver,
    GradMode,
    ImplicitGrad,
    PhantomGrad,
    Reversible,
    ReversibleGrad,
    SolverStats,
    UnrolledGrad,
    get_grad,
    get_solver,
)
from ._graphs import GraphedSolve
from ._regularizers import jacobian_frobenius
from ._state import Packer, State, check_finite, index_rows

__all__ = ["DEQ", "DEQInfo"]


@dataclass
class DEQInfo:
    """Side outputs of a DEQ forward pass.

    Attributes:
        stats: Forward :class:`~zoo.solvers.SolverStats`.
        jac_loss: Hutchinson estimate of ``||J_f(z*)||_F^2 / dim`` (a scalar with graph), or
            ``None`` when Jacobian regularization is off or not computed.
        corrections: Training with ``correction_states``: the states for the fixed-point
            correction loss (earliest first, each with the fixed point's structure and a graph),
            else an empty list.
        correction_iters: The solver calls (1-based) whose outputs they start from.

    Example:
        >>> import torch
        >>> from zoo.nn import DEQ
        >>> deq = DEQ(lambda z, x: 0.5 * torch.tanh(z) + x)
        >>> _ = deq(torch.randn(2, 3))
        >>> deq.info.stats.converged, deq.info.jac_loss is None
        (True, True)
    """

    stats: SolverStats
    jac_loss: Tensor | None = None
    corrections: list = field(default_factory=list)
    correction_iters: list[int] = field(default_factory=list)


class DEQ(nn.Module):
    """Implicit layer returning the fixed point of ``cell(z, x)``.

    Args:
        cell: Module called as ``cell(z, x)``; ``z`` is a tensor or a list of tensors (e.g. one
            per resolution) and the output must have the same structure and shapes. If the
            cell has ``init_state(x)``, it gives the default ``z0``; otherwise zeros like ``x``.
        solver: Forward solver (object, or name resolved by :func:`zoo.solvers.get_solver`).
        grad: Gradient mode (object or name).
        jac_reg_samples: Probe vectors for the Jacobian regularization term, computed in
            training mode only; 0 turns it off.
        eval_solver: Optional solver used in eval mode (e.g. a larger budget).
            A solver built with ``cuda_graph=True`` has its forward solves captured as CUDA
            graphs on CUDA inputs, one per input shape, and replayed (``zoo.nn._graphs``); on
            a CPU it runs the same fixed-budget solve eagerly.
        correction_states: Training only: also return this many intermediate states for a
            fixed-point correction loss (torchdeq; Bai et al. 2022): the solver's outputs at
            calls evenly spaced over its ``max_iter`` (those it reaches), each followed by the
            gradient mode's phantom steps (one step, JFB, when the mode is not phantom), in
            ``info.corrections``. 0 turns it off.

    A cell with parameters is an ``nn.Module``: the DEQ registers it, so ``deq.parameters()``
    trains it. A plain function is fine for a cell without parameters; one that uses the
    parameters of modules it closes over gets a warning that names them, since the DEQ cannot
    see them (``deq.parameters()`` would silently leave them untrained).

    Example:
        >>> import torch
        >>> from zoo.nn import DEQ
        >>> from zoo.solvers import Anderson, ImplicitGrad
        >>> class Cell(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.lin = torch.nn.Linear(8, 8)
        ...     def forward(self, z, x):
        ...         return torch.tanh(0.5 * self.lin(z) + x)
        >>> deq = DEQ(Cell(), solver=Anderson(m=5, tol=1e-6), grad=ImplicitGrad(tol=1e-6))
        >>> x = torch.randn(4, 8, requires_grad=True)
        >>> z = deq(x)
        >>> z.sum().backward()
        >>> deq.stats.converged, len(list(deq.parameters()))
        (True, 2)
    """

    def __init__(
        self,
        cell,
        solver: FixedPointSolver | str = None,
        grad: GradMode | str = None,
        jac_reg_samples: int = 0,
        eval_solver: FixedPointSolver | str | None = None,
        correction_states: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(correction_states, bool) or not isinstance(correction_states, int):
            raise ValueError(
                f"correction_states must be an integer >= 0, got {correction_states!r}"
            )
        if correction_states < 0:
            raise ValueError(f"correction_states must be an integer >= 0, got {correction_states}")
        self.correction_states = correction_states
        if not callable(cell):
            raise TypeError(f"cell must be an nn.Module or a function (z, x) -> z, got {cell!r}")
        _warn_unregistered_parameters(cell)
        self.cell = cell
        self.solver = get_solver(solver) if solver is not None else Anderson()
        self.grad = get_grad(grad) if grad is not None else ImplicitGrad()
        self.eval_solver = get_solver(eval_solver) if eval_solver is not None else None
        if isinstance(self.grad, ReversibleGrad) and not all(
            isinstance(s, Reversible) for s in (self.solver, self.eval_solver) if s is not None
        ):
            raise ValueError(
                "grad=ReversibleGrad() differentiates a reversible solve: set "
                "solver=Reversible(beta=..., tol=..., max_iter=...) (and any eval_solver too)"
            )
        if isinstance(self.grad, ReversibleGrad) and (self.correction_states or jac_reg_samples):
            raise ValueError(
                "ReversibleGrad trains through the exact reversible solve: the fixed-point "
                "correction (correction_states) and the Jacobian term (jac_reg_samples) belong "
                "to the implicit and phantom gradients; set both to 0"
            )
        self.jac_reg_samples = int(jac_reg_samples)
        # a training task may switch the term off for a step (a jac_reg_freq schedule)
        self.jac_reg_enabled = True
        self.info: DEQInfo | None = None
        # forward solves captured as CUDA graphs (solvers with cuda_graph=True, CUDA inputs)
        self.graphs = GraphedSolve()

    @property
    def stats(self) -> SolverStats | None:
        """Forward statistics of the last call."""
        return self.info.stats if self.info is not None else None

    @property
    def jac_loss(self) -> Tensor | None:
        """Jacobian regularization term of the last training call (or ``None``)."""
        return self.info.jac_loss if self.info is not None else None

    def _default_z0(self, x):
        if hasattr(self.cell, "init_state"):
            return self.cell.init_state(x)
        if not isinstance(x, Tensor):
            raise ValueError("pass z0 explicitly when x is not a single tensor")
        return torch.zeros_like(x)

    def _row_subset(self, x, solver: FixedPointSolver):
        """``idx -> the injection of state rows idx`` when compaction applies (``compact``,
        eval mode, and a cell that can run on a subset: ``batch_independent``, or its own
        ``row_subset(x, joint)``, as a cell of coupled blocks that a joint solve stops whole);
        else ``None``."""
        if not solver.compact or self.training:
            return None
        if hasattr(self.cell, "row_subset"):
            return self.cell.row_subset(x, solver.joint)
        if getattr(self.cell, "batch_independent", False):
            return lambda idx: index_rows(x, idx)
        return None

    def forward(self, x, z0: State | None = None, *, return_info: bool = False):
        """Solve for the equilibrium.

        Args:
            x: Input injection (tensor or list of tensors) passed unchanged to the cell.
            z0: Warm start; defaults to the cell's ``init_state(x)`` or zeros.
            return_info: Also return a :class:`DEQInfo`.

        Returns:
            ``z*`` with ``z0``'s structure (and the info when asked).
        """
        check_finite("x", x)
        if z0 is None:
            z0 = self._default_z0(x)
        else:
            check_finite("z0", z0)
        packer = Packer(z0)
        checked = [False]

        def f(zf: Tensor) -> Tensor:
            out = self.cell(packer.unflat(zf), x)
            if not checked[0]:
                packer.check(out)
                checked[0] = True
            return packer.flat(out)

        solver = self.solver if (self.training or self.eval_solver is None) else self.eval_solver
        if hasattr(self.cell, "coupled_rows"):  # joint solves decide per coupled block
            f.group = self.cell.coupled_rows(x)
        subset = self._row_subset(x, solver)
        if subset is not None:

            def rows(zf: Tensor, idx: Tensor) -> Tensor:  # the cell on a subset of the samples
                sub = packer.with_batch(zf.shape[0])
                return sub.flat(self.cell(sub.unflat(zf), subset(idx)))

            f.rows = rows  # solvers with compact=True evaluate only the unconverged samples
        z0f = packer.flat(z0).detach()
        if isinstance(self.grad, ReversibleGrad) and torch.is_grad_enabled():
            xs = list(x) if isinstance(x, (list, tuple)) else [x]
            inputs = [*self.parameters(), *(t for t in xs if isinstance(t, Tensor))]
            z_out, stats = self.grad.solve(f, z0f, solver, inputs)
            self.info = DEQInfo(stats)
        elif isinstance(self.grad, UnrolledGrad):
            z_out = self._unrolled(f, z0f, solver)
        else:
            correct = self.training and torch.is_grad_enabled() and self.correction_states > 0
            kept: dict[int, Tensor] = {}
            g = self._recording(f, solver.max_iter, kept) if correct else f
            if solver.cuda_graph and not correct and (z0f.is_cuda or self.graphs.replay_cls):

                def make_g(static_x):
                    def g_static(zf: Tensor) -> Tensor:
                        out = self.cell(packer.unflat(zf), static_x)
                        packer.check(out)
                        return packer.flat(out)

                    return g_static

                state = (*self.parameters(), *self.buffers())
                mode = (self.training, torch.is_autocast_enabled(z0f.device.type))
                z_star, stats = self.graphs(solver, make_g, x, z0f, state, extra=mode)
            else:
                with torch.no_grad(), parametrize.cached():
                    z_star, stats = solver(g, z0f)
            jac = None
            info = DEQInfo(stats, jac)
            if torch.is_grad_enabled():
                z_req = z_star.detach().requires_grad_()
                f_out = f(z_req)
                if self.training and self.jac_reg_samples > 0 and self.jac_reg_enabled:
                    info.jac_loss = jacobian_frobenius(f_out, z_req, self.jac_reg_samples)
                z_out = self.grad.attach(f, z_req, f_out, forward_stats=stats)
                if correct:
                    step = self.grad if isinstance(self.grad, PhantomGrad) else PhantomGrad(1)
                    for k in sorted(kept):
                        zk = kept[k].requires_grad_()
                        info.corrections.append(packer.unflat(step.attach(f, zk, f(zk))))
                        info.correction_iters.append(k)
            else:
                z_out = z_star
            self.info = info
        z = packer.unflat(z_out)
        return (z, self.info) if return_info else z

    def _recording(self, f, max_iter: int, kept: dict):
        """``f`` that keeps (detached) its outputs at ``correction_states`` calls evenly spaced
        over ``max_iter``, the last one excluded (the fixed point itself is the final state)."""
        n = self.correction_states
        want = {max(1, round(max_iter * i / (n + 1))) for i in range(1, n + 1)}
        calls = [0]

        def g(zf: Tensor) -> Tensor:
            out = f(zf)
            calls[0] += 1
            if calls[0] in want:
                kept[calls[0]] = out.detach().clone()
            return out

        return g

    def _unrolled(self, f, z0f: Tensor, solver: FixedPointSolver) -> Tensor:
        import time

        from ..solvers._base import _Tracker

        steps = self.grad.steps or solver.max_iter
        t0 = time.perf_counter()
        tracker = _Tracker(z0f, solver.tol, solver.stop_mode)
        z = z0f
        for _ in range(steps):
            fz = f(z)
            with torch.no_grad():
                tracker.update(z, fz)
            z = fz
        stats = tracker.finish(time.perf_counter() - t0)
        # The unrolled output is the last iterate, not the best one.
        jac = None
        self.info = DEQInfo(stats, jac)
        return z

    def extra_repr(self) -> str:
        return f"solver={self.solver!r}, grad={self.grad!r}, jac_reg_samples={self.jac_reg_samples}"


def _hidden_parameters(fn) -> list[str]:
    """Modules and trainable tensors a plain function reaches that a module holding it cannot
    see: its closure, the globals it names, the object of a bound method, a partial's args."""
    import functools
    import inspect

    seen: dict[str, object] = {}
    if isinstance(fn, functools.partial):
        seen.update({f"argument {i}": a for i, a in enumerate(fn.args)})
        seen.update({f"argument {k}": v for k, v in fn.keywords.items()})
        fn = fn.func
    owner = getattr(fn, "__self__", None)
    if owner is not None:
        seen["self"] = owner
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        try:
            cv = inspect.getclosurevars(fn)
            seen.update(cv.nonlocals)
            seen.update(cv.globals)
        except (TypeError, ValueError):
            pass
    return [
        f"{name} ({type(v).__name__})"
        for name, v in seen.items()
        if isinstance(v, nn.Module)
        and any(True for _ in v.parameters())
        or isinstance(v, Tensor)
        and v.requires_grad
    ]


def _warn_unregistered_parameters(cell, what: str = "DEQ's cell") -> None:
    import warnings

    if isinstance(cell, nn.Module):
        return
    hidden = _hidden_parameters(cell)
    if hidden:
        warnings.warn(
            f"{what} is a plain function that uses parameters it does not register: "
            f"{', '.join(hidden)}. The layer's parameters() do not include them, so an "
            "optimizer built from it leaves them untrained. Make it an nn.Module (whose "
            "forward uses self.<module>), or build the optimizer from a module that holds them.",
            UserWarning,
            stacklevel=3,
        )
