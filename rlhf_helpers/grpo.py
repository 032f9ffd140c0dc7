"""Step 4b: the modern on-policy methods GRPO and RLOO (TRL) on the same sentiment reward as PPO.

Neither learns a value function: GRPO compares each completion with the mean (and spread) of its group
of completions for the same prompt; RLOO compares it with the mean of the *other* completions.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .config import Preset, get_preset, set_seed
from .data import load_imdb, make_prompts
from .generation import pad_aware_positions
from .models import (checkpoint_dir, ensure, last_checkpoint, load_tokenizer, save_model_artifact,
                     trainer_defaults,
                     tokenizer_fingerprint,
                     trainer_log)
from .reward import SentimentReward, sentiment_reward
from .sft import ensure_sft


def grpo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """GRPO's advantages for rewards of shape (prompts, completions per prompt): each reward minus its group's mean,
    divided by the group's sample standard deviation (n - 1) + 1e-4, as TRL 1.16's ``GRPOTrainer`` computes them
    (``scale_rewards="group"``)."""
    from trl.trainer.utils import nanstd

    mean = torch.nanmean(rewards, dim=1).repeat_interleave(rewards.shape[1], dim=0)
    std = nanstd(rewards, dim=1).repeat_interleave(rewards.shape[1], dim=0)
    return ((rewards.reshape(-1) - mean) / (std + 1e-4)).view_as(rewards)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO's advantages for rewards of shape (prompts, completions per prompt): each reward minus the mean of the
    *other* completions' rewards for the same prompt (its leave-one-out baseline), as TRL 1.16's ``RLOOTrainer``."""
    k = rewards.shape[1]
    baselines = (torch.nansum(rewards, dim=1, keepdim=True) - rewards) / (k - 1)
    return (rewards.reshape(-1) - baselines.reshape(-1)).view_as(rewards)


def sentiment_reward_func(reward: SentimentReward):
    """Wrap ``SentimentReward`` as a TRL reward *function* scoring prompt + completion.

    (Handing TRL the classifier itself would make it read logit 0, which is NEGATIVE for IMDB classifiers.)
    """

    def positive_sentiment(prompts, completions, **kwargs) -> list[float]:
        texts = [p + c for p, c in zip(prompts, completions, strict=True)]
        return reward(texts).tolist()

    return positive_sentiment


def _online_config(method: str, preset: Preset, output_dir: Path, max_steps: int):
    from trl import GRPOConfig, RLOOConfig

    g = preset.grpo
    cls = GRPOConfig if method == "grpo" else RLOOConfig
    return cls(
        output_dir=str(output_dir), max_steps=max_steps,
        per_device_train_batch_size=g.prompts_per_step * g.num_generations, num_generations=g.num_generations,
        max_completion_length=preset.ppo.max_len,  # no min_new_tokens: sample what you score (generation.py)
        temperature=1.0, top_k=0, top_p=1.0, beta=g.beta, learning_rate=g.learning_rate,
        disable_dropout=True,  # sampling and scoring must see one network, not two random dropout masks
        logging_steps=1, save_steps=g.save_steps, lr_scheduler_type="constant", disable_tqdm=False,
        **trainer_defaults(preset),  # fp32 on every device: TRL samples and scores at one precision
    )


def sample_what_you_score(trainer):
    """Make a TRL GRPO/RLOO trainer score exactly the distribution it samples from (returns the trainer).

    TRL left-pads prompts; ``generate`` places each prompt's first real token at position 0, but TRL's
    scorer (``_get_per_token_logps_and_entropies``) passes no position ids, so a GPT-2 would score every
    padded row at positions shifted by its pad count. :func:`~rlhf_helpers.generation.pad_aware_positions`
    gives the policy and the reference a hook that derives them from the attention mask. The models'
    stored generation configs are emptied, so nothing saved with a model (``min_new_tokens``, ``top_k``, a
    repetition penalty) fills the fields TRL's own config leaves unset. Dropout is off through the config."""
    from transformers import GenerationConfig

    for model in (trainer.model, getattr(trainer, "ref_model", None)):
        if model is None:
            continue
        model = trainer.accelerator.unwrap_model(model)
        pad_aware_positions(model)
        stored = model.generation_config
        model.generation_config = GenerationConfig(pad_token_id=stored.pad_token_id, bos_token_id=stored.bos_token_id,
                                                   eos_token_id=stored.eos_token_id)
    return trainer


def make_online_trainer(method: str, model, reward_funcs, args, train_dataset, processing_class):
    """TRL's GRPOTrainer or RLOOTrainer, made to sample what it scores (:func:`sample_what_you_score`)."""
    from trl import GRPOTrainer, RLOOTrainer

    if method not in ("grpo", "rloo"):
        raise ValueError(f"method must be 'grpo' or 'rloo', got {method!r}")
    Trainer = GRPOTrainer if method == "grpo" else RLOOTrainer
    return sample_what_you_score(Trainer(model=model, reward_funcs=reward_funcs, args=args,
                                         train_dataset=train_dataset, processing_class=processing_class))


def train_online(method: str, preset: Preset | None = None, max_steps: int | None = None,
                 resume: bool = True) -> Path:
    """Train the SFT policy with TRL's GRPO or RLOO trainer on the sentiment reward; save as an artifact."""
    from datasets import Dataset

    if method not in ("grpo", "rloo"):
        raise ValueError(f"method must be 'grpo' or 'rloo', got {method!r}")
    preset = preset or get_preset()
    set_seed(preset.seed)
    sft = ensure_sft(preset)
    tok = load_tokenizer(sft)
    tok.padding_side = "left"
    prompts = make_prompts(load_imdb(preset)["train"], tok, seed=preset.seed)["prompt"]
    train = Dataset.from_dict({"prompt": prompts})
    steps = max_steps or preset.grpo.max_steps
    ckpts = checkpoint_dir(preset, method)
    args = _online_config(method, preset, ckpts, steps)
    trainer = make_online_trainer(method, str(sft), sentiment_reward_func(sentiment_reward(preset)), args, train, tok)
    resume_from = last_checkpoint(ckpts) if resume else None
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - t0
    model = trainer.model
    tok.padding_side = "right"

    episodes = steps * args.per_device_train_batch_size
    meta = {"settings": {**preset.grpo.__dict__, "max_steps": steps, "method": method},
            "tokenizer": tokenizer_fingerprint(tok),
            "metrics": {"train_seconds": round(seconds, 1), "episodes": episodes,
                        "episodes_per_second": episodes / max(seconds, 1e-9), "resumed_from": resume_from},
            "log_history": trainer_log(trainer)}
    path = save_model_artifact(preset, method, model, tok, meta)
    print(f"[{method}] {steps} steps ({episodes} episodes) in {seconds:.0f}s")
    return path


def ensure_grpo(preset: Preset | None = None, force: bool = False) -> Path:
    preset = preset or get_preset()
    return ensure(preset, "grpo", lambda: train_online("grpo", preset), force=force)


def ensure_rloo(preset: Preset | None = None, force: bool = False) -> Path:
    preset = preset or get_preset()
    return ensure(preset, "rloo", lambda: train_online("rloo", preset), force=force)
