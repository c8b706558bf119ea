"""Reporting statistics on literal inputs: within-prompt rank correlation and pairwise agreement."""

from __future__ import annotations

import math

import pytest

from helpers.stats import spearman, within_prompt_agreement, within_prompt_spearman


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
