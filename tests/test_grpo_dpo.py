"""Notebooks 04/05: the TRL reward-function wrapper, DPO's preference pairs, and the KL measure."""
import math

import numpy as np
import pytest
import torch

from rlhf_helpers.evaluate import sequence_kl, sequence_logprobs
from rlhf_helpers.generation import generate_responses
from rlhf_helpers.grpo import sentiment_reward_func
from rlhf_helpers.pairs import build_preference_pairs, rank_pairs
from rlhf_helpers.rater import SentimentReward

POSITIVE_TEXTS = ["This movie was wonderful, a great and moving story with brilliant acting.",
                  "I loved the music and the characters, a truly excellent and fun film."]
NEGATIVE_TEXTS = ["This film was terrible, boring and awful; the worst plot I have seen.",
                  "A waste of time: bad acting, poor writing and a dull ending."]


def _stand_in_classifier(tokenizer, id2label: dict[int, str], train_steps: int = 0):
    """A tiny GPT2ForSequenceClassification; with ``train_steps`` it learns the four sentences' sentiment."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                     pad_token_id=tokenizer.pad_token_id, num_labels=2, id2label=id2label,
                     label2id={v: k for k, v in id2label.items()})
    model = GPT2ForSequenceClassification(cfg)
    if train_steps:
        pos = [k for k, v in id2label.items() if v == "POSITIVE"][0]
        texts = POSITIVE_TEXTS + NEGATIVE_TEXTS
        labels = torch.tensor([pos] * 2 + [1 - pos] * 2)
        enc = tokenizer(texts, return_tensors="pt", padding=True)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(train_steps):
            loss = model(**enc, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained_reward(stand_in_tokenizer):
    """A ``SentimentReward`` on a stand-in classifier that has learned which sentences are positive."""
    model = _stand_in_classifier(stand_in_tokenizer, {0: "NEGATIVE", 1: "POSITIVE"}, train_steps=40)
    return SentimentReward(model, stand_in_tokenizer, device="cpu")


# --------------------------------------------------------------------------------------------
# The reward function handed to TRL's GRPO/RLOO trainers
# --------------------------------------------------------------------------------------------
def test_reward_function_scores_positive_above_negative(trained_reward):
    fn = sentiment_reward_func(trained_reward)
    prompts = [t[:12] for t in POSITIVE_TEXTS + NEGATIVE_TEXTS]
    completions = [t[12:] for t in POSITIVE_TEXTS + NEGATIVE_TEXTS]
    scores = fn(prompts=prompts, completions=completions)
    assert isinstance(scores, list) and all(isinstance(s, float) for s in scores)
    assert min(scores[:2]) > max(scores[2:])


def test_reward_function_reads_positive_label_by_name(stand_in_tokenizer):
    """Whatever the label order, the wrapper returns the log-odds of POSITIVE (TRL on the bare model reads index 0)."""
    texts = POSITIVE_TEXTS + NEGATIVE_TEXTS
    enc = stand_in_tokenizer(texts, return_tensors="pt", padding=True)
    for id2label, pos in (({0: "NEGATIVE", 1: "POSITIVE"}, 1), ({0: "POSITIVE", 1: "NEGATIVE"}, 0)):
        model = _stand_in_classifier(stand_in_tokenizer, id2label)
        with torch.no_grad():
            logits = model(**enc).logits
        got = sentiment_reward_func(SentimentReward(model, stand_in_tokenizer, device="cpu"))([""] * 4, texts)
        log_odds = (logits[:, pos] - logits[:, 1 - pos]).numpy()
        assert np.allclose(got, log_odds, atol=1e-4)
        assert not np.allclose(got, -log_odds, atol=1e-4)


def test_reward_function_scores_prompt_plus_completion(trained_reward):
    fn = sentiment_reward_func(trained_reward)
    whole = trained_reward([POSITIVE_TEXTS[0]]).tolist()
    split = fn(prompts=[POSITIVE_TEXTS[0][:20]], completions=[POSITIVE_TEXTS[0][20:]])
    assert np.allclose(whole, split, atol=1e-5)
    with pytest.raises(ValueError):  # a missing completion must not be silently dropped
        fn(prompts=["a", "b"], completions=["c"])


def test_reward_function_batch_equals_one_by_one(trained_reward):
    fn = sentiment_reward_func(trained_reward)
    texts = POSITIVE_TEXTS + NEGATIVE_TEXTS + ["ok", "Great!"]  # very different lengths: padding matters
    prompts, completions = [t[:5] for t in texts], [t[5:] for t in texts]
    batched = fn(prompts=prompts, completions=completions)
    single = [fn(prompts=[p], completions=[c])[0] for p, c in zip(prompts, completions)]
    assert np.allclose(batched, single, atol=1e-4)


# --------------------------------------------------------------------------------------------
# DPO's preference pairs
# --------------------------------------------------------------------------------------------
def test_rank_pairs_keeps_best_and_worst_above_margin():
    pairs = rank_pairs(["p1", "p2", "p3"], [["a", "b", "c"], ["d", "e"], ["f", "g"]],
                       [[0.1, 2.0, -1.0], [0.3, 0.5], [1.0, 1.0]], margin=1.0)
    assert pairs["prompt"] == ["p1"]  # p2's gap 0.2 < margin; p3 is a tie
    assert (pairs["chosen"], pairs["rejected"]) == (["b"], ["c"])
    assert math.isclose(pairs["chosen_score"][0] - pairs["rejected_score"][0], 3.0)
    everything = rank_pairs(["p2", "p3"], [["d", "e"], ["f", "g"]], [[0.3, 0.5], [1.0, 1.0]], margin=0.0)
    assert everything["prompt"] == ["p2"]  # a tie never makes a pair, even with margin 0
    with pytest.raises(ValueError):
        rank_pairs(["p"], [["a", "b"]], [[0.0, 1.0]], margin=-1.0)


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_built_pairs_respect_margin_and_scores(stand_in_lm_dir, trained_reward, margin):
    from rlhf_helpers.models import load_pretrained

    policy, tok = load_pretrained(stand_in_lm_dir)
    prompts = ["This movie was", "A waste", "I loved the", "This film", "The acting"] * 2
    pairs = build_preference_pairs(policy, tok, prompts, trained_reward, samples_per_prompt=3, margin=margin,
                                   min_len=2, max_len=6, seed=0)
    assert set(pairs.column_names) >= {"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}
    assert len(pairs) <= len(prompts)
    if margin == 0:
        assert len(pairs) > 0
    gaps = np.array(pairs["chosen_score"]) - np.array(pairs["rejected_score"])
    assert (gaps >= margin).all() and (gaps > 0).all()
    if len(pairs):  # the stored scores are the reward of prompt + response
        rescored = trained_reward([p + c for p, c in zip(pairs["prompt"], pairs["chosen"])]).numpy()
        assert np.allclose(rescored, pairs["chosen_score"], atol=1e-4)


def test_build_pairs_needs_two_samples(stand_in_lm_dir, trained_reward):
    from rlhf_helpers.models import load_pretrained

    policy, tok = load_pretrained(stand_in_lm_dir)
    with pytest.raises(ValueError):
        build_preference_pairs(policy, tok, ["x"], trained_reward, samples_per_prompt=1)


@pytest.mark.slow
def test_smoke_dpo_pairs_respect_preset_margin():
    """The artifact notebook 04 trains on (builds the smoke SFT policy and classifier in the test home)."""
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.dpo import ensure_dpo_pairs

    preset = get_preset("smoke")
    pairs = ensure_dpo_pairs(preset)
    assert 0 < len(pairs) <= preset.dpo.n_prompts
    gaps = np.array(pairs["chosen_score"]) - np.array(pairs["rejected_score"])
    assert (gaps >= preset.dpo.margin).all() and (gaps > 0).all()


# --------------------------------------------------------------------------------------------
# The KL measure used by every evaluation table
# --------------------------------------------------------------------------------------------
def _queries_and_responses(model, tok):
    torch.manual_seed(0)
    queries = [torch.tensor(tok(p)["input_ids"]) for p in ["This movie", "A waste of time: bad", "I"]]
    return queries, generate_responses(model, tok, queries, [5, 2, 7])


def test_sequence_kl_of_a_model_against_itself_is_zero(stand_in_lm_dir):
    from rlhf_helpers.models import load_pretrained

    model, tok = load_pretrained(stand_in_lm_dir)
    queries, responses = _queries_and_responses(model, tok)
    kl = sequence_kl(model, model, queries, responses, tok.pad_token_id)
    assert kl.shape == (3,)
    assert torch.allclose(kl, torch.zeros(3), atol=1e-5)


def test_sequence_kl_is_nonzero_for_a_changed_model(stand_in_lm_dir):
    from rlhf_helpers.models import load_pretrained

    model, tok = load_pretrained(stand_in_lm_dir)
    other, _ = load_pretrained(stand_in_lm_dir)
    with torch.no_grad():
        other.lm_head.weight.mul_(3.0)  # sharper next-token distributions
    queries, responses = _queries_and_responses(model, tok)
    kl = sequence_kl(other, model, queries, responses, tok.pad_token_id)
    assert (kl.abs() > 1e-3).all()


def test_sequence_logprobs_batched_equals_one_by_one(stand_in_lm_dir):
    from rlhf_helpers.models import load_pretrained

    model, tok = load_pretrained(stand_in_lm_dir)
    queries, responses = _queries_and_responses(model, tok)
    batched = sequence_logprobs(model, queries, responses, tok.pad_token_id)
    single = torch.cat([sequence_logprobs(model, [q], [r], tok.pad_token_id) for q, r in zip(queries, responses)])
    assert torch.allclose(batched, single, atol=1e-4)
    assert (batched < 0).all()


@pytest.mark.slow
def test_smoke_dpo_round_2_samples_from_round_1_and_trains_on_from_it():
    """Iterative DPO: round 2's pairs come from round 1's policy on new prompts; round 2 starts from round 1."""
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.dpo import ensure_dpo, ensure_dpo_pairs, ensure_dpo_rounds, round_prompts
    from rlhf_helpers.models import load_pretrained, load_tokenizer, read_meta

    preset = get_preset("smoke")
    assert preset.dpo.rounds == 2
    folders = ensure_dpo_rounds(preset)
    assert list(folders) == [1, 2] and folders[1].parent.name == "dpo" and folders[2].parent.name == "dpo_round2"
    meta2 = read_meta(folders[2])
    assert meta2["round"] == 2 and meta2["started_from"] == str(folders[1])
    assert read_meta(preset, "dpo_pairs_round2")["sampled_from"] == str(folders[1])
    tok = load_tokenizer(folders[1])
    first, second = round_prompts(preset, tok, 1), round_prompts(preset, tok, 2)
    assert len(first) == len(second) == preset.dpo.n_prompts
    pairs1, pairs2 = ensure_dpo_pairs(preset), ensure_dpo_pairs(preset, round_no=2)
    assert set(pairs2["prompt"]) <= set(second) and set(pairs1["prompt"]) <= set(first)
    assert first != second  # the next block of the same shuffle: other reviews' openings
    # round 2 moved on from round 1 (same architecture, other weights)
    w1, w2 = (load_pretrained(f)[0].transformer.wte.weight for f in (folders[1], folders[2]))
    assert w1.shape == w2.shape and not torch.equal(w1, w2)
    with pytest.raises(ValueError, match="rounds"):
        ensure_dpo(preset, round_no=3)
    with pytest.raises(ValueError, match="beta"):
        ensure_dpo(preset, beta=0.5, round_no=2)
