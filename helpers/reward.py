"""The reward model (InstructGPT step 2): comparisons, Bradley-Terry training, normalisation.

Comparisons. For each reward-model prompt x, the SFT model samples K answers and the
simulated labeler scores them (our stand-in for a labeler ranking K answers). Every pair
with distinct scores becomes a comparison (y_w preferred over y_l): up to K(K-1)/2 per
prompt, as in InstructGPT, which also kept each prompt's pairs together in one batch
and one split; we keep them in one split, so no prompt leaks from training into evaluation.
Three free sources add training pairs: notebook 01's judged base-model answers;
*relevance pairs* (``swapped_answer_pairs``): a prompt's own answer against another
prompt's answer, judged for this prompt, which teach the on-topic rule the sampled pairs
hardly isolate; and *edit pairs* (``edit_pairs``): an answer against a copy edited by rule
to meet or break one of its constraints, which isolate the constraints the same way.
A second round (``policy_pairs``, used by ``benchmarks/reward_sweep.py --policy``) adds
comparisons on a PPO policy's own answers, where PPO found the reward model's mistakes.

Loss (Ouyang et al., 2022, eq. 1; Bradley & Terry, 1952). A scalar head on the last
token gives r_theta(x, y); training minimises

    loss(theta) = -E_{(x, y_w, y_l)} [ log sigma( r_theta(x, y_w) - r_theta(x, y_l) - m ) ]

with margin m = 0, or m = gold(y_w) - gold(y_l) when ``use_margin`` (Llama 2's margin loss).
TRL's ``RewardTrainer`` implements it; this module prepares the data and reads the results.

Normalisation. A reward is only defined up to a constant. After training we shift and
scale it so the SFT model's answers score 0 on average with unit spread (InstructGPT
normalised so that labeler demonstrations score 0): r_norm = (r - offset) / scale.

Deliberate choices: the score head starts at zero, so a fresh reward model scores every
answer exactly 0 (a known number to test); trainable weights are kept in the base
model's compute dtype (see ``helpers.sft``).
"""

from __future__ import annotations

import copy
import itertools
import os
import random
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file

from .adapters import NORMALISATION_FILE, SCORE_HEAD_FILE, load_policy, train_top_layers
from .config import ModelConfig, RewardStageConfig
from .dataset import load_split
from .demonstrations import sample_and_judge
from .edits import meet, violate
from .files import read_jsonl, write_json, write_jsonl
from .labeler import judge
from .models import device_map, one_4bit_kernel, quantization_config, resolve_model_path, resolve_precision
from .progress import quiet_library_bars
from .sft import lora_config, match_trainable_dtype

BASE_CANDIDATES_FILE = "sft_candidates.jsonl"  # notebook 01's judged base-model answers to the SFT prompts


def ranked_pair(row: dict, a: dict, b: dict, pair_id: str, min_gap: float, tally: Counter) -> dict | None:
    """The comparison of two judged answers to ``row`` (chosen = higher gold score), or None, counted in
    ``tally``, when their texts are identical, their scores equal (``ties``) or closer than ``min_gap``."""
    if a["text"].strip() == b["text"].strip():
        tally["identical"] += 1
        return None
    if a["score"] == b["score"]:
        tally["ties"] += 1
        return None
    if abs(a["score"] - b["score"]) < min_gap - 1e-9:  # tolerance: 0.6 - 0.5 is 0.0999... in floats
        tally["too_close"] += 1
        return None
    chosen, rejected = (a, b) if a["score"] > b["score"] else (b, a)
    return {"id": pair_id, "prompt_id": row["id"], "messages": row["messages"],
            "chosen": chosen["text"], "rejected": rejected["text"],
            "chosen_score": chosen["score"], "rejected_score": rejected["score"]}


def comparisons_from_samples(rows: list[dict], records: list[dict], min_gap: float = 0.0) -> tuple[list[dict], Counter]:
    """All pairs of a prompt's samples whose gold scores differ (chosen = higher), and a tally of what was dropped.

    Pairs whose two texts are identical are dropped and counted (``identical``), never
    trained on; equal scores are ties (``ties``); scores that differ by less than
    ``min_gap`` are ties too (``too_close``): a labeler cannot rank two answers that
    both failed a quality gate (each scores at most 0.05) by the constraints they met.
    """
    by_id = {r["id"]: r for r in records}
    pairs, tally = [], Counter()
    for row in rows:
        samples = by_id[row["id"]]["samples"]
        for i, j in itertools.combinations(range(len(samples)), 2):
            pair = ranked_pair(row, samples[i], samples[j], f"{row['id']}-{i}-{j}", min_gap, tally)
            if pair is not None:
                pairs.append(pair)
    tally["pairs"] = len(pairs)
    return pairs, tally


def policy_pairs(rows: list[dict], policy_records: list[dict], sft_records: list[dict],
                 min_gap: float = 0.0) -> tuple[list[dict], Counter]:
    """Comparisons on a PPO policy's own answers: per prompt, every pair of two policy answers and
    every pair of a policy answer with an SFT answer (the SFT-SFT pairs are notebook 03's already).

    A reward model trained on the SFT model's answers is only tested where the SFT model
    writes; PPO moves the policy elsewhere (here: to short one-sentence answers) and finds
    where the reward model is wrong. InstructGPT's comparisons came partly from its PPO
    policies ("steps 2 and 3 can be iterated continuously", Ouyang et al., 2022, sec. 3.1),
    and Bai et al. (2022) retrain the reward model on the current policy's answers
    ("iterated online RLHF"). Ids end in ``-p{i}-p{j}`` (two policy answers) or
    ``-s{i}-p{j}`` (SFT answer i, policy answer j). Rows without policy answers are skipped;
    rows without SFT answers give policy-policy pairs only. The tally counts like
    ``comparisons_from_samples``'.
    """
    policy_by_id = {r["id"]: r["samples"] for r in policy_records}
    sft_by_id = {r["id"]: r["samples"] for r in sft_records}
    pairs, tally = [], Counter()
    for row in rows:
        policy, sft = policy_by_id.get(row["id"]), sft_by_id.get(row["id"], [])
        if not policy:
            continue
        candidates = [(f"p{i}", f"p{j}", policy[i], policy[j]) for i, j in itertools.combinations(range(len(policy)), 2)]
        candidates += [(f"s{i}", f"p{j}", a, b) for i, a in enumerate(sft) for j, b in enumerate(policy)]
        for name_a, name_b, a, b in candidates:
            pair = ranked_pair(row, a, b, f"{row['id']}-{name_a}-{name_b}", min_gap, tally)
            if pair is not None:
                pairs.append(pair)
    tally["pairs"] = len(pairs)
    return pairs, tally


def comparisons_from_preferences(rows: list[dict]) -> list[dict]:
    """Human comparisons (HH-RLHF rows) in the same pair format, without gold scores."""
    missing = [row["id"] for row in rows if "chosen" not in row or "rejected" not in row]
    if missing:
        raise ValueError(f"rows {missing[:3]}... carry no chosen/rejected pair: a reward model needs comparisons, "
                         "so build the data with SOURCE='generated' or 'hh-rlhf' in notebook 01")
    return [{"id": row["id"], "prompt_id": row["id"], "messages": row["messages"], "chosen": row["chosen"],
             "rejected": row["rejected"]} for row in rows]


def swapped_answer_pairs(rows: list[dict], records: list[dict], n_pairs: int, min_gap: float,
                         seed: int) -> list[dict]:
    """Up to ``n_pairs`` comparisons that teach relevance: a prompt's own answer (chosen)
    against another prompt's answer (rejected), the latter judged by the labeler *for this
    prompt*.

    Both answers passed every quality gate for the prompt they were written for, so they
    are alike in form (finished, substantive, not repetitive) and the pair is mostly
    decided by the ``on_topic`` gate: the cue the sampled pairs teach least, because most
    off-topic answers lose on another gate too. A pair is kept only when the labeler's scores
    differ by at least ``min_gap`` (an answer that suits both prompts is a tie). Seeded;
    duplicates are never drawn twice. Give it training prompts only: a held-out prompt's
    answers must not leak into training as someone else's answer.
    """
    by_id = {row["id"]: row for row in rows}
    good = {rec["id"]: [s for s in rec["samples"] if all(s["gates"].values())] for rec in records if rec["id"] in by_id}
    ids = sorted(k for k, samples in good.items() if samples)
    rng, pairs, seen = random.Random(seed), [], set()
    if len(ids) < 2:
        return pairs
    for _ in range(20 * n_pairs):  # enough draws for the pairs, bounded when few qualify
        if len(pairs) == n_pairs:
            break
        own_id, donor_id = rng.sample(ids, 2)
        chosen, donor = rng.choice(good[own_id]), rng.choice(good[donor_id])
        key = (own_id, chosen["text"], donor["text"])
        if key in seen or chosen["text"].strip() == donor["text"].strip():
            continue
        seen.add(key)
        row = by_id[own_id]
        donor_score = judge(row, donor["text"], truncated=donor["truncated"]).score
        if donor_score >= chosen["score"] or chosen["score"] - donor_score < min_gap - 1e-9:  # a tie, or too close
            continue
        pairs.append({"id": f"{own_id}-swap-{len(pairs)}", "prompt_id": own_id, "messages": row["messages"],
                      "chosen": chosen["text"], "rejected": donor["text"],
                      "chosen_score": chosen["score"], "rejected_score": donor_score})
    return pairs


def edit_pairs(rows: list[dict], records: list[dict], n_pairs: int, min_gap: float, seed: int) -> list[dict]:
    """Up to ``n_pairs`` comparisons that teach the constraints: an answer against a copy of it
    edited by rule to meet, or to break, one of the prompt's constraints (``helpers.edits``),
    both judged by the labeler for this prompt (the higher score is chosen).

    Only answers that passed every quality gate are edited, and a pair is kept only when the
    edited copy still passes them, the labeler sees exactly that one constraint change (an edit
    that also broke another, say a cut that dropped the P.S., is skipped) and the scores differ
    by at least ``min_gap`` (and are never equal), so the pair is decided by that constraint.
    The (direction, kind) queues take turns in a fixed order, each shuffled with ``seed``, so the
    common edits (lowercasing, quoting) do not crowd out the rest; each answer is edited at most
    once. Give it training prompts only. Like every training pair, they also reach notebook 05's DPO.
    """
    by_id = {row["id"]: row for row in rows}
    candidates: dict[tuple[str, str], list[tuple]] = {}
    for rec in records:
        row = by_id.get(rec["id"])
        for s_index, sample in enumerate(rec["samples"] if row else []):
            if not all(sample["gates"].values()):
                continue
            for spec in row["constraints"]:
                for direction, edit in (("meet", meet), ("violate", violate)):
                    candidates.setdefault((direction, spec["kind"]), []).append((row, s_index, sample, spec, edit))
    rng = random.Random(seed)
    queues = [candidates[key] for key in sorted(candidates)]
    for queue in queues:
        rng.shuffle(queue)
    pairs, used = [], set()
    while queues and len(pairs) < n_pairs:
        for queue in list(queues):
            if len(pairs) == n_pairs:
                break
            while queue:
                row, s_index, sample, spec, edit = queue.pop()
                edited = edit(spec, sample["text"]) if (row["id"], s_index) not in used else None
                if edited is None:
                    continue
                before, after = (judge(row, text, truncated=sample["truncated"]) for text in (sample["text"], edited))
                changed = {k for k in before.constraints if before.constraints[k] != after.constraints[k]}
                if (changed != {spec["kind"]} or not all(after.gates.values())
                        or abs(after.score - before.score) < max(min_gap - 1e-9, 1e-9)):
                    continue  # the edit changed more than its constraint, broke a gate, or the scores are too close
                used.add((row["id"], s_index))
                (chosen, chosen_score), (rejected, rejected_score) = sorted(
                    [(sample["text"], before.score), (edited, after.score)], key=lambda t: -t[1])
                pairs.append({"id": f"{row['id']}-edit-{len(pairs)}", "prompt_id": row["id"],
                              "messages": row["messages"], "chosen": chosen, "rejected": rejected,
                              "chosen_score": chosen_score, "rejected_score": rejected_score,
                              "edit": f"{edit.__name__} {spec['kind']}"})
                break
            if not queue:
                queues.remove(queue)
    return pairs


def drop_overlong(pairs: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Pairs whose chosen and rejected conversations both fit ``max_length`` tokens, and how many did not.

    TRL's RewardTrainer silently drops such pairs; dropping them here first lets the
    notebook count them and evaluate on exactly the pairs the model could train on.
    """
    def length(p, key):
        conversation = p["messages"] + [{"role": "assistant", "content": p[key]}]
        return len(tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"])

    kept = [p for p in pairs if length(p, "chosen") <= max_length and length(p, "rejected") <= max_length]
    return kept, len(pairs) - len(kept)


def split_by_prompt(pairs: list[dict], heldout_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) with every prompt's pairs on one side: a seeded share of prompts is held out."""
    prompts = sorted({p["prompt_id"] for p in pairs})
    if len(prompts) < 2:
        raise ValueError(f"need comparisons from at least 2 prompts to hold some out, got {len(prompts)}: "
                         "raise n_rm in notebook 01 or k_samples here")
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: max(1, round(heldout_fraction * len(prompts)))])
    return [p for p in pairs if p["prompt_id"] not in held], [p for p in pairs if p["prompt_id"] in held]


def unsampled_prompts(rows: list[dict], log_path: str | Path) -> list[str]:
    """Ids of the rows that ``log_path`` (``sample_and_judge``'s log) holds no answers for yet."""
    log_path = Path(log_path)
    done = {r["id"] for r in read_jsonl(log_path, tolerate_partial_tail=True)} if log_path.exists() else set()
    return [row["id"] for row in rows if row["id"] not in done]


def sample_sft_answers(model_cfg: ModelConfig, data_cfg, k_samples: int, tokenizer, rows: list[dict],
                       log_path: str | Path, adapter: str | Path, who: str = "SFT", seed_offset: int = 1) -> list[dict]:
    """K answers per prompt of the SFT model (``adapter``: notebook 02's), judged by the simulated
    labeler; one record per row.

    Resumes from ``log_path`` and appends to it; the model is loaded only when some prompt
    still lacks its answers. Sampling settings are the data stage's (``data_cfg``), with seed
    ``data_cfg.seed + seed_offset``. Any saved policy adapter can answer instead, such as
    notebook 04's ``ppo/policy`` (``who`` names it in the progress bar).
    """
    sampler = None
    if unsampled_prompts(rows, log_path):
        sampler = load_policy(model_cfg, adapter)
    return sample_and_judge(sampler, tokenizer, rows, n_samples=k_samples, log_path=log_path,
                            desc=f"{k_samples} {who} answers per prompt",
                            **(data_cfg.sampling | {"seed": data_cfg.seed + seed_offset}))


def base_candidates(data_dir: str | Path, cfg: RewardStageConfig) -> tuple[list[dict], list[dict]] | None:
    """(SFT rows, their judged base-model candidates from notebook 01) for ``make_comparisons(extra=...)``,
    or None when ``cfg.base_comparisons`` is off or the data has no candidates (human comparisons)."""
    path = Path(data_dir) / BASE_CANDIDATES_FILE
    if not cfg.base_comparisons or not path.exists():
        return None
    return load_split(data_dir, "sft"), read_jsonl(path)


@dataclass
class Comparisons:
    """The reward model's data: all pairs, the tally of what was dropped, and the split by prompt."""

    records: list[dict] | None  # the judged SFT answers per prompt (None: human comparisons)
    pairs: list[dict]
    tally: dict[str, int]
    train: list[dict]
    heldout: list[dict]

    def save(self, folder: str | Path) -> None:
        """``comparisons_train.jsonl`` and ``comparisons_heldout.jsonl`` in ``folder`` (notebook 05 reads them)."""
        write_jsonl(Path(folder) / "comparisons_train.jsonl", self.train)
        write_jsonl(Path(folder) / "comparisons_heldout.jsonl", self.heldout)


def make_comparisons(rows: list[dict], records: list[dict] | None, tokenizer, cfg: RewardStageConfig,
                     extra: tuple[list[dict], list[dict]] | None = None) -> Comparisons:
    """Pairs from the judged SFT answers (``records``) or, with ``records=None``, the rows' human pairs;
    pairs longer than ``cfg.max_length`` dropped and counted; then split by prompt.

    ``extra``: (rows, records) of more judged answers to other prompts, such as notebook
    01's base-model candidates for the SFT prompts, at most ``cfg.max_base_pairs`` of them
    (a seeded sample; 0: all). Their pairs join the training side only
    (InstructGPT's comparisons also came from several models), so the held-out pairs stay
    the SFT model's answers to prompts the reward model never saw.
    """
    if records is not None:
        pairs, tally = comparisons_from_samples(rows, records, cfg.min_gold_gap)
    else:
        pairs, tally = comparisons_from_preferences(rows), {"pairs": len(rows)}
    pairs, too_long = drop_overlong(pairs, tokenizer, cfg.max_length)  # TRL would drop them silently
    tally = dict(tally, too_long=too_long, pairs=len(pairs))
    if not pairs:
        raise RuntimeError("No comparisons left (all tied or too long). Raise K_SAMPLES, or n_rm in notebook 01.")
    train, heldout = split_by_prompt(pairs, cfg.heldout_fraction, cfg.seed)
    if extra is not None:
        extra_pairs, _ = comparisons_from_samples(*extra, cfg.min_gold_gap)
        extra_pairs, _ = drop_overlong(extra_pairs, tokenizer, cfg.max_length)
        if 0 < cfg.max_base_pairs < len(extra_pairs):
            tally["extra_pairs_unused"] = len(extra_pairs) - cfg.max_base_pairs
            extra_pairs = random.Random(cfg.seed).sample(extra_pairs, cfg.max_base_pairs)  # in sampled order
        train = train + extra_pairs
        tally["extra_train_pairs"] = len(extra_pairs)
    if records is not None and (cfg.swapped_pairs or cfg.edit_pairs):
        # Relevance and edit pairs draw on the training prompts only, the base candidates' prompts included.
        held = {p["prompt_id"] for p in heldout}
        pool_rows = [row for row in rows if row["id"] not in held] + (list(extra[0]) if extra else [])
        pool_records = [rec for rec in records if rec["id"] not in held] + (list(extra[1]) if extra else [])
        for name, make, n_pairs in (("swapped", swapped_answer_pairs, cfg.swapped_pairs),
                                    ("edit", edit_pairs, cfg.edit_pairs)):
            if n_pairs:
                made, _ = drop_overlong(make(pool_rows, pool_records, n_pairs, cfg.min_gold_gap, cfg.seed),
                                        tokenizer, cfg.max_length)
                train = train + made
                tally[f"{name}_train_pairs"] = len(made)
    return Comparisons(records, pairs, tally, train, heldout)


def normalisation_conversations(rows: list[dict], comparisons: Comparisons) -> list[list[dict]]:
    """What the reward is normalised on: every SFT answer (all K) to a training prompt; for human
    comparisons, the chosen and rejected answers of the training pairs."""
    if comparisons.records is None:
        return [p["messages"] + [{"role": "assistant", "content": p[k]}] for p in comparisons.train
                for k in ("chosen", "rejected")]
    train_ids = {p["prompt_id"] for p in comparisons.train}
    return [row["messages"] + [{"role": "assistant", "content": s["text"]}]
            for row, rec in zip(rows, comparisons.records) if row["id"] in train_ids for s in rec["samples"]]


def preference_records(pairs: list[dict], use_margin: bool) -> list[dict]:
    """Conversational preference records for TRL: whole conversations ending in the chosen / rejected answer."""
    records = []
    for p in pairs:
        record = {"chosen": p["messages"] + [{"role": "assistant", "content": p["chosen"]}],
                  "rejected": p["messages"] + [{"role": "assistant", "content": p["rejected"]}]}
        if use_margin:
            record["margin"] = float(p["chosen_score"] - p["rejected_score"])
        records.append(record)
    return records


def load_reward_base(model_cfg: ModelConfig, tokenizer):
    """The 4-bit base model with a scalar head (``AutoModelForSequenceClassification``, one label), head at zero."""
    from transformers import AutoModelForSequenceClassification  # lazy: transformers takes seconds to import

    precision = resolve_precision(model_cfg)
    kwargs = {"num_labels": 1, "dtype": precision.compute_dtype,
              "device_map": device_map(precision.device), "trust_remote_code": model_cfg.trust_remote_code}
    if precision.load_in_4bit:
        kwargs["quantization_config"] = quantization_config(precision)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(model_cfg.base_model), **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    one_4bit_kernel(model)
    with torch.no_grad():
        model.score.weight.zero_()
    return model


def build_reward_trainer(model, tokenizer, train: list[dict], heldout: list[dict], cfg: RewardStageConfig,
                         output_dir: Path, compute_dtype: torch.dtype, callbacks=()):
    """TRL's RewardTrainer wired for QLoRA: a LoRA adapter plus a trainable score head on the 4-bit model."""
    from datasets import Dataset  # lazy: datasets takes seconds to import; only training needs it
    from transformers import PrinterCallback  # lazy: loads transformers' trainer (seconds); only training needs it
    from trl import RewardConfig, RewardTrainer  # lazy: trl takes seconds to import; only training needs it

    quiet_library_bars()
    if cfg.use_margin and any("chosen_score" not in p for p in train):
        raise ValueError("use_margin needs gold scores, which human comparisons lack: set USE_MARGIN=False")
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    args = RewardConfig(
        output_dir=str(output_dir), num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=max(1, round(0.05 * steps_per_epoch * cfg.epochs)), max_length=cfg.max_length,
        gradient_checkpointing=False, logging_steps=1, eval_strategy="epoch",
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed, data_seed=cfg.seed,
        report_to="none", use_cpu=not torch.cuda.is_available(),
        bf16=compute_dtype == torch.bfloat16 and torch.cuda.is_available(), disable_tqdm=True,
    )
    trainer = RewardTrainer(
        model=model, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list(preference_records(train, cfg.use_margin)),
        eval_dataset=Dataset.from_list(preference_records(heldout, cfg.use_margin)),
        peft_config=lora_config(cfg, task_type="SEQ_CLS", modules_to_save=["score"]), callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)
    train_top_layers(trainer.model, ("default",), cfg.trainable_layers, also=("modules_to_save",))  # + score head
    match_trainable_dtype(trainer.model, compute_dtype)
    return trainer


@torch.no_grad()
def score_conversations(model, tokenizer, conversations: list[list[dict]], batch_size: int = 16) -> list[float]:
    """r(x, y) for each whole conversation (prompt turns + the assistant's answer), as RewardTrainer tokenises it."""
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(conversations), batch_size):
        chunk = conversations[start : start + batch_size]
        ids = [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"] for c in chunk]
        batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(device)  # left-padded (batch, seq)
        scores += model(**batch).logits[:, 0].float().tolist()
    return scores


def score_pairs(model, tokenizer, pairs: list[dict], batch_size: int = 16) -> pd.DataFrame:
    """The pairs with ``r_chosen`` and ``r_rejected`` (raw rewards) added."""
    chosen = score_conversations(model, tokenizer, [p["messages"] + [{"role": "assistant", "content": p["chosen"]}]
                                                    for p in pairs], batch_size)
    rejected = score_conversations(model, tokenizer, [p["messages"] + [{"role": "assistant", "content": p["rejected"]}]
                                                      for p in pairs], batch_size)
    table = pd.DataFrame(pairs)
    table["r_chosen"], table["r_rejected"] = chosen, rejected
    return table


def score_heldout_answers(model, tokenizer, rows: list[dict], comparisons: Comparisons,
                          batch_size: int = 16) -> pd.DataFrame:
    """Every judged SFT answer to a held-out prompt, paired or not, with its gold score and raw reward.

    Columns ``prompt_id``, ``text``, ``gold``, ``reward``. Answers that tie with all the others
    appear in no pair, yet PPO will meet many like them, so the Spearman correlation is
    measured on all of them. Empty for human comparisons (no gold score).
    """
    if comparisons.records is None:
        return pd.DataFrame(columns=["prompt_id", "text", "gold", "reward"])
    held_ids = {p["prompt_id"] for p in comparisons.heldout}
    answers = [(row, s) for row, rec in zip(rows, comparisons.records) if row["id"] in held_ids for s in rec["samples"]]
    rewards = score_conversations(model, tokenizer, [row["messages"] + [{"role": "assistant", "content": s["text"]}]
                                                     for row, s in answers], batch_size)
    return pd.DataFrame({"prompt_id": [row["id"] for row, _ in answers], "text": [s["text"] for _, s in answers],
                         "gold": [s["score"] for _, s in answers], "reward": rewards})


def pairwise_accuracy(table: pd.DataFrame) -> float:
    """Share of pairs where the reward model ranks the chosen answer strictly higher (ties count as wrong)."""
    return float((table["r_chosen"] > table["r_rejected"]).mean())


def normalisation(rewards: list[float]) -> dict[str, float]:
    """``{"offset": mean, "scale": std}`` so that (r - offset) / scale has mean 0 and unit spread on ``rewards``."""
    series = pd.Series(rewards, dtype=float)
    scale = float(series.std(ddof=0))
    return {"offset": float(series.mean()), "scale": scale if scale > 0 else 1.0, "n": int(series.size)}


def save_reward_model(model, folder: Path, norm: dict[str, float]) -> None:
    """Save the trained reward model so that any stage can load it on the shared causal-LM base.

    ``folder/adapter/``: the LoRA weights only, with a causal-LM adapter config (no ``score``
    module, which a causal LM lacks); ``folder/score_head.safetensors``: the scalar head
    (1 x hidden); ``folder/normalisation.json``: offset and scale. Written into a temporary
    folder and renamed into place.
    """
    from peft import get_peft_model_state_dict  # lazy: peft takes seconds to import; only saving needs it

    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "adapter").mkdir(parents=True)
    state = get_peft_model_state_dict(model)
    lora = {k: v.detach().cpu().contiguous() for k, v in state.items() if ".score." not in k and "lora_" in k}
    head = model.get_base_model().score.modules_to_save["default"] if hasattr(model.get_base_model().score,
                                                                               "modules_to_save") else model.score
    config = copy.deepcopy(model.peft_config["default"])
    config.modules_to_save, config.task_type = None, "CAUSAL_LM"
    config.save_pretrained(str(staging / "adapter"))
    save_file(lora, str(staging / "adapter" / "adapter_model.safetensors"))
    save_file({"weight": head.weight.detach().float().cpu().contiguous()}, str(staging / SCORE_HEAD_FILE))
    write_json(staging / NORMALISATION_FILE, norm)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
