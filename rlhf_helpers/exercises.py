"""Exercises that say what kind they are, and predictions that check themselves (issue #23).

Every ``### Exercise N`` heading of a notebook ends with its kind in brackets:

* ``*(checked fill-in)*``: the learner writes a function or a line, and a cell checks it (``rlhf_helpers.fillins``
  or an inline check) and says ``correct`` or ``not yet: <what to look at>``;
* ``*(checked prediction)*``: the learner writes a number before running anything, and a cell compares it with the
  run's within a stated tolerance (:func:`check_prediction`): ``close`` or ``not yet``;
* ``*(open discussion)*``: a question answered in words; the worked solution shows the evidence.

:func:`exercise_kinds` counts them per notebook; ``python -m rlhf_helpers exercises`` prints the table for the series.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable

from .fillins import Verdict

KINDS = ("checked fill-in", "checked prediction", "open discussion")
UNMARKED = "unmarked"
EXERCISE_HEADING = re.compile(r"^###\s+Exercise\s+\d+\b.*$", re.MULTILINE)
KIND_AT_END = re.compile(r"\*\((" + "|".join(re.escape(k) for k in KINDS) + r")\)\*\s*$")


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def exercise_headings(path: str | Path) -> list[tuple[str, str]]:
    """``(heading, kind)`` for every ``### Exercise N`` heading in a notebook's markdown cells, in order; the kind is
    the bracketed ``*(...)*`` ending the heading, or ``"unmarked"``."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    found = []
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        for heading in EXERCISE_HEADING.findall(_source(cell)):
            m = KIND_AT_END.search(heading)
            found.append((heading.strip(), m.group(1) if m else UNMARKED))
    return found


def exercise_kinds(path: str | Path) -> dict[str, int]:
    """How many exercises of each kind a notebook has: ``{"checked fill-in": ..., "checked prediction": ...,
    "open discussion": ..., "unmarked": ...}`` (every key present)."""
    counts = dict.fromkeys((*KINDS, UNMARKED), 0)
    for _, kind in exercise_headings(path):
        counts[kind] += 1
    return counts


def series_kinds(folder: str | Path) -> dict[str, dict[str, int]]:
    """:func:`exercise_kinds` of every numbered notebook (``NN_*.ipynb``) in ``folder``, by file name, in order."""
    return {p.name: exercise_kinds(p) for p in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))}


def kinds_table(counts: dict[str, dict[str, int]]) -> str:
    """A markdown table: one row per notebook and a total row, one column per kind plus ``unmarked`` and all."""
    columns = (*KINDS, UNMARKED)
    lines = ["| notebook | " + " | ".join(columns) + " | all |", "|---|" + "---:|" * (len(columns) + 1)]
    rows = {**counts, "**total**": {c: sum(n[c] for n in counts.values()) for c in columns}}
    for name, n in rows.items():
        lines.append(f"| {name} | " + " | ".join(str(n[c]) for c in columns) + f" | {sum(n[c] for c in columns)} |")
    return "\n".join(lines)


def check_prediction(prediction: float | None, actual: float | Callable[[], float], tolerance: float,
                     what: str = "the run's value", unit: str = "", relative: bool = False) -> Verdict:
    """Compare a learner's number with the run's: ``close`` when it is within ``tolerance`` (a fraction of the run's
    value when ``relative``), otherwise ``not yet``. ``actual`` may be a function: it runs only once a prediction is
    written, so Run All (no prediction yet) computes and trains nothing. A missing prediction (None) asks for one.
    The run's number is shown either way: the prediction was written before the run, and seeing the answer
    afterwards is the point."""
    unit = f" {unit}" if unit and not unit.startswith(" ") else unit
    if prediction is None:
        return Verdict(False, "not yet: write your prediction as a number first (replace the None), then run this "
                              "cell again")
    try:
        guess = float(prediction)
    except (TypeError, ValueError):
        return Verdict(False, f"not yet: your prediction must be a number, got {prediction!r}")
    if not math.isfinite(guess):
        return Verdict(False, f"not yet: your prediction must be a finite number, got {prediction!r}")
    value = float(actual() if callable(actual) else actual)
    allowed = tolerance * abs(value) if relative else tolerance
    band = f"±{100 * tolerance:g} %" if relative else f"±{tolerance:g}{unit}"
    shown = f"{what}: {value:.4g}{unit}; you predicted {guess:.4g}{unit} (tolerance {band})"
    if abs(guess - value) <= allowed:
        return Verdict(True, f"close: {shown}")
    return Verdict(False, f"not yet: {shown}; {'too high' if guess > value else 'too low'}. "
                          "Find the step of your reasoning that went wrong; the worked solution explains it")


__all__ = ["KINDS", "UNMARKED", "check_prediction", "exercise_headings", "exercise_kinds", "kinds_table",
           "series_kinds"]
