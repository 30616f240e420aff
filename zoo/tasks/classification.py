"""Image classification task for MDEQ, ODE-Net and any image model in the zoo."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ..models import create_model
from ._base import ZooTask
from ._spec import (
    EvalResult,
    FiniteGuard,
    MetricSpec,
    TaskSpec,
    load_sample,
    register_task,
    stratified_subset,
)

__all__ = ["ImageClassification", "ImageClassificationSpec"]


class ImageClassification(ZooTask):
    """Train/evaluate an image classifier, with the DEQ-specific options.

    Args:
        arch: Entry point name (e.g. ``"mdeq_tiny"``).
        model_args: Constructor overrides (e.g. ``{"in_chans": 1, "solver": {...}}``).
        lr: Peak learning rate.
        weight_decay: Weight decay.
        optimizer: Any optimizer name of ``timm.optim.create_optimizer_v2`` (``adamw``, ...).
        warmup_epochs: Linear warmup epochs of the cosine schedule (timm scheduler).
        min_lr: Final learning rate of the cosine schedule.
        label_smoothing: Cross-entropy label smoothing.
        mixup: Mixup/CutMix alpha (timm ``Mixup``); 0 disables.
        jac_reg_weight: Weight of the Jacobian regularization term (needs
            ``model_args.jac_reg_samples >= 1``).
        pretrain_steps: Steps at the start trained with a shallow unrolled cell (MDEQ's
            "pretraining"), before switching to the equilibrium solve.
        eval_max_iter: Solver budget at validation/test (``None`` = the training solver's).
        bf16: Run the forward in bfloat16 autocast (CPU and GPU); the solver's algebra stays fp32.
        init_from: Start from these weights: a zoo name (``mdeq_tiny.cifar10``), a local
            folder or a Lightning ``.ckpt``. Matching tensors are copied; a resumed run
            (``--ckpt_path``) still restores its own state.
        skip_unconverged: Skip the optimizer step of a batch whose forward solve did not
            converge (a non-finite loss is always skipped); ``train/skipped`` logs it.

    Example:
        >>> from zoo.tasks import ImageClassification
        >>> task = ImageClassification(arch="resnet_small", model_args={"in_chans": 1, "channels": 8})
        >>> task.model.num_classes
        10
    """

    def __init__(
        self,
        arch: str = "mdeq_tiny",
        model_args: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 2.5e-6,
        optimizer: str = "adam",
        warmup_epochs: int = 0,
        min_lr: float = 1e-6,
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        jac_reg_weight: float = 0.0,
        pretrain_steps: int = 0,
        eval_max_iter: int | None = None,
        bf16: bool = False,
        init_from: str | None = None,
        skip_unconverged: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(arch, **(model_args or {}))
        n = self.model.num_classes
        self.metrics = torch.nn.ModuleDict(
            {
                f"{s}_{k}": MulticlassAccuracy(n, top_k=top, average="micro")
                for s in ("val", "test")
                for k, top in (("acc1", 1), ("acc5", min(5, n)))
            }
        )
        self.train_acc = MulticlassAccuracy(n, average="micro")
        self._mixup = None
        if mixup > 0:
            from timm.data import Mixup

            self._mixup = Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=mixup,
                label_smoothing=label_smoothing,
                num_classes=n,
            )
        if eval_max_iter is not None and hasattr(self.model, "set_inference_budget"):
            self.model.set_inference_budget(max_iter=eval_max_iter)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _common_step(self, batch, stage: str) -> Tensor:
        x, y = batch
        if hasattr(self.model, "pretraining"):
            self.model.pretraining = self._pretraining()
        target = y
        if stage == "train" and self._mixup is not None and x.shape[0] % 2 == 0:
            x, target = self._mixup(x, y)
        with self._autocast():
            logits = self.model(x)
        logits = logits.float()
        if target.dim() == 2:
            loss = torch.sum(-target * F.log_softmax(logits, -1), -1).mean()
        else:
            loss = F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)
        bs = x.shape[0]
        if stage == "train":
            loss = self._add_jac_reg(loss, bs)
            aux = getattr(self.model, "aux_loss", None)  # a model's own weighted regularizer
            if isinstance(aux, Tensor):
                loss = loss + aux
                self.log("train/aux_loss", aux.detach(), batch_size=bs)
            self.train_acc(logits.detach(), y)
            self.log(
                "train/acc1",
                self.train_acc,
                prog_bar=True,
                on_step=True,
                on_epoch=False,
                batch_size=bs,
            )
            self.log("train/pretraining", float(self._pretraining()), batch_size=bs)
        else:
            for k in ("acc1", "acc5"):
                m = self.metrics[f"{stage}_{k}"]
                m(logits, y)
                self.log(f"{stage}/{k}", m, prog_bar=k == "acc1", batch_size=bs)
        self.log(f"{stage}/loss", loss.detach(), prog_bar=stage == "train", batch_size=bs)
        self._log_nfe(stage, bs)
        return loss

    def _warmup_steps(self) -> int:
        return self._warmup_from_epochs()


class ImageClassificationSpec(TaskSpec):
    """Top-1/top-5 accuracy on a labelled image set; samples: the first images of each class.

    Example:
        >>> from zoo.tasks import get_task
        >>> spec = get_task("image-classification")
        >>> spec.primary, [m.key for m in spec.metrics]
        ('top1', ['top1', 'top5'])
    """

    name = "image-classification"
    title = "Image Classification"
    pipeline_tag = "image-classification"
    tags = ()  # the family's kind (deep-equilibrium-models, neural-ode) is its table's "tags"
    unit = "image"
    metrics = (
        MetricSpec("top1", "top-1 %", True, "accuracy"),
        MetricSpec("top5", "top-5 %", True, "accuracy"),
    )
    primary = "top1"
    splits = ("test", "val", "train")
    lightning_module = "zoo.tasks.classification:ImageClassification"
    default_sample_size = 100  # images per class, capped by the 1 MB limit

    def eval_batches(self, model, protocol, split, sample, limit, data_dir, batch_size):

        dm = protocol.datamodule_obj(data_dir)
        if sample:
            d = load_sample(protocol)
            x_all, y_all = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
        else:
            x_all, y_all = dm.eval_split(split)
        if limit:
            keep = stratified_subset(y_all, limit)
            x_all, y_all = x_all[keep], y_all[keep]
        return [
            (dm.normalize(x_all[i : i + batch_size]), y_all[i : i + batch_size])
            for i in range(0, len(y_all), batch_size)
        ]

    def evaluate(self, model, batches, protocol, device, clock) -> EvalResult:
        guard = FiniteGuard("output logits")
        from tqdm import tqdm

        n_cls = model.num_classes
        top1 = MulticlassAccuracy(n_cls, average="micro").to(device)
        top5 = MulticlassAccuracy(n_cls, top_k=min(5, n_cls), average="micro").to(device)
        nfe, n = 0, 0
        for x, y in tqdm(batches, desc="eval", unit="batch"):
            x, y = x.to(device), y.to(device)
            with clock:
                logits = model(x)
            guard(logits)
            top1.update(logits, y)
            top5.update(logits, y)
            nfe += model.cost().nfe_forward * len(y)
            n += len(y)
        guard.check(getattr(model, "pretrained_cfg", {}).get("name", type(model).__name__))
        return EvalResult(
            metrics={
                "top1": round(100 * float(top1.compute()), 2),
                "top5": round(100 * float(top5.compute()), 2),
            },
            num_samples=n,
            nfe_mean=round(nfe / n, 2) if n and nfe else None,
            seconds=clock.seconds,
        )

    def build_sample(self, protocol, data_dir, out) -> str:
        import numpy as np

        x, y = protocol.datamodule_obj(data_dir).eval_split("test")
        x, y = x.numpy(), y.numpy()
        per_class = int(protocol.options.get("sample_per_class", self.default_sample_size))
        idx = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(int(y.max()) + 1)])
        idx.sort()
        np.savez_compressed(out, x=x[idx], y=y[idx], source_index=idx)
        return f"{len(idx)} images"

    def options(self, cfg: dict) -> dict:
        return {k: cfg[k] for k in ("sample_per_class",) if k in cfg}

    def smoke_inputs(self, model):
        return (torch.randn(2, model.in_chans, 32, 32),), (2, model.num_classes)

    def subset_note(self, limit: int) -> str:
        return f"a class-stratified subset of {limit:,} images, drawn with seed 0"

    def card_use(self, name: str, facts: dict, info: dict) -> list[str]:
        lines = [
            "x, y = zoo.example_batch(model, 8)  # 8 test images of the shipped sample, normalized",
            "pred = model(x).argmax(-1)  # class ids",
            'print(f"{(pred == y).sum()} of {len(y)} right")',
        ]
        if facts.get("budget"):
            lines += [
                f'fast = zoo.load("{name}", max_iter=4)  # a smaller test-time budget, same weights',
                "print((fast(x).argmax(-1) == pred).float().mean())  # agreement with the shipped budget",
            ]
        return lines

    def card_after_use(self, name: str, facts: dict, info: dict) -> list[str]:
        return [
            f"Inputs: `{info['input_size']}` tensors normalized with mean `{info['mean']}` and "
            f"std `{info['std']}` (`model.pretrained_cfg`); with timm: "
            f'`timm.create_model("{name}", pretrained=True)` after `import zoo`.',
        ]


register_task(ImageClassificationSpec())
