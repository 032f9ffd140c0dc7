"""Step 3 of the recipe: our own classic PPO with a value head, GAE, clipping and an adaptive KL
penalty to a frozen reference copy (TRL 1.x no longer ships one).

The small pure functions (``logprobs_from_logits``, ``gae_advantages``, ``whiten``,
``clipped_policy_loss``, ``clipped_value_loss``, ``AdaptiveKLController``) are each one idea from the
paper and each is tested on its own; ``PPOTrainer.step`` strings them together.
Built on ``accelerate``: ``accelerate launch --num_processes N`` runs the same code data-parallel.
"""
from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .generation import generate_responses, left_pad


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------
@dataclass
class PPOConfig:
    """Every knob of classic PPO for language models.

    The PPO constants follow classic TRL's ``PPOConfig`` (TRL <= 0.11, itself modelled on Ziegler et al.,
    2019): clip 0.2, value clip 0.2, value weight 0.1, gamma 1, lambda 0.95, KL 0.2 adapted toward 6 nats over a
    horizon of 10,000, 4 epochs. Where this implementation differs from classic TRL and from OpenAI's
    lm-human-preferences (the preset's tuned settings, ``config.PPOSettings``, differ again and say why):

    * **Sampling** (both differ): responses are drawn from the plain softmax at ``temperature`` with EOS
      allowed and scored with the *same* temperature; no ``min_length``/top-k/top-p ever (see
      ``generation.py``). TRL 0.11 let users pass ``min_length`` (the negative-KL trap);
      lm-human-preferences sampled a fixed 24 tokens.
    * **Optimizer**: AdamW with ``weight_decay=0`` (TRL: Adam, no decay; lm-h-p: Adam). Decay would pull
      weights toward 0, not toward the reference, and the KL term would not see it.
    * **Learning rate**: constant (TRL: constant; lm-h-p: linear decay to 0).
    * **Gradient clipping** at ``max_grad_norm`` (TRL: off by default; lm-h-p: none).
    * **Advantages** whitened per batch over real tokens (both do this); rewards are *not* whitened
      unless ``reward_norm`` (lm-h-p normalises the reward model once on SFT samples: mean 0, std 1;
      TRL: no).
    * **Value head**: a linear layer on the last hidden state sharing the policy's body (as TRL), started
      at zero (as lm-h-p; TRL starts it random).
    * **Dropout off** in the policy and the reference (lm-h-p has none), so the first ratio of every batch
      is exactly 1. Classic TRL's ``batched_forward_pass`` called ``model.eval()``, so it *scored* without
      dropout, while after ``train_minibatch``'s ``model.train()`` it *sampled* the next rollouts with dropout
      on: one more way of sampling from one distribution and scoring under another.
    * **Adam's epsilon** 1e-5 (as lm-h-p and CleanRL), where classic TRL built ``Adam`` with torch's default
      1e-8.
    * **No ratio threshold**: classic TRL skipped a minibatch whose mean ratio exceeded ``ratio_threshold``
      (10); here clipping alone bounds the update, and the step statistics (clipfrac, approx_kl) show it.
    * **Batch sizes**: 64 rollouts per step in minibatches of 16 by default (classic TRL's defaults were larger
      batches, 256 with minibatches of 1 in its ``ppo_config.py``; the preset overrides both anyway).
    * **KL**: the per-token penalty is the sampled log-ratio (k1, as both); ``approx_kl`` is
      ``mean(0.5 * log_ratio**2)`` (as TRL 0.11). The adaptive controller is Ziegler et al.'s (as both).
    """

    learning_rate: float = 1.41e-5
    batch_size: int = 64            # rollouts per step (per process)
    mini_batch_size: int = 16       # rollouts per gradient update
    ppo_epochs: int = 4             # passes over the batch per step
    cliprange: float = 0.2          # policy ratio clip
    cliprange_value: float = 0.2    # value prediction clip
    vf_coef: float = 0.1            # weight of the value loss
    gamma: float = 1.0              # discount
    lam: float = 0.95               # GAE lambda
    init_kl_coef: float = 0.2       # starting KL penalty beta
    adaptive_kl: bool = True        # adapt beta towards kl_target
    kl_target: float = 6.0          # target KL per sequence (nats)
    kl_horizon: int = 10_000        # how fast beta adapts
    max_grad_norm: float = 1.0
    whiten_advantages: bool = True
    temperature: float = 1.0        # applied when sampling AND when scoring
    weight_decay: float = 0.0       # AdamW decay (0: nothing pulls weights toward zero)
    reward_norm: bool = False       # rescale scores so SFT samples have mean 0, std 1 (lm-human-preferences)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("learning_rate", "batch_size", "mini_batch_size", "ppo_epochs", "kl_horizon", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PPOConfig.{name} must be positive, got {getattr(self, name)}")
        if self.batch_size % self.mini_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by mini_batch_size ({self.mini_batch_size}); "
                f"e.g. use mini_batch_size={math.gcd(self.batch_size, self.mini_batch_size)}.")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError("gamma and lam must lie in [0, 1]")
        if self.init_kl_coef < 0:
            raise ValueError("init_kl_coef must be >= 0")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be >= 0")


# --------------------------------------------------------------------------------------------
# The pieces, one idea each
# --------------------------------------------------------------------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(label) for every position, from softmax(logits / temperature) computed in fp32."""
    return torch.gather(F.log_softmax(logits.float() / temperature, dim=-1), 2, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_from_logits(logits: torch.Tensor, ref_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(pi || pi_ref) of the full next-token distributions at every position (>= 0, exactly 0 if equal)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    ref_logp = F.log_softmax(ref_logits.float() / temperature, dim=-1)
    return (logp.exp() * (logp - ref_logp)).sum(-1).clamp(min=0)


def per_token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's reward for every response token: r_t = -kl_coef * (log pi(y_t) - log pi_ref(y_t)), plus the reward
    model's score on the last real token. Returns (rewards, kl), both zero on padding."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = mask.sum(1).long() - 1
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.device)
    return rewards * mask, kl


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                   lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded response tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t ;  A_t = delta_t + gamma * lam * A_{t+1} ; returns = A + V.
    Padding positions have zero reward, zero value and zero advantage.
    """
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
           reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Scale to unit variance (and zero mean) over the real tokens; ``reduce`` sums across processes."""
    stats = torch.stack([(x * mask).sum(), (x * x * mask).sum(), mask.sum()]).double()
    if reduce is not None:
        stats = reduce(stats)
    mean = stats[0] / stats[2]
    var = (stats[1] / stats[2] - mean ** 2).clamp(min=0) * stats[2] / (stats[2] - 1).clamp(min=1)
    out = (x - mean.to(x.dtype)) * torch.rsqrt(var.to(x.dtype) + 1e-8)
    if not shift_mean:
        out = out + mean.to(x.dtype)
    return out * mask


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, cliprange: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate: max(-A r, -A clip(r, 1-eps, 1+eps)); returns (loss, clip fraction)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Value loss that keeps the new value within ``cliprange_value`` of the old one."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    a, b = (values - returns) ** 2, (clipped - returns) ** 2
    return 0.5 * masked_mean(torch.max(a, b), mask), masked_mean((b > a).float(), mask)


def approx_kl(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How far one update moved the policy on this minibatch: mean of 0.5 * (log pi - log pi_old)^2."""
    return 0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask)


class AdaptiveKLController:
    """Ziegler et al. (2019): beta <- beta * (1 + clip(KL/target - 1, -0.2, 0.2) * n_steps / horizon)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
        self.value *= 1 + error * n_steps / self.horizon


class FixedKLController:
    """Constant beta (``adaptive_kl=False``)."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


@dataclass
class PPOParts:
    """The four pieces of PPO a learner can write, and the trainer uses everywhere (defaults: this module's).

    * ``rewards(scores, logprobs, ref_logprobs, mask, kl_coef) -> (rewards, kl)``: per-token rewards
      (:func:`per_token_rewards`)
    * ``advantages(rewards, values, mask, gamma, lam) -> (advantages, returns)``: GAE (:func:`gae_advantages`);
      the trainer whitens the advantages afterwards when ``config.whiten_advantages``
    * ``policy_loss(logprobs, old_logprobs, advantages, mask, cliprange) -> (loss, clipfrac)``
      (:func:`clipped_policy_loss`)
    * ``value_loss(values, old_values, returns, mask, cliprange_value) -> (loss, clipfrac)``
      (:func:`clipped_value_loss`)

    Every tensor is ``(batch, response tokens)``, right-padded, with ``mask`` 1 on real tokens. A part that computes
    what the package's does reproduces the package's run exactly (same seed, same log).
    """

    rewards: Callable[..., tuple[torch.Tensor, torch.Tensor]] = per_token_rewards
    advantages: Callable[..., tuple[torch.Tensor, torch.Tensor]] = gae_advantages
    policy_loss: Callable[..., tuple[torch.Tensor, torch.Tensor]] = clipped_policy_loss
    value_loss: Callable[..., tuple[torch.Tensor, torch.Tensor]] = clipped_value_loss


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0 (rollouts and updates must see the same policy)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


# --------------------------------------------------------------------------------------------
# Policy with a value head
# --------------------------------------------------------------------------------------------
class PolicyWithValueHead(nn.Module):
    """Any transformers causal LM plus a scalar value head on its last hidden state.

    The head starts at exactly zero (weights and bias), as in lm-human-preferences: before the first
    update every value is 0, so the first advantages are the raw per-token rewards.
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        hidden = lm.config.get_text_config().hidden_size
        self.v_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.v_head.weight)
        nn.init.zeros_(self.v_head.bias)

    def forward(self, input_ids, attention_mask, position_ids=None):
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      output_hidden_states=True, use_cache=False)
        values = self.v_head(out.hidden_states[-1].to(self.v_head.weight.dtype)).squeeze(-1)
        return out.logits, values


def shift_eos_logit(lm: nn.Module, eos_id: int, shift: float) -> nn.Module:
    """A copy of ``lm`` that differs from it only by ``+shift`` on the EOS logit (an untied output layer
    with a bias): the smallest policy change that shows why sampling must match scoring."""
    new = copy.deepcopy(lm)
    old_head = new.get_output_embeddings()
    head = nn.Linear(old_head.in_features, old_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old_head.weight)
        head.bias.zero_()
        head.bias[eos_id] = shift
    new.config.tie_word_embeddings = False
    new.set_output_embeddings(head)
    return new


def query_response_batch(queries: Sequence[torch.Tensor], responses: Sequence[torch.Tensor], pad_id: int):
    """``[pad..pad query | response pad..pad]``: left-padded queries, right-padded responses.

    Returns input ids, attention mask, position ids, the response mask and the query width, so that
    logits at positions ``Q-1 .. Q+R-2`` predict the response tokens.
    """
    q_ids, q_mask = left_pad(queries, pad_id)
    R = max(len(r) for r in responses)
    r_ids = torch.full((len(responses), R), pad_id, dtype=torch.long)
    r_mask = torch.zeros((len(responses), R), dtype=torch.long)
    for i, r in enumerate(responses):
        r_ids[i, : len(r)] = r
        r_mask[i, : len(r)] = 1
    ids = torch.cat([q_ids, r_ids], 1)
    mask = torch.cat([q_mask, r_mask], 1)
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, position_ids, r_mask, q_ids.shape[1]


def _make_accelerator():
    """fp32 on every device: ``generate`` samples outside accelerate's autocast (it wraps only the policy's
    ``forward``), so a bf16 autocast would score in bf16 what was sampled in fp32. The device is
    :func:`config.device_name`'s (``RLHF_DEVICE``).

    accelerate keeps one process-wide state; an earlier trainer in the same kernel (SFT, classifier, reward
    model and DPO train under bf16 autocast where the CPU has it) would refuse a different precision, so the state is
    reset first, as every ``transformers.TrainingArguments`` does when it is created."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)

    from .config import device_name

    return Accelerator(mixed_precision="no", cpu=device_name() == "cpu")


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------
class PPOTrainer:
    """Classic PPO for a causal LM: ``generate`` rollouts, then ``step(queries, responses, scores)``.

    ``step`` = ``make_experience`` (one no-grad forward: old log-probs, values, reference log-probs,
    per-token rewards, GAE advantages) + ``ppo_update`` (epochs of clipped updates) + the KL controller.
    :func:`ppo_loop` runs the same pieces in a loop, one line each. ``parts`` (:class:`PPOParts`) swaps in
    your own rewards, advantages and losses.
    """

    def __init__(self, config: PPOConfig, model, tokenizer, ref_model=None, accelerator=None,
                 parts: PPOParts | None = None):
        from accelerate.utils import set_seed as acc_set_seed

        self.config = config
        self.parts = parts if parts is not None else PPOParts()
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.accelerator = accelerator or _make_accelerator()
        acc_set_seed(config.seed)
        lm = model.lm if isinstance(model, PolicyWithValueHead) else model
        policy = model if isinstance(model, PolicyWithValueHead) else PolicyWithValueHead(lm)
        ref = ref_model if ref_model is not None else copy.deepcopy(lm)
        ref.eval().requires_grad_(False)
        disable_dropout(policy)  # so the ratio pi/pi_old is exactly 1 before the first update
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=config.learning_rate, eps=1e-5,
                                           weight_decay=config.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(policy, self.optimizer)
        self.ref_model = ref.to(self.accelerator.device)
        self.kl_ctl = (AdaptiveKLController(config.init_kl_coef, config.kl_target, config.kl_horizon)
                       if config.adaptive_kl else FixedKLController(config.init_kl_coef))
        self.step_count = 0
        self.generator = torch.Generator().manual_seed(config.seed)
        self.reward_mean, self.reward_std = 0.0, 1.0  # set by calibrate_reward when config.reward_norm

    # -- helpers ---------------------------------------------------------------------------
    @property
    def policy(self) -> PolicyWithValueHead:
        return self.accelerator.unwrap_model(self.model)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def sum_across_processes(self, t: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return t
        return self.accelerator.reduce(t.to(self.device), reduction="sum").cpu()

    def _global_mean(self, value: float) -> float:
        t = self.sum_across_processes(torch.tensor([value, 1.0], dtype=torch.float64))
        return float(t[0] / t[1])

    # -- rollouts --------------------------------------------------------------------------
    def generate(self, queries: Sequence[torch.Tensor],
                 length_sampler: Callable[[], int] | Sequence[int] | None = None,
                 batch_size: int = 256, **generation_kwargs) -> list[torch.Tensor]:
        """Sample one response per query at ``config.temperature``; its maximum length is drawn from
        ``length_sampler`` (default 16) or given per query as a list, and it ends early if the policy samples EOS.

        Nothing else may change how tokens are drawn: ``step`` scores them under softmax(logits / T), so
        top-k, top-p, a repetition penalty or a minimum length would make the KL and the ratios lie.
        """
        if generation_kwargs:
            raise ValueError(
                f"PPOTrainer.generate got {sorted(generation_kwargs)}: during training responses must come from "
                "the distribution step() scores (softmax(logits / temperature)). Set PPOConfig.temperature for "
                "the temperature; top_k/top_p/repetition_penalty/min_new_tokens are refused because they make "
                "training off-policy (they change how tokens are drawn but not how they are scored).")
        if length_sampler is None or callable(length_sampler):
            lengths = [length_sampler() if length_sampler else 16 for _ in queries]
        else:
            lengths = [int(n) for n in length_sampler]
            if len(lengths) != len(queries):
                raise ValueError(f"got {len(lengths)} lengths for {len(queries)} queries: give one per query")
        return generate_responses(self.policy.lm, self.tokenizer, queries, lengths, batch_size=batch_size,
                                  temperature=self.config.temperature)

    def calibrate_reward(self, scores: Sequence[float] | torch.Tensor) -> None:
        """Reward normalisation (``config.reward_norm``): remember the mean and std of scores of samples
        from the *starting* policy, so that ``step`` trains on (score - mean) / std."""
        s = torch.as_tensor(scores, dtype=torch.float64).flatten()
        self.reward_mean, self.reward_std = float(s.mean()), float(s.std().clamp(min=1e-6))

    def check_rollouts(self, queries, responses, scores) -> torch.Tensor:
        """The scores as a tensor, once the batch is checked: ``batch_size`` query/response/score triples, no empty
        query or response, no NaN score."""
        n = self.config.batch_size
        if not (len(queries) == len(responses) == len(scores)):
            raise ValueError(f"queries ({len(queries)}), responses ({len(responses)}) and scores ({len(scores)}) "
                             "must have the same length: one score per query/response pair.")
        if len(queries) != n:
            raise ValueError(f"step expects batch_size={n} rollouts, got {len(queries)}; generate exactly "
                             "config.batch_size responses per step (or change PPOConfig.batch_size).")
        for i, (q, r) in enumerate(zip(queries, responses)):
            if len(q) == 0:
                raise ValueError(f"query {i} is empty: every prompt needs at least one token")
            if len(r) == 0:
                raise ValueError(f"response {i} is empty: generate at least one token (min length >= 1)")
        if isinstance(scores, (list, tuple)) and scores and torch.is_tensor(scores[0]):
            scores = torch.stack(list(scores))
        scores = torch.as_tensor(scores, dtype=torch.float32).flatten()
        if not torch.isfinite(scores).all():
            raise ValueError("a score is NaN or inf: check the reward model (PPO would blow up on it)")
        return scores

    def forward_response(self, mb: dict, model=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probs of the response tokens, values and entropies under ``model`` (default: the policy);
        the logits at position t predict token t+1, hence the shift by one."""
        Q, R = self._Q, self._R
        with self.accelerator.autocast():
            if model is None:
                logits, values = self.model(mb["ids"], mb["attn"], mb["pos"])
                values = values[:, Q - 1:Q + R - 1].float()
            else:
                logits, values = model(input_ids=mb["ids"], attention_mask=mb["attn"], position_ids=mb["pos"],
                                       use_cache=False).logits, None
        logits = logits[:, Q - 1:Q + R - 1]
        T = self.config.temperature
        logps = logprobs_from_logits(logits, mb["ids"][:, Q:Q + R], T)
        return logps, values, logits

    @torch.no_grad()
    def score_rollouts(self, queries, responses, scores: torch.Tensor) -> dict:
        """One no-grad pass over the batch: log pi_old and V_old (the policy) and log pi_ref (the reference) of
        every response token, the exact KL along the path, and the scores (``train_scores``: what PPO trains on)."""
        cfg = self.config
        ids, attn, pos, r_mask, Q = query_response_batch([q.cpu() for q in queries], [r.cpu() for r in responses],
                                                         self.tokenizer.pad_token_id)
        self._Q, self._R = Q, r_mask.shape[1]
        batch = {"ids": ids, "attn": attn, "pos": pos, "mask": r_mask.float()}
        batch = {k: v.to(self.device) for k, v in batch.items()}
        self.model.eval()
        old_logps, old_values, logits = self.forward_response(batch)
        ref_logps, _, ref_logits = self.forward_response(batch, model=self.ref_model)
        raw = scores.to(self.device)
        train_scores = (raw - self.reward_mean) / self.reward_std if cfg.reward_norm else raw
        batch.update(old_logps=old_logps, old_values=old_values, ref_logps=ref_logps,
                     kl_exact=kl_from_logits(logits, ref_logits, cfg.temperature) * batch["mask"],
                     scores=raw, train_scores=train_scores)
        return batch

    @torch.no_grad()
    def make_experience(self, queries, responses, scores) -> dict:
        """Everything the update needs: :meth:`score_rollouts`, per-token rewards, GAE advantages (whitened)."""
        batch = self.score_rollouts(queries, responses, scores)
        batch["rewards"], batch["kl"] = self.compute_rewards(batch["train_scores"], batch["old_logps"],
                                                             batch["ref_logps"], batch["mask"])
        batch["advantages"], batch["returns"] = self.compute_advantages(batch["rewards"], batch["old_values"],
                                                                        batch["mask"])
        return batch

    def compute_rewards(self, scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                        mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token reward: -beta * (log p - log p_ref), plus the score on the last response token
        (``parts.rewards`` at the KL controller's current beta)."""
        return self.parts.rewards(scores, logprobs, ref_logprobs, mask, self.kl_ctl.value)

    def compute_advantages(self, rewards: torch.Tensor, values: torch.Tensor,
                           mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages and returns (``parts.advantages``), the advantages whitened over the batch's real
        tokens when ``config.whiten_advantages``."""
        cfg = self.config
        advantages, returns = self.parts.advantages(rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask, reduce=self.sum_across_processes)
        return advantages, returns

    # -- the update ------------------------------------------------------------------------
    def ppo_update(self, batch: dict) -> dict[str, float]:
        """PPO's inner loop: ``ppo_epochs`` passes over shuffled minibatches of one batch of rollouts."""
        cfg, stats = self.config, defaultdict(list)
        self.model.train()  # dropout is off, so train() and eval() compute the same function
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(cfg.batch_size, generator=self.generator).to(self.device)
            for start in range(0, cfg.batch_size, cfg.mini_batch_size):
                mb = {k: v[order[start:start + cfg.mini_batch_size]] for k, v in batch.items()}
                logps, values, logits = self.forward_response(mb)             # the current policy
                pg_loss, clipfrac = self.parts.policy_loss(logps, mb["old_logps"], mb["advantages"], mb["mask"],
                                                           cfg.cliprange)    # small steps
                vf_loss, vf_clipfrac = self.parts.value_loss(values, mb["old_values"], mb["returns"], mb["mask"],
                                                             cfg.cliprange_value)
                loss = pg_loss + cfg.vf_coef * vf_loss                        # one body, two heads
                self.optimizer.zero_grad()
                self.accelerator.backward(loss)
                if cfg.max_grad_norm:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    for name, value in (("policy_loss", pg_loss), ("value_loss", vf_loss), ("clipfrac", clipfrac),
                                        ("value_clipfrac", vf_clipfrac),
                                        ("approx_kl", approx_kl(logps, mb["old_logps"], mb["mask"])),
                                        ("entropy", masked_mean(entropy_from_logits(logits, cfg.temperature),
                                                                mb["mask"]))):
                        stats[name].append(float(value))
        return {name: float(np.mean(values)) for name, values in stats.items()}

    def step(self, queries: Sequence[torch.Tensor], responses: Sequence[torch.Tensor],
             scores: Sequence[float] | torch.Tensor) -> dict[str, float]:
        """One PPO step on a batch of rollouts: experience, update, KL controller; returns statistics."""
        cfg = self.config
        scores = self.check_rollouts(queries, responses, scores)
        t0 = time.time()
        batch = self.make_experience(queries, responses, scores)
        t_forward = time.time() - t0
        update_stats = self.ppo_update(batch)
        t_optimize = time.time() - t0 - t_forward

        kl_coef_used, mean_kl = self.kl_ctl.value, self.mean_kl(batch)
        self.kl_ctl.update(mean_kl, cfg.batch_size * self.accelerator.num_processes)
        self.step_count += 1
        return {**self.step_stats(batch, queries, update_stats, kl_coef_used, mean_kl),
                "time_forward_s": t_forward, "time_optimize_s": t_optimize}

    def mean_kl(self, batch: dict) -> float:
        """The KL the controller sees: sum over each response's tokens of log pi_old - log pi_ref, averaged."""
        return self._global_mean(batch["kl"].sum(1).mean().item())

    def step_stats(self, batch: dict, queries: Sequence[torch.Tensor], update_stats: dict[str, float],
                   kl_coef_used: float, mean_kl: float) -> dict[str, float]:
        """One step's log line (after ``step_count`` has moved on): scores, KLs, beta, lengths, update statistics."""
        scores, mask = batch["scores"], batch["mask"]
        return {
            "step": self.step_count,
            "score_mean": self._global_mean(scores.mean().item()),
            "score_std": float(scores.std().item()) if len(scores) > 1 else 0.0,
            "train_score_mean": self._global_mean(batch["train_scores"].mean().item()),
            "kl": mean_kl,
            "kl_exact": self._global_mean(batch["kl_exact"].sum(1).mean().item()),
            "kl_coef": kl_coef_used,
            "reward_mean": self._global_mean(batch["rewards"].sum(1).mean().item()),
            "response_len": float(mask.sum(1).mean().item()),
            "query_len": float(np.mean([len(q) for q in queries])),
            **update_stats,
        }

    # -- saving and resuming ---------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """The policy as a plain transformers model (loadable by ``from_pretrained`` and TRL) and the
        value head beside it in ``value_head.safetensors``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.accelerator.is_main_process:
            policy = self.policy
            policy.lm.save_pretrained(folder, safe_serialization=True)
            self.tokenizer.save_pretrained(folder)
            save_file({k: v.detach().cpu().contiguous() for k, v in policy.v_head.state_dict().items()},
                      str(folder / "value_head.safetensors"))
        self.accelerator.wait_for_everyone()
        return folder

    def state_dict(self) -> dict:
        return {"step": self.step_count, "kl_coef": self.kl_ctl.value, "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                "python_rng": random.getstate(), "config": asdict(self.config),
                "reward_norm": (self.reward_mean, self.reward_std)}

    def save_checkpoint(self, folder: str | Path, extra: dict | None = None) -> None:
        """Everything needed to resume: policy, value head, optimizer, KL controller, RNG states, step."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        if self.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True, exist_ok=True)
            torch.save({"model": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "trainer": self.state_dict(), "extra": extra or {}}, tmp / "ppo_state.pt")
            (tmp / "done").write_text(str(self.step_count))
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self, folder: str | Path) -> dict:
        state = torch.load(Path(folder) / "ppo_state.pt", map_location="cpu", weights_only=False)
        self.policy.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        tr = state["trainer"]
        self.step_count, self.kl_ctl.value = tr["step"], tr["kl_coef"]
        self.reward_mean, self.reward_std = tr.get("reward_norm", (0.0, 1.0))
        self.generator.set_state(tr["generator"])
        torch.set_rng_state(tr["torch_rng"])
        np.random.set_state(tr["numpy_rng"])
        random.setstate(tr["python_rng"])
        return state.get("extra", {})


# --------------------------------------------------------------------------------------------
# A whole training run (used by the command line, the benchmark and ensure_ppo)
# --------------------------------------------------------------------------------------------
def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a JSON-lines file with one ``{"prompt": ...}`` object per line."""
    prompts = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            prompt = json.loads(line)["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{n}: expected a JSON object with a \"prompt\" key, got {line[:80]!r}") from err
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{path}:{n}: the prompt is empty; give every line some text")
        prompts.append(prompt)
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def draw_prompts_and_lengths(queries_all: Sequence[torch.Tensor], min_len: int, max_len: int, config: PPOConfig,
                             step: int, rank: int = 0, world: int = 1) -> tuple[list[torch.Tensor], list[int]]:
    """Step ``step``'s ``config.batch_size`` prompts (drawn without replacement when there are enough) and a maximum
    response length for each, from generators seeded by (seed, step, process): a resumed run draws exactly what the
    uninterrupted run would have."""
    from .data import LengthSampler

    rng = np.random.default_rng([config.seed, step, rank])
    idx = rng.choice(len(queries_all), size=config.batch_size, replace=len(queries_all) < config.batch_size)
    sampler = LengthSampler(min_len, max_len, seed=config.seed * 100_003 + step * world + rank)
    return [queries_all[i] for i in idx], [sampler() for _ in idx]


def calibrate_reward_norm(trainer: PPOTrainer, queries_all: Sequence[torch.Tensor],
                          reward: Callable[[list[str]], Sequence[float]], min_len: int, max_len: int) -> None:
    """lm-human-preferences' reward normalisation (``config.reward_norm``): score one batch of samples of the
    starting policy, then train on (score - their mean) / their std."""
    from .data import LengthSampler

    cfg, acc, tok = trainer.config, trainer.accelerator, trainer.tokenizer
    rank = acc.process_index
    rng = np.random.default_rng([cfg.seed, 10**6, rank])
    idx = rng.choice(len(queries_all), size=cfg.batch_size, replace=len(queries_all) < cfg.batch_size)
    torch.manual_seed(cfg.seed * 1_000_003 + 10**6 + rank)
    queries = [queries_all[i] for i in idx]
    responses = trainer.generate(queries, LengthSampler(min_len, max_len, seed=cfg.seed + 10**6 + rank))
    texts = tok.batch_decode([torch.cat([q, r]) for q, r in zip(queries, responses)], skip_special_tokens=True)
    trainer.calibrate_reward(torch.as_tensor(reward(texts)))
    if acc.is_main_process:
        print(f"[ppo] reward normalisation: SFT samples score {trainer.reward_mean:.3f} ± {trainer.reward_std:.3f}"
              " -> trained on (score - mean) / std")


class StepClock:
    """Seconds spent in each stage of a step: ``lap(name)`` records the time since the previous lap."""

    def __init__(self):
        self.start = self.last = time.time()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.time()
        self.laps[name], self.last = now - self.last, now

    def total(self) -> dict[str, float]:
        return {**self.laps, "time_step_s": time.time() - self.start}


def ppo_loop(trainer: PPOTrainer, prompts: Sequence[str], reward: Callable[[list[str]], Sequence[float]],
             steps: int, min_len: int, max_len: int,
             after_step: Callable[[dict], None] | None = None) -> list[dict]:
    """Classic PPO for a language model (Ziegler et al., 2019), the whole loop in the order it runs.

    ``trainer`` holds the policy with its value head, the frozen reference, the optimizer and the KL controller;
    ``reward(texts)`` gives one score per text. Runs until ``trainer.step_count == steps`` (a trainer restored
    from a checkpoint carries on where it stopped); returns one dict of statistics per step and calls
    ``after_step(stats)`` after each (:func:`train_ppo` writes its files there). Steps 5, 6 and 7 call
    ``trainer.parts`` (:class:`PPOParts`): pass your own functions there and they train the policy.
    """
    cfg, tok, parts, acc = trainer.config, trainer.tokenizer, trainer.parts, trainer.accelerator
    queries_all = [torch.tensor(ids, dtype=torch.long) for ids in tok(list(prompts))["input_ids"]]
    if cfg.reward_norm and trainer.step_count == 0:
        calibrate_reward_norm(trainer, queries_all, reward, min_len, max_len)  # once, before the first step
    history = []
    while trainer.step_count < steps:
        k, clock = trainer.step_count, StepClock()
        # 1) Prompts and lengths: batch_size prompts and a maximum response length for each, seeded by the step
        queries, lengths = draw_prompts_and_lengths(queries_all, min_len, max_len, cfg, k, acc.process_index,
                                                    acc.num_processes)
        torch.manual_seed(cfg.seed * 1_000_003 + k * acc.num_processes + acc.process_index)
        # 2) Rollout: the current policy (pi_old) writes one response per prompt at cfg.temperature, ending at its
        #    length or at EOS; nothing else changes how tokens are drawn, so step 4 scores what was sampled
        responses = trainer.generate(queries, lengths)
        clock.lap("time_generate_s")
        # 3) Score: the reward model reads prompt + response as text and gives one number per response
        texts = tok.batch_decode([torch.cat([q, r]) for q, r in zip(queries, responses)], skip_special_tokens=True)
        scores = trainer.check_rollouts(queries, responses, reward(texts))
        clock.lap("time_score_s")
        # 4) One no-grad pass: log pi_old(y_t), the value V_old(t) and log pi_ref(y_t) for every response token
        batch = trainer.score_rollouts(queries, responses, scores)
        mask = batch["mask"]  # (batch, response tokens): 1 on real tokens, 0 on padding
        # 5) Per-token rewards: r_t = -beta * (log pi_old - log pi_ref), plus the score on the last real token
        batch["rewards"], batch["kl"] = parts.rewards(batch["train_scores"], batch["old_logps"], batch["ref_logps"],
                                                      mask, trainer.kl_ctl.value)
        # 6) GAE: delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1}; returns = A + V are the
        #    value head's targets; the advantages are whitened over the batch's real tokens
        advantages, batch["returns"] = parts.advantages(batch["rewards"], batch["old_values"], mask, cfg.gamma,
                                                        cfg.lam)
        batch["advantages"] = (whiten(advantages, mask, reduce=trainer.sum_across_processes)
                               if cfg.whiten_advantages else advantages)
        clock.lap("time_forward_s")
        # 7) Update: ppo_epochs passes over the batch in shuffled minibatches, each a gradient step on the clipped
        #    policy loss + vf_coef x the clipped value loss (parts.policy_loss, parts.value_loss)
        update_stats = trainer.ppo_update(batch)
        clock.lap("time_optimize_s")
        # 8) KL controller: beta grows when the KL to the reference is above kl_target, shrinks when below
        kl_coef_used, mean_kl = trainer.kl_ctl.value, trainer.mean_kl(batch)
        trainer.kl_ctl.update(mean_kl, cfg.batch_size * acc.num_processes)
        trainer.step_count += 1
        # 9) Log: one line of statistics per step
        stats = {**trainer.step_stats(batch, queries, update_stats, kl_coef_used, mean_kl), **clock.total()}
        history.append(stats)
        if after_step is not None:
            after_step(stats)
    return history


class RunFolder:
    """Where :func:`train_ppo` keeps a run: ``metrics.jsonl`` (one line per step), snapshots of the policy, the
    checkpoint it resumes from, and the final policy."""

    def __init__(self, trainer: PPOTrainer, out_dir: str | Path, checkpoint_dir: str | Path | None, steps: int,
                 save_every: int, snapshot_every: int, callback: Callable[[dict], None] | None):
        self.trainer, self.steps, self.callback = trainer, steps, callback
        self.save_every, self.snapshot_every = save_every, snapshot_every
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt = Path(checkpoint_dir) if checkpoint_dir else self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.main = trainer.accelerator.is_main_process

    def resume(self) -> list[dict]:
        """Load the last checkpoint if there is one; returns the steps already logged (and keeps only those)."""
        history: list[dict] = []
        if (self.ckpt / "last" / "done").exists():
            self.trainer.load_checkpoint(self.ckpt / "last")
            if self.main:
                print(f"[ppo] resuming from step {self.trainer.step_count} ({self.ckpt / 'last'})")
            if self.metrics_path.exists():
                history = [json.loads(l) for l in self.metrics_path.read_text().splitlines() if l.strip()]
                history = [h for h in history if h["step"] <= self.trainer.step_count]
        if self.main:
            self.metrics_path.write_text("".join(json.dumps(h) + "\n" for h in history))
        return history

    def after_step(self, stats: dict) -> None:
        """Append the step's line, call the callback, save a snapshot or a checkpoint when one is due."""
        done = self.trainer.step_count
        if self.main:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(stats) + "\n")
        if self.callback is not None and self.main:
            self.callback(stats)
        if self.snapshot_every and done % self.snapshot_every == 0 and done < self.steps:
            self.trainer.save_pretrained(self.out_dir / "snapshots" / f"step-{done}")
        if self.save_every and done % self.save_every == 0 and done < self.steps:
            self.trainer.save_checkpoint(self.ckpt / "last")

    def finish(self) -> None:
        """Save the final policy; the checkpoint is no longer needed."""
        self.trainer.save_pretrained(self.out_dir)
        if self.main:
            shutil.rmtree(self.ckpt, ignore_errors=True)


def train_ppo(policy_path: str | Path, reward, prompts: Sequence[str], config: PPOConfig, steps: int,
              min_len: int, max_len: int, out_dir: str | Path, checkpoint_dir: str | Path | None = None,
              save_every: int = 10, callback: Callable[[dict], None] | None = None,
              snapshot_every: int = 0, parts: PPOParts | None = None) -> list[dict]:
    """Run ``steps`` PPO steps (:func:`ppo_loop`), writing ``metrics.jsonl`` and the final policy to ``out_dir``.

    Resumes from ``checkpoint_dir`` when a checkpoint is there. ``snapshot_every`` > 0 also saves the
    policy every that many steps under ``out_dir/snapshots/step-N`` (for the reward-KL frontier). ``parts``
    (:class:`PPOParts`) trains with your own rewards, advantages or losses.
    """
    from .data import LengthSampler
    from .models import load_causal_lm, load_tokenizer

    if steps < 1:
        raise ValueError("steps must be >= 1")
    LengthSampler(min_len, max_len)  # validates
    prompts = list(prompts)
    if any(not p.strip() for p in prompts):
        raise ValueError("a prompt is empty or whitespace; remove it")
    tokenizer = load_tokenizer(policy_path)
    trainer = PPOTrainer(config, load_causal_lm(policy_path), tokenizer, parts=parts)
    run = RunFolder(trainer, out_dir, checkpoint_dir, steps, save_every, snapshot_every, callback)
    history = run.resume()
    history += ppo_loop(trainer, prompts, reward, steps, min_len, max_len, after_step=run.after_step)
    run.finish()
    return history


def ensure_ppo(preset=None, force: bool = False, callback: Callable[[dict], None] | None = None) -> Path:
    """Folder of THE PPO-tuned policy of a preset (notebook 03 trains it; 05 and 06 load it), trained
    with the preset's settings if missing. ``callback(stats)`` is called after every step (live plots).
    Snapshots of the policy at 1/4, 1/2 and 3/4 of the run are kept for notebook 06's frontier."""
    from .config import get_preset
    from .data import load_imdb, make_prompts
    from .models import checkpoint_dir, ensure, load_tokenizer, save_artifact, stage_dir
    from .reward import sentiment_reward
    from .sft import ensure_sft

    preset = preset or get_preset()

    def build() -> Path:
        s = preset.ppo
        sft = ensure_sft(preset)
        tok = load_tokenizer(sft)
        prompts = make_prompts(load_imdb(preset)["train"], tok, seed=preset.seed)["prompt"]
        cfg = ppo_config_for(preset)
        work = stage_dir(preset, "ppo") / "work"
        t0 = time.time()
        history = train_ppo(sft, sentiment_reward(preset), prompts, cfg, s.steps, s.min_len, s.max_len, work,
                            checkpoint_dir=checkpoint_dir(preset, "ppo"), save_every=s.save_every,
                            snapshot_every=max(1, s.steps // 4), callback=callback)
        seconds = time.time() - t0

        meta = {"settings": asdict(cfg), "steps": s.steps, "min_len": s.min_len, "max_len": s.max_len,
                "metrics": {"train_seconds": round(seconds, 1), "final": history[-1] if history else {}},
                "log_history": history}
        path = save_artifact(preset, "ppo", lambda folder: shutil.copytree(work, folder), meta)
        shutil.rmtree(work, ignore_errors=True)
        return path

    return ensure(preset, "ppo", build, force=force)


def ppo_config_for(preset) -> PPOConfig:
    """The preset's PPO settings as a ``PPOConfig``."""
    from .config import ppo_config_kwargs

    return PPOConfig(**ppo_config_kwargs(preset))
