"""DPO with TRL's DPOTrainer: records, the pair subset, and a tiny run that starts at log 2 and trains only the top layers."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.config import ConfigError, DPOStageConfig
from helpers.dpo import dpo_records, select_pairs


def test_dpo_records_are_conversational_preferences():
    pairs = [{"messages": [{"role": "user", "content": "Say hi."}], "chosen": "hi", "rejected": "no"}]
    assert dpo_records(pairs) == [{"prompt": [{"role": "user", "content": "Say hi."}],
                                   "chosen": [{"role": "assistant", "content": "hi"}],
                                   "rejected": [{"role": "assistant", "content": "no"}]}]


def test_select_pairs_is_a_seeded_ordered_subset():
    pairs = [{"id": i} for i in range(10)]
    assert select_pairs(pairs, 0, seed=1) == pairs and select_pairs(pairs, 50, seed=1) == pairs
    subset = select_pairs(pairs, 4, seed=1)
    assert len(subset) == 4 and subset == sorted(subset, key=lambda p: p["id"])
    assert subset == select_pairs(pairs, 4, seed=1) and subset != select_pairs(pairs, 4, seed=2)


def test_dpo_config_checks_its_fields():
    assert DPOStageConfig.from_profile("cpu").trainable_layers == 8
    with pytest.raises(ConfigError, match="beta"):
        DPOStageConfig.from_profile("tiny", beta=0.0)


@pytest.mark.model
def test_dpo_starts_at_log_2_and_trains_only_the_top_layers(tiny_run, model_config, tokenizer, tmp_path):
    from helpers.adapters import layer_index, load_policy
    from helpers.dpo import build_dpo_trainer, load_dpo_policy, save_dpo_adapter
    from helpers.files import read_jsonl

    pairs = read_jsonl(tiny_run / "reward" / "comparisons_train.jsonl")[:8]
    cfg = DPOStageConfig.from_profile("tiny", learning_rate=5e-3, epochs=3, max_length=192)  # 6 steps, 1 warm-up
    policy = load_dpo_policy(model_config, tiny_run / "sft" / "adapter")
    trainer = build_dpo_trainer(policy, tokenizer, pairs, [], cfg, tmp_path / "checkpoints", torch.float32)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if ".default." in n}
    ref = {n.replace(".default.", ".ref."): p for n, p in before.items()}
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    top = max(layer_index(n) for n in before if layer_index(n) is not None)
    assert trainable and all(layer_index(n) > top - cfg.trainable_layers for n in trainable)
    # the policy starts exactly at its reference (TRL's bfloat16 cast undone)
    params = dict(trainer.model.named_parameters())
    assert all(torch.equal(params[r], before[r.replace(".ref.", ".default.")]) for r in ref)

    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)  # pi = pi_ref: every implicit reward is 0
    assert losses[-1] < losses[0]
    after = dict(trainer.model.named_parameters())
    changed = {n for n, p in before.items() if not torch.equal(after[n], p)}
    assert changed and changed <= trainable
    assert all(torch.equal(after[r], p) for r, p in ref.items() if r in after)  # the reference never moves

    save_dpo_adapter(trainer, tmp_path / "adapter")
    reloaded = load_policy(model_config, tmp_path / "adapter", adapter_name="dpo")
    batch = tokenizer(["Hello there, how are you?"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trainer.model(**batch).logits, atol=1e-4, rtol=1e-4)
