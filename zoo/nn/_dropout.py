"""Variational dropout for implicit layers: one mask per solve.

Ordinary dropout draws a new mask at every call, so a DEQ cell called 12 times in a solve would
be 12 different maps and have no fixed point; its backward solve and Jacobian term would see yet
others. Variational ("locked") dropout (Gal and Ghahramani 2016) draws one mask before the solve
and keeps it for every call until the next :meth:`VariationalDropout.reset`. MDEQ and locuslab/deq's
DEQ-Transformer place it this way (their ``VariationalHidDropout``).

The mask is redrawn *in place* when its shape allows, so a solve captured as a CUDA graph
(``DEQ(cuda_graph=True)``) reads the current mask, not the freed storage of an old one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["VariationalDropout"]


class VariationalDropout(nn.Module):
    """Dropout whose mask is shared over ``shared_dims`` and fixed between :meth:`reset` calls.

    Args:
        p: drop probability, in ``[0, 1)``. Kept entries are scaled by ``1 / (1 - p)``.
        shared_dims: the input dimensions over which one mask entry is shared (the mask has
            size 1 there). ``(2, 3)`` for a ``(B, C, H, W)`` feature map: one mask per sample
            and channel (MDEQ). ``(1,)`` for a ``(B, T, F)`` sequence: one mask per sequence
            and feature (the DEQ-Transformer).

    The cell draws the mask before each solve with ``reset(like)``, where ``like`` is the coming
    input (or just its shape). ``reset()`` with no argument clears it, and the next training
    call draws one for its own input. Identity in eval mode or at ``p=0``.

    Example:
        >>> import torch
        >>> from zoo.nn import VariationalDropout
        >>> drop = VariationalDropout(p=0.5, shared_dims=(2, 3)).train()
        >>> drop.reset(torch.ones(2, 4, 8, 8))
        >>> a, b = drop(torch.ones(2, 4, 8, 8)), drop(torch.ones(2, 4, 8, 8))
        >>> bool((a == b).all())  # one mask for every call until the next reset
        True
    """

    def __init__(self, p: float = 0.0, shared_dims: Sequence[int] = (1,)) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {p!r}")
        self.p = float(p)
        self.shared_dims = tuple(int(d) for d in shared_dims)
        self.mask: Tensor | None = None

    @property
    def active(self) -> bool:
        return self.training and self.p > 0

    def mask_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The mask's shape for an input of ``shape``: size 1 on the shared dimensions."""
        n = len(shape)
        shared = {d % n for d in self.shared_dims}
        return tuple(1 if i in shared else int(s) for i, s in enumerate(shape))

    def _draw(self, shape: tuple[int, ...], device, dtype) -> None:
        m = self.mask
        if m is None or tuple(m.shape) != shape or m.device != device or m.dtype != dtype:
            self.mask = m = torch.empty(shape, device=device, dtype=dtype)
        keep = 1.0 - self.p
        m.bernoulli_(keep).div_(keep)

    def reset(
        self,
        like: Tensor | Sequence[int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """A new solve: draw its mask for inputs shaped like ``like`` (a tensor, whose device and
        dtype are used unless given, or a shape), or, with ``like=None``, let the next training
        call draw one. Does nothing in eval mode or at ``p=0``."""
        if not self.active:
            return
        if like is None:
            self.mask = None
            return
        if isinstance(like, Tensor):
            device = like.device if device is None else device
            dtype = like.dtype if dtype is None else dtype
            like = like.shape
        self._draw(
            self.mask_shape(like),
            torch.device("cpu") if device is None else torch.device(device),
            torch.get_default_dtype() if dtype is None else dtype,
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self.active:
            return x
        shape = self.mask_shape(x.shape)
        if self.mask is None or tuple(self.mask.shape) != shape:
            self._draw(shape, x.device, torch.promote_types(x.dtype, torch.float32))
        return x * self.mask.to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, shared_dims={self.shared_dims}"
