"""One training step of a tiny model through ``Trainer(strategy="ddp", devices=2)`` on CPU.

Run as ``python _lightning_ddp.py KIND OUT``: Lightning's launcher re-executes this command as
rank 1. After the all-reduce (``on_before_optimizer_step``) rank 0 saves the gradients to OUT,
with the world size and the local batch size it saw, for tests/test_ddp.py to compare with one
process on the whole batch. Float64 throughout (``precision="64-true"``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from test_ddp import _batch, _build, _loss  # noqa: E402

from zoo.training import close_distributed  # noqa: E402


class OneStep(pl.LightningModule):
    def __init__(self, kind: str, out: str) -> None:
        super().__init__()
        self.kind, self.out = kind, out
        self.model = _build(kind)
        self.local_batch = 0
        self.model_mode = self.model.training  # eval for BatchNorm / posterior-mean models

    def training_step(self, batch, batch_idx):
        self.model.train(self.model_mode)  # the Trainer put every module in train mode
        self.local_batch = batch[0].shape[0]
        return _loss(self.model, self.kind, *batch)

    def on_before_optimizer_step(self, optimizer):
        if self.global_rank == 0:
            grads = {n: p.grad for n, p in self.model.named_parameters() if p.grad is not None}
            grads["__world_size__"] = torch.tensor(self.trainer.world_size)
            grads["__local_batch__"] = torch.tensor(self.local_batch)
            torch.save(grads, self.out)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def main(kind: str, out: str) -> None:
    torch.set_num_threads(1)
    data = DataLoader(TensorDataset(*_batch(kind)), batch_size=2, shuffle=False)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", precision="64-true", max_steps=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    try:
        trainer.fit(OneStep(kind, out), data)
    finally:
        close_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
