"""Every constructor option of every solver, gradient mode and implicit layer takes effect.

The cases are read from the signatures: a new option is a new test case here, which fails until
``EFFECTS`` says how to show what it changes (NFE, the trajectory, the returned state, the stats)
or that a value it cannot honour is refused with a clear error. torchdeq#12 (an option that
silently does nothing) is the failure this guards against.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import zoo.solvers._anderson as anderson_mod
from zoo.nn import CNF, DEQ, DEQCell, ODEBlock, QPLayer, SATLayer
from zoo.nn._ode import ODEBudgetError
from zoo.solvers import (
    Anderson,
    Broyden,
    ConvergenceWarning,
    FixedPointMap,
    GradientWarning,
    ImplicitGrad,
    PhantomGrad,
    Picard,
    Reversible,
    ReversibleGrad,
    UnrolledGrad,
)

D = torch.float64
B, N = 6, 5


def _problem(scale: float = 1.0):
    """Rows that contract at different speeds (float64), with per-row evaluation."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N, N, generator=g, dtype=D)
    w = w / torch.linalg.matrix_norm(w, ord=2)  # contractions of rate `speed` per row
    x = scale * torch.randn(B, N, generator=g, dtype=D)
    speed = torch.linspace(0.1, 0.8, B, dtype=D)[:, None]

    def rows(z, idx):
        return speed[idx] * torch.tanh(z @ w.T) + x[idx]

    return FixedPointMap(lambda z: rows(z, torch.arange(z.shape[0])), rows=rows), torch.zeros(
        B, N, dtype=D
    )


def _solve(solver, scale: float = 1.0):
    f, z0 = _problem(scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return solver(f, z0)


def _nfe(solver, scale: float = 1.0) -> int:
    return _solve(solver, scale)[1].nfe


def _differ(make: Callable, a, b, what: Callable = lambda out: out[1].nfe) -> None:
    """``make(a)`` and ``make(b)`` give different ``what``."""
    ra, rb = what(make(a)), what(make(b))
    if isinstance(ra, torch.Tensor):
        assert ra.shape != rb.shape or not torch.allclose(ra, rb, rtol=0, atol=1e-12), (a, b)
    else:
        assert ra != rb, (a, b, ra)


# --- solvers ---------------------------------------------------------------------------------


def _solver_effects(cls) -> dict[str, Callable[[], None]]:
    def tol():
        loose, tight = _solve(cls(tol=1e-3, max_iter=200)), _solve(cls(tol=1e-9, max_iter=200))
        assert tight[1].nfe > loose[1].nfe and tight[1].residual.max() <= 1e-9

    def max_iter():
        for n in (2, 5):
            assert _solve(cls(tol=0.0, max_iter=n))[1].n_iter == n

    def stop_mode():  # states of norm ~10: the absolute residual needs more iterations
        rel = _solve(cls(tol=1e-4, max_iter=300, stop_mode="rel"), scale=10.0)[1]
        ab = _solve(cls(tol=1e-4, max_iter=300, stop_mode="abs"), scale=10.0)[1]
        assert ab.nfe >= rel.nfe and ab.stop_mode == "abs"
        n = min(ab.n_iter, rel.n_iter)
        assert not torch.allclose(ab.trace[:n], rel.trace[:n])  # the residuals it stops on
        assert torch.equal(ab.residual, ab.abs_residual) and torch.equal(
            rel.residual, rel.rel_residual
        )
        with pytest.raises(ValueError, match="stop_mode"):
            cls(stop_mode="max")

    def warn():
        f, z0 = _problem()
        with pytest.warns(ConvergenceWarning):
            cls(tol=1e-12, max_iter=2, warn=True)(f, z0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cls(tol=1e-12, max_iter=2, warn=False)(f, z0)

    effects = {"tol": tol, "max_iter": max_iter, "stop_mode": stop_mode, "warn": warn}
    if "compact" in inspect.signature(cls).parameters:

        def compact():
            full = _solve(cls(tol=1e-9, max_iter=200))[1]
            comp = _solve(cls(tol=1e-9, max_iter=200, compact=True))[1]
            assert full.rows_evaluated == full.nfe * B > comp.rows_evaluated
            with pytest.raises(ValueError, match="exclude each other"):
                cls(compact=True, cuda_graph=True)

        def cuda_graph():  # a fixed budget: all max_iter iterations, the same fixed point
            early, fixed = (
                _solve(cls(tol=1e-6, max_iter=80)),
                _solve(cls(tol=1e-6, max_iter=80, cuda_graph=True)),
            )
            assert early[1].nfe < 80 == fixed[1].nfe
            torch.testing.assert_close(early[0], fixed[0], rtol=0, atol=1e-12)

        def joint():  # one iterate for the whole batch: the fast rows are not frozen early
            per, one = (
                _solve(cls(tol=1e-5, max_iter=200)),
                _solve(cls(tol=1e-5, max_iter=200, joint=True)),
            )
            assert one[1].converged and not torch.allclose(per[0][0], one[0][0], rtol=0, atol=1e-12)
            trace = one[1].trace
            assert torch.equal(trace[-1] <= 1e-5, torch.ones(B, dtype=torch.bool))

        def returns():
            step, it = (
                _solve(cls(tol=1e-4, max_iter=200)),
                _solve(cls(tol=1e-4, max_iter=200, returns="iterate")),
            )
            assert (step[1].returned, it[1].returned) == ("step", "iterate")
            f, _ = _problem()
            res = (f(it[0]) - it[0]).norm(dim=1) / f(it[0]).norm(dim=1)
            torch.testing.assert_close(res.float(), it[1].rel_residual, rtol=1e-5, atol=0)
            assert not torch.allclose(step[0], it[0], rtol=0, atol=1e-12)
            with pytest.raises(ValueError, match="returns"):
                cls(returns="best")

        effects.update(compact=compact, cuda_graph=cuda_graph, joint=joint, returns=returns)
    return effects


def _anderson_compile():
    """The fused iteration is what runs (a spy stands in for the compiler: the equality of
    compiled and eager solves is tests/test_solver_compile.py's)."""
    calls = []

    def spy(*args):
        calls.append(1)
        return anderson_mod._steady_iteration(*args)

    old = anderson_mod._STEADY
    anderson_mod._STEADY = spy
    try:
        eager = _solve(Anderson(m=3, tol=1e-9, max_iter=100))
        assert not calls
        fused = _solve(Anderson(m=3, tol=1e-9, max_iter=100, compile=True))
    finally:
        anderson_mod._STEADY = old
    assert calls and fused[1].nfe == eager[1].nfe
    torch.testing.assert_close(fused[0], eager[0], rtol=0, atol=1e-10)


def _broyden_restart():
    """A restart factor below 1 restarts a sample whenever its residual does not improve."""
    _differ(lambda r: _solve(Broyden(tol=1e-10, max_iter=60, restart_factor=r)), 4.0, 0.5,
            what=lambda out: out[1].trace)  # fmt: skip


EFFECTS: dict[type, dict[str, Callable[[], None]]] = {
    Picard: {
        **_solver_effects(Picard),
        "damping": lambda: _differ(
            lambda d: _solve(Picard(tol=1e-8, max_iter=300, damping=d)),
            0.0,
            0.5,
            what=lambda out: out[1].trace,
        ),
    },
    Anderson: {
        **_solver_effects(Anderson),
        "m": lambda: _differ(lambda m: Anderson(m=m, tol=1e-10, max_iter=100), 1, 5, _nfe),
        "beta": lambda: _differ(
            lambda b: Anderson(beta=b, tol=1e-10, max_iter=100), 1.0, 0.5, _nfe
        ),
        "lam": lambda: _differ(
            lambda lam: _solve(Anderson(lam=lam, tol=1e-10, max_iter=100)),
            1e-4,
            1e3,
            what=lambda out: out[1].trace,
        ),
        "compile": _anderson_compile,
    },
    Broyden: {
        **_solver_effects(Broyden),
        "memory": lambda: _differ(
            lambda m: _solve(Broyden(memory=m, tol=1e-10, max_iter=60)),
            1,
            20,
            what=lambda out: out[1].trace,
        ),
        "restart_factor": _broyden_restart,
    },
    Reversible: {
        **_solver_effects(Reversible),
        "beta": lambda: _differ(
            lambda b: Reversible(beta=b, tol=1e-8, max_iter=300), 0.3, 0.7, _nfe
        ),
    },
}
for _cls in (Picard, Anderson, Broyden, Reversible):
    _bad = {"damping": 1.0, "m": 0, "memory": 0, "beta": 0.0 if _cls is Reversible else None}

    def _refused(cls=_cls, bad=_bad):  # a value it cannot honour is a ValueError naming it
        for name in inspect.signature(cls).parameters:
            if bad.get(name) is not None:
                with pytest.raises(ValueError, match=name):
                    cls(**{name: bad[name]})

    EFFECTS[_cls]["_refusals"] = _refused


# --- gradient modes --------------------------------------------------------------------------


class _Cell(DEQCell):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(N, N, dtype=D)

    def forward(self, z, x):
        return torch.tanh(0.6 * self.lin(z) + x)


def _grads(solver=None, grad=None, **kw):
    """(output, input gradient, the DEQ) for one training step of a small float64 DEQ."""
    deq = DEQ(_Cell(), solver=solver or Anderson(tol=1e-10, max_iter=100), grad=grad, **kw)
    x = torch.randn(B, N, dtype=D, generator=torch.Generator().manual_seed(1)).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z = deq(x)
        z.pow(2).sum().backward()
    return z.detach(), x.grad, deq


def _implicit_on_unconverged():
    short = Anderson(tol=1e-12, max_iter=2, warn=False)
    _, g_zero, _ = _grads(short, ImplicitGrad(on_unconverged="zero"))
    assert torch.equal(g_zero, torch.zeros_like(g_zero))
    _, _, deq = _grads(short, ImplicitGrad(on_unconverged="phantom"))
    assert deq.grad.last_stats.fallback == "phantom"
    with pytest.warns(GradientWarning, match="did not converge"):
        deq = DEQ(_Cell(), solver=short, grad=ImplicitGrad(on_unconverged="warn"))
        deq(torch.randn(B, N, dtype=D, requires_grad=True)).sum().backward()
    with pytest.raises(ValueError, match="on_unconverged"):
        ImplicitGrad(on_unconverged="ignore")


def _backward_stats(**kw):
    return _grads(grad=ImplicitGrad(**kw))[2].grad.last_stats


EFFECTS.update({
    ImplicitGrad: {
        "solver": lambda: _differ(lambda s: _backward_stats(solver=s, tol=1e-10, max_iter=100),
                                  Picard(), Anderson(m=5), what=lambda st: st.nfe),
        "tol": lambda: _differ(lambda t: _backward_stats(tol=t, max_iter=100), 1e-3, 1e-10,
                               what=lambda st: st.nfe),
        "max_iter": lambda: _differ(lambda n: _backward_stats(tol=1e-14, max_iter=n), 2, 5,
                                    what=lambda st: st.n_iter),
        "on_unconverged": _implicit_on_unconverged,
    },
    PhantomGrad: {
        "steps": lambda: _differ(lambda k: _grads(grad=PhantomGrad(steps=k)), 1, 4, what=lambda o: o[1]),
        "tau": lambda: _differ(lambda t: _grads(grad=PhantomGrad(steps=2, tau=t)), 1.0, 0.5,
                               what=lambda o: o[1]),
    },
    UnrolledGrad: {
        "steps": lambda: _differ(lambda k: _grads(grad=UnrolledGrad(steps=k)), 3, 7,
                                 what=lambda o: o[2].stats.nfe),
    },
    ReversibleGrad: {},
})  # fmt: skip


# --- layers ----------------------------------------------------------------------------------


class _Other(_Cell):
    def forward(self, z, x):
        return torch.tanh(0.3 * self.lin(z) - x)


def _deq_eval_solver():
    deq = DEQ(_Cell(), solver=Anderson(tol=1e-3), eval_solver=Anderson(tol=1e-10, max_iter=100))
    x = torch.randn(B, N, dtype=D)
    with torch.no_grad():
        deq.train()(x)
        n_train = deq.stats.nfe
        deq.eval()(x)
    assert deq.stats.nfe > n_train and deq.stats.tol == 1e-10


def _deq_jac_reg():
    for n, want in ((0, False), (2, True)):
        _, _, deq = _grads(jac_reg_samples=n)
        assert (deq.info.jac_loss is not None) is want
    with pytest.raises(ValueError, match="jac_reg_samples"):
        DEQ(_Cell(), jac_reg_samples=-1)
    with pytest.raises(ValueError, match="jac_reg_samples"):
        DEQ(_Cell(), solver=Reversible(), grad=ReversibleGrad(), jac_reg_samples=1)


def _deq_corrections():
    for n in (0, 2):
        _, _, deq = _grads(solver=Anderson(tol=0.0, max_iter=12, warn=False), correction_states=n)
        assert len(deq.info.corrections) == n
    with pytest.raises(ValueError, match="correction_states"):
        DEQ(_Cell(), solver=Reversible(), grad=ReversibleGrad(), correction_states=1)


def _deq_grad():
    _differ(
        lambda g: _grads(grad=g),
        ImplicitGrad(tol=1e-10, max_iter=100),
        PhantomGrad(1),
        what=lambda o: o[1],
    )
    with pytest.raises(ValueError, match="Reversible"):
        DEQ(_Cell(), solver=Anderson(), grad=ReversibleGrad())


EFFECTS[DEQ] = {
    "cell": lambda: _differ(_cell_out, _Cell, _Other, what=lambda z: z),
    "solver": lambda: _differ(lambda s: _grads(solver=s), Picard(tol=1e-10, max_iter=300),
                              Anderson(tol=1e-10, max_iter=100), what=lambda o: o[2].stats.nfe),
    "grad": _deq_grad,
    "jac_reg_samples": _deq_jac_reg,
    "eval_solver": _deq_eval_solver,
    "correction_states": _deq_corrections,
}  # fmt: skip


def _cell_out(cell_cls):
    deq = DEQ(cell_cls(), solver=Anderson(tol=1e-10, max_iter=100))
    with torch.no_grad():
        return deq(torch.randn(B, N, dtype=D, generator=torch.Generator().manual_seed(1)))


class _Field(nn.Module):
    """dz/dt = -a z + sin(t): time-dependent, smooth; one time per row is accepted."""

    def __init__(self, a: float = 1.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=D))

    def forward(self, t, z):
        t = torch.as_tensor(t, dtype=z.dtype)
        t = t.reshape(-1, *([1] * (z.dim() - 1))) if t.dim() else t
        return -self.a * z + torch.sin(3 * t)


def _ode(**kw):
    block = ODEBlock(kw.pop("func", _Field()), **kw)
    z0 = torch.ones(3, 2, dtype=D, requires_grad=True)
    out = block(z0)
    return out, block, z0


def _ode_adjoint():
    for adjoint, backward in ((False, 0), (True, 1)):
        out, block, _ = _ode(adjoint=adjoint)
        out.sum().backward()
        assert (block.nfe_backward > 0) == bool(backward)


def _ode_options():
    _differ(lambda o: _ode(method="rk4", options=o), {"step_size": 0.5}, {"step_size": 0.1},
            what=lambda r: r[1].nfe_forward)  # fmt: skip
    with pytest.raises(ValueError, match="options"):
        ODEBlock(_Field(), grid_steps=4, options={"step_size": 0.1})


def _ode_max_num_steps():
    _ode(max_num_steps=1000)
    with pytest.raises(ODEBudgetError, match="max_num_steps=2"):
        _ode(max_num_steps=2, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="max_num_steps"):
        ODEBlock(_Field(), grid_steps=4, max_num_steps=50)


def _ode_parallel():
    seq, blk_seq, _ = _ode(grid_steps=8)
    par, blk, _ = _ode(grid_steps=8, parallel=Picard(tol=0.0, max_iter=8, warn=False))
    assert blk_seq.parallel_stats is None and blk.parallel_stats.n_iter == 8
    torch.testing.assert_close(par, seq, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="grid_steps"):
        ODEBlock(_Field(), parallel=Picard())


EFFECTS[ODEBlock] = {
    "func": lambda: _differ(lambda a: _ode(func=_Field(a)), 1.0, 2.0, what=lambda r: r[0].detach()),
    "t": lambda: _differ(lambda t: _ode(t=t), [0.0, 1.0], [0.0, 2.0], what=lambda r: r[0].detach()),
    "method": lambda: _differ(lambda m: _ode(method=m), "dopri5", "bosh3", what=lambda r: r[1].nfe_forward),
    "rtol": lambda: _differ(lambda v: _ode(rtol=v, atol=1e-12), 1e-3, 1e-9, what=lambda r: r[1].nfe_forward),
    "atol": lambda: _differ(lambda v: _ode(rtol=1e-12, atol=v), 1e-3, 1e-9, what=lambda r: r[1].nfe_forward),
    "adjoint": _ode_adjoint,
    "options": _ode_options,
    "grid_steps": lambda: _differ(lambda k: _ode(grid_steps=k), 4, 8, what=lambda r: r[1].nfe_forward),
    "max_num_steps": _ode_max_num_steps,
    "parallel": _ode_parallel,
}  # fmt: skip


class _Lin(nn.Module):
    def __init__(self, scale: float = 0.5) -> None:
        super().__init__()
        self.w = nn.Parameter(scale * torch.eye(2, dtype=D) + 0.1 * torch.ones(2, 2, dtype=D))

    def forward(self, t, z):
        return torch.tanh(z @ self.w.T)


def _cnf(**kw):
    torch.manual_seed(0)
    cnf = CNF(kw.pop("func", _Lin()), **kw)
    z = torch.randn(4, 2, dtype=D, generator=torch.Generator().manual_seed(2), requires_grad=True)
    torch.manual_seed(1)
    out = cnf(z)
    return out, cnf, z


def _cnf_adjoint():
    for adjoint in (False, True):
        (z, logp), cnf, _ = _cnf(adjoint=adjoint, trace="exact")
        (z.sum() + logp.sum()).backward()
        assert (cnf.nfe_backward > 0) is adjoint


def _cnf_reg(name):
    def check():
        (_, _), cnf, _ = _cnf(**{name: True})
        assert set(cnf.reg) == {name}
        (_, _), cnf, _ = _cnf()
        assert cnf.reg == {}

    return check


def _cnf_max_num_steps():
    with pytest.raises(ODEBudgetError, match="max_num_steps=2"):
        _cnf(max_num_steps=2, rtol=1e-10, atol=1e-10)


EFFECTS[CNF] = {
    "func": lambda: _differ(lambda s: _cnf(func=_Lin(s)), 0.5, 1.0, what=lambda r: r[0][0].detach()),
    "trace": lambda: _differ(lambda t: _cnf(trace=t), "exact", "hutchinson", what=lambda r: r[0][1].detach()),
    "noise": lambda: _differ(lambda n: _cnf(noise=n), "gaussian", "rademacher", what=lambda r: r[0][1].detach()),
    "T": lambda: _differ(lambda t: _cnf(T=t), 0.5, 1.0, what=lambda r: r[0][0].detach()),
    "method": lambda: _differ(lambda m: _cnf(method=m), "dopri5", "bosh3", what=lambda r: r[1].nfe_forward),
    "rtol": lambda: _differ(lambda v: _cnf(rtol=v, atol=1e-12), 1e-3, 1e-9, what=lambda r: r[1].nfe_forward),
    "atol": lambda: _differ(lambda v: _cnf(rtol=1e-12, atol=v), 1e-3, 1e-9, what=lambda r: r[1].nfe_forward),
    "adjoint": _cnf_adjoint,
    "kinetic_energy": _cnf_reg("kinetic_energy"),
    "jacobian_frobenius": _cnf_reg("jacobian_frobenius"),
    "max_num_steps": _cnf_max_num_steps,
}  # fmt: skip


# --- optimization layers ---------------------------------------------------------------------


def _qp(**kw):
    torch.manual_seed(0)
    layer = QPLayer(**{"n": 4, "n_ineq": 3, "n_eq": 1, **kw}).double()
    z = layer(torch.randn(2, layer.n, dtype=D))
    return z, layer


def _qp_fixed():
    z, layer = _qp(fixed={"G": -torch.eye(3, 4)})
    assert "G" not in dict(layer.named_parameters()) and torch.equal(
        layer.fixed_G, -torch.eye(3, 4)
    )
    z_learned, _ = _qp()
    assert not torch.allclose(z, z_learned)


def _sat(**kw):
    layer = SATLayer(**{"n": 6, "m": 8, "aux": 1, **kw}).double()
    z = torch.linspace(0, 1, 2 * layer.n, dtype=D).view(2, layer.n)
    known = torch.arange(2 * layer.n).view(2, layer.n) % 3 == 0
    out = layer(z, known)
    return out, layer


def _sat_grad():
    out_p, phantom = _sat(grad=PhantomGrad(steps=1))
    out_p.sum().backward()
    out_i, implicit = _sat(grad=ImplicitGrad(tol=1e-8, max_iter=100))
    out_i.sum().backward()
    assert not torch.allclose(phantom.S.grad, implicit.S.grad)
    with pytest.raises(ValueError, match="differentiates at its fixed point"):
        _sat(grad=UnrolledGrad())


def _sat_damping():
    grads = []
    for damping in (0.0, 1.0):
        out, layer = _sat(method="satnet", damping=damping)
        out.sum().backward()
        grads.append(layer.S.grad)
    assert not torch.allclose(*grads)
    with pytest.raises(ValueError, match="damping is the backward of method='satnet'"):
        _sat(method="parallel", damping=1.0)


EFFECTS[QPLayer] = {
    "n": lambda: _differ(lambda n: _qp(n=n, n_ineq=0, n_eq=0), 3, 4, what=lambda r: r[0].shape),
    "n_ineq": lambda: _differ(lambda m: _qp(n_ineq=m), 0, 3, what=lambda r: r[0].detach()),
    "n_eq": lambda: _differ(lambda k: _qp(n_eq=k), 0, 1, what=lambda r: r[0].detach()),
    "fixed": _qp_fixed,
    "q_eps": lambda: _differ(lambda e: _qp(q_eps=e), 1e-4, 1.0, what=lambda r: r[0].detach()),
    "tol": lambda: _differ(lambda t: _qp(tol=t), 1e-2, 1e-12, what=lambda r: r[1].stats.n_iter),
    "max_iter": lambda: _differ(lambda i: _qp(max_iter=i), 1, 30, what=lambda r: r[1].stats.n_iter),
}  # fmt: skip

EFFECTS[SATLayer] = {
    "n": lambda: _differ(lambda n: _sat(n=n), 6, 7, what=lambda r: r[0].shape),
    "m": lambda: _differ(lambda m: _sat(m=m), 8, 12, what=lambda r: r[0].detach()),
    "aux": lambda: _differ(lambda a: _sat(aux=a), 0, 3, what=lambda r: r[0].detach()),
    "k": lambda: _differ(lambda k: _sat(k=k), 3, 6, what=lambda r: r[0].detach()),
    "method": lambda: (
        _differ(lambda m: _sat(method=m, tol=1e-6), "sequential", "parallel",
                what=lambda r: r[1].stats.trace.shape[0]),
        _differ(lambda m: _sat(method=m, tol=1e-6), "sequential", "satnet",
                what=lambda r: r[1].stats.trace.shape[0]),
    ),
    "damping": _sat_damping,
    "prox": lambda: _differ(lambda x: _sat(method="parallel", prox=x), 0.1, 2.0,
                            what=lambda r: r[1].stats.n_iter),
    "tol": lambda: _differ(lambda t: _sat(tol=t), 1e-2, 1e-10, what=lambda r: r[1].stats.n_iter),
    "max_iter": lambda: _differ(lambda i: _sat(max_iter=i), 1, 100, what=lambda r: r[1].stats.n_iter),
    "compact": lambda: _differ(lambda c: _sat(method="parallel", tol=1e-10, max_iter=500,
                                              compact=c),
                               False, True, what=lambda r: r[1].stats.rows_evaluated),
    "grad": _sat_grad,
    "seed": lambda: _differ(lambda s: _sat(seed=s), 0, 1, what=lambda r: r[0].detach()),
    # a training call stopped after 2 iterations: where it got to depends on where it started
    "random_start": lambda: _differ(lambda r: _sat(random_start=r, max_iter=2), False, True,
                                    what=lambda r: r[0].detach()),
}  # fmt: skip

CLASSES = [Picard, Anderson, Broyden, Reversible, ImplicitGrad, PhantomGrad, UnrolledGrad,
           ReversibleGrad, DEQ, ODEBlock, CNF, QPLayer, SATLayer]  # fmt: skip


def _cases():
    for cls in CLASSES:
        for name in inspect.signature(cls).parameters:
            yield pytest.param(cls, name, id=f"{cls.__name__}.{name}")
        if "_refusals" in EFFECTS.get(cls, {}):
            yield pytest.param(cls, "_refusals", id=f"{cls.__name__}.refusals")


@pytest.mark.parametrize("cls,name", list(_cases()))
def test_option_takes_effect(cls, name):
    check = EFFECTS.get(cls, {}).get(name)
    assert check is not None, (
        f"{cls.__name__}({name}=...) has no check in tests/test_options.py EFFECTS: add one that "
        "shows what changing it changes, or that a value it cannot honour is refused"
    )
    check()


def test_every_zoo_solver_and_gradient_mode_is_covered():
    from zoo.solvers import GRADS, SOLVERS

    assert set(SOLVERS.values()) | set(GRADS.values()) <= set(CLASSES)
