"""GRPO and RLOO before and after the sample-what-you-score fixes (position ids, stored generation settings,
dropout, one precision), on the same seeds.

Run once with the old package and once with the new one, each with its own artifacts home that holds the same
tokenizer, SFT policy and classifier; each run builds GRPO and RLOO there (or reuses them) and evaluates SFT,
GRPO and RLOO on the test prompts under the rater (the IMDB classifier) and the auditor (the Rotten-Tomatoes
bag of words). One JSON row per policy is appended to ``benchmarks/results/grpo_position_fix.jsonl``.

    # the old code, from a checkout of the commit before the fix:
    cd /tmp/before && RLHF_HOME=/tmp/before_home PYTHONPATH=/tmp/before \\
        /path/to/.venv/bin/python /path/to/benchmarks/grpo_position_fix.py --label before
    # the fixed code:
    RLHF_HOME=artifacts .venv/bin/python benchmarks/grpo_position_fix.py --label after

It also measures, on the tiny SFT policy itself, how far TRL's scorer was off before the fix: the mean and the
largest per-token |log p(arange positions) - log p(positions from the attention mask)| over left-padded rows.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

RESULTS = Path(os.environ.get("RLHF_RESULTS_DIR", Path(__file__).resolve().parent / "results")) / "grpo_position_fix.jsonl"


def position_mismatch(sft_folder, prompts) -> dict:
    """Per-token |Δ log p| between GPT-2's default (arange) positions and mask-derived ones, padded rows only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(sft_folder))
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(sft_folder)).eval()
    enc = tok(list(prompts), return_tensors="pt", padding=True, padding_side="left")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    torch.manual_seed(0)
    with torch.no_grad():
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                             max_new_tokens=8, pad_token_id=tok.pad_token_id)
        full_mask = torch.cat([mask, torch.ones_like(gen[:, ids.shape[1]:])], 1)
        pos = (full_mask.cumsum(1) - 1).clamp(min=0)
        new = gen[:, ids.shape[1]:]

        def logps(**kw):
            logits = model(input_ids=gen, attention_mask=full_mask, **kw).logits[:, ids.shape[1] - 1:-1]
            return torch.log_softmax(logits.float(), -1).gather(2, new.unsqueeze(-1)).squeeze(-1)

        diff = (logps() - logps(position_ids=pos)).abs()
    padded = (mask == 0).any(1)
    pads = (mask == 0).sum(1)
    return {"rows": int(len(prompts)), "padded_rows": int(padded.sum()), "mean_pads": float(pads.float().mean()),
            "mean_abs_dlogp_padded": float(diff[padded].mean()), "max_abs_dlogp": float(diff.max()),
            "mean_abs_dlogp_unpadded": float(diff[~padded].mean()) if (~padded).any() else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True, help="before or after")
    ap.add_argument("--preset", default="tiny")
    a = ap.parse_args()

    from rlhf_helpers.config import get_preset
    from rlhf_helpers.evaluate import evaluate_policies, heldout_prompts
    from rlhf_helpers.grpo import ensure_grpo, ensure_rloo
    from rlhf_helpers.models import load_tokenizer, model_dir, read_meta
    from rlhf_helpers.auditor import load_auditor
    from rlhf_helpers.rater import sentiment_reward
    from rlhf_helpers.sft import ensure_sft

    preset = get_preset(a.preset)
    sft = ensure_sft(preset)
    models = {"SFT": sft, "GRPO": ensure_grpo(preset), "RLOO": ensure_rloo(preset)}
    tok = load_tokenizer(sft)
    prompts = heldout_prompts(preset, tok)
    t0 = time.time()
    summary, _ = evaluate_policies(models, sentiment_reward(preset), sft, prompts, preset.ppo.min_len,
                                   preset.ppo.max_len, seed=preset.seed, judges={"auditor": load_auditor(preset)})
    mismatch = position_mismatch(sft, prompts[:64])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        for name, row in summary.iterrows():
            stage = name.lower()
            seconds = read_meta(model_dir(preset, stage)).get("metrics", {}).get("train_seconds") if stage != "sft" else None
            out = {"label": a.label, "preset": preset.name, "model": name, "train_seconds": seconds,
                   **{k: round(float(v), 4) for k, v in row.items()}, "date": time.strftime("%Y-%m-%d")}
            f.write(json.dumps(out) + "\n")
            print(json.dumps(out))
        f.write(json.dumps({"label": a.label, "position_mismatch_tiny_sft": mismatch}) + "\n")
    print("position mismatch on the tiny SFT (64 test prompts, 8 sampled tokens):", json.dumps(mismatch))
    print(f"evaluated in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
