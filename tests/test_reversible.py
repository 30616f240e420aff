"""Reversible DEQs: the gradient is the exact gradient of the iterations that ran (float64,
against backpropagation through the same iterations stored in full), the reconstruction error
of the reversed trajectory is reported, and the memory kept for the backward does not grow with
the number of iterations."""

from __future__ import annotations

import pytest
import torch

from zoo.nn import DEQ
from zoo.solvers import Anderson, Reversible, ReversibleGrad, get_grad, get_solver


class Cell(torch.nn.Module):
    def __init__(self, d: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(d, d)
        self.inj = torch.nn.Linear(d, d)

    def forward(self, z, x):
        return torch.tanh(0.6 * self.lin(z) + self.inj(x))


def _unrolled(cell, x, beta: float, steps: int):
    """The same coupled iteration, every state kept by autograd."""
    y = z = torch.zeros_like(x)
    for _ in range(steps):
        y = (1 - beta) * y + beta * cell(z, x)
        z = (1 - beta) * z + beta * cell(y, x)
    return z


@pytest.mark.parametrize("beta,steps", [(0.5, 4), (0.5, 8), (0.8, 8), (0.6, 12)])
def test_the_gradient_is_backprop_through_the_same_iterations(beta, steps):
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    cell = Cell().double()
    deq = DEQ(cell, solver=Reversible(beta=beta, tol=0.0, max_iter=steps, warn=False),
              grad=ReversibleGrad())  # fmt: skip
    out = deq(x)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    ours = [p.grad.clone() for p in cell.parameters()] + [x.grad.clone()]
    # the rebuilt start is off by rounding, amplified by 1 / (1 - beta) per half step
    assert deq.stats.n_iter == steps and deq.stats.reconstruction_error < 1e-8

    cell.zero_grad()
    x.grad = None
    ref_out = _unrolled(cell, x, beta, steps)
    (ref_out * w).sum().backward()
    ref = [p.grad for p in cell.parameters()] + [x.grad]
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_memory_kept_for_backward_does_not_grow_with_iterations():
    def saved(steps: int) -> int:
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        deq = DEQ(Cell(), solver=Reversible(tol=0.0, max_iter=steps, warn=False),
                  grad=ReversibleGrad())  # fmt: skip
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = deq(torch.randn(64, 6, requires_grad=True))
        out.sum().backward()
        return sum(seen.values())

    assert saved(4) == saved(32)


def test_the_solve_stops_at_its_tolerance_and_reports_the_reconstruction():
    deq = DEQ(Cell().double(), solver=Reversible(beta=0.8, tol=1e-6, max_iter=100),
              grad=ReversibleGrad())  # fmt: skip
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    deq(x).sum().backward()
    stats = deq.stats
    assert stats.converged and stats.n_iter < 100 and stats.nfe == 2 * stats.n_iter + 1
    assert 0 <= stats.reconstruction_error < 1e-3  # reported; it grows with the steps


def test_options_and_names():
    with pytest.raises(ValueError, match="beta must be a number in \\(0, 1\\)"):
        Reversible(beta=1.0)
    with pytest.raises(ValueError, match="set solver=Reversible"):
        DEQ(Cell(), solver=Anderson(), grad=ReversibleGrad())
    assert isinstance(get_solver({"name": "reversible", "beta": 0.5}), Reversible)
    assert isinstance(get_grad("reversible"), ReversibleGrad)
    # in eval (no gradient), a reversible solver is an ordinary solver
    deq = DEQ(Cell(), solver=Reversible(tol=1e-6, max_iter=60), grad=ReversibleGrad()).eval()
    with torch.no_grad():
        z = deq(torch.randn(2, 6))
    assert deq.stats.converged and z.shape == (2, 6)
