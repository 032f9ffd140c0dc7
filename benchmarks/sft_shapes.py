"""Train the tiny SFT policy with one model shape / schedule and report validation perplexity and time.

Same tokenizer, same held-out reviews (the first ``eval_reviews`` of the test split), same perplexity
function (first 64 tokens) for every run, so rows are comparable. One line of JSON per run is appended
to ``--log`` (default ``benchmarks/results/sft_shapes.jsonl``)::

    RLHF_HOME=/tmp/rlhf_x flock /tmp/team/cpu.lock python benchmarks/sft_shapes.py \
        --n-embd 192 --n-layer 4 --steps 900 --lr 2e-3
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
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--packing", action="store_true")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--tokenizer-from", default=None, help="an RLHF_HOME whose tiny tokenizer is reused")
    ap.add_argument("--log", default=str(Path(__file__).parent / "results" / "sft_shapes.jsonl"))
    ap.add_argument("--note", default="")
    a = ap.parse_args(argv)
    from rlhf_helpers.data import forbid_test_set

    forbid_test_set()  # chosen on validation reviews: the test split stays unread

    from rlhf_helpers.config import SFTSettings, TINY, ModelSizes, artifacts_home

    home = artifacts_home()
    if a.tokenizer_from:
        src = Path(a.tokenizer_from) / "tiny" / "tokenizer"
        dst = home / "tiny" / "tokenizer"
        if src.exists() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dst)
    shutil.rmtree(home / "tiny" / "sft", ignore_errors=True)
    sizes = ModelSizes(n_embd=a.n_embd, n_layer=a.n_layer, n_head=a.n_head, dropout=a.dropout)
    sft = SFTSettings(max_length=a.max_length, max_steps=a.steps, batch_size=a.batch, learning_rate=a.lr,
                      warmup_steps=a.warmup, packing=a.packing, save_steps=10_000)
    preset = TINY.replace(sizes=sizes, sft=sft)

    from rlhf_helpers.models import read_meta
    from rlhf_helpers.sft import ensure_tokenizer, train_sft

    ensure_tokenizer(preset)
    t0, c0 = time.time(), time.process_time()
    path = train_sft(preset, resume=False)
    wall, cpu = time.time() - t0, time.process_time() - c0
    meta = read_meta(path)
    import torch
    from rlhf_helpers.models import load_causal_lm

    n_params = sum(p.numel() for p in load_causal_lm(path).parameters())
    row = {"shape": f"d{a.n_embd} L{a.n_layer} h{a.n_head}", "params_M": round(n_params / 1e6, 2),
           "steps": a.steps, "batch": a.batch, "max_length": a.max_length, "packing": a.packing, "dropout": a.dropout, "lr": a.lr,
           "warmup": a.warmup, "tokens_M": round(a.steps * a.batch * a.max_length / 1e6, 2),
           "train_seconds": meta["metrics"]["train_seconds"], "stage_wall_s": round(wall, 1),
           "stage_cpu_s": round(cpu, 1), "threads": torch.get_num_threads(),
           "perplexity": round(meta["metrics"]["held_out_perplexity"], 1),
           "load1": os.getloadavg()[0], "note": a.note, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(a.log).parent.mkdir(parents=True, exist_ok=True)
    with open(a.log, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    return row


if __name__ == "__main__":
    main()
