"""The one GPU script: every GPU measurement of issue 25 in one run of under 8 minutes, as JSON and a table.

    python benchmarks/gpu_check.py [--run-dir runs/cpu] [--tokenizer-dir DIR] [--out benchmarks/results/gpu_check.json]
    python benchmarks/gpu_check.py --dry-run       # every step on the CPU at tiny sizes (tests/test_gpu_bench.py)

Made for a short slot on a GPU machine that reaches no network, to be run once and re-run once.
Each step runs in its own process, under its own time limit and the run's overall budget
(``--budget``, 470 s); a step that fails, runs out of time or cannot run is recorded with the
reason and the next one starts. After every step the JSON file (``--out``) is rewritten, so a run
cut short keeps what it measured; every step's output goes to one log beside it (``.log``).

1. ``environment``: Python, torch, CUDA device, the library versions (a missing bitsandbytes shows here).
2. ``standin``: the model of steps 3-6. A ``--run-dir`` whose base model is on this machine is used
   as it is (trained adapters, real answers). Otherwise (the GPU machine: the converted 135M model is
   514 MB and cannot travel) ``shapes.py`` builds a random-weight model of SmolLM2-135M's shape with
   random adapters, the run's prompts when ``--run-dir`` has them, and responses that always run to
   the limit (``shapes.py`` says why). Its tokenizer comes from ``--tokenizer-dir`` (3.5 MB; default
   the embedded model's folder).
3. ``ppo_vs_trl_ours`` and 4. ``ppo_vs_trl_trl``: ``ppo_vs_trl.py`` at its benchmark config (batch 16,
   48 tokens, 3 iterations), one side per call so that one failing keeps the other. TRL 0.29.1 must
   be in ``.cache/trl-0.29.1``; where it is not and pip cannot install it within 90 s, the TRL
   side is skipped with that reason.
5. ``ppo_gpu_settings``: ``profile_ppo.py --no-profile`` at the gpu profile's PPO settings (batch 64,
   minibatches of 16, 4 epochs, 128 tokens, all layers trained): episodes/s and response tokens per
   second of rollout.
6. ``profile``: ``profile_ppo.py`` at the benchmark config: top operators and the share per phase.
7. ``shape_smollm2-1.7b`` and 8. ``shape_llama3-8b``: ``profile_ppo.py --shape ... --no-profile`` at the
   gpu profile's settings, NF4: seconds per phase and peak GPU memory. If the 8B shape runs out of
   GPU memory, ``shape_llama3-8b-small`` retries it at batch 16 in minibatches of 4.

``--dry-run`` runs the same steps on the CPU at tiny sizes (the ``tiny`` shape everywhere, batch 2,
4 tokens, minibatches of 1, one epoch), never uses ``--run-dir``'s model and never installs TRL:
the TRL side runs only if ``.cache/trl-0.29.1`` is there already.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:  # this checkout's helpers/, also where the project is not installed
    sys.path.insert(0, str(REPO_ROOT))

import ppo_vs_trl  # noqa: E402  (benchmarks/ is this script's own folder on sys.path)
import shapes  # noqa: E402

DEFAULT_OUT = BENCH_DIR / "results" / "gpu_check.json"
BUDGET_SECONDS = 470  # under 8 minutes with the interpreter's start and the table
TRL_INSTALL_SECONDS = 90
MIN_STEP_SECONDS = 20  # a step with less time left than this is skipped, not started
#: (seconds on a GPU, seconds in a dry run) per step
TIMEOUTS = {"environment": (60, 60), "standin": (120, 90), "ppo_vs_trl_ours": (150, 120),
            "ppo_vs_trl_trl": (180, 150), "ppo_gpu_settings": (150, 120), "profile": (150, 120),
            "shape_smollm2-1.7b": (180, 120), "shape_llama3-8b": (300, 120), "shape_llama3-8b-small": (240, 120)}
BENCHMARK = ["--iterations", "3", "--batch-size", "16", "--response-length", "48"]  # ppo_vs_trl.py's config
GPU_SETTINGS = ["--settings", "gpu", "--trainable-layers", "0"]  # batch 64 / 16, 4 epochs, 128 tokens: the profile's
DRY_SIZES = ["--batch-size", "2", "--response-length", "4", "--minibatches", "1", "--ppo-epochs", "1"]
SMALL_8B = ["--batch-size", "16", "--minibatches", "4"]  # the 8B shape again if the gpu settings run out of memory
OUT_OF_MEMORY = ("OutOfMemoryError", "CUDA out of memory")


@dataclass
class Step:
    name: str
    what: str  # one line for the table
    argv: list[str] = field(default_factory=list)
    out: Path | None = None  # the JSON file the command writes


def environment() -> dict:
    """What this machine runs: Python, torch and CUDA, and each library's installed version (or "missing").

    Versions are read from the installed metadata rather than by importing each library, which
    would take seconds apiece; an import that fails shows in the first step that needs it.
    """
    from importlib import metadata

    info = {"python": platform.python_version(), "executable": sys.executable,
            "trl_0.29.1": str(ppo_vs_trl.TRL_DIR) if ppo_vs_trl.trl_installed() else "absent"}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors", "tokenizers",
                 "datasets"):  # datasets: the TRL side's only
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "missing"
    import torch

    info["cuda"] = torch.cuda.is_available()
    if info["cuda"]:
        info.update(gpu=torch.cuda.get_device_name(), cuda_runtime=torch.version.cuda,
                    gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return info


def run_has_model(run_dir: Path) -> tuple[bool, str]:
    """Whether ``run_dir`` has its adapters and its base model here (nothing is downloaded), and why not."""
    from helpers.config import EMBEDDED_MODEL
    from helpers.models import embedded_model_dir

    for needed in (run_dir / "sft" / "adapter", run_dir / "reward" / "model", run_dir / "data" / "meta.json"):
        if not needed.exists():
            return False, f"{needed} is missing"
    base = json.loads((run_dir / "data" / "meta.json").read_text())["config"]["model"]["base_model"]
    if base == EMBEDDED_MODEL:
        there = (embedded_model_dir() / "provenance.json").exists()
        return there, "" if there else f"its base model {base} is not converted here ({embedded_model_dir()})"
    there = Path(base).expanduser().is_dir()
    return there, "" if there else f"its base model {base} is no folder here (and nothing is downloaded)"


class Checker:
    """Runs the steps one by one, within the budget, writing the JSON after each and the log as it goes."""

    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.out = Path(args.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.out.with_suffix(".log")
        self.log.write_text("")
        self.start = time.monotonic()
        self.deadline = self.start + args.budget
        self.report = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "dry_run": args.dry_run,
                       "budget_seconds": args.budget, "host": platform.node(), "source": None, "steps": {}}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRL_EXPERIMENTAL_SILENCE": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}

    def save(self) -> None:
        staging = self.out.with_suffix(".json.tmp")
        staging.write_text(json.dumps(self.report, indent=2))
        os.replace(staging, self.out)

    def record(self, step: Step, status: str, seconds: float = 0.0, **details) -> dict:
        entry = {"what": step.what, "status": status, "seconds": round(seconds, 1), **details}
        self.report["steps"][step.name] = entry
        self.save()
        elapsed = time.monotonic() - self.start
        reason = f": {details.get('error') or details.get('reason')}" if status != "ok" else ""
        print(f"[{elapsed:6.1f} s] {step.name}: {status} in {seconds:.1f} s{reason.splitlines()[0] if reason else ''}",
              flush=True)
        return entry

    def skip(self, step: Step, reason: str) -> dict:
        return self.record(step, "skipped", reason=reason)

    def run(self, step: Step) -> dict:
        """Run one step's command in its own process group; kill the group at its time limit."""
        limit = min(TIMEOUTS[step.name][1 if self.args.dry_run else 0], self.deadline - time.monotonic())
        if limit < MIN_STEP_SECONDS:
            return self.skip(step, f"the run's budget of {self.args.budget} s is spent")
        print(f"[{time.monotonic() - self.start:6.1f} s] {step.name}: {step.what} (limit {limit:.0f} s)", flush=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=REPO_ROOT, env=self.env, start_new_session=True)
        try:
            output, timed_out = proc.communicate(timeout=limit)[0], False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the step's own process group: ppo_vs_trl's children too
            output, timed_out = proc.communicate()[0], True
        seconds = time.monotonic() - t0
        with self.log.open("a") as log:
            log.write(f"\n===== {step.name}: {' '.join(step.argv)}\n{output}")
        tail = "\n".join(output.strip().splitlines()[-15:])
        if timed_out:
            return self.record(step, "error", seconds, error=f"timed out after {limit:.0f} s", output_tail=tail)
        if proc.returncode != 0 or (step.out is not None and not step.out.exists()):
            return self.record(step, "error", seconds, error=f"exit code {proc.returncode}", output_tail=tail)
        result = json.loads(step.out.read_text()) if step.out is not None else None
        return self.record(step, "ok", seconds, result=result)


def profile_ppo_argv(device: list[str], *options: str) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "profile_ppo.py"), *device, *options]


def run_steps(checker: Checker) -> None:
    """The steps of the module docstring, in order; each one's result or reason lands in ``checker.report``."""
    args, work, dry = checker.args, checker.work, checker.args.dry_run
    device = ["--device", "cpu" if dry else args.device]
    sizes = DRY_SIZES if dry else []
    tokenizer = ["--tokenizer-dir", args.tokenizer_dir] if args.tokenizer_dir else []

    checker.run(Step("environment", "Python, torch, CUDA device and library versions",
                     [sys.executable, str(Path(__file__).resolve()), "--environment", str(work / "environment.json")],
                     work / "environment.json"))

    # The model of the 135M steps: the run itself where its base model is here, else a random-weight stand-in.
    run_dir = Path(args.run_dir).resolve() if args.run_dir else None
    usable, why_not = run_has_model(run_dir) if run_dir and not dry else (False, "")
    standin_shape = "tiny" if dry else "smollm2-135m"
    if usable:
        checker.report["source"] = {"run_dir": str(run_dir), "weights": "trained"}
        checker.skip(Step("standin", "the run's own model"), f"{run_dir} has its base model here: the next steps use it")
    else:
        standin_dir = work / "standin"
        prompts = run_dir / "data" / "ppo.jsonl" if run_dir and (run_dir / "data" / "ppo.jsonl").exists() else None
        why = "dry run" if dry else (f"--run-dir {run_dir}: {why_not}" if run_dir else "no --run-dir")
        checker.report["source"] = {"run_dir": str(standin_dir), "weights": f"random ({standin_shape} shape)",
                                    "why": why, "prompts": str(prompts) if prompts else "generated (gpu profile)"}
        standin = checker.run(Step(
            "standin", shapes.describe(standin_shape),
            [sys.executable, str(BENCH_DIR / "shapes.py"), "--shape", standin_shape, "--out", str(standin_dir),
             *device, *tokenizer, *(["--prompts", str(prompts)] if prompts else [])],
            standin_dir / "data" / "meta.json"))
        run_dir = standin_dir if standin["status"] == "ok" else None

    no_model = "no model for the 135M steps (see standin)"
    benchmark = ["--iterations", "1", *DRY_SIZES] if dry else BENCHMARK
    for side in ("ours", "trl"):
        step = Step(f"ppo_vs_trl_{side}", f"ppo_vs_trl.py --which {side}, benchmark config", out=work / f"{side}.json")
        if run_dir is None:
            checker.skip(step, no_model)
            continue
        if side == "trl" and not ppo_vs_trl.trl_installed():
            if dry:
                checker.skip(step, f"{ppo_vs_trl.TRL_DIR} is absent and a dry run installs nothing")
                continue
            try:
                ppo_vs_trl.ensure_trl(timeout=TRL_INSTALL_SECONDS)
            except SystemExit as err:
                checker.skip(step, f"{ppo_vs_trl.TRL_DIR} is absent and could not be installed: {err}")
                continue
        step.argv = [sys.executable, str(BENCH_DIR / "ppo_vs_trl.py"), "--which", side, "--run-dir", str(run_dir),
                     *benchmark, *device, "--out", str(step.out)]
        checker.run(step)

    for step, options in (
            (Step("ppo_gpu_settings", "our PPO at the gpu profile's settings, no profiler",
                  out=work / "gpu_settings.json"), [*GPU_SETTINGS, "--no-profile"]),
            (Step("profile", "our PPO under torch.profiler, benchmark config", out=work / "profile.json"),
             ["--settings", "benchmark"])):
        if run_dir is None:
            checker.skip(step, no_model)
            continue
        step.argv = profile_ppo_argv(device, "--run-dir", str(run_dir), *options, *sizes, "--out", str(step.out))
        checker.run(step)

    for shape in ("smollm2-1.7b", "llama3-8b"):
        built = "tiny" if dry else shape
        step = Step(f"shape_{shape}", f"{shapes.describe(built)}; gpu profile's settings", out=work / f"{shape}.json")
        step.argv = profile_ppo_argv(device, "--shape", built, *tokenizer, *GPU_SETTINGS, "--no-profile", *sizes,
                                     "--out", str(step.out))
        entry = checker.run(step)
        if shape == "llama3-8b" and entry["status"] == "error" and any(
                marker in entry.get("output_tail", "") for marker in OUT_OF_MEMORY):
            small = Step("shape_llama3-8b-small", f"{shapes.describe(built)}; batch 16 in minibatches of 4",
                         out=work / "llama3-8b-small.json")
            small.argv = profile_ppo_argv(device, "--shape", built, *tokenizer, *GPU_SETTINGS, "--no-profile",
                                          *SMALL_8B, "--out", str(small.out))
            checker.run(small)


def _mb(value) -> str:
    return "-" if value is None else f"{value:,.0f} MB"


def summary(name: str, entry: dict) -> str:
    """One table cell: a step's headline numbers, or why it has none."""
    if entry["status"] != "ok":
        return (entry.get("error") or entry.get("reason") or "").replace("\n", " ").replace("|", "/")
    r = entry["result"]
    if name == "environment":
        gpu = f"{r['gpu']} ({r['gpu_memory_gb']} GB)" if r.get("cuda") else "no CUDA"
        missing = [name for name, version in r.items() if version == "missing"]
        return (f"{gpu}; torch {r['torch']}, transformers {r['transformers']}, peft {r['peft']}, bitsandbytes "
                f"{r['bitsandbytes']}" + (f"; missing: {', '.join(missing)}" if missing else ""))
    if name == "standin":
        return f"{r['shape']['name']}: {r['shape']['parameters'] / 1e6:,.0f}M parameters, random weights"
    if name.startswith("ppo_vs_trl"):
        r = r["results"][0]
        per_iteration = r["train_seconds"] / max(1, len(r["iteration_seconds"]))
        return (f"{r['episodes_per_second']:.2f} episodes/s, {per_iteration:.2f} s/iteration, "
                f"GPU peak {_mb(r.get('gpu_loop_peak_mb'))}")
    shares = ", ".join(f"{phase} {100 * share:.0f}%" for phase, share in r["phase_share"].items())
    cell = (f"{r['iteration_seconds']:.2f} s/iteration ({shares}); {r['episodes_per_second']:.2f} episodes/s, "
            f"{r['rollout_tokens_per_second']:,.0f} rollout tokens/s; GPU peak {_mb(r['gpu_iteration_peak_mb'])}")
    if r.get("top_operators"):
        top = r["top_operators"][0]
        cell += f"; top operator {top['name']} {100 * top['share']:.0f}%"
    return cell


def print_table(report: dict) -> None:
    print(f"\n| step | status | seconds | result |\n| --- | --- | ---: | --- |")
    for name, entry in report["steps"].items():
        print(f"| {name} | {entry['status']} | {entry['seconds']:.0f} | {summary(name, entry)} |")
    source = report["source"] or {}
    print(f"\nThe 135M steps ran on {source.get('weights')} weights"
          + (f" ({source['why']}; prompts {source['prompts']})" if source.get("why") else f" ({source.get('run_dir')})"))
    print(f"Shapes: random weights, every response runs to its token limit; llama3-8b: {shapes.SHAPE_NOTES['llama3-8b']}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", help="a finished run (its base model used if here; else its prompts only)")
    parser.add_argument("--tokenizer-dir", help="folder with the tokenizer files for the random-weight models "
                                                "(default: the embedded model's folder)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the results as JSON (the log goes beside it)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--budget", type=float, help=f"seconds for all steps (default {BUDGET_SECONDS}; dry run 300)")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes")
    parser.add_argument("--environment", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.environment:
        Path(args.environment).write_text(json.dumps(environment(), indent=2))
        return
    args.budget = args.budget or (300 if args.dry_run else BUDGET_SECONDS)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        checker = Checker(args, Path(work))
        run_steps(checker)
    checker.report["seconds"] = round(time.monotonic() - checker.start, 1)
    checker.save()
    print_table(checker.report)
    print(f"\nwrote {checker.out} and {checker.log} in {checker.report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
