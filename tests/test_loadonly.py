"""Run All in a learner's kernel trains nothing: after `build all`, every notebook executed as JupyterLab's Run
All runs it (every code cell, worked solutions included but switched off) adds no artifact folder and prints no
"building" line, and each worked solution says how to run it instead. (`make test` turns solutions on for nbval,
where every solution runs; this test switches them off as a learner's kernel has them.)"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_run_all_of_every_notebook_after_build_all_trains_nothing(tmp_path):
    env = {**os.environ, "RLHF_PRESET": "smoke", "RLHF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1",
           "RLHF_RUN_SOLUTIONS": "0"}
    subprocess.run([sys.executable, "-m", "rlhf_helpers", "build", "all", "--preset", "smoke"], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL, timeout=1800)
    code = ("import json, sys\n"
            "from pathlib import Path\n"
            "from rlhf_helpers.notebooks import run_load_only\n"
            f"rows = run_load_only('smoke', out_dir=Path({str(tmp_path / 'out')!r}))\n"
            "print(json.dumps(rows))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    import nbformat

    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(rows) == 7 and all(r["new_artifact_folders"] == [] for r in rows), rows
    for path in sorted((tmp_path / "out").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        solutions = [c for c in nb.cells if c.cell_type == "code" and "solution" in c.metadata.get("tags", [])]
        assert "[artifacts] building" not in text, f"{path.name} built an artifact on Run All"
        assert text.count("Worked solution, not run") == len(solutions), path.name
        assert "correct: matches the package" not in text, path.name
