"""Implicit layers: :class:`DEQ`, :class:`ODEBlock`, :class:`CNF`, and their regularizers."""

from ._cnf import CNF, exact_trace
from ._deq import DEQ, DEQInfo
from ._ode import ODEBlock, ODEBudgetError, grid_solve
from ._ragged import integrate_intervals
from ._regularizers import jacobian_frobenius, kinetic_energy, sample_noise
from ._state import Packer

__all__ = [
    "CNF",
    "DEQ",
    "DEQInfo",
    "ODEBlock",
    "ODEBudgetError",
    "Packer",
    "exact_trace",
    "grid_solve",
    "integrate_intervals",
    "jacobian_frobenius",
    "kinetic_energy",
    "sample_noise",
]
