"""Evaluating contenders side by side: gold score, win rate, reward, KL to the SFT model, and best-of-n.

Every contender answers the same held-out evaluation prompts (topics never seen in
training), a few sampled answers per prompt at temperature 1, and is measured against
the SFT model:

* **gold score**: the simulated labeler (``helpers.labeler``), mean with a bootstrap 95 % CI;
* **win rate** vs SFT, prompt by prompt by gold score, every answer against every SFT answer to
  the same prompt, a tie counting half (``helpers.stats.grouped_comparison``);
* **reward-model score**: the normalised r(x, y) of notebook 03 (the proxy PPO optimised);
* **KL to the SFT model**, estimated from the contender's own samples (Monte Carlo):

      KL(pi || pi_sft) = E_{y ~ pi} [ log pi(y|x) - log pi_sft(y|x) ]
                       ~ mean over answers of sum_t [ log pi(y_t|x, y_<t) - log pi_sft(y_t|x, y_<t) ]

  For **best-of-n** there is a closed form (Stiennon et al. 2020; Gao et al. 2022, eq. 2):
  KL_bon = log n - (n - 1) / n, which no sampling estimate needs to approximate.
* length and EOS rate; the pass rate of each constraint kind; and, where comparisons are
  held out, the share of them a policy's *implicit reward* log pi/pi_sft orders correctly;
* the reward model on a pool of judged SFT answers: pairwise accuracy, rank correlation, and
  accuracy split by which labeler rule decided each pair (``accuracy_by_reason``), and the pairs a
  constraint decided split by its kind (``constraint_reason``).

The **over-optimisation curve** (Gao et al., 2022) plots gold and reward-model score against
sqrt(KL): where the proxy keeps rising while the gold score falls, the policy is exploiting
the reward model rather than getting better.

Every headline row comes from ``summarize``, in one set of keys; ``ppo_vs_sft`` is its short form for
one policy against SFT, as notebook 04 and ``benchmarks/ppo_sweep.py`` report it.
"""

from __future__ import annotations

import itertools
import math
from contextlib import nullcontext

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .adapters import reward_scores, switch_adapter
from .demonstrations import gate_summary, pass_rates, sample_and_judge, samples_table
from .files import read_jsonl
from .generation import render_prompts
from .stats import (bootstrap_mean_ci, grouped_comparison, spearman, win_rate, within_prompt_agreement,
                    within_prompt_spearman)


def records_for(rows: list[dict], path) -> list[dict]:
    """The sample records stored at ``path`` (by ``sample_and_judge``), in the order of ``rows``; all must be there."""
    by_id = {r["id"]: r for r in read_jsonl(path)}
    missing = [row["id"] for row in rows if row["id"] not in by_id]
    if missing:
        raise ValueError(f"{path}: no answers for prompts {missing[:3]} ({len(missing)} missing); "
                         "re-run the notebook that wrote it with the same RUN_DIR")
    return [by_id[row["id"]] for row in rows]


def contender_answers(model, tokenizer, rows: list[dict], adapter: str | None, n_samples: int, log_path,
                      judged: bool, sampling: dict, desc: str) -> list[dict]:
    """``n_samples`` answers per prompt from ``adapter`` (None: the bare base model), judged if ``judged``.

    Resumable through ``log_path`` (see ``sample_and_judge``); ``sampling`` holds
    max_new_tokens, temperature, top_p, batch_size and seed.
    """
    previous = model.active_adapter
    try:
        if adapter is not None:
            switch_adapter(model, adapter)
        with model.disable_adapter() if adapter is None else nullcontext():
            return sample_and_judge(model, tokenizer, rows, n_samples=n_samples, log_path=log_path, judged=judged,
                                    desc=desc, **sampling)
    finally:
        switch_adapter(model, previous)


def reward_model_scores(model, reward_head, normalisation: dict, tokenizer, rows: list[dict], texts: list[str],
                        batch_size: int = 16) -> torch.Tensor:
    """Normalised r(x, y) of each answer under the ``reward`` adapter, rendered as in reward-model training. -> (n,)"""
    conversations = [row["messages"] + [{"role": "assistant", "content": text}] for row, text in zip(rows, texts)]
    if not conversations:
        return torch.zeros(0)
    device = next(model.parameters()).device
    rendered = tokenizer.apply_chat_template(conversations, tokenize=False)
    lengths = [len(ids) for ids in tokenizer(rendered, add_special_tokens=False)["input_ids"]]
    scores = torch.zeros(len(rendered))  # (n,)
    for batch in batches_by_length(lengths, batch_size):
        encoded = tokenizer([rendered[i] for i in batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
        scores[batch] = reward_scores(model, reward_head, encoded["input_ids"], encoded["attention_mask"],
                                      tokenizer.pad_token_id, normalisation).cpu()
    return scores


def batches_by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar length, longest first: a padded batch then wastes little compute.

    Scoring is one forward pass per batch, with every row padded to the batch's longest, so
    batching answers of similar length instead of in order saves the padding (a third of
    the tokens on a typical evaluation). Callers put each result back at its index.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || pi) = log n - (n - 1) / n, in nats (Stiennon et al., 2020, appendix; Gao et al., 2022)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_choice(rewards: list[list[float]], n: int) -> list[int]:
    """Per prompt, the index of the highest-reward answer among its first ``n`` (ties: the earlier one)."""
    short = [i for i, r in enumerate(rewards) if len(r) < n]
    if short:
        raise ValueError(f"best-of-{n}: prompt {short[0]} has only {len(rewards[short[0]])} answers")
    return [int(np.argmax(r[:n])) for r in rewards]


def reward_model_check(records: list[dict], rewards: list[list[float]], min_gap: float) -> dict:
    """The reward model judged on a pool of judged answers: n answers to each of many fresh prompts.

    ``records[i]["samples"]`` are prompt i's answers with their gold ``score``; ``rewards[i]``
    their reward-model scores. Returns:

    * ``pairwise_accuracy`` over every same-prompt pair whose gold scores differ by at least
      ``min_gap`` (notebook 03's tie rule), and ``pairs``;
    * ``spearman`` over all answers pooled, and ``spearman_within_prompt`` (the mean over prompts;
      a Bradley-Terry model is only identified up to a per-prompt constant, see
      ``helpers.stats.within_prompt_spearman``);
    * ``gold_mean`` (a random pick), ``gold_top_reward`` (the reward model's pick, = best-of-n)
      and ``gold_best`` (the labeler's own pick): how much of the room above a random answer the
      reward model's choice takes.
    """
    prompt_ids, gold, reward = [], [], []
    for record, scores in zip(records, rewards, strict=True):
        if len(scores) != len(record["samples"]):
            raise ValueError(f"prompt {record['id']}: {len(record['samples'])} answers but {len(scores)} rewards")
        for sample, score in zip(record["samples"], scores):
            prompt_ids.append(record["id"])
            gold.append(sample["score"])
            reward.append(score)
    accuracy, n_pairs = within_prompt_agreement(prompt_ids, gold, reward, min_gap)
    choice = [int(np.argmax(scores)) for scores in rewards]
    return {"prompts": len(records), "answers": len(gold), "pairs": n_pairs, "pairwise_accuracy": accuracy,
            "spearman": spearman(reward, gold), "spearman_within_prompt": within_prompt_spearman(prompt_ids, reward, gold),
            "gold_mean": float(np.mean(gold)),
            "gold_top_reward": float(np.mean([r["samples"][k]["score"] for r, k in zip(records, choice)])),
            "gold_best": float(np.mean([max(s["score"] for s in r["samples"]) for r in records]))}


def win_reason(chosen: dict, rejected: dict) -> str:
    """Why the labeler ranked the judged sample ``chosen`` above ``rejected``.

    The gold score multiplies by 0.05 when any quality gate fails (``helpers.labeler``), so
    a pair is decided either by a gate (the chosen answer passed them all and the rejected
    one did not: the reason names the gates it failed, joined by " + ") or by the share of
    constraints met ("constraints met": both passed every gate, or both failed one).
    """
    if all(chosen["gates"].values()) and not all(rejected["gates"].values()):
        return " + ".join(gate for gate, passed in rejected["gates"].items() if not passed)
    return "constraints met"


def constraint_reason(chosen: dict, rejected: dict) -> str | None:
    """Which constraint kinds decided a pair that ``win_reason`` calls "constraints met".

    The kinds the chosen answer met and the rejected one did not, sorted and joined by " + " (with one
    constraint a prompt, as in the ``cpu`` curriculum, a single kind); None for a pair that a
    gate decided.
    """
    if win_reason(chosen, rejected) != "constraints met":
        return None
    lost = rejected["constraints"]
    kinds = sorted(kind for kind, met in chosen["constraints"].items() if met and not lost.get(kind, False))
    return " + ".join(kinds) or None


def accuracy_by_reason(records: list[dict], rewards: list[list[float]], min_gap: float,
                       reason=win_reason) -> pd.DataFrame:
    """Pairwise accuracy of a reward model split by ``win_reason``: which of the labeler's rules it learned.

    Counts the same pairs as ``reward_model_check`` (every same-prompt pair whose gold scores
    differ by at least ``min_gap``; a reward tie counts as wrong). Columns ``reason``,
    ``pairs``, ``accuracy``, most frequent reason first. With ``reason=constraint_reason`` the
    pairs a constraint decided are split by its kind (the others are left out): which
    instructions the reward model can see, kind by kind.
    """
    tally: dict[str, list[int]] = {}
    for record, scores in zip(records, rewards, strict=True):
        samples = record["samples"]
        if len(scores) != len(samples):
            raise ValueError(f"prompt {record['id']}: {len(samples)} answers but {len(scores)} rewards")
        for i, j in itertools.combinations(range(len(samples)), 2):
            gap = samples[i]["score"] - samples[j]["score"]
            if gap == 0 or abs(gap) < min_gap - 1e-9:  # notebook 03's tie rule and float tolerance
                continue
            win, lose = (i, j) if gap > 0 else (j, i)
            why = reason(samples[win], samples[lose])
            if why is None:
                continue
            right_total = tally.setdefault(why, [0, 0])
            right_total[0] += int(scores[win] > scores[lose])
            right_total[1] += 1
    table = pd.DataFrame([{"reason": reason, "pairs": total, "accuracy": right / total}
                          for reason, (right, total) in tally.items()], columns=["reason", "pairs", "accuracy"])
    return table.sort_values("pairs", ascending=False, kind="stable").reset_index(drop=True)


LENGTH_EDGES = (0, 16, 32, 48, 64, 96)
"""Token-count bucket edges of ``reward_by_length``; the last bucket is open-ended."""


def reward_by_length(records: list[dict], rewards: list[list[float]], edges=LENGTH_EDGES) -> pd.DataFrame:
    """Mean reward and gold score of judged answers grouped by length: the reward model's length bias.

    A reward model that learned "a cut-off answer loses" but not "a short answer misses the
    topic" rates short answers highest, while the labeler's gold score climbs with length;
    PPO then shortens its answers (Singhal et al., 2023, "A Long Way to Go"). One line per
    bucket ``(low, high]`` of ``n_tokens`` (the last is ``> edges[-1]``), empty buckets left
    out: ``answers``, ``reward``, ``gold``, ``reward_finished`` (mean reward of the answers
    that passed the ``finished`` gate, NaN if none) and the shares passing ``finished``,
    ``on_topic`` and every gate.
    """
    lines = []
    for record, scores in zip(records, rewards, strict=True):
        if len(scores) != len(record["samples"]):
            raise ValueError(f"prompt {record['id']}: {len(record['samples'])} answers but {len(scores)} rewards")
        for sample, reward in zip(record["samples"], scores):
            gates = sample["gates"]
            lines.append({"n_tokens": sample["n_tokens"], "reward": reward, "gold": sample["score"],
                          "finished": gates["finished"], "on_topic": gates["on_topic"], "all_gates": all(gates.values())})
    table = pd.DataFrame(lines)
    bounds = list(edges) + [float("inf")]
    labels = [f"{low + 1}-{high}" for low, high in zip(edges, edges[1:])] + [f">{edges[-1]}"]
    table["tokens"] = pd.cut(table["n_tokens"], bounds, labels=labels)
    table["reward_if_finished"] = table["reward"].where(table["finished"])
    grouped = table.groupby("tokens", observed=True)
    out = grouped.agg(answers=("reward", "size"), reward=("reward", "mean"), gold=("gold", "mean"),
                      reward_finished=("reward_if_finished", "mean"), finished=("finished", "mean"),
                      on_topic=("on_topic", "mean"), all_gates=("all_gates", "mean"))
    return out.reset_index().assign(tokens=lambda t: t["tokens"].astype(str))


def merge_answers(first: list[dict], more: list[dict]) -> list[dict]:
    """Per prompt, the samples of ``first`` followed by those of ``more`` (records of the same prompts, same order).

    Notebook 06 extends the one answer per prompt that notebooks 01, 02 and 04 stored with answers it
    samples itself; a record whose prompt differs is a mix-up and raises.
    """
    if len(first) != len(more):
        raise ValueError(f"merge_answers: {len(first)} records against {len(more)}")
    merged = []
    for a, b in zip(first, more):
        if a["id"] != b["id"]:
            raise ValueError(f"merge_answers: prompt {a['id']!r} against {b['id']!r}: both lists need the same order")
        merged.append({**a, "samples": list(a["samples"]) + list(b["samples"])})
    return merged


def pick_samples(records: list[dict], choice: list[int]) -> list[dict]:
    """Records with one sample each: ``records[i]["samples"][choice[i]]``."""
    return [{"id": r["id"], "samples": [r["samples"][k]]} for r, k in zip(records, choice, strict=True)]


def answers_table(rows: list[dict], records: list[dict]) -> pd.DataFrame:
    """One line per answer, prompts in the order of ``rows``: id, sample (its index among the prompt's
    answers), answer, tokens, EOS, gold score if judged."""
    by_id = {r["id"]: r["samples"] for r in records}
    lines = []
    for row in rows:
        for k, s in enumerate(by_id[row["id"]]):
            lines.append({"id": row["id"], "sample": k, "response": s["text"], "n_tokens": s["n_tokens"],
                          "eos": not s["truncated"], "gold": s.get("score", float("nan"))})
    return pd.DataFrame(lines)


def _chat_sequences(tokenizer, rows: list[dict], texts: list[str], truncated: list[bool]):
    """Token ids of prompt (chat template, generation prompt) + answer (+ EOS when it was emitted), and
    where each answer starts. The answer is re-tokenised from its text, as every stage stores it."""
    prompts = render_prompts(tokenizer, [r["messages"] for r in rows])
    sequences, starts = [], []
    for prompt, text, cut in zip(prompts, texts, truncated, strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + ([] if cut else [tokenizer.eos_token_id])
        sequences.append(prompt_ids + answer_ids)
        starts.append(len(prompt_ids))
    return sequences, starts


def _right_padded(sequences: list[list[int]], starts: list[int], pad_token_id: int, device):
    """input_ids and attention_mask (batch, L), and response_mask (batch, L): 1 on the answer's tokens."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)  # (batch, L)
    attention_mask = torch.zeros_like(input_ids)
    response_mask = torch.zeros_like(input_ids)
    for i, (seq, start) in enumerate(zip(sequences, starts)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
        response_mask[i, start : len(seq)] = 1
    return input_ids.to(device), attention_mask.to(device), response_mask.to(device)


@torch.no_grad()
def answer_logprobs(model, tokenizer, rows: list[dict], texts: list[str], truncated: list[bool], adapter: str | None,
                    batch_size: int = 16) -> torch.Tensor:
    """log pi(y|x) = sum_t log pi(y_t | x, y_<t) of each answer under ``adapter`` (None: the bare base model). -> (n,)

    Temperature 1, the distribution the evaluation answers were sampled from. Only the
    answer's positions go through the output layer and the softmax over the vocabulary
    (the prompt's would be thrown away), and answers are batched by length.
    """
    sequences, starts = _chat_sequences(tokenizer, rows, texts, truncated)
    device = next(model.parameters()).device
    decoder, output_layer = model.get_base_model().model, model.get_base_model().get_output_embeddings()
    previous = model.active_adapter
    totals = torch.zeros(len(sequences))  # (n,)
    try:
        if adapter is not None:
            switch_adapter(model, adapter)
        for batch in batches_by_length([len(s) for s in sequences], batch_size):
            input_ids, attention_mask, response_mask = _right_padded(
                [sequences[i] for i in batch], [starts[i] for i in batch], tokenizer.pad_token_id, device)
            with model.disable_adapter() if adapter is None else nullcontext():
                hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (batch, L, d)
                predicts = response_mask[:, 1:].bool()  # (batch, L - 1): position t predicts answer token t + 1
                logits = output_layer(hidden[:, :-1][predicts]).float()  # (answer tokens, vocab)
            token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:][predicts].unsqueeze(-1))
            row_of_token = predicts.nonzero()[:, 0]  # (answer tokens,): which row each token belongs to
            sums = torch.zeros(len(batch), device=device).index_add_(0, row_of_token, token_logprobs.squeeze(-1))
            totals[batch] = sums.cpu()
    finally:
        switch_adapter(model, previous)
    return totals


def kl_to_reference(model, tokenizer, rows: list[dict], texts: list[str], truncated: list[bool], adapter: str | None,
                    reference: str = "sft", batch_size: int = 16) -> torch.Tensor:
    """Per answer, log pi(y|x) - log pi_ref(y|x): its mean over answers sampled from pi estimates KL(pi || pi_ref). -> (n,)"""
    policy = answer_logprobs(model, tokenizer, rows, texts, truncated, adapter, batch_size)
    ref = answer_logprobs(model, tokenizer, rows, texts, truncated, reference, batch_size)
    return policy - ref


def implicit_preference_accuracy(model, tokenizer, pairs: list[dict], adapter: str | None, reference: str = "sft",
                                 batch_size: int = 16) -> float:
    """Share of held-out comparisons where the implicit reward log pi/pi_ref ranks the chosen answer higher.

    The implicit reward r(x, y) = log pi(y|x) - log pi_ref(y|x) is what DPO trains
    (Rafailov et al., 2023); any policy has one. Ties count half; the reference itself scores 0.5.
    """
    return implicit_preference_accuracies(model, tokenizer, pairs, [adapter], reference, batch_size)[adapter]


def implicit_preference_accuracies(model, tokenizer, pairs: list[dict], adapters: list[str | None],
                                   reference: str = "sft", batch_size: int = 16) -> dict:
    """``implicit_preference_accuracy`` of several adapters, the reference's log-probabilities computed once."""
    rows = [{"messages": p["messages"]} for p in pairs]
    no_cut = [False] * len(pairs)
    answers = {side: [p[side] for p in pairs] for side in ("chosen", "rejected")}
    ref = {side: answer_logprobs(model, tokenizer, rows, texts, no_cut, reference, batch_size)
           for side, texts in answers.items()}
    accuracy = {}
    for adapter in dict.fromkeys(adapters):
        implicit = {side: answer_logprobs(model, tokenizer, rows, texts, no_cut, adapter, batch_size) - ref[side]
                    for side, texts in answers.items()}
        accuracy[adapter] = win_rate(implicit["chosen"].tolist(), implicit["rejected"].tolist())
    return accuracy


def summarize(table: pd.DataFrame, sft: pd.DataFrame | None, measure: str, versus: str = "sft") -> dict:
    """One headline row: mean of ``measure`` ('gold' or 'reward') with its 95 % CI, reward, KL, tokens and EOS
    rate; against ``sft``, prompt by prompt, the gain and the win rate with paired 95 % intervals
    (``helpers.stats.grouped_comparison``: every answer against every SFT answer to the same prompt).

    ``table`` and ``sft`` hold one line per answer (columns id, gold, n_tokens, eos, and reward and kl
    where known), one or several per prompt. The mean and its interval are over prompts (each prompt's
    mean answer), so a prompt counts once however many answers it has; the comparison uses the prompts
    both tables hold. ``versus`` names the baseline in the keys (``gain_vs_sft``; notebook 02 compares
    SFT with the base model: ``gain_vs_base``).
    """
    per_prompt = table.groupby("id", sort=False)[measure]
    prompt_means = per_prompt.mean()  # (prompts,)
    mean, low, high = bootstrap_mean_ci(prompt_means)
    row = {"prompts": len(prompt_means), "answers": len(table)}
    row.update({name: float(table[name].mean()) for name in ("reward", "kl") if name in table})
    row.update({"tokens": float(table["n_tokens"].mean()), "eos_rate": float(table["eos"].mean())})
    row.update({measure: mean, "ci95_low": low, "ci95_high": high})  # 'reward' as the measure: over prompts too
    if sft is not None:
        baseline = sft.groupby("id", sort=False)[measure].apply(list)
        shared = [prompt for prompt in prompt_means.index if prompt in baseline.index]
        contender = per_prompt.apply(list)
        result = grouped_comparison([contender[p] for p in shared], [baseline[p] for p in shared])
        row.update({f"win_rate_vs_{versus}": result["win_rate"], "win_ci95_low": result["win_ci95_low"],
                    "win_ci95_high": result["win_ci95_high"], f"gain_vs_{versus}": result["gain"],
                    "gain_ci95_low": result["gain_ci95_low"], "gain_ci95_high": result["gain_ci95_high"]})
    return row


def judged_row(rows: list[dict], records: list[dict], baseline: list[dict] | None = None,
               versus: str = "base") -> dict:
    """``summarize``'s row for answers the labeler judged, before any reward model exists (notebooks 01
    and 02): gold with its 95 % CI over prompts, tokens, EOS rate, ``labeler`` (``gate_summary``) and
    ``pass_rates`` per constraint kind; against ``baseline`` (judged records for the same ``rows``), the
    gain and win rate with paired intervals, keyed ``gain_vs_<versus>``. NaN becomes None, for JSON."""
    row = summarize(answers_table(rows, records), answers_table(rows, baseline) if baseline else None, "gold", versus)
    return _known(row | labeler_fields(rows, records))


def labeler_fields(rows: list[dict], records: list[dict]) -> dict:
    """What a judged row adds: ``labeler`` (``gate_summary``: where the mean gold score comes from) and
    ``pass_rates`` (per constraint kind, the constraint alone)."""
    return {"labeler": gate_summary(samples_table(rows, records)),
            "pass_rates": pass_rates(rows, records)["pass_rate"].round(3).to_dict()}


def ppo_vs_sft(rows: list[dict], policy_records: list[dict], sft_records: list[dict], reward_fn,
               final_kl: float | None = None) -> tuple[dict[str, dict], dict[str, pd.DataFrame]]:
    """Did PPO help? The policy's answers against the SFT model's on the same evaluation prompts, in
    ``summarize``'s keys: notebook 04's section 5 and each try of ``benchmarks/ppo_sweep.py``.

    ``policy_records`` and ``sft_records`` are ``sample_and_judge``'s records for ``rows`` (one or
    more answers per prompt); ``reward_fn(rows, texts)`` gives the reward model's normalised score of
    each answer, (n,). Each side becomes one line per answer (``answers_table`` plus ``reward`` and
    ``kl`` to SFT: 0 for SFT itself, unknown for the policy, whose log-probabilities are not computed
    here; notebook 06 estimates it), and ``summarize`` makes it a row: mean with a bootstrap 95 % CI
    over prompts, and for the policy the gain and win rate against SFT, prompt by prompt, with paired
    intervals (a tie counts half). Judged records are measured by their ``gold`` score; unjudged ones
    (real data: no simulated labeler) by the reward model's, ``reward``.

    Returns ``(summary, tables)``, each keyed ``"SFT"`` and ``"PPO"``; ``tables`` holds the lines.
    A row of ``summary`` has ``prompts, answers, reward, kl, tokens, eos_rate`` and the measure with
    ``ci95_low, ci95_high``; PPO's adds ``gain_vs_sft, gain_ci95_low, gain_ci95_high, win_rate_vs_sft,
    win_ci95_low, win_ci95_high``, and ``final_kl`` when given (the KL to SFT on the last training
    batch, as ``train_ppo`` logged it). Judged rows add ``labeler`` (``gate_summary``: where the mean
    gold score comes from) and ``pass_rates`` (per constraint kind, the constraint alone). An unknown
    number is None, not NaN, so a row goes into ``meta.json`` or a ``results.jsonl`` line as it is.
    """
    judged = {all("score" in s for r in records for s in r["samples"]) for records in (policy_records, sft_records)}
    if len(judged) != 1:
        raise ValueError("ppo_vs_sft: one side's answers are judged and the other's are not; compare like with like")
    measure = "gold" if judged.pop() else "reward"
    row_of = {row["id"]: row for row in rows}
    tables, summary = {}, {}
    for name, records, kl in (("SFT", sft_records, 0.0), ("PPO", policy_records, float("nan"))):
        table = answers_table(rows, records)
        table["reward"] = [float(r) for r in reward_fn([row_of[i] for i in table["id"]], table["response"].tolist())]
        table["kl"] = kl
        tables[name] = table
        row = summarize(table, tables["SFT"] if name == "PPO" else None, measure)
        summary[name] = row | (labeler_fields(rows, records) if measure == "gold" else {})
    if final_kl is not None:
        summary["PPO"]["final_kl"] = float(final_kl)
    return {name: _known(row) for name, row in summary.items()}, tables


def _known(value):
    """``value`` with every NaN, an unknown number, replaced by None (inside dicts too): JSON has no NaN."""
    if isinstance(value, dict):
        return {key: _known(v) for key, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def pass_rate_matrix(rows: list[dict], contenders: dict[str, list[dict]]) -> pd.DataFrame:
    """Contenders x constraint kinds: the share of answers (all of each prompt's) that satisfy each kind
    (the constraint alone)."""
    by_row = {row["id"]: row for row in rows}
    table = {}
    for name, records in contenders.items():
        passed: dict[str, list[bool]] = {}
        for record in records:
            if record["id"] not in by_row:
                continue
            for sample in record["samples"]:
                for kind, ok in sample["constraints"].items():
                    passed.setdefault(kind, []).append(bool(ok))
        table[name] = {kind: float(np.mean(v)) for kind, v in passed.items()}
    return pd.DataFrame(table).T.sort_index(axis=1)


def overoptimisation_figure(points: pd.DataFrame):
    """Gold (left) and reward-model score (right) against sqrt(KL to SFT), one line per family of policies.

    ``points`` has columns family ('PPO checkpoints', 'best-of-n'), label, kl, gold, reward.
    """
    panels = [("gold", "gold score (simulated labeler)"), ("reward", "reward-model score (the proxy)")]
    panels = [p for p in panels if p[0] in points and points[p[0]].notna().any()]
    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[title for _, title in panels])
    colours = {"PPO checkpoints": "#d62728", "best-of-n": "#1f77b4"}
    for col, (column, _) in enumerate(panels, start=1):
        for family, part in points.groupby("family", sort=False):
            part = part.sort_values("kl")
            figure.add_trace(go.Scatter(x=np.sqrt(part["kl"].clip(lower=0)), y=part[column], mode="lines+markers+text",
                                        text=part["label"], textposition="top center", name=family,
                                        legendgroup=family, showlegend=col == 1,
                                        line={"color": colours.get(family)}), row=1, col=col)
        figure.update_xaxes(title_text="sqrt(KL to SFT), sqrt(nats)", row=1, col=col)
    figure.update_layout(title="Over-optimisation: proxy reward vs gold score as the policy moves away from SFT",
                         template="plotly_white", height=420)
    return figure
