"""Our PPO loop (helpers/ppo.py) against TRL 0.29.1's PPOTrainer: episodes per second and peak memory.

    .venv/bin/python benchmarks/ppo_vs_trl.py --iterations 3 [--which both|ours|trl] [--device auto|cpu|cuda]
                                              [--precision run|auto|nf4-float32|bfloat16|float32] [--out results.json]

Both sides start from the same base model (the run's, 4-bit NF4 for the policy), the same prompts (the first
batch_size x iterations of the run's ``ppo`` split, rendered with the chat template), batch size
16, responses of at most 48 tokens at temperature 1, 2 PPO epochs of 2 minibatches, KL coefficient
0.05. Each side runs in its own subprocess, so the peak resident memory of one does not leak into
the other; the child prints one JSON line on stdout, the parent prints a table.

* **ours**: ``helpers.ppo.train_ppo`` on ``load_ppo_roles`` -- one 4-bit base carrying four LoRA
  adapters (policy and reference from ``<run>/sft/adapter``, value and reward from
  ``<run>/reward/model``), scored by ``reward_model_scores``. It needs a run folder whose ``sft`` and
  ``reward`` stages finished (``--run-dir``, default ``runs/cpu``). The timed loop includes our
  per-iteration checkpoint writes; per-phase times come from the metric rows.
* **trl**: ``trl.experimental.ppo.PPOTrainer`` as TRL documents it: the policy is the 4-bit base with
  a fresh LoRA adapter (``peft_config``: r 16, alpha 32, all-linear, like our SFT adapter), the
  reference is the same model with the adapter disabled, and value and reward models are two full
  float32 ``AutoModelForSequenceClassification`` copies of the base (the value model trains all
  its weights). TRL 0.29.1 is pip-installed once, without dependencies, into
  ``.cache/trl-0.29.1`` (never into the venv, which keeps its own TRL for notebooks 02 and 03) and
  that folder goes first on the child's ``sys.path``.

Only the training loop is timed (model loading excluded): episodes/s = episodes / loop seconds.
Ours stops an iteration's update early when approx KL exceeds ``max_approx_kl`` (TRL never does);
the table shows the gradient steps taken, and ``--max-approx-kl 0`` makes both sides take them all.
"peak RSS" is ``ru_maxrss`` of the child at its end (model loading included); "loop peak" is the
high-water mark of the loop alone (``/proc/self/clear_refs`` resets it before the loop; Linux).
On a CUDA GPU (``--device auto`` picks it when torch sees one; ``cpu`` forces the CPU) the 4-bit
layers of both sides compute in bfloat16. Ours keeps everything in bfloat16; TRL keeps float32
weights outside its 4-bit layers and float32 value and reward models, without mixed precision
(``trl_config_kwargs`` says why). The table then adds peak GPU memory (``torch.cuda.max_memory_allocated``:
the whole child, and the loop alone after ``reset_peak_memory_stats``).
Quick smoke run: ``--iterations 1 --batch-size 4 --response-length 8``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TRL_VERSION = "0.29.1"
TRL_DIR = REPO_ROOT / ".cache" / f"trl-{TRL_VERSION}"
RESULT_KEY = "ppo_vs_trl_result"
#: --precision: the run's own choice, or one forced (to time the CPU paths against each other on one machine)
PRECISIONS = {"run": {}, "auto": {"load_in_4bit": "auto", "compute_dtype": "auto"},
              "nf4-float32": {"load_in_4bit": True, "compute_dtype": "float32"},
              "bfloat16": {"load_in_4bit": False, "compute_dtype": "bfloat16"},
              "float32": {"load_in_4bit": False, "compute_dtype": "float32"}}


# --------------------------------------------------------------------------------------------
# Helpers shared by both children
# --------------------------------------------------------------------------------------------

def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def _versions(trl_module=None) -> dict:
    import accelerate
    import bitsandbytes
    import peft
    import torch
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "peft": peft.__version__,
                "bitsandbytes": bitsandbytes.__version__, "accelerate": accelerate.__version__,
                "torch_threads": torch.get_num_threads()}
    if trl_module is not None:
        versions["trl"] = f"{trl_module.__version__} ({Path(trl_module.__file__).parent})"
    return versions


def _load_inputs(args):
    """(model_cfg, tokenizer, prompts): the run's model config and the first batch_size x iterations PPO prompts."""
    from helpers.config import ModelConfig
    from helpers.dataset import load_split
    from helpers.models import load_tokenizer

    run = Path(args.run_dir)
    meta = json.loads((run / "data" / "meta.json").read_text())
    model_cfg = ModelConfig(**{**meta["config"]["model"], "device": args.device, **PRECISIONS[args.precision]})
    tokenizer = load_tokenizer(model_cfg)
    prompts = load_split(run / "data", "ppo")
    needed = args.batch_size * args.iterations
    if len(prompts) < needed:
        raise SystemExit(f"{run}/data has {len(prompts)} PPO prompts; {needed} are needed (batch_size x iterations)")
    return model_cfg, tokenizer, prompts[:needed]


def _gpu_mb(measure: str, device: str) -> float | None:
    """``torch.cuda.<measure>()`` in MB on a CUDA run, else None (a CPU run on a GPU machine included)."""
    import torch

    return round(getattr(torch.cuda, measure)() / 2**20, 1) if device == "cuda" else None


def _start_loop_peaks(device: str) -> bool:
    """Reset the RSS high-water mark and, on CUDA, the GPU's peak-memory counter before the timed loop."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return _reset_peak_rss()


def _end_loop(device: str) -> float:
    """perf_counter() once queued GPU work is done (timings must not stop at an asynchronous launch)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _finish(result: dict, stdout) -> None:
    import torch

    result["peak_rss_mb"] = _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # Linux: kilobytes
    result["gpu_name"] = torch.cuda.get_device_name() if result["device"] == "cuda" else None
    stdout.write(json.dumps({RESULT_KEY: result}) + "\n")
    stdout.flush()


# --------------------------------------------------------------------------------------------
# Child: ours
# --------------------------------------------------------------------------------------------

def child_ours(args, stdout) -> None:
    from helpers.config import PPOStageConfig
    from helpers.ppo import train_ppo
    from helpers.ppo_roles import load_ppo_roles, reward_model_scores

    run = Path(args.run_dir)
    for needed in (run / "sft" / "adapter", run / "reward" / "model"):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: run notebooks 02 and 03 into {run} first (or pass --run-dir)")
    model_cfg, tokenizer, prompts = _load_inputs(args)
    cfg = PPOStageConfig.from_profile("cpu", iterations=args.iterations, batch_size=args.batch_size,
                                      minibatch_size=args.batch_size // args.minibatches, ppo_epochs=args.ppo_epochs,
                                      max_new_tokens=args.response_length, temperature=1.0, kl_coef=0.05,
                                      max_approx_kl=args.max_approx_kl, trainable_layers=args.trainable_layers,
                                      advantage="gae", samples_per_prompt=1)  # TRL's PPOTrainer has a critic
    t_load = time.perf_counter()
    roles = load_ppo_roles(model_cfg, run / "sft" / "adapter", run / "reward" / "model", tokenizer.pad_token_id,
                           trainable_layers=cfg.trainable_layers)
    device = next(roles.model.parameters()).device.type
    load_seconds = time.perf_counter() - t_load
    rss_loaded, gpu_loaded = _status_kb("VmRSS"), _gpu_mb("memory_allocated", device)
    gpu_load_peak = _gpu_mb("max_memory_allocated", device)
    loop_peak_ok = _start_loop_peaks(device)
    with tempfile.TemporaryDirectory(prefix="ppo-bench-ours-") as stage_dir:
        start = time.perf_counter()
        metrics = train_ppo(roles, tokenizer, prompts, cfg, stage_dir,
                            reward_fn=lambda rows, texts: reward_model_scores(roles, tokenizer, rows, texts),
                            progress=False)
        seconds = _end_loop(device) - start
    loop_peak = _status_kb("VmHWM") if loop_peak_ok else None
    episodes = len(metrics) * cfg.batch_size
    phases = {name: round(sum(row[f"time_{name}"] for row in metrics), 3) for name in ("rollout", "score", "update")}
    _finish({
        "impl": "ours", "versions": _versions(), "config": cfg.to_dict(),
        "episodes": episodes, "train_seconds": round(seconds, 3), "episodes_per_second": episodes / seconds,
        "load_seconds": round(load_seconds, 2), "rss_after_load_mb": _mb(rss_loaded), "loop_peak_rss_mb": _mb(loop_peak),
        "device": device, "gpu_after_load_mb": gpu_loaded, "gpu_load_peak_mb": gpu_load_peak,
        "gpu_loop_peak_mb": _gpu_mb("max_memory_allocated", device),
        "phase_seconds": phases,
        "iteration_seconds": [round(row["time_rollout"] + row["time_score"] + row["time_update"], 3) for row in metrics],
        "gradient_steps": sum(row["gradient_steps"] for row in metrics),
        "expected_gradient_steps": args.iterations * args.ppo_epochs * args.minibatches,
        "stopped_early": sum(bool(row["stopped_early"]) for row in metrics),
        "response_length_mean": sum(row["response_length"] for row in metrics) / len(metrics),
        "eos_rate": sum(row["eos_rate"] for row in metrics) / len(metrics),
    }, stdout)


# --------------------------------------------------------------------------------------------
# Child: TRL
# --------------------------------------------------------------------------------------------

def trl_config_kwargs(args, output_dir: str, device: str = "cpu") -> dict:
    """The PPOConfig of the TRL side (printed by the parent; mirrors our PPOStageConfig where TRL has the knob).

    ``bf16`` stays off on the GPU too: TRL 0.29.1 with ``bf16=True`` and a 4-bit peft policy casts the
    output layer to bfloat16 and the norms to float32 (``peft_module_casting_to_bf16``), then generates
    outside autocast and fails ("expected scalar type Float but found BFloat16", seen on an H100). So on
    the GPU its policy keeps float32 weights outside the 4-bit layers, whose matmuls compute in bf16.
    """
    return {
        "output_dir": output_dir,
        "per_device_train_batch_size": args.batch_size,  # episodes per iteration (world size 1)
        "gradient_accumulation_steps": 1,
        "num_mini_batches": args.minibatches,  # -> mini batch of batch_size / minibatches, one micro batch each
        "num_ppo_epochs": args.ppo_epochs,
        "total_episodes": args.batch_size * args.iterations,
        "local_rollout_forward_batch_size": args.batch_size,  # generate and score the whole batch at once
        "response_length": args.response_length,
        "temperature": 1.0,
        "stop_token": "eos",
        "missing_eos_penalty": 1.0,  # ours replaces the score of a no-EOS answer by -1; TRL subtracts a penalty
        "kl_coef": 0.05,
        "kl_estimator": "k1",
        "cliprange": 0.2,
        "cliprange_value": 0.2,
        "vf_coef": 0.1,
        "gamma": 1.0,
        "lam": 0.95,
        "whiten_rewards": False,
        "learning_rate": 1e-4,  # ours: PPOStageConfig.learning_rate
        "lr_scheduler_type": "constant",
        "adam_epsilon": 1e-5,  # ours: AdamW(eps=1e-5, weight_decay=0)
        "weight_decay": 0.0,
        "num_sample_generations": 0,  # no sample-completion tables during training
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": 1,
        "use_cpu": device != "cuda",
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,  # ours does not checkpoint activations either
        "seed": 0,
    }


def trl_lora_kwargs() -> dict:
    return {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear", "bias": "none",
            "task_type": "CAUSAL_LM"}


def child_trl(args, stdout) -> None:
    sys.path.insert(0, str(TRL_DIR))
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from helpers.generation import render_prompts
    from helpers.models import (device_map, load_model, provision_embedded_model, quantization_config, resolve_device,
                                resolve_model_path, resolve_precision)
    from helpers.config import EMBEDDED_MODEL

    if trl.__version__ != TRL_VERSION:
        raise SystemExit(f"imported trl {trl.__version__} from {trl.__file__}, expected {TRL_VERSION} from {TRL_DIR}")
    model_cfg, tokenizer, prompts = _load_inputs(args)
    if model_cfg.base_model == EMBEDDED_MODEL:
        provision_embedded_model()
    base_path = resolve_model_path(model_cfg.base_model)
    texts = render_prompts(tokenizer, [row["messages"] for row in prompts])
    dataset = Dataset.from_dict({"input_ids": [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]})

    class Clock(TrainerCallback):
        """Wall time of each PPO iteration (TRL calls on_step_end once per batch) and TRL's own log rows."""

        def __init__(self):
            self.marks, self.logs = [], []

        def on_train_begin(self, *_, **__):
            self.marks.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            self.marks.append(time.perf_counter())

        def on_log(self, _args, _state, _control, logs=None, **__):
            self.logs.append(dict(logs or {}))

    t_load = time.perf_counter()
    if resolve_device(model_cfg.device) == "cuda":  # 4-bit NF4 computing in bf16, float32 elsewhere (see above)
        policy = AutoModelForCausalLM.from_pretrained(
            base_path, quantization_config=quantization_config(resolve_precision(model_cfg)), dtype=torch.float32,
            device_map=device_map("cuda"))
    else:
        policy = load_model(model_cfg)  # the precision --precision chose (helpers.models.resolve_precision)
    device = policy.device.type
    value_model, reward_model = (
        AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1, dtype=torch.float32)
        for _ in range(2))
    for model in (value_model, reward_model):
        model.config.pad_token_id = tokenizer.pad_token_id
    with tempfile.TemporaryDirectory(prefix="ppo-bench-trl-") as output_dir:
        config_kwargs = trl_config_kwargs(args, output_dir, device)
        clock = Clock()
        trainer = PPOTrainer(args=PPOConfig(**config_kwargs), processing_class=tokenizer, model=policy, ref_model=None,
                             reward_model=reward_model, train_dataset=dataset, value_model=value_model,
                             peft_config=LoraConfig(**trl_lora_kwargs()), callbacks=[clock])
        load_seconds = time.perf_counter() - t_load
        rss_loaded, gpu_loaded = _status_kb("VmRSS"), _gpu_mb("memory_allocated", device)
        gpu_load_peak = _gpu_mb("max_memory_allocated", device)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        loop_peak_ok = _start_loop_peaks(device)
        start = time.perf_counter()
        trainer.train()
        seconds = _end_loop(device) - start
        loop_peak = _status_kb("VmHWM") if loop_peak_ok else None
        episodes = trainer.state.episode
    config_kwargs["output_dir"] = "<temporary folder>"
    rows = [row for row in clock.logs if "objective/scores" in row]
    eos = [row["val/num_eos_tokens"] / args.batch_size for row in rows if "val/num_eos_tokens" in row]
    _finish({
        "impl": "trl", "versions": _versions(trl), "config": config_kwargs, "lora": trl_lora_kwargs(),
        "episodes": episodes, "train_seconds": round(seconds, 3), "episodes_per_second": episodes / seconds,
        "load_seconds": round(load_seconds, 2), "rss_after_load_mb": _mb(rss_loaded), "loop_peak_rss_mb": _mb(loop_peak),
        "device": device, "gpu_after_load_mb": gpu_loaded, "gpu_load_peak_mb": gpu_load_peak,
        "gpu_loop_peak_mb": _gpu_mb("max_memory_allocated", device),
        "iteration_seconds": [round(b - a, 3) for a, b in zip(clock.marks, clock.marks[1:])],
        "gradient_steps": args.iterations * args.ppo_epochs * args.minibatches,  # TRL never stops an update early
        "trainable_parameters": trainable,
        # TRL logs only val/num_eos_tokens: EOS tokens in the raw responses, whose padding after a finished answer
        # is the generation config's pad id (SmolLM2's is its EOS id), so it is no share of finished answers (it
        # can exceed 1). Kept under its own name; TRL does not log an EOS rate.
        "eos_rate": None,
        "eos_tokens_per_episode": sum(eos) / len(eos) if eos else None,
    }, stdout)


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------

def trl_installed() -> bool:
    return (TRL_DIR / "trl" / "experimental" / "ppo" / "ppo_trainer.py").exists()


def ensure_trl(timeout: float = 300.0) -> None:
    """pip install --no-deps --target .cache/trl-0.29.1 trl==0.29.1, once (never into the venv).

    Without a reachable package index (a machine with no internet) pip would retry for minutes:
    one retry of 15 s per request, and SystemExit after ``timeout`` seconds in all.
    """
    if trl_installed():
        return
    print(f"Installing trl=={TRL_VERSION} into {TRL_DIR} (no dependencies, once) ...", flush=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--timeout", "15", "--retries", "1",
           "--target", str(TRL_DIR), f"trl=={TRL_VERSION}"]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"pip could not install trl=={TRL_VERSION} within {timeout:.0f} s (is a package index "
                         f"reachable?); copy {TRL_DIR} from a machine where it is installed")
    if result.returncode != 0:
        raise SystemExit(f"pip could not install trl=={TRL_VERSION}:\n{result.stderr.strip()[-1500:]}")


def run_child(which: str, args) -> dict:
    """Run one side in a fresh interpreter; its stderr streams through, its stdout carries the result line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", which, "--run-dir", args.run_dir,
           "--iterations", str(args.iterations), "--batch-size", str(args.batch_size),
           "--response-length", str(args.response_length), "--minibatches", str(args.minibatches),
           "--ppo-epochs", str(args.ppo_epochs), "--device", args.device, "--precision", args.precision]
    if args.max_approx_kl is not None:
        cmd += ["--max-approx-kl", str(args.max_approx_kl)]
    if args.trainable_layers is not None:
        cmd += ["--trainable-layers", str(args.trainable_layers)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
           "TRL_EXPERIMENTAL_SILENCE": "1"}
    print(f"\n=== {which}: {args.iterations} iteration(s) x {args.batch_size} episodes ===", flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
    for line in reversed(proc.stdout.splitlines()):
        try:
            payload = json.loads(line)
        except ValueError:
            continue
        if isinstance(payload, dict) and RESULT_KEY in payload:
            return payload[RESULT_KEY]
    raise SystemExit(f"the {which} child failed (exit code {proc.returncode}); its output is above")


def gpu_peak_mb(result: dict) -> float:
    """The child's peak GPU memory: the larger of the loading and the loop peaks."""
    return max(result["gpu_load_peak_mb"], result["gpu_loop_peak_mb"])


def print_report(results: list[dict]) -> None:
    print("\nVersions")
    for result in results:
        print(f"  {result['impl']:5s} " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    trl_result = next((r for r in results if r["impl"] == "trl"), None)
    if trl_result is not None:
        shown = {k: v for k, v in trl_result["config"].items() if k != "output_dir"}
        print(f"\nTRL PPOConfig: {shown}\nTRL LoraConfig: {trl_result['lora']}")
    header = (f"{'impl':5s} {'episodes':>8s} {'loop s':>8s} {'episodes/s':>10s} {'s/iter':>7s} {'grad steps':>10s} "
              f"{'peak RSS MB':>11s} {'loop peak MB':>12s} {'after load MB':>13s} {'load s':>7s}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        per_iter = r["train_seconds"] / max(1, len(r["iteration_seconds"]))
        print(f"{r['impl']:5s} {r['episodes']:8d} {r['train_seconds']:8.2f} {r['episodes_per_second']:10.3f} "
              f"{per_iter:7.2f} {r['gradient_steps']:10d} {r['peak_rss_mb'] or float('nan'):11.1f} "
              f"{r['loop_peak_rss_mb'] or float('nan'):12.1f} {r['rss_after_load_mb'] or float('nan'):13.1f} "
              f"{r['load_seconds']:7.2f}")
    for r in results:
        print(f"  {r['impl']} seconds per iteration: {r['iteration_seconds']}")
    gpu_results = [r for r in results if r.get("device") == "cuda"]
    if gpu_results:
        print(f"\nGPU memory on {gpu_results[0]['gpu_name']} (torch.cuda.max_memory_allocated, MB):")
        print(f"  {'impl':5s} {'peak':>9s} {'loop peak':>10s} {'load peak':>10s} {'after load':>11s}")
        for r in gpu_results:
            print(f"  {r['impl']:5s} {gpu_peak_mb(r):9.1f} {r['gpu_loop_peak_mb']:10.1f} {r['gpu_load_peak_mb']:10.1f} "
                  f"{r['gpu_after_load_mb']:11.1f}")
    ours = next((r for r in results if r["impl"] == "ours"), None)
    if ours is not None:
        phases = ours["phase_seconds"]
        total = sum(phases.values()) or 1.0
        print("\nOurs by phase (sum over iterations; the rest of the loop time is checkpoint writing):")
        for name, seconds in phases.items():
            print(f"  {name:8s} {seconds:8.2f} s  {100 * seconds / total:5.1f} %")
        print(f"  {'other':8s} {ours['train_seconds'] - total:8.2f} s")
        if ours["gradient_steps"] < ours["expected_gradient_steps"]:
            print(f"  note: {ours['stopped_early']} iteration(s) stopped their update early (approx KL > max_approx_kl): "
                  f"ours took {ours['gradient_steps']} of {ours['expected_gradient_steps']} gradient steps, TRL takes "
                  "them all (--max-approx-kl 0 turns our early stop off)")
    if len(results) == 2:
        a, b = results
        line = (f"\n{a['impl']} / {b['impl']} episodes/s: {a['episodes_per_second'] / b['episodes_per_second']:.2f}x; "
                f"peak RSS: {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x")
        if len(gpu_results) == 2:
            line += f"; peak GPU memory: {gpu_peak_mb(a) / gpu_peak_mb(b):.2f}x"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3, help="PPO iterations per side")
    parser.add_argument("--which", choices=("ours", "trl", "both"), default="both")
    parser.add_argument("--batch-size", type=int, default=16, help="episodes per iteration")
    parser.add_argument("--response-length", type=int, default=48, help="response token limit")
    parser.add_argument("--minibatches", type=int, default=2, help="minibatches per PPO epoch (16 / 2 = 8 episodes)")
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--max-approx-kl", type=float, default=None,
                        help="ours: stop an update when approx KL exceeds this (default: the cpu profile's; 0: never)")
    parser.add_argument("--trainable-layers", type=int, default=None,
                        help="ours: train the LoRA weights of only the top N layers (default: the cpu profile's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where both sides run (auto: the GPU when torch sees one)")
    parser.add_argument("--run-dir", default="runs/cpu", help="run folder with finished data/, sft/ and reward/")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="run",
                        help="base model precision: the run's (default), auto, or forced NF4/float32, plain bfloat16 "
                             "or plain float32")
    parser.add_argument("--out", help="also write the results as JSON to this file")
    parser.add_argument("--child", choices=("ours", "trl"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_size % args.minibatches:
        parser.error(f"--batch-size {args.batch_size} is not a multiple of --minibatches {args.minibatches}")
    args.run_dir = str(Path(args.run_dir) if Path(args.run_dir).is_absolute() else Path.cwd() / args.run_dir)

    if args.child:
        stdout, sys.stdout = sys.stdout, sys.stderr  # library chatter to stderr; stdout carries only the result
        (child_ours if args.child == "ours" else child_trl)(args, stdout)
        return

    sides = ["ours", "trl"] if args.which == "both" else [args.which]
    if "trl" in sides:
        ensure_trl()
    results = [run_child(side, args) for side in sides]
    print_report(results)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "child"},
                                              "results": results}, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
