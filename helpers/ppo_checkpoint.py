"""PPO checkpoints: everything needed to continue exactly where a run stopped.

``<stage>/checkpoints/iter-000012/`` holds

* ``trainable.safetensors`` -- the policy and value LoRA weights and the value head;
* ``optimizer.pt`` -- AdamW's state (tensors and numbers only; loaded with ``weights_only=True``);
* ``rng.safetensors`` -- the torch RNG state;
* ``state.json`` -- the iteration counter and the KL controller's state;
* ``metrics.jsonl`` -- the metric log up to that iteration.

A checkpoint is written into a hidden ``.tmp`` folder and renamed into place, so a run
killed mid-save leaves the previous checkpoint intact; resuming restores the newest one
and rewrites ``<stage>/metrics.jsonl`` from it, so the log continues without gaps or
duplicates. ``<stage>/snapshots/iter-000012/`` keeps the policy adapter alone (peft
format) every few iterations, for notebook 05's curves.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .files import read_json, read_jsonl, write_json, write_jsonl
from .ppo_roles import PPORoles, load_trainable, save_trainable

METRICS_FILE = "metrics.jsonl"


def checkpoint_dir(stage_dir: Path, iteration: int) -> Path:
    return Path(stage_dir) / "checkpoints" / f"iter-{iteration:06d}"


def write_metrics(stage_dir: Path, metrics: list[dict]) -> None:
    """The whole metric log, rewritten atomically (a few KB)."""
    write_jsonl(Path(stage_dir) / METRICS_FILE, metrics)


def read_metrics(stage_dir: Path) -> list[dict]:
    path = Path(stage_dir) / METRICS_FILE
    return read_jsonl(path) if path.exists() else []


def _replace_dir(staging: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def save_checkpoint(stage_dir: Path, iteration: int, roles: PPORoles, optimizer, controller, metrics: list[dict],
                    keep: int) -> Path:
    target = checkpoint_dir(stage_dir, iteration)
    staging = target.with_name(f".{target.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    save_trainable(roles, staging / "trainable.safetensors")
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    save_file({"torch": torch.get_rng_state()}, str(staging / "rng.safetensors"))
    write_jsonl(staging / METRICS_FILE, metrics)
    write_json(staging / "state.json", {"iteration": iteration, "kl_controller": controller.state_dict()})
    _replace_dir(staging, target)
    for old in sorted(target.parent.glob("iter-*"))[:-keep]:
        shutil.rmtree(old)
    return target


def latest_checkpoint(stage_dir: Path) -> Path | None:
    """The newest complete checkpoint (its ``state.json`` is written last), or None."""
    folder = Path(stage_dir) / "checkpoints"
    complete = [p for p in sorted(folder.glob("iter-*")) if (p / "state.json").exists()] if folder.is_dir() else []
    return complete[-1] if complete else None


def load_checkpoint(path: Path, roles: PPORoles, optimizer, controller) -> list[dict]:
    """Restore weights, optimiser, RNG and KL controller from ``path``; returns the metric log up to it."""
    state = read_json(path / "state.json")
    load_trainable(roles, path / "trainable.safetensors")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])
    controller.load_state_dict(state["kl_controller"])
    metrics = read_jsonl(path / METRICS_FILE)
    if len(metrics) != state["iteration"]:
        raise ValueError(f"{path}: the metric log has {len(metrics)} rows for {state['iteration']} iterations")
    print(f"Resuming PPO from {path.name} (iteration {state['iteration']})")
    return metrics


def save_policy_adapter(roles: PPORoles, target: Path) -> None:
    """The policy adapter alone, in peft format (``adapter_config.json`` + safetensors), written atomically.

    It loads like the SFT adapter: ``helpers.adapters.load_policy(model_cfg, target)``.
    """
    target = Path(target)
    staging = target.with_name(f".{target.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    roles.model.save_pretrained(staging, selected_adapters=["policy"], safe_serialization=True)
    inner = staging / "policy"  # peft writes a non-default adapter into a subfolder named after it
    for item in inner.iterdir():
        item.rename(staging / item.name)
    inner.rmdir()
    _replace_dir(staging, target)


def save_snapshot(stage_dir: Path, iteration: int, roles: PPORoles) -> Path:
    target = Path(stage_dir) / "snapshots" / f"iter-{iteration:06d}"
    target.parent.mkdir(parents=True, exist_ok=True)
    save_policy_adapter(roles, target)
    return target
