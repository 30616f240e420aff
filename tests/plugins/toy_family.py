"""A third-party model family, as a separate package would write it: a model, a data module,
a problem type (task spec) and a pretrained table, registered through zoo's public hooks only.

The tests load it through the same entry-point path as the built-in families
(``importlib.metadata`` group ``zoo.models``), without editing any file of zoo.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.data import register_datamodule
from zoo.models import ZooModel, register_model, register_pretrained
from zoo.tasks import (
    EvalResult,
    MetricSpec,
    TaskSpec,
    load_sample,
    register_sample_dir,
    register_task,
)


class ToyRegressor(ZooModel):
    """y = w x + b on scalars."""

    description = "A toy linear regressor"

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self._capture(locals())
        self.lin = nn.Linear(1, 1)

    def forward(self, x):
        return self.lin(x)


@register_model(family="toy", task="toy-regression", default_tag="unit")
def toy_regressor(**kwargs) -> ToyRegressor:
    return ToyRegressor(**kwargs)


class ToyPoints:
    """A data module: y = 2x + 1 plus noise; deterministic splits."""

    name = "toy_points"

    def __init__(self, data_dir: str | None = None, n: int = 64, noise: float = 0.1) -> None:
        self.n, self.noise = n, noise

    def eval_split(self, split: str):
        if split not in ("test", "train"):
            raise ValueError(f"unknown split {split!r} for toy_points: use test or train")
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        x = torch.randn(self.n, 1, generator=g)
        return x, 2 * x + 1 + self.noise * torch.randn(self.n, 1, generator=g)


register_datamodule(ToyPoints)


class ToyRegressionSpec(TaskSpec):
    name = "toy-regression"
    title = "Toy Regression"
    pipeline_tag = "tabular-regression"
    unit = "point"
    metrics = (MetricSpec("mse", "MSE", False, "mse"),)
    primary = "mse"
    splits = ("test", "train")

    def eval_batches(self, model, protocol, split, sample, limit, data_dir, batch_size):
        if sample:
            d = load_sample(protocol)
            x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
        else:
            x, y = protocol.datamodule_obj(data_dir).eval_split(split)
        return [(x[:limit], y[:limit])] if limit else [(x, y)]

    def evaluate(self, model, batches, protocol, device, clock):
        se, n = 0.0, 0
        for x, y in batches:
            with clock:
                pred = model(x.to(device))
            se += float(((pred - y.to(device)) ** 2).sum())
            n += len(y)
        return EvalResult({"mse": round(se / n, 6)}, n, None, clock.seconds)

    def build_sample(self, protocol, data_dir, out):
        x, y = protocol.datamodule_obj(data_dir).eval_split("test")
        np.savez_compressed(out, x=x[:16].numpy(), y=y[:16].numpy())
        return "16 points"


register_task(ToyRegressionSpec())
register_pretrained(
    {
        "toy_regressor.unit": dict(
            task="toy-regression",
            dataset="toy_points",
            datamodule="toy_points",
            datamodule_args={"n": 64},
            license="apache-2.0",
            paper="none (a test plug-in)",
            recipe="recipes/toy/toy.yaml",
        )
    }
)
register_sample_dir(Path(os.environ["TOY_SAMPLES"]))
