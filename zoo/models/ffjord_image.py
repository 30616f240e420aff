"""FFJORD on images: conv vector fields, optionally in FFJORD's multiscale layout (``odenvp``:
CNF, squeeze, CNF, factor out half, per scale), on uniformly dequantized pixels.

https://arxiv.org/abs/1810.01367. Pixels ``v`` in 0..255 (uint8, or floats in that range) become
``x = (v + u) / 256`` with ``u ~ U[0, 1)`` (uniform dequantization), then
``y = logit(a + (1 - 2a) x)`` (``a = 1e-6``, FFJORD's logit transform) enters the flow. The
log-density is reported on the 256-level scale, FFJORD's convention:
``log p(v + u) = log p(x) - D log 256``, and bits/dim ``= -log p(v + u) / (D ln 2)``; its mean
over ``u`` is an upper bound on the discrete model's bits/dim.

``n_scales=0`` is one CNF on the whole image (the field that flow matching can train, since it
sees the data space at every time); ``n_scales>=1`` is the multiscale flow (maximum likelihood).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..nn import CNF
from ._base import ZooModel
from ._registry import register_model, register_pretrained
from .ffjord import _FFJORD_PAPER, check_sample_count, summed_regs

__all__ = [
    "ConcatConv2d",
    "ConvField",
    "ImageFFJORD",
    "ffjord_image_tiny",
    "ffjord_multires_tiny",
    "ffjord_multiscale_tiny",
]

_LOG256 = math.log(256.0)


class ConcatConv2d(nn.Module):
    """A convolution of ``[x, t]``: the time as one more input channel (FFJORD's concat).

    ``stride=1``: 3x3, same size. ``stride=2``: 4x4 with stride 2, half the size. ``stride=-2``:
    a 4x4 transposed convolution with stride 2, twice the size (FFJORD's ``ODEnet`` strides).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        if stride == 1:
            self.conv = nn.Conv2d(c_in + 1, c_out, 3, padding=1)
        elif stride == 2:
            self.conv = nn.Conv2d(c_in + 1, c_out, 4, stride=2, padding=1)
        elif stride == -2:
            self.conv = nn.ConvTranspose2d(c_in + 1, c_out, 4, stride=2, padding=1)
        else:
            raise ValueError(f"stride must be 1, 2 (down) or -2 (up), got {stride!r}")

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        tt = t.reshape(-1, 1, 1, 1).to(x.dtype).expand(x.shape[0], 1, *x.shape[2:])
        return self.conv(torch.cat([x, tt], 1))


def check_strides(strides, n_layers: int, size: int | None = None) -> tuple[int, ...]:
    """Validate a field's per-layer strides: one per layer, each 1, 2 or -2, every 2 undone by a
    -2 so the field returns the input's size, and, given the input ``size``, every 2 landing
    on an even size. Returns them as a tuple."""
    strides = tuple(strides)
    if len(strides) != n_layers or any(s not in (1, 2, -2) or isinstance(s, bool) for s in strides):
        raise ValueError(
            f"strides must give one of 1, 2 (down) or -2 (up) for each of the field's "
            f"{n_layers} layers (len(hidden) + 1), got {strides!r}"
        )
    depth = 0
    for s in strides:
        depth += {1: 0, 2: 1, -2: -1}[s]
        if depth < 0:
            raise ValueError(f"strides {strides!r} upsample before they downsample")
        if s == 2 and size is not None and (size // 2 ** (depth - 1)) % 2:
            raise ValueError(
                f"strides {strides!r} halve a {size // 2 ** (depth - 1)}-pixel map, which is odd: "
                f"the input size {size} must be divisible by 2 ** (number of downsamplings)"
            )
    if depth:
        raise ValueError(
            f"strides {strides!r} downsample {strides.count(2)} times but upsample "
            f"{strides.count(-2)} times: a vector field must return its input's shape"
        )
    return strides


class ConvField(nn.Module):
    """``f(t, z)`` on ``(B, C, H, W)``: concat convolutions with softplus between them.

    ``strides`` (one per layer; default all 1) makes it a multi-resolution field, as FFJORD's
    ``ODEnet``: ``(2, 2, 1, -2, -2)`` works at full, 1/2 and 1/4 size and back.
    """

    def __init__(self, channels: int, hidden: tuple[int, ...] = (64, 64, 64), strides=None) -> None:
        super().__init__()
        dims = [channels, *hidden, channels]
        strides = (
            (1,) * (len(dims) - 1) if strides is None else check_strides(strides, len(dims) - 1)
        )
        self.strides = strides
        self.layers = nn.ModuleList(
            ConcatConv2d(a, b, s) for a, b, s in zip(dims[:-1], dims[1:], strides)
        )

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            z = layer(t, z)
            if i < len(self.layers) - 1:
                z = nn.functional.softplus(z)
        return z


def squeeze(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``: each 2x2 patch into channels (volume kept)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


class ImageFFJORD(ZooModel):
    """A continuous normalizing flow on images.

    Args:
        in_chans: Image channels.
        img_size: Image height = width (divisible by ``2 ** n_scales``).
        n_scales: 0: one CNF on the whole image; k >= 1: k scales of FFJORD's multiscale flow
            (CNF, squeeze, CNF, then half the channels factored out to the base, but the last).
        hidden: Channel widths of each vector field's hidden convolutions.
        strides: Per-layer strides of each field (``len(hidden) + 1`` of 1, 2 or -2; default
            all 1): a multi-resolution field, FFJORD's ``ODEnet`` strides (:class:`ConvField`).
        trace: ``"hutchinson"`` (default) or ``"exact"`` (one backward pass per pixel: tests).
        noise: Hutchinson probe, ``"gaussian"`` or ``"rademacher"`` (FFJORD's images).
        T: Integration time of each CNF.
        method: torchdiffeq method (dopri5 by default).
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        adjoint: Adjoint gradients.
        kinetic_energy: RNODE's kinetic-energy term (the task weighs it).
        jacobian_frobenius: RNODE's Jacobian-Frobenius term.
        alpha: The logit transform's margin.
        max_num_steps: Step budget of each adaptive solve.
    """

    arch = "ffjord_image"
    description = "An FFJORD continuous normalizing flow on images"

    def __init__(
        self,
        in_chans: int = 1,
        img_size: int = 28,
        n_scales: int = 0,
        hidden: tuple[int, ...] = (64, 64, 64),
        strides: tuple[int, ...] | None = None,
        trace: str = "hutchinson",
        noise: str = "rademacher",
        T: float = 1.0,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        adjoint: bool = False,
        kinetic_energy: bool = False,
        jacobian_frobenius: bool = False,
        alpha: float = 1e-6,
        max_num_steps: int = 10_000,
    ) -> None:
        super().__init__()
        self._capture(locals())
        for k, v, lo in (
            ("in_chans", in_chans, 1),
            ("img_size", img_size, 2),
            ("n_scales", n_scales, 0),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{k} must be an integer >= {lo}, got {v!r}")
        if img_size % (2**n_scales):
            raise ValueError(
                f"img_size={img_size} must be divisible by 2 ** n_scales = {2**n_scales} "
                "(each scale squeezes 2x2 patches); lower n_scales or pad the images"
            )
        if not (0 < alpha < 0.5):
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
        self.in_chans, self.img_size, self.n_scales, self.alpha = (
            in_chans,
            img_size,
            n_scales,
            alpha,
        )
        self.dim = in_chans * img_size * img_size

        def cnf(channels: int, size: int) -> CNF:
            if strides is not None:
                check_strides(strides, len(hidden) + 1, size)
            return CNF(
                ConvField(channels, tuple(hidden), strides), trace=trace, noise=noise, T=T, method=method,
                rtol=rtol, atol=atol, adjoint=adjoint, kinetic_energy=kinetic_energy,
                jacobian_frobenius=jacobian_frobenius, max_num_steps=max_num_steps,
            )  # fmt: skip

        self.stages = nn.ModuleList()
        c, h = in_chans, img_size
        if n_scales == 0:
            self.stages.append(nn.ModuleList([cnf(c, h)]))
        for s in range(n_scales):
            self.stages.append(nn.ModuleList([cnf(c, h), cnf(4 * c, h // 2)]))
            c, h = (4 * c if s == n_scales - 1 else 2 * c), h // 2
        self.field = self.stages[0][0].dynamics.func  # the first field (flow matching trains it)
        self.cnf = self.stages[0][0]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, self.img_size, self.img_size)

    # ----- input ----------------------------------------------------------------------------
    def _check(self, v: Tensor) -> Tensor:
        shape = (self.in_chans, self.img_size, self.img_size)
        if not isinstance(v, Tensor) or v.dim() != 4 or tuple(v.shape[1:]) != shape:
            got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"images must be (batch, {', '.join(map(str, shape))}), got {got}")
        if v.dtype != torch.uint8 and not v.is_floating_point():
            raise ValueError(f"images must be uint8 or float pixel values 0-255, got {v.dtype}")
        if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all()):
            raise ValueError("images must be finite: NaN or inf found")
        if v.numel() and (float(v.min()) < 0 or float(v.max()) > 256):
            raise ValueError(
                f"images must be pixel values in [0, 256) (0-255 plus dequantization noise), got "
                f"[{float(v.min()):g}, {float(v.max()):g}]: pass raw pixels, not normalized ones"
            )
        if v.is_floating_point() and v[0].numel() > 1 and float(v.amax()) <= 1.0:
            raise ValueError(
                "these float images are all within [0, 1]: they look like images scaled to "
                "[0, 1], which this flow would score as nearly black pixels (a meaningless "
                "bits/dim). Pass pixel values 0-255: uint8, or floats in [0, 256) (x * 255)"
            )
        return v

    def dequantize(self, v: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """uint8 pixels -> ``(v + u) / 256`` with ``u ~ U[0, 1)``; floats are taken as already
        dequantized pixel values in [0, 256) and only divided by 256."""
        dtype = next(self.parameters()).dtype
        if v.dtype == torch.uint8:
            u = torch.rand(v.shape, generator=generator, dtype=dtype).to(v.device)
            return (v.to(dtype) + u) / 256.0
        return v.to(dtype) / 256.0

    def to_flow_space(self, v: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixels as the flow sees them: dequantized, then logit-transformed."""
        return self._logit(self.dequantize(self._check(v), generator))[0]

    def _logit(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``y = logit(a + (1 - 2a) x)`` and ``log |dy/dx|`` per sample."""
        a = self.alpha
        s = a + (1 - 2 * a) * x
        y = torch.log(s) - torch.log1p(-s)
        logdet = (math.log(1 - 2 * a) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
        return y, logdet

    # ----- the flow -------------------------------------------------------------------------
    def _flow(self, y: Tensor) -> tuple[list[Tensor], Tensor]:
        """Logit-space images to base-space parts (factored-out halves, then the rest)."""
        dlogp = y.new_zeros(y.shape[0])
        parts = []
        if self.n_scales == 0:
            z, dlogp = self.stages[0][0](y, dlogp)
            return [z], dlogp
        for s, (a, b) in enumerate(self.stages):
            y, dlogp = a(y, dlogp)
            y, dlogp = b(squeeze(y), dlogp)
            if s < self.n_scales - 1:
                half = y.shape[1] // 2
                parts.append(y[:, :half])
                y = y[:, half:]
        return parts + [y], dlogp

    def _inverse(self, parts: list[Tensor]) -> Tensor:
        if self.n_scales == 0:
            return self.stages[0][0](parts[0], reverse=True)[0]
        y = parts[-1]
        for s in reversed(range(self.n_scales)):
            a, b = self.stages[s]
            if s < self.n_scales - 1:
                y = torch.cat([parts[s], y], 1)
            y = unsqueeze(b(y, reverse=True)[0])
            y = a(y, reverse=True)[0]
        return y

    def _shapes(self) -> list[tuple[int, ...]]:
        c, h = self.in_chans, self.img_size
        if self.n_scales == 0:
            return [(c, h, h)]
        out = []
        for s in range(self.n_scales):
            c, h = 4 * c, h // 2
            if s < self.n_scales - 1:
                out.append((c // 2, h, h))
                c //= 2
        return out + [(c, h, h)]

    def transform(self, v: Tensor, generator: torch.Generator | None = None):
        """Pixels to base: ``(parts, delta_logp)``; ``log p = sum log N(parts) - delta_logp``
        in the flow's space (before the logit and 256 scalings)."""
        x = self.dequantize(self._check(v), generator)
        y, _ = self._logit(x)
        return self._flow(y)

    def log_prob(self, v: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``log p(v + u)`` in nats per image on the 256-level scale, shape ``(B,)`` (uint8
        pixels are dequantized with ``generator``; floats are taken as dequantized)."""
        x = self.dequantize(self._check(v), generator)
        if x.shape[0] == 0:
            return x.new_zeros(0)
        y, logdet = self._logit(x)
        parts, dlogp = self._flow(y)
        logpz = sum(-0.5 * (p.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1) for p in parts)
        return logpz - dlogp + logdet - self.dim * _LOG256

    def forward(self, v: Tensor) -> Tensor:
        """The family's forward: ``log p`` in nats per image."""
        return self.log_prob(v)

    def bits_per_dim(self, logp: Tensor) -> Tensor:
        return -logp / (self.dim * math.log(2))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images ``(n, C, H, W)`` as float pixel values in [0, 256)."""
        check_sample_count(n, self.dim)
        p = next(self.parameters())
        parts = [torch.randn(n, *s, generator=generator, dtype=p.dtype).to(p.device)
                 for s in self._shapes()]  # fmt: skip
        y = self._inverse(parts)
        x = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        return (x * 256).clamp(0, 255.999)

    @property
    def reg(self) -> dict[str, Tensor]:
        return summed_regs(blk for stage in self.stages for blk in stage)


@register_model(family="ffjord", task="density-estimation")
def ffjord_image_tiny(**kwargs) -> ImageFFJORD:
    """One CNF on the whole 1x28x28 image, three 32-channel concat convolutions (CPU-sized)."""
    return ImageFFJORD(**({"hidden": (32, 32, 32)} | kwargs))


@register_model(family="ffjord", task="density-estimation")
def ffjord_multires_tiny(**kwargs) -> ImageFFJORD:
    """One CNF on the whole 1x28x28 image with a multi-resolution field: FFJORD's default image
    ``ODEnet`` (train_cnf.py: widths 8, 32, 32, 8; strides 2, 2, 1, -2, -2, so 28 -> 14 -> 7 ->
    7 -> 14 -> 28) with concat layers. A multiscale field that flow matching can train, since
    it is one CNF on the data space (the factor-out flow, ``ffjord_multiscale_tiny``, is not)."""
    return ImageFFJORD(**({"hidden": (8, 32, 32, 8), "strides": (2, 2, 1, -2, -2)} | kwargs))


@register_model(family="ffjord", task="density-estimation")
def ffjord_multiscale_tiny(**kwargs) -> ImageFFJORD:
    """FFJORD's multiscale layout at 2 scales on 1x28x28, 32-channel fields (CPU-sized)."""
    return ImageFFJORD(**({"hidden": (32, 32, 32), "n_scales": 2} | kwargs))


def _fashion_flow(recipe: str, **extra) -> dict:
    return dict(
        task="density-estimation",
        dataset="fashion_mnist",
        datamodule="fashion_mnist",
        datamodule_args={"pixels": True},
        sample="fashion_mnist_pixels",
        sample_size=300,
        input_size=[1, 28, 28],
        license="apache-2.0",
        paper=_FFJORD_PAPER,
        recipe=f"recipes/ffjord/{recipe}.yaml",
        card_tolerances=[1e-3],
        **extra,
    )


register_pretrained(
    {
        "ffjord_image_tiny.fashion_mnist": _fashion_flow(
            "ffjord_image_tiny.fashion_mnist",
        ),
        "ffjord_multires_tiny.fashion_mnist": _fashion_flow(
            "ffjord_multires_tiny.fashion_mnist",
        ),
        "ffjord_multires_tiny.cfm_fashion_mnist": _fashion_flow(
            "ffjord_multires_tiny.cfm_fashion_mnist",
        ),
        "ffjord_image_tiny.cfm_fashion_mnist": _fashion_flow(
            "ffjord_image_tiny.cfm_fashion_mnist",
        ),
    }
)
