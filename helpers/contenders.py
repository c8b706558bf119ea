"""Notebook 06's contenders: their answers to the evaluation prompts, scored, and the PPO checkpoint curve.

Every contender (base, SFT, DPO, PPO, best-of-n) answers the same held-out prompts. Notebooks 01, 02
and 04 already drew one answer per prompt for base, SFT and the final PPO policy; :class:`Contenders`
reuses those and samples the rest (resumable, one JSON-lines file per contender in ``eval/``), then
scores each answer: the reward model's normalised score and the KL to the SFT model
(``helpers.evaluation``).

The over-optimisation curve (Gao et al., 2022) has two families of points, as in notebook 06:
the PPO snapshots that notebook 04 kept (:func:`checkpoint_points`) and best-of-n for n = 1, 2, 4, ...
(:func:`best_of_n_points`). :func:`best_checkpoint` picks the snapshot with the highest score.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .adapters import add_adapter
from .evaluation import (answers_table, best_of_n_choice, best_of_n_kl, contender_answers, kl_to_reference,
                         merge_answers, records_for, reward_model_scores)

MORE_SEED_OFFSET = 104729  # seed offset of the answers sampled beyond the first (a prime, far from 0 and 7919)


def slug(name: str) -> str:
    """A contender's name as a file-name part: ``"PPO (final)"`` -> ``"ppo_final"``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass
class Contenders:
    """Answers of every contender on one base model with several adapters, and their scores.

    ``stored`` maps a contender's name to answers an earlier notebook drew (one per prompt, in
    ``sample_and_judge``'s records); they are reused when ``judged`` (real data stores none).
    ``sampling`` holds max_new_tokens, temperature, top_p, batch_size and seed.
    """

    model: object  # peft.PeftModel carrying the adapters "sft", "reward" and the contenders'
    tokenizer: object
    reward_head: object
    normalisation: dict
    folder: Path  # where sampled answers go (notebook 06's eval/)
    sampling: dict
    judged: bool = True
    stored: dict[str, Path] = field(default_factory=dict)
    score_batch_size: int = 16

    def answers(self, name: str, adapter: str | None, rows: list[dict], n_samples: int = 1, seed_offset: int = 0,
                file: str | None = None, stored: bool = True) -> list[dict]:
        """One record per prompt: the stored answers where an earlier notebook drew them (if ``stored``),
        else ``n_samples`` sampled here from ``adapter`` (None: the bare base model) into ``folder/file``."""
        if stored and self.judged and name in self.stored and Path(self.stored[name]).exists():
            return records_for(rows, self.stored[name])
        log = Path(self.folder) / (file or f"samples_{slug(name)}.jsonl")
        return contender_answers(self.model, self.tokenizer, rows, adapter, n_samples, log, self.judged,
                                 {**self.sampling, "seed": self.sampling["seed"] + seed_offset}, desc=f"{name} on eval")

    def all_answers(self, name: str, adapter: str | None, rows: list[dict], answers_per_prompt: int,
                    file: str | None = None) -> list[dict]:
        """``answers_per_prompt`` answers per prompt: the first (stored or sampled), then the rest, sampled
        with another seed into ``<file>_more.jsonl``."""
        first = self.answers(name, adapter, rows, file=file)
        if answers_per_prompt <= 1:
            return first
        more_file = (file or f"samples_{slug(name)}.jsonl").replace(".jsonl", "_more.jsonl")
        more = self.answers(name, adapter, rows, n_samples=answers_per_prompt - 1, seed_offset=MORE_SEED_OFFSET,
                            file=more_file, stored=False)
        return merge_answers(first, more)

    def rewards(self, rows: list[dict], texts: list[str]) -> list[float]:
        """The reward model's normalised score of each (prompt, answer)."""
        return reward_model_scores(self.model, self.reward_head, self.normalisation, self.tokenizer, rows, texts,
                                   self.score_batch_size).tolist()

    def scored(self, rows: list[dict], records: list[dict], adapter: str | None, kl=None) -> pd.DataFrame:
        """``answers_table`` (one line per answer) plus ``reward`` and ``kl`` to SFT (estimated from the
        answers under ``adapter`` unless ``kl`` is given: 0 for SFT itself, the closed form for best-of-n)."""
        table = answers_table(rows, records)
        row_of = {row["id"]: row for row in rows}
        answer_rows = [row_of[prompt] for prompt in table["id"]]  # the prompt of each line
        table["reward"] = self.rewards(answer_rows, table["response"].tolist())
        if kl is None:
            kl = kl_to_reference(self.model, self.tokenizer, answer_rows, table["response"].tolist(),
                                 (~table["eos"]).tolist(), adapter, "sft", self.score_batch_size).tolist()
        table["kl"] = kl
        return table


def snapshot_dirs(ppo_dir: str | Path) -> list[tuple[int, Path]]:
    """Notebook 04's kept policies, ``ppo/snapshots/iter-<n>``, as (iteration, folder) in iteration order."""
    found = []
    for path in Path(ppo_dir, "snapshots").glob("iter-*"):
        number = path.name[len("iter-"):]
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)


def curve_point(family: str, label: str, iteration: int | None, kl: float, gold: float, reward: float) -> dict:
    return {"family": family, "label": label, "iteration": iteration, "kl": float(kl), "gold": float(gold),
            "reward": float(reward)}


def checkpoint_points(contenders: Contenders, rows: list[dict], sft: pd.DataFrame, final: pd.DataFrame,
                      snapshots: list[tuple[int, Path]], final_iteration: int) -> list[dict]:
    """The PPO family of the over-optimisation curve on ``rows``: SFT at iteration 0, then each snapshot's
    mean KL, gold and reward over one answer per prompt. ``sft`` and ``final`` are the scored tables of
    SFT and the final policy (their lines on ``rows`` are reused); the other snapshots answer here."""
    ids = {row["id"] for row in rows}
    sft, final = sft[sft["id"].isin(ids)], final[final["id"].isin(ids)]
    points = [curve_point("PPO checkpoints", "SFT", 0, 0.0, sft["gold"].mean(), sft["reward"].mean())]
    for iteration, folder in snapshots:
        if iteration == final_iteration:  # the final policy: its answers are scored already
            table = final
        else:
            add_adapter(contenders.model, folder, "snapshot")
            try:
                records = contenders.answers(f"PPO iter {iteration}", "snapshot", rows,
                                             file=f"samples_ppo_iter_{iteration}.jsonl")
                table = contenders.scored(rows, records, "snapshot")
            finally:
                contenders.model.delete_adapter("snapshot")
        points.append(curve_point("PPO checkpoints", f"it {iteration}", iteration, table["kl"].mean(),
                                  table["gold"].mean(), table["reward"].mean()))
    return points


def best_of_n_points(records: list[dict], rewards: list[list[float]], n_max: int) -> list[dict]:
    """The best-of-n family for n = 1, 2, 4, ... <= ``n_max``: the reward model picks among each prompt's
    first n answers (``records``: a pool of ``n_max`` judged answers per prompt, ``rewards`` their
    scores); KL is the closed form log n - (n - 1) / n."""
    points = []
    for n in [2**k for k in range(int(math.log2(n_max)) + 1)]:
        choice = best_of_n_choice(rewards, n)
        gold = [rec["samples"][k].get("score", float("nan")) for rec, k in zip(records, choice)]
        reward = [scores[k] for scores, k in zip(rewards, choice)]
        points.append(curve_point("best-of-n", f"n={n}", None, best_of_n_kl(n), sum(gold) / len(gold),
                                  sum(reward) / len(reward)))
    return points


def best_checkpoint(curve: pd.DataFrame, measure: str, final_iteration: int | None = None,
                    margin: float = 0.0) -> int | None:
    """The iteration of the PPO snapshot with the highest ``measure`` ('gold' or 'reward'; ties: the earlier
    one), None when the curve has no snapshot. SFT (iteration 0) is not a snapshot.

    With ``margin`` > 0 an earlier snapshot must beat the final one (``final_iteration``, on the curve) by at
    least ``margin``, else the final one is returned: a snapshot's point rests on one answer per prompt, so a
    lead smaller than its noise is no reason to sample every prompt again.
    """
    snapshots = curve[(curve["family"] == "PPO checkpoints") & (curve["iteration"] > 0)]
    if snapshots.empty or snapshots[measure].isna().all():
        return None
    best = snapshots.loc[snapshots[measure].idxmax()]
    final = snapshots[snapshots["iteration"] == final_iteration]
    if margin > 0 and len(final) and best[measure] - final[measure].iloc[0] < margin:
        return int(final_iteration)
    return int(best["iteration"])
