"""The auditor (bag of words on Rotten Tomatoes, the independent grader), evaluate_policies' extra columns
for it and the auditor-gap table (smoke sizes; seconds)."""
import numpy as np
import pandas as pd
import pytest
import torch

from rlhf_helpers.auditor import (BagOfWordsSentiment, bag_of_words, ensure_second_judge, load_auditor,
                                  load_rotten_tomatoes, second_judge_reward)
from rlhf_helpers.config import get_preset
from rlhf_helpers.guardrail import auditor_gap, frontier_points, judge_gap


def toy_auditor() -> BagOfWordsSentiment:
    return BagOfWordsSentiment(["great", "boring", "not good"], torch.tensor([2.0, -1.5, -3.0]), 0.25)


def test_bag_of_words_lowercases_and_adds_word_pairs():
    assert bag_of_words("Not GOOD, not good!") == {"not", "good", "!", "not good", "good not", "good !"}
    assert bag_of_words("It's fine", bigrams=False) == {"it's", "fine"}
    assert bag_of_words("") == set()


def test_scores_are_log_odds_by_presence_and_look_like_a_sentiment_reward():
    auditor = toy_auditor()
    scores = auditor(["Great great film", "boring", "not good at all", "", "unknown words"])
    assert torch.allclose(scores, torch.tensor([2.25, -1.25, -3.0 + 0.25 + 0.0, 0.25, 0.25]))  # presence, not counts
    logits = auditor.all_logits(["great", "boring"])
    assert auditor.label == "POSITIVE" and logits[0] == {"NEGATIVE": 0.0, "POSITIVE": 2.25}
    assert max(logits[1], key=logits[1].get) == "NEGATIVE"
    assert auditor.accuracy(["great", "boring"], [1, 0]) == 1.0
    top = auditor.top_features(1)
    assert list(top["feature"]) == ["great", "not good"]


def test_save_and_load_round_trip(tmp_path):
    auditor = toy_auditor()
    auditor.save(tmp_path / "j")
    again = BagOfWordsSentiment.load(tmp_path / "j")
    texts = ["great but boring", "not good", "x"]
    assert torch.equal(auditor(texts), again(texts)) and again.features == auditor.features


def test_rotten_tomatoes_split_is_balanced_disjoint_and_seeded():
    train, held = load_rotten_tomatoes(0.1, seed=0)
    assert len(train) + len(held) > 8400 and abs(len(held) - 0.1 * (len(train) + len(held))) <= 1
    assert not set(train["text"]) & set(held["text"])
    assert 0.45 < train["label"].mean() < 0.55 and 0.4 < held["label"].mean() < 0.6
    assert load_rotten_tomatoes(0.1, seed=0)[1]["text"].tolist() == held["text"].tolist()


def test_auditor_stage_builds_reports_accuracy_and_is_reused():
    from rlhf_helpers.models import read_meta

    preset = get_preset("smoke")
    path = ensure_second_judge(preset)
    meta = read_meta(path)
    m = meta["metrics"]
    assert meta["stage"] == "judge2" and m["rt_heldout"] > 800 and m["imdb_test"] > 0
    assert m["rt_heldout_accuracy"] > 0.55  # well above chance even on the smoke subset
    assert 0.0 <= m["imdb_test_accuracy"] <= 1.0
    auditor = load_auditor(preset)
    assert auditor(["a wonderful, delightful film"]).item() > auditor(["a dull, boring mess"]).item()
    assert type(second_judge_reward(preset)) is type(auditor)  # the old name still loads it
    assert ensure_second_judge(preset) == path and read_meta(path)["saved_at"] == meta["saved_at"]


def test_evaluate_policies_adds_auditor_columns_and_stays_backward_compatible(stand_in_lm_dir):
    from rlhf_helpers.evaluate import evaluate_policies
    from rlhf_helpers.models import load_pretrained

    pair = load_pretrained(stand_in_lm_dir)
    scorer = toy_auditor()
    prompts = ["great movie", "boring film", "it was"]
    plain, _ = evaluate_policies({"SFT": pair}, scorer, pair, prompts, 2, 3, seed=0)
    both, samples = evaluate_policies({"SFT": pair}, scorer, pair, prompts, 2, 3, seed=0,
                                      judges={"auditor": scorer})
    assert "reward_auditor" not in plain and {"reward_auditor", "positive_fraction_auditor"} <= set(both)
    pd.testing.assert_frame_equal(plain, both[plain.columns])  # the extra scorer changes nothing else
    assert both.loc["SFT", "reward_auditor"] == pytest.approx(both.loc["SFT", "reward"])  # same scorer, same texts
    assert {"reward_auditor", "positive_auditor"} <= set(samples)


def test_auditor_gap_and_auditor_frontier():
    summary = pd.DataFrame({"positive_fraction": [0.4, 0.9, 0.3], "positive_fraction_auditor": [0.5, 0.6, 0.5],
                            "reward": [0.1, 1.0, 0.0], "reward_auditor": [0.2, 0.3, 0.1], "kl": [0.0, 5.0, 1.0]},
                           index=pd.Index(["SFT", "PPO final", "DPO β=0.1"], name="model"))
    gap = auditor_gap(summary)
    assert gap.loc["PPO final", "gain, rater"] == pytest.approx(50)
    assert gap.loc["PPO final", "gain, auditor"] == pytest.approx(10)
    assert list(gap.columns[:2]) == ["% positive, rater", "% positive, auditor"]
    assert gap.loc["PPO final", "kept"] == pytest.approx(0.2) and np.isnan(gap.loc["DPO β=0.1", "kept"])
    with pytest.raises(KeyError, match="judges="):
        auditor_gap(summary.drop(columns="positive_fraction_auditor"))
    old = judge_gap(summary.rename(columns=lambda c: c.replace("auditor", "judge2")), "judge2")  # the old name
    assert old["kept"].equals(gap["kept"])
    points = frontier_points(summary, reward="reward_auditor")
    assert points["reward"].tolist() == [0.2, 0.3, 0.1] and points["method"].tolist() == ["SFT", "PPO", "DPO"]


def test_dominated_by_lists_the_best_of_n_points_that_beat_a_policy():
    from rlhf_helpers.guardrail import dominated_by

    points = pd.DataFrame({"method": ["SFT", "GRPO", "PPO", "best-of-n", "best-of-n"],
                           "point": ["", "", "final", "n=1", "n=16"],
                           "kl": [0.0, 3.5, 5.0, 0.0, 1.8], "reward": [0.2, 1.2, 1.6, 0.2, 1.3]})
    table = dominated_by(points)
    assert list(table.index) == ["GRPO", "PPO final"]
    assert table.loc["GRPO", "dominated by best-of-n"] == "n=16" and table.loc["PPO final", "dominated by best-of-n"] == "-"
