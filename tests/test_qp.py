"""QPLayer / qp_solve in float64 against independent answers: the equality-constrained QP on the
active set (a closed form differentiated by autograd through one linear solve), finite
differences, cvxpy's own QP solve, and cvxpylayers."""

import pytest
import torch

from zoo.nn import QPLayer, qp_solve

D = torch.float64


def _problems(B=6, n=6, m=8, k=2, seed=0):
    """Random feasible, strictly convex QPs: some inequalities active at the solution."""
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(B, n, n, generator=g, dtype=D)
    Q = P.transpose(1, 2) @ P + 0.5 * torch.eye(n, dtype=D)
    p = torch.randn(B, n, generator=g, dtype=D)
    G = torch.randn(B, m, n, generator=g, dtype=D)
    z0 = torch.randn(B, n, generator=g, dtype=D)
    h = (G @ z0[..., None])[..., 0] + torch.rand(B, m, generator=g, dtype=D)
    A = torch.randn(B, k, n, generator=g, dtype=D)
    b = (A @ z0[..., None])[..., 0]
    return Q, p, G, h, A, b


def _active_set_solution(Q, p, G, h, A, b, active):
    """The QP's solution as the equality QP on its active set: [[Q, C'], [C, 0]] [z; y] = [-p; d],
    one problem at a time; autograd through torch.linalg.solve differentiates it exactly."""
    out = []
    for i in range(p.shape[0]):
        C = torch.cat([A[i], G[i][active[i]]])
        d = torch.cat([b[i], h[i][active[i]]])
        n, c = Q.shape[-1], C.shape[0]
        K = torch.cat([torch.cat([Q[i], C.T], 1), torch.cat([C, Q.new_zeros(c, c)], 1)])
        out.append(torch.linalg.solve(K, torch.cat([-p[i], d]))[:n])
    return torch.stack(out)


def test_solution_and_gradients_equal_the_active_set_closed_form():
    data = _problems()
    ours = [x.clone().requires_grad_() for x in data]
    z, stats = qp_solve(*ours)
    assert stats.converged and stats.n_iter < 30
    Q, p, G, h, A, b = data
    slack = h - (G @ z.detach()[..., None])[..., 0]
    active = slack < 1e-8
    assert active.any(1).all() and (~active).any(1).all()  # active and inactive ones everywhere
    assert (slack[~active] > 1e-4).all()  # strictly inactive: the active set is unambiguous
    ref_in = [x.clone().requires_grad_() for x in data]
    ref = _active_set_solution(*ref_in, active)
    assert torch.allclose(z, ref, atol=1e-9, rtol=0)
    w = torch.randn_like(z)
    (z * w).sum().backward()
    (ref * w).sum().backward()
    for name, a, r in zip("QpGhAb", ours, ref_in):
        # Q enters through its symmetric part: compare the symmetric parts of the gradients
        ga, gr = (a.grad, r.grad) if name != "Q" else (a.grad, 0.5 * (r.grad + r.grad.mT))
        assert torch.allclose(ga, gr, atol=1e-8, rtol=0), (name, (ga - gr).abs().max())
    assert torch.all(ours[3].grad[~active].abs() < 1e-8)  # an inactive constraint does not move z


def test_gradients_equal_finite_differences_with_shared_and_batched_data():
    Q, p, G, h, A, b = _problems(B=3, n=4, m=5, k=1, seed=1)
    args = (Q[0].clone(), p, G[0].clone(), h, A, b)  # Q and G shared by the batch
    args = tuple(x.clone().requires_grad_() for x in args)
    assert torch.autograd.gradcheck(lambda *a: qp_solve(*a)[0], args, eps=1e-6, atol=1e-6)


def test_without_constraints_it_is_the_linear_solve():
    Q, p, *_ = _problems(B=2, n=3, seed=2)
    z, stats = qp_solve(Q, p)
    assert torch.allclose(z, -torch.linalg.solve(Q, p), atol=1e-12) and stats.converged


def test_stats_say_when_the_budget_stops_it():
    Q, p, G, h, A, b = _problems(seed=3)
    z, stats = qp_solve(Q, p, G, h, A, b, max_iter=2)
    assert stats.n_iter == 2 and not stats.converged and stats.trace.shape == (2, 6)
    _, full = qp_solve(Q, p, G, h, A, b)
    assert full.converged and full.residual.max() <= full.tol and full.trace[-1].max() <= full.tol
    _, loose = qp_solve(Q, p, G, h, A, b, tol=1e-4)
    assert loose.n_iter < full.n_iter and loose.tol == 1e-4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p": torch.zeros(2, 3, dtype=D)}, "Q must be"),
        ({"G": torch.zeros(2, 4, dtype=D), "h": None}, "G with h"),
        ({"h": torch.zeros(3, dtype=D)}, "h must be"),
        ({"p": torch.full((5, 4), float("nan"), dtype=D)}, "p has NaN"),
        ({"G": torch.zeros(3, 2, 4, dtype=D)}, "disagree on the batch size"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
    ],
)
def test_bad_inputs_name_the_problem(kwargs, match):
    base = dict(Q=torch.eye(4, dtype=D), p=torch.zeros(5, 4, dtype=D), G=torch.eye(2, 4, dtype=D),
                h=torch.ones(2, dtype=D))  # fmt: skip
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        qp_solve(**base)


def test_the_layer_learns_its_data_and_keeps_what_is_fixed():
    torch.manual_seed(0)
    eye = torch.eye(6, dtype=D)
    layer = QPLayer(6, n_ineq=6, n_eq=2, fixed={"Q": 0.1 * eye, "G": -eye, "h": torch.zeros(6)})
    layer = layer.double()
    z = layer(torch.randn(4, 6, dtype=D))
    assert layer.stats.converged and (z > -1e-9).all()  # z >= 0, the fixed G z <= h
    z.square().sum().backward()
    names = {
        n for n, t in layer.named_parameters() if t.grad is not None and t.grad.abs().sum() > 0
    }
    assert names == {"A", "log_z0"}  # b = A exp(log_z0); Q, G and h are buffers
    assert torch.allclose(layer.problem()["A"] @ z.detach()[0], layer.problem()["b"], atol=1e-9)
    learned = QPLayer(4, n_ineq=3, n_eq=1).double()
    z = learned(torch.randn(2, 4, dtype=D), h=torch.full((3,), 10.0, dtype=D))  # per-call data
    z.sum().backward()
    assert learned.s0.grad is None and learned.L.grad is not None
    with pytest.raises(ValueError, match="takes Q, G, h, A and b per call"):
        learned(torch.randn(2, 4, dtype=D), q=eye)
    with pytest.raises(ValueError, match="fixed takes"):
        QPLayer(4, fixed={"p": torch.zeros(4)})
    with pytest.raises(ValueError, match="fixed G must have shape"):
        QPLayer(4, n_ineq=2, fixed={"G": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="would fix all"):
        QPLayer(3, n_eq=3)


def _cvxpy_problem(cp, Q, n, m, k):
    x = cp.Variable(n)
    par = [cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter((k, n)),
           cp.Parameter(k)]  # fmt: skip
    prob = cp.Problem(
        cp.Minimize(0.5 * cp.quad_form(x, Q) + par[0] @ x),
        [par[1] @ x <= par[2], par[3] @ x == par[4]],
    )
    return prob, x, par


def _assert_cvxpylayers_agrees(cvxpylayers, prob, layer_kw, solver_args, data, i, z, w, ours, atol):
    """Problem i through a CvxpyLayer: its solution equals ``z[i]`` and its gradients of
    ``(z * w).sum()`` with respect to ``data`` equal ``ours``' (already backpropagated), to atol."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = cvxpylayers.CvxpyLayer(prob, **layer_kw)
        theirs = [v[i].clone().requires_grad_() for v in data]
        (zc,) = layer(*theirs, solver_args=solver_args)
    (zc * w[i]).sum().backward()
    assert (zc - z[i]).abs().max() < atol
    for a, t in zip(ours, theirs):
        assert (a.grad[i] - t.grad).abs().max() < atol


def test_gradients_equal_cvxpylayers_moreau_to_1e_8():
    """cvxpylayers with its quadratic-objective backend (the Moreau solver's interior point
    method, with its own implicit differentiation) is the independent answer: solutions and
    gradients with respect to p, G, h, A and b agree to 1e-8 in float64 on random feasible QPs,
    each with active and inactive inequalities."""
    cp = pytest.importorskip("cvxpy")
    cvxpylayers = pytest.importorskip("cvxpylayers.torch")
    pytest.importorskip("moreau")

    B, n, m, k = 6, 6, 8, 2
    Q, p, G, h, A, b = _problems(B=B, n=n, m=m, k=k, seed=7)
    ours = [x.clone().requires_grad_() for x in (p, G, h, A, b)]
    z, stats = qp_solve(Q, *ours)
    assert stats.converged
    slack = h - (G @ z.detach()[..., None])[..., 0]
    active = slack < 1e-9
    assert active.any(1).all() and (~active).any(1).all()  # both kinds in every problem
    w = torch.randn_like(z)
    (z * w).sum().backward()
    ipm = {"solver": "ipm", "ipm_settings": {"tol_gap_abs": 1e-14, "tol_gap_rel": 1e-14,
                                             "tol_feas": 1e-14}}  # fmt: skip
    for i in range(B):
        prob, x, par = _cvxpy_problem(cp, Q[i].numpy(), n, m, k)
        layer = dict(parameters=par, variables=[x], solver="MOREAU")
        _assert_cvxpylayers_agrees(cvxpylayers, prob, layer, ipm, (p, G, h, A, b), i, z, w,
                                   ours, atol=1e-8)  # fmt: skip


def test_equals_cvxpy_and_cvxpylayers():
    """cvxpy's QP solve (Clarabel, with the quadratic as P) is the independent forward answer
    to 1e-9. cvxpylayers' default backend (diffcp) rewrites 1/2 z'Qz as a second-order cone, so
    its solutions (and gradients) are only as accurate as the square root of the conic gap:
    about 1e-6 at Clarabel's tightest tolerance that still ends 'Solved'; the gradients agree
    to that."""
    cp = pytest.importorskip("cvxpy")
    cvxpylayers = pytest.importorskip("cvxpylayers.torch")

    Q, p, G, h, A, b = _problems(B=3, n=5, m=6, k=1, seed=4)
    ours = [x.clone().requires_grad_() for x in (p, G, h, A, b)]
    z, _ = qp_solve(Q, *ours)
    w = torch.randn_like(z)
    (z * w).sum().backward()
    n, m, k = 5, 6, 1
    args = dict(solve_method="Clarabel", mode="dense", tol_gap_abs=1e-12, tol_gap_rel=1e-12,
                tol_feas=1e-12, n_jobs_forward=1, n_jobs_backward=1)  # fmt: skip
    for i in range(3):
        prob, x, par = _cvxpy_problem(cp, Q[i].numpy(), n, m, k)
        for P_, v in zip(par, (p, G, h, A, b)):
            P_.value = v[i].numpy()
        prob.solve(solver="CLARABEL", tol_gap_abs=1e-14, tol_gap_rel=1e-14, tol_feas=1e-14)
        assert abs(x.value - z[i].detach().numpy()).max() < 1e-9
        layer = dict(parameters=par, variables=[x])
        _assert_cvxpylayers_agrees(cvxpylayers, prob, layer, args, (p, G, h, A, b), i, z, w,
                                   ours, atol=1e-5)  # fmt: skip


def test_large_batched_systems_are_solved_right_on_several_threads():
    """The torch 2.14 CPU wheels' batched LU returns corrupt pivots from about 168 x 168 on
    several threads; the layer's solves must not (OptNet's 4x4 Sudoku KKT system is 168 x 168)."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(5)
        n, k = 64, 40
        Q = 0.1 * torch.eye(n, dtype=D)
        p = -torch.rand(8, n, generator=g, dtype=D)
        A = torch.rand(k, n, generator=g, dtype=D)
        b = A @ torch.rand(n, generator=g, dtype=D)
        z, stats = qp_solve(Q, p, -torch.eye(n, dtype=D), torch.zeros(n, dtype=D), A, b)
        assert stats.converged and torch.get_num_threads() == 2
        assert torch.allclose(z @ A.T, b.expand(8, k), atol=1e-9) and (z > -1e-9).all()
    finally:
        torch.set_num_threads(n_threads)
