"""Reward model: comparisons from ranked samples, the Bradley-Terry loss, and one base model for every role."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.config import RewardStageConfig
from helpers.reward import (comparisons_from_samples, normalisation, pairwise_accuracy, policy_pairs,
                            split_by_prompt)

ROWS = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"Describe colour {i}."}]} for i in range(4)]


def _record(row_id, *scored):
    return {"id": row_id, "samples": [{"text": t, "score": s} for t, s in scored]}


def test_comparisons_pair_every_distinct_score_and_count_ties_and_duplicates():
    records = [_record("p0", ("a", 1.0), ("b", 0.5), ("c", 0.5)),  # (a,b) (a,c); (b,c) tie
               _record("p1", ("same", 1.0), ("same", 0.0), ("x", 0.0)),  # identical texts dropped; (same, x) once
               _record("p2", ("u", 0.2), ("v", 0.2), ("w", 0.2)),  # all ties
               _record("p3", ("lo", 0.0), ("hi", 1.0), ("mid", 0.5))]  # 3 pairs
    pairs, tally = comparisons_from_samples(ROWS, records)
    assert tally == {"pairs": 6, "ties": 5, "identical": 1}
    assert all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    p3 = {(p["chosen"], p["rejected"]) for p in pairs if p["prompt_id"] == "p3"}
    assert p3 == {("hi", "lo"), ("mid", "lo"), ("hi", "mid")}


def test_comparisons_closer_than_min_gap_are_ties():
    records = [_record("p0", ("a", 0.5), ("b", 0.05), ("c", 0.02)),  # (a,b) (a,c) kept; (b,c) too close
               _record("p1", ("x", 0.0), ("y", 0.1), ("z", 1.0))]  # a gap of exactly 0.1 is a comparison
    pairs, tally = comparisons_from_samples(ROWS[:2], records, min_gap=0.1)
    assert tally == {"pairs": 5, "too_close": 1}
    assert {(p["chosen"], p["rejected"]) for p in pairs} == {("a", "b"), ("a", "c"), ("y", "x"), ("z", "x"), ("z", "y")}
    assert comparisons_from_samples(ROWS[:2], records)[1] == {"pairs": 6}  # min_gap 0: only equal scores tie


def test_policy_pairs_set_policy_answers_against_each_other_and_the_sft_answers_never_sft_against_sft():
    sft = [_record("p0", ("s-long", 0.5), ("s-cut", 0.02)),  # (s-long, s-cut) is notebook 03's pair, not made here
           _record("p1", ("t", 1.0))]
    policy = [_record("p0", ("short", 0.05), ("good", 1.0), ("also", 0.5)),
              _record("p1", ("t", 0.0)),  # the same text as SFT's answer: identical, dropped
              _record("p2", ("orphan", 1.0), ("lost", 0.0))]  # p2 has no SFT answers: policy-policy pairs only
    pairs, tally = policy_pairs(ROWS[:3], policy, sft, min_gap=0.1)
    found = {(p["chosen"], p["rejected"], p["id"]) for p in pairs}
    assert found == {("good", "short", "p0-p0-p1"), ("also", "short", "p0-p0-p2"), ("good", "also", "p0-p1-p2"),
                     ("s-long", "short", "p0-s0-p0"), ("good", "s-long", "p0-s0-p1"),  # s-long vs also: a tie
                     ("good", "s-cut", "p0-s1-p1"), ("also", "s-cut", "p0-s1-p2"),  # s-cut vs short: too close
                     ("orphan", "lost", "p2-p0-p1")}
    assert tally == {"pairs": 8, "ties": 1, "too_close": 1, "identical": 1}
    assert all(p["chosen_score"] > p["rejected_score"] and p["messages"] == ROWS[int(p["prompt_id"][1])]["messages"]
               for p in pairs)
    assert policy_pairs(ROWS[:1], [], sft)[0] == []  # no policy answers: no pairs

def test_extra_comparisons_train_only_and_heldout_stays_on_the_main_prompts(tokenizer):
    from helpers.reward import make_comparisons

    records = [_record(f"p{i}", (f"good answer {i}", 1.0), (f"bad answer {i}", 0.0)) for i in range(4)]
    extra_rows = [{"id": f"s{i}", "messages": [{"role": "user", "content": f"Name shape {i}."}]} for i in range(3)]
    extra_records = [_record(f"s{i}", (f"a circle {i}", 0.5), (f"no {i}", 0.0), (f"nope {i}", 0.02)) for i in range(3)]
    cfg = RewardStageConfig.from_profile("tiny", min_gold_gap=0.1, heldout_fraction=0.25, swapped_pairs=0)
    comparisons = make_comparisons(ROWS, records, tokenizer, cfg, extra=(extra_rows, extra_records))
    assert comparisons.tally["extra_train_pairs"] == 6  # 2 per shape prompt; (no, nope) is a near-tie
    assert len(comparisons.heldout) == 1 and comparisons.heldout[0]["prompt_id"].startswith("p")
    assert sum(p["prompt_id"].startswith("s") for p in comparisons.train) == 6
    assert len(comparisons.pairs) == 4  # the main prompts' pairs only


def test_split_by_prompt_keeps_each_prompts_pairs_together():
    pairs = [{"prompt_id": f"p{i}", "id": f"p{i}-{j}"} for i in range(10) for j in range(3)]
    train, held = split_by_prompt(pairs, 0.2, seed=0)
    assert len(held) == 6 and len(train) == 24
    assert {p["prompt_id"] for p in train}.isdisjoint({p["prompt_id"] for p in held})
    assert split_by_prompt(pairs, 0.2, seed=0) == (train, held)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        split_by_prompt(pairs[:3], 0.2, seed=0)


def test_normalisation_and_accuracy_on_literals():
    norm = normalisation([1.0, 3.0])
    assert norm == {"offset": 2.0, "scale": 1.0, "n": 2}
    import pandas as pd

    table = pd.DataFrame({"r_chosen": [1.0, 0.0, 2.0, 0.5], "r_rejected": [0.0, 1.0, 2.0, -1.0]})
    assert pairwise_accuracy(table) == 0.5  # the tie counts as wrong


PAIRS = [{"id": f"q{i}", "prompt_id": f"q{i}", "messages": [{"role": "user", "content": f"Describe the sea, take {i}."}],
          "chosen": "the sea is wide and calm today.", "rejected": "NO.", "chosen_score": 1.0, "rejected_score": 0.0}
         for i in range(4)]


@pytest.fixture(scope="module")
def reward_run(model_config, tokenizer, tmp_path_factory):
    from helpers.reward import build_reward_trainer, load_reward_base

    cfg = RewardStageConfig.from_profile("tiny", learning_rate=3e-3, epochs=3, batch_size=2, save_steps=100)
    out = tmp_path_factory.mktemp("reward")
    trainer = build_reward_trainer(load_reward_base(model_config, tokenizer), tokenizer, PAIRS, PAIRS[:2], cfg,
                                   out / "checkpoints", torch.float32)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    fresh_loss = trainer.compute_loss(trainer.model, batch).item()
    trainer.train()
    return trainer, fresh_loss, out


@pytest.mark.model
def test_fresh_reward_model_scores_every_answer_zero(model_config, tokenizer):
    from helpers.reward import load_reward_base, score_conversations

    model = load_reward_base(model_config, tokenizer)
    conversations = [p["messages"] + [{"role": "assistant", "content": p[k]}] for p in PAIRS for k in ("chosen", "rejected")]
    assert score_conversations(model, tokenizer, conversations) == [0.0] * len(conversations)


@pytest.mark.model
def test_bradley_terry_loss_matches_the_formula(reward_run, tokenizer):
    from helpers.reward import score_pairs

    trainer, fresh_loss, _ = reward_run
    assert fresh_loss == pytest.approx(math.log(2), abs=1e-6)  # zero head: sigma(0 - 0) = 1/2
    model = trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()
    table = score_pairs(model, tokenizer, PAIRS)
    margin = torch.tensor(table.r_chosen.values - table.r_rejected.values)
    assert loss == pytest.approx(-torch.nn.functional.logsigmoid(margin).mean().item(), rel=1e-4, abs=1e-5)


@pytest.mark.model
def test_tiny_reward_training_learns_the_preference(reward_run, tokenizer):
    from helpers.reward import score_pairs

    trainer, fresh_loss, _ = reward_run
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses[-1] < fresh_loss - 0.1
    assert pairwise_accuracy(score_pairs(trainer.model.eval(), tokenizer, PAIRS)) == 1.0


@pytest.mark.model
def test_reward_training_updates_only_the_top_layers_and_the_head(reward_run):
    from helpers.adapters import layer_index

    trainer, _, _ = reward_run
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    layers = {layer_index(n) for n in trainable} - {None}
    top = max(layer_index(n) for n, _ in trainer.model.named_parameters() if layer_index(n) is not None)
    assert layers == set(range(top - 3, top + 1))  # tiny profile: trainable_layers = 4
    assert any("score.modules_to_save" in n for n in trainable)
    lower_lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n and layer_index(n) < top - 3]
    assert lower_lora_b and all(torch.count_nonzero(p) == 0 for p in lower_lora_b)  # frozen at their zero start


@pytest.mark.model
def test_roles_on_one_base_equal_each_role_loaded_alone(reward_run, model_config, tokenizer, tmp_path):
    """SFT logits and rewards from the shared multi-adapter model equal those of each model loaded alone."""
    from helpers.adapters import load_policy, load_roles, reward_scores, switch_adapter
    from helpers.reward import save_reward_model, score_conversations
    from helpers.sft import build_sft_trainer, save_adapter_atomically, sft_examples
    from helpers.config import SFTStageConfig
    from helpers.models import load_model

    trainer, _, out = reward_run
    # the reward model alone: the trained sequence-classification model, before it is saved
    conversations = [p["messages"] + [{"role": "assistant", "content": p["chosen"]}] for p in PAIRS]
    expected_rewards = torch.tensor(score_conversations(trainer.model.eval(), tokenizer, conversations))
    save_reward_model(trainer.model, out / "model", {"offset": 0.5, "scale": 2.0, "n": 8})
    # an SFT adapter with non-zero weights (one step at a high learning rate)
    demos = [{"id": "d", "messages": PAIRS[0]["messages"], "response": PAIRS[0]["chosen"]}] * 2
    sft = build_sft_trainer(load_model(model_config), tokenizer, sft_examples(demos), sft_examples(demos),
                            SFTStageConfig.from_profile("tiny", learning_rate=1e-2, save_steps=100),
                            tmp_path / "ck", torch.float32)
    sft.train()
    save_adapter_atomically(sft.model, tmp_path / "sft")

    shared, head, norm = load_roles(model_config, tmp_path / "sft", out / "model")
    assert norm["offset"] == 0.5 and set(shared.peft_config) == {"sft", "reward"}
    batch = tokenizer.pad({"input_ids": [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"]
                                         for c in conversations]}, return_tensors="pt")
    switch_adapter(shared, "sft")
    with torch.no_grad():
        sft_logits_before = shared(**batch).logits
    assert not any(p.requires_grad for p in shared.parameters())  # every role loaded frozen
    trainable = [p for n, p in shared.named_parameters() if ".sft." in n]
    for p in trainable:  # as PPO will: one adapter trains while others are only switched to
        p.requires_grad_(True)
    shared.train()
    rewards = reward_scores(shared, head, batch["input_ids"], batch["attention_mask"], tokenizer.pad_token_id)
    assert shared.active_adapter == "sft" and shared.training  # restored after scoring
    assert all(p.requires_grad for p in trainable)
    assert not any(p.requires_grad for n, p in shared.named_parameters() if ".sft." not in n)
    shared.eval()
    with torch.no_grad():
        sft_logits_after = shared(**batch).logits
    torch.testing.assert_close(rewards, expected_rewards.float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sft_logits_before, sft_logits_after)
    normalised = reward_scores(shared, head, batch["input_ids"], batch["attention_mask"], tokenizer.pad_token_id, norm)
    torch.testing.assert_close(normalised, (rewards - 0.5) / 2.0)

    alone_sft = load_policy(model_config, tmp_path / "sft")
    with torch.no_grad():
        torch.testing.assert_close(alone_sft(**batch).logits, sft_logits_before, atol=1e-4, rtol=1e-4)
        with shared.disable_adapter():
            base_logits = shared(**batch).logits
    assert not torch.allclose(base_logits, sft_logits_before, atol=1e-3)  # the SFT adapter really does something


@pytest.mark.model
def test_overlong_pairs_are_dropped_and_counted(tokenizer):
    from helpers.reward import drop_overlong

    long_pair = dict(PAIRS[0], id="long", chosen="word " * 400)
    kept, dropped = drop_overlong(PAIRS + [long_pair], tokenizer, max_length=256)
    assert kept == PAIRS and dropped == 1


def test_human_data_without_pairs_is_refused():
    from helpers.reward import comparisons_from_preferences

    with pytest.raises(ValueError, match="needs comparisons"):
        comparisons_from_preferences([{"id": "r1", "messages": [], "response": "x"}])


def test_unsampled_prompts_reads_the_samples_log(tmp_path):
    from helpers.reward import unsampled_prompts

    log = tmp_path / "sft_samples.jsonl"
    assert unsampled_prompts(ROWS, log) == ["p0", "p1", "p2", "p3"]
    log.write_text('{"id": "p1", "samples": []}\n{"id": "p3", "samples": []}\n{"id": "p0", "sam')  # torn tail
    assert unsampled_prompts(ROWS, log) == ["p0", "p2"]


def test_normalisation_uses_every_sft_answer_to_a_training_prompt():
    from helpers.reward import Comparisons, normalisation_conversations

    records = [_record(row["id"], ("a", 1.0), ("b", 0.0)) for row in ROWS]
    train = [{"prompt_id": "p1", "messages": ROWS[1]["messages"], "chosen": "a", "rejected": "b"}]
    sampled = normalisation_conversations(ROWS, Comparisons(records, train, {}, train, []))
    assert [c[-1]["content"] for c in sampled] == ["a", "b"] and sampled[0][:-1] == ROWS[1]["messages"]
    human = normalisation_conversations(ROWS, Comparisons(None, train, {}, train, []))
    assert human == sampled  # human data: the chosen and rejected answers of the training pairs


def test_base_pairs_capped_by_a_seeded_sample(tokenizer):
    from helpers.reward import make_comparisons

    records = [_record(f"p{i}", (f"good answer {i}", 1.0), (f"bad answer {i}", 0.0)) for i in range(4)]
    extra_rows = [{"id": f"s{i}", "messages": [{"role": "user", "content": f"Name shape {i}."}]} for i in range(3)]
    extra_records = [_record(f"s{i}", (f"a circle {i}", 0.5), (f"no {i}", 0.0), (f"nope {i}", 0.02)) for i in range(3)]
    every = make_comparisons(ROWS, records, tokenizer,
                             RewardStageConfig.from_profile("tiny", min_gold_gap=0.1, swapped_pairs=0))
    cfg = RewardStageConfig.from_profile("tiny", min_gold_gap=0.1, max_base_pairs=4, swapped_pairs=0)
    capped = make_comparisons(ROWS, records, tokenizer, cfg, extra=(extra_rows, extra_records))
    assert capped.tally["extra_train_pairs"] == 4 and capped.tally["extra_pairs_unused"] == 2
    base_ids = [p["id"] for p in capped.train if p["prompt_id"].startswith("s")]
    assert len(base_ids) == len(set(base_ids)) == 4
    assert capped.heldout == every.heldout  # the cap touches the base pairs only
    again = make_comparisons(ROWS, records, tokenizer, cfg, extra=(extra_rows, extra_records))
    assert [p["id"] for p in again.train] == [p["id"] for p in capped.train]  # seeded
    with pytest.raises(ValueError, match="max_base_pairs"):
        RewardStageConfig.from_profile("tiny", max_base_pairs=-1)


# Generated rows the labeler can judge: one constraint each, a topic, and its keyword stems.
TOPIC_ROWS = [{"id": f"t{i}", "messages": [{"role": "user", "content": f"Tell me about {topic}. Use only lowercase letters."}],
               "topic_keywords": [stem], "constraints": [{"kind": "lowercase"}]}
              for i, (topic, stem) in enumerate([("volcanoes", "volcan"), ("rabbits", "rabbit"), ("tea", "tea")])]
ANSWERS = {"t0": "volcanoes erupt when molten rock rises to the surface.",
           "t1": "rabbits are small mammals that live in burrows underground.",
           "t2": "tea is brewed from the dried leaves of a shrub."}


def _judged_records(rows, answers):
    from helpers.labeler import judge

    records = []
    for row in rows:
        texts = [answers[row["id"]], "Cut off in the mid"]  # a good answer, and one that fails two gates
        samples = []
        for text in texts:
            verdict = judge(row, text)
            samples.append({"text": text, "truncated": False, "score": verdict.score, "gates": verdict.gates})
        records.append({"id": row["id"], "samples": samples})
    return records


def test_swapped_pairs_set_a_prompts_answer_against_another_prompts_judged_for_this_one():
    from helpers.labeler import judge
    from helpers.reward import swapped_answer_pairs

    records = _judged_records(TOPIC_ROWS, ANSWERS)
    assert [s["score"] for s in records[0]["samples"]] == [1.0, 0.0]
    pairs = swapped_answer_pairs(TOPIC_ROWS, records, n_pairs=10, min_gap=0.1, seed=0)
    assert len(pairs) == 6  # each prompt's good answer against each other prompt's: 3 x 2, no duplicates
    rows = {row["id"]: row for row in TOPIC_ROWS}
    for pair in pairs:
        assert pair["chosen"] == ANSWERS[pair["prompt_id"]] and pair["rejected"] in ANSWERS.values()
        assert pair["rejected"] != pair["chosen"]  # only gate-passing answers are used, never the cut-off one
        verdict = judge(rows[pair["prompt_id"]], pair["rejected"])
        assert pair["rejected_score"] == verdict.score == 0.05 and not verdict.gates["on_topic"]  # lowercase met
    assert swapped_answer_pairs(TOPIC_ROWS, records, 4, 0.1, seed=0) == pairs[:4]  # seeded, draws in order
    suits_both = dict(ANSWERS, t2="tea grows on volcanoes and rabbits nibble it.")  # on topic everywhere
    kept = swapped_answer_pairs(TOPIC_ROWS, _judged_records(TOPIC_ROWS, suits_both), 10, 0.1, seed=0)
    assert all(p["rejected"] != suits_both["t2"] for p in kept) and len(kept) == 4  # a tie is no comparison
    assert swapped_answer_pairs(TOPIC_ROWS, _judged_records(TOPIC_ROWS, suits_both), 10, 0.0, seed=0) == kept  # min_gap 0 too


def test_swapped_pairs_join_training_from_training_prompts_only(tokenizer):
    from helpers.reward import make_comparisons

    rows = [dict(row, id=f"{row['id']}-{k}") for k in range(4) for row in TOPIC_ROWS]  # 12 prompts, 4 per topic
    answers = {row["id"]: ANSWERS[row["id"].split("-")[0]] + f" ({row['id'][-1]})" for row in rows}
    records = _judged_records(rows, answers)
    cfg = RewardStageConfig.from_profile("tiny", min_gold_gap=0.1, heldout_fraction=0.25, swapped_pairs=20)
    comparisons = make_comparisons(rows, records, tokenizer, cfg)
    swapped = [p for p in comparisons.train if "-swap-" in p["id"]]
    assert len(swapped) == comparisons.tally["swapped_train_pairs"] == 20
    held = {p["prompt_id"] for p in comparisons.heldout}
    held_texts = {s["text"] for rec in records if rec["id"] in held for s in rec["samples"]}
    assert len(held) == 3 and all(p["prompt_id"] not in held for p in swapped)
    assert not held_texts & {p["rejected"] for p in swapped}  # no held-out answer leaks in as someone else's
    assert "swapped_train_pairs" not in make_comparisons(rows, records, tokenizer,
                                                         RewardStageConfig.from_profile("tiny", swapped_pairs=0)).tally
    with pytest.raises(ValueError, match="swapped_pairs"):
        RewardStageConfig.from_profile("tiny", swapped_pairs=-1)


def test_edit_pairs_set_an_answer_against_its_copy_edited_to_meet_or_break_one_constraint():
    from helpers.reward import edit_pairs

    answers = dict(ANSWERS, t2="Tea is brewed from the dried leaves of a shrub.")  # misses "only lowercase"
    records = _judged_records(TOPIC_ROWS, answers)
    pairs = edit_pairs(TOPIC_ROWS, records, n_pairs=10, min_gap=0.1, seed=0)
    assert len(pairs) == 3  # one per gate-passing answer; the cut-off answers are never edited
    by_prompt = {p["prompt_id"]: p for p in pairs}
    assert by_prompt["t2"]["edit"] == "meet lowercase"
    assert (by_prompt["t2"]["chosen"], by_prompt["t2"]["rejected"]) == (ANSWERS["t2"], answers["t2"])
    assert by_prompt["t0"]["edit"] == "violate lowercase"
    assert (by_prompt["t0"]["chosen"], by_prompt["t0"]["rejected"]) == (
        ANSWERS["t0"], "Volcanoes erupt when molten rock rises to the surface.")
    assert all((p["chosen_score"], p["rejected_score"]) == (1.0, 0.0) for p in pairs)
    assert edit_pairs(TOPIC_ROWS, records, 2, 0.1, seed=0) == pairs[:2]  # seeded, drawn in order
    no_gap = [dict(row, constraints=row["constraints"] + [{"kind": "word_count_max", "n": 60}]) for row in TOPIC_ROWS]
    assert edit_pairs(no_gap, _judged_records(no_gap, answers), 10, 0.6, seed=0) == []  # 1 vs 0.5 < min_gap
    tangled = [dict(TOPIC_ROWS[0], constraints=[{"kind": "word_count_max", "n": 8}, {"kind": "postscript"}])]
    text = {"t0": "volcanoes erupt when molten rock rises up.\n\nP.S. they are hot."}  # 11 words
    # Cutting to 8 words drops the P.S. and dropping the P.S. meets the limit: two constraints change, no pair.
    assert edit_pairs(tangled, _judged_records(tangled, text), 10, 0.0, seed=0) == []


def test_edit_pairs_join_training_from_training_prompts_only(tokenizer):
    from helpers.reward import make_comparisons

    rows = [dict(row, id=f"{row['id']}-{k}") for k in range(4) for row in TOPIC_ROWS]
    answers = {row["id"]: ANSWERS[row["id"].split("-")[0]] + f" ({row['id'][-1]})" for row in rows}
    records = _judged_records(rows, answers)
    cfg = RewardStageConfig.from_profile("tiny", min_gold_gap=0.1, heldout_fraction=0.25, edit_pairs=20)
    comparisons = make_comparisons(rows, records, tokenizer, cfg)
    edited = [p for p in comparisons.train if "-edit-" in p["id"]]
    assert len(edited) == comparisons.tally["edit_train_pairs"] == 9  # the 9 training prompts' good answers
    held = {p["prompt_id"] for p in comparisons.heldout}
    assert len(held) == 3 and all(p["prompt_id"] not in held for p in edited)
