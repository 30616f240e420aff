"""Latent ODE pieces: ragged batching, the encoder's per-patient steps, losses, bad input."""

import pytest
import torch

from zoo.models.latent_ode import LatentODE, ODERNNEncoder, masked_mse, ragged_from_union


def _batch():
    times = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    values = torch.randn(2, 5, 3)
    mask = torch.zeros(2, 5, 3)
    mask[0, [0, 2], 0] = 1
    mask[0, 4, 1] = 1
    mask[1, [1, 3], 2] = 1
    return times, values * mask, mask


def test_ragged_keeps_each_series_own_times():
    t, v, m = _batch()
    r = ragged_from_union(t, v, m)
    assert r.lengths.tolist() == [3, 2] and r.times.shape == (2, 3)
    assert r.times[0].tolist() == [0.0, 0.5, 1.0] and r.times[1, :2].tolist() == [0.25, 0.75]
    assert torch.equal(r.values[1, 0], v[1, 1]) and r.mask[1, 2].sum() == 0  # padding


def test_encoder_ignores_padding_and_other_series():
    """A series' posterior does not depend on which other series share its batch."""
    torch.manual_seed(0)
    enc = ODERNNEncoder(3, 4, rec_dims=6, units=8, method="rk4", steps=2)
    t, v, m = _batch()
    both = enc(ragged_from_union(t, v, m))
    alone = enc(ragged_from_union(t, v[:1], m[:1]))
    assert torch.allclose(both[0][:1], alone[0], atol=1e-6) and torch.allclose(
        both[1][:1], alone[1], atol=1e-6
    )


def test_forward_elbo_backward_and_predict():
    torch.manual_seed(0)
    model = LatentODE(input_dim=3, latent_dim=4, rec_dims=6, units=8).train()
    t, v, m = _batch()
    out = model(t, v, m, n_samples=3)
    assert out["mean"].shape == (3, 2, 5, 3)
    loss = model.elbo(out, v, m)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    assert model.nfe["encoder"] > 0 and model.nfe["decoder_forward"] > 0
    mean, samples = model.predict(t, v, m, query_times=torch.linspace(0, 1, 9), n_samples=4)
    assert mean.shape == (2, 9, 3) and samples.shape == (4, 2, 9, 3)


def test_mse_paper_and_masked_mean():
    target = torch.zeros(2, 3, 2)
    pred = torch.ones(2, 3, 2)
    mask = torch.zeros(2, 3, 2)
    mask[0, :, 0] = 1  # patient 0 has only variable 0 (3 points); patient 1 has one point of var 1
    mask[1, 0, 1] = 1
    res = masked_mse(pred, target, mask)
    # per patient/variable: p0 -> [1, 0 (never observed)], p1 -> [0, 1]; mean -> 0.5
    assert res["paper"].item() == pytest.approx(0.5) and res["masked_mean"].item() == pytest.approx(
        1.0
    )


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda t, v, m: (t, v, m[:, :4]), "same shape"),
        (lambda t, v, m: (t.flip(0), v, m), "strictly increasing"),
        (lambda t, v, m: (torch.tensor([0.0, 0.5, 0.5, 0.75, 1.0]), v, m), "strictly increasing"),
        (
            lambda t, v, m: (t, torch.where(m > 0, torch.tensor(float("nan")), v), m),
            "must be finite: NaN or inf inside the mask",
        ),
    ],
)
def test_bad_inputs(bad, match):
    model = LatentODE(input_dim=3, latent_dim=4, rec_dims=6, units=8)
    with pytest.raises(ValueError, match=match):
        model(*bad(*_batch()))


def test_nan_outside_mask_is_ignored():
    model = LatentODE(input_dim=3, latent_dim=4, rec_dims=6, units=8).eval()
    t, v, m = _batch()
    v2 = torch.where(m > 0, v, torch.tensor(float("nan")))
    torch.manual_seed(0)
    a = model(t, v, m)["mean"]
    torch.manual_seed(0)
    b = model(t, v2, m)["mean"]
    assert torch.allclose(a, b)
