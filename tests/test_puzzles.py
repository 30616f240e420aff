"""The constraint-satisfaction data: the Sudoku solver against brute force, the generator's
guarantees (unique solutions, clue counts, seeds), the bit encoding, parity."""

import itertools
import random

import pytest
import torch

from zoo.data.puzzles import (
    ParityDataModule,
    SudokuDataModule,
    make_sudoku,
    make_sudoku_satnet,
    parity_examples,
    solve_sudoku,
    sudoku_bits,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))


def _all_4x4_grids():
    """Every valid 4x4 grid, by brute force over row permutations (an independent answer)."""
    perms = list(itertools.permutations(range(1, 5)))
    grids = []
    for rows in itertools.product(perms, repeat=4):
        if any(len({r[c] for r in rows}) < 4 for c in range(4)):
            continue
        boxes = [{rows[r][c] for r in (br, br + 1) for c in (bc, bc + 1)}
                 for br in (0, 2) for bc in (0, 2)]  # fmt: skip
        if all(len(b) == 4 for b in boxes):
            grids.append([v for r in rows for v in r])
    return grids


GRIDS_4x4 = _all_4x4_grids()


def test_there_are_288_4x4_grids_and_the_solver_finds_each_one():
    assert len(GRIDS_4x4) == 288
    assert sorted(solve_sudoku([0] * 16, box=2, limit=1000)) == sorted(GRIDS_4x4)


def test_solver_counts_equal_brute_force_on_random_4x4_puzzles():
    rng = random.Random(0)
    for _ in range(200):
        grid = rng.choice(GRIDS_4x4)
        puzzle = [v if rng.random() < 0.35 else 0 for v in grid]
        consistent = [g for g in GRIDS_4x4 if all(p in (0, v) for p, v in zip(puzzle, g))]
        assert sorted(solve_sudoku(puzzle, box=2, limit=1000)) == sorted(consistent)
    assert solve_sudoku([1, 1] + [0] * 14, box=2) == []  # a contradiction
    with pytest.raises(ValueError, match="16 cells"):
        solve_sudoku([0] * 15, box=2)


def test_generated_9x9_puzzles_have_one_solution_and_their_clue_count():
    rng = random.Random(1)
    for clues in (30, 35, 40):
        puzzle, solution = make_sudoku(rng, box=3, clues=clues)
        assert sum(v > 0 for v in puzzle) == clues
        assert all(p in (0, s) for p, s in zip(puzzle, solution))
        assert solve_sudoku(puzzle, box=3, limit=2) == [solution]
        for unit in ([solution[r * 9 : r * 9 + 9] for r in range(9)] +
                     [solution[c::9] for c in range(9)]):  # fmt: skip
            assert sorted(unit) == list(range(1, 10))


def _units_of(box):
    n = box * box
    cell = [(i // n, i % n, (i // n) // box * box + (i % n) // box) for i in range(n * n)]
    return [[i for i in range(n * n) if cell[i][k] == u] for k in range(3) for u in range(n)]


def _hidden_singles_fill(grid, box):
    """Fill, one at a time, a digit that has a single possible place left in a row, column or
    box, until none has (an independent check of the generator's guarantee)."""
    n, units = box * box, _units_of(box)
    g = list(grid)
    peers = [{j for u in units if i in u for j in u if j != i} for i in range(n * n)]
    while True:
        for u in units:
            moved = False
            for d in set(range(1, n + 1)) - {g[c] for c in u}:
                spots = [c for c in u if not g[c] and all(g[p] != d for p in peers[c])]
                if len(spots) == 1:
                    g[spots[0]], moved = d, True
                    break
            if moved:
                break
        else:
            return g


@pytest.mark.parametrize("box", [2, 3])
def test_satnet_style_puzzles_are_chains_of_forced_cells(box):
    rng = random.Random(5)
    units = _units_of(box)
    peers_of = [{j for u in units if i in u for j in u if j != i} for i in range(box**4)]
    givens = []
    for k in range(300 if box == 3 else 30):
        puzzle, solution = make_sudoku_satnet(rng, box)
        givens.append(sum(v > 0 for v in puzzle))
        if k >= 40:  # the clue count over many; the checks below on the first 40
            continue
        assert all(p in (0, s) for p, s in zip(puzzle, solution))
        assert solve_sudoku(puzzle, box=box, limit=2) == [solution]
        assert _hidden_singles_fill(puzzle, box) == solution  # propagation alone solves it
        # no given left could go: in each of its units another empty cell could hold its digit
        for i, v in enumerate(puzzle):
            if not v:
                continue
            for u in (u for u in units if i in u):
                others = [o for o in u if o != i and not puzzle[o]]
                assert any(all(puzzle[p] != v for p in peers_of[o] - {i}) for o in others)
    if box == 3:  # the docstring's 35.6 givens on average (the paper's test boards: 36.2)
        assert 35.3 < sum(givens) / len(givens) < 35.9


def test_sudoku_datamodule_satnet_generator():
    dm = SudokuDataModule(box=2, n_train=20, n_val=4, n_test=6, generator="satnet")
    assert dm.clues is None
    _, given, target = dm.eval_split("test")
    unique = SudokuDataModule(box=2, n_train=20, n_val=4, n_test=6, clues=(6, 8))
    assert not torch.equal(
        unique.eval_split("test")[1], given
    )  # another generator, not a cache hit
    for g, t in zip(given.view(6, 16, 4)[..., 0].int().tolist(), target.view(6, 16, 4).tolist()):
        sol = [row.index(1.0) + 1 for row in t]
        assert solve_sudoku([s * k for s, k in zip(sol, g)], box=2, limit=2) == [sol]
    with pytest.raises(ValueError, match="leave clues unset"):
        SudokuDataModule(box=2, generator="satnet", clues=(6, 8))
    with pytest.raises(ValueError, match="generator must be"):
        SudokuDataModule(box=2, generator="kaggle")


def test_bits_are_one_hot_per_cell():
    grid = [1, 0, 3, 4] + [0] * 12
    bits = sudoku_bits([grid], box=2).view(16, 4)
    assert bits[0].tolist() == [1, 0, 0, 0] and bits[1].sum() == 0 and bits[3, 3] == 1


def test_sudoku_datamodule_splits_seeds_and_cache():
    dm = SudokuDataModule(box=2, n_train=30, n_val=5, n_test=10, clues=(6, 8), batch_size=4)
    inputs, given, target = dm.eval_split("test")
    assert target.shape == (10, 64) and given.dtype == torch.bool
    assert torch.equal(inputs, target * given) and (target.view(10, 16, 4).sum(2) == 1).all()
    cells = given.view(10, 16, 4)[..., 0].sum(1)
    assert ((cells >= 6) & (cells <= 8)).all()
    assert dm.eval_split("train")[0].shape[0] == 25 and dm.eval_split("val")[0].shape[0] == 5
    again = SudokuDataModule(box=2, n_train=30, n_val=5, n_test=10, clues=(6, 8))
    assert torch.equal(again.eval_split("test")[2], target)  # seeded (and read from the cache)
    other = SudokuDataModule(box=2, n_train=30, n_val=5, n_test=10, clues=(6, 8), seed=1)
    assert not torch.equal(other.eval_split("test")[2], target)
    x, g, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 64) and g.shape == (4, 64)
    with pytest.raises(ValueError, match="unknown split"):
        dm.eval_split("dev")
    with pytest.raises(ValueError, match="box must be"):
        SudokuDataModule(box=4)
    with pytest.raises(ValueError, match="clues"):
        SudokuDataModule(box=2, clues=(0, 20))


def test_parity_examples_and_datamodule():
    bits, parity = parity_examples(100, 20, seed=0)
    assert torch.equal(parity, bits.sum(1) % 2) and bits.unique().tolist() == [0.0, 1.0]
    inputs, given, target = ParityDataModule(length=20, n_train=50, n_val=10,
                                             n_test=20).eval_split("test")  # fmt: skip
    assert target.shape == (20, 21) and not given[:, -1].any() and given[:, :-1].all()
    assert torch.equal(target[:, -1], target[:, :-1].sum(1) % 2) and (inputs[:, -1] == 0).all()


def _grid(bits, box):
    n = box * box
    return (bits.view(n * n, n).argmax(1) + 1).tolist()


def _valid(grid, box):
    n = box * box
    units = [grid[r * n : r * n + n] for r in range(n)] + [grid[c::n] for c in range(n)]
    units += [[grid[(br * box + i) * n + bc * box + j] for i in range(box) for j in range(box)]
              for br in range(box) for bc in range(box)]  # fmt: skip
    return all(sorted(u) == list(range(1, n + 1)) for u in units)


@pytest.mark.parametrize("box", [2, 3])
def test_sudoku_symmetries_keep_the_rules_the_clues_and_the_single_solution(box):
    n = box * box
    dm = SudokuDataModule(box=box, n_train=24, n_val=4, n_test=4, augment=True, batch_size=4,
                          clues=(6, 8) if box == 2 else (30, 40))  # fmt: skip
    raw = dm.eval_split("train")
    loader = dm.train_dataloader()
    seen = set()
    for b, (x, g, y) in enumerate(loader):
        idx = torch.randperm(
            len(raw[0]), generator=torch.Generator().manual_seed(dm.seed * 100_003)
        )
        src = [t[idx[b * 4 : b * 4 + 4]] for t in raw]
        for i in range(4):
            assert torch.equal(x[i], y[i] * g[i])
            assert g[i].sum() == src[1][i].sum()  # as many clues
            cells = g[i].view(n * n, n)
            assert (cells.all(1) | ~cells.any(1)).all()  # a cell's bits are given together
            grid = _grid(y[i], box)
            assert _valid(grid, box) and grid != _grid(src[2][i], box)
            puzzle = [v if c else 0 for v, c in zip(grid, cells[:, 0].tolist())]
            assert solve_sudoku(puzzle, box, limit=2) == [grid]
            seen.add(tuple(grid))
        if b == 1:
            break
    assert len(seen) == 8
    # the same epoch gives the same transformed batches (a resumed run repeats them)
    again = next(iter(SudokuDataModule(box=box, n_train=24, n_val=4, n_test=4, augment=True,
                                       batch_size=4, clues=dm.clues).train_dataloader()))  # fmt: skip
    assert all(torch.equal(a, c) for a, c in zip(again, next(iter(dm.train_dataloader()))))


def test_augment_is_off_by_default_never_touches_evaluation_and_is_checked():
    kw = dict(box=2, n_train=24, n_val=4, n_test=4, clues=(6, 8), batch_size=4)
    plain, aug = SudokuDataModule(**kw), SudokuDataModule(**kw, augment=True)
    p, a = next(iter(plain.train_dataloader())), next(iter(aug.train_dataloader()))
    assert not torch.equal(p[2], a[2])  # training batches differ...
    assert torch.equal(p[0].sum(1), a[0].sum(1))  # ...as the same puzzles under symmetries
    idx = torch.randperm(20, generator=torch.Generator().manual_seed(0))[:4]
    assert torch.equal(p[2], plain.eval_split("train")[2][idx])  # off: the stored puzzles
    for split in ("val", "test"):
        loader = getattr(aug, f"{split}_dataloader")()
        assert all(torch.equal(u, v) for u, v in zip(next(iter(loader)), aug.eval_split(split)))
    with pytest.raises(ValueError, match="augment must be True or False"):
        SudokuDataModule(**kw, augment="yes")
