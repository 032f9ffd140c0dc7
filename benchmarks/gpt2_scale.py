"""gpt2-scale timings from configs alone: one PPO step (ours), one DPO step and one GRPO step (TRL).

Same-architecture stand-ins, random weights, no hub: ``GPT2LMHeadModel`` with gpt2's 124 M configuration
(50,257-token vocabulary) as the policy, and ``DistilBertForSequenceClassification`` of distilbert-base size
(labels NEGATIVE/POSITIVE) as the sentiment reward. Random weights cost exactly what trained ones cost.

    python benchmarks/gpt2_scale.py            # full size: 128 episodes, responses 4-16 tokens (a GPU run)
    python benchmarks/gpt2_scale.py --small    # CPU: the same models at a reduced batch (16 episodes)
    python benchmarks/gpt2_scale.py --tiny-models --episodes 8   # seconds: the smoke test's size

Writes ``benchmarks/results/gpt2_scale[_small].md`` and ``.json``. Per phase: seconds and peak memory (GPU:
``torch.cuda.max_memory_allocated``; CPU: the process's peak resident set so far, which only grows).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

WORDS = ("the movie film story acting plot was is a and of to great terrible boring wonderful I it this "
         "characters music ending director scene one best worst funny sad loved hated really very not").split()


def _texts(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(n)]


def build_models(tiny: bool, device):
    """(policy, classifier, tokenizer): gpt2-124M and distilbert-base stand-ins, or tiny ones for the test."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    from rlhf_helpers.tiny import train_tokenizer

    tok = train_tokenizer(_texts(400), vocab_size=400)  # ids fit any vocabulary; tokenising is not what we time
    torch.manual_seed(0)
    labels = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
    if tiny:
        pcfg = GPT2Config(vocab_size=512, n_positions=128, n_embd=32, n_layer=1, n_head=2)
        ccfg = DistilBertConfig(vocab_size=512, dim=32, hidden_dim=64, n_layers=1, n_heads=2,
                                max_position_embeddings=128, **labels)
    else:
        pcfg = GPT2Config()  # = gpt2: vocab 50,257, 1,024 positions, 768 wide, 12 layers, 12 heads
        ccfg = DistilBertConfig(**labels)  # = distilbert-base: vocab 30,522, 768 wide, 6 layers
    for cfg in (pcfg,):
        cfg.bos_token_id = cfg.eos_token_id = cfg.pad_token_id = tok.eos_token_id
    ccfg.pad_token_id = tok.pad_token_id
    policy = GPT2LMHeadModel(pcfg).to(device)
    clf = DistilBertForSequenceClassification(ccfg).to(device).eval()
    tok.model_input_names = ["input_ids", "attention_mask"]  # DistilBERT takes no token_type_ids
    return policy, clf, tok


class _Phase:
    """Times a block and records peak memory (GPU: allocated; CPU: process peak RSS)."""

    def __init__(self, results: dict, name: str, device):
        self.results, self.name, self.device = results, name, device

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**30
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux
        self.results[self.name] = {"seconds": round(time.perf_counter() - self.t0, 3), "peak_GiB": round(peak, 2)}


class _StepTimer:
    """A TrainerCallback recording each optimizer step's wall time (the first one includes warm-up)."""

    def __init__(self, device):
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer._sync()
                timer.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer._sync()
                timer.steps.append(time.perf_counter() - timer.t0)

        self.device, self.steps, self.callback = device, [], CB()

    def _sync(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()


def ppo_step(policy, clf, tok, episodes: int, device, results: dict) -> None:
    """Our PPO: generate ``episodes`` responses of 4-16 tokens, score them, one ``PPOTrainer.step``."""
    import torch

    from rlhf_helpers.data import LengthSampler
    from rlhf_helpers.ppo import PPOConfig, PPOTrainer
    from rlhf_helpers.rater import SentimentReward

    mini = min(32, episodes)
    trainer = PPOTrainer(PPOConfig(batch_size=episodes, mini_batch_size=mini, ppo_epochs=4, seed=0), policy, tok)
    reward = SentimentReward(clf, tok, batch_size=episodes, device=device)
    prompts = _texts(episodes, seed=1)
    queries = [torch.tensor(tok(p)["input_ids"][: 2 + i % 7]) for i, p in enumerate(prompts)]  # 2-8 tokens
    lengths = LengthSampler(4, 16, seed=0)
    for rep in range(2):  # the first round warms up kernels and allocators; the second is reported
        r = results if rep else {}
        with _Phase(r, "ppo_generate", device):
            responses = trainer.generate(queries, lengths, batch_size=episodes)
        texts = tok.batch_decode([torch.cat([q, resp.cpu()]) for q, resp in zip(queries, responses)])
        with _Phase(r, "ppo_score", device):
            scores = reward(texts)
        with _Phase(r, "ppo_step", device):
            stats = trainer.step(queries, [x.cpu() for x in responses], scores)
    results["ppo_total"] = {"seconds": round(sum(results[k]["seconds"] for k in ("ppo_generate", "ppo_score",
                                                                               "ppo_step")), 3),
                            "peak_GiB": max(results[k]["peak_GiB"] for k in ("ppo_generate", "ppo_score",
                                                                           "ppo_step"))}
    results["ppo_detail"] = {"episodes": episodes, "mini_batch_size": mini, "ppo_epochs": 4,
                             "forward_s": round(stats["time_forward_s"], 3),
                             "optimize_s": round(stats["time_optimize_s"], 3),
                             "response_len": round(stats["response_len"], 2)}


def _trainer_args(device, out: str) -> dict:
    from rlhf_helpers.config import TINY
    from rlhf_helpers.models import trainer_defaults

    return {**trainer_defaults(TINY), "output_dir": out, "save_strategy": "no", "logging_steps": 1,
            "disable_tqdm": True, "learning_rate": 1e-6}


def dpo_step(policy, tok, batch: int, device, results: dict, out: str) -> None:
    """TRL's DPOTrainer: ``batch`` pairs per step, the reference a frozen copy; 3 steps, the last reported."""
    import copy

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    texts = _texts(3 * batch * 3, seed=2)
    pairs = Dataset.from_dict({"prompt": texts[0::3][: 3 * batch], "chosen": texts[1::3][: 3 * batch],
                               "rejected": texts[2::3][: 3 * batch]})
    timer = _StepTimer(device)
    args = DPOConfig(max_steps=3, per_device_train_batch_size=batch, max_length=64, beta=0.1,
                     **_trainer_args(device, out))
    trainer = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(policy).eval(), args=args,
                         train_dataset=pairs, processing_class=tok, callbacks=[timer.callback])
    with _Phase(results, "dpo_train_3_steps", device):
        trainer.train()
    results["dpo_step"] = {"seconds": round(timer.steps[-1], 3), "peak_GiB": results["dpo_train_3_steps"]["peak_GiB"],
                           "pairs": batch}


def grpo_step(policy, clf, tok, completions: int, generations: int, device, results: dict, out: str) -> None:
    """TRL's GRPOTrainer: ``completions`` = prompts x ``generations`` per step, up to 16 new tokens."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlhf_helpers.grpo import sample_what_you_score, sentiment_reward_func
    from rlhf_helpers.rater import SentimentReward

    reward = SentimentReward(clf, tok, batch_size=completions, device=device)
    prompts = [" ".join(t.split()[:5]) for t in _texts(completions * 3, seed=3)]
    tok.padding_side = "left"
    timer = _StepTimer(device)
    args = GRPOConfig(max_steps=3, per_device_train_batch_size=completions, num_generations=generations,
                      max_completion_length=16, temperature=1.0, top_k=0, top_p=1.0, beta=0.1,
                      **_trainer_args(device, out))
    folder = Path(out) / "policy"  # TRL builds GRPO's reference model from a path
    policy.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    trainer = sample_what_you_score(GRPOTrainer(model=str(folder), reward_funcs=sentiment_reward_func(reward), args=args,
                                                train_dataset=Dataset.from_dict({"prompt": prompts}),
                                                processing_class=tok, callbacks=[timer.callback]))
    with _Phase(results, "grpo_train_3_steps", device):
        trainer.train()
    tok.padding_side = "right"
    results["grpo_step"] = {"seconds": round(timer.steps[-1], 3),
                            "peak_GiB": results["grpo_train_3_steps"]["peak_GiB"],
                            "completions": completions, "generations": generations}


def hardware(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(0)} (1 GPU), torch {torch.__version__}"
    return f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {platform.machine()}, " \
           f"torch {torch.__version__}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="reduced batch for a CPU: 16 episodes, 4 DPO pairs")
    ap.add_argument("--tiny-models", action="store_true", help="1-layer stand-ins (the smoke test)")
    ap.add_argument("--episodes", type=int, default=None, help="PPO episodes and GRPO completions per step")
    ap.add_argument("--dpo-batch", type=int, default=None, help="DPO pairs per step")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["ppo", "dpo", "grpo"])
    ap.add_argument("--out", default=None, help="markdown file (a .json is written beside it)")
    a = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tempfile

    import torch

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    episodes = a.episodes or (16 if a.small or a.tiny_models else 128)
    dpo_batch = a.dpo_batch or (4 if a.small or a.tiny_models else 16)
    generations = 4 if episodes < 64 else 8
    results: dict = {}
    with _Phase(results, "build_models", device):
        policy, clf, tok = build_models(a.tiny_models, device)
    n_policy = sum(p.numel() for p in policy.parameters())
    n_clf = sum(p.numel() for p in clf.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        if "ppo" not in a.skip:
            ppo_step(policy, clf, tok, episodes, device, results)
        if "dpo" not in a.skip:
            dpo_step(policy, tok, dpo_batch, device, results, tmp + "/dpo")
        if "grpo" not in a.skip:
            grpo_step(policy, clf, tok, episodes, generations, device, results, tmp + "/grpo")
    size = "tiny stand-ins" if a.tiny_models else "gpt2-124M + distilbert-base stand-ins"
    cmd = "python benchmarks/gpt2_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summary = {"hardware": hardware(device), "models": size, "policy_params": n_policy, "classifier_params": n_clf,
               "episodes": episodes, "dpo_pairs": dpo_batch, "grpo_generations": generations, "command": cmd.strip(),
               "when": time.strftime("%Y-%m-%d %H:%M"), "results": results}
    rows = [("PPO (ours): generate", "ppo_generate", f"{episodes} responses, 4-16 tokens"),
            ("PPO (ours): score", "ppo_score", "distilbert classifier"),
            ("PPO (ours): step (experience + 4 epochs)", "ppo_step",
             f"mini-batches of {min(32, episodes)}"),
            ("**PPO (ours): one step of {} episodes**".format(episodes), "ppo_total", "generate + score + step"),
            ("DPO (TRL): one step", "dpo_step", f"{dpo_batch} pairs, reference a frozen copy"),
            ("GRPO (TRL): one step", "grpo_step", f"{episodes} completions ({generations} per prompt)")]
    mem = "peak GPU memory allocated" if device.type == "cuda" else "peak process RSS so far"
    lines = [f"gpt2-scale step times: {size} ({n_policy / 1e6:.1f} M + {n_clf / 1e6:.1f} M parameters, random "
             f"weights), {summary['hardware']}, `{summary['command']}`, {summary['when']}.", "",
             f"| what | seconds | {mem} (GiB) | batch |", "|---|---|---|---|"]
    for label, key, note in rows:
        if key in results:
            lines.append(f"| {label} | {results[key]['seconds']:.2f} | {results[key]['peak_GiB']:.2f} | {note} |")
    text = "\n".join(lines) + "\n"
    default = "gpt2_scale" + ("_tiny" if a.tiny_models else "_small" if a.small else "") + \
              ("_gpu" if device.type == "cuda" else "") + ".md"
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(text)
    return summary


if __name__ == "__main__":
    main()
