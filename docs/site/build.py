"""Build the static site of the executed series (``make site``): Sphinx + MyST-NB, offline.

    python docs/site/build.py [--notebooks reports] [--out reports/site]

Reads the executed copies that ``make run`` wrote (``reports/NN_*.ipynb``; nothing is executed or trained
here), stages them with conf.py, an index page and a local MathJax in a temporary folder, and runs
``sphinx-build``. Interactive widgets cannot run in a static page, so each widget output becomes a
snapshot of its controls and values (from the widget state the executed copy stores); the notebooks also
print the widget's result once as a plain output. Exits non-zero when no executed notebook is found, when
Sphinx fails, or when a notebook page is missing.
"""
from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


# ------------------------------------------------------------------------ widget snapshots
def _row(label: str, control: str) -> str:
    return f'<div class="row"><label>{html.escape(label)}</label> {control}</div>'


def widget_snapshot(model_id: str, state: dict, depth: int = 0) -> str:
    """Static HTML of a widget (and its children) from the saved widget state; '' for unknown widgets."""
    model = state.get(model_id)
    if model is None or depth > 20:
        return ""
    name, s = model.get("model_name", ""), model.get("state", {})
    desc = str(s.get("description", ""))
    children = [c.removeprefix("IPY_MODEL_") for c in s.get("children", []) if isinstance(c, str)]
    if name in ("VBoxModel", "BoxModel", "GridBoxModel", "AccordionModel", "TabModel"):
        return "<div>" + "".join(widget_snapshot(c, state, depth + 1) for c in children) + "</div>"
    if name == "HBoxModel":
        inner = "".join(f"<span>{widget_snapshot(c, state, depth + 1)}</span>" for c in children)
        return f'<div style="display:flex;gap:1.5em;flex-wrap:wrap;align-items:center">{inner}</div>'
    if name in ("TextModel", "TextareaModel", "ComboboxModel"):
        value = html.escape(str(s.get("value", "")), quote=True)
        return _row(desc, f'<input type="text" value="{value}" size="70" disabled>')
    if name.endswith("RangeSliderModel"):
        lo, hi = (s.get("value") or [None, None])[:2]
        return _row(desc, f"<b>{lo} – {hi}</b> <small>(slider from {s.get('min')} to {s.get('max')})</small>")
    if name.endswith(("SliderModel", "TextModel", "IntTextModel", "FloatTextModel")) or name in (
            "BoundedIntTextModel", "BoundedFloatTextModel", "CheckboxModel", "ToggleButtonModel"):
        return _row(desc, f"<b>{html.escape(str(s.get('value')))}</b>")
    if name in ("DropdownModel", "SelectModel", "RadioButtonsModel", "ToggleButtonsModel"):
        labels, index = s.get("_options_labels", []), s.get("index")
        options = "".join(f'<option{" selected" if i == index else ""}>{html.escape(str(o))}</option>'
                          for i, o in enumerate(labels))
        return _row(desc, f'<select disabled style="max-width:40em">{options}</select>')
    if name == "ButtonModel":
        return f'<button disabled title="run the notebook in JupyterLab to use it">{html.escape(desc)}</button>'
    if name in ("HTMLModel", "HTMLMathModel"):
        return f'<div class="row">{s.get("value", "")}</div>'  # our own widgets' HTML, already escaped
    if name == "LabelModel":
        return f'<div class="row">{html.escape(str(s.get("value", "")))}</div>'
    if name in ("FloatProgressModel", "IntProgressModel"):
        return f'<progress value="{s.get("value", 0)}" max="{s.get("max", 100)}"></progress>'
    return ""


def static_widgets(nb) -> int:
    """Replace every widget output by its snapshot (HTML); returns how many were replaced."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME not in data:
                continue
            body = widget_snapshot(data[WIDGET_MIME].get("model_id", ""), state)
            note = ('<div class="snapshot-note">Interactive widget, shown as a snapshot: run the notebook in JupyterLab '
                    "to use the controls.</div>")
            data.pop(WIDGET_MIME)
            data["text/html"] = f'<div class="widget-snapshot">{note}{body}</div>'
            count += 1
    nb.metadata.pop("widgets", None)
    return count


# ------------------------------------------------------------------------ staging and build
def executed_notebooks(folder: Path) -> list[Path]:
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def error_cells(nb) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def index_page(pages: list[tuple[str, str]], info: dict) -> str:
    preset = info.get("preset", "?")
    seconds = info.get("seconds", {})
    rows = "\n".join(f"| [{title}]({stem}.ipynb) | {seconds.get(stem + '.ipynb', float('nan')):.0f} s |"
                     for stem, title in pages)
    toc = "\n".join(stem for stem, _ in pages)
    return f"""# rlhf-notebooks: the executed series

RLHF end to end on GPT-2-style models and IMDB reviews, read without running anything: every notebook of
the series with the outputs of one `make run`, in the **{preset}** preset. The interactive widgets show
as snapshots of their controls; to use them, open the notebook in JupyterLab.

| notebook | run time ({preset}) |
| --- | --- |
{rows}

```{{toctree}}
:maxdepth: 2
:caption: Notebooks

{toc}
```
"""


def stage(notebooks: Path, src: Path) -> list[tuple[str, str]]:
    import nbformat

    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    shutil.copy2(HERE / "conf.py", src / "conf.py")
    shutil.copytree(HERE / "_static", src / "_static")
    import jupyter_server_mathjax

    mathjax = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(mathjax, src / "_static" / "mathjax", ignore=shutil.ignore_patterns("localization"))
    pages = []
    for path in executed_notebooks(notebooks):
        nb = nbformat.read(path, as_version=4)
        static_widgets(nb)
        for cell in nb.cells:  # worked solutions fold away, as in JupyterLab
            tags = cell.metadata.get("tags", [])
            if "solution" in tags and "hide-input" not in tags:
                cell.metadata["tags"] = [*tags, "hide-input"]
        nbformat.write(nb, src / path.name)
        title = next((c.source.splitlines()[0].lstrip("# ").strip() for c in nb.cells
                      if c.cell_type == "markdown" and c.source.startswith("# ")), path.stem)
        pages.append((path.stem, title))
    timings = notebooks / "timings.json"
    info = json.loads(timings.read_text()) if timings.is_file() else {}
    (src / "index.md").write_text(index_page(pages, info))
    return pages


def build(notebooks: Path, out: Path, quiet: bool = True) -> list[Path]:
    """Stage and build; returns the HTML page of every notebook."""
    notebooks, out = Path(notebooks), Path(out)
    if not executed_notebooks(notebooks):
        raise SystemExit(f"no executed notebooks in {notebooks}: run `make run` first (it writes them there)")
    import tempfile

    if out.exists():
        shutil.rmtree(out)
    scratch = out.parent / "jupyter_execute"  # MyST-NB writes its copies of the notebooks beside the output
    had_scratch = scratch.exists()
    with tempfile.TemporaryDirectory(prefix="rlhf-site-src-") as tmp:
        src = Path(tmp) / "src"
        pages = stage(notebooks, src)
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-E", *(["-q"] if quiet else []), str(src), str(out)]
        done = subprocess.run(cmd)
    if not had_scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    if done.returncode:
        raise SystemExit(f"sphinx-build failed ({done.returncode}): {' '.join(cmd)}")
    built = [out / f"{stem}.html" for stem, _ in pages]
    missing = [p.name for p in built if not p.is_file()]
    if missing:
        raise SystemExit(f"pages missing from the site: {missing}")
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=ROOT / "reports",
                        help="folder of executed notebooks (default: reports/, written by `make run`)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "site", help="where the site goes")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    built = build(args.notebooks, args.out, quiet=not args.verbose)
    print(f"[site] {len(built)} notebook pages; open {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
