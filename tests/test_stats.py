"""Reporting statistics on literal inputs: within-prompt rank correlation and pairwise agreement."""

from __future__ import annotations

import math

import pytest

from helpers.stats import paired_comparison, spearman, win_rate, within_prompt_agreement, within_prompt_spearman


def test_within_prompt_spearman_ignores_each_prompts_offset():
    prompts = ["a"] * 3 + ["b"] * 3
    gold = [0.0, 0.5, 1.0, 0.0, 0.2, 0.4]
    reward = [10.0, 11.0, 12.0, -5.0, -4.0, -3.0]  # right order inside each prompt, wrong offsets across
    assert within_prompt_spearman(prompts, reward, gold) == pytest.approx(1.0)
    assert spearman(reward, gold) < 0.9  # pooled ranks are hurt by the offsets


def test_within_prompt_spearman_averages_prompts_and_skips_constant_ones():
    prompts = ["a"] * 3 + ["b"] * 3 + ["c"] * 2 + ["d"]
    gold = [0.0, 0.5, 1.0, 0.0, 1.0, 2.0, 0.3, 0.3, 0.9]  # c: gold constant; d: one answer
    reward = [1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 5.0, 1.0, 0.0]  # a: +1, b: -1
    assert within_prompt_spearman(prompts, reward, gold) == pytest.approx(0.0)
    assert math.isnan(within_prompt_spearman(["c", "c"], [1.0, 2.0], [0.3, 0.3]))


def test_within_prompt_agreement_counts_each_pair_once_and_respects_the_gap():
    prompts = ["a"] * 3 + ["b"] * 2
    gold = [0.0, 0.5, 1.0, 0.0, 0.05]
    reward = [1.0, 3.0, 2.0, 5.0, 4.0]
    # a: (0.5 > 0) right, (1 > 0) right, (1 > 0.5) wrong; b: (0.05 > 0) wrong
    assert within_prompt_agreement(prompts, gold, reward) == (pytest.approx(2 / 4), 4)
    assert within_prompt_agreement(prompts, gold, reward, min_gap=0.1) == (pytest.approx(2 / 3), 3)
    assert within_prompt_agreement(prompts, gold, reward, min_gap=0.5) == (pytest.approx(2 / 3), 3)  # 0.5 counts
    assert within_prompt_agreement(["a", "a"], [0.5, 0.6], [0.0, 1.0], min_gap=0.1) == (1.0, 1)  # 0.0999... in floats


def test_within_prompt_agreement_counts_reward_ties_as_wrong_and_nan_without_pairs():
    assert within_prompt_agreement(["a", "a"], [0.0, 1.0], [2.0, 2.0]) == (0.0, 1)
    share, n = within_prompt_agreement(["a", "b"], [0.0, 1.0], [0.0, 1.0])  # no two answers share a prompt
    assert math.isnan(share) and n == 0


def test_paired_comparison_gain_and_win_rate_with_intervals():
    contender, baseline = [1.0, 0.5, 0.0, 0.8], [0.5, 0.5, 0.25, 0.4]
    result = paired_comparison(contender, baseline)
    assert result["gain"] == pytest.approx((0.5 + 0.0 - 0.25 + 0.4) / 4)
    assert result["win_rate"] == pytest.approx((1 + 0.5 + 0 + 1) / 4) == win_rate(contender, baseline)
    assert result["gain_ci95_low"] < result["gain"] < result["gain_ci95_high"]
    assert result["win_ci95_low"] < result["win_rate"] < result["win_ci95_high"]
    # a bootstrap resamples the four pairs: no interval can leave the range of what one pair gives
    assert -0.25 <= result["gain_ci95_low"] and result["gain_ci95_high"] <= 0.5
    assert 0.0 <= result["win_ci95_low"] and result["win_ci95_high"] <= 1.0


def test_paired_comparison_is_narrower_than_separate_intervals_when_prompts_vary():
    """Hard and easy prompts move both contenders alike; pairing removes that spread."""
    from helpers.stats import bootstrap_mean_ci

    difficulty = [0.0, 0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6] * 4  # (32,) per-prompt level
    baseline = difficulty
    contender = [d + 0.05 for d in difficulty]
    paired = paired_comparison(contender, baseline)
    _, low, high = bootstrap_mean_ci(contender)
    assert paired["gain"] == pytest.approx(0.05)
    assert paired["gain_ci95_low"] == pytest.approx(0.05) and paired["gain_ci95_high"] == pytest.approx(0.05)
    assert high - low > 0.1  # the contender's own interval is wide
    assert paired["win_rate"] == 1.0


def test_paired_comparison_needs_pairs():
    with pytest.raises(ValueError, match="at least one pair"):
        paired_comparison([], [])
    with pytest.raises(ValueError):
        paired_comparison([1.0, 2.0], [1.0])
