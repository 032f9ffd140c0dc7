import math
"""SentimentReward's label lookup and guards, the gpt2 preset's code path with local stand-ins, the
reward-model round trip and same-seed determinism of the training stages (smoke sizes)."""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from rlhf_helpers.rater import NonFiniteRewardError, SentimentReward, positive_index


def _swap_labels(model):
    """The same classifier with its two labels stored in the other order."""
    swapped = copy.deepcopy(model)
    head = swapped.classifier
    with torch.no_grad():
        head.weight.copy_(head.weight.flip(0))
        head.bias.copy_(head.bias.flip(0))
    swapped.config.id2label = {0: "POSITIVE", 1: "NEGATIVE"}
    swapped.config.label2id = {"POSITIVE": 0, "NEGATIVE": 1}
    return swapped


TEXTS = ["A wonderful film.", "Awful, boring, bad.", "", "   ", "It was a movie about a dog and a man."]


def test_positive_logit_is_found_by_name(stand_in_classifier_dir):
    reward = SentimentReward(stand_in_classifier_dir)
    swapped = SentimentReward(_swap_labels(reward.model), tokenizer=reward.tokenizer)
    assert positive_index(reward.model.config) == 1 and positive_index(swapped.model.config) == 0
    assert torch.allclose(reward(TEXTS), swapped(TEXTS), atol=1e-5)
    logits = reward.all_logits(TEXTS[:1])[0]
    assert set(logits) == {"NEGATIVE", "POSITIVE"}
    # the reward is the log-odds: the shared offset of the two logits cancels, and > 0 means "positive"
    assert reward(TEXTS[:1]).item() == pytest.approx(logits["POSITIVE"] - logits["NEGATIVE"], abs=1e-6)


def test_log_odds_ignores_the_shared_offset():
    from rlhf_helpers.rater import log_odds

    row = {"NEGATIVE": 1.0, "POSITIVE": 3.0}
    shifted = {k: v + 7.5 for k, v in row.items()}
    assert log_odds(row, "POSITIVE") == pytest.approx(2.0) == pytest.approx(log_odds(shifted, "POSITIVE"))
    three = {"NEGATIVE": 0.0, "NEUTRAL": 0.0, "POSITIVE": 0.0}
    assert log_odds(three, "POSITIVE") == pytest.approx(-math.log(2))  # p = 1/3 against 2/3


def test_batching_equals_one_by_one_and_empty_strings_are_scored(stand_in_classifier_dir):
    reward = SentimentReward(stand_in_classifier_dir, batch_size=4)
    batched = reward(TEXTS)
    single = torch.cat([reward([t]) for t in TEXTS])
    assert batched.shape == (5,) and torch.allclose(batched, single, atol=1e-5)


def test_long_text_is_truncated_not_crashing(stand_in_classifier_dir):
    reward = SentimentReward(stand_in_classifier_dir)
    assert torch.isfinite(reward(["great " * 2000])).all()


def test_nan_score_raises_clearly(stand_in_classifier_dir):
    reward = SentimentReward(stand_in_classifier_dir)
    with torch.no_grad():
        reward.model.classifier.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteRewardError, match="NaN"):
        reward(["fine"])


def test_classifier_without_positive_label_is_refused(stand_in_classifier_dir):
    from rlhf_helpers.models import load_classifier

    model = load_classifier(stand_in_classifier_dir)
    model.config.id2label = {0: "cat", 1: "dog"}
    with pytest.raises(ValueError, match="POSITIVE"):
        positive_index(model.config)


def test_generation_refuses_prompts_beyond_the_context(stand_in_lm_dir):
    from rlhf_helpers.generation import generate_responses
    from rlhf_helpers.models import load_pretrained

    model, tok = load_pretrained(stand_in_lm_dir)  # context 64
    with pytest.raises(ValueError, match="context"):
        generate_responses(model, tok, [torch.arange(60)], [10])
    with pytest.raises(ValueError, match="empty"):
        generate_responses(model, tok, [torch.tensor([], dtype=torch.long)], [3])


def test_gpt2_preset_code_path_with_local_stand_ins(stand_in_lm_dir, stand_in_classifier_dir, tmp_path,
                                                    monkeypatch):
    """The gpt2 preset fine-tunes a GPT2LMHeadModel loaded by path and scores with a DistilBERT classifier:
    the same code that loads `gpt2` and `lvwerra/distilbert-imdb` from the hub."""
    from datasets import DatasetDict

    from rlhf_helpers.config import SFTSettings, get_preset
    from rlhf_helpers.data import load_imdb
    from rlhf_helpers.models import load_pretrained, read_meta
    from rlhf_helpers.rater import ensure_classifier, sentiment_reward
    from rlhf_helpers.sft import ensure_sft

    small = load_imdb(get_preset("smoke"))
    data_dir = tmp_path / "imdb"
    DatasetDict(train=small["train"].select(range(64)), test=small["test"].select(range(16))).save_to_disk(data_dir)
    monkeypatch.setenv("RLHF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RLHF_POLICY_MODEL", str(stand_in_lm_dir))
    monkeypatch.setenv("RLHF_SENTIMENT_MODEL", str(stand_in_classifier_dir))
    monkeypatch.setenv("RLHF_DATASET", str(data_dir))
    preset = get_preset("gpt2")
    preset = preset.replace(sft=SFTSettings(max_length=32, max_steps=2, batch_size=4, eval_reviews=8, save_steps=2))
    folder = ensure_sft(preset)
    model, tok = load_pretrained(folder)
    assert type(model).__name__ == "GPT2LMHeadModel" and read_meta(folder)["base"] == str(stand_in_lm_dir)
    assert ensure_classifier(preset) == str(stand_in_classifier_dir)  # not trained: used as given
    assert sentiment_reward(preset)(["a fine film"]).shape == (1,)


def test_reward_model_round_trip(tmp_path, monkeypatch):
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.models import read_meta
    from rlhf_helpers.pairs import ensure_pairs
    from rlhf_helpers.reward_model import ensure_reward_model, load_reward_model, reward_model_scores

    monkeypatch.setenv("RLHF_HOME", str(tmp_path))
    preset = get_preset("smoke")
    folder = ensure_reward_model(preset)
    model, tok = load_reward_model(folder)
    pairs = ensure_pairs(preset)["test"]
    texts = [p + c for p, c in zip(pairs["prompt"], pairs["chosen"])]
    assert model.config.num_labels == 1
    again, _ = load_reward_model(folder)
    assert torch.equal(reward_model_scores(model, tok, texts), reward_model_scores(again, tok, texts))
    acc = read_meta(folder)["metrics"]["heldout_pairwise_accuracy"]
    assert 0.0 <= acc <= 1.0
    assert all(c > r for c, r in zip(pairs["chosen_score"], pairs["rejected_score"]))


DETERMINISM_SCRIPT = """
import json
from rlhf_helpers.config import get_preset
from rlhf_helpers.models import read_meta
from rlhf_helpers.sft import ensure_sft
from rlhf_helpers.rater import ensure_classifier
from rlhf_helpers.ppo import ensure_ppo
from rlhf_helpers.reward_model import ensure_reward_model
from rlhf_helpers.dpo import ensure_dpo
from rlhf_helpers.grpo import ensure_grpo, ensure_rloo
p = get_preset("smoke")
out = {}
for stage, fn in (("sft", ensure_sft), ("classifier", ensure_classifier), ("reward_model", ensure_reward_model),
                  ("ppo", ensure_ppo), ("dpo", ensure_dpo), ("grpo", ensure_grpo), ("rloo", ensure_rloo)):
    meta = read_meta(fn(p))
    out[stage] = [{k: v for k, v in e.items() if "time" not in k and "runtime" not in k and "per_second" not in k}
                  for e in meta["log_history"]]
    out[stage + "_metrics"] = {k: v for k, v in meta["metrics"].items()
                               if "seconds" not in k and "per_second" not in k and k != "final"}
print("RESULT" + json.dumps(out))
"""


def test_same_seed_same_metrics_across_runs(tmp_path):
    """Two fresh runs (separate processes and artifact folders) give identical training logs for every
    stage: SFT, classifier, reward model, PPO, DPO, GRPO and RLOO."""
    results = []
    for run in ("a", "b"):
        env = {**os.environ, "RLHF_HOME": str(tmp_path / run)}
        res = subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT], env=env, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        results.append(json.loads(res.stdout.split("RESULT", 1)[1]))
    assert results[0] == results[1]


def test_reward_only_re_exports_the_four_role_modules():
    """Notebook 02's code lives in one module per role (issue #22); ``rlhf_helpers.reward`` only re-exports it, so
    no function exists twice and old imports keep working."""
    import ast
    import inspect

    from rlhf_helpers import auditor, pairs, rater, reward, reward_model

    roles = (rater, pairs, reward_model, auditor)
    assert not [n for n in ast.parse(inspect.getsource(reward)).body
                if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                or isinstance(n, ast.Assign) and [t.id for t in n.targets] != ["__all__"]], "reward.py only re-exports"
    defined = [n.name for m in roles for n in ast.parse(inspect.getsource(m)).body
               if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert len(defined) == len(set(defined)), "a function or class is defined in two role modules"
    for name in reward.__all__:
        assert any(getattr(m, name, None) is getattr(reward, name) for m in roles), name
    public = {n for n in defined if not n.startswith("_")}
    assert public <= set(reward.__all__), public - set(reward.__all__)
    assert auditor.load_auditor is auditor.auditor is auditor.second_judge_reward
    assert auditor.ensure_auditor is auditor.ensure_second_judge and auditor.train_auditor is auditor.train_second_judge
