"""Latent ODEs for irregularly-sampled time series (Rubanova, Chen, Duvenaud, NeurIPS 2019).

https://arxiv.org/abs/1907.03907. A VAE: an ODE-RNN encoder runs backwards over each series'
own observation times and gives ``q(z0 | x)``; a latent ODE carries ``z0`` to every query
time; a linear decoder gives the Gaussian mean of each variable.

Speed: the encoder steps over each patient's own observations (ragged, padded to the
longest series in the batch) with per-sample time steps in one vectorized solve
(:func:`zoo.nn.integrate_intervals`), instead of every time point of the batch's union.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import ODEBlock, integrate_intervals
from ._base import ZooModel
from ._registry import register_model

__all__ = ["LatentODE", "ODEFunc", "ODERNNEncoder", "masked_mse", "ragged_from_union", "Ragged"]


class ODEFunc(nn.Module):
    """Autonomous MLP vector field ``dz/dt = net(z)`` (tanh), as in the reference code."""

    def __init__(self, dim: int, units: int = 100, layers: int = 1) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Linear(dim, units), nn.Tanh()]
        for _ in range(layers - 1):
            mods += [nn.Linear(units, units), nn.Tanh()]
        mods.append(nn.Linear(units, dim))
        self.net = nn.Sequential(*mods)
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.1)
                nn.init.zeros_(m.bias)

    def forward(self, t, z: Tensor) -> Tensor:
        return self.net(z)


@dataclass
class Ragged:
    """Each series on its own observation times, padded to the longest: ``times (B, L)``,
    ``values``/``mask (B, L, D)``, ``lengths (B,)``."""

    times: Tensor
    values: Tensor
    mask: Tensor
    lengths: Tensor


def ragged_from_union(times: Tensor, values: Tensor, mask: Tensor) -> Ragged:
    """Keep, per series, only the union time points where it has an observation."""
    obs = mask.amax(dim=-1) > 0  # (B, T)
    lengths = obs.sum(1)
    L = max(int(lengths.max()), 1)
    # stable sort puts observed steps first, in time order
    order = torch.sort((~obs).to(torch.int8), dim=1, stable=True).indices[:, :L]
    gather = order.unsqueeze(-1).expand(-1, -1, values.shape[-1])
    t = times[order]
    valid = torch.arange(L, device=times.device)[None] < lengths[:, None]
    return Ragged(
        torch.where(valid, t, t.new_zeros(())),
        values.gather(1, gather) * valid[..., None],
        mask.gather(1, gather) * valid[..., None],
        lengths,
    )


class ODERNNEncoder(nn.Module):
    """ODE-RNN run backwards in time; returns the mean and std of ``q(z0 | x)`` at ``t = 0``.

    Between observations the hidden state follows an ODE (``method``, ``steps`` per interval);
    at an observation a GRU cell updates it from ``[values, mask]``.
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        rec_dims: int = 40,
        units: int = 100,
        method: str = "euler",
        steps: int = 1,
    ) -> None:
        super().__init__()
        self.func = ODEFunc(rec_dims, units)
        self.gru = nn.GRUCell(2 * input_dim, rec_dims)
        self.out = nn.Sequential(
            nn.Linear(rec_dims, units), nn.Tanh(), nn.Linear(units, 2 * latent_dim)
        )
        self.rec_dims, self.method, self.steps = rec_dims, method, steps
        self.nfe = 0

    def forward(self, r: Ragged) -> tuple[Tensor, Tensor]:
        B, L, _ = r.values.shape
        h = r.values.new_zeros(B, self.rec_dims)
        idx_last = (r.lengths - 1).clamp_min(0)
        t_prev = r.times.gather(1, idx_last[:, None]).squeeze(1)
        for k in range(L - 1, -1, -1):
            valid = k < r.lengths
            t_k = torch.where(valid, r.times[:, k], t_prev)
            if bool((t_k != t_prev).any()):
                h = integrate_intervals(
                    self.func, h, t_prev, t_k, method=self.method, steps=self.steps
                )
                self.nfe += self.steps * (4 if self.method == "rk4" else 1)
            h_new = self.gru(torch.cat([r.values[:, k], r.mask[:, k]], dim=-1), h)
            h = torch.where(valid[:, None], h_new, h)
            t_prev = t_k
        # carry the state from the first observation back to t = 0
        zero = torch.zeros_like(t_prev)
        if bool((t_prev != 0).any()):
            h = integrate_intervals(
                self.func, h, t_prev, zero, method=self.method, steps=self.steps
            )
        mean, s = self.out(h).chunk(2, dim=-1)
        return mean, nn.functional.softplus(s) + 1e-4


class LatentODE(ZooModel):
    """Latent ODE VAE with an ODE-RNN encoder.

    Args:
        input_dim: Observed variables (41 for PhysioNet).
        latent_dim: Latent state size.
        rec_dims: Encoder hidden size.
        units: Hidden units of the vector fields.
        obsrv_std: Std of the Gaussian observation model.
        method: Decoder solver (torchdiffeq method).
        rtol: Decoder relative tolerance.
        atol: Decoder absolute tolerance.
        adjoint: Decoder gradients by the adjoint method.
        enc_method: Encoder solver between observations (``euler``/``rk4``/adaptive).
        enc_steps: Fixed steps per encoder interval.

    Example:
        >>> m = LatentODE(input_dim=3, latent_dim=4, rec_dims=6, units=8)
        >>> t = torch.linspace(0, 1, 5); x = torch.randn(2, 5, 3); mk = torch.ones(2, 5, 3)
        >>> out = m(t, x, mk, n_samples=2)
        >>> out["mean"].shape
        torch.Size([2, 2, 5, 3])
    """

    arch = "latent_ode"

    def __init__(
        self,
        input_dim: int = 41,
        latent_dim: int = 20,
        rec_dims: int = 40,
        units: int = 100,
        obsrv_std: float = 0.01,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
        enc_method: str = "euler",
        enc_steps: int = 1,
    ) -> None:
        super().__init__()
        self._capture(locals())
        self.encoder = ODERNNEncoder(input_dim, latent_dim, rec_dims, units, enc_method, enc_steps)
        self.decoder_ode = ODEBlock(
            ODEFunc(latent_dim, units), method=method, rtol=rtol, atol=atol, adjoint=adjoint
        )
        self.decoder = nn.Linear(latent_dim, input_dim)
        self.obsrv_std = obsrv_std
        self.input_dim, self.latent_dim = input_dim, latent_dim

    @property
    def nfe(self) -> dict[str, int]:
        return {
            "encoder": self.encoder.nfe,
            "decoder_forward": self.decoder_ode.nfe_forward,
            "decoder_backward": self.decoder_ode.nfe_backward,
        }

    @staticmethod
    def check_inputs(times: Tensor, values: Tensor, mask: Tensor) -> None:
        """Clear errors for shape mismatches, unsorted/duplicate times and NaN inside the mask."""
        if values.shape != mask.shape:
            raise ValueError(
                f"values {tuple(values.shape)} and mask {tuple(mask.shape)} must have the same shape"
            )
        if values.dim() != 3 or times.shape != values.shape[1:2]:
            raise ValueError(
                f"expected times (T,), values (B, T, D); got times {tuple(times.shape)}, "
                f"values {tuple(values.shape)}"
            )
        if times.numel() > 1 and not bool((times[1:] > times[:-1]).all()):
            raise ValueError(
                "time stamps must be strictly increasing (sort them and merge duplicates)"
            )
        if bool(torch.isnan(values[mask > 0]).any()):
            raise ValueError("NaN values inside the mask (observed points must be finite)")

    def encode(self, times: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        values = torch.where(
            mask > 0, values, torch.zeros_like(values)
        )  # NaN outside the mask is ignored
        return self.encoder(ragged_from_union(times, values, mask))

    def decode(self, z0: Tensor, query_times: Tensor) -> Tensor:
        """``z0 (S, B, latent)`` -> means ``(S, B, T, D)`` at ``query_times (T,)`` (from t=0)."""
        S, B, _ = z0.shape
        t = query_times
        if float(t[0]) != 0.0:
            t = torch.cat([t.new_zeros(1), t])
        traj = self.decoder_ode(z0.reshape(S * B, -1), t=t, return_all=True)  # (T', S*B, latent)
        if t.shape[0] != query_times.shape[0]:
            traj = traj[1:]
        return self.decoder(traj).permute(1, 0, 2).reshape(S, B, len(query_times), -1)

    def forward(
        self,
        times: Tensor,
        values: Tensor,
        mask: Tensor,
        query_times: Tensor | None = None,
        n_samples: int = 1,
    ) -> dict[str, Any]:
        """Encode the observed points and decode at ``query_times`` (default: ``times``)."""
        self.check_inputs(times, values, mask)
        mean, std = self.encode(times, values, mask)
        eps = torch.randn(n_samples, *mean.shape, device=mean.device, dtype=mean.dtype)
        z0 = (
            mean + std * eps
            if self.training or n_samples > 1
            else mean.unsqueeze(0).expand(n_samples, -1, -1)
        )
        mu = self.decode(z0, times if query_times is None else query_times)
        return {"mean": mu, "z0_mean": mean, "z0_std": std}

    def elbo(self, out: dict, values: Tensor, mask: Tensor, kl_weight: float = 1.0) -> Tensor:
        """IWAE-style bound of the reference code: per-point Gaussian log-likelihood averaged
        per patient, minus the KL of ``q(z0)`` from ``N(0, I)``; returns the loss (negated)."""
        mu = out["mean"]
        var = self.obsrv_std**2
        logp = -0.5 * ((values - mu) ** 2 / var + math.log(2 * math.pi * var)) * mask
        ll = logp.sum((2, 3)) / mask.sum((1, 2)).clamp_min(1)  # (S, B)
        q = torch.distributions.Normal(out["z0_mean"], out["z0_std"])
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean(
            -1
        )  # (B,)
        bound = torch.logsumexp(ll - kl_weight * kl, dim=0) - math.log(mu.shape[0])
        return -bound.mean()

    @torch.no_grad()
    def predict(
        self, times: Tensor, values: Tensor, mask: Tensor, query_times: Tensor, n_samples: int = 10
    ):
        """Mean and samples of the reconstruction at arbitrary ``query_times``.

        Returns:
            ``(mean (B, T, D), samples (S, B, T, D))``; samples draw ``z0`` from ``q(z0 | x)``.
        """
        was = self.training
        self.train()  # sample z0
        out = self(times, values, mask, query_times, n_samples=n_samples)
        self.train(was)
        return out["mean"].mean(0), out["mean"]


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Reconstruction MSE two ways.

    ``paper``: the reference code's figure: per patient and variable the mean squared error over
    observed points (0 for a variable the patient never had), averaged over variables, then
    over patients. ``masked_mean``: the plain mean over all observed points.
    """
    se = (pred - target) ** 2 * mask
    cnt = mask.sum(-2)  # (..., B, D)
    per_pd = torch.where(cnt > 0, se.sum(-2) / cnt.clamp_min(1), torch.zeros_like(cnt))
    return {"paper": per_pd.mean(-1).mean(), "masked_mean": se.sum() / mask.sum().clamp_min(1)}


@register_model(family="latent_ode", task="time-series")
def latent_ode(**kwargs) -> LatentODE:
    """The paper's PhysioNet configuration: 20 latents, 40 encoder units, 100-unit fields."""
    return LatentODE(**kwargs)
