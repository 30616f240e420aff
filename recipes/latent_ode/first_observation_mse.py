"""Where the PhysioNet interpolation error sits: each variable's first observation in a series
against its later ones, for any time-series checkpoint of the zoo.

The reference metric (``mse``) averages per series and variable, so a variable measured once in
a series weighs as much as heart rate measured every hour. A model that predicts a point from
the state *before* it (ODE-RNN, the GRU-dt baseline) has never seen a variable at its first
observation; a latent ODE encodes the whole series first. This prints, per checkpoint, the MSE
over first observations, over later ones, and the share of first observations among the points
and among the reference average's (series, variable) cells.

The last column is the reference average scored as the reference code scores its ODE-RNN: there
the outputs are shifted one step and the output at the first time point is the observed value
itself (``shift_outputs(outputs, first_point)``), so the points observed at time 0 (in PhysioNet,
the values recorded on admission) count with zero error.

    python recipes/latent_ode/first_observation_mse.py ode_rnn.physionet latent_ode.physionet

Needs the PhysioNet files under ``$ZOO_DATA_DIR`` (as ``zoo card`` does). ``--limit N``
scores the first N test series only.
"""

from __future__ import annotations

import argparse

import torch


def first_observation_mask(mask: torch.Tensor) -> torch.Tensor:
    """``(B, T, D)`` 0/1 mask -> 1 where a point is its variable's first in the series."""
    seen_before = (mask.cumsum(1) - mask) > 0
    return mask * (~seen_before).to(mask.dtype)


def time_zero_given(pred: torch.Tensor, values: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """The reference ODE-RNN's outputs: ``pred`` ``(B, T, D)`` with the observed ``values`` in
    place of the prediction at time 0 (``times``: ``(T,)``)."""
    return torch.where((times == 0)[None, :, None], values, pred)


def score(name: str, limit: int | None) -> dict[str, float]:
    import zoo
    from zoo.tasks import get_task
    from zoo.tasks.time_series import MaskedMSE, eval_generator, split_masks

    model = zoo.load(name).eval()
    cfg = model.pretrained_cfg
    spec = get_task(cfg["task"])
    protocol = spec.protocol(cfg)
    opts = protocol.options
    batches = spec.eval_batches(model, protocol, "test", False, limit, None, None)
    sums = dict(first=0.0, later=0.0, n_first=0.0, n_later=0.0, cells=0.0, cells_first_only=0.0)
    plain, given = MaskedMSE(), MaskedMSE()
    with torch.no_grad():
        for b in batches:
            cond, target = split_masks(
                b.times, b.mask, opts["mode"], opts["cond_frac"],
                generator=eval_generator(b.values, b.times),
            )  # fmt: skip
            out = model.reconstruct(b.times, b.values, cond, target, n_samples=1)
            pred = out["mean"].mean(0)
            se = (pred.double() - b.values.double()) ** 2 * target
            plain.update(pred, b.values, target)
            given.update(time_zero_given(pred, b.values, b.times), b.values, target)
            first = first_observation_mask(target)
            later = target - first
            sums["first"] += float((se * first).sum())
            sums["later"] += float((se * later).sum())
            sums["n_first"] += float(first.sum())
            sums["n_later"] += float(later.sum())
            cnt = target.sum(1)  # (B, D)
            sums["cells"] += float((cnt > 0).sum())
            sums["cells_first_only"] += float((cnt == 1).sum())
    return {
        "mse": float(plain.compute()["mse"]),
        "mse_first_point_given": float(given.compute()["mse"]),
        "mse_first": sums["first"] / max(sums["n_first"], 1),
        "mse_later": sums["later"] / max(sums["n_later"], 1),
        "first_share_points": sums["n_first"] / max(sums["n_first"] + sums["n_later"], 1),
        "single_point_share_cells": sums["cells_first_only"] / max(sums["cells"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help="zoo checkpoint names, e.g. ode_rnn.physionet")
    ap.add_argument("--limit", type=int, default=None, help="score the first N test series")
    args = ap.parse_args()
    print("| checkpoint | MSE, first observations | MSE, later ones | first obs. / points | "
          "(series, variable) cells with one point | mse | mse, time 0 given |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in args.names:
        r = score(name, args.limit)
        print(
            f"| {name} | {r['mse_first']:.3e} | {r['mse_later']:.3e} | "
            f"{r['first_share_points']:.1%} | {r['single_point_share_cells']:.1%} | "
            f"{r['mse']:.3e} | {r['mse_first_point_given']:.3e} |"
        )


if __name__ == "__main__":
    main()
