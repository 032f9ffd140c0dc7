"""Does keeping freed memory (rlhf_helpers/allocator.py) speed up training, and is it the same training?

    .venv/bin/python benchmarks/allocator.py

Runs one worker with glibc's default malloc (``RLHF_KEEP_FREED_MEMORY=0``) and one with the package's setting,
one after the other. A worker imports ``rlhf_helpers`` (which applies the setting unless switched off), builds the
tiny preset's writer shape (its vocabulary, width and depth; dropout 0), trains 30 timed SFT-shaped steps (the
preset's batch x length, bf16 autocast where the CPU has it, AdamW) and 50 no-grad forwards of 64 x 20 tokens
(sampling's small matrices), and prints both times, the kernel (system) CPU seconds and minor page faults of the
timed part, and its last loss bit for bit: the losses must be identical for the setting to be harmless.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time


def worker() -> None:
    from rlhf_helpers.allocator import keep_freed_memory  # importing the package applies it (unless switched off)

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_helpers.config import get_preset
    from rlhf_helpers.models import cpu_bf16

    preset = get_preset("tiny")
    z, s = preset.sizes, preset.sft
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=z.vocab_size, n_positions=z.n_positions, n_embd=z.n_embd, n_layer=z.n_layer,
                     n_head=z.n_head, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    m = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randint(0, z.vocab_size, (s.batch_size, s.max_length))
    bf16 = cpu_bf16()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = m(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()

    for _ in range(5):
        step()
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    losses = [step() for _ in range(30)]
    train = (time.perf_counter() - t) / 30
    with torch.no_grad():
        t = time.perf_counter()
        for _ in range(50):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                m(input_ids=torch.randint(0, z.vocab_size, (64, 20)))
        fwd = (time.perf_counter() - t) / 50
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(f"kept={keep_freed_memory()} train {train * 1000:.0f} ms/step  fwd64x20 {fwd * 1000:.1f} ms  "
          f"system {r1.ru_stime - r0.ru_stime:.1f} s  page faults {r1.ru_minflt - r0.ru_minflt:,}  "
          f"peak memory {r1.ru_maxrss / 1024:.0f} MiB  last loss {losses[-1]!r}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help="run one worker (the environment chooses the setting)")
    a = ap.parse_args()
    if a.worker:
        worker()
        return
    print(f"{time.strftime('%Y-%m-%d')}, glibc {os.confstr('CS_GNU_LIBC_VERSION') if hasattr(os, 'confstr') else '-'}",
          flush=True)
    for name, flag in (("glibc's default malloc (RLHF_KEEP_FREED_MEMORY=0)", "0"), ("freed memory kept", "1")):
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, __file__, "--worker"], env={**os.environ, "RLHF_KEEP_FREED_MEMORY": flag},
                       stderr=subprocess.DEVNULL, check=True)


if __name__ == "__main__":
    main()
