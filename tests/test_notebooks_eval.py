"""Notebooks 05 (DPO) and 06 (evaluation) and the run report, executed on the tiny profile by the workbook run."""

from __future__ import annotations

import math

import pytest

from helpers.files import read_json, read_jsonl

pytestmark = pytest.mark.notebook

CONTENDERS = ["base", "SFT", "best-of-2", "best-of-4", "DPO", "PPO (final)", "PPO (best)"]


def test_notebook_05_trains_dpo_from_the_sft_model(tiny_run):
    from helpers.config import DPOStageConfig

    meta = read_json(tiny_run / "dpo" / "meta.json")
    cfg = DPOStageConfig.from_profile("tiny")
    pairs = read_jsonl(tiny_run / "reward" / "comparisons_train.jsonl")
    assert meta["config"]["dpo"] == cfg.to_dict() and meta["train_pairs"] == len(pairs)
    assert meta["steps"] == math.ceil(len(pairs) / cfg.batch_size) * cfg.epochs
    assert 0.0 <= meta["heldout_accuracy"] <= 1.0 and meta["memory"]["peak_rss_mb"] > 100
    assert (tiny_run / "dpo" / "adapter" / "adapter_model.safetensors").exists()
    history = read_json(tiny_run / "dpo" / "train_summary.json")["history"]
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # starts at its reference


def test_notebook_06_evaluates_every_contender(tiny_run):
    from helpers.config import DataConfig
    from helpers.evaluation import best_of_n_kl

    meta = read_json(tiny_run / "eval" / "meta.json")
    headline = meta["headline"]
    n_eval, subset = DataConfig.from_profile("tiny").n_eval, meta["config"]["eval"]["subset_prompts"]
    k, k_base = meta["config"]["eval"]["answers_per_prompt"], meta["config"]["eval"]["base_answers_per_prompt"]
    assert (k, k_base) == (2, 1)  # base answers once, as on cpu: the headline mixes 1 against k answers
    assert list(headline) == CONTENDERS + ["reward model (03)"]
    for name in CONTENDERS:
        row = headline[name]
        assert row["prompts"] == (subset if name.startswith("best-of") else n_eval), name
        answers = subset if name.startswith("best-of") else (k_base if name == "base" else k) * n_eval
        assert row["answers"] == answers, name
        assert 0.0 <= row["ci95_low"] <= row["gold"] <= row["ci95_high"] <= 1.0, name
        assert 0.0 <= row["eos_rate"] <= 1.0 and row["tokens"] > 0, name
        if name != "SFT":
            assert 0.0 <= row["win_ci95_low"] <= row["win_rate_vs_sft"] <= row["win_ci95_high"] <= 1.0, name
            assert row["gain_ci95_low"] <= row["gain_vs_sft"] <= row["gain_ci95_high"], name
    for name in ("base", "DPO", "PPO (final)"):  # every prompt: the gain is the difference of the means
        assert headline[name]["gain_vs_sft"] == pytest.approx(headline[name]["gold"] - headline["SFT"]["gold"])
    assert headline["SFT"]["kl"] == 0.0
    assert headline["best-of-4"]["kl"] == pytest.approx(best_of_n_kl(4))
    assert 0.0 <= headline["DPO"]["preference_accuracy"] <= 1.0
    # SFT's first answer to each prompt is the one notebook 02 drew; the other k - 1 were drawn here
    stored = read_jsonl(tiny_run / "sft" / "sft_eval_samples.jsonl")
    more = {r["id"]: r["samples"] for r in read_jsonl(tiny_run / "eval" / "samples_sft_more.jsonl")}
    assert all(len(samples) == k - 1 for samples in more.values()) and set(more) == {r["id"] for r in stored}
    prompt_means = [(r["samples"][0]["score"] + sum(s["score"] for s in more[r["id"]])) / k for r in stored]
    assert headline["SFT"]["gold"] == pytest.approx(sum(prompt_means) / len(prompt_means))
    scored = read_jsonl(tiny_run / "eval" / "scored_sft.jsonl")
    assert [line["sample"] for line in scored] == list(range(k)) * n_eval
    snapshots = list((tiny_run / "ppo" / "snapshots").glob("iter-*"))
    families = [p["family"] for p in meta["curve"]]
    assert families.count("PPO checkpoints") == 1 + len(snapshots)  # SFT, then every snapshot
    assert families.count("best-of-n") == 3  # n = 1, 2, 4
    kinds = {c["kind"] for r in read_jsonl(tiny_run / "data" / "eval.jsonl") for c in r["constraints"]}
    assert set(meta["pass_rates"]) == set(CONTENDERS) and all(set(v) <= kinds for v in meta["pass_rates"].values())


def test_notebook_06_checks_the_reward_model_on_the_best_of_n_pool(tiny_run):
    from helpers.stats import within_prompt_agreement

    meta = read_json(tiny_run / "eval" / "meta.json")
    check, n_max = meta["reward_model_check"], max(meta["config"]["eval"]["best_of"])
    pool = read_jsonl(tiny_run / "eval" / f"samples_sft_x{n_max}.jsonl")
    gold = [[s["score"] for s in r["samples"]] for r in pool]
    assert check["prompts"] == len(pool) and check["answers"] == n_max * len(pool)
    min_gap = read_json(tiny_run / "reward" / "meta.json")["config"]["reward"]["min_gold_gap"]
    _, pairs = within_prompt_agreement([r["id"] for r in pool for _ in r["samples"]], sum(gold, []),
                                       [0.0] * check["answers"], min_gap)
    assert check["pairs"] == pairs  # which pairs count depends on the gold scores alone
    assert sum(r["pairs"] for r in check["accuracy_by_reason"].values()) == pairs  # the same pairs, split
    by_constraint = check["accuracy_by_reason"].get("constraints met", {"pairs": 0})["pairs"]
    assert sum(r["pairs"] for r in check["accuracy_by_constraint"].values()) == by_constraint  # split by kind
    by_length = check["by_length"]  # every pool answer, grouped by its token count
    assert sum(b["answers"] for b in by_length.values()) == check["answers"]
    assert sum(b["gold"] * b["answers"] for b in by_length.values()) == pytest.approx(sum(map(sum, gold)))
    assert check["gold_mean"] == pytest.approx(sum(map(sum, gold)) / check["answers"])
    assert check["gold_best"] == pytest.approx(sum(map(max, gold)) / len(pool))
    assert check["gold_top_reward"] == pytest.approx(meta["headline"][f"best-of-{n_max}"]["gold"])  # the same pick
    assert check["gold_mean"] - 1e-9 <= check["gold_best"] and check["gold_top_reward"] <= check["gold_best"] + 1e-9
    if pairs:
        assert 0.0 <= check["pairwise_accuracy"] <= 1.0


def test_the_run_ends_with_a_report(tiny_run):
    record = read_json(tiny_run / "run.json")
    page = (tiny_run / "report.html").read_text()
    summary = (tiny_run / "report.md").read_text()
    assert record["report"]["html"].endswith("report.html")
    assert "Plotly.newPlot" in page and "PPO (best)" in page
    ppo = read_json(tiny_run / "eval" / "meta.json")["headline"]["PPO (final)"]
    assert f"| PPO (final) | {int(ppo['prompts'])} | {int(ppo['answers'])} | {ppo['gold']:.3f} |" in summary
    for stage in ("data", "sft", "reward", "ppo", "dpo", "eval"):
        assert f"| {stage} |" in summary
    check = read_json(tiny_run / "eval" / "meta.json")["reward_model_check"]
    assert f"reward model on {check['answers']} fresh SFT answers ({check['prompts']} prompts)" in summary


def _benchmark(name):
    import importlib.util

    from helpers.runs import REPO_ROOT

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_reward_sweep_retrains_notebook_03s_model_and_checks_it_like_notebook_06(tiny_run, capsys):
    sweep = _benchmark("reward_sweep")
    stored = (tiny_run / "reward" / "model" / "score_head.safetensors").read_bytes()
    result = sweep.main(["--run-dir", str(tiny_run), "--name", "same"])  # the run's own settings
    reward_meta = read_json(tiny_run / "reward" / "meta.json")
    assert result["tally"] == reward_meta["comparisons"] and result["train_pairs"] == reward_meta["train_pairs"]
    diagnostics = reward_meta["diagnostics"]
    assert result["heldout_accuracy"] == pytest.approx(diagnostics["heldout_accuracy"])  # the same training, seeded
    assert result["spearman_within_prompt"] == pytest.approx(diagnostics["spearman_within_prompt"], abs=1e-6,
                                                             nan_ok=True)
    check = read_json(tiny_run / "eval" / "meta.json")["reward_model_check"]
    for key in ("pairs", "gold_mean", "gold_best"):
        assert result["pool"][key] == pytest.approx(check[key])
    assert result["pool"]["gold_top_reward"] == pytest.approx(check["gold_top_reward"])  # the same favourites
    assert (tiny_run / "reward" / "model" / "score_head.safetensors").read_bytes() == stored  # reward/ untouched
    assert read_jsonl(tiny_run / "reward-sweep" / "results.jsonl") == [result]
    capsys.readouterr()
    assert sweep.main(["--run-dir", str(tiny_run), "--name", "same"]) == result  # finished: printed, not retrained
    assert "is finished already" in capsys.readouterr().out


def test_a_second_round_trains_the_reward_model_on_the_policys_answers_and_ppo_against_it(tiny_run):
    reward_meta = read_json(tiny_run / "reward" / "meta.json")
    k = reward_meta["config"]["reward"]["k_samples"]
    result = _benchmark("reward_sweep").main(["--run-dir", str(tiny_run), "--name", "round2", "--policy-pairs", "8",
                                              "--policy", str(tiny_run / "ppo" / "policy")])
    out = tiny_run / "reward-sweep" / "round2"
    policy_samples = read_jsonl(out / "policy_samples.jsonl")
    assert len(policy_samples) == len(read_jsonl(tiny_run / "data" / "rm.jsonl"))
    assert all(len(rec["samples"]) == k for rec in policy_samples)
    tally = result["tally"]
    assert 0 < tally["policy_train_pairs"] <= 8  # a seeded sample of the policy's pairs, capped by --policy-pairs
    assert result["train_pairs"] == reward_meta["train_pairs"] + tally["policy_train_pairs"]
    trained = read_jsonl(out / "comparisons_train.jsonl")
    held = {p["prompt_id"] for p in read_jsonl(out / "comparisons_heldout.jsonl")}
    from_policy = [p for p in trained if p["id"].rsplit("-", 1)[-1].startswith("p")]  # ...-p0-p1, ...-s2-p1
    assert len(from_policy) == tally["policy_train_pairs"] and not {p["prompt_id"] for p in from_policy} & held
    assert result["policy"] == "ppo/policy" and result["policy_heldout"]["pairs"] == tally["policy_heldout_pairs"]
    if tally["policy_heldout_pairs"]:  # judged by the run's reward model and by the new one
        checked = result["policy_heldout"]
        assert 0.0 <= checked["accuracy_run"] <= 1.0 and 0.0 <= checked["accuracy_this"] <= 1.0

    ppo = _benchmark("ppo_sweep").main(["--run-dir", str(tiny_run), "--name", "round2",
                                        "--reward-model", str(out / "model")])
    assert ppo["reward_model"] == "reward-sweep/round2/model" and ppo["episodes"] > 0  # relative to the run
    assert read_json(tiny_run / "ppo-sweep" / "round2" / "settings.json")["reward_model"] == ppo["reward_model"]


def test_the_ppo_sweep_can_train_against_the_gold_labeler_itself(tiny_run):
    sweep = _benchmark("ppo_sweep")
    result = sweep.main(["--run-dir", str(tiny_run), "--name", "oracle", "--reward", "gold"])
    out = tiny_run / "ppo-sweep" / "oracle"
    assert result["reward"] == "gold" and read_json(out / "settings.json")["reward"] == "gold"
    ppo = result["eval"]["PPO"]  # helpers.evaluation.ppo_vs_sft's row, as notebook 04 stores it
    assert result["episodes"] > 0 and math.isfinite(ppo["reward"])  # the reward model still scores
    answers = read_jsonl(out / "eval_samples.jsonl")
    assert ppo["labeler"]["answers"] == len(answers)
    passed = [s for record in answers for s in record["samples"] if all(s["gates"].values())]
    assert ppo["labeler"]["passed_gates"] == pytest.approx(len(passed) / len(answers))
    mean, std = sweep.gold_normalisation(tiny_run)
    assert (result["gold_mean"], result["gold_std"]) == (mean, std)
    for row in read_jsonl(out / "metrics.jsonl"):
        # rm_score logs the trained-on reward, the gold score judged as finished; the logged gold gates
        # responses without EOS, so it can only be lower, and equal when every response finished
        as_gold = row["rm_score"] * std + mean
        assert -1e-6 <= as_gold <= 1 + 1e-6 and as_gold >= row["gold"] - 1e-6
        if row["eos_rate"] == 1.0:
            assert as_gold == pytest.approx(row["gold"], abs=1e-6)
