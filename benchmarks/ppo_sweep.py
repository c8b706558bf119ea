"""Try PPO settings on a finished run without redoing notebooks 01-03, and score each try like notebook 04.

    .venv/bin/python benchmarks/ppo_sweep.py --run-dir runs/cpu --name warmup6 --set warmup_iterations=6
    .venv/bin/python benchmarks/ppo_sweep.py --run-dir runs/cpu --name seed1 --set seed=1

Each try trains notebook 04's loop (``helpers.ppo.train_ppo``, the same roles and reward) with the
run's ``cpu``/``gpu``/``tiny`` PPO profile plus the ``--set`` overrides, in
``<run-dir>/ppo-sweep/<name>/`` (resumable like notebook 04: re-running an interrupted try goes on
from its last checkpoint). Then, as notebook 04's evaluation cell does, the policy answers every
evaluation prompt once and ``helpers.evaluation.ppo_vs_sft`` compares it with the stored SFT answers
(gold score, gain and win rate with paired intervals, length, EOS rate, the labeler's gates, pass rates
per constraint kind; under ``eval``, in the keys of notebook 04's ``meta.json``), written to
``<name>/result.json`` and appended to ``ppo-sweep/results.jsonl``. A finished try is
printed, not retrained: pick a new ``--name`` to try again. Generated data only (the gold labeler).

``--reward-model DIR`` trains against another reward model, such as one that
``benchmarks/reward_sweep.py --policy`` retrained on a PPO policy's answers (a second round);
the value head starts from it too.

``--reward gold`` trains against the simulated labeler itself instead of any reward model: the
gold score, put on about the reward model's normalised scale (offset and scale from the gold scores
of notebook 03's SFT answers). That is the oracle of Gao et al. (2022): it shows how far this loop,
with these settings, can move the gold score when its reward is right, so that a gap between it and
a reward-model try is the reward model's doing. The reward model (the run's, or ``--reward-model``)
still initialises the value head and gives ``reward``, its score of the evaluation answers.
"""

from __future__ import annotations

import time
from pathlib import Path

from helpers.config import DataConfig, ModelConfig, PPOStageConfig
from helpers.files import read_jsonl
from helpers import ppo_roles
from helpers.ppo_roles import gold_reward
from helpers.sweeps import (as_setting, finish_try, finished_stages, gold_normalisation, parse_overrides, start_try,
                            sweep_arguments)

REWARDS = ("model", "gold")


def main(argv: list[str] | None = None) -> dict:
    args = sweep_arguments(__doc__.split("\n\n")[0], "ppo-sweep", "PPOStageConfig", argv, extra={
        "--reward-model": {"metavar": "DIR", "help": "train against this reward model (a folder with adapter/, "
                           "score head and normalisation, such as <run-dir>/reward-sweep/<name>/model) instead "
                           "of the run's own"},
        "--reward": {"choices": REWARDS, "default": "model",
                     "help": "what PPO maximises: the reward model (default, as notebook 04) or the gold labeler "
                             "itself (an oracle: how far the loop gets when its reward is right)"}})
    run_dir = Path(args.run_dir).resolve()
    data_meta, sft_meta, reward_meta = finished_stages(run_dir)
    data_cfg = DataConfig(**data_meta["config"]["data"])
    cfg = PPOStageConfig.from_profile(data_meta["config"]["data"]["profile"], **parse_overrides(args.set))
    out = run_dir / "ppo-sweep" / args.name
    reward_dir = Path(args.reward_model).resolve() if args.reward_model else run_dir / reward_meta["model"]
    chosen_reward = {"reward_model": as_setting(reward_dir, run_dir)} if args.reward_model else {}
    if args.reward != "model":
        chosen_reward["reward"] = args.reward
    finished = start_try(out, cfg.to_dict() | chosen_reward)
    if finished is not None:
        return finished

    import torch

    from helpers.dataset import load_split
    from helpers.evaluation import contender_answers, ppo_vs_sft, records_for
    from helpers.labeler import gold_scores
    from helpers.models import load_tokenizer
    from helpers.ppo import train_ppo
    from helpers.ppo_roles import load_ppo_roles

    if args.threads:
        torch.set_num_threads(args.threads)
    model_cfg = ModelConfig(**data_meta["config"]["model"])
    tokenizer = load_tokenizer(model_cfg)
    roles = load_ppo_roles(model_cfg, run_dir / sft_meta["adapter"], reward_dir,
                           tokenizer.pad_token_id, trainable_layers=cfg.trainable_layers)

    reward_model_reward = ppo_roles.reward_model_reward(roles, tokenizer)
    if args.reward == "gold":
        gold_mean, gold_std = gold_normalisation(run_dir)
        reward = gold_reward(gold_mean, gold_std)
        chosen_reward |= {"gold_mean": gold_mean, "gold_std": gold_std}  # metrics' rm_score * std + mean: gold
    else:  # notebook 04's reward: the reward model's score, length-neutral if cfg asks
        reward, taste = ppo_roles.ppo_reward(roles, tokenizer, run_dir, cfg)
        if taste is not None:
            chosen_reward["length_taste"] = taste

    demonstrations = read_jsonl(run_dir / "data" / "demonstrations.jsonl") if cfg.ptx_coef > 0 else None
    started = time.time()
    metrics = train_ppo(roles, tokenizer, load_split(run_dir / "data", "ppo"), cfg, out, reward_fn=reward,
                        gold_fn=gold_scores, demonstrations=demonstrations)
    train_seconds = time.time() - started

    eval_rows = load_split(run_dir / "data", "eval")
    records = contender_answers(roles.model, tokenizer, eval_rows, "policy", 1, out / "eval_samples.jsonl",
                                True, data_cfg.sampling, "policy on eval")
    sft_records = records_for(eval_rows, run_dir / "sft" / "sft_eval_samples.jsonl")
    summary, _ = ppo_vs_sft(eval_rows, records, sft_records, reward_model_reward, final_kl=metrics[-1]["kl"])
    result = {"name": args.name, "overrides": parse_overrides(args.set), **chosen_reward,
              "eval": summary,  # {"SFT": row, "PPO": row}, notebook 04's keys: gold, gain_vs_sft, labeler, ...
              "episodes": len(metrics) * cfg.batch_size, "train_seconds": round(train_seconds, 1)}
    return finish_try(out, result)


if __name__ == "__main__":
    main()
