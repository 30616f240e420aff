"""MDEQ semantic segmentation, and the explicit multiscale network it is weighed against.

Bai, Koltun, Kolter. "Multiscale Deep Equilibrium Models". NeurIPS 2020 (Cityscapes).

- ``MDEQSegmenter``: the MDEQ backbone (stem, input injection, one weight-tied multiscale cell
  solved to its fixed point) with the paper's segmentation head: every resolution upsampled to
  the finest, concatenated, a 1x1 conv-BN-ReLU and a per-pixel 1x1 classifier, upsampled to the
  input size.
- ``HRNetSegmenter``: the baseline a user would weigh it against, an explicit HRNet-style
  network built from the same blocks: ``depth`` multiscale cells with their own weights, applied
  once each, and the same stem and head. ``hrnet_seg_tiny`` matches ``mdeq_seg_tiny``'s
  parameter count (4 cells of expansion 1 against one of expansion 5: +1.2%).

Sizes: ``mdeq_seg_tiny`` is ``mdeq_tiny``'s backbone (2 x 24 channels), so a classification
checkpoint initializes it (``init_from: mdeq_tiny.fashion_mnist``); ``mdeq_seg_small`` and
``mdeq_seg_xl`` follow the official Cityscapes configs (locuslab/mdeq
``experiments/cityscapes/seg_mdeq_{SMALL,XL}.yaml``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..solvers import FixedPointSolver, GradMode
from ._base import ZooModel, check_images
from ._mdeq_cell import MDEQCell
from ._registry import register_model, register_pretrained
from .mdeq import _MDEQ_PAPER, DEFAULT_GRAD, DEFAULT_SOLVER, _MDEQBackbone, stem_and_injection

__all__ = ["MDEQSegmenter", "HRNetSegmenter", "mdeq_seg_tiny", "mdeq_seg_small", "mdeq_seg_xl"]
__all__ += ["hrnet_seg_tiny"]


class _SegHead(nn.Module):
    """All resolutions upsampled to the finest and concatenated, 1x1 conv-BN-ReLU, 1x1 classifier,
    bilinear upsampling to the input size.

    With ``aux=True`` each lower-resolution branch also gets its own 1x1 classifier; in
    training mode its logits (at the branch's resolution) are kept in ``aux_logits`` for an
    auxiliary loss (:class:`zoo.tasks.Segmentation`'s ``aux_weight``). Inference never uses them.
    """

    def __init__(self, channels: tuple[int, ...], num_classes: int, aux: bool = False) -> None:
        super().__init__()
        total = sum(channels)
        self.body = nn.Sequential(
            nn.Conv2d(total, total, 1),
            nn.BatchNorm2d(total),
            nn.ReLU(),
            nn.Conv2d(total, num_classes, 1),
        )
        self.aux = (
            nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in channels[1:]) if aux else None
        )
        self.aux_logits: list[Tensor] = []

    def forward(self, z: list[Tensor], size) -> Tensor:
        h, w = z[0].shape[2:]
        up = [F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False) for t in z[1:]]
        y = self.body(torch.cat([z[0], *up], 1))
        self.aux_logits = (
            [cls(t) for cls, t in zip(self.aux, z[1:])] if self.aux is not None and self.training
            else []
        )  # fmt: skip
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def _check_seg(channels, num_classes) -> None:
    if not 1 <= len(channels) <= 4:
        raise ValueError(f"channels must list 1-4 branches, got {list(channels)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")


class MDEQSegmenter(_MDEQBackbone):
    """MDEQ semantic segmentation: ``(B, C, H, W)`` images to ``(B, num_classes, H, W)`` logits.

    Args:
        num_classes: Segmentation classes (the ignore label is not one of them).
        in_chans: Input channels.
        channels: Channels of each branch, finest first.
        expansion: Width multiplier in the residual blocks.
        groups: GroupNorm groups.
        dropout: Variational dropout in the cell.
        wnorm: Weight normalization.
        downsample: Stride-2 convs in the stem (2 in the paper: the equilibrium at 1/4 scale).
        solver: Forward solver.
        grad: Gradient mode.
        jac_reg_samples: Hutchinson probes for Jacobian regularization.
        pretrain_depth: Unrolled depth while ``pretraining``.
        aux_heads: A 1x1 classifier on each lower-resolution branch, for an auxiliary loss in
            training (the task's ``aux_weight``); unused at inference.

    Example:
        >>> import torch, zoo
        >>> model = zoo.create_model("mdeq_seg_tiny").eval()
        >>> with torch.no_grad():
        ...     logits = model(torch.randn(2, 1, 64, 64))
        >>> logits.shape, logits.argmax(1).shape
        (torch.Size([2, 11, 64, 64]), torch.Size([2, 64, 64]))
    """

    arch = "mdeq_seg"
    description = "A Multiscale Deep Equilibrium Model for semantic segmentation"

    def __init__(
        self,
        num_classes: int = 19,
        in_chans: int = 3,
        channels: tuple[int, ...] = (24, 48, 96, 192),
        expansion: int = 5,
        groups: int = 8,
        dropout: float = 0.0,
        wnorm: bool = True,
        downsample: int = 2,
        solver: FixedPointSolver | dict[str, Any] | None = None,
        grad: GradMode | dict[str, Any] | None = None,
        jac_reg_samples: int = 0,
        pretrain_depth: int = 10,
        aux_heads: bool = False,
    ) -> None:
        super().__init__()
        solver = solver or dict(DEFAULT_SOLVER)
        grad = grad or dict(DEFAULT_GRAD)
        self._capture(locals())
        _check_seg(channels, num_classes)
        self._build_backbone(
            in_chans, tuple(channels), expansion, groups, dropout, wnorm, downsample, solver,
            grad, jac_reg_samples, pretrain_depth,
        )  # fmt: skip
        self.num_classes = num_classes
        self.head = _SegHead(tuple(channels), num_classes, aux=bool(aux_heads))

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and x.dim() == 4 and x.shape[0] == 0:
            self._check_input(x)
            return x.new_zeros(0, self.num_classes, *x.shape[2:])
        return self.head(self.equilibrium(x), x.shape[2:])


class HRNetSegmenter(ZooModel):
    """Explicit multiscale segmentation network: MDEQ's stem, ``depth`` multiscale cells with
    their own weights applied once each (``z_{k+1} = f_k(z_k, x)`` from ``z_0 = 0``), and MDEQ's
    segmentation head. No solver: its depth is fixed, and it has no test-time budget.

    Args:
        num_classes: Segmentation classes.
        in_chans: Input channels.
        channels: Channels of each branch, finest first.
        depth: Cells (not weight-tied).
        expansion: Width multiplier in each cell's residual blocks.
        groups: GroupNorm groups.
        dropout: Dropout in the cells.
        wnorm: Weight normalization.
        downsample: Stride-2 convs in the stem.
        aux_heads: A 1x1 classifier on each lower-resolution branch (training only), as in
            :class:`MDEQSegmenter`.
    """

    arch = "hrnet_seg"
    description = "An explicit multiscale (HRNet-style) segmentation network"

    def __init__(
        self,
        num_classes: int = 19,
        in_chans: int = 3,
        channels: tuple[int, ...] = (24, 24),
        depth: int = 4,
        expansion: int = 1,
        groups: int = 8,
        dropout: float = 0.0,
        wnorm: bool = True,
        downsample: int = 1,
        aux_heads: bool = False,
    ) -> None:
        super().__init__()
        self._capture(locals())
        _check_seg(channels, num_classes)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        self.stem, self.inject = stem_and_injection(in_chans, channels[0], downsample)
        self.cells = nn.ModuleList(
            MDEQCell(tuple(channels), expansion, groups, dropout, wnorm) for _ in range(depth)
        )
        self.head = _SegHead(tuple(channels), num_classes, aux=bool(aux_heads))
        self.in_chans, self.num_classes, self.channels = in_chans, num_classes, tuple(channels)
        self._down = 2 ** (len(channels) - 1) * 2 ** min(downsample, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = check_images(self, x, multiple=self._down)
        if x.shape[0] == 0:
            return x.new_zeros(0, self.num_classes, *x.shape[2:])
        inj = self.inject(self.stem(x))
        b, _, h, w = inj.shape
        z = [inj.new_zeros(b, c, h >> i, w >> i) for i, c in enumerate(self.channels)]
        xs = [inj] + [None] * (len(z) - 1)
        for cell in self.cells:
            cell.reset_dropout(z)
            z = cell(z, xs)
        return self.head(z, x.shape[2:])


@register_model(family="mdeq", task="semantic-segmentation", default_tag="fashion_scenes")
def mdeq_seg_tiny(**kwargs) -> MDEQSegmenter:
    """``mdeq_tiny``'s backbone (2 x 24 channels, expansion 5) for 64x64 grayscale scenes: one
    stride-2 stem conv, the equilibrium at 32x32 and 16x16; 11 classes (fashion_scenes)."""
    cfg = dict(channels=(24, 24), in_chans=1, num_classes=11, downsample=1, dropout=0.0)
    return MDEQSegmenter(**{**cfg, **kwargs})


@register_model(family="mdeq", task="semantic-segmentation")
def mdeq_seg_small(**kwargs) -> MDEQSegmenter:
    """Cityscapes SMALL: 4 branches 32/64/128/256, expansion 4, dropout 0.02, 19 classes."""
    cfg = dict(channels=(32, 64, 128, 256), expansion=4, dropout=0.02, num_classes=19)
    return MDEQSegmenter(**{**cfg, **kwargs})


@register_model(family="mdeq", task="semantic-segmentation")
def mdeq_seg_xl(**kwargs) -> MDEQSegmenter:
    """Cityscapes XL: 4 branches 88/176/352/704, expansion 6, dropout 0.04, 19 classes."""
    cfg = dict(channels=(88, 176, 352, 704), expansion=6, dropout=0.04, num_classes=19)
    return MDEQSegmenter(**{**cfg, **kwargs})


@register_model(family="mdeq", task="semantic-segmentation", default_tag="fashion_scenes")
def hrnet_seg_tiny(**kwargs) -> HRNetSegmenter:
    """The explicit baseline of ``mdeq_seg_tiny``: 4 cells of expansion 1 (same parameters +1.2%)."""
    cfg = dict(channels=(24, 24), depth=4, expansion=1, in_chans=1, num_classes=11, downsample=1)
    return HRNetSegmenter(**{**cfg, **kwargs})


_SCENES = dict(
    task="semantic-segmentation",
    dataset="fashion_scenes",
    datamodule="fashion_scenes",
    input_size=[1, 64, 64],
    mean=[0.2860],
    std=[0.3530],
    license="apache-2.0",
)
_CITYSCAPES_PAPER = [
    {
        "metric": "mIoU",
        "value": 75.1,
        "source": "MDEQ paper, MDEQ-small (7.8M parameters), Cityscapes val, single scale",
    },
    {
        "metric": "mIoU",
        "value": 80.3,
        "source": "MDEQ paper, MDEQ-XL (70.9M parameters), Cityscapes val, single scale",
    },
]

register_pretrained(
    {
        "mdeq_seg_tiny.fashion_scenes": dict(
            **{
                **_SCENES,
            },
            tags=["deep-equilibrium-models"],
            paper=_MDEQ_PAPER,
            recipe="recipes/mdeq_seg/mdeq_seg_tiny.fashion_scenes.yaml",  # with gpu_pair.py
        ),
        "hrnet_seg_tiny.fashion_scenes": dict(
            **{
                **_SCENES,
            },
            tags=[],
            paper="Baseline of " + _MDEQ_PAPER + " (HRNet-style: Wang et al., TPAMI 2020)",
            recipe="recipes/mdeq_seg/hrnet_seg_tiny.fashion_scenes.yaml",  # with gpu_pair.py
        ),
    }
)
