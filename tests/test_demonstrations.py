"""Demonstrations by rejection sampling: which judged candidates become SFT examples."""

import math

import pytest

from helpers.demonstrations import best_of_n, demonstration_counts, gate_summary, samples_table
from helpers.labeler import judge

ROWS = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"Describe bird {i}."}]} for i in range(3)]


def _record(row_id, *scored):
    return {"id": row_id, "samples": [{"text": t, "score": s} for t, s in scored]}


RECORDS = [_record("p0", ("ok", 0.5), ("best", 1.0), ("also best", 1.0), ("poor", 0.1)),
           _record("p1", ("same", 0.6), ("same ", 0.6), ("low", 0.2)),  # one text twice (whitespace aside)
           _record("p2", ("bad", 0.0), ("worse", 0.0))]  # nothing reaches the threshold


def test_best_of_n_keeps_each_prompts_best_answer_above_the_threshold():
    demos = best_of_n(ROWS, RECORDS, threshold=0.3)
    assert [(d["id"], d["response"], d["score"]) for d in demos] == [("p0", "best", 1.0), ("p1", "same", 0.6)]
    assert demos[0]["messages"] == ROWS[0]["messages"]  # the prompt row travels with its answer


def test_best_of_n_keeps_several_distinct_good_answers_best_first():
    demos = best_of_n(ROWS, RECORDS, threshold=0.3, per_prompt=3)
    assert [(d["id"], d["response"]) for d in demos] == [("p0", "best"), ("p0", "also best"), ("p0", "ok"),
                                                         ("p1", "same")]
    assert [d["response"] for d in best_of_n(ROWS, RECORDS, threshold=0.3, per_prompt=2)] == ["best", "also best",
                                                                                               "same"]


def test_gate_summary_splits_the_gold_score_into_gates_and_constraints():
    def sample(score, constraints, **failed):  # score as the labeler gives it; gate_summary reads the verdicts
        gates = {"on_topic": True, "finished": True, "substantive": True} | {gate: False for gate in failed}
        return {"text": "x", "score": score, "truncated": "finished" in failed, "n_tokens": 3,
                "gates": gates, "constraints": constraints}

    records = [{"id": "p0", "samples": [sample(1.0, {"a": True, "b": True}), sample(0.5, {"a": True, "b": False})]},
               {"id": "p1", "samples": [sample(0.05, {"c": True}, on_topic=1), sample(0.05, {"c": True}, finished=1)]},
               {"id": "p2", "samples": [sample(0.05, {"d": True}, on_topic=1, finished=1)]}]
    table = samples_table(ROWS, records)
    summary = gate_summary(table)
    assert summary == {"answers": 5, "on_topic": pytest.approx(3 / 5), "finished": pytest.approx(3 / 5),
                       "passed_gates": pytest.approx(2 / 5), "constraint_share": pytest.approx((1.0 + 0.5) / 2)}
    only_gated = gate_summary(table[~table["gates_passed"]])
    assert only_gated["passed_gates"] == 0.0 and math.isnan(only_gated["constraint_share"])


VOLCANO = {"id": "v0", "messages": [{"role": "user", "content": "Describe volcanoes. Add a title in << >>."}],
           "constraints": [{"kind": "title"}], "topic_keywords": ["volcan"]}


def _judged(row, text, truncated=False):
    return {"text": text, "truncated": truncated, "score": judge(row, text, truncated=truncated).score}


def test_edited_candidates_give_a_demonstration_where_no_sample_met_the_constraint():
    samples = [_judged(VOLCANO, "Volcanoes erupt hot lava. They build mountains over time and", truncated=True),
               _judged(VOLCANO, "The weather is nice today."),  # off topic: a title does not save it
               _judged(VOLCANO, "Volcanoes erupt.")]  # fewer than 5 words: fails a gate
    records = [{"id": "v0", "samples": samples}]
    assert best_of_n([VOLCANO], records, threshold=0.3) == []
    demos = best_of_n([VOLCANO], records, threshold=0.3, per_prompt=4, edit=True)
    assert [(d["response"], d["score"], d["edited"]) for d in demos] == [
        ("<<Volcanoes Erupt Hot Lava>>\n\nVolcanoes erupt hot lava.", 1.0, True)]
    assert judge(VOLCANO, demos[0]["response"]).score == 1.0  # the same labeler, unchanged, scores the edit


def test_a_sampled_answer_wins_a_tie_against_an_edited_one():
    good = _judged(VOLCANO, "<<Fire Mountains>>\n\nVolcanoes erupt hot lava and ash.")
    fixable = _judged(VOLCANO, "Volcanoes erupt hot lava and grey ash.")
    demos = best_of_n([VOLCANO], [{"id": "v0", "samples": [fixable, good]}], threshold=0.3, edit=True)
    assert [(d["response"], d["edited"]) for d in demos] == [(good["text"], False)]
    counts = demonstration_counts([VOLCANO], best_of_n([VOLCANO], [{"id": "v0", "samples": [fixable, good]}],
                                                       threshold=0.3, per_prompt=2, edit=True))
    assert counts.loc["title"].to_dict() == {"prompts": 1, "prompts with a demonstration": 1, "sampled": 1, "edited": 1}
