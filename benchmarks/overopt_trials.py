"""PPO against a reward model with other settings than the preset's ``overopt`` ones (``overopt.proxy_trial``):
policy snapshots graded on the **validation** prompts by the reward model (the proxy) and the rater (the gold
score). The table behind the over-optimisation run's settings and the search for a proxy whose gold score turns
(docs/tuning.md rounds 7, 9 and 10); the test prompts and the auditor are never read::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/overopt_trials.py --lr 5e-4 --kl-coef 0.02 [--steps 48]
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/overopt_trials.py --rm-init scratch --rm-pairs 384 --kl-coef 0

Appends one JSON line per run (a row per snapshot) to benchmarks/results/overopt_trials.jsonl.
"""
from __future__ import annotations

import argparse
import json
import time
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
    ap.add_argument("--rm-steps", type=int, default=None, help="a weaker proxy: train the reward model this many steps")
    ap.add_argument("--rm-init", choices=("sft", "scratch"), default=None,
                    help="a proxy with another body: 'scratch' trains the reward model from random weights")
    ap.add_argument("--rm-pairs", type=int, default=None, help="a proxy from fewer comparisons")
    ap.add_argument("--note", default="")
    a = ap.parse_args(argv)
    from rlhf_helpers.data import forbid_test_set

    forbid_test_set()
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.overopt import proxy_trial

    summary, samples, info = proxy_trial(get_preset(a.preset), init=a.rm_init or "sft", train_pairs=a.rm_pairs,
                                         rm_steps=a.rm_steps, kl_coef=a.kl_coef, learning_rate=a.lr, steps=a.steps,
                                         snapshots=a.snapshots, n_prompts=a.prompts, split="validation")
    rows = [{"step": int(r["step"]), "proxy": round(float(r["proxy"]), 3), "gold": round(float(r["reward_rater"]), 3),
             "gold_lo": round(float(r["reward_rater_lo"]), 3), "gold_hi": round(float(r["reward_rater_hi"]), 3),
             "positive_rater": round(float(r["positive_fraction_rater"]), 3), "kl": round(float(r["kl"]), 2),
             "distinct_2": round(float(r["distinct_2"]), 3)} for _, r in summary.iterrows()]
    line = {**{k: round(v, 3) if isinstance(v, float) else v for k, v in info.items()}, "snapshots": rows,
            "note": a.note, "when": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(line) + "\n")
    print(f"proxy: {info['init']}, {info['train_pairs']} pairs, held-out accuracy {info['rm_heldout_accuracy']:.1%}; "
          f"lr {info['learning_rate']:g}, kl_coef {info['kl_coef']:g}, {info['steps']} steps in {info['train_seconds']:.0f} s")
    for r in rows:
        print(r)
        print("   ", list(samples[samples["model"] == f"step {r['step']}"]["response"][:4]))


if __name__ == "__main__":
    main()
