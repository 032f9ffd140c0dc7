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
