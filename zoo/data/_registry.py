"""Data modules by registered name: the only way a config (a checkpoint's ``config.json``, a
Hub repo, a pretrained table) may name a data module.

A config is data, never code: ``"datamodule": "fashion_mnist"`` is looked up here and nothing is
imported by path. Arguments are checked against the class's signature before it is built.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

__all__ = ["register_datamodule", "datamodule_class", "build_datamodule", "list_datamodules"]

_DATAMODULES: dict[str, type] = {}
_JSON_SCALARS = (str, int, float, bool, type(None))


def register_datamodule(cls: type, name: str | None = None) -> type:
    """Register a LightningDataModule under ``name`` (default: its ``name`` attribute).

    Third-party families call this for their own data modules; usable as a decorator.

    Example:
        >>> import lightning.pytorch as pl
        >>> from zoo.data import datamodule_class, register_datamodule
        >>> @register_datamodule
        ... class MyPoints(pl.LightningDataModule):
        ...     name = "my_points"
        >>> datamodule_class("my_points") is MyPoints
        True
    """
    key = name or getattr(cls, "name", None)
    if not key or not isinstance(key, str):
        raise ValueError(f"{cls.__name__} needs a registered name (a `name` class attribute)")
    if _DATAMODULES.get(key, cls) is not cls:
        raise ValueError(f"data module name {key!r} is taken by {_DATAMODULES[key].__name__}")
    _DATAMODULES[key] = cls
    return cls


def list_datamodules() -> list[str]:
    """The registered data-module names, sorted.

    Example:
        >>> from zoo.data import list_datamodules
        >>> "physionet2012" in list_datamodules()
        True
    """
    _import_data_files()
    return sorted(_DATAMODULES)


def datamodule_class(name: str) -> type:
    """The registered class of ``name``.

    A legacy config's ``"zoo.data.FashionMNISTDataModule"`` is accepted only when its last part
    is the class name of a registered module: it is matched, never imported.

    Raises:
        ValueError: for any other name, listing the registered ones.

    Example:
        >>> from zoo.data import datamodule_class
        >>> datamodule_class("fashion_mnist").__name__
        'FashionMNISTDataModule'
    """
    if not isinstance(name, str):
        raise ValueError(f"a data module is named by a string, got {type(name).__name__}")
    if name not in _DATAMODULES:
        _import_data_files()
    if name in _DATAMODULES:
        return _DATAMODULES[name]
    if name.startswith("zoo.data.") and name.count(".") == 2:
        by_class = {c.__name__: c for c in _DATAMODULES.values()}
        if name.rsplit(".", 1)[1] in by_class:
            return by_class[name.rsplit(".", 1)[1]]
    close = difflib.get_close_matches(name, list(_DATAMODULES), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown data module {name!r}{hint} A config names a data module by its registered "
        f"name, never by import path; registered: {', '.join(sorted(_DATAMODULES))}"
    )


def _import_data_files() -> None:
    """Import every public module of zoo.data: a new data file registers itself, unlisted."""
    import importlib
    import pkgutil
    from pathlib import Path

    for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not m.name.startswith("_"):
            importlib.import_module(f"{__package__}.{m.name}")


def check_args(target: str, params: inspect.Signature, args: Any, what: str) -> dict:
    """Validate config ``args`` against a signature: a dict of known, JSON-scalar arguments."""
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise ValueError(f"{what} of {target} must be a mapping, got {type(args).__name__}")
    items = params.parameters if isinstance(params, inspect.Signature) else params
    known = {n for n, p in items.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for k, v in args.items():
        if k.startswith("trust_"):  # e.g. tabular GAS's trust_pickle: a user's own choice
            raise ValueError(
                f"{what}: {target}.{k} cannot come from a config (a checkpoint or Hub config "
                "grants no trust); pass it yourself in Python or on the command line"
            )
        if k not in known:
            raise ValueError(
                f"{what}: {target} has no argument {k!r}; its arguments are {', '.join(sorted(known))}"
            )
        vals = v if isinstance(v, list) else [v]
        if not all(isinstance(x, _JSON_SCALARS) for x in vals):
            raise ValueError(
                f"{what}: {target}.{k} must be a number, string, bool, null or a list of them "
                f"(a config is data), got {type(v).__name__}"
            )
    return dict(args)


def build_datamodule(name: str, args: dict | None = None, **extra):
    """Construct the registered data module ``name`` with validated ``args`` (plus trusted
    ``extra`` keyword arguments from the caller, e.g. ``data_dir``, kept only if accepted).

    Example:
        >>> from zoo.data import build_datamodule
        >>> type(build_datamodule("periodic", {"n": 20})).__name__
        'PeriodicDataModule'
    """
    cls = datamodule_class(name)
    params = init_params(cls)
    kwargs = check_args(name, params, args, "datamodule_args")
    for k, v in extra.items():
        if k in params:
            kwargs[k] = v
    return cls(**kwargs)


def init_params(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments ``cls(...)`` accepts, following ``**kwargs`` up the base classes
    (a subclass that adds one argument and passes the rest on accepts its bases' too)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        sig = inspect.signature(init)
        for n, p in sig.parameters.items():
            if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                params.setdefault(n, p)
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return params
