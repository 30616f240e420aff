"""Per-series binary classification of irregular time series (PhysioNet 2012 in-hospital
mortality): the :class:`~zoo.tasks.TimeSeries` task trained with a label head
(``classif_weight``), scored by AUROC (primary) and AUPRC over every labelled test series."""

from __future__ import annotations

import torch

from ._spec import EvalResult, FiniteGuard, MetricSpec, _nfe, register_task
from .roc import format_p
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
    keeps_predictions = True  # each labelled series: its record id, label and probability

    def smoke_inputs(self, model):
        d = model.input_dim
        args = (torch.linspace(0, 1, 6), torch.randn(2, 6, d), torch.ones(2, 6, d))
        return args, ((1, 2, 6, d) if model.reconstructs else (2,))

    def protocol_note(self, protocol) -> str:
        return (
            "every labelled series of the split, each seen whole (all its observed points); "
            "AUROC (with DeLong's 95% interval) and AUPRC of the predicted probability of the "
            "label (PhysioNet 2012: in-hospital death); reconstruction MSE on normalized values "
            "beside them"
        )

    def evaluate(self, model, batches, protocol, device, clock) -> EvalResult:
        if model.label_head is None:
            raise ValueError(
                f"{type(model).__name__} has no label head (classifier=True): it cannot be "
                "scored on a classification protocol"
            )
        guard = FiniteGuard("predicted probabilities")
        labels, mse, nfe, n = LabelMetrics().to(device), MaskedMSE().to(device), [], 0
        kept: dict[str, list] = {"id": [], "label": [], "probability": []}
        seen = 0  # series so far: the id of a series whose data have none is its position
        for b, out, values, target in self.reconstructions(model, batches, protocol, device, clock):
            probs = torch.sigmoid(out["logits"])
            guard(probs)
            known = ~torch.isnan(b.labels.to(device))
            labels.update(probs[known], b.labels.to(device)[known])
            ids = b.ids if b.ids is not None else torch.arange(seen, seen + len(known))
            seen += len(known)
            kept["id"] += ids[known.cpu()].tolist()
            kept["label"] += b.labels[known.cpu()].int().tolist()
            kept["probability"] += probs[known].float().cpu().tolist()
            if out["mean"] is not None:  # a pure classifier reconstructs nothing
                mse.update(out["mean"].mean(0), values, target)
            nfe.append(model.cost().nfe_forward)
            n += int(known.sum())
        guard.check(getattr(model, "pretrained_cfg", {}).get("name", type(model).__name__))
        metrics = dict(labels.compute())
        ci = labels.auroc_interval(0.95)
        if ci is not None:  # None: too few series of a class for an interval
            metrics.update(auroc_low=ci.low, auroc_high=ci.high)
        if mse.update_called:
            metrics["mse"] = mse.compute()["mse"]
        return EvalResult(
            metrics={k: float(f"{float(v):.4g}") for k, v in metrics.items()},
            num_samples=n,
            nfe_mean=round(sum(nfe) / len(nfe), 1) if any(nfe) else None,
            seconds=clock.seconds,
            predictions=kept,
        )

    def metric_cell(self, key: str, metrics: dict) -> str:
        """AUROC and AUPRC to four places; the AUROC with its 95% DeLong interval when measured
        (``auroc_low``, ``auroc_high``)."""
        v = metrics.get(key)
        if key not in ("auroc", "auprc") or not isinstance(v, float):
            return super().metric_cell(key, metrics)
        cell = f"{v:.4f}"
        if key == "auroc" and "auroc_low" in metrics:
            cell += f" ({metrics['auroc_low']:.3f}–{metrics['auroc_high']:.3f})"
        return cell

    def peer_section(self, peers: list[dict]) -> list[str]:
        """The peers' table, then DeLong's paired test of each zoo checkpoint against each peer
        on the same patients, where the peers' file has it (``paired``)."""
        lines = super().peer_section(peers)
        tests = [(p["model"], c) for p in peers for c in p.get("paired") or []]
        if not tests:
            return lines
        lines += [
            "",
            "Paired on the same test patients (DeLong's test for two correlated AUROCs): "
            "the difference ours − theirs, its 95% interval and two-sided p-value. An "
            "interval that holds 0 means this test set does not tell the two models apart.",
            "",
            "| ours | theirs (run here) | AUROC difference | 95% interval | p |",
            "|---|---|---|---|---|",
        ]
        for peer, c in tests:
            p = format_p(c["p_value"])
            lines.append(
                f"| {c['checkpoint']} | {peer} | {c['difference']:+.4f} | "
                f"{c['low']:+.4f} to {c['high']:+.4f} | {p} |"
            )
        return lines

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
            "AUROCs closer than about the half-width of their intervals are not told apart by "
            "this test set alone; where other libraries' models were run here, a paired test "
            "below compares each with ours on the same patients.",
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
                f"| {r['name']} | {grid} | {self.metric_cell('auroc', m)} | "
                f"{self.metric_cell('auprc', m)} | "
                f"{theirs} | {_nfe(r)} | {r['latency_ms_per_sample']:.2f} |"
            )
        if first["split"] != "test":
            lines += ["", f"These are on {first['split']}; the cards report the test split."]
        return lines


register_task(SeriesClassificationSpec())
