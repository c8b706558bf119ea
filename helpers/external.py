"""Real data instead of generated instructions: human preferences (HH-RLHF) and human demonstrations.

Both go through ``datasets.load_dataset``: a Hub id when online, or a local file
(``.jsonl``, ``.jsonl.gz``, ``.json``, ``.parquet``, ``.csv``) offline.

* **HH-RLHF style** (Bai et al., 2022): each record has ``chosen`` and ``rejected``
  dialogues of ``\\n\\nHuman: ...`` / ``\\n\\nAssistant: ...`` turns that differ only
  in the last assistant turn. We split each into the shared conversation (the
  prompt, as chat ``messages``) and the two final replies.
* **Instruction/response** (Dolly: ``instruction``/``context``/``response``;
  Alpaca: ``instruction``/``input``/``output``): the instruction, with its context
  appended, becomes the user turn; the response is a demonstration.

Records that cannot be used -- a dialogue that does not parse, chosen and rejected
with different prompts or identical replies, an empty field -- are dropped and
counted in the returned ``skipped`` tally, never trained on.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections import Counter
from pathlib import Path

from .files import DataError
from .schema import SPLITS

_TURN = re.compile(r"\n\n(Human|Assistant): ")
INSTRUCTION_COLUMNS = {
    "dolly": ("instruction", "context", "response"),
    "alpaca": ("instruction", "input", "output"),
}


def load_records(dataset: str, split: str = "train"):
    """A ``datasets.Dataset`` from a Hub id or a local file."""
    from datasets import load_dataset  # lazy: datasets takes seconds to import; only reading real data needs it

    path = Path(dataset).expanduser()
    if path.exists():
        name = path.name.lower()
        kind = ("json" if ".json" in name else "parquet" if name.endswith(".parquet")
                else "csv" if name.endswith(".csv") else None)
        if kind is None:
            raise DataError(f"{path}: expected a .jsonl, .jsonl.gz, .json, .parquet or .csv file")
        if name.endswith((".jsonl", ".jsonl.gz")):
            check_json_lines(path)
        try:
            return load_dataset(kind, data_files=str(path), split="train")
        except Exception as err:  # datasets' DatasetGenerationError and the like name no line: add the file
            raise DataError(f"{path}: could not be read as a {kind} file ({type(err).__name__}: {err})") from err
    try:
        return load_dataset(dataset, split=split)
    except Exception as err:  # offline, unknown id, ...: say what to do
        raise DataError(
            f"Could not load dataset {dataset!r}: {err}. Offline, point DATASET at a local file "
            "(for example ../shared/datasets/hh-rlhf/harmless-base-test.jsonl.gz)."
        ) from err


def check_json_lines(path: Path) -> int:
    """Check that every non-blank line of a ``.jsonl`` (or ``.jsonl.gz``) file is a JSON object; return how many.

    ``datasets`` reports a bad line as an opaque ``DatasetGenerationError``; this names the file and the line.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    count = 0
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno}); "
                                    "expected one JSON object per line") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
                count += 1
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise DataError(f"{path}: cannot be read as UTF-8 JSON lines ({err})") from err
    return count


def parse_dialogue(text: str) -> list[dict]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> ``[{"role": "user", "content": "a"}, {"role": "assistant", ...}]``."""
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError("expected a dialogue of '\\n\\nHuman: ' / '\\n\\nAssistant: ' turns")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[speaker], "content": content.strip()} for speaker, content in zip(parts[1::2], parts[2::2])]


def preference_from_hh(record: dict) -> tuple[list[dict], str, str]:
    """(prompt messages, chosen reply, rejected reply) from one HH-RLHF record; ValueError if unusable."""
    for name in ("chosen", "rejected"):
        if not isinstance(record.get(name), str):
            raise ValueError(f"field '{name}': expected a dialogue string")
    chosen, rejected = parse_dialogue(record["chosen"]), parse_dialogue(record["rejected"])
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise ValueError("expected both dialogues to end with an assistant turn")
    if chosen[:-1] != rejected[:-1]:
        raise ValueError("chosen and rejected differ before their last assistant turn")
    prompt = chosen[:-1]
    if not prompt or any(not t["content"] for t in prompt) or prompt[-1]["role"] != "user":
        raise ValueError("expected a prompt ending with a non-empty human turn")
    if not chosen[-1]["content"] or not rejected[-1]["content"]:
        raise ValueError("empty final reply")
    if chosen[-1]["content"] == rejected[-1]["content"]:
        raise ValueError("identical chosen and rejected replies")
    return prompt, chosen[-1]["content"], rejected[-1]["content"]


def demonstration_from_instruction(record: dict, columns: tuple[str, str, str]) -> tuple[list[dict], str]:
    instruction_col, context_col, response_col = columns
    instruction = (record.get(instruction_col) or "").strip()
    context = (record.get(context_col) or "").strip()
    response = (record.get(response_col) or "").strip()
    if not instruction or not response:
        raise ValueError(f"empty '{instruction_col}' or '{response_col}'")
    content = f"{instruction}\n\n{context}" if context else instruction
    return [{"role": "user", "content": content}], response


def _assign_splits(items: list[dict], sizes: dict[str, int], seed: int, dataset: str) -> list[dict]:
    need = sum(sizes.values())
    if len(items) < need:
        raise DataError(f"{dataset}: {len(items)} usable records, but the splits ask for {need} ({sizes}); "
                        "lower n_sft/n_rm/n_ppo/n_eval")
    random.Random(seed).shuffle(items)
    rows, start = [], 0
    for split in SPLITS:
        for i, item in enumerate(items[start : start + sizes[split]]):
            rows.append({"id": f"{item['source']}-{split}-{i:05d}", "split": split, **item})
        start += sizes[split]
    return rows


def build_external_rows(source: str, dataset: str, sizes: dict[str, int], seed: int) -> tuple[list[dict], Counter]:
    """Rows for ``source`` ("hh-rlhf" or "instructions") from ``dataset``, split by ``sizes``; plus skip reasons."""
    records = load_records(dataset)
    skipped: Counter = Counter()
    items, seen_prompts = [], set()
    if source == "instructions":
        columns = next((cols for cols in INSTRUCTION_COLUMNS.values() if {cols[0], cols[2]} <= set(records.column_names)),
                       None)
        if columns is None:
            raise DataError(f"{dataset}: columns {records.column_names} match no known instruction format; expected "
                            + " or ".join(f"{c[0]}/{c[1]}/{c[2]}" for c in INSTRUCTION_COLUMNS.values()))
    elif source == "hh-rlhf":
        missing = {"chosen", "rejected"} - set(records.column_names)
        if missing:
            raise DataError(f"{dataset}: missing column(s) {sorted(missing)}; HH-RLHF records have chosen and rejected")
    else:
        raise ValueError(f"source: {source!r} is not a real-data source; choose hh-rlhf or instructions")
    for record in records:
        try:
            if source == "hh-rlhf":
                messages, chosen, rejected = preference_from_hh(record)
                item = {"source": source, "messages": messages, "chosen": chosen, "rejected": rejected}
            else:
                messages, response = demonstration_from_instruction(record, columns)
                item = {"source": source, "messages": messages, "response": response}
        except ValueError as err:
            skipped[str(err)] += 1
            continue
        key = repr(item["messages"])
        if key in seen_prompts:  # keep splits disjoint by prompt
            skipped["duplicate prompt"] += 1
            continue
        seen_prompts.add(key)
        items.append(item)
    return _assign_splits(items, sizes, seed, dataset), skipped
