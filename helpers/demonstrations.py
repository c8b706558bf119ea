"""Sampling and judging, and demonstrations by best-of-N (our stand-in for InstructGPT's labeler-written ones).

InstructGPT's SFT data were answers written by human labelers. We replace the
labelers with two cheap pieces: the base model proposes ``N`` candidate answers
per prompt, and the simulated labeler (``helpers.labeler``) scores them. A
prompt's best candidate becomes its demonstration when its gold score reaches a
threshold; prompts whose best answer stays below it get no demonstration
(rejection sampling, as in Touvron et al. 2023's Llama 2 fine-tuning rounds).

A small base model rarely meets some instructions unaided (it almost never writes a
``<<title>>`` or a "P.S." line), so rejection sampling alone leaves those kinds without a
single demonstration and the SFT model never learns them. With ``edit=True``
``best_of_n`` also considers each sample *edited by rule* (``helpers.edits.edit_answer``:
the cut-off tail trimmed, the missed constraint met), judged again by the same labeler:
the labeler's minimal fix of a model answer, closer to InstructGPT's written
demonstrations than sampling alone. Sampled answers win ties against edited ones.

``sample_and_judge`` is resumable: it appends one JSON line per prompt to a log
as it goes and, when called again with the same log, skips the prompts already
there. Sampling is seeded per chunk of prompts, so a resumed run draws exactly
what an uninterrupted one would have.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .dataset import prompt_text
from .edits import edit_answer
from .files import append_jsonl, read_jsonl
from .generation import sample_responses
from .labeler import judge
from .progress import progress_bar


def sample_and_judge(model, tokenizer, rows: list[dict], *, n_samples: int, log_path: str | Path,
                     max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 32,
                     seed: int = 0, desc: str = "sampling", judged: bool = True) -> list[dict]:
    """Sample ``n_samples`` responses per row, judge each, and return one record per row (in row order).

    A record is ``{"id": row id, "samples": [{"text", "n_tokens", "truncated", "score",
    "constraints": {kind: bool}, "gates": {gate: bool}}, ...]}``. With ``judged=False``
    (real data: no simulated labeler) a sample holds only text, n_tokens and truncated.
    """
    log_path = Path(log_path)
    done = {r["id"]: r for r in read_jsonl(log_path, tolerate_partial_tail=True)} if log_path.exists() else {}
    prompts_per_chunk = max(1, batch_size // n_samples)
    chunks = [rows[i : i + prompts_per_chunk] for i in range(0, len(rows), prompts_per_chunk)]
    bar = progress_bar(total=len(rows) * n_samples, desc=desc, unit="sample")
    bar.update(sum(n_samples for r in rows if r["id"] in done))
    for chunk_index, chunk in enumerate(chunks):
        todo = [r for r in chunk if r["id"] not in done]
        if not todo:
            continue
        conversations = [row["messages"] for row in chunk for _ in range(n_samples)]
        samples = sample_responses(
            model, tokenizer, conversations, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            batch_size=len(conversations), seed=seed + 1009 * chunk_index,
        )
        records = []
        for j, row in enumerate(chunk):
            if row["id"] in done:
                continue
            judgements = []
            for s in samples[j * n_samples : (j + 1) * n_samples]:
                sample = {"text": s.text, "n_tokens": s.n_tokens, "truncated": s.truncated}
                if judged:
                    verdict = judge(row, s.text, truncated=s.truncated)
                    sample.update(score=verdict.score, constraints=verdict.constraints, gates=verdict.gates)
                judgements.append(sample)
            records.append({"id": row["id"], "samples": judgements})
        append_jsonl(log_path, records)
        done.update({r["id"]: r for r in records})
        bar.update(len(todo) * n_samples)
    bar.close()
    return [done[row["id"]] for row in rows]


def edited_samples(row: dict, samples: list[dict], threshold: float) -> list[dict]:
    """The samples below ``threshold`` edited by rule (``edit_answer``) and judged again, where the edit
    reaches it: ``{"text", "score", "edited": True}`` each, in sample order."""
    edited = []
    for sample in samples:
        if sample["score"] >= threshold:
            continue
        text = edit_answer(row["constraints"], sample["text"], truncated=sample["truncated"])
        if text is not None and (score := judge(row, text, truncated=False).score) >= threshold:
            edited.append({"text": text, "score": score, "edited": True})
    return edited


def best_of_n(rows: list[dict], records: list[dict], threshold: float, per_prompt: int = 1, *,
              edit: bool = False) -> list[dict]:
    """Demonstration rows: each prompt's ``per_prompt`` highest-scoring distinct answers that score >= ``threshold``.

    Rejection sampling: with ``per_prompt=1``, each prompt's best sample. Ties go to the
    earlier sample; a repeated text counts once. With ``edit=True`` the samples' rule edits
    (``edited_samples``) compete too, after every sample, so a sample wins a tie. A kept
    row is the prompt row plus ``response``, ``score`` and ``edited``.
    """
    by_id = {r["id"]: r for r in records}
    demos = []
    for row in rows:
        samples = by_id[row["id"]]["samples"]
        candidates = samples + (edited_samples(row, samples, threshold) if edit else [])
        ranked = sorted(candidates, key=lambda s: -s["score"])  # stable: earlier first on ties
        kept: list[str] = []
        for sample in ranked:
            if len(kept) == per_prompt or sample["score"] < threshold:
                break
            if sample["text"].strip() not in kept:
                kept.append(sample["text"].strip())
                demos.append({**row, "response": sample["text"], "score": sample["score"],
                              "edited": sample.get("edited", False)})
    return demos


def samples_table(rows: list[dict], records: list[dict]) -> pd.DataFrame:
    """One line per sample: prompt, response, gold score, and the labeler's verdicts."""
    by_id = {r["id"]: r for r in records}
    lines = []
    for row in rows:
        for k, s in enumerate(by_id[row["id"]]["samples"]):
            lines.append({
                "id": row["id"], "sample": k, "task": row.get("task"), "topic": row.get("topic"),
                "prompt": prompt_text(row), "response": s["text"], "score": s["score"],
                "truncated": s["truncated"], "n_tokens": s["n_tokens"],
                "gates_passed": all(s["gates"].values()),
                "failed_gates": ", ".join(g for g, ok in s["gates"].items() if not ok),
                "constraints_met": sum(s["constraints"].values()), "constraints": len(s["constraints"]),
            })
    return pd.DataFrame(lines)


def gate_summary(table: pd.DataFrame) -> dict:
    """Where a mean gold score comes from, over ``samples_table``'s lines: the shares of answers on topic,
    finished and passing every gate, and the mean share of constraints met by the answers that pass
    every gate (NaN if none). The labeler scores an answer (constraints met) / (constraints), times
    0.05 when a gate fails, so mean gold = passed_gates x constraint_share + at most
    0.05 x (1 - passed_gates)."""
    failed = table["failed_gates"].str.split(", ")
    passing = table[table["gates_passed"]]
    share = (passing["constraints_met"] / passing["constraints"]).mean() if len(passing) else float("nan")
    return {"answers": len(table),
            "on_topic": float((~failed.apply(lambda gates: "on_topic" in gates)).mean()),
            "finished": float((~failed.apply(lambda gates: "finished" in gates)).mean()),
            "passed_gates": float(table["gates_passed"].mean()),
            "constraint_share": float(share)}


def pass_rates(rows: list[dict], records: list[dict]) -> pd.DataFrame:
    """Per constraint kind: how many samples faced it and the share that satisfied it.

    ``pass_rate`` checks the constraint alone; ``pass_rate_gated`` also requires the
    answer to pass every quality gate (what the gold score rewards).
    """
    by_id = {r["id"]: r for r in records}
    lines = []
    for row in rows:
        for s in by_id[row["id"]]["samples"]:
            gated = all(s["gates"].values())
            for kind, ok in s["constraints"].items():
                lines.append({"constraint": kind, "passed": ok, "passed_gated": ok and gated})
    table = pd.DataFrame(lines).groupby("constraint").agg(
        samples=("passed", "size"), pass_rate=("passed", "mean"), pass_rate_gated=("passed_gated", "mean"))
    return table.sort_values("pass_rate", ascending=False)


def demonstration_counts(rows: list[dict], demonstrations: list[dict]) -> pd.DataFrame:
    """Per constraint kind: the prompts asking for it, those with a demonstration, and the demonstrations
    kept as sampled or as edited (a prompt with several constraints counts under each)."""
    lines = []
    for row in rows:
        demos = [d for d in demonstrations if d["id"] == row["id"]]
        for spec in row["constraints"]:
            lines.append({"constraint": spec["kind"], "prompt": 1, "covered": int(bool(demos)),
                          "sampled": sum(not d.get("edited", False) for d in demos),
                          "edited": sum(d.get("edited", False) for d in demos)})
    return (pd.DataFrame(lines).groupby("constraint").sum()
            .rename(columns={"prompt": "prompts", "covered": "prompts with a demonstration"}))
