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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    warnings.simplefilter("default")
