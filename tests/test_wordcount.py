"""The reading load of the series (issue #24): markdown words per notebook in three parts, and a main body a
room can read. The counting rule is stated in rlhf_helpers/wordcount.py."""
from pathlib import Path

import nbformat
import pytest

from rlhf_helpers.__main__ import main
from rlhf_helpers.wordcount import count_words, markdown_table, series_counts, word_counts

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MAIN_BODY_LIMIT = 15_000  # words across the seven notebooks: about an hour of reading at 230 words a minute


def _write(path: Path, cells) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nbformat.write(nb, path)
    return path


def _md(text: str, *tags: str):
    return nbformat.v4.new_markdown_cell(text, metadata={"tags": list(tags)} if tags else {})


@pytest.mark.parametrize("text, expected", [
    ("one two three", 3),
    ("# 1) A heading\n\n- a bullet, with `code` and $\\beta$", 9),  # "#", "-" are not words; "1)" is
    ("| a | b |\n|---|---|\n| c | d |", 4),  # table rules and pipes are not words
    ("before\n```\nprompt ──► writer ──► draft\n```\nafter", 2),  # fenced code is left out
    ("> **Reference run** (tiny, 2-core CPU): about 2 minutes", 8),
    ("", 0),
])
def test_count_words(text, expected):
    assert count_words(text) == expected


def test_the_three_parts(tmp_path):
    path = _write(tmp_path / "00_demo.ipynb", [
        _md("# 00 · Demo\n\nOne two three."),                               # main body: 5
        nbformat.v4.new_code_cell("x = 1  # code is never counted"),
        _md("### 1.2) Extra *(optional)*\n\nfour five", "optional"),         # optional: 5
        nbformat.v4.new_code_cell("y = 2", metadata={"tags": ["optional"]}),
        _md("- back in the main body"),                                      # main body: 5
        _md("### Exercises in the text are not the heading"),                # level 3: still main body: 8
        _md("## 7) Exercises\n\nsix seven"),                                 # exercises from here: 4
        _md("#### Solution 1 *(optional)*", "optional"),                     # exercises, whatever the tags: 3
        _md("- notes", "solution"),                                          # exercises: 1
    ])
    assert word_counts(path) == {"main body": 18, "optional": 5, "exercises": 8}


def test_a_notebook_without_exercises_is_all_body(tmp_path):
    path = _write(tmp_path / "01_demo.ipynb", [_md("one two"), _md("three *(optional)*", "optional")])
    assert word_counts(path) == {"main body": 2, "optional": 2, "exercises": 0}


def test_table_and_command(tmp_path, capsys):
    _write(tmp_path / "00_a.ipynb", [_md("one two three"), _md("## Exercises\n\nfour")])
    _write(tmp_path / "01_b.ipynb", [_md("five six")])
    _write(tmp_path / "notes.ipynb", [_md("not a numbered notebook")])
    counts = series_counts(tmp_path)
    assert list(counts) == ["00_a.ipynb", "01_b.ipynb"]
    table = markdown_table(counts)
    assert "| **total** | 5 | 0 | 2 | 7 |" in table
    assert main(["words", "--notebooks", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| notebook | main body | optional | exercises |") and "| 01_b.ipynb | 2 |" in out
    assert main(["words", "--notebooks", str(tmp_path / "nothing")]) == 2


def test_every_notebook_has_exercises():
    counts = series_counts(NOTEBOOKS)
    assert len(counts) == 7 and all(c["exercises"] > 0 for c in counts.values()), counts


def test_the_main_body_is_a_room_can_read():
    counts = series_counts(NOTEBOOKS)
    main_body = sum(c["main body"] for c in counts.values())
    assert main_body <= MAIN_BODY_LIMIT, (
        f"the seven notebooks' main body has {main_body:,} words (limit {MAIN_BODY_LIMIT:,}): tighten the prose, or "
        "move detail into a section tagged `optional` (heading ending *(optional)*) or the notebook's appendix\n"
        + markdown_table(counts))
