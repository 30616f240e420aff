"""DEQ-Transformer language models (Bai, Kolter, Koltun, NeurIPS 2019) and the explicit
Transformer baseline with the same non-embedding parameter count.

https://arxiv.org/abs/1909.01377. One weight-tied Transformer block with input injection is
solved to its fixed point; relative positions and segment memory follow Transformer-XL.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..nn import DEQ, DEQCell
from ..solvers import FixedPointSolver, GradMode, get_grad, get_solver
from ._base import ImplicitModelMixin, ZooModel
from ._registry import register_model, register_pretrained
from ._transformer_blocks import TransformerCell, causal_mask, sinusoid_positions

__all__ = ["DEQTransformerLM", "TransformerLM"]


class _LMBase(ZooModel):
    """Embedding, tied softmax, memory handling and generation shared by both models."""

    def _build_io(self, vocab_size: int, d_model: int, dropout: float, tie_weights: bool) -> None:
        self.vocab_size, self.d_model = vocab_size, d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        if tie_weights:
            self.head.weight = self.embed.weight

    def _check_ids(self, ids: Tensor) -> None:
        if not isinstance(ids, Tensor):
            raise ValueError(f"token ids must be a tensor, got {type(ids).__name__}")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(
                f"token ids must be an integer tensor (torch.long), got {ids.dtype}; encode text "
                "with zoo.text.encode(model, text)"
            )
        if ids.dim() != 2 or ids.numel() == 0:
            raise ValueError(
                f"token ids must be a non-empty (batch, time) tensor, got shape {tuple(ids.shape)}"
            )
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(
                f"token ids must lie in [0, {self.vocab_size}); got values in [{lo}, {hi}]"
            )

    def forward(self, ids: Tensor, mems: list[Tensor] | None = None, return_mems: bool = False):
        """Next-token logits for ``ids`` (B, T).

        Sequences longer than ``tgt_len`` are processed in segments with memory (when
        ``mem_len > 0``) and otherwise raise a clear error.

        Args:
            ids: Token ids.
            mems: Memory from the previous call (``return_mems=True``).
            return_mems: Also return the memory for the next segment.
        """
        self._check_ids(ids)
        T = ids.shape[1]
        if T > self.tgt_len and self.mem_len == 0:
            raise ValueError(
                f"sequence length {T} exceeds the context {self.tgt_len}; use mem_len > 0 "
                "(segment memory) or shorter inputs"
            )
        outs = []
        for s in range(0, T, self.tgt_len):
            logits, mems = self._segment(ids[:, s : s + self.tgt_len], mems)
            outs.append(logits)
        logits = torch.cat(outs, dim=1)
        return (logits, mems) if return_mems else logits

    def _positions(self, q: int, m: int, ref: Tensor):
        return sinusoid_positions(q + m, self.d_model, ref.device, ref.dtype), causal_mask(
            q, m, ref.device
        )

    def _update_mem(self, old: Tensor | None, new: Tensor, keep: int | None = None):
        """The last ``keep`` (default ``mem_len``) positions of ``old`` then ``new``."""
        keep = self.mem_len if keep is None else keep
        if keep == 0:
            return None
        cat = new if old is None else torch.cat([old, new], dim=1)
        return cat[:, -keep:].detach()

    def _check_sampling(self, max_new_tokens, temperature, top_k) -> None:
        import math

        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or (
            temperature <= 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1
        ):
            raise ValueError(f"top_k must be a positive integer (or None for all), got {top_k!r}")

    @staticmethod
    def _sample(logits: Tensor, temperature, top_k, generator) -> Tensor:
        logits = logits.float() / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)

    def context_len(self) -> int:
        """Tokens a prediction conditions on: ``max(mem_len, tgt_len)``."""
        return max(self.mem_len, self.tgt_len)

    def stream(
        self,
        ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ):
        """Yield ``max_new_tokens`` sampled tokens ``(B, 1)``, one at a time, as they are made.

        Incremental: the prompt (its last :meth:`context_len` tokens) is encoded once, and each
        new token attends to a cache of the earlier positions' attention inputs (the DEQ's
        equilibria ``z* + u``, the explicit model's per-layer inputs), so a token costs one
        position's work, not a whole window's. A DEQ solves only the new position's fixed
        point, warm-started from the previous position's equilibrium. Causal attention makes
        this the same computation as re-encoding the window while the text fits in the
        context (the DEQ's up to its solver tolerance). Beyond it, the cache keeps the last
        ``context_len() - 1`` positions, whose states carry their own earlier history, as
        Transformer-XL's memory does.
        """
        self._check_sampling(max_new_tokens, temperature, top_k)
        self._check_ids(ids)
        return self._stream(ids, max_new_tokens, temperature, top_k, generator)

    @torch.no_grad()
    def _stream(self, ids, max_new_tokens, temperature, top_k, generator, cold_start=False):
        was = self.training
        self.eval()
        try:
            ctx = self.context_len()
            keep = ctx - 1
            window = ids[:, -ctx:]
            cache, state = None, None
            for s in range(0, window.shape[1], self.tgt_len):
                logits, cache, state = self._decode(window[:, s : s + self.tgt_len], cache, keep)
            for i in range(max_new_tokens):
                nxt = self._sample(logits[:, -1], temperature, top_k, generator)
                yield nxt
                if i + 1 < max_new_tokens:  # the last token's successor is never sampled
                    state = None if cold_start else state
                    logits, cache, state = self._decode(nxt, cache, keep, state)
        finally:
            self.train(was)

    def _decode(self, ids: Tensor, cache, keep: int, state=None):
        """One incremental step: logits, the new cache, and a per-model warm-start state."""
        logits, cache = self._segment(ids, cache, keep=keep)
        return logits, cache, None

    @torch.no_grad()
    def generate(
        self,
        ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample ``max_new_tokens`` continuations of ``ids`` (B, T); returns (B, T + new).

        Incremental decoding (see :meth:`stream`, which yields the tokens as they come).

        Args:
            ids: Prompt token ids (non-empty).
            max_new_tokens: Tokens to add.
            temperature: Softmax temperature (> 0).
            top_k: Sample among the k most likely tokens only.
            generator: Optional RNG for reproducible samples.
        """
        new = list(self.stream(ids, max_new_tokens, temperature, top_k, generator))
        return torch.cat([ids, *new], dim=1)


class _PerPosition(DEQCell):
    """Presents the state as ``(B*T, d)`` so the solver mixes and stops per position.

    Anderson's mixing weights are computed per solver "sample". With whole sequences as
    samples they depend on every position's residual, so an inexact solve leaks information
    from later tokens into earlier ones (measured: 0.02 in the logits at tol 1e-3). With one
    sample per position, position t only ever sees positions <= t.
    """

    def __init__(self, cell: TransformerCell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        return self.cell(z.view_as(u), u).reshape(z.shape)

    def init_state(self, u: Tensor) -> Tensor:
        """Zeros, one row per position: ``(B * T, d)``."""
        return u.new_zeros(u.shape[0] * u.shape[1], u.shape[2])

    def coupled_rows(self, u: Tensor) -> int:
        """Rows per coupled block: a sequence's positions attend to each other, sequences do
        not, so a joint solve stops and picks its iterate per sequence."""
        return u.shape[1]

    def row_subset(self, u: Tensor, joint: bool):
        """For compaction: the injection of whole sequences (rows ``idx``, a joint solve's
        unconverged blocks). ``None`` (full batches) for a per-position solve, whose stopped
        positions would still be attended to, or with a memory, which is per sequence."""
        if not joint or self.cell.ctx[0] is not None:
            return None
        t = u.shape[1]
        return lambda idx: u.index_select(0, idx.view(-1, t)[:, 0] // t)


class DEQTransformerLM(ImplicitModelMixin, _LMBase):
    """DEQ-Transformer: one weight-tied block ``z = f(z, u)`` solved to equilibrium.

    Args:
        vocab_size: Vocabulary size.
        d_model: Model width.
        n_heads: Attention heads.
        d_ff: Feed-forward width.
        pre_ln: Pre-LN block instead of post-LN.
        dropout: Dropout on the embedding injection and before the softmax.
        tgt_len: Segment length processed at once.
        mem_len: Memory length (previous segments' attention inputs); 0 disables memory.
        tie_weights: Tie the softmax to the embedding.
        warm_start: Start each segment's solve from the previous segment's equilibrium (same
            shape only) instead of zeros.
        solver: Forward solver (object or spec).
        grad: Gradient mode (object or spec).
        jac_reg_samples: Hutchinson probes of the Jacobian regularizer (0 = off).
        pretrain_depth: While ``pretraining`` is on (the task's first ``pretrain_steps``, as
            in locuslab/deq), the block is applied this many times from zeros with plain
            backprop instead of solved to equilibrium.
        correction_states: Training only: this many intermediate states of the solve (see
            :class:`zoo.nn.DEQ`) also go through the softmax, into ``correction_logits``, for
            the task's fixed-point correction loss (torchdeq). 0 = off.
        cell_dropout: Variational dropout inside the block (attention output, feed-forward
            hidden and output; :class:`~zoo.nn.VariationalDropout`), one mask
            per sequence and feature for a whole segment's solve and its backward, as
            locuslab/deq (0.05 in its WikiText-103 script). 0 = off.
        wnorm: Weight normalization of the block's linear maps (locuslab/deq's ``--wnorm``).

    Example:
        >>> import torch
        >>> m = DEQTransformerLM(vocab_size=50, d_model=32, n_heads=2, d_ff=64, tgt_len=8).eval()
        >>> m(torch.randint(0, 50, (2, 8))).shape
        torch.Size([2, 8, 50])
    """

    arch = "deq_transformer"
    description = "A DEQ-Transformer language model"

    def __init__(
        self,
        vocab_size: int = 10000,
        d_model: int = 128,
        n_heads: int = 4,
        d_ff: int = 2048,
        pre_ln: bool = False,
        dropout: float = 0.1,
        tgt_len: int = 128,
        mem_len: int = 0,
        tie_weights: bool = True,
        warm_start: bool = False,
        solver: FixedPointSolver | dict[str, Any] | None = None,
        grad: GradMode | dict[str, Any] | None = None,
        jac_reg_samples: int = 0,
        pretrain_depth: int = 2,
        correction_states: int = 0,
        cell_dropout: float = 0.0,
        wnorm: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(pretrain_depth, bool) or not isinstance(pretrain_depth, int):
            raise ValueError(f"pretrain_depth must be an integer >= 1, got {pretrain_depth!r}")
        if pretrain_depth < 1:
            raise ValueError(f"pretrain_depth must be an integer >= 1, got {pretrain_depth}")
        solver = solver or {"name": "anderson", "m": 5, "tol": 1e-3, "max_iter": 20}
        grad = grad or {"name": "implicit", "tol": 1e-3, "max_iter": 20}
        self._capture(locals())
        self._build_io(vocab_size, d_model, dropout, tie_weights)
        self.inject = nn.Linear(d_model, d_model)
        self.deq = DEQ(
            _PerPosition(TransformerCell(d_model, n_heads, d_ff, pre_ln, cell_dropout, wnorm)),
            solver=get_solver(solver),
            grad=get_grad(grad),
            jac_reg_samples=jac_reg_samples,
            correction_states=correction_states,
        )
        self.correction_logits: list[Tensor] = []
        self.tgt_len, self.mem_len, self.warm_start = tgt_len, mem_len, warm_start
        self.pretrain_depth, self.pretraining = pretrain_depth, False
        self._z_prev: Tensor | None = None
        self._z_last: Tensor | None = None

    def reset_warm_start(self) -> None:
        """Forget the previous segment's equilibrium: the next solve starts from zeros. The LM
        task calls it where a stream starts again (each epoch, validation and test), as it
        drops the memory, so an evaluation never starts from a training batch's state."""
        self._z_prev = None

    def _segment(self, ids: Tensor, mems, keep: int | None = None, z_init: Tensor | None = None):
        mem = mems[0] if mems else None
        u = self.inject(self.drop(self.embed(ids) * self.d_model**0.5))
        m = 0 if mem is None else mem.shape[1]
        pos, mask = self._positions(ids.shape[1], m, u)
        self.deq.cell.cell.set_context(mem, pos, mask, batch=ids.shape[0])
        b, t, d = u.shape
        z0 = u.new_zeros(b * t, d)
        if z_init is not None:
            z0 = z_init.reshape(b, 1, d).expand(b, t, d).reshape(b * t, d)
        elif self.warm_start and self._z_prev is not None and self._z_prev.shape == z0.shape:
            z0 = self._z_prev
        if self.pretraining and self.training:  # the shallow unrolled stack, plain backprop
            zf, self.deq.info = z0, None  # no solve: no cost record, no Jacobian term
            for _ in range(self.pretrain_depth):
                zf = self.deq.cell(zf, u)
            z = zf.view(b, t, d)
        else:
            z = self.deq(u, z0).view(b, t, d)
        corr = self.deq.info.corrections if self.deq.info is not None else []
        self.correction_logits = [self.head(self.drop(self.ln_f(c.view(b, t, d)))) for c in corr]
        if self.warm_start:
            self._z_prev = z.detach().reshape(b * t, d)
        self._z_last = z[:, -1].detach()
        new_mem = self._update_mem(mem, (z + u).detach(), keep)
        return self.head(self.drop(self.ln_f(z))), [new_mem] if new_mem is not None else None

    def _decode(self, ids: Tensor, cache, keep: int, state=None):
        # warm start: the new position's fixed point from the previous position's equilibrium
        logits, cache = self._segment(ids, cache, keep=keep, z_init=state)
        return logits, cache, self._z_last


class TransformerLM(_LMBase):
    """Explicit (not weight-tied) Transformer-XL-style LM with ``n_layers`` blocks; the baseline.

    Args:
        vocab_size: Vocabulary size.
        d_model: Model width.
        n_heads: Attention heads.
        d_ff: Feed-forward width of each block.
        n_layers: Number of blocks.
        pre_ln: Pre-LN blocks.
        dropout: Dropout on the embedding and before the softmax.
        tgt_len: Segment length.
        mem_len: Memory length per layer (0 = none).
        tie_weights: Tie the softmax to the embedding.
        cell_dropout: Variational dropout inside each block, as :class:`DEQTransformerLM`'s
            (one mask per block and segment). 0 = off.
        wnorm: Weight normalization of each block's linear maps.
    """

    arch = "transformer"
    description = "An explicit Transformer language model (the DEQ's baseline)"

    def __init__(
        self,
        vocab_size: int = 10000,
        d_model: int = 128,
        n_heads: int = 4,
        d_ff: int = 320,
        n_layers: int = 4,
        pre_ln: bool = False,
        dropout: float = 0.1,
        tgt_len: int = 128,
        mem_len: int = 0,
        tie_weights: bool = True,
        cell_dropout: float = 0.0,
        wnorm: bool = False,
    ) -> None:
        super().__init__()
        self._capture(locals())
        self._build_io(vocab_size, d_model, dropout, tie_weights)
        self.inject = nn.Linear(d_model, d_model)
        self.layers = nn.ModuleList(
            TransformerCell(d_model, n_heads, d_ff, pre_ln, cell_dropout, wnorm)
            for _ in range(n_layers)
        )
        self.tgt_len, self.mem_len = tgt_len, mem_len

    def _segment(self, ids: Tensor, mems, keep: int | None = None):
        keep = self.mem_len if keep is None else keep
        h = self.inject(self.drop(self.embed(ids) * self.d_model**0.5))
        new_mems = []
        for i, layer in enumerate(self.layers):
            mem = mems[i] if mems else None
            m = 0 if mem is None else mem.shape[1]
            pos, mask = self._positions(ids.shape[1], m, h)
            layer.set_context(mem, pos, mask, batch=ids.shape[0])
            new_mems.append(self._update_mem(mem, h.detach(), keep))
            h = layer(h, None)
        mems_out = new_mems if keep else None
        return self.head(self.drop(self.ln_f(h))), mems_out


def non_embedding_params(model: nn.Module) -> int:
    """Parameters outside the (tied) embedding/softmax."""
    skip = {id(model.embed.weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip) - model.head.bias.numel()


@register_model(family="deq_lm", task="language-modeling")
def deq_transformer_tiny(**kwargs) -> DEQTransformerLM:
    """d=128, 4 heads, one block with d_ff=2048 (~594K non-embedding parameters)."""
    return DEQTransformerLM(**{**dict(d_model=128, n_heads=4, d_ff=2048), **kwargs})


@register_model(family="deq_lm", task="language-modeling")
def transformer_tiny(**kwargs) -> TransformerLM:
    """4 explicit blocks of d_ff=320: the same non-embedding size as deq_transformer_tiny."""
    return TransformerLM(**{**dict(d_model=128, n_heads=4, d_ff=320, n_layers=4), **kwargs})


@register_model(family="deq_lm", task="language-modeling")
def deq_transformer_medium(**kwargs) -> DEQTransformerLM:
    """The paper's WikiText-103 medium size: d=410, 10 heads, d_ff=2100, adaptive-softmax-free
    tied softmax here (multi-GPU recipe only)."""
    cfg = dict(
        vocab_size=267735, d_model=410, n_heads=10, d_ff=2100, tgt_len=150, mem_len=150, dropout=0.1
    )
    return DEQTransformerLM(**{**cfg, **kwargs})


_DEQ_PAPER = "Bai, Kolter, Koltun. Deep Equilibrium Models. NeurIPS 2019. arXiv:1909.01377"
_SOTU = dict(
    task="language-modeling",
    dataset="sotu",
    datamodule="sotu",
    card_prompt="The state of the union is",
    datamodule_args={"vocab_size": 10000},
    license="apache-2.0",
    paper=_DEQ_PAPER,
)
register_pretrained(
    {
        "deq_transformer_tiny.sotu": dict(
            **_SOTU,
            recipe="recipes/deq_lm/deq_transformer_tiny.sotu.yaml",
        ),
        "transformer_tiny.sotu": dict(
            **_SOTU,
            recipe="recipes/deq_lm/transformer_tiny.sotu.yaml",
        ),
    }
)
_SHAKESPEARE = dict(
    task="language-modeling",
    dataset="shakespeare_char",
    datamodule="shakespeare_char",
    card_prompt="ROMEO:",
    tokens_per_step=16 * 128,
    license="apache-2.0",
    paper=_DEQ_PAPER,
)
register_pretrained(
    {
        "deq_transformer_tiny.shakespeare_char": dict(
            **_SHAKESPEARE,
            recipe="recipes/deq_lm/deq_transformer_tiny.shakespeare_char.yaml",
            card_budgets=[4, 8, 12, 20],
        ),
        "transformer_tiny.shakespeare_char": dict(
            **_SHAKESPEARE,
            recipe="recipes/deq_lm/transformer_tiny.shakespeare_char.yaml",
        ),
    }
)
