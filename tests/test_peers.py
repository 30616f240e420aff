"""The PhysioNet mortality peers' file against the test probabilities it was computed from: each
AUROC, its interval and every paired test are recomputed from the committed predictions, and each
zoo checkpoint's column reproduces the AUROC on its card."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "results" / "peers" / "time-series-classification.physionet2012.json"
PREDICTIONS = PEERS.with_name(PEERS.name.replace(".json", ".predictions.csv"))


def _compare():
    path = ROOT / "recipes" / "latent_ode" / "peers" / "compare.py"
    spec = importlib.util.spec_from_file_location("peers_compare", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data():
    if not PREDICTIONS.is_file():
        pytest.fail(f"{PREDICTIONS.name} is missing: run recipes/latent_ode/peers/run.sh")
    cmp = _compare()
    return cmp, cmp.read_columns(PREDICTIONS), json.loads(PEERS.read_text())


def test_every_mortality_checkpoint_and_peer_has_a_column(data):
    cmp, columns, peers = data
    names = [k for k in columns if k not in ("id", "label")]
    assert names == cmp.checkpoints() + [p["model"] for p in peers]
    assert len(set(columns["id"].tolist())) == len(columns["id"]) == peers[0]["test_patients"]


def test_each_checkpoint_column_reproduces_its_card(data):
    from zoo.cards import shipped_row
    from zoo.tasks.roc import auroc_interval

    cmp, columns, _ = data
    for name in cmp.checkpoints():
        card = shipped_row(name)["metrics"]
        r = auroc_interval(columns[name], columns["label"])
        assert float(f"{r.auroc:.4g}") == card["auroc"], name
        assert abs(r.low - card["auroc_low"]) < 1e-4 and abs(r.high - card["auroc_high"]) < 1e-4


def test_the_peers_intervals_and_paired_tests_are_those_of_the_predictions(data):
    from zoo.tasks.roc import auroc_interval

    cmp, columns, peers = data
    for p in peers:
        r = auroc_interval(columns[p["model"]], columns["label"])
        assert round(r.auroc, 4) == p["auroc"]
        assert (round(r.low, 4), round(r.high, 4)) == (p["auroc_low"], p["auroc_high"])
        assert p["paired"] == cmp.paired_rows(columns, cmp.checkpoints(), p["model"])


def test_each_compared_checkpoint_card_carries_its_paired_tests(data):
    """The mortality cards' Compared section shows every peer run on their own test patients,
    with the paired difference from the peers' file, and nothing for a peer not compared."""
    from zoo.cards import render_card

    cmp, _, peers = data
    for name in cmp.checkpoints():
        card = render_card(name)
        for p in peers:
            c = next(c for c in p["paired"] if c["checkpoint"] == name)
            rows = [line for line in card.splitlines() if line.startswith(f"| {p['model']} (")]
            assert len(rows) == 1, (name, rows)  # not the same model run on another split
            row = rows[0]
            assert f"| {p['auroc']} |" in row and f"{c['difference']:+.4f}" in row, (name, row)
            assert f"{c['low']:+.4f} to {c['high']:+.4f}" in row, (name, row)


BENCHPOTS = PEERS.with_name(PEERS.name.replace(".json", ".benchpots-set-a.json"))


def test_peers_on_their_own_split_stand_apart_with_their_intervals():
    """BenchPOTS's split: each AUROC and interval recomputed from its predictions, no paired
    test against a checkpoint scored on other patients, and a leaderboard table of its own that
    says so, after the same-split one."""
    from zoo.docs import leaderboard_page
    from zoo.tasks.roc import auroc_interval

    if not BENCHPOTS.is_file():
        pytest.fail(f"{BENCHPOTS.name} is missing: run recipes/latent_ode/peers/run.sh --benchpots")
    peers = json.loads(BENCHPOTS.read_text())
    columns = _compare().read_columns(
        BENCHPOTS.with_name(BENCHPOTS.name.replace(".json", ".predictions.csv"))
    )
    for p in peers:
        assert p["paired"] == [] and "BenchPOTS" in p["protocol"]
        r = auroc_interval(columns[p["model"]], columns["label"])
        assert round(r.auroc, 4) == p["auroc"]
        assert (round(r.low, 4), round(r.high, 4)) == (p["auroc_low"], p["auroc_high"])
        assert len(columns["label"]) == p["test_patients"]
    page = leaderboard_page()
    same, own = (
        page.index("on the same data, split and normalization"),
        page.index(peers[0]["protocol"]),
    )
    assert same < own and "not comparable" in page[own:].split("\n\n")[0]
