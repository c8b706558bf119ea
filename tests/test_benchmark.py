"""The benchmark scripts without running them: TRL's config per device, the report's GPU lines, the sweep's guards."""

from __future__ import annotations

import importlib.util
from argparse import Namespace

import pytest

from helpers.runs import REPO_ROOT


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_script("ppo_vs_trl")


ARGS = Namespace(batch_size=16, minibatches=2, ppo_epochs=2, iterations=3, response_length=48)


def _result(impl: str, episodes_per_second: float, peak_rss_mb: float, **gpu) -> dict:
    return {"impl": impl, "episodes": 48, "train_seconds": 48 / episodes_per_second,
            "episodes_per_second": episodes_per_second, "peak_rss_mb": peak_rss_mb, "loop_peak_rss_mb": peak_rss_mb,
            "rss_after_load_mb": 1000.0, "load_seconds": 2.0, "iteration_seconds": [1.0, 1.0, 1.0],
            "gradient_steps": 12, "versions": {"torch": "x"}, **gpu}


def test_trl_runs_on_the_chosen_device_without_mixed_precision(bench):
    on_cpu = bench.trl_config_kwargs(ARGS, "out", "cpu")
    on_gpu = bench.trl_config_kwargs(ARGS, "out", "cuda")
    assert (on_cpu["use_cpu"], on_gpu["use_cpu"]) == (True, False)
    # TRL 0.29.1's bf16 path fails with a 4-bit peft policy (generation outside autocast): off on both
    assert not any(cfg[flag] for cfg in (on_cpu, on_gpu) for flag in ("bf16", "fp16"))
    assert on_gpu["total_episodes"] == 48 and on_gpu["num_mini_batches"] == 2 and on_gpu["response_length"] == 48


def test_gpu_peak_is_the_larger_of_loading_and_loop(bench):
    assert bench.gpu_peak_mb({"gpu_load_peak_mb": 300.0, "gpu_loop_peak_mb": 800.0}) == 800.0
    assert bench.gpu_peak_mb({"gpu_load_peak_mb": 900.0, "gpu_loop_peak_mb": 800.0}) == 900.0


def test_report_adds_gpu_memory_only_for_gpu_runs(bench, capsys):
    gpu = dict(device="cuda", gpu_name="Some GPU", gpu_after_load_mb=100.0)
    ours = _result("ours", 1.5, 2000.0, gpu_load_peak_mb=200.0, gpu_loop_peak_mb=800.0, **gpu,
                   phase_seconds={"rollout": 20.0, "score": 4.0, "update": 8.0}, expected_gradient_steps=12,
                   stopped_early=0)
    trl = _result("trl", 2.0, 1800.0, gpu_load_peak_mb=1200.0, gpu_loop_peak_mb=6000.0, **gpu,
                  config=bench.trl_config_kwargs(ARGS, "out", "cuda"), lora=bench.trl_lora_kwargs())
    bench.print_report([ours, trl])
    printed = capsys.readouterr().out
    assert "GPU memory on Some GPU" in printed
    assert "ours / trl episodes/s: 0.75x; peak RSS: 1.11x; peak GPU memory: 0.13x" in printed

    on_cpu = [dict(r, device="cpu") for r in (ours, trl)]
    bench.print_report(on_cpu)
    printed = capsys.readouterr().out
    assert "GPU memory" not in printed and "ours / trl episodes/s: 0.75x; peak RSS: 1.11x\n" in printed


@pytest.fixture(scope="module")
def sweep():
    return _load_script("ppo_sweep")


def test_sweep_reads_overrides_as_json_values(sweep):
    assert sweep.parse_overrides(["seed=1", "adaptive_kl=true", "kl_coef=0.1", "profile=cpu"]) == \
        {"seed": 1, "adaptive_kl": True, "kl_coef": 0.1, "profile": "cpu"}
    with pytest.raises(SystemExit, match="expected NAME=VALUE"):
        sweep.parse_overrides(["warmup_iterations"])


def test_sweep_needs_a_run_with_a_reward_model(sweep, tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebook 01_instruction_data.ipynb first"):
        sweep.main(["--run-dir", str(tmp_path), "--name", "try"])


def test_sweep_refuses_a_name_already_used_with_other_settings(sweep, tmp_path):
    from helpers.files import write_json

    for stage in ("data", "sft", "reward"):
        write_json(tmp_path / stage / "meta.json", {"config": {"data": {"profile": "tiny", "source": "generated"},
                                                               "model": {}}, "adapter": "sft/adapter", "model": "reward/model"})
    write_json(tmp_path / "ppo-sweep" / "try" / "settings.json", {"seed": 5})
    with pytest.raises(SystemExit, match="other settings; pick another --name"):
        sweep.main(["--run-dir", str(tmp_path), "--name", "try", "--set", "seed=1"])

    from helpers.config import PPOStageConfig

    defaults = PPOStageConfig.from_profile("tiny").to_dict()
    for stored, reward in ((defaults, ["--reward", "gold"]), (defaults | {"reward": "gold"}, [])):
        write_json(tmp_path / "ppo-sweep" / "try" / "settings.json", stored)  # the other reward, same settings
        with pytest.raises(SystemExit, match="other settings; pick another --name"):
            sweep.main(["--run-dir", str(tmp_path), "--name", "try", *reward])


def test_the_oracle_reward_is_the_gold_score_on_the_reward_models_scale(sweep, tmp_path):
    from helpers.files import write_jsonl
    from helpers.labeler import gold_score
    from helpers.ppo_roles import gold_reward

    path = tmp_path / "reward" / "sft_samples.jsonl"
    write_jsonl(path, [{"id": "a", "samples": [{"score": 0.0}, {"score": 0.5}]}, {"id": "b", "samples": [{"score": 1.0}]}])
    mean, std = sweep.gold_normalisation(tmp_path)
    assert mean == pytest.approx(0.5) and std == pytest.approx((1 / 6) ** 0.5)  # population std of 0, 0.5, 1

    row = {"id": "gen-test-00000", "split": "ppo", "source": "generated", "task": "describe", "topic": "volcanoes",
           "messages": [{"role": "user", "content": "Describe volcanoes briefly, in lowercase."}],
           "topic_keywords": ["volcan", "lava"], "constraints": [{"kind": "lowercase"}]}
    texts = ["volcanoes pour out glowing lava when pressure builds.", "Volcanoes pour out glowing lava, often.", "ok"]
    expected = [(gold_score(row, text, truncated=False) - mean) / std for text in texts]
    assert expected[0] > expected[2] > expected[1]  # met (1.0), gated but lowercase (0.05), missed it (0.0)
    assert gold_reward(mean, std)([row] * 3, texts).tolist() == pytest.approx(expected)

    write_jsonl(path, [{"id": "a", "samples": [{"score": 0.2}, {"score": 0.2}]}])
    with pytest.raises(SystemExit, match="sft_samples.jsonl: every score is the same.*judged SFT answers"):
        sweep.gold_normalisation(tmp_path)
    write_jsonl(path, [])
    with pytest.raises(SystemExit, match="sft_samples.jsonl: need at least two scores.*judged SFT answers"):
        sweep.gold_normalisation(tmp_path)


def test_reward_sweep_starts_from_the_runs_own_settings(tmp_path):
    from helpers.config import RewardStageConfig
    from helpers.files import write_json

    reward_sweep = _load_script("reward_sweep")
    stored = {"profile": "tiny", "k_samples": 6, "epochs": 1}  # made before swapped_pairs and edit_pairs existed
    for stage, config in (("data", {"data": {"profile": "tiny", "source": "generated"}, "model": {}}),
                          ("sft", {}), ("reward", {"reward": stored})):
        write_json(tmp_path / stage / "meta.json", {"config": config, "adapter": "sft/adapter"})
    with pytest.raises(SystemExit, match="epoch: not a RewardStageConfig field"):
        reward_sweep.main(["--run-dir", str(tmp_path), "--name", "try", "--set", "epoch=3"])
    expected = RewardStageConfig(**stored, swapped_pairs=0, edit_pairs=0).to_dict() | {"epochs": 3}
    write_json(tmp_path / "reward-sweep" / "try" / "settings.json", expected)
    write_json(tmp_path / "reward-sweep" / "try" / "result.json", {"name": "try"})
    assert reward_sweep.main(["--run-dir", str(tmp_path), "--name", "try", "--set", "epochs=3"]) == {"name": "try"}
    with pytest.raises(SystemExit, match="other settings"):  # the profile's defaults are not the run's settings
        reward_sweep.main(["--run-dir", str(tmp_path), "--name", "try", "--set", "epochs=3", "--set", "k_samples=4"])


def test_constraint_kinds_tallies_each_kind_of_single_constraint_rows():
    from helpers.generation import Sample

    kinds = _load_script("constraint_kinds")
    row = {"id": "r", "topic_keywords": ["volcan", "lava"], "constraints": [{"kind": "start_with", "word": "Sure"}]}
    title = {**row, "constraints": [{"kind": "title"}]}
    samples = [Sample("Sure, volcanoes erupt lava from deep below.", 9, False),
               Sample("Volcanoes erupt lava from deep below the", 8, True),  # cut off: gated, not started right
               Sample("<<Lava>> Volcanoes erupt lava from deep below.", 11, False)]
    rates = kinds.pass_rates([row, row, title], samples)
    assert rates["start_with"] == {"met": 0.5, "gates": 0.5, "gold_1": 0.5, "finished": 0.5, "tokens": 8.5}
    assert rates["title"] == {"met": 1.0, "gates": 1.0, "gold_1": 1.0, "finished": 1.0, "tokens": 11.0}
