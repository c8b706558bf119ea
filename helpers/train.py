"""Training the SFT, reward-model and DPO stages: shared by notebooks 02, 03 and 05 and by a script entry point.

The notebooks train in their own process on one device. The same stages also run
from a shell, where ``accelerate launch`` starts one process per GPU and TRL's
trainers train under DDP (or DeepSpeed), with no change to the code::

    accelerate launch --num_processes 2 -m helpers.train sft --profile gpu
    accelerate launch --num_processes 2 -m helpers.train reward --profile gpu
    accelerate launch --num_processes 2 -m helpers.train dpo --profile gpu

On CPU (one process; what the tests run)::

    accelerate launch --cpu --num_processes 1 -m helpers.train sft --profile tiny --run-dir runs/tiny

``python -m helpers.train ...`` is the same one process without accelerate. ``accelerate
launch --cpu`` starts one process whatever ``--num_processes`` says (several CPU processes
need MPI there); ``torchrun --nproc_per_node 2 -m helpers.train sft --profile tiny`` runs
two CPU processes under DDP (gloo), a way to try the multi-process path without GPUs.

Each command opens the stage folder with the very config the notebook would write
(the profile's defaults; the notebook's parameters left at None), trains with the
notebook's helper functions, resumes from the stage's last checkpoint, and saves what
marks training as done (``sft/adapter/``, ``reward/model/``, ``dpo/adapter/``) from the
main process only. It writes no ``meta.json``: then run the stage's notebook with the
same ``RUN_DIR``; it finds the trained weights, skips training, evaluates and finishes
the stage. The next stage's command needs that ``meta.json``, as the next notebook does.

Under N processes each one loads the 4-bit model onto its own GPU (see
``helpers.models.device_map``) and takes ``batch_size`` examples a step, so one
optimiser step sees N x ``batch_size`` examples and an epoch has N times fewer steps;
the learning rate is not rescaled. Sampling is one process's work: the reward stage
under several processes needs notebook 03's SFT answers already drawn (it says so).

DeepSpeed: answer ``accelerate config``'s questions (DeepSpeed, ZeRO stage 1 or 2) and
launch the same commands; they read that configuration. ZeRO-3 would shard the 4-bit
weights, which needs loading without a ``device_map``; ``helpers.models`` does not do that.

PPO (notebook 04, ``helpers/ppo.py``) has no entry here: it runs in one process on one device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from accelerate import PartialState

from .config import PROFILES, ConfigError, DataConfig, DPOStageConfig, ModelConfig, RewardStageConfig, SFTStageConfig
from .dataset import load_split
from .dpo import build_dpo_trainer, dpo_history, load_dpo_policy, save_dpo_adapter, select_pairs
from .files import read_jsonl, write_json
from .models import load_model, load_tokenizer, resolve_compute_dtype
from .reward import (base_candidates, build_reward_trainer, load_reward_base, make_comparisons, normalisation,
                     normalisation_conversations, sample_sft_answers, save_reward_model, score_conversations,
                     score_heldout_answers, score_pairs, unsampled_prompts)
from .runs import STAGES, StageConflict, check_consistent, default_run_dir, open_stage, require_finished
from .sft import (build_sft_trainer, last_checkpoint, loss_history, mean_train_loss, save_adapter_atomically,
                  sft_examples, split_train_eval)

TRAINED = {"sft": "adapter", "reward": "model", "dpo": "adapter"}  # stage -> what marks its training as done


# --- What each stage's config.json holds (the notebooks open their stage with the same dicts) ---

def sft_stage_config(sft_cfg: SFTStageConfig, model_cfg: ModelConfig, data_meta: dict) -> dict:
    """The SFT settings, the base model, and the manifest of the data files it trains on."""
    return {"sft": sft_cfg.to_dict(), "model": model_cfg.to_dict(), "data_files": data_meta["files"]}


def reward_stage_config(rm_cfg: RewardStageConfig, model_cfg: ModelConfig, data_meta: dict, sft_meta: dict) -> dict:
    """Refuses an SFT model trained on other data than ``data/`` holds now."""
    check_consistent({"data": data_meta, "sft": sft_meta})
    return {"reward": rm_cfg.to_dict(), "model": model_cfg.to_dict(), "data_files": data_meta["files"],
            "sft_finished": sft_meta["finished"]}


def dpo_stage_config(dpo_cfg: DPOStageConfig, model_cfg: ModelConfig, sft_meta: dict, reward_meta: dict) -> dict:
    """Refuses comparisons drawn from an SFT model that was retrained since."""
    check_consistent({"sft": sft_meta, "reward": reward_meta})
    return {"dpo": dpo_cfg.to_dict(), "model": model_cfg.to_dict(), "sft_finished": sft_meta["finished"],
            "reward_finished": reward_meta["finished"]}


# --- Training and saving (any number of processes; only the main one writes) ---

def resume_and_train(trainer, checkpoints: Path) -> float:
    """``trainer.train()`` from the newest complete checkpoint in ``checkpoints``, if any; returns the seconds."""
    with trainer.accelerator.main_process_first():  # last_checkpoint may move an incomplete checkpoint aside
        resume_from = last_checkpoint(checkpoints)
    if resume_from:
        trainer.accelerator.print("Resuming from", resume_from)
    start = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    return time.time() - start


def train_sft(trainer, stage_path: Path) -> dict:
    """Train (resuming), evaluate, write ``train_summary.json`` and save ``adapter/``; returns the summary."""
    seconds = resume_and_train(trainer, stage_path / "checkpoints")
    eval_metrics = trainer.evaluate()
    summary = {"train_loss": mean_train_loss(trainer), "eval_loss": eval_metrics["eval_loss"],
               "steps": trainer.state.global_step, "train_seconds_this_session": round(seconds, 1),
               "train_examples": len(trainer.train_dataset), "eval_examples": len(trainer.eval_dataset),
               "loss_history": loss_history(trainer).to_dict(orient="records")}
    if trainer.accelerator.is_main_process:
        write_json(stage_path / "train_summary.json", summary)
        save_adapter_atomically(trainer.model, stage_path / "adapter")  # its presence marks training as done
    trainer.accelerator.wait_for_everyone()
    return summary


def train_reward(trainer, stage_path: Path, rows: list[dict], comparisons) -> None:
    """Train (resuming); then, on the main process: normalise on the SFT answers, score the held-out
    pairs (``heldout_scored.jsonl``) and every held-out answer (``heldout_answers_scored.jsonl``),
    write ``train_summary.json`` and save ``model/``."""
    seconds = resume_and_train(trainer, stage_path / "checkpoints")
    if trainer.accelerator.is_main_process:
        model, tokenizer = trainer.model.eval(), trainer.processing_class
        norm = normalisation(score_conversations(model, tokenizer, normalisation_conversations(rows, comparisons)))
        score_pairs(model, tokenizer, comparisons.heldout).to_json(stage_path / "heldout_scored.jsonl",
                                                                   orient="records", lines=True)
        score_heldout_answers(model, tokenizer, rows, comparisons).to_json(
            stage_path / "heldout_answers_scored.jsonl", orient="records", lines=True)
        write_json(stage_path / "train_summary.json", {
            "train_loss": mean_train_loss(trainer), "steps": trainer.state.global_step,
            "train_seconds_this_session": round(seconds, 1),
            "loss_history": loss_history(trainer).to_dict(orient="records")})
        save_reward_model(model, stage_path / "model", norm)  # its presence marks training as done
    trainer.accelerator.wait_for_everyone()


def train_dpo(trainer, stage_path: Path) -> None:
    """Train (resuming), write ``train_summary.json`` (the logged curves) and save ``adapter/``."""
    seconds = resume_and_train(trainer, stage_path / "checkpoints")
    if trainer.accelerator.is_main_process:
        write_json(stage_path / "train_summary.json", {
            "steps": trainer.state.global_step, "train_seconds_this_session": round(seconds, 1),
            "history": dpo_history(trainer).to_dict(orient="records")})
        save_dpo_adapter(trainer, stage_path / "adapter")  # its presence marks training as done
    trainer.accelerator.wait_for_everyone()


# --- The script: one stage, as its notebook would train it ---

class LaunchError(RuntimeError):
    """The stage cannot train from here; the message says what to run first."""


def _processes():
    """accelerate's view of the processes, as the trainers will see it (on CPU, ``cpu=True`` makes it see
    torchrun's processes; without it, it reports a single one)."""
    return PartialState(cpu=not torch.cuda.is_available())


def _open(stage: str, run_dir: Path, config: dict):
    """The stage folder (the main process creates it first), or None when training is already done."""
    state = _processes()
    with state.main_process_first():
        folder = open_stage(run_dir / stage, config)
    notebook, marker = STAGES[stage].notebook, TRAINED[stage]
    if folder.finished:
        state.print(f"{folder.path} is finished (meta.json): nothing to train.")
    elif (folder.path / marker).exists():
        state.print(f"{folder.path / marker} exists: {stage} is trained. Run notebook {notebook} with "
                    f"RUN_DIR={run_dir} to evaluate it and finish the stage.")
    else:
        return folder
    return None


def _inputs(run_dir: Path, *stages: str) -> tuple[ModelConfig, DataConfig, dict]:
    """The model and data configs of the run, and the ``meta.json`` of each earlier stage (which must be finished)."""
    metas = {name: require_finished(run_dir / name, STAGES[name].notebook) for name in ("data", *stages)}
    config = metas["data"]["config"]
    return ModelConfig(**config["model"]), DataConfig(**config["data"]), metas


def _tokenizer_and_dtype(model_cfg: ModelConfig):
    """The tokenizer (the main process fetches or converts the model first) and the compute dtype."""
    with _processes().main_process_first():
        tokenizer = load_tokenizer(model_cfg)
    return tokenizer, resolve_compute_dtype(model_cfg)


def _log_to_stdout(trainer):
    """The notebooks plot the log; a script prints it (one dict per logged step, main process only)."""
    from transformers import PrinterCallback  # lazy: loads transformers' trainer (seconds); only training needs it

    trainer.add_callback(PrinterCallback)
    return trainer


def run_sft(profile: str, run_dir: Path) -> None:
    model_cfg, _, metas = _inputs(run_dir)
    cfg = SFTStageConfig.from_profile(profile)
    stage = _open("sft", run_dir, sft_stage_config(cfg, model_cfg, metas["data"]))
    if stage is None:
        return
    demonstrations = read_jsonl(run_dir / "data" / "demonstrations.jsonl")
    train, heldout = split_train_eval(sft_examples(demonstrations), cfg.eval_fraction, cfg.seed)
    tokenizer, compute_dtype = _tokenizer_and_dtype(model_cfg)
    trainer = build_sft_trainer(load_model(model_cfg), tokenizer, train, heldout, cfg, stage.path / "checkpoints",
                                compute_dtype)
    train_sft(_log_to_stdout(trainer), stage.path)


def run_reward(profile: str, run_dir: Path) -> None:
    model_cfg, data_cfg, metas = _inputs(run_dir, "sft")
    cfg = RewardStageConfig.from_profile(profile)
    stage = _open("reward", run_dir, reward_stage_config(cfg, model_cfg, metas["data"], metas["sft"]))
    if stage is None:
        return
    state = _processes()
    tokenizer, compute_dtype = _tokenizer_and_dtype(model_cfg)
    rows = load_split(run_dir / "data", "rm")
    records = None
    if data_cfg.source == "generated":
        samples_log = stage.path / "sft_samples.jsonl"
        with state.main_process_first():  # reading may repair a log's torn last line
            missing = unsampled_prompts(rows, samples_log)
        if missing and state.num_processes > 1:
            raise LaunchError(
                f"{samples_log} lacks the SFT answers of {len(missing)} of {len(rows)} prompts. Sampling them is "
                f"one process's work: run notebook 03's first cells (through its comparisons) with "
                f"RUN_DIR={run_dir}, or this command once with one process (python -m helpers.train reward "
                f"--profile {profile} --run-dir {run_dir}, which then also trains); then launch again.")
        records = sample_sft_answers(model_cfg, data_cfg, cfg.k_samples, tokenizer, rows, samples_log,
                                     run_dir / metas["sft"]["adapter"])
    comparisons = make_comparisons(rows, records, tokenizer, cfg, extra=base_candidates(run_dir / "data", cfg))
    if state.is_main_process:
        comparisons.save(stage.path)
    state.print(f"{comparisons.tally}; train {len(comparisons.train)} pairs, held out {len(comparisons.heldout)}")
    trainer = build_reward_trainer(load_reward_base(model_cfg, tokenizer), tokenizer, comparisons.train,
                                   comparisons.heldout, cfg, stage.path / "checkpoints", compute_dtype)
    train_reward(_log_to_stdout(trainer), stage.path, rows, comparisons)


def run_dpo(profile: str, run_dir: Path) -> None:
    model_cfg, _, metas = _inputs(run_dir, "sft", "reward")
    cfg = DPOStageConfig.from_profile(profile)
    stage = _open("dpo", run_dir, dpo_stage_config(cfg, model_cfg, metas["sft"], metas["reward"]))
    if stage is None:
        return
    tokenizer, compute_dtype = _tokenizer_and_dtype(model_cfg)
    train = select_pairs(read_jsonl(run_dir / "reward" / "comparisons_train.jsonl"), cfg.max_pairs, cfg.seed)
    heldout = read_jsonl(run_dir / "reward" / "comparisons_heldout.jsonl")
    trainer = build_dpo_trainer(load_dpo_policy(model_cfg, run_dir / metas["sft"]["adapter"]), tokenizer, train,
                                heldout, cfg, stage.path / "checkpoints", compute_dtype)
    train_dpo(_log_to_stdout(trainer), stage.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=list(TRAINED), help="the stage to train")
    parser.add_argument("--profile", default="cpu", choices=PROFILES, help="the profile, as in the notebooks")
    parser.add_argument("--run-dir", default=None, help="the run folder (default: runs/<profile>), as RUN_DIR")
    args = parser.parse_args(argv)
    run_dir = default_run_dir(args.profile, args.run_dir)
    run = {"sft": run_sft, "reward": run_reward, "dpo": run_dpo}[args.stage]
    try:
        run(args.profile, run_dir)
    except (FileNotFoundError, StageConflict, ConfigError, LaunchError) as err:
        _processes().print(f"error: {err}", file=sys.stderr)  # once, not once a process
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
