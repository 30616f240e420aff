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


def _check_finite_differences(layer, z, known, w, z_grad, eps=1e-6):
    """``layer.S.grad`` and ``z_grad`` (of ``_loss``) against central differences."""
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
    assert torch.isclose((z_grad * dz).sum(), fd, rtol=1e-6, atol=1e-8)


def test_implicit_gradient_equals_finite_differences():
    layer = _layer()
    z, known = _batch()
    w = torch.randn(z.shape, dtype=D, generator=torch.Generator().manual_seed(1))
    zz = z.clone().requires_grad_()
    _loss(layer, zz, known, w).backward()
    assert layer.stats.converged and layer.grad.last_stats.converged
    _check_finite_differences(layer, z, known, w, zz.grad)


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
        T, V0, *_ = layer._map(z, known)  # the state: the two unknown rows
        V = V0.view(-1, 2).clone()  # (k, 2): one column a variable
        V[:, 1] = V[:, 0]  # v_1 = v_2
        V = V.reshape(1, -1)
        first = T(V)
        for _ in range(200):
            V = T(V)
        V = V.view(-1, 2)
        if settles:
            assert torch.allclose(T(V.reshape(1, -1)).view(-1, 2), V, atol=1e-12)
            assert torch.allclose(V[:, 0], -V[:, 1], atol=1e-12)  # the clause's optimum
        else:
            assert torch.allclose(V.reshape(1, -1), T(first), atol=1e-12)  # back where it was
            assert not torch.allclose(first, T(first), atol=1e-3)


def _objective(flat, V_fixed, C):
    """<C, V'V> with the unknown rows (after the truth and 10 given ones) set from T's state."""
    B, N, k = V_fixed.shape
    full = V_fixed.clone()
    full[:, 11:] = flat.view(B, k, -1).transpose(1, 2)
    return torch.einsum("bik,ij,bjk->b", full, C, full)


def test_from_prox_1_no_plain_iteration_raises_the_objective():
    """The descent bound of the proximal update, checked on the objective <S S', V'V> itself:
    with prox=1 every plain (unaccelerated) iteration lowers it or keeps it, from random starts
    and random clauses, where the bare step (prox=0) does raise it."""
    rises = {}
    for prox in (0.0, 1.0):
        rises[prox] = 0
        for seed in range(4):
            layer = SATLayer(20, m=15, aux=6, prox=prox, seed=seed).double()
            z, known = _batch(20, B=2, seed=seed)
            known[:, :10] = True
            known[:, 10:] = False
            T, V, *_ = layer._map(z, known)
            V_fixed, _ = layer._known(z, known)
            C = (layer.S @ layer.S.T).detach()
            with torch.no_grad():
                f = _objective(V, V_fixed, C)
                for _ in range(60):
                    V = T(V)
                    f_next = _objective(V, V_fixed, C)
                    rises[prox] += int((f_next > f + 1e-10).sum())
                    f = f_next
    assert rises[1.0] == 0
    assert rises[0.0] > 0


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


def test_compact_solve_stops_settled_samples_and_keeps_answer_and_gradient():
    """Per-sample compaction: each sample stops being updated once its own solve settles (fewer
    rows evaluated than ``nfe x B``); the answer and the implicit gradient agree with the
    full-batch solve to the tolerance's order."""
    z, known = _batch(12, B=6, seed=3)
    known[0] = True  # one sample with a single unknown: it settles long before the others
    known[0, -1] = False
    out, grads, stats = [], [], []
    for compact in (False, True):
        layer = _layer(method="parallel", tol=1e-10, compact=compact)
        zz = z.clone().requires_grad_()
        y = layer(zz, known)
        (y * torch.linspace(-1, 1, 12, dtype=D)).sum().backward()
        out.append(y.detach())
        grads.append((layer.S.grad.clone(), zz.grad.clone()))
        stats.append(layer.stats)
    full, comp = stats
    assert full.converged and comp.converged
    assert full.rows_evaluated == full.nfe * 6
    assert comp.rows_evaluated < comp.nfe * 6
    assert torch.allclose(out[0], out[1], atol=1e-8, rtol=0)
    for a, b in zip(grads[0], grads[1], strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="compact=True needs method='parallel'"):
        SATLayer(4, 4, compact=True)
    with pytest.raises(ValueError, match="compact must be"):
        SATLayer(4, 4, method="parallel", compact=1)


def test_random_start_draws_afresh_in_training_and_keeps_the_fixed_start_in_evaluation():
    """``random_start``: two training calls start from different vectors (cut short, they end in
    different places), but solved to convergence they give the fixed start's answer and implicit
    gradient; in evaluation the layer is the fixed-start layer, call after call."""
    z, known = _batch(12, B=3, seed=5)
    w = torch.linspace(-1, 1, 12, dtype=D)
    fixed = _layer(method="parallel", tol=1e-11)
    rand = _layer(method="parallel", tol=1e-11, random_start=True)
    assert rand.training and "random_start=True" in repr(rand)
    short = _layer(method="parallel", max_iter=2, random_start=True)
    torch.manual_seed(0)
    a = short(z, known)
    b = short(z, known)
    assert not torch.allclose(a, b)
    out = []
    for layer in (fixed, rand):
        zz = z.clone().requires_grad_()
        y = layer(zz, known)
        assert layer.stats.converged
        (y * w).sum().backward()
        out.append((y.detach(), layer.S.grad.clone(), zz.grad.clone()))
    for x, y in zip(out[0], out[1], strict=True):
        assert torch.allclose(x, y, atol=1e-7, rtol=1e-6)
    short.eval()
    ref = _layer(method="parallel", max_iter=2).eval()
    assert torch.equal(short(z, known), short(z, known))
    assert torch.equal(short(z, known), ref(z, known))
    with pytest.raises(ValueError, match="random_start must be"):
        SATLayer(4, 4, random_start=1)


# -- method="satnet": the paper's algorithm in the compiled kernel ------------------------------


def _satnet(**kw):
    """``_layer``'s problem with the compiled sweeps (no ``grad``: the paper's backward)."""
    kw = {"tol": 1e-28, "max_iter": 3000, "damping": 0.0, **kw}
    layer = SATLayer(12, 24, 4, k=5, method="satnet", **kw).double()
    with torch.no_grad():
        layer.S.mul_(3.0)
    return layer


def test_satnet_method_sweeps_are_the_python_sweeps():
    """A fixed number of sweeps from the same start in the same order: the compiled kernel and
    the layer's Python-level sweeps give the same vectors, to rounding (float64)."""
    z, known = _batch()
    python = _layer(method="sequential", max_iter=7, tol=1e-300)
    compiled = _satnet(max_iter=7, tol=1e-300)
    r = python._map(z, known)
    V, _ = python._sweeps(r.full0, r.fixed)
    x = V.view(r.full0.shape)[..., 0]
    expected = torch.arccos((-x).clamp(-1 + 1e-6, 1 - 1e-6))[:, 1:13] / torch.pi
    out = compiled(z, known)
    assert compiled.stats.n_iter == 7 and not compiled.stats.converged
    assert torch.allclose(out, torch.where(known, z, expected), atol=1e-13, rtol=0)


def test_satnet_method_gradient_at_convergence_is_the_implicit_gradient():
    """Converged sweeps, no damping: the paper's backward gives the exact implicit gradient,
    checked against finite differences (the clauses and the given inputs) and against the
    parallel method's ImplicitGrad."""
    z, known = _batch()
    w = torch.randn(z.shape, dtype=D, generator=torch.Generator().manual_seed(1))
    layer = _satnet()
    zz = z.clone().requires_grad_()
    _loss(layer, zz, known, w).backward()
    assert layer.stats.converged and layer.stats.n_iter > 50
    _check_finite_differences(layer, z, known, w, zz.grad)
    parallel = _layer(method="parallel")
    zp = z.clone().requires_grad_()
    _loss(parallel, zp, known, w).backward()
    assert torch.allclose(layer.S.grad, parallel.S.grad, atol=1e-8, rtol=0)
    assert torch.allclose(zz.grad, zp.grad, atol=1e-8, rtol=0)


def test_satnet_method_damping_shrinks_the_gradient_and_backward_counts_the_sweeps():
    z, known = _batch()
    w = torch.randn(z.shape, dtype=D, generator=torch.Generator().manual_seed(1))
    grads = []
    for damping in (0.0, 1e-2, 1.0):
        layer = _satnet(damping=damping)
        _loss(layer, z, known, w).backward()
        grads.append(layer.S.grad.norm())
    assert grads[0] > grads[1] > grads[2] > 0
    assert "damping=0.01" in repr(_satnet(damping=1e-2))
    from zoo.models.optlayers import SATNetSolver

    model = SATNetSolver(n_bits=8, m=8, aux=2, cell_bits=1, k=4, method="satnet", max_iter=5)
    bits = torch.tensor([[1.0, 0, 1, 0, 0, 0, 0, 0]])
    model(bits, bits.new_tensor([[1, 1, 1, 1, 0, 0, 0, 0]]).bool()).sum().backward()
    assert model.cost().nfe_backward == model.cost().nfe_forward == model.sat.stats.n_iter


def test_satnet_method_random_orders_in_training_and_a_fixed_one_in_evaluation():
    z, known = _batch()
    layer = _satnet(max_iter=2, random_start=True)
    torch.manual_seed(0)
    assert not torch.allclose(layer(z, known), layer(z, known))
    layer.eval()
    assert torch.equal(layer(z, known), layer(z, known))


def test_satnet_method_bad_settings_are_refused():
    with pytest.raises(ValueError, match="leave grad unset"):
        SATLayer(4, 4, method="satnet", grad=ImplicitGrad())
    with pytest.raises(ValueError, match="damping is the backward of method='satnet'"):
        SATLayer(4, 4, method="parallel", damping=1e-2)
    with pytest.raises(ValueError, match="damping must be"):
        SATLayer(4, 4, method="satnet", damping=-1.0)
    with pytest.raises(ValueError, match="compact=True needs"):
        SATLayer(4, 4, method="satnet", compact=True)
    from zoo.models.optlayers import SATNetSolver

    with pytest.raises(ValueError, match="grad_tol and grad_max_iter"):
        SATNetSolver(n_bits=8, m=8, aux=2, cell_bits=1, method="satnet", grad_max_iter=5)
