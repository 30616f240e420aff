"""``zoo card NAME``: measure a shipped checkpoint and write its model card.

It runs ``zoo eval`` on the full test set at several solver budgets, stores the results in
``model_cards/results/NAME.json`` and in the checkpoint's ``config.json`` (``pretrained_cfg
.metrics``), plots accuracy against solver iterations, and renders ``model_cards/NAME.md``
with YAML front matter whose ``model-index`` holds the measured results. Every number in the
card comes from this command.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_card", "budget_sweep"]

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "model_cards"


def budget_sweep(name: str, budgets, data_dir=None, limit=None, full=(30, 1e-4)) -> list[dict]:
    """``zoo eval`` at each ``max_iter`` in ``budgets``, then at a full solve ``(max_iter, tol)``."""
    from .evaluate import evaluate

    rows = []
    for k in budgets:
        r = evaluate(name, data_dir=data_dir, max_iter=k, limit=limit)
        r["budget"] = k
        rows.append(r)
    if full:
        r = evaluate(name, data_dir=data_dir, max_iter=full[0], tol=full[1], limit=limit)
        r["budget"] = f"full solve ({full[0]} it, tol {full[1]:g})"
        rows.append(r)
    return rows


def _plot(name: str, rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [
        (r["nfe_mean"], r["metrics"]["top1"], r["latency_ms_per_sample"], r["budget"]) for r in rows
    ]
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=120)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="C0")
    for nfe, acc, lat, _ in pts:
        ax.annotate(
            f"{lat:.1f} ms", (nfe, acc), textcoords="offset points", xytext=(4, -11), fontsize=7
        )
    ax.set_xlabel("mean solver iterations (NFE) at test time")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{name}: accuracy vs. solver budget", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _front_matter(info: dict, main: dict) -> str:
    import yaml

    m = main["metrics"]
    fm = {
        "license": info.get("license", "apache-2.0"),
        "library_name": "implicit-zoo",
        "tags": [
            "implicit-zoo",
            "deep-equilibrium-models",
            "mdeq",
            "image-classification",
            "pytorch",
        ],
        "datasets": [info["dataset"]],
        "pipeline_tag": "image-classification",
        "model-index": [
            {
                "name": info["name"],
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Image Classification"},
                        "dataset": {
                            "type": info["dataset"],
                            "name": info["dataset"],
                            "split": "test",
                        },
                        "metrics": [
                            {"type": "accuracy", "name": "top-1 accuracy", "value": m["top1"]},
                            {"type": "accuracy", "name": "top-5 accuracy", "value": m["top5"]},
                        ],
                        "source": {"name": "zoo card (zoo eval on the full test set)", "url": ""},
                    }
                ],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(fm, sort_keys=False) + "---\n"


def write_card(
    name: str,
    budgets=(2, 4, 6, 8, 12),
    data_dir=None,
    limit=None,
    compute: str = "",
    notes: str = "",
) -> Path:
    import zoo

    from .models import checkpoint_dir, model_info

    info = {**model_info(name), "name": name}
    import zoo as _zoo

    default_iter = _zoo.load(name).deq.solver.max_iter
    rows = budget_sweep(name, budgets, data_dir, limit)
    main = next((r for r in rows if r["budget"] == default_iter), None)
    if main is None:  # the shipped default budget is not among the rows: measure it too
        from .evaluate import evaluate

        main = evaluate(name, data_dir=data_dir, limit=limit)
        main["budget"] = default_iter
        rows.insert(0, main)
    res_dir = CARDS / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    png = CARDS / f"{name}.budget.png"
    _plot(name, rows, png)

    # measured metrics into the checkpoint's config (the weights' sha256 is unaffected)
    cfg_path = checkpoint_dir() / name / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["pretrained_cfg"]["metrics"] = {
        "top1": main["metrics"]["top1"],
        "top5": main["metrics"]["top5"],
        "nfe_mean": main["nfe_mean"],
        "split": main["split"],
        "num_samples": main["num_samples"],
        "command": f"zoo card {name}",
    }
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    model = zoo.load(name)
    pc = model.pretrained_cfg
    solver = model.deq.solver.spec()
    lines = [_front_matter(info, main), f"# {name}", ""]
    lines += [
        f"A Multiscale Deep Equilibrium Model ({model.num_params():,} parameters, "
        f"`{pc.get('architecture', name.split('.')[0])}` entry point) trained by implicit-zoo on "
        f"**{info['dataset']}**. Paper: {info['paper']}.",
        "",
        "## Use it",
        "```python",
        "import zoo",
        f'model = zoo.load("{name}")             # eval mode, sha256-verified safetensors',
        f'fast = zoo.load("{name}", max_iter=4)  # smaller solver budget at test time',
        "```",
        f"Inputs: `{info['input_size']}` tensors normalized with mean `{info['mean']}` and std "
        f"`{info['std']}` (`model.pretrained_cfg`).",
        "",
        "## Results (measured here)",
        f"Command: `zoo card {name}` (it calls `zoo eval {name} --max-iter K` per row). "
        f"Test split: {info['test_split']}.",
        "",
        "| solver budget (max_iter) | mean NFE | top-1 % | top-5 % | ms / image (CPU) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        b = f"{r['budget']} (shipped default, tol {solver['tol']:g})" if r is main else r["budget"]
        lines.append(
            f"| {b} | {r['nfe_mean']} | {r['metrics']['top1']} | {r['metrics']['top5']} | "
            f"{r['latency_ms_per_sample']:.2f} |"
        )
    lines += ["", f"![accuracy vs solver budget]({png.name})", ""]
    if info.get("paper_results"):
        lines += ["## The papers' numbers (theirs, not ours)", ""]
        lines += [f"- {p['value']}% {p['metric']}: {p['source']}." for p in info["paper_results"]]
        if "jpeg" in info["dataset"]:
            lines += [
                "- Ours is measured on a lossy JPEG re-encoding of CIFAR-10 (train and test), "
                "with a different training budget: the figures are not directly comparable."
            ]
        lines.append("")
    lines += [
        "## Training",
        f"- Recipe: `{info['recipe']}`; reproduce with `zoo fit --config {info['recipe']}` then "
        f"`zoo export runs/.../last.ckpt --name {name}` and `zoo card {name}`.",
        f"- Data: {info['train_split']}; the held-out images select nothing (no early stopping); "
        f"test: {info['test_split']}.",
        f"- Trained for {pc.get('trained_epochs', '?')} epochs ({pc.get('trained_steps', '?')} steps).",
        f"- Compute: {compute or 'see the recipe'}.",
        f"- Solver at test time: `{json.dumps(solver)}`.",
        "",
    ]
    if notes:
        lines += ["## Notes", notes, ""]
    lines += [
        "## License",
        f"{info.get('license', 'apache-2.0')} (weights and code). Dataset terms apply to the data.",
        "",
    ]
    out = CARDS / f"{name}.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}, {png} and {res_dir / (name + '.json')}")
    return out
