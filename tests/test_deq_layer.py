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


@pytest.mark.parametrize("grad", [PhantomGrad(steps=2, tau=0.5), "implicit"])
def test_correction_states_are_phantom_steps_from_the_solvers_iterates(grad):
    """Fixed-point correction (torchdeq): in training the DEQ also returns states built from
    the solver's outputs at calls evenly spaced over max_iter, each followed by the phantom
    steps (JFB for a non-phantom mode). Checked in float64 against the same solver run with a
    hand-written recorder and hand-written damped steps; eval mode and 0 states give none."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 6).double()
    cell = lambda z, x: torch.tanh(0.6 * lin(z) + x)  # noqa: E731
    x = torch.randn(3, 6, dtype=torch.float64)
    solver = Anderson(m=3, tol=1e-14, max_iter=10, warn=False)
    deq = DEQ(cell, solver=solver, grad=grad, correction_states=2).train()
    z = deq(x)
    info = deq.info
    assert info.correction_iters == [3, 7]  # round(10 * i / 3)
    seen = []

    def rec(zf):
        out = cell(zf, x)
        seen.append(out.detach())
        return out

    with torch.no_grad():
        solver(rec, torch.zeros_like(x))
    steps, tau = (2, 0.5) if isinstance(grad, PhantomGrad) else (1, 1.0)
    for k, state in zip(info.correction_iters, info.corrections):
        ref = seen[k - 1]
        for _ in range(steps):
            ref = torch.lerp(ref, cell(ref, x), tau)
        assert torch.allclose(state, ref, atol=1e-12, rtol=0)
    (z.sum() + sum(c.sum() for c in info.corrections)).backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    deq.eval()
    with torch.no_grad():
        deq(x)
    assert deq.info.corrections == []
    plain = DEQ(cell, solver=solver, grad=grad).train()
    plain(x)
    assert plain.info.corrections == []
    with pytest.raises(ValueError, match="correction_states"):
        DEQ(cell, correction_states=-1)


def test_a_module_cell_trains_through_deq_parameters():
    """The README's pattern: the optimizer built from deq.parameters() trains the cell."""
    import warnings

    class Cell(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(6, 6)

        def forward(self, z, x):
            return torch.tanh(0.5 * self.lin(z) + x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deq = DEQ(Cell())
    before = deq.cell.lin.weight.detach().clone()
    opt = torch.optim.SGD(deq.parameters(), lr=0.1)
    deq(torch.randn(3, 6)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, deq.cell.lin.weight)


@pytest.mark.parametrize("form", ["closure", "global", "bound method", "parameter"])
def test_a_function_cell_hiding_parameters_warns_naming_them(form):
    lin = torch.nn.Linear(4, 4)
    w = torch.nn.Parameter(torch.eye(4))
    cells = {
        "closure": lambda z, x: torch.tanh(lin(z) + x),
        "global": lambda z, x: torch.tanh(_GLOBAL_LIN(z) + x),
        "bound method": _Holder().step,
        "parameter": lambda z, x: torch.tanh(z @ w + x),
    }
    with pytest.warns(UserWarning, match="does not register") as rec:
        DEQ(cells[form])
    assert "untrained" in str(rec[0].message)


def test_a_parameter_free_function_cell_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DEQ(lambda z, x: 0.5 * torch.tanh(z) + x)
    with pytest.raises(TypeError, match="nn.Module or a function"):
        DEQ("tanh")


_GLOBAL_LIN = torch.nn.Linear(4, 4)


class _Holder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def step(self, z, x):
        return torch.tanh(self.lin(z) + x)
