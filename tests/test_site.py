"""`make site`: the static site of the executed series builds offline from executed notebooks.

The notebooks are executed in the smoke preset into a temporary folder (as `make run` does into
reports/), then docs/site/build.py builds the site from them; every notebook has its page, with no
error cell, rendered math, the plots as images, the widgets as static snapshots and no CDN reference.
"""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("sphinx", reason="sphinx is missing: pip install -r requirements-dev.txt, or make dev")
    pytest.importorskip("myst_nb", reason="myst-nb is missing: pip install -r requirements-dev.txt, or make dev")
    from rlhf_helpers.notebooks import notebook_paths, run_notebooks

    executed = tmp_path_factory.mktemp("executed")
    run_notebooks("smoke", out_dir=executed, timeout=900, jobs=2)  # `run --jobs 2`: the lock and the pool under test
    sys.path.insert(0, str(ROOT / "docs" / "site"))
    try:
        import build as site_build
    finally:
        sys.path.pop(0)
    out = tmp_path_factory.mktemp("site") / "site"
    pages = site_build.build(executed, out)
    return {"out": out, "pages": pages, "names": [p.stem for p in notebook_paths()], "executed": executed}


def test_every_notebook_has_a_page(site):
    assert [p.stem for p in site["pages"]] == site["names"]
    index = (site["out"] / "index.html").read_text()
    for name in site["names"]:
        assert f'href="{name}.html"' in index, f"the table of contents lacks {name}"


def test_pages_have_no_error_cell_and_no_cdn(site):
    for page in site["pages"]:
        text = page.read_text()
        assert "output traceback" not in text and "Traceback (most recent call last)" not in text, page.name
        loads = re.findall(r'<(?:script|img|iframe)[^>]*\ssrc="(?:https?:)?//[^"]*"|<link[^>]*\shref="(?:https?:)?//[^"]*"',
                           text)
        assert not loads, f"{page.name} loads something from the network: {loads[:3]}"


def test_math_plots_and_widget_snapshots(site):
    out = site["out"]
    assert (out / "_static" / "mathjax" / "MathJax.js").is_file()
    texts = {p.stem: p.read_text() for p in site["pages"]}
    assert sum(t.count('class="math') for t in texts.values()) > 10, "math is not marked up for MathJax"
    assert all("_static/mathjax/MathJax.js" in t for t in texts.values())
    assert sum(t.count("<img") for t in texts.values()) >= 5, "the plots are missing"
    ppo = texts["03_ppo"]
    assert "widget-snapshot" in ppo and "response length (tokens)" in ppo
    assert "widget-snapshot" in texts["06_guardrail"]
    assert "application/vnd.jupyter.widget-view+json" not in "".join(texts.values())


def test_a_page_in_chromium(site):
    """A reader's view: 03's page in headless Chromium, math typeset by the local MathJax, a screenshot in
    reports/browser/site_03_ppo.png."""
    pytest.importorskip("playwright", reason="playwright is missing: pip install -r requirements-dev.txt, or make dev")
    sys.path.insert(0, str(ROOT / "tests" / "browser"))
    try:
        from labserver import find_chromium, launch_chromium
    finally:
        sys.path.pop(0)
    if find_chromium() is None:
        pytest.skip("no chromium binary (apt-get install -y chromium): the site page was not looked at")
    from playwright.sync_api import sync_playwright

    shots = ROOT / "reports" / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        context = launch_chromium(pw, site["out"].parent / "chromium-profile", width=1300, height=1000)
        try:
            page = context.new_page()
            page.goto((site["out"] / "03_ppo.html").as_uri())
            # MathJax (local, version 2) replaces each formula by an element with id MathJax-Element-N
            page.wait_for_function("() => document.querySelectorAll('[id^=MathJax-Element]').length > 10",
                                   timeout=30_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "site_03_ppo.png"))
            assert page.locator("div.sphinxsidebar a", has_text="PPO").count() >= 1
            assert page.locator("img").count() >= 1
            assert "Math Processing Error" not in page.inner_text("body")
        finally:
            context.close()
