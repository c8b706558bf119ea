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

The split names and the row checks live in ``helpers.schema``, which the row builders
(``helpers.instructions``, ``helpers.external``) import; they are importable from here too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .external import build_external_rows
from .files import DataError, read_jsonl, sha256, write_jsonl
from .instructions import build_instruction_rows
from .schema import SPLITS, _expect, validate_row, validate_rows
from .schema import ROLES, SOURCES  # noqa: F401 (re-exported: they were defined here)


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
        rows = build_instruction_rows(config.split_sizes, seed=config.seed, min_constraints=config.min_constraints,
                                      max_constraints=config.max_constraints,
                                      eval_topic_fraction=config.eval_topic_fraction,
                                      kinds=config.constraint_kinds)
        return rows, {}
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
