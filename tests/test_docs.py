"""Every public example in the backbone's docstrings runs (doctest)."""

import doctest
import importlib

import pytest

MODULES = [
    "zoo",
    "zoo.solvers._picard",
    "zoo.solvers._anderson",
    "zoo.solvers._broyden",
    "zoo.solvers._grad",
    "zoo.nn._deq",
    "zoo.nn._ode",
    "zoo.nn._cnf",
    "zoo.nn._regularizers",
    "zoo.models._registry",
    "zoo.models.mdeq",
    "zoo.models.deq_transformer",
    "zoo.models.latent_ode",
    "zoo.models.ode_rnn",
    "zoo.tasks.time_series",
    "zoo.nn._ragged",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0
