"""Transformer pieces for the DEQ-Transformer family: relative multi-head attention
(Transformer-XL, Dai et al. 2019) and the block used as the equilibrium cell."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..nn import VariationalDropout

__all__ = [
    "RelMultiHeadAttention",
    "TransformerCell",
    "sinusoid_positions",
    "causal_mask",
]


def sinusoid_positions(klen: int, d: int, device=None, dtype=None) -> Tensor:
    """Embeddings of the relative distances ``klen-1, ..., 0`` (Transformer-XL order)."""
    pos = torch.arange(klen - 1, -1, -1.0, device=device)
    inv = 1.0 / (10000 ** (torch.arange(0.0, d, 2.0, device=device) / d))
    ang = pos[:, None] * inv[None]
    out = torch.cat([ang.sin(), ang.cos()], dim=-1)
    return out.to(dtype) if dtype is not None else out


def causal_mask(qlen: int, mlen: int, device=None) -> Tensor:
    """``True`` where attention is forbidden: query ``i`` sees memory and keys ``<= i``."""
    return torch.triu(
        torch.ones(qlen, qlen + mlen, dtype=torch.bool, device=device), diagonal=1 + mlen
    )


def _rel_shift(x: Tensor) -> Tensor:
    """Shift ``(B, H, Q, K)`` scores so that column ``j`` holds relative distance ``i - j``."""
    b, h, q, k = x.shape
    x = torch.nn.functional.pad(x, (1, 0))
    return x.view(b, h, k + 1, q)[:, :, 1:].view(b, h, q, k)


class RelMultiHeadAttention(nn.Module):
    """Multi-head attention with relative positional encoding and segment memory."""

    def __init__(self, d_model: int, n_heads: int, dropatt: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.h, self.dh = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.r_net = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.r_w_bias = nn.Parameter(torch.zeros(n_heads, self.dh))
        self.r_r_bias = nn.Parameter(torch.zeros(n_heads, self.dh))
        self.drop = nn.Dropout(dropatt)
        self.scale = 1.0 / math.sqrt(self.dh)

    def context(self, mem: Tensor | None, pos: Tensor) -> tuple[Tensor | None, Tensor]:
        """The memory's keys and values ``(B, M, 2d)`` and the position embeddings' projection:
        what every query of a segment shares. A solve computes them once (``set_context``)."""
        d = self.out.in_features
        kv = None
        if mem is not None and mem.shape[1] > 0:
            kv = torch.nn.functional.linear(mem, self.qkv.weight[d:])
        return kv, self.r_net(pos)

    def forward(self, x: Tensor, mem: Tensor | None, pos: Tensor, mask: Tensor, ctx=None) -> Tensor:
        b, q, d = x.shape
        mem_kv, r = self.context(mem, pos) if ctx is None else ctx
        qh, kh, vh = self.qkv(x).split(d, dim=-1)
        if mem_kv is not None:
            mk, mv = mem_kv.split(d, dim=-1)
            kh, vh = torch.cat([mk, kh], dim=1), torch.cat([mv, vh], dim=1)
        k_len = kh.shape[1]
        qh = qh.reshape(b, q, self.h, self.dh)
        kh = kh.reshape(b, k_len, self.h, self.dh)
        vh = vh.reshape(b, k_len, self.h, self.dh)
        r = r.view(k_len, self.h, self.dh)
        ac = torch.einsum("bqhd,bkhd->bhqk", qh + self.r_w_bias, kh)
        bd = _rel_shift(torch.einsum("bqhd,khd->bhqk", qh + self.r_r_bias, r))
        score = (ac + bd) * self.scale
        score = score.masked_fill(mask[None, None], float("-inf"))
        # softmax in at least float32 (bf16/fp16 upcast; float64 stays float64)
        wide = torch.promote_types(score.dtype, torch.float32)
        attn = self.drop(torch.softmax(score.to(wide), dim=-1).to(vh.dtype))
        y = torch.einsum("bhqk,bkhd->bqhd", attn, vh).reshape(b, q, d)
        return self.out(y)


class TransformerCell(nn.Module):
    """``f(z, u)``: one Transformer block applied to ``z + u`` (input injection ``u``).

    Post-LN (default, bounded outputs: the DEQ-Transformer choice) or pre-LN. The attention
    context (memory, relative positions, mask) is set with :meth:`set_context` before a solve.

    Args:
        dropout: Variational dropout (:class:`zoo.nn.VariationalDropout`, one mask per sequence and feature) on the attention output, the
            feed-forward hidden layer and the feed-forward output, as locuslab/deq's
            DEQ-Transformer places it. Its masks are drawn once per :meth:`set_context` (one
            segment), so every call of a solve sees the same function.
        wnorm: Weight normalization (Salimans and Kingma 2016; ``weight = g v / ||v||`` per
            output row) of the block's linear maps, as locuslab/deq's ``--wnorm``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        pre_ln: bool = False,
        dropout: float = 0.0,
        wnorm: bool = False,
    ) -> None:
        super().__init__()
        self.attn = RelMultiHeadAttention(d_model, n_heads)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff),
            nn.GELU(),
            VariationalDropout(dropout),
            nn.Linear(d_ff, d_model),
        )
        self.drop_attn, self.drop_ff = (
            VariationalDropout(dropout),
            VariationalDropout(dropout),
        )
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.pre_ln, self.d_model, self.d_ff = pre_ln, d_model, d_ff
        if wnorm:
            from torch.nn.utils.parametrizations import weight_norm

            for lin in (self.attn.qkv, self.attn.r_net, self.attn.out, self.ff[0], self.ff[3]):
                weight_norm(lin, dim=0)
        self.ctx: tuple = (None, None, None)
        self._shared: tuple | None = None

    def set_context(
        self, mem: Tensor | None, pos: Tensor, mask: Tensor, batch: int | None = None
    ) -> None:
        """A new segment: its attention context and, in training, new dropout masks for its
        ``batch`` sequences (drawn at the first call when ``batch`` is not given)."""
        self.ctx = (mem, pos, mask)
        self._shared = None
        dtype = torch.promote_types(pos.dtype, torch.float32)
        for d, n in (
            (self.drop_attn, self.d_model),
            (self.ff[2], self.d_ff),
            (self.drop_ff, self.d_model),
        ):
            d.reset(None if batch is None else (batch, 1, n), pos.device, dtype)

    def _attend(self, x: Tensor) -> Tensor:
        mem, pos, mask = self.ctx
        if torch.is_grad_enabled():  # a graph per call: backward passes may reuse the cell
            return self.attn(x, mem, pos, mask)
        # without a graph (a solve's iterations, generation), the memory's keys and values and
        # the position projection are computed once per context, not once per call
        if self._shared is None:
            self._shared = self.attn.context(mem, pos)
        return self.attn(x, mem, pos, mask, self._shared)

    def forward(self, z: Tensor, u: Tensor | None) -> Tensor:
        a = z if u is None else z + u
        if self.pre_ln:
            h = a + self.drop_attn(self._attend(self.ln1(a)))
            return h + self.drop_ff(self.ff(self.ln2(h)))
        h = self.ln1(a + self.drop_attn(self._attend(a)))
        return self.ln2(h + self.drop_ff(self.ff(h)))
