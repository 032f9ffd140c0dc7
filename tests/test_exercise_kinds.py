"""Exercises that say what kind they are (rlhf_helpers/exercises.py, issue #23): the heading parser, the table of
``python -m rlhf_helpers exercises``, checked predictions, and no unmarked exercise in notebooks 00-03."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from rlhf_helpers.__main__ import main
from rlhf_helpers.exercises import (KINDS, UNMARKED, check_prediction, exercise_headings, exercise_kinds,
                                    kinds_table, series_kinds)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MINE = ["00_setup_and_tour.ipynb", "01_sft.ipynb", "02_reward.ipynb", "03_ppo.ipynb"]


def small_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 09 · A test notebook\n\nExercise 0, not a heading *(open discussion)*"),
        nbformat.v4.new_markdown_cell("## Exercises\n\n### Exercise 1: Write it *(checked fill-in)*\nText."),
        nbformat.v4.new_code_cell("# ### Exercise 9: a comment in code *(checked fill-in)*\nx = 1"),
        nbformat.v4.new_markdown_cell("### Exercise 2 · Guess *(checked prediction)*  \n\n"
                                      "### Exercise 3 · Talk *(open discussion)*\n\n### Exercise 4 · Forgot the kind"),
        nbformat.v4.new_markdown_cell("### Exercise 5: kind not at the end *(open discussion)* of the heading\n"
                                      "#### Solution 1 *(checked fill-in)*"),
    ]
    nbformat.write(nb, path)
    return path


def test_headings_and_kinds_of_a_small_notebook(tmp_path):
    path = small_notebook(tmp_path / "09_test.ipynb")
    kinds = [kind for _, kind in exercise_headings(path)]
    assert kinds == ["checked fill-in", "checked prediction", "open discussion", UNMARKED, UNMARKED]
    assert exercise_kinds(path) == {"checked fill-in": 1, "checked prediction": 1, "open discussion": 1, UNMARKED: 2}


def test_table_and_command(tmp_path, capsys):
    small_notebook(tmp_path / "09_test.ipynb")
    counts = series_kinds(tmp_path)
    table = kinds_table(counts)
    assert table.splitlines()[0] == "| notebook | " + " | ".join(KINDS) + " | unmarked | all |"
    assert "| 09_test.ipynb | 1 | 1 | 1 | 2 | 5 |" in table and "| **total** | 1 | 1 | 1 | 2 | 5 |" in table
    assert main(["exercises", "--notebooks", str(tmp_path)]) == 0
    assert "| 09_test.ipynb | 1 | 1 | 1 | 2 | 5 |" in capsys.readouterr().out
    assert main(["exercises", "--notebooks", str(tmp_path / "empty")]) == 2


@pytest.mark.parametrize("name", MINE)
def test_every_exercise_names_its_kind(name):
    headings = exercise_headings(NOTEBOOKS / name)
    assert headings, f"{name}: no exercises"
    unmarked = [h for h, kind in headings if kind == UNMARKED]
    assert not unmarked, f"{name}: end each exercise heading with its kind, e.g. *(open discussion)*: {unmarked}"


def test_the_series_table_covers_all_seven_notebooks():
    counts = series_kinds(NOTEBOOKS)
    assert [n[:2] for n in counts] == ["00", "01", "02", "03", "04", "05", "06"]
    assert all(sum(c.values()) > 0 for c in counts.values())


def test_checked_prediction_messages():
    ran = []

    def truth():
        ran.append(1)
        return 28.0

    assert not check_prediction(None, truth, 1) and not ran, "no prediction: nothing runs"
    assert str(check_prediction(None, truth, 1)).startswith("not yet: write your prediction")
    close = check_prediction(27.4, truth, tolerance=0.1, relative=True, what="steps", unit="steps")
    assert close and str(close).startswith("close: steps: 28 steps; you predicted 27.4 steps") and ran
    far = check_prediction(40, 28.0, tolerance=2, what="steps")
    assert not far and str(far).startswith("not yet: steps: 28; you predicted 40") and "too high" in str(far)
    assert "too low" in str(check_prediction(10, 28.0, tolerance=2))
    assert check_prediction(29.5, 28.0, tolerance=2) and not check_prediction(30.5, 28.0, tolerance=2)
    assert "must be a number" in str(check_prediction("lots", 28.0, 1))
    assert "finite" in str(check_prediction(float("nan"), 28.0, 1))
