"""Small statistics used to report results honestly: bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd


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
    ranks_x = pd.Series(list(x), dtype=float).rank()
    ranks_y = pd.Series(list(y), dtype=float).rank()
    if ranks_x.nunique() < 2 or ranks_y.nunique() < 2:
        return float("nan")  # a constant has no ranking
    return float(ranks_x.corr(ranks_y))


def win_rate(scores, baseline_scores) -> float:
    """Share of paired items where ``scores`` beats ``baseline_scores``; a tie counts as half a win."""
    return float(win_outcomes(scores, baseline_scores).mean())


def win_outcomes(scores, baseline_scores) -> np.ndarray:
    """Per pair: 1 where ``scores`` beats ``baseline_scores``, 0.5 for a tie, 0 for a loss (NaN loses). -> (n,)"""
    pairs = np.asarray(list(zip(scores, baseline_scores, strict=True)), dtype=float)  # (n, 2)
    if pairs.size == 0:
        raise ValueError("win_rate needs at least one pair of scores")
    return np.where(pairs[:, 0] > pairs[:, 1], 1.0, np.where(pairs[:, 0] == pairs[:, 1], 0.5, 0.0))


def paired_comparison(scores, baseline_scores, confidence: float = 0.95, n_resamples: int = 2000,
                      seed: int = 0) -> dict[str, float]:
    """A contender against a baseline on the same prompts, one answer each, with paired bootstrap intervals.

    ``gain`` is the mean of the per-prompt differences ``scores[i] - baseline_scores[i]`` and
    ``win_rate`` the mean of the per-prompt outcomes (1 win, 0.5 tie, 0 loss; ``win_rate``).
    Both intervals resample prompts, so each prompt's difficulty stays on both sides of its
    pair: when prompts vary more than contenders do, the interval of the gain is narrower than
    one for the difference of two independent means. Keys: ``gain``, ``gain_ci95_low``,
    ``gain_ci95_high``, ``win_rate``, ``win_ci95_low``, ``win_ci95_high`` (the names say 95 %;
    ``confidence`` changes the level). ``grouped_comparison`` is the same with several answers per prompt.
    """
    scores, baseline_scores = list(scores), list(baseline_scores)  # read once: any iterable will do
    win_outcomes(scores, baseline_scores)  # raises on no pairs or unequal lengths
    return grouped_comparison([[s] for s in scores], [[b] for b in baseline_scores], confidence, n_resamples, seed)


def grouped_comparison(scores_by_prompt, baseline_by_prompt, confidence: float = 0.95, n_resamples: int = 2000,
                       seed: int = 0) -> dict[str, float]:
    """``paired_comparison`` with several answers per prompt on either side (as many as each has).

    For prompt i with contender scores a_i1..a_im and baseline scores b_i1..b_in:

        gain_i = mean_j a_ij - mean_k b_ik
        win_i  = (1 / (m n)) sum_j sum_k [ 1{a_ij > b_ik} + 0.5 * 1{a_ij = b_ik} ]

    ``win_i`` compares every contender answer with every baseline answer to the same prompt: it
    estimates the same quantity as one answer each (the chance that a contender's answer beats the
    baseline's), with less noise. ``gain`` and ``win_rate`` are the means over prompts, and their
    bootstrap intervals resample prompts (each with all its answers), so the sampling noise of the
    answers, and how prompts differ, are both in the interval. More answers per prompt shrink the first.
    """
    contender = [np.asarray(list(a), dtype=float) for a in scores_by_prompt]  # per prompt: (m_i,)
    baseline = [np.asarray(list(b), dtype=float) for b in baseline_by_prompt]  # per prompt: (n_i,)
    if len(contender) != len(baseline):
        raise ValueError(f"grouped_comparison: {len(contender)} prompts against {len(baseline)}; "
                         "both sides need the same prompts, in the same order")
    if not contender or any(a.size == 0 for a in contender) or any(b.size == 0 for b in baseline):
        raise ValueError("grouped_comparison needs at least one pair: every prompt needs an answer on both sides")
    gains = np.array([a.mean() - b.mean() for a, b in zip(contender, baseline)])  # (prompts,)
    wins = np.array([np.where(a[:, None] > b[None, :], 1.0, np.where(a[:, None] == b[None, :], 0.5, 0.0)).mean()
                     for a, b in zip(contender, baseline)])  # (prompts,): NaN loses, as in win_outcomes
    gain = bootstrap_mean_ci(gains, confidence, n_resamples, seed)
    win = bootstrap_mean_ci(wins, confidence, n_resamples, seed)
    return {"gain": gain[0], "gain_ci95_low": gain[1], "gain_ci95_high": gain[2],
            "win_rate": win[0], "win_ci95_low": win[1], "win_ci95_high": win[2]}


def gain_interval_by_answers(scores_by_prompt, baseline_by_prompt, answers=(1, 2, 4, 8),
                             confidence_z: float = 1.96) -> dict[int, float]:
    """What more answers per prompt would buy: the expected half-width of the gain's interval with k answers
    per prompt on each side, for each k in ``answers``, from the variance components of the answers in hand.

    With m answers per prompt the per-prompt gain d_i = mean(a_i) - mean(b_i) has variance
    ``s2_prompt + (w2_a + w2_b) / m``: the spread of the prompts' true gains plus the sampling noise of
    the answers (``w2``: the mean within-prompt variance of each side, unbiased). ``s2_prompt`` is the
    observed variance of d_i less that noise at the m in hand (at least 0). The half-width with k
    answers is ``z * sqrt((s2_prompt + (w2_a + w2_b) / k) / prompts)``: the normal approximation of the
    bootstrap interval ``grouped_comparison`` gives. Needs at least two answers per prompt on each side.
    """
    contender = [np.asarray(list(a), dtype=float) for a in scores_by_prompt]
    baseline = [np.asarray(list(b), dtype=float) for b in baseline_by_prompt]
    if len(contender) != len(baseline) or len(contender) < 2:
        raise ValueError("gain_interval_by_answers: both sides need the same prompts, at least two")
    if any(a.size < 2 for a in contender) or any(b.size < 2 for b in baseline):
        raise ValueError("gain_interval_by_answers needs at least two answers per prompt on each side "
                         "(one answer cannot tell prompt spread from sampling noise)")
    m = np.mean([min(a.size, b.size) for a, b in zip(contender, baseline)])
    noise = np.mean([a.var(ddof=1) for a in contender]) + np.mean([b.var(ddof=1) for b in baseline])
    gains = np.array([a.mean() - b.mean() for a, b in zip(contender, baseline)])
    spread = max(float(gains.var(ddof=1)) - noise / m, 0.0)
    return {k: float(confidence_z * np.sqrt((spread + noise / k) / len(gains))) for k in answers}


def within_prompt_spearman(prompt_ids, x, y) -> float:
    """The mean, over prompts, of the Spearman correlation of ``x`` and ``y`` among that prompt's answers.

    A Bradley-Terry reward model sees only differences r(x, y_w) - r(x, y_l) between answers
    to the same prompt, so adding any constant c(x) to all of a prompt's rewards leaves its
    loss unchanged: the reward is identified within a prompt, not across prompts. The plain
    (pooled) Spearman also asks the model to rank answers to *different* prompts against each
    other; this one asks only what the loss can teach. Prompts where either score is constant
    (fewer than two distinct values) have no ranking and are left out; NaN if none is left.
    """
    table = pd.DataFrame({"prompt": list(prompt_ids), "x": list(x), "y": list(y)})
    per_prompt = [spearman(group["x"], group["y"]) for _, group in table.groupby("prompt", sort=False)]
    per_prompt = [rho for rho in per_prompt if rho == rho]  # drop NaN
    return float(sum(per_prompt) / len(per_prompt)) if per_prompt else float("nan")


def within_prompt_agreement(prompt_ids, gold, reward, min_gap: float = 0.0) -> tuple[float, int]:
    """(share, n): over every pair of answers to the same prompt whose ``gold`` scores differ, by at
    least ``min_gap`` (notebook 03's tie rule, with the same 1e-9 float tolerance), the share that
    ``reward`` orders the same way (a reward tie counts as wrong), and the number of such pairs.
    This is pairwise accuracy on every comparison a labeler could make, not only those sampled
    for training.
    """
    table = pd.DataFrame({"prompt": list(prompt_ids), "gold": list(gold), "reward": list(reward)})
    right = total = 0
    for _, group in table.groupby("prompt", sort=False):
        g, r = group["gold"].to_numpy(dtype=float), group["reward"].to_numpy(dtype=float)
        gold_diff = g[:, None] - g[None, :]  # (k, k): row answer minus column answer
        reward_diff = r[:, None] - r[None, :]
        counted = (gold_diff > 0) & (gold_diff >= min_gap - 1e-9)  # each pair once, higher gold first
        right += int((reward_diff[counted] > 0).sum())
        total += int(counted.sum())
    if total == 0:
        return float("nan"), 0
    return right / total, total


def within_prompt_slope(prompt_ids, y, x, controls=()) -> float:
    """The least-squares slope of ``y`` on ``x`` within prompts, holding ``controls`` fixed.

    Every variable has its prompt's mean taken off first (a fixed effect per prompt: a
    Bradley-Terry reward is identified only within a prompt, and a leave-one-out baseline
    compares only a prompt's own answers), then ``y`` is regressed on ``x`` and the controls
    with no intercept. With ``y`` the reward, ``x`` the answer's length and the gold score as
    control, the slope is the reward per token that the labeler's score does not explain: the
    reward model's own taste in length. A control that never varies within a prompt explains
    nothing there and is left out; NaN when ``x`` does not vary within any prompt once the
    controls are held fixed. ValueError for a value that is not a finite number.
    """
    columns = {"y": list(y), "x": list(x)} | {f"c{i}": list(c) for i, c in enumerate(controls)}
    table = pd.DataFrame(columns, dtype=float)
    if not np.isfinite(table.to_numpy()).all():
        raise ValueError("within_prompt_slope: every value must be a finite number")
    centred = table - table.groupby(list(prompt_ids), sort=False).transform("mean")
    varies = [name for name in centred.columns[2:] if np.abs(centred[name]).max() > 1e-12]
    design = centred[["x", *varies]].to_numpy()  # (answers, 1 + controls that vary within a prompt)
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return float("nan")
    coefficients, *_ = np.linalg.lstsq(design, centred["y"].to_numpy(), rcond=None)
    return float(coefficients[0])
