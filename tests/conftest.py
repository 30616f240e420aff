import importlib.util
import os
import warnings
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


def data_dir() -> Path | None:
    d = os.environ.get("ZOO_DATA_DIR")
    return Path(d) if d and Path(d).is_dir() else None


@pytest.fixture
def zoo_data_dir():
    d = data_dir()
    if d is None:
        pytest.skip("ZOO_DATA_DIR is not set (point it at ../shared/data to run this test)")
    return d


@pytest.fixture
def recipe_script():
    """Load a script under recipes/ (not a package) as a module: ``recipe_script("a/b.py")``."""

    def load(rel: str):
        path = Path(__file__).parents[1] / "recipes" / rel
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    warnings.simplefilter("default")
