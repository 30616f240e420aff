"""DEQ layer: input validation, warm starts, eval budgets, weight norm."""

import pytest
import torch

from zoo.nn import DEQ
from zoo.solvers import Anderson, PhantomGrad, Picard


class Cell(torch.nn.Module):
    def __init__(self, d=6):
        super().__init__()
        self.lin = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(d, d))
        with torch.no_grad():
            self.lin.parametrizations.weight.original0.mul_(0.3)

    def forward(self, z, x):
        return torch.tanh(self.lin(z) + x)


def test_nonfinite_inputs_are_named():
    deq = DEQ(Cell())
    x = torch.randn(2, 6)
    x[0, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        deq(x)
    with pytest.raises(ValueError, match="z0 contains NaN or inf"):
        deq(torch.randn(2, 6), z0=torch.full((2, 6), float("inf")))


def test_shape_mismatch_shows_both_shapes():
    deq = DEQ(lambda z, x: torch.cat([z, x], dim=1))
    with pytest.raises(ValueError, match=r"\(2, 12\).*\(2, 6\)"):
        deq(torch.randn(2, 6))


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="valid names: anderson, broyden, picard"):
        DEQ(Cell(), solver="newton")
    with pytest.raises(ValueError, match="valid names"):
        DEQ(Cell(), grad="magic")


def test_warm_start_saves_iterations():
    deq = DEQ(Cell(), solver=Anderson(tol=1e-6, max_iter=50))
    x = torch.randn(4, 6)
    with torch.no_grad():
        z = deq(x)
        cold = deq.stats.nfe
        deq(x + 1e-3 * torch.randn_like(x), z0=z)
        warm = deq.stats.nfe
    assert warm < cold


def test_eval_solver_and_no_grad_path():
    deq = DEQ(
        Cell(), solver=Picard(tol=1e-8, max_iter=100), eval_solver=Picard(tol=1e-8, max_iter=3)
    )
    deq.eval()
    with torch.no_grad():
        z, info = deq(torch.randn(2, 6), return_info=True)
    assert info.stats.n_iter == 3 and info.jac_loss is None


def test_weight_norm_cell_trains_with_phantom_and_jr():
    cell = Cell()
    deq = DEQ(cell, solver=Anderson(tol=1e-5), grad=PhantomGrad(steps=2), jac_reg_samples=1)
    deq.train()
    z = deq(torch.randn(3, 6))
    loss = z.pow(2).mean() + 0.1 * deq.jac_loss
    loss.backward()
    assert all(p.grad is not None for p in cell.parameters())
