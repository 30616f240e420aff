"""The zoo's mortality checkpoints and PyPOTS's peers on the same 1,600 test patients: each
AUROC's 95% interval and DeLong's paired test of every zoo checkpoint against every peer.

Run in the zoo's environment after ``pypots_mortality.py --predictions`` (``run.sh`` runs the
three steps):

    ZOO_DATA_DIR=../shared/data python recipes/latent_ode/peers/compare.py \
        runs/peers/peer_predictions.csv \
        --peers bench/results/peers/time-series-classification.physionet2012.json

Each zoo checkpoint is scored by ``zoo eval NAME --predictions`` (its card's protocol and grid);
patients are matched by record id. Writes every model's test probabilities beside the peers'
file (``...physionet2012.predictions.csv``: ``id``, ``label``, one column per model) and adds to
each peer's row its AUROC interval (``auroc_low``, ``auroc_high``) and ``paired``: for each zoo
checkpoint, the difference ours − theirs, its 95% interval and two-sided p-value. The
leaderboard renders both; ``tests/test_peers.py`` checks them against the predictions file.
With ``--intervals-only`` (peers scored on BenchPOTS's split, not the zoo's) no checkpoint is
scored and ``paired`` is empty.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np

TASK, DATASET = "time-series-classification", "physionet2012"


def read_columns(path) -> dict[str, np.ndarray]:
    """A predictions CSV as columns: ``id`` and ``label`` as integers, the rest as floats."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head, body = rows[0], rows[1:]
    cols = {k: [r[i] for r in body] for i, k in enumerate(head)}
    return {
        k: np.array(v, dtype=np.int64 if k in ("id", "label") else np.float64)
        for k, v in cols.items()
    }


def paired_rows(columns: dict[str, np.ndarray], ours: list[str], peer: str) -> list[dict]:
    """DeLong's paired test of each of ``ours`` against ``peer`` (difference = ours − peer)."""
    from zoo.tasks.roc import compare_auroc

    out = []
    for name in ours:
        c = compare_auroc(columns[name], columns[peer], columns["label"])
        out.append({
            "checkpoint": name, "difference": round(c.difference, 4), "low": round(c.low, 4),
            "high": round(c.high, 4), "p_value": float(f"{c.p_value:.3g}"),
        })  # fmt: skip
    return out


def annotate(peers: list[dict], columns: dict[str, np.ndarray], ours: list[str]) -> list[dict]:
    """Each peer's row with its AUROC interval and its paired tests against ``ours``."""
    from zoo.tasks.roc import auroc_interval

    out = []
    for row in peers:
        r = auroc_interval(columns[row["model"]], columns["label"])
        out.append({
            **row, "auroc_low": round(r.low, 4), "auroc_high": round(r.high, 4),
            "paired": paired_rows(columns, ours, row["model"]),
        })  # fmt: skip
    return out


def checkpoints() -> list[str]:
    from zoo.models import list_pretrained, model_info

    return [
        n
        for n in list_pretrained()
        if model_info(n).get("task") == TASK and model_info(n).get("dataset") == DATASET
    ]


def main(argv=None) -> None:
    from zoo.evaluate import evaluate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("peer_predictions", help="the CSV from pypots_mortality.py --predictions")
    p.add_argument("--peers", required=True, help="the peers' JSON, annotated in place")
    p.add_argument(
        "--intervals-only", action="store_true",
        help="the peers were scored on another split than the zoo's checkpoints (BenchPOTS's): "
        "add each AUROC's interval, and no paired test",
    )  # fmt: skip
    a = p.parse_args(argv)
    columns = read_columns(a.peer_predictions)
    at = {int(i): k for k, i in enumerate(columns["id"])}
    ours = [] if a.intervals_only else checkpoints()
    with tempfile.TemporaryDirectory() as tmp:
        for name in ours:
            evaluate(name, predictions=f"{tmp}/{name}.csv")
            theirs = read_columns(f"{tmp}/{name}.csv")
            if sorted(theirs["id"].tolist()) != sorted(at):
                raise SystemExit(f"{name} was scored on other patients than the peers")
            prob = np.empty(len(at))
            for i, lab, pr in zip(theirs["id"], theirs["label"], theirs["probability"]):
                if columns["label"][at[int(i)]] != lab:
                    raise SystemExit(f"record {i}: {name}'s label differs from the peers'")
                prob[at[int(i)]] = pr
            columns[name] = prob
    # ours first, then the peers, in the CSV as in the leaderboard
    first = ["id", "label", *ours]
    columns = {k: columns[k] for k in [*first, *(k for k in columns if k not in first)]}
    peers_path = Path(a.peers)
    peers = annotate(json.loads(peers_path.read_text()), columns, ours)
    peers_path.write_text(json.dumps(peers, indent=1) + "\n")
    out = peers_path.with_name(peers_path.name.replace(".json", ".predictions.csv"))
    names = [k for k in columns if k not in ("id", "label")]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", *names])
        for i in range(len(columns["id"])):
            w.writerow([columns["id"][i], columns["label"][i]]
                       + [f"{columns[k][i]:.7g}" for k in names])  # fmt: skip
    print(f"wrote {peers_path} and {out}")
    for row in peers:
        print(f"{row['model']}: AUROC {row['auroc']} ({row['auroc_low']}-{row['auroc_high']})")
        for c in row["paired"]:
            print(f"  {c['checkpoint']} - {row['model']}: {c['difference']:+.4f} "
                  f"({c['low']:+.4f} to {c['high']:+.4f}), p = {c['p_value']:.3g}")  # fmt: skip


if __name__ == "__main__":
    main()
