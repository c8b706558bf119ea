"""Sampling responses from a chat model: chat template, left padding, EOS handling.

Prompts are conversations (``[{"role": "user", "content": ...}]``) rendered with
the tokenizer's chat template and a generation prompt for the assistant turn.
Batches are left-padded so every prompt ends at the same position and new tokens
are appended on the right (KV-cache generation). A response is cut after the first
EOS; one that reaches ``max_new_tokens`` without EOS is marked ``truncated`` -- the
simulated labeler treats such answers as cut off.

Sampling is seeded per batch (``seed + batch index``), so a resumed run draws the
same responses as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch


@dataclass(frozen=True)
class Sample:
    """One sampled response."""

    text: str
    n_tokens: int  # response tokens, EOS included when emitted
    truncated: bool  # True: hit max_new_tokens without emitting EOS


def render_prompts(tokenizer, conversations: Sequence[list[dict]]) -> list[str]:
    """Each conversation rendered with the chat template, ending with the assistant's turn opener."""
    return [tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in conversations]


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def sample_responses(
    model,
    tokenizer,
    conversations: Sequence[list[dict]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    progress=None,
) -> list[Sample]:
    """One sampled response per conversation, in order.

    ``progress``: optional callable taking the number of conversations finished in a batch.
    """
    device = next(model.parameters()).device
    eos_id = tokenizer.eos_token_id
    samples: list[Sample] = []
    for index, batch in enumerate(_batches(list(conversations), batch_size)):
        encoded = tokenizer(render_prompts(tokenizer, batch), return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
        torch.manual_seed(seed + index)
        output = model.generate(
            **encoded,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos_id,
        )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]  # (batch, <= max_new_tokens)
        for row in new_tokens.tolist():
            if eos_id in row:
                row = row[: row.index(eos_id) + 1]
                truncated = False
            else:
                truncated = True
            text = tokenizer.decode(row, skip_special_tokens=True).strip()
            samples.append(Sample(text=text, n_tokens=len(row), truncated=truncated))
        if progress is not None:
            progress(len(batch))
    return samples
