"""Tests for helpers.instructions and data/topics.json: topics, templates, splits and their guarantees."""

import json
import re
from collections import Counter

import pytest

from helpers import instructions
from helpers.constraints import CONSTRAINT_KINDS, END_PHRASES, EXCLUDABLE_WORDS, START_WORDS, compatible, describe
from helpers.instructions import (
    SPLITS,
    TASK_KINDS,
    build_instruction_rows,
    hold_out_topics,
    load_topics,
)
from helpers.labeler import judge, on_topic

SIZES = {"sft": 40, "rm": 30, "ppo": 30, "eval": 20}
ROW_FIELDS = {"id", "split", "source", "messages", "task", "topic", "topic_keywords", "constraints"}

# Prose that is about nothing in particular: no topic's keyword may match it, or the
# on_topic gate would pass generic filler.
GENERIC_FILLER = """Here is a short answer to your question. I think this is a good question and there are many
things to say about it. People often want to know more, and it is important to start with the basics. First, make a
plan and keep it simple. You can ask a friend for help, take notes, and practice every day. It takes time, but
the results are worth it. Many people find it useful to set small goals, stay positive, and learn from mistakes.
Remember that everyone learns at their own pace. I hope this helps! Let me know if you have any other questions.
Overall, there are several reasons why this matters: it saves effort and makes life easier for everyone involved."""


@pytest.fixture(scope="module")
def topics():
    return load_topics()


@pytest.fixture(scope="module")
def rows():
    return build_instruction_rows(SIZES, seed=7)


# ---------------------------------------------------------------------------
# Topics and templates
# ---------------------------------------------------------------------------

def test_topics_file_is_large_and_well_formed(topics):
    assert len(topics) >= 160
    assert len({entry["topic"] for entry in topics}) == len(topics)
    for entry in topics:
        assert 3 <= len(entry["keywords"]) <= 6
        assert all(re.fullmatch(r"[a-z]{3,}", keyword) for keyword in entry["keywords"])


def test_topic_keywords_do_not_match_generic_filler(topics):
    matched = {entry["topic"]: [k for k in entry["keywords"] if on_topic(GENERIC_FILLER, [k])] for entry in topics}
    # "friend" is the stem of "friendship" itself; every other topic stays silent.
    assert {topic: hits for topic, hits in matched.items() if hits} == {"friendship": ["friend"]}


def test_include_words_do_not_collide_with_other_word_pools(topics):
    pools = {word.lower() for word in EXCLUDABLE_WORDS + START_WORDS + END_PHRASES}
    for entry in topics:
        assert not set(entry["keywords"][1:]) & pools, entry["topic"]


def test_load_topics_names_the_file_entry_and_field(tmp_path):
    path = tmp_path / "topics.json"
    path.write_text(json.dumps([
        {"topic": "volcanoes", "keywords": ["volcan", "lava", "magma"]},
        {"topic": "owls", "keywords": ["owl", "Night", "hoot"]},
    ]))
    with pytest.raises(ValueError, match=r"topics\.json: entry 1 \('owls'\): field 'keywords'"):
        load_topics(path)
    path.write_text(json.dumps([{"topic": "owls"}]))
    with pytest.raises(ValueError, match="entry 0.*'keywords'"):
        load_topics(path)
    path.write_text("[not json")
    with pytest.raises(ValueError, match="topics.json"):
        load_topics(path)


def test_at_least_ten_task_kinds_with_two_templates_each():
    assert len(TASK_KINDS) >= 10
    for name, templates in TASK_KINDS.items():
        assert len(templates) >= 2, name
        assert all("{topic}" in template for template in templates), name


def test_hold_out_topics_is_seeded_and_sized(topics):
    eval_a, train_a = hold_out_topics(topics, seed=1, eval_topic_fraction=0.2)
    eval_b, _ = hold_out_topics(topics, seed=1, eval_topic_fraction=0.2)
    eval_c, _ = hold_out_topics(topics, seed=2, eval_topic_fraction=0.2)
    assert eval_a == eval_b and eval_a != eval_c
    assert len(eval_a) == round(0.2 * len(topics))
    assert len(eval_a) + len(train_a) == len(topics)
    assert not {t["topic"] for t in eval_a} & {t["topic"] for t in train_a}


# ---------------------------------------------------------------------------
# Generated rows
# ---------------------------------------------------------------------------

def test_counts_ids_and_schema(rows):
    assert Counter(row["split"] for row in rows) == SIZES
    assert [row["split"] for row in rows] == sorted((row["split"] for row in rows), key=SPLITS.index)
    assert rows[0]["id"] == "gen-sft-00000" and rows[-1]["id"] == "gen-eval-00019"
    for row in rows:
        assert set(row) == ROW_FIELDS
        assert row["source"] == "generated"
        assert row["messages"][0]["role"] == "user" and len(row["messages"]) == 1
        assert row["task"] in TASK_KINDS
    assert json.loads(json.dumps(rows)) == rows


def test_prompt_text_holds_task_and_every_instruction(rows):
    for row in rows:
        prompt = row["messages"][0]["content"]
        assert row["topic"] in prompt
        assert all(describe(spec) in prompt for spec in row["constraints"])


def test_same_seed_same_rows_different_seed_different_rows(rows):
    assert build_instruction_rows(SIZES, seed=7) == rows
    assert build_instruction_rows(SIZES, seed=8) != rows


def test_resizing_a_later_split_keeps_earlier_splits():
    small = build_instruction_rows({"sft": 15, "rm": 5}, seed=3)
    large = build_instruction_rows({"sft": 15, "rm": 25, "ppo": 5}, seed=3)
    assert [row for row in small if row["split"] == "sft"] == [row for row in large if row["split"] == "sft"]


def test_prompts_are_unique_across_splits(rows):
    prompts = [row["messages"][0]["content"] for row in rows]
    assert len(set(prompts)) == len(prompts)


def test_eval_topics_never_appear_in_other_splits(rows):
    eval_topics = {row["topic"] for row in rows if row["split"] == "eval"}
    other_topics = {row["topic"] for row in rows if row["split"] != "eval"}
    assert eval_topics and other_topics
    assert not eval_topics & other_topics
    # Compare prompts name a second topic; for eval rows it is held out too.
    held_out, _ = hold_out_topics(load_topics(), seed=7, eval_topic_fraction=0.2)
    assert eval_topics <= {entry["topic"] for entry in held_out}


def test_constraints_are_compatible_and_counts_in_range():
    generated = build_instruction_rows({"sft": 200, "eval": 60}, seed=11, min_constraints=2, max_constraints=3)
    assert {len(row["constraints"]) for row in generated} == {2, 3}
    for row in generated:
        assert compatible(row["constraints"]), row["constraints"]


def test_every_kind_appears_in_400_rows():
    generated = build_instruction_rows({"sft": 400}, seed=5)
    kinds = Counter(spec["kind"] for row in generated for spec in row["constraints"])
    assert set(kinds) == set(CONSTRAINT_KINDS)
    assert min(kinds.values()) >= 400 // len(CONSTRAINT_KINDS)  # the deck guarantees one lead per cycle
    assert Counter(len(row["constraints"]) for row in generated).keys() == {1, 2, 3}
    assert len({row["task"] for row in generated}) == len(TASK_KINDS)


def test_every_cycle_of_rows_leads_with_every_kind(rows):
    """The first rows of a split use each kind at least once (dealt from the deck)."""
    for split in ("sft", "rm"):
        first_cycle = [row for row in rows if row["split"] == split][: len(CONSTRAINT_KINDS)]
        assert {spec["kind"] for row in first_cycle for spec in row["constraints"]} == set(CONSTRAINT_KINDS)


def test_a_curriculum_draws_only_its_kinds_and_balances_them():
    kinds = ["word_count_max", "start_with", "title"]
    generated = build_instruction_rows({"sft": 60, "eval": 30}, seed=2, max_constraints=2, kinds=kinds)
    drawn = Counter(spec["kind"] for row in generated for spec in row["constraints"])
    assert set(drawn) == set(kinds)
    for split in ("sft", "eval"):  # every cycle of three rows leads once with each kind
        leads = [row["constraints"] for row in generated if row["split"] == split]
        assert {spec["kind"] for specs in leads[:3] for spec in specs} >= set(kinds)
    one = build_instruction_rows({"sft": 12}, seed=2, max_constraints=1, kinds=kinds)
    assert Counter(row["constraints"][0]["kind"] for row in one) == {kind: 4 for kind in kinds}
    # no curriculum (None or empty) is every kind, and the rows are exactly those drawn without the argument
    assert build_instruction_rows({"sft": 20}, seed=2, kinds=()) == build_instruction_rows({"sft": 20}, seed=2)
    with pytest.raises(ValueError, match="distinct constraint kinds"):
        build_instruction_rows({"sft": 2}, seed=2, kinds=["title", "nonsense"])
    with pytest.raises(ValueError, match="distinct constraint kinds"):
        build_instruction_rows({"sft": 2}, seed=2, kinds=["title", "title"])


def test_the_labeler_can_judge_every_generated_row(rows):
    for row in rows:
        assert judge(row, "").score <= 0.05


def test_impossible_sizes_raise(monkeypatch, topics):
    monkeypatch.setattr(instructions, "TASK_KINDS", {"describe": ("Describe {topic}.",)})
    two_topics = topics[:2]
    with pytest.raises(ValueError, match="unique prompts"):
        build_instruction_rows({"sft": 5000}, seed=0, max_constraints=1, eval_topic_fraction=0.5, topics=two_topics)


def test_bad_arguments_raise(topics):
    with pytest.raises(ValueError, match="'eval' needs topics"):
        build_instruction_rows({"eval": 5}, seed=0, eval_topic_fraction=0.0)
    with pytest.raises(ValueError, match="'sft' needs topics"):
        build_instruction_rows({"sft": 5}, seed=0, eval_topic_fraction=0.5, topics=topics[:1])
    with pytest.raises(ValueError, match="unknown split"):
        build_instruction_rows({"train": 5}, seed=0)
    with pytest.raises(ValueError, match="split_sizes\\['rm'\\]"):
        build_instruction_rows({"rm": -1}, seed=0)
    with pytest.raises(ValueError, match="min_constraints"):
        build_instruction_rows({"rm": 1}, seed=0, min_constraints=3, max_constraints=2)
    with pytest.raises(ValueError, match="eval_topic_fraction"):
        build_instruction_rows({"rm": 1}, seed=0, eval_topic_fraction=1.0)
