"""The GPU benchmark tooling (benchmarks/shapes.py, profile_ppo.py, gpu_check.py) on the CPU at tiny sizes.

None of it needs a finished run: the random-weight ``tiny`` shape stands in for one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.runs import REPO_ROOT

BENCH_DIR = REPO_ROOT / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """The benchmark scripts as modules (they import each other from their own folder)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCH_DIR))
        import gpu_check
        import ppo_vs_trl
        import profile_ppo
        import shapes

        yield {"shapes": shapes, "profile_ppo": profile_ppo, "gpu_check": gpu_check, "ppo_vs_trl": ppo_vs_trl}


@pytest.fixture(scope="module")
def tiny_shape_run(bench, tmp_path_factory):
    return bench["shapes"].build_shape_run("tiny", tmp_path_factory.mktemp("shape") / "tiny", device="cpu")


def test_shape_configs_count_the_real_models_parameters(bench):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shapes = bench["shapes"]
    for name, config in shapes.SHAPES.items():  # the analytic count against a model built on the meta device
        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(**config))
        assert shapes.parameter_count(name) == sum(p.numel() for p in model.parameters()), name
    # SmolLM2-135M and -1.7B as published; the 8B shape is Llama 3 8B with a 49,152-token vocabulary
    assert shapes.parameter_count("smollm2-135m") == 134_515_008
    assert shapes.parameter_count("smollm2-1.7b") == 1_711_376_384
    lm_heads = 2 * (128_256 - 49_152) * 4096  # Llama 3's untied embeddings and LM head at its own vocabulary
    assert shapes.parameter_count("llama3-8b") + lm_heads == 8_030_261_248
    assert "2.6x" in shapes.describe("llama3-8b") and round(128_256 / 49_152, 1) == 2.6


def test_profile_settings_are_the_benchmark_and_gpu_profile_ones(bench):
    ppo_config = bench["profile_ppo"].ppo_config
    benchmark = ppo_config("benchmark")
    assert (benchmark.batch_size, benchmark.minibatch_size, benchmark.ppo_epochs, benchmark.max_new_tokens,
            benchmark.kl_coef) == (16, 8, 2, 48, 0.05)
    gpu = ppo_config("gpu")
    assert (gpu.batch_size, gpu.minibatch_size, gpu.ppo_epochs, gpu.max_new_tokens, gpu.trainable_layers) == \
        (64, 16, 4, 128, 0)
    small = ppo_config("gpu", batch_size=16, minibatches=4, response_length=4)
    assert (small.batch_size, small.minibatch_size, small.max_new_tokens, small.ppo_epochs) == (16, 4, 4, 4)
    assert gpu.max_approx_kl == 0 and gpu.save_every > gpu.iterations  # full cost, no checkpoint in a measurement


def test_trl_install_gives_up_after_its_timeout(bench, monkeypatch, tmp_path):
    ppo_vs_trl = bench["ppo_vs_trl"]
    monkeypatch.setattr(ppo_vs_trl, "TRL_DIR", tmp_path / "trl")

    def no_index(cmd, **kwargs):
        assert kwargs["timeout"] == 5 and "--retries" in cmd
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(ppo_vs_trl.subprocess, "run", no_index)
    with pytest.raises(SystemExit, match="within 5 s"):
        ppo_vs_trl.ensure_trl(timeout=5)


def test_gpu_check_uses_a_run_only_where_its_base_model_is_here(bench, tmp_path, monkeypatch):
    from helpers.config import EMBEDDED_MODEL

    run_has_model = bench["gpu_check"].run_has_model
    run = tmp_path / "run"
    for folder in ("sft/adapter", "reward/model", "data"):
        (run / folder).mkdir(parents=True)
    meta = run / "data" / "meta.json"
    meta.write_text(json.dumps({"config": {"model": {"base_model": EMBEDDED_MODEL}}}))
    monkeypatch.setenv("RLHF_WORKBOOK_CACHE", str(tmp_path / "cache"))
    usable, why = run_has_model(run)
    assert not usable and "is not converted here" in why  # the GPU machine: the 514 MB model did not travel
    converted = tmp_path / "cache" / "models" / EMBEDDED_MODEL.split(":", 1)[1]
    converted.mkdir(parents=True)
    (converted / "provenance.json").write_text("{}")
    assert run_has_model(run) == (True, "")
    meta.write_text(json.dumps({"config": {"model": {"base_model": "HuggingFaceTB/SmolLM2-1.7B-Instruct"}}}))
    assert not run_has_model(run)[0]  # a Hub id: nothing is downloaded


def test_gpu_check_plans_a_standin_and_retries_the_8b_shape_smaller(bench, tmp_path, monkeypatch):
    """The GPU machine's case without running anything: no base model, no TRL, the 8B shape out of memory."""
    from argparse import Namespace

    from helpers.config import EMBEDDED_MODEL

    gpu_check, ppo_vs_trl = bench["gpu_check"], bench["ppo_vs_trl"]
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "data" / "meta.json").write_text(json.dumps({"config": {"model": {"base_model": EMBEDDED_MODEL}}}))
    (run / "data" / "ppo.jsonl").write_text("")
    commands = {}

    def fake_run(checker, step):
        commands[step.name] = step.argv
        oom = step.name == "shape_llama3-8b"
        entry = {"status": "error", "output_tail": "torch.OutOfMemoryError: CUDA out of memory"} if oom else \
            {"status": "ok"}
        checker.report["steps"][step.name] = entry
        return entry

    def no_index(timeout):
        raise SystemExit("pip could not install trl==0.29.1 within 90 s")

    monkeypatch.setattr(gpu_check.Checker, "run", fake_run)
    monkeypatch.setattr(ppo_vs_trl, "trl_installed", lambda: False)
    monkeypatch.setattr(ppo_vs_trl, "ensure_trl", no_index)
    args = Namespace(run_dir=str(run), tokenizer_dir="tok", out=str(tmp_path / "gpu_check.json"), device="auto",
                     budget=470, dry_run=False)
    checker = gpu_check.Checker(args, tmp_path / "work")
    gpu_check.run_steps(checker)

    def has(name, *options):
        argv = " ".join(commands[name])
        return all(option in argv for option in options)

    assert has("standin", "--shape smollm2-135m", f"--prompts {run}/data/ppo.jsonl", "--tokenizer-dir tok")
    assert has("ppo_vs_trl_ours", "--which ours", " ".join(gpu_check.BENCHMARK), f"--run-dir {tmp_path}/work/standin")
    assert checker.report["steps"]["ppo_vs_trl_trl"]["status"] == "skipped"
    assert "within 90 s" in checker.report["steps"]["ppo_vs_trl_trl"]["reason"]
    assert has("ppo_gpu_settings", "--settings gpu", "--trainable-layers 0", "--no-profile")
    assert has("profile", "--settings benchmark") and not has("profile", "--no-profile")
    assert has("shape_llama3-8b-small", "--shape llama3-8b", "--batch-size 16 --minibatches 4", "--device auto")
    assert list(commands)[-3:] == ["shape_smollm2-1.7b", "shape_llama3-8b", "shape_llama3-8b-small"]


@pytest.mark.model
def test_shape_run_loads_as_ppo_roles_and_responses_run_to_the_limit(bench, tiny_shape_run):
    from safetensors.torch import load_file

    from helpers.config import ModelConfig, PPOStageConfig
    from helpers.dataset import load_split
    from helpers.models import load_tokenizer
    from helpers.ppo import rollout
    from helpers.ppo_roles import load_ppo_roles

    reward_dir = tiny_shape_run / "reward" / "model"
    hidden = bench["shapes"].SHAPES["tiny"]["hidden_size"]
    assert load_file(str(reward_dir / "score_head.safetensors"))["weight"].shape == (1, hidden)
    assert json.loads((reward_dir / "normalisation.json").read_text()) == {"offset": 0.0, "scale": 1.0}
    for adapter in (tiny_shape_run / "sft" / "adapter", reward_dir / "adapter"):
        config = json.loads((adapter / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"], config["task_type"]) == (16, 32, "CAUSAL_LM")

    meta = json.loads((tiny_shape_run / "data" / "meta.json").read_text())
    model_cfg = ModelConfig(**{**meta["config"]["model"], "device": "cpu"})
    tokenizer = load_tokenizer(model_cfg)
    roles = load_ppo_roles(model_cfg, tiny_shape_run / "sft" / "adapter", reward_dir, tokenizer.pad_token_id)
    assert {"policy", "sft", "value", "reward"} <= set(roles.model.peft_config)
    assert tokenizer.eos_token_id in roles.model.generation_config.suppress_tokens
    assert tokenizer.pad_token_id in roles.model.generation_config.suppress_tokens
    cfg = PPOStageConfig.from_profile("tiny", max_new_tokens=12)
    batch = rollout(roles, tokenizer, load_split(tiny_shape_run / "data", "ppo")[:4], cfg, seed=0)
    assert batch.response_mask.sum(-1).tolist() == [12] * 4 and not batch.has_eos.any()


@pytest.mark.model
def test_profile_ppo_splits_the_iteration_into_phases_and_operators(bench, tiny_shape_run):
    profile_ppo = bench["profile_ppo"]
    cfg = profile_ppo.ppo_config("benchmark", batch_size=2, minibatches=1, response_length=4, ppo_epochs=1)
    result = profile_ppo.measure(tiny_shape_run, cfg, device="cpu", profile=True)
    phases = result["phase_seconds"]
    measured = phases["rollout"] + phases["score"] + phases["update"]
    assert 0.5 * result["iteration_seconds"] < measured <= 1.01 * result["iteration_seconds"]
    assert sum(result["phase_share"].values()) == pytest.approx(1.0, abs=0.01)
    assert result["response_length_mean"] == 4 and result["eos_rate"] == 0
    operators = result["top_operators"]
    assert 0 < len(operators) <= profile_ppo.TOP_OPERATORS and operators[0]["self_cpu_seconds"] > 0
    assert not any(op["name"].startswith("ProfilerStep") for op in operators)
    assert result["weights"] == "random" and result["shape"]["name"] == "tiny"


@pytest.mark.model
def test_gpu_check_dry_run_runs_every_step(bench, tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = json.loads(out.read_text())["steps"]
    expected = ["environment", "standin", "ppo_vs_trl_ours", "ppo_vs_trl_trl", "ppo_gpu_settings", "profile",
                "shape_smollm2-1.7b", "shape_llama3-8b"]
    assert list(steps) == expected
    trl_absent = not bench["ppo_vs_trl"].trl_installed()  # a dry run installs nothing
    for name, entry in steps.items():
        if name == "ppo_vs_trl_trl" and trl_absent:
            assert entry["status"] == "skipped" and "installs nothing" in entry["reason"]
            continue
        assert entry["status"] == "ok", (name, entry)
        assert entry["result"], name
    assert steps["profile"]["result"]["top_operators"]
    assert steps["shape_llama3-8b"]["result"]["response_length_mean"] == 4
    assert "| shape_llama3-8b | ok |" in proc.stdout and out.with_suffix(".log").exists()
