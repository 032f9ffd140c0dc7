"""Sphinx + MyST-NB configuration of the static site of the executed series (``make site``).

The pages come from ``make run``'s executed copies in reports/ (nothing is executed here:
``nb_execution_mode = "off"``); docs/site/build.py stages them next to this file's copy and runs Sphinx.
Everything is local: MathJax comes from the jupyter-server-mathjax wheel, no CDN is referenced.
"""
import json
import os

project = "rlhf-notebooks"
author = "rlhf-notebooks contributors"
copyright = "rlhf-notebooks contributors"
extensions = ["myst_nb", "sphinx.ext.mathjax"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "jupyter_execute"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# notebooks are shown as executed by `make run`, never re-run here
nb_execution_mode = "off"
nb_ipywidgets_js = {}              # no widget JavaScript from a CDN: build.py writes static widget snapshots
nb_output_stderr = "show"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]

# MathJax 2 served from _static (copied from the jupyter-server-mathjax package by build.py): works offline
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# the wheel ships the STIX-Web fonts only (not MathJax's default TeX fonts), so ask for those
mathjax2_config = {"tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]},
                   "HTML-CSS": {"availableFonts": ["STIX-Web"], "preferredFont": "STIX-Web", "webFont": "STIX-Web",
                                "imageFont": None},
                   "SVG": {"font": "STIX-Web"},
                   "showMathMenu": False, "messageStyle": "none"}
mathjax3_config = None
myst_update_mathjax = False     # its MathJax 3 settings would override the MathJax 2 configuration above

html_theme = "alabaster"
html_title = "rlhf-notebooks"
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_theme_options = {"page_width": "1200px", "sidebar_width": "260px", "body_max_width": "none", "fixed_sidebar": True,
                      "show_relbar_bottom": True}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_show_sourcelink = False
html_show_sphinx = False

_info = os.environ.get("RLHF_SITE_INFO")
if _info:
    html_theme_options["description"] = json.loads(_info).get("description", "")
