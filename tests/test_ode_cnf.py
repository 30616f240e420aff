"""ODEBlock and CNF against analytic answers (float64)."""

import pytest
import torch
from torch import nn

from zoo.nn import CNF, ODEBlock

D = torch.float64


class Linear(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, z):
        return z @ self.A.T


class MLPField(nn.Module):
    def __init__(self, d=3, h=8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 1, h), nn.Tanh(), nn.Linear(h, d)).to(D)

    def forward(self, t, z):
        tt = torch.ones_like(z[:, :1]) * t
        return self.net(torch.cat([z, tt], dim=1))


def test_linear_ode_matches_matrix_exp():
    g = torch.Generator().manual_seed(0)
    A = 0.5 * torch.randn(3, 3, generator=g, dtype=D)
    z0 = torch.randn(4, 3, generator=g, dtype=D)
    block = ODEBlock(Linear(A), t=[0.0, 1.5], method="dopri5", rtol=1e-10, atol=1e-10)
    z1 = block(z0)
    expected = z0 @ torch.linalg.matrix_exp(1.5 * A).T
    assert torch.allclose(z1, expected, atol=1e-8)
    assert block.nfe_forward > 0 and block.nfe_backward == 0


def test_adjoint_matches_direct_backprop():
    torch.manual_seed(0)
    func = MLPField()
    z0 = torch.randn(5, 3, dtype=D)
    w = torch.randn(5, 3, dtype=D)
    grads = {}
    for adjoint in (False, True):
        func.zero_grad()
        x = z0.clone().requires_grad_()
        block = ODEBlock(func, method="dopri5", rtol=1e-10, atol=1e-10, adjoint=adjoint)
        (block(x) * w).sum().backward()
        grads[adjoint] = torch.cat(
            [x.grad.flatten()] + [p.grad.flatten() for p in func.parameters()]
        )
        if adjoint:
            assert block.nfe_backward > 0
    rel = (grads[True] - grads[False]).norm() / grads[False].norm()
    assert rel < 1e-6


def test_ode_trajectory_and_bad_t():
    block = ODEBlock(Linear(-torch.eye(2, dtype=D)), t=[0.0, 0.5, 1.0], rtol=1e-9, atol=1e-9)
    traj = block(torch.ones(1, 2, dtype=D), return_all=True)
    assert traj.shape == (3, 1, 2)
    assert torch.allclose(traj[:, 0, 0], torch.exp(-torch.tensor([0.0, 0.5, 1.0], dtype=D)))
    with pytest.raises(ValueError, match="at least 2"):
        ODEBlock(Linear(torch.eye(2)), t=[1.0])


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_cnf_hutchinson_trace_unbiased(noise):
    """The CNF's own dynamics (its probe sampler and its vector-Jacobian product) estimate
    -tr(df/dz) without bias: the mean over many probes matches the exact trace."""
    from zoo.nn._cnf import _CNFDynamics
    from zoo.nn._regularizers import sample_noise

    torch.manual_seed(0)
    dyn = _CNFDynamics(MLPField(d=4), trace="hutchinson", kinetic=False, jacobian=False)
    exact = _CNFDynamics(dyn.func, trace="exact", kinetic=False, jacobian=False)
    z = torch.randn(6, 4, dtype=D)
    t = torch.tensor(0.3, dtype=D)
    want = exact(t, (z, torch.zeros(6, dtype=D)))[1]
    n, ests = 3000, []
    for _ in range(n):
        dyn.noise = sample_noise(z, noise)
        ests.append(dyn(t, (z, torch.zeros(6, dtype=D)))[1])
    ests = torch.stack(ests)
    mean, sem = ests.mean(0), ests.std(0) / n**0.5
    assert ((mean - want).abs() < 5 * sem + 1e-9).all()
    assert (sem > 0).all()  # a real estimator: single probes differ from the exact trace


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_cnf_linear_change_of_variables(trace):
    """dz/dt = A z: z_T = exp(TA) z_0 and log p changes by exactly -T tr(A)."""
    g = torch.Generator().manual_seed(1)
    A = 0.4 * torch.randn(3, 3, generator=g, dtype=D)
    z0 = torch.randn(5, 3, generator=g, dtype=D)
    cnf = CNF(Linear(A), trace=trace, T=2.0, rtol=1e-10, atol=1e-10)
    zT, dlogp = cnf(z0)
    assert torch.allclose(zT, z0 @ torch.linalg.matrix_exp(2.0 * A).T, atol=1e-7)
    if trace == "exact":
        assert torch.allclose(
            dlogp, torch.full_like(dlogp, -2.0 * torch.trace(A).item()), atol=1e-7
        )
    # the reverse flow inverts the forward one and its log-density change
    z_back, dlogp_back = cnf(zT, reverse=True)
    assert torch.allclose(z_back, z0, atol=1e-7)
    if trace == "exact":
        assert torch.allclose(dlogp_back, -dlogp, atol=1e-7)


def test_cnf_log_density_of_gaussian_flow():
    """Flow x = exp(TA) z with z ~ N(0, I): compare log p_x to the analytic Gaussian."""
    A = torch.diag(torch.tensor([0.3, -0.2], dtype=D))
    cnf = CNF(Linear(A), trace="exact", T=1.0, rtol=1e-10, atol=1e-10)
    x = torch.randn(7, 2, dtype=D)
    z, delta = cnf(x, reverse=True)  # data -> base runs backwards here
    base = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=D), torch.eye(2, dtype=D))
    logpx = base.log_prob(z) - delta
    M = torch.linalg.matrix_exp(A)
    analytic = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=D), M @ M.T).log_prob(x)
    assert torch.allclose(logpx, analytic, atol=1e-7)


def test_cnf_rnode_regularizers():
    A = torch.diag(torch.tensor([1.0, -2.0], dtype=D))
    cnf = CNF(
        Linear(A),
        trace="exact",
        noise="rademacher",
        kinetic_energy=True,
        jacobian_frobenius=True,
        rtol=1e-10,
        atol=1e-10,
    )
    z0 = torch.tensor([[1.0, 1.0]], dtype=D)
    cnf(z0)
    # kinetic: int_0^1 e^{2t} + 4 e^{-4t} dt ; Frobenius with Rademacher probes: ||A e||^2 = 5
    ke = (torch.exp(torch.tensor(2.0)) - 1) / 2 + (1 - torch.exp(torch.tensor(-4.0)))
    assert abs(cnf.reg["kinetic_energy"].item() - ke.item()) < 1e-6
    assert abs(cnf.reg["jacobian_frobenius"].item() - 5.0) < 1e-6


def test_cnf_trains_with_adjoint():
    func = MLPField(d=2)
    cnf = CNF(func, trace="hutchinson", adjoint=True, rtol=1e-6, atol=1e-6)
    x = torch.randn(8, 2, dtype=D)
    z, delta = cnf(x)
    loss = (0.5 * z.pow(2).sum(1) - delta).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in func.parameters())
    assert cnf.nfe_backward > 0


def test_integrate_intervals_matches_separate_solves():
    """One vectorized solve over per-sample intervals == a torchdiffeq solve per sample."""
    import torchdiffeq

    from zoo.nn import integrate_intervals

    torch.manual_seed(0)
    func = MLPField(d=3)
    z0 = torch.randn(4, 3, dtype=D)
    t0 = torch.tensor([0.0, 0.2, 0.5, 0.9], dtype=D)
    t1 = torch.tensor([0.3, 0.2, 0.1, 1.7], dtype=D)  # forward, zero-length and backward intervals

    class PerSample(nn.Module):
        def forward(self, t, z):
            tt = t[:, None] if t.dim() else torch.ones_like(z[:, :1]) * t
            return func.net(torch.cat([z, tt], dim=1))

    ps = PerSample()
    got = integrate_intervals(ps, z0, t0, t1, method="dopri5", rtol=1e-10, atol=1e-10)
    for b in range(4):
        if t0[b] == t1[b]:
            assert torch.allclose(got[b], z0[b])
            continue
        ref = torchdiffeq.odeint(
            lambda t, z: ps(t, z),
            z0[b : b + 1],
            torch.stack([t0[b], t1[b]]),
            rtol=1e-10,
            atol=1e-10,
        )[-1]
        assert torch.allclose(got[b : b + 1], ref, atol=1e-8)
    rk = integrate_intervals(ps, z0, t0, t1, method="rk4", steps=20)
    assert torch.allclose(rk, got, atol=1e-6)


def test_grid_solve_matches_matrix_exponential_at_irregular_times():
    from zoo.nn import grid_solve

    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.8
    z0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    t = torch.sort(torch.rand(300, generator=g, dtype=torch.float64)).values
    t = torch.cat([t.new_zeros(1), t, t.new_ones(1)])
    got = grid_solve(lambda s, z: z @ A.T, z0, t, steps=100)
    want = torch.stack([z0 @ torch.linalg.matrix_exp(A * s).T for s in t])
    assert (got - want).abs().max() < 1e-7


def test_latent_ode_grid_decoder_matches_adaptive_solve_and_backprops():
    from zoo.models.latent_ode import LatentODE

    torch.manual_seed(0)
    exact = LatentODE(input_dim=2, latent_dim=3, rec_dims=5, units=7, rtol=1e-10, atol=1e-10)
    grid = LatentODE(input_dim=2, latent_dim=3, rec_dims=5, units=7, decoder_steps=64)
    grid.load_state_dict(exact.state_dict())
    exact, grid = exact.double().eval(), grid.double().eval()
    t = torch.sort(torch.rand(200, dtype=torch.float64)).values
    v, m = torch.randn(2, 200, 2, dtype=torch.float64), torch.ones(2, 200, 2, dtype=torch.float64)
    a, b = exact(t, v, m)["mean"], grid(t, v, m)["mean"]
    assert (a - b).abs().max() < 1e-6
    grid.loss(grid.reconstruct(t, v, m), v, m).backward()
    assert grid.decoder_ode.nfe_forward == 4 * 64 + 1
    with pytest.raises(ValueError, match="adjoint"):
        LatentODE(input_dim=2, latent_dim=3, decoder_steps=8, adjoint=True)


def test_odeblock_takes_what_torchdiffeq_takes_and_returns_the_trajectory():
    """A plain function as the field, the state at every requested time (torchdiffeq's odeint
    semantics), float64 against the analytic solution; the adjoint refuses a function."""
    import math

    from zoo.nn import ODEBlock, odeint

    t = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    y0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    traj = odeint(lambda t, y: -0.5 * y, y0, t)
    assert traj.shape == (4, 2)
    exact = y0 * torch.exp(-0.5 * t)[:, None]
    torch.testing.assert_close(traj, exact, rtol=1e-6, atol=1e-8)
    block = ODEBlock(lambda t, y: -0.5 * y, t=t, rtol=1e-9, atol=1e-9)
    assert abs(float(block(y0)[0]) - math.exp(-1.0)) < 1e-7 and block.nfe_forward > 0
    with pytest.raises(TypeError, match="adjoint=True needs func as an nn.Module"):
        ODEBlock(lambda t, y: -y, adjoint=True)
    w = torch.nn.Parameter(torch.ones(()))
    with pytest.warns(UserWarning, match="does not register"):
        ODEBlock(lambda t, y: -w * y)
