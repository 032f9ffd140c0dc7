"""Prompts end at a whole word, held-out prompts mix positive and negative openings, and flip_rate counts
only the negative openings that were turned positive."""
import numpy as np
import pandas as pd
import pytest

from rlhf_helpers.config import get_preset
from rlhf_helpers.data import load_imdb, make_prompts, word_boundary_cut
from rlhf_helpers.evaluate import flip_rate, heldout_prompt_table, heldout_prompts


@pytest.fixture(scope="module")
def smoke_test_split():
    return load_imdb(get_preset("smoke"))["test"]


def test_word_boundary_cut_backs_off_to_a_whole_word(stand_in_tokenizer):
    tok = stand_in_tokenizer
    text = "This movie was wonderful, a great and moving story"
    ids = tok(text)["input_ids"]
    for k in range(2, 9):
        j = word_boundary_cut(text, ids, k, tok, min_tokens=2)
        prefix = tok.decode(ids[:j])
        assert text.startswith(prefix) and (len(prefix) == len(text) or text[len(prefix)].isspace()), prefix


def test_prompts_end_at_a_whole_word(smoke_test_split, stand_in_tokenizer):
    table = make_prompts(smoke_test_split, stand_in_tokenizer, seed=3)
    texts = {t[:200] for t in smoke_test_split["text"]}
    for prompt in table["prompt"]:
        assert any(t.startswith(prompt) and (len(t) == len(prompt) or t[len(prompt)].isspace()) for t in texts), \
            f"cut mid-word: {prompt!r}"
    lengths = np.array([len(ids) for ids in table["input_ids"]])
    assert lengths.min() >= 2


def test_prompt_tokens_are_a_prefix_of_prompt_plus_response(smoke_test_split, stand_in_tokenizer):
    """What TRL's DPO checks: a response that starts a new word leaves the prompt's tokens unchanged."""
    tok = stand_in_tokenizer
    prompts = make_prompts(smoke_test_split, tok, seed=1, limit=40)
    for prompt, ids in zip(prompts["prompt"], prompts["input_ids"]):
        assert tok(prompt + " great film")["input_ids"][: len(ids)] == ids


def test_heldout_prompts_are_balanced_and_keep_their_label(stand_in_tokenizer):
    preset = get_preset("smoke")
    table = heldout_prompt_table(preset, stand_in_tokenizer, n=40)
    assert list(table.columns) == ["prompt", "label"] and len(table) == 40
    assert 0.25 < table["label"].mean() < 0.75, "held-out prompts should open positive and negative reviews"
    assert heldout_prompts(preset, stand_in_tokenizer, n=40) == list(table["prompt"])  # the old call still works
    assert heldout_prompts(preset, stand_in_tokenizer, n=40, with_labels=True).equals(table)


def test_flip_rate_counts_only_negative_openings():
    samples = pd.DataFrame({"model": ["SFT"] * 4 + ["DPO"] * 4,
                            "positive": [False, True, True, False, True, True, True, False]})
    labels = [0, 0, 1, 1]  # prompts 0 and 1 open negative reviews
    rates = flip_rate(samples, labels)
    assert rates.to_dict() == {"SFT": 0.5, "DPO": 1.0}
    with pytest.raises(ValueError, match="negative"):
        flip_rate(samples, [1, 1, 1, 1])
    with pytest.raises(ValueError, match="one label per prompt"):
        flip_rate(samples, [0, 1])
