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


# ---------------------------------------------------------------------------------------------
# DPO with the learner's loss, GRPO and RLOO with the learner's advantages (TRL, on stand-ins)
# ---------------------------------------------------------------------------------------------
PAIRS = {"prompt": ["This movie was", "A waste of", "I loved the", "The plot was"] * 2,
         "chosen": [" wonderful and moving.", " nothing, a great film.", " music and the acting.", " brilliant."] * 2,
         "rejected": [" terrible and boring.", " time: bad acting.", " ending less.",
                      " dull and awful, the worst."] * 2}


def dpo_loss_loop(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """A learner's DPO loss, pair by pair."""
    losses = []
    for pw, pl, rw, rl in zip(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
        losses.append(-torch.nn.functional.logsigmoid(beta * ((pw - rw) - (pl - rl))))
    return torch.stack(losses).mean()


def dpo_loss_swapped(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    return dpo_loss_loop(policy_rejected_logps, policy_chosen_logps, ref_rejected_logps, ref_chosen_logps, beta)


def _dpo_run(folder, out, loss=None, pairs=None, precompute=False):
    from datasets import Dataset

    from rlhf_helpers.dpo import short_dpo_run

    pairs = pairs if pairs is not None else Dataset.from_dict(PAIRS)
    return short_dpo_run(folder, pairs, out, loss=loss, steps=4, batch_size=4, learning_rate=1e-3,
                         precompute_ref_log_probs=precompute)


@pytest.mark.parametrize("precompute", [False, True], ids=["reference in the loop", "reference precomputed"])
def test_learners_dpo_loss_reproduces_trls_run(stand_in_lm_dir, tmp_path, precompute):
    from rlhf_helpers.fillins import check_same_run

    package = _dpo_run(stand_in_lm_dir, tmp_path / "package", precompute=precompute)
    mine = _dpo_run(stand_in_lm_dir, tmp_path / "mine", dpo_loss_loop, precompute=precompute)
    assert len(package) >= 4 and package[-2]["rewards/margins"] != 0, "the policy should have moved"
    assert check_same_run(mine, package)
    swapped = _dpo_run(stand_in_lm_dir, tmp_path / "swapped", dpo_loss_swapped, precompute=precompute)
    assert not check_same_run(swapped, package)
    assert swapped[-2]["rewards/margins"] < 0 < package[-2]["rewards/margins"]  # it learned the wrong preference


def test_short_dpo_run_leaves_a_saved_pairs_folder_untouched(stand_in_lm_dir, tmp_path):
    from datasets import Dataset, load_from_disk

    saved = tmp_path / "pairs_artifact"
    Dataset.from_dict(PAIRS).save_to_disk(str(saved))
    before = sorted(p.name for p in saved.iterdir())
    _dpo_run(stand_in_lm_dir, tmp_path / "run", dpo_loss_loop, pairs=load_from_disk(str(saved)), precompute=True)
    assert sorted(p.name for p in saved.iterdir()) == before  # no reference-log-prob cache beside the artifact


ONLINE_PROMPTS = ["This movie", "I watched it and", "Bad", "The actors in this film were", "A", "Great fun", "Why",
                  "It is a long story about"]


def completion_length_reward(prompts, completions, **kwargs):
    return [len(c) / 10.0 for c in completions]


def grpo_advantages_loop(rewards):
    """A learner's GRPO advantages, group by group."""
    out = torch.zeros_like(rewards)
    for i, group in enumerate(rewards):
        out[i] = (group - group.mean()) / (group.std() + 1e-4)
    return out


def rloo_advantages_loop(rewards):
    """A learner's RLOO advantages, completion by completion."""
    k = rewards.shape[1]
    return torch.tensor([[float(g[j] - (g.sum() - g[j]) / (k - 1)) for j in range(k)] for g in rewards])


def baseline_includes_itself(rewards):
    return rewards - rewards.mean(dim=1, keepdim=True)


def _online_run(method, folder, out, advantages=None):
    from rlhf_helpers.grpo import short_online_run

    return short_online_run(method, folder, ONLINE_PROMPTS, completion_length_reward, out, advantages=advantages,
                            steps=3, prompts_per_step=2, num_generations=4, max_completion_length=8,
                            learning_rate=1e-3)


@pytest.mark.parametrize("method, right", [("grpo", grpo_advantages_loop), ("rloo", rloo_advantages_loop)])
def test_learners_advantages_reproduce_trls_run(eos_stand_in_dir, tmp_path, method, right):
    """With beta 0.1 (RLOO's rewards carry the KL penalty), the learner's advantages reproduce TRL's own run."""
    from rlhf_helpers.fillins import check_same_run

    package = _online_run(method, eos_stand_in_dir, tmp_path / "package")
    assert len(package) >= 3 and package[0]["kl"] == 0.0 and package[-2]["kl"] > 0
    assert check_same_run(_online_run(method, eos_stand_in_dir, tmp_path / "mine", right), package)
    wrong = _online_run(method, eos_stand_in_dir, tmp_path / "wrong", baseline_includes_itself)
    assert not check_same_run(wrong, package) and wrong[0]["grad_norm"] != package[0]["grad_norm"]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_learner_trainers_still_sample_what_they_score(eos_stand_in_dir, tmp_path, method):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from rlhf_helpers.config import get_preset
    from rlhf_helpers.grpo import make_online_trainer, rloo_advantages
    from rlhf_helpers.models import load_tokenizer, trainer_defaults

    tok = load_tokenizer(eos_stand_in_dir)
    tok.padding_side = "left"
    cls = GRPOConfig if method == "grpo" else RLOOConfig
    args = cls(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=8, num_generations=2, beta=0.1,
               max_completion_length=8, disable_dropout=True, save_strategy="no",
               **trainer_defaults(get_preset("smoke")))
    trainer = make_online_trainer(method, str(eos_stand_in_dir), completion_length_reward, args,
                                  Dataset.from_dict({"prompt": ONLINE_PROMPTS}), tok, advantages=rloo_advantages)
    assert isinstance(trainer, GRPOTrainer if method == "grpo" else RLOOTrainer)
    assert trainer.learner_advantages is rloo_advantages
    for model in (trainer.model, trainer.ref_model):  # sample_what_you_score: the stored min_new_tokens is gone
        assert model.generation_config.min_new_tokens is None and model.generation_config.top_k is None


@pytest.mark.slow
def test_notebook_helpers_compare_the_learners_run_with_the_package_on_smoke():
    """What notebooks 04 and 05 call: both runs from the smoke preset's SFT policy, in their own stage folders."""
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.dpo import dpo_with_my_loss
    from rlhf_helpers.fillins import check_same_run
    from rlhf_helpers.grpo import online_with_my_advantages
    from rlhf_helpers.models import stage_dir

    preset = get_preset("smoke")
    runs = dpo_with_my_loss(dpo_loss_loop, preset, steps=2)
    assert len(runs["package"]) >= 2 and check_same_run(runs["mine"], runs["package"])
    runs = online_with_my_advantages("rloo", baseline_includes_itself, preset, steps=2)
    assert not check_same_run(runs["mine"], runs["package"])
    assert stage_dir(preset, "dpo_my_loss").is_dir() and stage_dir(preset, "rloo_my_advantages").is_dir()
