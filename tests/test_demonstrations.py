"""Demonstrations by rejection sampling: which judged candidates become SFT examples."""

import math

import pytest

from helpers.demonstrations import best_of_n, gate_summary, samples_table

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
