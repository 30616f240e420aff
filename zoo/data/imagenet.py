"""ImageNet-1k in the ImageFolder layout (local only: ``<data_dir>/imagenet/{train,val}/<wnid>/*``).

Transforms come from timm (``create_transform``: RandomResizedCrop, flip, optional
RandAugment ``auto_augment="rand-m9-mstd0.5"``; resize + center crop for evaluation).
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from ._common import data_root, missing

__all__ = ["ImageNetDataModule"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetDataModule(pl.LightningDataModule):
    """ImageNet from an ImageFolder tree.

    Args:
        data_dir: Root holding ``imagenet/`` (default ``$ZOO_DATA_DIR``).
        img_size: Training/eval crop size.
        batch_size: Per-device batch size.
        num_workers: DataLoader workers.
        auto_augment: timm auto-augment policy string (e.g. ``"rand-m9-mstd0.5"``) or None.

    Example:
        >>> from zoo.data import ImageNetDataModule
        >>> ImageNetDataModule(data_dir="/nonexistent", img_size=160).img_size
        160
    """

    mean, std, name, num_classes = IMAGENET_MEAN, IMAGENET_STD, "imagenet", 1000

    def __init__(
        self,
        data_dir: str | None = None,
        img_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 8,
        auto_augment: str | None = None,
        val_size: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.img_size = img_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.auto_augment = auto_augment

    @property
    def root(self) -> Path:
        return data_root(self.data_dir) / "imagenet"

    def _folder(self, split: str, train: bool):
        from timm.data import create_transform
        from torchvision.datasets import ImageFolder

        d = self.root / split
        if not d.is_dir():
            raise missing(
                f"ImageNet {split} split",
                d,
                "Download ILSVRC2012 from image-net.org and arrange it as "
                "imagenet/{train,val}/<wnid>/*.JPEG under ZOO_DATA_DIR.",
            )
        tf = create_transform(
            self.img_size,
            is_training=train,
            auto_augment=self.auto_augment if train else None,
            mean=self.mean,
            std=self.std,
        )
        return ImageFolder(str(d), transform=tf)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._folder("train", True) if stage in (None, "fit") else None
        self.val_set = self._folder("val", False)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=True,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, self.batch_size, num_workers=self.num_workers)

    test_dataloader = val_dataloader
