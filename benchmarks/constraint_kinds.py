"""How often does the base model meet each constraint kind unaided? The measurement behind the `cpu` curriculum.

    .venv/bin/python benchmarks/constraint_kinds.py [--prompts 24] [--tokens 64] [--adapter DIR] [--out FILE]

For each of the 17 kinds it builds ``--prompts`` prompts with that one constraint (the generator's
``rm`` split, seed 0), samples one answer each at temperature 1 under ``--tokens`` tokens, and prints
per kind: the share that meets the constraint (before the gates), the share passing every gate, the
share scoring gold 1, the share finished, and the mean length. ``--adapter`` samples from a LoRA
adapter on the base instead (an SFT adapter, say: ``runs/cpu/sft/adapter``). A learnable kind is met
sometimes, not never and not always; ``helpers.config.CPU_CONSTRAINT_KINDS`` was chosen from this
table (2026-12-01, 24 prompts, 64 tokens, the base model).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from helpers.adapters import load_policy
from helpers.config import ModelConfig
from helpers.constraints import CONSTRAINT_KINDS
from helpers.generation import sample_responses
from helpers.instructions import build_instruction_rows
from helpers.labeler import judge
from helpers.models import load_model, load_tokenizer

MEASURES = ("met", "gates", "gold_1", "finished")


def pass_rates(rows: list[dict], samples) -> dict[str, dict[str, float]]:
    """Per kind of each row's single constraint: the share of answers meeting it, passing every gate, scoring
    gold 1 and finished, and the mean length in tokens."""
    tally: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row, sample in zip(rows, samples, strict=True):
        kind = row["constraints"][0]["kind"]
        verdict = judge(row, sample.text, truncated=sample.truncated)
        counts = tally[kind]
        counts["n"] += 1
        counts["met"] += verdict.constraints[kind]
        counts["gates"] += verdict.passed_gates
        counts["gold_1"] += verdict.score == 1.0
        counts["finished"] += verdict.gates["finished"]
        counts["tokens"] += sample.n_tokens
    return {kind: {**{m: c[m] / c["n"] for m in MEASURES}, "tokens": c["tokens"] / c["n"]}
            for kind, c in tally.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=24, help="prompts per kind")
    parser.add_argument("--tokens", type=int, default=64, help="token limit of each answer")
    parser.add_argument("--adapter", help="a LoRA adapter folder to sample from (default: the base model)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", help="also write the table as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [row for kind in CONSTRAINT_KINDS
            for row in build_instruction_rows({"rm": args.prompts}, seed=0, max_constraints=1, kinds=[kind])]
    config = ModelConfig.from_profile("cpu")
    tokenizer = load_tokenizer(config)
    model = load_policy(config, args.adapter) if args.adapter else load_model(config)
    samples = sample_responses(model, tokenizer, [row["messages"] for row in rows], max_new_tokens=args.tokens,
                               batch_size=68, seed=1)
    rates = pass_rates(rows, samples)
    print(f"{'kind':20s} " + " ".join(f"{m:>8s}" for m in MEASURES) + "   tokens")
    for kind, rate in rates.items():
        print(f"{kind:20s} " + " ".join(f"{rate[m]:8.2f}" for m in MEASURES) + f"   {rate['tokens']:6.0f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rates, indent=1))


if __name__ == "__main__":
    main()
