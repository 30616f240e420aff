"""AUROC with its uncertainty: DeLong's variance, a confidence interval, and the paired test of
two models scored on the same examples.

DeLong, DeLong and Clarke-Pearson (1988) estimate the covariance of one or more AUROCs measured
on the same labelled examples from each example's structural component (the share of the
opposite class it is ranked above, ties counting one half). Sun and Xu (2014) compute those
components from midranks in ``O(n log n)``; that is the algorithm here. The interval is
``auroc ± z·se`` clipped to ``[0, 1]`` (what pROC's ``ci.auc(method="delong")`` reports), and
the paired test is the z-test of the difference (pROC's ``roc.test(paired=TRUE)``).

Example:
    >>> import numpy as np
    >>> y = np.array([1, 1, 1, 0, 0, 0, 0])
    >>> a = np.array([0.9, 0.8, 0.3, 0.4, 0.2, 0.1, 0.05])
    >>> r = auroc_interval(a, y)
    >>> round(r.auroc, 4), round(r.low, 3), round(r.high, 3)
    (0.9167, 0.686, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["AurocComparison", "AurocInterval", "auroc_interval", "compare_auroc", "delong"]


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of the 1-D ``x``, ties given the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    first = np.r_[True, sx[1:] != sx[:-1]]  # where each run of equal scores starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)] - 1
    ranks = np.empty(len(x))
    ranks[order] = ((starts + ends) / 2 + 1)[np.cumsum(first) - 1]
    return ranks


def _labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = np.asarray(labels).reshape(-1)
    if s.shape[1] != len(y):
        raise ValueError(f"{s.shape[1]} scores per model but {len(y)} labels: give one per example")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0 or 1 (drop unlabelled examples first)")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    pos = y == 1
    if pos.sum() < 2 or (~pos).sum() < 2:
        raise ValueError(
            f"{int(pos.sum())} positive and {int((~pos).sum())} negative examples: DeLong's "
            "variance needs at least two of each"
        )
    return s, pos


def delong(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """The AUROCs of ``K`` score vectors on the same examples and DeLong's ``(K, K)`` covariance.

    ``scores``: ``(n,)`` or ``(K, n)``, higher meaning more likely positive; ``labels``: ``(n,)``
    of 0 and 1. Returns ``(auroc (K,), covariance (K, K))``.
    """
    s, pos = _labels(scores, labels)
    x, y = s[:, pos], s[:, ~pos]  # positives, negatives
    m, n = x.shape[1], y.shape[1]
    auc = np.empty(len(s))
    v10 = np.empty((len(s), m))  # per positive: share of negatives ranked below it
    v01 = np.empty((len(s), n))  # per negative: share of positives ranked above it
    for k in range(len(s)):
        tz = _midranks(np.concatenate([x[k], y[k]]))
        tx, ty = _midranks(x[k]), _midranks(y[k])
        auc[k] = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10[k] = (tz[:m] - tx) / n
        v01[k] = 1.0 - (tz[m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, cov


def _z(level: float) -> float:
    """The two-sided standard normal quantile for ``level`` (e.g. 1.96 for 0.95)."""
    if not 0 < level < 1:
        raise ValueError(f"level={level}: give a coverage between 0 and 1, e.g. 0.95")
    return NormalDist().inv_cdf(0.5 + level / 2)


@dataclass(frozen=True)
class AurocInterval:
    """One AUROC with DeLong's standard error and the interval at ``level``."""

    auroc: float
    se: float
    low: float
    high: float
    level: float


@dataclass(frozen=True)
class AurocComparison:
    """Two AUROCs on the same examples: ``difference = a - b``, its DeLong standard error
    (which counts their correlation), its interval at ``level`` and the two-sided p-value."""

    a: float
    b: float
    difference: float
    se: float
    low: float
    high: float
    p_value: float
    level: float


def auroc_interval(scores, labels, level: float = 0.95) -> AurocInterval:
    """The AUROC of ``scores`` with DeLong's interval, clipped to ``[0, 1]``."""
    auc, cov = delong(scores, labels)
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    z = _z(level)
    a = float(auc[0])
    return AurocInterval(a, se, max(a - z * se, 0.0), min(a + z * se, 1.0), level)


def compare_auroc(scores_a, scores_b, labels, level: float = 0.95) -> AurocComparison:
    """DeLong's paired test of two models' AUROCs on the same examples (same order)."""
    auc, cov = delong(np.stack([np.asarray(scores_a), np.asarray(scores_b)]), labels)
    d = float(auc[0] - auc[1])
    se = math.sqrt(max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0))
    z = _z(level)
    p = math.erfc(abs(d) / se / math.sqrt(2)) if se > 0 else (1.0 if d == 0 else 0.0)
    return AurocComparison(float(auc[0]), float(auc[1]), d, se, d - z * se, d + z * se, p, level)


def format_p(p: float) -> str:
    """A p-value as the cards and leaderboards print it: ``< 0.001``, else three decimals."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
