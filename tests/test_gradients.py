"""Gradient modes: gradcheck, implicit == converged unrolled, phantom -> implicit (float64)."""

import warnings

import pytest
import torch

from zoo.nn import DEQ, jacobian_frobenius
from zoo.solvers import Anderson, Broyden, ImplicitGrad, PhantomGrad, Picard, UnrolledGrad

D = torch.float64
DIM = 5


class TanhCell(torch.nn.Module):
    """z -> tanh(W z + U x + b), contractive for small W."""

    def __init__(self, scale=0.4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(scale * torch.randn(DIM, DIM, generator=g, dtype=D) / DIM**0.5)
        self.U = torch.nn.Parameter(torch.randn(DIM, DIM, generator=g, dtype=D) / DIM**0.5)
        self.b = torch.nn.Parameter(0.1 * torch.randn(DIM, generator=g, dtype=D))

    def forward(self, z, x):
        return torch.tanh(z @ self.W.T + x @ self.U.T + self.b)


def _solvers():
    return [
        Picard(tol=1e-13, max_iter=400),
        Anderson(m=5, tol=1e-13, max_iter=200),
        Broyden(tol=1e-13, max_iter=200),
    ]


def _run(cell, x, solver, grad):
    deq = DEQ(cell, solver=solver, grad=grad)
    return deq(x)


@pytest.mark.parametrize("solver", _solvers(), ids=lambda s: type(s).__name__)
def test_gradcheck_implicit(solver):
    cell = TanhCell()
    x = torch.randn(3, DIM, dtype=D, requires_grad=True)
    grad = ImplicitGrad(solver=Anderson(m=5), tol=1e-13, max_iter=200)

    def fn(x, W):
        with torch.nn.utils.stateless._reparametrize_module(cell, {"W": W}):
            return _run(cell, x, solver, grad)

    W = cell.W.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (x, W), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("solver", _solvers(), ids=lambda s: type(s).__name__)
def test_gradcheck_unrolled(solver):
    cell = TanhCell()
    x = torch.randn(2, DIM, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: _run(cell, x, solver, UnrolledGrad(steps=15)), (x,))


@pytest.mark.parametrize("solver", _solvers(), ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("bsolver", [Anderson(m=5), Picard(), Broyden()], ids=lambda s: s.name)
def test_implicit_matches_converged_unrolled(solver, bsolver):
    cell = TanhCell()
    x = torch.randn(4, DIM, dtype=D)
    w = torch.randn(4, DIM, dtype=D)
    grads = {}
    for name, mode, slv in [
        ("implicit", ImplicitGrad(solver=bsolver, tol=1e-13, max_iter=300), solver),
        ("unrolled", UnrolledGrad(steps=200), solver),
    ]:
        cell.zero_grad()
        xr = x.clone().requires_grad_()
        z = _run(cell, xr, slv, mode)
        (z * w).sum().backward()
        grads[name] = torch.cat([xr.grad.flatten()] + [p.grad.flatten() for p in cell.parameters()])
    gi, gu = grads["implicit"], grads["unrolled"]
    assert (gi - gu).norm() / gu.norm() < 1e-6


def test_phantom_approaches_implicit():
    cell = TanhCell(scale=0.4)
    x = torch.randn(4, DIM, dtype=D)
    w = torch.randn(4, DIM, dtype=D)

    def grads(mode):
        cell.zero_grad()
        z = _run(cell, x, Anderson(tol=1e-13, max_iter=200), mode)
        (z * w).sum().backward()
        return torch.cat([p.grad.flatten() for p in cell.parameters()])

    g_ref = grads(ImplicitGrad(tol=1e-13, max_iter=300))
    errs = [
        ((grads(PhantomGrad(steps=k)) - g_ref).norm() / g_ref.norm()).item() for k in (1, 5, 40)
    ]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-8
    # damped steps converge to the same gradient, more slowly
    err_damped = (grads(PhantomGrad(steps=80, tau=0.7)) - g_ref).norm() / g_ref.norm()
    assert err_damped < 1e-6


def test_non_convergent_cell_still_backprops():
    class Expanding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(1.5, dtype=D))

        def forward(self, z, x):
            return self.a * z + x

    cell = Expanding()
    x = torch.randn(3, 4, dtype=D, requires_grad=True)
    deq = DEQ(cell, solver=Picard(tol=1e-8, max_iter=10), grad=ImplicitGrad(max_iter=10))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        z = deq(x)
    assert not deq.stats.converged
    assert len(w) == 1
    z.sum().backward()
    assert x.grad is not None


def test_jacobian_regularizer_matches_exact_frobenius():
    cell = TanhCell()
    x = torch.randn(2, DIM, dtype=D)
    deq = DEQ(cell, solver=Anderson(tol=1e-12, max_iter=100), jac_reg_samples=4000)
    deq.train()
    z = deq(x)
    est = deq.jac_loss
    J = torch.func.vmap(torch.func.jacrev(lambda zz, xx: cell(zz[None], xx[None])[0]))(
        z.detach(), x
    )
    exact = J.pow(2).sum(dim=(1, 2)).mean() / DIM
    assert abs(est.item() - exact.item()) / exact.item() < 0.05
    est.backward()  # differentiable
    assert cell.W.grad is not None


def test_hutchinson_frobenius_unbiased():
    z = torch.randn(3, 4, dtype=D, requires_grad=True)
    A = torch.randn(4, 4, dtype=D)
    out = z @ A.T
    exact = A.pow(2).sum() / 4
    est = jacobian_frobenius(out, z, n_samples=3000)
    assert abs(est.item() - exact.item()) / exact.item() < 0.05


def test_phantom_damped_mixed_dtypes():
    # under CUDA autocast the cell returns bf16 while the solver state is fp32 (seen on an H200)
    w = torch.randn(4, 4) * 0.1

    def f(z):
        return torch.tanh(z @ w).to(torch.bfloat16)

    z_req = torch.randn(3, 4, requires_grad=True)
    out = PhantomGrad(steps=2, tau=0.8).attach(f, z_req, f(z_req))
    assert out.dtype == torch.float32
    out.sum().backward()
    assert torch.isfinite(z_req.grad).all()
