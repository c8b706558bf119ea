"""Files that survive interruptions: atomic writes, append-only logs, JSONL with line-numbered errors.

* ``write_json`` / ``write_jsonl`` write to a temporary file in the same folder,
  fsync it, and ``os.replace`` it over the target: a reader sees the old file or
  the new one, never half of one.
* ``append_jsonl`` adds records to a log one line each, flushed and fsynced, so a
  killed process loses at most the line it was writing; ``read_jsonl(...,
  tolerate_partial_tail=True)`` drops such a torn last line when resuming.
* ``read_jsonl`` reports a malformed line as ``DataError("file, line N: ...")``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable


_UMASK = os.umask(0)
os.umask(_UMASK)


class DataError(ValueError):
    """Input that does not have the expected shape; the message names the file, line and field."""


def write_text(path: str | Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file ordinary permissions
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (for manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from err


def append_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Append records to a JSONL log, durably (flush + fsync). Lines end in ``\n`` on every platform."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path, *, tolerate_partial_tail: bool = False) -> list[dict]:
    """The JSON objects of a JSONL file, one a line (blank lines skipped).

    With ``tolerate_partial_tail`` -- for logs that a killed process may have been
    writing -- a last line without its newline is repaired: dropped (the file is
    truncated to its last complete line) when it does not parse, or completed with
    a newline when it does, so later appends always start on a fresh line.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    lines = raw.split(b"\n")  # the last element is b"" when the file ends with a newline
    records = []
    for number, line in enumerate(lines, start=1):
        is_unterminated_tail = number == len(lines) and line != b""
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if tolerate_partial_tail and is_unterminated_tail:
                with open(path, "r+b") as f:
                    f.truncate(len(raw) - len(line))
                break
            reason = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8"
            raise DataError(f"{path}, line {number}: not valid JSON ({reason})") from err
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
        if tolerate_partial_tail and is_unterminated_tail:
            with open(path, "ab") as f:
                f.write(b"\n")
    return records
