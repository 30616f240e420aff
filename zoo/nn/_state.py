"""Flatten tensors and tuples/lists of tensors to ``(B, D)`` and back, cheaply."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

State = Tensor | Sequence[Tensor]


class Packer:
    """Remembers the structure of a state so it can be flattened and restored.

    Args:
        like: A tensor or a list/tuple of tensors sharing the batch dimension 0.

    Example:
        >>> import torch
        >>> from zoo.nn import Packer
        >>> state = [torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 2, 2)]
        >>> p = Packer(state)
        >>> flat = p.flat(state)
        >>> tuple(flat.shape), [tuple(t.shape) for t in p.unflat(flat)]
        ((2, 68), [(2, 3, 4, 4), (2, 5, 2, 2)])
    """

    def __init__(self, like: State) -> None:
        self.is_seq = not isinstance(like, Tensor)
        parts = list(like) if self.is_seq else [like]
        if not parts:
            raise ValueError("a state must hold at least one tensor")
        self.seq_type = type(like) if self.is_seq else None
        self.shapes = [tuple(p.shape) for p in parts]
        if any(len(s) < 2 for s in self.shapes):
            raise ValueError(
                f"a state tensor needs a batch dimension first: shape (batch, ...); got {self.shapes}"
                " (use x.unsqueeze(0) for a single sample)"
            )
        self.batch = self.shapes[0][0]
        for s in self.shapes:
            if s[0] != self.batch:
                raise ValueError(f"all state tensors must share the batch size; got {self.shapes}")
        self.sizes = [int(torch.Size(s[1:]).numel()) for s in self.shapes]

    def with_batch(self, n: int) -> Packer:
        """The same structure for ``n`` samples (a subset of the batch)."""
        sub = object.__new__(Packer)
        sub.__dict__.update(self.__dict__)
        sub.shapes = [(n, *s[1:]) for s in self.shapes]
        sub.batch = n
        return sub

    def flat(self, state: State) -> Tensor:
        if not self.is_seq:
            return state.reshape(self.batch, -1)
        return torch.cat([p.reshape(self.batch, -1) for p in state], dim=1)

    def unflat(self, z: Tensor) -> State:
        if not self.is_seq:
            return z.view(self.shapes[0])
        parts = torch.split(z, self.sizes, dim=1)
        out = [p.view(s) for p, s in zip(parts, self.shapes)]
        return tuple(out) if self.seq_type is tuple else out

    def check(self, out: State, what: str = "cell output") -> None:
        """Raise a ValueError naming both shapes when ``out`` does not match the state."""
        parts = list(out) if not isinstance(out, Tensor) else [out]
        got = [tuple(p.shape) for p in parts]
        if got != self.shapes:
            want = self.shapes if self.is_seq else self.shapes[0]
            have = got if self.is_seq or len(got) != 1 else got[0]
            raise ValueError(
                f"{what} shape {have} differs from the state shape {want}; a DEQ cell must "
                "map z to a tensor (or list of tensors) of exactly z's shape"
            )


@torch.compiler.disable
def check_finite(name: str, value) -> None:
    """Raise a ValueError naming ``name`` if ``value`` (tensor or sequence) has NaN/inf."""
    if value is None:
        return
    parts = [value] if isinstance(value, Tensor) else list(value)
    for i, p in enumerate(parts):
        if isinstance(p, Tensor) and p.is_floating_point() and not bool(torch.isfinite(p).all()):
            where = name if isinstance(value, Tensor) else f"{name}[{i}]"
            raise ValueError(f"{where} contains NaN or inf values; check the input and its scaling")


def index_rows(value, idx: Tensor):
    """``value`` (a tensor, or a list/tuple of tensors and ``None``) at batch rows ``idx``."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value.index_select(0, idx)
    out = [index_rows(v, idx) for v in value]
    return tuple(out) if isinstance(value, tuple) else out
