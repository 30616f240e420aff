"""Implicit layers: :class:`DEQ`, :class:`ODEBlock`, :class:`CNF`, their regularizers, the
optimization layers :class:`QPLayer` (OptNet) and :class:`SATLayer` (SATNet), and
:class:`VariationalDropout` (one dropout mask per solve)."""

from ._cell import DEQCell, EquilibriumCell
from ._cnf import CNF, exact_trace
from ._deq import DEQ, DEQInfo
from ._dropout import VariationalDropout
from ._flow_matching import cfm_target, flow_matching_loss, ot_pairing
from ._ode import ODEBlock, ODEBudgetError, grid_solve, odeint
from ._parallel import parallel_grid_nodes
from ._qp import QPLayer, qp_solve
from ._ragged import integrate_intervals
from ._regularizers import jacobian_frobenius, kinetic_energy, sample_noise
from ._sat import SATLayer
from ._state import Packer

__all__ = [
    "CNF",
    "DEQ",
    "DEQCell",
    "DEQInfo",
    "EquilibriumCell",
    "ODEBlock",
    "ODEBudgetError",
    "Packer",
    "QPLayer",
    "SATLayer",
    "VariationalDropout",
    "cfm_target",
    "exact_trace",
    "flow_matching_loss",
    "grid_solve",
    "odeint",
    "parallel_grid_nodes",
    "qp_solve",
    "integrate_intervals",
    "jacobian_frobenius",
    "kinetic_energy",
    "ot_pairing",
    "sample_noise",
]
