"""Two notebooks at a time on 2 cores: how fast is a training step, and is it the same step?

    .venv/bin/python benchmarks/parallel_threads.py            # every configuration below, one after another
    .venv/bin/python benchmarks/parallel_threads.py --worker 2 # one worker: torch threads = 2

A worker trains the tiny preset's shape (a 192-wide, 4-layer GPT-2 with 8,192 words; 32 x 64 tokens, bf16
autocast, AdamW) for 30 timed steps and runs 50 no-grad forwards of 64 x 20 tokens (the small matrices of
sampling), then prints both times and its last loss (bit for bit). Configurations: 2 threads alone, 1 thread
alone, two 1-thread workers side by side, two 2-thread workers side by side with spinning OpenMP threads
(the default), with ``OMP_WAIT_POLICY=PASSIVE`` and with ``GOMP_SPINCOUNT=1000``. This is what chose
``run_notebooks(jobs=2)``'s passive kernels with torch's usual thread count: one thread per notebook would be
faster side by side, but a 1-thread run does not give the same numbers as a 2-thread run (its last loss differs).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=8192, n_positions=256, n_embd=192, n_layer=4, n_head=4, resid_pdrop=0,
                     embd_pdrop=0, attn_pdrop=0)
    m = GPT2LMHeadModel(cfg)
    m.set_attn_implementation("eager")
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randint(0, 8192, (32, 64))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = m(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()

    for _ in range(5):
        step()
    t = time.perf_counter()
    losses = [step() for _ in range(30)]
    train = (time.perf_counter() - t) / 30
    with torch.no_grad():
        t = time.perf_counter()
        for _ in range(50):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                m(input_ids=torch.randint(0, 8192, (64, 20)))
        fwd = (time.perf_counter() - t) / 50
    print(f"threads={threads} train {train * 1000:.0f} ms/step  fwd64x20 {fwd * 1000:.1f} ms  "
          f"last loss {losses[-1]!r}", flush=True)


CONFIGS = [("2 threads alone", 2, 1, {}), ("1 thread alone", 1, 1, {}), ("two 1-thread side by side", 1, 2, {}),
           ("two 2-thread side by side, spinning (default)", 2, 2, {}),
           ("two 2-thread side by side, OMP_WAIT_POLICY=PASSIVE", 2, 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
           ("2 threads alone, OMP_WAIT_POLICY=PASSIVE", 2, 1, {"OMP_WAIT_POLICY": "PASSIVE"}),
           ("two 2-thread side by side, GOMP_SPINCOUNT=1000", 2, 2, {"GOMP_SPINCOUNT": "1000"}),
           ("2 threads alone, GOMP_SPINCOUNT=1000", 2, 1, {"GOMP_SPINCOUNT": "1000"})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", type=int, default=None, help="run one worker with this many torch threads")
    a = ap.parse_args()
    if a.worker:
        worker(a.worker)
        return
    for name, threads, copies, env in CONFIGS:
        print(f"== {name}", flush=True)
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(threads)], env={**os.environ, **env},
                                  stderr=subprocess.DEVNULL) for _ in range(copies)]
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
