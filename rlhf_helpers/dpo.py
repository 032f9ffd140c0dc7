"""Step 4a: Direct Preference Optimisation on reward-ranked pairs (TRL ``DPOTrainer``).

DPO skips the reward model and the RL loop: it raises log p(chosen) - log p(rejected) relative to the
frozen SFT reference, with beta setting how far from the reference the policy may move.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .config import Preset, get_preset, set_seed
from .data import load_imdb, make_prompts
from .models import (checkpoint_dir, ensure, last_checkpoint, load_pretrained, load_tokenizer, save_artifact,
                     save_model_artifact, trainer_defaults,
                     tokenizer_fingerprint, trainer_log)
from .reward import build_preference_pairs, sentiment_reward
from .sft import ensure_sft


def ensure_dpo_pairs(preset: Preset | None = None, force: bool = False):
    """DPO's training pairs: more prompts and more samples per prompt than notebook 02's (best vs worst of k)."""
    from datasets import load_from_disk

    preset = preset or get_preset()
    d = preset.dpo

    def build() -> Path:
        policy, tok = load_pretrained(ensure_sft(preset))
        prompts = make_prompts(load_imdb(preset)["train"], tok, seed=preset.seed + 11, limit=d.n_prompts)["prompt"]
        pairs = build_preference_pairs(policy, tok, prompts, sentiment_reward(preset), d.samples_per_prompt,
                                       d.margin, preset.pairs.min_len, preset.pairs.max_len, seed=preset.seed + 11)
        meta = {"settings": d.__dict__, "metrics": {"pairs": len(pairs), "prompts": len(prompts)}}
        return save_artifact(preset, "dpo_pairs", lambda f: pairs.save_to_disk(str(f)), meta)

    return load_from_disk(str(ensure(preset, "dpo_pairs", build, force=force)))


def dpo_stage_name(preset: Preset, beta: float | None) -> str:
    return "dpo" if beta is None or beta == preset.dpo.beta else f"dpo_beta{beta:g}"


def train_dpo(preset: Preset | None = None, beta: float | None = None, max_steps: int | None = None,
              resume: bool = True) -> Path:
    """DPO from the SFT policy (which is also the frozen reference) on the reward-ranked pairs."""
    from trl import DPOConfig, DPOTrainer

    preset = preset or get_preset()
    d = preset.dpo
    beta = d.beta if beta is None else beta
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    stage = dpo_stage_name(preset, beta)
    set_seed(preset.seed)
    pairs = ensure_dpo_pairs(preset).select_columns(["prompt", "chosen", "rejected"])
    if len(pairs) == 0:
        raise ValueError("no DPO pairs passed the margin; lower dpo.margin or raise dpo.n_prompts")
    sft = ensure_sft(preset)
    tok = load_tokenizer(sft)
    ckpts = checkpoint_dir(preset, stage)
    steps = max_steps or d.max_steps
    args = DPOConfig(
        output_dir=str(ckpts), beta=beta, max_steps=steps, per_device_train_batch_size=d.batch_size,
        learning_rate=d.learning_rate, max_length=64, logging_steps=max(1, min(10, steps // 10)),
        save_steps=d.save_steps, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20),
        **trainer_defaults(preset),
    )
    trainer = DPOTrainer(model=str(sft), args=args, train_dataset=pairs, processing_class=tok)
    resume_from = last_checkpoint(ckpts) if resume else None
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - t0
    model = trainer.model

    meta = {"settings": {**d.__dict__, "beta": beta, "max_steps": steps}, "tokenizer": tokenizer_fingerprint(tok),
            "metrics": {"train_seconds": round(seconds, 1), "pairs": len(pairs), "resumed_from": resume_from},
            "log_history": trainer_log(trainer)}
    path = save_model_artifact(preset, stage, model, tok, meta)
    print(f"[dpo] beta={beta:g}: trained {steps} steps in {seconds:.0f}s on {len(pairs)} pairs")
    return path


def ensure_dpo(preset: Preset | None = None, force: bool = False, beta: float | None = None) -> Path:
    """Folder of the DPO policy (for ``beta``; the preset's beta by default)."""
    preset = preset or get_preset()
    return ensure(preset, dpo_stage_name(preset, beta), lambda: train_dpo(preset, beta=beta), force=force)
