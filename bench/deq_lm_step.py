"""The DEQ-Transformer's training step against the explicit one.

Two tables.

``step``: seconds per training step (forward, loss, backward; median of ``--steps`` after one
warm-up step, in this process, one configuration after another) at the shape: d=128,
T=128, batch 16, vocabulary 10,000, dropout off. The explicit model at 4 blocks (the depth of
the shipped pairs, which already reaches a lower perplexity than the DEQ) and at 16 (the
"equal depth" comparison); the DEQ as the shipped recipes train it (12 Anderson iterations,
phantom gradients k=2, one Hutchinson probe), with the exact implicit gradient (16 + 16
iterations, bench/lm.py's ``deq``), and with a cheap step: fewer forward iterations
and a one-step Jacobian-free gradient, no Jacobian term; and as the shipped recipes train it (char
version 5 and the SOTU stage: 12 iterations, a 12-call implicit backward solve, two correction
states through the softmax, the Jacobian term on 35% of the steps, so a row with and a row
without it, and their 0.65/0.35 mean). Solver tolerance 0, so every configuration runs exactly
its iterations (the training runs stop earlier where a solve meets tol 1e-3).

``warm``: the forward solve warm-started from the previous segment's fixed point (the model's
``warm_start``; a training stream's row i continues in the next batch's row i, so the data
allows it) against a cold start from zeros, on the shipped DEQ-Transformers and their shipped
evaluation text in consecutive segments: mean NFE to tol 1e-3 (20 at most), the mean relative
residual after 6 iterations, and the loss at both budgets.

Run: python bench/deq_lm_step.py [--quick]
"""

from __future__ import annotations

import math
import statistics
import time
import warnings

import torch
from _cells import report
from _harness import parser, setup

import zoo

STEP_COLS = ["model", "forward", "gradient", "step_s", "time_vs_explicit_4", "time_vs_explicit_16"]
WARM_COLS = ["checkpoint", "start", "budget", "mean_nfe", "mean_rel_residual", "loss", "metric"]


def _deq(max_iter: int, grad: dict, jac: int = 0, corr: int = 0, **common):
    return zoo.create_model(
        "deq_transformer_tiny",
        **common,
        solver={"name": "anderson", "m": 5, "tol": 0.0, "max_iter": max_iter},
        grad=grad,
        jac_reg_samples=jac,
        correction_states=corr,
    )


RECIPE_GRAD = {"name": "implicit", "tol": 0.0, "max_iter": 12}  # the shipped recipes: 12 + 12 calls
JAC_FREQ = 0.35  # the share of the recipe's steps that compute the Jacobian term


STEP_CONFIGS = [
    ("explicit, 4 blocks", "4 blocks", "backprop", lambda c: _ex(4, c)),
    ("explicit, 16 blocks", "16 blocks", "backprop", lambda c: _ex(16, c)),
    (
        "deq, shipped recipe",
        "12 Anderson it",
        "phantom k=2 + Jacobian term",
        lambda c: _deq(12, {"name": "phantom", "steps": 2, "tau": 0.8}, jac=1, **c),
    ),
    (
        "deq, shipped recipe at equal depth",
        "16 Anderson it",
        "phantom k=2 + Jacobian term",
        lambda c: _deq(16, {"name": "phantom", "steps": 2, "tau": 0.8}, jac=1, **c),
    ),
    (
        "deq, exact gradient",
        "16 Anderson it",
        "implicit, 16 it",
        lambda c: _deq(16, {"name": "implicit", "tol": 0.0, "max_iter": 16}, **c),
    ),
    (
        "deq, cheap step",
        "8 Anderson it",
        "JFB (phantom k=1)",
        lambda c: _deq(8, {"name": "phantom", "steps": 1, "tau": 1.0}, **c),
    ),
    (
        "deq, cheap step",
        "6 Anderson it",
        "JFB (phantom k=1)",
        lambda c: _deq(6, {"name": "phantom", "steps": 1, "tau": 1.0}, **c),
    ),
    (
        "deq, cheap step",
        "6 Anderson it",
        "JFB (phantom k=1) + Jacobian term",
        lambda c: _deq(6, {"name": "phantom", "steps": 1, "tau": 1.0}, jac=1, **c),
    ),
    (
        "deq, shipped recipe, a step without the Jacobian term",
        "12 Anderson it",
        "implicit, 12 it + 2 correction states",
        lambda c: _deq(12, RECIPE_GRAD, corr=2, **c),
    ),
    (
        "deq, shipped recipe, a step with the Jacobian term",
        "12 Anderson it",
        "implicit, 12 it + 2 correction states + Jacobian term",
        lambda c: _deq(12, RECIPE_GRAD, jac=1, corr=2, **c),
    ),
]


def _ex(depth: int, common: dict):
    return zoo.create_model("transformer_tiny", **common, n_layers=depth)


def step_table(steps: int, quick: bool) -> list[dict]:
    batch, seq = (2, 16) if quick else (16, 128)
    common = {"vocab_size": 10000, "tgt_len": seq, "dropout": 0.0}
    rows = []
    for name, fwd, grad, build in STEP_CONFIGS:
        torch.manual_seed(0)
        model = build(common).train()
        ids = torch.randint(0, 10000, (batch, seq))

        def step(model=model, ids=ids):
            logits = model(ids)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten())
            for lg in getattr(model, "correction_logits", []):  # the correction loss's states
                loss = loss + torch.nn.functional.cross_entropy(lg.flatten(0, 1), ids.flatten())
            jac = getattr(model, "jac_loss", None)
            (loss + 0.5 * jac if jac is not None else loss).backward()
            model.zero_grad(set_to_none=True)

        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            step()
            if i:
                times.append(time.perf_counter() - t0)
        rows.append(
            {"model": name, "forward": fwd, "gradient": grad, "step_s": statistics.median(times)}
        )
        print(rows[-1], flush=True)
    lev = [r["step_s"] for r in rows if r["model"].startswith("deq, shipped recipe")]
    rows.append(  # the shipped recipes draw the Jacobian term on 35% of the steps
        {
            "model": "deq, shipped recipe, mean step of the schedule",
            "forward": "12 Anderson it",
            "gradient": f"{1 - JAC_FREQ:.2f} x the first + {JAC_FREQ:.2f} x the second",
            "step_s": (1 - JAC_FREQ) * lev[0] + JAC_FREQ * lev[1],
        }
    )
    base = {r["forward"]: r["step_s"] for r in rows if r["model"].startswith("explicit")}
    for r in rows:
        r["time_vs_explicit_4"] = round(r["step_s"] / base["4 blocks"], 3)
        r["time_vs_explicit_16"] = round(r["step_s"] / base["16 blocks"], 3)
        r["step_s"] = round(r["step_s"], 4)
    return rows


def warm_table(segments: int, quick: bool) -> list[dict]:
    import numpy as np

    from zoo.data._text import StreamSegments, Vocab
    from zoo.tasks import sample_path

    rows = []
    for name in ("deq_transformer_tiny.shakespeare_char", "deq_transformer_tiny.sotu"):
        if name not in zoo.list_models(pretrained=True):
            continue
        model = zoo.load(name)
        tokens = np.load(sample_path(model.pretrained_cfg["dataset"]))["tokens"].tolist()
        stream = torch.tensor(Vocab(model.tokenizer["vocab"]).encode(tokens), dtype=torch.long)
        segs = StreamSegments(stream, 2 if quick else 10, model.tgt_len)
        n = min(segments, len(segs) - 1)  # the last segment may be short: shapes must match
        char = "char" in name
        for start in ("cold", "warm"):
            for budget in (6, 20):
                model.set_inference_budget(max_iter=budget, tol=1e-3)
                model.warm_start, model._z_prev = start == "warm", None
                nfe, res, nll, count = [], [], 0.0, 0
                with torch.no_grad():
                    for i in range(n):
                        x, y = segs[i]
                        logits = model(x)
                        stats = model.deq.info.stats
                        nfe.append(stats.nfe)
                        res.append(float(stats.rel_residual.mean()))
                        nll += float(
                            torch.nn.functional.cross_entropy(
                                logits.flatten(0, 1), y.flatten(), reduction="sum"
                            )
                        )
                        count += y.numel()
                loss = nll / count
                rows.append(
                    {
                        "checkpoint": name,
                        "start": start,
                        "budget": f"{budget} it",
                        "mean_nfe": round(statistics.mean(nfe), 2),
                        "mean_rel_residual": float(f"{statistics.mean(res):.3g}"),
                        "loss": round(loss, 4),
                        "metric": (
                            f"{loss / math.log(2):.4f} bits/char"
                            if char
                            else f"{math.exp(loss):.2f} ppl"
                        ),
                    }
                )
                print(rows[-1], flush=True)
        model.warm_start, model._z_prev = False, None
    return rows


def main(argv=None) -> None:
    p = parser(__doc__.split("\n\n")[0], "deq_lm_step.json")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--segments", type=int, default=15)
    p.add_argument("--only", choices=("step", "warm"), default=None)
    a = setup(p.parse_args(argv))
    warnings.simplefilter("ignore")
    if a.only in (None, "step"):
        report(step_table(2 if a.quick else a.steps, a.quick), STEP_COLS, a.out)
    if a.only in (None, "warm"):
        out = a.out.replace(".json", "_warm.json")
        report(warm_table(2 if a.quick else a.segments, a.quick), WARM_COLS, out)


if __name__ == "__main__":
    main()
