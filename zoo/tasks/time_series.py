"""Irregular time series: interpolation and extrapolation (Latent ODE and its baselines)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from ..models import create_model
from ._base import ZooTask
from ._spec import EvalResult, FiniteGuard, MetricSpec, TaskSpec, _nfe, load_sample, register_task

__all__ = [
    "LabelMetrics",
    "MaskedMSE",
    "TimeSeries",
    "TimeSeriesSpec",
    "eval_generator",
    "split_masks",
]


class MaskedMSE(Metric):
    """Reconstruction MSE over the points of a mask, two ways, accumulated over batches.

    ``mse``: the Latent ODE reference code's figure: per series and variable, the mean squared
    error over that variable's observed points (0 for a variable the series never had),
    averaged over variables, then over series. ``mse_masked_mean``: the plain mean over all
    masked points.

    Example:
        >>> m = MaskedMSE()
        >>> m.update(torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.tensor([[[1., 0], [1, 0]]]))
        >>> {k: float(v) for k, v in m.compute().items()}
        {'mse': 0.5, 'mse_masked_mean': 1.0}
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("per_series_sum", "n_series", "se_sum", "n_points"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor) -> None:
        """``pred``, ``target``, ``mask``: ``(B, T, D)``; series with an empty mask are skipped."""
        mask = mask.double()
        se = (pred.double() - target.double()) ** 2 * mask
        cnt = mask.sum(1)  # (B, D)
        per = torch.where(cnt > 0, se.sum(1) / cnt.clamp_min(1), torch.zeros_like(cnt)).mean(-1)
        has = cnt.sum(-1) > 0
        self.per_series_sum += per[has].sum()
        self.n_series += has.sum()
        self.se_sum += se.sum()
        self.n_points += mask.sum()

    def compute(self) -> dict[str, Tensor]:
        return {
            "mse": (self.per_series_sum / self.n_series.clamp_min(1)).float(),
            "mse_masked_mean": (self.se_sum / self.n_points.clamp_min(1)).float(),
        }


class LabelMetrics(Metric):
    """AUROC and AUPRC (average precision) of per-series probabilities over every series seen,
    accumulated across batches and processes; both NaN (undefined) while the series seen hold
    one class only.

    Example:
        >>> m = LabelMetrics()
        >>> m.update(torch.tensor([0.9, 0.2, 0.6, 0.4]), torch.tensor([1.0, 0.0, 0.0, 1.0]))
        >>> {k: round(float(v), 3) for k, v in m.compute().items()}
        {'auroc': 0.75, 'auprc': 0.833}
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("probs", [], dist_reduce_fx="cat")
        self.add_state("labels", [], dist_reduce_fx="cat")

    def update(self, probs: Tensor, labels: Tensor) -> None:
        self.probs.append(probs.detach().float().reshape(-1))
        self.labels.append(labels.detach().float().reshape(-1))

    def compute(self) -> dict[str, Tensor]:
        from torchmetrics.functional.classification import binary_auroc, binary_average_precision

        p = torch.cat(self.probs) if isinstance(self.probs, list) else self.probs
        y = (torch.cat(self.labels) if isinstance(self.labels, list) else self.labels).long()
        if bool((y == 1).all()) or bool((y == 0).all()):  # one class only: both undefined
            nan = torch.tensor(float("nan"), device=p.device)
            return {"auroc": nan, "auprc": nan.clone()}
        return {"auroc": binary_auroc(p, y), "auprc": binary_average_precision(p, y)}

    def auroc_interval(self, level: float = 0.95):
        """DeLong's interval of the AUROC over every series seen (:func:`zoo.tasks.roc.auroc_interval`),
        or ``None`` when fewer than two series of either class were seen (DeLong's variance
        needs two of each: a few series of a small ``--limit``)."""
        from .roc import auroc_interval

        p = torch.cat(self.probs) if isinstance(self.probs, list) else self.probs
        y = torch.cat(self.labels) if isinstance(self.labels, list) else self.labels
        y = y.long().cpu().numpy()
        if min(int((y == 1).sum()), int((y == 0).sum())) < 2:
            return None
        return auroc_interval(p.double().cpu().numpy(), y, level)


def eval_generator(values: Tensor, times: Tensor) -> torch.Generator:
    """A generator seeded by the batch's shape: evaluation subsamples are the same every run."""
    return torch.Generator().manual_seed(int(values.shape[0] * 7919 + times.shape[0]))


def split_masks(
    times: Tensor, mask: Tensor, mode: str, cond_frac: float = 1.0, generator=None
) -> tuple[Tensor, Tensor]:
    """The points a model may see (``cond``) and the points it is scored on (``target``).

    ``interpolation``: target = every observed point; cond = all of them, or a random
    ``cond_frac`` of each series' time points. ``extrapolation``: cond = the observed points of
    the first half of the batch's time points (or a random ``cond_frac`` of each series' time
    points there: the reference's ``--sample-tp`` on MuJoCo, which thins only what the model
    sees), target = the observed points of the second half.
    """
    keep = None
    if cond_frac < 1.0:
        keep = torch.rand(mask.shape[:2], generator=generator, device="cpu") < cond_frac
        keep = keep.to(mask.device, mask.dtype).unsqueeze(-1)
    if mode == "interpolation":
        return (mask if keep is None else mask * keep), mask
    if mode == "extrapolation":
        first = torch.arange(times.shape[0], device=times.device) < times.shape[0] // 2
        first = first.to(mask.dtype)[None, :, None]
        cond = mask * first
        return (cond if keep is None else cond * keep), mask * (1 - first)
    raise ValueError(f"mode must be 'interpolation' or 'extrapolation', got {mode!r}")


class TimeSeries(ZooTask):
    """Train/evaluate a time-series model of the zoo on batches of irregular series.

    A batch is an :class:`~zoo.data.IrregularBatch` (the union of its series' time points, with
    a per-variable mask). The loss is the reference code's bound (IWAE over ``n_samples``
    posterior samples, with the KL weight annealed per epoch as the reference does:
    ``0`` for ``kl_wait_epochs`` epochs, then ``1 - kl_anneal ** (epoch - kl_wait_epochs)``);
    models without a posterior use the Gaussian likelihood alone.

    Args:
        arch: Entry point (``latent_ode``, ``ode_rnn``, ``gru_delta_t``, ``rnn_vae``).
        model_args: Constructor overrides.
        mode: ``"interpolation"`` or ``"extrapolation"``.
        cond_frac: The fraction of each series' time points it is conditioned on, drawn
            afresh each training batch and fixed per batch in evaluation (1.0 = all, the
            reference's PhysioNet setting; in extrapolation, a fraction of the first half's).
        n_samples: Posterior samples per series in training (the reference uses 3).
        kl_wait_epochs: Epochs trained without the KL term.
        kl_anneal: Base of the KL weight's annealing.
        lr: Peak learning rate.
        optimizer: timm optimizer name (``adamax`` as in the reference).
        weight_decay: Weight decay.
        min_lr: Final learning rate of the cosine schedule.
        warmup_steps: Linear warm-up steps (cosine schedule).
        lr_schedule: ``"cosine"`` over the run (timm), or ``"exp"``: the reference's decay by
            ``lr_decay`` per step down to ``min_lr``, which does not depend on the run's length
            (so a time-limited run stops on a sensible learning rate).
        lr_decay: Per-step factor of the ``"exp"`` schedule (0.999 in the reference).
        bf16: bfloat16 autocast (off by default: ODE solvers want fp32).
        init_from: Start from these weights: a zoo name (``latent_ode.physionet``), a local
            folder or a Lightning ``.ckpt``. Matching tensors are copied; a resumed run
            (``--ckpt_path``) still restores its own state.
        skip_unconverged: Skip the optimizer step of a batch whose forward solve did not
            converge (a non-finite loss is always skipped); ``train/skipped`` logs it.
        classif_weight: Weight of the label's binary cross-entropy added to the reconstruction
            loss, for a model built with ``classifier=True`` (the Latent ODE reference's
            ``--classif`` trains with 100, on the labelled series of each batch, without class
            weights); 0 trains the reconstruction alone. Validation and test then log the AUROC
            and AUPRC over all labelled series.

    Example:
        >>> from zoo.tasks import TimeSeries
        >>> task = TimeSeries(arch="latent_ode", model_args={"input_dim": 1, "latent_dim": 3,
        ...                   "rec_dims": 4, "units": 8})
        >>> type(task.model).__name__
        'LatentODE'
    """

    def __init__(
        self,
        arch: str = "latent_ode",
        model_args: dict[str, Any] | None = None,
        mode: str = "interpolation",
        cond_frac: float = 1.0,
        n_samples: int = 3,
        kl_wait_epochs: int = 10,
        kl_anneal: float = 0.99,
        lr: float = 1e-2,
        optimizer: str = "adamax",
        weight_decay: float = 0.0,
        min_lr: float = 1e-3,
        warmup_steps: int = 0,
        lr_schedule: str = "cosine",
        lr_decay: float = 0.999,
        bf16: bool = False,
        init_from: str | None = None,
        skip_unconverged: bool = False,
        classif_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(classif_weight, bool) or not isinstance(classif_weight, (int, float)):
            raise ValueError(f"classif_weight must be a number >= 0, got {classif_weight!r}")
        if not classif_weight >= 0:
            raise ValueError(f"classif_weight must be >= 0, got {classif_weight}")
        if lr_schedule not in ("cosine", "exp"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'exp', got {lr_schedule!r}")
        if mode not in ("interpolation", "extrapolation"):
            raise ValueError(f"mode must be 'interpolation' or 'extrapolation', got {mode!r}")
        if not 0.0 < cond_frac <= 1.0:
            raise ValueError(f"cond_frac must be in (0, 1], got {cond_frac}")
        self.save_hyperparameters()
        self.model = create_model(arch, **(model_args or {}))
        from ..models.latent_ode import TimeSeriesModel

        if not isinstance(self.model, TimeSeriesModel):
            raise ValueError(f"{arch} is not a time-series model (zoo list --task time-series)")
        self.metrics = torch.nn.ModuleDict({s: MaskedMSE() for s in ("val", "test")})
        self.label_metrics = None
        if classif_weight > 0 and self.model.label_head is None:
            raise ValueError(
                f"classif_weight={classif_weight} trains a label head, and this {arch} has none: "
                "set model_args: {classifier: true}"
            )
        if self.model.label_head is not None:
            self.label_metrics = torch.nn.ModuleDict({s: LabelMetrics() for s in ("val", "test")})
        if not self.model.reconstructs and not classif_weight > 0:
            raise ValueError(
                f"{arch} reconstructs nothing and learns only its label: set classif_weight > 0"
            )

    def _warmup_steps(self) -> int:
        return self.hparams.warmup_steps

    def configure_optimizers(self):
        hp = self.hparams
        if hp.lr_schedule == "cosine":
            return super().configure_optimizers()
        from timm.optim import create_optimizer_v2

        opt = create_optimizer_v2(
            self.model, opt=hp.optimizer, lr=hp.lr, weight_decay=hp.weight_decay
        )
        floor = hp.min_lr / hp.lr
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(hp.lr_decay**step, floor))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        if self.hparams.lr_schedule == "cosine":
            super().lr_scheduler_step(scheduler, metric)
        else:
            scheduler.step()

    def kl_weight(self) -> float:
        e = self.current_epoch - self.hparams.kl_wait_epochs
        return 0.0 if e < 0 else 1.0 - self.hparams.kl_anneal**e

    def _nfe(self) -> dict[str, float]:
        nfe = getattr(self.model, "nfe", None)
        if isinstance(nfe, dict):
            return {k: float(v) for k, v in nfe.items()}
        return {"ode": float(nfe)} if isinstance(nfe, int) else {}

    def _common_step(self, batch, stage: str) -> Tensor:
        times, values, mask = batch.times, batch.values, batch.mask
        # the same conditioning subsample at every evaluation
        gen = None if stage == "train" else eval_generator(values, times)
        cond, target = split_masks(
            times, mask, self.hparams.mode, self.hparams.cond_frac, generator=gen
        )
        n = self.hparams.n_samples if stage == "train" else 1
        with self._autocast():
            out = self.model.reconstruct(times, values, cond, target, n_samples=n)
        out = {k: (v.float() if torch.is_tensor(v) else v) for k, v in out.items()}
        out.setdefault("mean", None)
        kl_w = self.kl_weight() if stage == "train" else 1.0
        loss = self.model.loss(out, values, target, kl_weight=kl_w)
        bs = values.shape[0]
        if "logits" in out:
            known = ~torch.isnan(batch.labels)
            logits, labels = out["logits"][known], batch.labels[known].to(out["logits"].dtype)
            if self.hparams.classif_weight > 0 and labels.numel():
                bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
                loss = loss + self.hparams.classif_weight * bce
                self.log(f"{stage}/bce", bce.detach(), batch_size=bs)
            if stage != "train":
                self.label_metrics[stage].update(torch.sigmoid(logits), labels)
        self.log(f"{stage}/loss", loss.detach(), prog_bar=True, batch_size=bs)
        if stage == "train":
            self.log("train/kl_weight", kl_w, batch_size=bs)
        elif out["mean"] is not None:
            self.metrics[stage].update(out["mean"].mean(0), values, target)
        for k, v in self._nfe().items():
            self.log(f"{stage}/nfe_{k}", v, batch_size=bs, on_step=stage == "train")
        return loss

    def _log_epoch(self, stage: str) -> None:
        ms = [self.metrics[stage]]
        if self.label_metrics is not None:
            ms.append(self.label_metrics[stage])
        for m in ms:
            if m.update_called:  # compute() syncs the sums across processes
                self.log_dict({f"{stage}/{k}": v for k, v in m.compute().items()}, prog_bar=True)
            m.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")


class TimeSeriesSpec(TaskSpec):
    """Masked reconstruction MSE of irregular series, in interpolation or extrapolation.

    Example:
        >>> from zoo.tasks import get_task
        >>> get_task("time-series").primary
        'mse'
    """

    name = "time-series"
    title = "Time Series Forecasting"
    pipeline_tag = "time-series-forecasting"
    tags = ("neural-ode", "latent-ode", "irregular-time-series")
    unit = "series"
    metrics = (
        MetricSpec("mse", "MSE (reference per-series average)", False, "mse", short="MSE"),
        MetricSpec("mse_masked_mean", "MSE (over observed points)", False, "mse"),
    )
    primary = "mse"
    splits = ("test", "train")
    lightning_module = "zoo.tasks.time_series:TimeSeries"
    default_sample_size = 50  # series

    def options(self, cfg: dict) -> dict:
        return {"mode": cfg.get("mode", "interpolation"), "cond_frac": cfg.get("cond_frac", 1.0)}

    def smoke_inputs(self, model):
        d = model.input_dim
        args = (torch.linspace(0, 1, 6), torch.randn(2, 6, d), torch.ones(2, 6, d))
        return args, (1, 2, 6, d)

    def smoke_model_args(self, arch: str) -> dict:
        import inspect

        from ..models import create_model

        params = inspect.signature(type(create_model(arch))).parameters
        return {"input_dim": 3, **({"latent_dim": 4} if "latent_dim" in params else {})}

    def protocol_note(self, protocol) -> str:
        mode, frac = protocol.options["mode"], protocol.options["cond_frac"]
        if frac < 1.0:
            half = " of the first half" if mode == "extrapolation" else ""
            mode += f", conditioned on a random {frac:.0%} of each series' time points{half}"
        return (
            f"{mode}; MSE on normalized values (mse: the reference code's "
            "per-series, per-variable average; mse_masked_mean: over all points)"
        )

    def eval_batches(self, model, protocol, split, sample, limit, data_dir, batch_size):

        from ..data import IrregularBatch

        if sample:
            d = load_sample(protocol)
            keys = ("times", "values", "mask", "labels")
            ids = torch.from_numpy(d["ids"]) if "ids" in d else None  # record ids, where kept
            batches = [IrregularBatch(*(torch.from_numpy(d[k]) for k in keys), ids=ids)]
        else:
            batches = protocol.datamodule_obj(data_dir).eval_split(split)
        if not limit:
            return batches
        return _first_series(batches, limit)

    def reconstructions(self, model, batches, protocol, device, clock):
        """Each batch reconstructed as the protocol asks (the same conditioning subsample every
        run): yields ``(batch, out, values, target_mask)``, the model call timed by ``clock``."""
        from tqdm import tqdm

        opts = protocol.options
        for b in tqdm(batches, desc="eval", unit="batch"):
            cond, target = split_masks(
                b.times, b.mask, opts["mode"], opts["cond_frac"],
                generator=eval_generator(b.values, b.times),
            )  # fmt: skip
            times, values = b.times.to(device), b.values.to(device)
            cond, target = cond.to(device), target.to(device)
            with clock:
                out = model.reconstruct(times, values, cond, target, n_samples=1)
            yield b, out, values, target

    def evaluate(self, model, batches, protocol, device, clock) -> EvalResult:
        guard = FiniteGuard("predicted values")
        mse = MaskedMSE().to(device)
        nfe, n = [], 0
        for b, out, values, target in self.reconstructions(model, batches, protocol, device, clock):
            guard(out["mean"])
            mse.update(out["mean"].mean(0), values, target)
            nfe.append(model.cost().nfe_forward)
            n += b.values.shape[0]
        guard.check(getattr(model, "pretrained_cfg", {}).get("name", type(model).__name__))
        return EvalResult(
            metrics={k: float(f"{float(v):.4g}") for k, v in mse.compute().items()},
            num_samples=n,
            nfe_mean=round(sum(nfe) / len(nfe), 1) if any(nfe) else None,
            seconds=clock.seconds,
        )

    def build_sample(self, protocol, data_dir, out) -> str:
        import numpy as np

        n = int(protocol.options.get("sample_series", self.default_sample_size))
        b = next(iter(protocol.datamodule_obj(data_dir, batch_size=n).eval_split("test")))
        ids = {} if b.ids is None else {"ids": b.ids.numpy()}
        np.savez_compressed(
            out, times=b.times.numpy(), values=b.values.numpy(), mask=b.mask.numpy(),
            labels=b.labels.numpy(), **ids,
        )  # fmt: skip
        return f"{b.values.shape[0]} series"

    def card_use(self, name: str, facts: dict, info: dict) -> list[str]:
        return [
            "b = zoo.example_batch(model, 4)  # 4 test series of the shipped sample",
            "# the mean and 3 samples at the observed times, given the observations",
            "mean, samples = model.predict(b.times, b.values, b.mask, b.times, n_samples=3)",
            "print(mean.shape, samples.shape)  # (4, T, D) and (3, 4, T, D)",
        ]

    def card_after_use(self, name: str, facts: dict, info: dict) -> list[str]:
        return ["", f"Protocol: {self.protocol_note(self.protocol(info))}."]

    def leaderboard_section(self, dataset: str, rows: list[dict], infos: dict) -> list[str]:
        """The paper's layout: per checkpoint its protocol (interpolation or extrapolation, the
        grid), our MSE, the paper's figure for the same row and protocol, and their ratio."""
        first = rows[0]
        lines = [
            *self._leaderboard_heading(dataset, rows),
            "| model | protocol | ours (MSE) | paper (MSE, theirs) | ours / paper | NFE | "
            "ms/series |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            info = infos[r["name"]]
            ours = r["metrics"].get(self.primary)
            paper = [p for p in info.get("papers") or [] if p.get("metric") == self.primary]
            ratio = "-"
            if paper and ours is not None:
                x = ours / paper[0]["value"]
                ratio = f"{x:.2f}x ({'met' if x <= 1 else 'missed'})"
            theirs = f"{paper[0]['value']:.4g} ({paper[0]['setup']})" if paper else "-"
            lines.append(
                f"| {r['name']} | {_protocol_words(info)} | "
                f"{'-' if ours is None else f'{ours:.4g}'} | {theirs} | {ratio} | "
                f"{_nfe(r)} | "
                f"{r['latency_ms_per_sample']:.2f} |"
            )
        if first["split"] != "test":
            lines += [
                "",
                f"The ratios here are on {first['split']}; a checkpoint's comparison with the "
                "paper is its card's figure on the full test split (`zoo card`).",
            ]
        return lines

    def figures(self, name, model, rows, info, out_dir, data_dir=None):
        from ._series_plot import plot_trajectories

        if not model.reconstructs:  # a pure classifier has no trajectory to draw
            return []
        png = out_dir / f"{name}.trajectories.png"
        plot_trajectories(name, model, self.protocol(info), png, data_dir)
        return [("test trajectories", png)]


def _first_series(batches, limit: int):
    """The batches truncated to the first ``limit`` series."""
    n = 0
    for b in batches:
        if n >= limit:
            return
        keep = min(limit - n, b.values.shape[0])
        ids = None if b.ids is None else b.ids[:keep]
        yield type(b)(b.times, b.values[:keep], b.mask[:keep], b.labels[:keep], ids)
        n += keep


register_task(TimeSeriesSpec())


def _protocol_words(info: dict) -> str:
    """ "interpolation, 1-min grid": the mode and, where the data are quantized, the grid."""
    words = str(info.get("mode", "interpolation"))
    q = (info.get("datamodule_args") or {}).get("quantization")
    if q:
        words += f", {max(round(float(q) * 60), 1)}-min grid"
    return words
