"""Notebook 06's contender bookkeeping: file names, snapshots, the best-of-n family and the best checkpoint."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from helpers.contenders import best_checkpoint, best_of_n_points, slug, snapshot_dirs


def test_slug_makes_file_name_parts():
    assert slug("PPO (final)") == "ppo_final"
    assert slug("SFT x16") == "sft_x16"
    assert slug("best-of-4") == "best_of_4"


def test_snapshot_dirs_are_in_iteration_order_not_name_order(tmp_path):
    for name in ("iter-16", "iter-8", "iter-24", "iter-x", "notes"):
        (tmp_path / "snapshots" / name).mkdir(parents=True)
    assert [(n, p.name) for n, p in snapshot_dirs(tmp_path)] == [(8, "iter-8"), (16, "iter-16"), (24, "iter-24")]
    assert snapshot_dirs(tmp_path / "missing") == []


def test_best_of_n_points_pick_by_reward_and_report_the_gold_of_the_pick():
    records = [{"id": "a", "samples": [{"score": 0.1}, {"score": 0.9}, {"score": 0.5}, {"score": 0.0}]},
               {"id": "b", "samples": [{"score": 0.4}, {"score": 0.2}, {"score": 1.0}, {"score": 0.3}]}]
    rewards = [[0.0, 2.0, 1.0, 3.0], [1.0, 0.0, 0.5, 0.2]]
    points = best_of_n_points(records, rewards, 4)
    assert [p["label"] for p in points] == ["n=1", "n=2", "n=4"]
    assert points[0]["gold"] == pytest.approx((0.1 + 0.4) / 2) and points[0]["kl"] == 0.0
    assert points[1]["gold"] == pytest.approx((0.9 + 0.4) / 2)  # a: answer 1 (reward 2); b: answer 0
    assert points[2]["gold"] == pytest.approx((0.0 + 0.4) / 2)  # a: answer 3 (reward 3) has gold 0: proxy over truth
    assert points[2]["reward"] == pytest.approx((3.0 + 1.0) / 2)
    assert points[2]["kl"] == pytest.approx(math.log(4) - 3 / 4)
    assert all(p["family"] == "best-of-n" and p["iteration"] is None for p in points)


def test_best_checkpoint_ignores_sft_and_best_of_n():
    curve = pd.DataFrame([
        {"family": "PPO checkpoints", "iteration": 0, "gold": 0.9, "reward": 0.0},  # SFT: not a snapshot
        {"family": "PPO checkpoints", "iteration": 8, "gold": 0.4, "reward": 0.5},
        {"family": "PPO checkpoints", "iteration": 16, "gold": 0.6, "reward": 0.4},
        {"family": "PPO checkpoints", "iteration": 24, "gold": 0.6, "reward": 0.9},
        {"family": "best-of-n", "iteration": None, "gold": 0.99, "reward": 2.0},
    ])
    assert best_checkpoint(curve, "gold") == 16  # a tie goes to the earlier snapshot
    assert best_checkpoint(curve, "reward") == 24
    assert best_checkpoint(curve[curve["iteration"] != 8].iloc[:1], "gold") is None


def test_an_earlier_checkpoint_must_beat_the_final_one_by_the_margin():
    curve = pd.DataFrame([{"family": "PPO checkpoints", "iteration": i, "gold": g, "reward": 0.0}
                          for i, g in ((0, 0.40), (6, 0.47), (18, 0.63), (24, 0.58))])
    assert best_checkpoint(curve, "gold") == 18
    assert best_checkpoint(curve, "gold", final_iteration=24, margin=0.1) == 24  # 0.05 ahead: within the noise
    assert best_checkpoint(curve, "gold", final_iteration=24, margin=0.04) == 18
    assert best_checkpoint(curve, "gold", final_iteration=30, margin=0.1) == 18  # no final point: no comparison
