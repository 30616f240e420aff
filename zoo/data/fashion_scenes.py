"""Fashion scenes: a per-pixel labelled layout of real Fashion-MNIST images (segmentation).

No real per-pixel labelled image set is obtainable offline, so the zoo's trainable segmentation
benchmark is built from real photographs of garments, deterministically:

- a 64x64 black canvas receives 2 to 5 Fashion-MNIST items, each rescaled by a factor drawn
  uniformly from [0.6, 1.4] (17 to 39 pixels, bilinear with antialiasing), at a uniformly random
  position fully inside the canvas; later items are pasted over earlier ones, so they overlap;
- an item covers the pixels where its rescaled intensity is at least 26 (0.1 of full scale);
  there the canvas takes the item's pixel, and the label the item's class + 1 (1..10);
  everywhere else the label is 0 (background). Label ``k`` is Fashion-MNIST class ``k - 1``;
- train scenes use train-split items only, test scenes test-split items only: 20,000 train
  scenes (seed 1; ``val_size`` of them held out for validation, seed ``seed``) and 2,000 test
  scenes (seed 2).

The scenes are generated once from the IDX files and cached (``$ZOO_CACHE_DIR``), keyed to the
source files and the generation settings.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._common import cache_root, cached_file, check_positive, data_root
from ._image import InMemoryImageDataModule
from ._registry import register_datamodule
from .fashion_mnist import _FILES, FASHION_CLASSES, FashionMNISTDataModule, read_idx

__all__ = ["FashionScenesDataModule", "make_scenes", "SCENE_CLASSES"]

SCENE_CLASSES = ("background", *FASHION_CLASSES)
CANVAS = 64
THRESHOLD = 26  # uint8 intensity at or above which an item covers a pixel (0.1 of 255)
SPLITS = {"train": (20_000, 1), "test": (2_000, 2)}  # scenes, seed
IGNORE_INDEX = 255


def make_scenes(
    items: np.ndarray,
    labels: np.ndarray,
    n: int,
    seed: int,
    canvas: int = CANVAS,
    per_scene: tuple[int, int] = (2, 5),
    scale: tuple[float, float] = (0.6, 1.4),
    threshold: int = THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scenes ``(uint8 images (n, 1, canvas, canvas), uint8 masks (n, canvas, canvas))``
    from ``items`` (uint8 ``(N, 28, 28)``) and their class ``labels``; the same for a seed."""
    import torch.nn.functional as F

    check_positive("make_scenes", n=n)
    rng = np.random.RandomState(seed)
    images = np.zeros((n, canvas, canvas), np.uint8)
    masks = np.zeros((n, canvas, canvas), np.uint8)
    side = items.shape[-1]
    for i in range(n):
        for _ in range(rng.randint(per_scene[0], per_scene[1] + 1)):
            j = rng.randint(len(items))
            s = int(round(side * rng.uniform(*scale)))
            s = min(max(s, 2), canvas)
            y0, x0 = rng.randint(0, canvas - s + 1), rng.randint(0, canvas - s + 1)
            src = torch.tensor(items[j], dtype=torch.float32)[None, None]
            item = F.interpolate(src, size=(s, s), mode="bilinear", antialias=True)
            item = item[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()
            cover = item >= threshold
            images[i, y0 : y0 + s, x0 : x0 + s][cover] = item[cover]
            masks[i, y0 : y0 + s, x0 : x0 + s][cover] = labels[j] + 1
    return images[:, None], masks


@register_datamodule
class FashionScenesDataModule(InMemoryImageDataModule):
    """Fashion scenes: 64x64 grayscale canvases of 2-5 Fashion-MNIST items, 11 classes per pixel
    (0 = background, ``k`` = Fashion-MNIST class ``k - 1``); see the module docstring.

    Training augmentation is a horizontal flip of image and mask together (``augment``).

    Args:
        num_train: Train scenes generated (20,000 by default; ``val_size`` of them held out).
        num_test: Test scenes generated (2,000).
        **kwargs: See :class:`InMemoryImageDataModule` (``val_size`` defaults to 1,000 here).
    """

    mean, std, name = FashionMNISTDataModule.mean, FashionMNISTDataModule.std, "fashion_scenes"
    input_size = (1, CANVAS, CANVAS)
    num_classes = len(SCENE_CLASSES)
    class_names = SCENE_CLASSES
    ignore_index = IGNORE_INDEX
    pad = 0

    def __init__(
        self,
        *args,
        num_train: int = SPLITS["train"][0],
        num_test: int = SPLITS["test"][0],
        val_size: int = 1000,
        **kwargs,
    ) -> None:
        check_positive(type(self).__name__, num_train=num_train, num_test=num_test)
        super().__init__(*args, val_size=val_size, **kwargs)
        if val_size >= num_train:
            raise ValueError(
                f"val_size={val_size} holds out every one of the {num_train} train scenes; "
                "lower val_size or raise num_train"
            )
        self.num_train, self.num_test = num_train, num_test

    def _load(self, split: str) -> tuple[Tensor, Tensor]:
        from ._common import missing

        n, seed = (self.num_train if split == "train" else self.num_test), SPLITS[split][1]
        root = data_root(self.data_dir) / "fashion-mnist"
        sources = [root / f for f in _FILES[split]]
        how = (
            "Set ZOO_DATA_DIR to the folder holding fashion-mnist/ (../shared/data here): the "
            "scenes are generated from the Fashion-MNIST IDX files."
        )
        folder = cache_root() / "data" / "fashion_scenes"
        stem = f"{split}-n{n}-seed{seed}-t{THRESHOLD}"
        path = cached_file(folder, stem, ".npz", sources, "Fashion-MNIST", how)
        if not path.is_file():
            if not all(p.is_file() for p in sources):
                raise missing("Fashion-MNIST", sources[0], how)
            x, y = make_scenes(read_idx(sources[0]), read_idx(sources[1]), n, seed)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + ".tmp.npz")
            np.savez_compressed(tmp, x=x, y=y)
            tmp.replace(path)  # never a half-written cache
        with np.load(path) as d:
            return torch.from_numpy(d["x"]), torch.from_numpy(d["y"])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if self.trainer is not None and self.trainer.training and self.augment:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            y = torch.where(flip[:, None, None], y.flip(2), y)
        return self.normalize(x), y.long()

    def dataset_info(self) -> dict:
        return {**super().dataset_info(), "class_names": list(self.class_names)}
