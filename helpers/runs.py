"""Run folders and stage folders: where artifacts go, and how a stage resumes or refuses to overwrite.

A run folder (``runs/<profile>/`` by default) holds one folder per stage
(``data/``, later ``sft/``, ``reward/``, ``ppo/``, ``eval/``) and the executed
notebooks. Each stage folder follows one protocol (after nanoGPT/nanochat's
small metadata file beside each checkpoint):

* ``config.json`` is written when the stage starts. Re-running with the same
  config resumes from whatever the stage logged; a different config is refused,
  naming the fields that differ, unless the user asks to overwrite.
* ``meta.json`` is written last, atomically, when the stage finishes: config,
  metrics, package versions and input manifest. Its presence means "finished":
  a finished stage with the same config is reused, never recomputed or
  silently overwritten.
* ``overwrite=True`` moves the old folder aside (``<name>.old-<time>``) rather
  than deleting it.
* A config field added to the code after a stage was made is read, in that
  stage's stored config, as the value that reproduces how it behaved
  (``FIELDS_ADDED_LATER``), so a new option does not make older stages look changed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .files import read_json, write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets", "pandas", "plotly")


class StageConflict(RuntimeError):
    """A stage folder holds work done with other settings."""


def default_run_dir(profile: str, run_dir: str | None = None) -> Path:
    """``run_dir`` if given, else ``runs/<profile>`` in the repository."""
    return Path(run_dir) if run_dir else REPO_ROOT / "runs" / profile


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process so far (the notebook's kernel), and peak CUDA memory if used, in MB."""
    import resource  # lazy: Unix-only module; runs stays importable where it is missing

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak = {"peak_rss_mb": round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Stage:
    """A stage folder and its state: ``fresh``, ``resuming`` or ``finished``."""

    path: Path
    state: str

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    def meta(self) -> dict:
        return read_json(self.path / "meta.json")

    def finish(self, meta: dict[str, Any]) -> None:
        """Write ``meta.json`` (the 'finished' mark) with versions and a timestamp added."""
        meta = {**meta, "config": read_json(self.path / "config.json"), "versions": package_versions(),
                "memory": peak_memory(), "finished": now()}
        write_json(self.path / "meta.json", meta)
        self.state = "finished"


FIELDS_ADDED_LATER: dict[str, dict[str, Any]] = {
    "data": {"constraint_kinds": []},  # every kind (as stored: JSON turns the tuple into a list)
    "reward": {"swapped_pairs": 0, "edit_pairs": 0},  # no relevance pairs, no edit pairs
    "ppo": {"warmup_iterations": 0},  # no warm-up
}
"""Per config section, fields added after runs were made, each with the value that means "as before it existed"."""


def with_added_fields(stored: dict) -> dict:
    """A stored stage config with the fields it predates filled in from ``FIELDS_ADDED_LATER``."""
    return {key: {**FIELDS_ADDED_LATER[key], **value} if key in FIELDS_ADDED_LATER and isinstance(value, dict)
            else value for key, value in stored.items()}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``["data.n_candidates: 2 -> 3", ...]`` for the (nested) keys whose values differ."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found


def _move_aside(path: Path) -> Path:
    """Rename ``path`` to a free ``<name>.old-<time>[-k]`` beside it; returns the new path."""
    stamp = f"{path.name}.old-{dt.datetime.now():%Y%m%d-%H%M%S}"
    aside, k = path.with_name(stamp), 1
    while aside.exists():
        aside, k = path.with_name(f"{stamp}-{k}"), k + 1
    shutil.move(str(path), aside)
    print(f"Moved the previous {path.name}/ aside to {aside}")
    return aside


def open_stage(path: str | Path, config: dict[str, Any], *, overwrite: bool = False) -> Stage:
    """Open a stage folder for ``config``: reuse it if finished, resume it if started, else start it."""
    path = Path(path)
    config = json.loads(json.dumps(config))  # compare as stored: tuples become lists
    config_file = path / "config.json"
    if config_file.exists():
        previous = with_added_fields(read_json(config_file))
        if previous != config:
            if not overwrite:
                what = "a finished stage" if (path / "meta.json").exists() else "an unfinished stage"
                raise StageConflict(
                    f"{path} holds {what} built with other settings ("
                    + "; ".join(_differences(previous, config))
                    + "). Use another run folder (RUN_DIR), or set OVERWRITE=True to move the old one aside."
                )
            _move_aside(path)
        elif (path / "meta.json").exists():
            return Stage(path, "finished")
        else:
            return Stage(path, "resuming")
    elif path.exists() and any(path.iterdir()):
        if not overwrite:
            raise StageConflict(f"{path} is not empty but has no config.json; move it away or set OVERWRITE=True.")
        _move_aside(path)
    path.mkdir(parents=True, exist_ok=True)
    write_json(config_file, config)
    return Stage(path, "fresh")


def require_finished(path: str | Path, notebook: str) -> dict:
    """The ``meta.json`` of a finished earlier stage, or an error naming the notebook to run first."""
    meta_path = Path(path) / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} not found: run notebook {notebook} first (with the same RUN_DIR).")
    return read_json(meta_path)


@dataclass(frozen=True)
class StageSpec:
    """One stage of the workbook: the notebook that makes its folder and the earlier stages it reads."""

    notebook: str
    inputs: tuple[str, ...] = ()

    @property
    def number(self) -> str:
        return self.notebook[:2]


#: The stages in workbook order: folder name -> notebook and inputs. A stage is finished when its
#: folder holds ``meta.json``; a stage records what it was made from in its ``config.json``
#: (``data_files``: the manifest of ``data/``; ``<stage>_finished``: when that input finished).
STAGES: dict[str, StageSpec] = {
    "data": StageSpec("01_instruction_data.ipynb"),
    "sft": StageSpec("02_supervised_finetuning.ipynb", ("data",)),
    "reward": StageSpec("03_reward_model.ipynb", ("data", "sft")),
    "ppo": StageSpec("04_ppo.ipynb", ("data", "sft", "reward")),
    "dpo": StageSpec("05_dpo.ipynb", ("data", "sft", "reward")),
    "eval": StageSpec("06_evaluation.ipynb", ("data", "sft", "reward", "ppo", "dpo")),
}


def check_consistent(metas: dict[str, dict], run_dir: str | Path = "") -> None:
    """StageConflict when one of these finished stages was made from an older version of another.

    ``metas``: stage name -> its ``meta.json``. A stage whose config records ``data_files`` must match
    ``data``'s files now, and one that records ``<other>_finished`` must match when ``other`` finished:
    otherwise ``other`` was rebuilt since, and the stage must be made again.
    """
    for name, meta in metas.items():
        config, spec = meta.get("config", {}), STAGES[name]
        if name != "data" and "data" in metas and "data_files" in config \
                and config["data_files"] != metas["data"]["files"]:
            raise StageConflict(f"{Path(run_dir) / 'data'} changed after {name}/ was made from it: "
                                f"re-run notebook {spec.number} ({spec.notebook}) first.")
        for other, other_meta in metas.items():
            made_from = config.get(f"{other}_finished")
            if other != name and made_from is not None and made_from != other_meta["finished"]:
                raise StageConflict(f"{Path(run_dir) / other} was rebuilt after {name}/ was made from it: "
                                    f"re-run notebook {spec.number} ({spec.notebook}) first.")


def require_inputs(run_dir: str | Path, stage: str) -> dict[str, dict]:
    """The ``meta.json`` of every stage that ``stage`` reads (``STAGES``), each finished and made from the
    others as they are now; FileNotFoundError naming the notebook to run for a missing one,
    StageConflict naming the one to re-run for a stale one."""
    metas = {name: require_finished(Path(run_dir) / name, STAGES[name].notebook) for name in STAGES[stage].inputs}
    check_consistent(metas, run_dir)
    return metas


def environ_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")
