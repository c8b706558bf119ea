"""Which precision is fastest on this machine? Times sampling and a LoRA training step for each CPU path.

    .venv/bin/python benchmarks/compute_dtype.py [--batch 16] [--tokens 48] [--device cpu] [--paths "plain float32" ...]

For each way of holding the base model (NF4 weights with float32 compute, NF4 with bfloat16 compute,
plain bfloat16 weights, plain float32 weights; on CUDA also NF4 with float16) it loads
SmolLM2-135M-Instruct with a fresh LoRA adapter (r 16, all-linear) and prints the seconds to sample ``--batch`` answers of ``--tokens``
tokens and of one forward and backward pass on ``--batch`` x 88 tokens, then the fp32 and bf16
matmul rates and what ``ModelConfig.load_in_4bit="auto"`` chooses here
(``helpers.models.resolve_precision``). Measured 2026-12-01 on 2 cores of an AMD EPYC with
AVX512-BF16: NF4/float32 10.1 s and 12.4 s, plain bfloat16 7.8 s and 5.3 s; on a CPU without native
bfloat16 plain bfloat16 was 2.4x slower to sample and 18x slower to train than NF4/float32, and on
2026-12-03 (2-core AMD EPYC without AVX512, ``OMP_NUM_THREADS=1``, ``--paths "nf4 + float32" "plain
float32"``) plain float32 took 12.4 s and 14.2 s against NF4/float32's 16.6 s and 16.9 s.
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import LoraConfig, get_peft_model

from helpers.config import ModelConfig
from helpers.generation import sample_responses
from helpers.models import load_model, load_tokenizer, matmul_rates, resolve_precision

PATHS = {"nf4 + float32": {"load_in_4bit": True, "compute_dtype": "float32"},
         "nf4 + bfloat16": {"load_in_4bit": True, "compute_dtype": "bfloat16"},
         "plain bfloat16": {"load_in_4bit": False, "compute_dtype": "bfloat16"},
         "plain float32": {"load_in_4bit": False, "compute_dtype": "float32"}}


def time_path(config: ModelConfig, conversations: list, tokens: int, device: str) -> tuple[float, float]:
    """(seconds to sample, seconds for one LoRA forward + backward) with ``config``'s precision."""
    tokenizer, model = load_tokenizer(config), load_model(config)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    start = time.perf_counter()
    sample_responses(model, tokenizer, conversations, max_new_tokens=tokens, batch_size=len(conversations), seed=0)
    sampling = time.perf_counter() - start
    ids = torch.randint(0, 40000, (len(conversations), 88), device=model.device)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()  # warm-up
    start = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return sampling, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--paths", nargs="+", metavar="PATH", help=f"only these ({', '.join(PATHS)}); on a CPU "
                        "without native bfloat16 the bfloat16 paths take minutes")
    args = parser.parse_args()
    conversations = [[{"role": "user", "content": f"Describe topic number {i} in a few sentences."}]
                     for i in range(args.batch)]
    paths = dict(PATHS, **({"nf4 + float16": {"load_in_4bit": True, "compute_dtype": "float16"}}
                           if args.device == "cuda" else {}))
    unknown = set(args.paths or ()) - set(paths)
    if unknown:
        parser.error(f"--paths: unknown {sorted(unknown)}; choose from {sorted(paths)}")
    for name, settings in paths.items():
        if args.paths and name not in args.paths:
            continue
        config = ModelConfig.from_profile("cpu", device=args.device, **settings)
        sampling, training = time_path(config, conversations, args.tokens, args.device)
        print(f"{name:15s}: sample {args.batch} x {args.tokens} tokens {sampling:6.2f} s; "
              f"LoRA forward + backward on {args.batch} x 88 tokens {training:6.2f} s", flush=True)
    rates = matmul_rates()
    print(f"matmul: {rates['float32']:.0f} GFLOP/s float32, {rates['bfloat16']:.0f} GFLOP/s bfloat16")
    print("auto chooses:", resolve_precision(ModelConfig.from_profile("cpu", device=args.device)).describe())


if __name__ == "__main__":
    main()
