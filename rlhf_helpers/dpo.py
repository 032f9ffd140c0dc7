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
from .models import (checkpoint_dir, ensure, last_checkpoint, load_pretrained, load_tokenizer, precision_label,
                     save_artifact, save_model_artifact, tokenizer_fingerprint, trainer_defaults, trainer_log)
from .ppo import logprobs_from_logits
from .reward import build_preference_pairs, require_pairs, sentiment_reward
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
        require_pairs(pairs, "preset.dpo")
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
        # the reference never changes: its log-probabilities are computed once, before training, instead of
        # in every step (measured on 2 cores: 150 steps in 41 s instead of 50 s)
        precompute_ref_log_probs=True,
        # like SFT: bf16 autocast where the CPU has native bf16 (as DPO runs in bf16 on a GPU); DPO never samples
        # while training, so there is no sampling distribution to match. The by-hand check below stays fp32.
        **trainer_defaults(preset, mixed_precision=True),
    )
    trainer = DPOTrainer(model=str(sft), args=args, train_dataset=pairs, processing_class=tok)
    print(f"[dpo] precision: {precision_label(mixed_precision=True)}")
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


# --------------------------------------------------------------------------------------------
# DPO by hand: the loss of one real batch in plain PyTorch, checked against what TRL logs
# --------------------------------------------------------------------------------------------
def completion_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     completion_mask: torch.Tensor) -> torch.Tensor:
    """log p(completion | prompt) per sequence: the sum of log p(token | all before it) over completion tokens.

    Position t's logits predict token t + 1, so the logits are shifted one step left of the tokens; prompt and
    padding positions are masked out by ``completion_mask`` (1 on completion tokens).
    """
    device = next(model.parameters()).device
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                   use_cache=False).logits[:, :-1].float()
    targets = input_ids[:, 1:].to(device)
    token_logps = logprobs_from_logits(logits, targets)
    return (token_logps * completion_mask[:, 1:].to(device)).sum(dim=1).cpu()


@torch.no_grad()
def dpo_loss_by_hand(policy, reference, batch: dict, beta: float) -> dict[str, torch.Tensor]:
    """The DPO loss of one batch as TRL's collator builds it (chosen sequences first, then rejected).

    ``batch`` holds ``input_ids``, ``attention_mask`` and ``completion_mask``. Returns the four log-probabilities
    per pair, the implicit rewards beta * (log pi - log pi_ref), their margins, and the mean loss
    -log sigmoid(margin).
    """
    policy.eval()
    reference.eval()
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    chosen, rejected = completion_logps(policy, *args).chunk(2)
    ref_chosen, ref_rejected = completion_logps(reference, *args).chunk(2)
    reward_chosen, reward_rejected = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
    margins = reward_chosen - reward_rejected
    return {"chosen_logps": chosen, "rejected_logps": rejected, "ref_chosen_logps": ref_chosen,
            "ref_rejected_logps": ref_rejected, "rewards/chosen": reward_chosen, "rewards/rejected": reward_rejected,
            "margins": margins, "loss": -torch.nn.functional.logsigmoid(margins).mean()}


def dpo_batch_check(policy_path: str | Path, reference_path: str | Path, pairs, beta: float,
                    preset: Preset | None = None, output_dir: str | Path | None = None) -> dict:
    """Let TRL's ``DPOTrainer`` log the loss of exactly one batch, and compute that batch's loss by hand.

    ``pairs`` (``prompt``, ``chosen``, ``rejected``) become one batch; TRL takes one logged step with learning
    rate 0, so the policy does not change. Returns ``trl_loss`` (what TRL logged), ``trl_log`` (the whole log
    entry), ``by_hand`` (:func:`dpo_loss_by_hand`) and the ``batch`` itself.
    """
    import tempfile

    from trl import DPOConfig, DPOTrainer

    if output_dir is None:  # TRL needs a folder; nothing is saved in it (save_strategy="no"): remove it after
        with tempfile.TemporaryDirectory(prefix="dpo-check-") as tmp:
            return dpo_batch_check(policy_path, reference_path, pairs, beta, preset, output_dir=tmp)
    preset = preset or get_preset()
    policy, tok = load_pretrained(policy_path)
    reference, _ = load_pretrained(reference_path)
    pairs = pairs.select_columns(["prompt", "chosen", "rejected"])
    defaults = {**trainer_defaults(preset), "bf16": False}  # fp32 on every device: compared to the digit
    args = DPOConfig(output_dir=str(output_dir), beta=beta, max_steps=1, learning_rate=0.0, logging_steps=1,
                     per_device_train_batch_size=len(pairs), max_length=64, save_strategy="no", **defaults)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=pairs, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.train()
    trl_log = next(e for e in trainer.state.log_history if "loss" in e)
    batch = {k: batch[k].cpu() for k in ("input_ids", "attention_mask", "completion_mask")}
    return {"trl_loss": float(trl_log["loss"]), "trl_log": trl_log, "batch": batch,
            "by_hand": dpo_loss_by_hand(trainer.model, trainer.ref_model, batch, beta)}
