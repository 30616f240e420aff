"""``zoo docs``: everything rendered from the stored results, never typed.

One command regenerates every model card (``model_cards/NAME.md`` from ``NAME.yaml``), the
README's checkpoint table (between its markers), the leaderboard page
(``docs/leaderboard.md``) and the benchmark summary (``bench/RESULTS.md`` from
``bench/results/*.md``). Nothing here measures or reads a dataset; ``--check`` (and the test
suite) fails when a committed file differs from its rendering.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["rendered", "write_all", "stale", "checkpoint_table", "leaderboard_page"]

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LEADERBOARD = ROOT / "docs" / "leaderboard.md"
# other libraries' models run here on a checkpoint's data and split, one file per task and
# dataset, written by their scripts (recipes/<family>/peers/)
PEERS = ROOT / "bench" / "results" / "peers"
BENCH = ROOT / "bench"
TABLE_START = "<!-- checkpoint table: rendered by `zoo docs` from model_cards/*.yaml -->"
TABLE_END = "<!-- end of checkpoint table -->"


def peer_files(task: str, dataset: str) -> list[Path]:
    """Other libraries' results for a task and dataset: ``TASK.DATASET.json`` (run on the
    checkpoints' split), then ``TASK.DATASET.PROTOCOL.json`` (on a split of their own)."""
    same = PEERS / f"{task}.{dataset}.json"
    own = sorted(PEERS.glob(f"{task}.{dataset}.*.json"))
    return ([same] if same.is_file() else []) + own


def _shipped() -> list[str]:
    """The pretrained checkpoints that have a data file, in the registry's order."""
    import zoo

    from . import cards

    return [n for n in zoo.list_models(pretrained=True) if cards.data_path(n).is_file()]


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) and abs(v) < 0.01 else f"{v}"


def _reference(info: dict, key: str) -> str:
    """The figure to read ours against: the paper's for the same metric, else the baseline's."""
    from . import cards

    papers = [p for p in info.get("papers") or [] if p.get("metric") == key]
    if papers:
        return f"{_value(papers[0]['value'])} ({papers[0]['setup'].split(',')[0]})"
    base = info.get("baseline")
    row = cards.shipped_row(base) if base else None
    if row is not None and key in row["metrics"]:
        from .tasks import get_task

        return f"baseline {base}: {get_task(info['task']).metric_cell(key, row['metrics'])}"
    return "-"


def checkpoint_table(names: list[str] | None = None, cards_at: str = "model_cards/") -> list[str]:
    """The checkpoint table (the README's, and the site's zoo and family pages): one line per
    shipped checkpoint in ``names`` (default all), its name linking to its card under
    ``cards_at``."""
    from . import cards
    from .tasks import get_task

    lines = [
        "| checkpoint | task | dataset | ours (test) | params | NFE | to compare |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names if names is not None else _shipped():
        info = cards.card_info(name)
        row = cards.shipped_row(name)
        key = row["primary_metric"]
        metric = next((m for m in get_task(info["task"]).metrics if m.key == key), None)
        label = metric.label if metric is not None else key
        nfe = "-" if row.get("nfe_mean") is None else f"{row['nfe_mean']:g}"
        params = (cards.read_data(name).get("measured") or {}).get("parameters", row.get("params"))
        lines.append(
            f"| [{name}]({cards_at}{name}.md) | {info['task']} | "
            f"{(info.get('dataset_card') or {}).get('name', info['dataset'])} | "
            f"{label} {get_task(info['task']).metric_cell(key, row['metrics'])} | "
            f"{params / 1e3:,.0f}K | {nfe} | "
            f"{_reference(info, key)} |"
        )
    return lines


def family_checkpoints(family: str) -> list[str]:
    """The shipped checkpoints of a model family (``@register_model(family=...)``)."""
    from .models import architectures

    archs = {a for a, meta in architectures().items() if meta.get("family") == family}
    return [n for n in _shipped() if n.split(".")[0] in archs]


def zoo_page() -> str:
    """The site's model-zoo page: every checkpoint, then one section per family with its
    cards linked (rendered from the data files, at build time)."""
    from .models import architectures

    families = sorted({meta.get("family") for meta in architectures().values()})
    lines = [
        "# Model zoo",
        "",
        "Every shipped checkpoint, measured on its full test split at its shipped test-time "
        "budget (`zoo card NAME`). A checkpoint's card has its results at other budgets, how "
        "it was trained, its limitations and the papers' figures.",
        "",
        *checkpoint_table(cards_at="cards/"),
        "",
    ]
    for fam in families:
        names = family_checkpoints(fam)
        if names:
            lines += [f"## {fam}", "", *checkpoint_table(names, cards_at="cards/"), ""]
    return "\n".join(lines)


def leaderboard_page() -> str:
    """``docs/leaderboard.md``: every checkpoint's stored full-test-split result, one table per
    task and dataset, laid out by its task spec."""
    from . import cards
    from .tasks import get_task

    by_data: dict[tuple[str, str], list[dict]] = {}
    infos = {}
    for name in _shipped():
        row = dict(cards.shipped_row(name))
        facts = cards.read_data(name).get("measured") or {}
        row["params"] = facts.get("parameters", row.get("params"))
        by_data.setdefault((row["task"], row["dataset"]), []).append(row)
        infos[name] = cards.card_info(name)
    lines = [
        "# Leaderboard",
        "",
        "Every shipped checkpoint on its full test split, at its shipped test-time budget: the "
        "rows that `zoo card NAME` stored in `model_cards/NAME.yaml`. Papers' figures are "
        "quoted as theirs, on their own data and setup. Rerun any row with the `zoo eval` "
        "command on its card; `zoo leaderboard` measures them all again on your machine.",
        "",
    ]
    for (task, dataset), rows in by_data.items():
        lines += get_task(task).leaderboard_section(dataset, rows, infos)
        # the peers on the checkpoints' own split first, then any on a split of their own
        for peers in peer_files(task, dataset):
            lines += get_task(task).peer_section(json.loads(peers.read_text()))
        lines.append("")
    devices = sorted({r.get("device", "cpu") for rows in by_data.values() for r in rows})
    lines.append(f"Latencies were measured on: {'; '.join(devices)}.")
    return "\n".join(lines) + "\n"


def bench_summary() -> str:
    """``bench/RESULTS.md``: every benchmark's stored markdown table, one section each."""
    out = [
        "# Benchmark results",
        "",
        "Rendered by `zoo docs` from `bench/results/*.md`, which the scripts in `bench/` write "
        "(`make bench` runs them all). Timings are from shared 2-core machines unless a section "
        "says otherwise: compare ratios within one table, not absolute times.",
        "",
    ]
    for f in sorted((BENCH / "results").glob("*.md")):
        if f.name == "RESULTS.md":
            continue
        body = f.read_text().strip()
        out += [f"## {f.stem}", "", body, ""]
    return "\n".join(out)


def readme_table() -> list[str]:
    """The README's checkpoint table: one short table per task (the checkpoint, its primary
    figure and the figure to read it against); the site's zoo page has the full table."""
    from . import cards
    from .tasks import get_task

    by_task: dict[str, list[str]] = {}
    for name in _shipped():
        by_task.setdefault(cards.card_info(name)["task"], []).append(name)
    lines: list[str] = []
    for task in sorted(by_task):
        lines += [f"**{task}**", "", "| checkpoint | ours (test) | to compare |", "|---|---|---|"]
        for name in by_task[task]:
            info = cards.card_info(name)
            row = cards.shipped_row(name)
            key = row["primary_metric"]
            metric = next((m for m in get_task(task).metrics if m.key == key), None)
            label = metric.label if metric is not None else key
            lines.append(
                f"| [{name}](model_cards/{name}.md) | {label} "
                f"{get_task(task).metric_cell(key, row['metrics'])} | "
                f"{_reference(info, key)} |"
            )
        lines.append("")
    return lines[:-1]


def _readme_with_table(text: str) -> str:
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"README.md lacks the table markers {TABLE_START!r} ... {TABLE_END!r}")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return head + TABLE_START + "\n" + "\n".join(readme_table()) + "\n" + TABLE_END + tail


def rendered() -> dict[Path, str]:
    """Every rendered file and its content (nothing is written)."""
    from . import cards

    out = {cards.CARDS / f"{n}.md": cards.render_card(n) for n in _shipped()}
    out[README] = _readme_with_table(README.read_text())
    out[LEADERBOARD] = leaderboard_page()
    out[BENCH / "RESULTS.md"] = bench_summary()
    return out


def stale(read=None) -> list[Path]:
    """The rendered files whose committed content differs from their rendering (``read(path)``
    gives a file's committed content; by default the file on disk)."""

    def on_disk(p: Path) -> str | None:
        return p.read_text() if p.is_file() else None

    read = read or on_disk
    return [p for p, text in rendered().items() if read(p) != text]


def write_all() -> list[Path]:
    """Write every rendered file that changed; returns them."""
    changed = []
    for path, text in rendered().items():
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(path)
    return changed
