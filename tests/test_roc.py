"""DeLong's AUROC variance against the pairwise definition, computed by brute force in float64,
and against the spread of AUROCs over many independent draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from zoo.tasks.roc import auroc_interval, compare_auroc, delong


def _pairwise(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong 1988 from its definition: psi(x, y) = 1, 1/2, 0 over every positive-negative pair."""
    aucs, v10s, v01s = [], [], []
    for s in scores:
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        aucs.append(psi.mean())
        v10s.append(psi.mean(1))
        v01s.append(psi.mean(0))
    v10, v01 = np.array(v10s), np.array(v01s)
    m, n = v10.shape[1], v01.shape[1]
    cov = (v10 - v10.mean(1, keepdims=True)) @ (v10 - v10.mean(1, keepdims=True)).T / (m - 1) / m
    cov += (v01 - v01.mean(1, keepdims=True)) @ (v01 - v01.mean(1, keepdims=True)).T / (n - 1) / n
    return np.array(aucs), cov


@pytest.mark.parametrize("ties", [False, True])
def test_midrank_delong_equals_the_pairwise_definition(ties):
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.2).astype(int)
    a = rng.normal(size=300) + 1.2 * y
    b = 0.6 * a + rng.normal(size=300)  # correlated with a, as two models of one task are
    c = rng.normal(size=300)
    scores = np.stack([a, b, c])
    if ties:
        scores = np.round(scores * 2) / 2  # many tied scores, across and within classes
    auc, cov = delong(scores, y)
    ref_auc, ref_cov = _pairwise(scores, y)
    np.testing.assert_allclose(auc, ref_auc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-10, atol=1e-15)
    assert abs(cov[0, 1]) > 0.3 * math.sqrt(cov[0, 0] * cov[1, 1])  # the pairing matters
    t = binary_auroc(torch.tensor(scores[1]), torch.tensor(y))
    assert abs(float(t) - auc[1]) < 1e-6  # and the AUROC is torchmetrics'


def test_delong_standard_error_matches_the_spread_over_independent_draws():
    rng = np.random.default_rng(0)
    m, n, draws = 40, 160, 3000
    aucs, ses = [], []
    for _ in range(draws):
        y = np.r_[np.ones(m, int), np.zeros(n, int)]
        s = rng.normal(size=m + n) + 1.0 * y
        r = auroc_interval(s, y)
        aucs.append(r.auroc)
        ses.append(r.se)
    # the mean estimated variance against the observed variance of the AUROC (within 10%)
    assert np.mean(np.square(ses)) == pytest.approx(np.var(aucs, ddof=1), rel=0.1)
    # the binormal AUROC, Phi(1 / sqrt(2)), is inside about 95% of the intervals
    true = 0.5 * math.erfc(-1 / math.sqrt(2) / math.sqrt(2))
    cover = np.mean([abs(a - true) <= 1.959964 * s for a, s in zip(aucs, ses)])
    assert 0.93 < cover < 0.97


def test_interval_level_and_paired_test():
    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.15).astype(int)
    a = rng.normal(size=500) + 1.5 * y
    b = a + 0.8 * rng.normal(size=500)
    r95, r68 = auroc_interval(a, y), auroc_interval(a, y, level=0.6827)
    assert r95.high - r95.auroc == pytest.approx(1.959964 * r95.se, rel=1e-5)
    assert r68.high - r68.auroc == pytest.approx(1.0 * r68.se, rel=1e-3)
    c = compare_auroc(a, b, y)
    auc, cov = delong(np.stack([a, b]), y)
    assert c.difference == pytest.approx(auc[0] - auc[1], abs=1e-15)
    se = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert c.se == pytest.approx(se, rel=1e-12)
    assert c.p_value == pytest.approx(math.erfc(abs(c.difference) / se / math.sqrt(2)), rel=1e-12)
    same = compare_auroc(a, a, y)
    assert same.difference == 0 and same.p_value == 1.0


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        (np.ones(5), np.array([1, 0, 0, 1, 0]), None),
        (np.arange(4.0), np.array([1, 0, 0, 0]), "two of each"),
        (np.arange(4.0), np.array([1, 0, 2, 1]), "0 or 1"),
        (np.arange(3.0), np.array([1, 0, 0, 1]), "one per example"),
        (np.array([0.1, np.nan, 0.3, 0.2]), np.array([1, 0, 0, 1]), "finite"),
    ],
)
def test_bad_inputs_are_refused_with_the_reason(scores, labels, match):
    if match is None:  # constant scores are fine: AUROC 1/2, variance 0
        r = auroc_interval(scores, labels)
        assert r.auroc == 0.5 and r.se == 0.0
        return
    with pytest.raises(ValueError, match=match):
        auroc_interval(scores, labels)
    with pytest.raises(ValueError):
        auroc_interval(np.arange(4.0), np.array([1, 0, 0, 1]), level=1.5)


@pytest.mark.parametrize(
    "p, text", [(0.0, "< 0.001"), (0.000999, "< 0.001"), (0.001, "0.001"), (0.2716, "0.272")]
)
def test_p_values_print_below_a_thousandth_as_a_bound(p, text):
    from zoo.tasks.roc import format_p

    assert format_p(p) == text
