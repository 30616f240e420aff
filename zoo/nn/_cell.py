"""What a ``DEQ`` needs from its cell: ``cell(z, x)``, and optional capabilities declared as
members of :class:`DEQCell` (or of any object meeting the :class:`EquilibriumCell` protocol)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ._state import State, index_rows

__all__ = ["DEQCell", "EquilibriumCell", "capabilities"]

_MEMBERS = ("init_state", "coupled_rows", "row_subset")


@runtime_checkable
class EquilibriumCell(Protocol):
    """The cell a ``DEQ`` wraps, with every optional capability declared.

    A plain function ``(z, x) -> z`` or any ``nn.Module`` is a cell too: it gets the defaults of
    :class:`DEQCell` (zeros as the initial state, independent samples that are never evaluated
    apart). A cell that offers a capability subclasses :class:`DEQCell` and overrides it.

    Example:
        >>> from zoo.nn import DEQCell, EquilibriumCell
        >>> isinstance(DEQCell(), EquilibriumCell), isinstance(lambda z, x: z, EquilibriumCell)
        (True, False)
    """

    def __call__(self, z: State, x: Any) -> State: ...

    def init_state(self, x: Any) -> State:
        """The initial state for injection ``x`` when the caller gives none."""
        ...

    def coupled_rows(self, x: Any) -> int | None:
        """Rows per coupled block of the flattened state (``None``: independent samples)."""
        ...

    def row_subset(self, x: Any, joint: bool) -> Callable[[Tensor], Any] | None:
        """``idx -> the injection of state rows idx`` if the cell can run on a subset of the
        batch (what batch compaction needs), else ``None``."""
        ...


class DEQCell(nn.Module):
    """Base class for DEQ cells that declare capabilities; subclasses define ``forward(z, x)``.

    Attributes:
        batch_independent: Each sample's output depends on that sample alone (no batch
            statistics, no mask shared across samples in eval), so a solver built with
            ``compact=True`` may evaluate the unconverged samples only. ``False`` by default.

    Example:
        >>> import torch
        >>> from zoo.nn import DEQ, DEQCell
        >>> class Cell(DEQCell):
        ...     batch_independent = True  # per-sample: compaction may skip converged samples
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.lin = torch.nn.Linear(4, 4)
        ...     def forward(self, z, x):
        ...         return torch.tanh(0.5 * self.lin(z) + x)
        >>> deq = DEQ(Cell(), solver={"name": "anderson", "compact": True}).eval()
        >>> deq(torch.randn(8, 4)).shape
        torch.Size([8, 4])
    """

    batch_independent: ClassVar[bool] = False

    def init_state(self, x: Any) -> State:
        """Zeros shaped like ``x`` (a tensor, or a list/tuple of tensors)."""
        if isinstance(x, Tensor):
            return torch.zeros_like(x)
        if isinstance(x, (list, tuple)) and x and all(isinstance(t, Tensor) for t in x):
            zeros = [torch.zeros_like(t) for t in x]
            return tuple(zeros) if isinstance(x, tuple) else zeros
        raise ValueError(
            "pass z0 explicitly when x is not a tensor or a list of tensors shaped like the "
            "state (or give the cell an init_state(x))"
        )

    def coupled_rows(self, x: Any) -> int | None:
        """``None``: the rows of the flattened state are independent samples."""
        return None

    def row_subset(self, x: Any, joint: bool) -> Callable[[Tensor], Any] | None:
        """With ``batch_independent``: the injection's rows ``idx``; otherwise ``None``."""
        if not self.batch_independent:
            return None
        return lambda idx: index_rows(x, idx)


class _Defaults(DEQCell):
    """The capabilities of a cell that declares none."""

    def forward(self, z, x):  # pragma: no cover - never called: only its defaults are used
        raise NotImplementedError


_DEFAULTS = _Defaults()


def capabilities(cell) -> EquilibriumCell:
    """The object that answers for ``cell``'s capabilities: the cell itself when it declares
    them all (:class:`EquilibriumCell`), else the defaults."""
    return cell if isinstance(cell, EquilibriumCell) else _DEFAULTS


def check_declared(cell) -> None:
    """Refuse a cell that defines some capabilities without declaring the protocol: they would
    be ignored without a word."""
    if isinstance(cell, EquilibriumCell):
        return
    found = [n for n in (*_MEMBERS, "batch_independent") if n in dir(cell)]
    if found:
        raise TypeError(
            f"the cell {type(cell).__name__} defines {', '.join(found)} but not the whole "
            "EquilibriumCell protocol (init_state, coupled_rows, row_subset), so a DEQ would "
            "ignore them; subclass zoo.nn.DEQCell, which supplies the defaults, and keep your "
            "overrides"
        )
