"""Shape-only models: random weights in the shape of a real model, so PPO can be timed where no weights can go.

    .venv/bin/python benchmarks/shapes.py --shape smollm2-135m --out /tmp/standin [--tokenizer-dir DIR]
                                          [--prompts runs/cpu/data/ppo.jsonl] [--device auto|cpu|cuda]

The GPU machine reaches no Hub and takes at most 64 MiB of files, so neither SmolLM2-1.7B nor
Llama 3 8B (nor even the converted 135M model, 514 MB in float32) can travel there. What a PPO
iteration costs depends on the shapes of the matrices, not on their values, as long as every
response has the same length. So :func:`build_shape_run` writes a complete *run folder* from a
config written in code:

* ``model/``: a ``LlamaForCausalLM`` with seeded random weights (``initializer_range`` 0.02), saved
  as bfloat16 safetensors, with the embedded model's tokenizer files copied beside it (they carry
  the chat template). Its ``generation_config.json`` suppresses the tokenizer's special tokens
  (``suppress_tokens``: EOS, BOS and ``<|endoftext|>``, the padding ``load_tokenizer`` picks): random weights sample EOS at random (about 1 in
  49,152 tokens), and a response cut short would cost less than a real one of the same limit, so
  here every response runs to ``max_new_tokens``. The loaded model carries the setting, so our
  rollout and TRL's generate both honour it without a change to either.
* ``sft/adapter/``: a LoRA adapter as notebook 02 saves it (r 16, alpha 32, all linear layers,
  ``CAUSAL_LM``). peft's own initialisation is kept (B = 0, so the adapter starts as the identity):
  its matrices cost the same whatever they hold.
* ``reward/model/``: the layout of ``helpers.reward.save_reward_model``: ``adapter/`` (another
  seeded LoRA adapter), ``score_head.safetensors`` (key ``weight``, shape (1, hidden), float32) and
  ``normalisation.json`` (offset 0, scale 1).
* ``data/``: ``meta.json`` whose ``config.model`` names ``model/`` (4-bit NF4; compute dtype
  ``auto``: bfloat16 on CUDA, float32 on a CPU), and ``ppo.jsonl``: the given prompts, or prompts
  generated as the ``gpu`` profile draws them (all 17 constraint kinds, up to 3 a prompt).

So ``ppo_vs_trl.py --run-dir`` and ``profile_ppo.py --run-dir`` run on it unchanged, and
``helpers.ppo_roles.load_ppo_roles`` loads it like a finished run.

The shapes (``SHAPES``, ``transformers.LlamaConfig`` keyword arguments): ``tiny`` for tests,
``smollm2-135m`` (the embedded model), ``smollm2-1.7b`` (the ``gpu`` profile's model) and
``llama3-8b``. The 8B shape keeps Llama 3 8B's layers (hidden 4096, 32 layers, 8 key-value heads,
untied embeddings) but SmolLM2's vocabulary of 49,152, so that the embedded tokenizer can decode
every sampled id: its embeddings and LM head are 49152 x 4096, 2.6x smaller than Llama 3's
128256 x 4096, and it has 7.4B parameters instead of 8.0B. The time per token of the LM head and
of the softmax over the vocabulary is smaller by the same factor.

Building happens on the device that will run the model (``--device auto``: the GPU when torch
sees one), in bfloat16: the 8B shape is 14.8 GB in memory and on disk, seconds to initialise on a
GPU. It is then loaded again through ``helpers.models.load_model`` as any run's base model is
(NF4 quantisation included). Quantising the model in memory instead (``from_config``, then
replacing its linear layers with bitsandbytes' ``Linear4bit``) would save the disk round trip,
but ``load_ppo_roles`` takes a folder, not a model, and the benchmark would no longer run the
project's own loading path. The suppressed tokens cost one pass over the logits per sampled token
(``aten::isin`` in a profile), which real runs do not pay; it is small next to the LM head.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # this checkout's helpers/, also where the project is not installed
    sys.path.insert(0, str(REPO_ROOT))

#: Llama-architecture configs written in code (``transformers.LlamaConfig`` keyword arguments).
SHAPES: dict[str, dict] = {
    # tests and dry runs: two layers, grouped-query attention, SmolLM2's vocabulary (the tokenizer's)
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 49152, "tie_word_embeddings": True,
             "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}},
    # HuggingFaceTB/SmolLM2-135M-Instruct, the embedded model
    "smollm2-135m": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                     "tie_word_embeddings": True, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}},
    # HuggingFaceTB/SmolLM2-1.7B-Instruct, the gpu profile's model
    "smollm2-1.7b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                     "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 49152,
                     "tie_word_embeddings": True, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 130000.0}},
    # Meta-Llama-3-8B's layers with SmolLM2's vocabulary (49,152, not 128,256): see the module docstring
    "llama3-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 49152,
                  "tie_word_embeddings": False, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
                  "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}},
}
#: What a shape differs in from the model it is named after, for tables.
SHAPE_NOTES = {"llama3-8b": "SmolLM2's vocabulary of 49,152, not Llama 3's 128,256: embeddings and LM head 2.6x smaller"}
#: The adapters' LoRA settings: those of notebook 02's SFT adapter (and of TRL's side in ppo_vs_trl.py).
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear", "bias": "none",
        "task_type": "CAUSAL_LM"}
#: The files of a transformers tokenizer folder worth copying (those absent are skipped).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt", "added_tokens.json")
PROMPTS = 256  # generated PPO prompts: enough for 4 iterations of the gpu profile's batch of 64


def parameter_count(shape: str) -> int:
    """Parameters of a shape, from its config alone (embeddings, attention, MLP, norms; LM head if untied)."""
    c = SHAPES[shape]
    hidden, heads, kv_heads = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    head_dim = hidden // heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim  # q, o; k, v
    layer = attention + 3 * hidden * c["intermediate_size"] + 2 * hidden  # + gate, up, down; two RMSNorms
    embeddings = c["vocab_size"] * hidden * (1 if c["tie_word_embeddings"] else 2)
    return embeddings + c["num_hidden_layers"] * layer + hidden


def describe(shape: str) -> str:
    """One line for a table: "llama3-8b: 7.38B parameters, 32 layers x 4096 (vocab 49,152 ...)"."""
    c = SHAPES[shape]
    note = f" ({SHAPE_NOTES[shape]})" if shape in SHAPE_NOTES else ""
    n = parameter_count(shape)
    size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"
    return f"{shape}: {size} parameters, {c['num_hidden_layers']} layers x {c['hidden_size']}, random weights{note}"


def default_tokenizer_dir() -> Path:
    """The embedded model's folder (it holds the tokenizer files); provisioned (downloaded) if missing."""
    from helpers.config import EMBEDDED_MODEL
    from helpers.models import resolve_model_path

    return Path(resolve_model_path(EMBEDDED_MODEL))


def _save_lora(model, folder: Path, seed: int) -> None:
    """A freshly initialised LoRA adapter on ``model`` saved into ``folder``; ``model`` is left without it."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(**LORA))
    peft_model.save_pretrained(str(folder))
    peft_model.unload()  # takes the LoRA layers out again: the base stays as it was saved


def build_shape_run(shape: str, folder: str | Path, tokenizer_dir: str | Path | None = None,
                    prompts: str | Path | None = None, device: str = "auto", seed: int = 0) -> Path:
    """Write a run folder with a random-weight ``shape`` model, its SFT and reward adapters and PPO prompts.

    ``tokenizer_dir``: a folder with the tokenizer files (default: the embedded model's);
    ``prompts``: a ``ppo.jsonl`` to copy (default: ``PROMPTS`` prompts generated as the gpu profile does).
    Returns ``folder``. See the module docstring for the layout and why responses cannot stop early.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig

    from helpers.dataset import split_file
    from helpers.files import write_json, write_jsonl
    from helpers.models import resolve_device
    from helpers.reward import NORMALISATION_FILE, SCORE_HEAD_FILE

    folder, device = Path(folder), resolve_device(device)
    model_dir, sft_dir, reward_dir, data_dir = (folder / "model", folder / "sft" / "adapter",
                                                folder / "reward" / "model", folder / "data")
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else default_tokenizer_dir()
    model_dir.mkdir(parents=True, exist_ok=True)
    copied = [name for name in TOKENIZER_FILES if (tokenizer_dir / name).exists()]
    if "tokenizer.json" not in copied and "vocab.json" not in copied:
        raise FileNotFoundError(f"{tokenizer_dir} holds no tokenizer (tokenizer.json or vocab.json)")
    for name in copied:
        shutil.copy2(tokenizer_dir / name, model_dir / name)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    config = LlamaConfig(**SHAPES[shape], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id,
                                               suppress_tokens=sorted(tokenizer.all_special_ids))
    model.save_pretrained(str(model_dir))

    _save_lora(model, sft_dir, seed + 1)
    _save_lora(model, reward_dir / "adapter", seed + 2)
    generator = torch.Generator().manual_seed(seed + 3)
    save_file({"weight": torch.randn(1, config.hidden_size, generator=generator) * config.initializer_range},
              str(reward_dir / SCORE_HEAD_FILE))
    write_json(reward_dir / NORMALISATION_FILE, {"offset": 0.0, "scale": 1.0})
    del model

    data_dir.mkdir(parents=True, exist_ok=True)
    if prompts:
        shutil.copy2(prompts, split_file(data_dir, "ppo"))
    else:
        from helpers.config import DataConfig
        from helpers.instructions import build_instruction_rows

        data_cfg = DataConfig.from_profile("gpu")
        write_jsonl(split_file(data_dir, "ppo"), build_instruction_rows(
            {"ppo": PROMPTS}, seed=seed, min_constraints=data_cfg.min_constraints,
            max_constraints=data_cfg.max_constraints, eval_topic_fraction=data_cfg.eval_topic_fraction,
            kinds=data_cfg.constraint_kinds))
    write_json(data_dir / "meta.json", {
        "config": {"model": {"profile": "gpu", "base_model": str(model_dir.resolve()), "load_in_4bit": True,
                             "compute_dtype": "auto", "device": "auto", "trust_remote_code": False}},
        "shape": {"name": shape, "config": SHAPES[shape], "parameters": parameter_count(shape), "weights": "random",
                  "seed": seed, "note": SHAPE_NOTES.get(shape), "tokenizer_from": str(tokenizer_dir),
                  "prompts_from": str(prompts) if prompts else "generated (gpu profile)"}})
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=tuple(SHAPES), required=True)
    parser.add_argument("--out", required=True, help="the run folder to write (created)")
    parser.add_argument("--tokenizer-dir", help="folder with the tokenizer files (default: the embedded model's)")
    parser.add_argument("--prompts", help="a ppo.jsonl to use (default: generated as the gpu profile does)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the random weights are drawn (auto: the GPU when torch sees one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = build_shape_run(args.shape, args.out, args.tokenizer_dir, args.prompts, args.device, args.seed)
    print(json.dumps({"run_dir": str(folder), "shape": describe(args.shape)}))


if __name__ == "__main__":
    main()
