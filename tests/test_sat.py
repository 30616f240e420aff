"""SATLayer in float64: the implicit gradient against finite differences, the parallel solve
against the paper's sequential sweeps, and the layer's surface."""

import warnings

import pytest
import torch

from zoo.nn import SATLayer
from zoo.solvers import ImplicitGrad, PhantomGrad, UnrolledGrad

D = torch.float64


def _layer(n=12, m=24, aux=4, k=5, **kw):
    """A well-posed problem: more clauses than variables (a strictly convex face), inputs that
    break the relaxation's rotational symmetry, a tight solve."""
    kw = {"tol": 1e-12, "max_iter": 3000, "grad": ImplicitGrad(tol=1e-11, max_iter=500), **kw}
    layer = SATLayer(n, m, aux, k=k, **kw).double()
    with torch.no_grad():
        layer.S.mul_(3.0)
    return layer


def _batch(n=12, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(B, n, generator=g, dtype=D)
    known = torch.rand(B, n, generator=g) < 0.6
    known[:, -1] = False
    return z, known


def _loss(layer, z, known, w):
    return (layer(z, known) * w).sum()


def test_implicit_gradient_equals_finite_differences():
    layer = _layer()
    z, known = _batch()
    w = torch.randn(z.shape, dtype=D, generator=torch.Generator().manual_seed(1))
    zz = z.clone().requires_grad_()
    _loss(layer, zz, known, w).backward()
    assert layer.stats.converged and layer.grad.last_stats.converged
    eps = 1e-6
    for direction in (torch.randn_like(layer.S), torch.randn_like(layer.S)):
        with torch.no_grad():
            layer.S.add_(eps * direction)
            up = _loss(layer, z, known, w)
            layer.S.sub_(2 * eps * direction)
            down = _loss(layer, z, known, w)
            layer.S.add_(eps * direction)
        fd = (up - down) / (2 * eps)
        assert torch.isclose((layer.S.grad * direction).sum(), fd, rtol=1e-6, atol=1e-8)
    dz = torch.randn_like(z) * known  # the given entries move the fixed input vectors
    with torch.no_grad():
        fd = (_loss(layer, z + eps * dz, known, w) - _loss(layer, z - eps * dz, known, w)) / (
            2 * eps
        )
    assert torch.isclose((zz.grad * dz).sum(), fd, rtol=1e-6, atol=1e-8)


def test_parallel_anderson_solve_equals_the_sequential_sweeps():
    for n, m, aux, k in ((12, 16, 0, 4), (30, 40, 5, None)):
        layer = _layer(n, m, aux, k)
        z, known = _batch(n, seed=n)
        seq = layer(z, known)
        assert layer.stats.converged and layer.stats.n_iter > 1
        layer.method = "parallel"
        par = layer(z, known)
        assert layer.stats.converged
        assert torch.allclose(seq, par, atol=1e-9, rtol=0)


def test_given_entries_pass_through_and_outputs_are_probabilities():
    layer = SATLayer(9, m=8, aux=2)
    z, known = _batch(9, B=4)
    out = layer(z.float(), known)
    assert torch.equal(out[known], z.float()[known])
    assert ((out >= 0) & (out <= 1)).all() and out.dtype == torch.float32
    assert layer.stats.trace.shape[1] == 4 and layer.stats.n_iter >= 1
    again = SATLayer(9, m=8, aux=2)(z.float(), known)  # same seed: the same layer and answer
    assert torch.equal(out, again)


def test_budget_and_gradient_modes():
    layer = _layer(max_iter=2)
    z, known = _batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer(z.clone().requires_grad_(), known).sum().backward()
    assert layer.stats.n_iter == 2 and not layer.stats.converged
    assert any("did not converge" in str(c.message) for c in caught)
    phantom = _layer(grad=PhantomGrad(steps=1))
    phantom(z, known).sum().backward()
    assert phantom.S.grad is not None
    with pytest.raises(ValueError, match="differentiates at its fixed point"):
        SATLayer(4, 4, grad=UnrolledGrad())


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.rand(2, 5), torch.zeros(2, 5, dtype=torch.bool)), r"z must be \(batch, 4\)"),
        ((torch.rand(2, 4), torch.zeros(2, 3, dtype=torch.bool)), "is_input must have"),
        ((torch.full((2, 4), 1.5), torch.zeros(2, 4, dtype=torch.bool)), "probabilities"),
        ((torch.rand(2, 4), torch.ones(2, 4, dtype=torch.bool)), "nothing for the layer"),
    ],
)
def test_bad_inputs_name_the_problem(args, match):
    with pytest.raises(ValueError, match=match):
        SATLayer(4, 4)(*args)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="method"):
        SATLayer(4, 4, method="random")
    with pytest.raises(ValueError, match="m must be"):
        SATLayer(4, 0)
    with pytest.raises(ValueError, match="tol"):
        SATLayer(4, 4, tol=0)
    with pytest.raises(ValueError, match="k must be"):
        SATLayer(4, 4, k=1)


def test_the_proximal_simultaneous_update_settles_where_the_bare_one_cycles():
    """Two unknown variables joined by one clause, started alike: the bare simultaneous step
    (prox=0) swaps their signs forever (period 2), while the proximal one, iterated plainly,
    settles at a fixed point of the coordinate step (the two vectors opposite)."""
    for prox, settles in ((0.0, False), (0.5, True)):
        layer = SATLayer(2, m=1, prox=prox).double()
        with torch.no_grad():
            layer.S.copy_(torch.tensor([[0.0], [1.0], [1.0]], dtype=D))
        z = torch.zeros(1, 2, dtype=D)
        known = torch.zeros(1, 2, dtype=torch.bool)
        V_fixed, fixed = layer._known(z, known)
        start = layer.start.to(D).clone()
        start[2] = start[1]  # v_1 = v_2
        T = layer._map(layer.S @ layer.S.T, V_fixed, fixed)
        V = torch.where(fixed, V_fixed, start).reshape(1, -1)
        first = T(V)
        for _ in range(200):
            V = T(V)
        V = V.view(3, -1)
        if settles:
            assert torch.allclose(T(V.reshape(1, -1)).view(3, -1), V, atol=1e-12)
            assert torch.allclose(V[1], -V[2], atol=1e-12)  # the clause's optimum
        else:
            assert torch.allclose(V.reshape(1, -1), T(first), atol=1e-12)  # back where it was
            assert not torch.allclose(first, T(first), atol=1e-3)


def test_the_proximal_weight_changes_the_path_not_the_answer():
    layer = _layer(30, 40, 5, None, method="parallel")
    z, known = _batch(30, seed=30)
    answers, iters = [], []
    for prox in (0.1, 0.5, 2.0):
        layer.prox = prox
        answers.append(layer(z, known))
        assert layer.stats.converged
        iters.append(layer.stats.n_iter)
    assert torch.allclose(answers[0], answers[1], atol=1e-9, rtol=0)
    assert torch.allclose(answers[0], answers[2], atol=1e-9, rtol=0)
    assert len(set(iters)) > 1
    with pytest.raises(ValueError, match="prox"):
        SATLayer(4, 4, prox=-1.0)
