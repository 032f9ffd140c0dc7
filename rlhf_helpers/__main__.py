"""Command line: ``python -m rlhf_helpers <command>`` (also installed as ``rlhf``).

  presets                         list the presets
  build STAGE [--preset P] [--force]
                                  build one stage's artifact (and what it needs): tokenizer, sft,
                                  classifier, pairs, reward_model, ppo, dpo (every round), grpo, rloo,
                                  ppo_beta0 (PPO without a KL penalty), ppo_rm (PPO against the reward model),
                                  reward_model_cheap, ppo_rm_cheap (the same against a cheap proxy)
  build all [--preset P] [--force]
                                  every artifact the notebooks load, once, in order (resumable)
  doctor [--preset P]             check this machine's setup; one line naming the fix per problem
  ppo --policy DIR --reward DIR --prompts FILE.jsonl --steps N --batch-size B
      --min-len A --max-len Z --seed S --out DIR
                                  our PPO on any local policy / sentiment-classifier pair
  run [--preset P] [--jobs N]     execute every notebook into reports/ (what `make run` calls), one at a time
  report [--preset P]             every stage's training time and metric + the held-out comparison
                                  (writes benchmarks/results/<preset>_report.md)
  evaluate [--preset P]           held-out reward, positive fraction, KL and repetition of every
                                  stage already built
  loadonly [--preset P]           after `build all`: time every notebook as JupyterLab's Run All runs it
                                  (solutions off); table in benchmarks/results/<preset>_loadonly.md
  words [--notebooks DIR]         markdown words per notebook (main body, optional, exercises) and
                                  reading minutes at 230 words a minute
  exercises [--notebooks DIR]     exercises per notebook by kind: checked fill-in, checked prediction,
                                  open discussion, unmarked
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import BUILD_STAGES


def _dpo_round_stages(preset) -> list[str]:
    """``dpo``, ``dpo_round2``, ...: every DPO round's policy artifact."""
    from .config import dpo_round_numbers, dpo_stage_name

    return [dpo_stage_name(preset, None, r) for r in dpo_round_numbers(preset)]


def _policy_stages(preset) -> list[str]:
    """The policies `evaluate` and `report` compare: SFT, PPO, every DPO round, GRPO, RLOO."""
    return ["sft", "ppo", *_dpo_round_stages(preset), "grpo", "rloo"]


def _stage_builders():
    from .dpo import ensure_dpo_rounds
    from .grpo import ensure_grpo, ensure_rloo
    from .overopt import ensure_cheap_reward_model, ensure_ppo_beta0, ensure_ppo_rm, ensure_ppo_rm_cheap
    from .ppo import ensure_ppo
    from .pairs import ensure_pairs
    from .rater import ensure_classifier
    from .reward_model import ensure_reward_model
    from .sft import ensure_sft, ensure_tokenizer

    return {"tokenizer": ensure_tokenizer, "sft": ensure_sft, "classifier": ensure_classifier,
            "pairs": ensure_pairs, "reward_model": ensure_reward_model, "ppo": ensure_ppo,
            "dpo": ensure_dpo_rounds,  # every round: round r trains on from round r - 1
            "grpo": ensure_grpo, "rloo": ensure_rloo, "ppo_beta0": ensure_ppo_beta0, "ppo_rm": ensure_ppo_rm,
            "reward_model_cheap": ensure_cheap_reward_model, "ppo_rm_cheap": ensure_ppo_rm_cheap}


STAGES = list(BUILD_STAGES)


def cmd_ppo(args) -> int:
    from dataclasses import asdict

    from .config import get_preset
    from .ppo import PPOConfig, read_prompts, train_ppo
    from .rater import SentimentReward

    for flag, folder in (("--policy", args.policy), ("--reward", args.reward)):
        if not Path(folder).is_dir():
            print(f"error: {flag} {folder}: no such folder (give a local model folder)", file=sys.stderr)
            return 2
    # every unset flag takes the tuned value of the preset's PPO settings (docs/tuning.md), never a guess
    s = get_preset(args.preset).ppo
    pick = lambda value, default: default if value is None else value  # noqa: E731
    batch = pick(args.batch_size, s.batch_size)
    kl_target = pick(args.kl_target, s.kl_target or 0.0)
    min_len, max_len = pick(args.min_len, s.min_len), pick(args.max_len, s.max_len)
    cfg = PPOConfig(learning_rate=pick(args.lr, s.learning_rate), batch_size=batch,
                    mini_batch_size=pick(args.mini_batch_size, min(s.mini_batch_size, batch)),
                    ppo_epochs=pick(args.ppo_epochs, s.ppo_epochs), init_kl_coef=pick(args.init_kl, s.init_kl_coef),
                    adaptive_kl=kl_target > 0, kl_target=kl_target or 6.0, kl_horizon=s.kl_horizon,
                    temperature=pick(args.temperature, s.temperature),
                    reward_norm=s.reward_norm if args.reward_norm is None else args.reward_norm == "on",
                    seed=args.seed)
    prompts = read_prompts(args.prompts)
    reward = SentimentReward(args.reward)  # refuses a folder that is not a trained sentiment classifier
    print("[ppo] settings (preset " + args.preset + " defaults, flags override): " + json.dumps(
        {**asdict(cfg), "steps": args.steps, "min_len": min_len, "max_len": max_len}), flush=True)
    history = train_ppo(args.policy, reward, prompts, cfg, args.steps, min_len, max_len, args.out,
                        save_every=args.save_every, callback=lambda s: print(json.dumps(
                            {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()
                             if k in ("step", "score_mean", "kl", "kl_coef", "entropy", "clipfrac", "approx_kl",
                                      "time_step_s")}), flush=True))
    if history:
        print(f"done: {len(history)} steps; final score {history[-1]['score_mean']:.3f}, KL {history[-1]['kl']:.2f}; "
              f"policy and metrics.jsonl in {args.out}")
    return 0


def cmd_build(args) -> int:
    from .config import get_preset

    if args.stage == "all":
        return cmd_build_all(args)
    preset = get_preset(args.preset)
    builders = _stage_builders()
    print(builders[args.stage](preset, force=args.force))
    _print_peak_memory(f"build {args.stage}")
    return 0


def _print_peak_memory(what: str) -> None:
    """One line with this process's resident peak, where the system reports it (a teacher sizing machines);
    read the way ``make run`` reads each kernel's (``notebooks.peak_memory_mib``)."""
    from .notebooks import peak_memory_mib

    peak = peak_memory_mib(os.getpid())
    if peak:
        print(f"[{what}] peak memory {peak:,.0f} MiB (resident)")


def cmd_build_all(args) -> int:
    """``build all``: every artifact the notebooks load (doctor.artifact_plan), once, with a progress bar."""
    import time

    from tqdm import tqdm

    from .config import artifacts_home, get_preset
    from .doctor import artifact_plan
    from .models import is_complete

    preset = get_preset(args.preset)
    plan = artifact_plan(preset)
    folder = artifacts_home() / preset.name
    todo = [name for name, _ in plan if args.force or not is_complete(preset, name)]
    if not todo:
        print(f"all {len(plan)} artifacts already built in {folder}; nothing to do")
        return 0
    print(f"build all: {len(todo)} of {len(plan)} artifacts to build for preset {preset.name} in {folder} "
          "(interrupt any time: the same command resumes)", flush=True)
    seconds: dict[str, float] = {}
    start = time.time()
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), unit="artifact", file=sys.stdout, dynamic_ncols=True,
               bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed} elapsed")
    try:
        for name, build in plan:
            if name not in todo:
                continue
            bar.set_description(f"build all [{name}]")
            t0 = time.time()
            build(force=args.force)
            seconds[name] = time.time() - t0
            bar.update(1)
            bar.write(f"[build all] {name}: built in {seconds[name]:.0f} s")
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted; run `python -m rlhf_helpers build all --preset {preset.name}` again to resume")
        return 130
    bar.close()
    print(f"built {len(seconds)} artifacts in {time.time() - start:.0f} s: "
          + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items()))
    _print_peak_memory("build all")
    print(f"all {len(plan)} artifacts are in {folder}; check a machine with "
          f"`python -m rlhf_helpers doctor --preset {preset.name}`")
    return 0


def cmd_doctor(args) -> int:
    from .doctor import run

    return run(args.preset)


def cmd_evaluate(args) -> int:
    from .config import get_preset
    from .evaluate import evaluate_policies, heldout_prompts
    from .models import is_complete, load_tokenizer, model_dir
    from .rater import sentiment_reward

    preset = get_preset(args.preset)
    if not is_complete(preset, "sft"):
        print(f"error: nothing built yet for preset {preset.name}; run `python -m rlhf_helpers build sft`",
              file=sys.stderr)
        return 2
    sft = model_dir(preset, "sft")
    models = {s: model_dir(preset, s) for s in _policy_stages(preset) if is_complete(preset, s)}
    prompts = heldout_prompts(preset, load_tokenizer(sft), args.n)
    summary, _ = evaluate_policies(models, sentiment_reward(preset), sft, prompts, preset.ppo.min_len,
                                   preset.ppo.max_len, seed=preset.seed)
    print(summary.round(3).to_markdown() if args.markdown else summary.round(3).to_string())
    return 0


def cmd_run(args) -> int:
    from .config import get_preset

    get_preset(args.preset)  # an unknown preset fails here, before nbformat/nbconvert load
    from .notebooks import run_notebooks

    run_notebooks(args.preset, only=args.only, jobs=args.jobs)
    return 0


def cmd_report(args) -> int:
    """Training time and headline metric of every built stage, the per-notebook times read from the executed
    notebooks in reports/, the held-out comparison, and every quality bar marked met / not met."""
    from .config import get_preset, project_root
    from .models import is_complete, read_meta
    from .report import (notebook_time_table, notebook_times, quality_bar_table, quality_bars, run_peaks,
                         run_wall)

    preset = get_preset(args.preset)
    headline = {"sft": ("held_out_perplexity", "held-out perplexity"),
                "classifier": ("test_accuracy", "IMDB test accuracy"),
                "reward_model": ("heldout_pairwise_accuracy", "held-out pairwise accuracy")}
    lines = [f"### Stages built in preset `{preset.name}`", "", "| stage | training time (s) | metric |",
             "|---|---|---|"]
    metrics: dict[str, dict] = {}
    for stage in [x for s in STAGES for x in (_dpo_round_stages(preset) if s == "dpo" else [s])]:
        if not is_complete(preset, stage):
            continue
        meta = read_meta(preset, stage)
        m = metrics[stage] = meta.get("metrics", {})
        key, label = headline.get(stage, (None, ""))
        value = m.get(key) if key else None
        shown = f"{label} {value:.3f}" if isinstance(value, float) else ", ".join(
            f"{k} {v}" for k, v in m.items() if isinstance(v, int) and k != "steps")
        lines.append(f"| {stage} | {m.get('train_seconds', m.get('seconds', '-'))} | {shown} |")
    text = "\n".join(lines) + "\n"

    reports = Path(args.reports) if args.reports else project_root() / "reports"
    times = notebook_times(reports) if reports.is_dir() else []
    wall, jobs = run_wall(reports)
    total = (wall if jobs > 1 and wall is not None else sum(t.seconds for t in times)) if times else None
    if times:
        text += (f"\n### Time per notebook (read from the executed notebooks in `{reports.name}/`: first cell's "
                 "start to last cell's end, kernel start-up not included"
                 + (f"; {jobs} notebooks ran at a time, so a notebook's time includes its waits for a stage "
                    "another notebook was building, and the total is the run's wall clock, kernel start-ups "
                    "included" if jobs > 1 else "") + ")\n\n"
                 + notebook_time_table(times, wall, jobs, run_peaks(reports)) + "\n")
    else:
        text += f"\n(no executed notebooks in {reports}: run `make run` first for the per-notebook times)\n"

    summary = None
    if not args.no_eval and is_complete(preset, "sft"):
        from .evaluate import evaluate_policies, heldout_prompts
        from .models import load_tokenizer, model_dir
        from .rater import sentiment_reward

        sft = model_dir(preset, "sft")
        models = {s: model_dir(preset, s) for s in _policy_stages(preset) if is_complete(preset, s)}
        prompts = heldout_prompts(preset, load_tokenizer(sft), None)
        from .auditor import second_judge_reward
        from .evaluate import paired_comparison, with_intervals

        summary, samples = evaluate_policies(models, sentiment_reward(preset), sft, prompts, preset.ppo.min_len,
                                             preset.ppo.max_len, seed=preset.seed,
                                             judges={"auditor": second_judge_reward(preset)}, preset=preset)
        for name in summary.index.drop("sft", errors="ignore"):
            c = paired_comparison(samples, name, "sft", "positive")
            summary.loc[name, ["gain", "gain_lo", "gain_hi"]] = [100 * c["difference"], 100 * c["low"],
                                                                 100 * c["high"]]
        shown = with_intervals(summary, ["positive_fraction", "gain", "kl", "positive_fraction_auditor",
                                         "distinct_2", "real_words"],
                               percent=["positive_fraction", "positive_fraction_auditor", "real_words"])
        text += (f"\n### Test-set comparison ({len(prompts)} test prompts, one answer each, same lengths and seed; "
                 "95 % intervals: Wilson for rates, paired bootstrap for the gain over SFT in points, bootstrap "
                 "for KL)\n\n" + shown.to_markdown() + "\n")
    text += "\n### Quality bars\n\n" + quality_bar_table(quality_bars(metrics, summary, total)) + "\n"
    print(text)
    out = Path(args.out) if args.out else project_root() / "benchmarks" / "results" / f"{preset.name}_report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")
    return 0


def cmd_loadonly(args) -> int:
    from .config import get_preset, project_root
    from .notebooks import load_only_table, run_load_only
    from .wordcount import series_counts

    name = get_preset(args.preset).name
    rows = run_load_only(name, only=args.only)
    table = load_only_table(rows, name, series_counts(project_root() / "notebooks"))
    out = project_root() / "benchmarks" / "results" / f"{name}_loadonly.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(table)
    print(f"[loadonly] written to {out}")
    surprises = [r for r in rows if r["new_artifact_folders"]]
    return 1 if surprises else 0


def cmd_words(args) -> int:
    """``words``: how much each notebook asks a learner to read (rlhf_helpers.wordcount states the rule)."""
    from .config import project_root
    from .wordcount import OPTIONAL_TAG, WORDS_PER_MINUTE, markdown_table, series_counts

    folder = Path(args.notebooks) if args.notebooks else project_root() / "notebooks"
    counts = series_counts(folder)
    if not counts:
        print(f"error: no numbered notebooks (NN_*.ipynb) in {folder}", file=sys.stderr)
        return 2
    print(markdown_table(counts))
    print(f"\nmain body: markdown not tagged `{OPTIONAL_TAG}` before the exercises; words are tokens with a letter "
          f"or digit, fenced code left out; reading time at {WORDS_PER_MINUTE} words a minute")
    return 0


def cmd_exercises(args) -> int:
    """``exercises``: how many exercises of each kind every notebook has (rlhf_helpers.exercises reads the headings)."""
    from .config import project_root
    from .exercises import kinds_table, series_kinds

    folder = Path(args.notebooks) if args.notebooks else project_root() / "notebooks"
    counts = series_kinds(folder)
    if not counts:
        print(f"error: no numbered notebooks (NN_*.ipynb) in {folder}", file=sys.stderr)
        return 2
    print(kinds_table(counts))
    print("\nkind: the '*(...)*' ending each '### Exercise N' heading; unmarked: a heading without one")
    return 0


def cmd_presets(args) -> int:
    from .config import PRESETS

    for p in PRESETS.values():
        print(f"{p.name:6s} {p.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_helpers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list presets").set_defaults(func=cmd_presets)

    b = sub.add_parser("build", help="build one stage's artifact, or all of them")
    b.add_argument("stage", choices=STAGES + ["all"], help="a stage, or all: every artifact the notebooks load")
    b.add_argument("--preset", default=None, help="tiny, smoke or gpt2 (default $RLHF_PRESET or tiny)")
    b.add_argument("--force", action="store_true", help="rebuild even if it exists")
    b.set_defaults(func=cmd_build)

    p = sub.add_parser("ppo", help="train our PPO on any local policy and sentiment-classifier folders")
    p.add_argument("--policy", required=True, help="folder of a transformers causal LM (+ tokenizer)")
    p.add_argument("--reward", required=True, help="folder of a sentiment classifier with a POSITIVE label")
    p.add_argument("--prompts", required=True, help='JSON-lines file, one {"prompt": ...} per line')
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--preset", default="tiny", help="whose tuned PPO settings give the defaults (default tiny)")
    p.add_argument("--batch-size", type=int, default=None, help="rollouts per step")
    p.add_argument("--mini-batch-size", type=int, default=None)
    p.add_argument("--ppo-epochs", type=int, default=None)
    p.add_argument("--min-len", type=int, default=None, help="shortest response (tokens) drawn")
    p.add_argument("--max-len", type=int, default=None, help="longest response (tokens) drawn")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--init-kl", type=float, default=None, help="starting KL coefficient beta")
    p.add_argument("--kl-target", type=float, default=None, help="nats per response; 0 = fixed beta")
    p.add_argument("--temperature", type=float, default=None, help="used for sampling AND scoring")
    p.add_argument("--reward-norm", choices=["on", "off"], default=None,
                   help="train on (score - mean) / std of the starting policy's samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=10, help="checkpoint every N steps (resumable)")
    p.add_argument("--out", required=True, help="folder for metrics.jsonl and the trained policy")
    p.set_defaults(func=cmd_ppo)

    e = sub.add_parser("evaluate", help="compare every built policy on held-out prompts")
    e.add_argument("--preset", default=None)
    e.add_argument("--n", type=int, default=None, help="number of held-out prompts")
    e.add_argument("--markdown", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    rp = sub.add_parser("report", help="metrics of every built stage + held-out comparison, as markdown")
    rp.add_argument("--preset", default=None)
    rp.add_argument("--no-eval", action="store_true", help="skip the held-out comparison (sampling)")
    rp.add_argument("--reports", default=None, help="folder of executed notebooks (default reports/)")
    rp.add_argument("--out", default=None, help="markdown file (default benchmarks/results/<preset>_report.md)")
    rp.set_defaults(func=cmd_report)

    d = sub.add_parser("doctor", help="check Python, packages, device, artifacts, disk, memory, hub, kernel")
    d.add_argument("--preset", default=None, help="tiny, smoke or gpt2 (default $RLHF_PRESET or tiny)")
    d.set_defaults(func=cmd_doctor)

    r = sub.add_parser("run", help="execute every notebook in order into reports/")
    r.add_argument("--preset", default=None)
    r.add_argument("--only", nargs="*", default=None, help="notebook prefixes, e.g. 00 01")
    r.add_argument("--jobs", type=int, default=1,
                   help="notebooks executed at a time (default 1; 2 gives the same numbers and more memory, and "
                        "on 2 cores no longer saves time: docs/tuning.md, round 9)")
    r.set_defaults(func=cmd_run)

    lo = sub.add_parser("loadonly", help="after build all: time each notebook as Run All runs it (solutions off)")
    lo.add_argument("--preset", default=None)
    lo.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 03")
    lo.set_defaults(func=cmd_loadonly)
    w = sub.add_parser("words", help="markdown words per notebook: main body, optional, exercises")
    w.add_argument("--notebooks", default=None, help="folder of NN_*.ipynb (default the checkout's notebooks/)")
    w.set_defaults(func=cmd_words)
    ex = sub.add_parser("exercises", help="exercises per notebook by kind (checked fill-in, prediction, discussion)")
    ex.add_argument("--notebooks", default=None, help="folder of NN_*.ipynb (default the checkout's notebooks/)")
    ex.set_defaults(func=cmd_exercises)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
