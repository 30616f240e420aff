"""Image classification task for MDEQ (and any image model in the zoo)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ..models import create_model
from ._base import ZooTask

__all__ = ["ImageClassification"]


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

    def _pretraining(self) -> bool:
        return self.training and self.global_step < self.hparams.pretrain_steps

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
            jac = getattr(self.model, "jac_loss", None)
            if self.hparams.jac_reg_weight > 0 and jac is not None and not self._pretraining():
                loss = loss + self.hparams.jac_reg_weight * jac
                self.log("train/jac_loss", jac.detach(), batch_size=bs)
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
        return loss

    def _warmup_steps(self) -> int:
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        return self.hparams.warmup_epochs * max(
            int(self.trainer.estimated_stepping_batches // epochs), 1
        )
