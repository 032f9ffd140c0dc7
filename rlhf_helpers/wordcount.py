"""How much a learner has to read: markdown word counts per notebook, split into main body, optional and exercises.

The three parts of a notebook:

* **main body**: markdown cells *not* tagged ``optional`` that come before the exercises;
* **optional**: markdown cells tagged ``optional`` that come before the exercises (sections a workshop may skip,
  and the appendix);
* **exercises**: every markdown cell from the first level-2 heading that ends in "Exercises" (``## Exercises``,
  ``## 7) Exercises``) to the end of the notebook, worked-solution notes included, whatever their tags.

The counting rule: a word is a whitespace-separated token of a markdown cell's source that contains at least one
letter or digit, after fenced code blocks (```` ``` ```` or ``~~~``: ASCII diagrams, shell commands) are removed.
So headings, table cells, link text, inline code and maths count like prose (``$\\beta$`` is one word, a display
equation as many words as it has tokens: reading it takes at least that long), while table rules (``|---|``),
bullets, arrows and quote markers do not. Code cells are never counted.

Reading time assumes 230 words a minute. ``python -m rlhf_helpers words`` prints the table.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

WORDS_PER_MINUTE = 230
PARTS = ("main body", "optional", "exercises")
OPTIONAL_TAG = "optional"
EXERCISES_HEADING = re.compile(r"^##\s+(?:.*\s)?Exercises\s*$", re.MULTILINE)
FENCE = re.compile(r"^\s*(```|~~~)")


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def count_words(markdown: str) -> int:
    """Words in one markdown text: tokens with a letter or digit, fenced code blocks left out."""
    kept, in_fence = [], False
    for line in markdown.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            kept.append(line)
    return sum(1 for token in " ".join(kept).split() if any(ch.isalnum() for ch in token))


def cell_parts(cells: list[dict]) -> list[str | None]:
    """The part each cell belongs to ("main body", "optional", "exercises"); None for code cells."""
    parts: list[str | None] = []
    in_exercises = False
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            parts.append(None)
            continue
        if not in_exercises and EXERCISES_HEADING.search(_source(cell)):
            in_exercises = True
        tags = cell.get("metadata", {}).get("tags", [])
        parts.append("exercises" if in_exercises else "optional" if OPTIONAL_TAG in tags else "main body")
    return parts


def word_counts(path: str | Path) -> dict[str, int]:
    """Markdown words of one notebook: ``{"main body": ..., "optional": ..., "exercises": ...}``."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    counts = dict.fromkeys(PARTS, 0)
    for cell, part in zip(cells, cell_parts(cells)):
        if part is not None:
            counts[part] += count_words(_source(cell))
    return counts


def series_counts(folder: str | Path) -> dict[str, dict[str, int]]:
    """``word_counts`` of every numbered notebook (``NN_*.ipynb``) in ``folder``, by file name, in order."""
    return {p.name: word_counts(p) for p in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))}


def minutes(words: int) -> float:
    """Reading time in minutes at ``WORDS_PER_MINUTE``."""
    return words / WORDS_PER_MINUTE


def markdown_table(counts: dict[str, dict[str, int]]) -> str:
    """One row per notebook and a total row: words per part, all words, and reading minutes."""
    head = ["notebook", *PARTS, "all", "main body (min)", "all (min)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]

    def row(name: str, c: dict[str, int]) -> str:
        total = sum(c[p] for p in PARTS)
        cells = [name, *(f"{c[p]:,}" for p in PARTS), f"{total:,}", f"{minutes(c['main body']):.0f}",
                 f"{minutes(total):.0f}"]
        return "| " + " | ".join(cells) + " |"

    for name, c in counts.items():
        lines.append(row(name, c))
    totals = {p: sum(c[p] for c in counts.values()) for p in PARTS}
    lines.append(row("**total**", totals))
    return "\n".join(lines)
