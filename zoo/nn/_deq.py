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
    Equilibrium,
    FixedPointMap,
    FixedPointSolver,
    GradMode,
    ImplicitGrad,
    PhantomGrad,
    SolverStats,
    get_grad,
    get_solver,
)
from ._cell import EquilibriumCell, capabilities, check_declared
from ._graphs import GraphedSolve
from ._regularizers import jacobian_frobenius
from ._state import Packer, State, check_finite

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
            per resolution) and the output must have the same structure and shapes. A cell
            that subclasses :class:`~zoo.nn.DEQCell` (the :class:`~zoo.nn.EquilibriumCell`
            protocol) declares its initial state, its coupled rows and whether it can run on a
            subset of the batch (compaction); any other cell starts from zeros like ``x``.
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
        for name, v in (
            ("correction_states", correction_states),
            ("jac_reg_samples", jac_reg_samples),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        self.correction_states = correction_states
        if not callable(cell):
            raise TypeError(f"cell must be an nn.Module or a function (z, x) -> z, got {cell!r}")
        check_declared(cell)
        _warn_unregistered_parameters(cell)
        self.cell = cell
        self.solver = get_solver(solver) if solver is not None else Anderson()
        self.grad = get_grad(grad) if grad is not None else ImplicitGrad()
        self.eval_solver = get_solver(eval_solver) if eval_solver is not None else None
        need = self.grad.solver_type
        if not all(isinstance(s, need) for s in (self.solver, self.eval_solver) if s is not None):
            raise ValueError(
                f"grad={self.grad!r} differentiates {need.__name__} solves only: set "
                f"solver={need.__name__}(...) (and any eval_solver too)"
            )
        if not self.grad.at_fixed_point and (correction_states or jac_reg_samples):
            raise ValueError(
                f"{type(self.grad).__name__} does not evaluate the cell at the fixed point, where "
                "the fixed-point correction (correction_states) and the Jacobian term "
                "(jac_reg_samples) are defined; set both to 0, or use the implicit or phantom "
                "gradient"
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

    @property
    def capabilities(self) -> EquilibriumCell:
        """What the cell declares (its own members, or the defaults of :class:`DEQCell`)."""
        return capabilities(self.cell)

    def forward(self, x, z0: State | None = None, *, return_info: bool = False):
        """Solve for the equilibrium.

        Args:
            x: Input injection (tensor or list of tensors) passed unchanged to the cell.
            z0: Warm start; defaults to the cell's ``init_state(x)`` (zeros unless the cell
                declares otherwise).
            return_info: Also return a :class:`DEQInfo`.

        Returns:
            ``z*`` with ``z0``'s structure (and the info when asked).
        """
        z0 = self._initial_state(x, z0)
        packer = Packer(z0)
        solver = self.solver if (self.training or self.eval_solver is None) else self.eval_solver
        fmap = self._map(x, packer, solver)
        z0f = packer.flat(z0).detach()
        info = DEQInfo(SolverStats())
        kept: dict[int, Tensor] = {}
        problem = Equilibrium(
            map=fmap,
            z0=z0f,
            solver=solver,
            inputs=self._inputs(x),
            solve=lambda: self._forward_solve(fmap, z0f, solver, x, packer, kept),
            at_fixed_point=lambda z_req, f_out: self._at_fixed_point(info, z_req, f_out),
        )
        z_out, info.stats = self.grad.run(problem)
        self._corrections(info, fmap, kept, packer)
        self.info = info
        z = packer.unflat(z_out)
        return (z, info) if return_info else z

    def _initial_state(self, x, z0):
        """Check the inputs; the cell's initial state when none is given."""
        _refuse_vmap(x, z0)
        check_finite("x", x)
        if z0 is None:
            return self.capabilities.init_state(x)
        check_finite("z0", z0)
        return z0

    def _map(self, x, packer: Packer, solver: FixedPointSolver) -> FixedPointMap:
        """The flattened cell ``z -> cell(z, x)``, with the rows it can be evaluated on apart
        (compaction: eval mode, a cell with a row subset) and its coupled blocks."""
        checked = [False]

        def f(zf: Tensor) -> Tensor:
            out = self.cell(packer.unflat(zf), x)
            if not checked[0]:
                packer.check(out)
                checked[0] = True
            return packer.flat(out)

        caps = self.capabilities
        subset = caps.row_subset(x, solver.joint) if solver.compact and not self.training else None
        rows = None
        if subset is not None:

            def rows(zf: Tensor, idx: Tensor) -> Tensor:  # the cell on a subset of the samples
                sub = packer.with_batch(zf.shape[0])
                return sub.flat(self.cell(sub.unflat(zf), subset(idx)))

        return FixedPointMap(f, rows=rows, group=caps.coupled_rows(x))

    def _inputs(self, x) -> tuple[Tensor, ...]:
        """The tensors the cell reads besides the state: its parameters and the injection."""
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        return (*self.parameters(), *(t for t in xs if isinstance(t, Tensor)))

    def _records_corrections(self) -> bool:
        return self.training and torch.is_grad_enabled() and self.correction_states > 0

    def _forward_solve(self, fmap, z0f, solver, x, packer, kept) -> tuple[Tensor, SolverStats]:
        """The forward solve without a graph: replayed as a CUDA graph for a ``cuda_graph``
        solver on CUDA inputs, recording intermediate states for the correction loss when
        training with ``correction_states``."""
        correct = self._records_corrections()
        if solver.cuda_graph and not correct and (z0f.is_cuda or self.graphs.replay_cls):

            def make_g(static_x):
                def g_static(zf: Tensor) -> Tensor:
                    out = self.cell(packer.unflat(zf), static_x)
                    packer.check(out)
                    return packer.flat(out)

                return g_static

            state = (*self.parameters(), *self.buffers())
            mode = (self.training, torch.is_autocast_enabled(z0f.device.type))
            return self.graphs(solver, make_g, x, z0f, state, extra=mode)
        g = fmap.with_fn(self._recording(fmap.fn, solver.max_iter, kept)) if correct else fmap
        with torch.no_grad(), parametrize.cached():
            return solver(g, z0f)

    def _at_fixed_point(self, info: DEQInfo, z_req: Tensor, f_out: Tensor) -> None:
        """The Jacobian regularizer, from the gradient mode's evaluation at the fixed point."""
        if self.training and self.jac_reg_samples > 0 and self.jac_reg_enabled:
            info.jac_loss = jacobian_frobenius(f_out, z_req, self.jac_reg_samples)

    def _corrections(self, info: DEQInfo, fmap, kept: dict, packer: Packer) -> None:
        """The recorded states, each followed by the phantom steps of the correction loss."""
        if not kept:
            return
        step = self.grad if isinstance(self.grad, PhantomGrad) else PhantomGrad(1)
        for k in sorted(kept):
            zk = kept[k].requires_grad_()
            info.corrections.append(packer.unflat(step.attach(fmap, zk, fmap(zk))))
            info.correction_iters.append(k)

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

    def extra_repr(self) -> str:
        return f"solver={self.solver!r}, grad={self.grad!r}, jac_reg_samples={self.jac_reg_samples}"


def _refuse_vmap(*values) -> None:
    """A clear error for ``torch.func.vmap`` over a DEQ instead of functorch's own."""
    from torch._C._functorch import is_batchedtensor

    parts = []
    for v in values:
        parts.extend(v if isinstance(v, (list, tuple)) else [v])
    if any(isinstance(t, Tensor) and is_batchedtensor(t) for t in parts):
        raise ValueError(
            "torch.func.vmap cannot run a DEQ: its solver stops each sample on that sample's "
            "residual, data-dependent control flow that vmap does not support. A DEQ already "
            "solves a batch with one solve per sample: call deq(x) on the stacked inputs, "
            "x of shape (batch, ...), instead of vmapping over single samples"
        )


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
