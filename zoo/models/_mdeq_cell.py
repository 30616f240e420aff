"""The multiscale equilibrium cell of MDEQ (Bai, Koltun, Kolter, NeurIPS 2020).

One implicit layer updates every resolution at once: a residual block per branch (with
input injection on the finest branch), then multiscale fusion (strided convs down, 1x1 convs
and nearest upsampling up), then a post-fusion ReLU-conv-GroupNorm.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from ..nn import DEQCell, VariationalDropout

__all__ = ["MDEQCell"]


def _conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class _BranchBlock(nn.Module):
    """Residual block: conv-GN-ReLU-conv-drop (+inj) -GN (+x) -ReLU-GN."""

    def __init__(self, c: int, expansion: int, groups: int, dropout: float, wnorm: bool) -> None:
        super().__init__()
        h = expansion * c
        self.conv1 = _conv3x3(c, h)
        self.gn1 = nn.GroupNorm(groups, h)
        self.conv2 = _conv3x3(h, c)
        self.gn2 = nn.GroupNorm(groups, c)
        self.gn3 = nn.GroupNorm(groups, c)
        self.drop = VariationalDropout(
            dropout, shared_dims=(2, 3)
        )  # one mask per sample and channel
        if wnorm:
            self.conv1 = weight_norm(self.conv1)
            self.conv2 = weight_norm(self.conv2)

    def forward(self, x: Tensor, injection: Tensor | None) -> Tensor:
        out = torch.relu(self.gn1(self.conv1(x)))
        out = self.drop(self.conv2(out))
        if injection is not None:
            out = out + injection
        out = self.gn2(out) + x
        return self.gn3(torch.relu(out))


class _Down(nn.Sequential):
    """Branch j -> coarser branch i: (i - j) strided 3x3 convs."""

    def __init__(self, cin: int, cout: int, levels: int, groups: int) -> None:
        layers: list[nn.Module] = []
        for k in range(levels):
            last = k == levels - 1
            co = cout if last else cin
            layers += [_conv3x3(cin, co, stride=2), nn.GroupNorm(groups, co)]
            if not last:
                layers.append(nn.ReLU())
        super().__init__(*layers)


class _Up(nn.Sequential):
    """Branch j -> finer branch i: 1x1 conv, GroupNorm, nearest upsampling."""

    def __init__(self, cin: int, cout: int, levels: int, groups: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.GroupNorm(groups, cout),
            nn.Upsample(scale_factor=2**levels, mode="nearest"),
        )


class MDEQCell(DEQCell):
    """``f(z, x)`` of MDEQ, on a list of per-resolution states.

    Args:
        channels: Channels of each branch, finest first (branch ``i`` is ``2^i`` times coarser).
        expansion: Width multiplier inside the residual blocks.
        groups: GroupNorm groups.
        dropout: Variational dropout inside the residual blocks.
        wnorm: Weight-normalize the residual convs (torch parametrizations).
        gn_init: Scale of the GroupNorm affine weights at init; < 1 makes the random cell
            contractive enough for the solver to converge (GroupNorm cancels conv scaling).

    Attributes:
        batch_independent: Each sample's output depends on that sample alone (GroupNorm, no
            batch statistics; the dropout mask is off in eval), so a solver may evaluate the
            unconverged samples only (``compact=True``).
    """

    batch_independent = True

    def __init__(
        self,
        channels: tuple[int, ...],
        expansion: int = 5,
        groups: int = 8,
        dropout: float = 0.0,
        wnorm: bool = True,
        gn_init: float = 0.4,
    ) -> None:
        super().__init__()
        self.channels = tuple(channels)
        n = len(channels)
        self.blocks = nn.ModuleList(
            _BranchBlock(c, expansion, groups, dropout, wnorm) for c in channels
        )
        self.fuse = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if i == j:
                    row.append(nn.Identity())
                elif j < i:
                    row.append(_Down(channels[j], channels[i], i - j, groups))
                else:
                    row.append(_Up(channels[j], channels[i], j - i, groups))
            self.fuse.append(row)
        self.post = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(), nn.Conv2d(c, c, 1, bias=False), nn.GroupNorm(max(groups // 2, 1), c)
            )
            for c in channels
        )
        if wnorm:
            for p in self.post:
                p[1] = weight_norm(p[1])
        for m in self.modules():
            if isinstance(m, nn.GroupNorm):
                nn.init.constant_(m.weight, gn_init)

    def reset_dropout(self, states: list[Tensor]) -> None:
        for blk, s in zip(self.blocks, states):
            blk.drop.reset(s)

    def forward(self, z: list[Tensor], x: list[Tensor]) -> list[Tensor]:
        y = [blk(zi, xi) for blk, zi, xi in zip(self.blocks, z, x)]
        n = len(y)
        if n == 1:
            return [self.post[0](y[0])]
        out = []
        for i in range(n):
            acc = y[i]
            for j in range(n):
                if j != i:
                    acc = acc + self.fuse[i][j](y[j])
            out.append(self.post[i](acc))
        return out
