"""The fill-in checks (rlhf_helpers/fillins.py): a right answer, written the way a learner might, is called correct;
each typical wrong answer gets the message that names its mistake; a stub gets 'fill in'; nothing ever raises."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rlhf_helpers import fillins
from rlhf_helpers.fillins import (CORRECT, NOT_WRITTEN, Verdict, check_advantages, check_completion_logps,
                                  check_dpo_loss, check_group_advantages, check_leave_one_out, check_policy_loss,
                                  check_rewards, check_same_run, check_value_loss)


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


# --- PPO rewards ----------------------------------------------------------------------------------------------
def rewards_right(scores, logprobs, ref_logprobs, mask, kl_coef):
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    for i in range(len(scores)):
        rewards[i, int(mask[i].sum()) - 1] += scores[i]
    return rewards, kl


def rewards_last_column(scores, logprobs, ref_logprobs, mask, kl_coef):  # notebook 03's old all-ones exercise
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    rewards[:, -1] += scores
    return rewards * mask, kl


def rewards_every_token(scores, logprobs, ref_logprobs, mask, kl_coef):
    kl = (logprobs - ref_logprobs) * mask
    return (-kl_coef * kl + scores.unsqueeze(1)) * mask, kl


def rewards_kl_unmasked(scores, logprobs, ref_logprobs, mask, kl_coef):
    kl = logprobs - ref_logprobs
    rewards = -kl_coef * kl
    for i in range(len(scores)):
        rewards[i, int(mask[i].sum()) - 1] += scores[i]
    return rewards, kl


def rewards_kl_plus(scores, logprobs, ref_logprobs, mask, kl_coef):
    rewards, kl = rewards_right(scores, logprobs, ref_logprobs, mask, kl_coef)
    return rewards + 2 * kl_coef * kl, kl


def rewards_reversed(scores, logprobs, ref_logprobs, mask, kl_coef):
    return rewards_right(scores, ref_logprobs, logprobs, mask, kl_coef)


def rewards_no_beta(scores, logprobs, ref_logprobs, mask, kl_coef):
    return rewards_right(scores, logprobs, ref_logprobs, mask, 1.0)


# --- GAE ------------------------------------------------------------------------------------------------------
def gae_right(rewards, values, mask, gamma, lam):
    advantages = torch.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        n, running = int(mask[i].sum()), 0.0
        for t in reversed(range(n)):
            next_value = values[i, t + 1] if t + 1 < n else 0.0
            running = rewards[i, t] + gamma * next_value - values[i, t] + gamma * lam * running
            advantages[i, t] = running
    return advantages, (advantages + values) * mask


def _gae_with(lam_used=None, gamma_used=None, use_mask=True, trace=True):
    def gae(rewards, values, mask, gamma, lam):
        g = gamma if gamma_used is None else gamma_used
        lm = lam if lam_used is None else lam_used
        m = mask if use_mask else torch.ones_like(mask)
        rewards, values = rewards * m, values * m
        advantages, running = torch.zeros_like(rewards), torch.zeros(rewards.shape[0])
        for t in reversed(range(rewards.shape[1])):
            next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros(rewards.shape[0])
            delta = rewards[:, t] + g * next_value - values[:, t]
            running = (delta + (g * lm * running if trace else 0)) * m[:, t]
            advantages[:, t] = running
        return advantages, (advantages + values) * m
    return gae


def gae_forwards(rewards, values, mask, gamma, lam):
    advantages, running = torch.zeros_like(rewards), torch.zeros(rewards.shape[0])
    rewards, values = rewards * mask, values * mask
    for t in range(rewards.shape[1]):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros(rewards.shape[0])
        running = (rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def gae_returns_wrong(rewards, values, mask, gamma, lam):
    advantages, _ = gae_right(rewards, values, mask, gamma, lam)
    return advantages, advantages


# --- policy and value losses -----------------------------------------------------------------------------------
def _policy_loss(flip=False, clip_adv=False, pick=torch.max, mean_all=False, exp=True, clip=True):
    def loss(logprobs, old_logprobs, advantages, mask, cliprange):
        ratio = torch.exp(logprobs - old_logprobs) if exp else logprobs - old_logprobs
        a = advantages if flip else -advantages
        unclipped = a * ratio
        if clip_adv:
            clipped = -torch.clamp(advantages, 1 - cliprange, 1 + cliprange) * ratio
        else:
            clipped = a * torch.clamp(ratio, 1 - cliprange, 1 + cliprange) if clip else unclipped
        per_token = pick(unclipped, clipped)
        value = per_token.mean() if mean_all else masked_mean(per_token, mask)
        return value, masked_mean((clipped > unclipped).float(), mask)
    return loss


def _value_loss(pick=torch.max, mean_all=False, clip=True):
    def loss(values, old_values, returns, mask, cliprange_value):
        clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
        a, b = (values - returns) ** 2, (clipped - returns) ** 2
        per_token = pick(a, b) if clip else a
        value = per_token.mean() if mean_all else masked_mean(per_token, mask)
        return 0.5 * value, masked_mean((b > a).float(), mask)
    return loss


# --- DPO ------------------------------------------------------------------------------------------------------
def _dpo(swap=False, reference=True, mean=True):
    def loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
        chosen, rejected = policy_chosen_logps, policy_rejected_logps
        if reference:
            chosen, rejected = chosen - ref_chosen_logps, rejected - ref_rejected_logps
        margin = beta * ((rejected - chosen) if swap else (chosen - rejected))
        losses = -F.logsigmoid(margin)
        return losses.mean() if mean else losses.sum()
    return loss


def _completion_logps(shift=True, keep="completion"):
    def completion_logps(model, input_ids, attention_mask, completion_mask):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        if shift:
            token_logp = logp[:, :-1].gather(2, input_ids[:, 1:, None]).squeeze(2)
            mask = {"completion": completion_mask, "all": attention_mask,
                    "padding": torch.ones_like(completion_mask) - (attention_mask - completion_mask)}[keep][:, 1:]
        else:
            token_logp = logp.gather(2, input_ids[:, :, None]).squeeze(2)
            mask = completion_mask
        return (token_logp * mask).sum(1)
    return completion_logps


# --- GRPO / RLOO ----------------------------------------------------------------------------------------------
def grpo_right(rewards):
    out = torch.zeros_like(rewards)
    for i, row in enumerate(rewards):
        out[i] = (row - row.mean()) / (row.std() + 1e-4)
    return out


def rloo_right(rewards):
    k = rewards.shape[1]
    return torch.stack([torch.stack([row[j] - (row.sum() - row[j]) / (k - 1) for j in range(k)]) for row in rewards])


def stub(*args):
    raise NotImplementedError


CASES = [
    # (check, learner's function, what the message must say)
    (check_rewards, rewards_right, CORRECT),
    (check_rewards, rewards_last_column, "last REAL token"),
    (check_rewards, rewards_every_token, "added to every token"),
    (check_rewards, rewards_kl_unmasked, "KL is computed on the wrong tokens"),
    (check_rewards, rewards_kl_plus, "the KL is a penalty"),
    (check_rewards, rewards_reversed, "policy minus reference"),
    (check_rewards, rewards_no_beta, "by kl_coef"),
    (check_advantages, gae_right, CORRECT),
    (check_advantages, _gae_with(), CORRECT),
    (check_advantages, _gae_with(lam_used=1.0), "GAE without the lambda"),
    (check_advantages, _gae_with(gamma_used=1.0), "gamma is missing"),
    (check_advantages, _gae_with(trace=False), "only one step of GAE"),
    (check_advantages, _gae_with(use_mask=False), "the mask is missed"),
    (check_advantages, gae_forwards, "GAE runs backwards"),
    (check_advantages, gae_returns_wrong, "returns are advantages + values"),
    (check_policy_loss, _policy_loss(), CORRECT),
    (check_policy_loss, _policy_loss(flip=True), "advantage's sign is flipped"),
    (check_policy_loss, _policy_loss(clip_adv=True), "clip is applied to the advantage instead of the ratio"),
    (check_policy_loss, _policy_loss(pick=torch.min), "min instead of max"),
    (check_policy_loss, _policy_loss(mean_all=True), "the mean runs over padding"),
    (check_policy_loss, _policy_loss(exp=False), "exp(logprobs - old_logprobs)"),
    (check_policy_loss, _policy_loss(clip=False), "no clipping"),
    (check_value_loss, _value_loss(), CORRECT),
    (check_value_loss, _value_loss(pick=torch.min), "min instead of max"),
    (check_value_loss, _value_loss(mean_all=True), "the mean runs over padding"),
    (check_value_loss, _value_loss(clip=False), "no clipping"),
    (check_dpo_loss, _dpo(), CORRECT),
    (check_dpo_loss, _dpo(swap=True), "chosen and rejected are swapped"),
    (check_dpo_loss, _dpo(reference=False), "DPO without the reference"),
    (check_dpo_loss, _dpo(mean=False), "the pairs are summed"),
    (check_completion_logps, _completion_logps(), CORRECT),
    (check_completion_logps, _completion_logps(shift=False), "predict token t + 1"),
    (check_completion_logps, _completion_logps(keep="all"), "the prompt's tokens are counted"),
    (check_completion_logps, _completion_logps(keep="padding"), "DPO summing over padding"),
    (check_group_advantages, grpo_right, CORRECT),
    (check_group_advantages, lambda r: r - r.mean(1, keepdim=True), "the group std is not used"),
    (check_group_advantages, lambda r: (r - r.mean()) / (r.std() + 1e-4), "not the whole batch"),
    (check_group_advantages, lambda r: (r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True), "add 1e-4"),
    (check_group_advantages, rloo_right, "RLOO's leave-one-out baseline"),
    (check_leave_one_out, rloo_right, CORRECT),
    (check_leave_one_out, lambda r: r - r.mean(1, keepdim=True), "leave-one-out including itself"),
    (check_leave_one_out, lambda r: r - (r.sum(1, keepdim=True) - r) / r.shape[1], "not k"),
    (check_leave_one_out, grpo_right, "RLOO does not divide by the std"),
]


@pytest.mark.parametrize("check, fn, expected", CASES,
                         ids=[f"{c.__name__}-{getattr(f, '__name__', '?')}-{e[:24]}" for c, f, e in CASES])
def test_check_names_the_mistake(check, fn, expected):
    verdict = check(fn)
    assert isinstance(verdict, Verdict)
    if expected == CORRECT:
        assert verdict.ok and verdict.message == CORRECT
    else:
        assert not verdict.ok and verdict.message.startswith("not yet: ") and expected in verdict.message, \
            verdict.message
        assert CORRECT not in verdict.message


CHECKS = [check_rewards, check_advantages, check_policy_loss, check_value_loss, check_dpo_loss,
          check_completion_logps, check_group_advantages, check_leave_one_out]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_a_stub_is_asked_to_be_filled_in_and_nothing_raises(check):
    assert check(stub).message == NOT_WRITTEN and not check(stub)

    def crashes(*args):
        return args[0].no_such_method()

    verdict = check(crashes)
    assert not verdict and verdict.message.startswith("not yet:") and "AttributeError" in verdict.message
    assert not check(lambda *args: "a string") and not check(lambda *args: None)


def test_padding_only_mistake_is_pointed_at_even_when_unlisted():
    """A GAE right on real tokens but with garbage on padding: the generic message still names the padding."""
    def gae_padding_garbage(rewards, values, mask, gamma, lam):
        advantages, returns = gae_right(rewards, values, mask, gamma, lam)
        return advantages + (1 - mask) * 3.0, returns

    verdict = check_advantages(gae_padding_garbage)
    assert not verdict and "padding" in verdict.message


def test_an_unknown_mistake_shows_both_answers():
    verdict = check_dpo_loss(lambda pw, pl, rw, rl, beta: torch.tensor(0.25))
    assert not verdict and "yours:" in verdict.message and "package's:" in verdict.message


def test_every_listed_mistake_is_really_wrong_and_recognised():
    """Each known wrong version in fillins differs from the package and is recognised with its own message."""
    lists = [(check_rewards, fillins._reward_mistakes()), (check_advantages, fillins._advantage_mistakes()),
             (check_policy_loss, fillins._policy_loss_mistakes()), (check_value_loss, fillins._value_loss_mistakes()),
             (check_dpo_loss, fillins._dpo_mistakes()), (check_completion_logps, fillins._completion_mistakes()),
             (check_group_advantages, fillins._group_mistakes(rloo=False)),
             (check_leave_one_out, fillins._group_mistakes(rloo=True))]
    for check, mistakes in lists:
        for message, variants in mistakes:
            for variant in variants:
                assert check(variant).message == "not yet: " + message, (check.__name__, message)


def test_same_run_compares_logs_number_by_number():
    a = [{"step": 1, "loss": 0.5, "time_step_s": 1.0}, {"step": 2, "loss": 0.25, "time_step_s": 2.0}]
    assert check_same_run(a, [{**h, "time_step_s": 9.0} for h in a])
    off = [a[0], {**a[1], "loss": 0.2500011}]
    verdict = check_same_run(off, a)
    assert not verdict and "step 2" in verdict.message and "loss" in verdict.message
    assert not check_same_run(a[:1], a)
