"""Checks for the functions a learner fills in (notebooks 03, 04 and 05): each runs your function and the package's on
a few prepared inputs and says ``correct: matches the package`` only when every case matches to 1e-6.

Otherwise it says ``not yet: ...`` and points at the likely mistake, found by comparing your outputs with known wrong
versions (the advantage's sign flipped, the mask missed, the clip on the advantage, ...). It never raises: a stub that
still raises ``NotImplementedError`` gets ``not yet: fill in the function (it raises NotImplementedError)``.

Every check returns a :class:`Verdict`, shown as its message (the last line of a cell prints it) and true only when
correct, so ``assert check_rewards(my_rewards)`` stops a notebook at a wrong answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

CORRECT = "correct: matches the package"
NOT_WRITTEN = "not yet: fill in the function (it raises NotImplementedError)"
ATOL = 1e-6


@dataclass
class Verdict:
    """A check's answer: ``ok`` only when every case matched; shown as ``message``."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.message

    __repr__ = __str__


@dataclass
class Case:
    """One prepared input: a name a learner can read and the positional arguments."""

    name: str
    args: tuple


# a known mistake: what to tell the learner, and one or more functions that make exactly that mistake
Mistake = tuple[str, Sequence[Callable[..., Any]]]


def _clone(x):
    return x.clone() if torch.is_tensor(x) else x


def _as_outputs(value, n: int) -> list[torch.Tensor] | str:
    """The outputs as a list of ``n`` tensors, or a sentence saying why they are not."""
    if n > 1:
        if not isinstance(value, (tuple, list)) or len(value) != n:
            return f"return {n} values as a tuple"
        values = list(value)
    else:
        values = [value]
    out = []
    for v in values:
        if not torch.is_tensor(v):
            try:
                v = torch.as_tensor(v, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError):
                return f"return tensors (got {type(v).__name__})"
        out.append(v.detach().float().cpu())
    return out


def _differs(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest absolute difference (inf when the shapes or NaNs differ)."""
    if got.numel() == want.numel() == 1:
        got, want = got.reshape(()), want.reshape(())
    if got.shape != want.shape:
        return math.inf
    if (torch.isnan(got) != torch.isnan(want)).any():
        return math.inf
    both = ~torch.isnan(want)
    return float((got[both] - want[both]).abs().max()) if both.any() else 0.0


def _outputs_on(fn: Callable, cases: Sequence[Case], n: int) -> list[list[torch.Tensor]] | None:
    """``fn``'s outputs on every case, or None if it fails or returns the wrong kind of thing on any."""
    results = []
    for case in cases:
        try:
            out = _as_outputs(fn(*map(_clone, case.args)), n)
        except Exception:
            return None
        if isinstance(out, str):
            return None
        results.append(out)
    return results


def _same(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> bool:
    return all(_differs(x, y) <= ATOL for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def run_check(fn: Callable, reference: Callable, cases: Sequence[Case], mistakes: Sequence[Mistake],
              names: Sequence[str] = ("output",), mask_of: Callable[[Case], torch.Tensor] | None = None,
              hint: str = "") -> Verdict:
    """Compare ``fn`` with ``reference`` on ``cases``; when they differ, name the first known mistake ``fn`` makes.

    ``names`` names the outputs (one per returned value); ``mask_of(case)`` gives the padding mask of outputs that are
    per token, so that right-on-real-tokens-but-not-on-padding is told apart; ``hint`` ends the generic message.
    """
    n = len(names)
    want = [_as_outputs(reference(*map(_clone, case.args)), n) for case in cases]
    got = []
    for case in cases:
        try:
            value = fn(*map(_clone, case.args))
        except NotImplementedError:
            return Verdict(False, NOT_WRITTEN)
        except Exception as err:  # a learner's bug is a message, never a traceback
            return Verdict(False, f"not yet: on the case '{case.name}' your function raised "
                                  f"{type(err).__name__}: {err}")
        out = _as_outputs(value, n)
        if isinstance(out, str):
            return Verdict(False, f"not yet: {out} ({', '.join(names)})")
        got.append(out)
    for case, g, w in zip(cases, got, want):
        for name, x, y in zip(names, g, w):
            if x.numel() != y.numel() and not (x.numel() == 1 and y.numel() == 1):
                return Verdict(False, f"not yet: on the case '{case.name}' your {name} has shape {tuple(x.shape)}, "
                                      f"the package's {tuple(y.shape)}")
    if _same(got, want):
        return Verdict(True, CORRECT)
    known = [(message, _outputs_on(variant, cases, n)) for message, variants in mistakes for variant in variants]
    known = [(message, outputs) for message, outputs in known if outputs is not None and not _same(outputs, want)]
    for message, outputs in known:  # the same mistake in every output
        if _same(got, outputs):
            return Verdict(False, f"not yet: {message}")
    for message, outputs in known:  # the same mistake in the main output (a loss whose clipfrac is computed otherwise)
        if not _same([g[:1] for g in got], [w[:1] for w in want]) and _same([g[:1] for g in got],
                                                                           [o[:1] for o in outputs]):
            return Verdict(False, f"not yet: {message}")
    return Verdict(False, _generic_message(cases, got, want, names, mask_of, hint))


def _generic_message(cases, got, want, names, mask_of, hint) -> str:
    for case, g, w in zip(cases, got, want):
        for name, x, y in zip(names, g, w):
            d = _differs(x, y)
            if d <= ATOL:
                continue
            right = [other for other, a, b in zip(names, g, w) if _differs(a, b) <= ATOL]
            if mask_of is not None and x.shape == y.shape:
                mask = mask_of(case).bool()
                if (~mask).any() and _differs(x[mask], y[mask]) <= ATOL:
                    return (f"not yet: your {name} is right on the real tokens but not on the padding (case "
                            f"'{case.name}'): multiply by the mask so that padding positions are 0")
            where = f"; your {', '.join(right)} already match" if right else ""
            return (f"not yet: on the case '{case.name}' your {name} differs from the package's by up to {d:.3g}"
                    f"{where}.\n  yours:     {_show(x)}\n  package's: {_show(y)}" + (f"\n  {hint}" if hint else ""))
    return "not yet: your outputs differ from the package's"


def _show(x: torch.Tensor) -> str:
    return str([round(v, 4) for v in x.flatten().tolist()][:12]) if x.numel() > 1 else f"{float(x):.6g}"


# --------------------------------------------------------------------------------------------
# PPO (notebook 03): the four PPOParts
# --------------------------------------------------------------------------------------------
def _ppo_tensors(seed: int = 0):
    """Log-probabilities, values and advantages for 3 responses of 5, 3 and 1 real tokens (padding after them,
    with the arbitrary numbers a padded forward pass gives there), and an all-real batch of 2."""
    g = torch.Generator().manual_seed(seed)
    padded = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    full = torch.ones(2, 4)

    def logps(shape):
        return -torch.rand(shape, generator=g) * 3

    return g, padded, full, logps


def _reward_cases() -> list[Case]:
    _, padded, full, logps = _ppo_tensors(0)
    return [Case("two full responses, kl_coef 0.2",
                 (torch.tensor([1.5, -0.5]), logps((2, 4)), logps((2, 4)), full, 0.2)),
            Case("padded responses of 5, 3 and 1 tokens, kl_coef 0.05",
                 (torch.tensor([0.7, -1.2, 2.0]), logps((3, 5)), logps((3, 5)), padded, 0.05))]


def _package_rewards():
    from .ppo import per_token_rewards

    return per_token_rewards


def _reward_mistakes() -> list[Mistake]:
    def last_column(scores, lp, ref, mask, c):
        kl = (lp - ref) * mask
        rewards = -c * kl
        rewards[:, -1] += scores
        return rewards * mask, kl

    def every_token(scores, lp, ref, mask, c):
        kl = (lp - ref) * mask
        return (-c * kl + scores[:, None]) * mask, kl

    def kl_unmasked(scores, lp, ref, mask, c):
        kl = lp - ref
        rewards = -c * kl
        rewards[torch.arange(len(scores)), mask.sum(1).long() - 1] += scores
        return rewards, kl

    def kl_unmasked_rewards_masked(scores, lp, ref, mask, c):
        rewards, _ = kl_unmasked(scores, lp, ref, mask, c)
        return rewards * mask, lp - ref

    def plus_kl(scores, lp, ref, mask, c):
        rewards, kl = _package_rewards()(scores, lp, ref, mask, -c)
        return rewards, kl

    def kl_reversed(scores, lp, ref, mask, c):
        rewards, kl = _package_rewards()(scores, ref, lp, mask, c)
        return rewards, kl

    def no_coef(scores, lp, ref, mask, c):
        return _package_rewards()(scores, lp, ref, mask, 1.0)

    return [
        ("the score goes on the last REAL token of each response (index mask.sum(1) - 1), not the last column: "
         "with padding they differ", [last_column]),
        ("the reward model's score is added to every token instead of only the last real one", [every_token]),
        ("the KL is computed on the wrong tokens: multiply (logprobs - ref_logprobs) by the mask, so padding "
         "positions count no KL", [kl_unmasked, kl_unmasked_rewards_masked]),
        ("the KL is a penalty: r_t = -kl_coef * (logprobs - ref_logprobs); yours adds it", [plus_kl]),
        ("the KL is log pi - log pi_ref (policy minus reference); yours is the other way round", [kl_reversed]),
        ("multiply the KL by kl_coef (beta)", [no_coef]),
    ]


def check_rewards(fn: Callable) -> Verdict:
    """``fn(scores, logprobs, ref_logprobs, mask, kl_coef) -> (rewards, kl)``: PPO's per-token rewards."""
    return run_check(fn, _package_rewards(), _reward_cases(), _reward_mistakes(), names=("rewards", "kl"),
                     mask_of=lambda case: case.args[3],
                     hint="r_t = -kl_coef * (log pi - log pi_ref) on every real token, plus the score on the last one")


def _advantage_cases() -> list[Case]:
    g, padded, full, _ = _ppo_tensors(1)
    return [Case("two full responses, gamma 1, lam 0.95",
                 (torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g), full, 1.0, 0.95)),
            Case("padded responses of 5, 3 and 1 tokens (values after the end are arbitrary), gamma 0.9, lam 0.8",
                 (torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g), padded, 0.9, 0.8))]


def _package_gae():
    from .ppo import gae_advantages

    return gae_advantages


def _advantage_mistakes() -> list[Mistake]:
    gae = _package_gae()

    def no_lambda(r, v, m, gamma, lam):
        return gae(r, v, m, gamma, 1.0)

    def no_gamma(r, v, m, gamma, lam):
        return gae(r, v, m, 1.0, lam)

    def no_gamma_in_trace(r, v, m, gamma, lam):
        return gae(r, v, m, gamma, lam / gamma if gamma else lam)

    def unmasked(r, v, m, gamma, lam):
        return gae(r, v, torch.ones_like(m), gamma, lam)

    def unmasked_then_masked(r, v, m, gamma, lam):
        adv, ret = unmasked(r, v, m, gamma, lam)
        return adv * m, ret * m

    def forwards(r, v, m, gamma, lam):  # A_t built from A_{t-1}
        r, v = r * m, v * m
        adv, running = torch.zeros_like(r), torch.zeros(r.shape[0])
        for t in range(r.shape[1]):
            next_value = v[:, t + 1] if t + 1 < r.shape[1] else torch.zeros(r.shape[0])
            running = (r[:, t] + gamma * next_value - v[:, t] + gamma * lam * running) * m[:, t]
            adv[:, t] = running
        return adv, (adv + v) * m

    def flipped(r, v, m, gamma, lam):
        adv, _ = gae(r.flip(1), v.flip(1), m.flip(1), gamma, lam)
        return adv.flip(1), (adv.flip(1) + v) * m

    def no_bootstrap(r, v, m, gamma, lam):
        return gae(r, v, m, gamma, 0.0)

    def returns_are_advantages(r, v, m, gamma, lam):
        adv, _ = gae(r, v, m, gamma, lam)
        return adv, adv

    def returns_are_rewards_to_go(r, v, m, gamma, lam):
        adv, _ = gae(r, v, m, gamma, lam)
        ret, _ = gae(r, torch.zeros_like(v), m, gamma, 1.0)
        return adv, ret

    return [
        ("GAE without the lambda: A_t = delta_t + gamma * lam * A_{t+1}; yours drops lam", [no_lambda]),
        ("the discount gamma is missing: delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * "
         "A_{t+1}", [no_gamma, no_gamma_in_trace]),
        ("only one step of GAE (A_t = delta_t): add gamma * lam * A_{t+1}, going backwards", [no_bootstrap]),
        ("the mask is missed: the value after a response's last real token is 0 (padding has no value), and "
         "padding positions get advantage 0", [unmasked, unmasked_then_masked]),
        ("GAE runs backwards, from the last token to the first (A_t needs A_{t+1})", [forwards, flipped]),
        ("the returns are advantages + values (the value head's targets), not the advantages alone",
         [returns_are_advantages]),
        ("the returns are advantages + values (the lambda-return), not the discounted sum of rewards",
         [returns_are_rewards_to_go]),
    ]


def check_advantages(fn: Callable) -> Verdict:
    """``fn(rewards, values, mask, gamma, lam) -> (advantages, returns)``: generalised advantage estimation."""
    return run_check(fn, _package_gae(), _advantage_cases(), _advantage_mistakes(), names=("advantages", "returns"),
                     mask_of=lambda case: case.args[2],
                     hint="delta_t = r_t + gamma V_{t+1} - V_t; A_t = delta_t + gamma lam A_{t+1}, from the end; "
                          "returns = A + V")


def _loss_cases(seed: int) -> list[Case]:
    """New and old log-probabilities whose ratios fall inside and outside [0.8, 1.2], advantages of both signs."""
    g, padded, full, logps = _ppo_tensors(seed)
    cases = []
    for name, mask in (("two full responses", full), ("padded responses of 5, 3 and 1 tokens", padded)):
        old = logps(mask.shape)
        shift = (torch.rand(mask.shape, generator=g) - 0.5) * 1.2  # ratios from e^-0.6 = 0.55 to e^0.6 = 1.8
        adv = torch.randn(mask.shape, generator=g)
        cases.append(Case(f"{name}, ratios outside the clip range, negative and positive advantages",
                          (old + shift, old, adv, mask, 0.2)))
    return cases


def _package_policy_loss():
    from .ppo import clipped_policy_loss

    return clipped_policy_loss


def _policy_loss_mistakes() -> list[Mistake]:
    from .ppo import masked_mean

    def loss_of(terms_fn, reduce=masked_mean):
        def loss(lp, old, adv, mask, eps):
            ratio = torch.exp(lp - old)
            a, b = terms_fn(ratio, adv, eps)
            return reduce(torch.max(a, b), mask), masked_mean((b > a).float(), mask)
        return loss

    def plain(lp, old, adv, mask, eps):
        ratio = torch.exp(lp - old)
        return masked_mean(-adv * ratio, mask), masked_mean(torch.zeros_like(ratio), mask)

    def min_instead(lp, old, adv, mask, eps):
        ratio = torch.exp(lp - old)
        a, b = -adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps)
        return masked_mean(torch.min(a, b), mask), masked_mean((b > a).float(), mask)

    def no_exp(lp, old, adv, mask, eps):
        ratio = lp - old
        a, b = -adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps)
        return masked_mean(torch.max(a, b), mask), masked_mean((b > a).float(), mask)

    def sign_flipped_objective(lp, old, adv, mask, eps):  # maximises -A r: min of the objectives, negated
        ratio = torch.exp(lp - old)
        a, b = adv * ratio, adv * ratio.clamp(1 - eps, 1 + eps)
        return masked_mean(torch.min(a, b), mask), masked_mean((b < a).float(), mask)

    def over_padding(x, mask):
        return x.mean()

    def summed(x, mask):
        return (x * mask).sum()

    return [
        ("the advantage's sign is flipped: the loss is -A * ratio (minimising it raises the probability of "
         "responses with a positive advantage)",
         [loss_of(lambda r, a, e: (a * r, a * r.clamp(1 - e, 1 + e))), sign_flipped_objective]),
        ("the clip is applied to the advantage instead of the ratio: clip(ratio, 1 - cliprange, 1 + cliprange)",
         [loss_of(lambda r, a, e: (-a * r, -a.clamp(1 - e, 1 + e) * r)),
          loss_of(lambda r, a, e: (-a * r, -a.clamp(-e, e) * r))]),
        ("min instead of max: the loss takes the larger (more pessimistic) of -A * ratio and -A * clipped ratio",
         [min_instead]),
        ("the mean runs over padding: average over the real tokens only, (x * mask).sum() / mask.sum()",
         [loss_of(lambda r, a, e: (-a * r, -a * r.clamp(1 - e, 1 + e)), reduce=over_padding)]),
        ("the tokens are summed: take their mean over the real tokens, (x * mask).sum() / mask.sum()",
         [loss_of(lambda r, a, e: (-a * r, -a * r.clamp(1 - e, 1 + e)), reduce=summed)]),
        ("the ratio is exp(logprobs - old_logprobs), not the difference of log-probabilities", [no_exp]),
        ("no clipping: take the max of -A * ratio and -A * clip(ratio, 1 - cliprange, 1 + cliprange)", [plain]),
    ]


def check_policy_loss(fn: Callable) -> Verdict:
    """``fn(logprobs, old_logprobs, advantages, mask, cliprange) -> (loss, clipfrac)``: PPO's clipped surrogate."""
    return run_check(fn, _package_policy_loss(), _loss_cases(2), _policy_loss_mistakes(), names=("loss", "clipfrac"),
                     hint="loss = mean over real tokens of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)); "
                          "clipfrac = the fraction of real tokens where the clipped term is the larger")


def _package_value_loss():
    from .ppo import clipped_value_loss

    return clipped_value_loss


def _value_loss_mistakes() -> list[Mistake]:
    from .ppo import masked_mean

    def make(clip_around="old", pick=torch.max, reduce=masked_mean, half=0.5):
        def loss(v, old_v, ret, mask, eps):
            centre = old_v if clip_around == "old" else ret
            clipped = centre + torch.clamp(v - centre, -eps, eps)
            a, b = (v - ret) ** 2, (clipped - ret) ** 2
            return half * reduce(pick(a, b), mask), masked_mean((b > a).float(), mask)
        return loss

    def unclipped(v, old_v, ret, mask, eps):
        return 0.5 * masked_mean((v - ret) ** 2, mask), masked_mean(torch.zeros_like(v), mask)

    return [
        ("min instead of max: the value loss takes the larger of the clipped and unclipped squared errors",
         [make(pick=torch.min)]),
        ("the mean runs over padding: average over the real tokens only", [make(reduce=lambda x, m: x.mean())]),
        ("the value loss is 0.5 * the squared error", [make(half=1.0)]),
        ("no clipping acts: also compute the error of old_values + clip(values - old_values, -eps, eps) (clipped "
         "around the OLD value, not the return) and take the max", [unclipped, make(clip_around="returns")]),
    ]


def check_value_loss(fn: Callable) -> Verdict:
    """``fn(values, old_values, returns, mask, cliprange_value) -> (loss, clipfrac)``: the clipped value loss."""
    cases = [Case(c.name.replace("ratios outside the clip range, negative and positive advantages",
                                 "values moved beyond the clip range"),
                  (c.args[0] * 0.5 + 1.0, c.args[1] * 0.5 + 1.0, c.args[2], c.args[3], 0.2)) for c in _loss_cases(3)]
    return run_check(fn, _package_value_loss(), cases, _value_loss_mistakes(), names=("loss", "clipfrac"),
                     hint="loss = 0.5 * mean over real tokens of max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) "
                          "- R)^2)")


# --------------------------------------------------------------------------------------------
# DPO (notebook 04)
# --------------------------------------------------------------------------------------------
def package_dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                     ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's loss as TRL 1.16 computes it (``loss_type="sigmoid"``): the mean over pairs of
    -log sigmoid(beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))])."""
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    return -F.logsigmoid(beta * (chosen_logratios - rejected_logratios)).mean()


def _dpo_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4)
    cases = []
    for name, n, beta in (("4 pairs, beta 0.1", 4, 0.1), ("3 pairs, beta 0.5", 3, 0.5)):
        ref_w, ref_l = -torch.rand(n, generator=g) * 30 - 5, -torch.rand(n, generator=g) * 30 - 5
        pol_w, pol_l = ref_w + torch.randn(n, generator=g) * 3, ref_l + torch.randn(n, generator=g) * 3
        cases.append(Case(name, (pol_w, pol_l, ref_w, ref_l, beta)))
    return cases


def _dpo_mistakes() -> list[Mistake]:
    def swapped(pw, pl, rw, rl, beta):
        return package_dpo_loss(pl, pw, rl, rw, beta)

    def no_reference(pw, pl, rw, rl, beta):
        return -F.logsigmoid(beta * (pw - pl)).mean()

    def no_beta(pw, pl, rw, rl, beta):
        return package_dpo_loss(pw, pl, rw, rl, 1.0)

    def summed(pw, pl, rw, rl, beta):
        return -F.logsigmoid(beta * ((pw - rw) - (pl - rl))).sum()

    def plus_sign(pw, pl, rw, rl, beta):
        return F.logsigmoid(beta * ((pw - rw) - (pl - rl))).mean()

    def no_log(pw, pl, rw, rl, beta):
        return -torch.sigmoid(beta * ((pw - rw) - (pl - rl))).mean()

    def reference_added(pw, pl, rw, rl, beta):
        return -F.logsigmoid(beta * ((pw + rw) - (pl + rl))).mean()

    return [
        ("chosen and rejected are swapped: the margin is (chosen log-ratio) - (rejected log-ratio), so that "
         "lowering the loss raises the chosen response", [swapped]),
        ("DPO without the reference: each log-probability is measured against the reference, "
         "log pi(y) - log pi_ref(y)", [no_reference, reference_added]),
        ("multiply the margin by beta inside the log-sigmoid", [no_beta]),
        ("the pairs are summed: TRL averages the loss over the pairs of the batch (.mean())", [summed]),
        ("the sign: the loss is -log sigmoid(margin) (it falls as the margin grows)", [plus_sign]),
        ("take the log of the sigmoid: -log sigmoid(margin), e.g. -F.logsigmoid(margin)", [no_log]),
    ]


def check_dpo_loss(fn: Callable) -> Verdict:
    """``fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta) -> loss``."""
    return run_check(fn, package_dpo_loss, _dpo_cases(), _dpo_mistakes(), names=("loss",),
                     hint="loss = mean over pairs of -log sigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l)))")


def _tiny_lm():
    """A small GPT-2 with fixed random weights (built in memory, the global random state untouched)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    return model.eval()


def _completion_cases() -> list[Case]:
    """TRL's DPO batch layout: prompt then completion, right-padded; ``completion_mask`` is 1 on completion tokens."""
    model = _tiny_lm()
    g = torch.Generator().manual_seed(5)
    rows = [(3, 4), (2, 2), (4, 1)]  # (prompt tokens, completion tokens)
    width = max(p + c for p, c in rows) + 1
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    attn, comp = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, (p, c) in enumerate(rows):
        ids[i, :p + c] = torch.randint(1, 50, (p + c,), generator=g)
        attn[i, :p + c] = 1
        comp[i, p:p + c] = 1
    return [Case("3 sequences: prompts of 3, 2, 4 tokens, completions of 4, 2, 1, right-padded",
                 (model, ids, attn, comp))]


def _completion_mistakes() -> list[Mistake]:
    from .ppo import logprobs_from_logits

    def make(shift=True, mask="completion", reduce="sum"):
        def completion_logps(model, ids, attn, comp):
            logits = model(input_ids=ids, attention_mask=attn).logits.float()
            if shift:
                token_logps = logprobs_from_logits(logits[:, :-1], ids[:, 1:])
                m = {"completion": comp[:, 1:], "attention": attn[:, 1:], "unshifted": comp[:, :-1],
                     "padding": (comp.cumsum(1) > 0)[:, 1:]}[mask].float()
            else:
                token_logps = logprobs_from_logits(logits, ids)
                m = comp.float()
            total = (token_logps * m).sum(1)
            return total / m.sum(1) if reduce == "mean" else total
        return completion_logps

    return [
        ("position t's logits predict token t + 1: pair logits[:, :-1] with input_ids[:, 1:]", [make(shift=False)]),
        ("shift the mask with the tokens: completion_mask[:, 1:] marks which of input_ids[:, 1:] to keep",
         [make(mask="unshifted")]),
        ("the prompt's tokens are counted: keep only the completion's, with completion_mask",
         [make(mask="attention")]),
        ("DPO summing over padding: the padding after each completion is counted; mask it with completion_mask",
         [make(mask="padding")]),
        ("sum the completion's token log-probabilities (log p of the whole completion), do not average them",
         [make(reduce="mean")]),
    ]


def check_completion_logps(fn: Callable) -> Verdict:
    """``fn(model, input_ids, attention_mask, completion_mask) -> log p(completion | prompt)`` per sequence."""
    from .dpo import completion_logps

    return run_check(fn, completion_logps, _completion_cases(), _completion_mistakes(),
                     names=("log-probabilities",),
                     hint="log_softmax the logits, gather the log-probability of each next token, keep the "
                          "completion's tokens (completion_mask[:, 1:]) and sum them per sequence")


# --------------------------------------------------------------------------------------------
# GRPO and RLOO (notebook 05): advantages from a group of rewards per prompt
# --------------------------------------------------------------------------------------------
def _group_cases() -> list[Case]:
    g = torch.Generator().manual_seed(6)
    return [Case("2 prompts x 4 completions", (torch.randn(2, 4, generator=g) * 2,)),
            Case("3 prompts x 3 completions, the last group all equal",
                 (torch.cat([torch.randn(2, 3, generator=g) + 1.0, torch.full((1, 3), 0.5)]),))]


def _group_mistakes(rloo: bool) -> list[Mistake]:
    from .grpo import grpo_advantages, rloo_advantages

    def centred(r):
        return r - r.mean(1, keepdim=True)

    def population_std(r):
        return centred(r) / (r.std(1, keepdim=True, unbiased=False) + 1e-4)

    def no_epsilon(r):
        return centred(r) / r.std(1, keepdim=True)

    def batch_mean(r):
        return (r - r.mean()) / (r.std(1, keepdim=True) + 1e-4)

    def batch_stats(r):
        return (r - r.mean()) / (r.std() + 1e-4)

    def columns(r):
        return (r - r.mean(0, keepdim=True)) / (r.std(0, keepdim=True) + 1e-4)

    def loo_columns(r):
        return r - (r.sum(0, keepdim=True) - r) / (r.shape[0] - 1)

    def loo_over_k(r):
        return r - (r.sum(1, keepdim=True) - r) / r.shape[1]

    def loo_scaled(r):
        return rloo_advantages(r) / (r.std(1, keepdim=True) + 1e-4)

    if not rloo:
        return [("the group std is not used: divide by each group's standard deviation + 1e-4", [centred]),
                ("TRL divides by the sample standard deviation (n - 1 in the denominator: torch's default "
                 "r.std(dim=1)), not the population one", [population_std]),
                ("add 1e-4 to the std: a group whose rewards are all equal has std 0", [no_epsilon]),
                ("the mean and std are each prompt's own group (a row, dim=1), not the whole batch",
                 [batch_mean, batch_stats]),
                ("a group is a row (the completions of one prompt, dim=1), not a column", [columns]),
                ("that is RLOO's leave-one-out baseline; GRPO subtracts the group mean and divides by the group std",
                 [rloo_advantages, loo_scaled])]
    return [("leave-one-out including itself: the baseline is the mean of the OTHER k - 1 rewards, "
             "(sum - r_i) / (k - 1)", [centred]),
            ("divide the others' sum by k - 1 (their number), not k", [loo_over_k]),
            ("RLOO does not divide by the std (TRL's normalize_advantages is off)", [loo_scaled, grpo_advantages]),
            ("a group is a row (the completions of one prompt, dim=1), not a column", [loo_columns])]


def check_group_advantages(fn: Callable) -> Verdict:
    """``fn(rewards) -> advantages`` for rewards of shape (prompts, completions): GRPO's group-standardised ones."""
    from .grpo import grpo_advantages

    return run_check(fn, grpo_advantages, _group_cases(), _group_mistakes(rloo=False), names=("advantages",),
                     hint="A_i = (r_i - mean of its row) / (std of its row + 1e-4)")


def check_leave_one_out(fn: Callable) -> Verdict:
    """``fn(rewards) -> advantages`` for rewards of shape (prompts, completions): RLOO's leave-one-out ones."""
    from .grpo import rloo_advantages

    return run_check(fn, rloo_advantages, _group_cases(), _group_mistakes(rloo=True), names=("advantages",),
                     hint="A_i = r_i - (sum of its row - r_i) / (k - 1)")


# --------------------------------------------------------------------------------------------
# Whole runs: did your pieces train the same model as the package's?
# --------------------------------------------------------------------------------------------
def check_same_run(mine: Sequence[dict], package: Sequence[dict], tol: float = ATOL) -> Verdict:
    """Compare two training logs (lists of dicts, e.g. PPO's history or TRL's ``log_history``) number by number,
    ignoring timings; correct when every shared number agrees to ``tol``, absolute or relative (a gradient norm of 8
    is only stored to about 1e-6: float32 has 24 bits)."""
    skip = ("time", "runtime", "per_second", "total_flos")
    if len(mine) != len(package):
        return Verdict(False, f"not yet: your run logged {len(mine)} entries, the package's {len(package)}")
    for a, b in zip(mine, package):
        for key in sorted(set(a) & set(b)):
            if any(word in key for word in skip):
                continue
            x, y = a[key], b[key]
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not (
                    math.isclose(x, y, rel_tol=tol, abs_tol=tol) or (math.isnan(x) and math.isnan(y))):
                step = b.get("step", "?")
                return Verdict(False, f"not yet: at step {step} your run's {key} is {x:.6g}, the package's {y:.6g}: "
                                      "your pieces trained a different model; check each with its fill-in check")
    return Verdict(True, "correct: your pieces trained the same model as the package's, number for number")
