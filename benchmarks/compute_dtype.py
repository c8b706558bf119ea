"""Which compute dtype should 4-bit NF4 matmuls use on this machine? Prints seconds per generation batch.

    .venv/bin/python benchmarks/compute_dtype.py [--batch 16] [--tokens 48] [--device cpu]

``helpers.models.resolve_compute_dtype`` picks float32 on CPU and bfloat16 on CUDA from
what this script measured (2 CPU cores, 2026-11: float32 about 2x faster than bfloat16).
"""

from __future__ import annotations

import argparse
import time

import torch

from helpers.config import ModelConfig
from helpers.generation import sample_responses
from helpers.models import load_model, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    conversations = [[{"role": "user", "content": f"Describe topic number {i} in a few sentences."}]
                     for i in range(args.batch)]
    dtypes = ["float32", "bfloat16"] + (["float16"] if args.device == "cuda" else [])
    for dtype in dtypes:
        config = ModelConfig.from_profile("cpu", device=args.device, compute_dtype=dtype)
        tokenizer, model = load_tokenizer(config), load_model(config)
        times = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            sample_responses(model, tokenizer, conversations, max_new_tokens=args.tokens, batch_size=args.batch,
                             seed=repeat)
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        print(f"nf4 + {dtype:8s} compute: {min(times):6.2f} s for {args.batch} x {args.tokens} tokens "
              f"(best of {args.repeats})", flush=True)
        del model


if __name__ == "__main__":
    main()
