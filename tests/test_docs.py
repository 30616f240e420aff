"""Every public name of the documented packages has a docstring with an example, and every
docstring example in the package runs (doctest)."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import zoo

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(zoo.__path__, "zoo.")
    if m.name not in ("zoo.demo",)  # the demo's module runs the demo
) + ["zoo"]
PUBLIC = ["zoo", "zoo.nn", "zoo.solvers", "zoo.tasks", "zoo.data"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0


@pytest.mark.parametrize("package", PUBLIC)
def test_every_public_name_has_a_docstring_with_an_example(package):
    mod = importlib.import_module(package)
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants (__version__, the SOLVERS/GRADS registries) are documented in place
        if ">>>" not in (inspect.getdoc(obj) or ""):
            missing.append(name)
    assert not missing, f"{package}: no docstring example for {missing}"
