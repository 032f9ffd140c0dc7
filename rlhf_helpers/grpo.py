"""Step 4b: the modern on-policy methods GRPO and RLOO (TRL) on the same sentiment reward as PPO.

Neither learns a value function: GRPO compares each completion with the mean (and spread) of its group
of completions for the same prompt; RLOO compares it with the mean of the *other* completions.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from .config import Preset, get_preset, set_seed
from .data import load_imdb, make_prompts
from .generation import blank_like, pad_aware_positions
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
    for model in (trainer.model, getattr(trainer, "ref_model", None)):
        if model is None:
            continue
        model = trainer.accelerator.unwrap_model(model)
        pad_aware_positions(model)
        model.generation_config = blank_like(model.generation_config)
    return trainer


Advantages = Callable[[torch.Tensor], torch.Tensor]
_TRAINER_CLASSES: dict[str, type] = {}


def learner_advantage_class(method: str) -> type:
    """TRL 1.16's ``GRPOTrainer`` (``method="grpo"``) or ``RLOOTrainer`` (``"rloo"``) whose advantages come from
    ``trainer.learner_advantages(rewards)``, rewards of shape (prompts, completions per prompt) -> advantages.

    The override is ``_generate_and_score_completions``: TRL samples, scores and computes its own advantages as
    always (and logs every metric); the subclass then recomputes the rewards TRL's baseline saw (captured from
    ``_calculate_rewards``: the weighted sum of the reward functions; for RLOO minus beta x each completion's summed
    log-ratio to the reference, from the log-probabilities TRL computed in the same pass) and replaces the batch's
    ``advantages`` with the learner's. RLOO's ``normalize_advantages`` (off here) is applied after, as TRL does.
    """
    if method not in ("grpo", "rloo"):
        raise ValueError(f"method must be 'grpo' or 'rloo', got {method!r}")
    if method not in _TRAINER_CLASSES:
        from accelerate.utils import gather
        from trl import GRPOTrainer, RLOOTrainer
        from trl.trainer.utils import nanstd

        class LearnerAdvantageTrainer(GRPOTrainer if method == "grpo" else RLOOTrainer):
            learner_advantages: Advantages | None = None  # set on the instance (make_online_trainer)
            _scored: list | None = None

            def _calculate_rewards(self, *args, **kwargs):
                self._rewards_per_func = super()._calculate_rewards(*args, **kwargs)
                return self._rewards_per_func

            def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
                out = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
                if self._scored is not None:  # inside _generate_and_score_completions: old and reference log-probs
                    self._scored.append((model, out[0]))
                return out

            def baseline_rewards(self, output: dict, scored: list) -> torch.Tensor:
                """The rewards TRL's advantages start from (all processes), computed as TRL computes them."""
                per_func = self._rewards_per_func
                rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
                rewards[torch.isnan(per_func).all(dim=1)] = torch.nan
                if method == "rloo":
                    if self.reward_clip_range:
                        rewards = rewards.clamp(min=self.reward_clip_range[0], max=self.reward_clip_range[1])
                    if self.beta != 0.0:
                        old = next(logps for model, logps in scored if model is self.model)
                        ref = next(logps for model, logps in scored if model is self.ref_model)
                        kl = gather(((old - ref) * output["completion_mask"]).sum(-1))
                        rewards = rewards - self.beta * kl
                return rewards

            def _generate_and_score_completions(self, inputs):
                if self.learner_advantages is None:
                    raise ValueError("set trainer.learner_advantages to your advantage function")
                if getattr(self, "multi_objective_aggregation", "sum_then_normalize") != "sum_then_normalize":
                    raise ValueError("your advantages start from the summed rewards: use TRL's default "
                                     "multi_objective_aggregation='sum_then_normalize'")
                self._scored = []
                try:
                    output = super()._generate_and_score_completions(inputs)
                finally:
                    scored, self._scored = self._scored, None
                rewards = self.baseline_rewards(output, scored)
                k = self.num_generations if self.model.training else self.num_generations_eval
                advantages = torch.as_tensor(self.learner_advantages(rewards.view(-1, k).clone()),
                                             dtype=rewards.dtype, device=rewards.device).reshape(-1)
                if advantages.numel() != rewards.numel():
                    raise ValueError(f"your advantage function returned {advantages.numel()} numbers for "
                                     f"{rewards.numel()} rewards: return one advantage per reward, same shape")
                if method == "rloo" and self.normalize_advantages:
                    advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)
                advantages = torch.nan_to_num(advantages, nan=0.0)
                n = len(inputs)
                start = self.accelerator.process_index * n
                output["advantages"] = advantages[start:start + n]
                logged = self._logs["advantages"]  # the completions table shows the advantages that trained
                for _ in range(min(len(logged), advantages.numel())):
                    logged.pop()
                logged.extend(advantages.tolist())
                return output

        LearnerAdvantageTrainer.__name__ = LearnerAdvantageTrainer.__qualname__ = f"Learner{method.upper()}Trainer"
        _TRAINER_CLASSES[method] = LearnerAdvantageTrainer
    return _TRAINER_CLASSES[method]


def make_online_trainer(method: str, model, reward_funcs, args, train_dataset, processing_class,
                        advantages: Advantages | None = None):
    """TRL's GRPOTrainer or RLOOTrainer, made to sample what it scores (:func:`sample_what_you_score`).

    ``advantages(rewards) -> advantages`` (rewards of shape (prompts, completions per prompt)) replaces TRL's own
    computation (:func:`learner_advantage_class`): GRPO's :func:`grpo_advantages`, RLOO's :func:`rloo_advantages`
    reproduce TRL's run exactly."""
    from trl import GRPOTrainer, RLOOTrainer

    if method not in ("grpo", "rloo"):
        raise ValueError(f"method must be 'grpo' or 'rloo', got {method!r}")
    if advantages is None:
        Trainer = GRPOTrainer if method == "grpo" else RLOOTrainer
    else:
        Trainer = learner_advantage_class(method)
    trainer = Trainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                      processing_class=processing_class)
    if advantages is not None:
        trainer.learner_advantages = advantages
    return sample_what_you_score(trainer)


def short_online_run(method: str, policy_path: str | Path, prompts: list[str], reward_funcs, output_dir: str | Path,
                     advantages: Advantages | None = None, steps: int = 2, prompts_per_step: int = 2,
                     num_generations: int = 4, max_completion_length: int = 8, beta: float = 0.1,
                     learning_rate: float = 1.5e-4, preset: Preset | None = None) -> list[dict]:
    """A few GRPO or RLOO steps from ``policy_path`` with TRL's advantages (``advantages=None``) or yours; returns
    TRL's log history, one entry per step. fp32, dropout off, sampled as scored (as :func:`train_online`), nothing
    saved: the trainer's scratch files go to ``output_dir`` (its own folder). The same arguments give the same log,
    so a correct ``advantages`` reproduces TRL's own run to the digit."""
    from datasets import Dataset
    from trl import GRPOConfig, RLOOConfig

    preset = preset or get_preset()
    set_seed(preset.seed)
    tok = load_tokenizer(policy_path)
    tok.padding_side = "left"
    cls = GRPOConfig if method == "grpo" else RLOOConfig
    args = cls(output_dir=str(output_dir), max_steps=steps,
               per_device_train_batch_size=prompts_per_step * num_generations, num_generations=num_generations,
               max_completion_length=max_completion_length, temperature=1.0, top_k=0, top_p=1.0, beta=beta, learning_rate=learning_rate, disable_dropout=True, logging_steps=1,
               save_strategy="no", lr_scheduler_type="constant", disable_tqdm=True, **trainer_defaults(preset))
    trainer = make_online_trainer(method, str(policy_path), reward_funcs, args, Dataset.from_dict({"prompt": prompts}),
                                  tok, advantages=advantages)
    trainer.train()
    return trainer_log(trainer)


def online_with_my_advantages(method: str, my_advantages: Advantages, preset: Preset | None = None,
                              steps: int = 4) -> dict[str, list[dict]]:
    """Notebook 05: ``steps`` GRPO or RLOO steps from the SFT policy on the sentiment reward, with the preset's
    settings, once with TRL's advantages and once with ``my_advantages``; returns both log histories
    (``{"package": ..., "mine": ...}``), the same number for number when your function is right
    (:func:`rlhf_helpers.fillins.check_same_run`). Writes only under its own stage folder."""
    from .models import stage_dir

    preset = preset or get_preset()
    g = preset.grpo
    sft = ensure_sft(preset)
    tok = load_tokenizer(sft)
    prompts = make_prompts(load_imdb(preset)["train"], tok, seed=preset.seed,
                           limit=g.prompts_per_step * steps)["prompt"]
    reward = sentiment_reward_func(sentiment_reward(preset))
    folder = stage_dir(preset, f"{method}_my_advantages")
    return {name: short_online_run(method, sft, prompts, reward, folder / name, advantages=fn, steps=steps,
                                   prompts_per_step=g.prompts_per_step, num_generations=g.num_generations,
                                   max_completion_length=preset.ppo.max_len, beta=g.beta,
                                   learning_rate=g.learning_rate, preset=preset)
            for name, fn in (("package", None), ("mine", my_advantages))}


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
