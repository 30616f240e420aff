"""Resolve solver and gradient-mode names (from YAML or the CLI) to objects."""

from __future__ import annotations

from ._anderson import Anderson
from ._base import FixedPointSolver
from ._broyden import Broyden
from ._grad import GradMode, ImplicitGrad, PhantomGrad, UnrolledGrad
from ._picard import Picard
from ._reversible import Reversible, ReversibleGrad

__all__ = ["SOLVERS", "GRADS", "get_solver", "get_grad"]

SOLVERS: dict[str, type[FixedPointSolver]] = {
    "picard": Picard,
    "anderson": Anderson,
    "broyden": Broyden,
    "reversible": Reversible,
}
GRADS: dict[str, type[GradMode]] = {
    "implicit": ImplicitGrad,
    "phantom": PhantomGrad,
    "jfb": PhantomGrad,
    "unrolled": UnrolledGrad,
    "reversible": ReversibleGrad,
}


def _lookup(kind: str, table: dict, name: str):
    key = name.lower().strip() if isinstance(name, str) else name
    if not isinstance(key, str) or key not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {', '.join(sorted(table))}")
    return _checked(table[key], kind)


def _checked(cls, kind: str):
    """``cls`` wrapped so that a wrong option is a ``ValueError`` naming the valid ones."""
    import inspect

    def build(**kwargs):
        params = inspect.signature(cls).parameters
        bad = sorted(set(kwargs) - set(params))
        if bad:
            raise ValueError(
                f"{kind} {cls.__name__} has no option(s) {', '.join(bad)}; its options are "
                f"{', '.join(params)}"
            )
        return cls(**kwargs)

    return build


def get_solver(name: str | dict | FixedPointSolver, **kwargs) -> FixedPointSolver:
    """Build a solver from its name, e.g. ``get_solver("anderson", m=6, tol=1e-3)``, or from a
    spec dict ``{"name": "anderson", "m": 6}`` (what :meth:`FixedPointSolver.spec` returns).

    Raises:
        ValueError: for an unknown name, listing the valid ones.

    Example:
        >>> from zoo.solvers import get_solver
        >>> get_solver({"name": "anderson", "m": 5, "tol": 1e-4}).tol
        0.0001
    """
    if isinstance(name, FixedPointSolver):
        return name.replace(**kwargs) if kwargs else name
    if isinstance(name, dict):
        spec = dict(name)
        return _lookup("solver", SOLVERS, spec.pop("name", "anderson"))(**{**spec, **kwargs})
    return _lookup("solver", SOLVERS, name)(**kwargs)


def get_grad(name: str | dict | GradMode, **kwargs) -> GradMode:
    """Build a gradient mode from its name, e.g. ``get_grad("phantom", steps=5)``.

    Raises:
        ValueError: for an unknown name, listing the valid ones.

    Example:
        >>> from zoo.solvers import get_grad
        >>> type(get_grad({"name": "phantom", "steps": 2})).__name__
        'PhantomGrad'
    """
    if isinstance(name, GradMode):
        # keyword arguments are applied, not dropped: rebuild from the object's config
        return type(name)(**{**name.config(), **kwargs}) if kwargs else name
    if isinstance(name, dict):
        spec = dict(name)
        return _lookup("gradient mode", GRADS, spec.pop("name", "implicit"))(**{**spec, **kwargs})
    return _lookup("gradient mode", GRADS, name)(**kwargs)
