"""Supervised fine-tuning (InstructGPT step 1) with QLoRA: TRL's ``SFTTrainer`` on the 4-bit base model.

Objective. For a demonstration :math:`(x, y)` with response tokens :math:`y_1..y_T`,
minimise the cross-entropy of the response given the prompt (Ouyang et al., 2022, §3.5):

.. math::  \\mathcal{L}_{SFT}(\\theta) = -\\frac{1}{\\sum T} \\sum_{(x,y)} \\sum_{t=1}^{T} \\log \\pi_\\theta(y_t \\mid x, y_{<t})

Only response tokens count: prompt tokens get label -100 ("completion-only loss"),
which TRL does for prompt/completion datasets. The closing ``<|im_end|>`` is part of
the response, so the model also learns *when to stop*.

Only LoRA adapters are trained (Hu et al., 2021): each targeted linear layer
:math:`W` (frozen, 4-bit NF4) becomes :math:`W + \\frac{\\alpha}{r} B A`.

Deliberate deviation from TRL's QLoRA default: TRL casts the trainable adapter weights
to bfloat16. On a CPU without native bfloat16 the base computes in float32 (measured
faster), and mixed bf16 adapters slowed training; ``match_trainable_dtype`` casts them
back to the base model's compute dtype (``helpers.models.resolve_precision``: float32 or
bfloat16 on CPU by what the processor does fast, bfloat16 on CUDA: the QLoRA setting).
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
from pathlib import Path

import pandas as pd
import torch

from .config import SFTStageConfig
from .progress import quiet_library_bars

# TRL 1.16 still passes transformers' renamed gradient_checkpointing flags; the warning is not ours to act on.
warnings.filterwarnings("ignore", message=".*gradient_checkpointing.* is deprecated", category=FutureWarning)


def sft_examples(demonstrations: list[dict]) -> list[dict]:
    """Conversational prompt/completion records, the format TRL masks for completion-only loss."""
    return [{"id": d["id"], "prompt": d["messages"], "completion": [{"role": "assistant", "content": d["response"]}]}
            for d in demonstrations]


def split_train_eval(examples: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded shuffle of the prompts, then ``round(eval_fraction * prompts)`` (at least 1) held out for
    evaluation loss, with all their demonstrations: a prompt never sits on both sides."""
    prompts = list(dict.fromkeys(e["id"] for e in examples))
    if len(prompts) < 2:
        raise ValueError(f"need demonstrations for at least 2 prompts to hold one out, got {len(prompts)}: "
                         "lower DataConfig.demo_threshold or raise n_sft in notebook 01")
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: max(1, round(eval_fraction * len(prompts)))])
    shuffled = examples[:]
    random.Random(seed).shuffle(shuffled)
    return [e for e in shuffled if e["id"] not in held], [e for e in shuffled if e["id"] in held]


def lora_config(cfg, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
    from peft import LoraConfig  # lazy: peft takes seconds to import (it loads transformers); only training needs it

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_targets, task_type=task_type, modules_to_save=modules_to_save)


def match_trainable_dtype(model, dtype: torch.dtype) -> int:
    """Cast every trainable parameter to ``dtype`` (see the module docstring); returns how many were cast."""
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != dtype:
            param.data = param.data.to(dtype)
            cast += 1
    return cast


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete ``checkpoint-N`` under ``folder`` (one with ``trainer_state.json``, which the
    trainer writes last), for resuming; None if there is none. Incomplete ones are moved aside."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    checkpoints = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                         key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for checkpoint in checkpoints:
        if (checkpoint / "trainer_state.json").exists():
            return str(checkpoint)
        checkpoint.rename(checkpoint.with_name(f"incomplete-{checkpoint.name}"))
    return None


def mean_train_loss(trainer) -> float:
    """Mean of the logged training losses over the whole run (the log survives a resume)."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return sum(losses) / len(losses) if losses else float("nan")


def save_adapter_atomically(model, target: Path, **save_kwargs) -> None:
    """``model.save_pretrained`` (safetensors) into a temporary folder, then renamed into place."""
    staging = target.with_name(f".{target.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging, safe_serialization=True, **save_kwargs)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def build_sft_trainer(model, tokenizer, train: list[dict], evaluation: list[dict], cfg: SFTStageConfig,
                      output_dir: Path, compute_dtype: torch.dtype, callbacks=()):
    """TRL's SFTTrainer wired for QLoRA: LoRA adapters on the 4-bit model, completion-only loss, checkpoints."""
    from datasets import Dataset  # lazy: datasets takes seconds to import; only training needs it
    from transformers import PrinterCallback  # lazy: loads transformers' trainer (seconds); only training needs it
    from trl import SFTConfig, SFTTrainer  # lazy: trl takes seconds to import; only training needs it

    quiet_library_bars()

    steps_per_epoch = -(-len(train) // (cfg.batch_size * cfg.grad_accum))
    args = SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=round(cfg.warmup_ratio * steps_per_epoch * cfg.epochs),
        max_length=cfg.max_length,
        completion_only_loss=True,
        gradient_checkpointing=False,  # a 135M model fits; recomputation would only cost time
        logging_steps=1,
        eval_strategy="epoch",
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=compute_dtype == torch.bfloat16 and torch.cuda.is_available(),
        disable_tqdm=True,
        dataset_num_proc=None,
    )
    strip = lambda rows: [{k: r[k] for k in ("prompt", "completion")} for r in rows]  # noqa: E731
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(strip(train)),
                         eval_dataset=Dataset.from_list(strip(evaluation)), processing_class=tokenizer,
                         peft_config=lora_config(cfg), callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # the notebook plots the log instead of printing it
    match_trainable_dtype(trainer.model, compute_dtype)
    return trainer


def loss_history(trainer) -> pd.DataFrame:
    """Training and evaluation loss per step from the trainer's log."""
    rows = []
    for entry in trainer.state.log_history:
        if "loss" in entry:
            rows.append({"step": entry["step"], "split": "train", "loss": entry["loss"]})
        if "eval_loss" in entry:
            rows.append({"step": entry["step"], "split": "eval", "loss": entry["eval_loss"]})
    return pd.DataFrame(rows)


def loss_mask_table(trainer, index: int) -> pd.DataFrame:
    """Token by token, whether one processed training example's token counts in the loss (label != -100)."""
    batch = trainer.data_collator([trainer.train_dataset[index]])
    input_ids, labels = batch["input_ids"][0], batch["labels"][0]  # (seq,), (seq,)
    decode = trainer.processing_class.decode
    return pd.DataFrame({"token": [decode([int(t)]) for t in input_ids], "in_loss": (labels != -100).tolist()})
