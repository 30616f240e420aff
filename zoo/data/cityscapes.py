"""Cityscapes (Cordts et al. 2016) semantic segmentation, 19 train ids, in torchvision's layout.

Files (a registration-walled dataset: local only, never downloaded)::

    <data_dir>/cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <data_dir>/cityscapes/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Label ids are mapped to the 19 train ids with torchvision's ``Cityscapes.classes`` table; every
other id (and the license plate) becomes the ignore index 255. The paper's protocol (MDEQ,
following HRNet): train on the 2,975 fine ``train`` images with random scaling (0.5-2x), a random
crop (1024x512 for SMALL, 1024x768 for XL; padded with the ignore label where the scaled image is
smaller), and a horizontal flip; evaluate the 500 ``val`` images at full 2048x1024 resolution,
single scale, no flip. The zoo's ``test`` split is that ``val`` set (the official test labels
are not public), as in the paper.
"""

from __future__ import annotations

import random
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ._common import check_positive, data_root, missing
from ._image import normalize_images
from ._registry import register_datamodule

__all__ = ["CityscapesDataModule", "CITYSCAPES_CLASSES", "label_lut"]

IGNORE_INDEX = 255


def _classes():
    from torchvision.datasets import Cityscapes

    return Cityscapes.classes


def label_lut() -> np.ndarray:
    """``lut[label_id] = train_id`` (255 for ignored ids), a (256,) uint8 table."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for c in _classes():
        if 0 <= c.id < 256 and 0 <= c.train_id < 255:
            lut[c.id] = c.train_id
    return lut


CITYSCAPES_CLASSES = tuple(
    c.name for c in sorted(_classes(), key=lambda c: c.train_id) if 0 <= c.train_id < 255
)


def _pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise missing(
            "Cityscapes",
            img_dir,
            "Cityscapes is registration-walled: download leftImg8bit_trainvaltest.zip and "
            "gtFine_trainvaltest.zip from cityscapes-dataset.com, extract both into "
            "<data_dir>/cityscapes/ and set ZOO_DATA_DIR (or data_dir) to <data_dir>.",
        )
    pairs = []
    for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        gt = root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"
        if not gt.is_file():
            raise missing("Cityscapes fine labels", gt, "extract gtFine_trainvaltest.zip too.")
        pairs.append((img, gt))
    if not pairs:
        raise missing("Cityscapes images", img_dir / "<city>" / "*_leftImg8bit.png", "")
    return pairs


class _CityscapesSet(Dataset):
    """(uint8 image (3, H, W), uint8 train-id mask (H, W)) pairs, augmented when ``train``."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        train: bool,
        crop: tuple[int, int],
        scale: tuple[float, float],
        flip: bool,
    ) -> None:
        self.pairs, self.train, self.crop, self.scale, self.flip = pairs, train, crop, scale, flip
        self.lut = label_lut()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        img_path, gt_path = self.pairs[i]
        img = Image.open(img_path).convert("RGB")
        gt = Image.open(gt_path)
        if self.train:
            img, gt = self._augment(img, gt)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        y = torch.from_numpy(self.lut[np.asarray(gt, dtype=np.uint8)])
        if self.train:
            x, y = self._crop(x, y)
        return x.contiguous(), y

    def _augment(self, img, gt):
        from PIL import Image

        f = random.uniform(*self.scale)
        w, h = img.size
        size = (max(int(w * f + 0.5), 1), max(int(h * f + 0.5), 1))
        img = img.resize(size, Image.BILINEAR)
        gt = gt.resize(size, Image.NEAREST)
        if self.flip and random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
            gt = gt.transpose(Image.FLIP_LEFT_RIGHT)
        return img, gt

    def _crop(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        ch, cw = self.crop
        _, h, w = x.shape
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:  # pad: black pixels, ignored labels
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), value=0)
            y = torch.nn.functional.pad(y, (0, pw, 0, ph), value=IGNORE_INDEX)
        _, h, w = x.shape
        top, left = random.randint(0, h - ch), random.randint(0, w - cw)
        return x[:, top : top + ch, left : left + cw], y[top : top + ch, left : left + cw]


class CityscapesDataModule(pl.LightningDataModule):
    """Cityscapes fine annotations, 19 classes (ignore index 255), the MDEQ paper's augmentation.

    Args:
        data_dir: Folder holding ``cityscapes/`` (default ``$ZOO_DATA_DIR``).
        batch_size: Training crops per batch (per device under DDP).
        eval_batch_size: Full-resolution validation images per batch.
        crop_size: Training crop ``[height, width]`` (the paper: 512x1024 SMALL, 768x1024 XL).
        scale_range: Random rescaling factors of the training images.
        augment: Random scale, crop and flip in training (off: full images, batch 1).
        num_workers: DataLoader workers (PNG decoding dominates: use several).
        limit_train: Use only the first N training images (smoke tests).
    """

    name = "cityscapes"
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    num_classes = len(CITYSCAPES_CLASSES)
    class_names = CITYSCAPES_CLASSES
    ignore_index = IGNORE_INDEX
    input_size = (3, 1024, 2048)
    eval_splits = ("test", "val", "train")

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 3,
        eval_batch_size: int = 1,
        crop_size: list[int] | tuple[int, int] = (512, 1024),
        scale_range: list[float] | tuple[float, float] = (0.5, 2.0),
        augment: bool = True,
        num_workers: int = 4,
        limit_train: int | None = None,
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, batch_size=batch_size, eval_batch_size=eval_batch_size)
        check_positive(type(self).__name__, 0, num_workers=num_workers)
        if len(crop_size) != 2 or any(int(c) < 1 for c in crop_size):
            raise ValueError(f"crop_size must be [height, width] > 0, got {list(crop_size)}")
        lo, hi = (float(s) for s in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(
                f"scale_range must be [low, high] with 0 < low <= high, got {[lo, hi]}"
            )
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.crop = (int(crop_size[0]), int(crop_size[1]))
        self.scale = (lo, hi)
        self.augment, self.num_workers, self.limit_train = augment, num_workers, limit_train

    def _root(self) -> Path:
        return data_root(self.data_dir) / "cityscapes"

    def _set(self, split: str, train: bool) -> _CityscapesSet:
        pairs = _pairs(self._root(), split)
        if train and self.limit_train:
            pairs = pairs[: self.limit_train]
        return _CityscapesSet(pairs, train and self.augment, self.crop, self.scale, True)

    def prepare_data(self) -> None:
        _pairs(self._root(), "train")
        _pairs(self._root(), "val")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self._set("train", True),
            batch_size=self.batch_size if self.augment else 1,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self._set("val", False), batch_size=self.eval_batch_size, num_workers=self.num_workers
        )

    test_dataloader = val_dataloader

    def eval_loader(self, split: str, batch_size: int, limit: int | None = None):
        """Batches ``(uint8 images, uint8 masks)`` of ``test``/``val`` (the official val set) or
        ``train``, unaugmented, at most ``limit`` images: read lazily, never all in memory."""
        if split not in self.eval_splits:
            raise ValueError(f"unknown split {split!r} for cityscapes: use test, val or train")
        ds = self._set("train" if split == "train" else "val", False)
        if limit:
            ds = torch.utils.data.Subset(ds, range(min(limit, len(ds))))
        return DataLoader(ds, batch_size=batch_size, num_workers=self.num_workers)

    def eval_split(self, split: str) -> tuple[Tensor, Tensor]:
        """All of ``split`` in memory (small subsets and tests; use :meth:`eval_loader`)."""
        xs, ys = zip(*self.eval_loader(split, 1))
        return torch.cat(xs), torch.cat(ys)

    def normalize(self, x: Tensor) -> Tensor:
        """uint8-range pixels (0-255) to floats normalized with ImageNet's mean and std."""
        return normalize_images(x, self.mean, self.std)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        return self.normalize(x), y.long()

    def dataset_info(self) -> dict:
        return {
            "dataset": self.name,
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": list(self.input_size),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
        }


register_datamodule(CityscapesDataModule)
