"""Evaluation helpers on literal inputs (best-of-n, win rate, pass rates, the report), then KL estimates on the tiny model."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from helpers.evaluation import (accuracy_by_reason, answers_table, batches_by_length, best_of_n_choice, best_of_n_kl,
                                constraint_reason, judged_row, merge_answers, pass_rate_matrix, pick_samples,
                                ppo_vs_sft, reward_model_check, summarize, win_reason)
from helpers.files import write_json, write_jsonl
from helpers.stats import bootstrap_mean_ci, paired_comparison


def test_best_of_n_kl_closed_form():
    assert best_of_n_kl(1) == 0.0  # keeping the only sample changes nothing
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(16) == pytest.approx(2.7725887 - 0.9375)
    values = [best_of_n_kl(n) for n in (1, 2, 4, 8, 16, 64)]
    assert values == sorted(values)  # more search, further from the sampler
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n_kl(0)


def test_batches_by_length_group_similar_lengths_and_cover_every_index_once():
    lengths = [5, 90, 7, 88, 6, 91, 40]
    batches = batches_by_length(lengths, 2)
    assert batches == [[5, 1], [3, 6], [2, 4], [0]]  # longest first; each batch pads to its own longest
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert batches_by_length([], 4) == []


def test_best_of_n_choice_uses_only_the_first_n_and_keeps_the_earlier_of_ties():
    rewards = [[0.1, 0.5, 0.9, 0.2], [0.3, 0.3, 0.1, 0.0], [-1.0, -2.0, -0.5, 4.0]]
    assert best_of_n_choice(rewards, 1) == [0, 0, 0]
    assert best_of_n_choice(rewards, 2) == [1, 0, 0]  # row 2: a tie at 0.3 keeps the first
    assert best_of_n_choice(rewards, 4) == [2, 0, 3]
    with pytest.raises(ValueError, match="prompt 1 has only 2 answers"):
        best_of_n_choice([[0.0, 1.0, 2.0], [0.0, 1.0]], 3)


def _sample(text, score, truncated=False, constraints=None):
    return {"text": text, "n_tokens": len(text.split()), "truncated": truncated, "score": score,
            "constraints": constraints or {}, "gates": {}}


def test_pick_samples_and_answers_table():
    records = [{"id": "a", "samples": [_sample("one", 0.1), _sample("two words", 0.9)]},
               {"id": "b", "samples": [_sample("three", 0.4, truncated=True), _sample("four", 0.0)]}]
    picked = pick_samples(records, [1, 0])
    table = answers_table([{"id": "b"}, {"id": "a"}], picked)  # rows decide the order
    assert table.to_dict(orient="list") == {"id": ["b", "a"], "sample": [0, 0], "response": ["three", "two words"],
                                            "n_tokens": [1, 2], "eos": [False, True], "gold": [0.4, 0.9]}
    every = answers_table([{"id": "a"}, {"id": "b"}], records)  # one line per answer, in sample order
    assert every[["id", "sample", "response"]].values.tolist() == [["a", 0, "one"], ["a", 1, "two words"],
                                                                  ["b", 0, "three"], ["b", 1, "four"]]


def test_merge_answers_appends_per_prompt_and_refuses_a_mix_up():
    first = [{"id": "a", "samples": [_sample("one", 0.1)]}, {"id": "b", "samples": [_sample("two", 0.2)]}]
    more = [{"id": "a", "samples": [_sample("three", 0.3), _sample("four", 0.4)]},
            {"id": "b", "samples": [_sample("five", 0.5), _sample("six", 0.6)]}]
    merged = merge_answers(first, more)
    assert [[s["text"] for s in r["samples"]] for r in merged] == [["one", "three", "four"], ["two", "five", "six"]]
    assert [len(r["samples"]) for r in first] == [1, 1]  # the inputs are left as they were
    with pytest.raises(ValueError, match="prompt 'a' against 'b'"):
        merge_answers(first, more[::-1])
    with pytest.raises(ValueError, match="2 records against 1"):
        merge_answers(first, more[:1])


def test_summarize_pairs_contender_and_sft_by_prompt_with_ties_as_half():
    sft = pd.DataFrame({"id": ["a", "b", "c", "d"], "gold": [0.9, 0.5, 0.5, 0.5], "reward": [0.0] * 4,
                        "kl": [0.0] * 4, "n_tokens": [10] * 4, "eos": [True] * 4})
    contender = pd.DataFrame({"id": ["d", "c", "b"], "gold": [1.0, 0.5, 0.0], "reward": [1.0, 2.0, 3.0],
                              "kl": [1.0, 2.0, 6.0], "n_tokens": [5, 5, 8], "eos": [True, False, True]})
    row = summarize(contender, sft, "gold")
    assert row["prompts"] == 3
    assert row["gold"] == pytest.approx(0.5)
    assert row["ci95_low"] <= row["gold"] <= row["ci95_high"]
    assert row["win_rate_vs_sft"] == pytest.approx((1 + 0.5 + 0) / 3)  # d wins, c ties, b loses
    # prompt "a" has no contender answer: the gain is over b, c, d only (0.0), not 0.5 - mean(sft) = -0.1
    assert row["gain_vs_sft"] == pytest.approx((0.5 + 0.0 - 0.5) / 3)
    assert row["gain_ci95_low"] <= row["gain_vs_sft"] <= row["gain_ci95_high"]
    assert -0.5 <= row["gain_ci95_low"] and row["gain_ci95_high"] <= 0.5
    assert 0.0 <= row["win_ci95_low"] <= row["win_rate_vs_sft"] <= row["win_ci95_high"] <= 1.0
    assert (row["reward"], row["kl"], row["tokens"], row["eos_rate"]) == pytest.approx((2.0, 3.0, 6.0, 2 / 3))
    assert "win_rate_vs_sft" not in summarize(sft, None, "gold")


def test_summarize_with_several_answers_per_prompt_counts_each_prompt_once():
    sft = pd.DataFrame({"id": ["a", "a", "b", "b"], "gold": [0.2, 0.6, 0.5, 0.5], "reward": [0.0] * 4,
                        "kl": [0.0] * 4, "n_tokens": [10] * 4, "eos": [True] * 4})
    # prompt a: three answers, prompt b: one; the mean is over prompt means, (0.4 + 0.1) / 2, not over answers
    contender = pd.DataFrame({"id": ["a", "a", "a", "b"], "gold": [0.6, 0.2, 0.4, 0.1], "reward": [1.0] * 4,
                              "kl": [0.5] * 4, "n_tokens": [4] * 4, "eos": [True, True, False, True]})
    row = summarize(contender, sft, "gold")
    assert (row["prompts"], row["answers"]) == (2, 4)
    assert row["gold"] == pytest.approx(0.25)
    # a: 0.6 beats 0.2 and ties 0.6 (1.5), 0.2 ties 0.2 and loses (0.5), 0.4 beats 0.2 and loses (1) -> 3/6; b: loses
    assert row["win_rate_vs_sft"] == pytest.approx((3 / 6 + 0.0) / 2)
    assert row["gain_vs_sft"] == pytest.approx(((0.4 - 0.4) + (0.1 - 0.5)) / 2)
    assert row["eos_rate"] == pytest.approx(3 / 4)  # per answer



EVAL_ROWS = [{"id": p, "messages": [{"role": "user", "content": f"Describe {p}, in lowercase."}]} for p in "abcd"]


def _one_answer(prompt, text, score, truncated=False, lowercase=True):
    """A record as ``sample_and_judge`` stores it: one judged answer to ``prompt``."""
    return {"id": prompt, "samples": [{"text": text, "n_tokens": len(text.split()), "truncated": truncated,
                                       "score": score, "constraints": {"lowercase": lowercase},
                                       "gates": {"on_topic": True, "finished": not truncated}}]}


def _words_plus_ten_for_a(rows, texts):
    """A stand-in reward model: the answer's word count, plus 10 on prompt a (so the prompt must be the right one)."""
    return torch.tensor([len(t.split()) + (10.0 if r["id"] == "a" else 0.0) for r, t in zip(rows, texts)])


def test_ppo_vs_sft_gives_both_rows_in_summarizes_keys_with_the_gain_by_hand():
    sft = [_one_answer("a", "one", 0.5), _one_answer("b", "two words", 0.5), _one_answer("c", "x y z", 0.2),
           _one_answer("d", "cut off", 0.0, truncated=True, lowercase=False)]
    ppo = [_one_answer("d", "four words of text", 0.25, truncated=True),  # rows set the order, not records
           _one_answer("c", "short", 0.0, lowercase=False), _one_answer("b", "two more", 0.5),
           _one_answer("a", "a better answer", 1.0)]
    summary, tables = ppo_vs_sft(EVAL_ROWS, ppo, sft, _words_plus_ten_for_a, final_kl=3.5)
    assert set(summary) == set(tables) == {"SFT", "PPO"}
    row, base = summary["PPO"], summary["SFT"]
    assert row["gold"] == pytest.approx((1.0 + 0.5 + 0.0 + 0.25) / 4) and base["gold"] == pytest.approx(1.2 / 4)
    # per prompt PPO - SFT: a +0.5, b 0 (a tie), c -0.2, d +0.25; wins: a, d, half of b
    assert row["gain_vs_sft"] == pytest.approx((0.5 + 0.0 - 0.2 + 0.25) / 4)
    assert row["win_rate_vs_sft"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert row["reward"] == pytest.approx((13 + 2 + 1 + 4) / 4)  # words, + 10 on prompt a
    assert base["reward"] == pytest.approx((11 + 2 + 3 + 2) / 4)
    assert (row["tokens"], row["eos_rate"], base["eos_rate"]) == pytest.approx((2.5, 0.75, 0.75))
    assert (base["kl"], row["kl"], row["final_kl"]) == (0.0, None, 3.5)  # PPO's KL on eval answers: not measured here
    assert row["labeler"] == {"answers": 4, "on_topic": 1.0, "finished": 0.75, "passed_gates": 0.75,
                              "constraint_share": pytest.approx(2 / 3)}
    assert (row["pass_rates"], base["pass_rates"]) == ({"lowercase": 0.75}, {"lowercase": 0.75})
    assert not {"gain_vs_sft", "win_rate_vs_sft", "final_kl"} & set(base)
    # one answer per prompt: the same intervals as the bootstrap and the paired comparison of the answers
    golds = tables["PPO"]["gold"].tolist()
    assert golds == [1.0, 0.5, 0.0, 0.25] and tables["SFT"]["id"].tolist() == ["a", "b", "c", "d"]
    assert (row["gold"], row["ci95_low"], row["ci95_high"]) == bootstrap_mean_ci(golds)
    versus = paired_comparison(golds, tables["SFT"]["gold"])
    assert (row["gain_ci95_low"], row["gain_ci95_high"]) == (versus["gain_ci95_low"], versus["gain_ci95_high"])
    assert (row["win_ci95_low"], row["win_ci95_high"]) == (versus["win_ci95_low"], versus["win_ci95_high"])
    json.dumps(summary, allow_nan=False)  # goes into meta.json and results.jsonl as it is


def test_ppo_vs_sft_measures_unjudged_answers_by_the_reward_model():
    def unjudged(prompt, text):
        return {"id": prompt, "samples": [{"text": text, "n_tokens": len(text.split()), "truncated": False}]}

    rows = EVAL_ROWS[:2]
    summary, _ = ppo_vs_sft(rows, [unjudged("a", "x"), unjudged("b", "x y z")],
                            [unjudged("a", "x y"), unjudged("b", "x y z")], _words_plus_ten_for_a)
    row = summary["PPO"]
    assert row["reward"] == pytest.approx((11 + 3) / 2) and row["gain_vs_sft"] == pytest.approx((-1 + 0) / 2)
    assert row["win_rate_vs_sft"] == pytest.approx((0 + 0.5) / 2)  # a loses by a word, b ties
    assert not {"gold", "labeler", "pass_rates", "final_kl"} & set(row)
    with pytest.raises(ValueError, match="one side's answers are judged"):
        ppo_vs_sft(rows, [unjudged("a", "x"), unjudged("b", "y")],
                   [_one_answer("a", "x", 1.0), _one_answer("b", "y", 0.0)], _words_plus_ten_for_a)

def test_judged_row_compares_with_a_named_baseline_before_any_reward_model():
    base = [_one_answer("a", "one", 0.0, lowercase=False), _one_answer("b", "two", 0.5),
            _one_answer("c", "three", 0.5), _one_answer("d", "cut", 0.05, truncated=True)]
    sft = [_one_answer(p, "better", score) for p, score in zip("abcd", (1.0, 0.5, 0.0, 1.0))]
    alone, row = judged_row(EVAL_ROWS, base), judged_row(EVAL_ROWS, sft, baseline=base, versus="base")
    assert alone["gold"] == pytest.approx(1.05 / 4) and row["gold"] == pytest.approx(2.5 / 4)
    assert not {"reward", "kl", "gain_vs_base"} & set(alone)  # no reward model yet; nothing to compare with
    # per prompt SFT - base: a +1, b 0 (a tie), c -0.5, d +0.95
    assert row["gain_vs_base"] == pytest.approx((1.0 + 0.0 - 0.5 + 0.95) / 4)
    assert row["win_rate_vs_base"] == pytest.approx((1 + 0.5 + 0 + 1) / 4) and "win_rate_vs_sft" not in row
    assert (alone["eos_rate"], alone["labeler"]["finished"], alone["pass_rates"]) == (0.75, 0.75, {"lowercase": 0.75})
    assert (row["gold"], row["ci95_low"], row["ci95_high"]) == bootstrap_mean_ci([1.0, 0.5, 0.0, 1.0])
    json.dumps([alone, row], allow_nan=False)  # notebook 01 and 02 store them in meta.json as they are


def test_pass_rate_matrix_counts_each_kind_per_contender():
    rows = [{"id": "a"}, {"id": "b"}]
    contenders = {
        "SFT": [{"id": "a", "samples": [_sample("x", 0, constraints={"lowercase": True, "no_commas": False})]},
                {"id": "b", "samples": [_sample("y", 0, constraints={"lowercase": False})]}],
        "PPO": [{"id": "a", "samples": [_sample("x", 0, constraints={"lowercase": True, "no_commas": True})]},
                {"id": "b", "samples": [_sample("y", 0, constraints={"lowercase": True})]}],
    }
    matrix = pass_rate_matrix(rows, contenders)
    assert list(matrix.index) == ["SFT", "PPO"] and list(matrix.columns) == ["lowercase", "no_commas"]
    assert matrix.loc["SFT"].tolist() == [0.5, 0.0] and matrix.loc["PPO"].tolist() == [1.0, 1.0]
    contenders["PPO"][1]["samples"].append(_sample("z", 0, constraints={"lowercase": False}))  # every answer counts
    assert pass_rate_matrix(rows, contenders).loc["PPO"].tolist() == [2 / 3, 1.0]


def test_reward_model_check_on_a_literal_pool():
    records = [{"id": "a", "samples": [_sample("x", 0.0), _sample("y", 1.0), _sample("z", 0.5)]},
               {"id": "b", "samples": [_sample("u", 0.02), _sample("v", 0.0), _sample("w", 0.33)]}]
    rewards = [[0.1, 0.9, 0.95], [5.0, -1.0, 4.0]]
    check = reward_model_check(records, rewards, min_gap=0.1)
    # a: (y > x) right, (z > x) right, (y > z) wrong; b: (w > u) wrong, (w > v) right; u vs v is a tie
    assert check["pairs"] == 5 and check["pairwise_accuracy"] == pytest.approx(3 / 5)
    assert check["gold_top_reward"] == pytest.approx((0.5 + 0.02) / 2)  # z and u are its favourites
    assert check["gold_best"] == pytest.approx((1.0 + 0.33) / 2)
    assert check["gold_mean"] == pytest.approx(1.85 / 6)
    assert check["spearman_within_prompt"] == pytest.approx((0.5 + 0.5) / 2)
    with pytest.raises(ValueError, match="prompt b: 3 answers but 2 rewards"):
        reward_model_check(records, [rewards[0], rewards[1][:2]], min_gap=0.1)


def _gated(text, score, *failed):
    gates = {"nonempty": True, "substantive": True, "on_topic": True, "not_repetitive": True, "finished": True}
    return dict(_sample(text, score), gates={**gates, **{gate: False for gate in failed}})


def test_win_reason_names_the_gates_only_the_loser_failed():
    passed, cut_off = _gated("good", 1.0), _gated("cut", 0.05, "finished")
    assert win_reason(passed, cut_off) == "finished"
    assert win_reason(passed, _gated("both", 0.0, "on_topic", "finished")) == "on_topic + finished"
    assert win_reason(passed, _gated("fewer", 0.5)) == "constraints met"  # both passed every gate
    assert win_reason(cut_off, _gated("worse", 0.0, "finished")) == "constraints met"  # both gated


def test_accuracy_by_reason_splits_the_pool_check_pair_for_pair():
    records = [{"id": "a", "samples": [_gated("x", 0.05, "finished"), _gated("y", 1.0), _gated("z", 0.5)]},
               {"id": "b", "samples": [_gated("u", 0.02, "on_topic"), _gated("v", 0.0, "on_topic"),
                                       _gated("w", 0.33), _gated("s", 0.0, "on_topic", "finished")]}]
    rewards = [[0.1, 0.9, 0.95], [5.0, -1.0, 4.0, 4.0]]
    table = accuracy_by_reason(records, rewards, min_gap=0.1).set_index("reason")
    # a: y>x right (finished), z>x right (finished), y>z wrong (constraints);
    # b: w>u wrong, w>v right (on_topic), w>s a reward tie so wrong (on_topic + finished); u, v, s tie
    assert table.to_dict(orient="index") == {
        "finished": {"pairs": 2, "accuracy": 1.0}, "on_topic": {"pairs": 2, "accuracy": 0.5},
        "constraints met": {"pairs": 1, "accuracy": 0.0}, "on_topic + finished": {"pairs": 1, "accuracy": 0.0}}
    check = reward_model_check(records, rewards, min_gap=0.1)  # the same pairs, not split
    assert table["pairs"].sum() == check["pairs"] == 6
    assert (table["pairs"] * table["accuracy"]).sum() / table["pairs"].sum() == pytest.approx(check["pairwise_accuracy"])
    with pytest.raises(ValueError, match="prompt b: 4 answers but 3 rewards"):
        accuracy_by_reason(records, [rewards[0], rewards[1][:3]], min_gap=0.1)


def test_accuracy_by_constraint_kind_splits_only_the_pairs_a_constraint_decided():
    def answer(text, score, lowercase, *failed):
        return dict(_gated(text, score, *failed), constraints={"lowercase": lowercase})

    records = [{"id": "a", "samples": [answer("met", 1.0, True), answer("missed", 0.0, False),
                                       answer("cut", 0.0, False, "finished")]},
               {"id": "b", "samples": [dict(_gated("p.s.", 1.0), constraints={"postscript": True}),
                                       dict(_gated("none", 0.0), constraints={"postscript": False})]}]
    rewards = [[2.0, 1.0, 0.0], [0.0, 1.0]]
    assert constraint_reason(records[0]["samples"][0], records[0]["samples"][1]) == "lowercase"
    assert constraint_reason(records[0]["samples"][0], records[0]["samples"][2]) is None  # the gate decided
    table = accuracy_by_reason(records, rewards, min_gap=0.1, reason=constraint_reason).set_index("reason")
    # a: met > missed right (lowercase); met > cut is a gate pair, left out; missed vs cut tie; b: wrong
    assert table.to_dict(orient="index") == {"lowercase": {"pairs": 1, "accuracy": 1.0},
                                             "postscript": {"pairs": 1, "accuracy": 0.0}}


def _fake_run(run_dir):
    """A run folder with the metas notebook 04 and 06 write, no models."""
    write_json(run_dir / "run.json", {"profile": "tiny", "run_dir": str(run_dir), "status": "finished",
                                      "seconds": 600.0, "notebooks": {"04_ppo.ipynb": {"seconds": 120.0}}})
    write_json(run_dir / "data" / "meta.json", {"base_model": "embedded:test", "source": "generated",
                                                "finished": "t0"})
    write_json(run_dir / "ppo" / "meta.json", {"finished": "t1", "memory": {"peak_rss_mb": 2048.0}})
    write_jsonl(run_dir / "ppo" / "metrics.jsonl", [{"iteration": i, "rm_score": 0.1 * i, "gold": 0.2, "kl": 0.5 * i}
                                                    for i in (1, 2, 3)])
    headline = {"SFT": {"prompts": 4, "gold": 0.25, "ci95_low": 0.1, "ci95_high": 0.4, "reward": 0.0, "kl": 0.0},
                "PPO (final)": {"prompts": 4, "gold": 0.375, "ci95_low": 0.2, "ci95_high": 0.5, "reward": 1.5,
                                "kl": 2.5, "win_rate_vs_sft": 0.625}}
    curve = [{"family": "PPO checkpoints", "label": "SFT", "iteration": 0, "kl": 0.0, "gold": 0.25, "reward": 0.0},
             {"family": "best-of-n", "label": "n=2", "iteration": None, "kl": 0.19, "gold": 0.3, "reward": 0.6}]
    check = {"prompts": 2, "answers": 8, "pairs": 5, "pairwise_accuracy": 0.8, "spearman": 0.25,
             "spearman_within_prompt": None, "gold_mean": 0.1, "gold_top_reward": 0.2, "gold_best": 0.5}
    write_json(run_dir / "eval" / "meta.json", {"finished": "t2", "measure": "gold", "headline": headline,
                                                "curve": curve, "reward_model_check": check})


def test_report_from_a_run_folder(tmp_path):
    from helpers.report import stage_table, write_report

    _fake_run(tmp_path)
    written = write_report(tmp_path, static_images=False)
    page = (tmp_path / "report.html").read_text()
    summary = (tmp_path / "report.md").read_text()
    assert written["html"].endswith("report.html") and "plotly" in page.lower()
    assert page.count("Plotly.newPlot") == 3  # PPO curves, headline bars, over-optimisation curve
    assert "| PPO (final) | 4 | 0.375 |" in summary
    assert "PPO (final) vs SFT: gold 0.375 vs 0.250 (+0.125); PPO wins 62% of comparisons; KL to SFT 2.50 nats" in summary
    assert ("reward model on 8 fresh SFT answers (2 prompts): pairwise accuracy 0.80 (5 pairs), Spearman 0.25 "
            "pooled, n/a within prompt; gold of its favourite 0.200 vs 0.100 at random and 0.500") in summary
    stages = stage_table({"run": {"notebooks": {"04_ppo.ipynb": {"seconds": 120.0}}},
                          "metas": {"ppo": {"finished": "t1", "memory": {"peak_rss_mb": 2048.0}}}})
    assert stages.loc["ppo", "minutes"] == "2.0" and stages.loc["ppo", "peak_rss_gb"] == "2.00"
    assert stages.loc["dpo", "finished"] == "not run"


def test_report_gives_the_paired_intervals_when_the_run_has_them(tmp_path):
    from helpers.files import read_json
    from helpers.report import write_report

    _fake_run(tmp_path)
    meta = read_json(tmp_path / "eval" / "meta.json")
    meta["headline"]["PPO (final)"].update({"gain_vs_sft": 0.125, "gain_ci95_low": -0.05, "gain_ci95_high": 0.3,
                                            "win_ci95_low": 0.4, "win_ci95_high": 0.85})
    write_json(tmp_path / "eval" / "meta.json", meta)
    write_report(tmp_path, static_images=False)
    summary = (tmp_path / "report.md").read_text()
    assert ("PPO (final) vs SFT: gold 0.375 vs 0.250 (+0.125, 95 % CI -0.050 to +0.300); PPO wins 62% of comparisons, "
            "95 % CI 40% to 85%; KL to SFT 2.50 nats") in summary


def test_report_gives_the_machine_and_the_precision_beside_the_times(tmp_path):
    from helpers.files import read_json
    from helpers.report import write_report

    _fake_run(tmp_path)
    record = read_json(tmp_path / "run.json")
    record["machine"] = {"cpu_cores": 2, "torch_threads": 2, "fast_bfloat16": False,
                         "matmul_gflops": {"float32": 110.4, "bfloat16": 3.2}, "cuda": None}
    write_json(tmp_path / "run.json", record)
    data = read_json(tmp_path / "data" / "meta.json")
    data["precision"] = "computing in float32 with NF4 4-bit weights on cpu: this CPU has no fast bfloat16"
    write_json(tmp_path / "data" / "meta.json", data)
    write_report(tmp_path, static_images=False)
    summary = (tmp_path / "report.md").read_text()
    assert ("- machine: 2 cores (2 torch threads), native bfloat16: no, matmul 110 GFLOP/s float32 and 3 bfloat16\n"
            in summary)
    assert "- precision: computing in float32 with NF4 4-bit weights on cpu: this CPU has no fast bfloat16" in summary


def test_report_leads_with_the_recipe_and_gives_the_oracle_ceiling(tmp_path):
    from helpers.files import read_json
    from helpers.report import oracle_table, oracle_tries, sweep_eval, write_report

    _fake_run(tmp_path)
    meta = read_json(tmp_path / "eval" / "meta.json")
    meta["headline"]["base"] = {"prompts": 4, "gold": 0.125, "ci95_low": 0.0, "ci95_high": 0.25, "kl": 9.0}
    write_json(tmp_path / "eval" / "meta.json", meta)
    oracle = {"name": "oracle", "reward": "gold", "episodes": 1024, "eval": {
        "SFT": {"gold": 0.25, "kl": 0.0},
        "PPO": {"gold": 0.5, "gain_vs_sft": 0.25, "gain_ci95_low": 0.1, "gain_ci95_high": 0.4, "win_rate_vs_sft": 0.75,
                "final_kl": 7.25}}}
    older = {"name": "old", "reward": "gold", "gold": 0.375, "ci95": [0.25, 0.5], "sft_gold": 0.25,  # before ppo_vs_sft
             "gain_vs_SFT": 0.125, "gain_ci95": [-0.1, 0.3], "win_rate_vs_SFT": 0.5, "win_ci95": [0.3, 0.7],
             "cut_off": 0.25, "final_kl": 3.0, "episodes": 256}
    write_json(tmp_path / "ppo-sweep" / "oracle" / "result.json", oracle)
    write_json(tmp_path / "ppo-sweep" / "old" / "result.json", older)
    write_json(tmp_path / "ppo-sweep" / "seed1" / "result.json", {**oracle, "name": "seed1", "reward": None})
    assert [t["name"] for t in oracle_tries(tmp_path)] == ["old", "oracle"]  # reward-model tries are not the ceiling
    assert sweep_eval(older) == {
        "PPO": {"gold": 0.375, "ci95_low": 0.25, "ci95_high": 0.5, "gain_vs_sft": 0.125, "gain_ci95_low": -0.1,
                "gain_ci95_high": 0.3, "win_rate_vs_sft": 0.5, "win_ci95_low": 0.3, "win_ci95_high": 0.7,
                "eos_rate": 0.75, "final_kl": 3.0},
        "SFT": {"gold": 0.25}}
    table = oracle_table(oracle_tries(tmp_path))
    assert table.loc["old"].tolist() == [256, 0.375, 0.25, 0.125, -0.1, 0.3, 0.5, 3.0]
    assert table.loc["oracle", "gain_ci95_high"] == 0.4 and table.loc["oracle", "SFT gold"] == 0.25
    write_report(tmp_path, static_images=False)
    summary = (tmp_path / "report.md").read_text()
    assert ("- the recipe, step by step (gold, 95 % CI): base 0.125 (0.000-0.250) → SFT 0.250 (0.100-0.400) → "
            "PPO (final) 0.375 (0.200-0.500)") in summary
    assert ("- ceiling: PPO against the gold labeler itself (`ppo_sweep.py --reward gold`, try `oracle`, 1024 "
            "episodes, one answer per prompt): gold 0.500 vs SFT 0.250, gain +0.250 (95 % CI +0.100 to +0.400), "
            "KL 7.2") in summary
    assert ("try `old`, 256 episodes, one answer per prompt): gold 0.375 vs SFT 0.250, gain +0.125 (95 % CI -0.100 "
            "to +0.300), KL 3.0") in summary  # a result.json of older code still renders


def test_learning_curve_smooths_and_finds_where_gold_peaks():
    from helpers.plots import learning_curve, learning_curve_figure, rolling

    assert rolling([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    # reward keeps rising; gold rises until iteration 4, then falls: its rolling mean peaks at 5, where they part
    metrics = [{"iteration": i, "rm_score": 0.5 * i, "gold": g}
               for i, g in zip(range(1, 9), [0.1, 0.2, 0.3, 0.6, 0.4, 0.3, 0.2, 0.1])]
    curve = learning_curve(metrics, window=2)
    assert curve["iteration"] == list(range(1, 9))
    assert curve["gold"][:5] == pytest.approx([0.1, 0.15, 0.25, 0.45, 0.5])
    assert curve["gold_peak"] == 5 and curve["gold_gain"] == pytest.approx(0.15 - 0.1)
    assert curve["reward"][-1] == pytest.approx(3.75)
    figure = learning_curve_figure(metrics, window=2)
    assert [trace.name for trace in figure.data] == ["reward (what PPO maximises)", "gold (labeler)"]
    with pytest.raises(ValueError, match="'gold'"):
        learning_curve([{"iteration": 1, "rm_score": 0.0, "gold": None}])


def test_report_names_a_folder_that_is_not_a_run(tmp_path):
    from helpers.report import main

    assert main([str(tmp_path), "--no-images"]) == 1


# --- on the tiny model -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sft_model(tiny_run, model_config):
    from helpers.adapters import load_policy

    return load_policy(model_config, tiny_run / "sft" / "adapter")


@pytest.mark.model
def test_answer_logprobs_batched_equal_one_by_one(sft_model, tokenizer, tiny_run):
    from helpers.dataset import load_split
    from helpers.evaluation import answer_logprobs
    from helpers.generation import render_prompts

    rows = load_split(tiny_run / "data", "eval")[:3]
    texts = ["Yes.", "a much longer answer, with several words in it", "no"]
    truncated = [False, True, False]
    # batches of 2 sorted by length: the long answer's batch and the others', results put back in order
    batched = answer_logprobs(sft_model, tokenizer, rows, texts, truncated, "sft", batch_size=2)
    for i, row in enumerate(rows):  # one sequence, no padding, summed by hand
        prompt = tokenizer(render_prompts(tokenizer, [row["messages"]])[0], add_special_tokens=False)["input_ids"]
        answer = tokenizer(texts[i], add_special_tokens=False)["input_ids"] + ([] if truncated[i] else
                                                                                [tokenizer.eos_token_id])
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logprobs = torch.log_softmax(sft_model(input_ids=ids).logits[0, :-1].float(), -1)
        expected = sum(logprobs[len(prompt) - 1 + t, token].item() for t, token in enumerate(answer))
        assert batched[i].item() == pytest.approx(expected, abs=1e-3)


@pytest.mark.model
def test_kl_of_a_model_to_itself_is_zero_and_to_the_base_is_not(sft_model, tokenizer, tiny_run):
    from helpers.dataset import load_split
    from helpers.evaluation import implicit_preference_accuracy, kl_to_reference

    rows = load_split(tiny_run / "data", "eval")[:2]
    texts, truncated = ["Sure, here it is.", "Paris"], [False, False]
    assert kl_to_reference(sft_model, tokenizer, rows, texts, truncated, "sft", "sft").abs().max().item() == 0.0
    assert kl_to_reference(sft_model, tokenizer, rows, texts, truncated, None, "sft").abs().min().item() > 0.0
    pairs = [{"messages": rows[0]["messages"], "chosen": "Yes.", "rejected": "No."}]
    assert implicit_preference_accuracy(sft_model, tokenizer, pairs, "sft", "sft") == 0.5  # reference: all ties


@pytest.mark.model
def test_implicit_accuracies_of_several_adapters_equal_one_at_a_time(sft_model, tokenizer, tiny_run):
    from helpers.dataset import load_split
    from helpers.evaluation import implicit_preference_accuracies, implicit_preference_accuracy

    rows = load_split(tiny_run / "data", "eval")[:3]
    pairs = [{"messages": row["messages"], "chosen": chosen, "rejected": rejected}
             for row, (chosen, rejected) in zip(rows, [("Yes.", "No."), ("A short answer here.", "x"),
                                                       ("no", "Absolutely, with pleasure.")])]
    together = implicit_preference_accuracies(sft_model, tokenizer, pairs, [None, "sft", None], "sft", batch_size=2)
    assert together == {None: implicit_preference_accuracy(sft_model, tokenizer, pairs, None, "sft"), "sft": 0.5}


def _judged(n_tokens, score, finished=True, on_topic=True):
    gates = {"nonempty": True, "substantive": True, "on_topic": on_topic, "not_repetitive": True, "finished": finished}
    return {"n_tokens": n_tokens, "score": score, "gates": gates}


def test_reward_by_length_groups_answers_into_token_buckets():
    from helpers.evaluation import reward_by_length

    records = [{"id": "a", "samples": [_judged(5, 0.05, on_topic=False), _judged(40, 1.0), _judged(100, 0.05, finished=False)]},
               {"id": "b", "samples": [_judged(16, 0.5), _judged(45, 0.0)]}]
    rewards = [[2.0, 1.0, -1.0], [0.0, 3.0]]
    table = reward_by_length(records, rewards, edges=(0, 16, 48)).set_index("tokens")
    assert list(table.index) == ["1-16", "17-48", ">48"]
    assert table.loc["1-16", "answers"] == 2 and table.loc["1-16", "reward"] == pytest.approx(1.0)
    assert table.loc["1-16", "gold"] == pytest.approx(0.275) and table.loc["1-16", "on_topic"] == pytest.approx(0.5)
    assert table.loc["17-48", "reward"] == pytest.approx(2.0) and table.loc["17-48", "all_gates"] == 1.0
    assert table.loc[">48", "finished"] == 0.0 and math.isnan(table.loc[">48", "reward_finished"])
    assert table.loc[">48", "reward"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="prompt b: 2 answers but 1 rewards"):
        reward_by_length(records, [[2.0, 1.0, -1.0], [0.0]])
