"""The prompt dataset: its row schema, its four splits, and saving/loading them with validation.

Every row, whatever its source, has::

    id        unique string
    split     "sft" | "rm" | "ppo" | "eval"
    source    "generated" | "hh-rlhf" | "instructions"
    messages  the conversation so far, [{"role": "user"|"assistant"|"system", "content": str}, ...],
              ending with a user turn: what the model answers

Rows from the instruction generator (``source == "generated"``) add ``task``,
``topic``, ``topic_keywords`` and ``constraints`` -- what the simulated labeler
needs. Rows from real data may add ``chosen``/``rejected`` (a human preference)
or ``response`` (a human demonstration).

Splits follow InstructGPT's three datasets plus a held-out evaluation set:
``sft`` (demonstrations), ``rm`` (comparisons), ``ppo`` (RL prompts) and
``eval``. They are disjoint by prompt; for generated data the evaluation topics
are held out entirely.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .files import DataError, read_jsonl, sha256, write_jsonl

SPLITS = ("sft", "rm", "ppo", "eval")
SOURCES = ("generated", "hh-rlhf", "instructions")
ROLES = ("system", "user", "assistant")


def _expect(condition: bool, where: str, field: str, expected: str, value: Any = None) -> None:
    if not condition:
        got = "" if value is None else f", got {value!r}"[:120]
        raise DataError(f"{where}: field '{field}': expected {expected}{got}")


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def validate_row(row: dict, where: str) -> None:
    """Raise DataError naming ``where`` (file and line) and the field if ``row`` breaks the schema."""
    for name in ("id", "split", "source"):
        _expect(name in row, where, name, "a value (field missing)")
        _expect(_nonempty_str(row[name]), where, name, "a non-empty string", row[name])
    _expect(row["split"] in SPLITS, where, "split", f"one of {', '.join(SPLITS)}", row["split"])
    _expect(row["source"] in SOURCES, where, "source", f"one of {', '.join(SOURCES)}", row["source"])
    messages = row.get("messages")
    _expect(isinstance(messages, list) and len(messages) > 0, where, "messages", "a non-empty list of turns")
    for i, turn in enumerate(messages):
        field = f"messages[{i}]"
        _expect(isinstance(turn, dict), where, field, "an object with role and content")
        _expect(turn.get("role") in ROLES, where, f"{field}.role", f"one of {', '.join(ROLES)}", turn.get("role"))
        _expect(_nonempty_str(turn.get("content")), where, f"{field}.content", "a non-empty string")
    _expect(messages[-1]["role"] == "user", where, "messages", "a conversation ending with a user turn")
    if row["source"] == "generated":
        from .constraints import validate as validate_constraint

        for name in ("task", "topic"):
            _expect(_nonempty_str(row.get(name)), where, name, "a non-empty string", row.get(name))
        keywords = row.get("topic_keywords")
        _expect(isinstance(keywords, list) and keywords and all(_nonempty_str(k) for k in keywords),
                where, "topic_keywords", "a non-empty list of strings")
        constraints = row.get("constraints")
        _expect(isinstance(constraints, list) and constraints, where, "constraints", "a non-empty list")
        for i, spec in enumerate(constraints):
            _expect(isinstance(spec, dict), where, f"constraints[{i}]", "an object with a kind", spec)
            try:
                validate_constraint(spec)
            except ValueError as err:
                raise DataError(f"{where}: field 'constraints[{i}]': {err}") from None
    for name in ("chosen", "rejected", "response"):
        if name in row:
            _expect(_nonempty_str(row[name]), where, name, "a non-empty string", row[name])


def validate_rows(rows: list[dict], where: str) -> None:
    seen: set[str] = set()
    for i, row in enumerate(rows):
        validate_row(row, f"{where}, row {i}")
        _expect(row["id"] not in seen, f"{where}, row {i}", "id", "a unique id", row["id"])
        seen.add(row["id"])


def split_file(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.jsonl"


def save_splits(rows: list[dict], data_dir: str | Path) -> dict[str, int]:
    """Write one ``<split>.jsonl`` per split (atomically); returns the row count per split."""
    validate_rows(rows, "dataset to save")
    counts = {}
    for split in SPLITS:
        part = [r for r in rows if r["split"] == split]
        write_jsonl(split_file(data_dir, split), part)
        counts[split] = len(part)
    return counts


def load_split(data_dir: str | Path, split: str) -> list[dict]:
    """The validated rows of one split; a bad line raises DataError naming file, line and field."""
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not a split; choose one of {', '.join(SPLITS)}")
    path = split_file(data_dir, split)
    rows = read_jsonl(path)
    # read_jsonl skips blank lines, so count lines again to report true line numbers.
    numbers = [n for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1) if line.strip()]
    seen: set[str] = set()
    for row, number in zip(rows, numbers):
        where = f"{path}, line {number}"
        validate_row(row, where)
        _expect(row["split"] == split, where, "split", f"{split!r} (the file's split)", row["split"])
        _expect(row["id"] not in seen, where, "id", "an id not used earlier in the file", row["id"])
        seen.add(row["id"])
    if not rows:
        raise DataError(f"{path}: no rows; rebuild the dataset with notebook 01")
    return rows


def constraint_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Per split, how many prompts carry each constraint kind."""
    counts: dict[str, Counter] = {split: Counter() for split in SPLITS}
    for row in rows:
        for spec in row.get("constraints", []):
            counts[row["split"]][spec["kind"]] += 1
    return {split: dict(sorted(c.items())) for split, c in counts.items()}


def prompt_text(row: dict) -> str:
    """The last user turn: what a table shows as 'the prompt'."""
    return row["messages"][-1]["content"]


def build_rows(config) -> tuple[list[dict], dict[str, int]]:
    """The dataset's rows for a ``DataConfig``, and (for real data) a tally of records skipped and why."""
    if config.source == "generated":
        from .instructions import build_instruction_rows

        rows = build_instruction_rows(config.split_sizes, seed=config.seed, min_constraints=config.min_constraints,
                                      max_constraints=config.max_constraints,
                                      eval_topic_fraction=config.eval_topic_fraction,
                                      kinds=config.constraint_kinds)
        return rows, {}
    from .external import build_external_rows

    rows, skipped = build_external_rows(config.source, config.dataset, config.split_sizes, config.seed)
    return rows, dict(skipped)


def demonstrations_from_data(rows: list[dict]) -> list[dict]:
    """Demonstrations carried by real data: the human ``response``, or the ``chosen`` reply of a preference."""
    demos = []
    for row in rows:
        if row["split"] == "sft" and ("response" in row or "chosen" in row):
            demos.append({**row, "response": row.get("response", row.get("chosen"))})
    return demos


def file_manifest(folder: str | Path) -> dict[str, dict]:
    """``{file name: {"rows": lines, "sha256": digest}}`` for the JSONL files of a folder."""
    manifest = {}
    for path in sorted(Path(folder).glob("*.jsonl")):
        text = path.read_text(encoding="utf-8")
        manifest[path.name] = {"rows": sum(1 for line in text.split("\n") if line.strip()), "sha256": sha256(path)}
    return manifest
