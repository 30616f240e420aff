"""FFJORD continuous normalizing flows (Grathwohl et al., ICLR 2019), with the RNODE
regularizers (Finlay et al., ICML 2020) as switches.

https://arxiv.org/abs/1810.01367. A CNF moves data ``x`` along ``dz/dt = f(t, z)`` to a
standard normal base; the log-density follows ``d log p / dt = -tr(df/dz)`` (exact trace in
low dimensions, Hutchinson's estimator otherwise). Here, vector data: a time-conditioned MLP of
FFJORD's concatsquash (or concat) layers, one CNF or a stack of them (FFJORD's tabular models
use 1 to 10 blocks). ``log_prob`` is in nats per sample.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..nn import CNF
from ._base import ZooModel
from ._registry import register_model, register_pretrained

__all__ = [
    "ConcatLinear",
    "ConcatSquashLinear",
    "ConcatSquashMLP",
    "FFJORD",
    "ffjord_toy",
    "ffjord_power",
    "ffjord_gas",
    "ffjord_hepmass",
    "ffjord_miniboone",
    "ffjord_bsds300",
]

_ACTIVATIONS = {"tanh": torch.tanh, "softplus": nn.functional.softplus}


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


class ConcatLinear(nn.Module):
    """``W [x, t] + b``: the time as one more input (FFJORD's concat layer)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in + 1, d_out)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        tt = t.reshape(-1, 1).to(x.dtype).expand(x.shape[0], 1)
        return self.lin(torch.cat([x, tt], 1))


_LAYERS = {"concatsquash": ConcatSquashLinear, "concat": ConcatLinear}


class ConcatSquashMLP(nn.Module):
    """The vector field ``f(t, z)``: time-conditioned layers (concatsquash by default) with an
    activation (tanh by default) between them."""

    def __init__(
        self,
        dim: int,
        hidden: tuple[int, ...] = (64, 64, 64),
        layer_type: str = "concatsquash",
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        dims = [dim, *hidden, dim]
        layer = _LAYERS[layer_type]
        self.layers = nn.ModuleList(layer(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = _ACTIVATIONS[activation]

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            z = layer(t, z)
            if i < len(self.layers) - 1:
                z = self.act(z)
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
        num_blocks: CNFs stacked, each with its own field (FFJORD's tabular models).
        layer_type: ``"concatsquash"`` or ``"concat"`` (the time as an extra input).
        activation: ``"tanh"`` or ``"softplus"``.
        max_num_steps: Step budget of each adaptive solve (a stiffer solve raises
            ``ODEBudgetError`` naming it; never a hang).

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
        num_blocks: int = 1,
        layer_type: str = "concatsquash",
        activation: str = "tanh",
        max_num_steps: int = 10_000,
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
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be an integer >= 1, got {num_blocks!r}")
        for arg, value, valid in (("layer_type", layer_type, _LAYERS),
                                  ("activation", activation, _ACTIVATIONS)):  # fmt: skip
            if value not in valid:
                raise ValueError(f"unknown {arg} {value!r}; valid: {', '.join(valid)}")
        self.dim = int(dim)

        def block() -> CNF:
            field = ConcatSquashMLP(self.dim, tuple(hidden), layer_type, activation)
            return CNF(
                field, trace=trace, noise=noise, T=T, method=method, rtol=rtol, atol=atol,
                adjoint=adjoint, kinetic_energy=kinetic_energy,
                jacobian_frobenius=jacobian_frobenius, max_num_steps=max_num_steps,
            )  # fmt: skip

        self.cnf = block()  # the first block (the only one of the 2-D models)
        self.field = self.cnf.dynamics.func
        self.more = nn.ModuleList(block() for _ in range(num_blocks - 1))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    @property
    def blocks(self) -> list[CNF]:
        """The stacked CNFs, data side first."""
        return [self.cnf, *self.more]

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

    def to_flow_space(self, x: Tensor) -> Tensor:
        """The data as the flow sees it (vectors: unchanged; checked)."""
        return self._check(x)

    def transform(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data to base: ``(z, delta_logp)`` with ``log p(x) = log N(z) - delta_logp``."""
        z = self._check(x)
        dlogp = z.new_zeros(z.shape[0])
        for blk in self.blocks:
            z, dlogp = blk(z, dlogp)
        return z, dlogp

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` in nats, shape ``(B,)``."""
        x = self._check(x)
        if x.shape[0] == 0:
            return x.new_zeros(0)
        z, dlogp = self.transform(x)
        return _std_normal_logp(z) - dlogp

    def forward(self, x: Tensor) -> Tensor:
        """The family's forward: ``log p(x)`` in nats per sample."""
        return self.log_prob(x)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        parallel=None,
    ) -> Tensor:
        """``n`` samples ``(n, dim)``: base normal draws carried back by the reverse ODE.

        Args:
            n: How many samples.
            generator: The random draws' generator (seeded for reproducible samples).
            steps: Integrate the reverse ODE with this many RK4 steps (a fixed grid) instead of
                the adaptive solver.
            parallel: With ``steps``, a fixed-point solver of the zoo (``Picard``,
                ``Anderson``, ...) that solves the whole grid trajectory at once, every round
                one batched evaluation of the field at all the steps' times
                (:func:`zoo.nn.parallel_grid_nodes`); its rounds are in
                ``model.last_sample_stats``.
        """
        check_sample_count(n, self.dim)
        if parallel is not None and steps is None:
            raise ValueError("parallel=... solves a fixed grid: give the number of steps too")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"generator must be a torch.Generator (or None), got {type(generator).__name__}; "
                "use torch.Generator().manual_seed(SEED)"
            )
        p = next(self.parameters())
        x = torch.randn(n, self.dim, generator=generator, dtype=p.dtype).to(p.device)
        if steps is None:
            for blk in reversed(self.blocks):
                x, _ = blk(x, reverse=True)
            return x
        from ..nn import parallel_grid_nodes
        from ..solvers import Picard

        # a fixed grid from T down to 0; sequentially it is Picard with K rounds, run in order
        self.last_sample_stats = []
        for blk in reversed(self.blocks):
            field = blk.dynamics.func
            if parallel is None:
                h = -blk.T / steps
                for k in range(steps):
                    t = torch.full((n,), blk.T + k * h, dtype=x.dtype, device=x.device)
                    k1 = field(t, x)
                    k2 = field(t + h / 2, x + h / 2 * k1)
                    k3 = field(t + h / 2, x + h / 2 * k2)
                    k4 = field(t + h, x + h * k3)
                    x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            else:
                solver = parallel if not isinstance(parallel, str) else Picard(max_iter=steps)
                Z, stats = parallel_grid_nodes(field, x, blk.T, 0.0, steps, solver)
                self.last_sample_stats.append(stats)
                x = Z[-1]
        return x

    @property
    def reg(self) -> dict[str, Tensor]:
        """RNODE terms of the last call (``(B,)`` each, summed over blocks), when switched on."""
        return summed_regs(self.blocks)


def check_sample_count(n, per_sample: int = 1, bytes_per_value: int = 4) -> None:
    """``n`` is a positive integer whose samples fit in memory (with the solver's working
    copies, about 16 of them); else a clear error naming ``n``, before anything is allocated."""
    import os

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of samples) must be an integer >= 1, got {n!r}")
    need = 16 * n * per_sample * bytes_per_value
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not a POSIX system
        return
    if need > have:
        raise ValueError(
            f"sample(n={n:,}) needs about {need / 2**30:,.0f} GiB (the samples and the solver's "
            f"working copies); this machine has {have / 2**30:,.0f} GiB. Draw them in chunks: "
            "torch.cat([model.sample(k) for _ in range(n // k)])"
        )


def summed_regs(blocks) -> dict[str, Tensor]:
    """The RNODE terms of the last call of each CNF in ``blocks``, summed per term."""
    out: dict[str, Tensor] = {}
    for blk in blocks:
        for k, v in blk.reg.items():
            out[k] = out[k] + v if k in out else v
    return out


def _std_normal_logp(z: Tensor) -> Tensor:
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * math.log(2 * math.pi))


@register_model(family="ffjord", task="density-estimation")
def ffjord_toy(**kwargs) -> FFJORD:
    """FFJORD's 2-D toy configuration: three 64-unit concatsquash layers, T=0.5, exact trace."""
    return FFJORD(**kwargs)


def _tabular(dim: int, hidden, num_blocks: int, activation: str, layer_type: str, kwargs):
    args = dict(dim=dim, hidden=hidden, num_blocks=num_blocks, activation=activation,
                layer_type=layer_type, trace="hutchinson", adjoint=True, T=1.0, rtol=1e-6,
                atol=1e-8)  # fmt: skip
    return FFJORD(**(args | kwargs))


# FFJORD's tabular settings (its run commands: --nhidden, --hdim_factor x dim, --num_blocks,
# --nonlinearity, --layer_type; its train_tabular.py defaults: Hutchinson trace, adjoint, dopri5
# at rtol 1e-6 / atol 1e-8, T = 1). FFJORD also learns the end time (train_T); here T stays at
# its initial 1.0. GPU recipes: recipes/ffjord/ffjord_<data>_gpu.yaml.
@register_model(family="ffjord", task="density-estimation")
def ffjord_power(**kwargs) -> FFJORD:
    """POWER (6 dims): 5 CNFs of 3 x 60 tanh concat layers."""
    return _tabular(6, (60, 60, 60), 5, "tanh", "concat", kwargs)


@register_model(family="ffjord", task="density-estimation")
def ffjord_gas(**kwargs) -> FFJORD:
    """GAS (8 dims): 5 CNFs of 3 x 160 tanh concat layers."""
    return _tabular(8, (160, 160, 160), 5, "tanh", "concat", kwargs)


@register_model(family="ffjord", task="density-estimation")
def ffjord_hepmass(**kwargs) -> FFJORD:
    """HEPMASS (21 dims): 10 CNFs of 2 x 210 softplus concat layers."""
    return _tabular(21, (210, 210), 10, "softplus", "concat", kwargs)


@register_model(family="ffjord", task="density-estimation")
def ffjord_miniboone(**kwargs) -> FFJORD:
    """MINIBOONE (43 dims): 1 CNF of 2 x 860 softplus concat layers."""
    return _tabular(43, (860, 860), 1, "softplus", "concat", kwargs)


@register_model(family="ffjord", task="density-estimation")
def ffjord_bsds300(**kwargs) -> FFJORD:
    """BSDS300 (63 dims): 2 CNFs of 3 x 1260 tanh concatsquash layers."""
    return _tabular(63, (1260, 1260, 1260), 2, "tanh", "concatsquash", kwargs)


_FFJORD_PAPER = (
    "Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud. FFJORD: Free-form Continuous Dynamics "
    "for Scalable Reversible Generative Models. ICLR 2019. arXiv:1810.01367"
)
_TOY_ARGS = {"n_train": 100_000, "n_test": 100_000}
_TOY_TOLS = [1e-2, 1e-3, 1e-4, 1e-6]  # the card's NLL-vs-NFE curve (rtol = atol)


def _toy(density: str, recipe: str, **extra) -> dict:
    return dict(
        task="density-estimation",
        dataset=density,
        datamodule="toy2d",
        datamodule_args={"density": density, **_TOY_ARGS},
        license="apache-2.0",
        paper=_FFJORD_PAPER,
        recipe=f"recipes/ffjord/{recipe}.yaml",
        card_tolerances=_TOY_TOLS,
        **extra,
    )


register_pretrained(
    {
        "ffjord_toy.8gaussians": _toy(
            "8gaussians",
            "ffjord_toy.8gaussians",
        ),
        "ffjord_toy.checkerboard": _toy(
            "checkerboard",
            "ffjord_toy.checkerboard",
        ),
        "ffjord_toy.pinwheel": _toy(
            "pinwheel",
            "ffjord_toy.pinwheel",
        ),
        "ffjord_toy.2spirals": _toy(
            "2spirals",
            "ffjord_toy.2spirals",
        ),
        "ffjord_toy.rnode_8gaussians": _toy(
            "8gaussians",
            "ffjord_toy.rnode_8gaussians",
        ),
        "ffjord_toy.cfm_8gaussians": _toy(
            "8gaussians",
            "ffjord_toy.cfm_8gaussians",
        ),
    }
)
