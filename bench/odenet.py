"""ODE-Net training memory: the adjoint against direct backprop through the solver, and against
the ResNet baseline, as the depth grows.

"Depth" is the number of RK4 steps of the ODE-Net's fixed grid (4 field evaluations each) and the
number of residual blocks of ``resnet_small`` (one block = one field evaluation's parameters). The
adjoint stores no activations of the solve, so its memory should stay flat in depth; direct
backprop and the ResNet should grow linearly. Every configuration runs in a fresh subprocess.
``saved_mib``: the distinct storages autograd saves for the backward during one forward
(``saved_tensors_hooks``; parameters excluded): exact and machine-independent. ``peak_mib``: peak
anonymous RSS over the baseline (bench/_memprobe.py; noisy on CPU, where the allocator keeps
freed pages), or ``torch.cuda.max_memory_allocated``.

Run: python bench/odenet.py [--quick]; writes bench/results/odenet.{json,md,png}.
"""

from __future__ import annotations

from pathlib import Path

from _cells import report
from _harness import parser, run_child, setup


def child(kind: str, depth: int, batch: int, channels: int, device: str) -> dict:
    """One configuration, run in a fresh interpreter by ``run_child``."""
    import torch

    import zoo

    torch.set_num_threads(2)
    if kind == "resnet":
        model = zoo.create_model("resnet_small", in_chans=1, channels=channels, depth=depth)
    else:
        model = zoo.create_model(
            "odenet",
            in_chans=1,
            channels=channels,
            grid_steps=depth,
            adjoint=kind == "odenet_adjoint",
        )
    model = model.to(device).train()
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        torch.nn.functional.cross_entropy(model(x), y).backward()

    step()  # warm-up (allocator, lazy init)
    model.zero_grad(set_to_none=True)
    from _memprobe import measure, saved_mib

    # what autograd keeps for the backward: every distinct storage saved during the forward
    saved = saved_mib(model, lambda: torch.nn.functional.cross_entropy(model(x), y))
    p, sec = measure(step, device)
    c = model.cost()
    return {
        "model": kind,
        "depth": depth,
        "nfe_forward": c.nfe_forward,
        "nfe_backward": c.nfe_backward,
        "params": model.num_params(),
        "saved_mib": round(saved, 1),
        "peak_mib": round(p, 1),
        "step_s": round(sec, 3),
    }


COLS = ["model", "depth", "params", "nfe_forward", "nfe_backward", "saved_mib"]
COLS += ["saved_vs_direct", "peak_mib", "step_s"]
KINDS = ("odenet_direct", "odenet_adjoint", "resnet")


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    for ax, key, label in (
        (axes[0], "saved_mib", "activations saved for backward (MiB)"),
        (axes[1], "step_s", "training step (s)"),
    ):
        for kind, style in zip(KINDS, ("o-", "^:", "s--")):
            pts = sorted((r["depth"], r[key]) for r in rows if r["model"] == kind)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=kind)
        ax.set_xlabel("depth (RK4 steps of the ODE-Net / residual blocks)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "odenet.json")
    a = setup(p.parse_args(argv))
    depths, batch, channels = ((1, 2), 4, 8) if a.quick else ((1, 2, 4, 8), 128, 64)
    rows = []
    for depth in depths:
        for kind in KINDS:
            args = [kind, depth, batch, channels, a.device]
            rows.append(run_child(child, *args))
            print(rows[-1], flush=True)
    for r in rows:
        direct = next(q for q in rows if q["model"] == "odenet_direct" and q["depth"] == r["depth"])
        r["saved_vs_direct"] = round(r["saved_mib"] / max(direct["saved_mib"], 1e-9), 3)
    report(rows, COLS, a.out)
    _plot(rows, Path(a.out).with_suffix(".png"))
    return rows


if __name__ == "__main__":
    main()
