"""Try reward-model settings on a finished run without redoing notebooks 01-02, and score each try
like notebooks 03 and 06.

    .venv/bin/python benchmarks/reward_sweep.py --run-dir runs/cpu --name edit150 --set edit_pairs=150
    .venv/bin/python benchmarks/reward_sweep.py --run-dir runs/cpu --name epochs3 --set epochs=3
    .venv/bin/python benchmarks/reward_sweep.py --run-dir runs/cpu --name round2 --policy runs/cpu/ppo/policy

Each try takes the run's own notebook-03 settings (``reward/meta.json``) plus the ``--set``
overrides, builds notebook 03's comparisons from the run's judged SFT answers
(``reward/sft_samples.jsonl``, copied; with another ``k_samples``, answers are sampled anew), and
trains notebook 03's reward model (``helpers.train.train_reward``, resumable) in
``<run-dir>/reward-sweep/<name>/``. Then it reports what notebook 03 reports (held-out pairwise
accuracy, Spearman pooled and within prompt) and, when notebook 06 has run, what notebook 06 reports
about the reward model on its pool of 16 SFT answers per prompt (pairwise accuracy, accuracy by the rule
that decided the pair, the gold score of its favourite). The result goes to ``<name>/result.json`` and
``reward-sweep/results.jsonl``; the run's own ``reward/`` is not touched. Generated data only.

With ``--policy DIR`` (a saved PPO policy adapter, such as notebook 04's ``ppo/policy``) the
policy also answers every reward-model prompt ``k_samples`` times and the training side gains
``helpers.reward.policy_pairs`` on the training prompts, a seeded sample of ``--policy-pairs`` of
them (a second round of comparisons, on the answers PPO actually writes). The policy pairs of the
prompts that both this try and notebook 03 held out are a second test, scored by the run's reward
model and by the new one: how well each judges the policy's answers. Train PPO against the new
model with ``benchmarks/ppo_sweep.py --reward-model <run-dir>/reward-sweep/<name>/model``.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
from pathlib import Path

from helpers.config import DataConfig, ModelConfig, RewardStageConfig
from helpers.files import read_json, read_jsonl
from helpers.runs import with_added_fields
from helpers.sweeps import as_setting, finish_try, finished_stages, parse_overrides, start_try, sweep_arguments


def main(argv: list[str] | None = None) -> dict:
    args = sweep_arguments(__doc__.split("\n\n")[0], "reward-sweep", "RewardStageConfig", argv, extra={
        "--policy": {"metavar": "DIR", "help": "also train on comparisons of this PPO policy adapter's answers "
                                               "(e.g. <run-dir>/ppo/policy)"},
        "--policy-pairs": {"type": int, "default": 300, "help": "with --policy: train on at most this many "
                                                                "policy pairs, a seeded sample (0: all)"}})
    run_dir = Path(args.run_dir).resolve()
    data_meta, sft_meta, reward_meta = finished_stages(run_dir)
    data_cfg = DataConfig(**data_meta["config"]["data"])
    run_cfg = RewardStageConfig(**with_added_fields(reward_meta["config"])["reward"])  # notebook 03's settings
    overrides = parse_overrides(args.set)
    unknown = sorted(set(overrides) - {field.name for field in dataclasses.fields(RewardStageConfig)})
    if unknown:
        raise SystemExit(f"--set {', '.join(unknown)}: not a RewardStageConfig field")
    cfg = dataclasses.replace(run_cfg, **overrides)  # validated like any config
    out = run_dir / "reward-sweep" / args.name
    policy_dir = Path(args.policy).resolve() if args.policy else None
    second_round = {"policy": as_setting(policy_dir, run_dir), "policy_pairs": args.policy_pairs} if policy_dir else {}
    finished = start_try(out, cfg.to_dict() | second_round)
    if finished is not None:
        return finished
    if cfg.k_samples == run_cfg.k_samples and not (out / "sft_samples.jsonl").exists():
        shutil.copyfile(run_dir / "reward" / "sft_samples.jsonl", out / "sft_samples.jsonl")  # else: sampled anew

    import pandas as pd
    import torch

    from helpers.adapters import load_roles
    from helpers.dataset import load_split
    from helpers.evaluation import accuracy_by_reason, reward_model_check, reward_model_scores
    from helpers.models import load_tokenizer, resolve_compute_dtype
    from helpers.reward import (base_candidates, build_reward_trainer, drop_overlong, load_reward_base,
                                make_comparisons, pairwise_accuracy, policy_pairs, sample_sft_answers)
    from helpers.stats import spearman, within_prompt_spearman
    from helpers.train import train_reward

    if args.threads:
        torch.set_num_threads(args.threads)
    model_cfg = ModelConfig(**data_meta["config"]["model"])
    tokenizer = load_tokenizer(model_cfg)
    rows = load_split(run_dir / "data", "rm")
    records = sample_sft_answers(model_cfg, data_cfg, cfg.k_samples, tokenizer, rows, out / "sft_samples.jsonl",
                                 run_dir / sft_meta["adapter"])
    comparisons = make_comparisons(rows, records, tokenizer, cfg, extra=base_candidates(run_dir / "data", cfg))
    policy_heldout = []
    if policy_dir is not None:  # a second round: comparisons on the PPO policy's answers
        policy_records = sample_sft_answers(model_cfg, data_cfg, cfg.k_samples, tokenizer, rows,
                                            out / "policy_samples.jsonl", policy_dir, who="policy", seed_offset=2)
        made, policy_tally = policy_pairs(rows, policy_records, records, cfg.min_gold_gap)
        made, too_long = drop_overlong(made, tokenizer, cfg.max_length)
        held = {p["prompt_id"] for p in comparisons.heldout}
        run_held = {p["prompt_id"] for p in read_jsonl(run_dir / "reward" / "comparisons_heldout.jsonl")}
        policy_heldout = [p for p in made if p["prompt_id"] in held & run_held]  # unseen by both models
        policy_train = [p for p in made if p["prompt_id"] not in held]
        if 0 < args.policy_pairs < len(policy_train):
            policy_train = random.Random(cfg.seed).sample(policy_train, args.policy_pairs)
        comparisons.train = comparisons.train + policy_train
        comparisons.tally.update({f"policy_{key}": n for key, n in policy_tally.items() if key != "pairs"},
                                 policy_too_long=too_long, policy_train_pairs=len(policy_train),
                                 policy_heldout_pairs=len(policy_heldout))
    comparisons.save(out)  # what this try trains and tests on
    if not (out / "model").exists():  # model/ marks training as done (a later call only scores)
        dtype = resolve_compute_dtype(model_cfg)
        trainer = build_reward_trainer(load_reward_base(model_cfg, tokenizer), tokenizer, comparisons.train,
                                       comparisons.heldout, cfg, out / "checkpoints", dtype)
        train_reward(trainer, out, rows, comparisons)
        del trainer

    answers = pd.read_json(out / "heldout_answers_scored.jsonl", orient="records", lines=True)
    train_summary = read_json(out / "train_summary.json")
    result = {"name": args.name, "overrides": overrides, "tally": dict(comparisons.tally),
              "train_pairs": len(comparisons.train), "heldout_pairs": len(comparisons.heldout),
              "heldout_accuracy": pairwise_accuracy(pd.read_json(out / "heldout_scored.jsonl", orient="records",
                                                                  lines=True)),
              "spearman_reward_gold": spearman(answers["reward"], answers["gold"]),
              "spearman_within_prompt": within_prompt_spearman(answers["prompt_id"], answers["reward"], answers["gold"]),
              "train_seconds": train_summary["train_seconds_this_session"], **second_round}
    has_pool = (run_dir / "eval" / "meta.json").exists()  # notebook 06's pool: many SFT answers to its first prompts
    if policy_dir is not None or has_pool:
        model, reward_head, norm = load_roles(model_cfg, run_dir / sft_meta["adapter"], out / "model")
    if policy_dir is not None:  # the policy's answers to held-out prompts, judged by the run's model and by this one
        rows_by_id = {row["id"]: row for row in rows}
        result["policy_heldout"] = {"pairs": len(policy_heldout)}
        run_model = load_roles(model_cfg, run_dir / sft_meta["adapter"], run_dir / reward_meta["model"])
        for label, (judge_model, judge_head, judge_norm) in (("run", run_model), ("this", (model, reward_head, norm))):
            scores = {side: reward_model_scores(judge_model, judge_head, judge_norm, tokenizer,
                                                [rows_by_id[p["prompt_id"]] for p in policy_heldout],
                                                [p[side] for p in policy_heldout]) for side in ("chosen", "rejected")}
            correct = (scores["chosen"] > scores["rejected"]).float()
            result["policy_heldout"][f"accuracy_{label}"] = float(correct.mean()) if len(correct) else None
        del run_model
    if has_pool:
        eval_cfg = read_json(run_dir / "eval" / "meta.json")["config"]["eval"]
        pool_file = run_dir / "eval" / f"samples_sft_x{max(eval_cfg['best_of'])}.jsonl"
        eval_rows = {row["id"]: row for row in load_split(run_dir / "data", "eval")}
        pool = read_jsonl(pool_file)
        pool_rewards = [reward_model_scores(model, reward_head, norm, tokenizer,  # scored as notebook 06 does
                                            [eval_rows[rec["id"]]] * len(rec["samples"]),
                                            [s["text"] for s in rec["samples"]], eval_cfg["score_batch_size"]).tolist()
                        for rec in pool]  # pairs counted with the run's min gap, as notebook 06 counts them
        by_reason = accuracy_by_reason(pool, pool_rewards, run_cfg.min_gold_gap).set_index("reason")
        result["pool"] = {"file": pool_file.name, **reward_model_check(pool, pool_rewards, run_cfg.min_gold_gap),
                          "accuracy_by_reason": by_reason.to_dict(orient="index")}
    return finish_try(out, result)


if __name__ == "__main__":
    main()
