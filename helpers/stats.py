"""Small statistics used to report results honestly: bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np


def bootstrap_mean_ci(values, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its percentile-bootstrap confidence interval (Efron & Tibshirani, 1993).

    Resample ``values`` with replacement ``n_resamples`` times; the interval spans the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled means.
    """
    x = np.asarray(list(values), dtype=float)  # (n,)
    if x.size == 0:
        raise ValueError("bootstrap_mean_ci: no values")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)  # (n_resamples,)
    alpha = (1.0 - confidence) / 2.0
    return float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def spearman(x, y) -> float:
    """Spearman's rank correlation: the Pearson correlation of the ranks (ties get their average rank)."""
    import pandas as pd

    ranks_x = pd.Series(list(x), dtype=float).rank()
    ranks_y = pd.Series(list(y), dtype=float).rank()
    if ranks_x.nunique() < 2 or ranks_y.nunique() < 2:
        return float("nan")  # a constant has no ranking
    return float(ranks_x.corr(ranks_y))


def win_rate(scores, baseline_scores) -> float:
    """Share of paired items where ``scores`` beats ``baseline_scores``; a tie counts as half a win."""
    pairs = list(zip(scores, baseline_scores, strict=True))
    if not pairs:
        raise ValueError("win_rate needs at least one pair of scores")
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
