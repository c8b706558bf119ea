"""Several LoRA adapters on one 4-bit base model: the roles of RLHF without copies of the weights.

peft lets one ``PeftModel`` hold several named adapters over the same frozen base
weights; ``set_adapter`` picks the active one and ``disable_adapter()`` runs the bare
base model. Later stages use this to keep a single copy of the 4-bit base in memory
for the policy, the reference (SFT), the value model and the reward model.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from .config import ModelConfig
from .files import read_json
from .models import load_model, resolve_compute_dtype

# A saved reward model's files beside its adapter (``helpers.reward.save_reward_model`` writes them):
SCORE_HEAD_FILE = "score_head.safetensors"  # the scalar head, (1, hidden)
NORMALISATION_FILE = "normalisation.json"  # the reward's offset and scale


def load_policy(model_cfg: ModelConfig, adapter_dir: str | Path, adapter_name: str = "sft", trainable: bool = False):
    """The 4-bit base model with one saved LoRA adapter on top (frozen unless ``trainable``)."""
    from peft import PeftModel  # lazy: peft takes seconds to import (it loads transformers); only loading needs it

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter_dir} holds no LoRA adapter: run notebook 02 (SFT) first.")
    model = PeftModel.from_pretrained(load_model(model_cfg), str(adapter_dir), adapter_name=adapter_name,
                                      is_trainable=trainable, autocast_adapter_dtype=False)
    model.eval()
    return model


def add_adapter(model, adapter_dir: str | Path, adapter_name: str, trainable: bool = False) -> None:
    """Load one more saved LoRA adapter onto ``model`` under ``adapter_name``, in the dtype it was saved in.

    peft would upcast a bfloat16 adapter to float32 (``autocast_adapter_dtype``): on a bfloat16 base the
    frozen SFT reference would then compute its LoRA terms differently from the policy trained from the
    same weights, and the KL between them would not start at 0.
    """
    model.load_adapter(str(adapter_dir), adapter_name=adapter_name, is_trainable=trainable,
                       autocast_adapter_dtype=False)


def switch_adapter(model, name: str) -> None:
    """Make ``name`` the active adapter without changing which parameters train.

    peft's ``set_adapter`` also marks the new adapter trainable and freezes the others;
    a role switch must not do that (the reference would start training, the value
    adapter would stop), so the ``requires_grad`` flags are restored afterwards.
    """
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.set_adapter(name)
    for n, p in model.named_parameters():
        p.requires_grad_(flags[n])


def layer_index(parameter_name: str) -> int | None:
    """The decoder layer a parameter belongs to (``...layers.12.self_attn...`` -> 12), None outside the layers."""
    match = re.search(r"\.layers\.(\d+)\.", parameter_name)
    return int(match.group(1)) if match else None


def train_top_layers(model, adapters: tuple[str, ...], trainable_layers: int = 0, also: tuple[str, ...] = ()) -> int:
    """Only the LoRA weights of ``adapters`` in the top ``trainable_layers`` layers train (0: all layers).

    Parameters whose name contains one of ``also`` (say ``"modules_to_save"``, peft's
    trainable copy of a reward model's score head) train too. Everything else is frozen. Gradients then flow back only as far as the lowest
    trainable weight, so training the top layers alone shortens the backward pass; the
    lower layers keep the weights they were loaded with. Returns the lowest trainable layer.
    """
    layers = [i for i in (layer_index(name) for name, _ in model.named_parameters()) if i is not None]
    lowest = max(layers) + 1 - trainable_layers if trainable_layers and layers else 0
    for name, param in model.named_parameters():
        layer = layer_index(name)
        in_range = layer is None or layer >= lowest
        is_lora = "lora_" in name and any(f".{a}." in name for a in adapters) and in_range
        param.requires_grad_(is_lora or any(part in name for part in also))
    return lowest


def last_token_index(input_ids, pad_token_id: int):
    """Index of the last non-pad token of each row (left or right padding), as transformers' classifiers pool."""
    non_pad = (input_ids != pad_token_id).int()  # (batch, seq)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (seq,)
    return (positions * non_pad).argmax(-1)  # (batch,)


def load_score_head(reward_dir: str | Path, dtype=None, device=None):
    """The reward model's scalar head, ``Linear(hidden, 1, bias=False)``, frozen."""
    weight = load_file(str(Path(reward_dir) / SCORE_HEAD_FILE))["weight"]  # (1, hidden)
    head = torch.nn.Linear(weight.shape[1], 1, bias=False)
    with torch.no_grad():
        head.weight.copy_(weight)
    head.requires_grad_(False)
    return head.to(dtype=dtype or weight.dtype, device=device or "cpu")


def load_roles(model_cfg: ModelConfig, sft_dir: str | Path, reward_dir: str | Path):
    """One 4-bit base model carrying the ``sft`` and ``reward`` adapters, plus the reward head and normalisation.

    Returns ``(model, reward_head, normalisation)``. Use ``model.set_adapter("sft")`` to run
    the SFT policy, ``reward_scores(model, reward_head, ...)`` for rewards.
    """
    reward_dir = Path(reward_dir)
    if not (reward_dir / "adapter" / "adapter_config.json").exists():
        raise FileNotFoundError(f"{reward_dir} holds no reward model: run notebook 03 first.")
    model = load_policy(model_cfg, sft_dir, adapter_name="sft")
    add_adapter(model, reward_dir / "adapter", "reward")
    switch_adapter(model, "sft")
    device = next(model.parameters()).device
    compute_dtype = resolve_compute_dtype(model_cfg)
    head = load_score_head(reward_dir, dtype=compute_dtype, device=device)
    return model, head, read_json(reward_dir / NORMALISATION_FILE)


def reward_scores(model, reward_head, input_ids, attention_mask, pad_token_id: int, normalisation=None):
    """r(x, y) at the last non-pad token under the ``reward`` adapter; normalised if ``normalisation`` is given.

    Shapes: input_ids and attention_mask (batch, seq) -> rewards (batch,). The active
    adapter, the train/eval mode and every ``requires_grad`` flag are restored afterwards.
    Score sequences rendered the way the reward model was trained: the whole conversation
    through the chat template, i.e. ending with the template's end-of-turn suffix.
    """
    previous, was_training = model.active_adapter, model.training
    switch_adapter(model, "reward")
    model.eval()  # no LoRA dropout in a reward
    try:
        with torch.no_grad():
            hidden = model.get_base_model().model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            last = last_token_index(input_ids, pad_token_id)  # (batch,)
            rewards = reward_head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last]).squeeze(-1)
    finally:
        switch_adapter(model, previous)
        model.train(was_training)
    rewards = rewards.float()
    if normalisation is not None:
        rewards = (rewards - normalisation["offset"]) / normalisation["scale"]
    return rewards
