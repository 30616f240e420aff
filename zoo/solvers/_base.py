"""Common machinery for batched fixed-point solvers.

Every solver finds ``z* = g(z*)`` for a batch of states flattened to shape ``(B, D)``.
Residuals are tracked per sample, so that samples which converge early are frozen while the
rest of the batch keeps iterating, and the lowest-residual iterate of every sample is returned.
"""

from __future__ import annotations

import abc
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

__all__ = ["ConvergenceWarning", "FixedPointMap", "FixedPointSolver", "SolverStats", "Step"]

_EPS = 1e-9


class ConvergenceWarning(UserWarning):
    """Issued (once per solve) when a solver stops at ``max_iter`` without reaching ``tol``.

    Example:
        >>> import warnings, torch
        >>> from zoo.solvers import Picard, ConvergenceWarning
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = Picard(tol=1e-12, max_iter=2)(lambda z: 0.5 * z + 1, torch.zeros(1, 1))
        >>> caught[0].category is ConvergenceWarning
        True
    """


@dataclass
class SolverStats:
    """What a fixed-point solve did.

    Attributes:
        nfe: Number of evaluations of ``g`` (function evaluations).
        n_iter: Number of solver iterations performed.
        trace: Residual of every sample at every iteration, shape ``(n_iter, B)``, in the stop
            mode's units (relative or absolute).
        abs_residual: Final absolute residual ``||g(z) - z||`` per sample, shape ``(B,)``.
        rel_residual: Final relative residual ``||g(z) - z|| / ||g(z)||`` per sample, ``(B,)``.
        converged_mask: Whether each sample reached ``tol``, shape ``(B,)``.
        wall_time: Seconds spent in the solve.
        stop_mode: ``"rel"`` or ``"abs"``.
        tol: The tolerance that was asked for.
        forward_converged: Backward solves only: whether the forward solve they differentiate
            converged (``None`` for forward solves).
        fallback: Backward only: ``"phantom"`` or ``"zero"`` when the implicit solve was
            skipped because the forward did not converge (``None`` otherwise).
        rows_evaluated: Samples the map was evaluated on, summed over its calls (``nfe x B``
            for a full-batch solve, less with ``compact=True``: the cell-call cost).
        returned: What the solve returned for each sample, relative to the iterate ``z`` whose
            residuals these are: ``"step"``, ``g(z)`` (one more step, computed but never
            measured: its residual is not the reported one), or ``"iterate"``, ``z`` itself
            (the reported residual is exactly the returned state's).
        reconstruction_error: Reversible solves differentiated by ``ReversibleGrad``: the
            largest difference between the start rebuilt by the backward pass and the true one
            (NaN until the backward pass ran; ``None`` for other solves).

    Example:
        >>> import torch
        >>> from zoo.solvers import Picard
        >>> _, stats = Picard(tol=1e-6, max_iter=100)(lambda z: 0.5 * z, torch.ones(2, 3))
        >>> stats.converged, tuple(stats.trace.shape)[1], stats.nfe == stats.n_iter
        (True, 2, True)
    """

    nfe: int = 0
    n_iter: int = 0
    trace: Tensor = field(default_factory=lambda: torch.empty(0, 0))
    abs_residual: Tensor = field(default_factory=lambda: torch.empty(0))
    rel_residual: Tensor = field(default_factory=lambda: torch.empty(0))
    converged_mask: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))
    wall_time: float = 0.0
    stop_mode: str = "rel"
    tol: float = 0.0
    forward_converged: bool | None = None
    fallback: str | None = None
    rows_evaluated: int = 0
    returned: str = "step"
    reconstruction_error: float | None = None

    @property
    def residual(self) -> Tensor:
        """Final per-sample residual in the stop mode's units, shape ``(B,)``."""
        return self.rel_residual if self.stop_mode == "rel" else self.abs_residual

    @property
    def converged(self) -> bool:
        """True when every sample of the batch reached ``tol``."""
        return bool(self.converged_mask.all()) if self.converged_mask.numel() else False

    @property
    def residual_trace(self) -> list[float]:
        """Batch-mean residual per iteration (a plain list, convenient for logging/plots)."""
        return self.trace.mean(dim=1).tolist() if self.trace.numel() else []

    def summary(self) -> dict[str, float]:
        """Scalars suitable for ``LightningModule.log_dict``."""
        res = self.residual
        return {
            "nfe": float(self.nfe),
            "residual_mean": float(res.mean()) if res.numel() else math.nan,
            "residual_max": float(res.max()) if res.numel() else math.nan,
            "converged_frac": float(self.converged_mask.float().mean())
            if self.converged_mask.numel()
            else 0.0,
            "solve_time": self.wall_time,
        }


@dataclass(frozen=True)
class FixedPointMap:
    """The map a solver iterates, ``z -> g(z)`` on flattened states ``(B, D)``, with the
    optional capabilities a solver may use declared as fields.

    A plain function is a map with no capabilities: every solver accepts one and wraps it.

    Attributes:
        fn: The map itself, ``(B, D) -> (B, D)``.
        rows: ``rows(z_rows, idx)``: the map evaluated on the batch rows ``idx`` alone (``z_rows``
            has ``len(idx)`` rows). Declared by maps whose rows (or coupled blocks, see
            ``group``) can be evaluated apart; solvers built with ``compact=True`` then evaluate
            only the rows that have not converged. ``None``: whole batches only.
        group: Rows per coupled block (consecutive rows, e.g. one sequence's positions): a
            ``joint`` solve decides per block, and compacts by whole blocks. ``None``: the rows
            are independent samples (or, for a joint solve, the whole batch is one block).

    Example:
        >>> import torch
        >>> from zoo.solvers import FixedPointMap, Picard
        >>> scale = torch.tensor([[0.1], [0.9]])
        >>> g = FixedPointMap(lambda z: scale * z + 1, rows=lambda z, idx: scale[idx] * z + 1)
        >>> z, stats = Picard(tol=1e-8, max_iter=200, compact=True)(g, torch.zeros(2, 1))
        >>> stats.rows_evaluated < 2 * stats.nfe  # the fast row stopped being evaluated
        True
    """

    fn: Callable[[Tensor], Tensor]
    rows: Callable[[Tensor, Tensor], Tensor] | None = None
    group: int | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"FixedPointMap.fn must be callable, got {self.fn!r}")
        if self.rows is not None and not callable(self.rows):
            raise TypeError(f"FixedPointMap.rows must be callable or None, got {self.rows!r}")
        g = self.group
        if g is not None and (isinstance(g, bool) or not isinstance(g, int) or g < 1):
            raise ValueError(f"FixedPointMap.group must be a positive integer or None, got {g!r}")

    def __call__(self, z: Tensor) -> Tensor:
        return self.fn(z)

    def with_fn(self, fn: Callable[[Tensor], Tensor]) -> FixedPointMap:
        """The same capabilities around another function (a wrapper of ``fn``)."""
        return FixedPointMap(fn, self.rows, self.group)


def as_map(g) -> FixedPointMap:
    """``g`` as a :class:`FixedPointMap` (a plain function gets no capabilities)."""
    if isinstance(g, FixedPointMap):
        return g
    if not callable(g):
        raise TypeError(f"a solver iterates a function (B, D) -> (B, D), got {g!r}")
    stuck = [a for a in ("rows", "group") if a in getattr(g, "__dict__", {})]
    if stuck:
        raise TypeError(
            f"the map has attribute(s) {', '.join(stuck)} attached to it; declare them instead: "
            f"FixedPointMap(fn, {', '.join(f'{a}=...' for a in stuck)})"
        )
    return FixedPointMap(g)


class IterState:
    """A solver's own state between iterations (its history, its Jacobian estimate).

    Subclasses list in ``per_row`` the attributes that hold one entry per batch row (rows
    first). Batch compaction gathers exactly those to the rows still iterating; everything
    else (counters, settings) is left alone.

    Example (a new solver: the state and one rule, nothing else):
        >>> import torch
        >>> from zoo.solvers import FixedPointSolver, IterState
        >>> class Momentum(IterState):
        ...     per_row = ("v",)
        ...     def __init__(self, z0):
        ...         self.v = torch.zeros_like(z0)
        >>> class HeavyBall(FixedPointSolver):
        ...     name = "heavy_ball"
        ...     def _start(self, z0, tracker):
        ...         return Momentum(z0)
        ...     def _advance(self, state, step):  # z + 0.3 v + (g(z) - z)
        ...         state.v = 0.3 * state.v + step.diff
        ...         return step.z + state.v
        >>> z, stats = HeavyBall(tol=1e-8, max_iter=200)(lambda z: 0.5 * z + 1, torch.zeros(2, 1))
        >>> round(float(z[0, 0]), 6), stats.converged
        (2.0, True)
    """

    per_row: ClassVar[tuple[str, ...]] = ()

    def select(self, keep: Tensor) -> None:
        """Keep the rows ``keep`` (local indices) of every per-row tensor."""
        for name in self.per_row:
            setattr(self, name, getattr(self, name).index_select(0, keep))


@dataclass
class Step:
    """One evaluated pair, as a solver's :meth:`FixedPointSolver._advance` sees it.

    Attributes:
        k: Iteration number, from 0.
        z: The iterate, ``(R, D)``: the rows the solver holds (all of the batch unless a
            compacting solve has shrunk its state).
        gz: ``g(z)``.
        diff: ``g(z) - z``.
        res: Per-row residual of ``z`` in the stop mode's units, ``(R,)``.
        g: The map being iterated (a solver that evaluates it more than once per iteration,
            like :class:`~zoo.solvers.Reversible`, calls it here).

    Example (what a rule reads; see :class:`IterState` for a whole solver):
        >>> import torch
        >>> from zoo.solvers import Picard
        >>> seen = []
        >>> class Spy(Picard):
        ...     def _advance(self, state, step):
        ...         seen.append((step.k, float(step.res.max())))
        ...         return super()._advance(state, step)
        >>> _ = Spy(tol=1e-3, max_iter=3, warn=False)(lambda z: 0.5 * z + 1, torch.zeros(1, 1))
        >>> first_k, first_res = seen[0]
        >>> len(seen), first_k, round(first_res, 3)
        (3, 0, 1.0)
    """

    k: int
    z: Tensor
    gz: Tensor
    diff: Tensor
    res: Tensor
    g: Callable[[Tensor], Tensor]
    tracker: _Tracker
    work: Tensor | None = None

    def held(self, t: Tensor) -> Tensor:
        """A batch-sized record (e.g. ``tracker.best_res``) restricted to the rows held."""
        return t if self.work is None else t.index_select(0, self.work)

    @property
    def best_z(self) -> Tensor:
        """The lowest-residual state kept so far for each row held."""
        return self.held(self.tracker.best_z)

    @property
    def best_res(self) -> Tensor:
        """The lowest residual so far of each row held."""
        return self.held(self.tracker.best_res)

    @property
    def sync_free(self) -> bool:
        """A capturable (``cuda_graph``) solve: take no data-dependent Python branch."""
        return self.tracker.sync_free


class FixedPointSolver(abc.ABC):
    """Base class of the fixed-point solvers (strategy objects).

    A solver is one iteration rule: :meth:`_start` makes its state from ``z0`` and
    :meth:`_advance` gives the next iterate from an evaluated pair. The loop, the stopping
    rule, the per-sample bookkeeping and batch compaction are the base class's, the same for
    every solver.

    Args:
        tol: Stopping tolerance on the per-sample residual.
        max_iter: Maximum number of iterations.
        stop_mode: ``"rel"`` (``||g(z)-z|| / ||g(z)||``) or ``"abs"`` (``||g(z)-z||``).
        warn: Issue one :class:`ConvergenceWarning` when ``tol`` is not reached.
        compact: Per-sample batch compaction: evaluate the map only on the samples that have
            not converged yet, when the map offers it (:attr:`FixedPointMap.rows`, as ``DEQ``
            declares for cells that can run on a subset of the batch, in eval mode). The results
            are the full-batch solve's; a map without ``rows`` gets full batches. Once a
            quarter of the rows still held have stopped, the solver's own state (its
            :class:`IterState`: Anderson's history and Gram matrix, Broyden's low-rank inverse
            Jacobian) is gathered to the unconverged rows, so its algebra shrinks with the
            map's work (``zoo.solvers._compaction``).
        cuda_graph: Experimental (its GPU speed-up has not been measured in this repository).
            A fixed-budget solve with no host synchronization: exactly ``max_iter``
            iterations (no early exit; a converged sample's best iterate stays frozen, so the
            fixed point is the early-exit solve's), no data-dependent Python branch. ``DEQ``
            captures such a solve as a CUDA graph on a CUDA device and replays it, which removes
            the per-kernel launch cost that bounds small cells there. Elsewhere it runs eagerly
            with the same arithmetic. It costs ``max_iter`` evaluations every call, so it suits
            a fixed training budget; it excludes ``compact`` (data-dependent shapes).
        joint: Stop and pick the returned iterate for the whole batch at once, not per sample:
            the solve ends when every sample's residual is below ``tol`` at the same iterate,
            and it returns ``g(z)`` of the iterate whose worst sample is lowest. For maps whose
            "samples" are coupled (the DEQ-Transformer's positions attend to each other), the
            per-sample rule returns a mix of iterations whose joint residual can exceed the
            ``tol`` each sample met on its own. A map may declare that only consecutive blocks
            of its rows are coupled (:attr:`FixedPointMap.group`); the decision is then one per
            block, and with ``compact`` a stopped block's rows are no longer evaluated.
            Without a group the whole batch is one block, and ``compact`` has nothing to drop.
        returns: ``"step"`` (default): return ``g(z)`` of each sample's lowest-residual iterate
            ``z``, one more step for free; the reported residual is ``z``'s, not the returned
            state's (torchdeq's solvers return the same). ``"iterate"``: return ``z`` itself,
            so the stats describe exactly what is returned. On the trained MDEQ cells, whose
            map does not contract the residual, the free step is up to 1.8x further from the
            fixed point than reported; at tiny budgets it is the better prediction
            (``mdeq_tiny.cifar10`` at 2 iterations: 55% top-1 against 1%).
            ``SolverStats.returned`` says which.

    Example:
        >>> import torch
        >>> from zoo.solvers import Anderson
        >>> z, stats = Anderson(tol=1e-8)(lambda z: 0.5 * z + 1, torch.zeros(2, 3))
        >>> round(float(z[0, 0]), 6), stats.converged
        (2.0, True)
    """

    name = "base"

    def __init__(
        self,
        tol: float = 1e-4,
        max_iter: int = 50,
        stop_mode: str = "rel",
        warn: bool = True,
        compact: bool = False,
        cuda_graph: bool = False,
        joint: bool = False,
        returns: str = "step",
    ) -> None:
        if returns not in ("step", "iterate"):
            raise ValueError(
                f"returns must be 'step' (g(z) of the best iterate) or 'iterate' (the best "
                f"iterate itself), got {returns!r}"
            )
        if compact and cuda_graph:
            raise ValueError(
                "compact=True and cuda_graph=True exclude each other: compaction changes the "
                "batch shape from one iteration to the next, a captured graph cannot; pick one"
            )
        if stop_mode not in ("rel", "abs"):
            raise ValueError(f"stop_mode must be 'rel' or 'abs', got {stop_mode!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol):
            raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
        if tol < 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        for flag, v in (("warn", warn), ("compact", compact), ("cuda_graph", cuda_graph),
                        ("joint", joint)):  # fmt: skip
            if not isinstance(v, bool):
                raise ValueError(f"{flag} must be True or False, got {v!r}")
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.stop_mode = stop_mode
        self.warn = warn
        self.compact = bool(compact)
        self.cuda_graph = bool(cuda_graph)
        self.joint = bool(joint)
        self.returns = returns

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def config(self) -> dict:
        """The constructor arguments, for configs and model cards."""
        cfg = {"tol": self.tol, "max_iter": self.max_iter, "stop_mode": self.stop_mode}
        if self.compact:
            cfg["compact"] = True
        if self.cuda_graph:
            cfg["cuda_graph"] = True
        if self.joint:
            cfg["joint"] = True
        if self.returns != "step":
            cfg["returns"] = self.returns
        return cfg

    def spec(self) -> dict:
        """``{"name": ..., **config()}``: JSON-serializable, accepted by :func:`get_solver`."""
        return {"name": self.name, **self.config()}

    def replace(self, **overrides) -> FixedPointSolver:
        """A copy of this solver with some options changed (e.g. ``max_iter``)."""
        cfg = {**self.config(), **overrides, "warn": self.warn}
        return type(self)(**cfg)

    @torch.compiler.disable(recursive=False)
    def __call__(self, g, z0: Tensor) -> tuple[Tensor, SolverStats]:
        """Solve ``z = g(z)``.

        Under ``torch.compile`` the map is compiled and the solver's own bookkeeping (its
        data-dependent stopping rule, the per-sample records) runs eagerly, so a compiled model
        neither breaks its graph at every iteration nor recompiles per iteration count.

        Args:
            g: A :class:`FixedPointMap`, or a plain function from states of shape ``(B, D)``
                to states of the same shape.
            z0: Initial guess, shape ``(B, D)``.

        Returns:
            ``(z_star, stats)``: the lowest-residual iterate of each sample, shape ``(B, D)``,
            and a :class:`SolverStats`. Never raises on non-convergence.
        """
        from ._compaction import Compaction

        g = as_map(g)
        if z0.dim() != 2:
            raise ValueError(
                f"solvers work on flattened (batch, dim) states, got {tuple(z0.shape)}"
            )
        t0 = time.perf_counter()
        if self.cuda_graph:
            tracker = self.run_fixed(g, z0)
        else:
            # a map of coupled blocks is compacted by whole blocks: joint solves only
            can_compact = self.compact and g.rows is not None and (self.joint or g.group is None)
            tracker = _eager(self._tracker, z0, compact=can_compact, group=g.group)
            if can_compact:
                compaction = Compaction(g, tracker)
                self._run(compaction, z0, tracker, compaction)
            else:
                self._run(g, z0, tracker)
        stats = _eager(tracker.finish, time.perf_counter() - t0)
        self.warn_unconverged(stats)
        return tracker.best_z, stats

    def run_fixed(self, g, z0: Tensor) -> _Tracker:
        """The ``cuda_graph`` solve: ``max_iter`` iterations without a host synchronization.

        Returns the tracker: its tensors (``best_z``, ``best_res``, ...) are the solve's
        outputs, so the whole call can be captured as a CUDA graph and replayed.
        """
        g = as_map(g)
        tracker = _eager(self._tracker, z0, sync_free=True, group=g.group)
        self._run(g, z0, tracker)
        return tracker

    def _tracker(self, z0: Tensor, **kw) -> _Tracker:
        return _Tracker(
            z0, self.tol, self.stop_mode, joint=self.joint, keep_step=self.returns == "step", **kw
        )

    def warn_unconverged(self, stats: SolverStats) -> None:
        if self.warn and not stats.converged:
            warnings.warn(
                f"{type(self).__name__} did not reach tol={self.tol:g} within {self.max_iter} "
                "iterations for some samples; returning the lowest-residual iterates (the "
                "returned SolverStats has the per-sample residuals)",
                ConvergenceWarning,
                stacklevel=4,  # past __call__'s torch.compiler.disable wrapper, to the caller
            )

    @torch.compiler.disable(recursive=False)
    def _run(self, g, z0: Tensor, tracker: _Tracker, compaction=None) -> None:
        dev = z0.device.type
        if torch.is_autocast_enabled(dev):
            # The solver's own algebra stays in full precision; g keeps the caller's autocast.
            dtype = torch.get_autocast_dtype(dev)

            def g_cast(z: Tensor, _g=g) -> Tensor:
                with torch.autocast(dev, dtype=dtype):
                    return _g(z).to(z.dtype)

            with torch.autocast(dev, enabled=False):
                self._iterate(g_cast, z0, tracker, compaction)
        else:
            self._iterate(g, z0, tracker, compaction)

    @torch.compiler.disable(recursive=False)
    def _iterate(self, g, z0: Tensor, tracker: _Tracker, compaction=None) -> None:
        """The loop every solver shares: evaluate, record, stop or advance, and (compacting)
        shrink the held rows and the solver's state to the unconverged ones."""
        state = _eager(self._start, z0, tracker)
        z = z0
        for k in range(self.max_iter):
            gz = g(z)  # under torch.compile, the map is what gets compiled
            z = _eager(self._after_evaluation, state, k, z, gz, g, tracker, compaction)
            if z is None:
                return

    def _after_evaluation(self, state, k, z, gz, g, tracker, compaction) -> Tensor | None:
        """Record ``(z, g(z))``; the next iterate, or ``None`` when the solve is done."""
        work = compaction.work if compaction is not None else None
        z_next = self._fused(state, k, z, gz, tracker, work)
        if z_next is None:
            diff = gz - z
            res = tracker.update(z, gz, diff=diff, work=work)
            if tracker.done:
                return None
            step = Step(k, z, gz, diff, res, g, tracker, work)
            if work is not None:
                step.res = res.index_select(0, work)
            z_next = self._advance(state, step)
        elif tracker.done:
            return None
        if compaction is not None and (keep := compaction.shrink()) is not None:
            z_next = z_next.index_select(0, keep)
            state.select(keep)
        return z_next

    def _start(self, z0: Tensor, tracker: _Tracker) -> IterState:
        """The solver's state before the first iteration (none by default)."""
        return IterState()

    @abc.abstractmethod
    def _advance(self, state: IterState, step: Step) -> Tensor:
        """The next iterate from the evaluated pair ``(step.z, step.gz)``; updates ``state``."""

    def _fused(self, state, k, z, gz, tracker, work) -> Tensor | None:
        """A solver may record and advance in one fused call (it then updates the tracker
        itself); ``None``: the shared record-then-advance path."""
        return None


@torch.compiler.disable
def _eager(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` outside ``torch.compile``'s tracing: a solver's bookkeeping."""
    return fn(*args, **kwargs)


class _Tracker:
    """Per-sample residuals, best iterates and convergence bookkeeping."""

    def __init__(
        self, z0: Tensor, tol: float, stop_mode: str, compact: bool = False,
        sync_free: bool = False, joint: bool = False, keep_step: bool = True,
        group: int | None = None,
    ) -> None:  # fmt: skip
        b = z0.shape[0]
        # group: rows per coupled block of a joint solve (consecutive rows); the whole batch
        # when the map declares none
        if group is None or not joint:
            group = b
        if isinstance(group, bool) or not isinstance(group, int) or group < 1 or b % group:
            raise ValueError(
                f"the map's group ({group!r} rows per coupled block) must be a positive integer "
                f"that divides the batch of {b} rows"
            )
        self.group = group
        # keep_step: the kept (returned) state of a sample is g(z) of its best iterate z, one
        # more step for free; otherwise z itself, the state whose residual was measured
        self.keep_step = keep_step
        # joint: one decision for the whole batch (coupled samples): the best iterate is the
        # one whose worst sample is lowest, and the solve stops when that worst is below tol
        self.joint = joint
        self.compact = compact  # rows evaluated are counted by _Compacted
        # sync_free: no host synchronization (a capturable solve): the best iterate is kept by
        # torch.where, and `done` never ends the loop early
        self.sync_free = sync_free
        self.rows = 0
        self.tol = tol
        self.stop_mode = stop_mode
        self.best_z = z0.detach().clone()
        self.best_res = torch.full((b,), math.inf, device=z0.device, dtype=torch.float32)
        self.best_abs = self.best_res.clone()
        self.best_rel = self.best_res.clone()
        self.active = torch.ones(b, dtype=torch.bool, device=z0.device)
        self.trace: list[Tensor] = []
        self.nfe = 0

    def update(
        self, z: Tensor, gz: Tensor, nfe: int = 1, diff: Tensor | None = None,
        work: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """Record the pair ``(z, g(z))``; return the per-sample residual (float32, ``(B,)``).

        ``diff = g(z) - z`` may be passed when the solver has it already (saves a pass over
        the state). The state kept for a sample's best iterate ``z`` is ``g(z)`` (one more
        step, for free) or, with ``keep_step=False``, ``z`` itself. ``work``: the batch rows
        that ``z`` holds, when a compacting solver has shrunk its state to a working set (the
        rows left out have stopped; their records stay as they are).
        """
        self.nfe += nfe
        if not self.compact:
            self.rows += nfe * z.shape[0]
        if diff is None:
            diff = gz - z
        abs_res = torch.linalg.vector_norm(diff, dim=1).float()
        g_norm = torch.linalg.vector_norm(gz, dim=1).float()
        rel_res = abs_res / (g_norm + _EPS)
        res = rel_res if self.stop_mode == "rel" else abs_res
        # an iterate whose norm overflows (or is NaN) is never converged: a relative residual of
        # finite / inf would read 0 while the iterates diverge
        ok = torch.isfinite(res) & torch.isfinite(abs_res) & torch.isfinite(g_norm)
        res = torch.where(ok, res, torch.full_like(res, math.inf))
        if work is not None:  # back to batch size; rows outside the working set have stopped
            res = self.best_res.index_copy(0, work, res)
            abs_res = self.best_abs.index_copy(0, work, abs_res)
            rel_res = self.best_rel.index_copy(0, work, rel_res)
        if self.joint:  # per block, all its samples or none: a block's state is one iterate
            worst = self._worst(res)
            better = self._spread((worst < self._worst(self.best_res)) & self._block_active())
        else:
            better = (res < self.best_res) & self.active
        self.best_res = torch.where(better, res, self.best_res)
        self.best_abs = torch.where(better, abs_res, self.best_abs)
        self.best_rel = torch.where(better, rel_res, self.best_rel)
        kept = gz if self.keep_step else z
        if self.sync_free:
            self.best_z = torch.where(better[:, None], kept.detach(), self.best_z)
            self.trace.append(res)
            self._deactivate()
            return res
        n_better = int(better.sum())
        if work is not None:
            if n_better:
                local = better.index_select(0, work).nonzero().squeeze(1)
                self.best_z.index_copy_(0, work[local], kept.detach().index_select(0, local))
        elif n_better == better.numel():
            self.best_z.copy_(kept)
        elif n_better:
            idx = better.nonzero().squeeze(1)
            self.best_z.index_copy_(0, idx, kept.detach().index_select(0, idx))
        if self.compact:  # a stopped sample was not evaluated: it keeps its best residual
            res = torch.where(self.active, res, self.best_res)
        self.trace.append(res)
        self._deactivate()
        return res

    def _worst(self, res: Tensor) -> Tensor:
        """The worst residual of each coupled block, ``(B / group,)``."""
        return res.view(-1, self.group).amax(1)

    def _block_active(self) -> Tensor:
        return self.active.view(-1, self.group)[:, 0]

    def _spread(self, per_block: Tensor) -> Tensor:
        """A per-block flag on every row of its block (no host sync: capturable)."""
        return per_block[:, None].expand(-1, self.group).reshape(-1)

    def _deactivate(self) -> None:
        if self.joint:
            self.active = self._spread(self._worst(self.best_res) > self.tol)
        else:
            self.active = self.active & (self.best_res > self.tol)

    @property
    def done(self) -> bool:
        return False if self.sync_free else not bool(self.active.any())

    def finish(self, wall: float) -> SolverStats:
        trace = torch.stack(self.trace) if self.trace else torch.empty(0, self.best_z.shape[0])
        return SolverStats(
            nfe=self.nfe,
            n_iter=len(self.trace),
            trace=trace.cpu(),
            abs_residual=self.best_abs.cpu(),
            rel_residual=self.best_rel.cpu(),
            converged_mask=(self.best_res <= self.tol).cpu(),
            wall_time=wall,
            stop_mode=self.stop_mode,
            tol=self.tol,
            returned="step" if self.keep_step else "iterate",
            rows_evaluated=self.rows,
        )
