"""The neural CDE family in float64: the Hermite path against its definition and finite
differences, the CDE solve against the closed form of a linear field, batch independence,
gradients against finite differences, and DDP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
import zoo.tasks
from zoo.models.ncde import HermitePath, NeuralCDE, observation_path

D = torch.float64


def _path(seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor([[0.0, 0.3, 0.5, 0.9, 0.0], [0.1, 0.2, 0.7, 0.8, 1.0]], dtype=D)
    x = torch.randn(2, 5, 3, generator=g, dtype=D)
    return HermitePath(t, x, torch.tensor([4, 5])), t, x


def test_the_path_interpolates_each_series_and_is_flat_outside_it():
    p, t, x = _path()
    for b, n in ((0, 4), (1, 5)):
        for k in range(n):
            torch.testing.assert_close(p.evaluate(t[b, k])[b], x[b, k], rtol=0, atol=1e-12)
    torch.testing.assert_close(p.evaluate(torch.tensor(0.05, dtype=D))[1], x[1, 0])  # before
    torch.testing.assert_close(p.evaluate(torch.tensor(0.95, dtype=D))[0], x[0, 3])  # after
    for s in (0.05, 0.95):
        assert p.derivative(torch.tensor(s, dtype=D))[1 if s < 0.1 else 0].abs().max() == 0


def test_the_derivative_is_the_paths_and_continuous_with_backward_difference_slopes():
    p, t, x = _path()
    h = 1e-6
    for s in torch.linspace(0.117, 0.883, 16, dtype=D):  # off the knots (f'' jumps there)
        fd = (p.evaluate(s + h) - p.evaluate(s - h)) / (2 * h)
        torch.testing.assert_close(p.derivative(s), fd, rtol=0, atol=1e-6)
    # at an inner knot: left and right derivatives agree and equal the backward difference
    b, k = 1, 2
    slope = (x[b, k] - x[b, k - 1]) / (t[b, k] - t[b, k - 1])
    for side in (-1e-12, 1e-12):
        torch.testing.assert_close(p.derivative(t[b, k] + side)[b], slope, rtol=0, atol=1e-6)


def test_the_path_is_causal():
    """Changing the observation at knot k+2 leaves the path up to knot k+1 unchanged."""
    p, t, x = _path()
    x2 = x.clone()
    x2[1, 4] += 10.0
    q = HermitePath(t, x2, torch.tensor([4, 5]))
    for s in torch.linspace(0.1, 0.8, 15, dtype=D):
        torch.testing.assert_close(p.evaluate(s)[1], q.evaluate(s)[1], rtol=0, atol=0)


def test_observation_path_carries_values_forward_and_counts_observations():
    times = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    values = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]], dtype=D)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]], dtype=D)
    x = observation_path(times, values, mask).x[0]
    torch.testing.assert_close(x[:, 0], times)  # time channel
    torch.testing.assert_close(x[:, 1:3], torch.tensor([[1.0, 0], [1, 2], [3, 2]], dtype=D))
    torch.testing.assert_close(x[:, 3:5], torch.tensor([[1.0, 0], [1, 1], [2, 1]], dtype=D) / 10)


class _LinearField(nn.Module):
    """f(z) = B z in the column of one channel, 0 elsewhere: dz = B z dX_c."""

    def __init__(self, B: torch.Tensor, hidden: int, channels: int, channel: int) -> None:
        super().__init__()
        self.B, self.hidden, self.channels, self.channel = B, hidden, channels, channel

    def forward(self, z):
        out = z.new_zeros(z.shape[0], self.hidden, self.channels)
        out[:, :, self.channel] = z @ self.B.T
        return out.reshape(z.shape[0], -1)


def test_a_linear_field_gives_the_closed_form_whatever_the_path():
    """dz = B z dX_c has z(T) = expm(B (X_c(T) - X_c(t0))) z(t0): the solve must reach it for a
    path of any shape (the interpolation is exercised, not only its end points)."""
    torch.manual_seed(0)
    m = NeuralCDE(input_dim=2, hidden=3, units=8, rtol=1e-11, atol=1e-12).double()
    B = 0.7 * torch.randn(3, 3, dtype=D)
    m.field.f = _LinearField(B, 3, 5, channel=1)  # driven by the first variable
    times = torch.linspace(0, 1, 6, dtype=D)
    values = torch.randn(2, 6, 2, dtype=D)
    mask = torch.ones(2, 6, 2, dtype=D)
    mask[1, 4:] = 0  # the second series ends early
    z = m.final_state(times, values, mask)
    path = observation_path(times, values, mask)
    z0 = m.initial(path.x[:, 0])
    last = [5, 3]
    for b in range(2):
        dx = values[b, last[b], 0] - values[b, 0, 0]
        want = torch.linalg.matrix_exp(B * dx) @ z0[b]
        torch.testing.assert_close(z[b], want, rtol=0, atol=1e-8)  # dopri5 at rtol 1e-11


def _batch(B=4, T=7, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(B, T, 3, generator=g) < 0.5).to(dtype)
    mask[:, 0, 0] = 1
    return (
        torch.linspace(0, 1, T, dtype=dtype),
        torch.randn(B, T, 3, generator=g, dtype=dtype) * mask,
        mask,
    )


def test_each_series_logit_is_independent_of_the_batch():
    torch.manual_seed(0)
    m = NeuralCDE(input_dim=3, hidden=4, units=8, rtol=1e-10, atol=1e-10).double().eval()
    t, v, mk = _batch()
    p = m.predict_proba(t, v, mk)
    for b in range(4):
        torch.testing.assert_close(m.predict_proba(t, v[b : b + 1], mk[b : b + 1]), p[b : b + 1],
                                   rtol=0, atol=1e-8)  # fmt: skip


def test_gradients_equal_finite_differences():
    torch.manual_seed(0)
    m = NeuralCDE(input_dim=3, hidden=3, units=6, layers=1, method="rk4").double()
    m.ode.options = {"step_size": 0.05}
    t, v, mk = _batch(B=2)
    w = m.initial.weight

    def loss():
        return m(t, v, mk)["logits"].pow(2).sum()

    (g,) = torch.autograd.grad(loss(), [w])
    eps = 1e-6
    for i, j in ((0, 0), (1, 3), (2, 6)):
        with torch.no_grad():
            w[i, j] += eps
            up = loss()
            w[i, j] -= 2 * eps
            down = loss()
            w[i, j] += eps
        torch.testing.assert_close(g[i, j], (up - down) / (2 * eps), rtol=1e-5, atol=1e-8)


def test_the_test_time_budget_and_bad_inputs():
    m = zoo.create_model("ncde", input_dim=3, hidden=4, units=8)
    t, v, mk = _batch(dtype=torch.float32)
    m(t, v, mk)
    loose = m.cost().nfe_forward
    m.set_inference_budget(rtol=1e-6, atol=1e-7)
    m(t, v, mk)
    assert m.cost().nfe_forward > loose and m.inference_budget()["rtol"] == 1e-6
    with pytest.raises(ValueError, match="variable"):
        m(t, v[..., :2], mk[..., :2])
    with pytest.raises(ValueError, match="forecast"):
        m.predict(t, v, mk, t)
    with pytest.raises(ValueError, match="classif_weight"):
        zoo.tasks.TimeSeries(arch="ncde", model_args={"input_dim": 3})


def _ddp_worker(rank, world, out):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = DDP(NeuralCDE(input_dim=3, hidden=4, units=8, rtol=1e-10, atol=1e-10).double())
    t, v, mk = _batch()
    half = slice(2 * rank, 2 * rank + 2)
    model(t, v[half], mk[half])["logits"].pow(2).mean().backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, out)


def test_ddp_gradients_equal_the_full_batch_gradients(tmp_path):
    from _dist import spawn_two

    out = tmp_path / "g.pt"
    spawn_two(_ddp_worker, str(out))
    torch.manual_seed(0)
    m = NeuralCDE(input_dim=3, hidden=4, units=8, rtol=1e-10, atol=1e-10).double()
    t, v, mk = _batch()
    m(t, v, mk)["logits"].pow(2).mean().backward()
    got = torch.load(out, weights_only=True)
    for n, p in m.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-6, atol=1e-9, msg=n)
