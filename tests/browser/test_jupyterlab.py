"""The learner's JupyterLab, in a real browser: notebooks 03 and 06 run with Run All (smoke preset) in
JupyterLab from this venv, driven in headless Debian Chromium with Playwright, and their widgets are used
with the mouse and the keyboard.

Skipped, with the reason in pytest's summary, when Playwright or a chromium binary is missing
(``pip install playwright``; ``apt-get install -y chromium``, which .ci/run does as root). The server
works on a temporary copy of notebooks/, so nothing it saves reaches the real notebooks; on a failure a
screenshot goes to reports/browser/. Widgets are found by their labels, never by cell position.
"""
from __future__ import annotations

import contextlib
import html
import os
import re
import time
from pathlib import Path

import pytest

from labserver import (ROOT, LabServer, cells, error_outputs, find_chromium, launch_chromium, open_notebook,
                       run_all, unexecuted)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SHOTS = ROOT / "reports" / "browser"
RUN_ALL_TIMEOUT_MS = 15 * 60 * 1000
BAD_RENDERINGS = ("Error displaying widget", "Loading widget...", "VBox(children=", "HBox(children=")


@pytest.fixture(scope="module")
def browser_lab(tmp_path_factory):
    """(server, browser context): JupyterLab in the smoke preset on a copy of notebooks/, and Chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test skipped: the playwright package is missing (make dev, or pip install -r requirements-dev.txt)")
    if find_chromium() is None:
        pytest.skip("browser test skipped: no chromium binary (apt-get install -y chromium; .ci/run does it)")
    work = tmp_path_factory.mktemp("jupyterlab")
    env = {"RLHF_PRESET": "smoke", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           # the test session's temporary artifacts folder (root conftest.py): what these runs build,
           # nbval's notebook runs later reuse
           "RLHF_HOME": os.environ.get("RLHF_HOME") or str(work / "rlhf-home"),
           # a learner's kernel: worked solutions off (make test turns them on for nbval)
           "RLHF_RUN_SOLUTIONS": "0"}
    lab = LabServer(work, env).start()
    try:
        with sync_playwright() as pw:
            try:
                context = launch_chromium(pw, work / "chromium-profile")
            except Exception as err:  # a chromium that cannot start (missing libraries) counts as missing
                pytest.skip(f"browser test skipped: chromium did not start: {str(err).splitlines()[0]}")
            try:
                yield lab, context
            finally:
                context.close()
    finally:
        lab.stop()
    assert lab.proc is None


@contextlib.contextmanager
def screenshot_on_failure(page, name: str):
    try:
        yield
    except BaseException:
        SHOTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(SHOTS / f"{name}-failure.png"))
        raise


def run_notebook(page, lab: LabServer, name: str) -> list[dict]:
    """Open a notebook, Run All, wait for idle; assert every code cell ran and none shows an error."""
    open_notebook(page, lab, name)
    seconds = run_all(page, RUN_ALL_TIMEOUT_MS)
    print(f"{name}: Run All took {seconds:.0f} s in JupyterLab")
    nb_cells = cells(page)
    assert error_outputs(nb_cells) == [], f"{name} shows errors in JupyterLab"
    assert unexecuted(nb_cells) == [], f"{name}: Run All left cells unexecuted"
    text = page.locator(".jp-Notebook").inner_text()
    assert "Traceback" not in text
    return nb_cells


def widget_box(page, label: str):
    """The widget box (a VBox output) that holds a control labelled ``label``: real controls, not text."""
    box = page.locator(".jp-OutputArea-output > .widget-vbox").filter(
        has=page.locator(".widget-label", has_text=re.compile(rf"^{re.escape(label)}$")))
    box.first.wait_for(state="visible", timeout=60_000)
    assert box.count() == 1, f"expected one widget labelled {label!r}, found {box.count()}"
    output = box.first.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea')][1]")
    rendered = output.inner_text()
    for bad in BAD_RENDERINGS:
        assert bad not in rendered, f"the widget labelled {label!r} rendered as {bad!r}"
    return box.first


def range_values(slider) -> tuple[int, int]:
    lower = slider.locator(".noUi-handle-lower").get_attribute("aria-valuenow")
    upper = slider.locator(".noUi-handle-upper").get_attribute("aria-valuenow")
    return round(float(lower)), round(float(upper))


def wait_for_result(page, box, must_contain: str, timeout_ms: int = 120_000) -> str:
    result = box.locator(".widget-html-content").last
    handle = result.element_handle()
    page.wait_for_function("([el, s]) => el.innerHTML.includes(s) && !el.innerHTML.includes('sampling ...')",
                           arg=[handle, must_contain], timeout=timeout_ms)
    return result.inner_html()


def output_text(nb_cells: list[dict]) -> str:
    """Every stream and text/plain output of the notebook, as the kernel sent it to JupyterLab."""
    parts = []
    for cell in nb_cells:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain") or ""
            parts.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(parts)


def _artifact_folders(home: Path) -> set[str]:
    return {str(p.relative_to(home)) for p in home.rglob("*") if p.is_dir()}


def test_length_explorer_in_jupyterlab(browser_lab):
    """Run All of 03 with every artifact prebuilt (as after `build all`): it trains nothing (no new artifact
    folder, no training progress bar, no "building" line), every worked solution says how to run it instead,
    and the exercise checks say "not written yet" rather than "correct"; then the widget is used."""
    import subprocess
    import sys

    from rlhf_helpers.notebooks import NOT_A_STAGE

    lab, context = browser_lab
    home = Path(lab.env["RLHF_HOME"])
    subprocess.run([sys.executable, "-m", "rlhf_helpers", "build", "all", "--preset", "smoke"], cwd=ROOT,
                   env=lab.env, check=True, stdout=subprocess.DEVNULL)
    before = _artifact_folders(home)
    page = context.new_page()
    with screenshot_on_failure(page, "03_ppo"):
        nb_cells = run_notebook(page, lab, "03_ppo.ipynb")
        text = output_text(nb_cells)  # from JupyterLab's model: every cell, rendered on screen or not
        added = sorted(f for f in _artifact_folders(home) - before if Path(f).name not in NOT_A_STAGE)
        assert added == [], f"Run All of 03 with prebuilt artifacts wrote new folders: {added}"
        assert "[artifacts] building" not in text and "it/s]" not in text, "Run All of 03 trained something"
        solutions = sum(1 for c in nb_cells if c.get("cell_type") == "code" and "solution" in c.get("metadata", {}).get("tags", []))
        skipped = text.count("Worked solution, not run")
        assert solutions >= 4 and skipped == solutions, \
            f"expected all {solutions} worked solutions to be skipped, the notebook shows {skipped}"
        assert "correct: matches the package" not in text
        assert "not yet: fill in the function" in text
        SHOTS.mkdir(parents=True, exist_ok=True)
        sol = page.locator(".jp-Cell").filter(has_text="Worked solution, not run").last
        sol.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "run_all_03_solutions_off.png"))
        box = widget_box(page, "response length (tokens)")
        slider = box.locator(".widget-hslider").filter(has_text="response length (tokens)")
        assert slider.locator(".noUi-handle").count() == 2, "one range slider with two handles"
        width = slider.locator(".noUi-target").bounding_box()["width"]
        assert width >= 300, f"the length slider is only {width:.0f} px wide"
        top = round(float(slider.locator(".noUi-handle-upper").get_attribute("aria-valuemax")))
        assert top <= 128, f"the length range runs to {top}: it should fit the preset"
        box.scroll_into_view_if_needed()

        # the defaults, sampled: the "before" picture
        button = box.locator("button", has_text="Sample")
        lo, hi = range_values(slider)
        button.click()
        before = wait_for_result(page, box, f"lengths {lo}-{hi}")
        assert "<table" in before and "Cannot sample" not in before
        SHOTS.mkdir(parents=True, exist_ok=True)
        box.screenshot(path=str(SHOTS / "length_explorer_before.png"))

        # a learner changes the range: keyboard on the upper handle, mouse drag on the lower one
        slider.locator(".noUi-handle-upper").focus()
        for _ in range(4):
            page.keyboard.press("ArrowRight")
        handle = slider.locator(".noUi-handle-lower").bounding_box()
        track = slider.locator(".noUi-target").bounding_box()
        step_px = track["width"] / (top - 1)
        page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
        page.mouse.down()
        page.mouse.move(handle["x"] + handle["width"] / 2 + 2 * step_px, handle["y"] + handle["height"] / 2,
                        steps=5)
        page.mouse.up()
        new_lo, new_hi = range_values(slider)
        assert (new_lo, new_hi) != (lo, hi) and new_hi == hi + 4 and new_lo > lo, (lo, hi, new_lo, new_hi)
        button.click()
        after = wait_for_result(page, box, f"lengths {new_lo}-{new_hi}")
        assert after != before and "<table" in after and "Cannot sample" not in after
        box.screenshot(path=str(SHOTS / "length_explorer_after.png"))

        # min > max is impossible: drag the lower handle far past the upper one, type a reversed range
        handle = slider.locator(".noUi-handle-lower").bounding_box()
        page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
        page.mouse.down()
        page.mouse.move(track["x"] + track["width"] + 50, handle["y"] + handle["height"] / 2, steps=8)
        page.mouse.up()
        lo2, hi2 = range_values(slider)
        assert lo2 <= hi2, f"the slider shows minimum {lo2} > maximum {hi2}"
        readout = slider.locator(".widget-readout")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type(f"{top} - 2")
        page.keyboard.press("Enter")
        page.wait_for_timeout(500)
        lo3, hi3 = range_values(slider)
        assert lo3 <= hi3, f"typing a reversed range gave minimum {lo3} > maximum {hi3}"
        button.click()
        last = wait_for_result(page, box, f"lengths {lo3}-{hi3}")
        assert "larger than the maximum" not in last
        assert "Error displaying widget" not in page.locator(".jp-Notebook").inner_text()
    page.close()


def test_prompt_picker_in_jupyterlab(browser_lab):
    lab, context = browser_lab
    page = context.new_page()
    with screenshot_on_failure(page, "06_guardrail"):
        run_notebook(page, lab, "06_guardrail.ipynb")
        box = widget_box(page, "prompt")
        picker = box.locator(".widget-dropdown select")
        options = picker.locator("option").all_inner_texts()
        assert len(options) >= 2, "the picker offers several prompts"
        edit = box.locator(".widget-text").filter(has_text="edit").locator("input")
        button = box.locator("button", has_text="Answer")
        box.scroll_into_view_if_needed()
        button.click()
        first = wait_for_result(page, box, "<table")
        picker.select_option(index=1)
        # ipywidgets shows option labels with non-breaking spaces (to keep runs of spaces)
        chosen = picker.evaluate("el => el.options[el.selectedIndex].textContent").replace("\xa0", " ").strip()
        assert chosen == options[1].replace("\xa0", " ").strip()
        # the edit box follows the picker (the kernel answers the change)
        page.wait_for_function("([el, v]) => el.value.trim() === v", arg=[edit.element_handle(), chosen],
                               timeout=30_000)
        button.click()
        second = wait_for_result(page, box, "<b>Prompt:</b> " + html.escape(chosen, quote=False)[:20])
        assert second != first and "<table" in second and "Cannot answer" not in second
        # an empty prompt gets a message, not a traceback
        edit.fill("   ")
        button.click()
        message = wait_for_result(page, box, "Cannot answer")
        assert "Traceback" not in message
        box.screenshot(path=str(SHOTS / "prompt_picker.png"))
    page.close()
