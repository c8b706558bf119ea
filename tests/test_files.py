"""Tests for helpers.files: atomic writes, append-only logs, torn tails and line-numbered errors."""

import hashlib
import json
import os

import pytest

from helpers.files import (
    DataError,
    append_jsonl,
    read_json,
    read_jsonl,
    sha256,
    write_json,
    write_jsonl,
    write_text,
)


def names(folder):
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------

def test_write_text_creates_parents_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "a" / "b" / "note.txt"
    write_text(path, "hello\n")
    assert path.read_text(encoding="utf-8") == "hello\n"
    assert names(path.parent) == ["note.txt"]


def test_write_text_replaces_content(tmp_path):
    path = tmp_path / "note.txt"
    write_text(path, "a much longer first version\n")
    write_text(path, "short\n")
    assert path.read_text(encoding="utf-8") == "short\n"
    assert names(tmp_path) == ["note.txt"]


def test_write_json_content_is_indented_utf8_with_newline(tmp_path):
    path = tmp_path / "meta.json"
    obj = {"name": "café", "n": [1, 2], "nested": {"ok": True, "none": None}}
    write_json(path, obj)
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    assert "café" in text  # not \u00e9
    assert read_json(path) == obj
    assert names(tmp_path) == ["meta.json"]


def test_write_jsonl_one_object_a_line_and_replaces(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"id": i} for i in range(5)])
    write_jsonl(path, ({"id": i, "t": "ü"} for i in range(2)))  # a generator works too
    assert path.read_text(encoding="utf-8") == '{"id": 0, "t": "ü"}\n{"id": 1, "t": "ü"}\n'
    assert read_jsonl(path) == [{"id": 0, "t": "ü"}, {"id": 1, "t": "ü"}]
    assert names(tmp_path) == ["rows.jsonl"]


def test_write_jsonl_of_nothing_is_an_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    write_jsonl(path, [])
    assert path.read_bytes() == b""
    assert read_jsonl(path) == []


def test_failed_replace_keeps_previous_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "meta.json"
    write_json(path, {"version": 1})
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        write_json(path, {"version": 2})
    assert path.read_bytes() == before
    assert names(tmp_path) == ["meta.json"]


def test_interrupt_during_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "log.txt"
    write_text(path, "old\n")

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        write_text(path, "new\n")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert names(tmp_path) == ["log.txt"]


def test_unserialisable_object_keeps_previous_json(tmp_path):
    path = tmp_path / "meta.json"
    write_json(path, {"version": 1})
    with pytest.raises(TypeError):
        write_json(path, {"version": 2, "bad": object()})
    assert read_json(path) == {"version": 1}
    assert names(tmp_path) == ["meta.json"]


def test_unserialisable_record_keeps_previous_jsonl(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"id": 0}])
    with pytest.raises(TypeError):
        write_jsonl(path, [{"id": 1}, {"id": 2, "bad": {1, 2}}])
    assert read_jsonl(path) == [{"id": 0}]
    assert names(tmp_path) == ["rows.jsonl"]


# ---------------------------------------------------------------------------
# Append-only logs and torn tails
# ---------------------------------------------------------------------------

def test_append_jsonl_appends_lines(tmp_path):
    path = tmp_path / "sub" / "log.jsonl"
    append_jsonl(path, [{"id": 1}])
    append_jsonl(path, [{"id": 2}, {"id": 3}])
    append_jsonl(path, [])
    assert path.read_text(encoding="utf-8") == '{"id": 1}\n{"id": 2}\n{"id": 3}\n'
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}, {"id": 3}]


def write_torn_log(path):
    append_jsonl(path, [{"id": 1, "text": "first"}, {"id": 2, "text": "second"}])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"id": 3, "te')  # a write cut off by a kill: no closing brace, no newline
    return '{"id": 1, "text": "first"}\n{"id": 2, "text": "second"}\n'


def test_torn_last_line_raises_without_tolerance(tmp_path):
    path = tmp_path / "log.jsonl"
    write_torn_log(path)
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}, line 3: not valid JSON")


def test_torn_last_line_is_dropped_and_file_truncated(tmp_path):
    path = tmp_path / "log.jsonl"
    complete = write_torn_log(path)
    assert read_jsonl(path, tolerate_partial_tail=True) == [{"id": 1, "text": "first"}, {"id": 2, "text": "second"}]
    assert path.read_text(encoding="utf-8") == complete
    append_jsonl(path, [{"id": 3, "text": "third"}])
    assert path.read_text(encoding="utf-8") == complete + '{"id": 3, "text": "third"}\n'
    assert [r["id"] for r in read_jsonl(path)] == [1, 2, 3]


def test_tolerance_is_only_for_the_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": 1}\n{"id": 2, "te\n{"id": 3}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r", line 2: not valid JSON"):
        read_jsonl(path, tolerate_partial_tail=True)
    # A malformed last line that *does* end in a newline was fully written: not a torn tail either.
    path.write_text('{"id": 1}\n{"id": 2, "te\n', encoding="utf-8")
    with pytest.raises(DataError, match=r", line 2: not valid JSON"):
        read_jsonl(path, tolerate_partial_tail=True)
    assert path.read_text(encoding="utf-8") == '{"id": 1}\n{"id": 2, "te\n'  # untouched


def test_tolerant_read_of_a_clean_file_changes_nothing(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"id": 1}, {"id": 2}])
    before = path.read_bytes()
    assert read_jsonl(path, tolerate_partial_tail=True) == [{"id": 1}, {"id": 2}]
    assert path.read_bytes() == before


def test_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1}\n\n   \n{"id": 2}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}, line 5: not valid JSON")


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('\n{"id": 1}\n\n{"id": 2}\n\n', encoding="utf-8")
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}]


@pytest.mark.parametrize("line, kind", [("[1, 2]", "list"), ('"text"', "str"), ("3", "int"), ("null", "NoneType")])
def test_non_object_line_raises(tmp_path, line, kind):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_jsonl(path, tolerate_partial_tail=True)
    assert str(info.value) == f"{path}, line 2: expected a JSON object, got {kind}"


def test_missing_file_raises_data_error(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}: file not found"


def test_read_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "a": 1,\n  oops\n}\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_json(path)
    assert str(info.value).startswith(f"{path}: not valid JSON")
    assert "at line 3" in str(info.value)


def test_torn_tail_inside_a_utf8_character_is_tolerated(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"id": 1, "text": "café"}])
    with open(path, "ab") as f:
        f.write('{"id": 2, "text": "café'.encode("utf-8")[:-1])  # cut between the two bytes of "é"
    assert read_jsonl(path, tolerate_partial_tail=True) == [{"id": 1, "text": "café"}]
    assert path.read_text(encoding="utf-8") == '{"id": 1, "text": "café"}\n'


def test_complete_last_line_without_newline_then_append(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}', encoding="utf-8")
    assert read_jsonl(path, tolerate_partial_tail=True) == [{"id": 1}, {"id": 2}]
    append_jsonl(path, [{"id": 3}])
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_torn_tail_in_a_crlf_log(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"id": 1}\r\n{"id": 2}\r\n{"id": 3, "te')
    assert read_jsonl(path, tolerate_partial_tail=True) == [{"id": 1}, {"id": 2}]
    assert path.read_bytes() == b'{"id": 1}\r\n{"id": 2}\r\n'


# ---------------------------------------------------------------------------
# Hashes
# ---------------------------------------------------------------------------

def test_sha256_of_known_bytes(tmp_path):
    path = tmp_path / "abc.bin"
    path.write_bytes(b"abc")
    assert sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert sha256(empty) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_sha256_of_a_file_larger_than_one_block(tmp_path):
    data = bytes(range(256)) * 5000  # 1.28 MB: more than the 1 MiB read block
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert sha256(path) == hashlib.sha256(data).hexdigest()
