"""GRPO / RLOO candidates on the tiny preset, chosen on the validation prompts with the rater alone.

One line per candidate: the settings, training time, and on the validation prompts the positive fraction,
reward, KL and distinct-2 of the trained policy (SFT's beside it). The test prompts and the auditor are never
read (``forbid_test_set``)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/online_tuning.py --method grpo --beta 0.04 --lr 1e-4

Appends to benchmarks/results/online_tuning.jsonl and prints the table of every line so far.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=["grpo", "rloo"], required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--beta", type=float, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--table-only", action="store_true")
    a = ap.parse_args(argv)
    from rlhf_helpers.data import forbid_test_set

    forbid_test_set()  # chosen on validation prompts with the rater alone
    out_file = RESULTS / "online_tuning.jsonl"
    if not a.table_only:
        import os

        from rlhf_helpers.config import get_preset
        from rlhf_helpers.evaluate import evaluate_policies, heldout_prompt_table
        from rlhf_helpers.grpo import train_online
        from rlhf_helpers.models import load_tokenizer
        from rlhf_helpers.rater import sentiment_reward
        from rlhf_helpers.sft import ensure_sft

        base = get_preset(a.preset)
        changes = {k: v for k, v in {"beta": a.beta, "learning_rate": a.lr, "max_steps": a.steps}.items()
                   if v is not None}
        home = Path(tempfile.mkdtemp(prefix="online-tune-"))
        sft = ensure_sft(base)
        # train in a scratch artifacts home that shares the SFT policy and the rater (symlinks)
        from rlhf_helpers.config import artifacts_home

        real = artifacts_home() / base.name
        (home / base.name).mkdir(parents=True)
        for stage in ("tokenizer", "sft", "classifier"):
            if (real / stage).exists():
                (home / base.name / stage).symlink_to(real / stage)
        os.environ["RLHF_HOME"] = str(home)
        preset = base.replace(grpo=replace(base.grpo, **changes))
        t0 = time.time()
        folder = train_online(a.method, preset, resume=False)
        seconds = time.time() - t0
        table = heldout_prompt_table(preset, load_tokenizer(sft), split="validation")
        summary, _ = evaluate_policies({"SFT": sft, a.method: folder}, sentiment_reward(preset), sft,
                                       list(table["prompt"]), preset.ppo.min_len, preset.ppo.max_len,
                                       seed=preset.seed, preset=preset)
        row = {"method": a.method, **{k: getattr(preset.grpo, k) for k in ("beta", "learning_rate", "max_steps",
                                                                           "prompts_per_step", "num_generations")},
               "train_seconds": round(seconds, 1), "split": "validation",
               **{f"{c}": round(float(summary.loc[a.method, c]), 3)
                  for c in ("positive_fraction", "positive_fraction_lo", "positive_fraction_hi", "reward", "kl",
                            "distinct_2", "real_words")},
               "sft_positive": round(float(summary.loc["SFT", "positive_fraction"]), 3),
               "sft_distinct_2": round(float(summary.loc["SFT", "distinct_2"]), 3),
               "when": time.strftime("%Y-%m-%d %H:%M")}
        shutil.rmtree(home, ignore_errors=True)
        RESULTS.mkdir(exist_ok=True)
        with out_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
    rows = [json.loads(l) for l in out_file.read_text().splitlines() if l.strip()]
    cols = ["method", "beta", "learning_rate", "max_steps", "train_seconds", "positive_fraction", "kl", "distinct_2",
            "real_words", "sft_positive", "sft_distinct_2"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
