"""Step 1 of the recipe: supervised fine-tuning of the policy on IMDB reviews (TRL ``SFTTrainer``)."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .config import Preset, device_name, get_preset, set_seed
from .data import load_imdb
from .models import (checkpoint_dir, ensure, last_checkpoint, load_causal_lm, load_tokenizer, model_dir,
                     precision_label, save_artifact, save_model_artifact, trainer_defaults, tokenizer_fingerprint,
                     trainer_log)


def ensure_tokenizer(preset: Preset | None = None, force: bool = False):
    """The policy's tokenizer: trained here for ``tiny``/``smoke``, ``gpt2``'s own otherwise."""
    preset = preset or get_preset()
    if preset.policy_model != "tiny":
        return load_tokenizer(preset.policy_model)

    def build() -> Path:
        from .tiny import train_tokenizer

        t0 = time.time()
        texts = load_imdb(preset)["train"]["text"][: preset.sizes.tokenizer_train_texts]
        tok = train_tokenizer(texts, vocab_size=preset.sizes.vocab_size, kind=preset.sizes.tokenizer)
        meta = {"vocab_size": len(tok), "kind": preset.sizes.tokenizer, "texts": len(texts),
                "seconds": round(time.time() - t0, 1),
                "tokenizer": tokenizer_fingerprint(tok)}
        return save_artifact(preset, "tokenizer", tok.save_pretrained, meta)

    return load_tokenizer(ensure(preset, "tokenizer", build, force=force))


def base_policy(preset: Preset, tokenizer):
    """The model SFT starts from: a fresh tiny GPT-2, or pretrained ``gpt2`` (hub name or folder)."""
    if preset.policy_model == "tiny":
        from .tiny import tiny_gpt2

        set_seed(preset.seed)
        return tiny_gpt2(tokenizer, preset.sizes)
    model = load_causal_lm(preset.policy_model)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def truncate_reviews(texts: list[str], tokenizer, max_length: int) -> list[str]:
    """Keep the first ``max_length`` tokens of each review: all the policy ever needs to write."""
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return tokenizer.batch_decode(ids)


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], max_length: int = 64, batch_size: int = 32) -> float:
    """exp(mean next-token loss) on ``texts``: lower means the model predicts reviews better."""
    model.eval()
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length).to(device)
        logits = model(**enc).logits[:, :-1]
        target = enc["input_ids"][:, 1:]
        mask = enc["attention_mask"][:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        total_nll += nll[mask].sum().item()
        total_tokens += mask.sum().item()
    return math.exp(total_nll / max(total_tokens, 1))


def model_loss_sft_trainer():
    """TRL's ``SFTTrainer`` with the model's own next-token loss (the ``transformers.Trainer`` default).

    TRL 1.16 computes the SFT loss through a chunked "fused" LM head that never holds the full logits and
    also logs entropy and token accuracy: worth it for a 150k-token vocabulary on a GPU, but on a CPU with
    our 4,096-token vocabulary it recomputes the head in the backward pass and costs more than it saves
    (measured, 2 cores, 32 x 64 tokens: 0.37 s per step with it, 0.25 s without; 0.27 s vs 0.15 s in bf16).
    Same loss (mean next-token cross-entropy over the non-padding tokens), same data, same schedule.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    class _ModelLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = {**inputs, "use_cache": False}
            if not hasattr(self, "_unk_id"):  # looked up once, not at every step
                self._unk_id = _unknown_word_id(self.processing_class)
            unk = self._unk_id
            if unk is not None and "labels" in inputs:
                # the word-level writer is never taught to write <unk>: an unknown word is not a target
                inputs["labels"] = inputs["labels"].masked_fill(inputs["labels"] == unk, -100)
                num_items_in_batch = None  # count what is left
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return _ModelLossSFTTrainer


def _unknown_word_id(tokenizer) -> int | None:
    """The id of the word-level tokenizer's ``<unk>`` marker (tiny.UNK), or None for other tokenizers."""
    from .tiny import UNK

    vocab = tokenizer.get_vocab()
    return vocab.get(UNK)


def train_sft(preset: Preset | None = None, resume: bool = True) -> Path:
    """Train the policy with TRL's SFTTrainer and save it as the ``sft`` artifact (resumable)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    preset = preset or get_preset()
    s = preset.sft
    set_seed(preset.seed)
    tokenizer = ensure_tokenizer(preset)
    imdb = load_imdb(preset)
    max_chars = s.max_length * 8
    train = Dataset.from_dict({"text": [t[:max_chars] for t in imdb["train"]["text"]]})
    model = base_policy(preset, tokenizer)
    model.set_attn_implementation(s.attention)  # while training only: not saved with the model
    ckpts = checkpoint_dir(preset, "sft")
    args = SFTConfig(
        output_dir=str(ckpts), max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
        learning_rate=s.learning_rate, lr_scheduler_type="cosine", warmup_steps=s.warmup_steps,
        max_length=s.max_length, logging_steps=max(1, min(10, s.max_steps // 10)), save_steps=s.save_steps,
        packing=s.packing, disable_tqdm=False, save_only_model=False,
        **trainer_defaults(preset, mixed_precision=True),
    )
    word_level = _unknown_word_id(tokenizer) is not None  # its <unk> targets are masked (model_loss_sft_trainer)
    trainer_class = SFTTrainer if device_name() == "cuda" and not word_level else model_loss_sft_trainer()
    trainer = trainer_class(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    resume_from = last_checkpoint(ckpts) if resume else None
    print(f"[sft] precision: {precision_label(mixed_precision=True)}")
    if resume_from:
        print(f"[sft] resuming from {resume_from}")
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - t0
    model = trainer.model
    split = "test" if "test" in imdb else "validation"  # validation inside a tuning script (forbid_test_set)
    held_out = imdb[split]["text"][: s.eval_reviews]
    ppl = perplexity(model, tokenizer, held_out, max_length=s.eval_max_length)
    meta = {
        "settings": s.__dict__, "base": preset.policy_model, "tokenizer": tokenizer_fingerprint(tokenizer),
        "metrics": {"held_out_perplexity": ppl, "eval_split": split, "train_seconds": round(seconds, 1),
                    "resumed_from": resume_from, "steps": trainer.state.global_step},
        "log_history": trainer_log(trainer),
    }

    path = save_model_artifact(preset, "sft", model, tokenizer, meta)
    print(f"[sft] held-out perplexity {ppl:.1f}; trained in {seconds:.0f}s; saved to {path}")
    return path


def ensure_sft(preset: Preset | None = None, force: bool = False) -> Path:
    """Folder of the SFT policy: loaded if it exists, trained (resuming if interrupted) if not."""
    preset = preset or get_preset()
    return ensure(preset, "sft", lambda: train_sft(preset), force=force)
