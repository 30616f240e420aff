"""``zoo eval`` and ``zoo leaderboard``: measured metrics, mean NFE and latency per sample."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["evaluate", "leaderboard", "print_results", "EVALUATORS", "sample_path"]

EVALUATORS: dict[str, Any] = {}


def evaluator(task: str):
    def deco(fn):
        EVALUATORS[task] = fn
        return fn

    return deco


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
        return f"cpu ({torch.get_num_threads()} threads, {platform.machine()})"
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


def sample_path(dataset: str) -> Path:
    """The small evaluation sample shipped in the repo for ``dataset`` (offline demo)."""
    return Path(__file__).resolve().parents[1] / "samples" / f"{dataset}.npz"


def _datamodule(cfg: dict, data_dir: str | None, held_out: bool = False):
    """The checkpoint's datamodule; ``held_out`` keeps its default validation hold-out (the
    split the recipes train with), else every training example stays in ``train``."""
    import importlib
    import inspect

    mod, cls = cfg["datamodule"].rsplit(".", 1)
    klass = getattr(importlib.import_module(mod), cls)
    params = inspect.signature(klass).parameters
    kwargs = dict(cfg.get("datamodule_args", {}))
    if "data_dir" in params:
        kwargs["data_dir"] = data_dir
    if "val_size" in params and not held_out:
        kwargs["val_size"] = 0
    return klass(**kwargs)


def _image_split(cfg: dict, data_dir: str | None, split: str, dm=None):
    """``(images, labels)`` of ``test``, ``val`` (the training images the recipes hold out,
    seed 0) or ``train`` (the rest of the training images). ``dm``: a datamodule already made
    for ``test``."""
    if split == "test":
        return (dm or _datamodule(cfg, data_dir))._load("test")
    if split not in ("train", "val"):
        raise ValueError(
            f"unknown split {split!r} for {cfg['name']}: use test, val (the training images "
            "held out for validation) or train (the rest)"
        )
    dm = _datamodule(cfg, data_dir, held_out=True)
    dm.setup()
    ds = dm._splits.get(split)
    if ds is None or len(ds) == 0:
        raise ValueError(
            f"split {split!r} of {cfg['name']} is empty: the training set has fewer images than "
            f"the {dm.val_size} held out for validation"
        )
    return ds.tensors


@evaluator("time-series")
def _eval_time_series(model, cfg, data_dir, split, limit, batch_size, sample, device):
    from tqdm import tqdm

    from .tasks.time_series import MaskedMSE, eval_generator, split_masks

    if sample:
        import numpy as np

        from .data import IrregularBatch

        with np.load(sample_path(cfg["dataset"])) as d:
            batches = [
                IrregularBatch(
                    *(torch.from_numpy(d[k]) for k in ("times", "values", "mask", "labels"))
                )
            ]
    else:
        dm = _datamodule(cfg, data_dir)
        dm.setup("test")
        batches = dm.test_dataloader()
    mse = MaskedMSE().to(device)
    nfe, clock, n = [], _Clock(device), 0
    model.eval()
    with torch.no_grad():
        for b in tqdm(batches, desc=f"eval {cfg['name']}", unit="batch"):
            if limit and n >= limit:
                break
            cond, target = split_masks(
                b.times, b.mask, cfg.get("mode", "interpolation"), cfg.get("cond_frac", 1.0),
                generator=eval_generator(b.values, b.times),
            )  # fmt: skip
            times, values = b.times.to(device), b.values.to(device)
            cond, target = cond.to(device), target.to(device)
            with clock:
                out = model.reconstruct(times, values, cond, target, n_samples=1)
            mse.update(out["mean"].mean(0), values, target)
            counts = model.nfe if isinstance(model.nfe, dict) else {"ode": model.nfe}
            nfe.append(sum(v for k, v in counts.items() if "backward" not in k))
            n += b.values.shape[0]
    m = {k: float(f"{float(v):.4g}") for k, v in mse.compute().items()}
    return {
        "metrics": m,
        "primary_metric": "mse",
        "num_samples": n,
        "nfe_mean": round(sum(nfe) / len(nfe), 1) if nfe else None,
        "latency_ms_per_sample": round(1000 * clock.seconds / max(n, 1), 3),
        "unit": "series",
        "protocol": f"{cfg.get('mode', 'interpolation')}; MSE on normalized values (mse: the "
        "reference code's per-series, per-variable average; mse_masked_mean: over all points)",
    }


@evaluator("image-classification")
def _eval_image_classification(model, cfg, data_dir, split, limit, batch_size, sample, device):
    import numpy as np
    from torchmetrics.classification import MulticlassAccuracy
    from tqdm import tqdm

    dm = _datamodule(cfg, data_dir)
    if sample:
        with np.load(sample_path(cfg["dataset"])) as d:
            x_all, y_all = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    else:
        x_all, y_all = _image_split(cfg, data_dir, split, dm)
    if limit:
        x_all, y_all = x_all[:limit], y_all[:limit]
    n_cls = model.num_classes
    top1 = MulticlassAccuracy(n_cls, average="micro").to(device)
    top5 = MulticlassAccuracy(n_cls, top_k=min(5, n_cls), average="micro").to(device)
    nfe, clock = [], _Clock(device)
    with torch.no_grad():
        for i in tqdm(range(0, len(y_all), batch_size), desc=f"eval {cfg['name']}", unit="batch"):
            x = dm.normalize(x_all[i : i + batch_size]).to(device)
            y = y_all[i : i + batch_size].to(device)
            with clock:
                logits = model(x)
            top1.update(logits, y)
            top5.update(logits, y)
            st = getattr(model, "solver_stats", None)
            if st is not None:
                nfe.append((st.nfe, len(y)))
    n = len(y_all)
    return {
        "metrics": {
            "top1": round(100 * float(top1.compute()), 2),
            "top5": round(100 * float(top5.compute()), 2),
        },
        "primary_metric": "top1",
        "num_samples": n,
        "nfe_mean": round(sum(a * b for a, b in nfe) / max(sum(b for _, b in nfe), 1), 2)
        if nfe
        else None,
        "latency_ms_per_sample": round(1000 * clock.seconds / max(n, 1), 3),
    }


@evaluator("language-modeling")
def _eval_language_model(model, cfg, data_dir, split, limit, batch_size, sample, device):
    import numpy as np
    from torchmetrics.text import Perplexity
    from tqdm import tqdm

    from .data._text import StreamSegments, Vocab

    vocab = Vocab(model.tokenizer["vocab"])
    if sample:
        with np.load(sample_path(cfg["dataset"])) as d:
            tokens = [str(t) for t in d["tokens"]]
    else:
        dm = _datamodule(cfg, data_dir)
        tokens = [t for doc in dm._documents("test" if split == "test" else split) for t in doc]
    if limit:
        tokens = tokens[:limit]
    stream = torch.tensor(vocab.encode(tokens), dtype=torch.long)
    bs = min(10, max(1, (stream.numel() - 1) // (2 * model.tgt_len)))
    segs = StreamSegments(stream, bs, model.tgt_len)
    ppl = Perplexity().to(device)
    nfe, clock, mems = [], _Clock(device), None
    with torch.no_grad():
        for x, y in tqdm(segs, desc=f"eval {cfg['name']}", unit="segment"):
            x, y = x.to(device), y.to(device)
            with clock:
                logits, mems = model(x, mems=mems, return_mems=True)
            ppl.update(logits.float(), y)
            st = getattr(model, "solver_stats", None)
            if st is not None:
                nfe.append(st.nfe)
    n = int(segs.x.numel())
    return {
        "metrics": {"ppl": round(float(ppl.compute()), 2)},
        "primary_metric": "ppl",
        "num_samples": n,
        "nfe_mean": round(sum(nfe) / len(nfe), 2) if nfe else None,
        "latency_ms_per_sample": round(1000 * clock.seconds / max(n, 1), 4),
        "unit": "token",
    }


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
) -> dict:
    """Evaluate pretrained ``name``; returns a JSON-ready dict of measured results.

    ``device``: where the model runs (``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``). The
    latency column is that device's; the shipped cards are measured on CPU.
    """
    import zoo

    dev = resolve_device(device)
    budget = {k: v for k, v in (("max_iter", max_iter), ("tol", tol)) if v is not None}
    model = zoo.load(name, **budget).to(dev)
    cfg = {**model.pretrained_cfg, "name": name}
    task = cfg.get("task")
    if task not in EVALUATORS:
        raise ValueError(f"no evaluator for task {task!r} of {name!r}; known: {sorted(EVALUATORS)}")
    torch.manual_seed(0)
    res = EVALUATORS[task](model, cfg, data_dir, split, limit, batch_size, sample, dev)
    solver = getattr(getattr(model, "deq", None), "eval_solver", None) or getattr(
        getattr(model, "deq", None), "solver", None
    )
    return {
        "name": name,
        "task": task,
        "dataset": cfg.get("dataset"),
        "split": "shipped sample of " + split if sample else split,
        **res,
        "max_iter": max_iter,
        "solver": solver.spec() if solver is not None else None,
        "device": _device_name(dev),
        "torch": torch.__version__,
        "command": f"zoo eval {name}"
        + (f" --split {split}" if split != "test" else "")
        + (f" --max-iter {max_iter}" if max_iter else "")
        + (f" --tol {tol:g}" if tol is not None else "")
        + (" --sample" if sample else "")
        + (f" --limit {limit}" if limit else "")
        + (f" --device {device}" if str(device) != "cpu" else ""),
    }


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


def leaderboard(
    data_dir: str | None = None,
    out: str | Path = "leaderboard.md",
    limit: int | None = None,
    sample: bool = False,
    device: str = "cpu",
) -> list[dict]:
    """Evaluate every pretrained model; write a markdown table and ``<out>.json``."""
    import zoo
    from zoo.models import model_info

    results = []
    for name in zoo.list_models(pretrained=True):
        results.append(evaluate(name, data_dir=data_dir, limit=limit, sample=sample, device=device))
    print()
    print_results(results)
    lines = [
        "| model | task | data (split) | ours | paper (their setup) | NFE | ms/sample |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        info = model_info(r["name"])
        k = r["primary_metric"]
        papers = (
            "; ".join(
                f"{p['value']} {p['metric']} ({p['source']})" for p in info.get("paper_results", [])
            )
            or "-"
        )
        nfe = "-" if r.get("nfe_mean") is None else f"{r['nfe_mean']:.1f}"
        lines.append(
            f"| {r['name']} | {r['task']} | {r['dataset']} ({r['split']}, n={r['num_samples']}) | "
            f"{k} {r['metrics'][k]} | {papers} | {nfe} | {r['latency_ms_per_sample']:.2f} |"
        )
    lines.append("")
    lines.append(
        "Ours: measured by `zoo leaderboard`"
        + (" on the shipped samples" if sample else "")
        + f", on {results[0]['device'] if results else device}"
        + ". Paper columns are the papers' own figures, on their own data and setup."
    )
    out = Path(out)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.json')}")
    return results
