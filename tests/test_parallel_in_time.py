"""Parallel-in-time fixed-grid solves: the trajectory found as one fixed point equals the
sequential one (float64), Picard reaches it exactly after K rounds, and the flows' sampler and
ODEBlock expose it."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.nn import ODEBlock, grid_solve, parallel_grid_nodes
from zoo.solvers import Anderson, Picard


class Field(torch.nn.Module):
    """A time-dependent field that takes a time per row, as the flows' fields do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)
        )

    def forward(self, t, z):
        tt = t.reshape(-1, 1).expand(z.shape[0], 1).to(z.dtype)
        return self.net(torch.cat([z, tt], 1))


@pytest.mark.parametrize("steps", [1, 5, 16])
def test_picard_is_exact_after_k_rounds(steps):
    f = Field().double()
    z0 = torch.randn(6, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    seq = grid_solve(f, z0, t, steps)[-1]
    Z, stats = parallel_grid_nodes(
        f, z0, 0.0, 1.0, steps, Picard(tol=0.0, max_iter=steps, warn=False)
    )
    assert stats.n_iter == steps
    torch.testing.assert_close(Z[-1], seq, rtol=0, atol=1e-12)
    if steps > 1:  # one round short: not there yet
        Z1, _ = parallel_grid_nodes(
            f, z0, 0.0, 1.0, steps, Picard(tol=0.0, max_iter=steps - 1, warn=False)
        )
        assert (Z1[-1] - seq).abs().max() > 1e-8


def test_anderson_reaches_the_sequential_trajectory_to_its_tolerance():
    f = Field().double()
    z0 = torch.randn(6, 3, dtype=torch.float64)
    seq = grid_solve(f, z0, torch.tensor([0.0, 1.0], dtype=torch.float64), 12)[-1]
    Z, stats = parallel_grid_nodes(f, z0, 0.0, 1.0, 12, Anderson(m=5, tol=1e-10, max_iter=40))
    assert stats.converged
    torch.testing.assert_close(Z[-1], seq, rtol=0, atol=1e-8)


def test_odeblock_and_the_flow_sampler_expose_it():
    f = Field().double()
    z0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    seq = ODEBlock(f, t=t, grid_steps=8)(z0, return_all=True)
    block = ODEBlock(f, t=t, grid_steps=8, parallel=Picard(tol=0.0, max_iter=8, warn=False))
    par = block(z0, return_all=True)
    torch.testing.assert_close(par, seq, rtol=0, atol=1e-12)
    assert block.parallel_stats.n_iter == 8
    with pytest.raises(ValueError, match="set grid_steps > 0"):
        ODEBlock(f, parallel=Picard())

    model = zoo.load("ffjord_toy.cfm_8gaussians").double()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    seq = model.sample(64, gen(), steps=10)
    par = model.sample(64, gen(), steps=10, parallel=Picard(tol=0.0, max_iter=10, warn=False))
    torch.testing.assert_close(par, seq, rtol=0, atol=1e-10)
    assert model.last_sample_stats[0].n_iter == 10
    with pytest.raises(ValueError, match="give the number of steps"):
        model.sample(4, parallel=Picard())
