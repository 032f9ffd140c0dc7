"""Which tiny writer reads as English? Train one tokenizer + SFT policy and measure it on *validation* reviews.

Every row: the tokenizer (kind, vocabulary), the model shape and steps, SFT wall time, perplexity per word on
validation reviews (comparable across tokenizers, unlike perplexity per token), and, on 256 validation prompts
with responses of up to 6-14 tokens (seed 0, temperature 1 unless --temperature, which is display-only):
the real-word rate, the <unk> share, distinct-2 and three samples. The test split is never read
(``forbid_test_set``). One JSON line per run goes to ``benchmarks/results/writer_trials.jsonl``::

    RLHF_HOME=/tmp/wt .venv/bin/python benchmarks/writer_trials.py --tokenizer word --vocab 16384 --note "..."

Definitions (also in rlhf_helpers/evaluate.py): a *word* is a lower-cased run of letters a-z; it is *real* when it
occurs at least 5 times in the training reviews. Perplexity per word = exp(total next-token NLL / number of
whitespace-separated words) over the first 48 words of each of 500 validation reviews (the first token of each
text is not predicted by either tokenizer's model and is left out of the NLL; the word count is the same for
every tokenizer). For the word-level tokenizer every unknown word is one ``<unk>`` token, which makes its
perplexity per word optimistic by the cost of spelling the unknown word out; the <unk> share is printed beside it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "writer_trials.jsonl"


@torch.no_grad()
def perplexity_per_word(model, tok, texts: list[str]) -> float:
    model.eval()
    nll, words = 0.0, 0
    for text in texts:
        ids = torch.tensor([tok(text)["input_ids"][:250]])
        logits = model(input_ids=ids).logits[0, :-1]
        nll += torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:], reduction="sum").item()
        words += len(text.split())
    return math.exp(nll / words)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", choices=["bpe", "word"], default="bpe")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--n-embd", type=int, default=192)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (display only)")
    ap.add_argument("--reuse", action="store_true", help="reuse the SFT policy already in RLHF_HOME")
    ap.add_argument("--classifier", action="store_true", help="also train the rater on its body (validation acc)")
    ap.add_argument("--note", default="")
    a = ap.parse_args()

    from rlhf_helpers.data import forbid_test_set

    forbid_test_set()
    from rlhf_helpers.config import TINY, ModelSizes, SFTSettings, artifacts_home
    from rlhf_helpers.data import LengthSampler, load_imdb
    from rlhf_helpers.evaluate import distinct_n, heldout_prompts, real_word_rate, real_words
    from rlhf_helpers.generation import sample_texts
    from rlhf_helpers.models import load_pretrained, read_meta
    from rlhf_helpers.sft import ensure_tokenizer, train_sft

    sizes = ModelSizes(vocab_size=a.vocab, tokenizer=a.tokenizer, n_embd=a.n_embd, n_layer=a.n_layer,
                       n_head=a.n_head)
    preset = TINY.replace(sizes=sizes, sft=SFTSettings(max_steps=a.steps, learning_rate=a.lr,
                                                       max_length=a.max_length, save_steps=10_000))
    home = artifacts_home() / preset.name
    if not a.reuse:
        for stage in ("tokenizer", "sft", "classifier"):
            shutil.rmtree(home / stage, ignore_errors=True)
    tok = ensure_tokenizer(preset)
    t0 = time.time()
    path = home / "sft" / "model" if a.reuse else train_sft(preset, resume=False)
    wall = time.time() - t0
    meta = read_meta(path)
    model, tok = load_pretrained(path)
    imdb = load_imdb(preset)
    val_texts = [" ".join(t.split()[:48]) for t in imdb["validation"]["text"][:500]]
    ppw = perplexity_per_word(model, tok, val_texts)
    prompts = heldout_prompts(preset, tok, 256, split="validation")
    texts = sample_texts(model, tok, prompts, LengthSampler(6, 14, seed=0), seed=0, temperature=a.temperature)
    vocab = real_words(preset)
    real_snippets = [" ".join(t.split()[8:18]) for t in imdb["validation"]["text"][:256]]
    row = {"tokenizer": a.tokenizer, "vocab": len(tok), "shape": f"d{a.n_embd} L{a.n_layer}",
           "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "steps": a.steps, "lr": a.lr,
           "max_length": a.max_length, "temperature": a.temperature,
           "sft_train_seconds": meta["metrics"]["train_seconds"], "stage_wall_s": round(wall, 1),
           "ppl_per_token_val": round(meta["metrics"]["held_out_perplexity"], 1),
           "ppl_per_word_val": round(ppw, 1),
           "real_word_rate": round(real_word_rate(texts, vocab), 4),
           "unk_share": round(sum(t.count("<unk>") for t in texts) / max(1, sum(len(t.split()) for t in texts)), 4),
           "distinct_2": round(distinct_n(texts, 2), 4),
           "real_text_real_word_rate": round(real_word_rate(real_snippets, vocab), 4),
           "real_text_distinct_2": round(distinct_n(real_snippets, 2), 4),
           "samples": [p + t for p, t in list(zip(prompts, texts))[:3]], "note": a.note,
           "load1": os.getloadavg()[0], "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if a.classifier:
        from rlhf_helpers.rater import train_classifier

        cpath = train_classifier(preset, resume=False)
        cm = read_meta(cpath)["metrics"]
        row["classifier_val_accuracy"] = round(cm["test_accuracy"], 4)
        row["classifier_seconds"] = cm["train_seconds"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
