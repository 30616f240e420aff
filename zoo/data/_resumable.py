"""Training loaders that a run killed mid-epoch resumes exactly (``--ckpt_path last``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["ResumableLoader"]


class ResumableLoader:
    """Batches of a map-style dataset in an order that depends only on the seed and the epoch.

    Epoch ``e`` (the trainer's current epoch) visits the permutation drawn from the seed and
    ``e`` (or the dataset's own order with ``shuffle=False``), whatever happened before. The
    state (Lightning's ``state_dict`` / ``load_state_dict`` protocol, saved in every checkpoint)
    is the epoch and the number of its batches already trained on, so a resumed run continues
    with the next batch. Under DDP each process takes every ``world_size``-th index.

    Args:
        dataset: A map-style dataset; a ``TensorDataset`` is indexed with whole index tensors.
        batch_size: Items per batch; ``None`` when each item already is a batch.
        seed: Seed of the permutations.
        owner: The data module (its ``trainer`` gives the epoch and the batches trained).
        shuffle: Permute every epoch.
        collate_fn: Builds a batch from a list of items (default: ``dataset[index_tensor]``).
        drop_last: Drop an incomplete last batch.
        transform: ``transform(batch, generator)`` rewrites each batch (a random augmentation);
            the generator is seeded from the seed, the epoch and the batch's place in it, so a
            resumed run sees the same transformed batches as an uninterrupted one.

    Example:
        >>> import torch
        >>> from zoo.data import ResumableLoader
        >>> ds = torch.utils.data.TensorDataset(torch.arange(10))
        >>> first = [b[0].tolist() for b in ResumableLoader(ds, batch_size=5, seed=0)]
        >>> first == [b[0].tolist() for b in ResumableLoader(ds, batch_size=5, seed=0)]
        True
    """

    def __init__(
        self,
        dataset,
        batch_size: int | None,
        seed: int = 0,
        owner=None,
        shuffle: bool = True,
        collate_fn: Callable | None = None,
        drop_last: bool = True,
        transform: Callable | None = None,
    ) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.shuffle, self.collate_fn, self.drop_last = shuffle, collate_fn, drop_last
        self.transform = transform
        self._owner = owner
        self._epoch, self._next_epoch, self._yielded = 0, 0, 0
        self._resume: tuple[int, int] | None = None

    @staticmethod
    def _epoch_seed(seed: int, epoch: int) -> int:
        return seed * 100_003 + epoch

    @classmethod
    def permutation(cls, seed: int, epoch: int, n: int) -> torch.Tensor:
        """The order in which a shuffling loader with ``seed`` visits ``n`` items in ``epoch``
        (before DDP's split), for code that must know which items a run has trained on."""
        g = torch.Generator().manual_seed(cls._epoch_seed(seed, epoch))
        return torch.randperm(n, generator=g)

    @staticmethod
    def _world() -> tuple[int, int]:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _per_rank(self) -> int:
        return len(self.dataset) // self._world()[1]

    def __len__(self) -> int:
        n = self._per_rank()
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _trainer(self):
        return getattr(self._owner, "trainer", None) if self._owner is not None else None

    def __iter__(self):
        trainer = self._trainer()
        epoch = int(trainer.current_epoch) if trainer is not None else self._next_epoch
        start = 0
        if self._resume is not None and self._resume[0] == epoch:
            start = self._resume[1]
        self._resume = None
        self._epoch, self._next_epoch, self._yielded = epoch, epoch + 1, start
        n = len(self.dataset)
        order = self.permutation(self.seed, epoch, n) if self.shuffle else torch.arange(n)
        rank, world = self._world()
        order = order[: self._per_rank() * world][rank::world]
        for b in range(start, len(self)):
            self._yielded = b + 1
            if self.batch_size is None:
                batch = self.dataset[int(order[b])]
            else:
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                if self.collate_fn is None:
                    batch = self.dataset[idx]
                else:
                    batch = self.collate_fn([self.dataset[int(i)] for i in idx])
            if self.transform is not None:
                g = torch.Generator().manual_seed(
                    self._epoch_seed(self.seed, epoch) * 1_000_003 + b * world + rank
                )
                batch = self.transform(batch, g)
            yield batch

    def _trained(self) -> int:
        """Batches of the current epoch trained on (the loader runs one ahead: Lightning
        prefetches a batch)."""
        trainer = self._trainer()
        if trainer is None:
            return self._yielded
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "batches": self._trained(), "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"resuming with seed {self.seed}, but the run used {state['seed']}")
        epoch, done = int(state["epoch"]), int(state["batches"])
        self._resume = (epoch + 1, 0) if done >= len(self) else (epoch, done)
        self._next_epoch = self._resume[0] + 1
