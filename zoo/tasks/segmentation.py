"""Semantic segmentation: per-pixel cross-entropy training (MDEQ, its explicit baseline) and its
task spec (mIoU over every class, background included, and pixel accuracy; per-class IoU and a
figure of test scenes in the card)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from ..models import create_model
from ._base import ZooTask
from ._spec import EvalResult, FiniteGuard, MetricSpec, TaskSpec, load_sample, register_task

__all__ = ["Segmentation", "SegmentationSpec", "check_masks"]

IGNORE_INDEX = 255


def check_masks(x: Tensor, y: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``y`` as int64 masks ``(B, H, W)`` matching images ``x``; a clear error for the label maps
    users get wrong (a shape that is not the image's, a value outside the classes)."""
    if not isinstance(y, Tensor) or y.dim() != 3:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"masks must be (batch, H, W) class-id tensors, got {shape}")
    if y.is_floating_point():
        raise ValueError(f"masks must hold integer class ids, got {y.dtype}")
    if y.shape[0] != x.shape[0] or y.shape[1:] != x.shape[2:]:
        raise ValueError(
            f"masks of shape {tuple(y.shape)} do not match images of shape {tuple(x.shape)}: "
            "each image needs a (H, W) mask of its own size"
        )
    y = y.long()
    bad = (y != ignore_index) & ((y < 0) | (y >= num_classes))
    if bool(bad.any()):
        v = sorted({int(t) for t in y[bad].unique()[:5]})
        raise ValueError(
            f"mask values {v} are outside the {num_classes} classes (0..{num_classes - 1}) and "
            f"are not the ignore index {ignore_index}; map them to a class id or to {ignore_index}"
        )
    return y


def aux_loss(aux_logits: list[Tensor], y: Tensor, ignore_index: int) -> Tensor:
    """Mean cross-entropy of lower-resolution logits against ``y`` (``(B, H, W)`` labels)
    downsampled to each one's size by nearest neighbour (labels and the ignore index are never
    blended)."""
    if not aux_logits:  # an empty batch, or a model without lower branches
        return y.new_zeros((), dtype=torch.float32)
    losses = []
    for logits in aux_logits:
        small = F.interpolate(y[:, None].float(), size=logits.shape[2:], mode="nearest")
        losses.append(
            F.cross_entropy(logits.float(), small[:, 0].long(), ignore_index=ignore_index)
        )
    return torch.stack(losses).mean()


class Segmentation(ZooTask):
    """Train/evaluate a segmentation model: per-pixel cross-entropy with an ignore index.

    Args:
        arch: Entry point (``mdeq_seg_tiny``, ``hrnet_seg_tiny``, ...).
        model_args: Constructor overrides.
        lr: Peak learning rate.
        weight_decay: Weight decay.
        optimizer: timm optimizer name.
        warmup_epochs: Linear warm-up epochs of the cosine schedule.
        min_lr: Final learning rate.
        ignore_index: Label of pixels that count in no loss and no metric (255: Cityscapes).
        jac_reg_weight: Jacobian regularization weight (needs ``jac_reg_samples >= 1``).
        pretrain_steps: Steps trained with the shallow unrolled cell (MDEQ's pretraining).
        eval_max_iter: Solver budget at validation/test (``None``: the training solver's).
        bf16: bfloat16 autocast of the forward (the solver's algebra stays fp32).
        init_from: Start from these weights, e.g. a classification checkpoint
            (``mdeq_tiny.fashion_mnist`` into ``mdeq_seg_tiny``: the stem and the cell match,
            the head keeps its initialization).
        skip_unconverged: Skip the optimizer step of a batch whose solve did not converge.
        aux_weight: Weight of the auxiliary loss at the lower resolutions: the mean
            cross-entropy of each lower branch's own classifier against the labels downsampled
            to its resolution (nearest, so the ignore index survives). Needs a model built with
            ``aux_heads: true``; 0 = off.
    """

    def __init__(
        self,
        arch: str = "mdeq_seg_tiny",
        model_args: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        warmup_epochs: int = 0,
        min_lr: float = 1e-5,
        ignore_index: int = IGNORE_INDEX,
        jac_reg_weight: float = 0.0,
        pretrain_steps: int = 0,
        eval_max_iter: int | None = None,
        bf16: bool = False,
        init_from: str | None = None,
        skip_unconverged: bool = False,
        aux_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(arch, **(model_args or {}))
        if not aux_weight >= 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight!r}")
        if aux_weight > 0 and getattr(self.model.head, "aux", None) is None:
            raise ValueError(
                f"aux_weight={aux_weight} needs auxiliary heads: set model_args.aux_heads: true"
            )
        n = self.model.num_classes
        self.metrics = torch.nn.ModuleDict(
            {
                f"{s}_{k}": m
                for s in ("val", "test")
                for k, m in (
                    ("miou", MulticlassJaccardIndex(n, ignore_index=ignore_index)),
                    (
                        "pixel_acc",
                        MulticlassAccuracy(n, average="micro", ignore_index=ignore_index),
                    ),
                )
            }
        )
        if eval_max_iter is not None and hasattr(self.model, "set_inference_budget"):
            self.model.set_inference_budget(max_iter=eval_max_iter)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _common_step(self, batch, stage: str) -> Tensor:
        x, y = batch
        y = check_masks(x, y, self.model.num_classes, self.hparams.ignore_index)
        if hasattr(self.model, "pretraining"):
            self.model.pretraining = self._pretraining()
        with self._autocast():
            logits = self.model(x)
        logits = logits.float()
        loss = F.cross_entropy(logits, y, ignore_index=self.hparams.ignore_index)
        bs = x.shape[0]
        if stage == "train":
            loss = self._add_jac_reg(loss, bs)
            if self.hparams.get("aux_weight", 0.0) > 0:
                aux = aux_loss(self.model.head.aux_logits, y, self.hparams.ignore_index)
                loss = loss + self.hparams.aux_weight * aux
                self.log("train/aux_loss", aux.detach(), batch_size=bs)
            self.log("train/pretraining", float(self._pretraining()), batch_size=bs)
        else:
            pred = logits.argmax(1)
            for k in ("miou", "pixel_acc"):
                m = self.metrics[f"{stage}_{k}"]
                m(pred, y)
                self.log(f"{stage}/{k}", m, prog_bar=k == "miou", batch_size=bs)
        self.log(f"{stage}/loss", loss.detach(), prog_bar=stage == "train", batch_size=bs)
        self._log_nfe(stage, bs)
        return loss

    def _warmup_steps(self) -> int:
        return self._warmup_from_epochs()


class SegmentationSpec(TaskSpec):
    """mIoU (every class, background included; torchmetrics ``MulticlassJaccardIndex``, pixels
    labelled ``ignore_index`` left out) and pixel accuracy; per-class IoU and a figure of test
    scenes (input, ground truth, prediction) in the card."""

    name = "semantic-segmentation"
    title = "Image Segmentation"
    pipeline_tag = "image-segmentation"
    tags = ()
    unit = "image"
    metrics = (
        MetricSpec("miou", "mIoU %", True, "mean_iou"),
        MetricSpec("pixel_acc", "pixel acc %", True, "accuracy"),
    )
    primary = "miou"
    splits = ("test", "val", "train")
    lightning_module = "zoo.tasks.segmentation:Segmentation"
    default_sample_size = 100  # scenes

    def eval_batches(self, model, protocol, split, sample, limit, data_dir, batch_size):
        dm = protocol.datamodule_obj(data_dir)
        if sample:
            d = load_sample(protocol)
            x_all, y_all = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
        elif hasattr(dm, "eval_loader"):  # large images (Cityscapes): read lazily
            return (
                (dm.normalize(x), y.long()) for x, y in dm.eval_loader(split, batch_size, limit)
            )
        else:
            x_all, y_all = dm.eval_split(split)
        if limit:
            x_all, y_all = x_all[:limit], y_all[:limit]
        return [
            (dm.normalize(x_all[i : i + batch_size]), y_all[i : i + batch_size].long())
            for i in range(0, len(y_all), batch_size)
        ]

    def evaluate(self, model, batches, protocol, device, clock) -> EvalResult:
        guard = FiniteGuard("output logits")
        from tqdm import tqdm

        n_cls = model.num_classes
        ignore = int(protocol.options.get("ignore_index", IGNORE_INDEX))
        iou = MulticlassJaccardIndex(n_cls, ignore_index=ignore, average="none").to(device)
        acc = MulticlassAccuracy(n_cls, average="micro", ignore_index=ignore).to(device)
        present = torch.zeros(n_cls, dtype=torch.bool, device=device)
        nfe, n, scored = 0, 0, 0
        for x, y in tqdm(batches, desc="eval", unit="batch"):
            x = x.to(device)
            y = check_masks(x, y.to(device), n_cls, ignore)
            scored += int((y != ignore).sum())
            with clock:
                logits = model(x)
            guard(logits)
            pred = logits.argmax(1)
            iou.update(pred, y)
            acc.update(pred, y)
            valid = y != ignore
            present |= torch.bincount(y[valid], minlength=n_cls)[:n_cls] > 0
            present |= torch.bincount(pred[valid], minlength=n_cls)[:n_cls] > 0
            nfe += model.cost().nfe_forward * len(y)
            n += len(y)
        if n and not scored:
            raise ValueError(
                f"no scored pixels: every pixel of the {n} mask(s) is the ignore index {ignore}, "
                "so mIoU and pixel accuracy are undefined (not 0); check the masks' labels"
            )
        per_class = iou.compute()
        names = protocol.options.get("class_names") or [str(c) for c in range(n_cls)]
        class_iou = {
            str(names[c]): round(100 * float(per_class[c]), 2) for c in range(n_cls) if present[c]
        }
        miou = 100 * float(per_class[present].mean()) if bool(present.any()) else 0.0
        guard.check(getattr(model, "pretrained_cfg", {}).get("name", type(model).__name__))
        return EvalResult(
            metrics={
                "miou": round(miou, 2),
                "pixel_acc": round(100 * float(acc.compute()), 2),
                "class_iou": class_iou,
            },
            num_samples=n,
            nfe_mean=round(nfe / n, 2) if n and nfe else None,
            seconds=clock.seconds,
        )

    def options(self, cfg: dict) -> dict:
        """The class names and ignore index: the data module's own (a registered class)."""
        from ..data import datamodule_class

        cls = datamodule_class(cfg["datamodule"])
        out = {"ignore_index": int(getattr(cls, "ignore_index", IGNORE_INDEX))}
        if getattr(cls, "class_names", None):
            out["class_names"] = list(cls.class_names)
        return out

    def protocol_note(self, protocol) -> str:
        return (
            "mIoU: mean over the classes present in the labels or predictions (background "
            "included) of the per-class IoU accumulated over the whole split; pixels labelled "
            f"{protocol.options.get('ignore_index', IGNORE_INDEX)} are ignored"
        )

    def smoke_inputs(self, model):
        return (torch.randn(2, model.in_chans, 32, 32),), (2, model.num_classes, 32, 32)

    def build_sample(self, protocol, data_dir, out) -> str:
        import numpy as np

        x, y = protocol.datamodule_obj(data_dir).eval_split("test")
        k = self.default_sample_size
        np.savez_compressed(out, x=x[:k].numpy(), y=y[:k].numpy())
        return f"{min(k, len(y))} scenes"

    def card_use(self, name: str, facts: dict, info: dict) -> list[str]:
        return [
            "x, y = zoo.example_batch(model, 4)  # 4 test scenes of the shipped sample, normalized",
            "mask = model(x).argmax(1)  # (4, H, W) class ids",
            'print(f"pixel accuracy {(mask == y).float().mean():.1%}")',
        ]

    def card_after_use(self, name: str, facts: dict, info: dict) -> list[str]:
        names = self.protocol(info).options.get("class_names")
        lines = [
            f"Inputs: `{info['input_size']}` tensors normalized with mean `{info['mean']}` and "
            f"std `{info['std']}` (`model.pretrained_cfg`)."
        ]
        if names:
            lines.append("Classes: " + ", ".join(f"{i} {n}" for i, n in enumerate(names)) + ".")
        return lines

    def card_results(self, rows: list[dict], main: dict, device: str) -> list[str]:
        lines = super().card_results(rows, main, device)
        per = main["metrics"].get("class_iou") or {}
        if per:
            lines += ["", "Per-class IoU % (the shipped setting):", ""]
            lines.append("| " + " | ".join(per) + " |")
            lines.append("|---" * len(per) + "|")
            lines.append("| " + " | ".join(f"{v:g}" for v in per.values()) + " |")
        return lines

    def figures(self, name, model, rows, info, out_dir, data_dir=None):
        png = out_dir / f"{name}.scenes.png"
        _plot_scenes(name, model, self.protocol(info), png, data_dir)
        return [("test scenes: input, ground truth, prediction", png)]


def _plot_scenes(name, model, protocol, out, data_dir=None, n: int = 8) -> None:
    """Input / ground truth / prediction of the first ``n`` test scenes (the shipped sample when
    the data is not at hand)."""
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    dm = protocol.datamodule_obj(data_dir)
    try:
        x, y = dm.eval_split("test")
    except FileNotFoundError:
        d = load_sample(protocol)
        x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    x, y = x[:n], y[:n].long()
    with torch.no_grad():
        pred = model(dm.normalize(x)).argmax(1)
    k = model.num_classes
    colors = np.array(
        [(0, 0, 0)] + [tuple(c[:3]) for c in _tab_colors(k - 1)] + [(1, 1, 1)], dtype=float
    )
    cmap = ListedColormap(colors)
    fig = Figure(figsize=(1.3 * n, 4.2), dpi=100)
    axes = fig.subplots(3, n, squeeze=False)
    for j in range(n):
        img = x[j].float().permute(1, 2, 0).squeeze(-1).numpy()
        axes[0, j].imshow(img, cmap="gray" if img.ndim == 2 else None)
        for r, m in ((1, y[j]), (2, pred[j])):
            m = m.clone()
            m[m == protocol.options.get("ignore_index", IGNORE_INDEX)] = k  # white
            axes[r, j].imshow(m.numpy(), cmap=cmap, vmin=0, vmax=k, interpolation="nearest")
        for r in range(3):
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
    for r, t in enumerate(("input", "ground truth", "prediction")):
        axes[r, 0].set_ylabel(t, fontsize=8)
    names = protocol.options.get("class_names")
    if names:
        from matplotlib.patches import Patch

        handles = [Patch(color=colors[i], label=f"{i} {names[i]}") for i in range(len(names))]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(names), 6), fontsize=7)
    fig.suptitle(name, fontsize=9)
    fig.tight_layout(rect=(0, 0.1 if names else 0, 1, 1))
    fig.savefig(out)


def _tab_colors(k: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


register_task(SegmentationSpec())
