"""PPO step-size / reward-normalisation candidates on the tiny preset: one line per candidate with the
step statistics (median clipfrac and approx_kl), held-out reward, positive fraction and KL, and time.
The table behind docs/tuning.md's PPO section and the preset's PPO defaults.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ppo_tuning.py --name A --ppo-epochs 2 --mini-batch-size 64 \
        --lr 1.5e-4 --steps 80 [--reward-norm] [--preset tiny]

Appends to benchmarks/results/ppo_tuning.jsonl and prints the markdown table of every line so far.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--mini-batch-size", type=int, default=None)
    ap.add_argument("--ppo-epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--init-kl", type=float, default=None)
    ap.add_argument("--kl-target", type=float, default=None)
    ap.add_argument("--kl-horizon", type=int, default=None)
    ap.add_argument("--reward-norm", action="store_true")
    ap.add_argument("--table-only", action="store_true", help="print the table of earlier runs and stop")
    args = ap.parse_args(argv)
    from rlhf_helpers.data import forbid_test_set

    forbid_test_set()  # settings are chosen on the validation prompts; the test set and the auditor stay unread
    out_file = RESULTS / "ppo_tuning.jsonl"
    if not args.table_only:
        from rlhf_helpers.config import get_preset
        from rlhf_helpers.data import load_imdb, make_prompts
        from rlhf_helpers.evaluate import evaluate_policies, flip_rate, heldout_prompt_table
        from rlhf_helpers.models import load_tokenizer
        from rlhf_helpers.ppo import ppo_config_for, train_ppo
        from rlhf_helpers.rater import sentiment_reward
        from rlhf_helpers.sft import ensure_sft

        preset = get_preset(args.preset)
        changes = {k: v for k, v in {"batch_size": args.batch_size, "mini_batch_size": args.mini_batch_size,
                                      "ppo_epochs": args.ppo_epochs, "learning_rate": args.lr,
                                      "init_kl_coef": args.init_kl, "kl_target": args.kl_target,
                                      "kl_horizon": args.kl_horizon}.items() if v is not None}
        cfg = replace(ppo_config_for(preset), **changes, reward_norm=args.reward_norm)
        steps = args.steps or preset.ppo.steps
        sft = ensure_sft(preset)
        tok = load_tokenizer(sft)
        reward = sentiment_reward(preset)
        prompts = make_prompts(load_imdb(preset)["train"], tok, seed=preset.seed)["prompt"]
        work = Path(tempfile.mkdtemp(prefix="ppo-tune-"))
        t0 = time.time()
        hist = train_ppo(sft, reward, prompts, cfg, steps, preset.ppo.min_len, preset.ppo.max_len, work, save_every=0)
        seconds = time.time() - t0
        table = heldout_prompt_table(preset, tok, split="validation")
        summary, samples = evaluate_policies({"SFT": sft, "PPO": work}, reward, sft, list(table["prompt"]),
                                             preset.ppo.min_len, preset.ppo.max_len, seed=preset.seed)
        flips = flip_rate(samples, table["label"])
        row = {"name": args.name, "preset": preset.name, "steps": steps, "episodes": steps * cfg.batch_size,
               **{k: v for k, v in asdict(cfg).items() if k in ("batch_size", "mini_batch_size", "ppo_epochs",
                                                                "learning_rate", "init_kl_coef", "kl_target",
                                                                "kl_horizon", "reward_norm")},
               "train_seconds": round(seconds, 1), "episodes_per_s": round(steps * cfg.batch_size / seconds, 1),
               "median_clipfrac": round(float(np.median([h["clipfrac"] for h in hist])), 3),
               "median_approx_kl": round(float(np.median([h["approx_kl"] for h in hist])), 4),
               "final_train_kl": round(hist[-1]["kl"], 2), "final_kl_coef": round(hist[-1]["kl_coef"], 4),
               "heldout_positive": round(float(summary.loc["PPO", "positive_fraction"]), 3),
               "heldout_flip_rate": round(float(flips["PPO"]), 3),
               "heldout_reward": round(float(summary.loc["PPO", "reward"]), 3),
               "heldout_kl": round(float(summary.loc["PPO", "kl"]), 2),
               "distinct_2": round(float(summary.loc["PPO", "distinct_2"]), 3),
               "sft_positive": round(float(summary.loc["SFT", "positive_fraction"]), 3),
               "sft_distinct_2": round(float(summary.loc["SFT", "distinct_2"]), 3),
               "real_words": round(float(summary.loc["PPO", "real_words"]), 3), "split": "validation",
               "when": time.strftime("%Y-%m-%d %H:%M")}
        shutil.rmtree(work, ignore_errors=True)  # the row is the result; the candidate policy is not kept
        RESULTS.mkdir(exist_ok=True)
        with out_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
    rows = [json.loads(l) for l in out_file.read_text().splitlines() if l.strip()]
    cols = ["name", "steps", "batch_size", "mini_batch_size", "ppo_epochs", "learning_rate", "init_kl_coef",
            "kl_target", "reward_norm", "train_seconds", "episodes_per_s", "median_clipfrac", "median_approx_kl",
            "heldout_positive", "heldout_flip_rate", "heldout_kl", "distinct_2"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
