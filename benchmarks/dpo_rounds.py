"""Iterative DPO candidates on the tiny preset: train round 2 with the given settings on pairs sampled from a
finished round 1, and report held-out positive fraction, flip rate, KL to SFT, distinct-2, repetition and the time
(one JSON line per run).

Starts from finished artifacts (tokenizer, SFT policy, classifier, round-1 DPO pairs and policy) copied from
``--from-home``, so every row starts from the same round 1 and is judged by the same classifier::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dpo_rounds.py --from-home artifacts --name R5-default
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dpo_rounds.py --from-home artifacts --name R5-plain --sft-weight 0

Flags change round 2 only: ``--sft-weight`` (the chosen responses' NLL weight), ``--lr``, ``--steps``,
``--n-prompts``/``--samples-per-prompt`` (its pairs), ``--reference sft`` (keep the SFT policy as the reference
instead of round 1). Appends to benchmarks/results/dpo_rounds.jsonl and prints the table of every line so far.
"""
from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

from dpo_tuning import record_candidate  # the same scratch-home, append-a-row, print-the-table loop

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ["name", "reference", "sft_weight", "learning_rate", "max_steps", "n_prompts", "samples_per_prompt", "pairs",
           "round2_seconds", "train_seconds", "round1_positive", "round1_kl", "positive", "flip_rate", "kl",
           "distinct_2", "repetition"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-home", help="an RLHF_HOME with finished tokenizer, sft, classifier, dpo_pairs and dpo")
    ap.add_argument("--name")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--sft-weight", type=float, default=None)
    ap.add_argument("--lr", type=float, default=None, help="round 2's learning rate")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--n-prompts", type=int, default=None)
    ap.add_argument("--samples-per-prompt", type=int, default=None)
    ap.add_argument("--reference", choices=["previous", "sft"], default="previous")
    ap.add_argument("--control", action="store_true",
                    help="the control for fresh data: round 1 again, from SFT on the offline (round-1) pairs, for as "
                         "many steps as both rounds together, with round 2's NLL term and learning rate")
    ap.add_argument("--table-only", action="store_true", help="print the table of earlier runs and stop")
    a = ap.parse_args(argv)
    from rlhf_helpers.data import forbid_test_set

    forbid_test_set()  # settings are chosen on the validation prompts; the test set and the auditor stay unread
    record_candidate(ap, a, RESULTS / "dpo_rounds.jsonl", "dpo-rounds-", run_candidate, COLUMNS)


def run_candidate(a, scratch: Path) -> dict:
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.dpo import ensure_dpo_pairs, round_learning_rate, train_dpo
    from rlhf_helpers.evaluate import evaluate_policies, flip_rate, heldout_prompt_table
    from rlhf_helpers.models import load_tokenizer, read_meta
    from rlhf_helpers.rater import sentiment_reward

    preset = get_preset(a.preset)
    for stage in ("tokenizer", "sft", "classifier", "dpo_pairs", "dpo"):
        shutil.copytree(Path(a.from_home) / preset.name / stage, scratch / preset.name / stage)
    changes = {k: v for k, v in {"sft_weight": a.sft_weight, "later_learning_rate": a.lr, "max_steps": a.steps,
                                  "n_prompts": a.n_prompts, "samples_per_prompt": a.samples_per_prompt}.items()
               if v is not None}
    preset = preset.replace(dpo=replace(preset.dpo, rounds=max(2, preset.dpo.rounds), **changes))
    sft = scratch / preset.name / "sft" / "model"
    if a.control:
        return run_control(a, preset, scratch, sft)
    t0 = time.time()
    pairs = ensure_dpo_pairs(preset, round_no=2)  # sampled from the copied round 1
    path = train_dpo(preset, round_no=2, resume=False, reference=sft if a.reference == "sft" else None)
    seconds = time.time() - t0
    table = heldout_prompt_table(preset, load_tokenizer(sft), split="validation")
    round1 = scratch / preset.name / "dpo" / "model"
    summary, samples = evaluate_policies({"round 1": round1, "round 2": path}, sentiment_reward(preset), sft,
                                         list(table["prompt"]), preset.ppo.min_len, preset.ppo.max_len,
                                         seed=preset.seed)
    r2 = summary.loc["round 2"]
    return {"name": a.name, "preset": preset.name, "reference": a.reference, "sft_weight": preset.dpo.sft_weight,
            "learning_rate": round_learning_rate(preset.dpo, 2), "max_steps": preset.dpo.max_steps,
            "n_prompts": preset.dpo.n_prompts, "samples_per_prompt": preset.dpo.samples_per_prompt,
            "pairs": len(pairs), "round2_seconds": round(seconds, 1),
            "train_seconds": read_meta(path)["metrics"]["train_seconds"],
            "round1_positive": round(float(summary.loc["round 1", "positive_fraction"]), 3),
            "round1_kl": round(float(summary.loc["round 1", "kl"]), 2),
            "positive": round(float(r2["positive_fraction"]), 3),
            "flip_rate": round(float(flip_rate(samples, table["label"])["round 2"]), 3),
            "kl": round(float(r2["kl"]), 2), "distinct_2": round(float(r2["distinct_2"]), 3),
            "repetition": round(float(r2["repetition"]), 3)}


def run_control(a, preset, scratch: Path, sft: Path) -> dict:
    """Round 1 with round 2's recipe (NLL term, learning rate, both rounds' steps) on the offline pairs, graded
    beside the real rounds 1 and 2 (read from ``--from-home``) on the validation prompts."""
    from rlhf_helpers.dpo import round_learning_rate, train_dpo
    from rlhf_helpers.evaluate import evaluate_policies, heldout_prompt_table, paired_comparison
    from rlhf_helpers.models import load_tokenizer, read_meta
    from rlhf_helpers.rater import sentiment_reward

    d = preset.dpo
    steps = 2 * d.max_steps
    t0 = time.time()
    path = train_dpo(preset, round_no=1, resume=False, max_steps=steps, sft_weight=d.sft_weight,
                     learning_rate=round_learning_rate(d, 2))
    seconds = time.time() - t0
    home = Path(a.from_home) / preset.name
    models = {"round 1": home / "dpo" / "model", "round 2": home / "dpo_round2" / "model", "control": path}
    table = heldout_prompt_table(preset, load_tokenizer(sft), split="validation")
    summary, samples = evaluate_policies(models, sentiment_reward(preset), sft, list(table["prompt"]),
                                         preset.ppo.min_len, preset.ppo.max_len, seed=preset.seed, preset=preset)
    gap = paired_comparison(samples, "round 2", "control", "positive")
    r = summary.loc["control"]
    return {"name": a.name, "preset": preset.name, "reference": "sft", "sft_weight": d.sft_weight,
            "learning_rate": round_learning_rate(d, 2), "max_steps": steps, "n_prompts": d.n_prompts,
            "samples_per_prompt": d.samples_per_prompt, "pairs": read_meta(path)["metrics"]["pairs"],
            "round2_seconds": round(seconds, 1), "train_seconds": read_meta(path)["metrics"]["train_seconds"],
            "round1_positive": round(float(summary.loc["round 1", "positive_fraction"]), 3),
            "round1_kl": round(float(summary.loc["round 1", "kl"]), 2),
            "round2_positive": round(float(summary.loc["round 2", "positive_fraction"]), 3),
            "round2_kl": round(float(summary.loc["round 2", "kl"]), 2),
            "positive": round(float(r["positive_fraction"]), 3), "kl": round(float(r["kl"]), 2),
            "distinct_2": round(float(r["distinct_2"]), 3), "repetition": round(float(r["repetition"]), 3),
            "round2_minus_control_points": round(100 * gap["difference"], 1),
            "round2_minus_control_low": round(100 * gap["low"], 1), "round2_minus_control_high": round(100 * gap["high"], 1),
            "split": "validation"}


if __name__ == "__main__":
    main()
