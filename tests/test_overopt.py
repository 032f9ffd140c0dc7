"""Over-optimisation runs (PPO against the reward model, PPO with β = 0), built and graded in the smoke preset."""
from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def smoke():
    from rlhf_helpers.config import get_preset

    return get_preset("smoke")


def test_ppo_against_the_reward_model_keeps_snapshots_and_grades_them(smoke):
    from rlhf_helpers.models import read_meta
    from rlhf_helpers.overopt import ensure_ppo_rm, gold_peak, overoptimisation_table, plot_overoptimisation

    run = ensure_ppo_rm(smoke)
    meta = read_meta(run)
    assert meta["settings"]["init_kl_coef"] == smoke.overopt.kl_coef and meta["settings"]["adaptive_kl"] is False
    summary, samples = overoptimisation_table(smoke)
    steps = list(summary["step"])
    assert steps[0] == 0 and steps[-1] == smoke.overopt.steps and steps == sorted(steps) and len(steps) >= 3
    for col in ("proxy", "proxy_lo", "proxy_hi", "reward_rater", "reward_rater_lo", "reward_rater_hi",
                "positive_fraction_rater", "positive_fraction_rater_lo",
                "positive_fraction_auditor_hi", "kl", "sqrt_kl", "distinct_2", "real_words"):
        assert col in summary.columns, col
    assert summary.iloc[0]["kl"] == 0.0  # step 0 is the SFT writer itself
    assert (summary["proxy_lo"] <= summary["proxy"]).all() and (summary["proxy"] <= summary["proxy_hi"]).all()
    assert len(samples) == len(steps) * smoke.overopt.eval_prompts
    peak = gold_peak(summary)
    assert peak["peak_step"] in steps
    fig = plot_overoptimisation(summary)
    assert len(fig.axes) == 3  # proxy and gold score (two scales), positive shares


def test_beta0_run_has_no_kl_penalty(smoke):
    from rlhf_helpers.models import read_meta
    from rlhf_helpers.overopt import ensure_ppo_beta0

    meta = read_meta(ensure_ppo_beta0(smoke))
    assert meta["settings"]["init_kl_coef"] == 0.0 and meta["settings"]["adaptive_kl"] is False
    assert all(h["kl_coef"] == 0.0 for h in meta["log_history"])


def test_gold_peak_finds_the_peak_and_what_followed():
    from rlhf_helpers.overopt import gold_peak

    # the gold *score* (the rater's mean log-odds) turns down at step 30 while its positive share still rises:
    # the peak is read from the score
    summary = pd.DataFrame({"step": [0, 10, 20, 30], "reward_rater": [0.3, 1.6, 2.7, 2.1],
                            "positive_fraction_rater": [0.6, 0.8, 0.9, 0.95],
                            "kl": [0.0, 2.0, 5.0, 12.0], "proxy": [0.0, 1.0, 2.0, 3.5]})
    peak = gold_peak(summary)
    assert peak["peak_step"] == 20 and peak["last_gold"] == 2.1 and peak["proxy_last"] > peak["proxy_at_peak"]
    assert peak["peak_positive"] == 0.9 and peak["last_positive"] == 0.95


def test_proxy_trial_trains_its_own_proxy_and_leaves_notebook_02s_alone(smoke, monkeypatch):
    """A learner's proxy (random weights, fewer comparisons) is a separate artifact: notebook 02's reward model
    keeps its files, the variant's body really starts from random weights, and the auditor is never read."""
    import hashlib

    from safetensors.torch import load_file

    import rlhf_helpers.auditor
    from rlhf_helpers.models import model_dir, read_meta
    from rlhf_helpers.overopt import proxy_trial
    from rlhf_helpers.reward_model import ensure_reward_model
    from rlhf_helpers.sft import ensure_sft

    main = ensure_reward_model(smoke) / "model.safetensors"
    before = hashlib.sha256(main.read_bytes()).hexdigest()

    def no_auditor(*args, **kwargs):
        raise AssertionError("a proxy trial read the auditor")

    monkeypatch.setattr(rlhf_helpers.auditor, "load_auditor", no_auditor)
    summary, samples, info = proxy_trial(smoke, init="scratch", train_pairs=4, kl_coef=0.0, steps=4, snapshots=2,
                                         n_prompts=6)
    assert hashlib.sha256(main.read_bytes()).hexdigest() == before
    variant = model_dir(smoke, f"reward_model_scratch_4_{smoke.reward_model.max_steps}")
    assert read_meta(variant)["metrics"]["train_pairs"] == 4 and info["train_pairs"] == 4
    assert info["split"] == "validation" and info["kl_coef"] == 0.0
    # the same trial started from the SFT writer: same data and seed, so only the start differs
    proxy_trial(smoke, init="sft", train_pairs=4, kl_coef=0.0, steps=4, snapshots=2, n_prompts=6)
    sft = load_file(str(ensure_sft(smoke) / "model.safetensors"))
    distance = {}
    for start in ("scratch", "sft"):
        mine = load_file(str(model_dir(smoke, f"reward_model_{start}_4_{smoke.reward_model.max_steps}")
                             / "model.safetensors"))
        body = [k for k in mine if k.startswith("transformer.h.0.") and k in sft and mine[k].dim() == 2]
        assert body
        distance[start] = sum(float((mine[k] - sft[k]).abs().mean()) for k in body) / len(body)
    assert distance["scratch"] > 1.5 * distance["sft"]  # random weights, not the SFT writer's
    assert list(summary["step"]) == [0, 2, 4] and len(samples) == 3 * 6
    assert {"proxy", "proxy_lo", "reward_rater", "reward_rater_hi", "kl", "sqrt_kl"} <= set(summary.columns)
    assert not any("auditor" in c for c in summary.columns)


def test_proxy_trial_refuses_an_unknown_start(smoke):
    from rlhf_helpers.overopt import proxy_trial

    with pytest.raises(ValueError, match="'sft'.*'scratch'"):
        proxy_trial(smoke, init="random")
    with pytest.raises(ValueError, match="at least 2 comparisons"):
        proxy_trial(smoke, train_pairs=1)


def test_the_cheap_proxy_run_is_graded_by_its_own_proxy(smoke):
    """``ppo_rm_cheap`` optimises the cheap proxy (random weights, ``overopt.cheap_pairs`` comparisons, no KL
    penalty), and its table scores by that proxy: the SFT writer's answers (step 0) get other proxy scores than
    under notebook 02's reward model."""
    from rlhf_helpers.models import read_meta
    from rlhf_helpers.overopt import ensure_cheap_reward_model, ensure_ppo_rm_cheap, overoptimisation_table

    o = smoke.overopt
    rm = read_meta(ensure_cheap_reward_model(smoke))
    assert rm["settings"]["init"] == o.cheap_init == "scratch" and rm["metrics"]["train_pairs"] <= o.cheap_pairs
    run = read_meta(ensure_ppo_rm_cheap(smoke))
    assert run["settings"]["init_kl_coef"] == o.cheap_kl_coef and run["settings"]["adaptive_kl"] is False
    cheap, _ = overoptimisation_table(smoke, cheap=True)
    main, _ = overoptimisation_table(smoke)
    assert list(cheap["step"]) == list(main["step"])
    assert cheap.iloc[0]["reward_rater"] == main.iloc[0]["reward_rater"]  # the same SFT answers, the same gold
    assert cheap.iloc[0]["proxy"] != main.iloc[0]["proxy"]  # scored by another proxy
    assert "positive_fraction_auditor" in cheap.columns
