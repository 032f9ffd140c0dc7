"""Seconds per SFT step on this machine: TRL's fused-LM-head loss vs the model's own loss, fp32 vs bf16 autocast.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/sft_step.py [--preset tiny] [--steps 30]

The tiny preset's real shapes (its tokenizer, its GPT-2 body, 32 reviews x 64 tokens per step); steps after the
first 10 are timed. Writes ``benchmarks/results/sft_step.md``. This is what chose ``sft.model_loss_sft_trainer``
on a CPU and bf16 autocast (``models.cpu_bf16``) for the supervised stages.
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def seconds_per_step(preset, trainer_cls, bf16: bool, steps: int, warmup: int = 10) -> float:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig

    from rlhf_helpers.data import load_imdb
    from rlhf_helpers.models import trainer_defaults
    from rlhf_helpers.sft import base_policy, ensure_tokenizer

    s = preset.sft
    tok = ensure_tokenizer(preset)
    texts = [t[: s.max_length * 8] for t in load_imdb(preset)["train"]["text"][: (steps + warmup) * s.batch_size]]
    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks[state.global_step] = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="sft-step-") as scratch:  # nothing is saved (save_strategy="no")
        args = SFTConfig(output_dir=scratch, max_steps=steps + warmup,
                         per_device_train_batch_size=s.batch_size, learning_rate=s.learning_rate,
                         max_length=s.max_length, save_strategy="no", logging_steps=10, disable_tqdm=True,
                         **{**trainer_defaults(preset), "bf16": bf16})
        trainer = trainer_cls(model=base_policy(preset, tok), args=args,
                              train_dataset=Dataset.from_dict({"text": texts}), processing_class=tok, callbacks=[Clock()])
        trainer.train()
    return (marks[steps + warmup] - marks[warmup]) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not os.environ.get("RLHF_HOME"):  # a scratch artifacts folder (the tokenizer), removed at exit
        os.environ["RLHF_HOME"] = tempfile.mkdtemp(prefix="rlhf-sft-step-")
        atexit.register(shutil.rmtree, os.environ["RLHF_HOME"], ignore_errors=True)
    import torch
    from trl import SFTTrainer

    from rlhf_helpers.config import get_preset
    from rlhf_helpers.models import cpu_bf16
    from rlhf_helpers.sft import model_loss_sft_trainer

    preset = get_preset(a.preset)
    rows = []
    for loss_name, cls in (("TRL's fused LM head (SFTTrainer default)", SFTTrainer),
                           ("model's own loss (ours on a CPU)", model_loss_sft_trainer())):
        for bf16 in (False, True):
            if bf16 and not (cpu_bf16() or torch.cuda.is_available()):
                continue
            sec = seconds_per_step(preset, cls, bf16, a.steps)
            rows.append((loss_name, "bf16 autocast" if bf16 else "fp32", sec))
            print(rows[-1], flush=True)
    s = preset.sft
    lines = [f"SFT step, preset `{preset.name}` ({s.batch_size} x {s.max_length} tokens), {torch.get_num_threads()} "
             f"threads, native bf16: {cpu_bf16()}, {time.strftime('%Y-%m-%d')}; `python benchmarks/sft_step.py`", "",
             "| loss path | precision | seconds per step | full SFT estimate |", "|---|---|---|---|"]
    lines += [f"| {name} | {prec} | {sec:.3f} | {sec * s.max_steps:.0f} s |" for name, prec, sec in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sft_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
