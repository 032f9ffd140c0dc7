"""DPO candidates on the tiny preset: train one DPO policy with the given settings on the preset's DPO pairs and
report held-out reward, positive fraction, flip rate, KL, distinct-2 and training time (one JSON line per run).

Starts from finished artifacts (tokenizer, SFT policy, classifier, DPO pairs) copied from ``--from-home``, so
every row trains on the same pairs and is judged by the same classifier::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dpo_tuning.py --from-home artifacts --name A \
        --steps 100 --lr 1.5e-4 [--beta 0.1] [--batch-size 32] [--n-prompts 1000 --samples-per-prompt 8]

With ``--n-prompts`` or ``--samples-per-prompt`` the pairs are sampled and ranked anew (best vs worst of k per
prompt, the preset's margin), and the row records how many pairs passed and how long that took.

Appends to benchmarks/results/dpo_tuning.jsonl and prints the markdown table of every line so far.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ["name", "n_prompts", "samples_per_prompt", "chosen_min_score", "pairs", "pairs_seconds", "beta", "max_steps", "batch_size",
           "learning_rate", "train_seconds", "heldout_positive",
           "heldout_flip_rate", "heldout_reward", "heldout_kl", "distinct_2", "repetition"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-home", help="an RLHF_HOME with finished tokenizer, sft, classifier and dpo_pairs")
    ap.add_argument("--name")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--beta", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--n-prompts", type=int, default=None, help="build new pairs from this many prompts")
    ap.add_argument("--samples-per-prompt", type=int, default=None, help="build new pairs: best vs worst of k")
    ap.add_argument("--chosen-min-score", type=float, default=None,
                    help="keep only pairs whose chosen response the rater scores at least this (POSITIVE logit)")
    ap.add_argument("--table-only", action="store_true", help="print the table of earlier runs and stop")
    a = ap.parse_args(argv)
    from rlhf_helpers.data import forbid_test_set

    forbid_test_set()  # settings are chosen on the validation prompts; the test set and the auditor stay unread
    record_candidate(ap, a, RESULTS / "dpo_tuning.jsonl", "dpo-tune-", run_candidate, COLUMNS)


def record_candidate(ap, a, out_file: Path, prefix: str, run, columns: list[str]) -> None:
    """Unless ``--table-only``: train one candidate (``run(a, scratch)`` returns its row) in a scratch RLHF_HOME,
    removed after, and append its row to ``out_file``. Then print the table of every row so far. Shared with
    ``dpo_rounds.py``."""
    if not a.table_only:
        if not (a.from_home and a.name):
            ap.error("--from-home and --name are needed to train a candidate")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        scratch = Path(tempfile.mkdtemp(prefix=prefix))
        os.environ["RLHF_HOME"] = str(scratch)
        try:
            out_file.parent.mkdir(exist_ok=True)
            row = run(a, scratch)
            with out_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    rows = [json.loads(line) for line in out_file.read_text().splitlines() if line.strip()] if out_file.exists() else []
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")


def run_candidate(a, scratch: Path) -> dict:
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.dpo import ensure_dpo_pairs, train_dpo
    from rlhf_helpers.evaluate import evaluate_policies, flip_rate, heldout_prompt_table
    from rlhf_helpers.models import load_tokenizer, read_meta
    from rlhf_helpers.rater import sentiment_reward

    preset = get_preset(a.preset)
    new_pairs = a.n_prompts is not None or a.samples_per_prompt is not None
    for stage in ("tokenizer", "sft", "classifier") + (() if new_pairs else ("dpo_pairs",)):
        shutil.copytree(Path(a.from_home) / preset.name / stage, scratch / preset.name / stage)
    changes = {k: v for k, v in {"max_steps": a.steps, "batch_size": a.batch_size, "learning_rate": a.lr,
                                  "n_prompts": a.n_prompts, "samples_per_prompt": a.samples_per_prompt}.items()
               if v is not None}
    preset = preset.replace(dpo=replace(preset.dpo, **changes))
    beta = preset.dpo.beta if a.beta is None else a.beta
    t0 = time.time()
    pairs = ensure_dpo_pairs(preset)
    pairs_seconds = round(time.time() - t0, 1) if new_pairs else None
    if a.chosen_min_score is not None:  # replace the stored pairs by the filtered ones, which train_dpo then reads
        from datasets import load_from_disk

        from rlhf_helpers.models import META

        folder = scratch / preset.name / "dpo_pairs" / "model"
        kept = pairs.filter(lambda row: row["chosen_score"] >= a.chosen_min_score)
        kept.save_to_disk(str(folder) + ".filtered")
        shutil.copy(folder / META, str(folder) + ".filtered")  # the finished-artifact marker
        shutil.rmtree(folder)
        os.rename(str(folder) + ".filtered", folder)
        pairs = load_from_disk(str(folder))
    path = train_dpo(preset, beta=beta, resume=False)
    sft = scratch / preset.name / "sft" / "model"
    table = heldout_prompt_table(preset, load_tokenizer(sft), split="validation")
    summary, samples = evaluate_policies({"SFT": sft, "DPO": path}, sentiment_reward(preset), sft,
                                         list(table["prompt"]), preset.ppo.min_len, preset.ppo.max_len,
                                         seed=preset.seed)
    dpo = summary.loc["DPO"]
    return {"name": a.name, "preset": preset.name, "n_prompts": preset.dpo.n_prompts,
            "samples_per_prompt": preset.dpo.samples_per_prompt, "pairs": len(pairs), "pairs_seconds": pairs_seconds,
            "chosen_min_score": a.chosen_min_score, "beta": beta, "max_steps": preset.dpo.max_steps,
            "batch_size": preset.dpo.batch_size, "learning_rate": preset.dpo.learning_rate,
            "train_seconds": read_meta(path)["metrics"]["train_seconds"],
            "heldout_positive": round(float(dpo["positive_fraction"]), 3),
            "heldout_flip_rate": round(float(flip_rate(samples, table["label"])["DPO"]), 3),
            "heldout_reward": round(float(dpo["reward"]), 3), "heldout_kl": round(float(dpo["kl"]), 2),
            "distinct_2": round(float(dpo["distinct_2"]), 3), "repetition": round(float(dpo["repetition"]), 3),
            "sft_positive": round(float(summary.loc["SFT", "positive_fraction"]), 3)}


if __name__ == "__main__":
    main()
