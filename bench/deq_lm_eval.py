"""How a shipped DEQ-LM's evaluation solves its segments, and what it costs.

Three ways to solve the same segments with the same weights and budget (the shipped
``max_iter`` and ``tol``):

* ``per position``: each position stops on its own residual (the solver's default, and how both
  DEQ-LMs were once carded). Positions attend to each other, so the returned state
  mixes iterations (``docs/choosing-a-solver.md``).
* ``joint``: one stop and best-iterate decision per sequence (the model declares its sequences
  as the solver's coupled blocks): the returned state of a sequence is one iterate.
* ``joint + compact``: the same, and a finished sequence is no longer evaluated.

On each shipped DEQ-LM's shipped evaluation sample (``zoo/_samples``), in batches of 16 segments
of ``tgt_len`` tokens: the loss (nats and bits per token), the mean solver iterations per batch,
the rows the cell evaluated against the full batch at every iteration, and the seconds of the
model calls (median of ``--repeats`` rounds, the three modes interleaved within each round so
that machine noise hits them alike).

Run: python bench/deq_lm_eval.py [--quick] [--repeats 3]
"""

from __future__ import annotations

import math
import statistics
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from _cells import report
from _harness import parser, setup

import zoo
from zoo.data._text import Vocab
from zoo.tasks import sample_path

MODES = {
    "per position": {"joint": False, "compact": False},
    "joint": {"joint": True, "compact": False},
    "joint + compact": {"joint": True, "compact": True},
}
COLS = [
    "checkpoint", "mode", "tokens", "loss_nats", "bits", "mean_iterations", "rows_vs_full",
    "seconds", "time_vs_per_position",
]  # fmt: skip


def _with_solver(name: str, **opts):
    model = zoo.load(name).eval()
    base = model.deq.eval_solver or model.deq.solver
    model.deq.eval_solver = base.replace(**opts)
    return model


def _pass(model, x, y, batch):
    nll, iters, rows, full, sec = 0.0, 0, 0, 0, 0.0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            t0 = time.perf_counter()
            logits = model(x[i : i + batch])
            sec += time.perf_counter() - t0
            yy = y[i : i + batch]
            nll += F.cross_entropy(
                logits.flatten(0, 1).float(), yy.flatten(), reduction="sum"
            ).item()
            st = model.deq.stats
            iters += st.nfe
            rows += st.rows_evaluated
            full += st.nfe * yy.numel()
    return nll, iters, rows, full, sec


def table(repeats: int, quick: bool) -> list[dict]:
    rows = []
    for name in ("deq_transformer_tiny.sotu", "deq_transformer_tiny.shakespeare_char"):
        if name not in zoo.list_models(pretrained=True):
            continue
        models = {mode: _with_solver(name, **opts) for mode, opts in MODES.items()}
        first = next(iter(models.values()))
        tokens = np.load(sample_path(first.pretrained_cfg["dataset"]))["tokens"].tolist()
        ids = torch.tensor(Vocab(first.tokenizer["vocab"]).encode(tokens))
        t, batch = first.tgt_len, 16
        n = (len(ids) - 1) // t // batch * batch
        if quick:
            n = batch
        x, y = ids[: n * t].view(n, t), ids[1 : n * t + 1].view(n, t)
        secs = {mode: [] for mode in models}
        result = {}
        for rnd in range(repeats + 1):  # round 0 warms up
            for mode, model in models.items():
                nll, iters, evaluated, full, sec = _pass(model, x, y, batch)
                if rnd:
                    secs[mode].append(sec)
                result[mode] = (nll, iters, evaluated, full)
        base = statistics.median(secs["per position"])
        for mode in models:
            nll, iters, evaluated, full = result[mode]
            sec = statistics.median(secs[mode])
            rows.append({
                "checkpoint": name, "mode": mode, "tokens": y.numel(),
                "loss_nats": round(nll / y.numel(), 5),
                "bits": round(nll / y.numel() / math.log(2), 4),
                "mean_iterations": round(iters / (n // batch), 2),
                "rows_vs_full": round(evaluated / full, 3),
                "seconds": round(sec, 3), "time_vs_per_position": round(sec / base, 3),
            })  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "deq_lm_eval.json")
    p.add_argument("--repeats", type=int, default=3)
    a = setup(p.parse_args(argv))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unconverged solves are in the table, not warnings
        rows = table(a.repeats, a.quick)
    report(rows, COLS, a.out)
    return rows


if __name__ == "__main__":
    main()
