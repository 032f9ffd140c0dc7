import dataclasses

import numpy as np
import pytest

from rlhf_helpers.config import PRESETS, UnknownPresetError, get_preset, set_seed
from rlhf_helpers.data import LengthSampler, clean_review, load_imdb, make_prompts


def test_presets_exist_and_are_frozen():
    assert set(PRESETS) == {"tiny", "smoke", "gpt2"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["tiny"].name = "x"


def test_unknown_preset_lists_valid_ones(monkeypatch):
    monkeypatch.setenv("RLHF_PRESET", "nope")
    with pytest.raises(UnknownPresetError) as err:
        get_preset()
    for name in ("tiny", "smoke", "gpt2"):
        assert name in str(err.value)


def test_env_chooses_preset(monkeypatch):
    monkeypatch.setenv("RLHF_PRESET", "gpt2")
    assert get_preset().name == "gpt2"
    monkeypatch.setenv("RLHF_POLICY_MODEL", "/some/folder")
    assert get_preset().policy_model == "/some/folder"


def test_set_seed_repeats():
    import torch

    set_seed(3)
    a = torch.rand(3), np.random.rand()
    set_seed(3)
    b = torch.rand(3), np.random.rand()
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_clean_review_removes_html_breaks():
    assert clean_review("Great.<br /><br />Really  great.") == "Great. Really great."


def test_tiny_split_sizes_and_balance():
    ds = load_imdb(get_preset("tiny"))
    assert len(ds["test"]) == 2_500 and len(ds["validation"]) == 1_000 and 21_000 < len(ds["train"]) <= 21_500
    assert set(ds["train"].column_names) == {"text", "label"}
    for split in ("train", "validation", "test"):
        assert 0.45 < np.mean(ds[split]["label"]) < 0.55
    assert not any("<br" in t for t in ds["test"]["text"][:500])
    assert not set(ds["train"]["text"][:2000]) & set(ds["test"]["text"])


def test_split_is_deterministic():
    a, b = load_imdb(get_preset("smoke")), load_imdb(get_preset("smoke"))
    assert a["train"]["text"] == b["train"]["text"] and a["test"]["text"] == b["test"]["text"]
    assert len(a["train"]) == 600 and len(a["test"]) == 120


def test_prompts_have_2_to_8_tokens_and_are_seeded(stand_in_tokenizer):
    ds = load_imdb(get_preset("smoke"))["test"]
    p1 = make_prompts(ds, stand_in_tokenizer, seed=1)
    p2 = make_prompts(ds, stand_in_tokenizer, seed=1)
    assert p1["prompt"] == p2["prompt"]
    lengths = [len(ids) for ids in p1["input_ids"]]
    # prompts end at a whole word, so a few run past 8 tokens (this stand-in tokenizer splits IMDB words finely)
    assert min(lengths) >= 2 and np.median(lengths) <= 8 and len(set(lengths)) > 3
    assert all(len(t) > 200 for t in ds.filter(lambda r: len(r["text"]) > 200)["text"])


def test_length_sampler_range_and_errors():
    s = LengthSampler(4, 9, seed=0)
    draws = [s() for _ in range(500)]
    assert min(draws) == 4 and max(draws) == 9
    assert [LengthSampler(4, 9, seed=5)() for _ in range(3)] == [LengthSampler(4, 9, seed=5)() for _ in range(3)]
    with pytest.raises(ValueError, match="larger than max_len"):
        LengthSampler(10, 5)
    with pytest.raises(ValueError, match="at least 1"):
        LengthSampler(0, 5)


def test_tokenizer_round_trip(tmp_path):
    from rlhf_helpers.models import load_tokenizer
    from rlhf_helpers.tiny import train_tokenizer

    texts = ["A fine film, full of heart.", "Dreadful! I want my money back."] * 20
    tok = train_tokenizer(texts, vocab_size=280)
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    for t in texts[:2] + ["unseen wörds with ünïcode"]:
        assert again.decode(again(t)["input_ids"]) == t
    assert again.eos_token == again.pad_token == "<|endoftext|>"
