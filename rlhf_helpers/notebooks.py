"""Execute the notebooks in order (``make run``): executed copies and HTML pages go to ``reports/``.

Exercise solutions are code cells tagged ``solution``: ``make run`` leaves them unexecuted (a learner's copy shows
them collapsed, without outputs), while ``make test`` runs them under nbval in the ``smoke`` preset.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .config import get_preset, project_root


def notebook_paths(folder: Path | None = None) -> list[Path]:
    folder = folder or project_root() / "notebooks"
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


SOLUTION_TAG = "solution"
# the kernel's own start-up notice ("running over TCP without encryption", once per notebook) is not for learners:
# its app log shows errors only; warnings from the notebooks' code are unaffected
KERNEL_QUIET = ["--IPKernelApp.log_level=ERROR"]


def lower_priority(pid: int, nice: int) -> None:
    """Give process ``pid`` the scheduling niceness ``nice`` (0 = normal, 19 = only what is left over); ignored
    where the system refuses. Set before the process starts its worker threads, which inherit it."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(nice, 19))
    except OSError:
        pass


def peak_memory_mib(pid: int) -> float | None:
    """The most memory process ``pid`` has held so far (its resident peak, ``VmHWM``), in MiB; None where
    ``/proc`` does not say (not Linux, or the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def execute_notebook(nb, folder: Path, timeout: int = 3600, nice: int = 0, stats: dict | None = None):
    """Execute ``nb`` in place with ``folder`` as the working directory, skipping exercise solutions
    (code cells tagged ``solution``). ``nice > 0`` lowers the kernel's scheduling priority (see ``run_notebooks``).
    A ``stats`` dict receives ``peak_memory_mib``: the kernel's resident peak, read after each cell (Linux)."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", skip_cells_with_tag=SOLUTION_TAG,
                            resources={"metadata": {"path": str(folder)}}, extra_arguments=KERNEL_QUIET)
    if nice > 0:  # once the kernel runs, before its first cell imports torch (and torch starts its threads)
        client.on_notebook_start = lambda notebook: lower_priority(client.km.provisioner.pid, nice)
    if stats is not None:
        track_peak_memory(client, stats)
    client.execute()
    return nb


def track_peak_memory(client, stats: dict) -> None:
    """After each cell of ``client`` (an nbclient NotebookClient), keep its kernel's resident peak in
    ``stats["peak_memory_mib"]``."""
    def after_cell(**_) -> None:
        peak = peak_memory_mib(client.km.provisioner.pid)
        if peak is not None:
            stats["peak_memory_mib"] = max(peak, stats.get("peak_memory_mib", 0.0))

    client.on_cell_executed = after_cell


# With two notebooks at a time, a stage that only a late notebook needs is built as soon as a slot is free, by
# the same function the notebook calls (``build STAGE``); the notebook then loads it. 06 needs every earlier
# notebook's models, so it starts last: its own PPO run against the reward model would otherwise train alone
# at the very end, with nothing beside it.
BUILD_AHEAD = {"03": ("ppo_rm", "ppo_rm_cheap")}
NICE_STEP = 3  # notebook NN's kernel runs at niceness 3 x NN: the earlier notebook builds what later ones wait for


def run_notebooks(preset_name: str | None = None, out_dir: Path | None = None, timeout: int = 3600,
                  only: list[str] | None = None, jobs: int = 1) -> list[tuple[str, float]]:
    """Run every notebook with ``RLHF_PRESET`` set; write ``reports/NN_name.ipynb`` / ``.html`` and an index.

    ``jobs=1`` (what ``make run`` uses) executes them one after another, as a learner's Run All would.
    ``jobs=2`` executes two notebooks at a time, in order: each notebook still builds
    what it needs, and a stage another notebook is building is waited for, not built twice (``models.stage_lock``),
    so 02 waits for 01's writer while 03 can train PPO beside 02's reward model. Every kernel uses the same
    number of torch threads as alone, so every number is the same as in a one-at-a-time run; only the clock
    changes (each notebook's own time includes its waits). The kernels get ``OMP_WAIT_POLICY=PASSIVE``: an idle
    OpenMP thread sleeps instead of spinning on a core the other notebook needs (measured on 2 cores: two
    trainings side by side took 2.07 s per step each with spinning threads, 0.35 s without). A later notebook's
    kernel runs at a lower priority (niceness ``NICE_STEP`` x its number), so the stage everything waits for (the
    writer, then the rater, then PPO) is not slowed by a later notebook's demonstrations, and the stages in
    ``BUILD_AHEAD`` are built by ``python -m rlhf_helpers build`` in a free slot before their notebook starts.
    Round 8 made two at a time the default (15.8 min against 17.5 on 2 cores); once the package kept freed memory
    (allocator.py, round 9) the training steps used both cores fully, and one at a time took 13.2 min against
    13.2-14.0 for two, with half the peak memory, so ``make run`` went back to one (docs/tuning.md, round 9).
    """
    preset = get_preset(preset_name)  # fails at once, listing the valid presets
    if jobs < 1:
        raise ValueError(f"jobs must be 1 or more, got {jobs}")
    os.environ["RLHF_PRESET"] = preset.name
    wait_policy = os.environ.get("OMP_WAIT_POLICY")
    if jobs > 1 and wait_policy is None:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read by each kernel's OpenMP at start-up (restored below)
    try:
        return _run(preset, out_dir, timeout, only, jobs)
    finally:
        if wait_policy is None:
            os.environ.pop("OMP_WAIT_POLICY", None)


def _run(preset, out_dir: Path | None, timeout: int, only: list[str] | None, jobs: int) -> list[tuple[str, float]]:
    import json
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    import nbformat
    from nbconvert import HTMLExporter

    out_dir = out_dir or project_root() / "reports"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [p for p in notebook_paths() if not only or any(p.name.startswith(o) for o in only)]
    def nice_of(name: str) -> int:
        return NICE_STEP * int(name[:2]) if jobs > 1 and name[:2].isdigit() else 0

    work: list[Path | tuple[str, int]] = []  # a notebook, or (a stage to build ahead, its process's niceness)
    for path in paths:
        work.append(path)
        if jobs > 1 and not only:
            work += [(stage, nice_of(path.name)) for stage in BUILD_AHEAD.get(path.name[:2], ())]
    wall0 = time.time()
    peaks: dict[str, int] = {}  # each kernel's resident peak (MiB)

    def say(line: str) -> None:  # one write per line: two notebooks' lines never run into each other
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def build_ahead(stage: str, nice: int) -> None:
        t0 = time.time()
        say(f"[run] building '{stage}' ahead of the notebook that loads it ...")
        log = out_dir / f"build_{stage}.log"
        with log.open("w") as out:
            proc = subprocess.run([sys.executable, "-m", "rlhf_helpers", "build", stage, "--preset", preset.name],
                                  stdout=out, stderr=subprocess.STDOUT,
                                  preexec_fn=(lambda: os.nice(nice)) if nice and hasattr(os, "nice") else None)
        if proc.returncode:  # not fatal: the notebook that needs it builds it (and shows the error, if any)
            say(f"[run] building '{stage}' ahead failed (see {log}); its notebook will build it")
        else:
            say(f"[run] '{stage}' built ahead in {time.time() - t0:.0f}s")

    def one(item: Path | tuple[str, int]) -> tuple[str, float] | None:
        if isinstance(item, tuple):
            build_ahead(*item)
            return None
        path = item
        say(f"[run] {path.name} (preset {preset.name}) ...")
        nb = nbformat.read(path, as_version=4)
        t0 = time.time()
        stats: dict = {}
        try:
            execute_notebook(nb, path.parent, timeout=timeout, nice=nice_of(path.name), stats=stats)
        finally:
            nbformat.write(nb, out_dir / path.name)
        seconds = time.time() - t0
        if "peak_memory_mib" in stats:
            peaks[path.name] = round(stats["peak_memory_mib"])
        html, _ = HTMLExporter().from_notebook_node(nb)
        (out_dir / path.with_suffix(".html").name).write_text(html)
        say(f"[run] {path.name}: {seconds:.0f}s")
        return path.name, seconds

    if jobs == 1:
        timings = [one(item) for item in work]
    else:  # a pool takes the work in order; a failure stops what has not started yet
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(one, item) for item in work]
            try:
                timings = [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    timings = [t for t in timings if t is not None]
    wall = time.time() - wall0
    (out_dir / "timings.json").write_text(json.dumps({"preset": preset.name, "seconds": dict(timings),
                                                      "jobs": jobs, "wall_seconds": round(wall, 1),
                                                      "peak_memory_mib": peaks}, indent=2))
    rows = "".join(f'<li><a href="{n.replace(".ipynb", ".html")}">{n}</a> ({s:.0f} s)</li>' for n, s in timings)
    (out_dir / "index.html").write_text(
        f"<html><body><h1>rlhf-notebooks: executed in preset {preset.name}</h1><ul>{rows}</ul>"
        f"<p>{wall / 60:.1f} min in all, {jobs} notebook(s) at a time</p></body></html>")
    print(f"[run] done in {wall / 60:.1f} min ({jobs} notebook(s) at a time); open {out_dir / 'index.html'}")
    return timings


# A new top-level folder under the artifacts home is a stage trained by surprise, except these: "evaluations" only
# keeps sampled test answers (evaluate.evaluate_policies), which is what a load-only pass is meant to do.
NOT_A_STAGE = frozenset({"evaluations"})


def _folders(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir()} if root.exists() else set()


def run_load_only(preset_name: str | None = None, out_dir: Path | None = None, timeout: int = 3600,
                  only: list[str] | None = None) -> list[dict]:
    """What a learner waits for in a workshop: every notebook executed as JupyterLab's Run All would, after
    ``build all`` (every code cell in order, ``%%solution`` cells included with solutions off), timed.

    Refuses to start while an artifact the notebooks load is missing (that run would train, not load), and
    reports any folder the run added under the artifacts home (a notebook that trained by surprise).
    Executed copies go to ``reports/loadonly/``; the table to ``benchmarks/results/<preset>_loadonly.md``."""
    import json

    import nbformat
    from nbclient import NotebookClient

    from .config import artifacts_home
    from .doctor import _artifact_problems

    preset = get_preset(preset_name)
    missing, wrong = _artifact_problems(preset, artifacts_home())
    missing = missing + wrong
    if missing:
        raise SystemExit(f"[loadonly] {len(missing)} artifacts are not built yet ({', '.join(missing)}): run "
                         f"`python -m rlhf_helpers build all --preset {preset.name}` first; a load-only pass would "
                         "otherwise train them and time the training.")
    os.environ["RLHF_PRESET"] = preset.name
    os.environ["RLHF_RUN_SOLUTIONS"] = "0"  # as in a learner's kernel: Run All prints how to run each solution
    home = artifacts_home() / preset.name
    out_dir = out_dir or project_root() / "reports" / "loadonly"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in notebook_paths():
        if only and not any(path.name.startswith(o) for o in only):
            continue
        before = _folders(home)
        nb = nbformat.read(path, as_version=4)
        print(f"[loadonly] {path.name} (preset {preset.name}, solutions off) ...", flush=True)
        t0 = time.time()
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", extra_arguments=KERNEL_QUIET,
                                resources={"metadata": {"path": str(path.parent)}})
        stats: dict = {}
        track_peak_memory(client, stats)
        try:
            client.execute()
        finally:
            nbformat.write(nb, out_dir / path.name)
        seconds = time.time() - t0
        added = sorted(f for f in _folders(home) - before if "/" not in f and f not in NOT_A_STAGE)
        rows.append({"notebook": path.name, "seconds": round(seconds, 1), "new_artifact_folders": added,
                     "peak_memory_mib": round(stats["peak_memory_mib"]) if "peak_memory_mib" in stats else None})
        print(f"[loadonly] {path.name}: {seconds:.0f}s" + (f"; NEW artifact folders: {added}" if added else ""),
              flush=True)
    (out_dir / "loadonly.json").write_text(json.dumps({"preset": preset.name, "rows": rows}, indent=2))
    return rows


def load_only_table(rows: list[dict], preset_name: str, words: dict[str, dict] | None = None) -> str:
    """Markdown: per notebook, the measured Run All wait and (when given) the main body's reading time."""
    lines = ["| notebook | Run All after `build all` (measured) | kernel's peak memory | main-body words | "
             "reading at 230 words/min | new artifact folders |", "|---|---|---|---|---|---|"]
    total = 0.0
    for r in rows:
        w = (words or {}).get(r["notebook"], {}).get("main body")
        total += r["seconds"]
        peak = r.get("peak_memory_mib")
        lines.append(f"| {r['notebook']} | {r['seconds']:.0f} s | {f'{peak / 1024:.1f} GiB' if peak else '—'} | "
                     f"{w if w is not None else '—'} | {'%.1f min' % (w / 230) if w is not None else '—'} | "
                     f"{', '.join(r['new_artifact_folders']) or 'none'} |")
    lines.append(f"| **all** | **{total / 60:.1f} min** | | | | |")
    machine = f"{os.cpu_count()} CPU cores"
    return (f"Preset `{preset_name}`, {machine}, {time.strftime('%Y-%m-%d')}; measured by "
            f"`python -m rlhf_helpers loadonly --preset {preset_name}`.\n\n" + "\n".join(lines) + "\n")
