"""Benchmark: our PPO against TRL's RLOO and GRPO on the tiny preset, same policy, same sentiment
reward, same episode budget. Writes benchmarks/results/ppo.json and ppo.md (the README's table).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ppo.py [--episodes 1024] [--preset tiny] [--repeats 3]

Each method runs ``--repeats`` times, interleaved (PPO, RLOO, GRPO, then again), and the table reports each
method's median time: on a shared 2-core machine one run can be several percent off (single runs of the same
code measured GRPO at 84 and 89 episodes/s). Training is seeded, so every repeat trains the same policy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"


def ppo_phases(history: list[dict], total_seconds: float) -> dict[str, float]:
    """Where our PPO's time goes, summed over its steps (from the per-step timings ``train_ppo`` logs)."""
    gen = sum(h["time_generate_s"] for h in history)
    score = sum(h["time_score_s"] for h in history)
    exp = sum(h["time_forward_s"] for h in history)
    upd = sum(h["time_optimize_s"] for h in history)
    return {"generate": gen, "score (classifier)": score, "old/ref log-probs + values (one no-grad pass)": exp,
            "update (epochs x minibatches)": upd, "other (setup, decode, saving)": total_seconds - gen - score - exp - upd}


def ppo_phase_flops(history: list[dict], batch_size: int, policy_config, classifier_config,
                    ppo_epochs: int) -> dict[str, float]:
    """Useful FLOPs of each phase, from the real (unpadded) tokens of every step: 2 N per token for a forward
    (generation: prompt pass + one token at a time; scoring: the classifier's body; the no-grad pass: policy
    and reference), 6 N per token for each forward+backward of the update. N = the weights a token passes
    through (``profile_stages.matmul_params``); attention and the value head's single row are left out."""
    from profile_stages import matmul_params

    n_policy = matmul_params(policy_config)
    tokens = sum(batch_size * (h["query_len"] + h["response_len"]) for h in history)
    flops = {"generate": 2 * n_policy * tokens,
             "old/ref log-probs + values (one no-grad pass)": 2 * 2 * n_policy * tokens,
             "update (epochs x minibatches)": ppo_epochs * 6 * n_policy * tokens}
    if classifier_config.model_type == "gpt2":  # tiny's classifier: a GPT-2 body (its score head is one row)
        flops["score (classifier)"] = 2 * 12 * classifier_config.n_layer * classifier_config.n_embd ** 2 * tokens
    return flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--episodes", type=int, default=1024, help="rollouts per method")
    ap.add_argument("--repeats", type=int, default=3, help="runs per method; the table reports the median time")
    args = ap.parse_args()

    from rlhf_helpers.config import get_preset
    from rlhf_helpers.data import load_imdb, make_prompts
    from rlhf_helpers.evaluate import evaluate_policies, heldout_prompts
    from rlhf_helpers.models import load_tokenizer
    from rlhf_helpers.ppo import ppo_config_for, train_ppo
    from rlhf_helpers.rater import ensure_classifier, sentiment_reward
    from rlhf_helpers.sft import ensure_sft

    preset = get_preset(args.preset)
    sft = ensure_sft(preset)
    classifier = ensure_classifier(preset)
    reward = sentiment_reward(preset)
    tok = load_tokenizer(sft)
    prompts = make_prompts(load_imdb(preset)["train"], tok, seed=preset.seed)["prompt"]
    work = Path(tempfile.mkdtemp(prefix="rlhf-bench-"))
    results = {}

    cfg = ppo_config_for(preset)
    steps = max(1, args.episodes // cfg.batch_size)
    home = work / "home"
    (home / preset.name).mkdir(parents=True)
    for stage, src in (("sft", Path(sft).parent), ("classifier", Path(classifier).parent)):
        os.symlink(src, home / preset.name / stage)
    from rlhf_helpers.grpo import train_online
    from rlhf_helpers.models import read_meta

    per_step = preset.grpo.prompts_per_step * preset.grpo.num_generations
    runs: dict[str, list[dict]] = {}
    for _ in range(max(1, args.repeats)):
        # --- our PPO ---------------------------------------------------------------------
        t0 = time.time()
        history = train_ppo(sft, reward, prompts, cfg, steps, preset.ppo.min_len, preset.ppo.max_len,
                            work / "ppo", save_every=0)
        seconds = time.time() - t0
        runs.setdefault("PPO (ours)", []).append({"episodes": steps * cfg.batch_size, "seconds": seconds,
                                                  "folder": work / "ppo", "history": history})
        # --- TRL RLOO and GRPO: same SFT policy, same reward, same episode budget ----------
        os.environ["RLHF_HOME"] = str(home)
        for method, name in (("rloo", "RLOO (TRL)"), ("grpo", "GRPO (TRL)")):
            t0 = time.time()
            folder = train_online(method, preset, max_steps=max(1, args.episodes // per_step), resume=False)
            seconds = time.time() - t0
            runs.setdefault(name, []).append({"episodes": read_meta(folder)["metrics"]["episodes"],
                                              "seconds": seconds, "folder": folder})
    # each method's median run (seeded training: every repeat trains the same policy)
    results = {name: sorted(r, key=lambda x: x["seconds"])[len(r) // 2] for name, r in runs.items()}
    for name, r in runs.items():
        results[name]["all_seconds"] = [round(x["seconds"], 1) for x in r]
    history = results["PPO (ours)"]["history"]
    phases = ppo_phases(history, results["PPO (ours)"]["seconds"])
    from profile_stages import flops_probe
    from transformers import AutoConfig

    phase_flops = ppo_phase_flops(history, cfg.batch_size, AutoConfig.from_pretrained(sft),
                                  AutoConfig.from_pretrained(classifier), cfg.ppo_epochs)
    probe = flops_probe()
    peak = max(v for k, v in probe.items() if k.startswith("matmul")) * 1e9  # PPO runs in fp32


    # --- held-out evaluation ----------------------------------------------------------------
    held = heldout_prompts(preset, tok)
    models = {"SFT (before)": sft, **{k: v["folder"] for k, v in results.items()}}
    summary, _ = evaluate_policies(models, reward, sft, held, preset.ppo.min_len, preset.ppo.max_len,
                                   seed=preset.seed)
    rows = []
    for name in models:
        r = results.get(name, {})
        rows.append({"method": name, "episodes": r.get("episodes", 0), "seconds": round(r.get("seconds", 0), 1),
                     "all_seconds": r.get("all_seconds", []),
                     "episodes_per_s": round(r["episodes"] / r["seconds"], 2) if r else None,
                     "heldout_reward": round(float(summary.loc[name, "reward"]), 3),
                     "positive_fraction": round(float(summary.loc[name, "positive_fraction"]), 3),
                     "kl": round(float(summary.loc[name, "kl"]), 2)})
    RESULTS.mkdir(exist_ok=True)
    seconds_ppo = results["PPO (ours)"]["seconds"]
    meta = {"preset": preset.name, "episodes_budget": args.episodes, "repeats": max(1, args.repeats),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "device": "cuda" if torch.cuda.is_available() else "cpu", "date": time.strftime("%Y-%m-%d")}
    header = ("| method | episodes | seconds (median) | episodes/s | every run's seconds | held-out reward | "
              "positive fraction | KL (nats) |\n|---|---|---|---|---|---|---|---|\n")
    table = header + "".join(
        f"| {r['method']} | {r['episodes']} | {r['seconds']} | {r['episodes_per_s'] or '-'} | "
        f"{', '.join(map(str, r['all_seconds'])) or '-'} | {r['heldout_reward']} | "
        f"{r['positive_fraction']:.1%} | {r['kl']} |\n" for r in rows)
    def flops_cells(name: str, sec: float) -> str:
        if name not in phase_flops or sec <= 0:
            return "- | -"
        achieved = phase_flops[name] / sec
        return f"{achieved / 1e9:.1f} | {achieved / peak:.0%}"

    phase_table = ("\n| PPO phase | seconds | share | achieved GFLOP/s | fraction of the machine's fp32 matmul |\n"
                   "|---|---|---|---|---|\n") + "".join(
        f"| {name} | {sec:.1f} | {sec / seconds_ppo:.0%} | {flops_cells(name, sec)} |\n" for name, sec in phases.items())
    probe_line = ("\nMachine probe (fp32 matmul, best of ~2 s, " + f"{probe['threads']} threads): "
                  + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in probe.items() if k.startswith("matmul")) + "\n")
    phase_table += probe_line
    meta["probe_GFLOPs"] = probe
    (RESULTS / "ppo.json").write_text(json.dumps({"meta": meta, "rows": rows, "ppo_phases_s": phases,
                                                  "ppo_phase_GFLOP": {k: v / 1e9 for k, v in phase_flops.items()}},
                                                 indent=2))
    (RESULTS / "ppo.md").write_text(table + phase_table)
    print(table + phase_table)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
