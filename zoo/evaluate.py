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


def sample_path(dataset: str) -> Path:
    """The small evaluation sample shipped in the repo for ``dataset`` (offline demo)."""
    return Path(__file__).resolve().parents[1] / "samples" / f"{dataset}.npz"


def _datamodule(cfg: dict, data_dir: str | None):
    import importlib
    import inspect

    mod, cls = cfg["datamodule"].rsplit(".", 1)
    klass = getattr(importlib.import_module(mod), cls)
    params = inspect.signature(klass).parameters
    kwargs = dict(cfg.get("datamodule_args", {}))
    if "data_dir" in params:
        kwargs["data_dir"] = data_dir
    if "val_size" in params:
        kwargs["val_size"] = 0
    return klass(**kwargs)


@evaluator("time-series")
def _eval_time_series(model, cfg, data_dir, split, limit, batch_size, sample):
    from tqdm import tqdm

    from .tasks.time_series import MaskedMSE, eval_generator, split_masks

    if sample:
        import numpy as np

        from .data import IrregularBatch

        d = np.load(sample_path(cfg["dataset"]))
        batches = [
            IrregularBatch(*(torch.from_numpy(d[k]) for k in ("times", "values", "mask", "labels")))
        ]
    else:
        dm = _datamodule(cfg, data_dir)
        dm.setup("test")
        batches = dm.test_dataloader()
    mse = MaskedMSE()
    nfe, seconds, n = [], 0.0, 0
    model.eval()
    with torch.no_grad():
        for b in tqdm(batches, desc=f"eval {cfg['name']}", unit="batch"):
            if limit and n >= limit:
                break
            cond, target = split_masks(
                b.times, b.mask, cfg.get("mode", "interpolation"), cfg.get("cond_frac", 1.0),
                generator=eval_generator(b.values, b.times),
            )  # fmt: skip
            t0 = time.perf_counter()
            out = model.reconstruct(b.times, b.values, cond, target, n_samples=1)
            seconds += time.perf_counter() - t0
            mse.update(out["mean"].mean(0), b.values, target)
            counts = model.nfe if isinstance(model.nfe, dict) else {"ode": model.nfe}
            nfe.append(sum(v for k, v in counts.items() if "backward" not in k))
            n += b.values.shape[0]
    m = {k: float(f"{float(v):.4g}") for k, v in mse.compute().items()}
    return {
        "metrics": m,
        "primary_metric": "mse",
        "num_samples": n,
        "nfe_mean": round(sum(nfe) / len(nfe), 1) if nfe else None,
        "latency_ms_per_sample": round(1000 * seconds / max(n, 1), 3),
        "unit": "series",
        "protocol": f"{cfg.get('mode', 'interpolation')}; MSE on normalized values (mse: the "
        "reference code's per-series, per-variable average; mse_masked_mean: over all points)",
    }


@evaluator("image-classification")
def _eval_image_classification(model, cfg, data_dir, split, limit, batch_size, sample):
    import numpy as np
    from torchmetrics.classification import MulticlassAccuracy
    from tqdm import tqdm

    dm = _datamodule(cfg, data_dir)
    if sample:
        d = np.load(sample_path(cfg["dataset"]))
        x_all, y_all = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    else:
        x_all, y_all = dm._load("test" if split == "test" else "train")
    if limit:
        x_all, y_all = x_all[:limit], y_all[:limit]
    n_cls = model.num_classes
    top1 = MulticlassAccuracy(n_cls, average="micro")
    top5 = MulticlassAccuracy(n_cls, top_k=min(5, n_cls), average="micro")
    nfe, seconds = [], 0.0
    with torch.no_grad():
        for i in tqdm(range(0, len(y_all), batch_size), desc=f"eval {cfg['name']}", unit="batch"):
            x = dm.normalize(x_all[i : i + batch_size])
            y = y_all[i : i + batch_size]
            t0 = time.perf_counter()
            logits = model(x)
            seconds += time.perf_counter() - t0
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
        "latency_ms_per_sample": round(1000 * seconds / max(n, 1), 3),
    }


@evaluator("language-modeling")
def _eval_language_model(model, cfg, data_dir, split, limit, batch_size, sample):
    import numpy as np
    from torchmetrics.text import Perplexity
    from tqdm import tqdm

    from .data._text import StreamSegments, Vocab

    vocab = Vocab(model.tokenizer["vocab"])
    if sample:
        tokens = [str(t) for t in np.load(sample_path(cfg["dataset"]))["tokens"]]
    else:
        dm = _datamodule(cfg, data_dir)
        tokens = [t for doc in dm._documents("test" if split == "test" else split) for t in doc]
    if limit:
        tokens = tokens[:limit]
    stream = torch.tensor(vocab.encode(tokens), dtype=torch.long)
    bs = min(10, max(1, (stream.numel() - 1) // (2 * model.tgt_len)))
    segs = StreamSegments(stream, bs, model.tgt_len)
    ppl = Perplexity()
    nfe, seconds, mems = [], 0.0, None
    with torch.no_grad():
        for x, y in tqdm(segs, desc=f"eval {cfg['name']}", unit="segment"):
            t0 = time.perf_counter()
            logits, mems = model(x, mems=mems, return_mems=True)
            seconds += time.perf_counter() - t0
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
        "latency_ms_per_sample": round(1000 * seconds / max(n, 1), 4),
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
) -> dict:
    """Evaluate pretrained ``name``; returns a JSON-ready dict of measured results."""
    import zoo

    budget = {k: v for k, v in (("max_iter", max_iter), ("tol", tol)) if v is not None}
    model = zoo.load(name, **budget)
    cfg = {**model.pretrained_cfg, "name": name}
    task = cfg.get("task")
    if task not in EVALUATORS:
        raise ValueError(f"no evaluator for task {task!r} of {name!r}; known: {sorted(EVALUATORS)}")
    torch.manual_seed(0)
    res = EVALUATORS[task](model, cfg, data_dir, split, limit, batch_size, sample)
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
        "device": f"cpu ({torch.get_num_threads()} threads, {platform.machine()})",
        "torch": torch.__version__,
        "command": f"zoo eval {name}"
        + (f" --max-iter {max_iter}" if max_iter else "")
        + (" --sample" if sample else "")
        + (f" --limit {limit}" if limit else ""),
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
) -> list[dict]:
    """Evaluate every pretrained model; write a markdown table and ``<out>.json``."""
    import zoo
    from zoo.models import model_info

    results = []
    for name in zoo.list_models(pretrained=True):
        results.append(evaluate(name, data_dir=data_dir, limit=limit, sample=sample))
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
        + ". Paper columns are the papers' own figures, on their own data and setup."
    )
    out = Path(out)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.json')}")
    return results
