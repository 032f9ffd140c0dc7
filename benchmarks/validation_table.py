"""Every built policy of a preset on the **validation** prompts, graded by the rater alone: the table every
default is chosen from (the test prompts and the auditor are never read: ``forbid_test_set``)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/validation_table.py [--preset tiny] [--stages ppo grpo ...]

Appends one JSON line per policy to benchmarks/results/validation_table.jsonl and prints the table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "validation_table.jsonl"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--stages", nargs="*", default=None)
    ap.add_argument("--note", default="")
    a = ap.parse_args(argv)
    from rlhf_helpers.data import forbid_test_set

    forbid_test_set()
    from rlhf_helpers.__main__ import _policy_stages
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.evaluate import evaluate_policies, heldout_prompt_table, paired_comparison, with_intervals
    from rlhf_helpers.models import is_complete, load_tokenizer, model_dir
    from rlhf_helpers.rater import sentiment_reward

    preset = get_preset(a.preset)
    sft = model_dir(preset, "sft")
    stages = a.stages or [s for s in [*_policy_stages(preset), "ppo_beta0", "ppo_rm"] if is_complete(preset, s)]
    models = {"sft": sft, **{s: model_dir(preset, s) for s in stages if s != "sft"}}
    table = heldout_prompt_table(preset, load_tokenizer(sft), split="validation")
    summary, samples = evaluate_policies(models, sentiment_reward(preset), sft, list(table["prompt"]),
                                         preset.ppo.min_len, preset.ppo.max_len, seed=preset.seed, preset=preset)
    for name in summary.index.drop("sft"):
        c = paired_comparison(samples, name, "sft", "positive")
        summary.loc[name, ["gain", "gain_lo", "gain_hi"]] = [100 * c["difference"], 100 * c["low"], 100 * c["high"]]
    with RESULTS.open("a") as f:
        for name, row in summary.iterrows():
            f.write(json.dumps({"stage": name, "split": "validation", "note": a.note,
                                "when": time.strftime("%Y-%m-%d %H:%M"),
                                **{k: round(float(v), 4) for k, v in row.items()}}) + "\n")
    print(with_intervals(summary, ["positive_fraction", "gain", "kl", "distinct_2", "real_words", "repetition"],
                         percent=["positive_fraction", "real_words"]).to_string())


if __name__ == "__main__":
    main()
