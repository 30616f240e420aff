"""Never a false "converged", never a garbage gradient reported as fine (float64 where it
matters; float32 where the overflow is the point)."""

from __future__ import annotations

import warnings

import pytest
import torch

from zoo.nn import DEQ
from zoo.solvers import (
    Anderson,
    Broyden,
    ConvergenceWarning,
    GradientWarning,
    ImplicitGrad,
    Picard,
)

SOLVERS = [Picard, Anderson, Broyden]


def _solve(solver, g, z0):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        z, st = solver(g, z0)
    return z, st, [x for x in w if issubclass(x.category, ConvergenceWarning)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_picard_on_a_divergent_map_never_reports_converged(dtype):
    """z -> 2z + x: the iterates double until their norm overflows; a relative residual of
    finite/inf once read 0 and reported converged with |z| at 1e19."""
    x = torch.randn(4, 8, dtype=dtype)
    z, st, warned = _solve(Picard(tol=1e-4, max_iter=200), lambda z: 2 * z + x, torch.zeros_like(x))
    assert not st.converged and len(warned) == 1
    assert not st.converged_mask.any()
    assert torch.isfinite(z).all()  # the lowest-residual iterate, not the overflowed one


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
@pytest.mark.parametrize(
    "case",
    ["overflow", "nan", "inf_input"],
)
def test_every_solver_is_honest_on_bad_maps(solver, case):
    x = torch.randn(3, 5, dtype=torch.float32)
    if case == "overflow":  # a nonlinear expansive map: no solver extrapolates to a fixed point

        def g(z):
            return torch.sinh(3 * z) + 10 + x

    elif case == "nan":

        def g(z):
            return z * float("nan") + x

    else:

        def g(z):
            return torch.full_like(z, float("inf"))

    z, st, warned = _solve(solver(tol=1e-6, max_iter=30), g, torch.zeros_like(x))
    assert not st.converged and len(warned) == 1
    assert not st.converged_mask.any()


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_converged_means_the_residual_is_small(solver):
    torch.manual_seed(0)
    W = torch.randn(6, 6, dtype=torch.float64)
    W = 0.5 * W / torch.linalg.matrix_norm(W, 2)
    x = torch.randn(4, 6, dtype=torch.float64)
    z, st, warned = _solve(
        solver(tol=1e-10, max_iter=200), lambda z: torch.tanh(z @ W.T + x), x * 0
    )
    assert st.converged and not warned
    assert (torch.tanh(z @ W.T + x) - z).norm(dim=1).max() < 1e-8


def _expansive_deq(grad):
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4).double()
    with torch.no_grad():
        lin.weight.copy_(3.0 * torch.eye(4, dtype=torch.float64))
    return DEQ(lambda z, x: lin(z) + x, solver=Picard(tol=1e-8, max_iter=30), grad=grad), lin


@pytest.mark.parametrize("policy", ["warn", "phantom", "zero"])
def test_implicit_gradient_after_an_unconverged_forward_says_so(policy):
    deq, lin = _expansive_deq(
        ImplicitGrad(solver=Picard(), tol=1e-8, max_iter=30, on_unconverged=policy)
    )
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        z = deq(x)
        z.sum().backward()
    assert not deq.stats.converged
    grad_warn = [m for m in w if issubclass(m.category, GradientWarning)]
    back = deq.grad.last_stats
    assert back.forward_converged is False
    if policy == "warn":
        assert grad_warn and "did not converge" in str(grad_warn[0].message)
        # the implicit backward itself diverges for this map: it must not claim convergence
        assert not back.converged
    elif policy == "zero":
        assert back.fallback == "zero" and torch.count_nonzero(lin.weight.grad) == 0
    else:
        assert back.fallback == "phantom"
        assert torch.isfinite(lin.weight.grad).all() and lin.weight.grad.abs().sum() > 0


def _contractive_deq(scale: float, grad: ImplicitGrad) -> DEQ:
    """``z = tanh(W z + x)`` with ``||W||_2 = scale`` (float64), solved to 1e-10 by Anderson."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4).double()
    with torch.no_grad():
        lin.weight.mul_(scale / torch.linalg.matrix_norm(lin.weight, 2))
    return DEQ(lambda z, x: torch.tanh(lin(z) + x), solver=Anderson(tol=1e-10, max_iter=100),
               grad=grad)  # fmt: skip


def test_converged_forward_gives_no_gradient_warning():
    deq = _contractive_deq(0.3, ImplicitGrad(tol=1e-10, max_iter=100))
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientWarning)
        deq(x).sum().backward()
    assert deq.grad.last_stats.converged and deq.grad.last_stats.forward_converged


def _rel_residual(g, z):
    gz = g(z)
    return (gz - z).norm(dim=1) / gz.norm(dim=1)


def _slow_map():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    W = 0.95 * q  # orthogonal times 0.95: Picard crawls, the residual barely shrinks per step
    x = torch.randn(5, 8, dtype=torch.float64)
    return (lambda z: torch.tanh(z @ W.T + x)), torch.zeros_like(x)


_VARIANTS = [
    (Picard, {}),
    (Anderson, {}),
    (Broyden, {}),
    (Anderson, {"joint": True}),
    (Anderson, {"m": 1}),
    (Anderson, {"cuda_graph": True}),  # the fixed-length, synchronization-free solve
]
_IDS = ["picard", "anderson", "broyden", "anderson-joint", "anderson-m1", "anderson-fixed"]


@pytest.mark.parametrize("solver, kw", _VARIANTS, ids=_IDS)
@pytest.mark.parametrize("tol", [1e-3, 1e-12])
def test_returns_iterate_reports_the_returned_states_residual(solver, kw, tol):
    """``returns="iterate"``: the stats describe exactly what the solver returns. The residual
    of the returned state, recomputed independently, equals the reported one (float64 map,
    float32 stats)."""
    g, z0 = _slow_map()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z, st = solver(tol=tol, max_iter=12, returns="iterate", **kw)(g, z0)
    assert st.returned == "iterate"
    got = _rel_residual(g, z)
    assert torch.allclose(got, st.rel_residual.double(), rtol=1e-5, atol=0), (got, st.rel_residual)
    assert torch.equal(st.converged_mask, st.rel_residual <= tol)


@pytest.mark.parametrize("solver, kw", _VARIANTS, ids=_IDS)
def test_returns_step_is_one_map_call_past_the_reported_iterate(solver, kw):
    """The default ``returns="step"`` returns g(z) of the iterate z whose residual is reported,
    and says so in ``stats.returned``: found among the recorded calls, per sample."""
    g, z0 = _slow_map()
    calls = []

    def rec(z):
        out = g(z)
        calls.append((z.clone(), out.clone()))
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z, st = solver(tol=1e-3, max_iter=12, **kw)(rec, z0)
    assert st.returned == "step"
    for r in range(z.shape[0]):
        k = next(i for i, (_, gz) in enumerate(calls) if torch.equal(gz[r], z[r]))
        zz, gz = calls[k][0][r], calls[k][1][r]
        assert abs(float((gz - zz).norm() / gz.norm()) - float(st.rel_residual[r])) < 1e-6


def test_returns_is_validated_and_kept_in_the_spec():
    from zoo.solvers import get_solver

    with pytest.raises(ValueError, match="returns must be 'step'"):
        Anderson(returns="z")
    spec = Anderson(returns="iterate").spec()
    assert spec["returns"] == "iterate"
    assert get_solver(spec).returns == "iterate"
    assert "returns" not in Anderson().spec()  # the default leaves shipped configs unchanged


def test_an_unconverged_backward_warns_once_per_run_and_its_residuals_are_logged():
    """A training run whose backward solves never reach tol gets one warning (the default
    filter), not one per step; SolverStatsCallback logs the residuals as train/backward_*."""
    from types import SimpleNamespace

    from zoo.callbacks import SolverStatsCallback

    deq = _contractive_deq(0.9, ImplicitGrad(tol=1e-12, max_iter=2))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("default")
        for seed in range(3):
            x = torch.randn(
                3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
            )
            deq(x.requires_grad_()).sum().backward()
    assert len([m for m in w if issubclass(m.category, GradientWarning)]) == 1
    assert not deq.grad.last_stats.converged
    logged = {}
    module = SimpleNamespace(
        model=torch.nn.Sequential(deq), log=lambda k, v, **_: logged.update({k: v})
    )
    SolverStatsCallback(every_n_steps=1)._log_backward(module)
    assert logged["train/backward_nfe"] == 2 and logged["train/backward_converged_frac"] == 0.0
    assert logged["train/backward_residual_max"] == float(deq.grad.last_stats.residual.max()) > 0
