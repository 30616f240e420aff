"""PyPOTS's classifiers on BenchPOTS's own PhysioNet 2012 split, reported apart from the zoo's.

Run in the peers' environment (``run.sh --benchpots`` makes it and runs this, then the interval
step in the zoo's environment):

    python recipes/latent_ode/peers/benchpots_mortality.py ../shared/data/physionet-2012 \
        --out bench/results/peers/time-series-classification.physionet2012.benchpots-set-a.json

BenchPOTS (``benchpots.datasets.preprocess_physionet2012``) is the pipeline PyPOTS's own
benchmarks use: 48 hourly steps (the hour of each observation truncated, several in an hour
averaged), static features dropped, a stratified 64/16/20 train/validation/test split by
``random_state``, and a ``StandardScaler`` fitted on the training patients. Its ``"all"`` subset
needs set-c, which is not in the zoo's data; ``--subset set-a`` (one of BenchPOTS's documented
subsets, the default) reads set-a alone. Its protocol differs from the zoo's (other patients,
grid, normalization and split), so its figures are never put in the same column as the zoo's.

The raw records are read by TSDB's own loader (``tsdb.loading_funcs.load_physionet2012``, which
``tsdb.load`` calls after downloading) from the local archives, never downloaded. That loader
insists on all three set folders; the two that the chosen subset does not read are given one
record each, and are removed from what it returns before BenchPOTS sees it, so they cannot reach
the split.

Each model is built, trained and scored as in ``pypots_mortality.py`` (the same sizes, epochs,
batch and seed; PyPOTS keeps the epoch with the lowest validation loss). Writes the peers' rows
(``protocol`` says which split) and, with ``--predictions``, each test patient's probabilities;
``compare.py --intervals-only`` then adds each AUROC's 95% interval.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pypots_mortality import _auprc, _auroc, fit_and_score, save  # noqa: E402

SETS = ("a", "b", "c")


def tsdb_records(data_dir: Path, subset: str) -> dict:
    """TSDB's ``physionet_2012`` dictionary, read by its own loader from the local archives,
    holding only ``subset`` (``"set-a"`` or ``"set-b"``)."""
    from tsdb.loading_funcs.physionet_2012 import load_physionet2012

    keep = subset.split("-")[1]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for s in SETS:
            archive = data_dir / f"set-{s}.tar.gz"
            if s == keep:
                with tarfile.open(archive) as tar:
                    tar.extractall(root, filter="data")
                shutil.copy(data_dir / f"Outcomes-{s}.txt", root)
            else:  # a one-record stand-in the chosen subset never reads (dropped below)
                (root / f"set-{s}").mkdir()
                src = next((root / f"set-{keep}").glob("*.txt"), None)
                if src is None:
                    raise SystemExit(f"{archive.name}: no records")
                shutil.copy(src, root / f"set-{s}" / src.name)
                rows = (data_dir / f"Outcomes-{keep}.txt").read_text().splitlines()
                record = next(r for r in rows[1:] if r.split(",")[0] == src.stem)
                (root / f"Outcomes-{s}.txt").write_text(f"{rows[0]}\n{record}\n")
        data = load_physionet2012(str(root))
    for s in SETS:
        if s != keep:
            data[f"set-{s}"] = data[f"outcomes-{s}"] = None
    return data


def benchpots_split(data_dir: Path, subset: str, seed: int) -> dict:
    """``preprocess_physionet2012(subset, rate=0, random_state=seed)`` on the local records."""
    import benchpots.datasets.physionet_2012 as bp

    records = tsdb_records(data_dir, subset)

    class _Local:  # BenchPOTS calls tsdb.load("physionet_2012"); hand it the local records
        @staticmethod
        def load(name: str) -> dict:
            assert name == "physionet_2012", name
            return records

    real, bp.tsdb = bp.tsdb, _Local
    try:
        return bp.preprocess_physionet2012(
            subset=subset, rate=0.0, random_state=seed, task_type="classification"
        )
    finally:
        bp.tsdb = real


def protocol_text(version: str, subset: str, seed: int, n_train: int, n_val: int, n_test: int):
    """The split a row was scored on, as the leaderboard states it above the row's table."""
    return (
        f"PhysioNet 2012 {subset} as BenchPOTS splits it (benchpots {version}, "
        f"preprocess_physionet2012 with random_state={seed}: {n_train:,} training, {n_val:,} "
        f"validation and {n_test:,} test patients, stratified by outcome; 48 hourly steps, "
        "standardized on the training patients)"
    )


def main(argv=None) -> list[dict]:
    import benchpots
    import pypots
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", help="the folder holding set-a.tar.gz and Outcomes-a.txt")
    p.add_argument("--subset", default="set-a", choices=["set-a", "set-b"])
    p.add_argument("--split-seed", type=int, default=42, help="BenchPOTS's random_state")
    p.add_argument("--models", nargs="+", default=["GRUD:100", "BRITS:50"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--predictions", default=None, metavar="CSV")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    d = benchpots_split(Path(a.data_dir), a.subset, a.split_seed)
    train = {"X": d["train_X"], "y": d["train_y"].astype(int)}
    val = {"X": d["val_X"], "y": d["val_y"].astype(int)}
    test = {"X": d["test_X"]}
    y = d["test_y"].astype(int)
    print(
        f"BenchPOTS {a.subset}, random_state {a.split_seed}: train {len(train['y'])} "
        f"({train['y'].sum()} deaths), validation {len(val['y'])}, test {len(y)} ({y.sum()} "
        f"deaths), {d['n_features']} features x {d['n_steps']} steps",
        flush=True,
    )
    protocol = protocol_text(
        benchpots.__version__, a.subset, a.split_seed, len(train["y"]), len(val["y"]), len(y)
    )
    rows, probs = [], {}
    for spec in a.models:
        name, _, n_epochs = spec.partition(":")
        epochs = int(n_epochs) if n_epochs else 20
        prob, seconds = fit_and_score(name, epochs, a.seed, train, val, test)
        probs[name] = prob
        rows.append({
            "model": name, "package": f"pypots {pypots.__version__}", "run_here": True,
            "protocol": protocol, "epochs": epochs, "threads": a.threads,
            "train_seconds": round(seconds, 1), "auroc": round(_auroc(prob, y), 4),
            "auprc": round(_auprc(prob, y), 4), "train_patients": int(len(train["y"])),
            "selection": f"lowest validation loss of the split's {len(val['y'])} validation "
            "patients", "test_patients": int(len(y)),
            "script": "recipes/latent_ode/peers/run.sh --benchpots",
        })  # fmt: skip
        print(rows[-1], flush=True)
    # BenchPOTS returns no record ids: a prediction's ``id`` is its position in the test set
    save(rows, a.out, probs, a.predictions, np.arange(len(y)), y)
    return rows


if __name__ == "__main__":
    main()
