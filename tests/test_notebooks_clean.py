"""The stored notebooks follow one rule: outputs stripped (executed copies live in reports/)."""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_all_seven_notebooks_exist():
    assert [p.name[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_and_teaches(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("outputs") == [] and c.get("execution_count") is None for c in code), \
        f"{path.name} has stored outputs: strip them (jupyter nbconvert --clear-output --inplace {path})"
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    for needed in ("Summary", "Exercise", "Solution"):
        assert needed in text, f"{path.name} lacks a '{needed}' section"
    source = "\n".join("".join(c["source"]) for c in code)
    assert "sys.path" not in source and "import *" not in source
    assert "NBVAL_CHECK_OUTPUT" not in source, "stored outputs are stripped, so nbval has nothing to compare"
