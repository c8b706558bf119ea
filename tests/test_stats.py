"""Reporting statistics on literal inputs: within-prompt rank correlation, pairwise agreement, paired and grouped
comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers.stats import (gain_interval_by_answers, grouped_comparison, paired_comparison, spearman, win_rate,
                           within_prompt_agreement, within_prompt_slope, within_prompt_spearman)


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


def test_grouped_comparison_averages_each_prompt_then_the_prompts():
    contender = [[0.6, 0.2, 0.4], [0.1], [float("nan"), 0.9]]
    baseline = [[0.2, 0.6], [0.5, 0.5], [0.3]]
    result = grouped_comparison(contender, baseline)
    # prompt 0: 0.6 beats 0.2, ties 0.6; 0.2 ties 0.2, loses; 0.4 beats 0.2, loses -> 3/6; prompt 1: two losses;
    # prompt 2: NaN loses, 0.9 wins -> 1/2
    assert result["win_rate"] == pytest.approx((3 / 6 + 0.0 + 1 / 2) / 3)
    clean = grouped_comparison(contender[:2], baseline[:2])
    assert clean["gain"] == pytest.approx((0.0 + (0.1 - 0.5)) / 2)  # per-prompt mean differences, averaged
    assert clean["gain_ci95_low"] <= clean["gain"] <= clean["gain_ci95_high"]
    assert 0.0 <= clean["win_ci95_low"] <= clean["win_rate"] <= clean["win_ci95_high"] <= 0.5


def test_grouped_comparison_narrows_with_more_answers_per_prompt():
    """Answer-level noise dominates a one-answer comparison; averaging k answers per prompt shrinks it."""
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0.0, 1.0, 60)  # (prompts,)

    def answers(offset, k):
        return [list(d + offset + rng.normal(0.0, 0.3, k)) for d in difficulty]  # per prompt: (k,)

    one = grouped_comparison(answers(0.05, 1), answers(0.0, 1))
    eight = grouped_comparison(answers(0.05, 8), answers(0.0, 8))
    width = lambda r, key: r[f"{key}_ci95_high"] - r[f"{key}_ci95_low"]  # noqa: E731
    assert width(eight, "gain") < 0.5 * width(one, "gain")  # about 1/sqrt(8) of it
    assert width(eight, "win") < 0.6 * width(one, "win")
    assert eight["gain_ci95_low"] < 0.05 < eight["gain_ci95_high"]


def test_gain_interval_by_answers_predicts_what_more_answers_measure():
    """From 2 answers per prompt, predict the interval with 8; then draw 8 and measure it."""
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0.0, 1.0, 200)  # (prompts,)

    def answers(k):
        return [list(d + rng.normal(0.0, 0.4, k)) for d in difficulty]

    predicted = gain_interval_by_answers(answers(2), answers(2), answers=(1, 2, 8))
    assert predicted[1] > predicted[2] > predicted[8]
    assert predicted[1] / predicted[8] == pytest.approx(math.sqrt(8), rel=0.01)  # noise only: 1/sqrt(k)
    measured = grouped_comparison(answers(8), answers(8))
    half_width = (measured["gain_ci95_high"] - measured["gain_ci95_low"]) / 2
    assert half_width == pytest.approx(predicted[8], rel=0.2)
    # with a spread of true gains across prompts, more answers stop helping beyond it
    spread = [[g + e for e in rng.normal(0.0, 0.1, 2)] for g in rng.normal(0.0, 0.5, 200)]
    floor = gain_interval_by_answers(spread, [[0.0, 0.0]] * 200, answers=(4, 64))
    assert floor[64] > 0.8 * floor[4]
    with pytest.raises(ValueError, match="at least two answers per prompt"):
        gain_interval_by_answers([[1.0], [2.0]], [[1.0, 2.0], [2.0, 1.0]])


def test_grouped_comparison_needs_matching_prompts_with_answers():
    with pytest.raises(ValueError, match="2 prompts against 1"):
        grouped_comparison([[1.0], [2.0]], [[1.0]])
    with pytest.raises(ValueError, match="at least one pair"):
        grouped_comparison([[1.0], []], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="at least one pair"):
        grouped_comparison([], [])


def test_within_prompt_slope_holds_the_control_fixed_and_ignores_each_prompts_offset():
    prompts = ["a"] * 4 + ["b"] * 4
    tokens = [10, 20, 30, 40, 5, 15, 25, 35]
    gold = [0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]  # longer answers meet the constraint more often
    offset = {"a": 3.0, "b": -7.0}
    reward = [offset[p] + 2.0 * g - 0.05 * n for p, g, n in zip(prompts, gold, tokens)]
    assert within_prompt_slope(prompts, reward, tokens, [gold]) == pytest.approx(-0.05)  # the taste for length
    assert within_prompt_slope(prompts, reward, tokens) > -0.05 + 0.02  # without the control, gold's part leaks in
    pooled = np.polyfit(tokens, reward, 1)[0]  # across prompts the offsets swamp it
    assert abs(pooled + 0.05) > 0.05
    assert math.isnan(within_prompt_slope(["a", "a", "b"], [1.0, 2.0, 3.0], [7, 7, 9]))  # no length varies in a prompt
    assert math.isnan(within_prompt_slope(["a", "a"], [1.0, 2.0], [1, 2], [[0.0, 1.0]]))  # the control is the length
    same_gold = [1.0, 1.0, 0.0, 0.0]  # constant within each prompt: nothing to hold fixed, the slope still counts
    assert within_prompt_slope(["a", "a", "b", "b"], [1.0, 0.8, 3.0, 2.6], [2, 4, 1, 5], [same_gold]) == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="finite"):
        within_prompt_slope(["a", "a"], [1.0, float("nan")], [1, 2])
