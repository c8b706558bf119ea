"""Direct Preference Optimisation (Rafailov et al., 2023) with QLoRA: TRL's ``DPOTrainer`` on the 4-bit base.

PPO uses the comparisons twice removed: they train a reward model, which then scores
the policy's samples. DPO uses them directly. For a comparison (x, y_w, y_l) it minimises

    loss(theta) = -log sigma( beta * [ log pi_theta(y_w|x) / pi_ref(y_w|x)
                                     - log pi_theta(y_l|x) / pi_ref(y_l|x) ] )        (Rafailov et al., eq. 7)

which is the Bradley-Terry loss of notebook 03 with the *implicit reward*
r(x, y) = beta * log pi_theta(y|x) / pi_ref(y|x): the policy is its own reward model,
and beta plays the part of PPO's KL coefficient. No sampling, no value model.

Set-up, chosen to match notebook 04 so the two are comparable:

* the policy starts from the SFT adapter (loaded trainable as ``default``); TRL copies it
  into a frozen ``ref`` adapter, so the reference is the SFT model, as in PPO;
* the comparisons are notebook 03's training pairs (held-out pairs measure the implicit
  reward's preference accuracy, comparable with the reward model's);
* ``trainable_layers`` trains only the top layers' LoRA weights, as PPO's cpu profile does.

TRL casts trainable weights of a quantised model to bfloat16 (see ``helpers.sft``). Here
the adapter is not fresh but trained, and the round trip to bfloat16 would move the policy
away from its reference before the first step, so the SFT weights are restored exactly,
in the base model's compute dtype, after the trainer is built.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import torch

from .adapters import load_policy, train_top_layers
from .config import DPOStageConfig, ModelConfig
from .progress import quiet_library_bars
from .sft import match_trainable_dtype, save_adapter_atomically

POLICY_ADAPTER = "default"  # TRL's name for the trained adapter; its frozen copy is "ref"


def dpo_records(pairs: list[dict]) -> list[dict]:
    """Conversational preference records for TRL: the prompt turns, then the chosen and the rejected answer."""
    return [{"prompt": p["messages"], "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs]


def select_pairs(pairs: list[dict], max_pairs: int, seed: int) -> list[dict]:
    """All pairs, or a seeded random subset of ``max_pairs`` of them (kept in their original order)."""
    if not max_pairs or max_pairs >= len(pairs):
        return list(pairs)
    keep = set(random.Random(seed).sample(range(len(pairs)), max_pairs))
    return [p for i, p in enumerate(pairs) if i in keep]


def load_dpo_policy(model_cfg: ModelConfig, sft_dir: str | Path):
    """The 4-bit base with the SFT adapter loaded trainable under TRL's adapter name."""
    return load_policy(model_cfg, sft_dir, adapter_name=POLICY_ADAPTER, trainable=True)


def build_dpo_trainer(model, tokenizer, train: list[dict], heldout: list[dict], cfg: DPOStageConfig,
                      output_dir: Path, compute_dtype: torch.dtype, callbacks=()):
    """TRL's DPOTrainer wired for QLoRA from the SFT adapter: reference = frozen SFT copy, top layers train."""
    from datasets import Dataset  # lazy: datasets takes seconds to import; only training needs it
    from transformers import PrinterCallback  # lazy: loads transformers' trainer (seconds); only training needs it
    from trl import DPOConfig, DPOTrainer  # lazy: trl takes seconds to import; only training needs it

    quiet_library_bars()
    if not train:
        raise ValueError("no training comparisons: run notebook 03 first (it writes reward/comparisons_train.jsonl)")
    sft_weights = {n: p.detach().clone() for n, p in model.named_parameters() if f".{POLICY_ADAPTER}." in n}

    class TopLayersDPOTrainer(DPOTrainer):
        """DPOTrainer that keeps only the top layers trainable, also after resuming from a checkpoint."""

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            train_top_layers(self.model, (POLICY_ADAPTER,), cfg.trainable_layers)
            match_trainable_dtype(self.model, compute_dtype)

    steps_per_epoch = -(-len(train) // cfg.batch_size)
    args = DPOConfig(
        output_dir=str(output_dir), beta=cfg.beta, num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=max(1, round(0.05 * steps_per_epoch * cfg.epochs)), max_length=cfg.max_length,
        gradient_checkpointing=False, logging_steps=1, eval_strategy="epoch" if heldout else "no",
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed, data_seed=cfg.seed,
        report_to="none", use_cpu=not torch.cuda.is_available(),
        bf16=compute_dtype == torch.bfloat16 and torch.cuda.is_available(), disable_tqdm=True,
    )
    trainer = TopLayersDPOTrainer(model=model, args=args, processing_class=tokenizer,
                                  train_dataset=Dataset.from_list(dpo_records(train)),
                                  eval_dataset=Dataset.from_list(dpo_records(heldout)) if heldout else None,
                                  callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)
    with torch.no_grad():  # undo TRL's bfloat16 cast: the policy must start exactly at its reference
        for name, param in trainer.model.named_parameters():
            if name in sft_weights:
                param.data = sft_weights[name].to(compute_dtype)
    train_top_layers(trainer.model, (POLICY_ADAPTER,), cfg.trainable_layers)
    return trainer


def save_dpo_adapter(trainer, target: Path) -> None:
    """The trained policy adapter alone (peft format, safetensors), written atomically; loads with ``load_policy``."""
    save_adapter_atomically(trainer.model, target, selected_adapters=[POLICY_ADAPTER])


def dpo_history(trainer):
    """One line per logged step and split: loss, implicit-reward accuracy and margin (from the trainer's log)."""
    lines = []
    for entry in trainer.state.log_history:
        for split, prefix in (("train", ""), ("eval", "eval_")):
            if f"{prefix}loss" in entry:
                lines.append({"step": entry["step"], "split": split, "loss": entry[f"{prefix}loss"],
                              "accuracy": entry.get(f"{prefix}rewards/accuracies"),
                              "margin": entry.get(f"{prefix}rewards/margins")})
    return pd.DataFrame(lines)
