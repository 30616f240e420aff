"""PyPOTS's classifiers on the zoo's PhysioNet 2012 mortality split, on a fixed CPU budget.

Run in the peers' environment (``recipes/latent_ode/peers/run.sh`` makes it and runs both
steps):

    python recipes/latent_ode/peers/pypots_mortality.py physionet_hourly.npz \
        --out bench/results/peers/time-series-classification.physionet2012.json

Each model trains for ``--epochs`` epochs on the training patients; when the data hold a validation
split (the 640 training patients the zoo's mortality recipes hold out), PyPOTS keeps the epoch
with the lowest validation loss, as the zoo's recipes keep their best validation epoch. It is
scored on all 1,600 test patients: AUROC and AUPRC of its predicted probability of in-hospital
death. The table it prints and the
JSON it writes carry PyPOTS's version and each model's wall time.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _auroc(p: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney with ties as 1/2 (rank form)."""
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sp = p[order]
    i = 0
    while i < len(p):  # average ranks over ties
        j = i
        while j + 1 < len(p) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = y == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _auprc(p: np.ndarray, y: np.ndarray) -> float:
    """Average precision: the mean precision at each positive, ranked by ``p``."""
    order = np.argsort(-p, kind="mergesort")
    hits = np.cumsum(y[order] == 1)
    prec = hits / np.arange(1, len(p) + 1)
    return float(prec[y[order] == 1].mean())


def build(name: str, n_steps: int, n_features: int, epochs: int, seed: int):
    from pypots.classification import BRITS, GRUD, Raindrop

    common = dict(n_steps=n_steps, n_features=n_features, n_classes=2, epochs=epochs,
                  batch_size=32, device="cpu")  # fmt: skip
    if name == "GRUD":
        return GRUD(rnn_hidden_size=64, **common)
    if name == "BRITS":
        return BRITS(rnn_hidden_size=64, **common)
    if name == "Raindrop":
        return Raindrop(n_layers=2, d_model=n_features * 4, n_heads=2, d_ffn=64, dropout=0.3,
                        d_static=0, **common)  # fmt: skip
    raise ValueError(f"unknown model {name!r}")


def fit_and_score(name: str, epochs: int, seed: int, train: dict, val, test: dict):
    """Build ``name``, train it (keeping the epoch of lowest validation loss when ``val`` is
    given) and return its test probabilities of the positive class and its training seconds."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    model = build(name, train["X"].shape[1], train["X"].shape[2], epochs, seed)
    t0 = time.perf_counter()
    model.fit(train, val)
    seconds = time.perf_counter() - t0
    return np.asarray(model.predict(test)["classification_proba"])[:, 1], seconds


def write_predictions(path: str, ids, labels, probs: dict[str, np.ndarray]) -> None:
    """``id,label,<model>...``: each test patient's probabilities (compare.py reads it)."""
    with open(path, "w") as f:
        f.write(",".join(["id", "label", *probs]) + "\n")
        for row in zip(ids, labels, *probs.values()):
            values = [f"{v:.7g}" for v in row[2:]]
            f.write(",".join([str(int(row[0])), str(int(row[1])), *values]) + "\n")


def save(rows: list[dict], out, probs: dict, predictions, ids, labels) -> None:
    """The peers' rows as JSON at ``out`` and their test probabilities at ``predictions``
    (either may be ``None``)."""
    import os

    if predictions:
        write_predictions(predictions, ids, labels, probs)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)


def main(argv=None) -> list[dict]:
    import pypots
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="the .npz from export_hourly.py")
    p.add_argument(
        "--models", nargs="+", default=["GRUD:100", "BRITS:50"],
        help="NAME[:EPOCHS] each (GRUD, BRITS, Raindrop); without :EPOCHS, --epochs",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument(
        "--predictions", default=None, metavar="CSV",
        help="write each test patient's record id, label and each model's probability here "
        "(compare.py reads it)",
    )  # fmt: skip
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    d = np.load(a.data)
    train = {"X": d["X_train"], "y": d["y_train"].astype(int)}
    val = {"X": d["X_val"], "y": d["y_val"].astype(int)} if "X_val" in d else None
    test = {"X": d["X_test"]}
    y = d["y_test"].astype(int)
    rows, probs = [], {}
    for spec in a.models:
        name, _, n_epochs = spec.partition(":")
        epochs = int(n_epochs) if n_epochs else a.epochs
        prob, seconds = fit_and_score(name, epochs, a.seed, train, val, test)
        probs[name] = prob
        rows.append({
            "model": name, "package": f"pypots {pypots.__version__}", "run_here": True,
            "epochs": epochs, "threads": a.threads, "train_seconds": round(seconds, 1),
            "auroc": round(_auroc(prob, y), 4), "auprc": round(_auprc(prob, y), 4),
            "train_patients": int(len(train["y"])),
            "selection": "lowest validation loss of 640 held-out training patients" if val
            else "last epoch",
            "test_patients": int(len(y)), "script": "recipes/latent_ode/peers/run.sh",
            "grid": "48 hourly steps (hourly means of the normalized values, NaN where unobserved)",
        })  # fmt: skip
        print(rows[-1], flush=True)
    print("| model | package | epochs | train seconds | AUROC | AUPRC |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['package']} | {r['epochs']} | {r['train_seconds']} | "
              f"{r['auroc']} | {r['auprc']} |")  # fmt: skip
    save(rows, a.out, probs, a.predictions, d["ids_test"], y)
    return rows


if __name__ == "__main__":
    main()
