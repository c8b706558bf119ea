"""SFT: formatting, the completion-only loss mask, and a tiny QLoRA training run that must learn."""

from __future__ import annotations

import pytest
import torch

from helpers.config import SFTStageConfig
from helpers.sft import (build_sft_trainer, loss_mask_table, save_adapter_atomically, sft_examples,
                         split_train_eval)

DEMOS = [
    {"id": f"d{i}", "messages": [{"role": "user", "content": f"Describe the colour number {i}."}],
     "response": f"colour number {i} is a calm shade of blue."}
    for i in range(6)
]


def test_sft_examples_are_conversational_prompt_completion_pairs():
    example = sft_examples(DEMOS[:1])[0]
    assert example == {"id": "d0", "prompt": [{"role": "user", "content": "Describe the colour number 0."}],
                       "completion": [{"role": "assistant", "content": "colour number 0 is a calm shade of blue."}]}


def test_split_train_eval_is_seeded_and_disjoint():
    examples = sft_examples(DEMOS)
    train, held = split_train_eval(examples, 0.2, seed=1)
    assert (len(train), len(held)) == (5, 1)
    assert {e["id"] for e in train}.isdisjoint({e["id"] for e in held})
    assert split_train_eval(examples, 0.2, seed=1) == (train, held)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        split_train_eval(examples[:1], 0.2, seed=0)


def test_split_train_eval_keeps_a_prompts_demonstrations_together():
    examples = sft_examples(DEMOS + [{**d, "response": d["response"] + " Truly."} for d in DEMOS])  # 2 per prompt
    train, held = split_train_eval(examples, 0.2, seed=1)
    assert (len(train), len(held)) == (10, 2)
    assert {e["id"] for e in train}.isdisjoint({e["id"] for e in held})


@pytest.fixture(scope="module")
def trained(model_config, tokenizer, tmp_path_factory):
    """A tiny SFT run on repeated literal demonstrations (its own base model: peft modifies it in place)."""
    from helpers.models import load_model

    cfg = SFTStageConfig.from_profile("tiny", learning_rate=2e-3, epochs=4, batch_size=3, warmup_ratio=0.0,
                                      save_steps=100)
    examples = sft_examples(DEMOS)
    out = tmp_path_factory.mktemp("sft")
    trainer = build_sft_trainer(load_model(model_config), tokenizer, examples[:3], examples[3:], cfg,
                                out / "checkpoints", torch.float32)
    lora_b_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    mask = loss_mask_table(trainer, 0)
    trainer.train()
    return trainer, mask, lora_b_before, out


@pytest.mark.model
def test_loss_mask_covers_exactly_the_response(trained, tokenizer):
    trainer, mask, _, _ = trained
    from helpers.generation import render_prompts

    first = trainer.train_dataset[0]
    response = next(e for e in sft_examples(DEMOS) if e["prompt"] == first["prompt"])["completion"][0]["content"]
    assert "".join(mask[mask.in_loss].token) == response + "<|im_end|>\n"
    assert "".join(mask[~mask.in_loss].token) == render_prompts(tokenizer, [first["prompt"]])[0]


@pytest.mark.model
def test_tiny_sft_run_lowers_the_loss_and_moves_the_adapter(trained):
    trainer, _, lora_b_before, _ = trained
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]
    assert all(torch.count_nonzero(b) == 0 for b in lora_b_before.values())  # LoRA starts at the base model
    after = dict(trainer.model.named_parameters())
    assert all(not torch.equal(after[n].detach(), before) for n, before in lora_b_before.items())
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters() if p.requires_grad)


@pytest.mark.model
def test_saved_adapter_reloads_to_the_same_outputs(trained, model_config, tokenizer):
    from helpers.adapters import load_policy

    trainer, _, _, out = trained
    save_adapter_atomically(trainer.model, out / "adapter")
    assert (out / "adapter" / "adapter_model.safetensors").exists() and not (out / ".adapter.tmp").exists()
    reloaded = load_policy(model_config, out / "adapter")
    batch = tokenizer(["<|im_start|>user\nDescribe the colour number 1.<|im_end|>\n"], return_tensors="pt")
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**batch).logits
        got = reloaded(**batch).logits
    assert torch.allclose(expected, got, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="run notebook 02"):
        load_policy(model_config, out / "missing")


def test_last_checkpoint_skips_and_sets_aside_incomplete_ones(tmp_path):
    from helpers.sft import last_checkpoint

    assert last_checkpoint(tmp_path / "none") is None
    for step, complete in ((2, True), (4, True), (6, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert (tmp_path / "incomplete-checkpoint-6").is_dir() and not (tmp_path / "checkpoint-6").exists()
