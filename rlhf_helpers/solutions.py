"""Worked solutions that never run by surprise.

Every worked solution in the notebooks is a code cell that starts with the cell magic ``%%solution``. In a
learner's kernel the switch is off, so JupyterLab's *Run All* (or VS Code's, or Colab's) prints one line
saying how to run the solution and trains nothing; a fill-in exercise therefore keeps saying "not yet"
until the learner's own code passes. The switch is on when

* the environment variable ``RLHF_RUN_SOLUTIONS=1`` is set before the kernel starts (``make test`` sets it,
  so every solution is executed under nbval), or
* the learner runs ``%solutions on`` in the notebook (``%solutions off`` turns it off again), or
* the learner deletes the ``%%solution`` line of one cell: that cell is then ordinary code.

The magics are registered when ``rlhf_helpers`` is imported inside IPython (every notebook's first code
cell imports it); outside IPython nothing happens.
"""
from __future__ import annotations

import os

ENV = "RLHF_RUN_SOLUTIONS"
_switch: dict[str, bool | None] = {"on": None}  # None: follow the environment variable


def solutions_on() -> bool:
    """Whether ``%%solution`` cells execute: ``%solutions on/off`` if used, else ``RLHF_RUN_SOLUTIONS=1``."""
    if _switch["on"] is not None:
        return bool(_switch["on"])
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def set_solutions(on: bool | None) -> None:
    """Turn worked solutions on or off for this kernel (None: follow ``RLHF_RUN_SOLUTIONS`` again)."""
    _switch["on"] = on


SKIPPED = ("Worked solution, not run (Run All never trains or answers by surprise). To run it: run "
           "`%solutions on` in a cell, then this cell again; or delete this cell's first line (%%solution).")


def solution_magic(line: str, cell: str) -> None:
    """``%%solution``: run the cell as ordinary code when solutions are on; otherwise say how to."""
    from IPython import get_ipython

    if not solutions_on():
        print(SKIPPED)
        return
    result = get_ipython().run_cell(cell, store_history=False)
    result.raise_error()  # a failing solution fails the cell (and nbval), it is not swallowed


def solutions_switch(line: str) -> None:
    """``%solutions on`` / ``%solutions off`` / ``%solutions`` (prints the state)."""
    word = line.strip().lower()
    if word in ("on", "1", "true", "yes"):
        set_solutions(True)
    elif word in ("off", "0", "false", "no"):
        set_solutions(False)
    elif word:
        raise ValueError(f"%solutions takes 'on' or 'off', got {line.strip()!r}")
    print(f"worked solutions: {'on' if solutions_on() else 'off'}")


def register(ipython) -> None:
    """Register ``%%solution`` and ``%solutions`` in an IPython shell (idempotent)."""
    ipython.register_magic_function(solution_magic, magic_kind="cell", magic_name="solution")
    ipython.register_magic_function(solutions_switch, magic_kind="line", magic_name="solutions")
