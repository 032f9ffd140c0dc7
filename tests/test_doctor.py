"""The setup doctor and `build all` (issue 14): every problem is one FAIL line naming its fix."""
import json
import os
import re
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlhf_helpers import doctor
from rlhf_helpers.__main__ import main
from rlhf_helpers.config import get_preset

ROOT = Path(__file__).resolve().parent.parent


def _by_check(findings, name):
    return [f for f in findings if f.check == name]


def _fail_lines(out: str) -> list[str]:
    return [l for l in out.splitlines() if l.startswith("FAIL")]


@pytest.fixture
def empty_home(monkeypatch, tmp_path):
    home = tmp_path / "artifacts"
    monkeypatch.setenv("RLHF_HOME", str(home))
    return home


def test_missing_artifacts_fail_with_the_build_command(empty_home, capsys):
    (artifacts,) = _by_check(doctor.diagnose("smoke"), "artifacts")
    assert artifacts.status == "FAIL"
    assert f"{len(doctor.artifact_names(get_preset('smoke')))} of" in artifacts.detail
    assert doctor.run("smoke") == 1
    fails = _fail_lines(capsys.readouterr().out)
    assert len(fails) == 1 and "python -m rlhf_helpers build all --preset smoke" in fails[0] and "fix:" in fails[0]


def test_artifact_built_for_another_preset_is_named(empty_home):
    folder = empty_home / "smoke" / "sft" / "model"
    folder.mkdir(parents=True)
    (folder / "rlhf_meta.json").write_text(json.dumps({"preset": "tiny", "stage": "sft"}))
    (artifacts,) = _by_check(doctor.diagnose("smoke"), "artifacts")
    assert artifacts.status == "FAIL" and "sft (built for 'tiny')" in artifacts.detail and "delete" in artifacts.fix


def test_wrong_python_fails_with_the_fix(empty_home, capsys):
    assert doctor.check_python((3, 12, 1)).status == "ok"
    old = doctor.check_python((3, 10, 4))
    assert old.status == "FAIL" and "3.10.4" in old.detail and "3.11" in old.detail and "make venv" in old.fix
    assert doctor.run("smoke", python_version=(3, 10, 4)) == 1
    (line,) = [l for l in _fail_lines(capsys.readouterr().out) if "python" in l.split()[1]]
    assert "3.10.4" in line and "fix:" in line


def test_offline_gpt2_preset_points_to_tiny_or_local_folders(monkeypatch, empty_home, tmp_path):
    for var in ("RLHF_POLICY_MODEL", "RLHF_SENTIMENT_MODEL", "RLHF_DATASET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(doctor, "_hub_cache", lambda: tmp_path / "empty_hub_cache")
    (hub,) = _by_check(doctor.diagnose("gpt2"), "hub")
    assert hub.status == "FAIL" and "HF_HUB_OFFLINE=1" in hub.detail and "gpt2" in hub.detail
    assert "RLHF_PRESET=tiny" in hub.fix and "RLHF_POLICY_MODEL=" in hub.fix
    # no network at all (not switched off): the same problem, said differently
    for var in doctor.OFFLINE_VARS:  # .ci/run sets all three
        monkeypatch.delenv(var, raising=False)
    (hub,) = _by_check(doctor.diagnose("gpt2", reachable=lambda: False), "hub")
    assert hub.status == "FAIL" and "unreachable" in hub.detail
    # local copies (how the offline gpt2 path is used): no hub problem
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("RLHF_POLICY_MODEL", "RLHF_SENTIMENT_MODEL", "RLHF_DATASET"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    (hub,) = _by_check(doctor.diagnose("gpt2"), "hub")
    assert hub.status == "ok"
    # the offline presets never need the hub
    (hub,) = _by_check(doctor.diagnose("smoke", reachable=lambda: False), "hub")
    assert hub.status == "ok"


def test_hub_cache_counts_as_local(monkeypatch, tmp_path):
    for var in ("RLHF_POLICY_MODEL", "RLHF_SENTIMENT_MODEL", "RLHF_DATASET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(doctor, "_hub_cache", lambda: tmp_path)
    for folder in ("models--gpt2", "models--lvwerra--distilbert-imdb", "datasets--stanfordnlp--imdb"):
        (tmp_path / folder / "snapshots" / "abc").mkdir(parents=True)
    assert doctor.check_hub(get_preset("gpt2")).status == "ok"


def test_too_little_disk_fails(monkeypatch, empty_home):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(doctor, "_disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - 50 * 2**20, 50 * 2**20))
    (disk,) = _by_check(doctor.diagnose("tiny"), "disk")
    assert disk.status == "FAIL" and "0.0 GiB free" in disk.detail and "to build" in disk.detail
    assert "RLHF_HOME" in disk.fix
    # the threshold is per preset and can be changed
    monkeypatch.setitem(doctor.DISK_WHEN_BUILT_GB, "tiny", 0.01)
    monkeypatch.setitem(doctor.DISK_TO_BUILD_GB, "tiny", 0.01)
    assert doctor.check_disk(get_preset("tiny"), empty_home, missing=True).status == "ok"


def test_too_little_memory_fails(monkeypatch, empty_home):
    monkeypatch.setattr(doctor, "available_memory", lambda: 300 * 2**20)
    (mem,) = _by_check(doctor.diagnose("tiny"), "memory")
    assert mem.status == "FAIL" and "Shut Down" in mem.fix


def test_building_needs_more_memory_than_loading(monkeypatch, empty_home):
    # tiny's rater build peaks at 3.3-3.7 GiB and `build all` at 4.6 GiB (docs/tuning.md, round 9): 3 GiB available
    # is enough to load every model, not to train them from nothing
    monkeypatch.setattr(doctor, "available_memory", lambda: 3 * 2**30)
    (mem,) = _by_check(doctor.diagnose("tiny"), "memory")  # nothing built in empty_home
    assert mem.status == "FAIL" and "to build" in mem.detail and "build all" in mem.fix
    assert doctor.check_memory(get_preset("tiny"), missing=False).status == "ok"


def test_read_only_artifacts_folder_fails(monkeypatch, empty_home):
    def refuse(**kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(doctor, "tempfile", SimpleNamespace(mkstemp=refuse))
    (w,) = _by_check(doctor.diagnose("smoke"), "writable")
    assert w.status == "FAIL" and "read-only" in w.detail and "RLHF_HOME" in w.fix


def test_missing_or_old_packages_fail():
    f = doctor.check_packages(["surely-not-installed-pkg>=1", "torch>=99", "pandas>=2.0"])
    assert f.status == "FAIL" and "surely-not-installed-pkg missing" in f.detail and "torch" in f.detail
    assert "pandas" not in f.detail and "make venv" in f.fix
    assert doctor.check_packages().status == "ok"  # this environment has everything


def test_unknown_preset_is_one_problem(empty_home):
    (p,) = _by_check(doctor.diagnose("nope"), "preset")
    assert p.status == "FAIL" and "tiny" in p.fix


def test_plan_covers_what_the_notebooks_load():
    """`build all` must build every DPO round (04 trains them, 06 puts each on the frontier), and the notebooks'
    main body must load no other DPO policy (04's β sweep is an exercise: its solution builds its own)."""
    import nbformat

    from rlhf_helpers.config import dpo_stage_name

    for name in ("smoke", "tiny", "gpt2"):
        preset = get_preset(name)
        names = doctor.artifact_names(preset)
        assert len(names) == len(set(names))
        rounds = [r for _, _, r in doctor.dpo_round_stages(preset)]
        assert rounds == list(range(1, preset.dpo.rounds + 1)) and preset.dpo.rounds >= 2
        for r in rounds:
            assert dpo_stage_name(preset, None, r) in names
            assert ("dpo_pairs" if r == 1 else f"dpo_pairs_round{r}") in names
            # a round's pairs come before its policy, and the previous round's policy before both
            assert names.index(dpo_stage_name(preset, None, r)) > names.index(
                "dpo_pairs" if r == 1 else f"dpo_pairs_round{r}")
            if r > 1:
                assert names.index(f"dpo_pairs_round{r}") > names.index(dpo_stage_name(preset, None, r - 1))
        expected = {"sft", "pairs", "reward_model", "ppo", "dpo_pairs", "dpo", "grpo", "rloo", "judge2"}
        assert expected <= set(names)
        assert ("tokenizer" in names) == ("classifier" in names) == (preset.policy_model == "tiny")
    for nb in ("04_dpo.ipynb", "06_guardrail.ipynb"):
        cells = nbformat.read(ROOT / "notebooks" / nb, 4).cells
        end = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Exercises"))
        body = "\n".join(c.source for c in cells[:end] if c.cell_type == "code")
        assert not re.search(r"ensure_dpo\([^)]*beta\s*=|dpo_betas\s*=", body), (
            f"{nb} loads a DPO policy at another beta in its main body: add it to doctor.artifact_plan")


@pytest.mark.slow
def test_build_all_once_then_nothing_then_doctor_all_good(empty_home, capsys):
    preset = get_preset("smoke")
    n = len(doctor.artifact_names(preset))
    assert main(["build", "all", "--preset", "smoke"]) == 0
    out = capsys.readouterr().out
    assert f"build all: {n} of {n} artifacts to build" in out and "build all [rloo]" in out  # the progress bar
    assert main(["build", "all", "--preset", "smoke"]) == 0
    assert capsys.readouterr().out.strip() == (f"all {n} artifacts already built in {empty_home / 'smoke'}; "
                                               "nothing to do")
    # resumable: a lost artifact (or an interrupted run) is built again, alone
    shutil.rmtree(empty_home / "smoke" / "dpo_round2")
    assert main(["build", "all", "--preset", "smoke"]) == 0
    out = capsys.readouterr().out
    assert f"1 of {n} artifacts to build" in out and "dpo_round2: built in" in out and "sft: built" not in out
    assert main(["build", "ppo", "--preset", "smoke"]) == 0  # one stage still works
    # the command a learner types, in its own process
    env = {**os.environ, "RLHF_HOME": str(empty_home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "rlhf_helpers", "doctor", "--preset", "smoke"], env=env,
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not _fail_lines(done.stdout) and "all good" in done.stdout


def test_build_all_interrupted_says_how_to_resume(empty_home, monkeypatch, capsys):
    calls = []

    def fake_plan(preset):
        def ok(force=False):
            calls.append("a")

        def interrupted(force=False):
            raise KeyboardInterrupt

        return [("a", ok), ("b", interrupted), ("c", ok)]

    monkeypatch.setattr(doctor, "artifact_plan", fake_plan)
    assert main(["build", "all", "--preset", "smoke"]) == 130
    out = capsys.readouterr().out
    assert calls == ["a"] and "build all: 3 of 3 artifacts to build" in out
    assert "interrupted; run `python -m rlhf_helpers build all --preset smoke` again to resume" in out


def test_a_python3_kernel_of_another_python_fails(monkeypatch, tmp_path):
    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": ["/usr/bin/python3-elsewhere", "-m", "ipykernel_launcher",
                                                           "-f", "{connection_file}"], "language": "python",
                                                  "display_name": "Python 3"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    kernel = [f for f in doctor.check_kernel() if f.status == "FAIL"]
    assert len(kernel) == 1 and "/usr/bin/python3-elsewhere" in kernel[0].detail
    assert "ipykernel install --user --name rlhf-notebooks" in kernel[0].fix
    monkeypatch.delenv("JUPYTER_PATH")
    assert all(f.status != "FAIL" for f in doctor.check_kernel())


def test_optional_sections_are_tagged_and_marked():
    """The workshop agenda skips sections by this convention: tag `optional` + a heading ending " *(optional)*"."""
    import nbformat

    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in nbformat.read(path, 4).cells:
            if cell.cell_type != "markdown":
                continue
            tagged = "optional" in cell.metadata.get("tags", [])
            marked = [l for l in cell.source.splitlines() if l.startswith("#") and l.rstrip().endswith("*(optional)*")]
            assert tagged == bool(marked), f"{path.name}: {cell.source.splitlines()[0]!r} (tag and marker must agree)"


def test_workshop_guide_links_and_commands_exist():
    guide = (ROOT / "docs" / "workshop.md").read_text()
    for link in re.findall(r"\]\((\.\./notebooks/[^)]+)\)", guide):
        assert (ROOT / "docs" / link).resolve().exists(), link
    for command in set(re.findall(r"python -m rlhf_helpers (\w+)", guide)):
        assert command in {"build", "doctor", "run", "presets", "report", "evaluate", "ppo", "loadonly", "words", "exercises"}, command
    assert "TBD-LEAD" in guide or "GPU" in guide
