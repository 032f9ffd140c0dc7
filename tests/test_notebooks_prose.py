"""Numbers that stay true on the learner's machine (TEAM convention 2): no markdown line quotes a measured
figure with 3+ significant digits ("91.4 %", "188.7", "0.312", "207 s") outside a reference-run callout,

    > **Reference run** (tiny, 2-core CPU): PPO reaches roughly 90–95 % positive at a KL of 5–7 nats.

Print the figure from the run in a code cell instead, or give a range in such a callout. Worked maths is fine:
numbers inside `code spans`, ```fenced code```, $inline$ and $$display$$ maths are not checked, nor section
numbers ("5.3)"), versions ("4.46.0"), scientific notation ("1.41e-5") or plain integers without a unit (years,
settings such as "256 prompts"). Integers count only with a measurement unit: %, s/seconds, nats, pairs.
"""
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NOT_YET_FIXED: set[str] = set()  # notebooks whose owner has not converted the prose yet (xfail)

CALLOUT = re.compile(r"^\s*>\s*\*\*Reference run\*\*")
FENCE = re.compile(r"^\s*(```|~~~)")
DISPLAY_MATH = re.compile(r"\$\$.*?\$\$", re.DOTALL)
IGNORED = [
    re.compile(r"\$\$.*?\$\$"),  # display maths on one line
    re.compile(r"(?<!\\)\$[^$]+?(?<!\\)\$"),  # inline maths
    re.compile(r"`[^`]*`"),  # code spans
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"<[^>]+>"),  # html tags
]
NUMBER = re.compile(
    r"(?<![\w.])[-−+]?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w.]*\d)"  # 12,345.6 or 0.312; not 4.46.0 / 1e-5 / c19
    r"(?P<unit>\s?(?:%|s\b|seconds?\b|nats?\b|(?:\w+[- ])?pairs\b))?")


def significant_digits(integer: str, fraction: str) -> int:
    """Significant digits of a decimal as written: '0.312' -> 3, '188.7' -> 4, '2,000' -> 1, '0.60' -> 2."""
    integer = integer.replace(",", "")
    if fraction:
        digits = (integer + fraction[1:]).lstrip("0")
        return len(digits)
    return len(integer.lstrip("0").rstrip("0"))


def metric_quotes(line: str) -> list[str]:
    """The measured-looking figures with 3+ significant digits on one markdown line (outside maths and code)."""
    for pattern in IGNORED:
        line = pattern.sub(" ", line)
    found = []
    for m in NUMBER.finditer(line):
        integer, fraction, unit = m.group(1), m.group(2) or "", m.group("unit")
        if re.match(r"\s*(e[-+]?\d)", line[m.end():]):
            continue  # scientific notation
        if line[m.end():m.end() + 1] == ")" and re.fullmatch(r"[\s#]*", line[:m.start()]):
            continue  # a section number heading a line: "### 5.3) The loss curve"
        if not fraction and not unit:
            continue  # a bare integer: a year, a setting, a count
        if not fraction and integer.replace(",", "") == "100":
            continue  # 100 % is exact, not a measurement with noise
        if significant_digits(integer, fraction) >= 3:
            found.append(m.group(0).strip())
    return found


def violations(markdown: str) -> list[str]:
    """Lines of one markdown cell that quote a 3+-significant-digit figure outside a reference-run callout."""
    # display maths may span lines: blank it out first, keeping the line count
    markdown = DISPLAY_MATH.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)
    out, in_callout, in_fence = [], False, False
    for line in markdown.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if CALLOUT.match(line):
            in_callout = True
        elif not line.lstrip().startswith(">"):
            in_callout = False
        if in_callout:
            continue
        quotes = metric_quotes(line)
        if quotes:
            out.append(f"{', '.join(quotes)}  <-  {line.strip()[:160]}")
    return out


@pytest.mark.parametrize("text, expected", [
    ("PPO reaches 91.4 % positive at a KL of 6.0", ["91.4 %"]),
    ("the SFT perplexity, 188.7, did reproduce", ["188.7"]),
    ("a KL of 0.312 nats", ["0.312 nats"]),
    ("in `tiny`: −2.09 against +2.13", ["−2.09", "+2.13"]),
    ("measured 207 s of training", ["207 s"]),
    ("that leaves 570 train and 152 test pairs", ["152 test pairs"]),
    ("its accuracy on these 256 is 82.4%", ["82.4%"]),
    ("(96.1%, 94.5%, 81.6%) and (0.22 → 1.55).", ["96.1%", "94.5%", "81.6%", "1.55"]),
    ("about 2 minutes, 90–95 % positive, KL 5–7 nats, 0.67–0.77", []),
    ("a gap of 0 costs $\\ln 2 \\approx 0.693$", []),
    ("print it with `f'{acc:.3f}'` or `0.693`", []),
    ("### 5.3) The loss curve; see section 4.2 and notebook 06 (2024)", []),
    ("transformers 4.46.0 and learning rate 1.41e-5, 50,257 tokens, 22,500 reviews", []),
    ("batch accuracy reaches 100% by step 50", []),
    ("a [link](https://example.org/v1.234/page) and <img width=\"400\">", []),
])
def test_metric_quotes(text, expected):
    assert metric_quotes(text) == expected


def test_reference_run_callouts_and_maths_blocks_are_allowed():
    md = ("> **Reference run** (tiny, 2-core CPU): loss falls from about 7.97\n"
          "> to 5.23 over 600 steps.\n"
          "\n"
          "$$\n\\sigma(1.5) = 0.818\n$$\n"
          "  $$x = 1.234\n  = 5.678$$ and after it 45.6 %\n"
          "```python\nprint(0.513)\n```\n"
          "> a plain quote with 12.34 is not a callout\n"
          "Outside again: 94.9 % positive")
    found = violations(md)
    assert len(found) == 3 and "45.6 %" in found[0] and "12.34" in found[1] and "94.9 %" in found[2]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_measured_figures_in_prose(path, request):
    if path.name[:2] in NOT_YET_FIXED:
        request.applymarker(pytest.mark.xfail(reason="prose not yet converted by its owner", strict=False))
    nb = nbformat.read(path, as_version=4)
    bad = [f"c{i}: {v}" for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
           for v in violations(cell.source)]
    assert not bad, (f"{path.name} quotes measured figures in prose; print them from the run, or use a "
                     "'> **Reference run** (tiny, 2-core CPU): ...' callout with ranges:\n  " + "\n  ".join(bad))
