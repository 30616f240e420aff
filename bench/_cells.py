"""The two cells every benchmark uses: an MDEQ-like multi-resolution conv cell and a
transformer-like cell, with fixed seeds, flattened to ``(B, D)`` maps for the solvers."""

from __future__ import annotations

import os
import statistics
import time

import torch
from torch import nn

from zoo.models._mdeq_cell import MDEQCell
from zoo.nn import Packer
from zoo.nn._state import index_rows
from zoo.solvers import FixedPointMap

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))


class TransformerCell(nn.Module):
    """Post-LN causal self-attention + FFN block with input injection (DEQ-Transformer-like)."""

    def __init__(self, d: int = 128, heads: int = 4, seq: int = 128) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.register_buffer("mask", torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1))

    def forward(self, z, x):
        h = self.ln1(z + self.attn(z, z, z, attn_mask=self.mask, need_weights=False)[0] + x)
        return self.ln2(h + self.ffn(h))


def mdeq_problem(batch: int = 64, size: int = 32, channels=(16, 32, 64), seed: int = 0):
    """Returns ``(cell, f_flat, z0_flat, x_list, packer)`` for the MDEQ-like cell."""
    torch.manual_seed(seed)
    cell = MDEQCell(channels, expansion=2, groups=4, wnorm=False).eval()
    x = [torch.randn(batch, channels[0], size, size)] + [None] * (len(channels) - 1)
    z0 = [torch.zeros(batch, c, size >> i, size >> i) for i, c in enumerate(channels)]
    packer = Packer(z0)

    def f(zf):
        return packer.flat(cell(packer.unflat(zf), x))

    return cell, f, packer.flat(z0), x, packer


def transformer_problem(batch: int = 16, seq: int = 128, d: int = 128, seed: int = 0):
    torch.manual_seed(seed)
    cell = TransformerCell(d, 4, seq).eval()
    x = torch.randn(batch, seq, d)
    z0 = torch.zeros_like(x)
    packer = Packer(z0)

    def f(zf):
        return packer.flat(cell(packer.unflat(zf), x))

    return cell, f, packer.flat(z0), x, packer


PROBLEMS = {
    "mdeq": mdeq_problem,
    "mdeq_tiny_trained": lambda **kw: trained_mdeq_problem(**kw),
    "mdeq_cifar10_trained": lambda **kw: trained_mdeq_problem(name="mdeq_tiny.cifar10", **kw),
    "transformer": transformer_problem,
    "deq_lm_trained": lambda **kw: trained_lm_problem(**kw),
}


class Counted:
    """Counts calls of a map (NFE) for any solver, ours or torchdeq's, and times them: ``seconds``
    is the time spent inside the cell during the solve, so ``solve time / seconds`` is the
    solver's overhead measured in place (the same cache state and machine load as the solve)."""

    def __init__(self, f) -> None:
        self.f, self.n, self.seconds, self.samples = f, 0, 0.0, 0
        fmap = f if isinstance(f, FixedPointMap) else FixedPointMap(f)
        # the subset map of per-sample compaction is counted alike; the coupled blocks kept
        rows = None if fmap.rows is None else (lambda z, idx: self._timed(fmap.rows, z, idx))
        self.fixed_point_map = FixedPointMap(self, rows=rows, group=fmap.group)

    def _timed(self, fn, *args):
        self.n += 1
        self.samples += args[0].shape[0]  # rows the cell saw (B per call without compaction)
        t0 = time.perf_counter()
        out = fn(*args)
        self.seconds += time.perf_counter() - t0
        return out

    def __call__(self, z):
        return self._timed(self.f, z)


def time_call(f, z, repeats: int = 7) -> float:
    """Median seconds of one call ``f(z)``."""
    f(z)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(z)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def rel_residual(f, z) -> torch.Tensor:
    fz = f(z)
    return (fz - z).norm(dim=1) / (fz.norm(dim=1) + 1e-9)


def print_table(rows: list[dict], cols: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.rjust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in cols))


def report(rows: list[dict], cols: list[str], out: str) -> None:
    """Print the table and write ``out`` (JSON) and its ``.md`` twin."""
    import json
    from pathlib import Path

    print_table(rows, cols)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown_table(rows, cols) + "\n")


def trained_mdeq_problem(batch: int = 64, name: str = "mdeq_tiny.fashion_mnist"):
    """The equilibrium cell of a shipped MDEQ checkpoint on real test images (None if absent)."""
    import numpy as np

    import zoo
    from zoo.tasks import sample_path

    if name not in zoo.list_models(pretrained=True):
        return None
    model = zoo.load(name)
    d = np.load(sample_path(model.pretrained_cfg["dataset"]))
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, -1, 1, 1)
    x = (torch.from_numpy(d["x"][:batch]).float() / 255 - mean) / std
    with torch.no_grad():
        inj = model.inject(model.stem(x))
    h, w = inj.shape[2:]
    z0 = [torch.zeros(batch, c, h >> i, w >> i) for i, c in enumerate(model.cell.channels)]
    xs = [inj] + [None] * (len(z0) - 1)
    packer = Packer(z0)
    cell = model.cell

    def f(zf):
        return packer.flat(cell(packer.unflat(zf), xs))

    def rows(zf, idx):  # the cell on a subset of the samples (DEQ's map for compaction)
        sub = packer.with_batch(zf.shape[0])
        return sub.flat(cell(sub.unflat(zf), index_rows(xs, idx)))

    return cell, FixedPointMap(f, rows=rows), packer.flat(z0), xs, packer


def trained_lm_problem(batch: int = 16, name: str = "deq_transformer_tiny.sotu"):
    """The equilibrium block of a shipped DEQ-Transformer on its shipped test text: ``batch``
    consecutive segments of ``tgt_len`` tokens, one solver sample per position, exactly as the
    model solves them (None if absent). A position's output depends on the positions before it
    through attention, so compaction applies only by whole sequences, in joint solves."""
    import numpy as np

    import zoo
    from zoo.data._text import Vocab
    from zoo.tasks import sample_path

    if name not in zoo.list_models(pretrained=True):
        return None
    model = zoo.load(name)
    tokens = np.load(sample_path(model.pretrained_cfg["dataset"]))["tokens"].tolist()
    t = model.tgt_len
    ids = torch.tensor(Vocab(model.tokenizer["vocab"]).encode(tokens)[: batch * t])
    ids = ids.view(batch, t)
    with torch.no_grad():
        u = model.inject(model.embed(ids) * model.d_model**0.5)
    pos, mask = model._positions(t, 0, u)
    cell = model.deq.cell
    cell.cell.set_context(None, pos, mask)

    def f(zf):  # zf: (batch * tgt_len, d_model), u: (batch, tgt_len, d_model)
        return cell(zf, u)

    # the solver's samples (positions) see each other, but only within a sequence: a joint
    # solve decides per sequence (the model's own declaration), and compaction drops finished
    # sequences
    subset = cell.row_subset(u, joint=True)
    fmap = FixedPointMap(f, rows=lambda zf, idx: cell(zf, subset(idx)), group=cell.coupled_rows(u))
    return cell, fmap, u.new_zeros(batch * t, u.shape[-1]), u, None


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.3f}".rstrip("0").rstrip(".")
    return str(v)
