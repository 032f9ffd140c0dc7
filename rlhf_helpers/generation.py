"""Batched sampling shared by every stage: left-padded prompts, a response length per prompt."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

PURE_SAMPLING = {"do_sample": True, "top_k": 0, "top_p": 1.0}


def left_pad(sequences: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D token tensors into a left-padded batch and its attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s):] = s
        mask[i, width - len(s):] = 1
    return ids, mask


@torch.no_grad()
def generate_responses(model, tokenizer, queries: Sequence[torch.Tensor], lengths: Sequence[int],
                       batch_size: int = 64, **generation_kwargs) -> list[torch.Tensor]:
    """Sample one response per query, response ``i`` cut to ``lengths[i]`` tokens (or just after eos).

    Queries are left-padded so every row's last real token sits next to its first new token.
    Pure sampling (top_k 0, top_p 1) unless ``generation_kwargs`` say otherwise.
    """
    if len(queries) != len(lengths):
        raise ValueError(f"{len(queries)} queries but {len(lengths)} lengths")
    if any(len(q) == 0 for q in queries):
        raise ValueError("a query is empty: give every prompt at least one token")
    n_pos = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    longest = max(len(q) for q in queries) + max(lengths)
    if n_pos is not None and longest > n_pos:
        raise ValueError(f"prompt + response would be {longest} tokens but the model's context is {n_pos}; "
                         "shorten the prompt or lower the maximum length.")
    kwargs = {**PURE_SAMPLING, **generation_kwargs}
    kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    eos = tokenizer.eos_token_id
    for start in range(0, len(queries), batch_size):
        chunk = [q.to("cpu") for q in queries[start:start + batch_size]]
        want = list(lengths[start:start + batch_size])
        ids, mask = left_pad(chunk, tokenizer.pad_token_id)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max(want), min_new_tokens=max(want), **kwargs)
        new = gen[:, ids.shape[1]:].cpu()
        for row, n in zip(new, want):
            resp = row[:n]
            if eos is not None and (resp == eos).any():
                resp = resp[: int((resp == eos).nonzero()[0]) + 1]
            out.append(resp.clone())
    if was_training:
        model.train()
    return out


def sample_texts(model, tokenizer, prompts: Sequence[str], length_sampler: Callable[[], int] | int,
                 seed: int = 0, batch_size: int = 64, **generation_kwargs) -> list[str]:
    """Prompt strings in, sampled continuations (response text only) out; seeded."""
    torch.manual_seed(seed)
    queries = [torch.tensor(tokenizer(p)["input_ids"], dtype=torch.long) for p in prompts]
    lengths = [length_sampler if isinstance(length_sampler, int) else length_sampler() for _ in prompts]
    responses = generate_responses(model, tokenizer, queries, lengths, batch_size=batch_size, **generation_kwargs)
    return tokenizer.batch_decode(responses, skip_special_tokens=True)
