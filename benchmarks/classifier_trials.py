"""Train the tiny sentiment classifier with one setting and report IMDB validation accuracy and time.

Starts from an existing tiny SFT policy (copied with its tokenizer from ``--from-home``), so every row reads
the same body. One line of JSON per run is appended to ``--log``::

    RLHF_HOME=/tmp/rlhf_x flock /tmp/team/cpu.lock python benchmarks/classifier_trials.py \
        --from-home /tmp/rlhf_shared --train-examples 5000 --lr 1e-3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-home", required=True, help="an RLHF_HOME with a finished tiny tokenizer and sft")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--truncation-side", default="left")
    ap.add_argument("--train-examples", type=int, default=3500)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--eval-examples", type=int, default=2500)
    ap.add_argument("--sampling", default="random", choices=["random", "group_by_length"])
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--log", default=str(Path(__file__).parent / "results" / "classifier_trials.jsonl"))
    ap.add_argument("--note", default="")
    a = ap.parse_args(argv)
    from rlhf_helpers.data import forbid_test_set

    forbid_test_set()  # chosen on validation reviews: the test split stays unread

    from rlhf_helpers.config import TINY, ClassifierSettings, artifacts_home

    home = artifacts_home()
    for stage in ("tokenizer", "sft"):
        src, dst = Path(a.from_home) / "tiny" / stage, home / "tiny" / stage
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dst)
    shutil.rmtree(home / "tiny" / "classifier", ignore_errors=True)
    c = ClassifierSettings(max_length=a.max_length, truncation_side=a.truncation_side,
                           train_examples=a.train_examples, epochs=a.epochs, batch_size=a.batch,
                           learning_rate=a.lr, eval_examples=a.eval_examples, save_steps=10_000,
                           sampling=a.sampling, attention=a.attention)
    preset = TINY.replace(classifier=c)

    from rlhf_helpers.models import read_meta
    from rlhf_helpers.rater import train_classifier

    t0, c0 = time.time(), time.process_time()
    path = train_classifier(preset, resume=False)
    wall, cpu = time.time() - t0, time.process_time() - c0
    meta = read_meta(path)
    sft_meta = read_meta(home / "tiny" / "sft" / "model")
    row = {"body": f"sft ppl {sft_meta['metrics']['held_out_perplexity']:.1f}", **{k: v for k, v in c.__dict__.items()},
           "accuracy": round(meta["metrics"]["test_accuracy"], 4), "test_examples": meta["metrics"]["test_examples"],
           "train_seconds": meta["metrics"]["train_seconds"], "stage_wall_s": round(wall, 1),
           "stage_cpu_s": round(cpu, 1), "load1": os.getloadavg()[0], "note": a.note,
           "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(a.log).parent.mkdir(parents=True, exist_ok=True)
    with open(a.log, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
