"""PPO's plug-in points (issue #23): a learner's own rewards, advantages and losses drive the training.

With the package's parts a run is what it always was; a learner's correct parts, written here in another style
(loops over sequences and tokens), reproduce that run exactly; a wrong part gives a visibly different log.
"""
from __future__ import annotations

import inspect
import json

import pytest
import torch

from rlhf_helpers.ppo import (PPOConfig, PPOParts, PPOTrainer, clipped_policy_loss, clipped_value_loss,
                              draw_prompts_and_lengths, gae_advantages, per_token_rewards, ppo_loop, train_ppo)

PROMPTS = ["This movie", "I watched it and", "The actors", "A film that", "Bad", "It is a long story about"] * 2


def score_by_length(texts):
    """A reward that needs no model: longer texts score higher (responses of mixed lengths, so padding)."""
    return [len(t) / 40.0 - 1.0 for t in texts]


# --- a learner's correct parts, written with loops (not the package's vectorised code) -----------------------
def loop_rewards(scores, logprobs, ref_logprobs, mask, kl_coef):
    rewards, kl = torch.zeros_like(logprobs), torch.zeros_like(logprobs)
    for i in range(logprobs.shape[0]):
        n = int(mask[i].sum())
        for t in range(n):
            kl[i, t] = logprobs[i, t] - ref_logprobs[i, t]
            rewards[i, t] = -kl_coef * kl[i, t]
        rewards[i, n - 1] += scores[i]
    return rewards, kl


def loop_gae(rewards, values, mask, gamma, lam):
    advantages = torch.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        n, running = int(mask[i].sum()), 0.0
        for t in reversed(range(n)):
            next_value = values[i, t + 1] if t + 1 < n else 0.0
            delta = rewards[i, t] + gamma * next_value - values[i, t]
            running = delta + gamma * lam * running
            advantages[i, t] = running
    return advantages, (advantages + values) * mask


def loop_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange):
    terms, clipped = [], []
    for i, t in mask.nonzero().tolist():
        ratio = torch.exp(logprobs[i, t] - old_logprobs[i, t])
        a, b = -advantages[i, t] * ratio, -advantages[i, t] * ratio.clamp(1 - cliprange, 1 + cliprange)
        terms.append(torch.maximum(a, b))
        clipped.append(float(b > a))
    return torch.stack(terms).mean(), torch.tensor(sum(clipped) / len(clipped))


def loop_value_loss(values, old_values, returns, mask, cliprange_value):
    terms, clipped = [], []
    for i, t in mask.nonzero().tolist():
        v_clip = old_values[i, t] + (values[i, t] - old_values[i, t]).clamp(-cliprange_value, cliprange_value)
        a, b = (values[i, t] - returns[i, t]) ** 2, (v_clip - returns[i, t]) ** 2
        terms.append(torch.maximum(a, b))
        clipped.append(float(b > a))
    return 0.5 * torch.stack(terms).mean(), torch.tensor(sum(clipped) / len(clipped))


# --- deliberately wrong parts ----------------------------------------------------------------------------------
def advantage_sign_flipped(logprobs, old_logprobs, advantages, mask, cliprange):
    return clipped_policy_loss(logprobs, old_logprobs, -advantages, mask, cliprange)


def kl_not_masked(scores, logprobs, ref_logprobs, mask, kl_coef):
    kl = logprobs - ref_logprobs  # padding positions too
    rewards = -kl_coef * kl
    rewards[torch.arange(len(scores)), mask.sum(1).long() - 1] += scores
    return rewards, kl


def mask_ignored_in_loss(logprobs, old_logprobs, advantages, mask, cliprange):
    return clipped_policy_loss(logprobs, old_logprobs, advantages, torch.ones_like(mask), cliprange)


def _config(**overrides) -> PPOConfig:
    return PPOConfig(**{"batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 2, "learning_rate": 1e-3, "seed": 0,
                        **overrides})


def _run(folder, out, parts=None) -> list[dict]:
    history = train_ppo(folder, score_by_length, PROMPTS, _config(), 2, 2, 6, out, save_every=0, parts=parts)
    return [{k: v for k, v in h.items() if not k.startswith("time")} for h in history]


def _max_difference(a: list[dict], b: list[dict]) -> float:
    assert [sorted(x) for x in a] == [sorted(y) for y in b]
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x)


@pytest.fixture(scope="module")
def package_log(stand_in_lm_dir, tmp_path_factory):
    return _run(stand_in_lm_dir, tmp_path_factory.mktemp("ppo_package"))


def test_default_parts_are_the_package_functions():
    parts = PPOParts()
    assert (parts.rewards, parts.advantages, parts.policy_loss, parts.value_loss) == (
        per_token_rewards, gae_advantages, clipped_policy_loss, clipped_value_loss)


def test_learners_correct_parts_reproduce_the_package_run(stand_in_lm_dir, tmp_path, package_log):
    mine = PPOParts(rewards=loop_rewards, advantages=loop_gae, policy_loss=loop_policy_loss,
                    value_loss=loop_value_loss)
    log = _run(stand_in_lm_dir, tmp_path, mine)
    assert len(log) == 2 and any(h["response_len"] != int(h["response_len"]) for h in log), \
        "responses of mixed lengths: the mask must matter"
    assert _max_difference(log, package_log) < 1e-6
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in written] == [1, 2]


@pytest.mark.parametrize("wrong", [{"policy_loss": advantage_sign_flipped}, {"rewards": kl_not_masked},
                                   {"policy_loss": mask_ignored_in_loss}],
                         ids=["advantage sign flipped", "KL not masked", "mask ignored in the loss"])
def test_a_wrong_part_changes_the_run(stand_in_lm_dir, tmp_path, package_log, wrong):
    assert _max_difference(_run(stand_in_lm_dir, tmp_path, PPOParts(**wrong)), package_log) > 1e-4


def test_train_ppo_is_the_loop(stand_in_lm_dir, tmp_path, monkeypatch):
    """train_ppo runs ppo_loop (no second copy of the loop), and ppo_loop fits on one screen in the order it runs."""
    import rlhf_helpers.ppo as ppo

    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return ppo_loop(*args, **kwargs)

    monkeypatch.setattr(ppo, "ppo_loop", spy)
    train_ppo(stand_in_lm_dir, score_by_length, PROMPTS, _config(), 1, 2, 4, tmp_path, save_every=0)
    assert calls == [1]
    source = inspect.getsource(ppo_loop)
    assert ppo_loop.__doc__ and len(source.splitlines()) <= 60
    stages = [source.index(f"# {n}) ") for n in range(1, 10)]
    assert stages == sorted(stages)
    for name in ("generate", "parts.rewards", "parts.advantages", "ppo_update", "kl_ctl.update"):
        assert name in source


def test_one_loop_step_is_one_trainer_step(stand_in_lm_dir):
    """The loop and PPOTrainer.step (what the notebook calls on one batch) compute the same step."""
    from rlhf_helpers.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(stand_in_lm_dir)
    looped, stepped = (PPOTrainer(_config(), load_causal_lm(stand_in_lm_dir), tok) for _ in range(2))
    stats = ppo_loop(looped, PROMPTS, score_by_length, 1, 2, 6)[0]
    queries_all = [torch.tensor(ids) for ids in tok(PROMPTS)["input_ids"]]
    queries, lengths = draw_prompts_and_lengths(queries_all, 2, 6, stepped.config, 0)
    torch.manual_seed(0)
    responses = stepped.generate(queries, lengths)
    texts = tok.batch_decode([torch.cat([q, r]) for q, r in zip(queries, responses)], skip_special_tokens=True)
    by_step = stepped.step(queries, responses, score_by_length(texts))
    assert {k: v for k, v in stats.items() if not k.startswith("time")} == \
        {k: v for k, v in by_step.items() if not k.startswith("time")}
    for a, b in zip(looped.policy.parameters(), stepped.policy.parameters()):
        assert torch.equal(a, b)
