"""What git would commit follows one rule: notebooks without outputs (executed copies live in reports/).

The check reads the notebook as staged in git's index (``git show :notebooks/NN.ipynb``), not the working
copy: a learner who ran a notebook in JupyterLab (which autosaves outputs into it) keeps those outputs in
the working copy, ``make test`` stays green, and ``git status`` stays clean, because ``make venv`` installs
nbstripout as the git filter named in .gitattributes. Outside a git checkout it reads the working copy.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# the filter's command line, as the Makefile's venv target configures it (kept in one place: the Makefile)
MAKEFILE = (ROOT / "Makefile").read_text()


def nbstripout_args() -> list[str]:
    def var(name: str) -> str:
        return MAKEFILE.split(f"{name} :=", 1)[1].splitlines()[0].strip()

    return [*var("NBSTRIPOUT_ARGS").split(), "--extra-keys", var("NBSTRIPOUT_EXTRA_KEYS"), "-t"]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def in_git_checkout() -> bool:
    return shutil.which("git") is not None and _git("rev-parse", "--is-inside-work-tree").stdout.strip() == "true"


def committed_text(path: Path) -> str:
    """The notebook as git would commit it now: the index's copy when tracked, else the working copy."""
    if in_git_checkout():
        staged = _git("show", f":{path.relative_to(ROOT).as_posix()}")
        if staged.returncode == 0:
            return staged.stdout
    return path.read_text()


def test_all_seven_notebooks_exist():
    assert [p.name[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_and_teaches(path):
    nb = json.loads(committed_text(path))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("outputs") == [] and c.get("execution_count") is None for c in code), \
        (f"{path.name} is staged with outputs: `make venv` installs the nbstripout git filter; then "
         f"`git add {path.relative_to(ROOT)}` again (or strip it: jupyter nbconvert --clear-output --inplace)")
    assert "widgets" not in nb.get("metadata", {}), f"{path.name} is staged with saved widget state"
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    for needed in ("Summary", "Exercise", "Solution"):
        assert needed in text, f"{path.name} lacks a '{needed}' section"
    source = "\n".join("".join(c["source"]) for c in code)
    assert "sys.path" not in source and "import *" not in source
    assert "NBVAL_CHECK_OUTPUT" not in source, "stored outputs are stripped, so nbval has nothing to compare"


def test_gitattributes_route_notebooks_through_nbstripout():
    attrs = (ROOT / ".gitattributes").read_text()
    assert "*.ipynb filter=nbstripout" in attrs
    assert "git config filter.nbstripout.clean" in MAKEFILE, "make venv must install the filter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_filter_leaves_committed_notebooks_unchanged(path):
    """The clean filter is a no-op on what is committed (cell ids kept, same JSON layout), so installing
    it never makes an untouched notebook show as modified."""
    pytest.importorskip("nbstripout")
    text = committed_text(path)
    args = nbstripout_args()
    out = subprocess.run([sys.executable, "-m", "nbstripout", *args], input=text, capture_output=True,
                         text=True, check=True).stdout
    assert out == text, f"{path.name}: nbstripout {' '.join(args)} would change it; strip and re-commit it"


def test_filter_strips_an_executed_notebook(tmp_path):
    """An executed notebook (outputs, counts, widget state, kernel details) comes out as committed."""
    pytest.importorskip("nbstripout")
    path = NOTEBOOKS[0]
    text = committed_text(path)
    nb = json.loads(text)
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = i + 1
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
        cell["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb["metadata"]["language_info"].update({"version": "3.11.7", "mimetype": "text/x-python",
                                            "file_extension": ".py", "pygments_lexer": "ipython3",
                                            "nbconvert_exporter": "python",
                                            "codemirror_mode": {"name": "ipython", "version": 3}})
    executed = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    out = subprocess.run([sys.executable, "-m", "nbstripout", *nbstripout_args()], input=executed,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == json.loads(text)
