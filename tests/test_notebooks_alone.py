"""Each notebook runs on its own from an EMPTY artifacts folder (smoke preset): it builds what earlier
notebooks would have made. (nbval runs them in order, sharing one folder; this checks the other case.)"""
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] in ("02", "03", "04", "05", "06")],
                         ids=lambda p: p.name)
def test_notebook_runs_alone(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("RLHF_HOME", str(tmp_path))  # the kernel inherits this fresh, empty folder
    monkeypatch.setenv("RLHF_PRESET", "smoke")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    assert (tmp_path / "smoke" / "sft" / "model").is_dir()
