"""Batched sampling shared by every stage: left-padded prompts, a response length per prompt.

Sample what you score
---------------------
Every stage that samples (PPO, GRPO/RLOO, evaluation, comparison pairs, best-of-n, the widgets) later
computes log-probabilities of the sampled tokens from the model's *plain* softmax (divided by the
temperature, nothing else). So sampling must draw from exactly that distribution:

* **EOS is an ordinary token.** A response is sampled up to its drawn length and stops early if the
  model samples EOS (kept as the response's last token, so its probability is scored too). We do *not*
  pass ``min_new_tokens``: it sets the EOS logit to -inf while sampling, so responses would be drawn
  from one distribution and scored under another (the "negative KL" trap of the classic TRL notebook).
  The alternative, masking EOS in the policy's *and* the reference's logits wherever they are scored,
  works too but every scorer (ours, TRL's, the evaluation's KL) would have to repeat the mask; stopping
  at EOS needs nothing anywhere else. The price: a drawn length is a *maximum*; short responses happen
  when the model wants to end (rare here: reviews are long).
* **No hidden logits processors.** ``generate`` gets a fresh ``GenerationConfig`` (pure sampling:
  ``top_k=0``, ``top_p=1``) so defaults stored in a model's ``generation_config.json`` (top-k 50,
  repetition penalty, ...) never leak in.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

PURE_SAMPLING = {"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0}


def left_pad(sequences: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D token tensors into a left-padded batch and its attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s):] = s
        mask[i, width - len(s):] = 1
    return ids, mask


def sampling_config(tokenizer, max_new_tokens: int, **overrides):
    """A fresh ``GenerationConfig``: pure sampling at temperature 1 unless ``overrides`` say otherwise."""
    from transformers import GenerationConfig

    if "min_new_tokens" in overrides or "min_length" in overrides:
        raise ValueError("min_new_tokens/min_length suppress EOS while sampling, so the sampled tokens would not "
                         "come from the distribution that is scored (negative KL). Draw lengths with "
                         "LengthSampler instead: responses stop at EOS or at their drawn length.")
    settings = {**PURE_SAMPLING, **overrides}
    return GenerationConfig(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, **settings)


def cut_response(row: torch.Tensor, length: int, eos_id: int | None) -> torch.Tensor:
    """The first ``length`` sampled tokens, or up to and including the first EOS."""
    resp = row[:length]
    if eos_id is not None and (resp == eos_id).any():
        resp = resp[: int((resp == eos_id).nonzero()[0]) + 1]
    return resp.clone()


@torch.no_grad()
def generate_responses(model, tokenizer, queries: Sequence[torch.Tensor], lengths: Sequence[int],
                       batch_size: int = 64, **generation_kwargs) -> list[torch.Tensor]:
    """Sample one response per query: response ``i`` has at most ``lengths[i]`` tokens and ends early at EOS.

    Queries are left-padded so every row's last real token sits next to its first new token.
    Pure sampling (top_k 0, top_p 1, temperature 1) unless ``generation_kwargs`` say otherwise.
    """
    if len(queries) != len(lengths):
        raise ValueError(f"{len(queries)} queries but {len(lengths)} lengths")
    if any(len(q) == 0 for q in queries):
        raise ValueError("a query is empty: give every prompt at least one token")
    if any(int(n) < 1 for n in lengths):
        raise ValueError("every response length must be at least 1 token")
    n_pos = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    longest = max(len(q) for q in queries) + max(lengths)
    if n_pos is not None and longest > n_pos:
        raise ValueError(f"prompt + response would be {longest} tokens but the model's context is {n_pos}; "
                         "shorten the prompt or lower the maximum length.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    eos = tokenizer.eos_token_id
    for start in range(0, len(queries), batch_size):
        chunk = [q.to("cpu") for q in queries[start:start + batch_size]]
        want = [int(n) for n in lengths[start:start + batch_size]]
        ids, mask = left_pad(chunk, tokenizer.pad_token_id)
        config = sampling_config(tokenizer, max(want), **generation_kwargs)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        new = gen[:, ids.shape[1]:].cpu()
        out.extend(cut_response(row, n, eos) for row, n in zip(new, want))
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
