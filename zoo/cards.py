"""Model cards from data: ``zoo card NAME`` measures, ``zoo docs`` renders.

Everything measured about a checkpoint and everything its card says lives in one data file,
``model_cards/NAME.yaml``:

- written by hand: ``dataset`` (its Hub ``id``, ``name``, ``train`` and ``test`` splits),
  ``selection``, ``compute``, ``objective``, ``baseline`` (a checkpoint of the zoo trained as
  its explicit counterpart), ``papers`` (the papers' figures, quoted as theirs: ``metric``,
  ``value``, ``setup``), ``baseline_paper`` (``true``: no paper reports this model on its
  protocol, so the Compared section also quotes the baseline's papers' figures, named as the
  baseline model's), ``comparison``, ``floor``, ``also_cite`` and ``limitations``;
- written by ``zoo card NAME``: ``measured`` (parameters, the shipped test-time budget, the
  figures it drew, a generated sample) and ``results`` (one ``zoo eval`` row per test-time
  budget; ``shipped: true`` marks the shipped setting).

Rendering (:func:`render_card`) reads that file, the family's pretrained table and the
checkpoint's ``config.json`` (its export record: steps, epochs, averaged weights). It loads no
model, reads no dataset and measures nothing, so the test suite re-renders every card and fails
on any difference from the committed file. The problem type's :class:`~zoo.tasks.TaskSpec`
supplies the task-specific sections; this module never names a task.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = [
    "write_card",
    "measure",
    "render_card",
    "read_data",
    "card_info",
    "shipped_row",
    "budget_sweep",
    "recipe_stages",
]

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "model_cards"
_HEADER = (
    "# {name}: everything measured about this checkpoint and everything its card says.\n"
    "# `zoo card {name}` rewrites `measured` and `results`; the other fields are written by\n"
    "# hand. `zoo docs` renders model_cards/{name}.md (and the tables) from this file.\n"
)
_MEASURED_KEYS = ("measured", "results")


# ----- the data file ---------------------------------------------------------------------------
def data_path(name: str) -> Path:
    return CARDS / f"{name}.yaml"


def read_data(name: str) -> dict:
    """The data file of ``name`` (``{}`` when it has none yet)."""
    import yaml

    path = data_path(name)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping")
    return data


def write_data(name: str, data: dict) -> Path:
    import yaml

    path = data_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = json.loads(json.dumps(data, default=str))  # str subclasses, numpy scalars: plain data
    body = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=100)
    path.write_text(_HEADER.format(name=name) + body)
    return path


def card_info(name: str) -> dict:
    """The pretrained table's entry of ``name`` with its card's hand-written fields (the card's
    ``dataset`` block as ``dataset_card``: ``dataset`` stays the protocol's id)."""
    return _render_info(name)


def shipped_row(name: str) -> dict | None:
    """The ``zoo eval`` row of the shipped setting, or ``None`` before ``zoo card`` ran."""
    rows = read_data(name).get("results") or []
    return next((r for r in rows if r.get("shipped")), rows[0] if rows else None)


# ----- measuring -------------------------------------------------------------------------------
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


def sweep_plan(info: dict, budgets, full) -> tuple[tuple, tuple | None]:
    """The card's ``max_iter`` budgets and full solve ``(max_iter, tol)``: the pretrained table's
    ``card_budgets`` and ``card_full`` (none unless it names one) where it declares budgets,
    else the defaults given.

    Example:
        >>> sweep_plan({"card_budgets": [10, 40], "card_full": [100, 1e-6]}, (2, 4), (30, 1e-4))
        ((10, 40), (100, 1e-06))
        >>> sweep_plan({"card_budgets": [2, 4]}, (2, 4, 8), (30, 1e-4))
        ((2, 4), None)
    """
    if info.get("card_budgets"):
        return tuple(info["card_budgets"]), (
            tuple(info["card_full"]) if info.get("card_full") else None
        )
    return tuple(budgets), full


def measure(name: str, budgets=(2, 4, 6, 8, 12), data_dir=None, limit=None, full=(30, 1e-4)):
    """Measure ``name`` and store it in its data file: the card's ``zoo eval`` rows (a budget
    sweep for fixed-point models, a tolerance sweep where the table declares one, else one
    row), the model's facts and the figures. Returns the rows."""
    import zoo

    from .evaluate import evaluate
    from .tasks import get_task

    info = card_info(name) if name in zoo.list_models(pretrained=True) else {"name": name}
    model = zoo.load(name)
    CARDS.mkdir(parents=True, exist_ok=True)
    info = {**model.pretrained_cfg, **info, "architecture": model.entry_point}
    budgets, full = sweep_plan(info, budgets, full)
    default_iter = _sweepable(model, info)
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
    main = next((r for r in rows if r["budget"] in (default_iter, "shipped")), rows[0])
    for r in rows:
        r.pop("shipped", None)
    main["shipped"] = True

    spec = get_task(info["task"])
    facts = spec.card_facts(name, model, info)
    figures = []
    if len(rows) > 1:
        png = CARDS / f"{name}.budget.png"
        protocol = spec.protocol(info)
        _budget_plot(name, rows, protocol.primary_metric, spec.unit, png)
        figures.append((f"{protocol.primary} vs solver budget", png))
    figures += spec.figures(name, model, rows, info, CARDS, data_dir)
    if figures:
        facts["figures"] = [{"title": t, "file": p.name} for t, p in figures]
    data = read_data(name)
    data.update(measured=facts, results=rows)
    write_data(name, data)
    return rows


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
    CARDS.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


# ----- rendering -------------------------------------------------------------------------------
def _limited(main: dict) -> str:
    """How much of the test split a row saw: empty for all of it."""
    n = main.get("limit")
    if not n:
        return ""
    which = main.get("subset") or f"the first {n:,} test {main.get('unit', 'point')}s"
    return f"only {which} (`--limit {n}`)"


def _source_name(main: dict) -> str:
    part = _limited(main)
    return f"zoo card ({part}: part of the test split)" if part else "zoo card (the full test set)"


def _dataset(info: dict) -> dict:
    d = info.get("dataset_card") or {}
    return {"id": d.get("id") or info["dataset"], "name": d.get("name") or info["dataset"], **d}


def _front_matter(spec, info: dict, main: dict) -> str:
    import yaml

    ds = _dataset(info)
    fm = {
        "license": info.get("license", "apache-2.0"),
        "library_name": "implicit-zoo",
        "tags": ["implicit-zoo", *spec.tags, *info.get("tags", ()), spec.name, "pytorch"],
        "datasets": [ds["id"]],
        "pipeline_tag": spec.pipeline_tag,
        "model-index": [
            {
                "name": info["name"],
                "results": [
                    {
                        "task": {"type": spec.name, "name": spec.title},
                        "dataset": {"type": ds["id"], "name": ds["name"], "split": "test"},
                        "metrics": spec.hub_metrics(main["metrics"]),
                        "source": {"name": _source_name(main), "url": info.get("recipe", "")},
                    }
                ],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(fm, sort_keys=False) + "---\n"


def eval_results(name: str) -> dict[str, str]:
    """The Hub's leaderboard files (``.eval_results/<dataset>.yaml``) of ``name``: per metric of
    the shipped setting, the dataset id, the task, the value and where it came from."""
    import yaml

    from .tasks import get_task

    info = _render_info(name)
    main = shipped_row(name)
    if main is None:
        return {}
    spec = get_task(info["task"])
    ds = _dataset(info)
    entries = [
        {
            "dataset": {"id": ds["id"], "name": ds["name"], "split": "test"},
            "task": {"type": spec.name, "name": spec.title},
            "metric": {"type": m["type"], "name": m["name"]},
            "value": m["value"],
            "source": {"name": _source_name(main), "url": info.get("recipe", "")},
        }
        for m in spec.hub_metrics(main["metrics"])
    ]
    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", ds["id"])
    return {f".eval_results/{key}.yaml": yaml.safe_dump(entries, sort_keys=False)}


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


def _export_record(name: str) -> dict:
    """What ``zoo export`` recorded in the checkpoint's config.json (steps, epochs, EMA)."""
    from .models import checkpoint_dir

    path = checkpoint_dir() / name / "config.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("pretrained_cfg") or {}


def _training_lines(name: str, info: dict, facts: dict) -> list[str]:
    rec = _export_record(name)
    stages = recipe_stages(info["recipe"])
    if len(stages) > 1:
        chain = ", then ".join(f"`{r}`" for r in stages)
        recipe = f"- Recipe: {len(stages)} stages, each from the previous one's weights: {chain}"
    else:
        recipe = f"- Recipe: `{info['recipe']}` (`zoo fit --config {info['recipe']}`)"
    ds = _dataset(info)
    lines = [
        "## How it was trained",
        recipe + f"; then `{_export_command(info['recipe'], name)}` and `zoo card {name}`.",
        f"- Data: {ds.get('train', 'see the recipe')}; test: {ds.get('test', 'see the recipe')}.",
    ]
    if info.get("objective"):
        lines.append(f"- Objective: {info['objective']}.")
    lines.append(
        "- Selection: "
        + info.get("selection", "nothing was selected on held-out data (no early stopping)")
        + "."
    )
    steps = rec.get("trained_steps")
    lines.append(
        f"- Compute: {info.get('compute', 'see the recipe')}"
        + (f"; the last stage ran {steps:,} optimizer steps." if steps else ".")
    )
    if rec.get("averaged_weights"):
        lines.append("- The shipped weights are the EMA of the training weights.")
    if facts.get("budget"):
        lines.append(f"- Test-time budget as shipped: `{json.dumps(facts['budget'])}`.")
    history = Path(info["recipe"]).parent / "HISTORY.md"
    if (ROOT / history).is_file():
        lines.append(f"- How it got here, run by run: [{history}](../{history}).")
    return lines + [""]


def _render_info(name: str) -> dict:
    from .models import architectures, model_info

    data = read_data(name)
    try:
        static = model_info(name)
    except ValueError:
        static = {}
    arch = name.split(".")[0]
    hand = {k: v for k, v in data.items() if k not in _MEASURED_KEYS and k != "dataset"}
    return {
        **static,
        **hand,
        "dataset_card": data.get("dataset") or {},
        "name": name,
        "architecture": arch,
        "family": architectures().get(arch, {}).get("family"),
    }


def _comparison_lines(name: str, info: dict, main: dict, spec) -> list[str]:
    """Ours, the baseline's (trained here on the same data) and the papers' (theirs)."""
    key = main["primary_metric"]
    rows = [f"| {name} (this model) | {key} | {main['metrics'][key]} | measured here |"]
    base = info.get("baseline")
    brow = shipped_row(base) if base else None
    if brow is not None and key in brow["metrics"]:
        rows.append(
            f"| {base} (baseline, [card]({base}.md)) | {key} | {brow['metrics'][key]} | "
            "measured here, same data |"
        )
    for p in info.get("papers") or []:
        rows.append(f"| paper (theirs) | {p['metric']} | {p['value']:g} | {p['setup']} |")
    if base and info.get("baseline_paper"):
        # no paper reports this model on this protocol: its baseline's paper figure, so named
        for p in card_info(base).get("papers") or []:
            if p["metric"] == key:
                rows.append(
                    f"| paper (theirs), for the baseline's model | {key} | {p['value']:g} | "
                    f"{p['setup']} |"
                )
    rows += _peer_rows(name, main)
    if len(rows) == 1:
        return []
    lines = [
        "## Compared",
        "",
        "| model | metric | value | setup |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    note = spec.comparison_note(info)
    return lines + (note + [""] if note else [])


def _peer_rows(name: str, main: dict) -> list[str]:
    """Other libraries' models that were run here on this checkpoint's own test split and
    compared with it there (the peers' file of its task and dataset, where a ``paired`` entry
    names it): their figure, and the paired difference ours − theirs."""
    from .docs import peer_files
    from .tasks.roc import format_p

    key = main["primary_metric"]
    rows = []
    for path in peer_files(main["task"], main["dataset"]):
        for p in json.loads(path.read_text()):
            test = next((c for c in p.get("paired") or [] if c["checkpoint"] == name), None)
            if test is None or key not in p:
                continue
            pv = format_p(test["p_value"])
            pv = pv if pv.startswith("<") else f"= {pv}"
            rows.append(
                f"| {p['model']} ({p['package']}, run here) | {key} | {p[key]} | the same test "
                f"patients; ours − theirs {test['difference']:+.4f} (95% interval "
                f"{test['low']:+.4f} to {test['high']:+.4f}; DeLong's paired test, p {pv}) |"
            )
    return rows


def _citation(info: dict) -> list[str]:
    from .papers import bibtex

    entries = bibtex(info.get("paper", "")) + bibtex(info.get("also_cite", ""))
    if not entries:
        return []
    return ["## Citation", "```bibtex", *"\n\n".join(entries).splitlines(), "```", ""]


def render_card(name: str) -> str:
    """The markdown of ``model_cards/NAME.md`` from its data file (measures nothing)."""
    from .tasks import get_task

    data = read_data(name)
    rows = data.get("results") or []
    if not rows:
        raise FileNotFoundError(
            f"{data_path(name)} holds no results: run `zoo card {name}` to measure it"
        )
    facts = data.get("measured") or {}
    info = _render_info(name)
    spec = get_task(info["task"])
    main = next((r for r in rows if r.get("shipped")), rows[0])
    device = main.get("device", "cpu").split(" ")[0]
    limit_arg = f" --limit {main['limit']}" if main.get("limit") else ""
    ds = _dataset(info)
    lines = [_front_matter(spec, info, main), f"# {name}", ""]
    lines += [
        f"{spec.describe(facts, info)} ({facts.get('parameters', main.get('params', 0)):,} "
        f"parameters, `{info['architecture']}` entry point) trained on **{ds['name']}**. "
        f"Paper: {info.get('paper', '-')}.",
        "",
        "## Use it",
        "```python",
        "import zoo",
        "",
        f'model = zoo.load("{name}")  # eval mode, sha256-verified safetensors',
        *spec.card_use(name, facts, info),
        "```",
        *spec.card_after_use(name, facts, info),
    ]
    sweep = (
        " --tol T` per row: rtol = atol = T)"
        if info.get("card_tolerances")
        else " --max-iter K` per row)"
        if len(rows) > 1
        else "`)"
    )
    lines += [
        "",
        "## Results",
        f"Measured by `zoo card {name}{limit_arg}` (it calls `zoo eval {name}{sweep}, on "
        f"{main.get('device', 'cpu')}. Test split: {ds.get('test', 'the test split')}."
        + (f" **Measured on {_limited(main)}: not the full split.**" if _limited(main) else ""),
        "",
        *spec.card_results(rows, main, device),
        "",
    ]
    for fig in facts.get("figures") or []:
        lines += [f"![{fig['title']}]({fig['file']})", ""]
    lines += spec.card_extra(name, facts, info)
    lines += _comparison_lines(name, info, main, spec)
    lines += _training_lines(name, info, facts)
    if info.get("limitations"):
        lines += ["## Limitations", *[f"- {x}" for x in info["limitations"]], ""]
    lines += _citation(info)
    lines += [
        "## License",
        f"{info.get('license', 'apache-2.0')} (weights and code). Dataset terms apply to the data.",
        "",
    ]
    return "\n".join(lines)


def write_card(
    name: str, budgets=(2, 4, 6, 8, 12), data_dir=None, limit=None, full=(30, 1e-4),
    remeasure: bool = True,
) -> Path:  # fmt: skip
    """Measure ``name`` (unless ``remeasure=False``), store it in its data file and write its
    card."""
    if remeasure:
        measure(name, budgets, data_dir, limit, full)
    out = CARDS / f"{name}.md"
    out.write_text(render_card(name))
    print("wrote", data_path(name), "and", out)
    return out
