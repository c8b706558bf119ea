"""Tests for helpers.dataset: the row schema, saving and loading splits, and errors that name file, line and field."""

import copy
import json

import pytest

from helpers.config import DataConfig
from helpers.dataset import (
    SPLITS,
    build_rows,
    constraint_counts,
    demonstrations_from_data,
    file_manifest,
    load_split,
    prompt_text,
    save_splits,
    split_file,
    validate_row,
)
from helpers.files import DataError, sha256
from helpers.instructions import build_instruction_rows

SIZES = {"sft": 3, "rm": 2, "ppo": 2, "eval": 2}


@pytest.fixture(scope="module")
def generated_rows():
    return build_instruction_rows(SIZES, seed=0)


def hh_row(split, i, **extra):
    """A row shaped like one built from HH-RLHF: a multi-turn prompt and a preference."""
    return {
        "id": f"hh-rlhf-{split}-{i:05d}",
        "split": split,
        "source": "hh-rlhf",
        "messages": [
            {"role": "user", "content": f"How do I bake bread? ({split} {i})"},
            {"role": "assistant", "content": "Flour, water, yeast and salt."},
            {"role": "user", "content": "How long should it rise?"},
        ],
        "chosen": "About an hour, until it doubles in size.",
        "rejected": "Forever.",
        **extra,
    }


def instruction_row(split, i):
    """A row shaped like one built from Dolly/Alpaca: a prompt and a human response."""
    return {
        "id": f"instructions-{split}-{i:05d}",
        "split": split,
        "source": "instructions",
        "messages": [{"role": "user", "content": f"Name a primary colour. ({split} {i})"}],
        "response": "Red.",
    }


@pytest.fixture
def real_rows():
    return [hh_row(s, i) for s in SPLITS for i in range(2)] + [instruction_row("sft", 0), instruction_row("eval", 0)]


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

def test_save_then_load_round_trips_generated_rows(tmp_path, generated_rows):
    counts = save_splits(generated_rows, tmp_path)
    assert counts == SIZES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.jsonl", "ppo.jsonl", "rm.jsonl", "sft.jsonl"]
    for split in SPLITS:
        assert load_split(tmp_path, split) == [r for r in generated_rows if r["split"] == split]


def test_save_then_load_round_trips_real_rows(tmp_path, real_rows):
    assert save_splits(real_rows, tmp_path) == {"sft": 3, "rm": 2, "ppo": 2, "eval": 3}
    loaded = [row for split in SPLITS for row in load_split(tmp_path, split)]
    assert sorted(loaded, key=lambda r: r["id"]) == sorted(real_rows, key=lambda r: r["id"])


def test_save_splits_replaces_previous_files(tmp_path, real_rows):
    save_splits(real_rows, tmp_path)
    save_splits([hh_row("sft", 7)] + [hh_row(s, 0) for s in ("rm", "ppo", "eval")], tmp_path)
    assert [r["id"] for r in load_split(tmp_path, "sft")] == ["hh-rlhf-sft-00007"]


def test_save_splits_validates_before_writing_anything(tmp_path, real_rows):
    real_rows[3]["messages"][-1]["role"] = "assistant"
    with pytest.raises(DataError) as info:
        save_splits(real_rows, tmp_path)
    assert str(info.value).startswith("dataset to save, row 3: field 'messages'")
    assert list(tmp_path.iterdir()) == []


def test_save_splits_refuses_duplicate_ids(tmp_path):
    rows = [hh_row("sft", 0), hh_row("rm", 0, id="hh-rlhf-sft-00000")]
    with pytest.raises(DataError, match=r"^dataset to save, row 1: field 'id': expected a unique id"):
        save_splits(rows, tmp_path)


def test_validate_row_accepts_system_turns():
    row = hh_row("sft", 0)
    row["messages"].insert(0, {"role": "system", "content": "Be brief."})
    validate_row(row, "here")


# ---------------------------------------------------------------------------
# A bad line: the error names the file, the line (blank lines counted) and the field
# ---------------------------------------------------------------------------

def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def generated(generated_rows, i=0):
    return copy.deepcopy([r for r in generated_rows if r["split"] == "sft"][i])


def _drop(name):
    def mutate(row):
        del row[name]
    return mutate


def _set(path, value):
    def mutate(row):
        target = row
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


BAD_GENERATED = [
    ("missing messages", _drop("messages"), "messages", "a non-empty list of turns"),
    ("empty messages", _set(["messages"], []), "messages", "a non-empty list of turns"),
    ("empty content", _set(["messages", 0, "content"], "   "), "messages[0].content", "a non-empty string"),
    ("wrong role", _set(["messages", 0, "role"], "bot"), "messages[0].role", "one of system, user, assistant"),
    ("ends with assistant", lambda r: r["messages"].append({"role": "assistant", "content": "Hi."}),
     "messages", "a conversation ending with a user turn"),
    ("wrong split", _set(["split"], "rm"), "split", "'sft' (the file's split)"),
    ("unknown split", _set(["split"], "train"), "split", "one of sft, rm, ppo, eval"),
    ("unknown source", _set(["source"], "web"), "source", "one of generated, hh-rlhf, instructions"),
    ("empty id", _set(["id"], ""), "id", "a non-empty string"),
    ("missing task", _drop("task"), "task", "a non-empty string"),
    ("unknown constraint kind", _set(["constraints", 0], {"kind": "rhyme"}), "constraints[0]",
     "unknown constraint kind 'rhyme'"),
    ("constraint missing its parameter", _set(["constraints", 0], {"kind": "word_count_max"}), "constraints[0]",
     "constraint 'word_count_max' needs field 'n'"),
    ("constraint not an object", _set(["constraints", 0], "lowercase"), "constraints[0]", "an object with a kind"),
    ("empty constraints", _set(["constraints"], []), "constraints", "a non-empty list"),
    ("topic_keywords not a list", _set(["topic_keywords"], "lava"), "topic_keywords", "a non-empty list of strings"),
    ("topic_keywords holding a number", _set(["topic_keywords"], ["lava", 3]), "topic_keywords",
     "a non-empty list of strings"),
]


@pytest.mark.parametrize("mutate, field, expected", [c[1:] for c in BAD_GENERATED], ids=[c[0] for c in BAD_GENERATED])
def test_bad_generated_row_names_file_line_and_field(tmp_path, generated_rows, mutate, field, expected):
    good, bad = generated(generated_rows, 0), generated(generated_rows, 1)
    mutate(bad)
    path = split_file(tmp_path, "sft")
    write_lines(path, [json.dumps(good), "", json.dumps(bad), json.dumps(generated(generated_rows, 2))])
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "sft")
    message = str(info.value)
    assert message.startswith(f"{path}, line 3: field '{field}': ")
    assert expected in message


def test_unhashable_constraint_kind_is_a_data_error(tmp_path, generated_rows):
    bad = generated(generated_rows, 0)
    bad["constraints"][0] = {"kind": ["lowercase"]}
    path = split_file(tmp_path, "sft")
    write_lines(path, [json.dumps(bad)])
    with pytest.raises(DataError, match=r", line 1: field 'constraints\[0\]'"):
        load_split(tmp_path, "sft")


@pytest.mark.parametrize(
    "extra, field",
    [({"chosen": ""}, "chosen"), ({"rejected": "  "}, "rejected"), ({"chosen": None}, "chosen"),
     ({"response": ""}, "response")],
)
def test_bad_preference_or_response_names_field(tmp_path, extra, field):
    path = split_file(tmp_path, "rm")
    write_lines(path, ["", json.dumps(hh_row("rm", 0)), "  ", "", json.dumps(hh_row("rm", 1, **extra))])
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "rm")
    assert str(info.value).startswith(f"{path}, line 5: field '{field}': expected a non-empty string")


def test_duplicate_id_names_the_second_line(tmp_path):
    path = split_file(tmp_path, "ppo")
    row = hh_row("ppo", 0)
    write_lines(path, [json.dumps(row), "", "", json.dumps(hh_row("ppo", 1)), json.dumps(row)])
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "ppo")
    assert str(info.value).startswith(
        f"{path}, line 5: field 'id': expected an id not used earlier in the file, got 'hh-rlhf-ppo-00000'")


def test_malformed_json_names_file_and_line(tmp_path):
    path = split_file(tmp_path, "eval")
    write_lines(path, [json.dumps(hh_row("eval", 0)), "", '{"id": "x", "split": '])
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "eval")
    assert str(info.value).startswith(f"{path}, line 3: not valid JSON")


def test_non_object_line_names_file_and_line(tmp_path):
    path = split_file(tmp_path, "eval")
    write_lines(path, ["", json.dumps(hh_row("eval", 0)), '["not", "a", "row"]'])
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "eval")
    assert str(info.value) == f"{path}, line 3: expected a JSON object, got list"


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_split_file(tmp_path, content):
    path = split_file(tmp_path, "sft")
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "sft")
    assert str(info.value) == f"{path}: no rows; rebuild the dataset with notebook 01"


def test_missing_split_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_split(tmp_path, "rm")


def test_unknown_split_name(tmp_path):
    with pytest.raises(ValueError, match=r"split: 'train' is not a split; choose one of sft, rm, ppo, eval"):
        load_split(tmp_path, "train")


# ---------------------------------------------------------------------------
# Building rows, demonstrations, manifest
# ---------------------------------------------------------------------------

def test_build_rows_for_the_tiny_generated_profile():
    config = DataConfig.from_profile("tiny")
    rows, skipped = build_rows(config)
    assert skipped == {}
    assert {s: sum(r["split"] == s for r in rows) for s in SPLITS} == {"sft": 8, "rm": 16, "ppo": 8, "eval": 8}
    assert len({r["id"] for r in rows}) == 40
    assert len({prompt_text(r) for r in rows}) == 40
    for i, row in enumerate(rows):
        validate_row(row, f"row {i}")
        assert row["source"] == "generated"
        assert len(row["messages"]) == 1
        assert 1 <= len(row["constraints"]) <= 3
    eval_topics = {r["topic"] for r in rows if r["split"] == "eval"}
    assert eval_topics.isdisjoint(r["topic"] for r in rows if r["split"] != "eval")
    assert rows == build_rows(config)[0]  # deterministic


def test_build_rows_respects_constraint_bounds():
    rows, _ = build_rows(DataConfig.from_profile("tiny", min_constraints=2, max_constraints=2, seed=4))
    assert {len(r["constraints"]) for r in rows} == {2}


def test_demonstrations_from_data(real_rows, generated_rows):
    demos = demonstrations_from_data(real_rows + generated_rows)
    assert [d["id"] for d in demos] == ["hh-rlhf-sft-00000", "hh-rlhf-sft-00001", "instructions-sft-00000"]
    assert demos[0]["response"] == "About an hour, until it doubles in size."  # the chosen reply
    assert demos[0]["chosen"] == demos[0]["response"]
    assert demos[2]["response"] == "Red."
    assert all(d["split"] == "sft" for d in demos)
    assert "response" not in real_rows[0]  # the input rows are not modified


def test_demonstrations_prefer_a_response_over_chosen():
    row = hh_row("sft", 0, response="A human-written answer.")
    assert demonstrations_from_data([row])[0]["response"] == "A human-written answer."


def test_file_manifest_counts_rows(tmp_path, real_rows):
    save_splits(real_rows, tmp_path)
    (tmp_path / "notes.txt").write_text("not jsonl\n", encoding="utf-8")
    extra = tmp_path / "log.jsonl"
    extra.write_text('{"a": 1}\n\n{"a": 2}\n   \n', encoding="utf-8")
    manifest = file_manifest(tmp_path)
    assert list(manifest) == ["eval.jsonl", "log.jsonl", "ppo.jsonl", "rm.jsonl", "sft.jsonl"]
    assert {name: m["rows"] for name, m in manifest.items()} == {
        "eval.jsonl": 3, "log.jsonl": 2, "ppo.jsonl": 2, "rm.jsonl": 2, "sft.jsonl": 3}
    for name, entry in manifest.items():
        assert entry["sha256"] == sha256(tmp_path / name)
        assert len(entry["sha256"]) == 64


def test_file_manifest_of_an_empty_folder(tmp_path):
    assert file_manifest(tmp_path) == {}


def test_constraint_counts_and_prompt_text(generated_rows):
    counts = constraint_counts(generated_rows)
    assert list(counts) == list(SPLITS)
    for split in SPLITS:
        split_rows = [r for r in generated_rows if r["split"] == split]
        assert sum(counts[split].values()) == sum(len(r["constraints"]) for r in split_rows)
    row = hh_row("sft", 0)
    assert prompt_text(row) == "How long should it rise?"
