"""Synthetic comparisons (notebook 02): sample k answers per prompt, let the rater score them, keep
(prompt, best, worst) when the scores differ by a margin. The reward model (:mod:`rlhf_helpers.reward_model`)
learns from these pairs; DPO (04) trains on pairs built the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .config import Preset, get_preset
from .data import LengthSampler, load_imdb, make_prompts
from .models import ensure, load_pretrained, save_artifact
from .rater import SentimentReward, sentiment_reward
from .sft import ensure_sft


# --------------------------------------------------------------------------------------------
# 2.3 Synthetic comparisons (the ``pairs`` stage)
# --------------------------------------------------------------------------------------------
def rank_pairs(prompts: Sequence[str], candidates: Sequence[Sequence[str]], scores: Sequence[Sequence[float]],
               margin: float = 0.0):
    """From k scored candidates per prompt keep (prompt, best, worst) when best - worst >= margin."""
    from datasets import Dataset

    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    rows = {"prompt": [], "chosen": [], "rejected": [], "chosen_score": [], "rejected_score": []}
    for prompt, cands, sc in zip(prompts, candidates, scores, strict=True):
        if len(cands) < 2:
            raise ValueError("need at least two candidates per prompt to make a pair")
        best, worst = int(np.argmax(sc)), int(np.argmin(sc))
        if sc[best] - sc[worst] >= margin and best != worst:
            rows["prompt"].append(prompt)
            rows["chosen"].append(cands[best])
            rows["rejected"].append(cands[worst])
            rows["chosen_score"].append(float(sc[best]))
            rows["rejected_score"].append(float(sc[worst]))
    return Dataset.from_dict(rows)


def build_preference_pairs(policy, tokenizer, prompts: Sequence[str], reward: SentimentReward,
                           samples_per_prompt: int = 2, margin: float = 1.0, min_len: int = 8,
                           max_len: int = 20, seed: int = 0):
    """Sample k responses per prompt, score prompt + response, keep pairs whose scores differ by ``margin``.

    Returns a ``datasets.Dataset`` in TRL's explicit-prompt preference format
    (``prompt``, ``chosen``, ``rejected``) plus both scores.
    """
    if samples_per_prompt < 2:
        raise ValueError("samples_per_prompt must be at least 2")
    cands, sc = sample_candidates(policy, tokenizer, prompts, reward, samples_per_prompt, min_len, max_len, seed)
    pairs = rank_pairs(prompts, cands, sc, margin=margin)
    keep = np.flatnonzero(token_boundary_ok(tokenizer, pairs))
    return pairs if len(keep) == len(pairs) else pairs.select(keep)


def require_pairs(pairs, settings: str) -> None:
    """Stop with the fix named when no pair passed the margin (an empty dataset cannot even be saved)."""
    if len(pairs) == 0:
        raise ValueError(f"no comparison pairs passed the margin: lower {settings}.margin or raise "
                         f"{settings}.n_prompts (a barely trained classifier scores every sample alike)")


def token_boundary_ok(tokenizer, pairs) -> np.ndarray:
    """Per pair: do the prompt's tokens stay a prefix of prompt + chosen and of prompt + rejected?

    A response sampled token by token can start inside the prompt's last word ("Despite the acclaim" +
    "es ..."); written back as text and tokenized again, the boundary token merges ("acclaimes"), so a
    trainer that splits prompt and completion by tokens (TRL's DPO and reward trainers) would train on a
    context the policy never saw (TRL warns "The tokenized prompt is not a prefix ..."). The few such
    pairs (2-3 % here) are dropped instead.
    """
    if len(pairs) == 0:
        return np.ones(0, dtype=bool)
    prompt_ids = tokenizer(list(pairs["prompt"]))["input_ids"]
    ok = np.ones(len(prompt_ids), dtype=bool)
    for key in ("chosen", "rejected"):
        full_ids = tokenizer([p + c for p, c in zip(pairs["prompt"], pairs[key])])["input_ids"]
        ok &= np.array([f[:len(q)] == q for q, f in zip(prompt_ids, full_ids)], dtype=bool)
    return ok


def sample_candidates(policy, tokenizer, prompts: Sequence[str], reward: SentimentReward, samples_per_prompt: int = 2,
                      min_len: int = 8, max_len: int = 20, seed: int = 0) -> tuple[list[list[str]], list[list[float]]]:
    """k sampled responses per prompt and the reward of each prompt + response: the raw material of pairs."""
    from .generation import sample_texts

    sampler = LengthSampler(min_len, max_len, seed=seed)
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    responses = sample_texts(policy, tokenizer, repeated, sampler, seed=seed)
    scores = reward([p + r for p, r in zip(repeated, responses)]).tolist()
    k = samples_per_prompt
    cands = [responses[i * k:(i + 1) * k] for i in range(len(prompts))]
    sc = [scores[i * k:(i + 1) * k] for i in range(len(prompts))]
    return cands, sc


def ensure_pairs(preset: Preset | None = None, force: bool = False):
    """Train and held-out comparison pairs (a ``DatasetDict``), saved under ``<preset>/pairs``."""
    from datasets import DatasetDict, load_from_disk

    preset = preset or get_preset()

    def build() -> Path:
        p = preset.pairs
        policy, tok = load_pretrained(ensure_sft(preset))
        reward = sentiment_reward(preset)
        imdb = load_imdb(preset)
        n_test = max(8, p.n_prompts // 4)
        parts = {}
        for split, n, seed in (("train", p.n_prompts, preset.seed), ("test", n_test, preset.seed + 1)):
            prompts = make_prompts(imdb[split], tok, seed=seed, limit=n)["prompt"]
            parts[split] = build_preference_pairs(policy, tok, prompts, reward, p.samples_per_prompt, p.margin,
                                                  p.min_len, p.max_len, seed=seed)
            require_pairs(parts[split], "preset.pairs")
        pairs = DatasetDict(parts)
        meta = {"settings": p.__dict__, "metrics": {k: len(v) for k, v in pairs.items()}}
        return save_artifact(preset, "pairs", lambda folder: pairs.save_to_disk(str(folder)), meta)

    return load_from_disk(str(ensure(preset, "pairs", build, force=force)))
