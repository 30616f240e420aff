"""Per-sample batch compaction, around any solver.

With ``compact=True`` the map is evaluated only on the rows that have not converged (gathered,
then scattered back), and once enough rows have stopped the solver's iterate and its own state
(:class:`~zoo.solvers._base.IterState`) are gathered to the unconverged rows, so that its algebra
shrinks too. The solvers themselves know nothing of it: the shared loop in
:meth:`FixedPointSolver._iterate <zoo.solvers.FixedPointSolver>` calls :meth:`Compaction.shrink`
and gathers what the solver declared per-row.
"""

from __future__ import annotations

from torch import Tensor

from ._base import FixedPointMap, _Tracker

__all__ = ["Compaction"]


class Compaction:
    """A map evaluated on the unconverged rows of a solve only.

    A stopped row gets ``g(z) = z``, which the tracker never records (its best is frozen) and
    which keeps the solvers' per-row algebra finite. After :meth:`shrink` has returned rows to
    keep, calls take and return states of the working set's size, and :attr:`work` holds the
    batch rows they are.
    """

    # shrink once the active rows are at most this fraction of the working set: a shrink
    # copies the solver's history once, about one iteration of its algebra
    shrink_at = 0.75

    def __init__(self, g: FixedPointMap, tracker: _Tracker) -> None:
        if g.rows is None:
            raise ValueError("compaction needs a map that declares rows (FixedPointMap.rows)")
        self.g, self.tracker = g, tracker
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
            return self.g(z) if self.work is None else self.g.rows(z, self.work).to(z.dtype)
        out = z.clone()
        if n:
            idx = active.nonzero().squeeze(1)
            rows = idx if self.work is None else self.work[idx]
            out.index_copy_(0, idx, self.g.rows(z.index_select(0, idx), rows).to(z.dtype))
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
