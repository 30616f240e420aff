"""FFJORD continuous normalizing flows (Grathwohl et al., ICLR 2019), with the RNODE
regularizers (Finlay et al., ICML 2020) as switches.

https://arxiv.org/abs/1810.01367. A CNF moves data ``x`` along ``dz/dt = f(t, z)`` to a
standard normal base; the log-density follows ``d log p / dt = -tr(df/dz)`` (exact trace in
low dimensions, Hutchinson's estimator otherwise). Here, vector data: a time-conditioned MLP of
FFJORD's concatsquash layers. ``log_prob`` is in nats per sample.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..nn import CNF
from ._base import ZooModel
from ._registry import register_model, register_pretrained

__all__ = ["ConcatSquashLinear", "ConcatSquashMLP", "FFJORD", "ffjord_toy"]


class ConcatSquashLinear(nn.Module):
    """``W x * sigmoid(a t + c) + b t`` (FFJORD's concatsquash layer)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.gate = nn.Linear(1, d_out)
        self.bias = nn.Linear(1, d_out, bias=False)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        tt = t.reshape(-1, 1).to(x.dtype)  # one time for the batch, or one per sample (B,)
        return self.lin(x) * torch.sigmoid(self.gate(tt)) + self.bias(tt)


class ConcatSquashMLP(nn.Module):
    """The vector field ``f(t, z)``: concatsquash layers with tanh between them."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (64, 64, 64)) -> None:
        super().__init__()
        dims = [dim, *hidden, dim]
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            z = layer(t, z)
            if i < len(self.layers) - 1:
                z = torch.tanh(z)
        return z


class FFJORD(ZooModel):
    """A continuous normalizing flow on vectors.

    Args:
        dim: Data dimension.
        hidden: Widths of the vector field's hidden layers.
        trace: ``"exact"`` or ``"hutchinson"`` (``noise`` ``"gaussian"`` or ``"rademacher"``).
        T: Integration time (FFJORD's toy runs use 0.5).
        method: torchdiffeq method (``dopri5``; ``rk4`` with ``grid_steps`` as RNODE does).
        rtol: Relative tolerance of the adaptive solver.
        atol: Absolute tolerance.
        adjoint: Adjoint gradients (O(1) memory).
        kinetic_energy: Accumulate RNODE's kinetic energy (the task weighs it).
        jacobian_frobenius: Accumulate RNODE's Jacobian Frobenius norm.

    Example:
        >>> import torch
        >>> m = FFJORD(dim=2, hidden=(8,)).eval()
        >>> m.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    arch = "ffjord"
    description = "An FFJORD continuous normalizing flow"

    def __init__(
        self,
        dim: int = 2,
        hidden: tuple[int, ...] = (64, 64, 64),
        trace: str = "exact",
        noise: str = "gaussian",
        T: float = 0.5,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        adjoint: bool = False,
        kinetic_energy: bool = False,
        jacobian_frobenius: bool = False,
    ) -> None:
        super().__init__()
        self._capture(locals())
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
        if isinstance(hidden, (str, bytes)) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden
        ):
            raise ValueError(f"hidden must be a list of integers >= 1, got {hidden!r}")
        if not (isinstance(T, (int, float)) and math.isfinite(T) and T > 0):
            raise ValueError(
                f"T (the integration time) must be a positive finite number, got {T!r}"
            )
        self.dim = int(dim)
        self.field = ConcatSquashMLP(self.dim, tuple(hidden))
        self.cnf = CNF(
            self.field, trace=trace, noise=noise, T=T, method=method, rtol=rtol, atol=atol,
            adjoint=adjoint, kinetic_energy=kinetic_energy, jacobian_frobenius=jacobian_frobenius,
        )  # fmt: skip

    def _check(self, x: Tensor, name: str = "x") -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a (batch, {self.dim}) tensor, got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating-point, got {x.dtype}")
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite: NaN or inf found")
        dtype = next(self.parameters()).dtype
        return x if x.dtype == dtype else x.to(dtype)

    def transform(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data to base: ``(z, delta_logp)`` with ``log p(x) = log N(z) - delta_logp``."""
        x = self._check(x)
        z, dlogp = self.cnf(x)
        return z, dlogp

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` in nats, shape ``(B,)``."""
        x = self._check(x)
        if x.shape[0] == 0:
            return x.new_zeros(0)
        z, dlogp = self.cnf(x)
        return _std_normal_logp(z) - dlogp

    def forward(self, x: Tensor) -> Tensor:
        """The family's forward: ``log p(x)`` in nats per sample."""
        return self.log_prob(x)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``(n, dim)``: base normal draws carried back by the reverse ODE."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"generator must be a torch.Generator (or None), got {type(generator).__name__}; "
                "use torch.Generator().manual_seed(SEED)"
            )
        p = next(self.parameters())
        z = torch.randn(n, self.dim, generator=generator, dtype=p.dtype).to(p.device)
        if n == 0:
            return z
        x, _ = self.cnf(z, reverse=True)
        return x

    @property
    def reg(self) -> dict[str, Tensor]:
        """RNODE terms of the last call (``(B,)`` each), when switched on."""
        return self.cnf.reg


def _std_normal_logp(z: Tensor) -> Tensor:
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * math.log(2 * math.pi))


@register_model(family="ffjord", task="density-estimation")
def ffjord_toy(**kwargs) -> FFJORD:
    """FFJORD's 2-D toy configuration: three 64-unit concatsquash layers, T=0.5, exact trace."""
    return FFJORD(**kwargs)


_FFJORD_PAPER = (
    "Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud. FFJORD: Free-form Continuous Dynamics "
    "for Scalable Reversible Generative Models. ICLR 2019. arXiv:1810.01367"
)
register_pretrained(
    {
        "ffjord_toy.8gaussians": dict(
            task="density-estimation",
            dataset="8gaussians",
            datamodule="toy2d",
            datamodule_args={"density": "8gaussians", "n_train": 100_000, "n_test": 100_000},
            train_split="100,000 generated points (seed 0)",
            test_split="100,000 other generated points (seed 1)",
            entropy_floor="the true differential entropy of 8gaussians, about 2.831 nats: no "
            "model's expected test NLL is below it",
            license="apache-2.0",
            paper=_FFJORD_PAPER,
            recipe="recipes/ffjord/ffjord_8gaussians_cpu.yaml",
            card="model_cards/ffjord_toy.8gaussians.md",
            paper_results=[],
            compute="1 CPU thread beside other jobs: 6,000 steps of batch 512 in 59 minutes",
            limitations=[
                "A 2-D toy: the family's tabular and image flows, RNODE and flow-matching "
                "checkpoints are not shipped yet.",
                "The floor (about 2.831 nats) is itself an estimate; the gap to it is within "
                "its uncertainty.",
            ],
        )
    }
)
