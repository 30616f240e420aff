"""``zoo card NAME``: measure a shipped checkpoint and write its model card.

It runs ``zoo eval`` on the full test split (at several solver budgets for fixed-point models),
stores the rows in ``model_cards/results/NAME.json`` and the shipped setting's metrics in the
checkpoint's ``config.json``, draws the figures, and renders ``model_cards/NAME.md`` with YAML
front matter whose ``model-index`` holds the measured results. Every number in a card comes
from this command. The problem type's :class:`~zoo.tasks.TaskSpec` supplies the task-specific
sections; this module never names a task.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_card", "measure", "render_card", "budget_sweep", "recipe_stages"]

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


def _sweepable(model, info: dict | None = None) -> int | None:
    """The shipped iteration budget of a fixed-point model, or of a model whose pretrained
    table declares ``card_budgets`` (an ODE on a fixed grid: RK4 steps); ``None``: no sweep."""
    b = model.inference_budget() or {}
    if (info or {}).get("card_budgets"):
        return b.get("max_iter")
    return b.get("max_iter") if "solver" in b else None


def measure(name: str, budgets=(2, 4, 6, 8, 12), data_dir=None, limit=None, full=(30, 1e-4)):
    """The card's rows: a budget sweep for fixed-point models, else one ``zoo eval`` row.
    Stored in ``model_cards/results/NAME.json``; the shipped row's metrics also go into the
    checkpoint's ``config.json``."""
    import zoo

    from .evaluate import evaluate

    info = zoo.model_info(name) if name in zoo.list_models(pretrained=True) else {}
    if info.get("card_budgets"):  # declared by the table: its budgets, and no tol-based full solve
        budgets, full = tuple(info["card_budgets"]), None
    default_iter = _sweepable(zoo.load(name), info)
    if info.get("card_tolerances"):  # an adaptive ODE solve: NFE against rtol = atol
        rows = [{**evaluate(name, data_dir=data_dir, limit=limit), "budget": "shipped"}]
        for t in info["card_tolerances"]:
            r = evaluate(name, data_dir=data_dir, tol=t, limit=limit)
            rows.append({**r, "budget": f"rtol = atol = {t:g}"})
    elif default_iter is not None and budgets:
        rows = budget_sweep(name, budgets, data_dir, limit, full=full)
        if not any(r["budget"] == default_iter for r in rows):
            main = evaluate(name, data_dir=data_dir, limit=limit)
            main["budget"] = default_iter
            rows.insert(0, main)
    else:
        rows = [{**evaluate(name, data_dir=data_dir, limit=limit), "budget": "shipped"}]
    res = CARDS / "results" / f"{name}.json"
    res.parent.mkdir(parents=True, exist_ok=True)
    res.write_text(json.dumps(rows, indent=2) + "\n")
    _record_metrics(name, _main_row(rows, default_iter))
    return rows


def _main_row(rows: list[dict], default_iter) -> dict:
    return next((r for r in rows if r["budget"] in (default_iter, "shipped")), rows[0])


def _record_metrics(name: str, main: dict) -> None:
    """The shipped setting's measured metrics into config.json (the weights' sha256 is kept)."""
    from .models import checkpoint_dir

    path = checkpoint_dir() / name / "config.json"
    cfg = json.loads(path.read_text())
    cfg.setdefault("pretrained_cfg", {})["metrics"] = {
        **main["metrics"],
        "nfe_mean": main["nfe_mean"],
        "split": main["split"],
        "num_samples": main["num_samples"],
        "command": f"zoo card {name}" + (f" --limit {main['limit']}" if main.get("limit") else ""),
    }
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _budget_plot(name: str, rows: list[dict], metric, unit: str, out: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    key = metric.key
    pts = [(r["nfe_mean"], r["metrics"][key], r["latency_ms_per_sample"]) for r in rows]
    fig = Figure(figsize=(5.2, 3.4), dpi=120)
    ax = fig.subplots()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="C0")
    for nfe, val, lat in pts:
        ax.annotate(
            f"{lat:.2g} ms/{unit}", (nfe, val), textcoords="offset points", xytext=(4, -11),
            fontsize=7,
        )  # fmt: skip
    ax.set_xlabel("mean solver iterations (NFE) at test time")
    ax.set_ylabel(metric.name)
    ax.set_title(f"{name}: {metric.name} vs. solver budget", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)


def _limited(main: dict) -> str:
    """How much of the test split a row saw: empty for all of it."""
    n = main.get("limit")
    return f"only the first {n:,} test {main.get('unit', 'point')}s (`--limit {n}`)" if n else ""


def _source_name(main: dict) -> str:
    part = _limited(main)
    return (
        f"zoo card ({part}, not the full test set)"
        if part
        else ("zoo card (zoo eval on the full test set)")
    )


def _front_matter(spec, info: dict, main: dict) -> str:
    import yaml

    fm = {
        "license": info.get("license", "apache-2.0"),
        "library_name": "implicit-zoo",
        "tags": ["implicit-zoo", *spec.tags, *info.get("tags", ()), spec.name, "pytorch"],
        "datasets": [info["dataset"]],
        "pipeline_tag": spec.pipeline_tag,
        "model-index": [
            {
                "name": info["name"],
                "results": [
                    {
                        "task": {"type": spec.name, "name": spec.title},
                        "dataset": {
                            "type": info["dataset"],
                            "name": info["dataset"],
                            "split": "test",
                        },
                        "metrics": spec.hub_metrics(main["metrics"]),
                        "source": {"name": _source_name(main), "url": ""},
                    }
                ],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(fm, sort_keys=False) + "---\n"


def _export_command(recipe: str, name: str) -> str:
    """The recipe's own ``# Export:`` line (it names the checkpoint file that shipped, e.g. a
    best-on-validation one), else the generic command."""
    try:
        for line in (ROOT / recipe).read_text().splitlines():
            if line.startswith("# Export:") and "zoo export" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"zoo export runs/.../last.ckpt --name {name}"


def _training_lines(name: str, info: dict, pc: dict, model) -> list[str]:
    stages = recipe_stages(info["recipe"])
    if len(stages) > 1:
        chain = ", then ".join(f"`{r}`" for r in stages)
        recipe = f"- Recipe: {len(stages)} stages, each from the previous one's weights: {chain}"
    else:
        recipe = f"- Recipe: `{info['recipe']}` (`zoo fit --config {info['recipe']}`)"
    lines = [
        "## How it was trained",
        recipe + f"; then `{_export_command(info['recipe'], name)}` and `zoo card {name}`.",
        f"- Data: {info['train_split']}; test: {info['test_split']}.",
        "- Selection: "
        + info.get("selection", "nothing was selected on held-out data (no early stopping)")
        + ".",
        f"- Compute: {info.get('compute', 'see the recipe')}; the last stage ran "
        f"{pc.get('trained_steps', '?')} optimizer steps.",
    ]
    if pc.get("averaged_weights"):
        lines.append("- The shipped weights are the EMA of the training weights.")
    budget = model.inference_budget()
    if budget:
        lines.append(f"- Test-time budget as shipped: `{json.dumps(budget)}`.")
    history = Path(info["recipe"]).parent / "HISTORY.md"
    if (ROOT / history).is_file():
        lines.append(f"- Stage-by-stage history: [{history}](../{history}).")
    return lines + [""]


def render_card(name: str, rows: list[dict]) -> Path:
    """Write ``model_cards/NAME.md`` (and its figures) from measured ``rows``."""
    import zoo

    from .tasks import get_task

    model = zoo.load(name)
    pc = model.pretrained_cfg
    info = {**pc, "name": name, "architecture": model.entry_point}
    spec = get_task(info["task"])
    protocol = spec.protocol(info)
    default_iter = _sweepable(model, info)
    main = _main_row(rows, default_iter)
    figures = []
    if len(rows) > 1:
        png = CARDS / f"{name}.budget.png"
        _budget_plot(name, rows, protocol.primary_metric, spec.unit, png)
        figures.append((f"{protocol.primary} vs solver budget", png))
    figures += spec.figures(name, model, rows, info, CARDS)
    device = main.get("device", "cpu").split(" ")[0]
    limit_arg = f" --limit {main['limit']}" if main.get("limit") else ""
    lines = [_front_matter(spec, info, main), f"# {name}", ""]
    lines += [
        f"{spec.describe(model, info)} ({model.num_params():,} parameters, `{info['architecture']}` "
        f"entry point) trained by implicit-zoo on **{info['dataset']}**. Paper: {info['paper']}.",
        "",
        "## Use it",
        "```python",
        "import zoo",
        f'model = zoo.load("{name}")   # eval mode, sha256-verified safetensors',
    ]
    if default_iter is not None:
        lines.append(
            f'fast = zoo.load("{name}", max_iter=4)  # another test-time solver budget, no retraining'
        )
    lines += [*spec.card_use(name, model, info), "```", *spec.card_after_use(name, model, info)]
    lines += [
        "",
        "## Results (measured here)",
        f"Command: `zoo card {name}{limit_arg}` "
        f"(it calls `zoo eval {name}"
        + (
            " --tol T` per row: rtol = atol = T)"
            if info.get("card_tolerances")
            else " --max-iter K` per row)"
            if len(rows) > 1
            else "`)"
        )
        + f", on {main.get('device', 'cpu')}. Test split: {info['test_split']}."
        + (
            f" **Measured on {_limited(main)}: not the card's full-split figure.**"
            if _limited(main)
            else ""
        ),
        "",
    ]
    lines += spec.card_results(rows, main, device)
    lines.append("")
    for title, png in figures:
        lines += [f"![{title}]({png.name})", ""]
    lines += spec.card_extra(name, model, info)
    if info.get("paper_results"):
        lines += ["## The papers' numbers (theirs, not ours)", ""]
        lines += [f"- {p['value']:g} {p['metric']}: {p['source']}." for p in info["paper_results"]]
        lines += spec.comparison_note(info) + [""]
    lines += _training_lines(name, info, pc, model)
    if info.get("limitations"):
        lines += ["## Limitations", *[f"- {x}" for x in info["limitations"]], ""]
    lines += [
        "## License",
        f"{info.get('license', 'apache-2.0')} (weights and code). Dataset terms apply to the data.",
        "",
    ]
    out = CARDS / f"{name}.md"
    out.write_text("\n".join(lines))
    print("wrote", ", ".join(str(p) for p in [out, *(f for _, f in figures)]))
    return out


def write_card(
    name: str, budgets=(2, 4, 6, 8, 12), data_dir=None, limit=None, full=(30, 1e-4),
    remeasure: bool = True,
) -> Path:  # fmt: skip
    """Measure ``name`` (or, with ``remeasure=False``, reuse its stored rows) and write its card."""
    if remeasure:
        rows = measure(name, budgets, data_dir, limit, full)
    else:
        path = CARDS / "results" / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `zoo card {name}` to measure it")
        rows = json.loads(path.read_text())
    return render_card(name, rows)
