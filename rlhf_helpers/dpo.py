"""Step 4a: Direct Preference Optimisation on reward-ranked pairs (TRL ``DPOTrainer``).

DPO skips the reward model and the RL loop: it raises log p(chosen) - log p(rejected) relative to the
frozen SFT reference, with beta setting how far from the reference the policy may move.

Iterative DPO (``preset.dpo.rounds`` > 1): round r samples fresh pairs from round r - 1's policy, ranks them with
the same reward, and trains on from that policy (also its reference), adding the chosen responses' NLL.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from .config import DPOSettings, Preset, dpo_pairs_stage, dpo_round_numbers, dpo_stage_name, get_preset, set_seed
from .data import load_imdb, make_prompts
from .models import (checkpoint_dir, ensure, last_checkpoint, load_pretrained, load_tokenizer, precision_label,
                     save_artifact, save_model_artifact, tokenizer_fingerprint, trainer_defaults, trainer_log)
from .ppo import logprobs_from_logits
from .reward import build_preference_pairs, require_pairs, sentiment_reward
from .sft import ensure_sft


def round_prompts(preset: Preset, tokenizer, round_no: int = 1) -> list[str]:
    """Round ``round_no``'s training prompts: the ``round_no``-th block of ``n_prompts`` in one fixed shuffle of the
    train split, so every round sees prompts no earlier round trained on."""
    n = preset.dpo.n_prompts
    table = make_prompts(load_imdb(preset)["train"], tokenizer, seed=preset.seed + 11, limit=n * round_no)
    if round_no > 1 and len(table) < n * round_no:
        raise ValueError(f"round {round_no} needs {n * round_no} training prompts but the split has {len(table)}: "
                         "lower preset.dpo.n_prompts or preset.dpo.rounds")
    return table["prompt"][n * (round_no - 1):]


def ensure_dpo_pairs(preset: Preset | None = None, force: bool = False, round_no: int = 1):
    """Round ``round_no``'s training pairs (best vs worst of k per prompt), sampled from the policy that round
    starts from: the SFT policy in round 1 (more prompts and samples per prompt than notebook 02's pairs), the
    previous round's DPO policy after that."""
    from datasets import load_from_disk

    preset = preset or get_preset()
    d = preset.dpo
    _check_round(preset, round_no)

    def build() -> Path:
        start = ensure_sft(preset) if round_no == 1 else ensure_dpo(preset, round_no=round_no - 1)
        policy, tok = load_pretrained(start)
        prompts = round_prompts(preset, tok, round_no)
        pairs = build_preference_pairs(policy, tok, prompts, sentiment_reward(preset), d.samples_per_prompt,
                                       d.margin, preset.pairs.min_len, preset.pairs.max_len,
                                       seed=preset.seed + 11 + 12 * (round_no - 1))
        require_pairs(pairs, "preset.dpo")
        meta = {"settings": d.__dict__, "sampled_from": str(start),
                "metrics": {"pairs": len(pairs), "prompts": len(prompts)}}
        return save_artifact(preset, dpo_pairs_stage(round_no), lambda f: pairs.save_to_disk(str(f)), meta)

    return load_from_disk(str(ensure(preset, dpo_pairs_stage(round_no), build, force=force)))


def _check_round(preset: Preset, round_no: int, beta: float | None = None) -> None:
    if round_no not in dpo_round_numbers(preset):
        raise ValueError(f"round_no must be between 1 and preset.dpo.rounds = {preset.dpo.rounds}, got {round_no} "
                         "(more rounds: preset.replace(dpo=dataclasses.replace(preset.dpo, rounds=N)))")
    if round_no > 1 and beta is not None and beta != preset.dpo.beta:
        raise ValueError("later DPO rounds train at the preset's beta only; change preset.dpo.beta instead")


def dpo_loss_terms(sft_weight: float = 0.0) -> dict:
    """TRL's loss settings: the DPO loss alone (round 1: ``sft_weight`` 0), or DPO plus ``sft_weight`` x the NLL of
    the chosen responses (TRL's ``"sft"`` loss type; the later rounds use ``preset.dpo.sft_weight``), which keeps
    the responses the policy is pushed towards likely instead of only the gap between chosen and rejected wide."""
    if sft_weight == 0:
        return {"loss_type": ["sigmoid"]}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sft_weight]}


def round_learning_rate(dpo: DPOSettings, round_no: int) -> float:
    """``learning_rate`` in round 1, ``later_learning_rate`` (when set) in the rounds after it."""
    return dpo.learning_rate if round_no == 1 or dpo.later_learning_rate is None else dpo.later_learning_rate


def train_dpo(preset: Preset | None = None, beta: float | None = None, max_steps: int | None = None,
              resume: bool = True, round_no: int = 1, reference: str | Path | None = None,
              sft_weight: float | None = None, learning_rate: float | None = None) -> Path:
    """One DPO round on that round's reward-ranked pairs.

    Round 1 starts from the SFT policy, which is also the frozen reference. Round r > 1 starts from round r - 1's
    policy and uses it as the reference (TRL loads the reference from the folder it trains), on pairs sampled
    from that policy. ``reference`` (a model folder) replaces that reference, e.g. the SFT policy for every round
    (``benchmarks/dpo_rounds.py --reference sft`` measures it). ``sft_weight`` and ``learning_rate`` replace the
    round's own (the control run of ``benchmarks/dpo_rounds.py --control``: round 1 with round 2's recipe).
    """
    from trl import DPOConfig, DPOTrainer

    preset = preset or get_preset()
    d = preset.dpo
    beta = d.beta if beta is None else beta
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    _check_round(preset, round_no, beta)
    stage = dpo_stage_name(preset, beta, round_no)
    start = ensure_sft(preset) if round_no == 1 else ensure_dpo(preset, round_no=round_no - 1)
    set_seed(preset.seed)
    pairs = ensure_dpo_pairs(preset, round_no=round_no).select_columns(["prompt", "chosen", "rejected"])
    if len(pairs) == 0:
        raise ValueError("no DPO pairs passed the margin; lower dpo.margin or raise dpo.n_prompts")
    tok = load_tokenizer(start)
    ckpts = checkpoint_dir(preset, stage)
    steps = max_steps or d.max_steps
    args = DPOConfig(
        output_dir=str(ckpts), beta=beta, max_steps=steps, per_device_train_batch_size=d.batch_size,
        learning_rate=learning_rate or round_learning_rate(d, round_no), max_length=64, logging_steps=max(1, min(10, steps // 10)),
        save_steps=d.save_steps, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20),
        # the reference never changes: its log-probabilities are computed once, before training, instead of
        # in every step (measured on 2 cores: 150 steps in 41 s instead of 50 s)
        precompute_ref_log_probs=True,
        **dpo_loss_terms(sft_weight if sft_weight is not None else (d.sft_weight if round_no > 1 else 0.0)),
        # like SFT: bf16 autocast where the CPU has native bf16 (as DPO runs in bf16 on a GPU); DPO never samples
        # while training, so there is no sampling distribution to match. The by-hand check below stays fp32.
        **trainer_defaults(preset, mixed_precision=True),
    )
    ref_model = None if reference is None else load_pretrained(reference)[0]
    trainer = DPOTrainer(model=str(start), ref_model=ref_model, args=args, train_dataset=pairs, processing_class=tok)
    print(f"[dpo] round {round_no}, precision: {precision_label(mixed_precision=True)}")
    resume_from = last_checkpoint(ckpts) if resume else None
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - t0
    model = trainer.model

    meta = {"settings": {**d.__dict__, "beta": beta, "max_steps": steps}, "tokenizer": tokenizer_fingerprint(tok),
            "round": round_no, "started_from": str(start), "reference": str(reference or start),
            "metrics": {"train_seconds": round(seconds, 1), "pairs": len(pairs), "resumed_from": resume_from},
            "log_history": trainer_log(trainer)}
    path = save_model_artifact(preset, stage, model, tok, meta)
    print(f"[dpo] round {round_no}, beta={beta:g}: trained {steps} steps in {seconds:.0f}s on {len(pairs)} pairs")
    return path


def ensure_dpo(preset: Preset | None = None, force: bool = False, beta: float | None = None,
               round_no: int = 1) -> Path:
    """Folder of the DPO policy after round ``round_no`` (for ``beta``; the preset's beta by default)."""
    preset = preset or get_preset()
    _check_round(preset, round_no, beta)
    return ensure(preset, dpo_stage_name(preset, beta, round_no),
                  lambda: train_dpo(preset, beta=beta, round_no=round_no), force=force)


def ensure_dpo_rounds(preset: Preset | None = None, force: bool = False) -> dict[int, Path]:
    """Every round's DPO policy, ``{1: folder, 2: folder, ...}`` up to ``preset.dpo.rounds`` (built if missing;
    ``force`` rebuilds them all, in order)."""
    preset = preset or get_preset()
    return {r: ensure_dpo(preset, force=force, round_no=r) for r in dpo_round_numbers(preset)}


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
def dpo_loss_by_hand(policy, reference, batch: dict, beta: float, sft_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """The DPO loss of one batch as TRL's collator builds it (chosen sequences first, then rejected).

    ``batch`` holds ``input_ids``, ``attention_mask`` and ``completion_mask``. Returns the four log-probabilities
    per pair, the implicit rewards beta * (log pi - log pi_ref), their margins, ``dpo_loss`` = the mean of
    -log sigmoid(margin), ``nll_chosen`` = the mean negative log-probability of a chosen-response token (TRL's
    ``"sft"`` term), and ``loss`` = dpo_loss + sft_weight x nll_chosen (the later rounds' loss; round 1 has
    sft_weight 0).
    """
    policy.eval()
    reference.eval()
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    chosen, rejected = completion_logps(policy, *args).chunk(2)
    ref_chosen, ref_rejected = completion_logps(reference, *args).chunk(2)
    reward_chosen, reward_rejected = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
    margins = reward_chosen - reward_rejected
    dpo_loss = -torch.nn.functional.logsigmoid(margins).mean()
    chosen_tokens = batch["completion_mask"][:, 1:].sum(dim=1).chunk(2)[0].sum()
    nll_chosen = -chosen.sum() / chosen_tokens  # per token, over every chosen token of the batch
    return {"chosen_logps": chosen, "rejected_logps": rejected, "ref_chosen_logps": ref_chosen,
            "ref_rejected_logps": ref_rejected, "rewards/chosen": reward_chosen, "rewards/rejected": reward_rejected,
            "margins": margins, "dpo_loss": dpo_loss, "nll_chosen": nll_chosen, "loss": dpo_loss + sft_weight * nll_chosen}


def dpo_batch_check(policy_path: str | Path, reference_path: str | Path, pairs, beta: float,
                    preset: Preset | None = None, output_dir: str | Path | None = None,
                    sft_weight: float = 0.0) -> dict:
    """Let TRL's ``DPOTrainer`` log the loss of exactly one batch, and compute that batch's loss by hand.

    ``pairs`` (``prompt``, ``chosen``, ``rejected``) become one batch; TRL takes one logged step with learning
    rate 0, so the policy does not change. ``sft_weight`` > 0 checks a later round's loss (DPO + sft_weight x the
    chosen responses' NLL). Returns ``trl_loss`` (what TRL logged), ``trl_log`` (the whole log entry),
    ``by_hand`` (:func:`dpo_loss_by_hand`) and the ``batch`` itself.
    """
    import tempfile

    from trl import DPOConfig, DPOTrainer

    if output_dir is None:  # TRL needs a folder; nothing is saved in it (save_strategy="no"): remove it after
        with tempfile.TemporaryDirectory(prefix="dpo-check-") as tmp:
            return dpo_batch_check(policy_path, reference_path, pairs, beta, preset, output_dir=tmp,
                                   sft_weight=sft_weight)
    preset = preset or get_preset()
    policy, tok = load_pretrained(policy_path)
    reference, _ = load_pretrained(reference_path)
    pairs = pairs.select_columns(["prompt", "chosen", "rejected"])
    defaults = {**trainer_defaults(preset), "bf16": False}  # fp32 on every device: compared to the digit
    args = DPOConfig(output_dir=str(output_dir), beta=beta, max_steps=1, learning_rate=0.0, logging_steps=1,
                     per_device_train_batch_size=len(pairs), max_length=64, save_strategy="no",
                     **dpo_loss_terms(sft_weight), **defaults)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=pairs, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.train()
    trl_log = next(e for e in trainer.state.log_history if "loss" in e)
    batch = {k: batch[k].cpu() for k in ("input_ids", "attention_mask", "completion_mask")}
    return {"trl_loss": float(trl_log["loss"]), "trl_log": trl_log, "batch": batch,
            "by_hand": dpo_loss_by_hand(trainer.model, trainer.ref_model, batch, beta, sft_weight)}


# --------------------------------------------------------------------------------------------
# DPO with your own loss: TRL's DPOTrainer, its loss replaced by a function of the four log-probabilities
# --------------------------------------------------------------------------------------------
DPOLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


class _Recorder:
    """Calls the model it wraps and keeps the first output (TRL's ``_compute_loss`` only ever calls its model)."""

    def __init__(self, model, seen: dict, name: str):
        self.model, self.seen, self.name = model, seen, name

    def __call__(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        self.seen.setdefault(self.name, out)
        return out


_TRAINER_CLASSES: dict[str, type] = {}


def dpo_trainer_with_loss_class() -> type:
    """``DPOTrainer`` (TRL 1.16) whose loss is ``self.learner_loss(policy_chosen_logps, policy_rejected_logps,
    ref_chosen_logps, ref_rejected_logps, beta)`` instead of TRL's.

    The override is ``compute_loss``: it lets TRL's ``_compute_loss`` run as always (one forward pass of the policy,
    every metric TRL logs), records the policy's per-token log-probabilities from that pass, sums them per sequence
    exactly as TRL does (chosen rows first, then rejected), takes the reference's the same way (precomputed or from
    the reference model's pass), and returns the learner's loss of those four tensors: it, not TRL's, is
    back-propagated and logged as ``loss``.
    """
    if "dpo" not in _TRAINER_CLASSES:
        from trl import DPOTrainer

        class LearnerLossDPOTrainer(DPOTrainer):
            learner_loss: DPOLoss | None = None  # set on the instance (make_dpo_trainer)

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                if self.learner_loss is None:
                    raise ValueError("set trainer.learner_loss to your DPO loss (or use trl's DPOTrainer)")
                if self.loss_types != ["sigmoid"] or self.ld_alpha is not None or self.use_weighting \
                        or self.f_divergence_type != "reverse_kl":
                    raise ValueError("your DPO loss replaces TRL's sigmoid loss: train with loss_type='sigmoid' and "
                                     "no ld_alpha, use_weighting or f_divergence_type")
                seen: dict = {}
                reference = self.ref_model
                if not self.precompute_ref_logps:
                    self.ref_model = _Recorder(reference, seen, "reference")
                try:
                    result = super().compute_loss(_Recorder(model, seen, "policy"), inputs, return_outputs,
                                                  num_items_in_batch)
                finally:
                    self.ref_model = reference
                seq_len = inputs["completion_mask"].size(1) - 1  # TRL's shift_completion_mask width
                chosen, rejected = seen["policy"].log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)
                if self.precompute_ref_logps:
                    ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
                else:
                    ref_chosen, ref_rejected = seen["reference"].log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)
                loss = self.learner_loss(chosen, rejected, ref_chosen, ref_rejected, self.beta)
                return (loss, result[1]) if return_outputs else loss

        _TRAINER_CLASSES["dpo"] = LearnerLossDPOTrainer
    return _TRAINER_CLASSES["dpo"]


def make_dpo_trainer(loss: DPOLoss | None = None, **kwargs):
    """TRL's ``DPOTrainer(**kwargs)``; with ``loss``, one whose loss is ``loss(policy_chosen_logps,
    policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)`` (:func:`dpo_trainer_with_loss_class`)."""
    from trl import DPOTrainer

    if loss is None:
        return DPOTrainer(**kwargs)
    trainer = dpo_trainer_with_loss_class()(**kwargs)
    trainer.learner_loss = loss
    return trainer


def short_dpo_run(policy_path: str | Path, pairs, output_dir: str | Path, loss: DPOLoss | None = None,
                  beta: float = 0.1, steps: int = 4, batch_size: int = 4, learning_rate: float = 2e-4,
                  reference_path: str | Path | None = None, preset: Preset | None = None,
                  precompute_ref_log_probs: bool = False) -> list[dict]:
    """A few DPO steps from ``policy_path`` on ``pairs`` (``prompt``, ``chosen``, ``rejected``), with TRL's sigmoid
    loss (``loss=None``) or yours; returns TRL's log history, one entry per step.

    fp32 on every device, logged every step, nothing saved: the trainer's scratch files go to ``output_dir`` (its own
    folder). The pairs are copied into memory first, so no cache file lands beside a saved pairs artifact. The same
    arguments and seed give the same log, so a correct ``loss`` reproduces the run with TRL's loss to the digit.
    """
    from datasets import Dataset
    from trl import DPOConfig

    preset = preset or get_preset()
    pairs = Dataset.from_list(pairs.select_columns(["prompt", "chosen", "rejected"]).to_list())
    policy, tok = load_pretrained(policy_path)
    reference = load_pretrained(reference_path or policy_path)[0]
    set_seed(preset.seed)
    args = DPOConfig(output_dir=str(output_dir), beta=beta, max_steps=steps, per_device_train_batch_size=batch_size,
                     learning_rate=learning_rate, max_length=64, logging_steps=1, save_strategy="no",
                     lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20),
                     precompute_ref_log_probs=precompute_ref_log_probs, **dpo_loss_terms(0.0),
                     **{**trainer_defaults(preset), "bf16": False})
    trainer = make_dpo_trainer(loss, model=policy, ref_model=reference, args=args, train_dataset=pairs,
                               processing_class=tok)
    trainer.train()
    return trainer_log(trainer)


def dpo_with_my_loss(my_dpo_loss: DPOLoss, preset: Preset | None = None, steps: int = 8,
                     n_pairs: int | None = None) -> dict[str, list[dict]]:
    """Notebook 04: ``steps`` DPO steps from the SFT policy on round 1's pairs, once with TRL's loss and once with
    ``my_dpo_loss``; returns both log histories (``{"package": ..., "mine": ...}``), the same number for number when
    your loss is right (:func:`rlhf_helpers.fillins.check_same_run`). Writes only under its own stage folder."""
    from .models import stage_dir

    preset = preset or get_preset()
    d = preset.dpo
    sft = ensure_sft(preset)
    pairs = ensure_dpo_pairs(preset)
    pairs = pairs.select(range(min(len(pairs), n_pairs or steps * d.batch_size)))
    folder = stage_dir(preset, "dpo_my_loss")
    runs = {}
    for name, loss in (("package", None), ("mine", my_dpo_loss)):
        runs[name] = short_dpo_run(sft, pairs, folder / name, loss=loss, beta=d.beta, steps=steps,
                                   batch_size=d.batch_size, learning_rate=d.learning_rate, preset=preset)
    return runs
