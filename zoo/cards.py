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

__all__ = ["write_card", "budget_sweep", "recipe_stages"]

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "model_cards"


def recipe_stages(recipe: str) -> list[str]:
    """The recipes that train a checkpoint, first stage first.

    A stage whose ``model.init_args.init_from`` is a Lightning checkpoint starts from the run of
    the recipe whose checkpoint folder holds that file (found among ``recipes/``).
    """
    import yaml

    def ckpt_dirs(cfg: dict) -> list[str]:
        tr = cfg.get("trainer") or {}
        dirs = (
            [str(Path(tr["default_root_dir"]) / "checkpoints")] if "default_root_dir" in tr else []
        )
        for cb in tr.get("callbacks") or []:
            if str(cb.get("class_path", "")).endswith("ModelCheckpoint"):
                d = (cb.get("init_args") or {}).get("dirpath")
                dirs += [str(Path(d))] if d else []
        return dirs

    stages = [recipe]
    while len(stages) < 10:
        path = ROOT / stages[0]
        if not path.is_file():
            break
        cfg = yaml.safe_load(path.read_text()) or {}
        init = ((cfg.get("model") or {}).get("init_args") or {}).get("init_from")
        if not init or not str(init).endswith(".ckpt"):
            break
        parent = str(Path(init).parent)
        prev = [
            str(p.relative_to(ROOT))
            for p in sorted((ROOT / "recipes").rglob("*.yaml"))
            if p != path and parent in ckpt_dirs(yaml.safe_load(p.read_text()) or {})
        ]
        if not prev:
            break
        stages.insert(0, prev[0])
    return stages


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

    key = rows[0]["primary_metric"]
    pts = [
        (r["nfe_mean"], r["metrics"][key], r["latency_ms_per_sample"], r["budget"]) for r in rows
    ]
    unit = "ms" if rows[0].get("unit", "image") == "image" else "ms/" + rows[0]["unit"]
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=120)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="C0")
    for nfe, acc, lat, _ in pts:
        ax.annotate(
            f"{lat:.2g} {unit}", (nfe, acc), textcoords="offset points", xytext=(4, -11), fontsize=7
        )
    ax.set_xlabel("mean solver iterations (NFE) at test time")
    ax.set_ylabel({"top1": "top-1 accuracy (%)", "ppl": "test perplexity"}.get(key, key))
    ax.set_title(f"{name}: {key} vs. solver budget", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


_TASKS = {
    "image-classification": ("Image Classification", ["deep-equilibrium-models", "mdeq"]),
    "language-modeling": ("Language Modeling", ["deep-equilibrium-models", "transformer"]),
    "time-series": (
        "Time Series Forecasting",
        ["neural-ode", "latent-ode", "irregular-time-series"],
    ),
}


def _metric_entries(task: str, m: dict) -> list[dict]:
    if task == "image-classification":
        return [
            {"type": "accuracy", "name": "top-1 accuracy", "value": m["top1"]},
            {"type": "accuracy", "name": "top-5 accuracy", "value": m["top5"]},
        ]
    if task == "language-modeling":
        return [{"type": "perplexity", "name": "test perplexity", "value": m["ppl"]}]
    return [
        {"type": "mse", "name": "MSE (reference per-series average)", "value": m["mse"]},
        {"type": "mse", "name": "MSE (mean over observed points)", "value": m["mse_masked_mean"]},
    ]


def _front_matter(info: dict, main: dict) -> str:
    import yaml

    task = info["task"]
    title, tags = _TASKS[task]
    fm = {
        "license": info.get("license", "apache-2.0"),
        "library_name": "implicit-zoo",
        "tags": ["implicit-zoo", *tags, task, "pytorch"],
        "datasets": [info["dataset"]],
        "pipeline_tag": {
            "time-series": "time-series-forecasting",
            "language-modeling": "text-generation",
        }.get(task, task),
        "model-index": [
            {
                "name": info["name"],
                "results": [
                    {
                        "task": {"type": task, "name": title},
                        "dataset": {
                            "type": info["dataset"],
                            "name": info["dataset"],
                            "split": "test",
                        },
                        "metrics": _metric_entries(task, main["metrics"]),
                        "source": {"name": "zoo card (zoo eval on the full test set)", "url": ""},
                    }
                ],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(fm, sort_keys=False) + "---\n"


def _plot_trajectories(name: str, model, info: dict, out: Path, data_dir=None, n_series=3):
    """Observed points, the prediction's mean and its 5-95% band over posterior samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from .evaluate import _datamodule
    from .tasks.time_series import eval_generator, split_masks

    dm = _datamodule(info, data_dir)
    dm.setup("test")
    b = next(iter(dm.test_dataloader()))
    cond, target = split_masks(
        b.times, b.mask, info.get("mode", "interpolation"), info.get("cond_frac", 1.0),
        generator=eval_generator(b.values, b.times),
    )  # fmt: skip
    idx = torch.argsort(b.mask.sum((1, 2)), descending=True)[:n_series]  # the densest series
    q = torch.linspace(0, float(b.times.max()), 200)
    torch.manual_seed(0)
    mean, samples = model.predict(b.times, b.values[idx], cond[idx], q, n_samples=20)
    names = getattr(dm, "variable_names", None)
    ncols = min(2, b.values.shape[-1])
    fig, axes = plt.subplots(
        n_series, ncols, figsize=(4 * ncols, 2.2 * n_series), dpi=110, squeeze=False
    )
    for row, s in enumerate(idx.tolist()):
        dims = torch.argsort(b.mask[s].sum(0), descending=True)[:ncols].tolist()
        for col, d in enumerate(dims):
            ax = axes[row][col]
            lo, hi = (
                samples[:, row, :, d].quantile(0.05, 0),
                samples[:, row, :, d].quantile(0.95, 0),
            )
            ax.fill_between(q, lo, hi, color="C0", alpha=0.25, lw=0, label="5-95% (posterior)")
            ax.plot(q, mean[row, :, d], color="C0", lw=1.2, label="predicted mean")
            c, t = cond[s, :, d] > 0, (target[s, :, d] > 0) & ~(cond[s, :, d] > 0)
            ax.plot(b.times[c], b.values[s, c, d], "k.", ms=4, label="observed (conditioned on)")
            if t.any():
                ax.plot(b.times[t], b.values[s, t, d], "rx", ms=4, label="held out (scored)")
            label = names[d] if names else f"variable {d}"
            ax.set_title(f"test series {s}: {label}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("time (scaled to [0, 1] per batch)", fontsize=7)
    fig.suptitle(f"{name}: {info.get('mode', 'interpolation')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _lm_sample(model, prompt: str = "The state of the union is", n: int = 40) -> str:
    from .text import generate_text

    return generate_text(model, prompt, max_new_tokens=n, temperature=0.8, top_k=40, seed=0)


def write_card(
    name: str,
    budgets=(2, 4, 6, 8, 12),
    data_dir=None,
    limit=None,
    compute: str = "",
    notes: str = "",
    full=(30, 1e-4),
) -> Path:
    """Measure ``name`` (``zoo eval``; a solver-budget sweep for DEQs) and write its card."""
    import zoo

    from .evaluate import evaluate
    from .models import checkpoint_dir, model_info

    info = {**model_info(name), "name": name}
    task = info["task"]
    model = zoo.load(name)
    deq = getattr(model, "deq", None)
    if deq is not None and budgets:
        default_iter = deq.solver.max_iter
        rows = budget_sweep(name, budgets, data_dir, limit, full=full)
        main = next((r for r in rows if r["budget"] == default_iter), None)
        if main is None:  # the shipped default budget is not among the rows: measure it too
            main = evaluate(name, data_dir=data_dir, limit=limit)
            main["budget"] = default_iter
            rows.insert(0, main)
    else:
        main = evaluate(name, data_dir=data_dir, limit=limit)
        main["budget"] = "shipped"
        rows = [main]
    res_dir = CARDS / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    figures = []
    if len(rows) > 1:
        png = CARDS / f"{name}.budget.png"
        _plot(name, rows, png)
        figures.append((f"{main['primary_metric']} vs solver budget", png))
    if task == "time-series":
        png = CARDS / f"{name}.trajectories.png"
        _plot_trajectories(name, model, info, png, data_dir)
        figures.append(("test trajectories", png))

    # measured metrics into the checkpoint's config (the weights' sha256 is unaffected)
    cfg_path = checkpoint_dir() / name / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["pretrained_cfg"]["metrics"] = {
        **main["metrics"],
        "nfe_mean": main["nfe_mean"],
        "split": main["split"],
        "num_samples": main["num_samples"],
        "command": f"zoo card {name}",
    }
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    model = zoo.load(name)
    pc = model.pretrained_cfg
    solver = deq.solver.spec() if deq is not None else None
    arch = pc.get("architecture", name.split(".")[0])
    what = {
        "image-classification": "A Multiscale Deep Equilibrium Model",
        "language-modeling": "A DEQ-Transformer language model"
        if deq is not None
        else "An explicit Transformer language model (the DEQ's baseline)",
        "time-series": f"A `{arch}` model for irregularly-sampled time series",
    }[task]
    lines = [_front_matter(info, main), f"# {name}", ""]
    lines += [
        f"{what} ({model.num_params():,} parameters, `{arch}` entry point) trained by "
        f"implicit-zoo on **{info['dataset']}**. Paper: {info['paper']}.",
        "",
        "## Use it",
        "```python",
        "import zoo",
        f'model = zoo.load("{name}")   # eval mode, sha256-verified safetensors',
    ]
    if deq is not None:
        lines.append(f'fast = zoo.load("{name}", max_iter=4)  # smaller solver budget at test time')
    if task == "time-series":
        lines.append("mean, samples = model.predict(times, values, mask, query_times)")
    lines.append("```")
    if task == "image-classification":
        lines.append(
            f"Inputs: `{info['input_size']}` tensors normalized with mean `{info['mean']}` and "
            f"std `{info['std']}` (`model.pretrained_cfg`)."
        )
    if task == "language-modeling":
        lines.append(f'From the shell: `zoo generate {name} --prompt "The state of the union"`.')
    lines += [
        "",
        "## Results (measured here)",
        f"Command: `zoo card {name}` (it calls `zoo eval {name}"
        + (" --max-iter K` per row)." if len(rows) > 1 else "`).")
        + f" Test split: {info['test_split']}.",
        "",
    ]
    unit = main.get("unit", "image")
    if task == "time-series":
        lines += [
            f"Protocol: {main['protocol']}.",
            "",
            "| MSE (reference's per-series average) | MSE (over observed points) | mean NFE (forward) | ms / series (CPU) |",
            "|---|---|---|---|",
            f"| {main['metrics']['mse']:.4g} | {main['metrics']['mse_masked_mean']:.4g} | "
            f"{main['nfe_mean']} | {main['latency_ms_per_sample']:.2f} |",
        ]
    else:
        cols = ["top-1 %", "top-5 %"] if task == "image-classification" else ["perplexity"]
        lines += [
            f"| solver budget (max_iter) | mean NFE | {' | '.join(cols)} | ms / {unit} (CPU) |",
            "|---" * (3 + len(cols)) + "|",
        ]
        for r in rows:
            b = r["budget"]
            if r is main and solver is not None:
                b = f"{b} (shipped default, tol {solver['tol']:g})"
            vals = (
                [r["metrics"]["top1"], r["metrics"]["top5"]]
                if task == "image-classification"
                else [r["metrics"]["ppl"]]
            )
            lines.append(
                f"| {b} | {r['nfe_mean'] if r['nfe_mean'] is not None else '-'} | "
                f"{' | '.join(str(v) for v in vals)} | {r['latency_ms_per_sample']:.3g} |"
            )
    lines.append("")
    for title, png in figures:
        lines += [f"![{title}]({png.name})", ""]
    if task == "language-modeling":
        sample = _lm_sample(model)
        lines += [
            "## A generated sample",
            "`zoo generate " + name + ' --prompt "The state of the union is" --max-new-tokens 40 '
            "--temperature 0.8 --top-k 40 --seed 0`:",
            "",
            f"> {sample}",
            "",
        ]
    if info.get("paper_results"):
        lines += ["## The papers' numbers (theirs, not ours)", ""]
        lines += [f"- {p['value']:g} {p['metric']}: {p['source']}." for p in info["paper_results"]]
        if "jpeg" in info["dataset"]:
            lines += [
                "- Ours is measured on a lossy JPEG re-encoding of CIFAR-10 (train and test), "
                "with a different training budget: the figures are not directly comparable."
            ]
        if task != "image-classification":
            lines += [
                "- Different data, size or budget from ours: the figures are context, not a "
                "like-for-like comparison."
            ]
        lines.append("")
    stages = recipe_stages(info["recipe"])
    if len(stages) > 1:
        recipe_line = (
            f"- Recipe: {len(stages)} stages, each starting from the previous one's weights "
            "(`init_from`): "
            + ", then ".join(f"`{r}`" for r in stages)
            + "; reproduce with "
            + ", ".join(f"`zoo fit --config {r}`" for r in stages)
        )
    else:
        recipe_line = (
            f"- Recipe: `{info['recipe']}`; reproduce with `zoo fit --config {info['recipe']}`"
        )
    lines += [
        "## Training",
        recipe_line
        + f", then `zoo export runs/.../last.ckpt --name {name}` and `zoo card {name}`.",
        f"- Data: {info['train_split']}; "
        + info.get("selection", "nothing was selected on the held-out data (no early stopping)")
        + f"; test: {info['test_split']}.",
        f"- {'The last stage ran' if len(stages) > 1 else 'Trained for'} "
        f"{pc.get('trained_steps', '?')} optimizer steps (epochs: see Compute).",
        f"- Compute: {compute or 'see the recipe'}.",
    ]
    if pc.get("averaged_weights"):
        lines.append(
            "- The shipped weights are the exponential moving average of the training weights "
            "(Lightning's `EMAWeightAveraging`, as the last stage's recipe sets)."
        )
    if solver is not None:
        lines.append(f"- Solver at test time: `{json.dumps(solver)}`.")
    lines.append("")
    if notes:
        lines += ["## Notes", notes, ""]
    lines += [
        "## License",
        f"{info.get('license', 'apache-2.0')} (weights and code). Dataset terms apply to the data.",
        "",
    ]
    out = CARDS / f"{name}.md"
    out.write_text("\n".join(lines))
    print(
        "wrote",
        ", ".join(str(p) for p in [out, *(f for _, f in figures), res_dir / f"{name}.json"]),
    )
    return out
