"""Fixed-point solvers and gradient modes for implicit layers.

Solvers (strategy objects): :class:`Picard`, :class:`Anderson`, :class:`Broyden`,
:class:`Reversible`; each returns ``(z_star, SolverStats)``. Gradient modes:
:class:`ImplicitGrad`, :class:`PhantomGrad`, :class:`UnrolledGrad`, :class:`ReversibleGrad` (the
exact gradient of a reversible solve). Names from configs resolve with :func:`get_solver` /
:func:`get_grad`.
"""

from ._anderson import Anderson
from ._base import ConvergenceWarning, FixedPointSolver, SolverStats
from ._broyden import Broyden
from ._grad import GradientWarning, GradMode, ImplicitGrad, PhantomGrad, UnrolledGrad
from ._picard import Picard
from ._registry import GRADS, SOLVERS, get_grad, get_solver
from ._reversible import Reversible, ReversibleGrad

__all__ = [
    "Anderson",
    "Broyden",
    "ConvergenceWarning",
    "FixedPointSolver",
    "GRADS",
    "GradMode",
    "GradientWarning",
    "ImplicitGrad",
    "PhantomGrad",
    "Picard",
    "Reversible",
    "ReversibleGrad",
    "SOLVERS",
    "SolverStats",
    "UnrolledGrad",
    "get_grad",
    "get_solver",
]
