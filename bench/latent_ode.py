"""Latent ODE on PhysioNet 2012: seconds per training step (forward, backward) at batch 50.

Rows: the 0.1 h grid and the paper's 1-minute grid, for the latent ODE with the reference's
adaptive decoder (dopri5 through every output time of the batch), the same model with the grid
decoder (``decoder_steps=100``: RK4 on a fixed grid + Hermite read-out), and the ODE-RNN.
For scale, the reference code takes about 11 s (0.1 h) and 126 s (1 minute) per batch of 50 on
these 2 cores (../shared/MEASURED.md). Needs ``ZOO_DATA_DIR`` (skipped without it).

Run: python bench/latent_ode.py [--quick]; writes bench/results/latent_ode.{json,md}.
"""

from __future__ import annotations

import os
import statistics
import time

from _cells import report
from _harness import parser, setup

COLS = ["grid_h", "model", "decoder", "T_union", "L_max", "fwd_s", "bwd_s", "step_s"]


def _models():
    from zoo.models.latent_ode import LatentODE
    from zoo.models.ode_rnn import ODERNN

    cfg = dict(input_dim=41, latent_dim=20, rec_dims=40, units=50, rec_layers=3, gen_layers=3)
    return [
        ("latent_ode", "dopri5 at every output", LatentODE(**cfg), 3),
        ("latent_ode", "grid, 100 RK4 steps", LatentODE(**cfg, decoder_steps=100), 3),
        ("ode_rnn", "-", ODERNN(41, 40, 50, layers=3, method="euler"), 1),
    ]


def main(argv=None) -> list[dict]:
    import torch

    p = parser(__doc__, "latent_ode.json")
    a = setup(p.parse_args(argv))
    if not os.environ.get("ZOO_DATA_DIR"):
        print("ZOO_DATA_DIR is not set: skipping the PhysioNet benchmark")
        return []
    from zoo.data import PhysioNet2012DataModule

    torch.manual_seed(0)
    n_batches = 1 if a.quick else 3
    rows = []
    for q in (0.1, 0.016):
        dm = PhysioNet2012DataModule(quantization=q, batch_size=50)
        dm.setup()
        batches = [b for _, b in zip(range(n_batches), dm.train_dataloader())]
        for name, decoder, model, S in _models():
            model.train()
            fwd, bwd = [], []
            for b in batches:
                t0 = time.perf_counter()
                out = model.reconstruct(b.times, b.values, b.mask, b.mask, n_samples=S)
                t1 = time.perf_counter()
                model.loss(out, b.values, b.mask).backward()
                fwd.append(t1 - t0)
                bwd.append(time.perf_counter() - t1)
            b = batches[0]
            rows.append(
                {
                    "grid_h": q,
                    "model": name,
                    "decoder": decoder,
                    "T_union": len(b.times),
                    "L_max": int(b.mask.amax(-1).sum(1).max()),
                    "fwd_s": round(statistics.median(fwd), 3),
                    "bwd_s": round(statistics.median(bwd), 3),
                    "step_s": round(statistics.median([f + g for f, g in zip(fwd, bwd)]), 3),
                }
            )
            print(rows[-1], flush=True)
    report(rows, COLS, a.out)
    return rows


if __name__ == "__main__":
    main()
