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

import torch
from torch import Tensor

__all__ = ["ConvergenceWarning", "FixedPointSolver", "SolverStats"]

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


class FixedPointSolver(abc.ABC):
    """Base class of the fixed-point solvers (strategy objects).

    Args:
        tol: Stopping tolerance on the per-sample residual.
        max_iter: Maximum number of iterations.
        stop_mode: ``"rel"`` (``||g(z)-z|| / ||g(z)||``) or ``"abs"`` (``||g(z)-z||``).
        warn: Issue one :class:`ConvergenceWarning` when ``tol`` is not reached.
        compact: Per-sample batch compaction: evaluate the map only on the samples that have
            not converged yet, when the map offers it (``g.rows(z_rows, idx)``, as ``DEQ``
            does for cells that declare per-sample independence, in eval mode). The results
            are the full-batch solve's; a map without ``rows`` gets full batches. Once a
            quarter of the rows still held have stopped, the solver gathers its own state
            (iterate, Anderson history and Gram matrix, Broyden's low-rank inverse Jacobian)
            to the unconverged rows, so its algebra shrinks with the cell's work.
        cuda_graph: A fixed-budget solve with no host synchronization: exactly ``max_iter``
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
            ``tol`` each sample met on its own. A map may
            declare that only consecutive blocks of its rows are coupled (``g.group``: rows
            per block, e.g. one sequence's positions); the decision is then one per block,
            and with ``compact`` a stopped block's rows are no longer evaluated. Without
            ``g.group`` the whole batch is one block, and ``compact`` has nothing to drop.
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

    def __call__(self, g: Callable[[Tensor], Tensor], z0: Tensor) -> tuple[Tensor, SolverStats]:
        """Solve ``z = g(z)``.

        Args:
            g: Map from states of shape ``(B, D)`` to states of the same shape.
            z0: Initial guess, shape ``(B, D)``.

        Returns:
            ``(z_star, stats)``: the lowest-residual iterate of each sample, shape ``(B, D)``,
            and a :class:`SolverStats`. Never raises on non-convergence.
        """
        if z0.dim() != 2:
            raise ValueError(
                f"solvers work on flattened (batch, dim) states, got {tuple(z0.shape)}"
            )
        t0 = time.perf_counter()
        if self.cuda_graph:
            tracker = self.run_fixed(g, z0)
        else:
            # a map of coupled blocks (g.group) is compacted by whole blocks: joint solves only
            blocks_ok = self.joint or getattr(g, "group", None) is None
            rows = getattr(g, "rows", None) if self.compact and blocks_ok else None
            tracker = self._tracker(z0, compact=rows is not None, group=getattr(g, "group", None))
            self._run(_Compacted(g, rows, tracker) if rows is not None else g, z0, tracker)
        stats = tracker.finish(time.perf_counter() - t0)
        self.warn_unconverged(stats)
        return tracker.best_z, stats

    def run_fixed(self, g: Callable[[Tensor], Tensor], z0: Tensor) -> _Tracker:
        """The ``cuda_graph`` solve: ``max_iter`` iterations without a host synchronization.

        Returns the tracker: its tensors (``best_z``, ``best_res``, ...) are the solve's
        outputs, so the whole call can be captured as a CUDA graph and replayed.
        """
        tracker = self._tracker(z0, sync_free=True, group=getattr(g, "group", None))
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
                stacklevel=3,
            )

    def _run(self, g: Callable[[Tensor], Tensor], z0: Tensor, tracker: _Tracker) -> None:
        dev = z0.device.type
        if torch.is_autocast_enabled(dev):
            # The solver's own algebra stays in full precision; g keeps the caller's autocast.
            dtype = torch.get_autocast_dtype(dev)

            def g_cast(z: Tensor, _g=g) -> Tensor:
                with torch.autocast(dev, dtype=dtype):
                    return _g(z).to(z.dtype)

            with torch.autocast(dev, enabled=False):
                self._solve(g_cast, z0, tracker)
        else:
            self._solve(g, z0, tracker)

    @abc.abstractmethod
    def _solve(self, g: Callable[[Tensor], Tensor], z0: Tensor, tracker: _Tracker) -> None:
        """Iterate, reporting every evaluated pair ``(z, g(z))`` to ``tracker.update``.

        Stop when ``tracker.update`` returns True (all samples converged) or at ``max_iter``.
        """


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


class _Compacted:
    """``g`` evaluated on the unconverged samples only (gathered, then scattered back); a
    stopped sample gets ``g(z) = z``, which the tracker never records (its best is frozen) and
    which leaves the solvers' per-sample algebra finite.

    A solver may also shrink its own state (history, Gram matrix) to a working set of rows,
    so that its algebra, not only the map, runs on fewer rows: it calls :meth:`shrink` after
    each iteration, gathers its per-row state with the local indices it returns, and passes
    ``work`` (the batch rows it now holds) to ``tracker.update``. ``__call__`` then takes and
    returns states of the working set's size.
    """

    # shrink once the active rows are at most this fraction of the working set: a shrink
    # copies the solver's history once, about one iteration of its algebra
    shrink_at = 0.75

    def __init__(self, g: Callable[[Tensor], Tensor], rows, tracker: _Tracker) -> None:
        self.g, self.rows_fn, self.tracker = g, rows, tracker
        self.work: Tensor | None = None  # batch rows of the working set; None: all of them

    def _held_active(self) -> Tensor:
        """Which rows of the working set are still unconverged."""
        active = self.tracker.active
        return active if self.work is None else active.index_select(0, self.work)

    def __call__(self, z: Tensor) -> Tensor:
        active = self._held_active()
        n = int(active.sum())
        self.tracker.rows += n
        if n == active.numel():  # every row held is unconverged: nothing to gather or scatter
            return self.g(z) if self.work is None else self.rows_fn(z, self.work).to(z.dtype)
        out = z.clone()
        if n:
            idx = active.nonzero().squeeze(1)
            rows = idx if self.work is None else self.work[idx]
            out.index_copy_(0, idx, self.rows_fn(z.index_select(0, idx), rows).to(z.dtype))
        return out

    def shrink(self) -> Tensor | None:
        """Local indices of the working rows to keep, or None while shrinking does not pay."""
        active = self._held_active()
        n = int(active.sum())
        if n == 0 or n > self.shrink_at * active.numel():
            return None
        keep = active.nonzero().squeeze(1)
        self.work = keep if self.work is None else self.work[keep]
        return keep


def shrunk(shrink, *state: Tensor) -> tuple[Tensor, ...] | None:
    """A solver's per-row state gathered to the working set when ``shrink`` (a compacting
    map's :meth:`_Compacted.shrink`, or None) says it is time; None otherwise."""
    keep = shrink() if shrink is not None else None
    return None if keep is None else tuple(t.index_select(0, keep) for t in state)
