"""Time-series baselines, the TimeSeries task's pieces, the simulated data, and DDP gradients."""

import math
import sys

import numpy as np
import pytest
import torch

from zoo.models.latent_ode import LatentODE, masked_mse
from zoo.models.ode_rnn import GRUD, ODERNN, RNNVAE, GRUDeltaT
from zoo.tasks import MaskedMSE, TimeSeries
from zoo.tasks.time_series import split_masks


def _batch(seed=0, B=3, T=6, D=2):
    g = torch.Generator().manual_seed(seed)
    times = torch.linspace(0, 1, T)
    mask = (torch.rand(B, T, D, generator=g) < 0.6).float()
    mask[:, 0, 0] = 1
    values = torch.randn(B, T, D, generator=g) * mask
    return times, values, mask


@pytest.mark.parametrize("cls", [ODERNN, GRUDeltaT, GRUD])
def test_predictor_never_sees_the_point_it_predicts(cls):
    torch.manual_seed(0)
    m = cls(input_dim=2, rec_dims=5, units=7).eval()
    t, v, mk = _batch()
    k = 3
    v2 = v.clone()
    v2[:, k] += 5.0 * mk[:, k]  # change the observations at time k only
    a, b = m(t, v, mk)["mean"][0], m(t, v2, mk)["mean"][0]
    assert torch.allclose(a[:, : k + 1], b[:, : k + 1])  # up to and including k: unchanged
    later = mk[:, k + 1 :].sum() > 0
    assert not later or not torch.allclose(a[:, k + 1 :], b[:, k + 1 :])
    assert torch.all(a[mk.amax(-1) == 0] == 0)  # nothing written at times with nothing asked


@pytest.mark.parametrize("cls", [ODERNN, GRUDeltaT, GRUD])
def test_predictor_series_independent_of_batch(cls):
    torch.manual_seed(0)
    m = cls(input_dim=2, rec_dims=5, units=7).eval()
    t, v, mk = _batch()
    both = m(t, v, mk)["mean"][0]
    alone = m(t, v[1:2], mk[1:2])["mean"][0]
    assert torch.allclose(both[1:2], alone, atol=1e-6)


@pytest.mark.parametrize(
    "model",
    [
        lambda: ODERNN(input_dim=2, rec_dims=5, units=7),
        lambda: GRUDeltaT(input_dim=2, rec_dims=5, units=7),
        lambda: GRUD(input_dim=2, rec_dims=5, units=7),
        lambda: RNNVAE(input_dim=2, latent_dim=3, rec_dims=5, units=7),
        lambda: LatentODE(input_dim=2, latent_dim=3, rec_dims=5, units=7, encoder="rnn"),
        lambda: LatentODE(input_dim=2, latent_dim=3, rec_dims=5, units=7, gen_layers=2),
    ],
)
def test_models_train_step_and_predict_anywhere(model):
    torch.manual_seed(0)
    m = model().train()
    t, v, mk = _batch()
    out = m.reconstruct(t, v, mk, mk, n_samples=2)
    assert out["mean"].shape == (2, 3, 6, 2)
    loss = m.loss(out, v, mk, kl_weight=0.5)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    q = torch.tensor([0.05, 0.5, 1.5])  # between, on and beyond the observed times
    mean, samples = m.predict(t, v, mk, q, n_samples=4)
    assert mean.shape == (3, 3, 2) and samples.shape == (4, 3, 3, 2) and torch.isfinite(mean).all()
    # one forward for the whole family: a dict whose mean is (S, B, T, D)
    fwd = m.eval()(t, v, mk, n_samples=2)
    assert fwd["mean"].shape == (2, 3, 6, 2) and "kl" in fwd


def test_masked_mse_metric_matches_function_and_accumulates():
    t, v, mk = _batch(B=6)
    pred = torch.randn_like(v)
    whole = masked_mse(pred, v, mk)
    metric = MaskedMSE()
    metric.update(pred[:2], v[:2], mk[:2])
    metric.update(pred[2:], v[2:], mk[2:])
    got = metric.compute()
    assert torch.isclose(got["mse"], whole["paper"], rtol=1e-5)
    assert torch.isclose(got["mse_masked_mean"], whole["masked_mean"], rtol=1e-5)
    # hand check: one series, variable 0 seen twice (errors 1 and 3), variable 1 never
    m = MaskedMSE()
    m.update(
        torch.tensor([[[1.0, 9], [3, 9]]]), torch.zeros(1, 2, 2), torch.tensor([[[1.0, 0], [1, 0]]])
    )
    assert float(m.compute()["mse"]) == pytest.approx((1 + 9) / 2 / 2)


def test_split_masks():
    t, v, mk = _batch(T=6)
    cond, target = split_masks(t, mk, "extrapolation")
    assert cond[:, 3:].sum() == 0 and target[:, :3].sum() == 0 and torch.equal(cond + target, mk)
    cond, target = split_masks(
        t, mk, "interpolation", cond_frac=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(target, mk) and cond.sum() < mk.sum() and torch.all(cond <= mk)
    # extrapolation with a conditioning fraction (the reference's --sample-tp): the seen points
    # thin out, whole time points per series, within the first half; the scored ones do not
    t, v, mk = _batch(B=64, T=40)
    full, target = split_masks(t, mk, "extrapolation")
    gen = torch.Generator().manual_seed(0)
    cond, target2 = split_masks(t, mk, "extrapolation", cond_frac=0.3, generator=gen)
    assert torch.equal(target2, target) and torch.all(cond <= full) and cond[:, 20:].sum() == 0
    kept = cond.amax(-1) > 0  # (B, T): time points the series still shows
    assert torch.equal(cond, full * kept[..., None])  # all of a kept point's variables stay
    assert 0.2 < float(cond.sum() / full.sum()) < 0.4
    with pytest.raises(ValueError, match="mode"):
        split_masks(t, mk, "forecast")
    with pytest.raises(ValueError, match="cond_frac"):
        TimeSeries(arch="ode_rnn", model_args={"input_dim": 2}, cond_frac=0.0)


def test_bad_inputs_are_named():
    m = ODERNN(input_dim=2, rec_dims=5, units=7)
    t, v, mk = _batch()
    with pytest.raises(ValueError, match="same shape"):
        m(t, v, mk[:, :, :1])
    with pytest.raises(ValueError, match="strictly increasing"):
        m(t.flip(0), v, mk)
    bad = v.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m(t, bad, mk)
    bad = v.clone()
    bad[mk == 0] = float("nan")  # NaN outside the mask is ignored
    assert torch.isfinite(m(t, bad, mk)["mean"]).all()


def test_periodic_data_is_irregular_and_seeded():
    from zoo.data import PeriodicDataModule

    a, b = PeriodicDataModule(n=20, n_points=30), PeriodicDataModule(n=20, n_points=30)
    a.setup(), b.setup()
    ba, bb = next(iter(a.val_dataloader())), next(iter(b.val_dataloader()))
    assert torch.equal(ba.values, bb.values) and ba.times[0] == 0 and ba.times[-1] == 1
    assert 0.3 < float(ba.mask.mean()) < 0.8  # about half of the points kept


def test_a_validation_split_comes_out_of_the_training_series_only():
    from zoo.data import PeriodicDataModule

    plain, held = (
        PeriodicDataModule(n=50, n_points=10),
        PeriodicDataModule(n=50, n_points=10, val_frac=0.25),
    )
    plain.setup(), held.setup()
    sets = {k: {v.tobytes() for v in d.values} for k, d in held.splits.items()}
    assert {k: len(d) for k, d in held.splits.items()} == {"test": 10, "val": 10, "train": 30}
    assert not (sets["val"] & sets["train"]) and not (sets["val"] & sets["test"])
    # the test split is the same with and without a validation split
    assert np.array_equal(held.splits["test"].values, plain.splits["test"].values)
    assert torch.equal(
        next(iter(held.val_dataloader())).values, next(iter(held.eval_split("val"))).values
    )
    assert torch.equal(
        next(iter(held.test_dataloader())).values, next(iter(plain.test_dataloader())).values
    )
    assert "val" not in plain.eval_splits  # without one, the test split doubles as validation
    assert torch.equal(
        next(iter(plain.val_dataloader())).values, next(iter(plain.test_dataloader())).values
    )
    with pytest.raises(ValueError, match="use test or train"):
        plain.eval_split("val")
    with pytest.raises(ValueError, match="val_frac"):
        PeriodicDataModule(val_frac=1.0)


def test_hopper_needs_the_extra(monkeypatch):
    from zoo.data.trajectories import simulate_hopper

    monkeypatch.setitem(sys.modules, "dm_control", None)
    with pytest.raises(ImportError, match=r"mujoco.*dm-control==1\.0\.50"):
        simulate_hopper(2, 3)


def test_hopper_simulation_is_deterministic():
    pytest.importorskip("dm_control")
    from zoo.data.trajectories import simulate_hopper

    a, b = simulate_hopper(3, 5, progress=False), simulate_hopper(3, 5, progress=False)
    assert a.shape == (3, 5, 14) and np.array_equal(a, b) and np.isfinite(a).all()
    assert not np.allclose(a[:, 0], a[:, -1])  # it moves


# ---- DDP: gradients of 2 gloo processes == one process on the whole batch (float64) ----


class _Loss(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, t, v, mk):
        return self.model.loss(self.model.reconstruct(t, v, mk), v, mk)


def _model(adjoint):
    torch.manual_seed(0)
    m = LatentODE(
        input_dim=2, latent_dim=3, rec_dims=5, units=7, rtol=1e-9, atol=1e-9, adjoint=adjoint
    )
    return m.double().eval()  # eval: z0 = posterior mean, so no sampling noise


def _ddp_worker(rank, world, adjoint, out):
    """One rank's half of the batch through DDP (tests/_dist.py sets up the gloo group)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ddp = DDP(_Loss(_model(adjoint)))
    t, v, mk = (x.double() for x in _batch(B=4))
    half = slice(2 * rank, 2 * rank + 2)
    ddp(t, v[half], mk[half]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in ddp.module.model.named_parameters()}, out)


@pytest.mark.parametrize("adjoint", [False, True])
def test_ddp_gradients_match_single_process(adjoint, tmp_path):
    from _dist import spawn_two

    out = tmp_path / "grads.pt"
    spawn_two(_ddp_worker, adjoint, str(out))
    ddp_grads = torch.load(out, weights_only=True)
    single = _Loss(_model(adjoint))
    t, v, mk = (x.double() for x in _batch(B=4))
    single(t, v, mk).backward()
    for n, p in single.model.named_parameters():
        assert torch.allclose(ddp_grads[n], p.grad, rtol=1e-5, atol=1e-9), n


def _gru_by_hand(cell, x, h):
    """torch.nn.GRUCell's update written out (r, z, n gates in that order)."""
    wi, wh, bi, bh = cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh
    gi, gh = wi @ x + bi, wh @ h + bh
    H = h.shape[0]
    r = torch.sigmoid(gi[:H] + gh[:H])
    z = torch.sigmoid(gi[H : 2 * H] + gh[H : 2 * H])
    n = torch.tanh(gi[2 * H :] + r * gh[2 * H :])
    return (1 - z) * n + z * h


def test_gru_d_matches_its_equations_written_per_series_in_float64():
    """GRU-D (Che et al. 2018) walked one series at a time over its own observation times, with
    scalar bookkeeping of each variable's last value and time: the batched, ragged model must
    give the same predictions and label logits."""
    torch.manual_seed(0)
    m = GRUD(input_dim=3, rec_dims=5, units=7, time_scale=10.0, classifier=True).double().eval()
    with torch.no_grad():  # decays that bite: a mean away from zero, rates of order one
        m.mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        m.decay_x_weight.copy_(torch.tensor([0.3, 1.0, 0.05]))
        m.decay_x_bias.copy_(torch.tensor([-0.1, 0.0, 0.2]))
        m.decay_h.weight.mul_(3.0)
    g = torch.Generator().manual_seed(1)
    B, T, D = 4, 9, 3
    times = torch.sort(torch.rand(T, generator=g, dtype=torch.float64)).values
    mask = (torch.rand(B, T, D, generator=g) < 0.4).double()
    mask[3] = 0
    mask[3, 5, 1] = 1  # a series seen once
    values = torch.randn(B, T, D, generator=g, dtype=torch.float64) * mask
    out = m.reconstruct(times, values, mask)
    for b in range(B):
        seen = [k for k in range(T) if mask[b, k].any()]
        h = torch.zeros(5, dtype=torch.float64)
        last_x = [float(m.mean[d]) for d in range(D)]
        last_t = [float(times[seen[0]])] * D
        t_prev = float(times[seen[0]])
        for k in seen:
            t = float(times[k])
            delta = torch.tensor([(t - last_t[d]) * 10.0 for d in range(D)], dtype=torch.float64)
            if t > t_prev:
                h = torch.exp(-torch.relu(m.decay_h.weight @ delta + m.decay_h.bias)) * h
            pred = m.readout(h)
            torch.testing.assert_close(out["mean"][0, b, k], pred, rtol=1e-12, atol=1e-12)
            x_hat = []
            for d in range(D):
                if mask[b, k, d] > 0:
                    x_hat.append(float(values[b, k, d]))
                else:
                    rate = float(m.decay_x_weight[d]) * float(delta[d]) + float(m.decay_x_bias[d])
                    gam = math.exp(-max(rate, 0.0))
                    x_hat.append(gam * last_x[d] + (1 - gam) * float(m.mean[d]))
            inp = torch.cat([torch.tensor(x_hat, dtype=torch.float64), mask[b, k]])
            h = _gru_by_hand(m.gru, inp, h)
            for d in range(D):
                if mask[b, k, d] > 0:
                    last_x[d], last_t[d] = float(values[b, k, d]), t
            t_prev = t
        torch.testing.assert_close(
            out["logits"][b], m.label_head(h).squeeze(-1), rtol=1e-12, atol=1e-12
        )


def test_gru_d_refuses_a_bad_time_scale():
    for bad in (0.0, -1.0, True, "48"):
        with pytest.raises((TypeError, ValueError), match="time_scale"):
            GRUD(input_dim=2, time_scale=bad)
