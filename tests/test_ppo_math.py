"""PPO's pure functions on literal tensors: GAE, whitening, the KL penalty, the clipped losses, the KL controller."""

import math

import pytest
import torch

from helpers.config import ConfigError, PPOStageConfig
from helpers.ppo import (
    AdaptiveKLController,
    Batch,
    FixedKLController,
    advantages_and_returns,
    compute_gae,
    explained_variance,
    kl_penalty,
    learning_rate_at,
    leave_one_out_advantages,
    masked_mean,
    masked_whiten,
    policy_loss,
    prompts_for_iteration,
    shape_rewards,
    value_loss,
)


def gae_loop(rewards, values, length, gamma, lam):
    """GAE for one response of ``length`` tokens, written as plainly as possible."""
    advantages = [0.0] * length
    running = 0.0
    for t in reversed(range(length)):
        next_value = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages, [a + v for a, v in zip(advantages, values)]


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0), (0.99, 0.0)])
def test_compute_gae_matches_a_plain_loop(gamma, lam):
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 5), torch.randn(3, 5)
    lengths = [5, 3, 1]
    mask = torch.tensor([[1.0] * n + [0.0] * (5 - n) for n in lengths])
    advantages, returns = compute_gae(rewards, values, mask, gamma, lam)
    for row, n in enumerate(lengths):
        expected_adv, expected_ret = gae_loop(rewards[row].tolist(), values[row].tolist(), n, gamma, lam)
        assert advantages[row, :n].tolist() == pytest.approx(expected_adv, abs=1e-5)
        assert returns[row, :n].tolist() == pytest.approx(expected_ret, abs=1e-5)
        assert advantages[row, n:].abs().sum() == 0 and returns[row, n:].abs().sum() == 0


def test_gae_hand_computed_case():
    # One response of two tokens, score 1 on the last one, V = (0.5, 0.25), gamma = 1, lam = 0.5:
    # delta_1 = 1 - 0.25 = 0.75; delta_0 = 0 + 0.25 - 0.5 = -0.25; A_0 = -0.25 + 0.5 * 0.75 = 0.125.
    advantages, returns = compute_gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.25]]),
                                      torch.ones(1, 2), gamma=1.0, lam=0.5)
    assert advantages.tolist() == [[pytest.approx(0.125), pytest.approx(0.75)]]
    assert returns.tolist() == [[pytest.approx(0.625), pytest.approx(1.0)]]


def test_masked_whiten_ignores_masked_positions():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    whitened = masked_whiten(values, mask)
    kept = whitened[mask.bool()]
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert kept.pow(2).mean().item() == pytest.approx(1.0, abs=1e-4)  # population variance 1
    assert whitened[~mask.bool()].abs().sum() == 0
    expected = (torch.tensor([1.0, 2, 3, 4, 5]) - 3.0) / math.sqrt(2.0)
    assert kept.tolist() == pytest.approx(expected.tolist(), abs=1e-4)
    shifted = masked_whiten(values, mask, shift_mean=False)[mask.bool()]
    assert shifted.mean().item() == pytest.approx(3.0, abs=1e-5)


def test_kl_penalty_and_reward_shaping():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -3.0]])
    ref_logprobs = torch.tensor([[-1.5, -2.0, -1.0], [-0.5, -1.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    kl = kl_penalty(logprobs, ref_logprobs, mask)
    assert kl.tolist() == [[0.5, 0.0, 0.5], [-0.5, 0.0, 0.0]]
    rewards, kl2 = shape_rewards(torch.tensor([2.0, -1.0]), logprobs, ref_logprobs, mask, kl_coef=0.1)
    assert torch.equal(kl, kl2)
    # -beta * KL on every token; the score lands on each response's last token (index 2 and 1).
    assert rewards.tolist() == [[pytest.approx(-0.05), 0.0, pytest.approx(-0.05 + 2.0)],
                                [pytest.approx(0.05), pytest.approx(-1.0), 0.0]]


def test_policy_loss_hand_computed():
    # Token 1: ratio e^0.5 = 1.65 > 1.2 with A = 1 -> clipped: loss -1.2.
    # Token 2: ratio e^-0.5 = 0.61 < 0.8 with A = 1 -> unclipped -0.61 is larger than clipped -0.8: loss -0.607.
    # Token 3: ratio 1, A = -2 -> loss 2. Token 4 is masked out.
    old = torch.zeros(1, 4)
    new = torch.tensor([[0.5, -0.5, 0.0, 3.0]])
    advantages = torch.tensor([[1.0, 1.0, -2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, stats = policy_loss(new, old, advantages, mask, clip_range=0.2)
    expected = (-1.2 - math.exp(-0.5) + 2.0) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert stats["clipfrac"] == pytest.approx(1 / 3)
    approx_kl = ((math.exp(0.5) - 1 - 0.5) + (math.exp(-0.5) - 1 + 0.5) + 0.0) / 3
    assert stats["approx_kl"] == pytest.approx(approx_kl, abs=1e-6)


def test_policy_loss_at_ratio_one_is_minus_mean_advantage_and_its_gradient_is_the_policy_gradient():
    logprobs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    advantages = torch.tensor([[2.0, -1.0]])
    loss, stats = policy_loss(logprobs, logprobs.detach(), advantages, torch.ones(1, 2), clip_range=0.2)
    assert loss.item() == pytest.approx(-0.5)
    loss.backward()
    assert logprobs.grad.tolist() == [[pytest.approx(-1.0), pytest.approx(0.5)]]  # -A / n
    assert stats["clipfrac"] == 0 and stats["approx_kl"] == 0


def test_value_loss_hand_computed():
    old_values = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[1.0, 0.1, 9.0]])
    returns = torch.tensor([[2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, stats = value_loss(values, old_values, returns, mask, clip_range_value=0.2)
    # Token 1: unclipped (1 - 2)^2 = 1, clipped (0.2 - 2)^2 = 3.24 -> 3.24. Token 2: 0.01 both ways.
    assert loss.item() == pytest.approx(0.5 * (3.24 + 0.01) / 2)
    assert stats["value_clipfrac"] == pytest.approx(0.5)


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.5), returns, mask) == pytest.approx(0.0)


def test_masked_mean():
    assert masked_mean(torch.tensor([1.0, 5.0, 100.0]), torch.tensor([1.0, 1.0, 0.0])).item() == 3.0


def test_adaptive_kl_controller_update_rule():
    controller = AdaptiveKLController(0.1, target=6.0, horizon=100)
    controller.update(current_kl=9.0, n_steps=10)  # error clip(9/6 - 1, .2) = 0.2 -> x (1 + 0.2 * 10/100)
    assert controller.value == pytest.approx(0.1 * 1.02)
    controller.update(current_kl=5.4, n_steps=10)  # error -0.1 -> x 0.99
    assert controller.value == pytest.approx(0.1 * 1.02 * 0.99)
    controller.update(current_kl=0.0, n_steps=50)  # error clipped at -0.2 -> x 0.9
    assert controller.value == pytest.approx(0.1 * 1.02 * 0.99 * 0.9)
    restored = AdaptiveKLController(0.5, target=6.0, horizon=100)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 64)
    assert fixed.value == 0.05


def test_prompts_for_iteration_walks_passes_in_seeded_orders():
    rows = [{"id": i} for i in range(10)]
    first_pass = [r["id"] for it in range(2) for r in prompts_for_iteration(rows, it, 5, seed=0)]
    assert sorted(first_pass) == list(range(10))
    second_pass = [r["id"] for it in range(2, 4) for r in prompts_for_iteration(rows, it, 5, seed=0)]
    assert sorted(second_pass) == list(range(10)) and second_pass != first_pass
    assert prompts_for_iteration(rows, 3, 5, seed=0) == prompts_for_iteration(rows, 3, 5, seed=0)
    assert len(prompts_for_iteration(rows[:3], 0, 5, seed=0)) == 5  # fewer prompts than a batch: repeated


def test_learning_rate_warms_up_linearly_then_holds():
    cfg = PPOStageConfig.from_profile("tiny", learning_rate=1e-3, warmup_iterations=4)
    assert [learning_rate_at(i, cfg) for i in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    no_warmup = PPOStageConfig.from_profile("tiny", learning_rate=1e-3, warmup_iterations=0)
    assert learning_rate_at(0, no_warmup) == 1e-3
    with pytest.raises(ConfigError, match="warmup_iterations"):
        PPOStageConfig.from_profile("tiny", warmup_iterations=-1)


def test_ppo_config_checks_its_fields():
    assert PPOStageConfig.from_profile("cpu").minibatches == 2
    with pytest.raises(ConfigError, match="minibatch_size"):
        PPOStageConfig.from_profile("cpu", batch_size=16, minibatch_size=5)
    with pytest.raises(ConfigError, match="kl_coef"):
        PPOStageConfig.from_profile("tiny", kl_coef=-0.1)
    with pytest.raises(ConfigError, match="lam"):
        PPOStageConfig.from_profile("tiny", lam=1.5)


def test_leave_one_out_advantages_hand_computed():
    # two prompts, three answers each: each answer against the mean of its two siblings
    returns = torch.tensor([1.0, 0.0, 2.0, 5.0, 5.0, 5.0])
    expected = torch.tensor([1.0 - 1.0, 0.0 - 1.5, 2.0 - 0.5, 0.0, 0.0, 0.0])
    assert torch.allclose(leave_one_out_advantages(returns, 3), expected)
    # the baseline never uses the answer itself: raising one return moves its siblings' advantages down
    raised = leave_one_out_advantages(torch.tensor([1.0, 0.0, 4.0, 5.0, 5.0, 5.0]), 3)
    assert raised[2] > expected[2] and raised[0] < expected[0] and raised[1] < expected[1]
    assert torch.equal(raised[3:], expected[3:])  # the other prompt is untouched
    with pytest.raises(ValueError, match="group_size"):
        leave_one_out_advantages(returns, 4)  # groups must tile the batch
    with pytest.raises(ValueError, match="group_size"):
        leave_one_out_advantages(returns, 1)  # one answer has no siblings


def test_rloo_advantages_are_the_same_at_every_token_and_rank_by_return():
    cfg = PPOStageConfig.from_profile("tiny", batch_size=4, minibatch_size=2, advantage="rloo", samples_per_prompt=2,
                                      kl_coef=0.5)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])
    batch = Batch(rows=[{}] * 4, query_ids=None, query_mask=None, response_ids=None, response_mask=mask, texts=[""] * 4,
                  has_eos=torch.ones(4, dtype=torch.bool), logprobs=torch.zeros(4, 3), ref_logprobs=torch.zeros(4, 3),
                  values=torch.zeros(4, 3), scores=torch.tensor([1.0, 0.0, 0.0, 0.0]))
    batch.logprobs[3, 0] = 2.0  # answer 3 pays a KL of 2 nats: return -0.5 * 2 = -1
    advantages, returns, _, kl = advantages_and_returns(batch, cfg.kl_coef, cfg)
    assert torch.allclose(returns[:, 0], torch.tensor([1.0, 0.0, 0.0, -1.0]))
    for row in range(4):  # one advantage per answer, on its tokens only
        values = advantages[row][mask[row].bool()]
        assert torch.allclose(values, values[0].expand_as(values)) and (advantages[row][~mask[row].bool()] == 0).all()
    assert advantages[0, 0] > 0 > advantages[1, 0] and advantages[2, 0] > 0 > advantages[3, 0]


def test_prompts_for_iteration_repeats_each_prompt_k_times_in_a_row():
    rows = [{"id": i} for i in range(10)]
    grouped = [r["id"] for r in prompts_for_iteration(rows, 1, 8, seed=0, samples_per_prompt=4)]
    prompts = [r["id"] for r in prompts_for_iteration(rows, 1, 2, seed=0)]
    assert grouped == [prompts[0]] * 4 + [prompts[1]] * 4


def test_rloo_needs_two_answers_per_prompt_that_divide_the_batch():
    assert PPOStageConfig.from_profile("tiny", advantage="rloo", samples_per_prompt=2).samples_per_prompt == 2
    with pytest.raises(ConfigError, match="samples_per_prompt.*at least 2"):
        PPOStageConfig.from_profile("tiny", advantage="rloo", samples_per_prompt=1)
    with pytest.raises(ConfigError, match="samples_per_prompt.*divides batch_size"):
        PPOStageConfig.from_profile("tiny", samples_per_prompt=3)  # tiny's batch is 4
    with pytest.raises(ConfigError, match="advantage"):
        PPOStageConfig.from_profile("tiny", advantage="grpo")


class WordTokenizer:
    """A stand-in tokenizer: one token per word."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [text.split() for text in texts]}


def test_length_taste_measures_the_reward_per_token_that_gold_does_not_explain():
    from helpers.ppo_roles import length_neutral, length_taste

    def answer(words, score, truncated=False):
        return {"text": " ".join(["w"] * words), "n_tokens": words, "truncated": truncated, "score": score}

    records = [{"id": "a", "samples": [answer(4, 0.0), answer(8, 1.0), answer(12, 1.0), answer(40, 0.05, True)]},
               {"id": "b", "samples": [answer(6, 1.0), answer(10, 0.0), answer(20, 1.0)]}]
    rows = [{"id": "a"}, {"id": "b"}]
    gold_of = {(r["id"], s["text"]): s["score"] for r in records for s in r["samples"]}
    offset = {"a": 1.0, "b": -2.0}

    def reward_fn(rows, texts):  # likes gold, dislikes every word by 0.1, and each prompt sits at its own level
        return torch.tensor([offset[row["id"]] + 3.0 * gold_of[row["id"], text] - 0.1 * len(text.split())
                             for row, text in zip(rows, texts)])

    taste = length_taste(reward_fn, WordTokenizer(), rows, records)
    assert taste["per_token"] == pytest.approx(-0.1)
    assert (taste["answers"], taste["prompts"], taste["gold_held_fixed"]) == (6, 2, True)  # the cut-off one is out
    assert taste["mean_tokens"] == pytest.approx((4 + 8 + 12 + 6 + 10 + 20) / 6)
    neutral = length_neutral(reward_fn, WordTokenizer(), taste["per_token"], taste["mean_tokens"])
    long_and_short = [records[0]["samples"][1]["text"], records[0]["samples"][2]["text"]]  # both met it (gold 1)
    assert reward_fn([rows[0]] * 2, long_and_short).tolist() == pytest.approx([3.2, 2.8])
    at_the_mean = 1.0 + 3.0 - 0.1 * taste["mean_tokens"]  # what the reward model gives an answer of typical length
    assert neutral([rows[0]] * 2, long_and_short).tolist() == pytest.approx([at_the_mean] * 2)  # length is out

    unjudged = [{"id": "a", "samples": [{"text": "w", "truncated": False}, {"text": "w w w", "truncated": False}]}]
    taste = length_taste(lambda rows, texts: torch.tensor([0.0, -0.4]), WordTokenizer(), rows, unjudged)
    assert taste["per_token"] == pytest.approx(-0.2) and not taste["gold_held_fixed"]  # no gold: all of it counts
    cut_off = [{"id": "a", "samples": [answer(64, 0.05, True), answer(64, 0.05, True), answer(3, 1.0)]}]
    assert length_taste(reward_fn, WordTokenizer(), rows, cut_off)["per_token"] is None  # one finished answer
    one_each = [{"id": "a", "samples": [answer(4, 0.0)]}, {"id": "b", "samples": [answer(6, 1.0)]}]
    assert length_taste(reward_fn, WordTokenizer(), rows, one_each)["per_token"] is None  # no prompt has two
