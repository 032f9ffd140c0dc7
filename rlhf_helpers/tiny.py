"""The tiny preset's own model kit: a byte-level BPE tokenizer trained on IMDB and a small
GPT-2-architecture policy (the real ``GPT2LMHeadModel`` class, just smaller)."""
from __future__ import annotations

from typing import Iterable

from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from . import quiet_libraries
from .config import ModelSizes

quiet_libraries()

EOS = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer; eos doubles as bos and pad, as in GPT-2."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS,
                                  unk_token=EOS, pad_token=EOS)
    tok.model_max_length = 1024
    return tok


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
