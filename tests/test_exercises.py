"""Exercises that are known to work (TEAM convention): every "### Exercise N" has a "#### Solution N" heading
followed by a hidden code cell tagged ``solution``; nbval (make test, smoke) executes those cells, make run skips
them. No solution may contain a ``...`` placeholder."""
import re
from pathlib import Path

import nbformat
import pytest

from rlhf_helpers.notebooks import SOLUTION_TAG, execute_notebook

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXERCISE = re.compile(r"^###\s+Exercise\s+(\d+)\b", re.MULTILINE)
SOLUTION = re.compile(r"^####\s+Solution\s+(\d+)\b", re.MULTILINE)


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_has_a_hidden_solution_cell(path):
    cells = nbformat.read(path, as_version=4).cells
    exercises = [int(m) for c in cells if c.cell_type == "markdown" for m in EXERCISE.findall(c.source)]
    assert exercises, f"{path.name}: no '### Exercise N' cell"
    assert exercises == list(range(1, len(exercises) + 1)), f"{path.name}: exercises numbered {exercises}"
    assert "<details>" not in "".join(c.source for c in cells if c.cell_type == "markdown"), \
        f"{path.name}: solutions live in tagged code cells now, not in <details> blocks"
    solved = []
    for i, cell in enumerate(cells):
        for number in SOLUTION.findall(cell.source) if cell.cell_type == "markdown" else []:
            nxt = cells[i + 1] if i + 1 < len(cells) else None
            assert nxt is not None and nxt.cell_type == "code" and SOLUTION_TAG in tags(nxt), \
                f"{path.name}: '#### Solution {number}' must be followed by a code cell tagged '{SOLUTION_TAG}'"
            assert nxt.metadata.get("jupyter", {}).get("source_hidden") is True, \
                f"{path.name}: solution {number} should be collapsed (metadata jupyter.source_hidden: true)"
            solved.append(int(number))
    assert sorted(solved) == exercises, f"{path.name}: exercises {exercises} but solutions {sorted(solved)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_solutions_have_no_placeholders_and_sit_at_the_end(path):
    cells = nbformat.read(path, as_version=4).cells
    code = [c for c in cells if c.cell_type == "code"]
    solutions = [c for c in code if SOLUTION_TAG in tags(c)]
    for cell in solutions:
        assert "..." not in cell.source and "…" not in cell.source, \
            f"{path.name}: a solution holds a placeholder:\n{cell.source}"
        assert cell.source.strip(), f"{path.name}: an empty solution cell"
    first = min((code.index(c) for c in solutions), default=len(code))
    assert all(SOLUTION_TAG in tags(c) for c in code[first:]), \
        f"{path.name}: solution cells go after every other code cell, so they cannot break the lesson"


def test_make_run_skips_solution_cells(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise RuntimeError('a solution ran')", metadata={"tags": [SOLUTION_TAG]})]
    execute_notebook(nb, tmp_path, timeout=60)
    assert nb.cells[0].execution_count == 1
    assert nb.cells[1].outputs == []
