"""PhysioNet 2012 mortality for the PyPOTS peers: the zoo's patients, split and normalization,
on 48 hourly steps (PyPOTS's models take regular steps with NaN where nothing was observed).

Run in the zoo's environment (it reads the data as ``zoo.data.PhysioNet2012DataModule`` does):

    ZOO_DATA_DIR=../shared/data python recipes/latent_ode/peers/export_hourly.py physionet_hourly.npz

The patients and the split are the data module's (8,000 patients of set-a and set-b, sorted by
record id, the seed-42 80/20 permutation; ``--val-patients 640`` holds out the same 640 training
patients as the zoo's mortality recipes, ``PhysioNet2012DataModule(val_patients=640)``); the values are normalized exactly as the zoo's models
see them (the reference's ``(x - min) / max`` over all records, on the 1-minute grid), then
averaged within each hour ``[h, h+1)`` (the 48th hour also takes t = 48 h). Labels: in-hospital
death from Outcomes-a/b.txt.
"""

from __future__ import annotations

import argparse

import numpy as np


def hourly(records, vmin, vscale, hours: int = 48) -> np.ndarray:
    """``(N, hours, D)`` hourly means of the normalized observed values, NaN where none."""
    D = len(vmin)
    out = np.full((len(records), hours, D), np.nan, dtype=np.float32)
    for i, r in enumerate(records):
        h = np.minimum(np.floor(r.times).astype(int), hours - 1)
        v = (r.values - vmin) / vscale
        s = np.zeros((hours, D))
        c = np.zeros((hours, D))
        np.add.at(s, h, v * r.mask)
        np.add.at(c, h, r.mask)
        out[i] = np.where(c > 0, s / np.maximum(c, 1), np.nan)
    return out


def main(argv=None) -> None:
    from zoo.data import PhysioNet2012DataModule

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the .npz to write")
    p.add_argument(
        "--val-patients", type=int, default=640,
        help="training patients held out for validation, as the zoo's mortality recipes (0: none)",
    )  # fmt: skip
    a = p.parse_args(argv)
    dm = PhysioNet2012DataModule(quantization=0.016, val_patients=a.val_patients)
    dm.setup()
    splits = ("train", "val", "test") if a.val_patients else ("train", "test")
    arrays = {}
    for split in splits:
        recs = dm.splits[split]
        arrays[f"X_{split}"] = hourly(recs, dm.vmin, dm.vscale)
        arrays[f"y_{split}"] = np.array([r.label for r in recs], dtype=np.float32)
        arrays[f"ids_{split}"] = np.array([r.record_id for r in recs])
    np.savez_compressed(a.out, **arrays)
    for split in splits:
        y = arrays[f"y_{split}"]
        print(
            f"{split}: {len(y)} patients, {int(np.nansum(y))} deaths, "
            f"{np.isnan(arrays[f'X_{split}']).mean():.1%} of hourly cells missing"
        )


if __name__ == "__main__":
    main()
