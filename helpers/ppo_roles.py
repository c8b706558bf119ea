"""The four roles of PPO on one 4-bit base model: policy, reference, value and reward.

The base weights are loaded once. Four LoRA adapters sit on them (``helpers.adapters``):

=========  ====================================  =========  ==========================
role       adapter starts as                     trains?    head
=========  ====================================  =========  ==========================
policy     the SFT adapter (notebook 02)          yes        the LM head (shared)
sft        the SFT adapter: the reference pi_ref  no         the LM head (shared)
value      the reward adapter (notebook 03)       yes        its own Linear(hidden, 1)
reward     the reward adapter                     no         the reward head
=========  ====================================  =========  ==========================

InstructGPT initialised the value function from the reward model; we do the same and fold
the reward normalisation into the value head (weight / scale, bias -offset / scale), so at
the start the value of a finished answer is its normalised reward.

Every forward pass names its role, which switches the active adapter first. Only the
active adapter takes part in a forward pass, so gradients reach only that role's
weights. The model stays in eval mode throughout: LoRA dropout would make the policy
differ from itself between sampling and update (the ratio would not start at 1).

Positions. Prompts are left-padded, so position ids are counted from each row's first
real token (``attention_mask.cumsum(-1) - 1``), as ``generate`` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import evaluation
from .adapters import add_adapter, load_roles, reward_scores, switch_adapter, train_top_layers
from .config import ModelConfig, PPOStageConfig
from .dataset import load_split
from .files import read_jsonl
from .labeler import gold_scores
from .models import resolve_compute_dtype
from .sft import match_trainable_dtype
from .stats import within_prompt_slope

TRAINABLE_ROLES = ("policy", "value")


@dataclass
class PPORoles:
    """One PeftModel with the adapters ``policy``, ``sft``, ``value`` and ``reward``, and the two scalar heads."""

    model: object  # peft.PeftModel
    value_head: torch.nn.Linear  # trainable, (hidden -> 1) with bias
    reward_head: torch.nn.Linear  # frozen, (hidden -> 1)
    normalisation: dict  # {"offset", "scale"} of the reward model
    pad_token_id: int
    first_trainable_layer: int = 0  # layers below it are frozen in every role (see role_hidden_states)

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Policy and value LoRA weights and the value head, by name (the checkpoint's keys)."""
        params = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        params.update({f"value_head.{name}": p for name, p in self.value_head.named_parameters()})
        return params

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone().contiguous() for name, p in self.trainable_parameters().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
        params = self.trainable_parameters()
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"{where}: trainable weights do not match this model "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was it saved by another run?")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state[name].to(p.dtype))


def load_ppo_roles(model_cfg: ModelConfig, sft_dir: str | Path, reward_dir: str | Path, pad_token_id: int,
                   trainable_layers: int = 0) -> PPORoles:
    """The 4-bit base loaded once, carrying all four roles (see the module docstring)."""
    model, reward_head, norm = load_roles(model_cfg, sft_dir, reward_dir)  # adapters "sft" and "reward"
    add_adapter(model, sft_dir, "policy", trainable=True)
    add_adapter(model, Path(reward_dir) / "adapter", "value", trainable=True)
    first_trainable_layer = train_top_layers(model, TRAINABLE_ROLES, trainable_layers)
    compute_dtype = resolve_compute_dtype(model_cfg)
    match_trainable_dtype(model, compute_dtype)
    value_head = torch.nn.Linear(reward_head.in_features, 1, bias=True).to(reward_head.weight.device)
    with torch.no_grad():  # v(s) = (r(s) - offset) / scale at the start
        value_head.weight.copy_(reward_head.weight / norm["scale"])
        value_head.bias.fill_(-norm["offset"] / norm["scale"])
    value_head.to(dtype=compute_dtype)
    switch_adapter(model, "policy")
    model.eval()
    return PPORoles(model, value_head, reward_head, norm, pad_token_id, first_trainable_layer)


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token (left padding), as ``generate`` does."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (batch, seq)


def _decoder(roles: PPORoles):
    """The transformer stack under the LM head (embeddings, ``layers``, final norm)."""
    return roles.model.get_base_model().model


def role_hidden_states(roles: PPORoles, role: str, input_ids, attention_mask, trunk=None, keep_trunk: bool = False):
    """Final hidden states under ``role`` -> ``(hidden (batch, S, H), trunk (batch, S, H) or None)``.

    The *trunk* is the input of the first trainable layer. Below it every layer is frozen,
    and the policy's lower layers are copies of the SFT model's (the value's, of the reward
    model's), so the trunk computed once per iteration serves the policy and the reference
    alike, and every PPO update step runs only the top layers from it. ``keep_trunk``
    captures it during a full forward pass; passing ``trunk`` runs the top layers alone.
    """
    switch_adapter(roles.model, role)
    decoder = _decoder(roles)
    positions = position_ids_for(attention_mask)
    split = roles.first_trainable_layer
    if trunk is not None and split > 0:
        all_layers = decoder.layers
        decoder.layers = torch.nn.ModuleList(list(all_layers)[split:])
        try:
            out = decoder(inputs_embeds=trunk, attention_mask=attention_mask, position_ids=positions, use_cache=False)
        finally:
            decoder.layers = all_layers
        return out.last_hidden_state, trunk
    captured, handle = {}, None
    if keep_trunk and split > 0:
        def capture(module, args, kwargs):
            captured["trunk"] = (args[0] if args else kwargs["hidden_states"]).detach()

        handle = decoder.layers[split].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False)
    finally:
        if handle is not None:
            handle.remove()
    return out.last_hidden_state, captured.get("trunk")


def response_logits(roles: PPORoles, role: str, input_ids, attention_mask, response_length: int, trunk=None,
                    keep_trunk: bool = False):
    """Logits predicting each response token under ``role`` ('policy' or 'sft') -> ``(logits, trunk)``.

    ``input_ids`` is prompt (left-padded) + response; the logits at position i predict token
    i + 1, so the response's R tokens are predicted by positions P-1 .. P+R-2.
    Shapes: (batch, P + R) -> logits (batch, R, vocab).
    """
    hidden, trunk = role_hidden_states(roles, role, input_ids, attention_mask, trunk, keep_trunk)
    logits = roles.model.get_base_model().lm_head(hidden[:, -response_length - 1 : -1])
    return logits.float(), trunk


def response_values(roles: PPORoles, input_ids, attention_mask, response_length: int, trunk=None,
                    keep_trunk: bool = False):
    """V(s_t) under the ``value`` role for each response step t, from the state before token t -> ``(values, trunk)``.

    Shapes: (batch, P + R) -> values (batch, R).
    """
    hidden, trunk = role_hidden_states(roles, "value", input_ids, attention_mask, trunk, keep_trunk)
    states = hidden[:, -response_length - 1 : -1]  # (batch, R, hidden)
    return roles.value_head(states).squeeze(-1).float(), trunk


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi(token) from logits divided by the sampling temperature: (batch, R, vocab), (batch, R) -> (batch, R)."""
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def token_logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor, temperature: float):
    """``token_logprobs`` and the entropy H(pi(. | s_t)) per position from one log-softmax -> two (batch, R) tensors."""
    logprobs = torch.log_softmax(logits / temperature, dim=-1)  # (batch, R, vocab)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), entropy


def reward_model_scores(roles: PPORoles, tokenizer, rows: list[dict], texts: list[str], batch_size: int = 16):
    """Normalised r(x, y) of each answer, rendered exactly as in reward-model training (chat template). -> (batch,)"""
    return evaluation.reward_model_scores(roles.model, roles.reward_head, roles.normalisation, tokenizer, rows, texts,
                                          batch_size)


def reward_model_reward(roles: PPORoles, tokenizer, batch_size: int = 16):
    """PPO's reward function ``(rows, texts) -> r(x, y)``, (batch,): the frozen reward role's normalised score
    (``reward_model_scores``). The counterpart of :func:`gold_reward`."""
    def reward(rows: list[dict], texts: list[str]) -> torch.Tensor:
        return reward_model_scores(roles, tokenizer, rows, texts, batch_size)

    return reward


def answer_tokens(tokenizer, texts: list[str]) -> torch.Tensor:
    """The length of each answer in tokens, as the tokenizer encodes its text. -> (batch,)"""
    return torch.tensor([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]],
                        dtype=torch.float32)


def length_taste(reward_fn, tokenizer, rows: list[dict], records: list[dict]) -> dict:
    """How much the reward model pays per token of answer that the labeler's score does not explain.

    ``records`` are sampled answers to ``rows`` (``sample_and_judge``'s records, such as notebook
    03's SFT answers to its own prompts, whose gold scores were its comparisons' labels). Over
    the answers that ended with EOS (the only ones PPO scores with the reward model), the reward
    is regressed on the answer's length within each prompt, holding its gold score fixed where
    the answers were judged (``helpers.stats.within_prompt_slope``; unjudged answers give the
    whole taste in length). A reward model that learned "a cut-off answer loses" from the
    truncated answers' length goes on to pay less for every token of a finished one too; PPO
    then shortens its answers and drops what needs length (Singhal et al., 2023, "A Long Way to
    Go"). The reward model was trained on pairs of these very answers, so it fits their gold
    order better than a fresh prompt's: the slope measured here is, if anything, the smaller
    part of its taste.

    -> ``{"per_token", "mean_tokens", "answers", "prompts", "gold_held_fixed"}``: ``per_token``
    is None when no prompt has two finished answers of different lengths; ``mean_tokens`` is the
    mean length of the answers measured, the length ``length_neutral`` leaves the reward alone at.
    """
    row_of = {row["id"]: row for row in rows}
    answers = [(record["id"], sample) for record in records for sample in record["samples"] if not sample["truncated"]]
    prompt_ids = [prompt for prompt, _ in answers]
    texts = [sample["text"] for _, sample in answers]
    tokens = answer_tokens(tokenizer, texts).tolist() if texts else []
    judged = bool(answers) and all("score" in sample for _, sample in answers)
    taste = {"per_token": None, "mean_tokens": sum(tokens) / len(tokens) if tokens else None,
             "answers": len(answers), "prompts": len(set(prompt_ids)), "gold_held_fixed": judged}
    if len(answers) < 2:
        return taste
    rewards = reward_fn([row_of[prompt] for prompt in prompt_ids], texts).tolist()
    controls = [[sample["score"] for _, sample in answers]] if judged else []
    per_token = within_prompt_slope(prompt_ids, rewards, tokens, controls)
    return taste | {"per_token": None if per_token != per_token else per_token}  # NaN: nothing to measure


def length_neutral(reward_fn, tokenizer, per_token: float, mean_tokens: float):
    """``reward_fn`` with the reward model's taste in length taken out: r(x, y) - b (tokens(y) - mean_tokens).

    ``per_token`` (b) and ``mean_tokens`` come from ``length_taste``: b is negative for a reward
    model that likes short answers, so a longer answer gets back what it took. Within a prompt's
    k answers, which is all a leave-one-out advantage compares, the result ranks them as the
    reward model does with their lengths made equal. Centring on ``mean_tokens`` keeps a typical
    answer's reward where it was, on the reward model's normalised scale, and so below it the
    ``no_eos_score`` of an answer that never finishes.
    """
    def reward(rows: list[dict], texts: list[str]) -> torch.Tensor:
        return reward_fn(rows, texts) - per_token * (answer_tokens(tokenizer, texts) - mean_tokens)

    return reward


REWARD_SAMPLES = "sft_samples.jsonl"  # notebook 03's SFT answers to its prompts, in reward/


def ppo_reward(roles: PPORoles, tokenizer, run_dir: Path, cfg: PPOStageConfig):
    """What PPO maximises in notebook 04 and the sweeps: -> (reward_fn, length taste or None).

    The reward model's normalised score (``reward_model_reward``), made ``length_neutral`` when
    ``cfg.length_neutral_reward`` asks for it and notebook 03 left sampled answers to measure
    the taste on (``reward/sft_samples.jsonl``; human comparisons leave none, and then the score
    is used as it is and the taste is None; so it is when ``length_taste`` finds nothing to measure).
    """
    reward = reward_model_reward(roles, tokenizer)
    samples = Path(run_dir) / "reward" / REWARD_SAMPLES
    if not cfg.length_neutral_reward or not samples.exists():
        return reward, None
    taste = length_taste(reward, tokenizer, load_split(Path(run_dir) / "data", "rm"), read_jsonl(samples))
    if taste["per_token"] is None:  # too few finished answers (tiny's short limit): the score as it is
        return reward, taste
    return length_neutral(reward, tokenizer, taste["per_token"], taste["mean_tokens"]), taste


def mean_and_std(scores: list[float]) -> tuple[float, float]:
    """(mean, population std) of ``scores``: the offset and scale that put a score on the reward model's
    normalised scale. ValueError for fewer than two scores or no spread."""
    if len(scores) < 2:
        raise ValueError(f"need at least two scores to set a scale, found {len(scores)}")
    mean = sum(scores) / len(scores)
    std = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
    if std == 0:
        raise ValueError("every score is the same; they cannot set the reward's scale")
    return mean, std


def gold_reward(mean: float, std: float):
    """The oracle reward (Gao et al., 2022): PPO's reward function ``(rows, texts) -> (gold - mean) / std``, (batch,).

    The simulated labeler itself in place of the reward model, on about its normalised scale
    (``mean`` and ``std`` of the SFT answers' gold scores: ``mean_and_std``). Each text is judged with
    ``truncated=False`` (the text decides the ``finished`` gate): PPO gives a response without EOS
    ``no_eos_score`` in place of its reward, as it does with the reward model's.
    """
    def reward(rows: list[dict], texts: list[str]) -> torch.Tensor:
        gold = torch.tensor(gold_scores(rows, texts, [False] * len(texts)), dtype=torch.float32)  # (batch,)
        return (gold - mean) / std

    return reward


def save_trainable(roles: PPORoles, path: Path) -> None:
    save_file(roles.trainable_state(), str(path))


def load_trainable(roles: PPORoles, path: Path) -> None:
    roles.load_trainable_state(load_file(str(path)), where=str(path))
