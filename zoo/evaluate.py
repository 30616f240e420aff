"""``zoo eval`` and ``zoo leaderboard``: measured metrics, mean NFE and latency per sample.

Generic orchestration only (device, clock, seed, the command string): each problem type's
:class:`~zoo.tasks.TaskSpec` owns its data, its metrics and its scoring.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

__all__ = ["evaluate", "example_batch", "leaderboard", "print_results", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"`` (CUDA when there is one, else CPU)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda, cuda:N, mps or auto") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for, but this PyTorch ({torch.__version__}) sees no CUDA GPU; "
            "use --device cpu (or auto), or install a CUDA build of PyTorch"
        )
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but MPS is not available here; use cpu")
    return dev


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    if dev.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''}, {platform.machine()})"
    return str(dev)


class _Clock:
    """Wall time of the model calls alone; waits for the GPU's queue so the times are real."""

    def __init__(self, dev: torch.device):
        self.dev, self.seconds = dev, 0.0

    def _sync(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def __enter__(self):
        self._sync()
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self._sync()
        self.seconds += time.perf_counter() - self.t0


def _budget_args(max_iter, tol) -> str:
    return (f" --max-iter {max_iter}" if max_iter else "") + (
        f" --tol {tol:g}" if tol is not None else ""
    )


def evaluate(
    name: str,
    data_dir: str | None = None,
    split: str = "test",
    limit: int | None = None,
    max_iter: int | None = None,
    batch_size: int = 200,
    sample: bool = False,
    tol: float | None = None,
    device: str = "cpu",
    bf16: bool = False,
    predictions: str | None = None,
) -> dict:
    """Evaluate pretrained ``name`` with its task's protocol; returns a JSON-ready dict.

    Args:
        name: ``arch.tag``, ``hf-hub:org/name`` or a local checkpoint folder.
        data_dir: Dataset root (default ``$ZOO_DATA_DIR``).
        split: One of the task's evaluation splits (``test`` by default).
        limit: Evaluate only N units (images, tokens or series: the task's unit, recorded as
            ``unit``); which ones is fixed and stated in the result's ``subset`` (image
            classification: a class-stratified subset drawn with seed 0; else the first N).
        max_iter: Test-time budget: solver iterations (DEQs) or fixed-grid steps (ODE models).
            An explicit model refuses a budget.
        tol: Test-time tolerance: the solver's (DEQs) or rtol = atol (adaptive ODE models).
        batch_size: Images per batch (image tasks).
        sample: Use the small evaluation sample shipped with the package instead of the data.
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``; the latency is that device's.
        bf16: Run the model under bfloat16 autocast (solvers keep their algebra in fp32).
        predictions: Write each example's output to this CSV file (tasks that keep them:
            series classification writes each labelled series' id, label and probability).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer (or None for all), got {limit!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = resolve_device(device)
    if predictions is not None:
        _check_keeps_predictions(name)
    # the same numbers every run, and the caller's RNG left as it was
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(0)
        model, spec, protocol, res = _run(name, data_dir, split, limit, max_iter, tol, dev,
                                          batch_size, sample, bf16)  # fmt: skip
    if predictions is not None:
        _write_predictions(predictions, res.predictions)
    return {
        "name": name,
        "task": spec.name,
        "dataset": protocol.dataset,
        "data": "shipped sample " + protocol.sample if sample else _data_source(protocol, data_dir),
        "split": "shipped sample of " + split if sample else split,
        "metrics": res.metrics,
        "primary_metric": protocol.primary,
        "higher_is_better": protocol.primary_metric.higher_is_better,
        "num_samples": res.num_samples,
        "unit": protocol.unit,
        "limit": limit,
        "subset": spec.subset_note(limit) if limit else None,
        "nfe_mean": res.nfe_mean,
        "params": model.num_params(),
        "latency_ms_per_sample": round(1000 * res.seconds / max(res.num_samples, 1), 4),
        "protocol": spec.protocol_note(protocol) or None,
        "max_iter": max_iter,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "inference_budget": model.inference_budget(),
        "device": _device_name(dev),
        "torch": str(torch.__version__),
        "command": f"zoo eval {name}"
        + (f" --split {split}" if split != "test" else "")
        + _budget_args(max_iter, tol)
        + (" --sample" if sample else "")
        + (f" --limit {limit}" if limit else "")
        + (" --bf16" if bf16 else "")
        + (f" --device {device}" if str(device) != "cpu" else ""),
    }


def _check_keeps_predictions(name: str) -> None:
    """Refuse ``predictions=`` before any work when the pretrained table names a task that
    keeps none (a Hub name or a folder is checked after its evaluation)."""
    from .models import list_pretrained, model_info
    from .tasks import get_task, list_tasks

    if name not in list_pretrained():
        return
    task = model_info(name).get("task")
    if task is not None and not get_task(task).keeps_predictions:
        keeping = ", ".join(t for t in list_tasks() if get_task(t).keeps_predictions)
        raise ValueError(
            f"{name} ({task}): this task keeps no per-example predictions to write; "
            f"--predictions is for {keeping}. Drop --predictions"
        )


def _write_predictions(path, columns: dict[str, list] | None) -> None:
    import csv

    if not columns:
        raise ValueError("this task keeps no per-example predictions to write; drop --predictions")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(columns))
        for row in zip(*columns.values()):
            w.writerow([f"{v:.7g}" if isinstance(v, float) else v for v in row])


def _run(name, data_dir, split, limit, max_iter, tol, dev, batch_size, sample, bf16=False):
    import zoo

    from .tasks import get_task

    budget = {k: v for k, v in (("max_iter", max_iter), ("tol", tol)) if v is not None}
    model = zoo.load(name, **budget).to(dev)
    cfg = model.pretrained_cfg
    if cfg.get("task") is None:
        raise ValueError(
            f"{name}: no evaluation protocol is known for it. A checkpoint's task, dataset and "
            "metric come from the zoo's pretrained table (zoo.models), keyed by its name; a "
            "folder that `zoo export` wrote under a name the table does not have loads with "
            "zoo.load but has nothing to be evaluated against. Export it under the name of "
            "a registered checkpoint (zoo list shows them) with --out-dir, or add its name to "
            "its family's pretrained table"
        )
    spec = get_task(cfg["task"])
    protocol = spec.protocol({**cfg, "architecture": getattr(model, "entry_point", "")})
    protocol.check_split(split, name)
    batches = spec.eval_batches(model, protocol, split, sample, limit, data_dir, batch_size)
    if bf16 and not getattr(model, "supports_bf16", True):
        raise ValueError(
            f"{name} does not run under bf16 autocast: {model.bf16_note}; evaluate it in fp32"
        )
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        with _solver_warnings_summarized(name):
            res = spec.evaluate(model, batches, protocol, dev, _Clock(dev))
    return model, spec, protocol, res


class _solver_warnings_summarized:
    """A budget-limited solve warns each time it stops short of its tolerance: in an
    evaluation at the shipped budget that is expected and the user cannot act on it per batch.
    The warnings are held back and reported once, with their count."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self.caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc) -> None:
        import warnings

        from .solvers import ConvergenceWarning
        from .solvers._grad import GradientWarning

        ours = (ConvergenceWarning, GradientWarning)
        held = [w for w in self.caught if issubclass(w.category, ours)]
        others = [w for w in self.caught if not issubclass(w.category, ours)]
        self._ctx.__exit__(*exc)
        for w in others:  # anything else is the caller's to see, unchanged
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if held and exc[0] is None:
            first = str(held[0].message)
            warnings.warn(
                f"{self.name}: {len(held)} solve(s) of this evaluation stopped at their budget "
                f"before the tolerance, e.g.: {first} The metrics are those of the returned "
                "iterates; a larger budget (--max-iter/--tol) changes them.",
                held[0].category,
                stacklevel=3,
            )


def _data_source(protocol, data_dir) -> str:
    """Which data a row measured: the data module and the resolved root."""
    from .data import data_root

    return f"{protocol.datamodule} at {data_root(data_dir)}"


def print_results(results: list[dict]) -> None:
    hdr = f"{'model':30s} {'task':22s} {'split':22s} {'metric':>14s} {'NFE':>6s} {'ms/sample':>10s}"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        k = r["primary_metric"]
        nfe = "-" if r.get("nfe_mean") is None else f"{r['nfe_mean']:.1f}"
        print(
            f"{r['name']:30s} {r['task']:22s} {r['split'][:22]:22s} {k + ' ' + str(r['metrics'][k]):>14s} "
            f"{nfe:>6s} {r['latency_ms_per_sample']:>10.2f}"
        )
        if r.get("subset"):
            print(f"  ({r['name']}: measured on {r['subset']}, not the whole split)")


def example_batch(model, n: int = 8):
    """``n`` units of a pretrained model's shipped evaluation sample (the subset ``--limit n``
    scores), as the model takes them: ``(images, labels)`` normalized for a classifier or a segmenter, a float tensor
    of points or uint8 pixels for a flow, an ``IrregularBatch`` of irregularly sampled series.
    Needs no dataset.

    Example:
        >>> import zoo
        >>> model = zoo.load("odenet.fashion_mnist")
        >>> x, y = zoo.example_batch(model, 4)
        >>> tuple(x.shape), tuple(y.shape)
        ((4, 1, 28, 28), (4,))
    """
    from zoo.tasks import get_task

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "task" not in cfg:
        raise ValueError(
            "example_batch needs a pretrained model (zoo.load('arch.tag')): this one has no "
            "task in its pretrained_cfg"
        )
    spec = get_task(cfg["task"])
    protocol = spec.protocol(cfg)
    return next(iter(spec.eval_batches(model, protocol, "test", True, n, None, n)))


def leaderboard(
    data_dir: str | None = None,
    out: str | Path = "leaderboard.md",
    limit: int | None = None,
    sample: bool = False,
    device: str = "cpu",
    skipped: list[dict] | None = None,
) -> list[dict]:
    """Evaluate every pretrained model; write a markdown table and ``<out>.json`` (the results).

    A model whose dataset is not on this machine, or whose weights are neither here nor
    reachable on the Hub, is skipped, not fatal: the others are still
    measured, and the skipped ones are listed (with the missing path and the fix) under the
    markdown's tables, on stderr and, given a ``skipped`` list, appended to it as ``name`` and
    ``reason``. Only when every model is skipped does the first error propagate.
    ``sample=True`` needs no data (the shipped samples)."""
    import sys

    import zoo
    from zoo.data._common import MissingDataError

    md, js = leaderboard_paths(out)  # both outputs decided and checked before any measuring
    results, missed = [], []
    names = zoo.list_models(pretrained=True)
    for name in names:
        try:
            results.append(
                evaluate(name, data_dir=data_dir, limit=limit, sample=sample, device=device)
            )
        except (MissingDataError, ConnectionError) as e:  # no data, or weights out of reach
            if not results and len(missed) == len(names) - 1:
                raise  # nothing could be measured: the error itself is the answer
            missed.append({"name": name, "reason": str(e)})
            print(f"zoo leaderboard: skipped {name}: {e}", file=sys.stderr, flush=True)
    print()
    print_results(results)
    lines = leaderboard_markdown(results, sample=sample, device=device)
    if missed:
        lines += ["", f"Not measured here ({len(missed)}: their data or weights were not found):"]
        lines += [f"- {m['name']}: {m['reason']}" for m in missed]
    md.write_text("\n".join(lines) + "\n")
    js.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {md} and {js}")
    if skipped is not None:
        skipped.extend(missed)
    if missed:
        print(
            f"zoo leaderboard: {len(missed)} of {len(names)} models skipped (data or weights not "
            "found; listed in the markdown with the reason). Set ZOO_DATA_DIR or --data-dir, or "
            "use --sample; weights download from the Hub unless HF_HUB_OFFLINE is set.",
            file=sys.stderr,
        )
    return results


def leaderboard_paths(out: str | Path) -> tuple[Path, Path]:
    """The markdown and JSON files ``zoo leaderboard --out OUT`` writes: ``OUT`` (or
    ``OUT/leaderboard.md`` for a folder, ``OUT`` with ``.md`` for a ``.json`` name) and its
    ``.json`` twin; never one path for both. Refuses a destination it cannot write."""
    import os

    out = Path(out)
    md = out / "leaderboard.md" if out.is_dir() else out
    if md.suffix == ".json":
        md = md.with_suffix(".md")
    js = md.with_suffix(".json")
    for f in (md, js):
        if f.is_dir():
            raise ValueError(f"zoo leaderboard: {f} is a folder; give a file name for --out")
    if not md.parent.is_dir():
        raise FileNotFoundError(f"zoo leaderboard: the folder {md.parent} does not exist")
    if not os.access(md.parent, os.W_OK):
        raise PermissionError(f"zoo leaderboard: cannot write in {md.parent}")
    return md, js


def leaderboard_markdown(
    results: list[dict], sample: bool = False, device: str = "cpu"
) -> list[str]:
    """The leaderboard's markdown lines from ``zoo eval`` results: one table per (task,
    dataset), each laid out by its task spec (``TaskSpec.leaderboard_section``)."""
    from zoo.cards import card_info
    from zoo.tasks import get_task

    lines: list[str] = []
    by_data: dict[tuple[str, str], list[dict]] = {}
    for r in results:  # one table per task and dataset: the models that compete on it
        by_data.setdefault((r["task"], r["dataset"]), []).append(r)
    for (task, dataset), rows in by_data.items():
        infos = {r["name"]: card_info(r["name"]) for r in rows}
        lines += get_task(task).leaderboard_section(dataset, rows, infos)
        lines.append("")
    lines.append(
        "Ours: measured by `zoo leaderboard`"
        + (" on the shipped samples" if sample else "")
        + f", on {results[0]['device'] if results else device}"
        + ". Paper columns are the papers' own figures, on their own data and setup."
    )
    lines += ["", "Data measured:"] + sorted({f"- {r['dataset']}: {r['data']}" for r in results})
    return lines
