"""Validation bits per character against training characters, for the character-level pair at
1x, 2x and 4x the token budget (issue #23: "is the DEQ slower per token but still closing at 2x
and 4x the budget?").

Reads the runs' logs as ``zoo export`` writes them (``training_log.json``: the logged
validation perplexity at each validation step, on 50 batches of the validation plays) and
plots them on one pair of axes. The logs are kept in ``recipes/deq_lm/logs/``: the 1x ones and
the DEQ's version 4 are what earlier versions shipped with; the 2x explicit model and the DEQ's
version 5 (the recipe the 4x DEQ stretches) are the shipped versions' own
(``checkpoints/*/training_log.json``); the 4x ones are the 4x runs' exports, drawn when present.

    python recipes/deq_lm/budget_figure.py --out recipes/deq_lm/char_budgets.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHARS_PER_STEP = 16 * 128  # both recipes: 16 sequences of 128 characters a step
RUNS = {  # label: (log, line style: the DEQ blue, the explicit model orange, 2x dashed)
    "DEQ, 1x (version 3)": (
        "recipes/deq_lm/logs/deq_transformer_tiny_shakespeare_char_v3_1x.json", "o-C0"),
    "explicit, 1x (version 1)": (
        "recipes/deq_lm/logs/transformer_tiny_shakespeare_char_1x.json", "s-C1"),
    "DEQ, 2x (version 4)": (
        "recipes/deq_lm/logs/deq_transformer_tiny_shakespeare_char_2x.json", "o--C0"),
    "explicit, 2x (version 2)": (
        "recipes/deq_lm/logs/transformer_tiny_shakespeare_char_2x.json", "s--C1"),
    "DEQ, 2x (version 5)": (
        "recipes/deq_lm/logs/deq_transformer_tiny_shakespeare_char_2x_jr.json", "^--C2"),
    "DEQ, 4x": (
        "recipes/deq_lm/logs/deq_transformer_tiny_shakespeare_char_4x.json", "^:C2"),
    "explicit, 4x": (
        "recipes/deq_lm/logs/transformer_tiny_shakespeare_char_4x.json", "s:C1"),
}  # fmt: skip


def curves(runs: dict = RUNS) -> dict[str, list[tuple[float, float]]]:
    """``{label: [(millions of characters, validation bits per character), ...]}`` for every
    run whose log is present."""
    out = {}
    for label, (path, _) in runs.items():
        log = ROOT / path
        if log.is_file():
            pts = json.loads(log.read_text()).get("val/ppl", [])
            out[label] = [(s * CHARS_PER_STEP / 1e6, math.log2(p)) for s, p in pts]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "char_budgets.png"))
    args = ap.parse_args()
    from matplotlib.figure import Figure

    data = curves()
    if not data:
        raise SystemExit("no training logs found: see RUNS in this script for the paths")
    fig = Figure(figsize=(5.5, 3.4), dpi=110)
    ax = fig.subplots()
    for label, pts in data.items():
        style = RUNS[label][1]
        ax.plot(*zip(*pts), style, ms=3, lw=1, label=label, mfc="white" if "--" in style else None)
        print(f"{label:24s} " + " ".join(f"{c:.1f}M:{b:.3f}" for c, b in pts))
    ax.set_xlabel("training characters (M)", fontsize=8)
    ax.set_ylabel("validation bits per character", fontsize=8)
    ax.set_ylim(top=min(3.2, ax.get_ylim()[1]))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Shakespeare, character level: the pair at 1x, 2x and 4x the budget (run logs)",
                 fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
