"""The tiny preset's own model kit: a tokenizer trained on IMDB (word-level or byte-level BPE) and a small
GPT-2-architecture policy (the real ``GPT2LMHeadModel`` class, just smaller).

Why word-level for a tiny writer: a byte-level BPE spells rare words out of fragments, and a model trained for
minutes combines fragments into words that do not exist ("criticakin", "horribleident"). A word-level
vocabulary holds only whole words (and punctuation), so every word the writer writes is a real one; a word
outside the vocabulary becomes the visible marker ``<unk>``, never a made-up spelling (docs/tuning.md compares
both, measured).
"""
from __future__ import annotations

from typing import Iterable

from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from . import quiet_libraries
from .config import ModelSizes

quiet_libraries()

EOS = "<|endoftext|>"
UNK = "\u2581<unk>"  # an ordinary (not special) token: it decodes to " <unk>", so an unknown word stays visible


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, kind: str = "bpe") -> PreTrainedTokenizerFast:
    """Train the tiny writer's tokenizer: ``kind="bpe"`` a GPT-2-style byte-level BPE, ``kind="word"`` a
    word-level vocabulary of the ``vocab_size`` most frequent lower-cased words and punctuation marks
    (:func:`train_word_tokenizer`). EOS doubles as BOS and PAD, as in GPT-2."""
    if kind == "word":
        return train_word_tokenizer(texts, vocab_size)
    if kind != "bpe":
        raise ValueError(f"tokenizer kind must be 'bpe' or 'word', got {kind!r}")
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS,
                                  unk_token=EOS, pad_token=EOS)
    tok.model_max_length = 1024
    return tok


def train_word_tokenizer(texts: Iterable[str], vocab_size: int = 16384) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: lower-cased words, each punctuation mark and each digit is one token.

    Spaces are kept as a leading ``\u2581`` on the word after them (SentencePiece's convention), so decoding
    gives back the text's spacing (a decoded text starts with a space: every text is given one, so that its first
    word is the same token as anywhere else). Words outside the vocabulary become :data:`UNK`, shown as ``<unk>``;
    SFT never uses ``<unk>`` as a target (sft.py), so the writer itself almost never writes it.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    # every text starts with a space (Prepend), so a review's first word is the same token as the word anywhere
    # else ("\u2581great"), not a rarer no-space variant that the vocabulary would have to hold twice
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Prepend("\u2581")])
    pre = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never"),
                                   pre_tokenizers.Punctuation(behavior="isolated"),
                                   pre_tokenizers.Digits(individual_digits=True)])
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(piece for piece, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    words = [w for w, c in counts.most_common() if c >= 2 and w not in (EOS, UNK)][: vocab_size - 2]
    vocab = {EOS: 0, UNK: 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre
    tok.decoder = decoders.Replace("\u2581", " ")
    tok.add_special_tokens([EOS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)
    fast.model_max_length = 1024
    return fast


def tiny_gpt2(tokenizer: PreTrainedTokenizerFast, sizes: ModelSizes) -> GPT2LMHeadModel:
    """A freshly initialised small GPT-2 sized by the preset."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=sizes.n_positions,
        n_embd=sizes.n_embd,
        n_layer=sizes.n_layer,
        n_head=sizes.n_head,
        resid_pdrop=sizes.dropout,
        embd_pdrop=sizes.dropout,
        attn_pdrop=sizes.dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)
