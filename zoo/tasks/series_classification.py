"""Per-series binary classification of irregular time series (PhysioNet 2012 in-hospital
mortality): the :class:`~zoo.tasks.TimeSeries` task trained with a label head
(``classif_weight``), scored by AUROC (primary) and AUPRC over every labelled test series."""

from __future__ import annotations

import torch

from ._spec import EvalResult, FiniteGuard, MetricSpec, _nfe, register_task
from .time_series import LabelMetrics, MaskedMSE, TimeSeriesSpec

__all__ = ["SeriesClassificationSpec"]


class SeriesClassificationSpec(TimeSeriesSpec):
    """AUROC and AUPRC of a per-series label, with the reconstruction MSE beside them.

    Example:
        >>> from zoo.tasks import get_task
        >>> spec = get_task("time-series-classification")
        >>> spec.primary, [m.key for m in spec.metrics]
        ('auroc', ['auroc', 'auprc', 'mse'])
    """

    name = "time-series-classification"
    title = "Time Series Classification"
    pipeline_tag = "other"
    tags = ("neural-ode", "latent-ode", "irregular-time-series", "mortality-prediction")
    metrics = (
        MetricSpec("auroc", "AUROC", True, "roc_auc"),
        MetricSpec("auprc", "AUPRC (average precision)", True, "pr_auc"),
        MetricSpec("mse", "reconstruction MSE (reference per-series average)", False, "mse"),
    )
    primary = "auroc"

    def smoke_inputs(self, model):
        d = model.input_dim
        args = (torch.linspace(0, 1, 6), torch.randn(2, 6, d), torch.ones(2, 6, d))
        return args, ((1, 2, 6, d) if model.reconstructs else (2,))

    def protocol_note(self, protocol) -> str:
        return (
            "every labelled series of the split, each seen whole (all its observed points); "
            "AUROC and AUPRC of the predicted probability of the label (PhysioNet 2012: "
            "in-hospital death); reconstruction MSE on normalized values beside them"
        )

    def evaluate(self, model, batches, protocol, device, clock) -> EvalResult:
        if model.label_head is None:
            raise ValueError(
                f"{type(model).__name__} has no label head (classifier=True): it cannot be "
                "scored on a classification protocol"
            )
        guard = FiniteGuard("predicted probabilities")
        labels, mse, nfe, n = LabelMetrics().to(device), MaskedMSE().to(device), [], 0
        for b, out, values, target in self.reconstructions(model, batches, protocol, device, clock):
            probs = torch.sigmoid(out["logits"])
            guard(probs)
            known = ~torch.isnan(b.labels.to(device))
            labels.update(probs[known], b.labels.to(device)[known])
            if out["mean"] is not None:  # a pure classifier reconstructs nothing
                mse.update(out["mean"].mean(0), values, target)
            nfe.append(model.cost().nfe_forward)
            n += int(known.sum())
        guard.check(getattr(model, "pretrained_cfg", {}).get("name", type(model).__name__))
        metrics = dict(labels.compute())
        if mse.update_called:
            metrics["mse"] = mse.compute()["mse"]
        return EvalResult(
            metrics={k: float(f"{float(v):.4g}") for k, v in metrics.items()},
            num_samples=n,
            nfe_mean=round(sum(nfe) / len(nfe), 1) if any(nfe) else None,
            seconds=clock.seconds,
        )

    def card_use(self, name: str, facts: dict, info: dict) -> list[str]:
        return [
            "b = zoo.example_batch(model, 4)  # 4 test series of the shipped sample",
            "p = model.predict_proba(b.times, b.values, b.mask)  # P(label) per series",
            "print(p)  # PhysioNet 2012: the probability of in-hospital death",
        ]

    def leaderboard_section(self, dataset: str, rows: list[dict], infos: dict) -> list[str]:
        """One table per dataset: the protocol once above it, our checkpoints' AUROC and AUPRC,
        and each paper's figure for the same model class quoted as theirs in its own column."""
        first = rows[0]
        lines = [
            *self._leaderboard_heading(dataset, rows),
            f"Protocol: {self.protocol_note(None)}.",
            "",
            "| model | grid | AUROC (ours) | AUPRC (ours) | AUROC (paper, theirs) | NFE | ms/series |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            info = infos[r["name"]]
            paper = [p for p in info.get("papers") or [] if p.get("metric") == self.primary]
            theirs = f"{paper[0]['value']:.3g} ({paper[0]['setup']})" if paper else "-"
            m = r["metrics"]
            q = (info.get("datamodule_args") or {}).get("quantization")
            grid = "-" if q is None else (f"{q:g} h" if q >= 1 else f"{round(q * 60):g} min")
            lines.append(
                f"| {r['name']} | {grid} | {m.get('auroc', '-')} | {m.get('auprc', '-')} | "
                f"{theirs} | {_nfe(r)} | {r['latency_ms_per_sample']:.2f} |"
            )
        if first["split"] != "test":
            lines += ["", f"These are on {first['split']}; the cards report the test split."]
        return lines


register_task(SeriesClassificationSpec())
