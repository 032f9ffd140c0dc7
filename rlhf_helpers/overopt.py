"""Over-optimisation, measured: what PPO does to a reward with no leash, and to a *learned* reward.

Two runs of the series' PPO, both from the SFT writer, both built by ``build all`` and ``make run``:

* ``ppo_beta0``: PPO against the rater with the KL penalty switched off (β = 0). Nothing keeps the writer near
  its reference, so it finds whatever phrasing the rater scores highest and repeats it.
* ``ppo_rm``: step 3 of the full recipe. PPO optimises the **reward model** (learned in notebook 02 from the
  rater's comparisons), not the rater. The rater is then a real gold standard for the reward model (it made
  the labels the reward model imitates), so, as in Gao et al. (2022), the run shows the proxy's score rising
  while the gold score rises less, peaks and falls as the KL grows. Policy snapshots along the run are graded
  on the test prompts by the reward model (the proxy), the rater (the gold) and the auditor, and plotted
  against √KL.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .config import Preset, get_preset


class RewardModelScorer:
    """The reward model as a PPO reward and as an evaluation judge: one scalar score per text.

    ``all_logits`` gives ``{"score": s}`` so the evaluation can read it like a classifier; ``positive`` has no
    meaning for a reward model (the evaluation's positive column is then always true and is not shown)."""

    label = "score"

    def __init__(self, folder: str | Path, max_length: int = 64, batch_size: int = 64):
        from .reward_model import load_reward_model

        self.model, self.tokenizer = load_reward_model(folder)
        self.max_length, self.batch_size = max_length, batch_size

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        from .reward_model import reward_model_scores

        with torch.no_grad():
            return reward_model_scores(self.model, self.tokenizer, list(texts), self.max_length, self.batch_size)

    def all_logits(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [{"score": float(s)} for s in self(texts)]


def reward_model_scorer(preset: Preset | None = None) -> RewardModelScorer:
    from .reward_model import ensure_reward_model

    preset = preset or get_preset()
    return RewardModelScorer(ensure_reward_model(preset), max_length=preset.reward_model.max_length)


def cheap_proxy_scorer(preset: Preset | None = None) -> RewardModelScorer:
    """The cheap proxy of notebook 06 (``overopt.cheap_*``) as a scorer, built first if missing."""
    preset = preset or get_preset()
    return RewardModelScorer(ensure_cheap_reward_model(preset), max_length=preset.reward_model.max_length)


def _train_stage(preset: Preset, stage: str, reward, cfg, steps: int, snapshots: int) -> Path:
    """One PPO run from the SFT writer saved as the artifact ``stage`` (with its policy snapshots)."""
    from .data import load_imdb, make_prompts
    from .models import checkpoint_dir, load_tokenizer, save_artifact, stage_dir
    from .ppo import train_ppo
    from .sft import ensure_sft

    s = preset.ppo
    sft = ensure_sft(preset)
    prompts = make_prompts(load_imdb(preset)["train"], load_tokenizer(sft), seed=preset.seed)["prompt"]
    work = stage_dir(preset, stage) / "work"
    t0 = time.time()
    history = train_ppo(sft, reward, prompts, cfg, steps, s.min_len, s.max_len, work,
                        checkpoint_dir=checkpoint_dir(preset, stage), save_every=s.save_every,
                        snapshot_every=max(1, steps // snapshots) if snapshots else 0)
    meta = {"settings": {**asdict(cfg), "steps": steps, "snapshots": snapshots},
            "metrics": {"train_seconds": round(time.time() - t0, 1), "final": history[-1]},
            "log_history": history}
    path = save_artifact(preset, stage, lambda folder: shutil.copytree(work, folder), meta)
    shutil.rmtree(work, ignore_errors=True)
    return path


def ensure_ppo_beta0(preset: Preset | None = None, force: bool = False) -> Path:
    """PPO against the rater with β = 0 (no KL penalty), the preset's other PPO settings, ``overopt.beta0_steps``
    steps: the reward hacking that the KL penalty prevents, prebuilt so notebooks 03 and 05 can show it."""
    from .models import ensure
    from .ppo import ppo_config_for
    from .rater import sentiment_reward

    preset = preset or get_preset()
    o = preset.overopt
    cfg = replace(ppo_config_for(preset), init_kl_coef=0.0, adaptive_kl=False, batch_size=o.batch_size,
                  mini_batch_size=o.mini_batch_size)
    return ensure(preset, "ppo_beta0",
                  lambda: _train_stage(preset, "ppo_beta0", sentiment_reward(preset), cfg, o.beta0_steps, 0),
                  force=force)


def ensure_ppo_rm(preset: Preset | None = None, force: bool = False) -> Path:
    """PPO against the reward model (step 3 of the full recipe), a weak fixed KL penalty, snapshots along the
    run for the over-optimisation curve (``overopt`` settings)."""
    from .models import ensure

    preset = preset or get_preset()
    o = preset.overopt
    return ensure(preset, "ppo_rm", lambda: _train_stage(preset, "ppo_rm", reward_model_scorer(preset),
                                                         _rm_ppo_config(preset), o.steps, o.snapshots), force=force)


def ensure_cheap_reward_model(preset: Preset | None = None, force: bool = False) -> Path:
    """The cheap proxy (``overopt.cheap_*``): a reward model from random weights on a few of the rater's comparisons,
    kept beside notebook 02's as ``reward_model_cheap``."""
    preset = preset or get_preset()
    o = preset.overopt
    return _variant_reward_model(preset, o.cheap_init, o.cheap_pairs, None, stage="reward_model_cheap", force=force)


def ensure_ppo_rm_cheap(preset: Preset | None = None, force: bool = False) -> Path:
    """PPO against the cheap proxy with the ``overopt`` steps, snapshots and batch sizes and a KL coefficient of
    ``overopt.cheap_kl_coef`` (0: no leash)."""
    from .models import ensure

    preset = preset or get_preset()
    o = preset.overopt

    return ensure(preset, "ppo_rm_cheap", lambda: _train_stage(preset, "ppo_rm_cheap", cheap_proxy_scorer(preset),
                                                               _rm_ppo_config(preset, o.cheap_kl_coef), o.steps,
                                                               o.snapshots), force=force)


def _variant_reward_model(preset: Preset, init: str, train_pairs: int | None, rm_steps: int | None,
                          stage: str | None = None, force: bool = False) -> Path:
    """A reward model with other settings than notebook 02's, saved as its own artifact (``stage``, by default
    ``reward_model_<init>_<pairs>_<steps>``); notebook 02's own when every setting is the preset's."""
    from .models import ensure
    from .reward_model import ensure_reward_model, train_reward_model

    if init not in ("sft", "scratch"):
        raise ValueError(f"init must be 'sft' (start from the SFT writer) or 'scratch' (random weights), not {init!r}")
    if train_pairs is not None and train_pairs < 2:
        raise ValueError(f"train_pairs={train_pairs}: a reward model needs at least 2 comparisons; use None for all")
    r = replace(preset.reward_model, init=init, train_pairs=train_pairs,
                max_steps=preset.reward_model.max_steps if rm_steps is None else rm_steps)
    if r == preset.reward_model and stage is None:
        return ensure_reward_model(preset)
    variant = preset.replace(reward_model=r)
    stage = stage or f"reward_model_{init}_{train_pairs or 'all'}_{r.max_steps}"
    return ensure(variant, stage, lambda: train_reward_model(variant, stage=stage), force=force)


def _rm_ppo_config(preset: Preset, kl_coef: float | None = None, learning_rate: float | None = None):
    """The PPO settings of a run against a reward model: the preset's PPO with a fixed KL coefficient
    (``overopt.kl_coef`` unless given) and the ``overopt`` batch sizes."""
    from .ppo import ppo_config_for

    o, base = preset.overopt, ppo_config_for(preset)
    return replace(base, init_kl_coef=o.kl_coef if kl_coef is None else kl_coef, adaptive_kl=False, reward_norm=True,
                   batch_size=o.batch_size, mini_batch_size=o.mini_batch_size,
                   learning_rate=base.learning_rate if learning_rate is None else learning_rate)


def snapshot_folders(run: str | Path, sft: str | Path, steps: int | None = None) -> dict[int, Path]:
    """``{step: folder}`` of a run's policy snapshots, step 0 being the SFT writer and the last the final policy
    (at ``steps``; by default read from the run's metadata)."""
    from .models import read_meta

    run = Path(run)
    found = {0: Path(sft)}
    for folder in sorted((run / "snapshots").glob("step-*")):
        found[int(folder.name.split("-")[1])] = folder
    found[int(steps if steps is not None else read_meta(run)["settings"]["steps"])] = run
    return dict(sorted(found.items()))


def overoptimisation_table(preset: Preset | None = None, n_prompts: int | None = None,
                           cheap: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Grade every snapshot of ``ppo_rm`` (``cheap=True``: of ``ppo_rm_cheap``, by the cheap proxy) on the test
    prompts by the reward model it optimised (proxy), the rater (gold) and the auditor: ``(summary, samples)``; the
    summary has one row per step with 95 % intervals and √KL."""
    from .evaluate import heldout_prompts
    from .models import load_tokenizer
    from .auditor import load_auditor
    from .rater import sentiment_reward
    from .sft import ensure_sft

    preset = preset or get_preset()
    sft = ensure_sft(preset)
    folders = snapshot_folders(ensure_ppo_rm_cheap(preset) if cheap else ensure_ppo_rm(preset), sft)
    proxy = cheap_proxy_scorer(preset) if cheap else reward_model_scorer(preset)
    prompts = heldout_prompts(preset, load_tokenizer(sft), n_prompts or preset.overopt.eval_prompts)
    return _grade_snapshots(preset, folders, proxy, sft, prompts,
                            {"rater": sentiment_reward(preset), "auditor": load_auditor(preset)})


def _grade_snapshots(preset: Preset, folders: dict[int, Path], proxy, sft, prompts,
                     judges) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every snapshot on the same prompts, scored by the proxy it optimised and by ``judges``: ``(summary, samples)``
    with one summary row per step (``proxy`` columns, 95 % intervals, √KL)."""
    from .evaluate import evaluate_policies

    summary, samples = evaluate_policies({f"step {k}": f for k, f in folders.items()}, proxy, sft, prompts,
                                         preset.ppo.min_len, preset.ppo.max_len, seed=preset.seed, judges=judges,
                                         preset=preset)
    summary = summary.rename(columns={"reward": "proxy", "reward_lo": "proxy_lo", "reward_hi": "proxy_hi"})
    summary.insert(0, "step", list(folders))
    summary["sqrt_kl"] = np.sqrt(summary["kl"].clip(lower=0))
    # a reward model's "positive" means nothing (its evaluation column is always true): dropped
    return summary.drop(columns=["positive_fraction", "positive_fraction_lo", "positive_fraction_hi"]), samples


def proxy_trial(preset: Preset | None = None, *, init: str = "sft", train_pairs: int | None = None,
                rm_steps: int | None = None, kl_coef: float | None = None, learning_rate: float | None = None,
                steps: int | None = None, snapshots: int | None = None, n_prompts: int = 320,
                split: str = "validation") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Your own proxy-versus-gold run: PPO against a reward model trained with other settings than notebook 02's,
    graded along the run by that reward model (the proxy) and the rater (the gold), on ``split`` prompts
    (validation by default: a trial should choose nothing by the test set). The auditor is not read.

    * the proxy: ``init`` ("sft": started from the SFT writer, as in notebook 02; "scratch": the same architecture
      from random weights, another body with other errors), ``train_pairs`` (the first that many comparisons after
      a seeded shuffle; None: all) and ``rm_steps`` (None: the preset's). Kept as its own artifact,
      ``reward_model_<init>_<pairs>_<steps>``, beside notebook 02's reward model, which it never replaces;
      with every setting at the preset's, notebook 02's reward model is used.
    * the PPO run: ``kl_coef`` (fixed; None: ``overopt.kl_coef``; 0 is no leash), ``learning_rate``, ``steps`` and
      ``snapshots`` (None: the ``overopt`` settings). It lives in a temporary folder and is deleted afterwards.

    Returns ``(summary, samples, info)``: the summary and samples as :func:`overoptimisation_table` gives them,
    without the auditor; ``info`` holds the proxy's held-out pairwise accuracy, its comparisons and the run's
    training seconds.
    """
    import tempfile

    from .data import load_imdb, make_prompts
    from .evaluate import heldout_prompts
    from .models import load_tokenizer, read_meta
    from .ppo import train_ppo
    from .rater import sentiment_reward
    from .sft import ensure_sft

    preset = preset or get_preset()
    folder = _variant_reward_model(preset, init, train_pairs, rm_steps)
    r = preset.reward_model
    proxy = RewardModelScorer(folder, max_length=r.max_length)
    o = preset.overopt
    steps, snapshots = steps or o.steps, snapshots or o.snapshots
    cfg = _rm_ppo_config(preset, kl_coef, learning_rate)
    sft = ensure_sft(preset)
    tok = load_tokenizer(sft)
    train_prompts = make_prompts(load_imdb(preset)["train"], tok, seed=preset.seed)["prompt"]
    with tempfile.TemporaryDirectory(prefix="proxy-trial-") as work:
        t0 = time.time()
        train_ppo(sft, proxy, train_prompts, cfg, steps, preset.ppo.min_len, preset.ppo.max_len, Path(work),
                  save_every=0, snapshot_every=max(1, steps // snapshots))
        seconds = time.time() - t0
        prompts = heldout_prompts(preset, tok, n_prompts, split=split)
        summary, samples = _grade_snapshots(preset, snapshot_folders(work, sft, steps), proxy, sft, prompts,
                                            {"rater": sentiment_reward(preset)})
    metrics = read_meta(folder)["metrics"]
    info = {"init": init, "train_pairs": metrics["train_pairs"], "rm_steps": rm_steps or r.max_steps,
            "rm_heldout_accuracy": metrics["heldout_pairwise_accuracy"], "kl_coef": cfg.init_kl_coef,
            "learning_rate": cfg.learning_rate, "steps": steps, "batch_size": cfg.batch_size,
            "mini_batch_size": cfg.mini_batch_size, "train_seconds": round(seconds, 1), "split": split,
            "prompts": len(prompts)}
    return summary, samples, info


def gold_peak(summary: pd.DataFrame) -> dict[str, float]:
    """Where the gold score peaks along the run, and what the proxy did after it. The gold score is the rater's
    mean log-odds of POSITIVE (``reward_rater``), the continuous score Gao et al. plot: its positive share
    saturates near 100 % and can hide a decline."""
    i = int(np.argmax(summary["reward_rater"].to_numpy()))
    row, last = summary.iloc[i], summary.iloc[-1]
    return {"peak_step": int(row["step"]), "peak_gold": float(row["reward_rater"]),
            "peak_positive": float(row["positive_fraction_rater"]), "peak_kl": float(row["kl"]),
            "last_step": int(last["step"]), "last_gold": float(last["reward_rater"]),
            "last_positive": float(last["positive_fraction_rater"]), "last_kl": float(last["kl"]),
            "proxy_at_peak": float(row["proxy"]), "proxy_last": float(last["proxy"])}


def plot_overoptimisation(summary: pd.DataFrame, title: str | None = None):
    """Against √KL: the proxy (reward model) and the gold score (the rater's mean log-odds) on the left, the rater's
    and (where graded) the auditor's positive shares on the right; each with its 95 % interval."""
    import matplotlib.pyplot as plt

    x = summary["sqrt_kl"].to_numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    gold = left.twinx()  # two scores on two scales: each model's own units
    for ax, col, colour, name in ((left, "proxy", "tab:purple", "reward model (the proxy PPO optimises)"),
                                  (gold, "reward_rater", "tab:green", "rater's log-odds (the gold score)")):
        ax.plot(x, summary[col], "o-", color=colour, label=name)
        ax.fill_between(x, summary[f"{col}_lo"], summary[f"{col}_hi"], color=colour, alpha=0.2)
    left.set_xlabel("√KL(policy ‖ SFT)  (√nats)")
    left.set_ylabel("reward model's mean score", color="tab:purple")
    gold.set_ylabel("rater's mean log-odds of POSITIVE", color="tab:green")
    left.set_title("proxy and gold scores")
    # one legend for both scales, on the twin axes (drawn on top), where the curves start low: the upper left
    gold.legend(*[sum(z, []) for z in zip(left.get_legend_handles_labels(), gold.get_legend_handles_labels())],
                loc="upper left", fontsize=8)
    for col, colour, name in (("positive_fraction_rater", "tab:green", "rater (gold: made the reward model's labels)"),
                              ("positive_fraction_auditor", "tab:orange", "auditor (never trained against)")):
        if col not in summary:  # a proxy trial grades by the rater alone
            continue
        right.plot(x, 100 * summary[col], "o-", color=colour, label=name)
        right.fill_between(x, 100 * summary[f"{col}_lo"], 100 * summary[f"{col}_hi"], color=colour, alpha=0.2)
    right.set_xlabel("√KL(policy ‖ SFT)  (√nats)")
    right.set_ylabel("% of answers called positive")
    right.set_title("what the rater (gold) and the auditor say" if "positive_fraction_auditor" in summary
                    else "what the rater (gold) says")
    right.legend(loc="lower right", fontsize=8)
    # each point labelled with its PPO step (the KL need not grow with every step, so the line can turn back)
    for ax, ys in ((gold, summary["reward_rater"].to_numpy()), (right, 100 * summary["positive_fraction_rater"].to_numpy())):
        for i, (xi, yi, step) in enumerate(zip(x, ys, summary["step"])):
            ax.annotate(f"step {int(step)}" if i in (0, len(x) - 1) else str(int(step)), (xi, yi),
                        textcoords="offset points", xytext=(4, 6 if i % 2 else -11), fontsize=7, color="grey")
    fig.suptitle(title or "Over-optimising a learned reward (points labelled by PPO step; bands: 95 % intervals)")
    return fig


__all__ = ["RewardModelScorer", "cheap_proxy_scorer", "ensure_cheap_reward_model", "ensure_ppo_beta0", "ensure_ppo_rm",
           "ensure_ppo_rm_cheap", "gold_peak", "overoptimisation_table", "plot_overoptimisation", "proxy_trial",
           "reward_model_scorer", "snapshot_folders"]
