"""Stand-in models shared by the unit tests (the environment is set in the root conftest.py)."""
from pathlib import Path

import pytest

SENTENCES = [
    "This movie was wonderful, a great and moving story with brilliant acting.",
    "This film was terrible, boring and awful; the worst plot I have seen.",
    "I loved the music and the characters, a truly excellent and fun film.",
    "A waste of time: bad acting, poor writing and a dull ending.",
] * 8


@pytest.fixture(scope="session")
def stand_in_tokenizer():
    """A small byte-level BPE tokenizer trained on a few sentences (no network)."""
    from rlhf_helpers.tiny import train_tokenizer

    return train_tokenizer(SENTENCES, vocab_size=300)


@pytest.fixture(scope="session")
def stand_in_lm_dir(tmp_path_factory, stand_in_tokenizer):
    """A small model of the real GPT2LMHeadModel class saved to a folder (a local stand-in for gpt2)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = stand_in_tokenizer
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    folder = tmp_path_factory.mktemp("stand_in_gpt2")
    GPT2LMHeadModel(cfg).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def stand_in_classifier_dir(tmp_path_factory, stand_in_tokenizer):
    """A small DistilBERT sentiment classifier (the class of lvwerra/distilbert-imdb) with named labels."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    tok = stand_in_tokenizer
    cfg = DistilBertConfig(vocab_size=len(tok), dim=32, hidden_dim=64, n_layers=1, n_heads=2,
                           max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                           id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    folder = tmp_path_factory.mktemp("stand_in_distilbert")
    DistilBertForSequenceClassification(cfg).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def eos_stand_in_dir(tmp_path_factory, stand_in_tokenizer):
    """A GPT-2 stand-in built to expose sample-vs-score mismatches: position embeddings large enough that a
    shifted position changes the log-probs (as in GPT-2 itself), EOS sampled often (about a third of the
    time, through the final layer norm's bias), GPT-2's dropout of 0.1, and a generation_config.json that
    stores the settings which must never leak into sampling (min_new_tokens, top_k, repetition_penalty)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    tok = stand_in_tokenizer
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        model.transformer.wpe.weight.normal_(0.0, 1.0)
        w = model.transformer.wte.weight[tok.eos_token_id]
        model.transformer.ln_f.bias.copy_(5.0 * w / w.pow(2).sum())
    model.generation_config.do_sample = True
    model.generation_config.min_new_tokens = 4
    model.generation_config.top_k = 2
    model.generation_config.repetition_penalty = 1.5
    folder = tmp_path_factory.mktemp("eos_stand_in_gpt2")
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
