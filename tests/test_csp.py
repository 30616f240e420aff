"""The constraint-satisfaction task and models: the score against its definition, the loss over
the bits to find, OptNet's QP with the true rules of Sudoku solving generated puzzles."""

import random

import torch

import zoo
from zoo.data.puzzles import make_sudoku, sudoku_bits
from zoo.models.optlayers import sudoku_constraints
from zoo.tasks.constraint_satisfaction import ConstraintSatisfaction, PuzzleScore


def test_score_equals_its_definition():
    g = torch.Generator().manual_seed(0)
    target = torch.nn.functional.one_hot(torch.randint(0, 4, (50, 16), generator=g), 4).float()
    given = (torch.rand(50, 16, generator=g) < 0.5).repeat_interleave(4, 1)
    probs = torch.rand(50, 64, generator=g)
    score = PuzzleScore(cell_bits=4)
    for i in range(0, 50, 7):  # accumulated over uneven batches
        score.update(
            probs[i : i + 7].view(-1, 64), given[i : i + 7], target.view(50, 64)[i : i + 7]
        )
    pred, true = probs.view(50, 16, 4).argmax(-1), target.argmax(-1)
    find = ~given.view(50, 16, 4)[..., 0]
    right = (pred == true) & find
    solved = ((pred == true) | ~find).all(1).float().mean() * 100
    assert score.compute() == {
        "solved": round(float(solved), 2),
        "cells": round(100 * float(right.sum() / find.sum()), 2),
    }


def test_the_loss_reads_only_the_bits_to_find():
    task = ConstraintSatisfaction(arch="mlp_csp", model_args={"n_bits": 8, "hidden": [4],
                                                              "cell_bits": 1})  # fmt: skip
    target = torch.tensor([[1.0, 0, 1, 0, 1, 0, 1, 0]])
    given = torch.tensor([[True] * 4 + [False] * 4])
    loss = task._common_step((target * given, given, target), "val")
    probs = task.model(target * given, given)[:, 4:].clamp(1e-6, 1 - 1e-6)
    ref = torch.nn.functional.binary_cross_entropy(probs, target[:, 4:])
    assert torch.isclose(loss, ref)


def test_optnet_with_the_true_rules_solves_generated_puzzles():
    """OptNet's QP with Sudoku's true equalities (A z = 1) and z >= 0 completes puzzles with one
    solution: an independent check of the QP layer, the encoding and the decoding together."""
    model = zoo.create_model("optnet", box=2, tol=1e-10)
    with torch.no_grad():
        model.qp.A.copy_(sudoku_constraints(2))
        model.qp.log_z0.fill_(torch.log(torch.tensor(0.25)))  # b = A (1/4) = 1
    rng = random.Random(3)
    pairs = [make_sudoku(rng, box=2, clues=8) for _ in range(20)]
    target = sudoku_bits([s for _, s in pairs], 2)
    given = sudoku_bits([p for p, _ in pairs], 2).view(20, 16, 4).sum(-1, keepdim=True) > 0
    given = given.expand(20, 16, 4).reshape(20, 64)
    probs = model(target * given, given)
    assert model.cost().converged
    solved = (model.decode(probs) == model.decode(target)).all(1)
    assert solved.float().mean() >= 0.9, solved


def test_momentum_reaches_the_optimizer_or_is_refused():
    import pytest

    def optimizer(**kw):
        task = ConstraintSatisfaction(arch="mlp_csp", model_args={"n_bits": 4, "hidden": [2]},
                                      lr=0.1, min_lr=0.1, **kw)  # fmt: skip
        task.__dict__["_total_steps"] = lambda: 10
        return task.configure_optimizers()["optimizer"]

    plain = optimizer(optimizer="momentum", momentum=0.0)
    assert plain.defaults["momentum"] == 0.0 and not plain.defaults["nesterov"]
    assert optimizer(optimizer="sgd").defaults["momentum"] == 0.9  # timm's default: Nesterov
    with pytest.raises(ValueError, match="momentum must be"):
        optimizer(optimizer="sgd", momentum=1.5)


def _sudoku4_batch(n: int = 12):
    rng = random.Random(5)
    pairs = [make_sudoku(rng, box=2, clues=6) for _ in range(n)]
    target = sudoku_bits([s for _, s in pairs], 2)
    given = sudoku_bits([p for p, _ in pairs], 2).view(n, 16, 4).sum(-1, keepdim=True) > 0
    given = given.expand(n, 16, 4).reshape(n, 64)
    return target * given, given, target


def _satnet_task(**kw):
    torch.manual_seed(0)
    margs = {"n_bits": 64, "m": 16, "aux": 4, "cell_bits": 4, "tol": 1e-3, "max_iter": 20}
    return ConstraintSatisfaction(arch="satnet", model_args=margs, **kw)


def test_drop_unconverged_trains_on_the_settled_puzzles_only():
    """The loss with ``drop_unconverged`` equals the loss of the settled puzzles solved on their
    own (each puzzle's solve is its own: the batch does not change it)."""
    task = _satnet_task(drop_unconverged=True)
    batch = _sudoku4_batch()
    loss = task._common_step(batch, "train")
    settled = task.model.cost().converged_mask
    assert settled is not None and settled.any() and not settled.all(), settled  # a mixed batch
    alone = task._common_step(tuple(t[settled] for t in batch), "val")
    assert torch.isclose(loss, alone, rtol=1e-5), (loss, alone)
    everyone = _satnet_task()._common_step(batch, "train")
    assert not torch.isclose(loss, everyone, rtol=1e-5)
    assert task._skip_reason(loss, task.model.cost()) is None


def test_drop_unconverged_skips_a_step_with_no_settled_puzzle():
    task = _satnet_task(drop_unconverged=True)
    task.model.sat.max_iter, task.model.sat.tol = 1, 1e-12
    loss = task._common_step(_sudoku4_batch(), "train")
    assert not task.model.cost().converged_mask.any()
    assert "no puzzle's solve converged" in task._skip_reason(loss, task.model.cost())


def test_drop_unconverged_is_refused_where_it_cannot_act():
    import pytest

    with pytest.raises(ValueError, match="set one of them"):
        _satnet_task(drop_unconverged=True, skip_unconverged=True)
    with pytest.raises(ValueError, match="mlp_csp is explicit"):
        ConstraintSatisfaction(arch="mlp_csp", model_args={"n_bits": 4, "hidden": [2]},
                               drop_unconverged=True)  # fmt: skip


def test_card_scores_the_other_puzzles_the_table_names(tmp_path, monkeypatch):
    """``card_other_data``: the card's facts hold the model's score on those puzzles' test split,
    equal to scoring that split directly, and the card renders it."""
    from zoo.data.puzzles import SudokuDataModule
    from zoo.tasks import get_task

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    spec = get_task("constraint-satisfaction")
    model = zoo.create_model("mlp_csp", n_bits=64, hidden=[8], cell_bits=4).eval()
    args = {"box": 2, "n_train": 20, "n_val": 4, "n_test": 6, "clues": [6, 8]}
    info = {"architecture": "mlp_csp", "datamodule": "sudoku",
            "card_other_data": {"label": "of another kind", "datamodule_args": args}}  # fmt: skip
    facts = spec.card_facts("toy", model, info)
    other = facts["other_data"]
    inputs, given, target = SudokuDataModule(**args).eval_split("test")
    score = PuzzleScore(cell_bits=4)
    with torch.no_grad():
        score.update(model(inputs, given), given, target)
    want = score.compute()
    assert other["num_samples"] == 6 and other["datamodule_args"] == args
    assert (other["solved"], other["cells"]) == (want["solved"], want["cells"])
    text = "\n".join(spec.card_extra("toy", facts, info))
    assert "6 test puzzles of another kind" in text and f"{want['cells']:.2f}%" in text
    assert (
        spec.card_extra("toy", spec.card_facts("toy", model, {"architecture": "mlp_csp"}), {}) == []
    )
