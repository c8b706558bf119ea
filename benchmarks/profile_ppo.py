"""One iteration of our PPO loop under torch.profiler: the top operators and the share of each phase.

    .venv/bin/python benchmarks/profile_ppo.py --run-dir runs/cpu [--settings benchmark|gpu] [--device auto|cpu|cuda]
    .venv/bin/python benchmarks/profile_ppo.py --shape llama3-8b --settings gpu --no-profile [--tokenizer-dir DIR]
        [--batch-size N] [--response-length N] [--minibatches N] [--ppo-epochs N] [--trainable-layers N]
        [--max-approx-kl X] [--advantage gae|rloo] [--samples-per-prompt K] [--out result.json]

What runs is notebook 04's loop itself, ``helpers.ppo.train_ppo`` on ``load_ppo_roles`` scored by
``reward_model_scores`` (as ``ppo_vs_trl.py``'s "ours" side), from a finished run's ``sft`` and ``reward``
adapters (``--run-dir``), or from a random-weight model of a named shape (``--shape``, see ``shapes.py``:
built into a temporary folder first; every response then runs to the token limit).

Settings (``--settings``, then any option given overrides them): ``benchmark`` is ppo_vs_trl.py's
(the cpu profile with batch 16, 48 tokens, 2 epochs of 2 minibatches, KL coefficient 0.05);
``gpu`` is the gpu profile's PPO (batch 64, minibatches of 16, 4 epochs, 128 tokens, all layers
trained). ``--max-approx-kl`` defaults to 0 here, so that no update stops early and every iteration
costs all its gradient steps, whatever the KL of these weights does.

Order of work, so that one-off costs stay out of the measurement:

1. a warm-up call of ``train_ppo`` with the same batch and minibatches but 8-token responses and one
   epoch: CUDA context, cuBLAS handles, bitsandbytes' kernels and the allocator's first blocks;
2. the measured call, with the profiler (default) or without it (``--no-profile``: the profiler's
   own overhead is then out of the seconds and the peak memory). With the profiler it runs two
   iterations under ``torch.profiler.schedule(wait=0, warmup=1, active=1, repeat=1)``: the first warms the
   tracer up (its first traced steps carry its start-up cost), the second is recorded;
   ``on_iteration`` calls ``prof.step()``, so the loop itself is the notebook's, not a copy.

Checkpoints are kept out: the measured call asks for one iteration more than it runs
(``stop_after``) and saves every 10**6 iterations, so ``train_ppo`` writes no checkpoint or snapshot
(only its few-KB metric log). An iteration's wall time is the time between two ``on_iteration``
calls; the phases (``time_rollout``, ``time_score``, ``time_update`` of the metric row) are shares of
it, and "other" is the rest (GAE, metric rows, the log). Each phase ends on a host synchronisation
(``.cpu()``, ``.item()``), so on a GPU its time includes its kernels.

Top operators are the 15 with the largest self time: CUDA (device) self time on a GPU, CPU self
time otherwise, each as a share of the recorded iteration's wall time (on a GPU the kernels are
listed beside the operators that launch them, as in torch's own table; a GPU that waits on Python
shows as small shares and a large "CPU time outside every operator"). This is how the bfloat16 LM
head on a CPU showed up: ``aten::copy_`` (PyTorch broadcasting the whole head per row for a
non-contiguous input) at the top, fixed by ``helpers.models.contiguous_lm_head``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # this checkout's helpers/, also where the project is not installed
    sys.path.insert(0, str(REPO_ROOT))

#: --settings: (profile, overrides) for PPOStageConfig.from_profile
SETTINGS = {
    "benchmark": ("cpu", {"batch_size": 16, "minibatch_size": 8, "ppo_epochs": 2, "max_new_tokens": 48,
                          "temperature": 1.0, "kl_coef": 0.05, "advantage": "gae",
                          "samples_per_prompt": 1}),  # ppo_vs_trl.py's defaults
    "gpu": ("gpu", {}),
}
TOP_OPERATORS = 15
WARMUP_TOKENS = 8
NEVER = 10**6  # save_every / snapshot_every: no checkpoint inside a measurement


def ppo_config(settings: str, batch_size: int | None = None, minibatches: int | None = None,
               response_length: int | None = None, ppo_epochs: int | None = None,
               trainable_layers: int | None = None, max_approx_kl: float = 0.0, advantage: str | None = None,
               samples_per_prompt: int | None = None):
    """The measured PPOStageConfig: ``settings``' profile and overrides, then the options given (None: unchanged)."""
    from helpers.config import PPOStageConfig

    profile, overrides = SETTINGS[settings]
    base = PPOStageConfig.from_profile(profile, **overrides)
    batch = batch_size or base.batch_size
    minibatch = batch // minibatches if minibatches else min(base.minibatch_size, batch)
    given = {"max_new_tokens": response_length, "ppo_epochs": ppo_epochs, "trainable_layers": trainable_layers,
             "advantage": advantage, "samples_per_prompt": samples_per_prompt}
    return PPOStageConfig.from_profile(profile, **{**overrides, **{k: v for k, v in given.items() if v is not None},
                                                   "batch_size": batch, "minibatch_size": minibatch,
                                                   "max_approx_kl": max_approx_kl,
                                                   "save_every": NEVER, "snapshot_every": NEVER})


def load_run(run_dir: Path, device: str):
    """(model_cfg, tokenizer, prompts, meta) of a run folder: its model config with ``device``, its PPO prompts."""
    from helpers.config import ModelConfig
    from helpers.dataset import load_split
    from helpers.models import load_tokenizer

    for needed in (run_dir / "sft" / "adapter", run_dir / "reward" / "model"):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: run notebooks 02 and 03 into {run_dir} first (or pass --shape)")
    meta = json.loads((run_dir / "data" / "meta.json").read_text())
    model_cfg = ModelConfig(**{**meta["config"]["model"], "device": device})
    return model_cfg, load_tokenizer(model_cfg), load_split(run_dir / "data", "ppo"), meta


def top_operators(prof, on_gpu: bool, wall_seconds: float, n: int = TOP_OPERATORS) -> list[dict]:
    """The ``n`` operators with the largest self time (device time on a GPU, else CPU), as shares of ``wall_seconds``.

    The profiler's own step annotation (``ProfilerStep#``) is left out: its self time is the CPU
    time outside every operator (Python, the tokenizer), which :func:`outside_operators` reports.
    """
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    rows = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:n]
    return [{"name": e.key, "calls": e.count,
             "self_cpu_seconds": round(e.self_cpu_time_total / 1e6, 4),
             "self_device_seconds": round(e.self_device_time_total / 1e6, 4) if on_gpu else None,
             "share": round(getattr(e, key) / 1e6 / wall_seconds, 4)} for e in rows]


def outside_operators(prof, wall_seconds: float) -> float:
    """Share of the iteration's wall time the CPU spent outside every operator: Python, tokenising, decoding."""
    steps = [e for e in prof.key_averages() if e.key.startswith("ProfilerStep")]
    return round(sum(e.self_cpu_time_total for e in steps) / 1e6 / wall_seconds, 4)


def measure(run_dir: Path, cfg, device: str = "auto", profile: bool = True) -> dict:
    """Load the run's PPO roles, warm up, then time (and profile) one iteration; returns the result dict."""
    import torch

    from helpers.models import resolve_precision
    from helpers.ppo import train_ppo
    from helpers.ppo_roles import load_ppo_roles, reward_model_scores
    from ppo_vs_trl import _versions

    model_cfg, tokenizer, prompts, meta = load_run(run_dir, device)
    t_load = time.perf_counter()
    roles = load_ppo_roles(model_cfg, run_dir / "sft" / "adapter", run_dir / "reward" / "model",
                           tokenizer.pad_token_id, trainable_layers=cfg.trainable_layers)
    device = next(roles.model.parameters()).device.type
    on_gpu = device == "cuda"
    load_seconds = time.perf_counter() - t_load
    def gpu_mb(counter: str) -> float | None:
        return round(getattr(torch.cuda, counter)() / 2**20, 1) if on_gpu else None

    gpu_after_load, gpu_load_peak = gpu_mb("memory_allocated"), gpu_mb("max_memory_allocated")

    def reward_fn(rows, texts):
        return reward_model_scores(roles, tokenizer, rows, texts)

    marks: list[float] = []  # perf_counter() before the measured call and after each of its iterations
    prof = None  # the profiler, once the measured call starts (None without one)

    def on_iteration(row, batch):
        if on_gpu:
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
        if prof is not None:
            prof.step()

    warm_cfg = dataclasses.replace(cfg, iterations=2, max_new_tokens=min(WARMUP_TOKENS, cfg.max_new_tokens),
                                   ppo_epochs=1)
    runs = 2 if profile else 1
    measured_cfg = dataclasses.replace(cfg, iterations=runs + 1)
    with tempfile.TemporaryDirectory(prefix="profile-ppo-") as stage_dir:
        t_warm = time.perf_counter()
        train_ppo(roles, tokenizer, prompts, warm_cfg, Path(stage_dir) / "warmup", reward_fn=reward_fn,
                  stop_after=1, progress=False)
        warmup_seconds = time.perf_counter() - t_warm
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_gpu else [])
        profiler = (torch.profiler.profile(activities=activities,
                                           schedule=torch.profiler.schedule(wait=0, warmup=1, active=1, repeat=1))
                    if profile else contextlib.nullcontext())
        marks.append(time.perf_counter())
        with profiler as prof:
            metrics = train_ppo(roles, tokenizer, prompts, measured_cfg, Path(stage_dir) / "measured",
                                reward_fn=reward_fn, on_iteration=on_iteration, stop_after=runs, progress=False)
    row = metrics[-1]
    wall = marks[-1] - marks[-2]
    phases = {name: row[f"time_{name}"] for name in ("rollout", "score", "update")}
    phases["other"] = max(0.0, wall - sum(phases.values()))
    response_tokens = row["response_length"] * cfg.batch_size
    shape = meta.get("shape")
    return {
        "run_dir": str(run_dir), "shape": shape, "weights": "random" if shape else "trained",
        "device": device, "gpu_name": torch.cuda.get_device_name() if on_gpu else None,
        "versions": _versions(), "precision": resolve_precision(model_cfg).as_dict(),
        "config": cfg.to_dict(), "profiled": profile,
        "load_seconds": round(load_seconds, 2), "warmup_seconds": round(warmup_seconds, 2),
        "iteration_seconds": round(wall, 3),
        "phase_seconds": {name: round(seconds, 3) for name, seconds in phases.items()},
        "phase_share": {name: round(seconds / wall, 4) for name, seconds in phases.items()},
        "episodes_per_second": cfg.batch_size / wall,
        "rollout_tokens_per_second": response_tokens / row["time_rollout"],
        "response_length_mean": row["response_length"], "eos_rate": row["eos_rate"],
        "gradient_steps": row["gradient_steps"], "expected_gradient_steps": cfg.ppo_epochs * cfg.minibatches,
        "gpu_after_load_mb": gpu_after_load, "gpu_load_peak_mb": gpu_load_peak,
        "gpu_iteration_peak_mb": gpu_mb("max_memory_allocated"),
        "top_operators": top_operators(prof, on_gpu, wall) if profile else None,
        "operators_by": ("self CUDA time" if on_gpu else "self CPU time") if profile else None,
        "outside_operators_share": outside_operators(prof, wall) if profile else None,
    }


def print_report(result: dict) -> None:
    cfg = result["config"]
    where = result["gpu_name"] or result["device"]
    source = (f"shape {result['shape']['name']} (random weights{'; ' + result['shape']['note'] if result['shape']['note'] else ''})"
              if result["shape"] else result["run_dir"])
    precision = result["precision"]
    weights = "NF4" if precision["load_in_4bit"] else "plain"
    print(f"\nOne PPO iteration on {where}: {source}; {weights} weights, {precision['compute_dtype']} compute")
    print(f"  batch {cfg['batch_size']}, minibatch {cfg['minibatch_size']}, {cfg['ppo_epochs']} epochs, "
          f"{cfg['max_new_tokens']} tokens, trainable_layers {cfg['trainable_layers']}; "
          f"{result['gradient_steps']} of {result['expected_gradient_steps']} gradient steps; "
          f"mean response {result['response_length_mean']:.1f} tokens, EOS rate {result['eos_rate']:.2f}"
          + ("; under the profiler" if result["profiled"] else ""))
    print(f"\n  {'phase':8s} {'seconds':>9s} {'share':>7s}")
    for name, seconds in result["phase_seconds"].items():
        print(f"  {name:8s} {seconds:9.3f} {100 * result['phase_share'][name]:6.1f}%")
    print(f"  {'total':8s} {result['iteration_seconds']:9.3f}")
    print(f"\n  {result['episodes_per_second']:.3f} episodes/s, {result['rollout_tokens_per_second']:.1f} response "
          f"tokens/s in the rollout; load {result['load_seconds']:.1f} s, warm-up {result['warmup_seconds']:.1f} s")
    if result["gpu_iteration_peak_mb"] is not None:
        print(f"  GPU memory (MB): after load {result['gpu_after_load_mb']:.0f}, load peak "
              f"{result['gpu_load_peak_mb']:.0f}, iteration peak {result['gpu_iteration_peak_mb']:.0f}")
    if result["top_operators"]:
        print(f"\n  Top {len(result['top_operators'])} operators by {result['operators_by']} "
              "(share of the iteration's wall time):")
        print(f"  {'operator':60s} {'calls':>8s} {'self CPU s':>10s} {'self CUDA s':>11s} {'share':>7s}")
        for op in result["top_operators"]:
            device_s = f"{op['self_device_seconds']:11.3f}" if op["self_device_seconds"] is not None else f"{'':11s}"
            print(f"  {op['name'][:60]:60s} {op['calls']:8d} {op['self_cpu_seconds']:10.3f} {device_s} "
                  f"{100 * op['share']:6.1f}%")
        print(f"  CPU time outside every operator (Python, tokeniser): {100 * result['outside_operators_share']:.1f}% "
              "of the iteration")


def free_gpu_cache() -> None:
    """Hand the building's memory back (the bfloat16 model is gone) and restart the peak counter, before loading."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run-dir", help="run folder with finished data/, sft/ and reward/ (default runs/cpu)")
    source.add_argument("--shape", help="a random-weight model of this shape (benchmarks/shapes.py SHAPES) instead")
    parser.add_argument("--tokenizer-dir", help="--shape: folder with the tokenizer files (default: the embedded model's)")
    parser.add_argument("--settings", choices=tuple(SETTINGS), default="benchmark",
                        help="benchmark: ppo_vs_trl.py's; gpu: the gpu profile's PPO")
    parser.add_argument("--batch-size", type=int, help="episodes per iteration")
    parser.add_argument("--response-length", type=int, help="response token limit")
    parser.add_argument("--minibatches", type=int, help="minibatches per PPO epoch")
    parser.add_argument("--ppo-epochs", type=int)
    parser.add_argument("--trainable-layers", type=int, help="train the top N layers' LoRA weights (0: all)")
    parser.add_argument("--max-approx-kl", type=float, default=0.0,
                        help="stop an update when approx KL exceeds this (default 0: never, so the cost is fixed)")
    parser.add_argument("--advantage", choices=("gae", "rloo"), help="gae: value model + GAE; rloo: k answers "
                        "per prompt as each other's baseline, no value passes (with --samples-per-prompt)")
    parser.add_argument("--samples-per-prompt", type=int, help="k answers per prompt in a batch")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="time the iteration without the profiler (seconds and peak memory without its overhead)")
    parser.add_argument("--out", help="also write the result as JSON to this file")
    args = parser.parse_args()
    cfg = ppo_config(args.settings, args.batch_size, args.minibatches, args.response_length, args.ppo_epochs,
                     args.trainable_layers, args.max_approx_kl, args.advantage, args.samples_per_prompt)
    with tempfile.TemporaryDirectory(prefix="shape-run-") as scratch:
        if args.shape:
            from shapes import build_shape_run

            t_build = time.perf_counter()
            run_dir = build_shape_run(args.shape, Path(scratch) / args.shape, args.tokenizer_dir, device=args.device)
            build_seconds = time.perf_counter() - t_build
            free_gpu_cache()
        else:
            run_dir, build_seconds = Path(args.run_dir or "runs/cpu").resolve(), None
        result = measure(run_dir, cfg, args.device, args.profile)
    result["build_seconds"] = None if build_seconds is None else round(build_seconds, 2)
    print_report(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
