"""What ``python -m rlhf_helpers report`` prints: per-notebook times read from the executed notebooks in
``reports/`` and every quality bar of the series marked met / not met.

Cell times come from the notebooks themselves: nbclient stores, per executed cell, the kernel's timestamps
in ``cell.metadata.execution`` (``iopub.status.busy`` when it starts, ``shell.execute_reply`` when it ends).
Nothing here is typed by hand, so the README's table can be regenerated with one command.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

START_KEYS = ("iopub.status.busy", "iopub.execute_input", "shell.execute_request")
END_KEYS = ("shell.execute_reply", "iopub.status.idle")


def _stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _first(execution: Mapping[str, str], keys: tuple[str, ...]) -> datetime | None:
    for key in keys:
        if execution.get(key):
            return _stamp(execution[key])
    return None


@dataclass
class NotebookTime:
    name: str
    seconds: float  # first cell's start to last cell's end (what a learner waits)
    cells_seconds: float  # sum of the cells' own times
    cells: int  # executed code cells with timestamps
    slowest: tuple[str, float] | None  # (first line of the slowest cell, seconds)


def notebook_times(folder: Path | str) -> list[NotebookTime]:
    """Times of every executed ``NN_*.ipynb`` in ``folder`` (``reports/`` after ``make run``), in order."""
    out = []
    for path in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        starts, ends, total, slowest = [], [], 0.0, None
        for cell in nb.get("cells", []):
            if cell.get("cell_type") != "code":
                continue
            ex = cell.get("metadata", {}).get("execution") or {}
            t0, t1 = _first(ex, START_KEYS), _first(ex, END_KEYS)
            if t0 is None or t1 is None:
                continue
            starts.append(t0)
            ends.append(t1)
            dt = max((t1 - t0).total_seconds(), 0.0)
            total += dt
            src = "".join(cell.get("source", "")).strip().splitlines()
            if slowest is None or dt > slowest[1]:
                slowest = ((src[0] if src else "")[:60], dt)
        if starts:
            out.append(NotebookTime(path.stem, (max(ends) - min(starts)).total_seconds(), total, len(starts), slowest))
    return out


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def _timings(folder: Path | str) -> dict:
    """What the ``make run`` that wrote ``folder`` recorded in its ``timings.json`` (empty when there is none)."""
    path = Path(folder) / "timings.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def run_wall(folder: Path | str) -> tuple[float | None, int]:
    """``(wall-clock seconds, notebooks at a time)`` of the ``make run`` that wrote ``folder``'s
    ``timings.json`` (``(None, 1)`` when it did not record them)."""
    info = _timings(folder)
    return info.get("wall_seconds"), int(info.get("jobs", 1))


def run_peaks(folder: Path | str) -> dict[str, float]:
    """Each notebook's kernel's resident peak (MiB), keyed by notebook stem, from ``timings.json`` (empty when the
    run did not record it)."""
    return {Path(name).stem: mib for name, mib in _timings(folder).get("peak_memory_mib", {}).items()}


def notebook_time_table(times: list[NotebookTime], wall: float | None = None, jobs: int = 1,
                        peaks: Mapping[str, float] | None = None) -> str:
    """Markdown: one row per notebook plus the total: the sum of the notebooks' times when they ran one at a
    time, the run's wall clock when they ran ``jobs`` at a time (each notebook's own time then includes the
    minutes it waited for a stage another notebook was building). With ``peaks`` (MiB by notebook), a column
    of each kernel's peak memory."""
    mem = bool(peaks)
    lines = ["| notebook | time | code cells | slowest cell |" + (" kernel's peak memory |" if mem else ""),
             "|---|---|---|---|" + ("---|" if mem else "")]
    for t in times:
        slow = f"`{t.slowest[0]}` {_fmt_seconds(t.slowest[1])}" if t.slowest else "-"
        peak = (peaks or {}).get(t.name)
        lines.append(f"| {t.name} | {_fmt_seconds(t.seconds)} | {t.cells} | {slow} |"
                     + (f" {peak / 1024:.1f} GiB |" if peak else " - |" if mem else ""))
    tail = " |" if mem else ""
    if jobs > 1 and wall is not None:
        lines.append(f"| **all, {jobs} at a time (wall clock)** | **{_fmt_seconds(wall)}** | "
                     f"{sum(t.cells for t in times)} | |" + tail)
    else:
        total = sum(t.seconds for t in times)
        lines.append(f"| **all** | **{_fmt_seconds(total)}** | {sum(t.cells for t in times)} | |" + tail)
    return "\n".join(lines)


@dataclass
class Bar:
    what: str
    goal: str
    value: str
    met: bool | None  # None: not measured (stage not built)


def _get(table: Any, model: str, column: str) -> float | None:
    """``table.loc[model, column]`` of a DataFrame or ``table[model][column]`` of a dict, else None."""
    if table is None:
        return None
    try:
        row = table.loc[model] if hasattr(table, "loc") else table[model]
        return float(row[column])
    except (KeyError, TypeError, ValueError):
        return None


KL_BUDGET = 8.0          # nats per response: every RL method is judged at no more KL than this
MIN_GAIN_POINTS = 0.0    # a real gain: the paired 95 % interval of the gain over SFT lies above 0
DIVERSITY_SHARE = 0.8    # distinct-2 at least this share of the SFT writer's: no buying reward with repetition


def _last_dpo(heldout: Any) -> tuple[str, int]:
    last_round = max((int(m.group(1)) for name in getattr(heldout, "index", [])
                      if (m := re.fullmatch(r"dpo_round(\d+)", str(name)))), default=1)
    return ("dpo" if last_round == 1 else f"dpo_round{last_round}"), last_round


def quality_bars(metrics: Mapping[str, Mapping[str, Any]], heldout: Any = None,
                 total_seconds: float | None = None) -> list[Bar]:
    """Every bar of the series, measured on the test prompts. ``metrics``: stage -> the ``metrics`` dict saved
    with its artifact; ``heldout``: the test-set comparison (``evaluate_policies`` summary, rows sft/ppo/dpo
    [/dpo_round2...]/grpo/rloo, columns positive_fraction, kl, distinct_2, real_words and, where the report
    added them, ``gain``/``gain_lo``: the paired gain over SFT in points with its 95 % interval);
    ``total_seconds``: the notebooks' total time.

    The RL bars are statements about the reward-KL frontier, not absolute rates (an absolute bar such as
    "90 % positive" rewarded spending KL on fewer phrasings, and a rate near its ceiling cannot show a gain):
    each method's gain over SFT must be real (the paired 95 % interval above 0) at KL <= 8 nats with
    distinct-2 >= 0.8 x SFT's."""
    bars = []

    def metric(stage: str, key: str) -> float | None:
        v = metrics.get(stage, {}).get(key)
        return float(v) if isinstance(v, (int, float)) else None

    ppl, ppl_s = metric("sft", "held_out_perplexity"), metric("sft", "train_seconds")
    bars.append(Bar("SFT held-out perplexity (per token)", "≤ 150", "-" if ppl is None else f"{ppl:.1f}",
                    None if ppl is None else ppl <= 150))
    bars.append(Bar("SFT training time", "≤ 4 min", "-" if ppl_s is None else f"{ppl_s:.0f} s",
                    None if ppl_s is None else ppl_s <= 240))
    real, d2 = _get(heldout, "sft", "real_words"), _get(heldout, "sft", "distinct_2")
    bars.append(Bar("SFT writer: real words (test answers)", "≥ 97 %", "-" if real is None else f"{real:.1%}",
                    None if real is None else real >= 0.97))
    bars.append(Bar("SFT writer: distinct-2 (test answers)", "≥ 0.8", "-" if d2 is None else f"{d2:.3f}",
                    None if d2 is None else d2 >= 0.8))
    acc, acc_s = metric("classifier", "test_accuracy"), metric("classifier", "train_seconds")
    bars.append(Bar("rater (classifier) IMDB test accuracy", "≥ 85 %", "-" if acc is None else f"{acc:.1%}",
                    None if acc is None else acc >= 0.85))
    bars.append(Bar("rater training time", "≤ 3 min", "-" if acc_s is None else f"{acc_s:.0f} s",
                    None if acc_s is None else acc_s <= 180))
    rm = metric("reward_model", "heldout_pairwise_accuracy")
    bars.append(Bar("reward model held-out pairwise accuracy", "≥ 80 %", "-" if rm is None else f"{rm:.1%}",
                    None if rm is None else rm >= 0.80))
    last, last_round = _last_dpo(heldout)
    names = {"ppo": "PPO", last: f"DPO ({last_round} round{'s' if last_round > 1 else ''})", "grpo": "GRPO",
             "rloo": "RLOO"}
    goal = f"gain > 0 (95 % interval), KL ≤ {KL_BUDGET:.0f}, distinct-2 ≥ {DIVERSITY_SHARE} × SFT"
    for row, name in names.items():
        p, kl, div = (_get(heldout, row, c) for c in ("positive_fraction", "kl", "distinct_2"))
        base = _get(heldout, "sft", "positive_fraction")
        if p is None or base is None or kl is None:
            bars.append(Bar(f"{name} on the reward-KL frontier", goal, "-", None))
            continue
        gain = _get(heldout, row, "gain")
        gain = 100 * (p - base) if gain is None else gain
        low = _get(heldout, row, "gain_lo")
        low = gain if low is None else low
        ok = low > MIN_GAIN_POINTS and kl <= KL_BUDGET and (div is None or d2 is None or div >= DIVERSITY_SHARE * d2)
        shown = (f"{gain:+.1f} points [{low:+.1f}, …] ({base:.1%} → {p:.1%}), KL {kl:.1f}"
                 + ("" if div is None else f", distinct-2 {div:.2f}"))
        bars.append(Bar(f"{name} on the reward-KL frontier", goal, shown, ok))
    bars.append(Bar("all notebooks (make run, without the install)", "≤ 15 min",
                    "-" if total_seconds is None else _fmt_seconds(total_seconds),
                    None if total_seconds is None else total_seconds <= 900))
    return bars


def quality_bar_table(bars: list[Bar]) -> str:
    lines = ["| quality bar | goal | measured | |", "|---|---|---|---|"]
    for b in bars:
        mark = "not measured" if b.met is None else ("**met**" if b.met else "**not met**")
        lines.append(f"| {b.what} | {b.goal} | {b.value} | {mark} |")
    return "\n".join(lines)
