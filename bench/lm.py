"""DEQ-Transformer against the explicit Transformer: peak training memory and step time at
growing sequence length and depth.

"Depth" is the explicit model's number of blocks and, for the DEQ, the number of forward
solver iterations at equal effective depth. ``deq`` trains with ImplicitGrad (its memory
should not grow with depth); ``deq_phantom`` is the shipped recipe's mode (phantom gradients,
k=2, plus the Hutchinson Jacobian term). Every configuration runs in a fresh subprocess; memory is peak
anonymous RSS over the baseline (polled every ms), or ``torch.cuda.max_memory_allocated``
(on a GPU after one unmeasured warm-up step).

Generation (``generation``): tokens per second of both shipped LMs, the incremental decoder
(``model.generate``: the prompt encoded once, then one position per token against a cache, the
DEQ's fixed point warm-started from the previous position's) against re-encoding the whole
window for every token (the decoder before it), with the same text for the same seed checked,
and the wall time of ``zoo generate`` end to end. One thread; every configuration in this process.

Parity (``--parity``, the memory and time "at the depth that reaches the same
perplexity"): at the recipes' shape (T=128, batch 16) the explicit model at 1 to 4 blocks (4 is
the shipped depth, which already reaches a lower perplexity than the DEQ) against the DEQ as its
recipes train it: 12 iterations with phantom gradients and the Jacobian term (version 1), and
the shipped recipes' setting (a 12-call implicit backward solve, two correction states, the Jacobian term: the
step that draws it, which is also the peak). Ratios are against the explicit model at 4 blocks.

Run: python bench/lm.py [--quick] [--parity]; writes bench/results/lm.{json,md,png} and
bench/results/lm_generate.{json,md}, or with --parity bench/results/lm_parity.{json,md}.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _cells import report
from _harness import parser, run_child, setup


def child(kind: str, seq: int, depth: int, batch: int, device: str) -> dict:
    """One configuration, run in a fresh interpreter by ``run_child``."""
    import torch

    import zoo

    torch.set_num_threads(2)
    common = dict(vocab_size=10000, tgt_len=seq, dropout=0.0)
    if kind == "deq":
        model = zoo.create_model(
            "deq_transformer_tiny",
            **common,
            solver={"name": "anderson", "m": 5, "tol": 0.0, "max_iter": depth},
            grad={"name": "implicit", "tol": 0.0, "max_iter": depth},
        )
    elif kind == "deq_phantom":  # the shipped recipe's training mode: phantom k=2 + Jacobian reg.
        model = zoo.create_model(
            "deq_transformer_tiny",
            **common,
            solver={"name": "anderson", "m": 5, "tol": 0.0, "max_iter": depth},
            grad={"name": "phantom", "steps": 2, "tau": 0.8},
            jac_reg_samples=1,
        )
    elif kind == "deq_recipe":  # the shipped recipes' setting, with the Jacobian term
        model = zoo.create_model(
            "deq_transformer_tiny",
            **common,
            solver={"name": "anderson", "m": 5, "tol": 0.0, "max_iter": depth},
            grad={"name": "implicit", "tol": 0.0, "max_iter": depth},
            jac_reg_samples=1,
            correction_states=2,
        )
    else:
        model = zoo.create_model("transformer_tiny", **common, n_layers=depth)
    model = model.to(device).train()
    ids = torch.randint(0, 10000, (batch, seq), device=device)

    def step():
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids.reshape(-1)
        )
        for lg in getattr(model, "correction_logits", []):
            loss = loss + torch.nn.functional.cross_entropy(
                lg.reshape(-1, lg.shape[-1]), ids.reshape(-1)
            )
        jac = getattr(model, "jac_loss", None)
        (loss + 0.5 * jac if jac is not None else loss).backward()

    if device.startswith("cuda"):  # CUDA's lazy init and kernel loading are not step time
        step()
        model.zero_grad(set_to_none=True)
    from _memprobe import measure

    p, sec = measure(step, device)
    return {
        "model": kind,
        "seq_len": seq,
        "depth": depth,
        "peak_mib": round(p, 1),
        "step_s": round(sec, 3),
        "tokens_per_s": round(batch * seq / sec),
    }


COLS = [
    "model",
    "seq_len",
    "depth",
    "peak_mib",
    "step_s",
    "tokens_per_s",
    "memory_vs_explicit",
    "time_vs_explicit",
]


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    for ax, key, label in (
        (axes[0], "peak_mib", "peak training memory (MiB)"),
        (axes[1], "step_s", "step time (s)"),
    ):
        for kind, style in (("deq", "o-"), ("deq_phantom", "^:"), ("explicit", "s--")):
            for seq in sorted({r["seq_len"] for r in rows}):
                pts = sorted(
                    (r["depth"], r[key]) for r in rows if r["model"] == kind and r["seq_len"] == seq
                )
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{kind}, T={seq}")
        ax.set_xlabel("depth (explicit blocks = DEQ solver iterations)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "lm.json")
    p.add_argument("--parity", action="store_true", help="the parity table (see the docstring)")
    p.add_argument("--no-generation", action="store_true", help="skip the text-generation table")
    a = setup(p.parse_args(argv))
    if a.parity:
        return parity(a.quick, a.device, a.out.replace("lm.json", "lm_parity.json"))
    seqs, depths, batch = ((32,), (2, 4), 2) if a.quick else ((64, 128, 256), (4, 8, 16), 16)
    rows = []
    for seq in seqs:
        for depth in depths:
            for kind in ("deq", "deq_phantom", "explicit"):
                args = [kind, seq, depth, batch, a.device]
                rows.append(run_child(child, *args))
                print(rows[-1], flush=True)
    for r in rows:
        if r["model"] != "explicit":
            ex = next(
                q
                for q in rows
                if q["model"] == "explicit"
                and q["seq_len"] == r["seq_len"]
                and q["depth"] == r["depth"]
            )
            r["memory_vs_explicit"] = round(r["peak_mib"] / ex["peak_mib"], 3)
            r["time_vs_explicit"] = round(r["step_s"] / ex["step_s"], 3)
    report(rows, COLS, a.out)
    _plot(rows, Path(a.out).with_suffix(".png"))
    if not a.no_generation:
        generation(a.quick, str(Path(a.out).with_name("lm_generate.json")))
    return rows


def parity(quick: bool, device: str, out: str) -> list[dict]:
    seq, batch, iters = (32, 2, 3) if quick else (128, 16, 12)
    configs = [("explicit", d) for d in (1, 2, 3, 4)]
    configs += [("deq_phantom", iters), ("deq_recipe", iters)]
    rows = []
    for kind, depth in configs:
        rows.append(run_child(child, kind, seq, depth, batch, device))
        print(rows[-1], flush=True)
    ex = next(r for r in rows if r["model"] == "explicit" and r["depth"] == 4)
    for r in rows:
        r["memory_vs_explicit"] = round(r["peak_mib"] / ex["peak_mib"], 3)
        r["time_vs_explicit"] = round(r["step_s"] / ex["step_s"], 3)
    report(rows, COLS, out)
    return rows


GEN_COLS = [
    "model",
    "setting",
    "method",
    "tokens_per_s",
    "nfe_per_token",
    "speedup",
    "same_text",
]


def _window_generate(model, ids, n, top_k, generator):
    """The decoder before the incremental one: re-encode the last ``context_len`` tokens for
    every new token (kept here as the baseline and the reference text)."""
    import torch

    out, ctx = ids, model.context_len()
    with torch.no_grad():
        for _ in range(n):
            nxt = model._sample(model(out[:, -ctx:])[:, -1], 1.0, top_k, generator)
            out = torch.cat([out, nxt], 1)
    return out


def generation(quick: bool, out: str) -> list[dict]:
    import subprocess
    import time

    import torch

    import zoo
    from zoo.text import encode

    torch.set_num_threads(1)
    names = [n for n in ("transformer_tiny.sotu", "deq_transformer_tiny.sotu")
             if n in zoo.list_models(pretrained=True)]  # fmt: skip
    long_prompt = (
        "the state of the union is strong . we have made progress in the economy , in jobs , "
        "in the schools of our children and in the security of our nation . "
    ) * 3
    settings = [("prompt 'the economy', 50 new", "the economy", 50)]
    if not quick:
        settings += [
            ("prompt of 100+ tokens, 50 new", long_prompt, 50),
            ("prompt 'the economy', 300 new (past the context)", "the economy", 300),
        ]
    rows = []
    for name in names:
        model = zoo.load(name).eval()
        for label, prompt, n in settings:
            ids = encode(model, prompt)[:, -120:]
            res = {}
            for method in ("window", "incremental", "incremental, cold start"):
                if method == "incremental, cold start" and not hasattr(model, "deq"):
                    continue
                cold = method.endswith("cold start")
                nfe: list[int] = []
                for k, seed in ((3, 1), (n, 0)):  # a warm-up, then the measured run
                    nfe.clear()
                    g = torch.Generator().manual_seed(seed)
                    t0 = time.perf_counter()
                    if method == "window":
                        res[method] = _window_generate(model, ids, k, 40, g)
                    else:
                        toks = [ids]
                        for t in model._stream(ids, k, 1.0, 40, g, cold_start=cold):
                            toks.append(t)
                            if hasattr(model, "deq"):
                                nfe.append(model.cost().nfe_forward)
                        res[method] = torch.cat(toks, 1)
                    sec = time.perf_counter() - t0
                rows.append({
                    "model": name, "setting": label, "method": method,
                    "tokens_per_s": round(n / sec, 1),
                    "nfe_per_token": round(sum(nfe) / len(nfe), 2) if nfe else "",
                    "speedup": "", "same_text": "",
                })  # fmt: skip
            base = next(r for r in rows if r["model"] == name and r["setting"] == label
                        and r["method"] == "window")  # fmt: skip
            for r in rows:
                if r["model"] == name and r["setting"] == label and r["method"] != "window":
                    r["speedup"] = round(r["tokens_per_s"] / base["tokens_per_s"], 2)
                    r["same_text"] = bool(torch.equal(res[r["method"]], res["window"]))
        # what a user waits for: the command, from the shell, startup included
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "zoo.cli", "generate", name, "--prompt", "the economy"],
            check=True, capture_output=True,
        )  # fmt: skip
        rows.append({"model": name, "setting": "`zoo generate NAME --prompt 'the economy'` (50 "
                     "new), end to end with startup", "method": "incremental",
                     "tokens_per_s": round(50 / (time.perf_counter() - t0), 1),
                     "nfe_per_token": "", "speedup": "", "same_text": ""})  # fmt: skip
    report(rows, GEN_COLS, out)
    return rows


if __name__ == "__main__":
    main()
