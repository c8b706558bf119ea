"""PPO for language models (InstructGPT step 3), every detail in one readable place.

One iteration has five phases, each a function below, called in this order by :func:`train_ppo`:

1. :func:`rollout` -- sample a response y for each prompt x from the policy pi_theta
   (KV-cache generation, temperature T, left-padded prompts, pad != EOS). The response
   is cut after its first EOS; EOS stays inside ``response_mask``.
2. :func:`score` -- log pi_theta(y_t | x, y_<t) (logits / T, as sampled), log pi_ref of the
   frozen SFT model, values V(s_t), and the score s(x, y): the reward model's normalised
   reward, or ``no_eos_score`` for a response that never emitted EOS.
3. :func:`shape_rewards` -- per-token reward (Ziegler et al., 2019; Ouyang et al., 2022, eq. 2)

       r_t = -beta * (log pi_theta(y_t) - log pi_ref(y_t))   + [t = last] * s(x, y)

4. :func:`compute_gae` -- generalised advantage estimation (Schulman et al., 2016)

       delta_t = r_t + gamma * V(s_{t+1}) - V(s_t),   A_t = sum_k (gamma * lam)^k delta_{t+k},
       returns R_t = A_t + V(s_t),

   then :func:`masked_whiten` normalises A over the batch's response tokens.

   Or, with ``advantage="rloo"`` and k answers to each prompt, no value model at all
   (:func:`leave_one_out_advantages`; REINFORCE leave-one-out, Kool et al., 2019; Ahmadian et
   al., 2024): each answer's return R_i = s(x, y_i) - beta * sum_t KL_t, less the mean return
   of the other k - 1 answers to the same prompt, is every token's advantage

       A_i = R_i - 1/(k-1) sum_{j != i} R_j

   The siblings are the baseline a value model would have to learn: on a small budget they
   are the better one, and skipping the value passes makes an iteration cheaper.
5. :func:`update` -- ``ppo_epochs`` passes over shuffled minibatches minimising
   (Schulman et al., 2017, eq. 7, with the clipped value loss of the PPO2 code)

       L = E[max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps))]                  rho = pi_theta / pi_old
         + vf_coef * 1/2 E[max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2)]
         + ptx_coef * E_demo[-log pi_theta(y_demo | x_demo)]                  (PPO-ptx, optional)

   with the learning rate optionally warmed up over the first ``warmup_iterations`` (Adam's
   first steps move every weight by about the full rate, whatever the gradient's size),
   the global gradient norm clipped, the update stopped early when the approximate
   KL(old || new) exceeds ``max_approx_kl``, and minibatches whose loss is not finite
   skipped and counted.

Expectations E[.] over tokens average over response tokens only (``response_mask``).
Implementation details follow Huang et al., "The N+ implementation details of RLHF with
PPO" (2024): EOS handling, logits / T, values from the state before each token, whitened
advantages, dropout off.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .adapters import switch_adapter
from .config import PPOStageConfig
from .generation import render_prompts
from .ppo_checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_snapshot, write_metrics
from .ppo_roles import PPORoles, response_logits, response_values, token_logprobs, token_logprobs_and_entropy
from .progress import progress_bar


class PPODiverged(RuntimeError):
    """Too many minibatches produced a loss that is not a finite number."""


# --------------------------------------------------------------------------------------------
# Pure functions on (batch, time) tensors
# --------------------------------------------------------------------------------------------

def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Variance over the masked positions (population variance: divides by the count)."""
    mean = masked_mean(values, mask)
    return masked_mean((values - mean) ** 2, mask)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked positions; masked-out positions become 0.

    With ``shift_mean=False`` only the scale changes (the mean is added back).
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate log pi_theta(y_t) - log pi_ref(y_t) on response tokens (the k1 estimator).

    Its sum over a response is an unbiased estimate of KL(pi_theta || pi_ref) for that prompt.
    """
    return (logprobs - ref_logprobs) * mask


def shape_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards r_t = -beta * KL_t, plus the score on each response's last token.

    Shapes: scores (batch,), the rest (batch, T) -> (rewards (batch, T), kl (batch, T)).
    """
    kl = kl_penalty(logprobs, ref_logprobs, mask)
    rewards = -kl_coef * kl
    last = mask.sum(-1).long() - 1  # (batch,) index of the last response token (EOS if emitted)
    rewards[torch.arange(rewards.shape[0]), last] += scores
    return rewards, kl


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens -> (advantages, returns), each (batch, T).

    ``mask`` marks response tokens (a prefix of each row). The state after the last
    response token is terminal (value 0). Positions outside the mask get advantage 0,
    and returns R_t = A_t + V(s_t).
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])  # (batch,)
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_range: float) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate objective, as a loss: E[max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps))].

    Returns the loss and its diagnostics: the share of tokens where clipping bit
    (``clipfrac``) and the approximate KL(old || new) = E[(rho - 1) - log rho] (``approx_kl``).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
                 "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask).item(),
                 "ratio": masked_mean(ratio, mask).item()}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range_value: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss 1/2 E[max((V - R)^2, (V_clip - R)^2)], V_clip = V_old + clip(V - V_old, -eps_v, eps_v)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    unclipped_error, clipped_error = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        stats = {"value_clipfrac": masked_mean((clipped_error > unclipped_error).float(), mask).item()}
    return loss, stats


def leave_one_out_advantages(returns: torch.Tensor, group_size: int) -> torch.Tensor:
    """A_i = R_i - mean of the other answers' returns to the same prompt. (batch,) -> (batch,).

    The batch holds ``group_size`` consecutive answers per prompt: rows 0..k-1 answer the first
    prompt, k..2k-1 the second, and so on.
    """
    if group_size < 2 or returns.shape[0] % group_size:
        raise ValueError(f"leave-one-out needs groups of at least 2 answers that tile the batch; got group_size "
                         f"{group_size} for a batch of {returns.shape[0]}")
    groups = returns.view(-1, group_size)  # (prompts, k)
    others = (groups.sum(-1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others).reshape(-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over response tokens: 1 is a perfect value function, 0 no better than a constant."""
    var_returns = masked_var(returns, mask)
    return float("nan") if var_returns <= 0 else (1.0 - masked_var(returns - values, mask) / var_returns).item()


class FixedKLController:
    """beta stays at its initial value."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019), section 2.2: steer the KL to the reference towards a target.

        e_t = clip(KL_t / KL_target - 1, -0.2, 0.2),      beta_{t+1} = beta_t * (1 + e_t * n_steps / horizon)

    ``n_steps`` is the number of episodes in the batch just used.
    """

    def __init__(self, kl_coef: float, target: float, horizon: int):
        super().__init__(kl_coef)
        self.target, self.horizon = target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


def kl_controller(cfg: PPOStageConfig) -> FixedKLController:
    if cfg.adaptive_kl:
        return AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
    return FixedKLController(cfg.kl_coef)


# --------------------------------------------------------------------------------------------
# The phases of one iteration
# --------------------------------------------------------------------------------------------

@dataclass
class Batch:
    """One iteration's episodes. ``P`` prompt positions (left-padded), ``R`` response positions."""

    rows: list[dict]
    query_ids: torch.Tensor  # (batch, P)
    query_mask: torch.Tensor  # (batch, P)
    response_ids: torch.Tensor  # (batch, R), pad after EOS
    response_mask: torch.Tensor  # (batch, R), 1 on response tokens, EOS included
    texts: list[str]
    has_eos: torch.Tensor  # (batch,) bool
    # filled by score():
    logprobs: torch.Tensor | None = None  # (batch, R) log pi_old
    ref_logprobs: torch.Tensor | None = None  # (batch, R) log pi_ref
    values: torch.Tensor | None = None  # (batch, R) V_old
    rm_scores: torch.Tensor | None = None  # (batch,) the reward function's score (notebook 04: ppo_roles.ppo_reward)
    scores: torch.Tensor | None = None  # (batch,) after the no-EOS rule
    gold: list[float] | None = None  # simulated labeler, when there is one
    entropy: torch.Tensor | None = None  # (batch, R)
    policy_trunk: torch.Tensor | None = None  # (batch, P + R, hidden): input of the first trainable layer
    value_trunk: torch.Tensor | None = None  # (batch, P + R, hidden)

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)  # (batch, P + R)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)  # (batch, P + R)


@torch.no_grad()
def rollout(roles: PPORoles, tokenizer, rows: list[dict], cfg: PPOStageConfig, seed: int) -> Batch:
    """Phase 1: one sampled response per prompt from the current policy."""
    model = roles.model
    switch_adapter(model, "policy")
    device = next(model.parameters()).device
    encoded = tokenizer(render_prompts(tokenizer, [row["messages"] for row in rows]), return_tensors="pt",
                        padding=True, add_special_tokens=False).to(device)
    torch.manual_seed(seed)
    output = model.generate(**encoded, do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0,
                            max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id)
    response_ids = output[:, encoded["input_ids"].shape[1] :].clone()  # (batch, R)
    is_eos = response_ids == tokenizer.eos_token_id
    has_eos = is_eos.any(-1)  # (batch,)
    first_eos = torch.where(has_eos, is_eos.int().argmax(-1), response_ids.shape[1] - 1)  # (batch,)
    positions = torch.arange(response_ids.shape[1], device=device)  # (R,)
    response_mask = (positions[None, :] <= first_eos[:, None]).long()  # (batch, R): through the first EOS
    response_ids[response_mask == 0] = tokenizer.pad_token_id
    texts = [tokenizer.decode(ids[mask.bool()], skip_special_tokens=True).strip()
             for ids, mask in zip(response_ids, response_mask)]
    return Batch(rows, encoded["input_ids"], encoded["attention_mask"], response_ids, response_mask, texts,
                 has_eos.cpu())


RewardFn = Callable[[list[dict], list[str]], torch.Tensor]  # (rows, texts) -> scores (batch,)
GoldFn = Callable[[list[dict], list[str], list[bool]], list[float]]  # (rows, texts, truncated) -> gold scores


@torch.no_grad()
def score(roles: PPORoles, batch: Batch, cfg: PPOStageConfig, reward_fn: RewardFn, gold_fn: GoldFn | None = None) -> Batch:
    """Phase 2: log pi_old and log pi_ref of the sampled tokens, V_old, and the score of each response."""
    R = batch.response_ids.shape[1]
    logprobs, ref_logprobs, values, entropy, policy_trunks, value_trunks = [], [], [], [], [], []
    for start in range(0, len(batch.rows), cfg.minibatch_size):
        part = slice(start, start + cfg.minibatch_size)
        ids, mask, tokens = batch.input_ids[part], batch.attention_mask[part], batch.response_ids[part]
        logits, trunk = response_logits(roles, "policy", ids, mask, R, keep_trunk=True)  # (mb, R, vocab)
        token_logprob, token_entropy = token_logprobs_and_entropy(logits, tokens, cfg.temperature)
        logprobs.append(token_logprob)
        entropy.append(token_entropy)
        del logits
        ref_logits, _ = response_logits(roles, "sft", ids, mask, R, trunk=trunk)  # same frozen lower layers
        ref_logprobs.append(token_logprobs(ref_logits, tokens, cfg.temperature))
        del ref_logits
        if cfg.advantage == "gae":
            value, value_trunk = response_values(roles, ids, mask, R, keep_trunk=True)
        else:  # rloo: the siblings are the baseline, no value model
            value, value_trunk = torch.zeros_like(token_logprob), None
        values.append(value)
        policy_trunks.append(trunk)
        value_trunks.append(value_trunk)
    switch_adapter(roles.model, "policy")
    batch.logprobs, batch.ref_logprobs = torch.cat(logprobs).cpu(), torch.cat(ref_logprobs).cpu()
    batch.values, batch.entropy = torch.cat(values).cpu(), torch.cat(entropy).cpu()
    if policy_trunks[0] is not None:
        batch.policy_trunk = torch.cat(policy_trunks)
    if value_trunks[0] is not None:
        batch.value_trunk = torch.cat(value_trunks)
    batch.rm_scores = reward_fn(batch.rows, batch.texts).float().cpu()
    batch.scores = torch.where(batch.has_eos, batch.rm_scores, torch.full_like(batch.rm_scores, cfg.no_eos_score))
    if gold_fn is not None:
        batch.gold = gold_fn(batch.rows, batch.texts, (~batch.has_eos).tolist())
    return batch


def advantages_and_returns(batch: Batch, kl_coef: float, cfg: PPOStageConfig):
    """Phases 3 and 4: shaped rewards, advantages (GAE, or leave-one-out), whitened.

    -> (advantages, returns, rewards, kl), each (batch, R). Under ``rloo`` the return of every
    token is its answer's whole return R_i and the advantage is the same at every token.
    """
    mask = batch.response_mask.cpu().float()
    rewards, kl = shape_rewards(batch.scores, batch.logprobs, batch.ref_logprobs, mask, kl_coef)
    if cfg.advantage == "gae":
        advantages, returns = compute_gae(rewards, batch.values, mask, cfg.gamma, cfg.lam)
    else:
        answer_returns = rewards.sum(-1)  # (batch,) R_i = s_i - beta * sum_t KL_t
        advantages = leave_one_out_advantages(answer_returns, cfg.samples_per_prompt)[:, None] * mask
        returns = answer_returns[:, None] * mask
    return masked_whiten(advantages, mask), returns, rewards, kl


def ptx_loss(roles: PPORoles, tokenizer, demonstrations: list[dict]) -> torch.Tensor:
    """PPO-ptx: mean cross-entropy of the policy on the demonstrations' response tokens."""
    switch_adapter(roles.model, "policy")
    prompts = render_prompts(tokenizer, [d["messages"] for d in demonstrations])
    full = [p + d["response"] + tokenizer.eos_token for p, d in zip(prompts, demonstrations)]
    tokenizer.padding_side = "right"
    try:
        encoded = tokenizer(full, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = "left"
    prompt_lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    labels = encoded["input_ids"].clone()
    labels[encoded["attention_mask"] == 0] = -100
    for i, n in enumerate(prompt_lengths):
        labels[i, :n] = -100  # the loss covers the response only
    device = next(roles.model.parameters()).device
    return roles.model(input_ids=encoded["input_ids"].to(device), attention_mask=encoded["attention_mask"].to(device),
                       labels=labels.to(device)).loss


def update(roles: PPORoles, optimizer: torch.optim.Optimizer, batch: Batch, advantages: torch.Tensor,
           returns: torch.Tensor, cfg: PPOStageConfig, seed: int, tokenizer=None,
           demonstrations: list[dict] | None = None) -> dict[str, float]:
    """Phase 5: ``ppo_epochs`` passes of clipped policy and value updates over shuffled minibatches."""
    device = next(roles.model.parameters()).device
    params = list(roles.trainable_parameters().values())
    ids, attention = batch.input_ids.to(device), batch.attention_mask.to(device)
    tokens, mask = batch.response_ids.to(device), batch.response_mask.to(device).float()
    old_logprobs, old_values = batch.logprobs.to(device), batch.values.to(device)
    advantages, returns = advantages.to(device), returns.to(device)
    R = tokens.shape[1]
    generator = torch.Generator().manual_seed(seed)
    logs: dict[str, list[float]] = {}
    skipped, stopped_early, steps = 0, False, 0
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(len(batch.rows), generator=generator)
        for start in range(0, len(order), cfg.minibatch_size):
            idx = order[start : start + cfg.minibatch_size]
            policy_trunk = batch.policy_trunk[idx] if batch.policy_trunk is not None else None
            value_trunk = batch.value_trunk[idx] if batch.value_trunk is not None else None
            logits, _ = response_logits(roles, "policy", ids[idx], attention[idx], R, trunk=policy_trunk)
            logprobs = token_logprobs(logits, tokens[idx], cfg.temperature)
            pg_loss, pg_stats = policy_loss(logprobs, old_logprobs[idx], advantages[idx], mask[idx], cfg.clip_range)
            loss = pg_loss
            if cfg.advantage == "gae":
                values, _ = response_values(roles, ids[idx], attention[idx], R, trunk=value_trunk)
                vf_loss, vf_stats = value_loss(values, old_values[idx], returns[idx], mask[idx], cfg.clip_range_value)
                loss = loss + cfg.vf_coef * vf_loss
            else:  # rloo trains no value model
                vf_loss, vf_stats = torch.tensor(float("nan")), {"value_clipfrac": float("nan")}
            if cfg.ptx_coef > 0 and demonstrations:
                picks = torch.randint(len(demonstrations), (len(idx),), generator=generator).tolist()
                demo_loss = ptx_loss(roles, tokenizer, [demonstrations[i] for i in picks])
                loss = loss + cfg.ptx_coef * demo_loss
                logs.setdefault("ptx_loss", []).append(demo_loss.item())
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                skipped += 1
                if skipped >= cfg.max_bad_minibatches:
                    raise PPODiverged(f"{skipped} minibatches had a non-finite loss ({loss.item()}) in one iteration: "
                                      "lower learning_rate, or check the reward function for inf/nan scores")
                continue
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            steps += 1
            for name, value in {"policy_loss": pg_loss.item(), "value_loss": vf_loss.item(),
                                "grad_norm": grad_norm.item(), **pg_stats, **vf_stats}.items():
                logs.setdefault(name, []).append(value)
            if cfg.max_approx_kl > 0 and pg_stats["approx_kl"] > cfg.max_approx_kl:
                stopped_early = True
                break
        if stopped_early:
            break
    switch_adapter(roles.model, "policy")
    stats = {name: sum(v) / len(v) for name, v in logs.items()}
    stats["first_ratio"] = logs["ratio"][0] if logs.get("ratio") else float("nan")
    return {**stats, "gradient_steps": steps, "skipped_minibatches": skipped, "stopped_early": stopped_early}


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

def prompts_for_iteration(rows: list[dict], iteration: int, batch_size: int, seed: int,
                          samples_per_prompt: int = 1) -> list[dict]:
    """The iteration's episodes' prompts: passes over the prompts, each pass in a fresh seeded order.

    With ``samples_per_prompt`` k > 1 the batch holds batch_size / k prompts, each k times in a row.
    """
    if samples_per_prompt > 1:
        prompts = prompts_for_iteration(rows, iteration, batch_size // samples_per_prompt, seed)
        return [row for row in prompts for _ in range(samples_per_prompt)]
    per_pass = max(1, len(rows) // batch_size)
    pass_index, position = divmod(iteration, per_pass)
    order = list(range(len(rows)))
    random.Random(seed * 7919 + pass_index).shuffle(order)
    if len(rows) < batch_size:  # fewer prompts than a batch: repeat them
        order = (order * math.ceil(batch_size / len(rows)))[:batch_size]
        return [rows[i] for i in order]
    return [rows[i] for i in order[position * batch_size : (position + 1) * batch_size]]


def iteration_metrics(iteration: int, batch: Batch, kl: torch.Tensor, returns: torch.Tensor, kl_coef: float,
                      update_stats: dict, times: dict, cfg: PPOStageConfig) -> dict:
    """One row of the metric log: what the notebook plots."""
    mask = batch.response_mask.cpu().float()  # the scored tensors live on the CPU, the rollout's on the model's device
    gold = batch.gold
    return {
        "iteration": iteration + 1,
        "episodes": (iteration + 1) * cfg.batch_size,
        "rm_score": batch.rm_scores.mean().item(),
        "score": batch.scores.mean().item(),
        "gold": (sum(gold) / len(gold)) if gold else None,
        "kl": kl.sum(-1).mean().item(),
        "kl_coef": kl_coef,
        "entropy": masked_mean(batch.entropy, mask).item(),
        "response_length": mask.sum(-1).mean().item(),
        "eos_rate": batch.has_eos.float().mean().item(),
        "return_mean": masked_mean(returns, mask).item(),
        "explained_variance": explained_variance(batch.values, returns, mask) if cfg.advantage == "gae" else None,
        **update_stats,
        **{f"time_{name}": round(seconds, 3) for name, seconds in times.items()},
    }


def learning_rate_at(iteration: int, cfg: PPOStageConfig) -> float:
    """Linear warm-up: lr * min(1, (iteration + 1) / warmup_iterations); a function of the iteration, so resumable."""
    if cfg.warmup_iterations <= 0:
        return cfg.learning_rate
    return cfg.learning_rate * min(1.0, (iteration + 1) / cfg.warmup_iterations)


def make_optimizer(roles: PPORoles, cfg: PPOStageConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(list(roles.trainable_parameters().values()), lr=cfg.learning_rate, eps=1e-5,
                             weight_decay=0.0)


def train_ppo(roles: PPORoles, tokenizer, prompts: list[dict], cfg: PPOStageConfig, stage_dir: str | Path, *,
              reward_fn: RewardFn, gold_fn: GoldFn | None = None, demonstrations: list[dict] | None = None,
              on_iteration: Callable[[dict, Batch], None] | None = None, stop_after: int | None = None,
              progress: bool = True) -> list[dict]:
    """Run (or resume) PPO for ``cfg.iterations`` iterations; returns the whole metric log.

    The loop resumes from the newest complete checkpoint in ``stage_dir/checkpoints``;
    ``stop_after`` ends this call after that many iterations in total (tests use it to
    simulate an interruption). Every iteration re-seeds sampling and minibatch order from
    (seed, iteration), so a resumed run draws exactly what an uninterrupted one draws.
    """
    stage_dir = Path(stage_dir)
    optimizer = make_optimizer(roles, cfg)
    controller = kl_controller(cfg)
    metrics: list[dict] = []
    checkpoint = latest_checkpoint(stage_dir)
    if checkpoint is not None:
        metrics = load_checkpoint(checkpoint, roles, optimizer, controller)
        write_metrics(stage_dir, metrics)  # drops rows of an iteration that was in flight
    end = cfg.iterations if stop_after is None else min(stop_after, cfg.iterations)
    bar = progress_bar(total=cfg.iterations, desc="PPO iterations", unit="it") if progress else None
    if bar is not None:
        bar.update(len(metrics))
    for iteration in range(len(metrics), end):
        seed = cfg.seed * 1_000_003 + iteration
        rows = prompts_for_iteration(prompts, iteration, cfg.batch_size, cfg.seed, cfg.samples_per_prompt)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(iteration, cfg)
        t0 = time.perf_counter()
        batch = rollout(roles, tokenizer, rows, cfg, seed)
        t1 = time.perf_counter()
        batch = score(roles, batch, cfg, reward_fn, gold_fn)
        t2 = time.perf_counter()
        advantages, returns, rewards, kl = advantages_and_returns(batch, controller.value, cfg)
        update_stats = update(roles, optimizer, batch, advantages, returns, cfg, seed, tokenizer, demonstrations)
        t3 = time.perf_counter()
        row = iteration_metrics(iteration, batch, kl, returns, controller.value, update_stats,
                                {"rollout": t1 - t0, "score": t2 - t1, "update": t3 - t2}, cfg)
        row["learning_rate"] = optimizer.param_groups[0]["lr"]
        controller.update(row["kl"], cfg.batch_size)
        metrics.append(row)
        write_metrics(stage_dir, metrics)
        if (iteration + 1) % cfg.save_every == 0 or iteration + 1 == cfg.iterations:
            save_checkpoint(stage_dir, iteration + 1, roles, optimizer, controller, metrics, cfg.keep_checkpoints)
        if (iteration + 1) % cfg.snapshot_every == 0 or iteration + 1 == cfg.iterations:
            save_snapshot(stage_dir, iteration + 1, roles)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(score=f"{row['score']:.2f}", kl=f"{row['kl']:.2f}")
        if on_iteration is not None:
            on_iteration(row, batch)
    if bar is not None:
        bar.close()
    return metrics
