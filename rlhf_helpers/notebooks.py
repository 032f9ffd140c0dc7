"""Execute the notebooks in order (``make run``): executed copies and HTML pages go to ``reports/``.

Exercise solutions are code cells tagged ``solution``: ``make run`` leaves them unexecuted (a learner's copy shows
them collapsed, without outputs), while ``make test`` runs them under nbval in the ``smoke`` preset.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .config import get_preset, project_root


def notebook_paths(folder: Path | None = None) -> list[Path]:
    folder = folder or project_root() / "notebooks"
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


SOLUTION_TAG = "solution"


def execute_notebook(nb, folder: Path, timeout: int = 3600):
    """Execute ``nb`` in place with ``folder`` as the working directory, skipping exercise solutions
    (code cells tagged ``solution``)."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", skip_cells_with_tag=SOLUTION_TAG,
                            resources={"metadata": {"path": str(folder)}})
    client.execute()
    return nb


def run_notebooks(preset_name: str | None = None, out_dir: Path | None = None, timeout: int = 3600,
                  only: list[str] | None = None) -> list[tuple[str, float]]:
    """Run every notebook with ``RLHF_PRESET`` set; write ``reports/NN_name.ipynb`` / ``.html`` and an index."""
    import nbformat
    from nbconvert import HTMLExporter

    preset = get_preset(preset_name)  # fails at once, listing the valid presets
    os.environ["RLHF_PRESET"] = preset.name
    out_dir = out_dir or project_root() / "reports"
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = []
    for path in notebook_paths():
        if only and not any(path.name.startswith(o) for o in only):
            continue
        print(f"[run] {path.name} (preset {preset.name}) ...", flush=True)
        nb = nbformat.read(path, as_version=4)
        t0 = time.time()
        try:
            execute_notebook(nb, path.parent, timeout=timeout)
        finally:
            nbformat.write(nb, out_dir / path.name)
        seconds = time.time() - t0
        html, _ = HTMLExporter().from_notebook_node(nb)
        (out_dir / path.with_suffix(".html").name).write_text(html)
        timings.append((path.name, seconds))
        print(f"[run] {path.name}: {seconds:.0f}s", flush=True)
    import json

    (out_dir / "timings.json").write_text(json.dumps({"preset": preset.name, "seconds": dict(timings)}, indent=2))
    rows = "".join(f'<li><a href="{n.replace(".ipynb", ".html")}">{n}</a> ({s:.0f} s)</li>' for n, s in timings)
    (out_dir / "index.html").write_text(
        f"<html><body><h1>rlhf-notebooks: executed in preset {preset.name}</h1><ul>{rows}</ul></body></html>")
    print(f"[run] done; open {out_dir / 'index.html'}")
    return timings
