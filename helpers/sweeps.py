"""What the sweeps share (``benchmarks/ppo_sweep.py``, ``benchmarks/reward_sweep.py``): a try of other stage
settings on a finished run, in ``<run-dir>/<sweep>/<name>/``.

A try records its settings when it starts (``settings.json``; a name reused with other settings is
refused) and its result when it ends (``result.json``, plus a line in the sweep's ``results.jsonl``);
a finished try is printed, not retrained. The gold normalisation puts the simulated labeler on about
the reward model's scale, for PPO against the oracle (``helpers.ppo_roles.gold_reward``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .files import append_jsonl, read_json, read_jsonl, write_json
from .ppo_roles import mean_and_std
from .runs import require_inputs


def parse_overrides(settings: list[str]) -> dict:
    """``["seed=1", "adaptive_kl=true"]`` -> ``{"seed": 1, "adaptive_kl": True}`` (values read as JSON, else text)."""
    overrides = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set {setting!r}: expected NAME=VALUE, e.g. --set warmup_iterations=6")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    return overrides


def sweep_arguments(description: str, folder: str, config_class: str, argv: list[str] | None,
                    extra: dict[str, dict] | None = None):
    """The command line both sweeps share: --run-dir, --name (of a folder under ``<run-dir>/<folder>/``),
    --set, --threads; plus a sweep's own ``extra`` options (``{"--option": add_argument's keywords}``)."""
    parser = argparse.ArgumentParser(description=description)
    for option, keywords in (extra or {}).items():
        parser.add_argument(option, **keywords)
    parser.add_argument("--run-dir", required=True, help="a run whose notebooks 01-03 finished (generated data)")
    parser.add_argument("--name", required=True, help=f"folder name of this try under <run-dir>/{folder}/")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help=f"a {config_class} field to override (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return parser.parse_args(argv)


def start_try(out: Path, settings: dict) -> dict | None:
    """A finished try's result (printed), or None after recording ``settings`` for a new or resumed try;
    a name already used with other settings is refused."""
    settings = json.loads(json.dumps(settings))  # as stored
    if (out / "settings.json").exists() and read_json(out / "settings.json") != settings:
        raise SystemExit(f"{out} holds a try with other settings; pick another --name")
    if (out / "result.json").exists():
        result = read_json(out / "result.json")
        print(f"{out} is finished already (pick another --name to try again):\n{json.dumps(result, indent=2)}")
        return result
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "settings.json", settings)
    return None


def finish_try(out: Path, result: dict) -> dict:
    """Write ``result.json`` (the try is finished), add a line to the sweep's ``results.jsonl``, print it."""
    write_json(out / "result.json", result)
    append_jsonl(out.parent / "results.jsonl", [result])
    print(json.dumps(result, indent=2))
    return result


def as_setting(path: Path, run_dir: Path) -> str:
    """``path`` as a try's settings store it: relative to ``run_dir`` when inside it, so a moved run still matches."""
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)


def finished_stages(run_dir: Path) -> tuple[dict, dict, dict]:
    """The ``meta.json`` of notebooks 01, 02 and 03 in ``run_dir``; refused unless the data has a gold labeler."""
    metas = require_inputs(run_dir, "ppo")  # what notebook 04 reads
    data_meta, sft_meta, reward_meta = metas["data"], metas["sft"], metas["reward"]
    source = data_meta["config"]["data"]["source"]
    if source != "generated":
        raise SystemExit(f"{run_dir}: data source {source!r} has no gold labeler; the sweep needs generated data")
    return data_meta, sft_meta, reward_meta


def gold_normalisation(run_dir: Path) -> tuple[float, float]:
    """(mean, std) of the gold score of notebook 03's SFT answers (``reward/sft_samples.jsonl``, as judged
    there: cut-off answers gated): the offset and scale that put the gold reward on about the reward
    model's normalised scale (SFT answers: mean 0, std 1)."""
    path = run_dir / "reward" / "sft_samples.jsonl"
    scores = [sample["score"] for row in read_jsonl(path) for sample in row["samples"]]
    try:
        return mean_and_std(scores)
    except ValueError as err:
        raise SystemExit(f"{path}: {err} (expected notebook 03's judged SFT answers)") from None
