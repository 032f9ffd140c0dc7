"""The reward model (notebook 02): a one-output GPT-2, started from the SFT policy and trained with TRL's
``RewardTrainer`` on the rater's comparison pairs (:mod:`rlhf_helpers.pairs`). Notebook 06 uses it as the judge
of the writer -> improver -> judge loop and for best-of-n.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from .config import Preset, get_preset, set_seed
from .models import (checkpoint_dir, ensure, last_checkpoint, load_classifier, load_tokenizer, precision_label,
                     save_model_artifact, tokenizer_fingerprint, trainer_defaults, trainer_log)
from .pairs import ensure_pairs
from .sft import ensure_sft


# --------------------------------------------------------------------------------------------
# 2.4 The reward model (the ``reward_model`` stage)
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def reward_model_scores(model, tokenizer, texts: Sequence[str], max_length: int = 64,
                        batch_size: int = 64) -> torch.Tensor:
    """The reward model's single output for each text."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer([t if t.strip() else " " for t in texts[i:i + batch_size]], return_tensors="pt",
                        padding=True, truncation=True, max_length=max_length).to(device)
        out.append(model(**enc).logits[:, 0].float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def pairwise_accuracy(model, tokenizer, pairs, max_length: int = 64) -> float:
    """Fraction of pairs where the reward model scores ``chosen`` above ``rejected``."""
    chosen = reward_model_scores(model, tokenizer, [p + c for p, c in zip(pairs["prompt"], pairs["chosen"])],
                                 max_length)
    rejected = reward_model_scores(model, tokenizer,
                                   [p + r for p, r in zip(pairs["prompt"], pairs["rejected"])], max_length)
    return (chosen > rejected).float().mean().item()


def train_reward_model(preset: Preset | None = None, resume: bool = True, stage: str = "reward_model") -> Path:
    """A one-output sequence classifier, started from the SFT policy (``reward_model.init``), trained on the pairs
    with TRL and saved as the artifact ``stage`` (another name keeps a variant beside notebook 02's)."""
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    preset = preset or get_preset()
    r = preset.reward_model
    set_seed(preset.seed)
    pairs = ensure_pairs(preset)
    sft_path = ensure_sft(preset)
    tokenizer = load_tokenizer(sft_path)
    if len(pairs["train"]) == 0:
        raise ValueError("no comparison pairs passed the margin; lower pairs.margin or sample more prompts")
    if r.init == "sft":
        model = AutoModelForSequenceClassification.from_pretrained(str(sft_path), num_labels=1, use_safetensors=True)
    elif r.init == "scratch":
        from transformers import AutoConfig

        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(str(sft_path), num_labels=1))
    else:
        raise ValueError(f"reward_model.init must be 'sft' or 'scratch', not {r.init!r}")
    model.config.pad_token_id = tokenizer.pad_token_id
    ckpts = checkpoint_dir(preset, stage)
    args = RewardConfig(
        output_dir=str(ckpts), max_steps=r.max_steps, per_device_train_batch_size=r.batch_size,
        learning_rate=r.learning_rate, max_length=r.max_length, logging_steps=max(1, min(10, r.max_steps // 10)),
        save_steps=r.save_steps, lr_scheduler_type="cosine", warmup_steps=max(1, r.max_steps // 20),
        **trainer_defaults(preset, mixed_precision=True),
    )
    train = pairs["train"].select_columns(["prompt", "chosen", "rejected"])
    if r.train_pairs is not None:
        train = train.shuffle(seed=preset.seed).select(range(min(r.train_pairs, len(train))))
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    print(f"[reward model] precision: {precision_label(mixed_precision=True)}")
    resume_from = last_checkpoint(ckpts) if resume else None
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - t0
    model = trainer.model.eval()
    acc = pairwise_accuracy(model, tokenizer, pairs["test"], r.max_length) if len(pairs["test"]) else float("nan")
    meta = {"settings": r.__dict__, "tokenizer": tokenizer_fingerprint(tokenizer),
            "metrics": {"heldout_pairwise_accuracy": acc, "train_pairs": len(train),
                        "test_pairs": len(pairs["test"]), "train_seconds": round(seconds, 1),
                        "resumed_from": resume_from},
            "log_history": trainer_log(trainer)}

    path = save_model_artifact(preset, stage, model, tokenizer, meta)
    print(f"[reward model] held-out pairwise accuracy {acc:.1%}; trained in {seconds:.0f}s")
    return path


def ensure_reward_model(preset: Preset | None = None, force: bool = False) -> Path:
    preset = preset or get_preset()
    return ensure(preset, "reward_model", lambda: train_reward_model(preset), force=force)


def load_reward_model(path: str | Path):
    """``(model, tokenizer)`` of a trained reward model."""
    return load_classifier(path).eval(), load_tokenizer(path)
