"""Neural controlled differential equations (Kidger, Morrill, Foster, Lyons, NeurIPS 2020).

The hidden state follows ``dz = f(z) dX(t)``: a vector field ``f`` (a matrix per state) driven
by a continuous path ``X`` through each series' observations, integrated as the ODE
``dz/dt = f(z) dX/dt`` by the zoo's :class:`~zoo.nn.ODEBlock` (NFE counted, a test-time
``rtol``/``atol`` budget, the adjoint optional). A label head reads the final state.

The path: cubic Hermite interpolation with backward differences (Morrill et al. 2021, "Neural
CDEs for online prediction tasks") through each series' own observation times, on the channels
``[t, x (last observation carried forward), cumulative observation count / 10]``. It is chosen
over the 2020 paper's natural cubic spline because it is causal (the path up to a knot depends
on the observations up to that knot, so the model can score a stay as it unfolds), local (no
tridiagonal solve over the whole series) and continuously differentiable (an adaptive solver
sees no jump in ``dX/dt``); over the rectilinear path because it needs no doubled knots. Missing
channels are carried forward and the counts tell the model how much was observed (the paper's
observational-intensity channels). Before a series' first and after its last observation the
path is flat, so the state only moves while the series is observed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..nn import ODEBlock
from ._registry import register_model, register_pretrained
from .latent_ode import PHYSIONET_1H_MORTALITY, TimeSeriesModel, make_label_head, ragged_from_union

__all__ = ["HermitePath", "NeuralCDE"]


class HermitePath:
    """A batch of cubic Hermite paths with backward-difference slopes, one per series.

    Args:
        times: ``(B, L)`` each series' knot times, increasing over its first ``lengths[b]``
            entries (the rest is padding).
        x: ``(B, L, C)`` the path's values at the knots.
        lengths: ``(B,)`` real knots per series.

    On ``[t_k, t_{k+1}]`` the path is the cubic with values ``x_k, x_{k+1}`` and slopes
    ``m_k, m_{k+1}``, where ``m_k = (x_k - x_{k-1}) / (t_k - t_{k-1})`` and ``m_0 = 0``; before
    the first knot and after the last it is constant.

    Example:
        >>> import torch
        >>> t = torch.tensor([[0.0, 1.0, 2.0]]); x = torch.tensor([[[0.0], [1.0], [3.0]]])
        >>> p = HermitePath(t, x, torch.tensor([3]))
        >>> float(p.evaluate(torch.tensor(1.0))), float(p.derivative(torch.tensor(1.0)))
        (1.0, 1.0)
    """

    def __init__(self, times: Tensor, x: Tensor, lengths: Tensor) -> None:
        B, L, _ = x.shape
        valid = torch.arange(L, device=x.device)[None] < lengths[:, None]
        big = torch.finfo(times.dtype).max
        self.knots = torch.where(valid, times, torch.full_like(times, big))  # padding: +max
        self.lengths = lengths
        h = (times[:, 1:] - times[:, :-1]).unsqueeze(-1)  # (B, L-1, 1)
        ok = valid[:, 1:, None]
        h = torch.where(ok, h, torch.ones_like(h))
        dx = torch.where(ok, x[:, 1:] - x[:, :-1], torch.zeros_like(x[:, 1:]))
        secant = dx / h  # slope of each interval
        m0 = torch.cat([torch.zeros_like(x[:, :1]), secant[:, :-1]], 1)  # slope at each start
        m1 = secant  # slope at each end (the backward difference there)
        self.x0, self.m0, self.h = x[:, :-1], m0, h
        self.c2 = (3 * secant - 2 * m0 - m1) / h
        self.c3 = (m0 + m1 - 2 * secant) / h**2
        self.x = x

    def _interval(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per series: the interval index holding ``t`` (clamped), the offset into it, and
        whether ``t`` is inside the series' span."""
        tt = t.reshape(1, 1).expand(self.knots.shape[0], 1).to(self.knots.dtype)
        k = torch.searchsorted(self.knots, tt.contiguous(), right=True).squeeze(1) - 1
        inside = (k >= 0) & (k <= self.lengths - 2)
        k = k.clamp(0, max(self.knots.shape[1] - 2, 0))
        s = tt.squeeze(1) - self.knots.gather(1, k[:, None]).squeeze(1)
        return k, s, inside

    def _at(self, coef: Tensor, k: Tensor) -> Tensor:
        return coef.gather(1, k[:, None, None].expand(-1, 1, coef.shape[-1])).squeeze(1)

    def derivative(self, t: Tensor) -> Tensor:
        """``dX/dt`` at time ``t`` for every series, ``(B, C)`` (0 outside its span)."""
        if self.knots.shape[1] < 2:
            return self.x.new_zeros(self.x.shape[0], self.x.shape[-1])
        k, s, inside = self._interval(t)
        s = s[:, None].to(self.x.dtype)
        d = self._at(self.m0, k) + 2 * self._at(self.c2, k) * s + 3 * self._at(self.c3, k) * s**2
        return torch.where(inside[:, None], d, torch.zeros_like(d))

    def evaluate(self, t: Tensor) -> Tensor:
        """``X(t)`` for every series, ``(B, C)``."""
        B = self.x.shape[0]
        first, last = self.x[:, 0], self.x[torch.arange(B), (self.lengths - 1).clamp_min(0)]
        if self.knots.shape[1] < 2:
            return first
        k, s, inside = self._interval(t)
        s = s[:, None].to(self.x.dtype)
        v = self._at(self.x0, k) + self._at(self.m0, k) * s
        v = v + self._at(self.c2, k) * s**2 + self._at(self.c3, k) * s**3
        before = t.to(self.knots.dtype) < self.knots[:, 0]
        out = torch.where(inside[:, None], v, last)
        return torch.where(before[:, None], first, out)


def observation_path(times: Tensor, values: Tensor, mask: Tensor) -> HermitePath:
    """The NCDE's input path from a batch on its union grid: per series, knots at its own
    observation times; channels ``[t, last observation carried forward, count / 10]``."""
    r = ragged_from_union(times, values, mask)
    B, L, D = r.values.shape
    pos = torch.arange(L, device=values.device)[None, :, None].expand(B, L, D)
    last = torch.where(r.mask > 0, pos, torch.zeros_like(pos)).cummax(1).values
    carried = r.values.gather(1, last) * (r.mask.cumsum(1) > 0)  # 0 before a first observation
    counts = r.mask.cumsum(1) / 10.0
    x = torch.cat([r.times.unsqueeze(-1).to(values.dtype), carried, counts], -1)
    return HermitePath(r.times.to(values.dtype), x, r.lengths)


class _Driven(nn.Module):
    """``dz/dt = f(z) dX/dt`` for the path of the current batch."""

    def __init__(self, hidden: int, channels: int, units: int, layers: int) -> None:
        super().__init__()
        dims = [hidden] + [units] * layers
        mlp: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mlp += [nn.Linear(a, b), nn.Softplus()]
        self.f = nn.Sequential(*mlp, nn.Linear(dims[-1], hidden * channels), nn.Tanh())
        self.hidden, self.channels = hidden, channels
        self.path: HermitePath | None = None  # set by NeuralCDE for each batch

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        if self.path is None:
            raise RuntimeError("the driving path is set by NeuralCDE.forward; call the model")
        fz = self.f(z).view(z.shape[0], self.hidden, self.channels)
        return torch.bmm(fz, self.path.derivative(t).to(z.dtype).unsqueeze(-1)).squeeze(-1)


class NeuralCDE(TimeSeriesModel):
    """A neural CDE classifier of irregular series: ``z(t_0) = W X(t_0)``, ``dz = f(z) dX``,
    and the label head on ``z`` at the end of the series.

    Args:
        input_dim: Observed variables (41 for PhysioNet).
        hidden: State size.
        units: Hidden units of the vector field.
        layers: Hidden layers of the vector field.
        method: torchdiffeq method (adaptive ``dopri5`` by default: ``rtol``/``atol`` are the
            test-time budget).
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        adjoint: Gradients by the adjoint method (memory constant in the number of steps).

    It reconstructs nothing (:attr:`reconstructs` is False): the task trains it on the label
    alone.

    Example:
        >>> import torch
        >>> m = NeuralCDE(input_dim=3, hidden=4, units=8)
        >>> t = torch.linspace(0, 1, 5); x = torch.randn(2, 5, 3); mk = torch.ones(2, 5, 3)
        >>> m(t, x, mk)["logits"].shape, m.predict_proba(t, x, mk).shape
        (torch.Size([2]), torch.Size([2]))
    """

    arch = "ncde"
    description = "A neural controlled differential equation classifier of irregular series"
    reconstructs = False

    def __init__(
        self,
        input_dim: int = 41,
        hidden: int = 32,
        units: int = 64,
        layers: int = 2,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
    ) -> None:
        super().__init__()
        self._capture(locals())
        channels = 2 * input_dim + 1
        self.initial = nn.Linear(channels, hidden)
        self.field = _Driven(hidden, channels, units, layers)
        self.ode = ODEBlock(self.field, method=method, rtol=rtol, atol=atol, adjoint=adjoint)
        self.label_head = make_label_head(hidden)
        self.input_dim, self.hidden, self.obsrv_std = input_dim, hidden, 1.0

    @property
    def nfe(self) -> dict[str, int]:
        return {"ode_forward": self.ode.nfe_forward, "ode_backward": self.ode.nfe_backward}

    def loss(self, out: dict, values: Tensor, mask: Tensor, kl_weight: float = 1.0) -> Tensor:
        """No reconstruction term: the task adds the label's cross-entropy."""
        return out["logits"].new_zeros(())

    def final_state(self, times: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """``z`` at the end of each series, ``(B, hidden)``."""
        path = observation_path(times, values, mask)
        z0 = self.initial(path.x[:, 0])
        self.field.path = path
        try:
            end = torch.stack([times.new_zeros(()), times.max().clamp_min(1e-6)])
            return self.ode(z0, t=end)
        finally:
            self.field.path = None

    def reconstruct(
        self,
        times: Tensor,
        values: Tensor,
        cond_mask: Tensor,
        query_mask: Tensor | None = None,
        n_samples: int = 1,
    ) -> dict[str, Any]:
        self.check_inputs(times, values, cond_mask)
        values = torch.where(cond_mask > 0, values, torch.zeros_like(values))
        z = self.final_state(times, values, cond_mask)
        return {"mean": None, "kl": None, "logits": self.label_head(z).squeeze(-1)}

    def predict(self, *args, **kwargs):
        raise ValueError(
            "a NeuralCDE classifies series (predict_proba); it does not forecast values: use a "
            "latent ODE or an ODE-RNN for that"
        )


@register_model(family="ncde", task="time-series-classification")
def ncde(**kwargs) -> NeuralCDE:
    """A neural CDE with a cubic Hermite (backward differences) observation path."""
    return NeuralCDE(**kwargs)


_NCDE_PAPER = (
    "Kidger, Morrill, Foster, Lyons. Neural Controlled Differential Equations for Irregular Time "
    "Series. NeurIPS 2020. arXiv:2005.08926"
)

register_pretrained(
    {
        "ncde.physionet_mortality": dict(
            PHYSIONET_1H_MORTALITY,
            paper=_NCDE_PAPER,
            recipe="recipes/ncde/ncde.physionet_mortality.yaml",
        ),
    }
)
