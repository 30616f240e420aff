"""A budget-limited solve that stops short of its tolerance is expected at a shipped budget:
an evaluation reports it once with the count, and a training run shows it once, not per batch."""

from __future__ import annotations

import warnings

import pytest
import torch

from zoo.solvers import ConvergenceWarning

pytestmark = pytest.mark.timeout(300)


def test_an_evaluation_reports_unconverged_solves_once_with_their_count():
    from zoo.evaluate import evaluate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate("mdeq_tiny.fashion_mnist", sample=True, batch_size=50, limit=200)
    ours = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert "solve(s) of this evaluation stopped at their budget" in str(ours[0].message)


def test_a_training_run_shows_each_solver_warning_once():
    import lightning.pytorch as pl

    import zoo.tasks

    task = zoo.tasks.from_pretrained("mdeq_tiny.fashion_mnist", hparams={"lr": 1e-4})
    x, y = zoo.example_batch(zoo.load("mdeq_tiny.fashion_mnist"), 24)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    trainer = pl.Trainer(max_steps=6, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(task, train_dataloaders=loader)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert messages and len(messages) == len(set(messages))  # once, not once per step
