"""Multiscale Deep Equilibrium Models (MDEQ) for classification (segmentation: ``mdeq_seg.py``).

Bai, Koltun, Kolter. "Multiscale Deep Equilibrium Models". NeurIPS 2020.
https://arxiv.org/abs/2006.08656

Sizes follow the official configs (locuslab/mdeq ``experiments/``): ``mdeq_tiny`` is the
CIFAR-10 TINY model (2 branches of 24 channels, ~170K parameters); ``mdeq_small``,
``mdeq_large`` and ``mdeq_xl`` are the paper's ImageNet/Cityscapes sizes (GPU recipes).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..nn import DEQ
from ..solvers import FixedPointSolver, GradMode, get_grad, get_solver
from ._base import ImplicitModelMixin, ZooModel, check_images
from ._classifier import TimmClassifier
from ._classifier import check_rate as _check_rate
from ._mdeq_cell import MDEQCell
from ._registry import register_model, register_pretrained

__all__ = ["MDEQClassifier"]

DEFAULT_SOLVER = {"name": "anderson", "m": 5, "tol": 1e-3, "max_iter": 22, "stop_mode": "rel"}
DEFAULT_GRAD = {"name": "implicit", "tol": 1e-3, "max_iter": 24}


class _Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck (x4 channels) of the classification head."""

    def __init__(self, cin: int, planes: int) -> None:
        super().__init__()
        cout = 4 * planes
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(),
            nn.Conv2d(planes, planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(),
            nn.Conv2d(planes, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
            if cin != cout
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def stem_and_injection(in_chans: int, c0: int, downsample: int) -> tuple[nn.Module, nn.Module]:
    """MDEQ's stem (two 3x3 conv-BN-ReLU, the first ``downsample`` of them with stride 2) and its
    input injection (1x1 conv-BN-ReLU), shared by the MDEQ heads and their explicit baselines."""
    stem: list[nn.Module] = []
    cin = in_chans
    for k in range(2):
        stride = 2 if downsample > k else 1
        stem += [nn.Conv2d(cin, c0, 3, stride, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU()]
        cin = c0
    inject = nn.Sequential(nn.Conv2d(c0, c0, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
    return nn.Sequential(*stem), inject


class _MDEQBackbone(ImplicitModelMixin, ZooModel):
    """Stem + input injection + the multiscale equilibrium layer, shared by both heads."""

    def _build_backbone(
        self,
        in_chans: int,
        channels: tuple[int, ...],
        expansion: int,
        groups: int,
        dropout: float,
        wnorm: bool,
        downsample: int,
        solver,
        grad,
        jac_reg_samples: int,
        pretrain_depth: int,
    ) -> None:
        self.stem, self.inject = stem_and_injection(in_chans, channels[0], downsample)
        cell = MDEQCell(channels, expansion, groups, dropout, wnorm)
        self.deq = DEQ(
            cell, solver=get_solver(solver), grad=get_grad(grad), jac_reg_samples=jac_reg_samples
        )
        self.pretrain_depth = pretrain_depth
        self.pretraining = False
        self.in_chans = in_chans

    @property
    def cell(self) -> MDEQCell:
        return self.deq.cell

    # -- budget / modes --------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> Tensor:
        """Clear errors for what a user gets wrong; float64 (or half) images are cast."""
        n = len(self.cell.channels)
        down = 2 ** (n - 1) * 2 ** (
            sum(1 for m in self.stem if isinstance(m, nn.Conv2d) and m.stride[0] == 2)
        )
        return check_images(self, x, multiple=down)

    def equilibrium(self, x: Tensor) -> list[Tensor]:
        """The per-resolution fixed point ``z*`` for images ``x``."""
        x = self._check_input(x)
        h = self.stem(x)
        inj = self.inject(h)
        b, _, H, W = inj.shape
        z0 = [inj.new_zeros(b, c, H >> i, W >> i) for i, c in enumerate(self.cell.channels)]
        xs = [inj] + [None] * (len(z0) - 1)
        self.cell.reset_dropout(z0)
        if self.pretraining:
            self.deq.info = None
            z = z0
            for _ in range(self.pretrain_depth):
                z = self.cell(z, xs)
            return z
        return self.deq(xs, z0)


class MDEQClassifier(TimmClassifier, _MDEQBackbone):
    """MDEQ image classifier.

    Args:
        num_classes: Output classes.
        in_chans: Input channels.
        channels: Channels of each resolution branch (2-4 branches), finest first.
        expansion: Width multiplier in the residual blocks.
        groups: GroupNorm groups.
        head_channels: Bottleneck widths of the head per branch (x4 after the bottleneck).
        final_channels: Channels of the last 1x1 conv before pooling.
        dropout: Variational dropout in the equilibrium cell.
        wnorm: Weight normalization of the cell's convs.
        downsample: Stride-2 convs in the stem (0 for 32x32 inputs, 2 for ImageNet).
        solver: Forward solver (object or spec dict).
        grad: Gradient mode (object or spec dict).
        jac_reg_samples: Hutchinson probes for Jacobian regularization (0 = off).
        pretrain_depth: Unrolled depth used while ``pretraining`` is on.
        drop_rate: Dropout before the final linear layer (timm's ``drop_rate``).

    Example:
        >>> import torch
        >>> from zoo.models.mdeq import mdeq_tiny
        >>> model = mdeq_tiny().eval()
        >>> with torch.no_grad():
        ...     logits = model(torch.randn(2, 3, 32, 32))
        >>> logits.shape
        torch.Size([2, 10])
    """

    arch = "mdeq"
    description = "A Multiscale Deep Equilibrium Model"

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        channels: tuple[int, ...] = (24, 24),
        expansion: int = 5,
        groups: int = 8,
        head_channels: tuple[int, ...] = (8, 16),
        final_channels: int = 200,
        dropout: float = 0.0,
        wnorm: bool = True,
        downsample: int = 0,
        solver: FixedPointSolver | dict[str, Any] | None = None,
        grad: GradMode | dict[str, Any] | None = None,
        jac_reg_samples: int = 0,
        pretrain_depth: int = 10,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        solver = solver or dict(DEFAULT_SOLVER)
        grad = grad or dict(DEFAULT_GRAD)
        self._capture(locals())
        if not 1 <= len(channels) <= 4 or len(head_channels) != len(channels):
            raise ValueError("channels and head_channels must list the same 1-4 branches")
        self._build_backbone(
            in_chans,
            tuple(channels),
            expansion,
            groups,
            dropout,
            wnorm,
            downsample,
            solver,
            grad,
            jac_reg_samples,
            pretrain_depth,
        )
        self.num_classes = num_classes
        self.incre = nn.ModuleList(_Bottleneck(c, h) for c, h in zip(channels, head_channels))
        self.downs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(4 * head_channels[i], 4 * head_channels[i + 1], 3, 2, 1),
                nn.BatchNorm2d(4 * head_channels[i + 1]),
                nn.ReLU(),
            )
            for i in range(len(channels) - 1)
        )
        self.final = nn.Sequential(
            nn.Conv2d(4 * head_channels[-1], final_channels, 1),
            nn.BatchNorm2d(final_channels),
            nn.ReLU(),
        )
        self.head_drop = nn.Dropout(_check_rate(drop_rate))
        self.classifier = nn.Linear(final_channels, num_classes)

    def _head_linear(self) -> tuple[nn.Module, str]:
        return self, "classifier"

    def _pool(self, z: list[Tensor]) -> Tensor:
        y = self.incre[0](z[0])
        for i, down in enumerate(self.downs):
            y = self.incre[i + 1](z[i + 1]) + down(y)
        return self.final(y).mean(dim=(2, 3))

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The equilibrium: one feature map per resolution branch, finest first."""
        return self.equilibrium(x)

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and x.dim() == 4 and x.shape[0] == 0:
            self._check_input(x)
            width = self.num_classes or self.num_features
            return x.new_zeros(0, width, dtype=self.final[0].weight.dtype)
        return self.forward_head(self.equilibrium(x))


def _init_weights(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


# Entry points: <arch>_<size>. Sizes from the official configs.
@register_model(family="mdeq", task="image-classification", default_tag="cifar10")
def mdeq_tiny(**kwargs) -> MDEQClassifier:
    """CIFAR-10 TINY: 2 branches x 24 channels, expansion 5 (~170K params)."""
    cfg = dict(channels=(24, 24), head_channels=(8, 16), final_channels=200, dropout=0.25)
    return _init_weights(MDEQClassifier(**{**cfg, **kwargs}))


@register_model(family="mdeq", task="image-classification")
def mdeq_small(**kwargs) -> MDEQClassifier:
    """ImageNet SMALL: 4 branches 32/64/128/256, expansion 4, stem downsampling x4."""
    cfg = dict(
        channels=(32, 64, 128, 256),
        head_channels=(28, 56, 112, 224),
        expansion=4,
        final_channels=2048,
        num_classes=1000,
        downsample=2,
        groups=8,
    )
    return _init_weights(MDEQClassifier(**{**cfg, **kwargs}))


@register_model(family="mdeq", task="image-classification")
def mdeq_large(**kwargs) -> MDEQClassifier:
    """ImageNet LARGE: 4 branches 80/160/320/640."""
    cfg = dict(
        channels=(80, 160, 320, 640),
        head_channels=(32, 64, 128, 256),
        expansion=4,
        final_channels=2048,
        num_classes=1000,
        downsample=2,
        groups=8,
    )
    return _init_weights(MDEQClassifier(**{**cfg, **kwargs}))


@register_model(family="mdeq", task="image-classification")
def mdeq_xl(**kwargs) -> MDEQClassifier:
    """XL: 4 branches 88/176/352/704 (the paper's largest, Cityscapes/ImageNet)."""
    cfg = dict(
        channels=(88, 176, 352, 704),
        head_channels=(32, 64, 128, 256),
        expansion=5,
        final_channels=2048,
        num_classes=1000,
        downsample=2,
        groups=8,
    )
    return _init_weights(MDEQClassifier(**{**cfg, **kwargs}))


__all__ += ["mdeq_tiny", "mdeq_small", "mdeq_large", "mdeq_xl"]


_MDEQ_PAPER = (
    "Bai, Koltun, Kolter. Multiscale Deep Equilibrium Models. NeurIPS 2020. arXiv:2006.08656"
)

# One table of pretrained configs for the family. Measured metrics live in each checkpoint's
# config.json (written by `zoo card`, from `zoo eval`), never here.
register_pretrained(
    {
        "mdeq_tiny.cifar10": dict(
            task="image-classification",
            tags=["deep-equilibrium-models"],
            dataset="cifar10_jpeg",
            datamodule="cifar10_jpeg",
            input_size=[3, 32, 32],
            mean=[0.4914, 0.4822, 0.4465],
            std=[0.2470, 0.2435, 0.2616],
            license="apache-2.0",
            paper=_MDEQ_PAPER,
            recipe="recipes/mdeq/mdeq_tiny.cifar10.yaml",  # after _gpu.yaml, _gpu_stage2.yaml
        ),
        "mdeq_tiny.fashion_mnist": dict(
            task="image-classification",
            tags=["deep-equilibrium-models"],
            dataset="fashion_mnist",
            datamodule="fashion_mnist",
            input_size=[1, 28, 28],
            mean=[0.2860],
            std=[0.3530],
            license="apache-2.0",
            paper=_MDEQ_PAPER,
            recipe="recipes/mdeq/mdeq_tiny.fashion_mnist.yaml",  # after _cpu, _stage2 to _stage6
        ),
    }
)
