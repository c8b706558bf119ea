"""The row schema of the prompt dataset: the split and source names, and validating a row against them.

``helpers.dataset`` describes the schema and saves and loads the splits; the names and the
checks live here, below it, so that the row builders (``helpers.instructions`` for generated
prompts, ``helpers.external`` for real data) can use them without importing ``helpers.dataset``,
which calls them.
"""

from __future__ import annotations

from typing import Any

from .constraints import validate as validate_constraint
from .files import DataError

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
