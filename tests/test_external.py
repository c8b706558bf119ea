"""Tests for helpers.external: HH-RLHF dialogues, Dolly/Alpaca records, and the real HH-RLHF sample."""

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from helpers.dataset import SPLITS, validate_row
from helpers.external import build_external_rows, parse_dialogue, preference_from_hh
from helpers.files import DataError

HH_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
HH_SIZES = {"sft": 50, "rm": 200, "ppo": 50, "eval": 100}

PROMPT = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: What is the capital of France?"
CHOSEN = PROMPT + "\n\nAssistant: Paris."
REJECTED = PROMPT + "\n\nAssistant: I don't know."


def split_counts(rows):
    return {s: sum(r["split"] == s for r in rows) for s in SPLITS}


def prompt_key(row):
    return json.dumps(row["messages"], sort_keys=True)


def assert_disjoint_prompts(rows):
    by_split = {s: {prompt_key(r) for r in rows if r["split"] == s} for s in SPLITS}
    assert sum(len(v) for v in by_split.values()) == len(rows)  # unique within and across splits


# ---------------------------------------------------------------------------
# HH-RLHF dialogues
# ---------------------------------------------------------------------------

def test_parse_dialogue():
    assert parse_dialogue(CHOSEN) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]


def test_parse_dialogue_keeps_inner_newlines_and_strips_edges():
    text = "\n\nHuman:   Two lines:\nfirst\nsecond  \n\nAssistant: Ok.\n"
    assert parse_dialogue(text) == [
        {"role": "user", "content": "Two lines:\nfirst\nsecond"},
        {"role": "assistant", "content": "Ok."},
    ]


@pytest.mark.parametrize("text", ["Just some text.", "", "Human: hi\n\nAssistant: hello",
                                  "preamble\n\nHuman: hi\n\nAssistant: hello"])
def test_parse_dialogue_rejects_non_dialogues(text):
    with pytest.raises(ValueError, match="expected a dialogue"):
        parse_dialogue(text)


def test_preference_from_hh():
    prompt, chosen, rejected = preference_from_hh({"chosen": CHOSEN, "rejected": REJECTED})
    assert prompt == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert (chosen, rejected) == ("Paris.", "I don't know.")


def test_preference_with_different_prompts():
    other = "\n\nHuman: Hi there\n\nAssistant: Hey.\n\nHuman: What is the capital of France?\n\nAssistant: Lyon."
    with pytest.raises(ValueError, match="differ before their last assistant turn"):
        preference_from_hh({"chosen": CHOSEN, "rejected": other})


def test_preference_with_identical_replies():
    with pytest.raises(ValueError, match="identical chosen and rejected replies"):
        preference_from_hh({"chosen": CHOSEN, "rejected": CHOSEN})


def test_preference_from_a_non_dialogue():
    with pytest.raises(ValueError, match="expected a dialogue"):
        preference_from_hh({"chosen": "Paris.", "rejected": "I don't know."})


@pytest.mark.parametrize(
    "record, message",
    [
        ({"chosen": CHOSEN}, "field 'rejected'"),
        ({"chosen": None, "rejected": REJECTED}, "field 'chosen'"),
        ({"chosen": PROMPT, "rejected": PROMPT}, "end with an assistant turn"),
        ({"chosen": PROMPT + "\n\nAssistant: ", "rejected": REJECTED}, "empty final reply"),
        ({"chosen": "\n\nAssistant: Hi.", "rejected": "\n\nAssistant: Hello."}, "prompt ending with a non-empty human"),
    ],
)
def test_preference_from_unusable_records(record, message):
    with pytest.raises(ValueError, match=message):
        preference_from_hh(record)


# ---------------------------------------------------------------------------
# Instruction/response records (Dolly, Alpaca) from a local file
# ---------------------------------------------------------------------------

def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def dolly_records():
    records = [
        {"instruction": f"Question number {i}?", "context": f"Background {i}." if i % 2 == 0 else "",
         "response": f"Answer {i}.", "category": "open_qa"}
        for i in range(10)
    ]
    records.append({"instruction": "Question with no answer?", "context": "", "response": "  ",
                    "category": "open_qa"})
    records.append({"instruction": "Question number 0?", "context": "Background 0.", "response": "Another answer.",
                    "category": "open_qa"})  # the same prompt as record 0
    return records


DOLLY_SIZES = {"sft": 4, "rm": 2, "ppo": 2, "eval": 2}


@pytest.fixture(scope="module")
def dolly(tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("dolly") / "dolly.jsonl", dolly_records())
    rows, skipped = build_external_rows("instructions", path, DOLLY_SIZES, seed=0)
    return path, rows, skipped


def test_dolly_rows_validate_and_fill_the_splits(dolly):
    _, rows, _ = dolly
    assert split_counts(rows) == DOLLY_SIZES
    for i, row in enumerate(rows):
        validate_row(row, f"row {i}")
        assert row["source"] == "instructions"
        assert len(row["messages"]) == 1 and row["messages"][0]["role"] == "user"
    assert [r["id"] for r in rows if r["split"] == "sft"] == [f"instructions-sft-{i:05d}" for i in range(4)]
    assert [r["id"] for r in rows if r["split"] == "eval"] == ["instructions-eval-00000", "instructions-eval-00001"]
    assert_disjoint_prompts(rows)


def test_dolly_context_is_appended_to_the_instruction(dolly):
    _, rows, _ = dolly
    by_answer = {r["response"]: r["messages"][0]["content"] for r in rows}
    assert len(by_answer) == 10
    for i in range(1, 10):
        expected = f"Question number {i}?\n\nBackground {i}." if i % 2 == 0 else f"Question number {i}?"
        assert by_answer[f"Answer {i}."] == expected
    # Record 0 and its duplicate share a prompt: the first one is kept.
    assert by_answer["Answer 0."] == "Question number 0?\n\nBackground 0."
    assert "Another answer." not in by_answer


def test_dolly_skipped_tally(dolly):
    _, _, skipped = dolly
    assert skipped == Counter({"empty 'instruction' or 'response'": 1, "duplicate prompt": 1})


def test_same_seed_same_rows_other_seed_other_assignment(dolly):
    path, rows, _ = dolly
    again, _ = build_external_rows("instructions", path, DOLLY_SIZES, seed=0)
    assert again == rows
    other, _ = build_external_rows("instructions", path, DOLLY_SIZES, seed=1)
    assert [r["response"] for r in other] != [r["response"] for r in rows]


def test_alpaca_records(tmp_path):
    records = [{"instruction": f"Translate sentence {i}.", "input": f"Bonjour {i}" if i < 3 else "",
                "output": f"Hello {i}"} for i in range(6)]
    records.append({"instruction": "", "input": "x", "output": "y"})
    path = write_jsonl(tmp_path / "alpaca.jsonl", records)
    rows, skipped = build_external_rows("instructions", path, {"sft": 3, "rm": 1, "ppo": 1, "eval": 1}, seed=2)
    assert split_counts(rows) == {"sft": 3, "rm": 1, "ppo": 1, "eval": 1}
    assert skipped == Counter({"empty 'instruction' or 'output'": 1})
    contents = {r["response"]: r["messages"][0]["content"] for r in rows}
    assert contents == {f"Hello {i}": f"Translate sentence {i}." + (f"\n\nBonjour {i}" if i < 3 else "")
                        for i in range(6)}
    assert_disjoint_prompts(rows)


def test_unknown_instruction_columns(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Why?", "answer": "Because."}] * 3)
    with pytest.raises(DataError) as info:
        build_external_rows("instructions", path, {"sft": 1, "rm": 1, "ppo": 0, "eval": 0}, seed=0)
    message = str(info.value)
    assert message.startswith(f"{path}: columns ['question', 'answer'] match no known instruction format")
    assert "instruction/context/response or instruction/input/output" in message


def test_hh_file_without_preference_columns(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": CHOSEN}])
    with pytest.raises(DataError, match=r"missing column\(s\) \['rejected'\]"):
        build_external_rows("hh-rlhf", path, {"sft": 1, "rm": 0, "ppo": 0, "eval": 0}, seed=0)


def test_too_few_records(dolly):
    path, _, _ = dolly
    with pytest.raises(DataError) as info:
        build_external_rows("instructions", path, {"sft": 8, "rm": 2, "ppo": 1, "eval": 0}, seed=0)
    message = str(info.value)
    assert message.startswith(f"{path}: 10 usable records, but the splits ask for 11")
    assert "lower n_sft/n_rm/n_ppo/n_eval" in message


def test_unknown_source(dolly):
    path, _, _ = dolly
    with pytest.raises(ValueError, match="source: 'generated' is not a real-data source"):
        build_external_rows("generated", path, DOLLY_SIZES, seed=0)


def test_unsupported_local_file_type(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"expected a \.jsonl, \.jsonl\.gz, \.json, \.parquet or \.csv file"):
        build_external_rows("instructions", str(path), DOLLY_SIZES, seed=0)


def test_a_malformed_json_line_names_the_file_and_the_line(tmp_path):
    good = json.dumps({"chosen": CHOSEN, "rejected": REJECTED})
    path = tmp_path / "hh.jsonl"
    path.write_text(f"{good}\n\n{good}\n{good[:-9]}\n{good}\n", encoding="utf-8")  # line 4 is cut short
    with pytest.raises(DataError, match=r"hh\.jsonl, line 4: not valid JSON \(.*\); expected one JSON object per line"):
        build_external_rows("hh-rlhf", str(path), {"sft": 1, "rm": 0, "ppo": 0, "eval": 0}, seed=0)
    packed = tmp_path / "hh.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as out:
        out.write(f"{good}\n[1, 2]\n")
    with pytest.raises(DataError, match=r"hh\.jsonl\.gz, line 2: expected a JSON object, got list"):
        build_external_rows("hh-rlhf", str(packed), {"sft": 1, "rm": 0, "ppo": 0, "eval": 0}, seed=0)
    instructions = tmp_path / "dolly.jsonl"
    instructions.write_text('{"instruction": "Say hi", "response": "Hi"}\n{"instruction": "oops"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"dolly\.jsonl, line 2: not valid JSON"):
        build_external_rows("instructions", str(instructions), {"sft": 1, "rm": 0, "ppo": 0, "eval": 0}, seed=0)


# ---------------------------------------------------------------------------
# The real HH-RLHF sample (harmless-base, test split)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hh():
    if not HH_SAMPLE.exists():
        pytest.skip(f"HH-RLHF sample not found at {HH_SAMPLE} (the shared datasets folder is not mounted)")
    return build_external_rows("hh-rlhf", str(HH_SAMPLE), HH_SIZES, seed=0)


def test_hh_sample_has_2312_records():
    if not HH_SAMPLE.exists():
        pytest.skip(f"HH-RLHF sample not found at {HH_SAMPLE}")
    with gzip.open(HH_SAMPLE, "rt", encoding="utf-8") as f:
        assert sum(1 for line in f if line.strip()) == 2312


def test_hh_rows_fill_the_splits_and_validate(hh):
    rows, _ = hh
    assert split_counts(rows) == HH_SIZES
    assert len({r["id"] for r in rows}) == 400
    for i, row in enumerate(rows):
        validate_row(row, f"hh row {i}")
        assert row["source"] == "hh-rlhf"
        assert row["messages"][-1]["role"] == "user"
        roles = [t["role"] for t in row["messages"]]
        assert set(roles) <= {"user", "assistant"}


def test_hh_rows_carry_a_real_preference(hh):
    rows, _ = hh
    for row in rows:
        assert row["chosen"].strip() and row["rejected"].strip()
        assert row["chosen"] != row["rejected"]
    assert all(r["chosen"] != r["rejected"] for r in rows if r["split"] == "rm")


def test_hh_splits_are_disjoint_by_prompt(hh):
    rows, _ = hh
    assert_disjoint_prompts(rows)


def test_hh_skipped_tally_is_small_and_known(hh):
    _, skipped = hh
    # 2312 records; 11 are unusable (known numbers for this fixed file).
    assert skipped == Counter({
        "chosen and rejected differ before their last assistant turn": 5,
        "empty final reply": 4,
        "duplicate prompt": 2,
    })
