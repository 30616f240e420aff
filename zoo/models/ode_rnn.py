"""The Latent ODE paper's baselines for irregular time series (Rubanova et al. 2019, Table 2).

* :class:`ODERNN`: a GRU whose state follows an ODE between observations (``ode_rnn``).
* :class:`GRUDeltaT`: a GRU that is told the time gap, with a state frozen between
  observations (``gru_delta_t``).
* :class:`GRUD`: a GRU whose state and missing inputs decay with the time since each variable
  was seen (``gru_d``).
* :class:`RNNVAE`: a VAE with a GRU encoder and a GRU decoder fed the time gaps (``rnn_vae``).

The two recurrent predictors run forwards over each series' own points and predict each point
from the state *before* that point's update, so a reconstruction never copies its input (the
reference code decodes the updated state and shifts it by one step, which amounts to a
prediction from the previous point's state without the ODE's evolution to the new time).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..nn import integrate_intervals
from ._registry import register_model, register_pretrained
from .latent_ode import (
    HOPPER_10PCT,
    HOPPER_CONVERGE,
    PHYSIONET_1H_MORTALITY,
    PHYSIONET_1MIN,
    PHYSIONET_1MIN_EXTRAP,
    PHYSIONET_1MIN_MORTALITY,
    ODEFunc,
    Ragged,
    RNNEncoder,
    TimeSeriesModel,
    _kl_std_normal,
    make_label_head,
    ragged_from_union,
    series_entry,
)

__all__ = ["ODERNN", "GRUDeltaT", "GRUD", "RNNVAE"]

_GRUD_PAPER = (
    "Che, Purushotham, Cho, Sontag, Liu. Recurrent Neural Networks for Multivariate Time Series "
    "with Missing Values. Scientific Reports 2018. arXiv:1606.01865"
)


class _RecurrentPredictor(TimeSeriesModel):
    """Forward recurrent model: evolve to the next point, predict it, update with it."""

    _uses_gap = False

    def _init_common(
        self, input_dim: int, rec_dims: int, units: int, obsrv_std: float, classifier: bool
    ) -> None:
        extra = 1 if self._uses_gap else 0
        self.label_head = make_label_head(rec_dims) if classifier else None
        self.gru = nn.GRUCell(2 * input_dim + extra, rec_dims)
        self.readout = nn.Sequential(
            nn.Linear(rec_dims + extra, units), nn.Tanh(), nn.Linear(units, input_dim)
        )
        self.input_dim, self.rec_dims, self.obsrv_std = input_dim, rec_dims, obsrv_std
        self.nfe = 0

    def _evolve(self, h: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        return h

    def _begin(self, r: Ragged) -> Any:
        """Per-series state carried beside the GRU's (none for the plain predictors)."""
        return None

    def _step(
        self, h: Tensor, carry: Any, x: Tensor, m: Tensor, seen: Tensor, t_prev: Tensor, t_k: Tensor
    ) -> tuple[Tensor, Tensor, Any]:
        """Predict the point at ``t_k`` from the state before it, then update with it (the
        update only where ``seen``). Returns the prediction, the new state and the carry."""
        h = self._evolve(h, t_prev, t_k)
        gap = (t_k - t_prev)[:, None]
        pred = self.readout(torch.cat([h, gap], -1) if self._uses_gap else h)
        inp = [x, m] + ([gap] if self._uses_gap else [])
        h = torch.where(seen[:, None], self.gru(torch.cat(inp, -1), h), h)
        return pred, h, carry

    def reconstruct(
        self,
        times: Tensor,
        values: Tensor,
        cond_mask: Tensor,
        query_mask: Tensor | None = None,
        n_samples: int = 1,
    ) -> dict[str, Any]:
        self.check_inputs(times, values, cond_mask)
        self.reset_nfe()
        query_mask = cond_mask if query_mask is None else query_mask
        values = torch.where(cond_mask > 0, values, torch.zeros_like(values))
        points = (cond_mask.amax(-1) > 0) | (query_mask.amax(-1) > 0)
        r = ragged_from_union(times, values, cond_mask, points)
        B, L, _ = r.values.shape
        h = values.new_zeros(B, self.rec_dims)
        t_prev = r.times[:, 0]
        carry = self._begin(r)
        preds = []
        for k in range(L):
            valid = k < r.lengths
            t_k = torch.where(valid, r.times[:, k], t_prev)
            seen = valid & (r.mask[:, k].amax(-1) > 0)
            pred, h, carry = self._step(h, carry, r.values[:, k], r.mask[:, k], seen, t_prev, t_k)
            preds.append(pred)
            t_prev = t_k
        mean = r.scatter(torch.stack(preds, 1), times.shape[0])
        out = {"mean": mean.unsqueeze(0).expand(n_samples, -1, -1, -1), "kl": None}
        if self.label_head is not None:  # from the state after the series' last observation
            out["logits"] = self.label_head(h).squeeze(-1)
        return out


class ODERNN(_RecurrentPredictor):
    """ODE-RNN (Rubanova et al. 2019): between observations the GRU state follows
    ``dh/dt = f(h)``, integrated per series over its own gaps in one vectorized solve.

    Args:
        input_dim: Observed variables.
        rec_dims: GRU state size.
        units: Hidden units of the vector field and read-out.
        layers: Hidden layers of the vector field.
        obsrv_std: Std of the Gaussian observation model (the loss's scale).
        method: Solver between observations (``euler``, ``rk4`` or a torchdiffeq adaptive one).
        steps: Fixed steps per gap for ``euler``/``rk4``.
        classifier: Add the reference's label head on the state after the last observation
            (``logits`` in the outputs, :meth:`predict_proba`).

    Example:
        >>> m = ODERNN(input_dim=3, rec_dims=6, units=8)
        >>> t = torch.linspace(0, 1, 5); x = torch.randn(2, 5, 3); mk = torch.ones(2, 5, 3)
        >>> m(t, x, mk)["mean"].shape  # (samples, batch, time, variables), as every series model
        torch.Size([1, 2, 5, 3])
    """

    arch = "ode_rnn"
    description = "An ODE-RNN for irregularly-sampled time series (the Latent ODE's baseline)"

    def __init__(
        self,
        input_dim: int = 41,
        rec_dims: int = 40,
        units: int = 100,
        layers: int = 1,
        obsrv_std: float = 0.01,
        method: str = "rk4",
        steps: int = 1,
        classifier: bool = False,
    ) -> None:
        super().__init__()
        self._capture(locals())
        self._init_common(input_dim, rec_dims, units, obsrv_std, classifier)
        self.func = ODEFunc(rec_dims, units, layers)
        self.method, self.steps = method, steps

    def _evolve(self, h, t0, t1):
        if not bool((t0 != t1).any()):
            return h
        self.nfe += self.steps * (4 if self.method == "rk4" else 1)
        return integrate_intervals(self.func, h, t0, t1, method=self.method, steps=self.steps)


class GRUDeltaT(_RecurrentPredictor):
    """GRU-Δt: a GRU with the time since the previous observation as an input, and the same gap
    given to the read-out that predicts the next point.

    Args:
        input_dim: Observed variables.
        rec_dims: GRU state size.
        units: Hidden units of the read-out.
        obsrv_std: Std of the Gaussian observation model (the loss's scale).
        classifier: Add the reference's label head on the state after the last observation.

    Example:
        >>> m = GRUDeltaT(input_dim=3, rec_dims=6, units=8)
        >>> m(torch.linspace(0, 1, 4), torch.randn(2, 4, 3), torch.ones(2, 4, 3))["mean"].shape
        torch.Size([1, 2, 4, 3])
    """

    arch = "gru_delta_t"
    description = "A GRU-Δt baseline for irregularly-sampled time series"
    _uses_gap = True

    def __init__(
        self,
        input_dim: int = 41,
        rec_dims: int = 40,
        units: int = 100,
        obsrv_std: float = 0.01,
        classifier: bool = False,
    ) -> None:
        super().__init__()
        self._capture(locals())
        self._init_common(input_dim, rec_dims, units, obsrv_std, classifier)


class GRUD(_RecurrentPredictor):
    """GRU-D (Che et al. 2018; a baseline of Rubanova et al. 2019): a GRU whose missing inputs
    and state decay with the time since each variable was last seen.

    At each of a series' points, with ``delta[d]`` the time since variable ``d`` was last
    observed (since the series' first point if never), in units of ``time_scale``:

    * the state decays first, ``h <- exp(-relu(W_h delta + b_h)) * h``, and the point is
      predicted from it;
    * each missing input is replaced by its last value decayed towards a mean,
      ``x_hat = g * x_last + (1 - g) * mean`` with ``g = exp(-relu(w_x * delta + b_x))``
      (one weight a variable); observed inputs are kept;
    * the GRU updates the state with ``[x_hat, mask]``.

    The paper decays towards each variable's mean over the training set; here the mean is a
    parameter, zero at the start and learned with the rest, so that a checkpoint needs nothing
    from its data set. Before a variable's first observation its last value is that mean.

    Args:
        input_dim: Observed variables.
        rec_dims: GRU state size.
        units: Hidden units of the read-out.
        obsrv_std: Std of the Gaussian observation model (the loss's scale).
        time_scale: How many decay units one unit of the series' time is. PhysioNet's batches
            put the 48-hour window on [0, 1], so 48 (the default) measures the gaps in hours,
            as the paper does.
        classifier: Add the reference's label head on the state after the last observation.

    Example:
        >>> m = GRUD(input_dim=3, rec_dims=6, units=8)
        >>> m(torch.linspace(0, 1, 4), torch.randn(2, 4, 3), torch.ones(2, 4, 3))["mean"].shape
        torch.Size([1, 2, 4, 3])
    """

    arch = "gru_d"
    description = "A GRU-D baseline for irregularly-sampled time series"

    def __init__(
        self,
        input_dim: int = 41,
        rec_dims: int = 40,
        units: int = 100,
        obsrv_std: float = 0.01,
        time_scale: float = 48.0,
        classifier: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)):
            raise TypeError(f"time_scale must be a positive number, got {time_scale!r}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale!r}")
        self._capture(locals())
        self._init_common(input_dim, rec_dims, units, obsrv_std, classifier)
        bound = input_dim**-0.5
        self.decay_h = nn.Linear(input_dim, rec_dims)
        self.decay_x_weight = nn.Parameter(torch.empty(input_dim).uniform_(-bound, bound))
        self.decay_x_bias = nn.Parameter(torch.empty(input_dim).uniform_(-bound, bound))
        self.mean = nn.Parameter(torch.zeros(input_dim))
        self.time_scale = float(time_scale)

    def _begin(self, r: Ragged) -> tuple[Tensor, Tensor]:
        B, _, D = r.values.shape
        last_x = self.mean.to(r.values.dtype).expand(B, D)
        last_t = r.times[:, :1].expand(B, D)
        return last_x, last_t

    def _step(self, h, carry, x, m, seen, t_prev, t_k):
        last_x, last_t = carry
        delta = (t_k[:, None] - last_t) * self.time_scale
        moved = (t_k > t_prev)[:, None]  # a padded step neither moves in time nor decays
        h = torch.where(moved, torch.exp(-torch.relu(self.decay_h(delta))) * h, h)
        pred = self.readout(h)
        g = torch.exp(-torch.relu(self.decay_x_weight * delta + self.decay_x_bias))
        x_hat = m * x + (1 - m) * (g * last_x + (1 - g) * self.mean)
        h = torch.where(seen[:, None], self.gru(torch.cat([x_hat, m], -1), h), h)
        observed = m > 0
        last_x = torch.where(observed, x, last_x)
        last_t = torch.where(observed, t_k[:, None].expand_as(last_t), last_t)
        return pred, h, (last_x, last_t)


class RNNVAE(TimeSeriesModel):
    """RNN-VAE (Chen et al. 2018; Rubanova et al. 2019 baseline): a GRU encoder run backwards
    with time gaps gives ``q(z0 | x)``; a GRU decoder started from ``z0`` and fed the time gaps
    emits the Gaussian mean at every time of the grid.

    Example:
        >>> m = RNNVAE(input_dim=3, latent_dim=4, rec_dims=6, units=8)
        >>> out = m.reconstruct(torch.linspace(0, 1, 5), torch.randn(2, 5, 3), torch.ones(2, 5, 3))
        >>> out["mean"].shape
        torch.Size([1, 2, 5, 3])
    """

    arch = "rnn_vae"
    description = "An RNN-VAE baseline for irregularly-sampled time series"

    def __init__(
        self,
        input_dim: int = 41,
        latent_dim: int = 20,
        rec_dims: int = 40,
        units: int = 100,
        obsrv_std: float = 0.01,
    ) -> None:
        super().__init__()
        self._capture(locals())
        self.label_head = None  # reconstruction only
        self.encoder = RNNEncoder(input_dim, latent_dim, rec_dims, units)
        self.init_h = nn.Linear(latent_dim, units)
        self.dec_gru = nn.GRUCell(1, units)
        self.readout = nn.Linear(units, input_dim)
        self.obsrv_std, self.units, self.input_dim = obsrv_std, units, input_dim

    def reconstruct(self, times, values, cond_mask, query_mask=None, n_samples=1):
        self.check_inputs(times, values, cond_mask)
        values = torch.where(cond_mask > 0, values, torch.zeros_like(values))
        mean, std = self.encoder(ragged_from_union(times, values, cond_mask))
        z0 = self._sample_z0(mean, std, n_samples)
        S, B, _ = z0.shape
        # the decoder's recurrence runs in float32 even under autocast: over the 1-minute
        # PhysioNet grid it is 2,000+ steps long, and bf16 rounding at every step moved the
        # test MSE by a third (tests/test_bad_inputs.py, the bf16 test), as a solver would
        with torch.autocast(z0.device.type, enabled=False):
            h = torch.tanh(self.init_h(z0.reshape(S * B, -1).to(self.init_h.weight.dtype)))
            outs, t_prev = [], times.new_zeros(())
            for k in range(times.shape[0]):
                gap = (times[k] - t_prev).expand(S * B, 1).to(h.dtype)
                h = self.dec_gru(gap, h)
                outs.append(self.readout(h))
                t_prev = times[k]
        mu = torch.stack(outs, 1).reshape(S, B, times.shape[0], -1)
        return {"mean": mu, "kl": _kl_std_normal(mean, std)}


@register_model(family="latent_ode", task="time-series")
def ode_rnn(**kwargs) -> ODERNN:
    """ODE-RNN baseline (40 GRU units, 100-unit vector field)."""
    return ODERNN(**kwargs)


@register_model(family="latent_ode", task="time-series")
def gru_delta_t(**kwargs) -> GRUDeltaT:
    """GRU-Δt baseline."""
    return GRUDeltaT(**kwargs)


@register_model(family="latent_ode", task="time-series")
def gru_d(**kwargs) -> GRUD:
    """GRU-D baseline (decay of the state and of missing inputs)."""
    return GRUD(**kwargs)


@register_model(family="latent_ode", task="time-series")
def rnn_vae(**kwargs) -> RNNVAE:
    """RNN-VAE baseline."""
    return RNNVAE(**kwargs)


register_pretrained(
    {
        "ode_rnn.physionet": series_entry(
            PHYSIONET_1MIN,
            "ode_rnn.physionet",
            "ode_rnn.physionet",
        ),
        "ode_rnn.physionet_mortality": series_entry(
            PHYSIONET_1MIN_MORTALITY,
            "ode_rnn.physionet_mortality",
            "ode_rnn.physionet_mortality",
        ),
        "gru_delta_t.physionet_mortality": series_entry(
            PHYSIONET_1H_MORTALITY,
            "gru_delta_t.physionet_mortality",
            "gru_delta_t.physionet_mortality",
        ),
        "gru_d.physionet_mortality": dict(
            series_entry(
                PHYSIONET_1H_MORTALITY,
                "gru_d.physionet_mortality",
                "gru_d.physionet_mortality",
            ),
            paper=_GRUD_PAPER,
        ),
        "rnn_vae.physionet": series_entry(
            PHYSIONET_1MIN,
            "rnn_vae.physionet",
            "rnn_vae.physionet",
        ),
        "rnn_vae.physionet_extrap": series_entry(
            PHYSIONET_1MIN_EXTRAP,
            "rnn_vae.physionet_extrap",
            "rnn_vae.physionet_extrap",
        ),
        "ode_rnn.hopper": series_entry(
            HOPPER_CONVERGE,
            "ode_rnn.hopper",
            "ode_rnn.hopper",
        ),
        "ode_rnn.hopper_10pct": series_entry(
            HOPPER_10PCT,
            "ode_rnn.hopper_10pct",
            "ode_rnn.hopper_10pct",
        ),
        "gru_delta_t.hopper_10pct": series_entry(
            HOPPER_10PCT,
            "gru_delta_t.hopper_10pct",
            "gru_delta_t.hopper_10pct",
        ),
        "gru_delta_t.hopper": series_entry(
            HOPPER_CONVERGE,
            "gru_delta_t.hopper",
            "gru_delta_t.hopper",
        ),
    }
)
