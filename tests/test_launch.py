"""The SFT, reward-model and DPO stages launched from a shell: ``accelerate launch -m helpers.train`` (one CPU process).

Each test copies the finished earlier stages of the tiny workbook run into a fresh run
folder, launches one stage as a subprocess, and checks that it trained (the trainer
logged its steps, the weights moved from their starting point), saved where the notebook
looks, wrote the very config.json the notebook wrote (so the notebook accepts the folder),
and left meta.json to the notebook. The DPO test then runs notebook 05 on the folder: it
must reuse the launched training and finish the stage. One test starts two CPU processes
with torchrun, to check that the reward stage refuses to sample under several processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.config import DPOStageConfig, ModelConfig, RewardStageConfig
from helpers.files import read_json, read_jsonl
from helpers.runs import StageConflict, open_stage
from helpers.train import dpo_stage_config, reward_stage_config

REPO_ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = Path(sys.executable).parent / "accelerate"


def launch(stage: str, run_dir: Path) -> subprocess.CompletedProcess:
    cmd = [str(ACCELERATE), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "helpers.train", stage,
           "--profile", "tiny", "--run-dir", str(run_dir)]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "RLHF_HEADLESS": "1"})


def copy_run(tiny_run: Path, target: Path, *stages: str) -> Path:
    for stage in stages:
        shutil.copytree(tiny_run / stage, target / stage)
    return target


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_trained_and_accepted(result, stage_dir: Path, notebook_stage_dir: Path) -> dict:
    """The launch succeeded, logged one loss per step, wrote the notebook's own config.json and no meta.json."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = read_json(stage_dir / "train_summary.json")
    assert summary["steps"] >= 1
    assert result.stdout.count("{'loss': ") == summary["steps"]  # the trainer's log, one line a step
    assert read_json(stage_dir / "config.json") == read_json(notebook_stage_dir / "config.json")
    assert open_stage(stage_dir, read_json(notebook_stage_dir / "config.json")).state == "resuming"
    assert not (stage_dir / "meta.json").exists()
    return summary


def test_stage_configs_refuse_stale_inputs():
    model, data_meta = ModelConfig.from_profile("tiny"), {"files": {"rm.jsonl": {"sha256": "a"}}}
    sft_meta = {"config": {"data_files": {"rm.jsonl": {"sha256": "b"}}}, "finished": "t1"}
    with pytest.raises(StageConflict, match="re-run notebook 02"):
        reward_stage_config(RewardStageConfig.from_profile("tiny"), model, data_meta, sft_meta)
    reward_meta = {"config": {"sft_finished": "t0"}, "finished": "t2"}
    with pytest.raises(StageConflict, match="re-run notebook 03"):
        dpo_stage_config(DPOStageConfig.from_profile("tiny"), model, sft_meta, reward_meta)


def test_device_map_is_unchanged_in_one_process():
    from helpers.models import device_map

    assert device_map("cpu") == {"": "cpu"}
    assert device_map("cuda") == {"": "cuda"}  # one process: no per-process GPU index


def test_missing_earlier_stage_names_the_notebook(tmp_path, capsys):
    from helpers.train import main

    assert main(["reward", "--profile", "tiny", "--run-dir", str(tmp_path)]) == 1
    assert "run notebook 01_instruction_data.ipynb first" in capsys.readouterr().err
    assert not (tmp_path / "reward").exists()


@pytest.mark.notebook
def test_launched_sft_trains_the_adapter_the_notebook_reuses(tiny_run, tmp_path, capsys):
    run_dir = copy_run(tiny_run, tmp_path / "run", "data")
    result = launch("sft", run_dir)
    assert_trained_and_accepted(result, run_dir / "sft", tiny_run / "sft")
    lora_b = {k: v for k, v in tensors(run_dir / "sft" / "adapter" / "adapter_model.safetensors").items()
              if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # LoRA B starts at zero
    from helpers.train import main

    assert main(["sft", "--profile", "tiny", "--run-dir", str(run_dir)]) == 0  # trained: only points at notebook 02
    assert "02_supervised_finetuning.ipynb" in capsys.readouterr().out


@pytest.mark.notebook
def test_launched_reward_trains_on_the_notebooks_comparisons(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path / "run", "data", "sft")
    stage = run_dir / "reward"
    stage.mkdir()
    for name in ("config.json", "sft_samples.jsonl"):  # notebook 03's first cells ran: stage opened, answers drawn
        shutil.copy(tiny_run / "reward" / name, stage / name)
    result = launch("reward", run_dir)
    assert_trained_and_accepted(result, stage, tiny_run / "reward")
    for name in ("comparisons_train.jsonl", "comparisons_heldout.jsonl"):  # formed as notebook 03 forms them
        assert read_jsonl(stage / name) == read_jsonl(tiny_run / "reward" / name)
    assert len(read_jsonl(stage / "heldout_scored.jsonl")) == len(read_jsonl(stage / "comparisons_heldout.jsonl"))
    head = tensors(stage / "model" / "score_head.safetensors")["weight"]
    assert head.abs().sum() > 0  # the score head starts at zero
    assert read_json(stage / "model" / "normalisation.json")["n"] > 0


@pytest.mark.notebook
def test_reward_under_several_processes_refuses_to_sample(tiny_run, tmp_path):
    # ``accelerate launch --cpu`` starts one process whatever --num_processes says; torchrun starts two (DDP over gloo).
    run_dir = copy_run(tiny_run, tmp_path / "run", "data", "sft")
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "-m", "helpers.train", "reward",
           "--profile", "tiny", "--run-dir", str(run_dir)]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "RLHF_HEADLESS": "1"})
    assert result.returncode != 0
    assert result.stderr.count("one process's work: run notebook 03") == 1  # said once, by the main process
    assert not (run_dir / "reward" / "sft_samples.jsonl").exists()


@pytest.mark.notebook
def test_launched_dpo_trains_the_top_layers_and_the_notebook_finishes_the_stage(tiny_run, tmp_path):
    from helpers.runner import execute_notebook

    run_dir = copy_run(tiny_run, tmp_path / "run", "data", "sft", "reward")
    n_pairs = len(read_jsonl(run_dir / "reward" / "comparisons_train.jsonl"))
    result = launch("dpo", run_dir)
    summary = assert_trained_and_accepted(result, run_dir / "dpo", tiny_run / "dpo")
    cfg = DPOStageConfig.from_profile("tiny")
    assert summary["steps"] == -(-n_pairs // cfg.batch_size)
    sft = tensors(run_dir / "sft" / "adapter" / "adapter_model.safetensors")
    dpo = tensors(run_dir / "dpo" / "adapter" / "adapter_model.safetensors")
    assert dpo.keys() == sft.keys()
    top = cfg.trainable_layers
    n_layers = 1 + max(int(k.split(".layers.")[1].split(".")[0]) for k in sft)
    moved = {k for k in sft if not (sft[k] == dpo[k]).all()}
    assert moved and all(int(k.split(".layers.")[1].split(".")[0]) >= n_layers - top for k in moved)

    adapter_bytes = (run_dir / "dpo" / "adapter" / "adapter_model.safetensors").read_bytes()
    execute_notebook(REPO_ROOT / "notebooks" / "05_dpo.ipynb", run_dir / "notebooks" / "05_dpo.ipynb",
                     {"PROFILE": "tiny", "RUN_DIR": str(run_dir)}, REPO_ROOT / "notebooks")
    meta = read_json(run_dir / "dpo" / "meta.json")
    assert (meta["steps"], meta["train_pairs"]) == (summary["steps"], n_pairs)  # the launched training, reused
    assert (run_dir / "dpo" / "adapter" / "adapter_model.safetensors").read_bytes() == adapter_bytes
