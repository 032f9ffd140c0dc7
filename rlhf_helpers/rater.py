"""The rater: an IMDB sentiment classifier that stands in for human feedback (notebook 02).

Its score of a text, the log-odds of POSITIVE (:class:`SentimentReward`), is the reward PPO, GRPO and RLOO
optimise (03, 05) and ranks DPO's comparison pairs (04). The reward model (:mod:`rlhf_helpers.reward_model`)
learns from the rater's comparisons (:mod:`rlhf_helpers.pairs`); the auditor (:mod:`rlhf_helpers.auditor`) is
the independent grader no policy trains against.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import Preset, get_preset, pick_device, set_seed
from .data import load_imdb
from .models import (checkpoint_dir, ensure, last_checkpoint, load_classifier, load_tokenizer, precision_label,
                     save_model_artifact, stage_dir, tokenizer_fingerprint, trainer_defaults, trainer_log)
from .sft import ensure_sft

ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}


# --------------------------------------------------------------------------------------------
# 2.1 The sentiment classifier (the ``classifier`` stage)
# --------------------------------------------------------------------------------------------
def train_classifier(preset: Preset | None = None, resume: bool = True) -> Path:
    """Tiny preset: a GPT-2 sequence classifier started from the SFT policy (as InstructGPT starts its
    reward model from the SFT model), trained on IMDB labels with the transformers ``Trainer``."""
    from datasets import concatenate_datasets
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    preset = preset or get_preset()
    c = preset.classifier
    set_seed(preset.seed)
    sft_path = ensure_sft(preset)
    tokenizer = load_tokenizer(sft_path)
    # "left" keeps the *end* of a long review, where the verdict usually is ("7/10", "avoid it")
    tokenizer.truncation_side = c.truncation_side
    imdb = load_imdb(preset)
    train = imdb["train"].shuffle(seed=preset.seed).select(range(min(c.train_examples, len(imdb["train"]))))
    if c.opening_examples:
        train = concatenate_datasets([train, review_openings(train.select(range(min(c.opening_examples, len(train)))),
                                                             tokenizer, c.opening_tokens, seed=preset.seed)])
        train = train.shuffle(seed=preset.seed)

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=c.max_length)

    train = train.map(encode, batched=True, remove_columns=["text"]).rename_column("label", "labels")
    model = AutoModelForSequenceClassification.from_pretrained(
        str(sft_path), num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID, use_safetensors=True,
        attn_implementation=c.attention)
    model.config.pad_token_id = tokenizer.pad_token_id
    extend_positions(model, c.max_length)
    ckpts = checkpoint_dir(preset, "classifier")
    args = TrainingArguments(
        output_dir=str(ckpts), num_train_epochs=c.epochs, per_device_train_batch_size=c.batch_size,
        learning_rate=c.learning_rate, lr_scheduler_type="linear", warmup_steps=0.05,
        logging_steps=10, save_steps=c.save_steps, train_sampling_strategy=c.sampling,
        **trainer_defaults(preset, mixed_precision=True),
    )
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
    print(f"[classifier] precision: {precision_label(mixed_precision=True)}")
    resume_from = last_checkpoint(ckpts) if resume else None
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - t0
    model = trainer.model.eval()
    split = "test" if "test" in imdb else "validation"  # validation inside a tuning script (forbid_test_set)
    test = imdb[split].select(range(min(c.eval_examples, len(imdb[split]))))
    acc = classifier_accuracy(model, tokenizer, test["text"], test["label"], max_length=c.max_length)
    # the rater on short texts: openings of the same test reviews (labels balanced, so ~50 % is unbiased)
    openings = review_openings(test, tokenizer, c.opening_tokens, seed=preset.seed + 1)
    opening_says = classifier_says_positive(model, tokenizer, openings["text"], max_length=c.max_length)
    opening_acc = (opening_says == torch.tensor(openings["label"]).bool()).float().mean().item()
    opening_pos = opening_says.float().mean().item()
    meta = {"settings": c.__dict__, "tokenizer": tokenizer_fingerprint(tokenizer),
            "metrics": {"test_accuracy": acc, "test_examples": len(test), "eval_split": split,
                        "train_seconds": round(seconds, 1),
                        "openings_accuracy": opening_acc, "openings_positive_rate": opening_pos,
                        "test_positive_rate": sum(test["label"]) / max(len(test), 1),
                        "resumed_from": resume_from},
            "log_history": trainer_log(trainer)}

    path = save_model_artifact(preset, "classifier", model, tokenizer, meta)
    print(f"[classifier] test accuracy {acc:.1%} on {len(test)} reviews; trained in {seconds:.0f}s")
    print(f"[classifier] on their openings ({c.opening_tokens[0]}-{c.opening_tokens[1]} tokens): accuracy "
          f"{opening_acc:.1%}, called positive {opening_pos:.1%} (share of positive reviews among them: "
          f"{meta['metrics']['test_positive_rate']:.1%})")
    return path


def review_openings(reviews, tokenizer, n_tokens: tuple[int, int] = (8, 24), seed: int = 0):
    """The first k tokens of each review (k drawn between ``n_tokens``), labelled as the whole review: short
    texts like the ones the rater will judge (a prompt plus a short response)."""
    from datasets import Dataset

    lo, hi = n_tokens
    if not 1 <= lo <= hi:
        raise ValueError(f"opening_tokens must be 1 <= min <= max, got {n_tokens}")
    rng = np.random.default_rng([seed, 7])
    ids = [x[:hi] for x in tokenizer([t[: hi * 16] for t in reviews["text"]])["input_ids"]]
    texts = [tokenizer.decode(x[: int(rng.integers(lo, hi + 1))]) for x in ids]
    return Dataset.from_dict({"text": texts, "label": list(reviews["label"])}).cast(reviews.features)


@torch.no_grad()
def extend_positions(model, n: int) -> None:
    """Let a GPT-2 body read ``n`` tokens: keep its position embeddings, start the new ones as GPT-2 does
    (normal, std ``initializer_range``). No-op for models that already reach ``n`` or have no ``wpe``."""
    body = getattr(model, "transformer", None)
    wpe = getattr(body, "wpe", None)
    if wpe is None or wpe.num_embeddings >= n:
        return
    new = torch.nn.Embedding(n, wpe.embedding_dim)
    new.weight.normal_(0.0, getattr(model.config, "initializer_range", 0.02))
    new.weight[: wpe.num_embeddings] = wpe.weight
    body.wpe = new
    model.config.max_position_embeddings = n


@torch.no_grad()
def classifier_says_positive(model, tokenizer, texts: Sequence[str], max_length: int = 128,
                             batch_size: int = 64) -> torch.Tensor:
    """Per text: does the classifier's argmax label (by name) say POSITIVE? Texts of similar length are batched
    together (less padding); the answers come back in the input order."""
    pos = positive_index(model.config)
    device = next(model.parameters()).device
    texts = list(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    says = torch.zeros(len(texts), dtype=torch.bool)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length).to(device)
        says[idx] = model(**enc).logits.argmax(-1).cpu() == pos
    return says


def classifier_accuracy(model, tokenizer, texts: Sequence[str], labels: Sequence[int], max_length: int = 128,
                        batch_size: int = 64) -> float:
    """Fraction of reviews whose argmax label (by name) matches the true label (1 = positive)."""
    says = classifier_says_positive(model, tokenizer, texts, max_length, batch_size)
    return (says == torch.tensor(list(labels)).bool()).float().mean().item()


# Lowest held-out accuracy a rater may have before RL trains against it: tiny's classifier reaches the
# mid-80s when it trains well and sits near 50 % when it does not; the hub classifier of gpt2 is near 90 %.
# smoke has no floor: its rater trains for a handful of steps and only has to run.
CLASSIFIER_ACCURACY_FLOORS: dict[str, float] = {"tiny": 0.70, "gpt2": 0.80}


class WeakRaterError(RuntimeError):
    pass


def check_classifier_accuracy(acc: float, preset: Preset | str | None = None) -> float:
    """Stop, saying what to do, when the rater's held-out accuracy is below the preset's floor; else return it.

    A reward from a classifier near chance is noise, and RL optimises noise just as hard as signal.
    """
    preset = get_preset(preset) if isinstance(preset, str) else (preset or get_preset())
    name = preset.name
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"accuracy must be a fraction between 0 and 1, got {acc!r}")
    floor = CLASSIFIER_ACCURACY_FLOORS.get(name)
    if floor is not None and acc < floor:
        raise WeakRaterError(
            f"The sentiment classifier scores {acc:.1%} on held-out reviews, below the {floor:.0%} floor of preset "
            f"{name!r}: its reward would be mostly noise. Retrain it: delete the artifact "
            f"(rm -r {stage_dir(preset, 'classifier')}) and rerun this notebook. A GPT-2 classifier can sit at chance "
            "for its whole budget (docs/tuning.md records one such run); if it stays low, give it more training "
            "reviews or epochs (preset.classifier) or a better-trained SFT body.")
    return acc


def ensure_classifier(preset: Preset | None = None, force: bool = False) -> str:
    """Folder (tiny/smoke) or hub name/folder (gpt2) of the sentiment classifier."""
    preset = preset or get_preset()
    if preset.sentiment_model != "tiny":
        return preset.sentiment_model
    return str(ensure(preset, "classifier", lambda: train_classifier(preset), force=force))


# --------------------------------------------------------------------------------------------
# 2.2 The rater's reward
# --------------------------------------------------------------------------------------------
def positive_index(config) -> int:
    """Index of the POSITIVE label, found by *name* (label order differs between classifiers)."""
    names = {str(v).upper(): int(k) for k, v in config.id2label.items()}
    for name in ("POSITIVE", "POS"):
        if name in names:
            return names[name]
    # LABEL_0/LABEL_1 are transformers' placeholder names: which one is positive is a guess, so refuse
    raise ValueError(f"the classifier has no label naming the positive class (its labels: {config.id2label}); "
                     "a sentiment classifier must name its labels, e.g. id2label={0: 'NEGATIVE', 1: 'POSITIVE'} "
                     "in config.json. Placeholder names such as LABEL_1 are refused: which one is positive "
                     "would be a guess.")


class NonFiniteRewardError(ValueError):
    pass


def log_odds(row: dict[str, float], label: str) -> float:
    """log p(label) - log p(not label) from one text's raw logits: for two labels, POSITIVE - NEGATIVE.

    A softmax classifier's logits share an offset it never trained (adding the same number to every logit
    changes no probability), so one raw logit alone carries that arbitrary offset; the difference does not."""
    others = [v for k, v in row.items() if k != label]
    if not others:
        return row[label]
    top = max(others)
    return row[label] - (top + math.log(sum(math.exp(v - top) for v in others)))


class SentimentReward:
    """The rater: scores texts with the classifier's log-odds of POSITIVE (POSITIVE logit - NEGATIVE logit),
    synthetic human feedback. Positive score = the classifier calls the text positive.

    Built on the transformers ``pipeline("sentiment-analysis")`` with ``function_to_apply="none"`` (raw
    logits) and ``top_k=None`` (every label), so the score is looked up by label name, never by index.
    """

    def __init__(self, model_or_path, tokenizer=None, batch_size: int = 64, max_length: int | None = None,
                 device: torch.device | str | None = None):
        from transformers import pipeline

        if isinstance(model_or_path, (str, Path)):
            tokenizer = tokenizer or load_tokenizer(model_or_path)
            model = load_classifier(model_or_path)
        else:
            model = model_or_path
            if tokenizer is None:
                raise ValueError("pass the classifier's tokenizer along with a model object")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        device = device or pick_device(verbose=False)
        model.eval()
        self.model, self.tokenizer = model, tokenizer
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 512)
        self.max_length = min(max_length or limit, limit)
        self.batch_size = batch_size
        try:
            self.label = model.config.id2label[positive_index(model.config)]
        except ValueError as err:
            where = f"{model_or_path}: " if isinstance(model_or_path, (str, Path)) else ""
            raise ValueError(where + str(err)) from None
        self.pipe = pipeline("sentiment-analysis", model=model, tokenizer=tokenizer, device=device)

    def all_logits(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Every label's raw logit for every text, e.g. ``{"NEGATIVE": 2.3, "POSITIVE": -2.1}``."""
        if isinstance(texts, str):
            texts = [texts]
        safe = [t if t.strip() else " " for t in texts]  # an empty review is still scored, not a crash
        with torch.no_grad():
            out = self.pipe(safe, top_k=None, function_to_apply="none", batch_size=self.batch_size,
                            truncation=True, max_length=self.max_length)
        return [{d["label"]: float(d["score"]) for d in row} for row in out]

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """The log-odds of POSITIVE for each text (:func:`log_odds`) as a float tensor; raises on NaN/inf."""
        scores = torch.tensor([log_odds(row, self.label) for row in self.all_logits(texts)], dtype=torch.float32)
        if not torch.isfinite(scores).all():
            bad = [i for i, s in enumerate(scores.tolist()) if not math.isfinite(s)]
            raise NonFiniteRewardError(f"the classifier returned NaN/inf for texts {bad[:5]}; check the model "
                                       "(a corrupt or diverged artifact: delete and rebuild it).")
        return scores


def sentiment_reward(preset: Preset | None = None) -> SentimentReward:
    """The preset's ``SentimentReward`` (training the tiny classifier first if needed)."""
    preset = preset or get_preset()
    return SentimentReward(ensure_classifier(preset), max_length=preset.classifier.max_length)
