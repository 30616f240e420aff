"""Per-series classification of irregular series (PhysioNet 2012 in-hospital mortality): the
label heads, the task's joint loss, and AUROC/AUPRC against brute-force definitions."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from zoo.data import IrregularBatch
from zoo.models.latent_ode import LatentODE
from zoo.models.ode_rnn import GRUD, ODERNN, RNNVAE, GRUDeltaT
from zoo.tasks import TimeSeries
from zoo.tasks.time_series import LabelMetrics

D = torch.float64
PEER_PREDICTIONS = (
    Path(__file__).resolve().parents[1]
    / "bench/results/peers/time-series-classification.physionet2012.predictions.csv"
)
SMALL = {"input_dim": 3, "rec_dims": 6, "units": 8}


def _batch(B=6, T=7, seed=0, labels=None):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(B, T, 3, generator=g) < 0.6).float()
    mask[:, 0, 0] = 1
    values = torch.randn(B, T, 3, generator=g) * mask
    if labels is None:
        labels = torch.tensor([1.0, 0.0, float("nan"), 0.0, 1.0, 0.0])[:B]
    return IrregularBatch(torch.linspace(0, 1, T), values, mask, labels)


def _auroc_pairs(p, y):
    """Mann-Whitney: the fraction of (positive, negative) pairs ranked right, ties as 1/2."""
    pos, neg = p[y == 1], p[y == 0]
    s = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return s / (len(pos) * len(neg))


def _average_precision(p, y):
    """The mean, over the positives, of the precision among the series ranked at or above it."""
    order = sorted(range(len(p)), key=lambda i: -float(p[i]))
    hits, precisions = 0, []
    for rank, i in enumerate(order, 1):
        if y[i] == 1:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / len(precisions)


def test_auroc_and_auprc_equal_their_definitions_accumulated_over_batches():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(97, generator=g, dtype=D)
    y = (torch.rand(97, generator=g) < 0.2).to(D)
    m = LabelMetrics()
    for chunk in torch.arange(97).split(20):  # batches of a split
        m.update(p[chunk], y[chunk])
    got = m.compute()
    assert abs(float(got["auroc"]) - _auroc_pairs(p, y)) < 1e-6
    assert abs(float(got["auprc"]) - _average_precision(p, y)) < 1e-6


@pytest.mark.parametrize(
    "make",
    [
        lambda: ODERNN(**SMALL, classifier=True),
        lambda: GRUDeltaT(**SMALL, classifier=True),
        lambda: GRUD(**SMALL, classifier=True),
        lambda: LatentODE(**SMALL, latent_dim=4, classifier=True),
    ],
    ids=["ode_rnn", "gru_delta_t", "gru_d", "latent_ode"],
)
def test_label_heads_give_one_probability_per_series_from_that_series_alone(make):
    torch.manual_seed(0)
    model = make().eval()
    b = _batch()
    p = model.predict_proba(b.times, b.values, b.mask)
    assert p.shape == (6,) and bool(((p > 0) & (p < 1)).all())
    alone = model.predict_proba(b.times, b.values[2:3], b.mask[2:3])  # batch-independent
    torch.testing.assert_close(alone, p[2:3], rtol=1e-5, atol=1e-6)


def test_a_model_without_a_head_says_how_to_get_one():
    b = _batch()
    for model in (ODERNN(**SMALL), RNNVAE(input_dim=3, latent_dim=4, rec_dims=6, units=8)):
        with pytest.raises(ValueError, match="classifier=True"):
            model.predict_proba(b.times, b.values, b.mask)
    with pytest.raises(ValueError, match="classifier: true"):
        TimeSeries(arch="ode_rnn", model_args=SMALL, classif_weight=100.0)
    with pytest.raises(ValueError, match="classif_weight"):
        TimeSeries(arch="ode_rnn", model_args={**SMALL, "classifier": True}, classif_weight=-1.0)


def test_the_task_adds_the_weighted_cross_entropy_of_the_labelled_series():
    torch.manual_seed(0)
    args = {**SMALL, "classifier": True}
    b = _batch()
    losses = {}
    for w in (0.0, 100.0):
        task = TimeSeries(arch="ode_rnn", model_args=args, classif_weight=w)
        task.log = lambda *a, **k: None
        torch.manual_seed(1)
        task.model.load_state_dict(TimeSeries(arch="ode_rnn", model_args=args).model.state_dict())
        losses[w] = task._common_step(b, "val")
        out = task.model.reconstruct(b.times, b.values, b.mask, b.mask)
    known = ~torch.isnan(b.labels)
    prob, y = torch.sigmoid(out["logits"][known]), b.labels[known]
    bce = -(y * prob.log() + (1 - y) * (1 - prob).log()).mean()  # independent of torch's BCE
    torch.testing.assert_close(losses[100.0] - losses[0.0], 100 * bce, rtol=1e-5, atol=1e-6)


def test_a_training_step_reaches_the_head_and_validation_logs_auroc():
    torch.manual_seed(0)
    task = TimeSeries(arch="latent_ode", model_args={**SMALL, "latent_dim": 4, "classifier": True},
                      classif_weight=100.0)  # fmt: skip
    logged = {}
    task.log = lambda k, v, **kw: logged.__setitem__(k, v)
    task.log_dict = lambda d, **kw: logged.update(d)
    b = _batch()
    task._common_step(b, "train").backward()
    head = task.model.label_head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    task._common_step(b, "val")
    task.on_validation_epoch_end()
    assert (
        0.0 <= float(logged["val/auroc"]) <= 1.0 and "val/auprc" in logged and "val/bce" in logged
    )


def test_the_classification_spec_scores_every_labelled_series():
    from types import SimpleNamespace

    from zoo.evaluate import _Clock
    from zoo.tasks import get_task

    torch.manual_seed(0)
    model = ODERNN(**SMALL, classifier=True).eval()
    batches = [_batch(seed=s) for s in range(3)]
    protocol = SimpleNamespace(options={"mode": "interpolation", "cond_frac": 1.0})
    spec = get_task("time-series-classification")
    res = spec.evaluate(model, batches, protocol, torch.device("cpu"), _Clock(torch.device("cpu")))
    probs = torch.cat([model.predict_proba(b.times, b.values, b.mask) for b in batches])
    labels = torch.cat([b.labels for b in batches])
    known = ~torch.isnan(labels)
    assert res.num_samples == int(known.sum()) == 15
    assert abs(res.metrics["auroc"] - _auroc_pairs(probs[known], labels[known])) < 1e-3
    assert abs(res.metrics["auprc"] - _average_precision(probs[known], labels[known])) < 1e-3
    assert "mse" in res.metrics
    # each labelled series kept: its position (these batches carry no record ids), label and
    # probability, in order; and the AUROC's DeLong interval around it
    kept = res.predictions
    assert kept["id"] == [i for i, k in enumerate(known.tolist()) if k]
    assert kept["label"] == labels[known].int().tolist()
    assert torch.allclose(torch.tensor(kept["probability"]), probs[known].float(), atol=1e-6)
    assert res.metrics["auroc_low"] <= res.metrics["auroc"] <= res.metrics["auroc_high"]


def test_eval_writes_each_series_prediction_with_its_record_id(tmp_path):
    import csv

    from zoo.evaluate import evaluate
    from zoo.tasks.roc import auroc_interval

    out = tmp_path / "p.csv"
    res = evaluate("gru_delta_t.physionet_mortality", sample=True, predictions=str(out))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == res["num_samples"] and set(rows[0]) == {"id", "label", "probability"}
    y = [int(r["label"]) for r in rows]
    p = [float(r["probability"]) for r in rows]
    ci = auroc_interval(p, y)
    assert abs(ci.auroc - res["metrics"]["auroc"]) < 1e-3
    assert abs(ci.low - res["metrics"]["auroc_low"]) < 1e-3
    # the shipped sample keeps its patients' record ids: each row is the same patient's
    # probability in the full test run (the committed peers' file), batched otherwise
    full = {
        int(r["id"]): (int(r["label"]), float(r["gru_delta_t.physionet_mortality"]))
        for r in csv.DictReader(PEER_PREDICTIONS.open())
    }
    for r in rows:
        label, prob = full[int(r["id"])]
        assert int(r["label"]) == label and abs(float(r["probability"]) - prob) < 1e-5, r
    # a limit keeps the ids of the series it keeps; with one death among them the AUROC has
    # no interval (DeLong's needs two of each class), and with none it is undefined
    few = evaluate("gru_delta_t.physionet_mortality", sample=True, limit=7, predictions=str(out))
    assert [r["id"] for r in csv.DictReader(out.open())] == [r["id"] for r in rows[:7]]
    assert sum(int(r["label"]) for r in rows[:7]) == 1 and "auroc_low" not in few["metrics"]
    assert 0 <= few["metrics"]["auroc"] <= 1
    none = evaluate("gru_delta_t.physionet_mortality", sample=True, limit=3)
    assert sum(int(r["label"]) for r in rows[:3]) == 0 and math.isnan(none["metrics"]["auroc"])


def test_batches_of_records_carry_their_record_ids():
    import numpy as np

    from zoo.data.physionet import Record, collate_irregular

    recs = [
        Record(140001 + i, np.array([0.0, 1.0 + i]), np.ones((2, 2)), np.ones((2, 2)), float(i % 2))
        for i in range(3)
    ]
    b = collate_irregular(recs, np.zeros(2), np.ones(2))
    assert b.ids.tolist() == [140001, 140002, 140003]
    assert b.to("cpu").ids.tolist() == [140001, 140002, 140003]


def test_predictions_are_refused_before_any_work_for_a_task_that_keeps_none(tmp_path):
    from zoo.evaluate import evaluate
    from zoo.models import list_pretrained, model_info

    other = next(n for n in list_pretrained() if model_info(n).get("task") == "time-series")
    with pytest.raises(ValueError, match="keeps no per-example predictions"):
        evaluate(other, sample=True, predictions=str(tmp_path / "p.csv"))
    assert not (tmp_path / "p.csv").exists()
