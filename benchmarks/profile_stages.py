"""Where the time goes: a per-stage profile of SFT, the classifier, the comparison pairs, DPO and the β sweep,
with each training stage's achieved FLOP/s as a fraction of a matmul probe of this machine.

    RLHF_HOME=/tmp/rlhf_profile flock /tmp/team/cpu.lock python benchmarks/profile_stages.py

Short runs (a few dozen steps each, tiny shapes, the real code of ``rlhf_helpers``): each library call
that does one kind of work (tokenising, the training loop, generation, scoring, evaluation, saving) is timed
by wrapping it, and the per-step / per-item times are scaled to the preset's full settings
("full-run estimate"). Writes ``benchmarks/results/profile.md`` and ``profile.json``.

FLOPs of a training step: 6 × N × tokens (+ Kaplan's attention term 6 × layers × context × width per token),
N = the weights a token passes through (transformer blocks + the output head); a frozen reference forward
costs 2 × N per token. Generation: 2 × N per new token. Approximations good to ~10 %, enough to compare
with the probe.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

TIMES: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)


_ACTIVE = {"depth": 0}


def wrap(owner, name: str, label: str) -> None:
    """Accumulate the wall time of ``owner.name(...)`` under ``label``. Only the outermost wrapped call is
    counted (a ``Dataset.map`` inside a trainer's set-up belongs to the set-up), so nothing is counted twice."""
    orig = getattr(owner, name)

    def timed(*args, **kwargs):
        _ACTIVE["depth"] += 1
        t0 = time.perf_counter()
        try:
            return orig(*args, **kwargs)
        finally:
            _ACTIVE["depth"] -= 1
            if _ACTIVE["depth"] == 0:
                TIMES[label] += time.perf_counter() - t0
                COUNTS[label] += 1

    timed.__wrapped__ = orig
    setattr(owner, name, timed)


@contextmanager
def section(label: str):
    t0 = time.perf_counter()
    yield
    TIMES[label] += time.perf_counter() - t0


def flops_probe(seconds: float = 2.0, dtypes: tuple[str, ...] = ("fp32",)) -> dict[str, float]:
    """Matmul GFLOP/s of this machine (torch's default threads): a big square and a tiny-model shape, in fp32
    and, with ``dtypes=("fp32", "bf16")``, in bfloat16 (what the supervised stages use where the CPU has it)."""
    import torch

    out = {}
    shapes = {"matmul 1024x1024x1024": (1024, 1024, 1024),
              "matmul 2048x256x1024 (tiny-model shape)": (2048, 256, 1024)}
    for dtype in dtypes:
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        for label, (m, k, n) in shapes.items():
            a, b = torch.randn(m, k, dtype=torch_dtype), torch.randn(k, n, dtype=torch_dtype)
            for _ in range(3):
                a @ b
            best, t_end = 0.0, time.perf_counter() + seconds
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                for _ in range(5):
                    a @ b
                best = max(best, 5 * 2 * m * k * n / (time.perf_counter() - t0))
            out[label if dtype == "fp32" else f"{dtype} {label}"] = best / 1e9
    out["threads"] = torch.get_num_threads()
    return out


def matmul_params(config) -> int:
    """Weights a token passes through in a GPT-2: 12·L·d² in the blocks + V·d in the output head."""
    d, L, V = config.n_embd, config.n_layer, config.vocab_size
    return 12 * L * d * d + V * d


def train_flops(config, tokens: float, context: int, head: bool = True, forward_only: bool = False) -> float:
    n = matmul_params(config) if head else 12 * config.n_layer * config.n_embd ** 2
    per_token = (2 if forward_only else 6) * (n + config.n_layer * context * config.n_embd)
    return per_token * tokens


def reset() -> None:
    TIMES.clear()
    COUNTS.clear()


def snapshot() -> dict[str, float]:
    return {k: round(v, 2) for k, v in TIMES.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--sft-steps", type=int, default=30)
    ap.add_argument("--classifier-examples", type=int, default=320)
    ap.add_argument("--pair-prompts", type=int, default=64)
    ap.add_argument("--dpo-steps", type=int, default=10)
    ap.add_argument("--betas", type=float, nargs="*", default=[0.05, 0.5])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "profile.md"))
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not os.environ.get("RLHF_HOME"):
        import tempfile

        os.environ["RLHF_HOME"] = tempfile.mkdtemp(prefix="rlhf_profile_")  # scratch: removed at exit
        atexit.register(shutil.rmtree, os.environ["RLHF_HOME"], ignore_errors=True)

    import datasets
    import torch
    import transformers
    import trl

    from rlhf_helpers import dpo, pairs, rater, sft
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.models import read_meta

    full = get_preset(a.preset)
    from rlhf_helpers.models import cpu_bf16

    bf16 = cpu_bf16() and not torch.cuda.is_available()
    probe = flops_probe(dtypes=("fp32", "bf16") if bf16 else ("fp32",))
    peak = max(v for k, v in probe.items() if k.startswith("matmul")) * 1e9  # fp32: generation
    # SFT, the classifier and DPO train under bf16 autocast where the CPU multiplies bf16 natively
    peak_supervised = max(v for k, v in probe.items() if k.startswith("bf16 matmul")) * 1e9 if bf16 else peak
    report: dict = {"probe_GFLOPs": probe, "preset": full.name, "supervised_precision": "bf16" if bf16 else "fp32",
                    "stages": {}}

    # every kind of work, wrapped once (outermost call timed)
    wrap(sft, "load_imdb", "data prep: load IMDB")
    wrap(rater, "load_imdb", "data prep: load IMDB")
    wrap(pairs, "load_imdb", "data prep: load IMDB")
    wrap(trl.SFTTrainer, "__init__", "tokenisation (trainer's dataset prep)")
    wrap(trl.DPOTrainer, "__init__", "tokenisation (trainer's dataset prep)")
    wrap(datasets.Dataset, "map", "tokenisation (Dataset.map)")
    wrap(transformers.Trainer, "train", "training loop (forward/backward/optimizer)")
    wrap(sft, "perplexity", "evaluation")
    wrap(rater, "classifier_accuracy", "evaluation")
    wrap(rater, "classifier_says_positive", "evaluation")
    wrap(sft, "save_model_artifact", "saving")
    wrap(rater, "save_model_artifact", "saving")
    wrap(pairs, "save_artifact", "saving")
    wrap(dpo, "save_model_artifact", "saving")
    import rlhf_helpers.generation as generation

    wrap(generation, "generate_responses", "generation")
    wrap(rater.SentimentReward, "__call__", "scoring (classifier)")

    # ---- SFT
    s = full.sft
    short = full.replace(sft=s.__class__(**{**s.__dict__, "max_steps": a.sft_steps, "save_steps": 10_000,
                                             "warmup_steps": min(s.warmup_steps, a.sft_steps // 3)}))
    sft.ensure_tokenizer(short)
    reset()
    with section("total"):
        path = sft.train_sft(short, resume=False)
    model_cfg = transformers.AutoConfig.from_pretrained(path)
    times = snapshot()
    loop = times["training loop (forward/backward/optimizer)"]
    tokens = a.sft_steps * s.batch_size * s.max_length
    fl = train_flops(model_cfg, tokens, s.max_length)
    scale = s.max_steps / a.sft_steps
    report["stages"]["sft"] = {"times": times, "steps_run": a.sft_steps, "full_steps": s.max_steps,
                               "tokens_per_s": tokens / loop, "achieved_GFLOPs": fl / loop / 1e9,
                               "fraction_of_probe": fl / loop / peak_supervised,
                               "full_run_estimate_s": times["total"] + loop * (scale - 1),
                               "params_M": sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(
                                   path).parameters()) / 1e6}

    # ---- classifier
    c = full.classifier
    short_c = short.replace(classifier=c.__class__(**{**c.__dict__, "train_examples": a.classifier_examples,
                                                       "save_steps": 10_000}))
    reset()
    with section("total"):
        cpath = rater.train_classifier(short_c, resume=False)
    times = snapshot()
    loop = times["training loop (forward/backward/optimizer)"]
    tok = transformers.AutoTokenizer.from_pretrained(cpath)
    tok.truncation_side = c.truncation_side
    texts = list(rater.load_imdb(short_c)["train"].shuffle(seed=full.seed).select(range(a.classifier_examples))["text"])
    lens = [len(x) for x in tok(texts, truncation=True, max_length=c.max_length)["input_ids"]]
    if c.sampling == "group_by_length":  # transformers' LengthGroupedSampler: sorted within mega-batches of 50
        mega = 50 * c.batch_size
        lens = [n for i in range(0, len(lens), mega) for n in sorted(lens[i:i + mega], reverse=True)]
    padded = sum(max(lens[i:i + c.batch_size]) * len(lens[i:i + c.batch_size]) for i in range(0, len(lens),
                                                                                             c.batch_size))
    fl = train_flops(model_cfg, padded, c.max_length, head=False)
    scale = c.train_examples / a.classifier_examples
    report["stages"]["classifier"] = {
        "times": times, "examples_run": a.classifier_examples, "full_examples": c.train_examples,
        "real_tokens": sum(lens), "padded_tokens": padded, "padding_waste": 1 - sum(lens) / padded,
        "achieved_GFLOPs": fl / loop / 1e9, "fraction_of_probe": fl / loop / peak_supervised,
        "full_run_estimate_s": times["total"] + loop * (scale - 1)}

    # ---- pairs (generation + scoring), then DPO pairs
    p = full.pairs
    # margin 0: the short runs' near-chance classifier scores every sample alike, and this measures time only
    short_p = short_c.replace(pairs=p.__class__(**{**p.__dict__, "n_prompts": a.pair_prompts, "margin": 0.0}))
    reset()
    with section("total"):
        pairs.ensure_pairs(short_p, force=True)
    times = snapshot()
    n_pairs_prompts = a.pair_prompts + max(8, a.pair_prompts // 4)
    gen_tokens = n_pairs_prompts * p.samples_per_prompt * (p.min_len + p.max_len) / 2
    gen_fl = 2 * matmul_params(model_cfg) * gen_tokens
    report["stages"]["pairs"] = {
        "times": times, "prompts_run": n_pairs_prompts, "full_prompts": p.n_prompts + max(8, p.n_prompts // 4),
        "generated_tokens_approx": gen_tokens,
        "generation_GFLOPs": gen_fl / times.get("generation", 1e-9) / 1e9,
        "generation_fraction_of_probe": gen_fl / times.get("generation", 1e-9) / peak,
        "full_run_estimate_s": times["total"] * p.n_prompts / a.pair_prompts}

    d = full.dpo
    short_d = short_p.replace(dpo=d.__class__(**{**d.__dict__, "n_prompts": a.pair_prompts, "margin": 0.0,
                                                 "max_steps": a.dpo_steps, "save_steps": 10_000}))
    reset()
    with section("total"):
        dpo.ensure_dpo_pairs(short_d, force=True)
    pair_times = snapshot()
    reset()
    with section("total"):
        dp = dpo.train_dpo(short_d, resume=False)
    times = snapshot()
    loop = times["training loop (forward/backward/optimizer)"]
    pairs_ds = dpo.ensure_dpo_pairs(short_d)
    ptok = transformers.AutoTokenizer.from_pretrained(dp)
    seq = [len(ptok(x["prompt"] + x["chosen"])["input_ids"]) + len(ptok(x["prompt"] + x["rejected"])["input_ids"])
           for x in pairs_ds.select(range(min(len(pairs_ds), 64)))]
    tokens_per_pair = sum(seq) / max(len(seq), 1)
    dpo_tokens = a.dpo_steps * d.batch_size * tokens_per_pair
    fl = train_flops(model_cfg, dpo_tokens, 64) + train_flops(model_cfg, dpo_tokens, 64, forward_only=True)
    report["stages"]["dpo_pairs"] = {"times": pair_times, "prompts_run": a.pair_prompts,
                                     "full_prompts": d.n_prompts,
                                     "full_run_estimate_s": pair_times["total"] * d.n_prompts / a.pair_prompts}
    report["stages"]["dpo"] = {"times": times, "steps_run": a.dpo_steps, "full_steps": d.max_steps,
                               "achieved_GFLOPs": fl / loop / 1e9, "fraction_of_probe": fl / loop / peak_supervised,
                               "full_run_estimate_s": times["total"] + loop * (d.max_steps / a.dpo_steps - 1)}

    # ---- the beta sweep of notebook 04: one short DPO per beta (each a full trainer set-up + save)
    reset()
    with section("total"):
        for beta in a.betas:
            dpo.train_dpo(short_d, beta=beta, max_steps=max(2, a.dpo_steps // 2), resume=False)
    times = snapshot()
    report["stages"]["beta_sweep"] = {"times": times, "betas": a.betas, "steps_each": max(2, a.dpo_steps // 2),
                                      "per_beta_overhead_s": (times["total"] - times.get(
                                          "training loop (forward/backward/optimizer)", 0)) / len(a.betas)}
    text = to_markdown(report, a)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    Path(a.out).with_suffix(".json").write_text(json.dumps(report, indent=2))
    print(text)
    return report


ORDER = ["data prep: load IMDB", "tokenisation (trainer's dataset prep)", "tokenisation (Dataset.map)",
         "training loop (forward/backward/optimizer)", "generation", "scoring (classifier)", "evaluation", "saving"]


def to_markdown(report: dict, a) -> str:
    probe = report["probe_GFLOPs"]
    lines = [f"# Per-stage profile (preset `{report['preset']}`, short runs)", "",
             f"Command: `python benchmarks/profile_stages.py` (SFT {a.sft_steps} steps, classifier "
             f"{a.classifier_examples} reviews, {a.pair_prompts} pair prompts, DPO {a.dpo_steps} steps, β sweep "
             f"{a.betas}), {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average "
             f"{os.getloadavg()[0]:.1f} at the end.", "",
             "Machine probe (matmul, best of ~2 s, torch threads "
             f"{probe['threads']}): " + ", ".join(f"{k} **{v:.1f} GFLOP/s**" for k, v in probe.items()
                                                    if "matmul" in k), "",
             "Seconds per kind of work in each short run (\"other\" = the rest: model set-up, Python):", "",
             "| stage | " + " | ".join(ORDER) + " | other | total | full-run estimate |",
             "|---" * (len(ORDER) + 4) + "|"]
    for name, st in report["stages"].items():
        t = st["times"]
        other = t["total"] - sum(t.get(k, 0) for k in ORDER)
        est = st.get("full_run_estimate_s")
        lines.append(f"| {name} | " + " | ".join(f"{t[k]:.1f}" if k in t else "-" for k in ORDER)
                     + f" | {other:.1f} | {t['total']:.1f} | {'-' if est is None else f'{est:.0f} s'} |")
    lines += ["", "Achieved FLOP/s of the training loops (and of generation), as a fraction of the probe's best in "
              f"the stage's precision (SFT, classifier and DPO: {report['supervised_precision']}; generation: "
              "fp32):", "",
              "| stage | achieved GFLOP/s | fraction of probe | note |", "|---|---|---|---|"]
    st = report["stages"]
    lines.append(f"| SFT | {st['sft']['achieved_GFLOPs']:.1f} | {st['sft']['fraction_of_probe']:.0%} | "
                 f"{st['sft']['tokens_per_s']:.0f} tokens/s, {st['sft']['params_M']:.2f} M parameters |")
    lines.append(f"| classifier | {st['classifier']['achieved_GFLOPs']:.1f} | "
                 f"{st['classifier']['fraction_of_probe']:.0%} | padding is "
                 f"{st['classifier']['padding_waste']:.0%} of the tokens it computes |")
    lines.append(f"| DPO | {st['dpo']['achieved_GFLOPs']:.1f} | {st['dpo']['fraction_of_probe']:.0%} | "
                 "policy forward/backward + reference forward |")
    lines.append(f"| pairs: generation | {st['pairs']['generation_GFLOPs']:.1f} | "
                 f"{st['pairs']['generation_fraction_of_probe']:.0%} | one token at a time: small matmuls |")
    lines.append("")
    lines.append(f"β sweep: {st['beta_sweep']['per_beta_overhead_s']:.1f} s per β outside the training loop "
                 "(trainer set-up, tokenising the pairs again, reference copy, saving).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
