"""Fixed-point solvers and gradient modes for implicit layers.

Solvers (strategy objects): :class:`Picard`, :class:`Anderson`, :class:`Broyden`,
:class:`Reversible`; each returns ``(z_star, SolverStats)``. Gradient modes:
:class:`ImplicitGrad`, :class:`PhantomGrad`, :class:`UnrolledGrad`, :class:`ReversibleGrad` (the
exact gradient of a reversible solve). Names from configs resolve with :func:`get_solver` /
:func:`get_grad`.

Contracts: a solver iterates a :class:`FixedPointMap` (a function with its optional
capabilities declared as fields); a gradient mode runs an :class:`Equilibrium` (the problem a
layer hands it); a new solver is an :class:`IterState` and an ``_advance`` rule over
:class:`Step`.
"""

from ._anderson import Anderson
from ._base import ConvergenceWarning, FixedPointMap, FixedPointSolver, IterState, SolverStats, Step
from ._broyden import Broyden
from ._grad import (
    AtFixedPoint,
    Equilibrium,
    GradientWarning,
    GradMode,
    ImplicitGrad,
    PhantomGrad,
    UnrolledGrad,
)
from ._picard import Picard
from ._registry import GRADS, SOLVERS, get_grad, get_solver
from ._reversible import Reversible, ReversibleGrad

__all__ = [
    "Anderson",
    "AtFixedPoint",
    "Broyden",
    "ConvergenceWarning",
    "Equilibrium",
    "FixedPointMap",
    "FixedPointSolver",
    "GRADS",
    "GradMode",
    "GradientWarning",
    "ImplicitGrad",
    "IterState",
    "PhantomGrad",
    "Picard",
    "Reversible",
    "ReversibleGrad",
    "SOLVERS",
    "SolverStats",
    "Step",
    "UnrolledGrad",
    "get_grad",
    "get_solver",
]
