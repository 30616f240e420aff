"""recipes/optlayers/satnet_solve_check.py: the gradient and budget tables of a SATNet run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.data.puzzles import SudokuDataModule
from zoo.tasks.constraint_satisfaction import ConstraintSatisfaction


@pytest.fixture
def mod(recipe_script):
    return recipe_script("optlayers/satnet_solve_check.py")


def _run():
    # 4x4 boards, the layer's default k (sqrt(2N) + 1: every local solution is global), 64
    # random clauses (with 16 the solves do not settle in 400 sweeps): the paper's sweeps and
    # the parallel solve settle on the same answer
    hp = {
        "arch": "satnet",
        "model_args": {"n_bits": 64, "m": 64, "aux": 4, "cell_bits": 4, "method": "satnet",
                       "tol": 1e-4, "max_iter": 40, "damping": 1e-2},
    }  # fmt: skip
    torch.manual_seed(0)
    sd = ConstraintSatisfaction(arch="satnet", model_args=hp["model_args"]).state_dict()
    dm = SudokuDataModule(box=2, n_train=30, n_val=6, n_test=10, clues=(6, 8))
    return hp, sd, dm.eval_split("val")


def test_settled_sweeps_and_the_settled_parallel_solve_give_one_gradient(mod):
    hp, sd, val = _run()
    res = mod.grads(hp, sd, val)
    assert set(res) == {label for label, _ in mod.SOLVES["grads"]}
    ref = res[mod.REFERENCE]
    par = res["parallel (1e-6, 400) + implicit"]
    assert abs(par["loss"] - ref["loss"]) < 1e-4
    assert F.cosine_similarity(par["grad"], ref["grad"], dim=0) > 0.9999
    # the damped backward is a different (smaller) gradient of the same answer
    damped = res["sweeps settled, damping 1e-2"]
    assert damped["loss"] == ref["loss"] and damped["grad"].norm() < ref["grad"].norm()
    assert res["as trained"]["nfe"] <= 40 and ref["nfe"] > res["as trained"]["nfe"]


def test_budget_table_scores_every_puzzle_at_each_budget(mod):
    hp, sd, val = _run()
    res = mod.budget(hp, sd, val, batch_size=4)  # two batches, the second short
    assert list(res) == [label for label, _ in mod.SOLVES["budget"]]
    for r in res.values():
        assert 0.0 <= r["solved"] <= r["cells"] <= 100.0
    assert res["tol 1e-8, 200 sweeps"]["nfe"] >= res["as trained"]["nfe"]
    # the per-puzzle count agrees with the task's own score
    task = mod.build(hp, sd, {})
    probs, _ = mod.answers(task, val[0], val[1], batch_size=4)
    per_puzzle = mod.solved(probs, val[1], val[2], task.model.cell_bits)
    assert 100 * per_puzzle.float().mean().item() == res["as trained"]["solved"]


def test_a_checkpoint_of_another_task_is_refused_by_name(mod, tmp_path):
    path = tmp_path / "x.ckpt"
    torch.save({"hyper_parameters": {"arch": "mlp"}, "state_dict": {}, "epoch": 0,
                "global_step": 0, "datamodule_hyper_parameters": {}}, path)  # fmt: skip
    try:
        mod.main([str(path)])
    except SystemExit as e:
        assert "not a SATNet Sudoku run" in str(e)
    else:
        raise AssertionError("a non-SATNet checkpoint was read")


def test_propagation_by_hand(mod):
    # a solved 4x4 grid; one empty cell is a naked single
    full = [1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1]
    one = list(full)
    one[0] = 0
    assert mod.propagate(one, box=2)
    # the two rows of the top band each missing 1 and 3 in their first and third cells:
    # no cell has one candidate and no digit one place, so singles stop (the grid has two
    # solutions)
    two = list(full)
    for c in (0, 2, 4, 6):
        two[c] = 0
    assert not mod.propagate(two, box=2) and not mod.propagate(two, box=2, hidden=True)
    # a 9x9 empty grid but one row: neither rule fills it
    assert not mod.propagate([1, 2, 3, 4, 5, 6, 7, 8, 9] + [0] * 72, hidden=True)


def test_hidden_singles_fill_what_naked_singles_cannot(mod):
    # 9s in every row but the first and in every column but the first, none in the top-left
    # box: the first row's 9 has one place left, (0, 0), where every digit is still a candidate
    g = [0] * 81
    for r, c in ((1, 3), (2, 6), (3, 1), (4, 4), (5, 7), (6, 2), (7, 5), (8, 8)):
        g[r * 9 + c] = 9
    assert mod.fill(g) == g  # no cell has one candidate
    assert mod.fill(g, hidden=True)[0] == 9


def test_singles_counts_puzzles_from_the_split(mod):
    dm = SudokuDataModule(box=2, n_train=30, n_val=6, n_test=10, clues=(6, 8))
    val = dm.eval_split("val")
    gs = mod.grids(val, box=2)
    assert len(gs) == 6 and all(6 <= sum(1 for v in g if v) <= 8 for g in gs)
    r = mod.singles(val, box=2)
    assert 6 <= r["givens"] <= 8 and 0 <= r["naked"] <= r["hidden"] <= 100


def test_rounds_of_naked_singles_by_hand(mod):
    full = [1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1]
    assert mod.rounds(full, box=2) == 0
    one = list(full)
    one[0] = 0
    assert mod.rounds(one, box=2) == 1
    # four blanks, each with one candidate left from the start: one round fills them all
    four = list(full)
    for c in (0, 1, 2, 7):
        four[c] = 0
    assert mod.rounds(four, box=2) == 1
    # (0, 0) keeps 1 and 3 until (1, 0), whose row leaves it 3 alone, is filled: two rounds
    chain = list(full)
    for c in (0, 1, 2, 4):
        chain[c] = 0
    assert mod.rounds(chain, box=2) == 2
    two = list(full)
    for c in (0, 2, 4, 6):
        two[c] = 0
    assert mod.rounds(two, box=2) is None  # two solutions: singles stop


def test_generators_table_reads_both_generators(mod, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    hp, sd, _ = _run()
    dm = {"_class_path": "zoo.data.puzzles.SudokuDataModule", "box": 2, "n_train": 30,
          "n_val": 6, "n_test": 10, "clues": (6, 8), "generator": "unique"}  # fmt: skip
    path = tmp_path / "run.ckpt"
    torch.save({"hyper_parameters": hp, "state_dict": sd, "epoch": 0, "global_step": 0,
                "datamodule_hyper_parameters": dm}, path)  # fmt: skip
    mod.main([str(path), "--part", "generators"])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| satnet")
            or ln.startswith("| unique")]  # fmt: skip
    assert len(rows) == 2 and rows[0].split("|")[4].strip() == "100.0%"  # forced chains
    assert all(r.split("|")[2].strip() == "6" for r in rows)  # every validation puzzle
