"""Fixed-point solvers: convergence, per-sample stopping, robustness (float64)."""

import dataclasses
import warnings

import pytest
import torch

from zoo.solvers import (
    Anderson,
    Broyden,
    ConvergenceWarning,
    FixedPointMap,
    ImplicitGrad,
    Picard,
    get_grad,
    get_solver,
)

D = torch.float64


def _linear_problem(b=6, d=5, rho=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D))
    A = q @ torch.diag(torch.linspace(-rho, rho, d, dtype=D)) @ q.T
    c = torch.randn(b, d, generator=g, dtype=D)
    z_true = torch.linalg.solve(torch.eye(d, dtype=D) - A, c.T).T
    return (lambda z: z @ A.T + c), z_true


SOLVERS = [
    lambda tol: Picard(tol=tol, max_iter=300),
    lambda tol: Picard(tol=tol, max_iter=300, damping=0.3),
    lambda tol: Anderson(m=5, tol=tol, max_iter=100),
    lambda tol: Anderson(m=3, beta=0.8, tol=tol, max_iter=100),
    lambda tol: Broyden(tol=tol, max_iter=100),
    lambda tol: Broyden(tol=tol, max_iter=100, memory=3),
]


@pytest.mark.parametrize("make", SOLVERS)
@pytest.mark.parametrize("stop_mode", ["rel", "abs"])
def test_linear_fixed_point(make, stop_mode):
    g, z_true = _linear_problem()
    solver = make(1e-10)
    solver.stop_mode = stop_mode
    z, stats = solver(g, torch.zeros_like(z_true))
    assert stats.converged
    assert (stats.residual <= 1e-10).all()
    assert torch.allclose(z, z_true, atol=1e-8)
    assert stats.nfe == stats.n_iter or isinstance(solver, Broyden)
    assert stats.trace.shape == (stats.n_iter, z_true.shape[0])


@pytest.mark.parametrize("make", SOLVERS)
def test_tanh_cell(make):
    g0 = torch.Generator().manual_seed(1)
    W = 0.4 * torch.randn(8, 8, generator=g0, dtype=D) / 8**0.5
    x = torch.randn(4, 8, generator=g0, dtype=D)

    def g(z):
        return torch.tanh(z @ W.T + x)

    z, stats = make(1e-9)(g, torch.zeros_like(x))
    assert stats.converged
    assert torch.allclose(g(z), z, atol=1e-8)


def test_anderson_beats_picard_on_slow_map():
    g, z_true = _linear_problem(rho=0.95)
    _, sp = Picard(tol=1e-8, max_iter=1000)(g, torch.zeros_like(z_true))
    _, sa = Anderson(m=5, tol=1e-8, max_iter=200)(g, torch.zeros_like(z_true))
    assert sa.converged and sp.converged
    assert sa.nfe < sp.nfe / 3


def test_per_sample_convergence():
    """Easy samples stop improving once converged; hard ones keep going; all reach tol."""
    d = 4
    rates = torch.tensor([0.1, 0.1, 0.9, 0.9], dtype=D)[:, None]
    c = torch.ones(4, d, dtype=D)

    def g(z):
        return rates * z + c

    z, stats = Picard(tol=1e-8, max_iter=500)(g, torch.zeros(4, d, dtype=D))
    assert stats.converged
    assert torch.allclose(z, c / (1 - rates), atol=1e-6)
    # the easy samples hit tol long before the hard ones
    first_ok = (stats.trace <= 1e-8).int().argmax(dim=0)
    assert first_ok[:2].max() < first_ok[2:].min() / 3


def test_non_convergence_warns_once_and_returns_best():
    def g(z):  # expanding map: no attracting fixed point
        return 2.0 * z + 1.0

    z0 = torch.zeros(3, 4, dtype=D)
    for solver in (Picard(tol=1e-6, max_iter=20), Anderson(m=3, tol=1e-6, max_iter=20)):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            z, stats = solver(g, z0)
        conv = [x for x in w if issubclass(x.category, ConvergenceWarning)]
        # one warning exactly when the solve did not converge (Anderson may solve the linear
        # map exactly; Picard cannot)
        assert len(conv) == (0 if stats.converged else 1)
        assert stats.converged == bool((stats.residual <= 1e-6).all())
        assert torch.isfinite(z).all()
        if isinstance(solver, Picard):
            assert not stats.converged


def test_picard_expanding_returns_lowest_residual():
    def g(z):
        return 2.0 * z + 1.0

    with pytest.warns(ConvergenceWarning):
        z, stats = Picard(tol=1e-6, max_iter=10)(g, torch.zeros(2, 3, dtype=D))
    assert not stats.converged
    assert torch.allclose(stats.residual, stats.trace.min(dim=0).values.to(stats.residual))


def test_anderson_singular_history_does_not_raise():
    """A map whose residual directions are collinear makes the Gram matrix singular."""
    c = torch.ones(2, 6, dtype=D)

    def g(z):
        return 0.5 * z + c  # every residual is parallel to the same vector

    z, stats = Anderson(m=5, lam=0.0, tol=1e-12, max_iter=50)(g, torch.zeros(2, 6, dtype=D))
    assert torch.isfinite(z).all()
    assert torch.allclose(z, 2 * c, atol=1e-8)

    def g_const(z):  # constant map: the residual history is rank one from the start
        return c.clone()

    z, stats = Anderson(m=4, lam=0.0, tol=1e-12, max_iter=10)(g_const, torch.zeros(2, 6, dtype=D))
    assert torch.allclose(z, c)


def test_anderson_nan_in_map_falls_back():
    calls = {"n": 0}

    def g(z):
        calls["n"] += 1
        out = 0.5 * z + 1.0
        if calls["n"] == 3:
            out = out.clone()
            out[0, 0] = float("nan")
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z, _ = Anderson(m=3, tol=1e-10, max_iter=40)(g, torch.zeros(2, 3, dtype=D))
    assert torch.isfinite(z).all()


def test_tuple_state_via_deq():
    from zoo.nn import DEQ

    class Cell(torch.nn.Module):
        def forward(self, z, x):
            a, b = z
            return [torch.tanh(0.3 * b.mean(dim=(1,), keepdim=True) + x[0]), 0.5 * a[:, :2] + x[1]]

    x = [torch.randn(3, 4, dtype=D), torch.randn(3, 2, dtype=D)]
    z0 = [torch.zeros(3, 4, dtype=D), torch.zeros(3, 2, dtype=D)]
    z = DEQ(Cell(), solver=Anderson(tol=1e-10, max_iter=100))(x, z0)
    assert isinstance(z, list) and z[0].shape == (3, 4) and z[1].shape == (3, 2)
    out = Cell()(z, x)
    assert all(torch.allclose(o, zz, atol=1e-8) for o, zz in zip(out, z))


def test_registry_names():
    assert isinstance(get_solver("Anderson", m=3), Anderson)
    assert isinstance(get_grad("implicit"), ImplicitGrad)
    with pytest.raises(ValueError, match="anderson, broyden, picard"):
        get_solver("newton")
    with pytest.raises(ValueError, match="implicit"):
        get_grad("adjoint")


@pytest.mark.parametrize(
    "bad", [dict(tol=-1.0), dict(max_iter=0), dict(stop_mode="max"), dict(m=0)]
)
def test_bad_solver_options(bad):
    with pytest.raises(ValueError):
        Anderson(**bad)


# ---- joint solves: one stop and best-iterate decision for a batch of coupled samples ----


def _coupled_map(b=6, d=5, seed=3):
    """A contraction whose samples are coupled (each row sees the batch mean), with rows that
    converge at different speeds, like a DEQ-Transformer's positions."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, d, generator=g, dtype=torch.float64)
    w = 0.6 * w / torch.linalg.matrix_norm(w, ord=2)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    speed = torch.linspace(0.1, 0.9, b, dtype=torch.float64)[:, None]

    def f(z):
        return speed * torch.tanh(z @ w + 0.5 * z.mean(0, keepdim=True)) + x

    return f, torch.zeros(b, d, dtype=torch.float64)


class _Recorder:
    def __init__(self, f):
        self.f, self.calls = f, []

    def __call__(self, z):
        out = self.f(z)
        self.calls.append((z.clone(), out.clone()))
        return out


@pytest.mark.parametrize("solver_cls", [Picard, Anderson, Broyden])
def test_joint_solve_returns_one_iterate_and_stops_when_all_samples_meet_tol_together(
    solver_cls,
):
    f, z0 = _coupled_map()
    tol = 1e-6
    rec = _Recorder(f)
    z, stats = solver_cls(tol=tol, max_iter=60, joint=True, warn=False)(rec, z0)
    # the independent answer, from the recorded (z, g(z)) pairs: the first call whose worst
    # sample meets tol ends the solve, and its g(z) is returned whole
    worst = [float(((gz - zz).norm(dim=1) / (gz.norm(dim=1) + 1e-9)).max()) for zz, gz in rec.calls]
    k = next(i for i, w in enumerate(worst) if w <= tol)
    assert stats.nfe == k + 1 == len(rec.calls) and stats.converged
    torch.testing.assert_close(z, rec.calls[k][1], rtol=0, atol=1e-12)
    zk, gzk = rec.calls[k]
    per_sample = (gzk - zk).norm(dim=1) / (gzk.norm(dim=1) + 1e-9)
    torch.testing.assert_close(stats.rel_residual.double(), per_sample, rtol=1e-5, atol=0)
    assert all(w > tol for w in worst[:k])


def test_per_sample_stops_mix_iterations_of_coupled_samples_and_joint_does_not():
    """The reason for ``joint``: the default per-sample rule returns rows from different
    iterations, which the map never produced together."""
    f, z0 = _coupled_map()
    rec = _Recorder(f)
    z, stats = Picard(tol=1e-6, max_iter=60, warn=False)(rec, z0)
    outputs = [gz for _, gz in rec.calls]
    assert stats.converged
    assert not any(torch.equal(z, gz) for gz in outputs)  # a mix: no single call gave it
    rows_from = {
        next(i for i, gz in enumerate(outputs) if torch.equal(z[r], gz[r])) for r in range(6)
    }
    assert len(rows_from) > 1
    zj, _ = Picard(tol=1e-6, max_iter=60, joint=True, warn=False)(f, z0)
    assert any(torch.equal(zj, gz) for gz in outputs)


def test_joint_never_converging_returns_the_iterate_with_the_lowest_worst_sample():
    f, z0 = _coupled_map()
    rec = _Recorder(f)
    z, stats = Anderson(tol=0.0, max_iter=7, joint=True, warn=False)(rec, z0)
    worst = [float(((gz - zz).norm(dim=1) / (gz.norm(dim=1) + 1e-9)).max()) for zz, gz in rec.calls]
    k = min(range(len(worst)), key=worst.__getitem__)
    assert stats.nfe == 7 and not stats.converged
    torch.testing.assert_close(z, rec.calls[k][1], rtol=0, atol=0)


@pytest.mark.parametrize("solver_cls", [Picard, Anderson, Broyden])
def test_joint_fixed_budget_solve_equals_the_early_exit_joint_solve(solver_cls):
    f, z0 = _coupled_map()
    z, stats = solver_cls(tol=1e-6, max_iter=60, joint=True, warn=False)(f, z0)
    zg, sg = solver_cls(tol=1e-6, max_iter=60, joint=True, cuda_graph=True, warn=False)(f, z0)
    assert sg.nfe == 60 and sg.converged
    torch.testing.assert_close(zg, z, rtol=0, atol=1e-12)
    torch.testing.assert_close(sg.rel_residual, stats.rel_residual, rtol=0, atol=0)


def test_joint_is_configured_like_any_option():
    s = Anderson(m=3, tol=1e-5, joint=True, compact=True)
    assert s.config()["joint"] is True and "joint" not in Anderson().config()
    assert get_solver(s.spec()).joint and get_solver(s.spec()).compact


def _blocks_map(n_blocks=4, rows=3, d=5):
    """Rows coupled within consecutive blocks of ``rows`` (each sees its block's mean) and
    independent across blocks, which contract at different speeds; float64. With ``rows``
    (per-row subsets of whole blocks) so that compaction applies."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    x = torch.randn(n_blocks * rows, d, generator=g, dtype=torch.float64)
    speed = torch.linspace(0.2, 0.9, n_blocks, dtype=torch.float64).repeat_interleave(rows)[:, None]

    def on_rows(z, idx):
        zb = z.view(-1, rows, z.shape[1])
        mean = zb.mean(1, keepdim=True).expand_as(zb).reshape(z.shape)
        return speed[idx] * torch.tanh(z @ w + 0.5 * mean) + x[idx]

    def f(z):
        return on_rows(z, torch.arange(z.shape[0]))

    return (
        FixedPointMap(f, rows=on_rows, group=rows),
        torch.zeros(n_blocks * rows, d, dtype=torch.float64),
        n_blocks,
        rows,
    )


@pytest.mark.parametrize("solver_cls", [Picard, Anderson, Broyden])
@pytest.mark.parametrize("compact", [False, True])
def test_joint_blocks_each_get_the_joint_solve_they_get_alone(solver_cls, compact):
    """A map that declares its coupled blocks (``g.group``) gets one stop and best-iterate
    decision per block: each block's returned rows are exactly a joint solve of that block on
    its own, and with compaction a stopped block is no longer evaluated."""
    f, z0, n, rows = _blocks_map()
    tol = 1e-7
    z, stats = solver_cls(tol=tol, max_iter=80, joint=True, compact=compact, warn=False)(f, z0)
    assert stats.converged
    alone_nfe = []
    for b in range(n):
        sl = slice(b * rows, (b + 1) * rows)
        idx = torch.arange(b * rows, (b + 1) * rows)

        def fb(zb, idx=idx):
            return f.rows(zb, idx)

        zb, sb = solver_cls(tol=tol, max_iter=80, joint=True, warn=False)(fb, z0[sl])
        torch.testing.assert_close(z[sl], zb, rtol=0, atol=1e-12)
        torch.testing.assert_close(stats.rel_residual[sl], sb.rel_residual, rtol=0, atol=0)
        alone_nfe.append(sb.nfe)
    assert len(set(alone_nfe)) > 1 and stats.nfe == max(alone_nfe)  # blocks stop apart
    expected_rows = sum(alone_nfe) * rows if compact else stats.nfe * n * rows
    assert stats.rows_evaluated == expected_rows


def test_joint_blocks_fixed_budget_equals_the_early_exit_solve():
    f, z0, _, _ = _blocks_map()
    f = dataclasses.replace(f, rows=None)
    z, stats = Anderson(tol=1e-7, max_iter=80, joint=True, warn=False)(f, z0)
    zg, sg = Anderson(tol=1e-7, max_iter=80, joint=True, cuda_graph=True, warn=False)(f, z0)
    assert sg.nfe == 80 and sg.converged
    torch.testing.assert_close(zg, z, rtol=0, atol=1e-12)


def test_a_group_that_does_not_divide_the_batch_is_refused():
    f, z0, _, _ = _blocks_map()
    f = dataclasses.replace(f, group=5)
    with pytest.raises(ValueError, match="divides the batch of 12 rows"):
        Picard(joint=True, warn=False)(f, z0)
