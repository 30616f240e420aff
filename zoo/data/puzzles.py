"""Constraint-satisfaction data, generated here (no download): Sudoku puzzles with unique
solutions and the parity task of SATNet (Wang et al. 2019).

Every example is ``(inputs, given, target)``: ``target`` the full assignment as bits, ``given``
which bits are known, and ``inputs`` the target on the known bits and 0 elsewhere.

* **Sudoku** (``box`` 2 for OptNet's 4x4 boards, 3 for 9x9): each cell is one-hot over its
  ``box**2`` digits, so a 9x9 board is 729 bits (cell ``r * 9 + c``, digit ``d - 1``: bit
  ``(r * 9 + c) * 9 + d - 1``); a given cell's bits are all known. A puzzle is made from a random
  full grid by removing cells in a random order while the puzzle keeps exactly one solution,
  until ``clues`` cells remain (or no further cell can go); the count is drawn uniformly from
  the ``clues`` range for each puzzle. Uniqueness is checked by an exact backtracking solver
  (:func:`solve_sudoku`). ``generator="satnet"`` makes them as the SATNet paper's data were made
  instead (:func:`make_sudoku_satnet`): a cell is removed only while its digit keeps no other
  place in one of its row, column or box, so every puzzle is solved by filling such forced cells
  one at a time. Those puzzles are easier: propagation alone solves every one of them, where
  many of the default ones need more.
* **Parity**: ``length`` random bits and their parity; the bits are given, the parity bit is
  the one to find (SATNet's task: the parity of a bit string, learned from the final bit alone).

The examples are generated once per setting from ``seed`` and cached under ``ZOO_CACHE_DIR``.
"""

from __future__ import annotations

import hashlib
import json
import random
from functools import lru_cache

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from ._common import cache_root, check_positive
from ._registry import register_datamodule
from ._resumable import ResumableLoader

__all__ = [
    "ParityDataModule",
    "SudokuDataModule",
    "make_sudoku",
    "make_sudoku_satnet",
    "parity_examples",
    "solve_sudoku",
    "sudoku_bits",
    "sudoku_symmetry_index",
]


# --- Sudoku ------------------------------------------------------------------------------------


def _units(box: int) -> tuple[int, list[tuple[int, int, int]]]:
    n = box * box
    return n, [(i // n, i % n, (i // n) // box * box + (i % n) // box) for i in range(n * n)]


def solve_sudoku(grid, box: int = 3, limit: int = 2) -> list[list[int]]:
    """Solutions of a Sudoku grid (``box**4`` cells in row order, 0 for blank), at most
    ``limit`` of them: ``[]`` for a contradiction, one for a proper puzzle.

    An exact depth-first search: the blank cell with the fewest candidates first, candidates as
    bit sets over rows, columns and boxes.

    Example:
        >>> grid = [1, 0, 0, 0,  0, 0, 1, 0,  0, 1, 0, 0,  0, 0, 0, 1]
        >>> len(solve_sudoku(grid, box=2, limit=5)), len(solve_sudoku(grid, box=2, limit=50))
        (5, 18)
    """
    n, where = _units(box)
    cells = list(grid)
    if len(cells) != n * n or any(not 0 <= v <= n for v in cells):
        raise ValueError(f"a box-{box} grid has {n * n} cells with values 0..{n}")
    rows, cols, boxes = [0] * n, [0] * n, [0] * n
    for i, v in enumerate(cells):
        if v:
            r, c, b = where[i]
            bit = 1 << (v - 1)
            if (rows[r] | cols[c] | boxes[b]) & bit:
                return []
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
    full = (1 << n) - 1
    blanks = [i for i, v in enumerate(cells) if not v]
    found: list[list[int]] = []

    def search() -> bool:
        best, best_mask, best_count = -1, 0, n + 1
        for i in blanks:
            if cells[i]:
                continue
            r, c, b = where[i]
            mask = full & ~(rows[r] | cols[c] | boxes[b])
            count = mask.bit_count()
            if count < best_count:
                best, best_mask, best_count = i, mask, count
                if count <= 1:
                    break
        if best < 0:
            found.append(list(cells))
            return len(found) >= limit
        if best_count == 0:
            return False
        r, c, b = where[best]
        mask = best_mask
        while mask:
            bit = mask & -mask
            mask ^= bit
            cells[best] = bit.bit_length()
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            if search():
                return True
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
        cells[best] = 0
        return False

    search()
    return found


def _random_solution(rng: random.Random, box: int) -> list[int]:
    """A random full grid: a solved grid under a random relabelling of the digits, random
    orders of the bands, stacks, and rows and columns within them, and a random transpose (the
    moves that keep a grid valid)."""
    n = box * box
    first = list(range(1, n + 1))
    rng.shuffle(first)
    sol = solve_sudoku(first + [0] * (n * n - n), box, limit=1)[0]
    perm = list(range(1, n + 1))
    rng.shuffle(perm)
    bands, stacks = rng.sample(range(box), box), rng.sample(range(box), box)
    rows = [b * box + r for b in bands for r in rng.sample(range(box), box)]
    cols = [s * box + c for s in stacks for c in rng.sample(range(box), box)]
    out = [perm[sol[rows[i // n] * n + cols[i % n]] - 1] for i in range(n * n)]
    if rng.random() < 0.5:
        out = [out[(i % n) * n + i // n] for i in range(n * n)]
    return out


def make_sudoku(rng: random.Random, box: int, clues: int) -> tuple[list[int], list[int]]:
    """A puzzle with exactly one solution and (at least) ``clues`` given cells, and its solution.

    Example:
        >>> import random
        >>> puzzle, solution = make_sudoku(random.Random(0), box=2, clues=6)
        >>> sum(v > 0 for v in puzzle) >= 6, solve_sudoku(puzzle, box=2) == [solution]
        (True, True)
    """
    n = box * box
    solution = _random_solution(rng, box)
    puzzle = list(solution)
    order = list(range(n * n))
    rng.shuffle(order)
    given = n * n
    for i in order:
        if given <= clues:
            break
        keep = puzzle[i]
        puzzle[i] = 0
        if len(solve_sudoku(puzzle, box, limit=2)) == 1:
            given -= 1
        else:
            puzzle[i] = keep
    return puzzle, solution


@lru_cache
def _cell_units(box: int) -> tuple[list[list[int]], list[set[int]]]:
    """Each cell's row, column and box (three lists per cell, in that order) and its peers."""
    n, where = _units(box)
    units = [[j for j in range(n * n) if where[j][kind] == where[i][kind]] for i in range(n * n)
             for kind in range(3)]  # fmt: skip
    peers = [{j for u in units[3 * i : 3 * i + 3] for j in u if j != i} for i in range(n * n)]
    return units, peers


def make_sudoku_satnet(rng: random.Random, box: int) -> tuple[list[int], list[int]]:
    """A puzzle made as the SATNet paper's data were, and its solution.

    The paper's notebook names its generator (Kyubyong Park's ``sudoku``, 2018): from a random
    full grid, the cells are tried once each in a random order, and a cell is removed only if,
    after that, no other empty cell of at least one of its row, column or box can hold its digit
    (a "hidden single"). Filling the removed cells back in the reverse order is then a chain of
    such forced moves, so the puzzle has exactly one solution. With ``box=3`` this leaves 35.6
    givens on average (31 to 40; the paper gives 36.2 for its test boards).

    Example:
        >>> import random
        >>> puzzle, solution = make_sudoku_satnet(random.Random(0), box=2)
        >>> solve_sudoku(puzzle, box=2) == [solution]
        True
    """
    n = box * box
    units, peers = _cell_units(box)
    solution = _random_solution(rng, box)
    g = list(solution)

    def forced(i: int) -> bool:  # the digit of cell i has no other place in one of its units
        v = g[i]
        for u in units[3 * i : 3 * i + 3]:
            if all(g[o] or any(g[p] == v for p in peers[o] if p != i) for o in u if o != i):
                return True
        return False

    order = list(range(n * n))
    rng.shuffle(order)
    for i in order:
        if forced(i):
            g[i] = 0
    return g, solution


def sudoku_bits(grids, box: int) -> Tensor:
    """One-hot bits ``(B, box**6)`` of grids ``(B, box**4)`` (0 = blank: all bits 0)."""
    n = box * box
    g = torch.as_tensor(np.asarray(grids), dtype=torch.long)
    bits = torch.zeros(g.shape[0], n * n, n + 1)
    bits.scatter_(2, g[..., None], 1.0)
    return bits[..., 1:].reshape(g.shape[0], n * n * n)


def sudoku_symmetry_index(box: int, generator: torch.Generator) -> Tensor:
    """A random symmetry of Sudoku as a permutation of a board's ``box**6`` bits: new bit ``j``
    is old bit ``index[j]``. It relabels the digits, permutes the bands, the stacks, the rows
    within each band and the columns within each stack, and transposes half the time: every
    move maps a valid grid to a valid grid and a puzzle with one solution to a puzzle with one
    solution (its image).

    Example:
        >>> import torch
        >>> idx = sudoku_symmetry_index(2, torch.Generator().manual_seed(0))
        >>> sorted(idx.tolist()) == list(range(64))
        True
    """
    n = box * box

    def perm(k: int) -> Tensor:
        return torch.randperm(k, generator=generator)

    def lines() -> Tensor:  # bands (or stacks) in a random order, lines within each shuffled
        return torch.cat([g * box + perm(box) for g in perm(box).tolist()])

    rows, cols, digits = lines(), lines(), perm(n)
    src = rows[:, None] * n + cols[None, :]  # new cell (r, c) shows old cell (rows[r], cols[c])
    if bool(torch.rand((), generator=generator) < 0.5):
        src = src.T
    # a digit d of the old board is digits[d] on the new one: new bit (cell, d') reads old bit
    # (src[cell], digits^-1[d'])
    inverse = torch.argsort(digits)
    return (src.reshape(-1, 1) * n + inverse[None, :]).reshape(-1)


def _augment_sudoku(box: int):
    def transform(batch, generator: torch.Generator):
        inputs, given, target = batch
        index = torch.stack(
            [sudoku_symmetry_index(box, generator) for _ in range(inputs.shape[0])]
        ).to(inputs.device)
        return inputs.gather(1, index), given.gather(1, index), target.gather(1, index)

    return transform


def _cached(kind: str, spec: dict, make) -> dict[str, np.ndarray]:
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_root() / "puzzles" / f"{kind}-{key}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return arrays


def _sudoku_set(
    box: int, n: int, clues: tuple[int, int] | None, seed: int
) -> dict[str, np.ndarray]:
    """``n`` puzzles and solutions: ``clues=None`` by :func:`make_sudoku_satnet`, otherwise by
    :func:`make_sudoku` with a clue count drawn from the range."""

    def make():
        rng = random.Random(seed)
        puzzles, solutions = [], []
        for _ in tqdm(range(n), desc=f"generating {box * box}x{box * box} Sudoku", unit="puzzle",
                      mininterval=2, disable=n < 200):  # fmt: skip
            if clues is None:
                p, s = make_sudoku_satnet(rng, box)
            else:
                p, s = make_sudoku(rng, box, rng.randint(*clues))
            puzzles.append(p)
            solutions.append(s)
        return {
            "puzzles": np.asarray(puzzles, np.int8),
            "solutions": np.asarray(solutions, np.int8),
        }

    if clues is None:
        spec = {"box": box, "n": n, "generator": "satnet", "seed": seed, "v": 1}
    else:
        spec = {"box": box, "n": n, "clues": list(clues), "seed": seed, "v": 1}
    return _cached("sudoku", spec, make)


class _PuzzleDataModule(pl.LightningDataModule):
    """Train/val/test splits of ``(inputs, given, target)`` tensors."""

    batch_size: int
    eval_batch_size: int
    seed: int
    eval_splits = ("test", "val", "train")

    def _splits(self) -> dict[str, tuple[Tensor, Tensor, Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not getattr(self, "splits", None):
            self.splits = self._splits()

    def eval_split(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        """``(inputs, given, target)`` of ``test``, ``val`` or ``train``."""
        if split not in self.eval_splits:
            raise ValueError(f"unknown split {split!r} for {self.name}: use test, val or train")
        self.setup()
        return self.splits[split]

    def _train_transform(self):
        """A random augmentation of each training batch (none by default)."""
        return None

    def train_dataloader(self) -> ResumableLoader:
        return ResumableLoader(
            TensorDataset(*self.eval_split("train")), self.batch_size, seed=self.seed, owner=self,
            transform=self._train_transform(),
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(*self.eval_split("val")), batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(*self.eval_split("test")), batch_size=self.eval_batch_size)


@register_datamodule
class SudokuDataModule(_PuzzleDataModule):
    """Sudoku puzzles with unique solutions, generated here (see the module docstring).

    Args:
        box: 2 (4x4 boards, OptNet's) or 3 (9x9).
        n_train: Training puzzles (the last ``n_val`` of them are held out for validation).
        n_val: Validation puzzles, taken from the training ones.
        n_test: Test puzzles (drawn with ``seed + 1``).
        clues: ``(low, high)``: each puzzle's number of given cells, drawn uniformly (default
            ``(30, 40)``); only with ``generator="unique"``.
        generator: ``"unique"`` (cells removed while the solution stays unique, down to the
            drawn clue count) or ``"satnet"`` (the SATNet paper's generator,
            :func:`make_sudoku_satnet`: cells removed only while each stays forced, so
            propagation alone solves the puzzles; its clue count is its own).
        batch_size: Puzzles per training batch.
        eval_batch_size: Puzzles per evaluation batch.
        seed: Seed of the training puzzles.
        augment: Show every training puzzle under a fresh random symmetry of Sudoku each time
            (:func:`sudoku_symmetry_index`: relabelled digits, permuted bands, stacks, rows and
            columns, transposed half the time), so that no grid is seen twice; validation and
            test puzzles are never transformed.

    Example:
        >>> dm = SudokuDataModule(box=2, n_train=20, n_val=4, n_test=4, clues=(6, 8))
        >>> inputs, given, target = dm.eval_split("test")
        >>> tuple(target.shape), bool((inputs == target * given).all())
        ((4, 64), True)
    """

    name = "sudoku"

    def __init__(
        self,
        box: int = 3,
        n_train: int = 9000,
        n_val: int = 500,
        n_test: int = 1000,
        clues: tuple[int, int] | None = None,
        batch_size: int = 40,
        eval_batch_size: int = 100,
        seed: int = 0,
        augment: bool = False,
        generator: str = "unique",
    ) -> None:
        super().__init__()
        if not isinstance(augment, bool):
            raise ValueError(f"augment must be True or False, got {augment!r}")
        if box not in (2, 3):
            raise ValueError(f"box must be 2 (4x4 boards) or 3 (9x9), got {box!r}")
        if generator not in ("unique", "satnet"):
            raise ValueError(f"generator must be 'unique' or 'satnet', got {generator!r}")
        if generator == "satnet" and clues is not None:
            raise ValueError(
                "clues: the 'satnet' generator removes cells until no further one is forced and "
                "has no clue count to set; leave clues unset, or use generator='unique'"
            )
        check_positive(
            type(self).__name__, n_train=n_train, n_test=n_test, batch_size=batch_size,
            eval_batch_size=eval_batch_size,
        )  # fmt: skip
        if generator == "unique":
            lo, hi = (int(c) for c in (clues if clues is not None else (30, 40)))
            if not 0 < lo <= hi <= box**4:
                raise ValueError(f"clues must be (low, high) with 0 < low <= high <= {box**4}")
        if not 0 <= n_val < n_train:
            raise ValueError(f"n_val must be in [0, n_train), got {n_val}")
        self.save_hyperparameters()
        self.box, self.n_train, self.n_val, self.n_test = box, n_train, n_val, n_test
        self.clues = (lo, hi) if generator == "unique" else None
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.augment, self.generator = seed, augment, generator

    def _train_transform(self):
        return _augment_sudoku(self.box) if self.augment else None

    def _tensors(self, grids: dict[str, np.ndarray]) -> tuple[Tensor, Tensor, Tensor]:
        target = sudoku_bits(grids["solutions"], self.box)
        given_cells = torch.as_tensor(grids["puzzles"] > 0)
        given = given_cells.repeat_interleave(self.box**2, dim=1)
        return target * given, given, target

    def _splits(self):
        train = _sudoku_set(self.box, self.n_train, self.clues, self.seed)
        test = _sudoku_set(self.box, self.n_test, self.clues, self.seed + 1)
        cut = self.n_train - self.n_val
        tr = {k: v[:cut] for k, v in train.items()}
        va = {k: v[cut:] if self.n_val else v[:1] for k, v in train.items()}
        return {"train": self._tensors(tr), "val": self._tensors(va), "test": self._tensors(test)}


# --- parity ------------------------------------------------------------------------------------


def parity_examples(n: int, length: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` random bit strings ``(n, length)`` and their parity bits ``(n,)``.

    Example:
        >>> bits, parity = parity_examples(3, 5, seed=0)
        >>> bool((bits.sum(1) % 2 == parity).all())
        True
    """
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (n, length), generator=g).float()
    return bits, bits.sum(1) % 2


@register_datamodule
class ParityDataModule(_PuzzleDataModule):
    """The parity of ``length`` random bits: the bits are given, the parity bit is found.

    Args:
        length: Bits per string (SATNet's: 20).
        n_train: Training strings (the last ``n_val`` held out for validation).
        n_val: Validation strings.
        n_test: Test strings (drawn with ``seed + 1``).
        batch_size: Strings per training batch.
        eval_batch_size: Strings per evaluation batch.
        seed: Seed of the training strings.

    Example:
        >>> inputs, given, target = ParityDataModule(length=4, n_train=8, n_val=2,
        ...                                          n_test=2).eval_split("test")
        >>> tuple(target.shape), given[0].tolist()
        ((2, 5), [True, True, True, True, False])
    """

    name = "parity"

    def __init__(
        self,
        length: int = 20,
        n_train: int = 9000,
        n_val: int = 500,
        n_test: int = 1000,
        batch_size: int = 100,
        eval_batch_size: int = 500,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_positive(
            type(self).__name__, minimum=2, length=length, n_train=n_train, n_test=n_test,
            batch_size=batch_size, eval_batch_size=eval_batch_size,
        )  # fmt: skip
        if not 0 <= n_val < n_train:
            raise ValueError(f"n_val must be in [0, n_train), got {n_val}")
        self.save_hyperparameters()
        self.length, self.n_train, self.n_val, self.n_test = length, n_train, n_val, n_test
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed

    def _tensors(self, bits: Tensor, parity: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        target = torch.cat([bits, parity[:, None]], 1)
        given = torch.ones_like(target, dtype=torch.bool)
        given[:, -1] = False
        return target * given, given, target

    def _splits(self):
        bits, parity = parity_examples(self.n_train, self.length, self.seed)
        cut = self.n_train - self.n_val
        test = parity_examples(self.n_test, self.length, self.seed + 1)
        val = (bits[cut:], parity[cut:]) if self.n_val else (bits[:1], parity[:1])
        return {
            "train": self._tensors(bits[:cut], parity[:cut]),
            "val": self._tensors(*val),
            "test": self._tensors(*test),
        }
