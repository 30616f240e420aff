"""Per-sample batch compaction (issue #24): evaluating the cell only on the unconverged samples
gives the full-batch solve's fixed points, statistics and gradients (float64, 1e-10), for every
solver and gradient mode; cells that do not declare per-sample independence, and training mode,
keep full batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.nn import DEQ, DEQCell
from zoo.solvers import get_grad, get_solver

D = torch.float64


class _Cell(DEQCell):
    """z -> tanh(s_i W z + x): per-sample contraction s_i, so samples converge at different
    iterations; a two-tensor state with a None in the injection exercises the structures."""

    batch_independent = True

    def __init__(self, d: int = 6) -> None:
        super().__init__()
        self.w = nn.Linear(d, d, dtype=D)
        self.v = nn.Linear(d, 3, dtype=D)

    def forward(self, z, x):
        a, b = z
        xa, scale, none = x
        assert none is None
        a2 = torch.tanh(scale[:, None] * self.w(a) + xa)
        return [a2, torch.tanh(self.v(a2) + 0.5 * b)]


def _run(solver: str, grad: str, compact: bool, independent: bool = True, train: bool = False):
    torch.manual_seed(0)
    cell = _Cell()
    if not independent:
        cell.batch_independent = False
    spec = {"name": solver, "tol": 1e-9, "max_iter": 60, "compact": compact, "warn": False}
    deq = DEQ(cell, solver=get_solver(spec), grad=get_grad(grad)).train(train)
    g = torch.Generator().manual_seed(1)
    xa = torch.randn(9, 6, generator=g, dtype=D).requires_grad_()
    scale = torch.linspace(0.05, 0.9, 9, dtype=D)  # fast to slow samples
    z0 = [torch.zeros(9, 6, dtype=D), torch.zeros(9, 3, dtype=D)]
    a, b = deq([xa, scale, None], z0)
    (a.pow(2).sum() + b.sum()).backward()
    grads = torch.cat([p.grad.reshape(-1) for p in cell.parameters()] + [xa.grad.reshape(-1)])
    return torch.cat([a, b], 1).detach(), grads, deq.stats


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
@pytest.mark.parametrize("grad", ["implicit", "phantom", "unrolled"])
def test_compaction_gives_the_full_batch_solve(solver, grad):
    z_full, g_full, st_full = _run(solver, grad, compact=False)
    z_comp, g_comp, st_comp = _run(solver, grad, compact=True)
    assert torch.allclose(z_full, z_comp, atol=1e-10, rtol=0)
    assert torch.allclose(g_full, g_comp, atol=1e-10, rtol=0)
    assert st_full.nfe == st_comp.nfe and torch.equal(
        st_full.converged_mask, st_comp.converged_mask
    )
    assert torch.allclose(st_full.residual, st_comp.residual, atol=1e-12, rtol=0)
    if grad != "unrolled":  # the unrolled mode differentiates through every call: no solver
        assert st_full.rows_evaluated == st_full.nfe * 9
        assert st_comp.rows_evaluated < st_full.rows_evaluated  # the fast samples stopped early


def test_cells_without_the_declaration_and_training_keep_full_batches():
    for kw in ({"independent": False}, {"train": True}):
        _, _, st = _run("anderson", "implicit", compact=True, **kw)
        assert st.rows_evaluated == st.nfe * 9, kw


def test_compact_is_part_of_the_solver_spec():
    s = get_solver({"name": "anderson", "m": 4, "compact": True})
    assert s.spec()["compact"] is True and s.replace(max_iter=3).compact
    assert "compact" not in get_solver("anderson").spec()  # unchanged specs for old configs


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
def test_compacted_solve_reports_the_returned_states_residual(solver):
    """With compaction and ``returns="iterate"``, a stopped sample keeps the state whose
    residual was reported: the residual recomputed from the returned state equals the stats'
    (float64 map, float32 stats)."""
    torch.manual_seed(0)
    cell = _Cell()
    spec = {"name": solver, "tol": 1e-4, "max_iter": 16, "compact": True, "warn": False}
    spec["returns"] = "iterate"
    deq = DEQ(cell, solver=get_solver(spec), grad=get_grad("phantom")).eval()
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(9, 6, generator=g, dtype=D), torch.linspace(0.05, 0.9, 9, dtype=D), None]
    with torch.no_grad():
        a, b = deq(x, [torch.zeros(9, 6, dtype=D), torch.zeros(9, 3, dtype=D)])
        a2, b2 = cell([a, b], x)
    z, gz = torch.cat([a, b], 1), torch.cat([a2, b2], 1)
    got = (gz - z).norm(dim=1) / gz.norm(dim=1)
    assert deq.stats.rows_evaluated < deq.stats.nfe * 9  # some samples did stop early
    assert torch.allclose(got, deq.stats.rel_residual.double(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
def test_the_solver_state_shrinks_to_the_unconverged_rows(solver, monkeypatch):
    """The solvers gather their own state (iterate, history, Gram matrix or low-rank inverse
    Jacobian) to the unconverged rows, so their algebra runs on fewer rows too: the states they
    pass to the map
    get smaller as samples converge, and the solve is the one that keeps full-size state."""
    from zoo.solvers._compaction import Compaction

    sizes: list[int] = []
    call = Compaction.__call__

    def spy(self, z):
        sizes.append(z.shape[0])
        return call(self, z)

    monkeypatch.setattr(Compaction, "__call__", spy)
    monkeypatch.setattr(Compaction, "shrink_at", 0.0)  # never shrinks
    z_ref, g_ref, st_ref = _run(solver, "implicit", compact=True)
    assert set(sizes) == {9}
    sizes.clear()
    monkeypatch.setattr(Compaction, "shrink_at", 0.75)
    z, g, st = _run(solver, "implicit", compact=True)
    assert sizes[0] == 9 and min(sizes) < 9 and sizes == sorted(sizes, reverse=True)
    assert torch.allclose(z_ref, z, atol=1e-12, rtol=0)
    assert torch.allclose(g_ref, g, atol=1e-12, rtol=0)
    assert (st_ref.nfe, st_ref.rows_evaluated) == (st.nfe, st.rows_evaluated)
    assert torch.allclose(st_ref.trace.double(), st.trace.double(), atol=1e-12, rtol=0)
