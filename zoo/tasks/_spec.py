"""Task specs: one plug-in per problem type.

A :class:`TaskSpec` owns everything about a problem type that the zoo's generic commands need:
its LightningModule, its evaluation protocol (:class:`EvalProtocol`), how it reads evaluation
batches and scores a model (:class:`EvalResult`), its model-card sections and figures, and how
it builds the small evaluation sample shipped for the offline demo. ``zoo eval``, ``zoo card``,
``zoo leaderboard`` and ``python -m zoo.samples`` iterate over registered specs and never name a
task. A new problem type is one new file that calls :func:`register_task`.

This module imports neither Lightning nor matplotlib.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "EvalProtocol",
    "EvalResult",
    "MetricSpec",
    "TaskSpec",
    "get_task",
    "list_tasks",
    "load_sample",
    "register_sample_dir",
    "register_task",
    "sample_path",
]


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric: its key in results, a readable name and its direction.

    Example:
        >>> from zoo.tasks import MetricSpec
        >>> MetricSpec("mse", "MSE", higher_is_better=False, hub_type="mse").higher_is_better
        False
    """

    key: str
    name: str
    higher_is_better: bool
    hub_type: str  # the model-index metric type (accuracy, perplexity, mse, ...)
    short: str = ""  # a label for narrow tables (the README's); the name when empty

    @property
    def label(self) -> str:
        """The short label, or the name."""
        return self.short or self.name


@dataclass(frozen=True)
class EvalProtocol:
    """How a checkpoint is evaluated: the data, the splits and the metrics.

    Built by :meth:`TaskSpec.protocol` from a pretrained config; ``datamodule`` is a registered
    data-module name (``zoo.data.list_datamodules()``), never an import path.

    Example:
        >>> import zoo
        >>> from zoo.tasks import get_task
        >>> cfg = {**zoo.model_info("odenet.fashion_mnist"), "name": "odenet.fashion_mnist"}
        >>> protocol = get_task(cfg["task"]).protocol(cfg)
        >>> protocol.primary, protocol.unit
        ('top1', 'image')
    """

    task: str
    dataset: str
    datamodule: str
    datamodule_args: dict
    splits: tuple[str, ...]
    metrics: tuple[MetricSpec, ...]
    primary: str
    unit: str  # what --limit and the latency count: image, token, series, ...
    sample: str  # the shipped sample's name (zoo/_samples/<sample>.npz)
    options: dict = field(default_factory=dict)  # task-specific (mode, cond_frac, ...)

    @property
    def primary_metric(self) -> MetricSpec:
        return next(m for m in self.metrics if m.key == self.primary)

    def datamodule_obj(self, data_dir: str | None = None, **extra):
        """The registered data module with the protocol's (validated) arguments."""
        from ..data import build_datamodule

        return build_datamodule(self.datamodule, self.datamodule_args, data_dir=data_dir, **extra)

    def check_split(self, split: str, name: str) -> None:
        if split not in self.splits:
            raise ValueError(
                f"unknown split {split!r} for {name} ({self.task}, {self.dataset}): "
                f"use {', '.join(self.splits)}"
            )


@dataclass
class EvalResult:
    """What :meth:`TaskSpec.evaluate` measured (the orchestration adds who, where and how).

    Example:
        >>> from zoo.tasks import EvalResult
        >>> EvalResult(metrics={"top1": 90.0}, num_samples=100, nfe_mean=None, seconds=1.5).metrics
        {'top1': 90.0}
    """

    metrics: dict[str, float]
    num_samples: int
    nfe_mean: float | None
    seconds: float  # wall time of the model calls alone
    notes: str = ""
    # per-example outputs, columns of equal length, where the task keeps them (see
    # TaskSpec.keeps_predictions); ``zoo eval --predictions`` writes them as CSV
    predictions: dict[str, list] | None = None


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Register a task spec instance under ``spec.name``.

    Example:
        >>> from zoo.tasks import get_task, register_task
        >>> spec = get_task("time-series")
        >>> register_task(spec) is spec  # registering the same spec again is harmless
        True
    """
    if not spec.name or spec.name in _TASKS and type(_TASKS[spec.name]) is not type(spec):
        raise ValueError(f"task name {spec.name!r} is empty or taken")
    _TASKS[spec.name] = spec
    return spec


def _ensure_builtin() -> None:
    """Import every task file of zoo.tasks: each registers its spec (a new one, unlisted)."""
    import pkgutil

    importlib.import_module("zoo.tasks")
    for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not m.name.startswith("_"):
            importlib.import_module(f"zoo.tasks.{m.name}")


def get_task(name: str) -> TaskSpec:
    """The registered spec of ``name``; a ``ValueError`` lists the known ones.

    Example:
        >>> from zoo.tasks import get_task
        >>> get_task("image-classification").name
        'image-classification'
    """
    if name not in _TASKS:
        _ensure_builtin()
        from ..models._registry import _ensure_loaded

        _ensure_loaded()  # third-party families may bring their own task
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def list_tasks() -> list[str]:
    """The names of the registered task specs (the built-in ones and any plug-in's).

    Example:
        >>> from zoo.tasks import list_tasks
        >>> "time-series" in list_tasks()
        True
    """
    _ensure_builtin()
    return sorted(_TASKS)


_SAMPLE_DIRS: list[Path] = [Path(__file__).resolve().parents[1] / "_samples"]


def register_sample_dir(path: str | Path) -> None:
    """Add a folder of ``<sample>.npz`` files (a third-party family's package data).

    Example:
        >>> import tempfile
        >>> from zoo.tasks import register_sample_dir, sample_path
        >>> register_sample_dir(tempfile.gettempdir())  # a plug-in family's samples folder
        >>> sample_path("fashion_mnist").name
        'fashion_mnist.npz'
    """
    p = Path(path).resolve()
    if p not in _SAMPLE_DIRS:
        _SAMPLE_DIRS.append(p)


class FiniteGuard:
    """Counts non-finite values in a model's outputs over an evaluation; :meth:`check` raises
    once it has seen any. NaN logits would otherwise score (argmax of NaN is class 0), and NaN
    weights would give a number that looks like a result."""

    def __init__(self, what: str = "outputs") -> None:
        self.what, self.bad, self.total = what, 0, 0

    def __call__(self, t) -> None:
        import torch

        t = t.detach()
        self.total += t.numel()
        if t.is_floating_point():
            self.bad += int((~torch.isfinite(t)).sum())

    def check(self, name: str) -> None:
        if self.bad:
            raise ValueError(
                f"{name}: {self.bad:,} of the model's {self.total:,} {self.what} are NaN or "
                "infinite; no metric is reported. The weights or the inputs are broken (check "
                "for non-finite parameters and for inputs outside the model's declared range)"
            )


def stratified_subset(labels, limit: int, seed: int = 0):
    """Indices of a fixed subset of ``limit`` items, as balanced over ``labels`` as the counts
    allow: each class's items in a seeded random order, then taken round-robin. A test split
    sorted by class (CIFAR-10's folders) gives every class its share, not the first N."""
    import torch

    labels = torch.as_tensor(labels).reshape(len(labels), -1)[:, 0]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    per_class = [order[labels[order] == c] for c in torch.unique(labels)]
    picked, i = [], 0
    while len(picked) < min(limit, len(labels)):
        for idx in per_class:
            if i < len(idx) and len(picked) < limit:
                picked.append(int(idx[i]))
        i += 1
    return torch.tensor(sorted(picked), dtype=torch.long)


def sample_path(sample: str) -> Path:
    """The evaluation sample ``<sample>.npz``: shipped as package data (``zoo/_samples``) or in
    a folder a family registered; where a new one is written when none exists yet.

    Example:
        >>> from zoo.tasks import sample_path
        >>> sample_path("cifar10_jpeg").is_file()
        True
    """
    for d in _SAMPLE_DIRS:
        if (d / f"{sample}.npz").is_file():
            return d / f"{sample}.npz"
    return _SAMPLE_DIRS[0] / f"{sample}.npz"


def load_sample(protocol: EvalProtocol) -> dict:
    """The arrays of ``protocol.sample`` (a clear error when it was never built).

    Example:
        >>> import zoo
        >>> from zoo.tasks import get_task, load_sample
        >>> cfg = {**zoo.model_info("odenet.fashion_mnist"), "name": "odenet.fashion_mnist"}
        >>> sample = load_sample(get_task(cfg["task"]).protocol(cfg))
        >>> sample["x"].dtype.name, sample["x"].shape[1:]
        ('uint8', (1, 28, 28))
    """
    import numpy as np

    path = sample_path(protocol.sample)
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped sample {protocol.sample!r} ({path}); build it from the data with "
            f"`python -m zoo.samples {protocol.sample}` (needs ZOO_DATA_DIR)"
        )
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


class TaskSpec:
    """Base class of a problem type's spec. Subclasses set the class attributes and implement
    :meth:`eval_batches`, :meth:`evaluate`, :meth:`build_sample`; the card hooks have defaults.

    Example:
        >>> from zoo.tasks import TaskSpec, list_tasks
        >>> all(isinstance(name, str) for name in list_tasks()), TaskSpec.splits
        (True, ('test',))
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # the Hub's task name
    pipeline_tag: ClassVar[str] = ""
    tags: ClassVar[tuple[str, ...]] = ()
    unit: ClassVar[str] = "sample"
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    primary: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("test",)
    lightning_module: ClassVar[str] = ""  # "module:Class", resolved by :meth:`module_class`
    default_sample_size: ClassVar[int] = 100
    keeps_predictions: ClassVar[bool] = False  # EvalResult.predictions is filled

    # ----- protocol -------------------------------------------------------------------------
    def protocol(self, cfg: dict) -> EvalProtocol:
        """The evaluation protocol of a pretrained config (``model.pretrained_cfg``)."""

        from ..data._registry import check_args, datamodule_class, init_params

        who = cfg.get("name", "this checkpoint")
        if not isinstance(cfg.get("dataset"), str):
            raise ValueError(f"{who}: config lacks 'dataset' (a string)")
        if not isinstance(cfg.get("datamodule"), str):
            raise ValueError(
                f"{who}: 'datamodule' must be a registered data-module name (a string), got "
                f"{cfg.get('datamodule')!r}"
            )
        # validated before anything is built, even when the shipped sample is used
        cls = datamodule_class(cfg["datamodule"])
        check_args(cfg["datamodule"], init_params(cls), cfg.get("datamodule_args"),
                   f"{who}: datamodule_args")  # fmt: skip
        sample = str(cfg.get("sample") or cfg["dataset"])
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", sample) or ".." in sample:
            raise ValueError(
                f"{who}: sample name {sample!r} is not a plain name (letters, digits, _ . -)"
            )
        return EvalProtocol(
            task=self.name,
            dataset=cfg["dataset"],
            datamodule=cfg["datamodule"],
            datamodule_args=dict(cfg.get("datamodule_args") or {}),
            splits=self.splits,
            metrics=self.metrics,
            primary=self.primary,
            unit=self.unit,
            sample=sample,
            options=self.options(cfg),
        )

    def options(self, cfg: dict) -> dict:
        """Task-specific protocol fields read from the config (default: none)."""
        return {}

    def module_class(self):
        """The task's LightningModule class."""
        mod, cls = self.lightning_module.split(":")
        return getattr(importlib.import_module(mod), cls)

    # ----- evaluation -----------------------------------------------------------------------
    def eval_batches(
        self,
        model,
        protocol: EvalProtocol,
        split: str,
        sample: bool,
        limit: int | None,
        data_dir: str | None,
        batch_size: int,
    ) -> Iterable:
        """The batches to score: the shipped sample, or ``split`` of the real data; at most
        ``limit`` units (images, tokens, series)."""
        raise NotImplementedError

    def evaluate(self, model, batches: Iterable, protocol: EvalProtocol, device, clock):
        """Score ``model`` on ``batches``; model calls run inside ``with clock:``."""
        raise NotImplementedError

    def subset_note(self, limit: int) -> str:
        """How ``--limit N`` picks its units (stated in the result and on a card)."""
        return f"the first {limit:,} {self.units()} of the split"

    def protocol_note(self, protocol: EvalProtocol) -> str:
        """One line describing how the metrics are computed (cards and JSON)."""
        return ""

    def smoke_model_args(self, arch: str) -> dict:
        """Small constructor arguments for the registry-wide model test (default: none)."""
        return {}

    def smoke_inputs(self, model) -> tuple[tuple, tuple]:
        """A tiny random batch for ``model(*args)`` and the output's expected shape (the
        registry-wide model test uses it)."""
        raise NotImplementedError

    # ----- samples --------------------------------------------------------------------------
    def build_sample(self, protocol: EvalProtocol, data_dir: str | None, out: Path) -> dict:
        """Write the offline sample ``out`` (an .npz, <= 1 MB) from the real data; returns
        what to print about it."""
        raise NotImplementedError

    # ----- model cards ----------------------------------------------------------------------
    # A card is rendered from its data file (``zoo.cards``): the hooks below get ``facts``, what
    # ``zoo card`` recorded about the model (``card_facts``), never the model itself.
    def card_facts(self, name: str, model, info: dict) -> dict:
        """What the card says about the model itself, recorded by ``zoo card``: its
        description, parameter count and shipped test-time budget (a task adds its own)."""
        facts = {
            "parameters": model.num_params(),
            "description": getattr(model, "description", "") or f"A `{info['architecture']}` model",
        }
        if model.inference_budget():
            facts["budget"] = model.inference_budget()
        return facts

    def describe(self, facts: dict, info: dict) -> str:
        """The card's first words, e.g. "A Multiscale Deep Equilibrium Model"."""
        return facts.get("description") or f"A `{info['architecture']}` model"

    def card_use(self, name: str, facts: dict, info: dict) -> list[str]:
        """The lines after ``model = zoo.load(name)`` in the card's "Use it" block: a complete
        program from input to prediction (every card's block runs in the tests)."""
        return []

    def card_after_use(self, name: str, facts: dict, info: dict) -> list[str]:
        """Lines after the "Use it" code block (inputs, shell commands)."""
        return []

    def metric_cell(self, key: str, metrics: dict) -> str:
        """How the metric ``key`` of a results row (or a peer's row) reads in a table."""
        return _fmt(metrics.get(key))

    def card_results(self, rows: list[dict], main: dict, device: str) -> list[str]:
        """The results table (markdown lines) from ``zoo eval`` rows; ``main`` is the shipped
        setting, ``device`` where the latencies were measured."""
        keys = [m for m in self.metrics if any(m.key in r["metrics"] for r in rows)]
        budget = len(rows) > 1
        head = (["solver budget", "mean NFE"] if budget else ["mean NFE"]) + [m.name for m in keys]
        lines = ["| " + " | ".join([*head, f"ms / {self.unit} ({device})"]) + " |"]
        lines.append("|---" * (len(head) + 1) + "|")
        for r in rows:
            shipped = " (shipped)" if r is main and budget and r["budget"] != "shipped" else ""
            cells = [f"{r['budget']}{shipped}"] if budget else []
            nfe = r.get("nfe_mean")
            cells.append("-" if nfe is None else f"{nfe:g}")
            cells += [self.metric_cell(m.key, r["metrics"]) for m in keys]
            cells.append(f"{r['latency_ms_per_sample']:.3g}")
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def figures(
        self, name: str, model, rows: list[dict], info: dict, out_dir: Path, data_dir=None
    ) -> list[tuple[str, Path]]:
        """Extra figures for the card beyond the solver-budget curve: ``(title, path)``."""
        return []

    def card_extra(self, name: str, facts: dict, info: dict) -> list[str]:
        """Extra card sections (markdown lines), e.g. a generated sample."""
        return []

    def comparison_note(self, info: dict) -> list[str]:
        """Lines after the comparison table saying how comparable the figures are."""
        if info.get("comparison"):
            return [info["comparison"]]
        if info.get("papers"):
            return [
                "The papers' figures come from other data, sizes or budgets: context, not a "
                "like-for-like comparison."
            ]
        return []

    # ----- leaderboard ----------------------------------------------------------------------
    def units(self) -> str:
        """The plural of :attr:`unit` (for "n=500 images", "n=50 series")."""
        return self.unit if self.unit.endswith("s") else f"{self.unit}s"

    def _leaderboard_heading(self, dataset: str, rows: list[dict]) -> list[str]:
        r = rows[0]
        return [
            f"### {dataset} ({self.name}; {r['split']}, n={r['num_samples']} {self.units()})",
            "",
        ]

    def leaderboard_section(self, dataset: str, rows: list[dict], infos: dict) -> list[str]:
        """The markdown of one dataset's leaderboard table: ``rows`` are ``zoo eval`` results
        on that dataset, ``infos`` their pretrained configs by name. The default: one row per
        model with the papers' figures beside ours; a task overrides it for its field's layout.
        """
        lines = [
            *self._leaderboard_heading(dataset, rows),
            "| model | parameters | ours | paper (their setup) | NFE | ms/unit |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            papers = "; ".join(
                f"{p['value']} {p['metric']} ({p['setup']})"
                for p in infos[r["name"]].get("papers") or []
            )
            k = r["primary_metric"]
            lines.append(
                f"| {r['name']} | {r['params']:,} | {k} {r['metrics'][k]} | {papers or '-'} | "
                f"{_nfe(r)} | {r['latency_ms_per_sample']:.2f} |"
            )
        return lines

    def peer_section(self, peers: list[dict]) -> list[str]:
        """Lines for other libraries' models run here (rows of a peers file: ``model``,
        ``package``, the metrics by key, ``train_seconds``, ``epochs``), under the checkpoints'
        table, each marked as run here with its package version. Rows with a ``protocol`` were
        run on their own split, and the table says they are not comparable with ours."""
        keys = [m for m in self.metrics if any(m.key in p for p in peers)]
        script = peers[0].get("script", "its script")
        if peers[0].get("protocol"):  # their own split: a table apart, never beside ours
            intro = (
                f"Other libraries' models, run here by `{script}` on {peers[0]['protocol']}; "
                "each one's training budget is in its row. These are other patients, another "
                "grid and another normalization than the checkpoints' above, so the figures are "
                "not comparable with theirs."
            )
        else:
            intro = (
                "Other libraries' models, run here on the same data, split and normalization "
                f"(`{script}`; each one's training budget in its row)"
                + (f", on {peers[0]['grid']}:" if peers[0].get("grid") else ":")
            )
        lines = [
            "",
            intro,
            "",
            "| model (run here) | package | " + " | ".join(m.name for m in keys) + " | training |",
            "|---|---|" + "---|" * len(keys) + "---|",
        ]
        for p in peers:
            cells = [self.metric_cell(m.key, p) for m in keys]
            budget = f"{p.get('epochs', '-')} epochs, {p.get('train_seconds', 0) / 60:.0f} min"
            if p.get("selection"):
                budget += f"; kept: {p['selection']}"
            lines.append(
                f"| {p['model']} | {p['package']} | " + " | ".join(cells) + f" | {budget} |"
            )
        return lines

    def hub_metrics(self, metrics: dict) -> list[dict]:
        return [
            {"type": m.hub_type, "name": m.name, "value": metrics[m.key]}
            for m in self.metrics
            if m.key in metrics
        ]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) and abs(v) < 0.01 else str(v)


def _nfe(r: dict) -> str:
    return "-" if r.get("nfe_mean") is None else f"{r['nfe_mean']:.1f}"
