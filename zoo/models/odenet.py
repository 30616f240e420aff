"""ODE-Net image classifiers (Chen et al., NeurIPS 2018, section 7.1): a downsampling stem, one
ODE block over a time-conditioned conv vector field, a pooled linear head; augmented states
(ANODE, Dupont et al. 2019) and RNODE's kinetic and Jacobian regularizers (Finlay et al. 2020)
as options. ``resnet_small`` is the explicit baseline: the same stem and head around timm
``BasicBlock`` residual blocks that are not weight-tied.

https://arxiv.org/abs/1806.07366 (reference: rtqichen/torchdiffeq ``examples/odenet_mnist.py``)
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn

from ..nn import ODEBlock
from ..nn._regularizers import sample_noise
from ._base import ZooModel, _check_budget, check_images
from ._classifier import TimmClassifier, check_rate
from ._registry import register_model, register_pretrained

__all__ = ["ConvODEFunc", "ODENet", "ResNetSmall"]


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, c), c)


class _ConcatConv2d(nn.Module):
    """A 3x3 convolution that sees the time as an extra constant input channel."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin + 1, cout, 3, 1, 1)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        tt = torch.ones_like(x[:, :1]) * t.to(x.dtype)
        return self.conv(torch.cat([tt, x], 1))


class ConvODEFunc(nn.Module):
    """``f(t, z)``: GroupNorm-ReLU-conv(t)-GroupNorm-ReLU-conv(t)-GroupNorm (Chen et al.'s)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = _norm(channels), _norm(channels), _norm(channels)
        self.conv1 = _ConcatConv2d(channels, channels)
        self.conv2 = _ConcatConv2d(channels, channels)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        out = self.conv1(t, torch.relu(self.norm1(z)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class _Field(nn.Module):
    """``f`` on a plain state, or on ``(z, kinetic, jacobian)`` where RNODE's integrands ride
    along: ``kinetic`` = ``||f||^2 / dim`` per sample, ``jacobian`` = ``||eps^T df/dz||^2 / dim``
    with one probe ``eps`` fixed for the solve (Hutchinson's ``||df/dz||_F^2 / dim``)."""

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.noise: Tensor | None = None

    def forward(self, t: Tensor, state):
        if not isinstance(state, tuple):
            return self.func(t, state)
        z = state[0]
        dim = z[0].numel()
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.func(t, z)
            (vjp,) = torch.autograd.grad(
                dz, z, self.noise, create_graph=torch.is_grad_enabled(), retain_graph=True
            )
        kin = dz.pow(2).reshape(z.shape[0], -1).sum(1) / dim
        jac = vjp.pow(2).reshape(z.shape[0], -1).sum(1) / dim
        return dz, kin, jac


def _stem(in_chans: int, channels: int) -> nn.Sequential:
    """3x3 conv, then two 4x4 stride-2 convs (28 -> 7, 32 -> 8), as the reference."""
    return nn.Sequential(
        nn.Conv2d(in_chans, channels, 3, 1),
        _norm(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 4, 2, 1),
        _norm(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 4, 2, 1),
    )


class _ImageClassifier(TimmClassifier, ZooModel):
    """Shared input checks, stem and head of ``odenet`` and ``resnet_small``."""

    def _build_io(
        self, in_chans: int, num_classes: int, channels: int, head_in: int, drop_rate: float = 0.0
    ) -> None:
        for k, v in (("in_chans", in_chans), ("num_classes", num_classes), ("channels", channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be an integer >= 1, got {v!r}")
        self.in_chans, self.num_classes = in_chans, num_classes
        self.stem = _stem(in_chans, channels)
        self.head = nn.Sequential(
            _norm(head_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(head_in, num_classes),
        )  # fmt: skip
        self.head_drop = nn.Dropout(check_rate(drop_rate))

    def _head_linear(self) -> tuple[nn.Module, int]:
        return self.head, len(self.head) - 1

    def _pool(self, features: Tensor) -> Tensor:
        return self.head[:-1](features)

    def _check(self, x: Tensor) -> Tensor:
        return check_images(self, x, min_size=8)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``."""
        x = self._check(x)
        if x.shape[0] == 0:
            return x.new_zeros(0, self.num_classes or self.num_features)
        return self.forward_head(self.forward_features(x))


class ODENet(_ImageClassifier):
    """An ODE-Net: stem, ``dz/dt = f(t, z)`` from t=0 to 1, pooled linear head.

    Args:
        in_chans: Input channels.
        num_classes: Classes.
        channels: Width of the stem and of the vector field.
        augment_dim: Zero channels appended to the state (ANODE); the head sees them too.
        method: torchdiffeq method of the adaptive solve (``dopri5``).
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        grid_steps: If > 0, a fixed grid of this many RK4 steps instead (RNODE trains so);
            the test-time budget is then a number of steps (``max_iter``).
        adjoint: Adjoint gradients (O(1) memory in depth; solves an ODE backwards).
        max_num_steps: Step budget of an adaptive solve (a stiff one fails with
            ``ODEBudgetError``, never hangs).
        kinetic_weight: RNODE kinetic-energy weight (training only).
        jacobian_weight: RNODE Jacobian-Frobenius weight (training only).

    After a training forward with a weight > 0, ``model.aux_loss`` holds the weighted
    regularizer (the classification task adds it to the loss) and ``model.reg`` the terms.

    Example:
        >>> import torch
        >>> m = ODENet(in_chans=1, channels=8).eval()
        >>> m(torch.zeros(2, 1, 28, 28)).shape, m.cost().nfe_forward > 0
        (torch.Size([2, 10]), True)
    """

    arch = "odenet"
    description = "An ODE-Net image classifier"

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 10,
        channels: int = 64,
        augment_dim: int = 0,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        grid_steps: int = 0,
        adjoint: bool = False,
        max_num_steps: int = 1000,
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self._capture(locals())
        if isinstance(augment_dim, bool) or not isinstance(augment_dim, int) or augment_dim < 0:
            raise ValueError(f"augment_dim must be an integer >= 0, got {augment_dim!r}")
        for k, v in (("kinetic_weight", kinetic_weight), ("jacobian_weight", jacobian_weight)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
        width = channels + augment_dim
        self._build_io(in_chans, num_classes, channels, width, drop_rate)
        self.augment_dim = augment_dim
        self.kinetic_weight, self.jacobian_weight = float(kinetic_weight), float(jacobian_weight)
        if isinstance(grid_steps, bool) or not isinstance(grid_steps, int) or grid_steps < 0:
            raise ValueError(f"grid_steps must be an integer >= 0, got {grid_steps!r}")
        self.grid_steps = grid_steps
        self.field = _Field(ConvODEFunc(width))
        self.ode = ODEBlock(
            self.field, method="rk4" if grid_steps else method, rtol=rtol, atol=atol,
            adjoint=adjoint, max_num_steps=max_num_steps,
            options={"step_size": 1.0 / grid_steps} if grid_steps else None,
        )  # fmt: skip
        self.aux_loss: Tensor | None = None
        self.reg: dict[str, Tensor] = {}

    def set_inference_budget(self, max_iter=None, tol=None, rtol=None, atol=None) -> None:
        """Adaptive solves: ``rtol``/``atol`` (``tol`` sets both). Fixed grids (``grid_steps``):
        ``max_iter`` RK4 steps. The other kind is refused, never ignored."""
        if not self.grid_steps:
            return super().set_inference_budget(max_iter, tol, rtol, atol)
        _check_budget(max_iter, tol, rtol, atol)
        if any(v is not None for v in (tol, rtol, atol)):
            raise ValueError(
                f"this ODE-Net solves on a fixed grid of {self.grid_steps} RK4 steps: set the "
                "number of steps (max_iter), not a tolerance"
            )
        if max_iter is not None:
            self.grid_steps = int(max_iter)
            self.ode.options = {"step_size": 1.0 / self.grid_steps}

    def inference_budget(self) -> dict:
        if self.grid_steps:
            return {"max_iter": self.grid_steps, "method": "rk4 grid"}
        return super().inference_budget()

    def _regularizing(self) -> bool:
        return self.training and (self.kinetic_weight > 0 or self.jacobian_weight > 0)

    def forward_features(self, x: Tensor) -> Tensor:
        z = self.stem(x)
        if self.augment_dim:
            z = torch.cat([z, z.new_zeros(z.shape[0], self.augment_dim, *z.shape[2:])], 1)
        self.aux_loss, self.reg = None, {}
        if not self._regularizing():
            return self.ode(z)
        self.field.noise = sample_noise(z)
        zero = z.new_zeros(z.shape[0])
        z, kin, jac = self.ode((z, zero, zero))
        self.reg = {"kinetic_energy": kin, "jacobian_frobenius": jac}
        self.aux_loss = self.kinetic_weight * kin.mean() + self.jacobian_weight * jac.mean()
        return z


class ResNetSmall(_ImageClassifier):
    """The explicit baseline: ``odenet``'s stem and head around ``depth`` timm ``BasicBlock``
    residual blocks (GroupNorm, not weight-tied).

    Args:
        in_chans: Input channels.
        num_classes: Classes.
        channels: Width of the stem and of the blocks.
        depth: Residual blocks (1: the ODE-Net's parameter count, less its time channels).
        drop_rate: Dropout before the final linear layer (timm's ``drop_rate``).

    Example:
        >>> import torch
        >>> m = ResNetSmall(in_chans=1, channels=8).eval()
        >>> m(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    arch = "resnet_small"
    description = "A small ResNet (the ODE-Net's explicit baseline)"

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 10,
        channels: int = 64,
        depth: int = 1,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self._capture(locals())
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        from timm.models.resnet import BasicBlock

        self._build_io(in_chans, num_classes, channels, channels, drop_rate)
        norm = partial(nn.GroupNorm, math.gcd(32, channels))
        self.blocks = nn.Sequential(
            # the stem ends in a conv: the first block's input is pre-activation, as the ODE's
            *(BasicBlock(channels, channels, norm_layer=norm) for _ in range(depth))
        )

    def forward_features(self, x: Tensor) -> Tensor:
        return self.blocks(self.stem(x))


@register_model(family="odenet", task="image-classification", default_tag="fashion_mnist")
def odenet(**kwargs) -> ODENet:
    """Chen et al.'s MNIST ODE-Net: 64 channels, dopri5 at rtol = atol = 1e-3 (~0.21M params)."""
    return ODENet(**kwargs)


@register_model(family="odenet", task="image-classification", default_tag="cifar10")
def odenet_reg(**kwargs) -> ODENet:
    """An ODE-Net trained with RNODE's kinetic and Jacobian-Frobenius terms (both 0.01, on
    per-dimension means as ffjord-rnode's image models): dynamics an adaptive solver integrates
    in fewer steps."""
    kwargs.setdefault("kinetic_weight", 0.01)
    kwargs.setdefault("jacobian_weight", 0.01)
    return ODENet(**kwargs)


@register_model(family="odenet", task="image-classification", default_tag="fashion_mnist")
def resnet_small(**kwargs) -> ResNetSmall:
    """The ODE-Net's stem and head around one residual block: the same parameter count."""
    return ResNetSmall(**kwargs)


_CHEN = (
    "Chen, Rubanova, Bettencourt, Duvenaud. Neural Ordinary Differential Equations. NeurIPS 2018. "
    "arXiv:1806.07366"
)
_FASHION = dict(
    task="image-classification",
    tags=["neural-ode"],
    dataset="fashion_mnist",
    datamodule="fashion_mnist",
    input_size=[1, 28, 28],
    mean=[0.2860],
    std=[0.3530],
    license="apache-2.0",
    paper=_CHEN,
)
# the ODE-Net's card sweeps the RK4 steps of its grid (4 field evaluations each)
_GRID_SWEEP = {"card_budgets": [1, 2, 3, 4, 8]}
register_pretrained(
    {
        "odenet.fashion_mnist": dict(
            _FASHION,
            **_GRID_SWEEP,
            recipe="recipes/odenet/odenet.fashion_mnist.yaml",
        ),
        "resnet_small.fashion_mnist": dict(
            _FASHION,
            tags=[],
            recipe="recipes/odenet/resnet_small.fashion_mnist.yaml",
        ),
    }
)
_CIFAR = dict(
    task="image-classification",
    tags=["neural-ode"],
    dataset="cifar10_jpeg",
    datamodule="cifar10_jpeg",
    input_size=[3, 32, 32],
    mean=[0.4914, 0.4822, 0.4465],
    std=[0.2470, 0.2435, 0.2616],
    license="apache-2.0",
    paper=_CHEN,
)
register_pretrained(
    {
        "odenet.cifar10": dict(
            _CIFAR,
            **_GRID_SWEEP,
            recipe="recipes/odenet/odenet.cifar10.yaml",
        ),
        "odenet_reg.cifar10": dict(
            _CIFAR,
            **_GRID_SWEEP,
            tags=["neural-ode", "rnode"],
            recipe="recipes/odenet/odenet_reg.cifar10.yaml",
        ),
        "resnet_small.cifar10": dict(
            _CIFAR,
            tags=[],
            recipe="recipes/odenet/resnet_small.cifar10.yaml",
        ),
    }
)
