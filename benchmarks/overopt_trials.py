"""PPO against the reward model with other settings than the preset's ``overopt`` ones: policy snapshots graded on
the **validation** prompts by the reward model (the proxy) and the rater (the gold score). The table behind the
over-optimisation run's settings (docs/tuning.md round 7); the test prompts and the auditor are never read::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/overopt_trials.py --lr 5e-4 --kl-coef 0.02 [--steps 48]

Appends one JSON line per run (a row per snapshot) to benchmarks/results/overopt_trials.jsonl.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "overopt_trials.jsonl"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--kl-coef", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--snapshots", type=int, default=None)
    ap.add_argument("--prompts", type=int, default=320)
    ap.add_argument("--rm-steps", type=int, default=None,
                    help="a weaker proxy: train the reward model for this many steps (use a scratch RLHF_HOME that "
                         "holds copies of the tokenizer, sft, classifier and pairs, and no reward_model)")
    ap.add_argument("--note", default="")
    a = ap.parse_args(argv)
    from rlhf_helpers.data import forbid_test_set

    forbid_test_set()
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.data import load_imdb, make_prompts
    from rlhf_helpers.evaluate import evaluate_policies, heldout_prompts
    from rlhf_helpers.models import load_tokenizer
    from rlhf_helpers.overopt import reward_model_scorer, snapshot_folders
    from rlhf_helpers.ppo import ppo_config_for, train_ppo
    from rlhf_helpers.rater import sentiment_reward
    from rlhf_helpers.sft import ensure_sft

    preset = get_preset(a.preset)
    if a.rm_steps:
        preset = preset.replace(reward_model=replace(preset.reward_model, max_steps=a.rm_steps))
    o = preset.overopt
    steps, snapshots = a.steps or o.steps, a.snapshots or o.snapshots
    base = ppo_config_for(preset)
    cfg = replace(base, init_kl_coef=o.kl_coef if a.kl_coef is None else a.kl_coef, adaptive_kl=False,
                  reward_norm=True, batch_size=o.batch_size, mini_batch_size=o.mini_batch_size,
                  learning_rate=a.lr or base.learning_rate)
    sft = ensure_sft(preset)
    tok = load_tokenizer(sft)
    proxy = reward_model_scorer(preset)
    prompts = make_prompts(load_imdb(preset)["train"], tok, seed=preset.seed)["prompt"]
    work = Path(tempfile.mkdtemp(prefix="overopt-trial-"))
    t0 = time.time()
    every = max(1, steps // snapshots)
    train_ppo(sft, proxy, prompts, cfg, steps, preset.ppo.min_len, preset.ppo.max_len, work, save_every=0,
              snapshot_every=every)
    seconds = time.time() - t0
    folders = snapshot_folders(work, sft, steps)
    val = heldout_prompts(preset, tok, a.prompts, split="validation")
    # graded by the rater (the gold); the proxy then scores the same texts
    summary, samples = evaluate_policies({f"step {k}": f for k, f in folders.items()}, sentiment_reward(preset), sft,
                                         val, preset.ppo.min_len, preset.ppo.max_len, seed=preset.seed, preset=preset)
    rows = []
    for k, (name, r) in zip(folders, summary.iterrows()):
        mine = samples[samples["model"] == name]
        rows.append({"step": k, "proxy": round(float(proxy(list(mine["prompt"] + mine["response"])).mean()), 3),
                     "gold": round(float(r["reward"]), 3), "gold_lo": round(float(r["reward_lo"]), 3),
                     "gold_hi": round(float(r["reward_hi"]), 3),
                     "positive_rater": round(float(r["positive_fraction"]), 3), "kl": round(float(r["kl"]), 2),
                     "distinct_2": round(float(r["distinct_2"]), 3)})
    from rlhf_helpers.models import read_meta
    from rlhf_helpers.reward_model import ensure_reward_model

    rm_meta = read_meta(ensure_reward_model(preset))["metrics"]
    line = {"rm_steps": preset.reward_model.max_steps, "rm_heldout_accuracy": round(rm_meta["heldout_pairwise_accuracy"], 3),
            "lr": cfg.learning_rate, "kl_coef": cfg.init_kl_coef, "steps": steps, "batch_size": cfg.batch_size,
            "mini_batch_size": cfg.mini_batch_size, "train_seconds": round(seconds, 1), "split": "validation",
            "prompts": len(val), "snapshots": rows, "note": a.note, "when": time.strftime("%Y-%m-%d %H:%M")}
    shutil.rmtree(work, ignore_errors=True)
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(line) + "\n")
    print(f"lr {cfg.learning_rate:g}, kl_coef {cfg.init_kl_coef:g}, {steps} steps in {seconds:.0f} s")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
