"""How fast the command line answers when it has nothing heavy to do (issue 12 goal: < 2 s each).

    .venv/bin/python benchmarks/failfast.py            # prints a markdown table, writes results/failfast.md

Each command runs ``--repeat`` times in a fresh process (best and median wall time reported), plus
``import torch`` / ``import transformers`` for scale: what the commands no longer pay.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -m rlhf_helpers --help": ([sys.executable, "-m", "rlhf_helpers", "--help"], {}),
    "python -m rlhf_helpers presets": ([sys.executable, "-m", "rlhf_helpers", "presets"], {}),
    "python -m rlhf_helpers build sft --preset nope": (
        [sys.executable, "-m", "rlhf_helpers", "build", "sft", "--preset", "nope"], {}),
    "RLHF_PRESET=nope python -m rlhf_helpers run (what RLHF_PRESET=nope make run calls)": (
        [sys.executable, "-m", "rlhf_helpers", "run"], {"RLHF_PRESET": "nope"}),
    "python -c 'import torch' (for scale)": ([sys.executable, "-c", "import torch"], {}),
    "python -c 'import transformers, datasets' (for scale)": (
        [sys.executable, "-c", "import transformers, datasets; transformers.GPT2LMHeadModel"], {}),
}


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "failfast.md"))
    a = ap.parse_args(argv)
    rows = []
    for label, (cmd, extra_env) in COMMANDS.items():
        times, code = [], None
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            code = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1", **extra_env},
                                  capture_output=True).returncode
            times.append(time.perf_counter() - t0)
        rows.append(f"| `{label}` | {min(times):.2f} | {statistics.median(times):.2f} | {code} |")
    load = os.getloadavg()[0]
    text = "\n".join([
        f"Fail-fast timings (`python benchmarks/failfast.py --repeat {a.repeat}`, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} at the end, {time.strftime('%Y-%m-%d %H:%M')}):", "",
        "| command | best (s) | median (s) | exit code |", "|---|---|---|---|", *rows, ""])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
