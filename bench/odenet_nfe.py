"""ODE-Net test NFE with and without RNODE regularization.

Both shipped CIFAR-10 ODE-Nets trained on a fixed grid of 2 RK4 steps; here each is solved
adaptively (dopri5, rtol = atol = T, Chen et al.'s setting at T = 1e-3) on the full JPEG test split,
so the solver picks the steps the learned dynamics need: ``zoo.load(name, grid_steps=0,
rtol=T, atol=T)``. The regularized model should need fewer field evaluations (NFE) for the
same accuracy. Target: at least 2x fewer test NFE at T = 1e-3 than ``odenet.cifar10``, within 1
point of its top-1. ``nfe_mean`` is the mean over test batches of the forward's field
evaluations (dopri5 evaluates 6 per accepted or rejected step, plus one).

Run: python bench/odenet_nfe.py [--quick] [--data-dir DIR]; writes
bench/results/odenet_nfe.{json,md,png}. Needs the CIFAR-10 JPEG copy ($ZOO_DATA_DIR).
"""

from __future__ import annotations

from pathlib import Path

from _cells import report
from _harness import parser, setup

COLS = ["model", "solve", "top1", "nfe_mean", "ms_per_image", "nfe_vs_unregularized",
        "top1_vs_unregularized"]  # fmt: skip
MODELS = ("odenet.cifar10", "odenet_reg.cifar10")


def _score(name: str, solve: dict, data_dir, limit) -> dict:
    import torch

    import zoo
    from zoo.evaluate import _Clock
    from zoo.tasks import get_task

    model = zoo.load(name, **solve).eval()
    spec = get_task(model.pretrained_cfg["task"])
    protocol = spec.protocol(model.pretrained_cfg)
    batches = spec.eval_batches(model, protocol, "test", False, limit, data_dir, 500)
    dev = torch.device("cpu")
    with torch.no_grad():
        res = spec.evaluate(model, batches, protocol, dev, _Clock(dev))
    return {
        "top1": res.metrics["top1"],
        "nfe_mean": res.nfe_mean,
        "ms_per_image": round(1000 * res.seconds / res.num_samples, 3),
        "images": res.num_samples,
    }


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.4), dpi=120)
    for name, style in zip(MODELS, ("o-", "s--"), strict=True):
        pts = sorted((r["nfe_mean"], r["top1"]) for r in rows if r["model"] == name)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name)
    ax.set_xlabel("test NFE (mean field evaluations per forward)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("CIFAR-10 ODE-Nets: accuracy against NFE", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    import zoo

    p = parser(__doc__, "odenet_nfe.json")
    p.add_argument("--data-dir", default=None)
    a = setup(p.parse_args(argv))
    missing = [m for m in MODELS if m not in zoo.list_models(pretrained=True)]
    if missing:
        print(f"skipped: {', '.join(missing)} not shipped")
        return []
    limit = 500 if a.quick else None
    tols = (1e-3,) if a.quick else (1e-2, 1e-3, 1e-4)
    solves = [("grid, 2 RK4 steps (shipped)", {})]
    solves += [(f"dopri5, rtol = atol = {t:g}", dict(grid_steps=0, rtol=t, atol=t)) for t in tols]
    rows = []
    for name in MODELS:
        for label, solve in solves:
            rows.append({"model": name, "solve": label, **_score(name, solve, a.data_dir, limit)})
            print(rows[-1], flush=True)
    for r in rows:
        base = next(q for q in rows if q["model"] == MODELS[0] and q["solve"] == r["solve"])
        if r["model"] != MODELS[0]:
            r["nfe_vs_unregularized"] = round(r["nfe_mean"] / base["nfe_mean"], 3)
            r["top1_vs_unregularized"] = round(r["top1"] - base["top1"], 2)
    report(rows, COLS, a.out)
    _plot(rows, Path(a.out).with_suffix(".png"))
    return rows


if __name__ == "__main__":
    main()
